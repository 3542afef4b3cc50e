// TunnelFront: the Server's side of the Tunnel connections — the Server certificate and its
// TLS credentials, the QUIC listener, peer admission by pinned identity, and pool membership
// (join on establishment, leave on close, waking Visitors that wait for stream credit).
#pragma once

#include <cstdint>
#include <ctime>
#include <memory>
#include <span>
#include <string>
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

class TunnelFront final : private quic::AcceptHandler, private quic::ConnectionHandler {
public:
    // Serves `cert` (server.crt and server.key as the startup rules checked and loaded them;
    // null: no certificate yet, every Tunnel handshake fails until set_certificate()), then
    // binds tunnel-bind-address or adopts `activated` (the socket-activated `tunnel`).
    static Result<std::unique_ptr<TunnelFront>> create(core::Worker& w,
                                                       const config::ServerConfig& cfg,
                                                       const trust::ServerCertMaterial* cert,
                                                       obs::Logger& log, AdmissionLog& admission,
                                                       core::UniqueFd activated);
    // Connections still attached are dropped without a closing period.
    ~TunnelFront();
    TunnelFront(const TunnelFront&) = delete;
    TunnelFront& operator=(const TunnelFront&) = delete;

    TunnelRegistry& registry() noexcept { return *registry_; }
    const TunnelRegistry& registry() const noexcept { return *registry_; }
    const std::string& bind_text() const noexcept { return bind_text_; }
    // The certificate the Tunnel handshakes present: its file and the loaded notAfter.
    const std::string& cert_path() const noexcept { return cert_path_; }
    std::time_t cert_not_after() const noexcept { return cert_not_after_; }
    bool has_certificate() const noexcept { return tls_->has_certificate(); }
    // Where handshake failures are counted (the EdgeServer's metrics; may stay null).
    void set_metrics(ServerMetrics* m) noexcept { metrics_ = m; }
    // QUIC handshakes in progress now.
    size_t handshakes_in_flight() const noexcept {
        return listener_ != nullptr ? listener_->handshakes() : 0;
    }

    // Serves a new certificate (chain leaf first + key, from `path`, valid until `not_after`)
    // to the handshakes that start from now on; established connections keep theirs. On error
    // the current certificate stays.
    Result<void> set_certificate(std::string path, std::string_view cert_pem,
                                 std::string_view key_pem, std::time_t not_after);

    // Reload: the new authorization table for handshakes and pools; connections of identities
    // it no longer authorizes close with application 0 `authorization revoked` (spec 5.9).
    // Returns how many were closed.
    size_t set_auth_table(std::shared_ptr<const AuthTable> table) noexcept;

    // Every connection closes with application 0 `graceful shutdown` (orderly shutdown).
    void close_all() noexcept;
    // Drops the listener and whatever lingers in a closing period (after the close flush).
    void drop_listener() noexcept { listener_.reset(); }

private:
    TunnelFront(obs::Logger& log, AdmissionLog& admission) noexcept
        : log_(log), admission_(admission) {}

    bool admit_peer(std::span<const uint8_t> leaf_der) noexcept;
    void on_connection(quic::Connection& c) noexcept override;
    void on_handshake_failed(const quic::Connection& c) noexcept override;
    void on_handshake_refused(size_t in_flight) noexcept override;
    void on_handshake_admitted() noexcept override;
    void on_established(quic::Connection&) noexcept override {}
    void on_stream_opened(quic::Connection& c, quic::Stream& s) noexcept override;
    void on_streams_available(quic::Connection& c) noexcept override;
    void on_closed(quic::Connection& c, const quic::CloseInfo& info) noexcept override;
    static void wake_waiters(TunnelMember& m) noexcept;

    obs::Logger& log_;
    AdmissionLog& admission_;
    // Declared in this order so the listener (and its connections) go before the registry and
    // the credentials it uses.
    std::unique_ptr<TunnelRegistry> registry_;
    std::unique_ptr<quic::ServerTls> tls_;
    std::unique_ptr<quic::Listener> listener_;
    // Revoked members stay alive until their connection reports closed (it points at them).
    std::vector<std::shared_ptr<TunnelMember>> revoked_;
    std::string bind_text_;
    std::string cert_path_;
    std::time_t cert_not_after_ = 0;
    obs::RateLimiter unauthorized_limit_;
    obs::RateLimiter handshake_failure_limit_;
    ServerMetrics* metrics_ = nullptr;
    void count(HandshakeFailure f) noexcept {
        if (metrics_ != nullptr) metrics_->count_handshake_failure(f);
    }
};

}  // namespace runewarp::server
