// Watchdog: sends WATCHDOG=1 from the event loop every half WATCHDOG_USEC, so a stuck loop is
// what systemd notices; and the event backend a role's config asks for.
#pragma once

#include <cstdint>

#include "config/config.hh"
#include "core/loop.hh"
#include "core/worker.hh"

namespace runewarp::sys {

class Watchdog final : public core::Session {
public:
    explicit Watchdog(core::Worker& w) noexcept : core::Session(w) {}
    // Starts pinging when the service manager asked for a watchdog; false when it did not (or
    // no handler slot was free), and nothing runs then.
    bool start() noexcept;
    void stop() noexcept { abort(0); }

private:
    static constexpr uint8_t kOpPing = 1;
    void on_event(const core::Completion& c) noexcept override;
    void on_quiesced() noexcept override {}
    int64_t interval_ns_ = 0;
};

// The loop backend for a role's `event-backend` setting.
core::BackendChoice backend_choice(config::EventBackend b) noexcept;

}  // namespace runewarp::sys
