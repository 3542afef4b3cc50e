// The Server's side of the Tunnel connections, in two parts:
// - TunnelHub (one per process): the Server certificate and its TLS credentials, peer admission by
//   pinned identity, the registry of pools, the rate-limited log lines and the counters;
// - TunnelFront (one per worker that owns a member of the tunnel UDP group): its QUIC listener
//   and the connections on it, pool membership (join on establishment, leave on close) and the
//   wake-ups of Visitors that wait for stream credit.
// A packet reaches the worker that owns its connection because the group is steered by a byte of
// the Server-chosen connection ID (quic/steering.hh).
#pragma once

#include <atomic>
#include <cstdint>
#include <ctime>
#include <memory>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "config/config.hh"
#include "core/unique_fd.hh"
#include "core/worker.hh"
#include "obs/log.hh"
#include "quic/listener.hh"
#include "quic/tls.hh"
#include "server/admission.hh"
#include "server/server_metrics.hh"
#include "server/tunnel_registry.hh"
#include "trust/server_cert.hh"

namespace runewarp::server {

// A Tunnel connection's transport state as its own worker read it (for /metrics and the status
// page, which run on the main thread).
struct MemberStats {
    double rtt_seconds = 0;
    uint64_t cwnd = 0;
    std::string address;  // the Client's address as the connection's path has it
};

class TunnelHub {
public:
    // Serves `cert` (server.crt and server.key as the startup rules checked and loaded them;
    // null: no certificate yet, every Tunnel handshake fails until set_certificate()).
    static Result<std::unique_ptr<TunnelHub>> create(const config::ServerConfig& cfg,
                                                     const trust::ServerCertMaterial* cert,
                                                     obs::Logger& log, AdmissionLog& admission);
    TunnelHub(const TunnelHub&) = delete;
    TunnelHub& operator=(const TunnelHub&) = delete;

    // --- any thread ----------------------------------------------------------------------------
    TunnelRegistry& registry() noexcept { return *registry_; }
    const TunnelRegistry& registry() const noexcept { return *registry_; }
    const quic::ServerTls& tls() const noexcept { return *tls_; }
    bool has_certificate() const noexcept { return tls_->has_certificate(); }
    obs::Logger& log() noexcept { return log_; }
    AdmissionLog& admission() noexcept { return admission_; }
    // The listener settings of group member `index` of `count` (retry policy, the shared
    // handshake count, connection ID steering).
    quic::ListenerConfig listener_config(uint32_t index, uint32_t count) const noexcept;
    // Decided inside the handshake: a refusal reaches the Client as CRYPTO_ERROR 0x0131.
    bool admit_peer(std::span<const uint8_t> leaf_der) noexcept;
    void count(HandshakeFailure f) noexcept {
        if (metrics_ != nullptr) metrics_->count_handshake_failure(f);
    }
    ServerMetrics* metrics() noexcept { return metrics_; }
    obs::SharedRateLimiter& handshake_failure_limit() noexcept { return handshake_failure_limit_; }

    // --- main thread ---------------------------------------------------------------------------
    // Where handshake failures are counted (the EdgeServer's metrics; may stay null).
    void set_metrics(ServerMetrics* m) noexcept { metrics_ = m; }
    // The certificate the Tunnel handshakes present: its file and the loaded notAfter.
    const std::string& cert_path() const noexcept { return cert_path_; }
    std::time_t cert_not_after() const noexcept { return cert_not_after_; }
    // Serves a new certificate (chain leaf first + key, from `path`, valid until `not_after`)
    // to the handshakes that start from now on, on every worker; established connections keep
    // theirs. On error the current certificate stays.
    Result<void> set_certificate(std::string path, std::string_view cert_pem,
                                 std::string_view key_pem, std::time_t not_after);

private:
    TunnelHub(obs::Logger& log, AdmissionLog& admission, quic::RetryPolicy retry) noexcept
        : log_(log), admission_(admission), retry_(retry) {}

    obs::Logger& log_;
    AdmissionLog& admission_;
    quic::RetryPolicy retry_;
    // Handshakes in flight on every worker's listener: the 256 limit is the process's.
    std::shared_ptr<std::atomic<size_t>> handshakes_ = std::make_shared<std::atomic<size_t>>(0);
    std::unique_ptr<TunnelRegistry> registry_;
    std::unique_ptr<quic::ServerTls> tls_;
    std::string cert_path_;
    std::time_t cert_not_after_ = 0;
    obs::SharedRateLimiter unauthorized_limit_;
    obs::SharedRateLimiter handshake_failure_limit_;
    ServerMetrics* metrics_ = nullptr;
};

class TunnelFront final : private quic::AcceptHandler, private quic::ConnectionHandler {
public:
    // On worker `shard`'s loop thread: the QUIC listener on `fd`, member `index` of a tunnel
    // group of `count` sockets (1: a lone socket, no steering).
    static Result<std::unique_ptr<TunnelFront>> create(core::Worker& w, TunnelHub& hub,
                                                       core::UniqueFd fd, uint32_t shard,
                                                       uint32_t index, uint32_t count);
    // Connections still attached are dropped without a closing period.
    ~TunnelFront();
    TunnelFront(const TunnelFront&) = delete;
    TunnelFront& operator=(const TunnelFront&) = delete;

    // --- on the owning worker's loop thread ----------------------------------------------------
    // QUIC handshakes in progress on this listener now.
    size_t handshakes_in_flight() const noexcept {
        return listener_ != nullptr ? listener_->handshakes() : 0;
    }
    // Connections that joined a pool and are still live here.
    size_t members() const noexcept { return members_; }
    // Every connection closes with application 0 `graceful shutdown` (orderly shutdown).
    void close_all() noexcept;
    // Reload revoked these members (all owned here): each closes with application 0
    // `authorization revoked` (spec 5.9).
    void close_revoked(std::vector<std::shared_ptr<TunnelMember>> revoked) noexcept;
    // Drops the listener and whatever lingers in a closing period (after the close flush).
    void drop_listener() noexcept {
        stop_check();
        listener_.reset();
    }
    // The transport state of this worker's members.
    void collect(std::unordered_map<const TunnelMember*, MemberStats>& out) const;
    // A member of this worker was found unresponsive: it is re-checked every 500 ms until it
    // answers again (placements on other workers only see the flag).
    void watch_liveness() noexcept;

private:
    class LivenessCheck;
    void recheck() noexcept;
    void stop_check() noexcept;
    TunnelFront(TunnelHub& hub, uint32_t shard) noexcept : hub_(hub), shard_(shard) {}

    void on_connection(quic::Connection& c) noexcept override;
    void on_handshake_failed(const quic::Connection& c) noexcept override;
    void on_handshake_refused(size_t in_flight) noexcept override;
    void on_handshake_admitted() noexcept override;
    void on_established(quic::Connection&) noexcept override {}
    void on_stream_opened(quic::Connection& c, quic::Stream& s) noexcept override;
    void on_streams_available(quic::Connection& c) noexcept override;
    void on_closed(quic::Connection& c, const quic::CloseInfo& info) noexcept override;
    static void wake_waiters(TunnelMember& m) noexcept;

    TunnelHub& hub_;
    const uint32_t shard_;
    std::unique_ptr<quic::Listener> listener_;
    // This worker's live members (the connections point at them).
    std::unordered_map<TunnelMember*, std::shared_ptr<TunnelMember>> live_;
    // Revoked members stay alive until their connection reports closed (it points at them).
    std::vector<std::shared_ptr<TunnelMember>> revoked_;
    size_t members_ = 0;
    LivenessCheck* check_ = nullptr;  // its timer session (frees itself once aborted)
};

// The tunnel UDP group for `workers` workers: bound to tunnel-bind-address, or joined to the
// socket-activated `tunnel` (which needs SO_REUSEPORT from systemd, ReusePort=yes, for more than
// one member). Logs a WARN when the kernel caps the socket buffers.
Result<std::vector<core::UniqueFd>> tunnel_group(const config::ServerConfig& cfg,
                                                 core::UniqueFd activated, uint32_t workers,
                                                 obs::Logger& log);

}  // namespace runewarp::server
