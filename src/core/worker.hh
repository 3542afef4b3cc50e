// Worker: one loop + handler registry + timers + signals, and the Session teardown mixin.
#pragma once

#include <signal.h>
#include <sys/signalfd.h>

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/clock.hh"
#include "core/loop.hh"
#include "core/slab.hh"
#include "core/timer_heap.hh"
#include "core/unique_fd.hh"
#include "runewarp/result.hh"

namespace runewarp::core {

// Receives the completions of ops submitted with tokens of its registry slot, and its timers.
class CompletionHandler {
public:
    virtual void on_completion(const Completion& c) noexcept = 0;

protected:
    ~CompletionHandler() = default;
};

class SignalListener {
public:
    virtual void on_signal(const signalfd_siginfo& info) noexcept = 0;

protected:
    ~SignalListener() = default;
};

class Session;

struct WorkerOptions {
    LoopOptions loop;
    uint32_t max_slots = 65536;  // handler registry capacity: concurrent sessions + listeners
};

// One event loop thread's world. Nothing here is thread-safe: a Worker is driven by the thread
// that runs it, and more workers per process are more Worker objects on more threads.
class Worker final : private CompletionSink {
public:
    static Result<std::unique_ptr<Worker>> create(const WorkerOptions& opts = {});
    ~Worker();
    Worker(const Worker&) = delete;
    Worker& operator=(const Worker&) = delete;

    Loop& loop() noexcept { return *loop_; }
    Backend backend() const noexcept { return loop_->backend(); }
    const std::string& fallback_reason() const noexcept { return fallback_reason_; }

    // Handler registry: a slot whose tokens route completions to `h`. detach() bumps the
    // generation, so completions still in the kernel for the old slot are dropped on arrival.
    std::optional<SlotId> attach(CompletionHandler& h);
    void detach(SlotId id) noexcept;
    bool attached(SlotId id) noexcept { return handlers_->get(id) != nullptr; }
    uint32_t attached_count() const noexcept { return handlers_->size(); }
    // Completions dropped because their slot was detached or reused (generation mismatch).
    uint64_t stale_completions() const noexcept { return stale_; }

    // Timers fire through the completion path: the handler of `t` gets
    // Completion{t, -ETIME, kCompletionTimer, false}, dropped like any stale completion if the
    // slot is gone. Deadlines are absolute now_ns() values.
    TimerHandle arm_timer(Token t, int64_t deadline_ns) { return timers_.arm(deadline_ns, t); }
    bool rearm_timer(TimerHandle h, int64_t deadline_ns) noexcept {
        return timers_.rearm(h, deadline_ns);
    }
    bool cancel_timer(TimerHandle h) noexcept { return timers_.cancel(h); }

    // Blocks `signals` for this thread and reads them from a signalfd through the loop.
    // Call before starting other threads so they inherit the blocked mask.
    Result<void> watch_signals(std::initializer_list<int> signals, SignalListener& listener);

    // One iteration: wait for completions (at most until the next timer, or `max_wait_ns` if
    // >= 0), deliver them, fire due timers, then finish sessions that became quiescent.
    Result<int> run_once(int64_t max_wait_ns = -1);
    // Counts run_once() calls: equal values mean "within the same batch of completions".
    uint64_t iteration() const noexcept { return iteration_; }
    // Runs until stop(); an Error means the loop is broken (fatal for the worker).
    Result<void> run();
    void stop() noexcept { stopping_ = true; }
    bool stopping() const noexcept { return stopping_; }

    // Runs until done() holds or the absolute deadline passes; true when done() held.
    template <typename Pred>
    Result<bool> run_until(Pred&& done, int64_t deadline_ns) {
        while (!done()) {
            int64_t left = deadline_ns - now_ns();
            if (left <= 0) return false;
            auto r = run_once(left);
            if (!r) return std::move(r).error();
        }
        return true;
    }

private:
    friend class Session;
    Worker() = default;
    void on_completion(const Completion& c) noexcept override;
    void on_signal_read(const Completion& c) noexcept;
    void defer_quiesce(Session& s) noexcept;
    void drain_quiesced() noexcept;

    static constexpr uint8_t kOpSignalRead = 1;

    UniqueFd signal_fd_;  // declared before loop_: the loop (and its ops) goes first
    signalfd_siginfo signal_buf_{};
    SignalListener* signal_listener_ = nullptr;
    std::unique_ptr<Loop> loop_;
    std::string fallback_reason_;
    std::unique_ptr<Slab<CompletionHandler*>> handlers_;
    TimerHeap timers_;
    std::vector<std::pair<Session*, SlotId>> quiesced_;
    uint64_t stale_ = 0;
    bool stopping_ = false;
    uint64_t iteration_ = 0;
};

// Base for anything that owns fds and submits ops (visitor sessions, relays, listeners).
// It enforces the one teardown path:
//   abort(reason) once -> cancel every in-flight op -> wait until in-flight is zero
//   -> on_quiesced(): close fds, free the object.
// Every op goes through the helpers below so the in-flight count is exact; a completion with
// more == false ends an op. Timers are not in-flight ops: they are cancelled synchronously by
// the owner and, after abort(), dropped on arrival.
class Session : public CompletionHandler {
public:
    explicit Session(Worker& w) noexcept : worker_(w) {}
    Session(const Session&) = delete;
    Session& operator=(const Session&) = delete;

    // Takes a registry slot; false when the worker is full (admission limit).
    bool open() noexcept;
    SlotId id() const noexcept { return id_; }
    Token token(uint8_t op) const noexcept { return id_.token(op); }
    uint32_t in_flight() const noexcept { return in_flight_; }
    bool aborting() const noexcept { return aborting_; }
    int abort_reason() const noexcept { return abort_reason_; }
    Worker& worker() noexcept { return worker_; }

    // The teardown entry point; later calls are no-ops. on_quiesced() runs from the worker
    // after the current batch, never from inside abort(), so callers may keep using `this`.
    void abort(int reason) noexcept;

    // Op helpers (op < 0x80 names the op in completions; ops may share a value).
    void accept(uint8_t op, int fd, bool multishot) noexcept;
    void connect(uint8_t op, int fd, const sockaddr* addr, socklen_t len) noexcept;
    void recv(uint8_t op, int fd, void* buf, uint32_t len, int flags = 0) noexcept;
    void send(uint8_t op, int fd, const void* buf, uint32_t len, int flags = 0) noexcept;
    void read(uint8_t op, int fd, void* buf, uint32_t len) noexcept;
    void recvmsg(uint8_t op, int fd, msghdr* msg, int flags = 0) noexcept;
    void sendmsg(uint8_t op, int fd, const msghdr* msg, int flags = 0) noexcept;
    // Only where loop().caps().buffer_rings (see Loop::recvmsg_multishot).
    void recvmsg_multishot(uint8_t op, int fd, const msghdr* msg, int group) noexcept;
    void splice(uint8_t op, int fd_in, int fd_out, uint32_t len) noexcept;
    void poll(uint8_t op, int fd, uint32_t events) noexcept;
    TimerHandle arm_timer(uint8_t op, int64_t deadline_ns);

    // Closes an fd through the loop (drops epoll state); only valid once in_flight() == 0.
    void close_fd(UniqueFd& fd) noexcept;

protected:
    virtual ~Session() = default;
    // Every completion of this session's ops (also after abort(): a late accept may still
    // hand over an fd that must be closed) and its timers (not after abort()).
    virtual void on_event(const Completion& c) noexcept = 0;
    // Aborted and nothing in flight: close fds and release the object. The slot is already
    // detached, so no further completion can arrive.
    virtual void on_quiesced() noexcept = 0;

private:
    friend class Worker;
    void on_completion(const Completion& c) noexcept final;
    void submitted(uint8_t op) noexcept;
    void finish_teardown() noexcept;

    Worker& worker_;
    SlotId id_{};
    uint32_t in_flight_ = 0;
    uint64_t op_mask_[2] = {0, 0};  // op values with ops submitted since in-flight was last zero
    int abort_reason_ = 0;
    bool opened_ = false;
    bool aborting_ = false;
    bool quiesce_queued_ = false;
};

}  // namespace runewarp::core
