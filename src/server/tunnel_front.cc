// TunnelFront: Server certificate, QUIC listener, identity admission and pool membership.
#include "server/tunnel_front.hh"

#include <sys/socket.h>

#include <vector>

#include "server/tcp_listener.hh"
#include "trust/identity.hh"
#include "trust/server_cert.hh"

namespace runewarp::server {

namespace {

// One short cause for a dropped Tunnel connection; empty for a clean close (application 0 or
// transport NO_ERROR either way).
std::string drop_cause(const quic::CloseInfo& i) {
    using Kind = quic::CloseInfo::Kind;
    if ((i.kind == Kind::local || i.kind == Kind::remote) && i.code == 0) return {};
    return quic::describe_close(i, "the client");
}

}  // namespace

Result<std::unique_ptr<TunnelFront>> TunnelFront::create(core::Worker& w,
                                                         const config::ServerConfig& cfg,
                                                         const trust::ServerCertMaterial* cert,
                                                         obs::Logger& log, AdmissionLog& admission,
                                                         core::UniqueFd activated) {
    std::unique_ptr<TunnelFront> f(new TunnelFront(log, admission));
    // The certificate was loaded and verified as a whole by the startup rules (preflight).
    if (cert != nullptr) {
        f->cert_path_ = cert->cert_path;
        f->cert_not_after_ = cert->validity.not_after;
    }

    f->registry_ = std::make_unique<TunnelRegistry>(AuthTable::build(cfg), &log);
    f->registry_->set_liveness([](const TunnelMember& m, int64_t now) noexcept {
        auto* c = static_cast<const quic::Connection*>(m.connection);
        return c == nullptr || !c->unresponsive(now);
    });
    TunnelFront* self = f.get();
    auto tls = quic::ServerTls::create(
        {cert != nullptr ? cert->cert_pem : std::string(),
         cert != nullptr ? cert->key_pem : std::string(),
         [self](std::span<const uint8_t> der) { return self->admit_peer(der); }});
    if (!tls) {
        return Error::msg("server certificate " + (cert != nullptr ? cert->cert_path : "") + ": " +
                          tls.error().message);
    }
    f->tls_ = std::move(*tls);

    quic::ListenerConfig lc;  // [server] tunnel-retry: when an Initial must prove its address
    lc.retry = cfg.tunnel_retry == config::TunnelRetry::kAlways  ? quic::RetryPolicy::always
               : cfg.tunnel_retry == config::TunnelRetry::kNever ? quic::RetryPolicy::never
                                                                 : quic::RetryPolicy::automatic;
    if (activated.valid()) {
        // The socket-activated `tunnel` replaces binding the configured address.
        std::string got = note_activated(log, "server tunnel listener socket-activated",
                                         activated.get(), cfg.tunnel_bind, "tunnel-bind-address");
        auto l = quic::Listener::adopt(w, std::move(activated), *f->tls_, *f, lc);
        if (!l) return Error::msg("activated tunnel socket " + got + ": " + l.error().message);
        f->listener_ = std::move(*l);
    } else {
        sockaddr_storage ss{};
        socklen_t len = proto::to_sockaddr(cfg.tunnel_bind, ss);
        auto l = quic::Listener::create(w, reinterpret_cast<const sockaddr*>(&ss), len, *f->tls_,
                                        *f, lc);
        if (!l) {
            return Error::msg("failed to bind server.tunnel-bind-address " +
                              proto::format_endpoint(cfg.tunnel_bind) + ": " + l.error().message);
        }
        f->listener_ = std::move(*l);
    }
    f->bind_text_ = local_text(f->listener_->endpoint().fd());
    // One WARN when the kernel grants less socket buffer than asked for.
    const quic::SocketBuffers& b = f->listener_->endpoint().buffers();
    if (b.capped) {
        log.warn("server tunnel socket buffers capped",
                 {{"requested", static_cast<uint64_t>(b.requested)},
                  {"rcvbuf", static_cast<uint64_t>(b.rcvbuf)},
                  {"sndbuf", static_cast<uint64_t>(b.sndbuf)}},
                 "raise net.core.rmem_max and net.core.wmem_max for tunnel throughput");
    }
    return f;
}

Result<void> TunnelFront::set_certificate(std::string path, std::string_view cert_pem,
                                          std::string_view key_pem, std::time_t not_after) {
    if (auto r = tls_->set_certificate(cert_pem, key_pem); !r)
        return Error::msg("server certificate " + path + ": " + r.error().message);
    cert_path_ = std::move(path);
    cert_not_after_ = not_after;
    return {};
}

TunnelFront::~TunnelFront() {
    listener_.reset();
}

void TunnelFront::close_all() noexcept {
    if (listener_ != nullptr) listener_->close_all(quic::kAppCloseCode, "graceful shutdown");
}

size_t TunnelFront::set_auth_table(std::shared_ptr<const AuthTable> table) noexcept {
    auto revoked = registry_->replace_table(std::move(table));
    for (auto& m : revoked) {
        auto* c = static_cast<quic::Connection*>(m->connection);
        revoked_.push_back(m);
        if (c != nullptr) c->close(quic::kAppCloseCode, "authorization revoked");
    }
    return revoked.size();
}

bool TunnelFront::admit_peer(std::span<const uint8_t> leaf_der) noexcept {
    // Decided inside the handshake: a refusal reaches the Client as CRYPTO_ERROR 0x0131.
    auto id = trust::identity_of_certificate_der(leaf_der);
    if (id && registry_->admits(*id)) return true;
    if (unauthorized_limit_.on_saturated().log) {
        if (id) {
            log_.warn("server tunnel connection unauthorized", {{"client-identity", *id}});
        } else {
            log_.warn("server tunnel connection unauthorized", {}, id.error().message);
        }
    }
    return false;
}

void TunnelFront::on_handshake_refused(size_t in_flight) noexcept {
    count(HandshakeFailure::kSaturated);
    admission_.saturated(AdmissionScope::kQuicHandshakeGlobal, in_flight, in_flight);
}

void TunnelFront::on_handshake_admitted() noexcept {
    admission_.admitted(AdmissionScope::kQuicHandshakeGlobal);
}

void TunnelFront::on_handshake_failed(const quic::Connection& c) noexcept {
    const quic::CloseInfo& info = c.close_info();
    // Refused identities were logged as unauthorized by the verifier; shutdown aborts the rest.
    if (!info.application && info.code == quic::kCryptoErrorAccessDenied)
        return count(HandshakeFailure::kUnauthorized);
    if (registry_->sealed()) return;
    count(tls_->has_certificate() ? HandshakeFailure::kError : HandshakeFailure::kNoCertificate);
    if (handshake_failure_limit_.on_saturated().log) {
        std::string cause = quic::describe_close(info, "the client");
        // ACME before the first issuance: every handshake fails until a certificate arrives.
        if (!tls_->has_certificate())
            cause += "; no Server certificate yet (ACME issuance pending)";
        log_.warn("server tunnel connection failed", {}, cause);
    }
}

void TunnelFront::on_connection(quic::Connection& c) noexcept {
    if (handshake_failure_limit_.on_success())
        log_.info("server admission recovered", {{"scope", "quic-handshake-failure"}});
    auto id = trust::identity_of_certificate_der(c.peer_certificate());
    if (!id) {
        count(HandshakeFailure::kUnauthorized);
        c.close(quic::kAppCloseCode, join_close_reason(JoinStatus::kUnmapped));
        return;
    }
    auto j = registry_->join(*id, &c);
    if (j.status != JoinStatus::kJoined) {
        if (j.status == JoinStatus::kUnmapped) {
            count(HandshakeFailure::kUnauthorized);
        } else if (j.status != JoinStatus::kShuttingDown) {
            count(HandshakeFailure::kJoinRefused);
        }
        if (auto scope = join_scope(j.status)) {
            const TunnelLimits& lim = registry_->limits();
            uint64_t limit = j.status == JoinStatus::kGlobalSaturated ? lim.global
                             : j.status == JoinStatus::kPoolSaturated ? lim.per_pool
                                                                      : lim.per_identity;
            admission_.saturated(*scope, limit, limit);
        }
        c.close(quic::kAppCloseCode, join_close_reason(j.status));
        return;
    }
    for (JoinStatus st :
         {JoinStatus::kGlobalSaturated, JoinStatus::kPoolSaturated, JoinStatus::kIdentitySaturated})
        admission_.admitted(*join_scope(st));
    // The pool keeps the member alive as long as the connection is; the connection points back.
    j.member->joined_unix = static_cast<int64_t>(std::time(nullptr));
    if (metrics_ != nullptr) metrics_->tunnel_connections_accepted.add();
    c.set_user_data(j.member.get());
    c.set_handler(this);
}

void TunnelFront::on_stream_opened(quic::Connection&, quic::Stream& s) noexcept {
    // Clients may not open streams (initial_max_streams_bidi = 0); refuse anything that does.
    s.reset(quic::kStreamErrorCode);
}

void TunnelFront::wake_waiters(TunnelMember& m) noexcept {
    std::vector<StreamWaiter*> waiting;
    waiting.swap(m.waiters);
    for (StreamWaiter* w : waiting) w->on_stream_credit();
}

void TunnelFront::on_streams_available(quic::Connection& c) noexcept {
    auto* m = static_cast<TunnelMember*>(c.user_data());
    if (m != nullptr) wake_waiters(*m);
}

void TunnelFront::on_closed(quic::Connection& c, const quic::CloseInfo& info) noexcept {
    auto* m = static_cast<TunnelMember*>(c.user_data());
    c.set_user_data(nullptr);
    if (m == nullptr) return;
    // Keep the member alive through the wake-ups even if no Visitor holds it.
    std::shared_ptr<TunnelMember> hold;
    for (auto& p : registry_->all())
        if (p.get() == m) hold = p;
    for (auto it = revoked_.begin(); it != revoked_.end(); ++it) {
        if (it->get() == m) {
            hold = std::move(*it);
            revoked_.erase(it);
            m->connection = nullptr;
            log_.info("server tunnel connection closed",
                      {{"client-identity", m->identity}, {"reason", "authorization-revoked"}});
            break;
        }
    }
    registry_->leave(*m, drop_cause(info));
    wake_waiters(*m);  // each sees a dead member and drops its Visitor
}

}  // namespace runewarp::server
