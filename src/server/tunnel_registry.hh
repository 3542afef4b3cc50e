// TunnelRegistry: the authorization table (identity -> Tunnel, immutable snapshot) and the
// Tunnel pools with their members, admission limits and placement.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "config/config.hh"
#include "obs/log.hh"
#include "server/admission.hh"

namespace runewarp::server {

// Identity -> Tunnel, built once from the validated config and shared by handshake admission
// and routing (replaced as a whole, never edited).
class AuthTable {
public:
    static std::shared_ptr<const AuthTable> build(const config::ServerConfig& cfg);

    // Index of the Tunnel that authorizes `identity`, or -1.
    int tunnel_of(std::string_view identity) const noexcept;
    // Index of the Tunnel labelled `label`, or -1.
    int tunnel_index(std::string_view label) const noexcept;
    const std::string& label(size_t tunnel) const noexcept { return labels_[tunnel]; }
    size_t tunnel_count() const noexcept { return labels_.size(); }

private:
    std::vector<std::string> labels_;
    std::unordered_map<std::string, int> by_identity_;
};

// Woken when a member's connection may open a stream again (credit grew or it went away).
class StreamWaiter {
public:
    virtual void on_stream_credit() noexcept = 0;

protected:
    ~StreamWaiter() = default;
};

// One live authenticated Tunnel connection. Shared with the Visitors routed through it, so a
// Visitor that outlives the connection still holds a valid (dead) member. The connection lives on
// one worker (`shard`): only that worker's loop touches `connection` and `waiters`; the counters
// and flags are read by every worker's placement.
struct TunnelMember {
    uint64_t id = 0;
    std::string identity;
    int tunnel = -1;             // under the registry's lock
    uint32_t shard = 0;          // the worker whose loop owns the connection
    void* connection = nullptr;  // quic::Connection* (opaque here; the owning worker only)
    std::atomic<uint32_t> active_streams{0};
    // Bytes of the streams that ended on this member (the status page adds the live ones).
    std::atomic<uint64_t> bytes_in{0};
    std::atomic<uint64_t> bytes_out{0};
    int64_t joined_unix = 0;  // when the connection joined its pool (unix seconds; set by join)
    std::atomic<bool> alive{false};
    // As last seen by its own worker: takes no new Visitors.
    std::atomic<bool> unresponsive{false};
    std::vector<StreamWaiter*> waiters;  // Visitors waiting for stream credit (owning worker)
};

struct TunnelLimits {
    uint32_t global = 4096;  // Tunnel connections: in all, per pool, per Client identity
    uint32_t per_pool = 256;
    uint32_t per_identity = 64;
};

enum class JoinStatus : uint8_t {
    kJoined,
    kUnmapped,         // identity not in the table: close "unmapped client identity"
    kShuttingDown,     // registration sealed: close "server shutting down"
    kGlobalSaturated,  // close "server tunnel admission saturated"
    kPoolSaturated,
    kIdentitySaturated,
};

// The saturation scope of a refused join, none for kJoined, kUnmapped and kShuttingDown.
std::optional<AdmissionScope> join_scope(JoinStatus s) noexcept;
// The application close reason (code 0) for a refused join.
const char* join_close_reason(JoinStatus s) noexcept;

// Thread-safe: every worker places Visitors and its Tunnel connections join and leave under one
// lock (nothing on a per-packet path takes it).
class TunnelRegistry {
public:
    // `log` may be null (tests).
    TunnelRegistry(std::shared_ptr<const AuthTable> table, obs::Logger* log,
                   TunnelLimits limits = {});

    // The table now (a reload replaces it; the snapshot stays valid for its holder).
    std::shared_ptr<const AuthTable> table() const;
    const TunnelLimits& limits() const noexcept { return limits_; }

    // Admission at handshake time: is the identity authorized by some Tunnel?
    bool admits(std::string_view identity) const { return table()->tunnel_of(identity) >= 0; }

    struct Join {
        JoinStatus status = JoinStatus::kUnmapped;
        std::shared_ptr<TunnelMember> member;  // set when joined
    };
    // An authenticated connection (owned by worker `shard`) joins the pool of its identity's
    // Tunnel (newest refused on saturation; existing members are kept).
    Join join(const std::string& identity, void* connection, uint32_t shard = 0);
    // The member's connection ended; `cause` empty = clean close (INFO), else dropped (WARN).
    void leave(TunnelMember& m, std::string_view cause);
    // Reload: handshakes and joins from now on use `table`. Members are re-indexed by the new
    // table (an identity moved to another Tunnel moves with its connection); members whose
    // identity no longer has a Tunnel leave the pools at once (WARN `server tunnel connection
    // revoked`) and are returned, still holding their connection, for the caller to close.
    std::vector<std::shared_ptr<TunnelMember>> replace_table(
        std::shared_ptr<const AuthTable> table);
    // No registration after this (shutdown began).
    void seal() noexcept { sealed_.store(true, std::memory_order_release); }
    bool sealed() const noexcept { return sealed_.load(std::memory_order_acquire); }

    // Whether a member's connection still answers (quic::Connection::unresponsive); unset: all
    // members count as responsive. Called only on the member's own worker.
    using LivenessFn = bool (*)(const TunnelMember& m, int64_t now_ns) noexcept;
    void set_liveness(LivenessFn f) noexcept { liveness_ = f; }
    // Called (on the member's own worker, under the registry's lock) when a member is found
    // unresponsive: its worker re-checks it until it answers, since placements on the other
    // workers only see the flag. Set before any worker places Visitors.
    void set_on_unresponsive(std::function<void(TunnelMember&)> f) {
        on_unresponsive_ = std::move(f);
    }

    // Placement by worker `shard`: minimum active count, pool counter k, scan from k mod n, first
    // with the minimum. Members found unresponsive are skipped until they answer again (they
    // leave when their connection closes); the members of `shard` are checked now, the others
    // as their own worker last saw them. nullptr when no responsive member is left.
    std::shared_ptr<TunnelMember> pick(int tunnel, uint32_t shard = 0);
    std::shared_ptr<TunnelMember> pick(std::string_view label, uint32_t shard = 0);
    // On the member's own worker: whether it still answers now (noted and logged on a change).
    bool responsive(TunnelMember& m);

    void stream_started(TunnelMember& m) noexcept {
        m.active_streams.fetch_add(1, std::memory_order_relaxed);
    }
    void stream_ended(TunnelMember& m) noexcept {
        uint32_t n = m.active_streams.load(std::memory_order_relaxed);
        while (n > 0 &&
               !m.active_streams.compare_exchange_weak(n, n - 1, std::memory_order_relaxed)) {
        }
    }

    size_t members(int tunnel) const;
    size_t total() const;
    // Every live member (for shutdown).
    std::vector<std::shared_ptr<TunnelMember>> all() const;

private:
    void note_liveness(TunnelMember& m, bool responsive);  // under mu_

    struct Pool {
        std::vector<std::shared_ptr<TunnelMember>> members;  // join order
        uint64_t counter = 0;                                // k
    };

    mutable std::mutex mu_;
    std::shared_ptr<const AuthTable> table_;
    obs::Logger* log_;
    TunnelLimits limits_;
    std::vector<Pool> pools_;
    std::unordered_map<std::string, uint32_t> per_identity_;
    size_t total_ = 0;
    uint64_t next_id_ = 0;
    std::atomic<bool> sealed_{false};
    LivenessFn liveness_ = nullptr;
    std::function<void(TunnelMember&)> on_unresponsive_;
};

}  // namespace runewarp::server
