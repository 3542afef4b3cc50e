// Loopback networking for end-to-end tests: free ports, connecting, waiting for listeners, and
// raw Visitors that send arbitrary bytes and report how the peer reacted.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "tests/support/process.hh"

namespace runewarp::test {

enum class Family { kV4, kV6 };

// "127.0.0.1" or "::1".
std::string loopback(Family f);
// "127.0.0.1:443" or "[::1]:443" (brackets added for IPv6 literals).
std::string host_port(std::string_view addr, std::uint16_t port);

// A port that is free for TCP and UDP on the loopback address of the family. Ports come from
// 20000-32767, below the kernel's default ephemeral range, so outgoing connections cannot take
// them between allocation and use. Each port is claimed for the rest of the calling process'
// life among every test process on the machine: suites that run at the same time never get the
// same port, and one process never hands out the same port twice.
std::uint16_t free_port(Family f = Family::kV4);

// Owning file descriptor.
class Fd {
public:
    Fd() = default;
    explicit Fd(int fd) : fd_(fd) {}
    Fd(Fd&& o) noexcept : fd_(o.release()) {}
    Fd& operator=(Fd&& o) noexcept;
    Fd(const Fd&) = delete;
    Fd& operator=(const Fd&) = delete;
    ~Fd();
    int get() const { return fd_; }
    int release();
    bool valid() const { return fd_ >= 0; }
    void reset();

private:
    int fd_ = -1;
};

// Claims `port` among the test processes of this machine (an abstract unix socket named after
// the port, held while the returned descriptor is open); free_port() keeps every claim it makes
// until the process exits. Invalid, errno set, when the port is claimed already.
Fd claim_port(std::uint16_t port);

// Blocking TCP connect with a deadline; invalid Fd on failure (errno-like code in *err).
Fd tcp_connect(const std::string& addr, std::uint16_t port, Millis deadline = Millis{5000},
               int* err = nullptr);
// The same from a chosen local address (e.g. "127.0.0.7": a Visitor from another source).
Fd tcp_connect_from(const std::string& source, const std::string& addr, std::uint16_t port,
                    Millis deadline = Millis{5000}, int* err = nullptr);
// True when a connect to addr:port succeeds right now (the connection is closed at once).
bool tcp_accepting(const std::string& addr, std::uint16_t port);
bool wait_tcp_accepting(const std::string& addr, std::uint16_t port, Millis deadline);

bool send_all(int fd, std::string_view data);

// What a peer did to a raw connection.
struct PeerReaction {
    bool closed = false;   // orderly EOF or reset seen before the deadline
    bool reset = false;    // ECONNRESET (abortive close)
    std::string received;  // every byte received before close/deadline
    Millis after{0};       // time from the start of waiting to the close
};

// A TCP connection driven byte by byte: for intake tests (half a ClientHello, junk, silence).
class RawConnection {
public:
    // Throws std::runtime_error when the connection cannot be made.
    RawConnection(const std::string& addr, std::uint16_t port, Millis deadline = Millis{5000});
    explicit RawConnection(Fd connected) : fd_(std::move(connected)) {}
    bool send(std::string_view bytes) { return send_all(fd_.get(), bytes); }
    void shutdown_write();
    // Reads until the peer closes or the deadline passes.
    PeerReaction wait_closed(Millis deadline);
    // Reads until at least n bytes arrived, the peer closed, or the deadline passed.
    std::string recv_at_least(std::size_t n, Millis deadline);
    int fd() const { return fd_.get(); }
    // Local address of the connection ("127.0.0.1", port).
    std::pair<std::string, std::uint16_t> local() const;

private:
    Fd fd_;
};

// One-shot raw Visitor: connect, send bytes, optionally half-close, then wait for the peer to
// close. `connected` is false when the connect itself failed.
struct RawVisit {
    bool connected = false;
    PeerReaction reaction;
};
RawVisit raw_visit(const std::string& addr, std::uint16_t port, std::string_view bytes,
                   Millis deadline, bool half_close = false);

// The 28- or 52-byte PROXY v2 header (PROXY command, TCP) for src -> dst, built by hand.
std::string proxy_v2_header(const std::string& src_ip, std::uint16_t src_port,
                            const std::string& dst_ip, std::uint16_t dst_port);

}  // namespace runewarp::test
