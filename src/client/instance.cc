// ClientInstance: the workers, the stream-handler budget, signals, reload, ACME and shutdown.
#include "client/instance.hh"

#include <signal.h>

#include <algorithm>

#include "client/client.hh"
#include "client/reload_plan.hh"
#include "core/clock.hh"
#include "preflight/preflight.hh"
#include "sys/systemd.hh"
#include "trust/cert_expiry.hh"
#include "trust/x509_util.hh"

namespace runewarp::client {

std::string short_cause(const std::string& s) {
    auto pos = s.find(": ");
    return pos == std::string::npos ? s : s.substr(0, pos);
}

// Calls ClientInstance::check_terminate_expiry once a day on the loop.
class DailyCheck final : public core::Session {
public:
    static constexpr int64_t kIntervalNs = 86'400'000'000'000;
    DailyCheck(core::Worker& w, ClientInstance& inst) noexcept : core::Session(w), inst_(inst) {}
    bool start() noexcept {
        if (!open()) return false;
        arm_timer(kOpTimer, core::now_ns() + kIntervalNs);
        return true;
    }
    void stop() noexcept { abort(0); }

private:
    static constexpr uint8_t kOpTimer = 1;
    void on_event(const core::Completion& c) noexcept override {
        if (!(c.flags & core::kCompletionTimer) || aborting()) return;
        inst_.check_terminate_expiry();
        arm_timer(kOpTimer, core::now_ns() + kIntervalNs);
    }
    void on_quiesced() noexcept override {}
    ClientInstance& inst_;
};

ClientInstance::ClientInstance(config::LoadOptions options, ConfigRef cfg, obs::Logger& log)
    : options_(std::move(options)),
      cfg_(std::move(cfg)),
      log_(log),
      max_streams_(cfg_->max_streams) {}

ClientInstance::~ClientInstance() = default;

void ClientInstance::fatal(const std::string&) noexcept {
    exit_code_ = 1;
    begin_shutdown();
}

void ClientInstance::post_main(std::function<void()> fn) {
    if (!shards_.empty()) shards_[0]->post(std::move(fn));
}

bool ClientInstance::take_stream_handler() noexcept {
    uint32_t n = streams_active_.load(std::memory_order_relaxed);
    do {
        if (n >= max_streams_) return false;
    } while (!streams_active_.compare_exchange_weak(n, n + 1, std::memory_order_relaxed));
    return true;
}

void ClientInstance::note_handlers_saturated() noexcept {
    saturation_pending_.store(true, std::memory_order_relaxed);
    if (auto d = saturation_limiter_.on_saturated(); d.log) {
        log_.warn("client stream handlers saturated",
                  {{"active-work", uint64_t{streams_active_.load(std::memory_order_relaxed)}},
                   {"limit", uint64_t{max_streams_}}});
    }
}

void ClientInstance::note_recovered() noexcept {
    if (saturation_limiter_.on_success()) {
        saturation_pending_.store(false, std::memory_order_relaxed);
        log_.info("client stream handlers recovered");
    }
}

void ClientInstance::address_connected(const std::string& address) noexcept {
    {
        std::lock_guard lock(connected_mu_);
        ++connected_[address];
    }
    if (!ready_logged_.exchange(true)) log_.info("client ready", {{"server-address", address}});
    post_main([this] { update_status(); });
}

void ClientInstance::address_disconnected(const std::string& address) noexcept {
    {
        std::lock_guard lock(connected_mu_);
        auto it = connected_.find(address);
        if (it != connected_.end() && it->second > 0) --it->second;
    }
    post_main([this] { update_status(); });
}

std::string ClientInstance::status_text() const {
    size_t connected = 0;
    {
        std::lock_guard lock(connected_mu_);
        for (const config::HostPort& hp : cfg_->server_addresses) {
            auto it = connected_.find(hp.text());
            connected += it != connected_.end() && it->second > 0 ? 1 : 0;
        }
    }
    return "connected " + std::to_string(connected) + "/" +
           std::to_string(cfg_->server_addresses.size()) + " server addresses";
}

void ClientInstance::update_status() noexcept {
    if (shutting_down_) return;
    sys::notify_status(status_text());
}

ClientSnapshot ClientInstance::make_snapshot() {
    return ClientSnapshot{cfg_, terminate_certs_, ClientLabelCounts::build(metrics_)};
}

void ClientInstance::for_each_shard(const std::function<void(ClientShard&)>& fn) {
    if (shards_.empty()) return;
    fn(*shards_[0]);
    for (size_t i = 1; i < shards_.size(); ++i) {
        ClientShard* sh = shards_[i].get();
        sh->post([sh, fn] { fn(*sh); });
    }
}

void ClientInstance::publish_certs() noexcept {
    for_each_shard([certs = terminate_certs_](ClientShard& sh) { sh.set_certs(certs); });
}

void ClientInstance::on_signal(const signalfd_siginfo& info) noexcept {
    switch (info.ssi_signo) {
        case SIGTERM:
        case SIGINT:
        case SIGQUIT:
            begin_shutdown();
            return;
        case SIGHUP:
            log_.info("client reload requested", {{"trigger", "SIGHUP"}});
            if (reload_ != nullptr) reload_->on_sighup();
            return;
        default:
            return;
    }
}

void ClientInstance::begin_shutdown() noexcept {
    if (shutting_down_) return;
    shutting_down_ = true;
    // No reload starts from here on; requesters still waiting get "shutting down".
    if (reload_ != nullptr) reload_->stop();
    log_.info("client instance graceful shutdown started");
    sys::notify_stopping();
    // Every worker stops dialling and closes its connections; workers 1..N-1 then let the
    // CONNECTION_CLOSE frames leave and end their threads.
    for_each_shard([](ClientShard& sh) { sh.stop(); });
    if (metrics_http_ != nullptr) metrics_http_->stop();
    if (watchdog_ != nullptr) watchdog_->stop();
    if (expiry_check_ != nullptr) expiry_check_->stop();
    // What the managers post from now on is dropped; they are joined after the loop ended.
    if (mailbox_ != nullptr) mailbox_->shutdown();
    worker_->stop();
}

sys::Reloader::Prepared ClientInstance::check_reload(const config::LoadOptions& options) {
    auto checked = preflight::check_client(options);
    if (!checked.ok()) {
        std::string problems =
            config::format_report(config::Role::kClient, options.path, checked.report);
        while (!problems.empty() && problems.back() == '\n') problems.pop_back();
        return {nullptr, std::move(problems)};
    }
    auto snap = std::make_shared<ClientReloadSnapshot>();
    snap->config = std::move(checked.startup->config);
    // Loaded here, off the loop: a certificate that does not load fails the reload as a whole.
    if (!checked.startup->terminate_certs.empty()) {
        auto certs = TerminateCerts::build(checked.startup->terminate_certs);
        if (!certs) return {nullptr, "terminate certificates: " + certs.error().message};
        snap->certs = std::move(*certs);
    }
    return {std::move(snap), {}};
}

void ClientInstance::apply_reload(std::shared_ptr<void> snapshot,
                                  sys::Reloader::Done done) noexcept {
    if (shutting_down_) return done(Error::msg("the client is shutting down"));
    auto* snap = static_cast<ClientReloadSnapshot*>(snapshot.get());
    auto next = std::make_shared<config::ClientConfig>(std::move(snap->config));
    const RestartOnly restart_only = keep_restart_only(*cfg_, *next, acme_hostnames_);

    // What can fail comes first, so a failure leaves the running configuration whole.
    std::unique_ptr<TerminateTls> new_tls;
    if (terminate_tls_ == nullptr && !preflight::terminating_hostnames(*next).empty()) {
        auto t = TerminateTls::create();
        if (!t) return done(Error::msg("terminate TLS: " + t.error().message));
        new_tls = std::move(*t);
    }
    const AddressDiff diff =
        diff_server_addresses(shards_[0]->address_texts(), next->server_addresses);
    // The new configuration's labels first: the snapshot's counters map names them.
    metrics_.add_labels(*next);
    const TerminateCertsRef certs =
        restart_only.keep_certificate_source ? terminate_certs_ : snap->certs;
    ClientSnapshot next_snap{next, certs, ClientLabelCounts::build(metrics_)};
    // Worker 0 applies first: a failure there leaves the running configuration whole.
    if (auto r = shards_[0]->apply(next_snap, diff); !r) return done(std::move(r).error());

    // Commit: restart-only settings first (they kept their running value).
    for (const std::string& n : restart_only.notes)
        log_.warn("client config change needs a restart", {}, n);
    if (new_tls != nullptr) {
        terminate_tls_ = std::move(new_tls);
        terminate_tls_ptr_.store(terminate_tls_.get(), std::memory_order_release);
    }
    terminate_certs_ = certs;
    cfg_ = std::move(next);
    sys::configure_logging(cfg_->log_level, cfg_->log_format);
    for (size_t i = 1; i < shards_.size(); ++i) {
        ClientShard* sh = shards_[i].get();
        sh->post([this, sh, next_snap, diff] {
            if (auto r = sh->apply(next_snap, diff); !r)
                log_.error("client reload incomplete", {{"worker", uint64_t{sh->index()}}},
                           r.error().message);
        });
    }

    if (terminate_certs_ != nullptr) {
        check_terminate_expiry();
        if (expiry_check_ == nullptr) {
            expiry_check_ = std::make_unique<DailyCheck>(*worker_, *this);
            if (!expiry_check_->start()) expiry_check_.reset();
        }
    }
    log_.info("client configuration applied",
              {{"services", cfg_->services.size()},
               {"server-addresses", cfg_->server_addresses.size()},
               {"terminate-certificates", terminate_certs_ ? terminate_certs_->size() : 0}});
    update_status();
    done(join_notes(restart_only.notes));
}

void ClientInstance::check_terminate_expiry() noexcept {
    if (!terminate_certs_) return;
    const std::time_t now = std::time(nullptr);
    constexpr const char* kManualHint =
        "renew it with `runewarp client public-cert renew`, then send SIGHUP to the client";
    constexpr const char* kAcmeHint =
        "the client renews it through ACME once two thirds of its validity passed: see the "
        "`client acme` lines for why it has not";
    terminate_certs_->for_each([&](const std::string& host, const TerminateCredential& c) {
        const char* kHint = c.acme() ? kAcmeHint : kManualHint;
        const trust::ExpiryStatus st = trust::expiry_level(now, c.not_after());
        const std::string expires = trust::rfc3339_utc(c.not_after());
        if (st.level == trust::ExpiryLevel::kExpired) {
            log_.error(
                "client certificate expired",
                {{"public-hostname", host}, {"path", c.cert_path()}, {"expires-at", expires}},
                std::string("Visitors refuse it; ") + kHint);
        } else if (st.level == trust::ExpiryLevel::kExpiring) {
            log_.warn("client certificate expiring",
                      {{"public-hostname", host},
                       {"path", c.cert_path()},
                       {"expires-at", expires},
                       {"days-left", st.days_left}},
                      kHint);
        }
    });
}

int ClientInstance::run(const std::vector<trust::PublicCertMaterial>& terminate_certs) noexcept {
    if (!preflight::terminating_hostnames(*cfg_).empty()) {
        auto t = TerminateTls::create();
        if (!t) {
            log_.error("client startup failed", {}, t.error().message);
            return 1;
        }
        terminate_tls_ = std::move(*t);
        terminate_tls_ptr_.store(terminate_tls_.get(), std::memory_order_release);
        auto snap = TerminateCerts::build(terminate_certs);
        if (!snap) {
            log_.error("client startup failed", {}, snap.error().message);
            return 1;
        }
        terminate_certs_ = std::move(*snap);
    }
    core::WorkerOptions wo;
    wo.loop.choice = sys::backend_choice(cfg_->event_backend);
    // Every stream handler is a session; connections, timers and listeners take the rest.
    wo.max_slots = std::max<uint32_t>(wo.max_slots, cfg_->max_streams + 4096);
    auto w = core::Worker::create(wo);
    if (!w) {
        log_.error("client startup failed", {}, w.error().message);
        return 1;
    }
    worker_ = std::move(*w);
    if (!worker_->fallback_reason().empty()) {
        log_.warn("client event loop fallback", {{"backend", "epoll"}}, worker_->fallback_reason());
    }
    if (auto r = worker_->watch_signals({SIGTERM, SIGINT, SIGQUIT, SIGHUP}, *this); !r) {
        log_.error("client startup failed", {}, r.error().message);
        return 1;
    }
    metrics_.add_labels(*cfg_);
    started_unix_ = static_cast<int64_t>(std::time(nullptr));
    if (!start_metrics()) return 1;
    watchdog_ = std::make_unique<sys::Watchdog>(*worker_);
    watchdog_->start();
    // Before the workers: the managers' cached certificates go into their first snapshot.
    if (cfg_->acme && !create_acme_managers()) return 1;
    {
        // The check runs on the reload thread with its own copy of the load options.
        auto rr = sys::RoleReload::start(
            *worker_, log_, "client", cfg_->config_path,
            [options = options_] { return check_reload(options); },
            [this](std::shared_ptr<void> snap, sys::Reloader::Done done) {
                apply_reload(std::move(snap), std::move(done));
            },
            [this] { return status_text(); });
        if (!rr) {
            log_.error("client startup failed", {}, rr.error().message);
            return 1;
        }
        reload_ = std::move(*rr);
    }
    if (terminate_certs_) {
        check_terminate_expiry();
        expiry_check_ = std::make_unique<DailyCheck>(*worker_, *this);
        if (!expiry_check_->start()) expiry_check_.reset();
    }
    if (!start_shards(wo)) return 1;
    sys::notify_ready("connected 0/" + std::to_string(cfg_->server_addresses.size()) +
                      " server addresses");
    for_each_shard([](ClientShard& sh) { sh.start_addresses(); });
    // Startup succeeded: issuance and renewal run from here on, off the loop.
    for (auto& m : acme_managers_) m->start();
    while (!shutting_down_) {
        auto rr = worker_->run_once();
        if (!rr) {
            log_.error("client event loop failed", {}, rr.error().message);
            exit_code_ = 1;
            begin_shutdown();
        }
    }
    // Let CONNECTION_CLOSE frames leave (100 ms; the other workers do the same on theirs),
    // then exit.
    (void)worker_->run_until([] { return false; }, core::now_ns() + kCloseFlushNs);
    for (auto& sh : shards_) sh->join();
    stop_acme_managers();
    return exit_code_;
}

bool ClientInstance::start_shards(const core::WorkerOptions& wo) noexcept {
    const uint32_t n = config::resolve_workers(cfg_->workers);
    const ClientSnapshot snap = make_snapshot();
    shards_.push_back(std::make_unique<ClientShard>(*this, 0));
    if (auto r = shards_[0]->setup_primary(*worker_, snap); !r) {
        log_.error("client startup failed", {}, r.error().message);
        return false;
    }
    for (uint32_t i = 1; i < n; ++i) {
        auto sh = std::make_unique<ClientShard>(*this, i);
        if (auto r = sh->start_thread(wo, snap); !r) {
            log_.error("client startup failed", {{"worker", uint64_t{i}}}, r.error().message);
            for (size_t k = 1; k < shards_.size(); ++k) {
                ClientShard* other = shards_[k].get();
                other->post([other] { other->stop(); });
                other->join();
            }
            return false;
        }
        shards_.push_back(std::move(sh));
    }
    if (n > 1) log_.info("client workers started", {{"workers", uint64_t{n}}});
    return true;
}

bool ClientInstance::create_acme_managers() noexcept {
    const config::Acme& a = *cfg_->acme;
    if (auto r = preflight::prepare_acme_state_dir(a); !r) {
        log_.error("client startup failed", {}, r.error().message);
        return false;
    }
    auto mb = core::Mailbox::create(*worker_);
    if (!mb) {
        log_.error("client startup failed", {}, mb.error().message);
        return false;
    }
    mailbox_ = std::move(*mb);
    acme_board_ = std::make_shared<acme::ChallengeBoard>();
    // The managers log on their own threads through their own loggers, as this one does.
    core::Mailbox* mailbox = mailbox_.get();
    acme_hostnames_ = preflight::terminating_hostnames(*cfg_);
    for (const std::string& h : acme_hostnames_) {
        acme::ManagerOptions mo = acme::manager_options(acme::Role::kClient, h, a, log_.options());
        // Both run on the manager's thread: hand over to the loop.
        auto on_certificate = [this, mailbox, h](std::shared_ptr<const acme::Certificate> c) {
            mailbox->post([this, h, c = std::move(c)] { install_acme_certificate(h, c); });
        };
        auto on_fatal = [this, mailbox](const std::string& why) {
            mailbox->post([this, why] { fatal(why); });
        };
        auto m = acme::Manager::create(std::move(mo), acme_board_, std::move(on_certificate),
                                       std::move(on_fatal));
        if (!m) {
            log_.error("client startup failed", {{"public-hostname", h}}, m.error().message);
            return false;
        }
        // Startup does not wait for issuance: a usable cached certificate serves at once,
        // a hostname without one fails closed until its manager delivers.
        if (auto cached = (*m)->cached()) install_acme_certificate(h, cached);
        acme_managers_.push_back(std::move(*m));
    }
    return true;
}

void ClientInstance::install_acme_certificate(
    const std::string& host, const std::shared_ptr<const acme::Certificate>& cert) noexcept {
    if (shutting_down_ || cert == nullptr || !cfg_->acme) return;
    auto c = TerminateCredential::from_acme(cert->cert_pem, cert->key_pem, cert->not_after,
                                            cfg_->acme->state_dir);
    if (!c) {
        // The previous certificate (if any) keeps serving; the manager renews on schedule.
        log_.error("client acme certificate unusable", {{"public-hostname", host}},
                   c.error().message);
        return;
    }
    terminate_certs_ = TerminateCerts::with(
        terminate_certs_, host, std::shared_ptr<const TerminateCredential>(std::move(*c)));
    publish_certs();
    log_.debug("client acme certificate installed",
               {{"public-hostname", host}, {"expires-at", trust::rfc3339_utc(cert->not_after)}});
}

void ClientInstance::stop_acme_managers() noexcept {
    // Each stop() aborts a request in flight and joins the thread.
    for (auto& m : acme_managers_) m->stop();
}

}  // namespace runewarp::client
