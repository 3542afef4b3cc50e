// Admission: the fixed Visitor limits as counters released exactly once; their log lines.
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

bool Admission::try_pre_routing_source(const SourceKey& key) {
    std::lock_guard lock(source_mu_);
    auto [it, inserted] = per_source_.try_emplace(key, 0);
    if (it->second >= limits_.pre_routing_per_source) return false;
    ++it->second;
    return true;
}

void Admission::release_pre_routing_source(const SourceKey& key) noexcept {
    std::lock_guard lock(source_mu_);
    auto it = per_source_.find(key);
    if (it == per_source_.end()) return;
    if (--it->second == 0) per_source_.erase(it);
}

size_t Admission::tracked_sources() const noexcept {
    std::lock_guard lock(source_mu_);
    return per_source_.size();
}

const char* scope_name(AdmissionScope s) noexcept {
    switch (s) {
        case AdmissionScope::kVisitorGlobal:
            return "visitor-global";
        case AdmissionScope::kVisitorSource:
            return "visitor-source";
        case AdmissionScope::kActiveRelay:
            return "active-routed-stream";
        case AdmissionScope::kPendingOpen:
            return "pending-stream-open";
        case AdmissionScope::kTunnelGlobal:
            return "tunnel-connection-global";
        case AdmissionScope::kTunnelPerTunnel:
            return "tunnel-connection-per-tunnel";
        case AdmissionScope::kTunnelPerIdentity:
            return "tunnel-connection-per-client-identity";
        case AdmissionScope::kQuicHandshakeGlobal:
            return "quic-handshake-global";
        case AdmissionScope::kCount:
            break;
    }
    return "unknown";
}

void AdmissionLog::saturated(AdmissionScope scope, uint64_t active, uint64_t limit) noexcept {
    auto i = static_cast<size_t>(scope);
    // The line is written under the lock too, so a recovery line never precedes its saturation.
    std::lock_guard lock(mu_);
    saturation_events_[i].add();
    if (saturation_[i].on_saturated().log) {
        recovery_pending_[i].store(true, std::memory_order_relaxed);
        log_.warn("server admission saturated",
                  {{"scope", scope_name(scope)}, {"active-work", active}, {"limit", limit}});
    }
}

void AdmissionLog::admitted(AdmissionScope scope) noexcept {
    auto i = static_cast<size_t>(scope);
    // Lock-free until a saturation line was written; one written by another thread just now is
    // seen by a later admission.
    if (!recovery_pending_[i].load(std::memory_order_relaxed)) return;
    std::lock_guard lock(mu_);
    recovery_pending_[i].store(false, std::memory_order_relaxed);
    if (saturation_[i].on_success())
        log_.info("server admission recovered", {{"scope", scope_name(scope)}});
}

void AdmissionLog::rejected(CloseReason r, std::string_view hostname) noexcept {
    switch (r) {
        case CloseReason::kNone:
        case CloseReason::kDone:
        case CloseReason::kReset:
        case CloseReason::kShutdown:
        case CloseReason::kSourceSaturated:
        case CloseReason::kRelaySaturated:
        case CloseReason::kPendingOpenSaturated:
        // TLS-ALPN-01 answers: DEBUG only (the ACME manager reports validation outcomes).
        case CloseReason::kAcmeNoChallenge:
        case CloseReason::kAcmeHandshakeFailed:
        case CloseReason::kAcmeHandshakeTimeout:
            return;  // not intake rejections, or already covered by saturation lines
        default:
            break;
    }
    obs::RateLimiter::Decision d{};
    {
        std::lock_guard lock(mu_);
        d = rejection_[static_cast<size_t>(r) % rejection_.size()].on_saturated();
    }
    if (!d.log) return;
    if (r == CloseReason::kNoActiveTunnel || r == CloseReason::kUpstreamConnectFailed ||
        r == CloseReason::kUpstreamTimeout || r == CloseReason::kUpstreamWriteFailed) {
        if (hostname.empty()) {
            log_.warn("server route unavailable", {{"reason", reason_text(r)}, {"count", d.count}});
        } else {
            log_.warn(
                "server route unavailable",
                {{"public-hostname", hostname}, {"reason", reason_text(r)}, {"count", d.count}});
        }
    } else if (r == CloseReason::kAcmeConfigMissing) {
        log_.warn("server route rejected", {{"reason", reason_text(r)}, {"count", d.count}},
                  "TLS-ALPN-01 for the Server hostname needs [server.acme]");
    } else {
        log_.warn("server visitor intake rejected",
                  {{"reason", reason_text(r)}, {"count", d.count}});
    }
}

}  // namespace runewarp::server
