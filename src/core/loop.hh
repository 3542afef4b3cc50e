// Loop: the backend-neutral completion API (io_uring or emulated on epoll) and backend selection.
#pragma once

#include <sys/socket.h>

#include <cerrno>
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

// The provided buffer a completion filled (IORING_CQE_F_BUFFER, id in the upper 16 bits), or -1.
inline int completion_buffer(const Completion& c) noexcept {
    if ((c.flags & kCompletionTimer) != 0 || (c.flags & 1u) == 0) return -1;
    return static_cast<int>((c.flags >> 16) & 0xffffu);
}

// One datagram as a multishot recvmsg laid it out in a provided buffer.
struct RecvmsgBuffer {
    const sockaddr* name = nullptr;
    socklen_t namelen = 0;
    msghdr control{};  // msg_control / msg_controllen only, for CMSG_FIRSTHDR / CMSG_NXTHDR
    const uint8_t* payload = nullptr;
    size_t payload_len = 0;
    bool truncated = false;  // MSG_TRUNC: the datagram did not fit the buffer
};
// Parses the `len` bytes (the completion's result) of buffer `buf`, received with the
// msg_namelen / msg_controllen of `msg`. False when the layout is inconsistent.
bool parse_recvmsg_buffer(uint8_t* buf, size_t len, const msghdr& msg, RecvmsgBuffer& out) noexcept;

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
    // Drops backend state for an fd that stays open but leaves this loop (handed to another
    // thread's loop). Only legal once no op on the fd is in flight.
    virtual void forget(int fd) noexcept { (void)fd; }

    // Provided-buffer rings (caps().buffer_rings; other backends refuse with -EOPNOTSUPP).
    // Registers `count` (a power of two, <= 32768) buffers of `size` bytes laid out back to back
    // in `storage`, which the caller owns and keeps until remove_buffer_ring(). Returns the
    // group id (>= 0) or -errno. Registration is set-up work, never per op.
    virtual int add_buffer_ring(uint8_t* storage, uint32_t count, uint32_t size) noexcept {
        (void)storage, (void)count, (void)size;
        return -EOPNOTSUPP;
    }
    // Unregisters a group; only once no op that selects from it is in flight.
    virtual void remove_buffer_ring(int group) noexcept { (void)group; }
    // Hands buffer `bid` of `group` back to the kernel after its completion was consumed.
    virtual void recycle_buffer(int group, uint16_t bid) noexcept { (void)group, (void)bid; }
    // Multishot recvmsg (caps().buffer_rings only): stays armed and completes once per datagram
    // (a GRO batch counts as one) with `more == true`, each time in a buffer picked from `group`
    // (completion_buffer() names it; parse it with parse_recvmsg_buffer()). `msg` supplies only
    // msg_namelen and msg_controllen, and must outlive the op. It ends (more == false) on an
    // error, on cancel, or with -ENOBUFS when the group ran dry; re-arm then.
    virtual void recvmsg_multishot(Token t, int fd, const msghdr* msg, int group) noexcept {
        (void)fd, (void)msg, (void)group, (void)t;
    }

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
