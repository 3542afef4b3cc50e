// ClientInstance: the Worker, resolver, address workers, stream slots, signals and shutdown.
#include "client/instance.hh"

#include <signal.h>

#include "client/address_worker.hh"
#include "client/client.hh"
#include "client/stream_session.hh"
#include "core/clock.hh"
#include "preflight/preflight.hh"
#include "sys/systemd.hh"

namespace runewarp::client {

std::string short_cause(const std::string& s) {
    auto pos = s.find(": ");
    return pos == std::string::npos ? s : s.substr(0, pos);
}

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
    worker_->stop();
}

void ClientInstance::reload_terminate_certs() noexcept {
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
    sys::notify_ready("connected 0/" + std::to_string(workers_.size()) + " server addresses");
    for (auto& aw : workers_) aw->start();
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
    return exit_code_;
}

}  // namespace runewarp::client
