// UpstreamResolver: keeps every direct route's upstream addresses current. Names are resolved on
// the loop when the route table is built and again whenever their answer's TTL runs out (at least
// 5 s, at most 1 h apart); a failed re-resolution keeps the previous addresses, warns (at most once
// per 10 s) and tries again after 30 s.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/worker.hh"
#include "net/resolver.hh"
#include "obs/log.hh"
#include "server/route_table.hh"

namespace runewarp::server {

class UpstreamResolver final : public core::Session, private net::ResolveListener {
public:
    // `previous` (reload): the table serving until this one replaces it. A name whose first
    // lookup fails keeps the addresses the previous table has for the same upstream (WARN)
    // instead of failing; only a name new to this table fails.
    UpstreamResolver(core::Worker& w, net::Resolver& resolver, obs::Logger& log,
                     std::shared_ptr<const RouteTable> table,
                     std::shared_ptr<const RouteTable> previous = nullptr) noexcept;
    ~UpstreamResolver() override;

    // Starts the first resolution of every upstream name (false: no handler slot).
    bool start() noexcept;
    // Every name has had its first answer (an address set or an error).
    bool initial_done() const noexcept { return initial_left_ == 0; }
    // The first error of that first round, naming the route ("" when every name resolved).
    const std::string& initial_error() const noexcept { return initial_error_; }
    // Called once when the first round completes (not when start() finds no name to resolve:
    // check initial_done() after start()).
    void on_initial_done(std::function<void()> f) { initial_done_fn_ = std::move(f); }
    // Cancels lookups and timers; the session quiesces.
    void stop() noexcept;

    static constexpr int64_t kMinTtlNs = 5'000'000'000;
    static constexpr int64_t kMaxTtlNs = 3600'000'000'000;
    static constexpr int64_t kRetryNs = 30'000'000'000;

private:
    struct Entry {
        const DirectRoute* route = nullptr;
        uint64_t lookup = 0;  // request id while a lookup runs
        int64_t due_ns = 0;   // next resolution
        bool answered = false;
    };
    static constexpr uint8_t kOpRefresh = 1;

    void on_resolved(uint64_t id, net::Resolution& r) noexcept override;
    void on_event(const core::Completion& c) noexcept override;
    void on_quiesced() noexcept override {}
    void lookup(Entry& e) noexcept;
    AddressSet previous_addresses(const DirectRoute& route) const noexcept;
    void arm() noexcept;

    net::Resolver& resolver_;
    obs::Logger& log_;
    std::shared_ptr<const RouteTable> table_;
    std::shared_ptr<const RouteTable> previous_;
    std::function<void()> initial_done_fn_;
    std::vector<Entry> entries_;
    size_t initial_left_ = 0;
    std::string initial_error_;
    core::TimerHandle timer_{};
    bool timer_armed_ = false;
    obs::RateLimiter failure_limit_;
};

// "a:1,[b::1]:2" for logs.
std::string format_addresses(const std::vector<net::ResolvedAddress>& addrs);

}  // namespace runewarp::server
