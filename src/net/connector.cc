// Connector: a Happy Eyeballs race of TCP connects run on its owner's Session ops.
#include "net/connector.hh"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <cerrno>

namespace runewarp::net {

void Connector::start(core::Session& owner, Addresses addrs, bool nodelay) noexcept {
    addrs_ = std::move(addrs);
    nodelay_ = nodelay;
    next_ = 0;
    first_error_ = 0;
    status_ = Status::kPending;
    if (addrs_ == nullptr || addrs_->empty()) {
        first_error_ = EADDRNOTAVAIL;
        status_ = Status::kFailed;
        return;
    }
    start_next(owner);
}

bool Connector::any_in_flight() const noexcept {
    for (const Attempt& a : attempts_) {
        if (a.in_flight) return true;
    }
    return false;
}

void Connector::start_next(core::Session& owner) noexcept {
    while (next_ < addrs_->size()) {
        Attempt* slot = nullptr;
        for (Attempt& a : attempts_) {
            if (!a.in_flight && !a.fd.valid()) {
                slot = &a;
                break;
            }
        }
        if (slot == nullptr) return;  // kMaxParallel attempts already racing
        size_t index = next_++;
        const ResolvedAddress& ra = (*addrs_)[index];
        int fd = ::socket(ra.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            if (first_error_ == 0) first_error_ = errno;
            continue;  // this address cannot even get a socket: try the next one now
        }
        if (nodelay_) {
            int one = 1;
            (void)::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        }
        slot->fd = core::UniqueFd(fd);
        slot->index = index;
        slot->in_flight = true;
        auto op = static_cast<uint8_t>(op_base_ + (slot - attempts_.data()));
        owner.connect(op, fd, ra.sa(), ra.len);
        if (next_ < addrs_->size()) arm_stagger(owner);
        return;
    }
    if (!any_in_flight()) finish_failed(owner);
}

void Connector::arm_stagger(core::Session& owner) noexcept {
    int64_t deadline = core::now_ns() + kAttemptDelayNs;
    if (timer_armed_ && owner.worker().rearm_timer(timer_, deadline)) return;
    timer_ = owner.arm_timer(timer_op_, deadline);
    timer_armed_ = true;
}

void Connector::finish_failed(core::Session& owner) noexcept {
    if (timer_armed_) {
        owner.worker().cancel_timer(timer_);
        timer_armed_ = false;
    }
    if (first_error_ == 0) first_error_ = ECONNREFUSED;
    status_ = Status::kFailed;
}

bool Connector::on_completion(core::Session& owner, const core::Completion& c) noexcept {
    if (!owns_op(c.token.op)) return false;
    if (c.flags & core::kCompletionTimer) {
        if (c.token.op != timer_op_) return false;
        timer_armed_ = false;
        if (status_ == Status::kPending) start_next(owner);
        return true;
    }
    if (c.token.op == timer_op_) return false;  // not a timer: the owner's own op
    Attempt& a = attempts_[c.token.op - op_base_];
    a.in_flight = false;
    if (status_ != Status::kPending || owner.aborting()) {
        // A loser, or the owner is tearing down: nothing is in flight on it any more.
        owner.close_fd(a.fd);
        return true;
    }
    if (c.result == 0) {
        status_ = Status::kConnected;
        winner_index_ = a.index;
        winner_ = std::move(a.fd);
        cancel(owner);
        return true;
    }
    if (first_error_ == 0) first_error_ = -c.result;
    owner.close_fd(a.fd);
    // A refused or unreachable address hands over to the next one at once.
    start_next(owner);
    return true;
}

void Connector::cancel(core::Session& owner) noexcept {
    if (timer_armed_) {
        owner.worker().cancel_timer(timer_);
        timer_armed_ = false;
    }
    for (size_t i = 0; i < attempts_.size(); ++i) {
        if (attempts_[i].in_flight)
            owner.worker().loop().cancel(owner.token(static_cast<uint8_t>(op_base_ + i)));
    }
    if (status_ == Status::kPending) status_ = Status::kFailed;
}

void Connector::release(core::Session& owner) noexcept {
    for (Attempt& a : attempts_) {
        a.in_flight = false;
        if (a.fd.valid()) owner.close_fd(a.fd);
    }
    if (winner_.valid()) owner.close_fd(winner_);
}

}  // namespace runewarp::net
