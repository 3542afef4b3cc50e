// Admission: the fixed Visitor limits of spec 5.11 (pre-routing global and per source, active
// relays, pending Tunnel stream opens) as counters whose slots are released exactly once by their
// owners.
#pragma once

#include <array>
#include <cstdint>
#include <unordered_map>

#include "proto/endpoint.hh"

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

class Admission {
public:
    explicit Admission(AdmissionLimits limits = {}) : limits_(limits) {}

    const AdmissionLimits& limits() const noexcept { return limits_; }

    // Each try_* either takes a slot (true) or leaves every counter unchanged (false).
    bool try_pre_routing_global() noexcept;
    void release_pre_routing_global() noexcept;

    bool try_pre_routing_source(const SourceKey& key);
    void release_pre_routing_source(const SourceKey& key) noexcept;

    bool try_active_relay() noexcept;
    void release_active_relay() noexcept;

    bool try_pending_open() noexcept;
    void release_pending_open() noexcept;

    uint32_t pre_routing() const noexcept { return pre_routing_; }
    uint32_t active_relays() const noexcept { return active_; }
    uint32_t pending_opens() const noexcept { return pending_; }
    size_t tracked_sources() const noexcept { return per_source_.size(); }

private:
    AdmissionLimits limits_;
    uint32_t pre_routing_ = 0;
    uint32_t active_ = 0;
    uint32_t pending_ = 0;
    std::unordered_map<SourceKey, uint32_t, SourceKeyHash> per_source_;
};

}  // namespace runewarp::server
