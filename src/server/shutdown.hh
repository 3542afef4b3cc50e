// OrderlyShutdown: the Server's shutdown state machine (graceful or fast, escalation, the
// graceful window, closing the Tunnel connections and the close flush) and the signals that
// drive it.
#pragma once

#include <cstdint>

#include "core/timer_heap.hh"
#include "core/worker.hh"
#include "obs/log.hh"

namespace runewarp::server {

// What an orderly shutdown acts on; the EdgeServer implements it.
class ShutdownHost {
public:
    // Seal Tunnel registration, close the readiness listener first (`server readiness lost`),
    // then the public listener, and cancel Visitors still in intake; relays keep running.
    virtual void stop_ingress() noexcept = 0;
    // Abort every relay still running.
    virtual void cut_relays() noexcept = 0;
    // No Visitor session and no listener remains.
    virtual bool ingress_drained() const noexcept = 0;
    virtual uint64_t live_visitors() const noexcept = 0;
    // Whether a Tunnel listener exists, and how many connections it has.
    virtual bool has_tunnels() const noexcept = 0;
    virtual uint64_t tunnel_connections() const noexcept = 0;
    // Close every Tunnel connection with application 0 `graceful shutdown`.
    virtual void close_tunnel_connections() noexcept = 0;

protected:
    ~ShutdownHost() = default;
};

// Steps: (1) log `server orderly shutdown started` and send STOPPING=1; (2) stop ingress;
// (3) graceful: wait until no routed stream remains, the window expires or a signal escalates
// to fast; fast: cut the relays at once; (4) close every Tunnel connection and give the
// CONNECTION_CLOSE 100 ms to leave, then finish.
class OrderlyShutdown final : public core::Session {
public:
    enum class Mode : uint8_t { kNone, kGraceful, kFast };

    OrderlyShutdown(core::Worker& w, ShutdownHost& host, obs::Logger& log,
                    uint64_t graceful_ms) noexcept
        : core::Session(w), host_(host), log_(log), graceful_ms_(graceful_ms) {}

    // SIGTERM or a first SIGINT: graceful; SIGQUIT: fast. While graceful, SIGINT or SIGQUIT
    // escalate to fast and a repeated SIGTERM is ignored. SIGHUP only warns (no reload).
    void on_signal(int signo) noexcept;
    // Starts the sequence (once); a graceful window of 0 makes graceful behave like fast.
    void begin(Mode mode) noexcept;
    // Reload: the graceful window for a shutdown that has not begun yet.
    void set_graceful_ms(uint64_t ms) noexcept {
        if (!started()) graceful_ms_ = ms;
    }
    // Something the sequence waits for went away: take the next step if it can.
    void progress() noexcept;

    bool started() const noexcept { return mode_ != Mode::kNone; }
    bool finished() const noexcept { return finished_; }

protected:
    void on_event(const core::Completion& c) noexcept override;
    void on_quiesced() noexcept override {}

private:
    enum Op : uint8_t { kOpGraceDeadline = 1, kOpCloseFlush = 2 };
    const char* mode_name() const noexcept { return mode_ == Mode::kFast ? "fast" : "graceful"; }
    void escalate_fast() noexcept;
    void on_grace_deadline() noexcept;
    void cut_relays() noexcept;
    void close_tunnels() noexcept;

    ShutdownHost& host_;
    obs::Logger& log_;
    uint64_t graceful_ms_;
    core::TimerHandle grace_timer_{};
    Mode mode_ = Mode::kNone;
    bool relays_cut_ = false;
    bool tunnels_closed_ = false;
    bool close_flushed_ = false;
    bool finished_ = false;
};

}  // namespace runewarp::server
