// ClientInstance: the Worker, resolver, address workers, stream slots, signals and shutdown.
#include "client/instance.hh"

#include <signal.h>

#include "client/address_worker.hh"
#include "client/client.hh"
#include "client/stream_session.hh"
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

ClientInstance::ClientInstance(const config::ClientConfig& cfg, obs::Logger& log)
    : cfg_(cfg),
      log_(log),
      streams_(std::make_unique<core::Slab<StreamSession>>(kMaxStreamHandlers)) {}

ClientInstance::~ClientInstance() = default;

Result<std::unique_ptr<quic::ClientTls>> ClientInstance::load_tls(const std::string& server_name) {
    // Reloaded on every attempt by the rules `config check` and startup apply.
    auto m = preflight::load_client_material(cfg_);
    if (!m) return std::move(m).error();
    quic::ClientTlsConfig tc;
    tc.server_name = server_name;
    tc.cert_pem = std::move(m->identity.cert_pem);
    tc.key_pem = std::move(m->identity.key_pem);
    if (m->server_trust == config::Trust::kCaFile) {
        tc.trust = quic::ServerTrust::ca_file;
        tc.ca_pem = std::move(m->server_ca_pem);
    } else {
        tc.trust = quic::ServerTrust::system;
    }
    auto tls = quic::ClientTls::create(std::move(tc));
    if (!tls) return Error::msg("server trust: " + tls.error().message);
    return std::move(*tls);
}

void ClientInstance::fatal(const std::string&) noexcept {
    exit_code_ = 1;
    begin_shutdown();
}

void ClientInstance::on_connected(AddressWorker& w) noexcept {
    ++connected_count_;
    if (!ready_logged_) {
        ready_logged_ = true;
        log_.info("client ready", {{"server-address", w.address_text()}});
    }
    update_status();
}

void ClientInstance::on_disconnected() noexcept {
    if (connected_count_ > 0) --connected_count_;
    update_status();
}

void ClientInstance::update_status() noexcept {
    if (shutting_down_) return;
    std::string s = "connected " + std::to_string(connected_count_) + "/" +
                    std::to_string(workers_.size()) + " server addresses";
    sys::notify_status(s);
}

void ClientInstance::accept_stream(quic::Stream& s) noexcept {
    if (shutting_down_ || streams_->full()) {
        s.reset(quic::kStreamErrorCode);
        if (!shutting_down_) {
            if (auto d = saturation_limiter_.on_saturated(); d.log) {
                log_.warn("client stream handlers saturated",
                          {{"active-work", streams_->size()}, {"limit", kMaxStreamHandlers}});
            }
        }
        return;
    }
    auto slot = streams_->alloc(*worker_, *this);
    StreamSession* ss = slot ? streams_->get(*slot) : nullptr;
    if (ss == nullptr || !ss->open()) {
        if (slot) streams_->free(*slot);
        s.reset(quic::kStreamErrorCode);
        return;
    }
    if (saturation_limiter_.on_success()) log_.info("client stream handlers recovered");
    ss->start(s, *slot);
}

void ClientInstance::stream_done(core::SlotId slot) noexcept {
    streams_->free(slot);
}

void ClientInstance::on_signal(const signalfd_siginfo& info) noexcept {
    switch (info.ssi_signo) {
        case SIGTERM:
        case SIGINT:
        case SIGQUIT:
            begin_shutdown();
            return;
        case SIGHUP:
            // Configuration reload is not part of this build; certificates are re-read.
            reload_terminate_certs();
            return;
        default:
            return;
    }
}

void ClientInstance::begin_shutdown() noexcept {
    if (shutting_down_) return;
    shutting_down_ = true;
    log_.info("client instance graceful shutdown started");
    sys::notify_stopping();
    for (auto& w : workers_) w->stop();
    if (resolver_ != nullptr) resolver_->shutdown();
    if (watchdog_ != nullptr) watchdog_->stop();
    if (expiry_check_ != nullptr) expiry_check_->stop();
    // What the managers post from now on is dropped; they are joined after the loop ended.
    if (mailbox_ != nullptr) mailbox_->shutdown();
    worker_->stop();
}

void ClientInstance::reload_terminate_certs() noexcept {
    if (acme_board_ != nullptr) {
        // [client.acme] excludes public-cert-dir: the managers renew the certificates.
        log_.info("client reload requested", {},
                  "ACME certificates are kept: the client renews them itself");
        check_terminate_expiry();
        return;
    }
    if (terminate_tls_ == nullptr || cfg_.public_cert_dir.empty()) {
        log_.info("client reload requested", {}, "nothing to re-read: no terminating service");
        return;
    }
    TerminateCertsRef snap = terminate_certs_;
    unsigned loaded = 0, dropped = 0, failed = 0;
    for (const std::string& h : preflight::terminating_hostnames(cfg_)) {
        if (trust::public_cert_absent(cfg_.public_cert_dir, h)) {
            if (snap->find(h) != nullptr) {
                snap = TerminateCerts::with(snap, h, nullptr);
                ++dropped;
                log_.warn("client terminate certificate removed", {{"public-hostname", h}},
                          "new streams for this hostname fail until a certificate is installed");
            }
            continue;
        }
        auto m = trust::load_public_cert(cfg_.public_cert_dir, h);
        Result<std::unique_ptr<TerminateCredential>> c =
            m ? TerminateCredential::load(*m)
              : Result<std::unique_ptr<TerminateCredential>>(m.error());
        if (!c) {
            ++failed;
            log_.error("client terminate certificate reload failed", {{"public-hostname", h}},
                       c.error().message);
            continue;
        }
        snap = TerminateCerts::with(snap, h,
                                    std::shared_ptr<const TerminateCredential>(std::move(*c)));
        ++loaded;
    }
    terminate_certs_ = std::move(snap);
    log_.info("client terminate certificates reloaded",
              {{"loaded", loaded}, {"removed", dropped}, {"failed", failed}});
    check_terminate_expiry();
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
    if (!preflight::terminating_hostnames(cfg_).empty()) {
        auto t = TerminateTls::create();
        if (!t) {
            log_.error("client startup failed", {}, t.error().message);
            return 1;
        }
        terminate_tls_ = std::move(*t);
        auto snap = TerminateCerts::build(terminate_certs);
        if (!snap) {
            log_.error("client startup failed", {}, snap.error().message);
            return 1;
        }
        terminate_certs_ = std::move(*snap);
    }
    core::WorkerOptions wo;
    wo.loop.choice = sys::backend_choice(cfg_.event_backend);
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
    auto r = net::Resolver::create(*worker_);
    if (!r) {
        log_.error("client startup failed", {}, r.error().message);
        return 1;
    }
    resolver_ = std::move(*r);
    for (const config::HostPort& hp : cfg_.server_addresses) {
        auto aw = std::make_unique<AddressWorker>(*worker_, *this, hp);
        if (!aw->open()) {
            log_.error("client startup failed", {}, "no handler slot");
            return 1;
        }
        workers_.push_back(std::move(aw));
    }
    watchdog_ = std::make_unique<sys::Watchdog>(*worker_);
    watchdog_->start();
    if (cfg_.acme && !create_acme_managers()) return 1;
    if (terminate_certs_) {
        check_terminate_expiry();
        expiry_check_ = std::make_unique<DailyCheck>(*worker_, *this);
        if (!expiry_check_->start()) expiry_check_.reset();
    }
    sys::notify_ready("connected 0/" + std::to_string(workers_.size()) + " server addresses");
    for (auto& aw : workers_) aw->start();
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
    // Let CONNECTION_CLOSE frames leave (100 ms), then exit.
    (void)worker_->run_until([] { return false; }, core::now_ns() + kCloseFlushNs);
    stop_acme_managers();
    return exit_code_;
}

bool ClientInstance::create_acme_managers() noexcept {
    const config::Acme& a = *cfg_.acme;
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
    for (const std::string& h : preflight::terminating_hostnames(cfg_)) {
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
    if (shutting_down_ || cert == nullptr || !cfg_.acme) return;
    auto c = TerminateCredential::from_acme(cert->cert_pem, cert->key_pem, cert->not_after,
                                            cfg_.acme->state_dir);
    if (!c) {
        // The previous certificate (if any) keeps serving; the manager renews on schedule.
        log_.error("client acme certificate unusable", {{"public-hostname", host}},
                   c.error().message);
        return;
    }
    terminate_certs_ = TerminateCerts::with(
        terminate_certs_, host, std::shared_ptr<const TerminateCredential>(std::move(*c)));
    log_.debug("client acme certificate installed",
               {{"public-hostname", host}, {"expires-at", trust::rfc3339_utc(cert->not_after)}});
}

void ClientInstance::stop_acme_managers() noexcept {
    // Each stop() aborts a request in flight and joins the thread.
    for (auto& m : acme_managers_) m->stop();
}

}  // namespace runewarp::client
