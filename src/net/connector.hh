// Connector: a Happy Eyeballs race of TCP connects (RFC 8305) run on its owner's Session ops.
// The first address starts at once; each further address starts when the previous attempt
// failed or after kAttemptDelayNs without an answer; the first connect that succeeds wins and
// the others are cancelled. The owner forwards completions of the Connector's op values and its
// timer, and calls release() from on_quiesced() (or once it no longer needs the losers).
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <vector>

#include "core/unique_fd.hh"
#include "core/worker.hh"
#include "net/address.hh"

namespace runewarp::net {

class Connector {
public:
    // Op values [op_base, op_base + kMaxParallel) are the connect attempts; `timer_op` the
    // stagger timer. Both must be unused by the owner otherwise.
    Connector(uint8_t op_base, uint8_t timer_op) noexcept
        : op_base_(op_base), timer_op_(timer_op) {}

    static constexpr size_t kMaxParallel = 4;

    enum class Status { kPending, kConnected, kFailed };

    // Starts the race over `addrs` (already in race order, see interleave_families; shared so
    // that a route's address set is not copied per connection). TCP_NODELAY when `nodelay`.
    using Addresses = std::shared_ptr<const std::vector<ResolvedAddress>>;
    void start(core::Session& owner, Addresses addrs, bool nodelay) noexcept;
    // Feeds a completion; true when it belonged to the Connector. After it returned true,
    // status() tells whether the race ended.
    bool on_completion(core::Session& owner, const core::Completion& c) noexcept;
    Status status() const noexcept { return status_; }
    // The winning socket (status() == kConnected) and its address.
    core::UniqueFd take_socket() noexcept { return std::move(winner_); }
    const ResolvedAddress& winner_address() const noexcept { return (*addrs_)[winner_index_]; }
    // errno of the first failed attempt (ECONNREFUSED, ...) when every attempt failed.
    int first_error() const noexcept { return first_error_; }
    size_t attempts_started() const noexcept { return next_; }
    bool owns_op(uint8_t op) const noexcept {
        return op == timer_op_ || (op >= op_base_ && op < op_base_ + kMaxParallel);
    }
    // Stops the race: cancels attempts in flight (their sockets close in release()).
    void cancel(core::Session& owner) noexcept;
    // Closes every socket the Connector still holds. Only from on_quiesced(), where nothing is
    // in flight any more (the owner must have fed every completion of the Connector's ops).
    void release(core::Session& owner) noexcept;

private:
    struct Attempt {
        core::UniqueFd fd;
        size_t index = 0;  // into addrs_
        bool in_flight = false;
    };
    void start_next(core::Session& owner) noexcept;
    void arm_stagger(core::Session& owner) noexcept;
    void finish_failed(core::Session& owner) noexcept;
    bool any_in_flight() const noexcept;

    uint8_t op_base_;
    uint8_t timer_op_;
    Addresses addrs_;
    std::array<Attempt, kMaxParallel> attempts_{};
    size_t next_ = 0;
    size_t winner_index_ = 0;
    core::UniqueFd winner_;
    core::TimerHandle timer_{};
    bool timer_armed_ = false;
    bool nodelay_ = true;
    int first_error_ = 0;
    Status status_ = Status::kPending;
};

}  // namespace runewarp::net
