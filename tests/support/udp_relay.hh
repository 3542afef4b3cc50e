// A UDP impairment relay for end-to-end tests: it sits between one downstream peer (a QUIC
// Client) and a fixed upstream (the Server's tunnel port), forwards datagrams both ways on its own
// thread, and can drop, duplicate and reorder them from a seeded PRNG (reproducible runs). It
// can also rebind its outbound socket to a new port mid-connection, so the upstream sees the
// downstream peer's address change (NAT rebinding, spec 12.3).
//
//   downstream peer <-> [listen socket 127.0.0.1:port()]  relay  [outbound socket] <-> upstream
//
// The downstream peer is learned from the first datagram on the listen socket and followed when
// it changes. Datagrams from the upstream before any downstream peer is known are dropped.
#pragma once

#include <netinet/in.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "tests/support/process.hh"

namespace runewarp::test {

// Impairments of one direction; each a probability in [0, 1], drawn independently per datagram.
struct UdpImpairment {
    double loss = 0;       // the datagram is not forwarded
    double duplicate = 0;  // the datagram is forwarded twice
    double reorder = 0;    // the datagram is held back and sent after the next one (or hold time)
};

struct UdpRelayOptions {
    std::string upstream_address = "127.0.0.1";  // IPv4 literal
    std::uint16_t upstream_port = 0;
    UdpImpairment to_upstream{};    // downstream peer -> upstream
    UdpImpairment to_downstream{};  // upstream -> downstream peer
    std::uint64_t seed = 1;         // one std::mt19937_64 per direction, seeded from this
    Millis reorder_hold{5};         // a held datagram goes out after this if nothing follows it
    // When set, one line per datagram event goes to this file (time, direction, size, what
    // happened, outbound socket generation): for diagnosing stalls, not for assertions.
    std::string trace_path{};
};

enum class RelayDir : int { kToUpstream = 0, kToDownstream = 1 };

// A consistent-enough copy of one direction's counters (each value read atomically). The relay
// counts a datagram before it sends it, so whatever a receiver has seen is already counted.
struct UdpRelayStats {
    std::uint64_t received = 0;     // datagrams the relay read for this direction
    std::uint64_t forwarded = 0;    // distinct datagrams sent on (duplicates not counted again)
    std::uint64_t dropped = 0;      // lost on purpose (plus upstream datagrams with no peer yet)
    std::uint64_t duplicated = 0;   // extra copies sent
    std::uint64_t reordered = 0;    // held back and sent after a later datagram or the hold time
    std::uint64_t send_errors = 0;  // sendto failures (EAGAIN, ECONNREFUSED, ...)
};

class UdpRelay {
public:
    // Binds 127.0.0.1:<ephemeral> and an outbound socket, then starts the relay thread. Throws
    // std::runtime_error on socket errors. Always on the heap: a failed Criterion assertion
    // longjmps past destructors, and the relay thread must not be left running on a dead stack
    // frame (an abandoned relay just leaks and keeps relaying until the test process exits).
    static std::unique_ptr<UdpRelay> start(UdpRelayOptions opts);
    ~UdpRelay();  // stops and joins the thread, closes the sockets
    UdpRelay(const UdpRelay&) = delete;
    UdpRelay& operator=(const UdpRelay&) = delete;

    // The port the downstream peer sends to.
    std::uint16_t port() const { return listen_port_; }
    // The local port of the current outbound socket (what the upstream sees as the source).
    std::uint16_t outbound_port() const { return outbound_port_.load(); }

    // Replaces the outbound socket with a fresh one on a new ephemeral port (done on the relay
    // thread); returns the new port once the relay uses it. The old socket is closed: what the
    // upstream still sends to the old port is lost, as behind a NAT that forgot the mapping.
    std::uint16_t rebind();
    // Datagrams sent to the upstream from, and received from the upstream on, the outbound
    // socket in use since the last rebind() (or since the start).
    std::uint64_t sent_on_current_outbound() const { return sent_current_.load(); }
    std::uint64_t received_on_current_outbound() const { return received_current_.load(); }
    std::uint64_t rebinds() const { return rebinds_done_.load(); }

    UdpRelayStats stats(RelayDir d) const;
    std::string describe() const;  // both directions' counters, for assertion messages

private:
    explicit UdpRelay(UdpRelayOptions opts);

    struct Counters {
        std::atomic<std::uint64_t> received{0}, forwarded{0}, dropped{0}, duplicated{0},
            reordered{0}, send_errors{0};
    };
    struct Held;  // a reordered datagram waiting for release
    struct Direction;

    void run_();
    void drain_(int fd, RelayDir d);
    void handle_(RelayDir d, const unsigned char* data, std::size_t n);
    void send_(RelayDir d, const unsigned char* data, std::size_t n);
    void release_held_(RelayDir d, bool only_expired);
    int poll_timeout_ms_() const;
    void do_rebind_();
    void trace_(RelayDir d, std::size_t n, const char* what);
    int open_outbound_();

    UdpRelayOptions opts_;
    int listen_fd_ = -1;
    int out_fd_ = -1;   // touched only by the relay thread once it runs
    int wake_fd_ = -1;  // eventfd: stop and rebind requests
    std::uint16_t listen_port_ = 0;
    std::atomic<std::uint16_t> outbound_port_{0};

    sockaddr_in peer_{};                       // the downstream peer (relay thread only)
    bool have_peer_ = false;                   // relay thread only
    std::unique_ptr<Direction[]> dirs_;        // [2], with their held-datagram slots
    std::unique_ptr<unsigned char[]> rx_buf_;  // one 65535-byte receive buffer
    Counters counters_[2];
    std::atomic<std::uint64_t> sent_current_{0};
    std::atomic<std::uint64_t> received_current_{0};

    std::FILE* trace_file_ = nullptr;  // relay thread only
    std::uint64_t start_ns_ = 0;

    std::atomic<bool> stop_{false};
    std::mutex mu_;
    std::condition_variable cv_;
    std::uint64_t rebinds_requested_ = 0;         // under mu_
    std::atomic<std::uint64_t> rebinds_done_{0};  // written under mu_ too
    std::thread thread_;
};

}  // namespace runewarp::test
