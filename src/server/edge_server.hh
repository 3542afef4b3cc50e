// EdgeServer: the Server — public listener, Visitor admission and sessions, readiness, the QUIC
// tunnel listener and its pools, signals, orderly shutdown and systemd notification (spec 5.1-5.4,
// 5.10-5.12, 5.14, 12.1).
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "config/config.hh"
#include "core/pipe_pool.hh"
#include "core/slab.hh"
#include "core/worker.hh"
#include "obs/log.hh"
#include "quic/listener.hh"
#include "quic/tls.hh"
#include "server/admission.hh"
#include "server/route_table.hh"
#include "server/tunnel_registry.hh"
#include "server/visitor.hh"
#include "sys/systemd.hh"
#include "trust/server_cert.hh"

namespace runewarp::server {

class EdgeServer;

// A listening TCP socket: multishot accept, transient-error backoff (10 ms doubling to 1 s).
class Listener final : public core::Session {
public:
    enum class Kind : uint8_t { kPublic, kReadiness };
    Listener(core::Worker& w, EdgeServer& server, Kind kind, core::UniqueFd fd,
             std::string bind_text) noexcept;
    void start() noexcept;
    void stop() noexcept { abort(0); }
    bool stopped() const noexcept { return closed_; }
    const std::string& bind_text() const noexcept { return bind_text_; }

protected:
    void on_event(const core::Completion& c) noexcept override;
    void on_quiesced() noexcept override;

private:
    enum Op : uint8_t { kOpAccept = 1, kOpBackoff = 2 };
    void arm_accept() noexcept;

    EdgeServer& server_;
    Kind kind_;
    core::UniqueFd fd_;
    std::string bind_text_;
    int64_t backoff_ns_ = 0;
    bool accept_armed_ = false;
    bool closed_ = false;
};

// Server-wide timers (graceful window, watchdog) ride on their own session slot.
class ControlSession final : public core::Session {
public:
    ControlSession(core::Worker& w, EdgeServer& server) noexcept
        : core::Session(w), server_(server) {}
    enum Op : uint8_t { kOpGraceDeadline = 1, kOpWatchdog = 2, kOpCloseFlush = 3 };

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

class EdgeServer final : public core::SignalListener,
                         private quic::AcceptHandler,
                         private quic::ConnectionHandler {
public:
    // Binds (or adopts socket-activated) listeners and prepares everything; nothing runs yet.
    // `tunnel_cert`: the checked Server certificate, required when a Tunnel is configured.
    static Result<std::unique_ptr<EdgeServer>> create(const config::ServerConfig& cfg,
                                                      const trust::ServerCertMaterial* tunnel_cert,
                                                      obs::Logger& log);
    ~EdgeServer();

    // Serves until orderly shutdown completes. Returns the process exit code.
    int run() noexcept;

    // --- for VisitorSession / Listener ------------------------------------------------------
    core::Worker& worker() noexcept { return *worker_; }
    obs::Logger& log() noexcept { return log_; }
    Admission& admission() noexcept { return admission_; }
    core::PipePool& pipes() noexcept { return *pipes_; }
    const config::ServerConfig& config() const noexcept { return cfg_; }
    const std::shared_ptr<const RouteTable>& routes() const noexcept { return routes_; }
    bool shutting_down() const noexcept { return shutdown_mode_ != ShutdownMode::kNone; }
    // Null when no Tunnel is configured.
    TunnelRegistry* tunnels() noexcept { return tunnels_.get(); }

    // One shared scratch buffer for synchronous MSG_PEEK reads (the loop is single-threaded and
    // a peek completes before the next one starts).
    uint8_t* peek_buffer() noexcept { return peek_buf_.get(); }
    static constexpr size_t kPeekCapacity = 16384;
    // Where a Tunnel stream prefix is assembled: PROXY v2 header + up to kPeekCapacity bytes.
    uint8_t* prefix_buffer() noexcept { return prefix_buf_.get(); }
    static constexpr size_t kPrefixCapacity = kPeekCapacity + 64;

    IntakeState* borrow_intake() noexcept;
    void return_intake(IntakeState* s) noexcept;

    void on_accept(Listener::Kind kind, int fd) noexcept;
    void on_listener_fatal(Listener& l, int err) noexcept;
    void on_listener_closed(Listener& l) noexcept;
    void on_visitor_closed(VisitorSession& v, core::SlotId slab_id) noexcept;

    // Logging helpers shared by sessions.
    void note_saturated(const char* scope, uint64_t active, uint64_t limit) noexcept;
    void note_admitted(const char* scope) noexcept;
    void note_rejected(CloseReason r, std::string_view hostname = {}) noexcept;
    EdgeCounters& counters() noexcept { return counters_; }

    void on_grace_deadline() noexcept;
    void on_watchdog() noexcept;
    void on_close_flushed() noexcept;

private:
    enum class ShutdownMode : uint8_t { kNone, kGraceful, kFast };
    enum class Scope : uint8_t {
        kVisitorGlobal,
        kVisitorSource,
        kActiveRelay,
        kPendingOpen,
        kTunnelGlobal,
        kTunnelPerTunnel,
        kTunnelPerIdentity,
        kCount
    };

    EdgeServer(const config::ServerConfig& cfg, obs::Logger& log);
    void on_signal(const signalfd_siginfo& info) noexcept override;
    void begin_shutdown(ShutdownMode mode) noexcept;
    void escalate_fast() noexcept;
    void cut_relays() noexcept;
    void maybe_finish() noexcept;
    Scope scope_of(const char* scope) const noexcept;

    // Tunnel side.
    Result<void> create_tunnel_listener(const trust::ServerCertMaterial& cert);
    bool admit_peer(std::span<const uint8_t> leaf_der) noexcept;
    void close_tunnels() noexcept;
    void on_connection(quic::Connection& c) noexcept override;
    void on_handshake_failed(const quic::Connection& c) noexcept override;
    void on_established(quic::Connection&) noexcept override {}
    void on_stream_opened(quic::Connection& c, quic::Stream& s) noexcept override;
    void on_streams_available(quic::Connection& c) noexcept override;
    void on_closed(quic::Connection& c, const quic::CloseInfo& info) noexcept override;
    static void wake_waiters(TunnelMember& m) noexcept;

    const config::ServerConfig& cfg_;
    obs::Logger& log_;
    std::unique_ptr<core::Worker> worker_;
    std::shared_ptr<const RouteTable> routes_;
    Admission admission_;
    std::unique_ptr<core::PipePool> pipes_;
    std::unique_ptr<uint8_t[]> peek_buf_;
    std::unique_ptr<uint8_t[]> prefix_buf_;
    std::vector<std::unique_ptr<IntakeState>> intake_pool_;
    uint32_t intake_lent_ = 0;
    std::unique_ptr<core::Slab<VisitorSession>> visitors_;
    std::vector<VisitorSession*> live_;  // index kept in VisitorSession::live_index_
    Listener* public_ = nullptr;
    Listener* readiness_ = nullptr;
    std::unique_ptr<Listener> public_owner_;
    std::unique_ptr<Listener> readiness_owner_;
    std::unique_ptr<ControlSession> control_;
    // Declared in this order so the listener (and its connections) go before the registry and
    // the credentials it uses.
    std::unique_ptr<TunnelRegistry> tunnels_;
    std::unique_ptr<quic::ServerTls> tunnel_tls_;
    std::unique_ptr<quic::Listener> tunnel_listener_;
    std::string tunnel_bind_text_;
    bool tunnels_closed_ = false;
    bool close_flushed_ = false;
    core::UniqueFd tunnel_fd_;  // socket-activated `tunnel`, until the listener adopts it
    obs::RateLimiter unauthorized_limit_;
    obs::RateLimiter handshake_failure_limit_;
    core::TimerHandle grace_timer_{};
    int64_t watchdog_interval_ns_ = 0;
    uint64_t next_conn_id_ = 0;
    ShutdownMode shutdown_mode_ = ShutdownMode::kNone;
    bool relays_cut_ = false;
    bool finished_ = false;
    int exit_code_ = 0;
    EdgeCounters counters_;
    std::array<obs::RateLimiter, static_cast<size_t>(Scope::kCount)> saturation_limits_;
    std::array<obs::RateLimiter, 32> rejection_limits_;

    friend class VisitorSession;
};

// `runewarp server`: loads nothing itself; runs the edge for a config and certificate that
// passed preflight::check_server (`tunnel_cert` is null when no Tunnel is configured).
int run_server(const config::ServerConfig& cfg,
               const trust::ServerCertMaterial* tunnel_cert) noexcept;

}  // namespace runewarp::server
