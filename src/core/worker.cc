// Worker and Session: completion dispatch by token, timers, signalfd, and the teardown path.
#include "core/worker.hh"

#include <pthread.h>

#include <cerrno>

namespace runewarp::core {

Result<std::unique_ptr<Worker>> Worker::create(const WorkerOptions& opts) {
    auto sel = make_loop(opts.loop);
    if (!sel) return std::move(sel).error();
    std::unique_ptr<Worker> w(new Worker());
    w->loop_ = std::move(sel->loop);
    w->fallback_reason_ = std::move(sel->fallback_reason);
    w->handlers_ = std::make_unique<Slab<CompletionHandler*>>(opts.max_slots);
    w->quiesced_.reserve(256);
    return w;
}

Worker::~Worker() {
    // Tear the loop down first: ring exit cancels every op, so no kernel op can still point at
    // signal_buf_ or at an fd closed below.
    loop_.reset();
}

std::optional<SlotId> Worker::attach(CompletionHandler& h) {
    return handlers_->alloc(&h);
}

void Worker::detach(SlotId id) noexcept {
    handlers_->free(id);
}

void Worker::on_completion(const Completion& c) noexcept {
    if (c.token.slot == Token::kInternalSlot) {
        if (c.token.op == kOpSignalRead) on_signal_read(c);
        return;
    }
    CompletionHandler** h = handlers_->get(c.token);
    if (h == nullptr) {
        ++stale_;  // slot freed or reused since submission: the generation no longer matches
        return;
    }
    (*h)->on_completion(c);
}

Result<void> Worker::watch_signals(std::initializer_list<int> signals, SignalListener& listener) {
    sigset_t set;
    sigemptyset(&set);
    for (int s : signals) sigaddset(&set, s);
    // Blocked signals stay pending for the signalfd instead of running a handler.
    if (int rc = pthread_sigmask(SIG_BLOCK, &set, nullptr); rc != 0)
        return Error::sys(rc, "pthread_sigmask");
    int fd = ::signalfd(signal_fd_.get(), &set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (fd < 0) return Error::sys(errno, "signalfd");
    bool first = !signal_fd_.valid();
    if (first) signal_fd_.reset(fd);
    signal_listener_ = &listener;
    if (first)
        loop_->read(Token{Token::kInternalSlot, 0, kOpSignalRead}, signal_fd_.get(), &signal_buf_,
                    sizeof signal_buf_);
    return {};
}

void Worker::on_signal_read(const Completion& c) noexcept {
    if (c.result == static_cast<int32_t>(sizeof signal_buf_) && signal_listener_ != nullptr)
        signal_listener_->on_signal(signal_buf_);
    if (c.result == -ECANCELED || c.result == -EBADF || !signal_fd_.valid()) return;
    loop_->read(Token{Token::kInternalSlot, 0, kOpSignalRead}, signal_fd_.get(), &signal_buf_,
                sizeof signal_buf_);
}

Result<int> Worker::run_once(int64_t max_wait_ns) {
    ++iteration_;
    int64_t wait = max_wait_ns;
    if (int64_t next = timers_.next_deadline(); next >= 0) {
        int64_t until = next - now_ns();
        if (until < 0) until = 0;
        if (wait < 0 || until < wait) wait = until;
    }
    if (!quiesced_.empty()) wait = 0;
    auto r = loop_->run_once(*this, wait);
    if (!r) return r;
    int n = *r;
    Token t;
    const int64_t now = now_ns();
    while (timers_.pop_expired(now, t)) {
        on_completion(Completion{t, -ETIME, kCompletionTimer, false});
        ++n;
    }
    drain_quiesced();
    return n;
}

Result<void> Worker::run() {
    while (!stopping_) {
        auto r = run_once(-1);
        if (!r) return std::move(r).error();
    }
    return {};
}

void Worker::defer_quiesce(Session& s) noexcept {
    quiesced_.emplace_back(&s, s.id());
}

void Worker::drain_quiesced() noexcept {
    // Index loop: a session's on_quiesced() may abort others, which appends here.
    for (size_t i = 0; i < quiesced_.size(); ++i) {
        auto [s, id] = quiesced_[i];
        if (handlers_->get(id) != nullptr) s->finish_teardown();
    }
    quiesced_.clear();
}

// ---- Session ------------------------------------------------------------------------------------

bool Session::open() noexcept {
    if (opened_) return true;
    auto id = worker_.attach(*this);
    if (!id) return false;
    id_ = *id;
    opened_ = true;
    return true;
}

void Session::submitted(uint8_t op) noexcept {
    ++in_flight_;
    op_mask_[(op >> 6) & 1] |= uint64_t{1} << (op & 63);
}

void Session::on_completion(const Completion& c) noexcept {
    if ((c.flags & kCompletionTimer) != 0) {
        if (!aborting_) on_event(c);
        return;
    }
    if (!c.more && in_flight_ > 0) {
        --in_flight_;
        if (in_flight_ == 0) op_mask_[0] = op_mask_[1] = 0;
    }
    on_event(c);
    if (aborting_ && in_flight_ == 0 && !quiesce_queued_) {
        quiesce_queued_ = true;
        worker_.defer_quiesce(*this);
    }
}

void Session::abort(int reason) noexcept {
    if (aborting_) return;
    aborting_ = true;
    abort_reason_ = reason;
    if (!opened_) return;
    for (int half = 0; half < 2; ++half)
        for (int bit = 0; bit < 64; ++bit)
            if (op_mask_[half] & (uint64_t{1} << bit))
                worker_.loop().cancel(token(static_cast<uint8_t>(half * 64 + bit)));
    if (in_flight_ == 0 && !quiesce_queued_) {
        quiesce_queued_ = true;
        worker_.defer_quiesce(*this);
    }
}

void Session::finish_teardown() noexcept {
    worker_.detach(id_);
    opened_ = false;
    on_quiesced();  // may destroy *this: nothing after this line
}

void Session::close_fd(UniqueFd& fd) noexcept {
    if (fd.valid()) worker_.loop().close(fd.release());
}

void Session::accept(uint8_t op, int fd, bool multishot) noexcept {
    submitted(op);
    worker_.loop().accept(token(op), fd, multishot);
}
void Session::connect(uint8_t op, int fd, const sockaddr* addr, socklen_t len) noexcept {
    submitted(op);
    worker_.loop().connect(token(op), fd, addr, len);
}
void Session::recv(uint8_t op, int fd, void* buf, uint32_t len, int flags) noexcept {
    submitted(op);
    worker_.loop().recv(token(op), fd, buf, len, flags);
}
void Session::send(uint8_t op, int fd, const void* buf, uint32_t len, int flags) noexcept {
    submitted(op);
    worker_.loop().send(token(op), fd, buf, len, flags);
}
void Session::read(uint8_t op, int fd, void* buf, uint32_t len) noexcept {
    submitted(op);
    worker_.loop().read(token(op), fd, buf, len);
}
void Session::recvmsg(uint8_t op, int fd, msghdr* msg, int flags) noexcept {
    submitted(op);
    worker_.loop().recvmsg(token(op), fd, msg, flags);
}
void Session::recvmsg_multishot(uint8_t op, int fd, const msghdr* msg, int group) noexcept {
    submitted(op);
    worker_.loop().recvmsg_multishot(token(op), fd, msg, group);
}
void Session::sendmsg(uint8_t op, int fd, const msghdr* msg, int flags) noexcept {
    submitted(op);
    worker_.loop().sendmsg(token(op), fd, msg, flags);
}
void Session::splice(uint8_t op, int fd_in, int fd_out, uint32_t len) noexcept {
    submitted(op);
    worker_.loop().splice(token(op), fd_in, fd_out, len);
}
void Session::poll(uint8_t op, int fd, uint32_t events) noexcept {
    submitted(op);
    worker_.loop().poll(token(op), fd, events);
}
TimerHandle Session::arm_timer(uint8_t op, int64_t deadline_ns) {
    return worker_.arm_timer(token(op), deadline_ns);
}

}  // namespace runewarp::core
