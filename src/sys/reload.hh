// Reloader: runs a role's configuration reloads one at a time, for SIGHUP and for the control
// socket. One reload: RELOADING=1 (with MONOTONIC_USEC) -> the role's check on a thread of its
// own (reads and validates the config and every file it names, builds the new snapshot) -> the
// role's apply on the loop thread -> READY=1 and STATUS= -> `config reloaded: generation=<n>`
// (INFO) or `config reload failed` (ERROR, every problem) -> the requesters' replies.
// A trigger that arrives while a reload runs is folded into one more reload after it; every
// requester waiting then gets that reload's outcome.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "core/mailbox.hh"
#include "core/worker.hh"
#include "obs/log.hh"
#include "runewarp/result.hh"

namespace runewarp::sys {

// What one reload ended with, as the daemon reports it to whoever asked.
struct ReloadOutcome {
    bool ok = false;
    uint64_t generation = 0;  // the configuration generation serving now (1 = the startup one)
    // Failure: every problem, one per line. Success: notes for the operator, one per line
    // (changes that need a restart and were not applied); may be empty.
    std::string text;
};

// Answers one requester (a control-socket peer); empty for SIGHUP.
using ReloadReply = std::function<void(const ReloadOutcome&)>;

class Reloader {
public:
    // What the check produced: a snapshot for apply, or the problems (non-empty = failed).
    struct Prepared {
        std::shared_ptr<void> snapshot;
        std::string problems;
    };
    // Runs on the reload thread: must not touch loop state.
    using CheckFn = std::function<Prepared()>;
    // Loop thread: applies a checked snapshot and calls `done` exactly once, now or later (for
    // instance after new upstream names resolved): ok with notes (may be empty), or the
    // problems when the snapshot could not be applied (the old one keeps serving).
    using Done = std::function<void(Result<std::string>)>;
    using ApplyFn = std::function<void(std::shared_ptr<void> snapshot, Done done)>;
    // STATUS= text sent with READY=1 after a reload.
    using StatusFn = std::function<std::string()>;

    static Result<std::unique_ptr<Reloader>> create(core::Worker& w, obs::Logger& log,
                                                    CheckFn check, ApplyFn apply, StatusFn status);
    ~Reloader();
    Reloader(const Reloader&) = delete;
    Reloader& operator=(const Reloader&) = delete;

    // Loop thread: asks for a reload; `reply` (may be empty) gets the outcome.
    void request(ReloadReply reply);
    // Loop thread: no reload starts after this; requesters still waiting are answered with a
    // failure ("shutting down"); a check in progress is waited for.
    void shutdown() noexcept;
    uint64_t generation() const noexcept { return generation_; }
    // Whether the last reload succeeded (true before any reload), for the metrics.
    bool last_ok() const noexcept { return last_ok_; }
    bool busy() const noexcept { return running_; }

private:
    Reloader(core::Worker& w, obs::Logger& log) noexcept : worker_(w), log_(log) {}
    void start() noexcept;
    void on_checked(Prepared p) noexcept;
    void finish(Result<std::string> r) noexcept;
    void answer(std::vector<ReloadReply>& replies, const ReloadOutcome& o) noexcept;

    core::Worker& worker_;
    obs::Logger& log_;
    CheckFn check_;
    ApplyFn apply_;
    StatusFn status_;
    std::unique_ptr<core::Mailbox> mailbox_;
    std::thread thread_;
    std::vector<ReloadReply> current_;  // waiting for the reload in progress
    std::vector<ReloadReply> next_;     // waiting for the one after it
    uint64_t generation_ = 1;
    uint64_t apply_seq_ = 0;  // guards against a late `done` after shutdown
    bool running_ = false;
    bool last_ok_ = true;
    bool pending_ = false;
    bool stopped_ = false;
};

}  // namespace runewarp::sys
