// Admission: the fixed Visitor limits of spec 5.11 as counters released exactly once.
#include "server/admission.hh"

#include <cstring>

namespace runewarp::server {

SourceKey SourceKey::of(const proto::Endpoint& e) noexcept {
    SourceKey k;
    k.bytes[0] = static_cast<uint8_t>(e.family);
    std::memcpy(k.bytes.data() + 1, e.addr.data(), e.addr.size());
    return k;
}

size_t SourceKeyHash::operator()(const SourceKey& k) const noexcept {
    // FNV-1a: the key is small and the map only needs a reasonable spread.
    uint64_t h = 1469598103934665603ull;
    for (uint8_t b : k.bytes) {
        h ^= b;
        h *= 1099511628211ull;
    }
    return static_cast<size_t>(h);
}

bool Admission::try_pre_routing_global() noexcept {
    if (pre_routing_ >= limits_.pre_routing_global) return false;
    ++pre_routing_;
    return true;
}

void Admission::release_pre_routing_global() noexcept {
    if (pre_routing_ > 0) --pre_routing_;
}

bool Admission::try_pre_routing_source(const SourceKey& key) {
    auto [it, inserted] = per_source_.try_emplace(key, 0);
    if (it->second >= limits_.pre_routing_per_source) return false;
    ++it->second;
    return true;
}

void Admission::release_pre_routing_source(const SourceKey& key) noexcept {
    auto it = per_source_.find(key);
    if (it == per_source_.end()) return;
    if (--it->second == 0) per_source_.erase(it);
}

bool Admission::try_active_relay() noexcept {
    if (active_ >= limits_.active_relays) return false;
    ++active_;
    return true;
}

void Admission::release_active_relay() noexcept {
    if (active_ > 0) --active_;
}

bool Admission::try_pending_open() noexcept {
    if (pending_ >= limits_.pending_opens) return false;
    ++pending_;
    return true;
}

void Admission::release_pending_open() noexcept {
    if (pending_ > 0) --pending_;
}

}  // namespace runewarp::server
