// SplicePump: one direction of a TCP-to-TCP relay moved socket -> pipe -> socket with splice(2),
// so payload bytes never enter user space.
#pragma once

#include <cstdint>

#include "core/pipe_pool.hh"

namespace runewarp::relay {

// What the pump needs before it can make progress again.
enum class PumpWait : uint8_t {
    kReadable,  // the pipe is empty: wait for the source to become readable (or to close)
    kWritable,  // bytes sit in the pipe: wait for the sink to accept more
    kDone,      // source reached EOF, everything was delivered and the sink got shutdown(SHUT_WR)
    kError,     // reset or error on either side: the caller aborts the whole relay
};

// One direction. The pipe is borrowed from the pool only while bytes are in flight: an idle
// direction holds no pipe, so idle connections cost no pipe pages.
class SplicePump {
public:
    SplicePump() = default;
    SplicePump(int src, int dst) noexcept : src_(src), dst_(dst) {}

    // Moves bytes until the source has nothing, the sink is full or `budget` bytes have moved
    // (fairness between connections; on budget exhaustion the pump reports kReadable/kWritable
    // and the readiness wait completes at once). Never blocks. On kError, error() is the errno.
    PumpWait pump(core::PipePool& pool, uint64_t budget) noexcept;

    // Gives the pipe back (a non-empty one is closed by the pool). Idempotent.
    void release(core::PipePool& pool) noexcept;

    uint64_t bytes() const noexcept { return bytes_; }
    bool done() const noexcept { return done_; }
    int error() const noexcept { return error_; }
    bool holds_pipe() const noexcept { return pipe_.valid(); }

private:
    int src_ = -1;
    int dst_ = -1;
    core::Pipe pipe_{};
    uint32_t in_pipe_ = 0;
    uint64_t bytes_ = 0;
    int error_ = 0;
    bool src_eof_ = false;
    bool done_ = false;
};

}  // namespace runewarp::relay
