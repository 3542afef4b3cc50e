// Client reconnect policy: full-jitter delays over a fixed window sequence.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

namespace runewarp::client {

// Retry windows in seconds; the last one repeats.
inline constexpr std::array<int64_t, 10> kRetryWindowsSec = {1, 2, 3, 5, 8, 12, 18, 27, 41, 60};

// The window for the attempt after `failures` consecutive failures (1 = first failure).
// failures == 0 is treated like 1.
int64_t retry_window_ns(uint64_t failures) noexcept;

// Uniform in [0, window_ns) from a 64-bit random value (nanosecond resolution).
int64_t jittered_delay_ns(int64_t window_ns, uint64_t random) noexcept;

// What log lines show: the delay rounded up to whole seconds, at least 1.
int64_t delay_log_seconds(int64_t delay_ns) noexcept;

// Per Server address: advances one window per failure or ended connection, restarts at 1 s after
// every successful authenticated connection.
class RetryPolicy {
public:
    // Records one failure (or ended connection) and returns the delay before the next attempt.
    int64_t next_delay_ns(uint64_t random) noexcept;
    // A successful authenticated connection: the next failure waits within the 1 s window.
    void reset() noexcept { failures_ = 0; }
    uint64_t failures() const noexcept { return failures_; }

private:
    uint64_t failures_ = 0;
};

}  // namespace runewarp::client
