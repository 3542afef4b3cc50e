// Client reconnect policy: full-jitter delays over a fixed window sequence.
#include "client/retry.hh"

#include "core/clock.hh"

namespace runewarp::client {

int64_t retry_window_ns(uint64_t failures) noexcept {
    uint64_t index = failures == 0 ? 0 : failures - 1;
    if (index >= kRetryWindowsSec.size()) index = kRetryWindowsSec.size() - 1;
    return kRetryWindowsSec[index] * core::kNsPerSec;
}

int64_t jittered_delay_ns(int64_t window_ns, uint64_t random) noexcept {
    if (window_ns <= 0) return 0;
    return static_cast<int64_t>(random % static_cast<uint64_t>(window_ns));
}

int64_t delay_log_seconds(int64_t delay_ns) noexcept {
    if (delay_ns <= 0) return 1;
    int64_t s = (delay_ns + core::kNsPerSec - 1) / core::kNsPerSec;
    return s < 1 ? 1 : s;
}

int64_t RetryPolicy::next_delay_ns(uint64_t random) noexcept {
    ++failures_;
    return jittered_delay_ns(retry_window_ns(failures_), random);
}

}  // namespace runewarp::client
