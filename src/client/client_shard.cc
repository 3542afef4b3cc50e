// ClientShard: one worker's loop, resolver, address workers and stream sessions.
#include "client/client_shard.hh"

#include <pthread.h>
#include <signal.h>

#include <algorithm>

#include "client/address_worker.hh"
#include "client/client.hh"
#include "client/instance.hh"
#include "client/stream_session.hh"
#include "core/clock.hh"
#include "preflight/preflight.hh"

namespace runewarp::client {

ClientShard::ClientShard(ClientInstance& inst, uint32_t index) noexcept
    : inst_(inst), index_(index) {}

ClientShard::~ClientShard() {
    join();
}

obs::Logger& ClientShard::log() noexcept {
    return inst_.log();
}
ClientMetrics& ClientShard::metrics() noexcept {
    return inst_.metrics();
}
const TerminateTls* ClientShard::terminate_tls() const noexcept {
    return inst_.terminate_tls();
}
const acme::ChallengeBoard* ClientShard::acme_board() const noexcept {
    return inst_.acme_board();
}

Result<void> ClientShard::setup(ClientSnapshot snap) {
    snap_ = std::move(snap);
    // Each shard may hold the whole budget (the process-wide count decides).
    streams_ = std::make_unique<core::Slab<StreamSession>>(snap_.cfg->max_streams);
    auto mb = core::Mailbox::create(*worker_);
    if (!mb) return Error::msg("worker mailbox: " + mb.error().message);
    mailbox_ = std::move(*mb);
    auto r = net::Resolver::create(*worker_);
    if (!r) return std::move(r).error();
    resolver_ = std::move(*r);
    for (const config::HostPort& hp : snap_.cfg->server_addresses) {
        auto aw = make_worker(hp);
        if (aw == nullptr) return Error::msg("no handler slot");
        workers_.push_back(std::move(aw));
    }
    return {};
}

Result<void> ClientShard::setup_primary(core::Worker& w, ClientSnapshot snap) {
    worker_ = &w;
    return setup(std::move(snap));
}

Result<void> ClientShard::start_thread(const core::WorkerOptions& wo, ClientSnapshot snap) {
    thread_ = std::thread(
        [this, wo, snap = std::move(snap)]() mutable { thread_main(wo, std::move(snap)); });
    std::unique_lock lock(start_mu_);
    start_cv_.wait(lock, [&] { return started_; });
    if (!start_error_.empty()) {
        lock.unlock();
        thread_.join();
        return Error::msg(start_error_);
    }
    return {};
}

void ClientShard::thread_main(core::WorkerOptions wo, ClientSnapshot snap) noexcept {
    // Signals are the main thread's (its signalfd); this thread never takes one.
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, nullptr);
    {
        std::string name = "rw-worker-" + std::to_string(index_);
        pthread_setname_np(pthread_self(), name.substr(0, 15).c_str());
    }
    std::string error;
    auto w = core::Worker::create(wo);
    if (!w) {
        error = "event loop: " + w.error().message;
    } else {
        own_worker_ = std::move(*w);
        worker_ = own_worker_.get();
        if (auto r = setup(std::move(snap)); !r) error = r.error().message;
    }
    {
        std::lock_guard lock(start_mu_);
        start_error_ = error;
        started_ = true;
    }
    start_cv_.notify_all();
    if (!error.empty()) {
        teardown();
        return;
    }
    while (!stop_) {
        auto r = worker_->run_once(-1);
        if (!r) {
            log().error("client event loop failed", {{"worker", uint64_t{index_}}},
                        r.error().message);
            inst_.post_main([i = &inst_] { i->fatal("event loop failed"); });
            stop();
            break;
        }
    }
    // Let CONNECTION_CLOSE frames leave, then every session goes with this thread's loop.
    mailbox_->shutdown();
    (void)worker_->run_until([] { return false; }, core::now_ns() + kCloseFlushNs);
    teardown();
}

void ClientShard::teardown() noexcept {
    // Sessions before the resolver they may cancel lookups on, all before the loop.
    streams_.reset();
    retired_.clear();
    workers_.clear();
    resolver_.reset();
}

void ClientShard::post(std::function<void()> fn) {
    if (mailbox_ != nullptr) mailbox_->post(std::move(fn));
}

void ClientShard::join() noexcept {
    if (thread_.joinable()) thread_.join();
}

std::unique_ptr<AddressWorker> ClientShard::make_worker(const config::HostPort& hp) noexcept {
    auto aw = std::make_unique<AddressWorker>(*worker_, *this, hp);
    if (!aw->open()) return nullptr;
    return aw;
}

void ClientShard::start_addresses() noexcept {
    for (auto& aw : workers_) aw->start();
}

void ClientShard::stop() noexcept {
    if (stopping_) return;
    stopping_ = true;
    for (auto& w : workers_) w->stop();
    for (auto& w : retired_) w->stop();
    if (resolver_ != nullptr) resolver_->shutdown();
    if (own_worker_ != nullptr) {
        stop_ = true;
        worker_->stop();
    }
}

Result<void> ClientShard::apply(ClientSnapshot snap, const AddressDiff& diff) noexcept {
    const bool announce = index_ == 0;  // one line per change, not one per worker
    // Per added address: a retired worker whose connection still serves takes it back, else a
    // new worker. What can fail comes first, so a failure changes nothing.
    std::vector<std::unique_ptr<AddressWorker>> fresh(diff.added.size());
    for (size_t i = 0; i < diff.added.size(); ++i) {
        const std::string text = diff.added[i].text();
        if (draining(text)) continue;
        fresh[i] = make_worker(diff.added[i]);
        if (fresh[i] == nullptr) {
            for (auto& f : fresh) {
                if (f != nullptr) f->stop();
            }
            // Stopped sessions stay until exit, as retired ones do.
            for (auto& f : fresh) {
                if (f != nullptr) retired_.push_back(std::move(f));
            }
            return Error::msg("server address " + text + ": no handler slot");
        }
    }
    // New streams use the new Services and certificates; streams in flight keep theirs.
    snap_ = std::move(snap);
    for (const std::string& text : diff.removed) {
        auto it = std::find_if(workers_.begin(), workers_.end(),
                               [&](const auto& w) { return w->address_text() == text; });
        if (it == workers_.end()) continue;
        const bool live = (*it)->connected();
        (*it)->retire();
        if (announce)
            log().info("client server address removed", {{"server-address", text}},
                       live ? "not dialled again; its connection serves until it closes"
                            : "not dialled again");
        retired_.push_back(std::move(*it));
        workers_.erase(it);
    }
    for (size_t i = 0; i < diff.added.size(); ++i) {
        const std::string text = diff.added[i].text();
        if (fresh[i] == nullptr) {
            auto it = std::find_if(retired_.begin(), retired_.end(), [&](const auto& w) {
                return w->draining() && w->address_text() == text;
            });
            if (it != retired_.end() && (*it)->reactivate()) {
                if (announce)
                    log().info("client server address added", {{"server-address", text}},
                               "its connection from before serves again");
                workers_.push_back(std::move(*it));
                retired_.erase(it);
            }
            continue;
        }
        if (announce) log().info("client server address added", {{"server-address", text}});
        AddressWorker* w = fresh[i].get();
        workers_.push_back(std::move(fresh[i]));
        w->start();
    }
    return {};
}

bool ClientShard::draining(const std::string& text) const {
    return std::any_of(retired_.begin(), retired_.end(),
                       [&](const auto& w) { return w->draining() && w->address_text() == text; });
}

std::vector<std::string> ClientShard::address_texts() const {
    std::vector<std::string> out;
    out.reserve(workers_.size());
    for (const auto& w : workers_) out.push_back(w->address_text());
    return out;
}

void ClientShard::collect(std::vector<AddressView>& out) const {
    auto add = [&](const AddressWorker& w, bool configured) {
        AddressView v;
        v.address = w.address_text();
        v.configured = configured;
        v.connected = w.connected();
        if (quic::Connection* c = w.connection(); c != nullptr && c->raw() != nullptr) {
            ngtcp2_conn_info ci{};
            ngtcp2_conn_get_conn_info(c->raw(), &ci);
            v.has_rtt = true;
            v.rtt_seconds = static_cast<double>(ci.smoothed_rtt) / 1e9;
            v.cwnd = ci.cwnd;
            v.remote = w.resolved_text();
        }
        out.push_back(std::move(v));
    };
    for (const auto& w : workers_) add(*w, true);
    for (const auto& w : retired_) {
        if (w->connected()) add(*w, false);
    }
}

Result<std::unique_ptr<quic::ClientTls>> ClientShard::load_tls(const std::string& server_name) {
    // Reloaded on every attempt by the rules `config check` and startup apply.
    auto m = preflight::load_client_material(cfg());
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

void ClientShard::fatal(const std::string& message) noexcept {
    if (index_ == 0) return inst_.fatal(message);
    inst_.post_main([i = &inst_, message] { i->fatal(message); });
}

void ClientShard::on_connected(AddressWorker& w) noexcept {
    inst_.address_connected(w.address_text());
}

void ClientShard::on_disconnected(AddressWorker& w) noexcept {
    inst_.address_disconnected(w.address_text());
}

void ClientShard::accept_stream(quic::Stream& s) noexcept {
    if (stopping_ || !inst_.take_stream_handler()) {
        s.reset(quic::kStreamErrorCode);
        if (!stopping_) inst_.note_handlers_saturated();
        return;
    }
    auto slot = streams_->alloc(*worker_, *this);
    StreamSession* ss = slot ? streams_->get(*slot) : nullptr;
    if (ss == nullptr || !ss->open()) {
        if (slot) streams_->free(*slot);
        inst_.release_stream_handler();
        s.reset(quic::kStreamErrorCode);
        return;
    }
    inst_.note_handler_taken();
    ss->start(s, *slot);
}

void ClientShard::stream_done(core::SlotId slot) noexcept {
    streams_->free(slot);
    inst_.release_stream_handler();
}

}  // namespace runewarp::client
