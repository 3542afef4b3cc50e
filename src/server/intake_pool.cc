// IntakePool: lends Visitor intake parser state and keeps a bounded number for reuse.
#include "server/intake_pool.hh"

#include <new>

namespace runewarp::server {

std::unique_ptr<IntakeState> IntakePool::borrow() noexcept {
    std::unique_ptr<IntakeState> s;
    if (!idle_.empty()) {
        s = std::move(idle_.back());
        idle_.pop_back();
    } else {
        // Memory exhaustion fails this one Visitor instead of the process.
        s.reset(new (std::nothrow) IntakeState());
        if (s == nullptr) return s;
    }
    ++lent_;
    return s;
}

void IntakePool::give_back(std::unique_ptr<IntakeState> s) noexcept {
    if (s == nullptr) return;
    if (lent_ > 0) --lent_;
    if (idle_.size() >= max_idle_) return;  // `s` is freed here
    // Reset in place: the parsers start over for the next Visitor.
    s->proxy = proto::ProxyV2Decoder{};
    s->hello.reset();
    s->peeked = 0;
    idle_.push_back(std::move(s));  // within the reserved capacity: no allocation
}

}  // namespace runewarp::server
