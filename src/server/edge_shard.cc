// EdgeShard: a worker's listener, Visitor sessions and per-loop resources; the thread of the
// shards beside the main one; the hand-over of Tunnel Visitors to shard 0.
#include "server/edge_shard.hh"

#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <cstring>

#include "core/clock.hh"
#include "server/edge_server.hh"

namespace runewarp::server {

namespace {

constexpr uint32_t kMaxIdleIntake = 256;  // parsers kept for reuse
constexpr uint32_t kPipeSize = 256 * 1024;
// How long a stopping shard lets its last sessions (listener, mailbox) quiesce.
constexpr int64_t kStopFlushNs = 1'000'000'000;

}  // namespace

// ---- LiveView -----------------------------------------------------------------------------------

void LiveView::merge(const LiveView& o) {
    for (const auto& [k, v] : o.live) {
        LiveBytes& b = live[k];
        b.in += v.in;
        b.out += v.out;
        b.active += v.active;
    }
    for (const auto& [k, v] : o.member_live) {
        LiveBytes& b = member_live[k];
        b.in += v.in;
        b.out += v.out;
        b.active += v.active;
    }
    for (const auto& [k, v] : o.member_stats) member_stats[k] = v;
    visitors += o.visitors;
    handshakes += o.handshakes;
}

// ---- EdgeShard ----------------------------------------------------------------------------------

EdgeShard::EdgeShard(EdgeServer& server, uint32_t index) noexcept
    : server_(server), index_(index), intake_pool_(kMaxIdleIntake) {}

EdgeShard::~EdgeShard() {
    stop_thread();
}

obs::Logger& EdgeShard::log() noexcept {
    return server_.log();
}
Admission& EdgeShard::admission() noexcept {
    return server_.admission();
}
AdmissionLog& EdgeShard::admission_log() noexcept {
    return server_.admission_log();
}
ServerMetrics& EdgeShard::metrics() noexcept {
    return server_.metrics();
}
TunnelRegistry* EdgeShard::tunnels() noexcept {
    return server_.tunnels();
}
const acme::ChallengeBoard* EdgeShard::acme_board() const noexcept {
    return server_.acme_board();
}

Result<void> EdgeShard::setup(core::UniqueFd public_fd, std::string public_text, ShardSnapshot snap,
                              core::UniqueFd tunnel_fd, uint32_t tunnel_count) {
    snap_ = std::move(snap);
    const AdmissionLimits& lim = admission().limits();
    pipes_ = std::make_unique<core::PipePool>(2 * lim.active_relays + 64, kPipeSize);
    peek_buf_ = std::make_unique<uint8_t[]>(kPeekCapacity);
    prefix_buf_ = std::make_unique<uint8_t[]>(kPrefixCapacity);
    // Admission is process-wide, so one shard may hold every admitted Visitor.
    visitors_ = std::make_unique<core::Slab<VisitorSession>>(lim.pre_routing_global +
                                                             lim.active_relays + 64);
    live_.reserve(lim.pre_routing_global + lim.active_relays + 64);
    auto mb = core::Mailbox::create(*worker_);
    if (!mb) return Error::msg("worker mailbox: " + mb.error().message);
    mailbox_ = std::move(*mb);
    listener_ = std::make_unique<Listener>(*worker_, static_cast<ListenerOwner&>(*this), log(),
                                           Listener::Kind::kPublic, std::move(public_fd),
                                           std::move(public_text), &server_.accept_limit());
    if (!listener_->open()) return Error::msg("event loop: no slot for the public listener");
    listener_open_ = true;
    if (tunnel_fd.valid()) {
        TunnelHub* hub = server_.tunnel_hub();
        if (hub == nullptr) return Error::msg("tunnel listener without a Tunnel");
        return open_tunnel(*hub, std::move(tunnel_fd), tunnel_count);
    }
    return {};
}

Result<void> EdgeShard::open_tunnel(TunnelHub& hub, core::UniqueFd fd, uint32_t count) {
    auto f = TunnelFront::create(*worker_, hub, std::move(fd), index_, index_, count);
    if (!f) return std::move(f).error();
    tunnel_front_ = std::move(*f);
    return {};
}

void EdgeShard::drop_tunnel() noexcept {
    if (tunnel_front_ != nullptr) tunnel_front_->drop_listener();
}

Result<void> EdgeShard::setup_primary(core::Worker& w, core::UniqueFd public_fd,
                                      std::string public_text, ShardSnapshot snap,
                                      core::UniqueFd tunnel_fd, uint32_t tunnel_count) {
    worker_ = &w;
    return setup(std::move(public_fd), std::move(public_text), std::move(snap),
                 std::move(tunnel_fd), tunnel_count);
}

Result<void> EdgeShard::start_thread(const core::WorkerOptions& wo, core::UniqueFd public_fd,
                                     std::string public_text, ShardSnapshot snap,
                                     core::UniqueFd tunnel_fd, uint32_t tunnel_count) {
    thread_ =
        std::thread([this, wo, fd = std::move(public_fd), text = std::move(public_text),
                     snap = std::move(snap), tfd = std::move(tunnel_fd), tunnel_count]() mutable {
            thread_main(wo, std::move(fd), std::move(text), std::move(snap), std::move(tfd),
                        tunnel_count);
        });
    std::unique_lock lock(start_mu_);
    start_cv_.wait(lock, [&] { return started_; });
    if (!start_error_.empty()) {
        lock.unlock();
        thread_.join();
        return Error::msg(start_error_);
    }
    return {};
}

void EdgeShard::thread_main(core::WorkerOptions wo, core::UniqueFd public_fd,
                            std::string public_text, ShardSnapshot snap, core::UniqueFd tunnel_fd,
                            uint32_t tunnel_count) noexcept {
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
        if (auto r = setup(std::move(public_fd), std::move(public_text), std::move(snap),
                           std::move(tunnel_fd), tunnel_count);
            !r)
            error = r.error().message;
    }
    {
        std::lock_guard lock(start_mu_);
        start_error_ = error;
        started_ = true;
    }
    start_cv_.notify_all();
    if (!error.empty()) {
        tunnel_front_.reset();
        listener_.reset();
        mailbox_.reset();
        return;
    }
    while (!stop_) {
        auto r = worker_->run_once(-1);
        if (!r) {
            log().error("server event loop failed", {{"worker", uint64_t{index_}}},
                        r.error().message);
            server_.shard(0).post([s = &server_] { s->on_worker_failed(); });
            break;
        }
    }
    // Whatever still runs (only after a fatal loop error) is cut; then the listener and the
    // mailbox quiesce before the loop goes away with this thread.
    if (listener_ != nullptr && listener_open_) listener_->stop();
    std::vector<VisitorSession*> snapshot(live_);
    for (VisitorSession* v : snapshot) v->cut();
    mailbox_->shutdown();
    (void)worker_->run_until(
        [&] { return mailbox_->quiesced() && !listener_open_ && live_.empty(); },
        core::now_ns() + kStopFlushNs);
    // Then the Tunnel connections still in a closing period are dropped, and their sessions
    // (and the UDP socket's) finish tearing down: nothing else is attached by now.
    if (tunnel_front_ != nullptr) {
        drop_tunnel();
        (void)worker_->run_until([&] { return worker_->attached_count() == 0; },
                                 core::now_ns() + kStopFlushNs);
        tunnel_front_.reset();
    }
}

void EdgeShard::post(std::function<void()> fn) {
    if (mailbox_ != nullptr) mailbox_->post(std::move(fn));
}

void EdgeShard::stop_thread() noexcept {
    if (!thread_.joinable()) return;
    post([this] {
        stop_ = true;
        worker_->stop();
    });
    thread_.join();
}

void EdgeShard::close_mailbox() noexcept {
    if (mailbox_ != nullptr) mailbox_->shutdown();
}

bool EdgeShard::mailbox_quiesced() const noexcept {
    return mailbox_ == nullptr || mailbox_->quiesced();
}

void EdgeShard::start_listener() noexcept {
    if (listener_ != nullptr) listener_->start();
}

void EdgeShard::stop_ingress() noexcept {
    ingress_stopped_ = true;
    if (listener_ != nullptr && listener_open_) listener_->stop();
    // Visitors still in intake are cancelled; routed ones keep running for now.
    std::vector<VisitorSession*> snapshot(live_);
    for (VisitorSession* v : snapshot) v->on_shutdown_started();
    note_drained();
}

void EdgeShard::cut() noexcept {
    std::vector<VisitorSession*> snapshot(live_);
    for (VisitorSession* v : snapshot) v->cut();
}

void EdgeShard::collect(LiveView& out) const {
    for (const VisitorSession* s : live_) {
        if (!s->relaying() || s->route_counts() == nullptr) continue;
        LiveBytes& b = out.live[s->route_counts()];
        b.in += s->bytes_in();
        b.out += s->bytes_out();
        b.active++;
        if (s->tunnel_target() && s->member() != nullptr) {
            LiveBytes& mb = out.member_live[s->member()];
            mb.in += s->bytes_in();
            mb.out += s->bytes_out();
        }
    }
    out.visitors += live_.size();
    if (tunnel_front_ != nullptr) {
        tunnel_front_->collect(out.member_stats);
        out.handshakes += tunnel_front_->handshakes_in_flight();
    }
}

void EdgeShard::note_drained() noexcept {
    live_count_.store(live_.size(), std::memory_order_release);
    bool now = ingress_stopped_ && !listener_open_ && live_.empty();
    if (now && !drained_.exchange(true, std::memory_order_acq_rel)) {
        // The orderly shutdown (main thread) waits for every shard to drain; it hears of it
        // from the mailbox, never from inside one of its own steps.
        server_.shard(0).post([s = &server_] { s->on_shard_drained(); });
    }
}

VisitorSession* EdgeShard::new_session(int fd, uint64_t conn_id) noexcept {
    auto id = visitors_->alloc(*worker_, *this, fd, conn_id);
    if (!id) return nullptr;
    VisitorSession* v = visitors_->get(*id);
    if (v == nullptr) return nullptr;  // cannot happen: the slot was just allocated
    v->slab_id_ = *id;
    if (!v->open()) {
        // No handler slot: the session never ran; the caller still owns the fd.
        v->visitor_.release();
        visitors_->free(*id);
        return nullptr;
    }
    v->live_index_ = live_.size();
    live_.push_back(v);
    live_count_.store(live_.size(), std::memory_order_release);
    return v;
}

void EdgeShard::on_accept(Listener&, int fd) noexcept {
    ServerMetrics& m = metrics();
    m.accepted.add();
    accepted_.add();
    if (ingress_stopped_ || server_.shutdown_begun()) {
        m.dropped[static_cast<size_t>(CloseReason::kShutdown)].add();
        ::close(fd);
        return;
    }
    // The global pre-routing slot comes before any per-connection work.
    Admission& adm = admission();
    if (!adm.try_pre_routing_global()) {
        m.dropped[kDropGlobalSaturated].add();
        ::close(fd);
        admission_log().saturated(AdmissionScope::kVisitorGlobal, adm.pre_routing(),
                                  adm.limits().pre_routing_global);
        return;
    }
    admission_log().admitted(AdmissionScope::kVisitorGlobal);
    VisitorSession* v = new_session(fd, server_.next_conn_id());
    if (v == nullptr) {
        m.dropped[kDropGlobalSaturated].add();
        adm.release_pre_routing_global();
        ::close(fd);
        admission_log().saturated(AdmissionScope::kVisitorGlobal, visitors_->size(),
                                  visitors_->capacity());
        return;
    }
    v->start();
}

void EdgeShard::hand_off(std::shared_ptr<VisitorHandoff> h) noexcept {
    // The socket leaves this loop: nothing of it may stay in this backend's state (an epoll
    // registration would outlive the number's reuse).
    worker_->loop().forget(h->fd.get());
    EdgeShard& target = server_.shard(h->member != nullptr ? h->member->shard : 0);
    target.post([&target, h = std::move(h)]() mutable { target.adopt(std::move(h)); });
}

void EdgeShard::adopt(std::shared_ptr<VisitorHandoff> h) noexcept {
    ServerMetrics& m = metrics();
    if (ingress_stopped_ || server_.shutdown_begun()) {
        m.dropped[static_cast<size_t>(CloseReason::kShutdown)].add();
        return;  // h's socket closes with it
    }
    int fd = h->fd.get();
    VisitorSession* v = new_session(fd, h->conn_id);
    if (v == nullptr) {
        m.dropped[kDropGlobalSaturated].add();
        admission_log().saturated(AdmissionScope::kVisitorGlobal, visitors_->size(),
                                  visitors_->capacity());
        return;
    }
    (void)h->fd.release();  // the session owns it now
    v->resume_tunnel(*h);
}

void EdgeShard::on_visitor_closed(VisitorSession& v, core::SlotId slab_id) noexcept {
    size_t i = v.live_index_;
    if (i < live_.size() && live_[i] == &v) {
        live_[i] = live_.back();
        live_[i]->live_index_ = i;
        live_.pop_back();
    }
    visitors_->free(slab_id);
    note_drained();
}

void EdgeShard::on_listener_fatal(Listener& l, int err) noexcept {
    std::string text = l.bind_text();
    if (primary()) return server_.on_listener_failed(text, err);
    server_.shard(0).post([s = &server_, text, err] { s->on_listener_failed(text, err); });
}

void EdgeShard::on_listener_closed(Listener&) noexcept {
    listener_open_ = false;
    note_drained();
}

}  // namespace runewarp::server
