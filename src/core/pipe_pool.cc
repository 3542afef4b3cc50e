// PipePool implementation.
#include "core/pipe_pool.hh"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cerrno>

namespace runewarp::core {

namespace {
void close_pipe(Pipe p) noexcept {
    if (p.rd >= 0) ::close(p.rd);
    if (p.wr >= 0) ::close(p.wr);
}
}  // namespace

PipePool::PipePool(uint32_t max_pipes, uint32_t pipe_size)
    : max_(max_pipes), pipe_size_(pipe_size) {
    idle_.reserve(max_pipes);
}

PipePool::~PipePool() {
    for (Pipe p : idle_) close_pipe(p);
}

Result<Pipe> PipePool::acquire() {
    if (!idle_.empty()) {
        Pipe p = idle_.back();
        idle_.pop_back();
        ++lent_;
        return p;
    }
    if (lent_ >= max_) return Error{EAGAIN, "pipe pool exhausted"};
    int fds[2];
    if (::pipe2(fds, O_NONBLOCK | O_CLOEXEC) < 0) return Error::sys(errno, "pipe2");
    if (pipe_size_ > 0) (void)::fcntl(fds[1], F_SETPIPE_SZ, static_cast<int>(pipe_size_));
    ++lent_;
    return Pipe{fds[0], fds[1]};
}

void PipePool::release(Pipe p) noexcept {
    if (!p.valid()) return;
    if (lent_ > 0) --lent_;
    int queued = 0;
    if (::ioctl(p.rd, FIONREAD, &queued) == 0 && queued == 0 && idle_.size() < max_) {
        idle_.push_back(p);
        return;
    }
    close_pipe(p);
}

void PipePool::release_empty(Pipe p) noexcept {
    if (!p.valid()) return;
    if (lent_ > 0) --lent_;
    if (idle_.size() < max_) {
        idle_.push_back(p);
        return;
    }
    close_pipe(p);
}

}  // namespace runewarp::core
