// PipePool: bounded per-worker pool of splice pipes (pipe pages are a per-user kernel limit).
#pragma once

#include <cstdint>
#include <vector>

#include "runewarp/result.hh"

namespace runewarp::core {

// One pipe: the kernel buffer a splice relay moves pages through (socket -> wr, rd -> socket).
// A bidirectional relay takes two.
struct Pipe {
    int rd = -1;
    int wr = -1;
    bool valid() const noexcept { return rd >= 0 && wr >= 0; }
};

class PipePool {
public:
    // At most `max_pipes` exist at once (idle + lent). `pipe_size` is asked of F_SETPIPE_SZ;
    // the kernel may refuse (pipe-user-pages-soft exhausted), then the default 64 KiB stays.
    PipePool(uint32_t max_pipes, uint32_t pipe_size);
    PipePool(const PipePool&) = delete;
    PipePool& operator=(const PipePool&) = delete;
    ~PipePool();

    // An idle pipe or a new one (O_NONBLOCK | O_CLOEXEC); error EAGAIN when the bound is reached.
    Result<Pipe> acquire();
    // Returns a pipe. Only an empty pipe is reused: leftover bytes belong to a dead relay and
    // must never leak into the next one, so a non-empty pipe is closed instead.
    void release(Pipe p) noexcept;
    // Returns a pipe the caller knows is empty (it tracked every byte in and out): no FIONREAD
    // check, so the hot path of a relay costs no extra syscall.
    void release_empty(Pipe p) noexcept;

    uint32_t lent() const noexcept { return lent_; }
    uint32_t idle() const noexcept { return static_cast<uint32_t>(idle_.size()); }
    uint32_t max_pipes() const noexcept { return max_; }

private:
    uint32_t max_;
    uint32_t pipe_size_;
    uint32_t lent_ = 0;
    std::vector<Pipe> idle_;
};

}  // namespace runewarp::core
