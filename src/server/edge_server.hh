// EdgeServer: the Server as a composition — event loop, listeners, Visitor sessions and their
// shared resources, the Tunnel front, orderly shutdown, signals, systemd notification and the
// certificate expiry check.
#pragma once

#include <array>
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

struct EdgeCounters {
    uint64_t accepted = 0;
    uint64_t relayed = 0;
    std::array<uint64_t, 32> closed_by_reason{};
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

    // --- for VisitorSession ------------------------------------------------------------------
    core::Worker& worker() noexcept { return *worker_; }
    obs::Logger& log() noexcept { return log_; }
    Admission& admission() noexcept { return admission_; }
    AdmissionLog& admission_log() noexcept { return admission_log_; }
    core::PipePool& pipes() noexcept { return *pipes_; }
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
    TunnelRegistry* tunnels() noexcept { return tunnel_ ? &tunnel_->registry() : nullptr; }
    // The TLS-ALPN-01 challenges pending for the Server hostname; null without [server.acme].
    const acme::ChallengeBoard* acme_board() const noexcept { return acme_board_.get(); }

    // One shared scratch buffer for synchronous MSG_PEEK reads (the loop is single-threaded and
    // a peek completes before the next one starts).
    uint8_t* peek_buffer() noexcept { return peek_buf_.get(); }
    static constexpr size_t kPeekCapacity = 16384;
    // Where a Tunnel stream prefix is assembled: PROXY v2 header + up to kPeekCapacity bytes.
    uint8_t* prefix_buffer() noexcept { return prefix_buf_.get(); }
    static constexpr size_t kPrefixCapacity = kPeekCapacity + 64;

    IntakePool& intake_pool() noexcept { return intake_pool_; }

    void on_visitor_closed(VisitorSession& v, core::SlotId slab_id) noexcept;
    EdgeCounters& counters() noexcept { return counters_; }
    ServerMetrics& metrics() noexcept { return metrics_; }

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

    // ListenerOwner
    void on_accept(Listener& l, int fd) noexcept override;
    void on_listener_fatal(Listener& l, int err) noexcept override;
    void on_listener_closed(Listener& l) noexcept override;

    // ShutdownHost
    void stop_ingress() noexcept override;
    void cut_relays() noexcept override;
    bool ingress_drained() const noexcept override;
    uint64_t live_visitors() const noexcept override { return live_.size(); }
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
    std::unique_ptr<core::PipePool> pipes_;
    std::unique_ptr<uint8_t[]> peek_buf_;
    std::unique_ptr<uint8_t[]> prefix_buf_;
    IntakePool intake_pool_;
    std::unique_ptr<core::Slab<VisitorSession>> visitors_;
    std::vector<VisitorSession*> live_;  // index kept in VisitorSession::live_index_
    Listener* public_ = nullptr;
    Listener* readiness_ = nullptr;
    std::unique_ptr<Listener> public_owner_;
    std::unique_ptr<Listener> readiness_owner_;
    std::unique_ptr<ControlSession> control_;
    std::unique_ptr<OrderlyShutdown> shutdown_;
    std::unique_ptr<TunnelFront> tunnel_;
    core::UniqueFd tunnel_fd_;  // socket-activated `tunnel`, until the front adopts it
    std::unique_ptr<sys::Watchdog> watchdog_;
    uint64_t next_conn_id_ = 0;
    int exit_code_ = 0;
    EdgeCounters counters_;
    ServerMetrics metrics_;
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
};

// `runewarp server`: runs the edge for what preflight::check_server(options) accepted (the
// config and the certificate it loaded; no certificate without a Tunnel). A reload applies
// check_server(options) again. Returns the process exit code.
int run_server(const config::LoadOptions& options, preflight::ServerStartup startup) noexcept;

}  // namespace runewarp::server
