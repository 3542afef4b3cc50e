// OrderlyShutdown: signals -> graceful/fast shutdown -> relays drained or cut -> Tunnel
// connections closed -> finished.
#include "server/shutdown.hh"

#include <signal.h>

#include <chrono>

#include "core/clock.hh"
#include "sys/systemd.hh"

namespace runewarp::server {

namespace {

constexpr int64_t kCloseFlushNs = 100'000'000;  // CONNECTION_CLOSE gets 100 ms to leave

}  // namespace

void OrderlyShutdown::on_signal(int signo) noexcept {
    switch (signo) {
        case SIGTERM:
            if (mode_ == Mode::kNone) begin(Mode::kGraceful);
            // A repeated SIGTERM is ignored.
            break;
        case SIGINT:
        case SIGQUIT:
            if (mode_ == Mode::kNone) {
                begin(signo == SIGQUIT ? Mode::kFast : Mode::kGraceful);
            } else {
                escalate_fast();
            }
            break;
        default:
            break;
    }
}

void OrderlyShutdown::begin(Mode mode) noexcept {
    if (mode_ != Mode::kNone || mode == Mode::kNone) return;
    if (mode == Mode::kGraceful && graceful_ms_ == 0)
        mode = Mode::kFast;  // `0s` makes graceful behave like fast
    mode_ = mode;
    auto grace =
        std::chrono::milliseconds(mode == Mode::kGraceful ? static_cast<int64_t>(graceful_ms_) : 0);
    log_.info("server orderly shutdown started",
              {{"mode", mode_name()}, {"effective-graceful-duration", grace}});
    sys::notify_stopping();
    host_.stop_ingress();
    if (mode == Mode::kFast) {
        cut_relays();
    } else {
        grace_timer_ = arm_timer(kOpGraceDeadline, core::now_ns() + grace.count() * 1'000'000);
    }
    progress();
}

void OrderlyShutdown::escalate_fast() noexcept {
    if (mode_ == Mode::kFast) return;
    mode_ = Mode::kFast;
    log_.warn("server orderly shutdown escalated", {{"mode", "fast"}});
    worker().cancel_timer(grace_timer_);
    cut_relays();
    progress();
}

void OrderlyShutdown::on_grace_deadline() noexcept {
    if (relays_cut_) return;
    log_.warn("server graceful shutdown deadline expired",
              {{"active-tunnel-connections", host_.tunnel_connections()},
               {"active-relays", host_.live_visitors()}});
    cut_relays();
    progress();
}

void OrderlyShutdown::cut_relays() noexcept {
    relays_cut_ = true;
    host_.cut_relays();
}

void OrderlyShutdown::progress() noexcept {
    if (finished_ || mode_ == Mode::kNone) return;
    if (!host_.ingress_drained()) return;
    if (host_.has_tunnels() && !close_flushed_) {
        // Routed streams are done (or were cut): close every Tunnel connection and give the
        // CONNECTION_CLOSE time to leave.
        if (!tunnels_closed_) close_tunnels();
        return;
    }
    log_.info("server orderly shutdown complete", {{"mode", mode_name()}});
    finished_ = true;
}

void OrderlyShutdown::close_tunnels() noexcept {
    tunnels_closed_ = true;
    log_.info("server orderly shutdown closing tunnel connections",
              {{"mode", mode_name()}, {"active-tunnel-connections", host_.tunnel_connections()}});
    host_.close_tunnel_connections();
    arm_timer(kOpCloseFlush, core::now_ns() + kCloseFlushNs);
}

void OrderlyShutdown::on_event(const core::Completion& c) noexcept {
    if (c.token.op == kOpGraceDeadline) on_grace_deadline();
    if (c.token.op == kOpCloseFlush) {
        close_flushed_ = true;
        progress();
    }
}

}  // namespace runewarp::server
