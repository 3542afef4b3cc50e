// TimerHeap: the one timer structure of a worker (deadlines, QUIC expiry, backoff) as a min-heap.
#pragma once

#include <cstdint>
#include <vector>

#include "core/token.hh"

namespace runewarp::core {

// A handle names one arming of one timer entry; cancel/rearm with a stale handle is a no-op.
struct TimerHandle {
    uint32_t index = UINT32_MAX;
    uint32_t generation = 0;
    bool valid() const noexcept { return index != UINT32_MAX; }
};

// Indexed binary min-heap on absolute CLOCK_MONOTONIC deadlines: arm/cancel/rearm O(log n),
// next deadline O(1). Entries are recycled through a free list, so steady state never allocates;
// storage grows (amortised) only when more timers are armed at once than ever before.
class TimerHeap {
public:
    explicit TimerHeap(uint32_t reserve = 1024);

    TimerHandle arm(int64_t deadline_ns, Token token);
    // Moves an armed timer; false when the handle is stale (fired or cancelled).
    bool rearm(TimerHandle h, int64_t deadline_ns) noexcept;
    bool cancel(TimerHandle h) noexcept;
    bool armed(TimerHandle h) const noexcept;

    // Earliest deadline, or -1 when nothing is armed.
    int64_t next_deadline() const noexcept;
    // Pops one expired timer's token (deadline <= now); false when none is due. Fired timers
    // are disarmed before their token is returned, so a handler may re-arm freely.
    bool pop_expired(int64_t now_ns, Token& out) noexcept;
    uint32_t size() const noexcept { return static_cast<uint32_t>(heap_.size()); }

private:
    struct Entry {
        int64_t deadline = 0;
        Token token;
        uint32_t generation = 1;
        uint32_t heap_pos = UINT32_MAX;  // UINT32_MAX: not armed (free)
        uint32_t seq = 0;                // arming order: equal deadlines fire first-armed-first
    };
    bool less(uint32_t a, uint32_t b) const noexcept;
    void swap_at(uint32_t i, uint32_t j) noexcept;
    void sift_up(uint32_t i) noexcept;
    void sift_down(uint32_t i) noexcept;
    void remove_at(uint32_t pos) noexcept;

    std::vector<Entry> entries_;
    std::vector<uint32_t> heap_;  // entry indices
    std::vector<uint32_t> free_;
    uint32_t seq_ = 0;
};

}  // namespace runewarp::core
