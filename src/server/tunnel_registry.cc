// TunnelRegistry: the authorization table (identity -> Tunnel, immutable snapshot) and the
// Tunnel pools with their members, admission limits and placement.
#include "server/tunnel_registry.hh"

#include <algorithm>
#include <ctime>

#include "core/clock.hh"

namespace runewarp::server {

std::shared_ptr<const AuthTable> AuthTable::build(const config::ServerConfig& cfg) {
    auto t = std::make_shared<AuthTable>();
    for (const config::Tunnel& tun : cfg.tunnels) {
        int index = static_cast<int>(t->labels_.size());
        t->labels_.push_back(tun.label);
        // Validation guarantees each identity belongs to exactly one Tunnel.
        for (const std::string& id : tun.identities) t->by_identity_.emplace(id, index);
    }
    return t;
}

int AuthTable::tunnel_of(std::string_view identity) const noexcept {
    auto it = by_identity_.find(std::string(identity));
    return it == by_identity_.end() ? -1 : it->second;
}

int AuthTable::tunnel_index(std::string_view label) const noexcept {
    for (size_t i = 0; i < labels_.size(); ++i)
        if (labels_[i] == label) return static_cast<int>(i);
    return -1;
}

std::optional<AdmissionScope> join_scope(JoinStatus s) noexcept {
    switch (s) {
        case JoinStatus::kGlobalSaturated:
            return AdmissionScope::kTunnelGlobal;
        case JoinStatus::kPoolSaturated:
            return AdmissionScope::kTunnelPerTunnel;
        case JoinStatus::kIdentitySaturated:
            return AdmissionScope::kTunnelPerIdentity;
        default:
            return std::nullopt;
    }
}

const char* join_close_reason(JoinStatus s) noexcept {
    switch (s) {
        case JoinStatus::kJoined:
            return "";
        case JoinStatus::kUnmapped:
            return "unmapped client identity";
        case JoinStatus::kShuttingDown:
            return "server shutting down";
        case JoinStatus::kGlobalSaturated:
        case JoinStatus::kPoolSaturated:
        case JoinStatus::kIdentitySaturated:
            return "server tunnel admission saturated";
    }
    return "";
}

TunnelRegistry::TunnelRegistry(std::shared_ptr<const AuthTable> table, obs::Logger* log,
                               TunnelLimits limits)
    : table_(std::move(table)), log_(log), limits_(limits), pools_(table_->tunnel_count()) {}

std::shared_ptr<const AuthTable> TunnelRegistry::table() const {
    std::lock_guard lock(mu_);
    return table_;
}

TunnelRegistry::Join TunnelRegistry::join(const std::string& identity, void* connection,
                                          uint32_t shard) {
    Join j;
    std::lock_guard lock(mu_);
    if (sealed()) {
        j.status = JoinStatus::kShuttingDown;
        return j;
    }
    int tunnel = table_->tunnel_of(identity);
    if (tunnel < 0) {
        j.status = JoinStatus::kUnmapped;
        return j;
    }
    Pool& pool = pools_[static_cast<size_t>(tunnel)];
    uint32_t& mine = per_identity_[identity];
    if (total_ >= limits_.global) {
        j.status = JoinStatus::kGlobalSaturated;
    } else if (pool.members.size() >= limits_.per_pool) {
        j.status = JoinStatus::kPoolSaturated;
    } else if (mine >= limits_.per_identity) {
        j.status = JoinStatus::kIdentitySaturated;
    } else {
        j.status = JoinStatus::kJoined;
    }
    if (j.status != JoinStatus::kJoined) {
        if (mine == 0) per_identity_.erase(identity);
        return j;
    }
    auto m = std::make_shared<TunnelMember>();
    m->id = ++next_id_;
    m->identity = identity;
    m->tunnel = tunnel;
    m->connection = connection;
    m->shard = shard;
    m->joined_unix = static_cast<int64_t>(std::time(nullptr));
    m->alive = true;
    pool.members.push_back(m);
    ++mine;
    ++total_;
    if (log_ != nullptr) {
        log_->info("server tunnel connection accepted",
                   {{"client-identity", identity},
                    {"tunnel", table_->label(static_cast<size_t>(tunnel))},
                    {"members", static_cast<uint64_t>(pool.members.size())},
                    {"worker", uint64_t{shard}}});
    }
    j.member = std::move(m);
    return j;
}

void TunnelRegistry::leave(TunnelMember& m, std::string_view cause) {
    std::lock_guard lock(mu_);
    if (!m.alive) return;
    m.alive = false;
    m.connection = nullptr;
    Pool& pool = pools_[static_cast<size_t>(m.tunnel)];
    auto it = std::find_if(pool.members.begin(), pool.members.end(),
                           [&](const auto& p) { return p.get() == &m; });
    if (it != pool.members.end()) pool.members.erase(it);  // keeps the join order
    auto id = per_identity_.find(m.identity);
    if (id != per_identity_.end() && --id->second == 0) per_identity_.erase(id);
    if (total_ > 0) --total_;
    if (log_ == nullptr) return;
    const std::string& label = table_->label(static_cast<size_t>(m.tunnel));
    auto left = static_cast<uint64_t>(pool.members.size());
    if (cause.empty()) {
        log_->info("server tunnel connection closed",
                   {{"client-identity", m.identity}, {"tunnel", label}, {"members", left}});
    } else {
        log_->warn("server tunnel connection dropped",
                   {{"client-identity", m.identity}, {"tunnel", label}, {"members", left}}, cause);
    }
}

std::vector<std::shared_ptr<TunnelMember>> TunnelRegistry::replace_table(
    std::shared_ptr<const AuthTable> table) {
    std::vector<std::shared_ptr<TunnelMember>> revoked;
    std::lock_guard lock(mu_);
    std::vector<Pool> pools(table->tunnel_count());
    // Placement counters follow their Tunnel's label.
    for (size_t i = 0; i < pools.size(); ++i) {
        int old = table_->tunnel_index(table->label(i));
        if (old >= 0) pools[i].counter = pools_[static_cast<size_t>(old)].counter;
    }
    for (Pool& pool : pools_) {
        for (auto& m : pool.members) {
            int t = table->tunnel_of(m->identity);
            if (t >= 0) {
                if (log_ != nullptr && table->label(static_cast<size_t>(t)) !=
                                           table_->label(static_cast<size_t>(m->tunnel))) {
                    log_->info("server tunnel connection moved",
                               {{"client-identity", m->identity},
                                {"from-tunnel", table_->label(static_cast<size_t>(m->tunnel))},
                                {"tunnel", table->label(static_cast<size_t>(t))}});
                }
                m->tunnel = t;
                pools[static_cast<size_t>(t)].members.push_back(std::move(m));
                continue;
            }
            m->alive = false;
            auto id = per_identity_.find(m->identity);
            if (id != per_identity_.end() && --id->second == 0) per_identity_.erase(id);
            if (total_ > 0) --total_;
            if (log_ != nullptr) {
                log_->warn("server tunnel connection revoked",
                           {{"client-identity", m->identity},
                            {"tunnel", table_->label(static_cast<size_t>(m->tunnel))}},
                           "the identity is no longer in any [tunnel]; closing with "
                           "\"authorization revoked\"");
            }
            revoked.push_back(std::move(m));
        }
    }
    pools_ = std::move(pools);
    table_ = std::move(table);
    return revoked;
}

std::shared_ptr<TunnelMember> TunnelRegistry::pick(std::string_view label, uint32_t shard) {
    int tunnel;
    {
        std::lock_guard lock(mu_);
        tunnel = table_->tunnel_index(label);
    }
    return pick(tunnel, shard);
}

std::shared_ptr<TunnelMember> TunnelRegistry::pick(int tunnel, uint32_t shard) {
    std::lock_guard lock(mu_);
    if (tunnel < 0 || static_cast<size_t>(tunnel) >= pools_.size()) return nullptr;
    Pool& pool = pools_[static_cast<size_t>(tunnel)];
    size_t n = pool.members.size();
    if (n == 0) return nullptr;
    if (liveness_ != nullptr) {
        // Another worker's connection is only read by that worker: its last verdict stands.
        const int64_t now = core::now_ns();
        for (const auto& m : pool.members)
            if (m->shard == shard) note_liveness(*m, liveness_(*m, now));
    }
    // One pass from the pool counter: the first member holding the least active streams.
    // Each count is read once, since other workers change theirs meanwhile (two reads of a
    // count could disagree, leaving no member equal to the minimum first seen).
    size_t start = static_cast<size_t>(pool.counter++ % n);
    const std::shared_ptr<TunnelMember>* best = nullptr;
    uint32_t min = UINT32_MAX;
    for (size_t i = 0; i < n; ++i) {
        const auto& m = pool.members[(start + i) % n];
        if (m->unresponsive) continue;
        uint32_t c = m->active_streams.load(std::memory_order_relaxed);
        if (best == nullptr || c < min) {
            best = &m;
            min = c;
        }
    }
    return best != nullptr ? *best : nullptr;  // null: every member is silent
}

bool TunnelRegistry::responsive(TunnelMember& m) {
    if (!m.alive) return false;
    if (liveness_ == nullptr) return !m.unresponsive;
    const bool ok = liveness_(m, core::now_ns());
    std::lock_guard lock(mu_);
    note_liveness(m, ok);
    return ok;
}

void TunnelRegistry::note_liveness(TunnelMember& m, bool responsive) {
    if (m.unresponsive == !responsive) return;
    m.unresponsive = !responsive;
    if (m.unresponsive && on_unresponsive_) on_unresponsive_(m);
    if (log_ == nullptr) return;
    const std::string& label = table_->label(static_cast<size_t>(m.tunnel));
    if (m.unresponsive) {
        log_->warn("server tunnel connection unresponsive",
                   {{"client-identity", m.identity}, {"tunnel", label}},
                   "no packet from the Client while data is in flight; no new Visitors placed");
    } else {
        log_->info("server tunnel connection responsive",
                   {{"client-identity", m.identity}, {"tunnel", label}});
    }
}

size_t TunnelRegistry::members(int tunnel) const {
    std::lock_guard lock(mu_);
    if (tunnel < 0 || static_cast<size_t>(tunnel) >= pools_.size()) return 0;
    return pools_[static_cast<size_t>(tunnel)].members.size();
}

size_t TunnelRegistry::total() const {
    std::lock_guard lock(mu_);
    return total_;
}

std::vector<std::shared_ptr<TunnelMember>> TunnelRegistry::all() const {
    std::lock_guard lock(mu_);
    std::vector<std::shared_ptr<TunnelMember>> out;
    out.reserve(total_);
    for (const Pool& p : pools_) out.insert(out.end(), p.members.begin(), p.members.end());
    return out;
}

}  // namespace runewarp::server
