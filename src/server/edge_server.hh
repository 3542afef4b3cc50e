// EdgeServer: the Server as a composition — event loop, listeners, Visitor sessions and their
// shared resources, the Tunnel front, orderly shutdown, signals, systemd notification and the
// certificate expiry check.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "acme/challenge.hh"
#include "acme/manager.hh"
#include "config/config.hh"
#include "core/mailbox.hh"
#include "core/pipe_pool.hh"
#include "core/slab.hh"
#include "core/worker.hh"
#include "net/resolver.hh"
#include "obs/http_server.hh"
#include "obs/log.hh"
#include "preflight/preflight.hh"
#include "server/admission.hh"
#include "server/cert_watch.hh"
#include "server/edge_shard.hh"
#include "server/intake_pool.hh"
#include "server/route_table.hh"
#include "server/server_metrics.hh"
#include "server/shutdown.hh"
#include "server/tcp_listener.hh"
#include "server/tunnel_front.hh"
#include "server/tunnel_registry.hh"
#include "server/upstream_resolver.hh"
#include "server/visitor.hh"
#include "sys/role_reload.hh"
#include "sys/watchdog.hh"

namespace runewarp::server {

class EdgeServer;

// Server-wide housekeeping timers (the daily certificate check) ride on
// their own session slot.
class ControlSession final : public core::Session {
public:
    ControlSession(core::Worker& w, EdgeServer& server) noexcept
        : core::Session(w), server_(server) {}
    enum Op : uint8_t { kOpCertCheck = 2, kOpReloadDeadline = 3 };

protected:
    void on_event(const core::Completion& c) noexcept override;
    void on_quiesced() noexcept override {}

private:
    EdgeServer& server_;
};

class EdgeServer final : public core::SignalListener, private ListenerOwner, private ShutdownHost {
public:
    // Binds (or adopts socket-activated) listeners and prepares everything; nothing runs yet.
    // `tunnel_cert`: the Server certificate as the startup rules checked and loaded it (required
    // when a Tunnel is configured).
    // `options`: how the config was loaded, to load it again on reload (SIGHUP, `runewarp
    // reload`).
    static Result<std::unique_ptr<EdgeServer>> create(
        std::shared_ptr<const config::ServerConfig> cfg,
        const trust::ServerCertMaterial* tunnel_cert, obs::Logger& log,
        config::LoadOptions options = {});
    ~EdgeServer();

    // Serves until orderly shutdown completes. Returns the process exit code.
    int run() noexcept;

    // --- for the shards (any thread unless noted) ---------------------------------------------
    core::Worker& worker() noexcept { return *worker_; }
    obs::Logger& log() noexcept { return log_; }
    Admission& admission() noexcept { return admission_; }
    AdmissionLog& admission_log() noexcept { return admission_log_; }
    EdgeShard& shard(size_t i) noexcept { return *shards_[i]; }
    // The public listener group's `accept retrying` rate limit.
    obs::SharedRateLimiter& accept_limit() noexcept { return accept_limit_; }
    size_t shard_count() const noexcept { return shards_.size(); }
    uint64_t next_conn_id() noexcept { return next_conn_id_.fetch_add(1) + 1; }
    // The orderly shutdown began (shards stop accepting before their stop_ingress arrives).
    bool shutdown_begun() const noexcept { return shutdown_begun_.load(std::memory_order_acquire); }
    // Main thread: a shard drained during shutdown, a listener or a worker loop failed.
    void on_shard_drained() noexcept;
    void on_listener_failed(const std::string& bind_text, int err) noexcept;
    void on_worker_failed() noexcept;
    // The configuration serving now; a Visitor keeps the snapshot it started with.
    const config::ServerConfig& config() const noexcept { return *cfg_; }
    const std::shared_ptr<const config::ServerConfig>& config_snapshot() const noexcept {
        return cfg_;
    }
    // The configuration generation (1 = as started; each applied reload adds one).
    uint64_t generation() const noexcept { return reload_ ? reload_->generation() : 1; }
    const std::shared_ptr<const RouteTable>& routes() const noexcept { return routes_; }
    bool shutting_down() const noexcept { return shutdown_->started(); }
    // Null when no Tunnel is configured.
    // Any thread: null until a Tunnel exists (a reload may add the first one).
    TunnelRegistry* tunnels() noexcept {
        TunnelHub* h = hub_.load(std::memory_order_acquire);
        return h != nullptr ? &h->registry() : nullptr;
    }
    TunnelHub* tunnel_hub() noexcept { return hub_.load(std::memory_order_acquire); }
    // The TLS-ALPN-01 challenges pending for the Server hostname; null without [server.acme].
    const acme::ChallengeBoard* acme_board() const noexcept { return acme_board_.get(); }

    ServerMetrics& metrics() noexcept { return metrics_; }
    // Main thread: the relays running on every shard (shards 1..N-1 answer through their
    // mailboxes; one that does not within 500 ms is left out).
    LiveView collect_live() const;

    // The metrics listener's answers (loop thread): /metrics, /status.json and the status page.
    obs::HttpResponse serve_http(std::string_view path);
    std::string render_metrics() const;
    std::string render_status_json() const;

    // Expiry warnings for the served certificates; re-armed daily.
    void on_cert_check() noexcept;

    // Loop thread: the ACME manager issued or renewed the Server certificate; the Tunnel
    // handshakes from now on present it.
    void on_acme_certificate(const acme::Certificate& cert) noexcept;
    // Loop thread: the ACME manager cannot go on; fast shutdown, exit 1.
    void on_acme_fatal() noexcept;
    // The 10 s bound on resolving a reload's new upstream names ran out.
    void on_reload_deadline() noexcept;

private:
    EdgeServer(std::shared_ptr<const config::ServerConfig> cfg, obs::Logger& log,
               config::LoadOptions options);
    void on_signal(const signalfd_siginfo& info) noexcept override;

    // Resolves every upstream name of the route table before serving (startup fails when one
    // does not resolve) and keeps them current afterwards.
    Result<void> resolve_upstreams();
    // [server.acme]: the challenge board, the mailbox and the manager (not started yet).
    Result<void> create_acme();

    // Reload (spec 10.1): the checked snapshot is applied in two steps — its upstream names are
    // resolved first (the old configuration serves meanwhile, at most 10 s), then everything
    // is swapped at once.
    void start_reload() noexcept;
    void apply_reload(std::shared_ptr<preflight::ServerStartup> snap,
                      sys::Reloader::Done done) noexcept;
    void finish_reload() noexcept;
    void abandon_reload(std::string why) noexcept;
    std::string status_text() const;
    struct PendingReload {
        std::shared_ptr<const config::ServerConfig> cfg;
        std::optional<trust::ServerCertMaterial> tunnel_cert;
        std::shared_ptr<const RouteTable> routes;
        std::unique_ptr<UpstreamResolver> upstreams;
        std::vector<std::string> notes;
        sys::Reloader::Done done;
    };

    // What shards start new Visitors under (main thread; after labels were added).
    ShardSnapshot make_snapshot();
    // Unresponsive Tunnel members are re-checked by their own worker's front.
    void watch_tunnel_liveness(TunnelHub& hub);
    // Reload revoked these members: each closes on the worker that owns it.
    void close_revoked(std::vector<std::shared_ptr<TunnelMember>> revoked) noexcept;
    // The public listener group: one socket per worker (SO_REUSEPORT), or the one activated
    // socket shared by every worker.
    Result<std::vector<core::UniqueFd>> public_group(core::UniqueFd first, bool activated,
                                                     size_t workers);

    // ListenerOwner (the readiness listener)
    void on_accept(Listener& l, int fd) noexcept override;
    void on_listener_fatal(Listener& l, int err) noexcept override;
    void on_listener_closed(Listener& l) noexcept override;

    // ShutdownHost
    void stop_ingress() noexcept override;
    void cut_relays() noexcept override;
    bool ingress_drained() const noexcept override;
    uint64_t live_visitors() const noexcept override;
    bool has_tunnels() const noexcept override { return tunnel_ != nullptr; }
    uint64_t tunnel_connections() const noexcept override;
    void close_tunnel_connections() noexcept override;

    std::shared_ptr<const config::ServerConfig> cfg_;
    obs::Logger& log_;
    config::LoadOptions options_;
    std::unique_ptr<core::Worker> worker_;
    std::unique_ptr<net::Resolver> resolver_;
    std::shared_ptr<const RouteTable> routes_;
    std::unique_ptr<UpstreamResolver> upstreams_;
    Admission admission_;
    AdmissionLog admission_log_;
    Listener* readiness_ = nullptr;
    std::unique_ptr<Listener> readiness_owner_;
    std::string public_text_;
    std::unique_ptr<ControlSession> control_;
    std::unique_ptr<OrderlyShutdown> shutdown_;
    // The Tunnel connections' shared part; each worker with a member of the tunnel UDP group
    // runs a TunnelFront of its own.
    std::unique_ptr<TunnelHub> tunnel_;
    std::atomic<TunnelHub*> hub_{nullptr};  // tunnel_ for the other workers' threads
    core::UniqueFd tunnel_fd_;              // socket-activated `tunnel`, until the group takes it
    std::string tunnel_text_;               // the tunnel group's address
    uint32_t tunnel_workers_ = 0;
    std::unique_ptr<sys::Watchdog> watchdog_;
    std::atomic<uint64_t> next_conn_id_{0};
    std::atomic<bool> shutdown_begun_{false};
    obs::SharedRateLimiter accept_limit_;
    int exit_code_ = 0;
    ServerMetrics metrics_;
    std::shared_ptr<const LabelCounts> label_counts_;
    // [metrics] prometheus-bind-address (or the socket-activated `metrics`); null when off.
    std::unique_ptr<obs::HttpServer> metrics_http_;
    int64_t started_unix_ = 0;
    CertExpiryWatch cert_watch_;
    bool cert_check_armed_ = false;
    bool running_ = false;
    uint16_t public_port_ = 0;
    // [server.acme]: the manager posts through the mailbox to the loop.
    std::shared_ptr<acme::ChallengeBoard> acme_board_;
    std::unique_ptr<core::Mailbox> mailbox_;
    std::unique_ptr<acme::Manager> acme_;
    std::unique_ptr<sys::RoleReload> reload_;
    std::unique_ptr<PendingReload> pending_reload_;
    core::TimerHandle reload_deadline_{};
    bool reload_deadline_armed_ = false;
    // Resolvers of replaced route tables: stopped, freed once they have quiesced.
    std::vector<std::unique_ptr<UpstreamResolver>> retired_upstreams_;
    // Shard 0 runs on worker_ (main thread), the others on their own threads; declared last so
    // they stop (threads joined) before anything they use goes away.
    std::vector<std::unique_ptr<EdgeShard>> shards_;
};

// `runewarp server`: runs the edge for what preflight::check_server(options) accepted (the
// config and the certificate it loaded; no certificate without a Tunnel). A reload applies
// check_server(options) again. Returns the process exit code.
int run_server(const config::LoadOptions& options, preflight::ServerStartup startup) noexcept;

}  // namespace runewarp::server
