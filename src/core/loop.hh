// Loop: the backend-neutral completion API (io_uring or emulated on epoll) and backend selection.
#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <memory>
#include <string>

#include "core/token.hh"
#include "runewarp/result.hh"

namespace runewarp::core {

// One finished operation. `result` is what the syscall returned (>= 0) or -errno, exactly as an
// io_uring CQE reports it. `more` is true when a multishot op stays armed and will complete again;
// an op is in flight until a completion with more == false arrives.
struct Completion {
    Token token;
    int32_t result = 0;
    uint32_t flags = 0;  // IORING_CQE_F_* bits where meaningful, plus kCompletionTimer
    bool more = false;
};

// Set in Completion::flags when the completion is a Worker timer firing (result == -ETIME).
inline constexpr uint32_t kCompletionTimer = 1u << 31;

class CompletionSink {
public:
    virtual void on_completion(const Completion& c) noexcept = 0;

protected:
    ~CompletionSink() = default;
};

enum class Backend { io_uring, epoll };
const char* backend_name(Backend b) noexcept;

// What only some backends do natively. Callers branch on these, never on the backend itself.
struct Caps {
    bool multishot_accept = false;  // one accept op keeps delivering connections (more == true)
    bool buffer_rings = false;      // provided-buffer rings can be registered (io_uring only)
};

// The operations. Every op is submitted against a token and completes exactly once with
// more == false (multishot accept may complete several times before that). Pointers passed in
// (buffers, sockaddr, msghdr) must stay valid until that final completion: the kernel or the
// epoll emulation reads/writes them asynchronously. fds must be non-blocking (the epoll backend
// relies on EAGAIN; io_uring does not care). Submission never allocates per op and never calls
// back into the sink; errors detected at submission arrive as completions.
class Loop {
public:
    virtual ~Loop() = default;

    virtual Backend backend() const noexcept = 0;
    virtual const Caps& caps() const noexcept = 0;

    // Result: the accepted fd (SOCK_NONBLOCK | SOCK_CLOEXEC) or -errno. When `multishot` is
    // requested and caps().multishot_accept is false, a single-shot accept runs instead; callers
    // re-arm whenever a completion arrives with more == false.
    virtual void accept(Token t, int fd, bool multishot) noexcept = 0;
    // Result: 0 or -errno (e.g. -ECONNREFUSED). `addr` must outlive the op.
    virtual void connect(Token t, int fd, const sockaddr* addr, socklen_t len) noexcept = 0;
    // Result: bytes (0 = EOF) or -errno. MSG_PEEK and friends pass through `flags`.
    virtual void recv(Token t, int fd, void* buf, uint32_t len, int flags) noexcept = 0;
    virtual void send(Token t, int fd, const void* buf, uint32_t len, int flags) noexcept = 0;
    // read(2) for non-sockets (signalfd, pipes, eventfd).
    virtual void read(Token t, int fd, void* buf, uint32_t len) noexcept = 0;
    virtual void recvmsg(Token t, int fd, msghdr* msg, int flags) noexcept = 0;
    virtual void sendmsg(Token t, int fd, const msghdr* msg, int flags) noexcept = 0;
    // Moves up to `len` bytes; one of the fds must be a pipe. Result: bytes (0 = EOF) or -errno.
    virtual void splice(Token t, int fd_in, int fd_out, uint32_t len) noexcept = 0;
    // One-shot readiness (POLLIN / POLLOUT ...). Result: the revents mask or -errno.
    virtual void poll(Token t, int fd, uint32_t events) noexcept = 0;
    // Cancels every in-flight op whose token equals `t`; each completes (usually -ECANCELED, or
    // with the result it already reached). Cancelling nothing is harmless.
    virtual void cancel(Token t) noexcept = 0;
    // Closes an fd synchronously after dropping backend state for it. Only legal once no op on
    // the fd is in flight (the Worker's teardown rule); close(2) on an idle socket does not block.
    virtual void close(int fd) noexcept = 0;

    // Submits queued ops, waits up to `timeout_ns` (-1 = forever, 0 = poll) for completions and
    // hands every available one to `sink`. Returns how many were delivered; an Error is fatal
    // (the ring or epoll instance is broken).
    virtual Result<int> run_once(CompletionSink& sink, int64_t timeout_ns) noexcept = 0;
};

enum class BackendChoice { automatic, io_uring, epoll };

struct LoopOptions {
    BackendChoice choice = BackendChoice::automatic;
    uint32_t ring_entries = 1024;
    // Environment override (RUNEWARP_EVENT_BACKEND=io_uring|epoll) beats `automatic`; an explicit
    // choice in code is honoured as given. Tests clear this to ignore the environment.
    bool honour_env = true;
    // Test hook: when set, used instead of io_uring_setup's real outcome (an errno or 0 = ok).
    int (*probe_hook)() = nullptr;
};

struct LoopSelection {
    std::unique_ptr<Loop> loop;
    // Empty when the preferred backend came up; otherwise why the loop fell back to epoll,
    // e.g. "io_uring unavailable: io_uring_setup: Operation not permitted (...)".
    std::string fallback_reason;
};

// Probes io_uring (ring setup and the opcodes the loop uses) and picks a backend. An explicit
// io_uring choice that cannot be met is an error, never a silent fallback.
Result<LoopSelection> make_loop(const LoopOptions& opts = {});

// Backends, exposed for tests and for make_loop.
Result<std::unique_ptr<Loop>> make_uring_loop(uint32_t entries);
Result<std::unique_ptr<Loop>> make_epoll_loop();

}  // namespace runewarp::core
