// Admission: the fixed Visitor limits (pre-routing global and per source, active relays, pending
// Tunnel stream opens) as counters whose slots are released exactly once by their owners, and
// the rate-limited saturation, recovery and rejection lines beside them. Both are shared by the
// Server's workers: every member may be called from several threads.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <mutex>
#include <string_view>
#include <unordered_map>

#include "obs/log.hh"
#include "obs/metrics.hh"
#include "proto/endpoint.hh"
#include "server/close_reason.hh"

namespace runewarp::server {

struct AdmissionLimits {
    uint32_t pre_routing_global = 4096;
    uint32_t pre_routing_per_source = 256;
    uint32_t active_relays = 4096;
    uint32_t pending_opens = 1024;  // Tunnel stream opens in progress
};

// Key of a canonical source IP (family + 16 address bytes, port ignored).
struct SourceKey {
    std::array<uint8_t, 17> bytes{};
    static SourceKey of(const proto::Endpoint& e) noexcept;
    bool operator==(const SourceKey&) const = default;
};

struct SourceKeyHash {
    size_t operator()(const SourceKey& k) const noexcept;
};

// One bounded count: take() succeeds below the limit, release() never goes below zero. Safe from
// several threads (compare-exchange); the count guards no other data, so ordering is relaxed.
class SlotCounter {
public:
    bool take(uint32_t limit) noexcept {
        uint32_t cur = used_.load(std::memory_order_relaxed);
        do {
            if (cur >= limit) return false;
        } while (!used_.compare_exchange_weak(cur, cur + 1, std::memory_order_relaxed));
        return true;
    }
    void release() noexcept {
        uint32_t cur = used_.load(std::memory_order_relaxed);
        while (cur > 0 && !used_.compare_exchange_weak(cur, cur - 1, std::memory_order_relaxed)) {
        }
    }
    uint32_t used() const noexcept { return used_.load(std::memory_order_relaxed); }

private:
    std::atomic<uint32_t> used_{0};
};

class Admission {
public:
    explicit Admission(AdmissionLimits limits = {}) : limits_(limits) {}

    const AdmissionLimits& limits() const noexcept { return limits_; }

    // Each try_* either takes a slot (true) or leaves every counter unchanged (false).
    bool try_pre_routing_global() noexcept { return pre_routing_.take(limits_.pre_routing_global); }
    void release_pre_routing_global() noexcept { pre_routing_.release(); }

    bool try_pre_routing_source(const SourceKey& key);
    void release_pre_routing_source(const SourceKey& key) noexcept;

    bool try_active_relay() noexcept { return active_.take(limits_.active_relays); }
    void release_active_relay() noexcept { active_.release(); }

    bool try_pending_open() noexcept { return pending_.take(limits_.pending_opens); }
    void release_pending_open() noexcept { pending_.release(); }

    uint32_t pre_routing() const noexcept { return pre_routing_.used(); }
    uint32_t active_relays() const noexcept { return active_.used(); }
    uint32_t pending_opens() const noexcept { return pending_.used(); }
    size_t tracked_sources() const noexcept;

private:
    const AdmissionLimits limits_;
    SlotCounter pre_routing_;
    SlotCounter active_;
    SlotCounter pending_;
    mutable std::mutex source_mu_;  // guards per_source_
    std::unordered_map<SourceKey, uint32_t, SourceKeyHash> per_source_;
};

// What saturated: the `scope=` of `server admission saturated` / `recovered`.
enum class AdmissionScope : uint8_t {
    kVisitorGlobal,
    kVisitorSource,
    kActiveRelay,
    kPendingOpen,
    kTunnelGlobal,
    kTunnelPerTunnel,
    kTunnelPerIdentity,
    kQuicHandshakeGlobal,
    kCount
};
const char* scope_name(AdmissionScope s) noexcept;

// Saturation logs at most one line per 10 s per scope, then one recovery line on the next
// success; rejected Visitors are summarised per reason at the same rate with their count.
// Safe from several threads: the rate limiters and counters are updated under a mutex.
class AdmissionLog {
public:
    explicit AdmissionLog(obs::Logger& log) noexcept : log_(log) {}

    // WARN `server admission saturated: scope=... active-work=... limit=...` (rate-limited).
    void saturated(AdmissionScope scope, uint64_t active, uint64_t limit) noexcept;
    // INFO `server admission recovered: scope=...` once after a logged saturation.
    void admitted(AdmissionScope scope) noexcept;
    // The rate-limited summary of a dropped Visitor (`server visitor intake rejected`, `server
    // route unavailable`, `server route rejected`); reasons covered elsewhere are ignored.
    void rejected(CloseReason r, std::string_view hostname = {}) noexcept;

    // Saturation events per scope since start (every refusal, not only the logged ones).
    const obs::Counter& saturations(AdmissionScope s) const noexcept {
        return saturation_events_[static_cast<size_t>(s)];
    }

private:
    static constexpr size_t kScopes = static_cast<size_t>(AdmissionScope::kCount);

    std::array<obs::Counter, kScopes> saturation_events_;  // written under mu_
    obs::Logger& log_;
    std::mutex mu_;  // guards saturation_events_ writes, saturation_, rejection_
    std::array<obs::RateLimiter, kScopes> saturation_;
    std::array<obs::RateLimiter, 32> rejection_;
    // Mirrors saturation_[i]'s pending recovery (written under mu_), so that admitted(), called on
    // every admission, takes the mutex only after a logged saturation.
    std::array<std::atomic<bool>, kScopes> recovery_pending_{};
};

}  // namespace runewarp::server
