// Monotonic clock helpers: the one time base for timers, deadlines and durations.
#pragma once

#include <time.h>

#include <cstdint>

namespace runewarp::core {

inline constexpr int64_t kNsPerMs = 1'000'000;
inline constexpr int64_t kNsPerSec = 1'000'000'000;

// CLOCK_MONOTONIC never jumps with wall-clock changes; it is what timerfd/io_uring timeouts use.
inline int64_t now_ns() noexcept {
    timespec ts{};
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<int64_t>(ts.tv_sec) * kNsPerSec + ts.tv_nsec;
}

inline int64_t now_ms() noexcept {
    return now_ns() / kNsPerMs;
}

}  // namespace runewarp::core
