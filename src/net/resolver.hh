// Resolver: DNS on the event loop with c-ares. Its sockets are polled by the Worker's loop and
// its retransmission timer is a Worker timer, so a lookup never blocks the loop and needs no
// thread. /etc/hosts is honoured, and answers carry their TTL so callers can re-resolve.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/worker.hh"
#include "net/address.hh"
#include "runewarp/result.hh"

namespace runewarp::net {

struct Resolution {
    std::string error;                   // empty on success
    std::vector<ResolvedAddress> addrs;  // resolver order (RFC 6724 sorted); >= 1 on success
    int64_t ttl_ns = 0;                  // smallest TTL of the answer (0 for /etc/hosts)
};

class ResolveListener {
public:
    // Called on the loop thread, never from inside resolve(), unless cancel(id) ran first.
    virtual void on_resolved(uint64_t id, Resolution& r) noexcept = 0;

protected:
    ~ResolveListener() = default;
};

struct ResolverOptions {
    int timeout_ms = 2000;  // per query try (c-ares doubles it per retry round)
    int tries = 2;
    // Comma-separated "host:port" name servers used instead of /etc/resolv.conf's; empty keeps
    // the system's.
    std::string servers;
};

class Resolver final : public core::Session {
public:
    // Owned by the role; destroy it only after shutdown() and once quiesced() (or after the
    // Worker stopped running).
    static Result<std::unique_ptr<Resolver>> create(core::Worker& w,
                                                    const ResolverOptions& opts = {});
    ~Resolver() override;

    // Starts a lookup of `host` (`socktype` SOCK_STREAM or SOCK_DGRAM) for IPv4 and IPv6.
    // Returns the request id (never 0).
    uint64_t resolve(const std::string& host, uint16_t port, int socktype, ResolveListener& l);
    // The listener is not called for `id` any more.
    void cancel(uint64_t id) noexcept;
    size_t pending() const noexcept { return pending_.size(); }

    // Cancels every lookup (no listener is called) and tears the session down: quiesced()
    // turns true once the loop has no op left on its sockets and they are closed.
    void shutdown() noexcept;
    bool quiesced() const noexcept { return quiesced_; }

    // One c-ares socket. Its fd is closed only when no poll is in flight on it (the loop's
    // teardown rule): a close requested by c-ares while a poll is armed cancels the poll and
    // closes afterwards.
    struct Sock {
        int fd = -1;
        bool want_read = false;
        bool want_write = false;
        bool read_armed = false;
        bool write_armed = false;
        bool closing = false;  // c-ares is done with it; close once both polls completed
    };
    struct Request;

private:
    explicit Resolver(core::Worker& w) noexcept : core::Session(w) {}
    void on_event(const core::Completion& c) noexcept override;
    void on_quiesced() noexcept override;

    // c-ares hooks (static trampolines live in the .cc).
    friend struct Hooks;
    int open_socket(int family, int type, int protocol) noexcept;
    int close_socket(int fd) noexcept;
    void on_sock_state(int fd, bool readable, bool writable) noexcept;
    void on_answer(const Request& req, int status, int timeouts, void* result) noexcept;

    void arm_polls(size_t idx) noexcept;
    void update_timer() noexcept;
    void deliver() noexcept;
    Sock* find(int fd) noexcept;

    static constexpr uint8_t kOpTimer = 1;
    static constexpr uint8_t kOpDeliver = 2;
    static constexpr uint8_t kOpSockBase = 8;  // socket i: read op 8+2i, write op 9+2i
    static constexpr size_t kMaxSockets = 48;

    void* channel_ = nullptr;  // ares_channel
    std::vector<Sock> socks_;
    std::unordered_map<uint64_t, ResolveListener*> pending_;
    std::vector<std::pair<uint64_t, Resolution>> done_;
    uint64_t next_id_ = 1;
    core::TimerHandle timer_{};
    bool timer_armed_ = false;
    bool deliver_armed_ = false;
    bool in_shutdown_ = false;
    bool quiesced_ = false;
};

}  // namespace runewarp::net
