// EdgeShard: one worker's share of the Server edge — its event loop, its member of the public
// listener group, its member of the tunnel UDP group (a TunnelFront and the Tunnel connections
// steered to it), the Visitor sessions it accepted and the per-loop resources they use (splice
// pipes, peek and prefix buffers, intake parsers). Shard 0 runs on the main thread beside
// control, reload and shutdown; shards 1..N-1 run on threads of their own. A Visitor placed on a
// Tunnel connection another shard owns is handed to that shard (its socket and what intake
// learnt), which opens the stream and relays.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include "acme/challenge.hh"
#include "config/config.hh"
#include "core/mailbox.hh"
#include "core/pipe_pool.hh"
#include "core/slab.hh"
#include "core/worker.hh"
#include "obs/log.hh"
#include "obs/metrics.hh"
#include "proto/endpoint.hh"
#include "server/admission.hh"
#include "server/intake_pool.hh"
#include "server/route_table.hh"
#include "server/server_metrics.hh"
#include "server/tcp_listener.hh"
#include "server/tunnel_front.hh"
#include "server/tunnel_registry.hh"
#include "server/visitor.hh"

namespace runewarp::server {

class EdgeServer;

// Route and Tunnel label -> its counters in the shared ServerMetrics. Built on the main thread
// after the labels were added, then read-only: shards look counters up here, never in the
// metrics' own (growing) index.
struct LabelCounts {
    obs::LabelLookup<RouteCounts> direct;
    obs::LabelLookup<RouteCounts> tunnel;
    static std::shared_ptr<const LabelCounts> build(ServerMetrics& m) {
        return std::make_shared<const LabelCounts>(LabelCounts{
            obs::LabelLookup<RouteCounts>(m.direct), obs::LabelLookup<RouteCounts>(m.tunnel)});
    }
};

// What a shard's new Visitors start under; replaced as a whole by a reload.
struct ShardSnapshot {
    std::shared_ptr<const config::ServerConfig> cfg;
    std::shared_ptr<const RouteTable> routes;
    std::shared_ptr<const LabelCounts> counts;
};

// A Visitor placed on a Tunnel connection of another shard, on its way there. Dropping it (the
// mailbox closed during shutdown) closes the socket.
struct VisitorHandoff {
    core::UniqueFd fd;
    std::shared_ptr<TunnelMember> member;  // the placement made by the handing shard
    uint32_t hops = 0;                     // hand-overs so far
    uint64_t conn_id = 0;
    int64_t started_ns = 0;
    ShardSnapshot snap;  // keeps the label alive
    std::string_view label;
    std::string sni;
    proto::Tuple tuple{};
    size_t buffered = 0;
};

// Bytes and count of relays still running, per route or Tunnel label and per Tunnel member, as a
// scrape adds them to the counts of finished relays.
struct LiveBytes {
    uint64_t in = 0;
    uint64_t out = 0;
    uint64_t active = 0;
};
struct LiveView {
    std::unordered_map<const RouteCounts*, LiveBytes> live;
    std::unordered_map<const TunnelMember*, LiveBytes> member_live;
    // The Tunnel connections' transport state, read by the worker that owns each.
    std::unordered_map<const TunnelMember*, MemberStats> member_stats;
    uint64_t visitors = 0;
    uint64_t handshakes = 0;  // QUIC handshakes in flight
    void merge(const LiveView& o);
};

class EdgeShard final : private ListenerOwner {
public:
    static constexpr size_t kPeekCapacity = 16384;
    // Where a Tunnel stream prefix is assembled: PROXY v2 header + up to kPeekCapacity bytes.
    static constexpr size_t kPrefixCapacity = kPeekCapacity + 64;

    EdgeShard(EdgeServer& server, uint32_t index) noexcept;
    ~EdgeShard();
    EdgeShard(const EdgeShard&) = delete;
    EdgeShard& operator=(const EdgeShard&) = delete;

    uint32_t index() const noexcept { return index_; }
    bool primary() const noexcept { return index_ == 0; }

    // Shard 0: builds its parts on the main thread's worker.
    // `tunnel_fd`: this worker's member of the tunnel UDP group of `tunnel_count` (none: no
    // Tunnel connection lives here).
    Result<void> setup_primary(core::Worker& w, core::UniqueFd public_fd, std::string public_text,
                               ShardSnapshot snap, core::UniqueFd tunnel_fd, uint32_t tunnel_count);
    // Shards 1..N-1: starts the thread, which creates its own loop (an io_uring is used by the
    // thread that created it) and parts; returns once they exist or failed.
    Result<void> start_thread(const core::WorkerOptions& wo, core::UniqueFd public_fd,
                              std::string public_text, ShardSnapshot snap, core::UniqueFd tunnel_fd,
                              uint32_t tunnel_count);
    // Runs `fn` on this shard's loop thread (any thread may call; dropped once stopped).
    void post(std::function<void()> fn);
    // Stops the loop thread and joins it (shards 1..N-1; main thread, after shutdown finished).
    void stop_thread() noexcept;

    // --- on this shard's loop thread -----------------------------------------------------------
    void start_listener() noexcept;
    // Shard 0, once every other shard stopped: no more posts are run.
    void close_mailbox() noexcept;
    bool mailbox_quiesced() const noexcept;
    // Shutdown: close the listener, cancel Visitors still in intake.
    void stop_ingress() noexcept;
    // Cut every relay still running.
    void cut() noexcept;
    void set_snapshot(ShardSnapshot snap) noexcept { snap_ = std::move(snap); }
    // Adds this shard's running relays to `out`.
    void collect(LiveView& out) const;
    // A Visitor handed over by another shard.
    void adopt(std::shared_ptr<VisitorHandoff> h) noexcept;
    // The Tunnel listener on member `index` (this shard's) of a group of `count`. Startup, or
    // the first [tunnel] a reload adds (shard 0 only).
    Result<void> open_tunnel(TunnelHub& hub, core::UniqueFd fd, uint32_t count);
    // This shard's Tunnel listener (null when it owns no member of the group).
    TunnelFront* tunnel_front() noexcept { return tunnel_front_.get(); }
    // Drops the Tunnel listener and whatever lingers in a closing period.
    void drop_tunnel() noexcept;
    // Frees the Tunnel front (shard 0, before the hub goes).
    void reset_tunnel() noexcept { tunnel_front_.reset(); }

    // --- any thread ----------------------------------------------------------------------------
    uint64_t live() const noexcept { return live_count_.load(std::memory_order_acquire); }
    // Listener closed and no Visitor left.
    bool drained() const noexcept { return drained_.load(std::memory_order_acquire); }
    // Visitors this shard's listener accepted.
    uint64_t accepted() const noexcept { return accepted_.value(); }

    // --- for VisitorSession (this shard's loop thread) ------------------------------------------
    core::Worker& worker() noexcept { return *worker_; }
    obs::Logger& log() noexcept;
    Admission& admission() noexcept;
    AdmissionLog& admission_log() noexcept;
    ServerMetrics& metrics() noexcept;
    core::PipePool& pipes() noexcept { return *pipes_; }
    const std::shared_ptr<const config::ServerConfig>& config_snapshot() const noexcept {
        return snap_.cfg;
    }
    const std::shared_ptr<const RouteTable>& routes() const noexcept { return snap_.routes; }
    const ShardSnapshot& snapshot() const noexcept { return snap_; }
    RouteCounts* direct_counts(std::string_view label) const noexcept {
        return snap_.counts != nullptr ? snap_.counts->direct.find(label) : nullptr;
    }
    RouteCounts* tunnel_counts(std::string_view label) const noexcept {
        return snap_.counts != nullptr ? snap_.counts->tunnel.find(label) : nullptr;
    }
    // Null when no Tunnel is configured.
    TunnelRegistry* tunnels() noexcept;
    const acme::ChallengeBoard* acme_board() const noexcept;
    // One scratch buffer for synchronous MSG_PEEK reads (a peek completes before the next).
    uint8_t* peek_buffer() noexcept { return peek_buf_.get(); }
    uint8_t* prefix_buffer() noexcept { return prefix_buf_.get(); }
    IntakePool& intake_pool() noexcept { return intake_pool_; }
    void on_visitor_closed(VisitorSession& v, core::SlotId slab_id) noexcept;
    // Sends the Visitor to the shard that owns h->member's connection.
    void hand_off(std::shared_ptr<VisitorHandoff> h) noexcept;

private:
    Result<void> setup(core::UniqueFd public_fd, std::string public_text, ShardSnapshot snap,
                       core::UniqueFd tunnel_fd, uint32_t tunnel_count);
    void thread_main(core::WorkerOptions wo, core::UniqueFd public_fd, std::string public_text,
                     ShardSnapshot snap, core::UniqueFd tunnel_fd, uint32_t tunnel_count) noexcept;
    void note_drained() noexcept;
    VisitorSession* new_session(int fd, uint64_t conn_id) noexcept;

    // ListenerOwner
    void on_accept(Listener& l, int fd) noexcept override;
    void on_listener_fatal(Listener& l, int err) noexcept override;
    void on_listener_closed(Listener& l) noexcept override;

    EdgeServer& server_;
    const uint32_t index_;
    core::Worker* worker_ = nullptr;
    std::unique_ptr<core::Worker> own_worker_;  // shards 1..N-1
    std::unique_ptr<core::Mailbox> mailbox_;
    ShardSnapshot snap_;
    std::unique_ptr<core::PipePool> pipes_;
    std::unique_ptr<uint8_t[]> peek_buf_;
    std::unique_ptr<uint8_t[]> prefix_buf_;
    IntakePool intake_pool_;
    std::unique_ptr<core::Slab<VisitorSession>> visitors_;
    std::vector<VisitorSession*> live_;  // index kept in VisitorSession::live_index_
    std::unique_ptr<Listener> listener_;
    std::unique_ptr<TunnelFront> tunnel_front_;
    bool listener_open_ = false;
    bool ingress_stopped_ = false;
    std::atomic<uint64_t> live_count_{0};
    obs::Counter accepted_;
    std::atomic<bool> drained_{false};

    // The thread of shards 1..N-1.
    std::thread thread_;
    bool stop_ = false;  // loop thread only
    std::mutex start_mu_;
    std::condition_variable start_cv_;
    bool started_ = false;
    std::string start_error_;
};

}  // namespace runewarp::server
