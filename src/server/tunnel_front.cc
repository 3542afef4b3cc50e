// TunnelHub and TunnelFront: Server certificate, QUIC listeners, identity admission and pool
// membership.
#include "server/tunnel_front.hh"

#include <ngtcp2/ngtcp2.h>
#include <sys/socket.h>

#include <algorithm>
#include <vector>

#include "core/clock.hh"
#include "proto/endpoint.hh"

#include "quic/steering.hh"
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

// ---- TunnelHub ----------------------------------------------------------------------------------

Result<std::unique_ptr<TunnelHub>> TunnelHub::create(const config::ServerConfig& cfg,
                                                     const trust::ServerCertMaterial* cert,
                                                     obs::Logger& log, AdmissionLog& admission) {
    // [server] tunnel-retry: when an Initial must prove its address.
    const quic::RetryPolicy retry =
        cfg.tunnel_retry == config::TunnelRetry::kAlways  ? quic::RetryPolicy::always
        : cfg.tunnel_retry == config::TunnelRetry::kNever ? quic::RetryPolicy::never
                                                          : quic::RetryPolicy::automatic;
    std::unique_ptr<TunnelHub> h(new TunnelHub(log, admission, retry));
    // The certificate was loaded and verified as a whole by the startup rules (preflight).
    if (cert != nullptr) {
        h->cert_path_ = cert->cert_path;
        h->cert_not_after_ = cert->validity.not_after;
    }
    h->registry_ = std::make_unique<TunnelRegistry>(AuthTable::build(cfg), &log);
    h->registry_->set_liveness([](const TunnelMember& m, int64_t now) noexcept {
        auto* c = static_cast<const quic::Connection*>(m.connection);
        return c == nullptr || !c->unresponsive(now);
    });
    TunnelHub* self = h.get();
    auto tls = quic::ServerTls::create(
        {cert != nullptr ? cert->cert_pem : std::string(),
         cert != nullptr ? cert->key_pem : std::string(),
         [self](std::span<const uint8_t> der) { return self->admit_peer(der); }});
    if (!tls) {
        return Error::msg("server certificate " + (cert != nullptr ? cert->cert_path : "") + ": " +
                          tls.error().message);
    }
    h->tls_ = std::move(*tls);
    return h;
}

quic::ListenerConfig TunnelHub::listener_config(uint32_t index, uint32_t count) const noexcept {
    quic::ListenerConfig lc;
    lc.retry = retry_;
    // The handshake limit (and the Retry threshold) is the process's.
    lc.handshake_group = handshakes_;
    lc.steering = quic::CidSteering{count, index};
    return lc;
}

Result<void> TunnelHub::set_certificate(std::string path, std::string_view cert_pem,
                                        std::string_view key_pem, std::time_t not_after) {
    if (auto r = tls_->set_certificate(cert_pem, key_pem); !r)
        return Error::msg("server certificate " + path + ": " + r.error().message);
    cert_path_ = std::move(path);
    cert_not_after_ = not_after;
    return {};
}

bool TunnelHub::admit_peer(std::span<const uint8_t> leaf_der) noexcept {
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

// ---- TunnelFront --------------------------------------------------------------------------------

// The timer of TunnelFront::watch_liveness, on the front's worker.
class TunnelFront::LivenessCheck final : public core::Session {
public:
    LivenessCheck(core::Worker& w, TunnelFront& f) noexcept : core::Session(w), front_(&f) {}
    ~LivenessCheck() override = default;
    void arm() noexcept {
        if (armed_ || aborting() || front_ == nullptr) return;
        timer_ = arm_timer(kOpCheck, core::now_ns() + kRecheckNs);
        armed_ = true;
    }
    // The front goes: no more checks; the session frees itself once quiesced.
    void release() noexcept {
        front_ = nullptr;
        if (armed_) worker().cancel_timer(timer_);
        armed_ = false;
        abort(0);
    }

protected:
    void on_event(const core::Completion& c) noexcept override {
        if (c.token.op != kOpCheck) return;
        armed_ = false;
        if (front_ != nullptr) front_->recheck();
    }
    void on_quiesced() noexcept override { delete this; }

private:
    static constexpr uint8_t kOpCheck = 1;
    static constexpr int64_t kRecheckNs = 500'000'000;
    TunnelFront* front_;
    core::TimerHandle timer_{};
    bool armed_ = false;
};

Result<std::unique_ptr<TunnelFront>> TunnelFront::create(core::Worker& w, TunnelHub& hub,
                                                         core::UniqueFd fd, uint32_t shard,
                                                         uint32_t index, uint32_t count) {
    std::unique_ptr<TunnelFront> f(new TunnelFront(hub, shard));
    auto l =
        quic::Listener::adopt(w, std::move(fd), hub.tls(), *f, hub.listener_config(index, count));
    if (!l) return Error::msg("tunnel listener: " + l.error().message);
    f->listener_ = std::move(*l);
    f->check_ = new LivenessCheck(w, *f);
    if (!f->check_->open()) {
        delete f->check_;
        f->check_ = nullptr;
        return Error::msg("event loop: no slot for the tunnel liveness check");
    }
    if (index == 0) {
        // One WARN when the kernel grants less socket buffer than asked for.
        const quic::SocketBuffers& b = f->listener_->endpoint().buffers();
        if (b.capped) {
            hub.log().warn("server tunnel socket buffers capped",
                           {{"requested", static_cast<uint64_t>(b.requested)},
                            {"rcvbuf", static_cast<uint64_t>(b.rcvbuf)},
                            {"sndbuf", static_cast<uint64_t>(b.sndbuf)}},
                           "raise net.core.rmem_max and net.core.wmem_max for tunnel throughput");
        }
    }
    return f;
}

TunnelFront::~TunnelFront() {
    stop_check();
    listener_.reset();
}

void TunnelFront::stop_check() noexcept {
    if (check_ == nullptr) return;
    check_->release();
    check_ = nullptr;
}

void TunnelFront::watch_liveness() noexcept {
    if (check_ != nullptr) check_->arm();
}

void TunnelFront::recheck() noexcept {
    bool still = false;
    for (const auto& [m, hold] : live_) {
        if (m->unresponsive && !hub_.registry().responsive(*m)) still = true;
    }
    if (still) watch_liveness();
}

void TunnelFront::close_all() noexcept {
    if (listener_ != nullptr) listener_->close_all(quic::kAppCloseCode, "graceful shutdown");
}

void TunnelFront::close_revoked(std::vector<std::shared_ptr<TunnelMember>> revoked) noexcept {
    for (auto& m : revoked) {
        auto* c = static_cast<quic::Connection*>(m->connection);
        revoked_.push_back(m);
        if (c != nullptr) c->close(quic::kAppCloseCode, "authorization revoked");
    }
}

void TunnelFront::collect(std::unordered_map<const TunnelMember*, MemberStats>& out) const {
    for (const auto& [m, hold] : live_) {
        auto* c = static_cast<quic::Connection*>(m->connection);
        if (c == nullptr || c->raw() == nullptr) continue;
        ngtcp2_conn_info ci{};
        ngtcp2_conn_get_conn_info(c->raw(), &ci);
        MemberStats st{static_cast<double>(ci.smoothed_rtt) / 1e9, ci.cwnd, "?"};
        const ngtcp2_path* p = ngtcp2_conn_get_path(c->raw());
        if (p != nullptr && p->remote.addr != nullptr) {
            auto e =
                proto::from_sockaddr(p->remote.addr, static_cast<socklen_t>(p->remote.addrlen));
            if (e) st.address = proto::format_endpoint(proto::unmap_v4(*e));
        }
        out[m] = std::move(st);
    }
}

void TunnelFront::on_handshake_refused(size_t in_flight) noexcept {
    hub_.count(HandshakeFailure::kSaturated);
    hub_.admission().saturated(AdmissionScope::kQuicHandshakeGlobal, in_flight, in_flight);
}

void TunnelFront::on_handshake_admitted() noexcept {
    hub_.admission().admitted(AdmissionScope::kQuicHandshakeGlobal);
}

void TunnelFront::on_handshake_failed(const quic::Connection& c) noexcept {
    const quic::CloseInfo& info = c.close_info();
    // Refused identities were logged as unauthorized by the verifier; shutdown aborts the rest.
    if (!info.application && info.code == quic::kCryptoErrorAccessDenied)
        return hub_.count(HandshakeFailure::kUnauthorized);
    if (hub_.registry().sealed()) return;
    const bool has_cert = hub_.has_certificate();
    hub_.count(has_cert ? HandshakeFailure::kError : HandshakeFailure::kNoCertificate);
    if (hub_.handshake_failure_limit().on_saturated().log) {
        std::string cause = quic::describe_close(info, "the client");
        // ACME before the first issuance: every handshake fails until a certificate arrives.
        if (!has_cert) cause += "; no Server certificate yet (ACME issuance pending)";
        hub_.log().warn("server tunnel connection failed", {}, cause);
    }
}

void TunnelFront::on_connection(quic::Connection& c) noexcept {
    if (hub_.handshake_failure_limit().on_success())
        hub_.log().info("server admission recovered", {{"scope", "quic-handshake-failure"}});
    auto id = trust::identity_of_certificate_der(c.peer_certificate());
    if (!id) {
        hub_.count(HandshakeFailure::kUnauthorized);
        c.close(quic::kAppCloseCode, join_close_reason(JoinStatus::kUnmapped));
        return;
    }
    TunnelRegistry& reg = hub_.registry();
    auto j = reg.join(*id, &c, shard_);
    if (j.status != JoinStatus::kJoined) {
        if (j.status == JoinStatus::kUnmapped) {
            hub_.count(HandshakeFailure::kUnauthorized);
        } else if (j.status != JoinStatus::kShuttingDown) {
            hub_.count(HandshakeFailure::kJoinRefused);
        }
        if (auto scope = join_scope(j.status)) {
            const TunnelLimits& lim = reg.limits();
            uint64_t limit = j.status == JoinStatus::kGlobalSaturated ? lim.global
                             : j.status == JoinStatus::kPoolSaturated ? lim.per_pool
                                                                      : lim.per_identity;
            hub_.admission().saturated(*scope, limit, limit);
        }
        c.close(quic::kAppCloseCode, join_close_reason(j.status));
        return;
    }
    for (JoinStatus st :
         {JoinStatus::kGlobalSaturated, JoinStatus::kPoolSaturated, JoinStatus::kIdentitySaturated})
        hub_.admission().admitted(*join_scope(st));
    // This front keeps the member alive as long as the connection is; the connection points back.
    if (ServerMetrics* m = hub_.metrics()) m->tunnel_connections_accepted.add();
    c.set_user_data(j.member.get());
    c.set_handler(this);
    live_.emplace(j.member.get(), j.member);
    ++members_;
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
    if (auto it = live_.find(m); it != live_.end()) {
        hold = std::move(it->second);
        live_.erase(it);
        if (members_ > 0) --members_;
    }
    for (auto it = revoked_.begin(); it != revoked_.end(); ++it) {
        if (it->get() == m) {
            hold = std::move(*it);
            revoked_.erase(it);
            m->connection = nullptr;
            hub_.log().info(
                "server tunnel connection closed",
                {{"client-identity", m->identity}, {"reason", "authorization-revoked"}});
            break;
        }
    }
    hub_.registry().leave(*m, drop_cause(info));
    m->connection = nullptr;
    wake_waiters(*m);  // each sees a dead member and drops its Visitor
}

// ---- the tunnel UDP group -----------------------------------------------------------------------

Result<std::vector<core::UniqueFd>> tunnel_group(const config::ServerConfig& cfg,
                                                 core::UniqueFd activated, uint32_t workers,
                                                 obs::Logger& log) {
    if (activated.valid()) {
        // The socket-activated `tunnel` replaces binding the configured address.
        std::string got = note_activated(log, "server tunnel listener socket-activated",
                                         activated.get(), cfg.tunnel_bind, "tunnel-bind-address");
        std::string alone;
        auto g = quic::join_udp_group(std::move(activated), workers, &alone);
        if (!g) return Error::msg("activated tunnel socket " + got + ": " + g.error().message);
        if (g->size() < workers) {
            log.info("server tunnel listener on one worker", {{"bind-address", got}},
                     alone +
                         "; Tunnel connections all live on worker 0 (see runewarp(8), "
                         "socket activation)");
        }
        return g;
    }
    sockaddr_storage ss{};
    socklen_t len = proto::to_sockaddr(cfg.tunnel_bind, ss);
    auto g = quic::bind_udp_group(reinterpret_cast<const sockaddr*>(&ss), len, workers);
    if (!g) {
        return Error::msg("failed to bind server.tunnel-bind-address " +
                          proto::format_endpoint(cfg.tunnel_bind) + ": " + g.error().message);
    }
    return g;
}

}  // namespace runewarp::server
