// EdgeServer: the Server — public listener, Visitor admission and sessions, readiness, the QUIC
// tunnel listener and its pools, signals, orderly shutdown and systemd notification (spec 5.1-5.4,
// 5.10-5.12, 5.14, 12.1).
#include "server/edge_server.hh"

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "core/clock.hh"
#include "sys/limits.hh"
#include "trust/identity.hh"

namespace runewarp::server {

namespace {

constexpr int64_t kBackoffMinNs = 10'000'000;     // 10 ms (spec 5.11)
constexpr int64_t kBackoffMaxNs = 1'000'000'000;  // 1 s
constexpr uint32_t kMaxIdleIntake = 256;          // parsers kept for reuse
constexpr uint32_t kPipeSize = 256 * 1024;
constexpr int64_t kCloseFlushNs = 100'000'000;  // spec 5.14: CONNECTION_CLOSE leaves in 100 ms

// One short cause for a dropped Tunnel connection; empty for a clean close (spec 5.9: application
// 0 or transport NO_ERROR either way).
std::string drop_cause(const quic::CloseInfo& i) {
    using Kind = quic::CloseInfo::Kind;
    if ((i.kind == Kind::local || i.kind == Kind::remote) && i.code == 0) return {};
    return quic::describe_close(i, "the client");
}

// Binds and listens; the message names the config key as spec 5.1 asks.
Result<core::UniqueFd> bind_tcp(const proto::Endpoint& ep, const char* key, int backlog) {
    sockaddr_storage ss{};
    socklen_t len = proto::to_sockaddr(ep, ss);
    std::string where =
        std::string("failed to bind server.") + key + " " + proto::format_endpoint(ep);
    int fd = ::socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP);
    if (fd < 0) return Error::sys(errno, where);
    core::UniqueFd owned(fd);
    int one = 1;
    (void)::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (ss.ss_family == AF_INET6) {
        // `[::]` is dual-stack: IPv4 Visitors arrive as ::ffff:a.b.c.d and are unmapped later.
        int zero = 0;
        (void)::setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
    }
    if (::bind(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0) return Error::sys(errno, where);
    if (::listen(fd, backlog) != 0) return Error::sys(errno, where);
    return owned;
}

std::string local_text(int fd) {
    sockaddr_storage ss{};
    socklen_t len = sizeof(ss);
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return "?";
    auto e = proto::from_sockaddr(reinterpret_cast<const sockaddr*>(&ss), len);
    return e ? proto::format_endpoint(*e) : "?";
}

bool transient_accept_error(int err) noexcept {
    switch (err) {
        case EINTR:
        case EAGAIN:
        case ECONNABORTED:
        case ECONNRESET:
        case ETIMEDOUT:
        case ENOMEM:
        case ENFILE:
        case EMFILE:
        case ENOBUFS:
            return true;
        default:
            return false;
    }
}

// An activated socket is used as it is; one that differs from the configured address (`key`)
// is worth a warning. Returns the socket's address.
std::string note_activated(obs::Logger& log, const char* event, int fd,
                           const proto::Endpoint& configured, const char* key) {
    std::string got = local_text(fd);
    std::string want = proto::format_endpoint(configured);
    if (got != want) {
        log.warn(event, {{"bind-address", got}, {"configured", want}},
                 std::string("the activated socket differs from server.") + key);
    }
    return got;
}

core::BackendChoice backend_choice(config::EventBackend b) noexcept {
    switch (b) {
        case config::EventBackend::kIoUring:
            return core::BackendChoice::io_uring;
        case config::EventBackend::kEpoll:
            return core::BackendChoice::epoll;
        case config::EventBackend::kAuto:
            break;
    }
    return core::BackendChoice::automatic;
}

}  // namespace

// ---- Listener --------------------------------------------------------------------------------

Listener::Listener(core::Worker& w, EdgeServer& server, Kind kind, core::UniqueFd fd,
                   std::string bind_text) noexcept
    : core::Session(w),
      server_(server),
      kind_(kind),
      fd_(std::move(fd)),
      bind_text_(std::move(bind_text)) {}

void Listener::start() noexcept {
    arm_accept();
}

void Listener::arm_accept() noexcept {
    accept_armed_ = true;
    accept(kOpAccept, fd_.get(), true);
}

void Listener::on_event(const core::Completion& c) noexcept {
    if (c.token.op == kOpBackoff) {
        if (!aborting()) arm_accept();
        return;
    }
    if (c.token.op != kOpAccept) return;
    if (!c.more) accept_armed_ = false;
    if (c.result >= 0) {
        if (aborting()) {
            ::close(c.result);  // a connection that raced the stop: refuse it
            return;
        }
        if (backoff_ns_ != 0) {
            backoff_ns_ = 0;
            server_.log().info("server public listener accept recovered");
        }
        server_.on_accept(kind_, c.result);
    } else if (!aborting() && c.result != -ECANCELED) {
        int err = -c.result;
        if (!transient_accept_error(err)) return server_.on_listener_fatal(*this, err);
        if (err != EAGAIN && err != EINTR) {
            // fd exhaustion and friends: back off instead of spinning (spec 5.11).
            backoff_ns_ =
                backoff_ns_ == 0 ? kBackoffMinNs : std::min(backoff_ns_ * 2, kBackoffMaxNs);
            if (accept_armed_) {
                worker().loop().cancel(token(kOpAccept));
            }
            server_.log().warn(
                "server public listener accept retrying",
                {{"next-retry-delay", std::chrono::milliseconds(backoff_ns_ / 1'000'000)}},
                std::strerror(err));
            arm_timer(kOpBackoff, core::now_ns() + backoff_ns_);
            return;
        }
    }
    if (!c.more && !aborting() && backoff_ns_ == 0) arm_accept();
}

void Listener::on_quiesced() noexcept {
    close_fd(fd_);
    closed_ = true;
    server_.on_listener_closed(*this);
}

// ---- ControlSession --------------------------------------------------------------------------

void ControlSession::on_event(const core::Completion& c) noexcept {
    if (c.token.op == kOpGraceDeadline) server_.on_grace_deadline();
    if (c.token.op == kOpWatchdog) server_.on_watchdog();
    if (c.token.op == kOpCloseFlush) server_.on_close_flushed();
}

// ---- EdgeServer ------------------------------------------------------------------------------

EdgeServer::EdgeServer(const config::ServerConfig& cfg, obs::Logger& log) : cfg_(cfg), log_(log) {}

EdgeServer::~EdgeServer() {
    // Connections still attached are dropped without a closing period before anything they
    // call back into goes away.
    tunnel_listener_.reset();
}

Result<std::unique_ptr<EdgeServer>> EdgeServer::create(const config::ServerConfig& cfg,
                                                       const trust::ServerCertMaterial* tunnel_cert,
                                                       obs::Logger& log) {
    sys::raise_nofile_limit();
    std::unique_ptr<EdgeServer> s(new EdgeServer(cfg, log));

    core::WorkerOptions wo;
    wo.loop.choice = backend_choice(cfg.event_backend);
    auto w = core::Worker::create(wo);
    if (!w) return Error::msg("event loop: " + w.error().message);
    s->worker_ = std::move(*w);
    if (!s->worker_->fallback_reason().empty()) {
        log.warn("server event backend fallback",
                 {{"backend", core::backend_name(s->worker_->backend())}},
                 s->worker_->fallback_reason());
    }
    log.info("server event backend", {{"backend", core::backend_name(s->worker_->backend())}});

    auto routes = RouteTable::build(cfg);
    if (!routes) return std::move(routes).error();
    s->routes_ = std::move(*routes);

    const AdmissionLimits& lim = s->admission_.limits();
    s->pipes_ = std::make_unique<core::PipePool>(2 * lim.active_relays + 64, kPipeSize);
    s->peek_buf_ = std::make_unique<uint8_t[]>(kPeekCapacity);
    s->prefix_buf_ = std::make_unique<uint8_t[]>(kPrefixCapacity);
    s->visitors_ = std::make_unique<core::Slab<VisitorSession>>(lim.pre_routing_global +
                                                                lim.active_relays + 64);
    s->live_.reserve(lim.pre_routing_global + lim.active_relays + 64);

    // Socket activation replaces binding the configured addresses (spec 5.14, 12.2).
    auto activated =
        sys::collect_activated_sockets({{"public", SOCK_STREAM}, {"tunnel", SOCK_DGRAM}});
    if (!activated) return std::move(activated).error();
    core::UniqueFd public_fd;
    for (auto& a : *activated) {
        if (a.name == "public") {
            public_fd.reset(a.fd);
            int fl = ::fcntl(a.fd, F_GETFL);
            if (fl >= 0) (void)::fcntl(a.fd, F_SETFL, fl | O_NONBLOCK);
        } else {
            s->tunnel_fd_.reset(a.fd);
        }
    }
    if (public_fd.valid()) {
        note_activated(log, "server public listener socket-activated", public_fd.get(),
                       cfg.public_bind, "public-bind-address");
    } else {
        auto fd = bind_tcp(cfg.public_bind, "public-bind-address", SOMAXCONN);
        if (!fd) return std::move(fd).error();
        public_fd = std::move(*fd);
    }
    std::string public_text = local_text(public_fd.get());

    core::UniqueFd ready_fd;
    std::string ready_text;
    if (cfg.readiness_bind) {
        auto fd = bind_tcp(*cfg.readiness_bind, "readiness-bind-address", 128);
        if (!fd) return std::move(fd).error();
        ready_fd = std::move(*fd);
        ready_text = local_text(ready_fd.get());
    }

    s->control_ = std::make_unique<ControlSession>(*s->worker_, *s);
    if (!s->control_->open()) return Error::msg("event loop: no slot for the control session");
    s->public_owner_ = std::make_unique<Listener>(*s->worker_, *s, Listener::Kind::kPublic,
                                                  std::move(public_fd), public_text);
    s->public_ = s->public_owner_.get();
    if (!s->public_->open()) return Error::msg("event loop: no slot for the public listener");
    if (ready_fd.valid()) {
        s->readiness_owner_ = std::make_unique<Listener>(
            *s->worker_, *s, Listener::Kind::kReadiness, std::move(ready_fd), ready_text);
        s->readiness_ = s->readiness_owner_.get();
        if (!s->readiness_->open()) return Error::msg("event loop: no slot for readiness");
    }
    if (!cfg.tunnels.empty()) {
        if (tunnel_cert == nullptr)
            return Error::msg("no checked Server certificate for the tunnel");
        auto t = s->create_tunnel_listener(*tunnel_cert);
        if (!t) return std::move(t).error();
    } else if (s->tunnel_fd_.valid()) {
        log.warn("server tunnel listener socket-activated",
                 {{"bind-address", local_text(s->tunnel_fd_.get())}},
                 "no [tunnel] is configured; the activated tunnel socket is closed");
        s->tunnel_fd_.reset();
    }
    auto sig = s->worker_->watch_signals({SIGTERM, SIGINT, SIGQUIT, SIGHUP}, *s);
    if (!sig) return std::move(sig).error();
    return s;
}

int EdgeServer::run() noexcept {
    public_->start();
    log_.info("server public listener ready", {{"bind-address", public_->bind_text()}});
    if (tunnel_listener_ != nullptr)
        log_.info("server tunnel listener ready", {{"bind-address", tunnel_bind_text_}});
    if (readiness_ != nullptr) {
        readiness_->start();
        log_.info("server readiness listener enabled",
                  {{"bind-address", readiness_->bind_text()}, {"kind", "tcp-probe-only"}});
        log_.info("server readiness gained", {{"bind-address", readiness_->bind_text()}});
    }
    auto wd = sys::watchdog_ping_interval();
    if (wd.count() > 0) {
        watchdog_interval_ns_ = static_cast<int64_t>(wd.count()) * 1000;
        control_->arm_timer(ControlSession::kOpWatchdog, core::now_ns() + watchdog_interval_ns_);
    }
    sys::notify_ready("serving: public " + public_->bind_text());

    while (!finished_) {
        auto r = worker_->run_once(-1);
        if (!r) {
            log_.error("server event loop failed", {}, r.error().message);
            return 1;
        }
    }
    if (tunnel_listener_ != nullptr) {
        // Connections still lingering in their closing period are dropped; let their sessions
        // (and the UDP socket's) finish tearing down so nothing is left behind.
        tunnel_listener_.reset();
        (void)worker_->run_until([&] { return worker_->attached_count() <= 1; },
                                 core::now_ns() + kCloseFlushNs);
    }
    return exit_code_;
}

IntakeState* EdgeServer::borrow_intake() noexcept {
    ++intake_lent_;
    if (!intake_pool_.empty()) {
        IntakeState* s = intake_pool_.back().release();
        intake_pool_.pop_back();
        return s;
    }
    return new (std::nothrow) IntakeState();
}

void EdgeServer::return_intake(IntakeState* s) noexcept {
    if (intake_lent_ > 0) --intake_lent_;
    if (intake_pool_.size() >= kMaxIdleIntake) {
        delete s;
        return;
    }
    // Reset in place: the parsers start over for the next Visitor.
    s->proxy = proto::ProxyV2Decoder{};
    s->hello.reset();
    s->peeked = 0;
    intake_pool_.emplace_back(s);
}

void EdgeServer::on_accept(Listener::Kind kind, int fd) noexcept {
    if (kind == Listener::Kind::kReadiness) {
        ::close(fd);  // probe only: accept succeeds means eligible for new ingress
        return;
    }
    counters_.accepted++;
    if (shutting_down()) {
        ::close(fd);
        return;
    }
    // Spec 5.4 step 1: the global pre-routing slot before any per-connection work.
    if (!admission_.try_pre_routing_global()) {
        ::close(fd);
        note_saturated("visitor-global", admission_.pre_routing(),
                       admission_.limits().pre_routing_global);
        return;
    }
    note_admitted("visitor-global");
    auto id = visitors_->alloc(*worker_, *this, fd, ++next_conn_id_);
    if (!id) {
        admission_.release_pre_routing_global();
        ::close(fd);
        note_saturated("visitor-global", visitors_->size(), visitors_->capacity());
        return;
    }
    VisitorSession* v = visitors_->get(*id);
    if (v == nullptr) return;  // cannot happen: the slot was just allocated
    v->slab_id_ = *id;
    if (!v->open()) {
        // No handler slot: undo by hand (nothing was submitted).
        admission_.release_pre_routing_global();
        visitors_->free(*id);
        note_saturated("visitor-global", worker_->attached_count(), worker_->attached_count());
        return;
    }
    v->live_index_ = live_.size();
    live_.push_back(v);
    v->start();
}

void EdgeServer::on_visitor_closed(VisitorSession& v, core::SlotId slab_id) noexcept {
    size_t i = v.live_index_;
    if (i < live_.size() && live_[i] == &v) {
        live_[i] = live_.back();
        live_[i]->live_index_ = i;
        live_.pop_back();
    }
    visitors_->free(slab_id);
    maybe_finish();
}

void EdgeServer::on_listener_fatal(Listener& l, int err) noexcept {
    log_.error("server public listener failed", {{"bind-address", l.bind_text()}},
               std::strerror(err));
    exit_code_ = 1;
    begin_shutdown(ShutdownMode::kFast);
}

void EdgeServer::on_listener_closed(Listener& l) noexcept {
    if (&l == readiness_) readiness_ = nullptr;
    if (&l == public_) public_ = nullptr;
    maybe_finish();
}

EdgeServer::Scope EdgeServer::scope_of(const char* scope) const noexcept {
    if (std::strcmp(scope, "visitor-source") == 0) return Scope::kVisitorSource;
    if (std::strcmp(scope, "active-routed-stream") == 0) return Scope::kActiveRelay;
    if (std::strcmp(scope, "pending-stream-open") == 0) return Scope::kPendingOpen;
    if (std::strcmp(scope, "tunnel-connection-global") == 0) return Scope::kTunnelGlobal;
    if (std::strcmp(scope, "tunnel-connection-per-tunnel") == 0) return Scope::kTunnelPerTunnel;
    if (std::strcmp(scope, "tunnel-connection-per-client-identity") == 0)
        return Scope::kTunnelPerIdentity;
    return Scope::kVisitorGlobal;
}

void EdgeServer::note_saturated(const char* scope, uint64_t active, uint64_t limit) noexcept {
    auto d = saturation_limits_[static_cast<size_t>(scope_of(scope))].on_saturated();
    if (d.log) {
        log_.warn("server admission saturated",
                  {{"scope", scope}, {"active-work", active}, {"limit", limit}});
    }
}

void EdgeServer::note_admitted(const char* scope) noexcept {
    if (saturation_limits_[static_cast<size_t>(scope_of(scope))].on_success())
        log_.info("server admission recovered", {{"scope", scope}});
}

void EdgeServer::note_rejected(CloseReason r, std::string_view hostname) noexcept {
    switch (r) {
        case CloseReason::kNone:
        case CloseReason::kDone:
        case CloseReason::kReset:
        case CloseReason::kShutdown:
        case CloseReason::kSourceSaturated:
        case CloseReason::kRelaySaturated:
        case CloseReason::kPendingOpenSaturated:
            return;  // not intake rejections, or already covered by saturation lines
        default:
            break;
    }
    auto d = rejection_limits_[static_cast<size_t>(r) % rejection_limits_.size()].on_saturated();
    if (!d.log) return;
    if (r == CloseReason::kNoActiveTunnel || r == CloseReason::kUpstreamConnectFailed ||
        r == CloseReason::kUpstreamTimeout || r == CloseReason::kUpstreamWriteFailed) {
        if (hostname.empty()) {
            log_.warn("server route unavailable", {{"reason", reason_text(r)}, {"count", d.count}});
        } else {
            log_.warn(
                "server route unavailable",
                {{"public-hostname", hostname}, {"reason", reason_text(r)}, {"count", d.count}});
        }
    } else if (r == CloseReason::kAcmeConfigMissing) {
        log_.warn("server route rejected", {{"reason", reason_text(r)}, {"count", d.count}},
                  "TLS-ALPN-01 for the Server hostname needs [server.acme]");
    } else {
        log_.warn("server visitor intake rejected",
                  {{"reason", reason_text(r)}, {"count", d.count}});
    }
}

void EdgeServer::on_signal(const signalfd_siginfo& info) noexcept {
    switch (info.ssi_signo) {
        case SIGTERM:
            if (shutdown_mode_ == ShutdownMode::kNone) begin_shutdown(ShutdownMode::kGraceful);
            // Repeated SIGTERM is ignored (spec 5.14).
            break;
        case SIGINT:
            if (shutdown_mode_ == ShutdownMode::kNone) {
                begin_shutdown(ShutdownMode::kGraceful);
            } else {
                escalate_fast();
            }
            break;
        case SIGQUIT:
            if (shutdown_mode_ == ShutdownMode::kNone) {
                begin_shutdown(ShutdownMode::kFast);
            } else {
                escalate_fast();
            }
            break;
        case SIGHUP:
            log_.warn("server config reload not supported", {},
                      "restart the service to apply configuration changes");
            break;
        default:
            break;
    }
}

void EdgeServer::begin_shutdown(ShutdownMode mode) noexcept {
    if (shutdown_mode_ != ShutdownMode::kNone) return;
    if (mode == ShutdownMode::kGraceful && cfg_.graceful_shutdown_ms == 0)
        mode = ShutdownMode::kFast;  // `0s` makes graceful behave like fast
    shutdown_mode_ = mode;
    auto grace = std::chrono::milliseconds(
        mode == ShutdownMode::kGraceful ? static_cast<int64_t>(cfg_.graceful_shutdown_ms) : 0);
    log_.info("server orderly shutdown started",
              {{"mode", mode == ShutdownMode::kGraceful ? "graceful" : "fast"},
               {"effective-graceful-duration", grace}});
    sys::notify_stopping();
    // No Tunnel registration after this: new connections and new streams are refused.
    if (tunnels_ != nullptr) tunnels_->seal();
    // Readiness goes first, so load balancers stop sending before the listener closes.
    if (readiness_ != nullptr) {
        log_.info("server readiness lost", {{"bind-address", readiness_->bind_text()}});
        readiness_->stop();
    }
    if (public_ != nullptr) public_->stop();
    // Visitors still in intake are cancelled; routed ones keep running for now. Iterate over a
    // copy: on_shutdown_started() only queues teardown, but be robust anyway.
    std::vector<VisitorSession*> snapshot(live_);
    for (VisitorSession* v : snapshot) v->on_shutdown_started();
    if (mode == ShutdownMode::kFast) {
        cut_relays();
    } else {
        grace_timer_ = control_->arm_timer(ControlSession::kOpGraceDeadline,
                                           core::now_ns() + grace.count() * 1'000'000);
    }
    maybe_finish();
}

void EdgeServer::escalate_fast() noexcept {
    if (shutdown_mode_ == ShutdownMode::kFast) return;
    shutdown_mode_ = ShutdownMode::kFast;
    log_.warn("server orderly shutdown escalated", {{"mode", "fast"}});
    worker_->cancel_timer(grace_timer_);
    cut_relays();
    maybe_finish();
}

void EdgeServer::on_grace_deadline() noexcept {
    if (relays_cut_) return;
    log_.warn("server graceful shutdown deadline expired",
              {{"active-tunnel-connections",
                static_cast<uint64_t>(tunnels_ != nullptr ? tunnels_->total() : 0)},
               {"active-relays", static_cast<uint64_t>(live_.size())}});
    cut_relays();
    maybe_finish();
}

void EdgeServer::cut_relays() noexcept {
    relays_cut_ = true;
    std::vector<VisitorSession*> snapshot(live_);
    for (VisitorSession* v : snapshot) v->cut();
}

void EdgeServer::maybe_finish() noexcept {
    if (finished_ || shutdown_mode_ == ShutdownMode::kNone) return;
    if (!live_.empty() || public_ != nullptr || readiness_ != nullptr) return;
    if (tunnel_listener_ != nullptr && !close_flushed_) {
        // Routed streams are done (or were cut): close every Tunnel connection and give the
        // CONNECTION_CLOSE 100 ms to leave (spec 5.14 step 4).
        if (!tunnels_closed_) close_tunnels();
        return;
    }
    log_.info("server orderly shutdown complete",
              {{"mode", shutdown_mode_ == ShutdownMode::kFast ? "fast" : "graceful"}});
    finished_ = true;
}

void EdgeServer::close_tunnels() noexcept {
    tunnels_closed_ = true;
    log_.info("server orderly shutdown closing tunnel connections",
              {{"mode", shutdown_mode_ == ShutdownMode::kFast ? "fast" : "graceful"},
               {"active-tunnel-connections", static_cast<uint64_t>(tunnels_->total())}});
    tunnel_listener_->close_all(quic::kAppCloseCode, "graceful shutdown");
    control_->arm_timer(ControlSession::kOpCloseFlush, core::now_ns() + kCloseFlushNs);
}

void EdgeServer::on_close_flushed() noexcept {
    close_flushed_ = true;
    maybe_finish();
}

// ---- Tunnel side -----------------------------------------------------------------------------

Result<void> EdgeServer::create_tunnel_listener(const trust::ServerCertMaterial& cert) {
    // The certificate was verified as a whole before startup (preflight::check_server).
    tunnels_ = std::make_unique<TunnelRegistry>(AuthTable::build(cfg_), &log_);
    tunnels_->set_liveness([](const TunnelMember& m, int64_t now) noexcept {
        auto* c = static_cast<const quic::Connection*>(m.connection);
        return c == nullptr || !c->unresponsive(now);
    });
    auto tls =
        quic::ServerTls::create({cert.cert_pem, cert.key_pem,
                                 [this](std::span<const uint8_t> der) { return admit_peer(der); }});
    if (!tls)
        return Error::msg("server certificate " + cert.cert_path + ": " + tls.error().message);
    tunnel_tls_ = std::move(*tls);

    if (tunnel_fd_.valid()) {
        // Socket activation `tunnel` replaces binding the configured address (spec 5.14).
        std::string got = note_activated(log_, "server tunnel listener socket-activated",
                                         tunnel_fd_.get(), cfg_.tunnel_bind, "tunnel-bind-address");
        auto l = quic::Listener::adopt(*worker_, std::move(tunnel_fd_), *tunnel_tls_, *this, {});
        if (!l) return Error::msg("activated tunnel socket " + got + ": " + l.error().message);
        tunnel_listener_ = std::move(*l);
    } else {
        sockaddr_storage ss{};
        socklen_t len = proto::to_sockaddr(cfg_.tunnel_bind, ss);
        auto l = quic::Listener::create(*worker_, reinterpret_cast<const sockaddr*>(&ss), len,
                                        *tunnel_tls_, *this, {});
        if (!l) {
            return Error::msg("failed to bind server.tunnel-bind-address " +
                              proto::format_endpoint(cfg_.tunnel_bind) + ": " + l.error().message);
        }
        tunnel_listener_ = std::move(*l);
    }
    tunnel_bind_text_ = local_text(tunnel_listener_->endpoint().fd());
    // Spec 12.3: one WARN when the kernel grants less socket buffer than asked for.
    const quic::SocketBuffers& b = tunnel_listener_->endpoint().buffers();
    if (b.capped) {
        log_.warn("server tunnel socket buffers capped",
                  {{"requested", static_cast<uint64_t>(b.requested)},
                   {"rcvbuf", static_cast<uint64_t>(b.rcvbuf)},
                   {"sndbuf", static_cast<uint64_t>(b.sndbuf)}},
                  "raise net.core.rmem_max and net.core.wmem_max for tunnel throughput");
    }
    return {};
}

bool EdgeServer::admit_peer(std::span<const uint8_t> leaf_der) noexcept {
    // Decided inside the handshake: a refusal reaches the Client as CRYPTO_ERROR 0x0131.
    auto id = trust::identity_of_certificate_der(leaf_der);
    if (id && tunnels_->admits(*id)) return true;
    if (unauthorized_limit_.on_saturated().log) {
        if (id) {
            log_.warn("server tunnel connection unauthorized", {{"client-identity", *id}});
        } else {
            log_.warn("server tunnel connection unauthorized", {}, id.error().message);
        }
    }
    return false;
}

void EdgeServer::on_handshake_failed(const quic::Connection& c) noexcept {
    const quic::CloseInfo& info = c.close_info();
    // Refused identities were logged as unauthorized by the verifier; shutdown aborts the rest.
    if (!info.application && info.code == quic::kCryptoErrorAccessDenied) return;
    if (tunnels_ == nullptr || tunnels_->sealed()) return;
    if (handshake_failure_limit_.on_saturated().log)
        log_.warn("server tunnel connection failed", {}, quic::describe_close(info, "the client"));
}

void EdgeServer::on_connection(quic::Connection& c) noexcept {
    if (handshake_failure_limit_.on_success())
        log_.info("server admission recovered", {{"scope", "quic-handshake-failure"}});
    auto id = trust::identity_of_certificate_der(c.peer_certificate());
    if (!id) {
        c.close(quic::kAppCloseCode, join_close_reason(JoinStatus::kUnmapped));
        return;
    }
    auto j = tunnels_->join(*id, &c);
    if (j.status != JoinStatus::kJoined) {
        if (const char* scope = join_scope(j.status)) {
            const TunnelLimits& lim = tunnels_->limits();
            uint64_t limit = j.status == JoinStatus::kGlobalSaturated ? lim.global
                             : j.status == JoinStatus::kPoolSaturated ? lim.per_pool
                                                                      : lim.per_identity;
            note_saturated(scope, limit, limit);
        }
        c.close(quic::kAppCloseCode, join_close_reason(j.status));
        return;
    }
    for (JoinStatus st :
         {JoinStatus::kGlobalSaturated, JoinStatus::kPoolSaturated, JoinStatus::kIdentitySaturated})
        note_admitted(join_scope(st));
    // The pool keeps the member alive as long as the connection is; the connection points back.
    c.set_user_data(j.member.get());
    c.set_handler(this);
}

void EdgeServer::on_stream_opened(quic::Connection&, quic::Stream& s) noexcept {
    // Clients may not open streams (initial_max_streams_bidi = 0); refuse anything that does.
    s.reset(quic::kStreamErrorCode);
}

void EdgeServer::wake_waiters(TunnelMember& m) noexcept {
    std::vector<StreamWaiter*> waiting;
    waiting.swap(m.waiters);
    for (StreamWaiter* w : waiting) w->on_stream_credit();
}

void EdgeServer::on_streams_available(quic::Connection& c) noexcept {
    auto* m = static_cast<TunnelMember*>(c.user_data());
    if (m != nullptr) wake_waiters(*m);
}

void EdgeServer::on_closed(quic::Connection& c, const quic::CloseInfo& info) noexcept {
    auto* m = static_cast<TunnelMember*>(c.user_data());
    c.set_user_data(nullptr);
    if (m == nullptr) return;
    // Keep the member alive through the wake-ups even if no Visitor holds it.
    std::shared_ptr<TunnelMember> hold;
    for (auto& p : tunnels_->all())
        if (p.get() == m) hold = p;
    tunnels_->leave(*m, drop_cause(info));
    wake_waiters(*m);  // each sees a dead member and drops its Visitor
}

void EdgeServer::on_watchdog() noexcept {
    sys::notify_watchdog();
    if (watchdog_interval_ns_ > 0)
        control_->arm_timer(ControlSession::kOpWatchdog, core::now_ns() + watchdog_interval_ns_);
}

int run_server(const config::ServerConfig& cfg,
               const trust::ServerCertMaterial* tunnel_cert) noexcept {
    obs::Logger& log = obs::process_logger();
    auto s = EdgeServer::create(cfg, tunnel_cert, log);
    if (!s) {
        log.error("server startup failed", {}, s.error().message);
        return 1;
    }
    return (*s)->run();
}

}  // namespace runewarp::server
