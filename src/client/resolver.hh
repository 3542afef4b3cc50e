// Name resolution off the event loop: a few threads run getaddrinfo and hand results back to the
// loop through an eventfd the Resolver session reads (spec 5.8, 5.13: DNS never blocks the loop).
#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/worker.hh"
#include "runewarp/result.hh"

namespace runewarp::client {

struct ResolvedAddress {
    sockaddr_storage addr{};
    socklen_t len = 0;
};

// The text of a socket address: "1.2.3.4:443" or "[2001:db8::1]:443".
std::string format_sockaddr(const sockaddr* sa, socklen_t len);

// Parses an IP literal host (no brackets) with `port` into `out`; false if `host` is a name.
bool literal_address(const std::string& host, uint16_t port, ResolvedAddress& out) noexcept;

class ResolveListener {
public:
    // `error` is empty on success; `addrs` are in resolver order (at least one on success).
    virtual void on_resolved(uint64_t id, const std::string& error,
                             std::vector<ResolvedAddress>& addrs) noexcept = 0;

protected:
    ~ResolveListener() = default;
};

class Resolver final : public core::Session {
public:
    struct Shared;
    // Starts `threads` resolver threads. Call after the worker blocked its signals.
    static Result<Resolver*> create(core::Worker& w, unsigned threads);

    // Queues a lookup (`socktype` SOCK_STREAM or SOCK_DGRAM); the listener is called on the loop
    // thread unless cancel(id) ran first. Returns the request id (never 0).
    uint64_t resolve(const std::string& host, uint16_t port, int socktype, ResolveListener& l);
    void cancel(uint64_t id) noexcept;

    // Stops the threads (a lookup in progress is abandoned) and tears the session down.
    void shutdown() noexcept;

private:
    explicit Resolver(core::Worker& w) noexcept : core::Session(w) {}
    ~Resolver() override;
    void on_event(const core::Completion& c) noexcept override;
    void on_quiesced() noexcept override;
    void arm_read() noexcept;

    static constexpr uint8_t kOpRead = 1;
    core::UniqueFd efd_;
    uint64_t efd_buf_ = 0;
    std::shared_ptr<Shared> shared_;
    std::unordered_map<uint64_t, ResolveListener*> pending_;
    uint64_t next_id_ = 1;
};

}  // namespace runewarp::client
