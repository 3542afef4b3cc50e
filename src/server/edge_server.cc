// EdgeServer: builds the Server's parts, accepts Visitors into sessions, runs the loop until the
// orderly shutdown finishes.
#include "server/edge_server.hh"

#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstring>
#include <ctime>
#include <mutex>

#include "acme/state.hh"
#include "core/clock.hh"
#include "server/reload_plan.hh"
#include "sys/limits.hh"
#include "sys/systemd.hh"

namespace runewarp::server {

namespace {

constexpr int64_t kCloseFlushNs = 100'000'000;
// Sessions of the server itself that outlive the Visitors: control and shutdown.
constexpr uint32_t kOwnSessions = 2;
// How long a reload waits for its upstream names before it gives up (as at startup).
constexpr int64_t kReloadResolveNs = 10'000'000'000;

// The configurable admission limits (spec 12.5); the others keep spec 5.11's values.
AdmissionLimits limits_of(const config::ServerConfig& cfg) noexcept {
    AdmissionLimits lim;
    lim.active_relays = cfg.max_active_streams;
    lim.pending_opens = cfg.max_pending_stream_opens;
    return lim;
}

}  // namespace

void ControlSession::on_event(const core::Completion& c) noexcept {
    if (c.token.op == kOpCertCheck) server_.on_cert_check();
    if (c.token.op == kOpReloadDeadline) server_.on_reload_deadline();
}

EdgeServer::EdgeServer(std::shared_ptr<const config::ServerConfig> cfg, obs::Logger& log,
                       config::LoadOptions options)
    : cfg_(std::move(cfg)),
      log_(log),
      options_(std::move(options)),
      admission_(limits_of(*cfg_)),
      admission_log_(log),
      cert_watch_(log) {}

EdgeServer::~EdgeServer() {
    // The other workers' threads end first (they post into shard 0 and read the server).
    for (size_t i = 1; i < shards_.size(); ++i) shards_[i]->stop_thread();
    // The manager thread posts into the mailbox and reads the board: it goes first.
    if (acme_ != nullptr) acme_->stop();
    acme_.reset();
    // Connections still attached are dropped without a closing period before anything they
    // call back into goes away.
    if (!shards_.empty()) shards_[0]->reset_tunnel();
    hub_.store(nullptr, std::memory_order_release);
    tunnel_.reset();
}

Result<std::unique_ptr<EdgeServer>> EdgeServer::create(
    std::shared_ptr<const config::ServerConfig> cfg_ptr,
    const trust::ServerCertMaterial* tunnel_cert, obs::Logger& log, config::LoadOptions options) {
    if (std::uint64_t nofile = sys::raise_nofile_limit(); nofile < sys::kMinimumNofile)
        log.warn(
            "server open file limit low",
            {{"limit", std::to_string(nofile)}, {"wanted", std::to_string(sys::kWantedNofile)}},
            "Visitors past the limit are refused; raise LimitNOFILE= or `ulimit -Hn`");
    std::unique_ptr<EdgeServer> s(new EdgeServer(cfg_ptr, log, std::move(options)));
    const config::ServerConfig& cfg = *cfg_ptr;

    core::WorkerOptions wo;
    wo.loop.choice = sys::backend_choice(cfg.event_backend);
    // Every Visitor is a session (intake and relay); connections and listeners take the rest.
    {
        const AdmissionLimits& lim = s->admission_.limits();
        wo.max_slots =
            std::max<uint32_t>(wo.max_slots, lim.pre_routing_global + lim.active_relays + 4096);
    }
    auto w = core::Worker::create(wo);
    if (!w) return Error::msg("event loop: " + w.error().message);
    s->worker_ = std::move(*w);
    if (!s->worker_->fallback_reason().empty()) {
        log.warn("server event backend fallback",
                 {{"backend", core::backend_name(s->worker_->backend())}},
                 s->worker_->fallback_reason());
    }
    log.info("server event backend", {{"backend", core::backend_name(s->worker_->backend())}});

    // The manager reads its cache (and logs what it found) before anything is bound.
    if (cfg.acme) {
        if (auto r = s->create_acme(); !r) return std::move(r).error();
    }

    s->metrics_.add_labels(cfg);
    s->started_unix_ = static_cast<int64_t>(std::time(nullptr));
    s->routes_ = RouteTable::build(cfg);
    if (auto r = s->resolve_upstreams(); !r) return std::move(r).error();

    // Socket activation replaces binding the configured addresses.
    auto activated = sys::collect_activated_sockets(
        {{"public", SOCK_STREAM}, {"tunnel", SOCK_DGRAM}, {"metrics", SOCK_STREAM}});
    if (!activated) return std::move(activated).error();
    core::UniqueFd public_fd;
    core::UniqueFd metrics_fd;
    for (auto& a : *activated) {
        if (a.name == "public") {
            public_fd.reset(a.fd);
            int fl = ::fcntl(a.fd, F_GETFL);
            if (fl >= 0) (void)::fcntl(a.fd, F_SETFL, fl | O_NONBLOCK);
        } else if (a.name == "metrics") {
            metrics_fd.reset(a.fd);
            int fl = ::fcntl(a.fd, F_GETFL);
            if (fl >= 0) (void)::fcntl(a.fd, F_SETFL, fl | O_NONBLOCK);
        } else {
            s->tunnel_fd_.reset(a.fd);
        }
    }
    const size_t workers = config::resolve_workers(cfg.workers);
    const bool activated_public = public_fd.valid();
    if (activated_public) {
        note_activated(log, "server public listener socket-activated", public_fd.get(),
                       cfg.public_bind, "public-bind-address");
    } else {
        auto fd = bind_tcp(cfg.public_bind, "public-bind-address", SOMAXCONN, workers > 1);
        if (!fd) return std::move(fd).error();
        public_fd = std::move(*fd);
    }
    std::string public_text = local_text(public_fd.get());
    s->public_text_ = public_text;
    {
        sockaddr_storage ss{};
        socklen_t sl = sizeof ss;
        if (::getsockname(public_fd.get(), reinterpret_cast<sockaddr*>(&ss), &sl) == 0) {
            if (auto ep = proto::from_sockaddr(ss)) s->public_port_ = ep->port;
        }
    }

    core::UniqueFd ready_fd;
    std::string ready_text;
    if (cfg.readiness_bind) {
        auto fd = bind_tcp(*cfg.readiness_bind, "readiness-bind-address", 128);
        if (!fd) return std::move(fd).error();
        ready_fd = std::move(*fd);
        ready_text = local_text(ready_fd.get());
    }

    // The metrics listener: the activated `metrics` socket, else the configured address.
    if (metrics_fd.valid()) {
        std::string got = obs::socket_local_text(metrics_fd.get());
        log.info("server metrics listener socket-activated", {{"bind-address", got}});
    } else if (cfg.metrics_bind) {
        auto fd = obs::bind_metrics_listener(*cfg.metrics_bind);
        if (!fd) return std::move(fd).error();
        metrics_fd = std::move(*fd);
    }
    if (metrics_fd.valid()) {
        EdgeServer* self = s.get();
        s->metrics_http_ = std::make_unique<obs::HttpServer>(
            *s->worker_, std::move(metrics_fd),
            [self](std::string_view path) { return self->serve_http(path); });
    }

    s->control_ = std::make_unique<ControlSession>(*s->worker_, *s);
    if (!s->control_->open()) return Error::msg("event loop: no slot for the control session");
    s->shutdown_ = std::make_unique<OrderlyShutdown>(*s->worker_, static_cast<ShutdownHost&>(*s),
                                                     log, cfg.graceful_shutdown_ms);
    if (!s->shutdown_->open()) return Error::msg("event loop: no slot for the shutdown session");
    ListenerOwner& owner = *s;
    if (ready_fd.valid()) {
        s->readiness_owner_ = std::make_unique<Listener>(
            *s->worker_, owner, log, Listener::Kind::kReadiness, std::move(ready_fd), ready_text);
        s->readiness_ = s->readiness_owner_.get();
        if (!s->readiness_->open()) return Error::msg("event loop: no slot for readiness");
    }
    std::vector<core::UniqueFd> tunnel_group_fds;
    if (!cfg.tunnels.empty()) {
        if (tunnel_cert == nullptr && s->acme_ == nullptr)
            return Error::msg("no checked Server certificate for the tunnel");
        // With ACME the Tunnel starts without a certificate (handshakes fail, Clients retry)
        // unless the cache holds a usable one.
        auto t = TunnelHub::create(cfg, s->acme_ != nullptr ? nullptr : tunnel_cert, log,
                                   s->admission_log_);
        if (!t) return std::move(t).error();
        s->tunnel_ = std::move(*t);
        s->tunnel_->set_metrics(&s->metrics_);
        s->watch_tunnel_liveness(*s->tunnel_);
        s->hub_.store(s->tunnel_.get(), std::memory_order_release);
        if (s->acme_ != nullptr) {
            if (auto cached = s->acme_->cached()) s->on_acme_certificate(*cached);
        } else {
            s->cert_watch_.add(s->tunnel_->cert_path(), s->tunnel_->cert_not_after());
        }
        // One member of the tunnel UDP group per worker: each worker owns the connections whose
        // packets the group steers to it.
        auto g = tunnel_group(cfg, std::move(s->tunnel_fd_), static_cast<uint32_t>(workers), log);
        if (!g) return std::move(g).error();
        tunnel_group_fds = std::move(*g);
        s->tunnel_text_ = local_text(tunnel_group_fds[0].get());
        s->tunnel_workers_ = static_cast<uint32_t>(tunnel_group_fds.size());
    } else if (s->tunnel_fd_.valid()) {
        log.warn("server tunnel listener socket-activated",
                 {{"bind-address", local_text(s->tunnel_fd_.get())}},
                 "no [tunnel] is configured; the activated tunnel socket is closed");
        s->tunnel_fd_.reset();
    }
    auto sig = s->worker_->watch_signals({SIGTERM, SIGINT, SIGQUIT, SIGHUP}, *s);
    if (!sig) return std::move(sig).error();

    // The workers: shard 0 on this thread, the others on theirs, each with its member of the
    // public listener group. None accepts before run().
    auto group = s->public_group(std::move(public_fd), activated_public, workers);
    if (!group) return std::move(group).error();
    ShardSnapshot snap = s->make_snapshot();
    for (size_t i = 0; i < workers; ++i)
        s->shards_.push_back(std::make_unique<EdgeShard>(*s, static_cast<uint32_t>(i)));
    auto tunnel_member = [&](size_t i) {
        return i < tunnel_group_fds.size() ? std::move(tunnel_group_fds[i]) : core::UniqueFd();
    };
    if (auto r = s->shards_[0]->setup_primary(*s->worker_, std::move((*group)[0]), public_text,
                                              snap, tunnel_member(0), s->tunnel_workers_);
        !r)
        return std::move(r).error();
    core::WorkerOptions shard_wo = wo;
    for (size_t i = 1; i < workers; ++i) {
        if (auto r = s->shards_[i]->start_thread(shard_wo, std::move((*group)[i]), public_text,
                                                 snap, tunnel_member(i), s->tunnel_workers_);
            !r)
            return Error::msg("worker " + std::to_string(i) + ": " + r.error().message);
    }
    return s;
}

Result<std::vector<core::UniqueFd>> EdgeServer::public_group(core::UniqueFd first, bool activated,
                                                             size_t workers) {
    std::vector<core::UniqueFd> group;
    const int first_fd = first.get();
    group.push_back(std::move(first));
    if (workers <= 1) return group;
    proto::Endpoint ep = cfg_->public_bind;
    {
        sockaddr_storage ss{};
        socklen_t sl = sizeof ss;
        if (::getsockname(first_fd, reinterpret_cast<sockaddr*>(&ss), &sl) == 0) {
            if (auto got = proto::from_sockaddr(ss)) ep = *got;
        }
    }
    for (size_t i = 1; i < workers; ++i) {
        if (!activated) {
            // Port 0 bound the first socket to some port: the others join that one.
            auto fd = bind_tcp(ep, "public-bind-address", SOMAXCONN, true);
            if (!fd) return std::move(fd).error();
            group.push_back(std::move(*fd));
            continue;
        }
        // The activated socket is shared: every worker accepts from it (binding more sockets
        // to its address would need SO_REUSEPORT set by systemd and the same user).
        int d = ::fcntl(first_fd, F_DUPFD_CLOEXEC, 0);
        if (d < 0) return Error::sys(errno, "dup of the activated public socket");
        group.emplace_back(d);
    }
    return group;
}

ShardSnapshot EdgeServer::make_snapshot() {
    label_counts_ = LabelCounts::build(metrics_);
    return ShardSnapshot{cfg_, routes_, label_counts_};
}

LiveView EdgeServer::collect_live() const {
    LiveView v;
    if (shards_.empty()) return v;
    shards_[0]->collect(v);
    if (shards_.size() == 1) return v;
    struct Pending {
        std::mutex mu;
        std::condition_variable cv;
        size_t left = 0;
        LiveView view;
    };
    auto p = std::make_shared<Pending>();
    p->left = shards_.size() - 1;
    for (size_t i = 1; i < shards_.size(); ++i) {
        EdgeShard* sh = shards_[i].get();
        sh->post([p, sh] {
            LiveView mine;
            sh->collect(mine);
            std::lock_guard lock(p->mu);
            p->view.merge(mine);
            if (--p->left == 0) p->cv.notify_all();
        });
    }
    std::unique_lock lock(p->mu);
    p->cv.wait_for(lock, std::chrono::milliseconds(500), [&] { return p->left == 0; });
    v.merge(p->view);
    return v;
}

uint64_t EdgeServer::live_visitors() const noexcept {
    uint64_t n = 0;
    for (const auto& sh : shards_) n += sh->live();
    return n;
}

int EdgeServer::run() noexcept {
    running_ = true;
    shards_[0]->start_listener();
    for (size_t i = 1; i < shards_.size(); ++i) {
        EdgeShard* sh = shards_[i].get();
        sh->post([sh] { sh->start_listener(); });
    }
    log_.info("server public listener ready",
              {{"bind-address", public_text_}, {"workers", static_cast<uint64_t>(shards_.size())}});
    if (tunnel_ != nullptr) {
        log_.info("server tunnel listener ready",
                  {{"bind-address", tunnel_text_}, {"workers", uint64_t{tunnel_workers_}}});
    }
    if (readiness_ != nullptr) {
        readiness_->start();
        log_.info("server readiness listener enabled",
                  {{"bind-address", readiness_->bind_text()}, {"kind", "tcp-probe-only"}});
        log_.info("server readiness gained", {{"bind-address", readiness_->bind_text()}});
    }
    if (metrics_http_ != nullptr) {
        if (!metrics_http_->start()) {
            log_.error("server metrics listener failed", {}, "no event loop slot");
            return 1;
        }
        log_.info("server metrics listener ready", {{"bind-address", metrics_http_->bind_text()}});
    }
    watchdog_ = std::make_unique<sys::Watchdog>(*worker_);
    watchdog_->start();
    // An expired certificate does not stop the Server (Clients pin the CA and keep retrying);
    // the operator must see it, now and every day until it is renewed.
    if (!cert_watch_.empty()) on_cert_check();
    if (acme_ != nullptr) {
        // Challenges arrive on the public listener; the ACME server dials port 443.
        if (public_port_ != 443) {
            log_.warn("server acme challenge reachability", {{"bind-address", public_text_}},
                      "TLS-ALPN-01 validation connects to TCP port 443 of the Server hostname; "
                      "make sure it reaches this listener");
        }
        acme_->start();
    }
    start_reload();
    sys::notify_ready(status_text());

    while (!shutdown_->finished()) {
        auto r = worker_->run_once(-1);
        if (!r) {
            log_.error("server event loop failed", {}, r.error().message);
            return 1;
        }
    }
    watchdog_->stop();
    for (size_t i = 1; i < shards_.size(); ++i) shards_[i]->stop_thread();
    shards_[0]->close_mailbox();
    (void)worker_->run_until([&] { return shards_[0]->mailbox_quiesced(); },
                             core::now_ns() + kCloseFlushNs);
    if (tunnel_ != nullptr) {
        // Connections still lingering in their closing period are dropped; let their sessions
        // (and the UDP socket's) finish tearing down so nothing is left behind.
        shards_[0]->drop_tunnel();
        (void)worker_->run_until([&] { return worker_->attached_count() <= kOwnSessions; },
                                 core::now_ns() + kCloseFlushNs);
    }
    return exit_code_;
}

void EdgeServer::on_accept(Listener&, int fd) noexcept {
    ::close(fd);  // readiness probe only: accept succeeds means eligible for new ingress
}

void EdgeServer::on_shard_drained() noexcept {
    shutdown_->progress();
}

void EdgeServer::on_listener_failed(const std::string& bind_text, int err) noexcept {
    log_.error("server public listener failed", {{"bind-address", bind_text}}, std::strerror(err));
    exit_code_ = 1;
    shutdown_->begin(OrderlyShutdown::Mode::kFast);
}

void EdgeServer::on_worker_failed() noexcept {
    exit_code_ = 1;
    shutdown_->begin(OrderlyShutdown::Mode::kFast);
}

void EdgeServer::on_listener_fatal(Listener& l, int err) noexcept {
    on_listener_failed(l.bind_text(), err);
}

void EdgeServer::on_listener_closed(Listener& l) noexcept {
    if (&l == readiness_) readiness_ = nullptr;
    shutdown_->progress();
}

void EdgeServer::on_signal(const signalfd_siginfo& info) noexcept {
    if (info.ssi_signo == SIGHUP) {
        // Reload (spec 10.1); ignored once shutdown began.
        if (reload_ != nullptr && !shutting_down()) reload_->on_sighup();
        return;
    }
    shutdown_->on_signal(static_cast<int>(info.ssi_signo));
}

void EdgeServer::stop_ingress() noexcept {
    // No reload during shutdown: requesters still waiting are told so, a half-done one is
    // dropped (the running configuration stays until the end).
    if (reload_ != nullptr) reload_->stop();
    if (pending_reload_ != nullptr) abandon_reload("the daemon is shutting down");
    // No certificate work during shutdown: the manager stops (its thread joins) and whatever it
    // still posts is dropped.
    if (acme_ != nullptr) acme_->stop();
    if (mailbox_ != nullptr) mailbox_->shutdown();
    if (upstreams_ != nullptr) upstreams_->stop();
    if (resolver_ != nullptr) resolver_->shutdown();
    // No Tunnel registration after this: new connections and new streams are refused.
    if (tunnel_ != nullptr) tunnel_->registry().seal();
    shutdown_begun_.store(true, std::memory_order_release);
    // Readiness goes first, so load balancers stop sending before the listener closes.
    if (readiness_ != nullptr) {
        log_.info("server readiness lost", {{"bind-address", readiness_->bind_text()}});
        readiness_->stop();
    }
    if (metrics_http_ != nullptr) metrics_http_->stop();
    // Every worker closes its listener and cancels its Visitors still in intake; routed ones
    // keep running for now.
    for (size_t i = 1; i < shards_.size(); ++i) {
        EdgeShard* sh = shards_[i].get();
        sh->post([sh] { sh->stop_ingress(); });
    }
    shards_[0]->stop_ingress();
}

void EdgeServer::cut_relays() noexcept {
    for (size_t i = 1; i < shards_.size(); ++i) {
        EdgeShard* sh = shards_[i].get();
        sh->post([sh] { sh->cut(); });
    }
    shards_[0]->cut();
}

bool EdgeServer::ingress_drained() const noexcept {
    for (const auto& sh : shards_)
        if (!sh->drained()) return false;
    return readiness_ == nullptr;
}

uint64_t EdgeServer::tunnel_connections() const noexcept {
    return tunnel_ != nullptr ? tunnel_->registry().total() : 0;
}

void EdgeServer::close_tunnel_connections() noexcept {
    if (tunnel_ == nullptr) return;
    for (size_t i = 1; i < shards_.size(); ++i) {
        EdgeShard* sh = shards_[i].get();
        sh->post([sh] {
            if (TunnelFront* f = sh->tunnel_front()) f->close_all();
        });
    }
    if (TunnelFront* f = shards_[0]->tunnel_front()) f->close_all();
}

void EdgeServer::watch_tunnel_liveness(TunnelHub& hub) {
    // On the member's own worker (where it was found unresponsive): its front re-checks it.
    hub.registry().set_on_unresponsive([this](TunnelMember& m) {
        if (m.shard >= shards_.size()) return;
        if (TunnelFront* f = shards_[m.shard]->tunnel_front()) f->watch_liveness();
    });
}

void EdgeServer::close_revoked(std::vector<std::shared_ptr<TunnelMember>> revoked) noexcept {
    std::vector<std::vector<std::shared_ptr<TunnelMember>>> by_shard(shards_.size());
    for (auto& m : revoked) {
        if (m->shard < by_shard.size()) by_shard[m->shard].push_back(std::move(m));
    }
    for (size_t i = 0; i < shards_.size(); ++i) {
        if (by_shard[i].empty()) continue;
        EdgeShard* sh = shards_[i].get();
        auto close = [sh, list = std::move(by_shard[i])]() mutable {
            if (TunnelFront* f = sh->tunnel_front()) f->close_revoked(std::move(list));
        };
        if (i == 0) {
            close();
        } else {
            sh->post(std::move(close));
        }
    }
}

Result<void> EdgeServer::resolve_upstreams() {
    auto r = net::Resolver::create(*worker_);
    if (!r) return Error::msg("resolver: " + r.error().message);
    resolver_ = std::move(*r);
    upstreams_ = std::make_unique<UpstreamResolver>(*worker_, *resolver_, log_, routes_);
    if (!upstreams_->start()) return Error::msg("event loop: no slot for the upstream resolver");
    constexpr int64_t kStartupResolveNs = 10'000'000'000;
    auto done = worker_->run_until([&] { return upstreams_->initial_done(); },
                                   core::now_ns() + kStartupResolveNs);
    if (!done) return Error::msg("event loop: " + done.error().message);
    if (!*done) return Error::msg("upstream addresses did not resolve within 10 s");
    if (!upstreams_->initial_error().empty()) return Error::msg(upstreams_->initial_error());
    return {};
}

void EdgeServer::on_cert_check() noexcept {
    cert_check_armed_ = true;
    (void)cert_watch_.check(std::time(nullptr));
    control_->arm_timer(ControlSession::kOpCertCheck,
                        core::now_ns() + CertExpiryWatch::kCheckIntervalNs);
}

Result<void> EdgeServer::create_acme() {
    const config::Acme& a = *cfg_->acme;
    auto mb = core::Mailbox::create(*worker_);
    if (!mb) return Error::msg("acme mailbox: " + mb.error().message);
    mailbox_ = std::move(*mb);
    acme_board_ = std::make_shared<acme::ChallengeBoard>();

    acme::ManagerOptions mo =
        acme::manager_options(acme::Role::kServer, cfg_->hostname, a, log_.options());

    // Both run on the manager thread: hand over to the loop and return at once.
    core::Mailbox* mailbox = mailbox_.get();
    auto on_certificate = [this, mailbox](std::shared_ptr<const acme::Certificate> c) {
        if (c == nullptr) return;
        mailbox->post([this, c] { on_acme_certificate(*c); });
    };
    auto on_fatal = [this, mailbox](const std::string&) {
        mailbox->post([this] { on_acme_fatal(); });
    };
    auto m = acme::Manager::create(std::move(mo), acme_board_, std::move(on_certificate),
                                   std::move(on_fatal));
    if (!m) return Error::msg("acme: " + m.error().message);
    acme_ = std::move(*m);
    return {};
}

void EdgeServer::on_acme_certificate(const acme::Certificate& cert) noexcept {
    // The file the manager caches it in (the expiry lines name it).
    const std::string path =
        cfg_->acme ? acme::certificate_path(cfg_->acme->state_dir, cfg_->hostname) : std::string();
    if (tunnel_ != nullptr) {
        if (auto r = tunnel_->set_certificate(path, cert.cert_pem, cert.key_pem, cert.not_after);
            !r) {
            log_.error("server certificate load failed", {{"server-hostname", cfg_->hostname}},
                       r.error().message);
            return;
        }
        // From here on, every worker's Tunnel handshakes present it.
        log_.debug("server acme certificate installed", {{"server-hostname", cfg_->hostname}});
    }
    cert_watch_.replace(path, cert.not_after, CertExpiryWatch::Source::kAcme);
    if (!cert_check_armed_ && running_) on_cert_check();
}

void EdgeServer::on_acme_fatal() noexcept {
    // The manager logged the ERROR (spec 6.4: fast shutdown, exit 1).
    exit_code_ = 1;
    shutdown_->begin(OrderlyShutdown::Mode::kFast);
}

std::string EdgeServer::status_text() const {
    std::string s = "serving: public " + (shutdown_begun() ? std::string("closed") : public_text_);
    if (reload_ != nullptr && reload_->generation() > 1)
        s += "; config generation " + std::to_string(reload_->generation());
    return s;
}

void EdgeServer::start_reload() noexcept {
    config::LoadOptions options = options_;
    auto check = [options]() -> sys::Reloader::Prepared {
        auto c = preflight::check_server(options);
        if (!c.ok())
            return {nullptr, config::format_report(config::Role::kServer, options.path, c.report)};
        return {std::make_shared<preflight::ServerStartup>(std::move(*c.startup)), {}};
    };
    auto apply = [this](std::shared_ptr<void> snap, sys::Reloader::Done done) {
        apply_reload(std::static_pointer_cast<preflight::ServerStartup>(std::move(snap)),
                     std::move(done));
    };
    auto r = sys::RoleReload::start(*worker_, log_, "server", cfg_->config_path, std::move(check),
                                    std::move(apply), [this] { return status_text(); });
    if (!r) {
        log_.warn("server reload unavailable", {}, r.error().message);
        return;
    }
    reload_ = std::move(*r);
}

void EdgeServer::apply_reload(std::shared_ptr<preflight::ServerStartup> snap,
                              sys::Reloader::Done done) noexcept {
    if (shutting_down()) return done(Error::msg("the daemon is shutting down"));
    // Replaced resolvers quiesced long ago (a reload check runs on another thread first).
    retired_upstreams_.clear();
    auto p = std::make_unique<PendingReload>();
    auto next = std::make_shared<config::ServerConfig>(std::move(snap->config));
    p->notes = keep_restart_only(*cfg_, *next, tunnel_ != nullptr);
    for (const std::string& n : p->notes) log_.warn("server reload needs a restart", {}, n);
    p->tunnel_cert = std::move(snap->tunnel_cert);
    p->routes = RouteTable::build(*next);
    p->cfg = std::move(next);
    p->done = std::move(done);
    // Every upstream name is looked up again; one that fails keeps the addresses it had.
    p->upstreams =
        std::make_unique<UpstreamResolver>(*worker_, *resolver_, log_, p->routes, routes_);
    if (!p->upstreams->start()) {
        auto d = std::move(p->done);
        return d(Error::msg("event loop: no slot for the upstream resolver"));
    }
    pending_reload_ = std::move(p);
    if (pending_reload_->upstreams->initial_done()) return finish_reload();
    pending_reload_->upstreams->on_initial_done([this] { finish_reload(); });
    reload_deadline_ =
        control_->arm_timer(ControlSession::kOpReloadDeadline, core::now_ns() + kReloadResolveNs);
    reload_deadline_armed_ = true;
}

void EdgeServer::on_reload_deadline() noexcept {
    reload_deadline_armed_ = false;
    if (pending_reload_ != nullptr)
        abandon_reload("upstream addresses did not resolve within 10 s; nothing was changed");
}

void EdgeServer::abandon_reload(std::string why) noexcept {
    if (reload_deadline_armed_) {
        worker_->cancel_timer(reload_deadline_);
        reload_deadline_armed_ = false;
    }
    std::unique_ptr<PendingReload> p = std::move(pending_reload_);
    p->upstreams->stop();
    retired_upstreams_.push_back(std::move(p->upstreams));
    if (p->done) p->done(Error::msg(std::move(why)));
}

void EdgeServer::finish_reload() noexcept {
    if (pending_reload_ == nullptr) return;
    if (!pending_reload_->upstreams->initial_error().empty())
        return abandon_reload(pending_reload_->upstreams->initial_error());
    if (reload_deadline_armed_) {
        worker_->cancel_timer(reload_deadline_);
        reload_deadline_armed_ = false;
    }
    std::unique_ptr<PendingReload> p = std::move(pending_reload_);
    const config::ServerConfig& next = *p->cfg;
    auto fail = [&](std::string why) {
        p->upstreams->stop();
        retired_upstreams_.push_back(std::move(p->upstreams));
        p->done(Error::msg(std::move(why)));
    };

    // First what can fail, so a failure leaves the running configuration whole.
    bool new_front = false;
    const bool manual_cert = acme_ == nullptr && p->tunnel_cert.has_value();
    if (!next.tunnels.empty() && tunnel_ == nullptr) {
        // The first [tunnel]: the tunnel listener group starts now, one member per worker as at
        // startup. Worker 0 opens its member here; the others open theirs on their own loops
        // (posted after the hub is published; packets steered to a member wait in its socket
        // until it opens).
        if (acme_ == nullptr && !manual_cert)
            return fail("no checked Server certificate for the tunnel");
        auto t =
            TunnelHub::create(next, manual_cert ? &*p->tunnel_cert : nullptr, log_, admission_log_);
        if (!t) return fail(t.error().message);
        auto g = tunnel_group(next, core::UniqueFd(), static_cast<uint32_t>(shards_.size()), log_);
        if (!g) return fail(g.error().message);
        const auto members = static_cast<uint32_t>(g->size());
        std::string text = local_text((*g)[0].get());
        // Made whole before the other workers can see it (tunnels() reads hub_).
        (*t)->set_metrics(&metrics_);
        watch_tunnel_liveness(**t);
        if (auto r = shards_[0]->open_tunnel(**t, std::move((*g)[0]), members); !r)
            return fail(r.error().message);
        tunnel_ = std::move(*t);
        hub_.store(tunnel_.get(), std::memory_order_release);
        for (uint32_t i = 1; i < members && i < shards_.size(); ++i) {
            EdgeShard* sh = shards_[i].get();
            TunnelHub* hub = tunnel_.get();
            // Dropped with its socket when the worker stops first.
            auto fd = std::make_shared<core::UniqueFd>(std::move((*g)[i]));
            sh->post([this, sh, hub, fd, members] {
                if (auto r = sh->open_tunnel(*hub, std::move(*fd), members); !r)
                    log_.error("server tunnel listener failed", {{"worker", uint64_t{sh->index()}}},
                               r.error().message);
            });
        }
        tunnel_text_ = std::move(text);
        tunnel_workers_ = members;
        new_front = true;
        log_.info("server tunnel listener ready",
                  {{"bind-address", tunnel_text_}, {"workers", uint64_t{tunnel_workers_}}});
        if (acme_ != nullptr) {
            if (auto cached = acme_->cached()) on_acme_certificate(*cached);
        }
    } else if (tunnel_ != nullptr && manual_cert) {
        // Manual cert-dir: the certificate as the check loaded it serves new handshakes;
        // established Tunnel connections keep theirs.
        const trust::ServerCertMaterial& c = *p->tunnel_cert;
        if (auto r =
                tunnel_->set_certificate(c.cert_path, c.cert_pem, c.key_pem, c.validity.not_after);
            !r)
            return fail(r.error().message);
    }
    if (tunnel_ != nullptr && manual_cert) {
        cert_watch_.replace(tunnel_->cert_path(), tunnel_->cert_not_after(),
                            CertExpiryWatch::Source::kManual);
        if (!cert_check_armed_) on_cert_check();
    }

    // Then the swap: new Visitors see the new routes, Tunnels and pins together; Visitors in
    // flight keep the table and configuration they started with.
    metrics_.add_labels(next);
    routes_ = p->routes;
    if (upstreams_ != nullptr) {
        upstreams_->stop();
        retired_upstreams_.push_back(std::move(upstreams_));
    }
    upstreams_ = std::move(p->upstreams);
    size_t revoked = 0;
    if (tunnel_ != nullptr && !new_front) {
        auto gone = tunnel_->registry().replace_table(AuthTable::build(next));
        revoked = gone.size();
        close_revoked(std::move(gone));
    }
    sys::configure_logging(next.log_level, next.log_format);
    shutdown_->set_graceful_ms(next.graceful_shutdown_ms);
    cfg_ = p->cfg;
    // Every worker's new Visitors start under the new snapshot.
    ShardSnapshot snap = make_snapshot();
    for (size_t i = 1; i < shards_.size(); ++i) {
        EdgeShard* sh = shards_[i].get();
        sh->post([sh, snap] { sh->set_snapshot(snap); });
    }
    shards_[0]->set_snapshot(std::move(snap));
    log_.info("server configuration applied",
              {{"routes", static_cast<uint64_t>(next.routes.size())},
               {"tunnels", static_cast<uint64_t>(next.tunnels.size())},
               {"revoked-connections", static_cast<uint64_t>(revoked)}});
    std::string notes;
    for (const std::string& n : p->notes) notes += n + "\n";
    p->done(std::move(notes));
}

int run_server(const config::LoadOptions& options, preflight::ServerStartup startup) noexcept {
    obs::Logger& log = obs::process_logger();
    auto cfg = std::make_shared<const config::ServerConfig>(std::move(startup.config));
    const trust::ServerCertMaterial* tunnel_cert =
        startup.tunnel_cert ? &*startup.tunnel_cert : nullptr;
    auto s = EdgeServer::create(cfg, tunnel_cert, log, options);
    if (!s) {
        log.error("server startup failed", {}, s.error().message);
        return 1;
    }
    return (*s)->run();
}

}  // namespace runewarp::server
