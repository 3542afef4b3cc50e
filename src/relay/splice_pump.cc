// SplicePump: one direction of a TCP-to-TCP relay moved socket -> pipe -> socket with splice(2).
#include "relay/splice_pump.hh"

#include <fcntl.h>
#include <sys/socket.h>

#include <cerrno>

namespace runewarp::relay {

namespace {

// Ask for more than a pipe holds; the kernel caps each splice at the pipe's free space.
constexpr size_t kSpliceChunk = 1u << 20;
constexpr unsigned kSpliceFlags = SPLICE_F_NONBLOCK | SPLICE_F_MOVE;
// A read this short almost surely emptied the socket's receive queue (tcp_splice_read takes all
// that is queued until the pipe runs out of slots). Once it is delivered, wait for readiness
// instead of paying for a splice that would only say EAGAIN; readiness is level-triggered, so
// bytes that arrived meanwhile complete the wait at once.
constexpr ssize_t kShortRead = 16 * 1024;

}  // namespace

PumpWait SplicePump::pump(core::PipePool& pool, uint64_t budget) noexcept {
    if (done_) return PumpWait::kDone;
    if (error_ != 0) return PumpWait::kError;
    uint64_t moved = 0;
    bool drained = false;
    for (;;) {
        if (in_pipe_ > 0) {
            ssize_t n = ::splice(pipe_.rd, nullptr, dst_, nullptr, in_pipe_, kSpliceFlags);
            if (n > 0) {
                in_pipe_ -= static_cast<uint32_t>(n);
                continue;
            }
            if (n < 0 && errno == EINTR) continue;
            if (n < 0 && errno == EAGAIN) return PumpWait::kWritable;
            error_ = n < 0 ? errno : EPIPE;
            return PumpWait::kError;
        }
        // The pipe is empty.
        if (src_eof_) {
            release(pool);
            // FIN maps to FIN in the same direction.
            if (::shutdown(dst_, SHUT_WR) != 0 && errno != ENOTCONN) {
                error_ = errno;
                return PumpWait::kError;
            }
            done_ = true;
            return PumpWait::kDone;
        }
        if (moved >= budget || drained) {
            release(pool);
            return PumpWait::kReadable;
        }
        if (!pipe_.valid()) {
            auto p = pool.acquire();
            if (!p) {
                error_ = p.error().code != 0 ? p.error().code : EAGAIN;
                return PumpWait::kError;
            }
            pipe_ = *p;
        }
        ssize_t n = ::splice(src_, nullptr, pipe_.wr, nullptr, kSpliceChunk, kSpliceFlags);
        if (n > 0) {
            in_pipe_ = static_cast<uint32_t>(n);
            bytes_ += static_cast<uint64_t>(n);
            moved += static_cast<uint64_t>(n);
            drained = n < kShortRead;
            continue;
        }
        if (n == 0) {
            src_eof_ = true;
            continue;
        }
        if (errno == EINTR) continue;
        if (errno == EAGAIN) {
            // Nothing to read: an idle direction holds no pipe.
            release(pool);
            return PumpWait::kReadable;
        }
        error_ = errno;
        return PumpWait::kError;
    }
}

void SplicePump::release(core::PipePool& pool) noexcept {
    if (!pipe_.valid()) return;
    if (in_pipe_ == 0) {
        pool.release_empty(pipe_);
    } else {
        pool.release(pipe_);  // bytes left behind: the pool closes the pipe
    }
    pipe_ = core::Pipe{};
    in_pipe_ = 0;
}

}  // namespace runewarp::relay
