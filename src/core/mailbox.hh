// Mailbox: hands work from other threads (the ACME managers) to one Worker's loop thread.
// post() is thread-safe; the posted functions run on the loop thread, in order, from the
// completion of a read on an eventfd. Posting is rare (a certificate issued, a manager failed),
// so a mutex and a vector are enough.
#pragma once

#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include "core/unique_fd.hh"
#include "core/worker.hh"
#include "runewarp/result.hh"

namespace runewarp::core {

class Mailbox final : public Session {
public:
    // Owned by the role; call shutdown() and wait for quiesced() before destroying it (or
    // destroy it after the Worker stopped running).
    static Result<std::unique_ptr<Mailbox>> create(Worker& w);
    ~Mailbox() override;

    // Any thread. Dropped silently after shutdown().
    void post(std::function<void()> fn);

    // Loop thread: stops reading; functions still queued are dropped.
    void shutdown() noexcept;
    bool quiesced() const noexcept { return quiesced_; }

private:
    explicit Mailbox(Worker& w) noexcept : Session(w) {}
    void on_event(const Completion& c) noexcept override;
    void on_quiesced() noexcept override;
    void arm() noexcept;

    static constexpr uint8_t kOpRead = 1;
    UniqueFd efd_;
    uint64_t counter_ = 0;
    std::mutex mu_;
    std::vector<std::function<void()>> queue_;
    bool closed_ = false;  // under mu_
    bool quiesced_ = false;
};

}  // namespace runewarp::core
