// Watchdog: WATCHDOG=1 from the event loop; the configured event backend.
#include "sys/watchdog.hh"

#include "core/clock.hh"
#include "sys/systemd.hh"

namespace runewarp::sys {

bool Watchdog::start() noexcept {
    auto wd = watchdog_ping_interval();
    if (wd.count() <= 0) return false;
    if (!open()) return false;
    interval_ns_ = static_cast<int64_t>(wd.count()) * 1000;
    arm_timer(kOpPing, core::now_ns() + interval_ns_);
    return true;
}

void Watchdog::on_event(const core::Completion& c) noexcept {
    if (!(c.flags & core::kCompletionTimer) || aborting()) return;
    notify_watchdog();
    arm_timer(kOpPing, core::now_ns() + interval_ns_);
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

}  // namespace runewarp::sys
