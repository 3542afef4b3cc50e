// The epoll backend of Loop: readiness emulated into completions (wait, make the syscall, deliver).
#include <fcntl.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <memory>
#include <vector>

#include "core/loop.hh"
#include "core/unique_fd.hh"

namespace runewarp::core {
namespace {

constexpr uint32_t kNone = UINT32_MAX;
constexpr uint32_t kBadEvents = EPOLLERR | EPOLLHUP;

enum class Kind : uint8_t { accept, connect, recv, send, read, recvmsg, sendmsg, splice, poll };

// One pending op. Records live in a pool that only grows (amortised); the hot path reuses them.
struct Op {
    Token token;
    Kind kind = Kind::poll;
    bool multishot = false;
    bool live = false;
    int fd = -1;   // the fd this op currently waits on
    int src = -1;  // splice source and sink
    int dst = -1;
    uint32_t want = 0;  // EPOLLIN or EPOLLOUT (poll ops: the requested mask)
    void* buf = nullptr;
    const void* cbuf = nullptr;
    uint32_t len = 0;
    int flags = 0;
    uint32_t fd_next = kNone, fd_prev = kNone;      // waiters on `fd`
    uint32_t slot_next = kNone, slot_prev = kNone;  // ops of one token slot (for cancel)
};

struct FdState {
    uint32_t head = kNone;
    uint32_t registered = 0;  // event mask last given to epoll_ctl
    bool added = false;
    bool dirty = false;
};

class EpollLoop final : public Loop {
public:
    Result<void> init() {
        epfd_.reset(::epoll_create1(EPOLL_CLOEXEC));
        if (!epfd_) return Error::sys(errno, "epoll_create1");
        ops_.reserve(1024);
        free_.reserve(1024);
        ready_.reserve(1024);
        dirty_.reserve(256);
        caps_.multishot_accept = true;  // emulated: the op stays armed and accepts until EAGAIN
        return {};
    }

    Backend backend() const noexcept override { return Backend::epoll; }
    const Caps& caps() const noexcept override { return caps_; }

    void accept(Token t, int fd, bool multishot) noexcept override {
        Op& op = make(t, Kind::accept, fd, EPOLLIN);
        op.multishot = multishot;
        arm(op);
    }
    void connect(Token t, int fd, const sockaddr* addr, socklen_t len) noexcept override {
        // The connect syscall starts the handshake now; EPOLLOUT + SO_ERROR reports its end.
        if (::connect(fd, addr, len) == 0) return complete_now(t, 0);
        if (errno != EINPROGRESS) return complete_now(t, -errno);
        arm(make(t, Kind::connect, fd, EPOLLOUT));
    }
    void recv(Token t, int fd, void* buf, uint32_t len, int flags) noexcept override {
        Op& op = make(t, Kind::recv, fd, EPOLLIN);
        op.buf = buf, op.len = len, op.flags = flags;
        arm(op);
    }
    void send(Token t, int fd, const void* buf, uint32_t len, int flags) noexcept override {
        Op& op = make(t, Kind::send, fd, EPOLLOUT);
        op.cbuf = buf, op.len = len, op.flags = flags;
        arm(op);
    }
    void read(Token t, int fd, void* buf, uint32_t len) noexcept override {
        Op& op = make(t, Kind::read, fd, EPOLLIN);
        op.buf = buf, op.len = len;
        arm(op);
    }
    void recvmsg(Token t, int fd, msghdr* msg, int flags) noexcept override {
        Op& op = make(t, Kind::recvmsg, fd, EPOLLIN);
        op.buf = msg, op.flags = flags;
        arm(op);
    }
    void sendmsg(Token t, int fd, const msghdr* msg, int flags) noexcept override {
        Op& op = make(t, Kind::sendmsg, fd, EPOLLOUT);
        op.cbuf = msg, op.flags = flags;
        arm(op);
    }
    void splice(Token t, int fd_in, int fd_out, uint32_t len) noexcept override {
        // Waits for the source first; on EAGAIN it alternates to the sink (see attempt()).
        Op& op = make(t, Kind::splice, fd_in, EPOLLIN);
        op.src = fd_in, op.dst = fd_out, op.len = len;
        arm(op);
    }
    void poll(Token t, int fd, uint32_t events) noexcept override {
        arm(make(t, Kind::poll, fd, events));
    }
    void cancel(Token t) noexcept override {
        uint32_t i = slot_head(t.slot);
        while (i != kNone) {
            uint32_t next = ops_[i].slot_next;
            if (ops_[i].token == t) finish(i, -ECANCELED);
            i = next;
        }
    }
    void close(int fd) noexcept override {
        if (fd < 0) return;
        if (static_cast<size_t>(fd) < fds_.size()) {
            FdState& st = fds_[fd];
            // Ops still waiting here break the teardown rule; end them rather than leave them
            // pointing at a number the next open() may reuse.
            while (st.head != kNone) finish(st.head, -ECANCELED);
            if (st.added) ::epoll_ctl(epfd_.get(), EPOLL_CTL_DEL, fd, nullptr);
            st.added = false;
            st.registered = 0;
        }
        ::close(fd);
    }

    void forget(int fd) noexcept override {
        if (fd < 0 || static_cast<size_t>(fd) >= fds_.size()) return;
        FdState& st = fds_[fd];
        while (st.head != kNone) finish(st.head, -ECANCELED);
        if (st.added) ::epoll_ctl(epfd_.get(), EPOLL_CTL_DEL, fd, nullptr);
        st.added = false;
        st.registered = 0;
    }

    Result<int> run_once(CompletionSink& sink, int64_t timeout_ns) noexcept override {
        sync_interest();
        int timeout_ms = -1;
        if (!ready_.empty() || timeout_ns == 0)
            timeout_ms = 0;
        else if (timeout_ns > 0)  // round up: a timer must never be reported early
            timeout_ms = static_cast<int>((timeout_ns + 999'999) / 1'000'000);
        epoll_event events[256];
        int n = ::epoll_wait(epfd_.get(), events, 256, timeout_ms);
        if (n < 0) {
            if (errno != EINTR) return Error::sys(errno, "epoll_wait");
            n = 0;
        }
        for (int e = 0; e < n; ++e) on_ready(events[e].data.fd, events[e].events);

        // Handlers may submit or cancel while we deliver; cancels append here and are
        // delivered in this same pass, submissions wait for the next run_once.
        int delivered = 0;
        for (size_t i = 0; i < ready_.size(); ++i) {
            Completion c = ready_[i];
            sink.on_completion(c);
            ++delivered;
        }
        ready_.clear();
        return delivered;
    }

private:
    uint32_t slot_head(uint32_t slot) const noexcept {
        return slot < slot_heads_.size() ? slot_heads_[slot] : kNone;
    }

    Op& make(Token t, Kind kind, int fd, uint32_t want) noexcept {
        uint32_t i;
        if (!free_.empty()) {
            i = free_.back();
            free_.pop_back();
        } else {
            i = static_cast<uint32_t>(ops_.size());
            ops_.emplace_back();
        }
        Op& op = ops_[i];
        op = Op{};
        op.token = t, op.kind = kind, op.fd = fd, op.want = want, op.live = true;
        if (t.slot != Token::kInternalSlot) {
            if (t.slot >= slot_heads_.size()) slot_heads_.resize(t.slot + 1, kNone);
            op.slot_next = slot_heads_[t.slot];
            if (op.slot_next != kNone) ops_[op.slot_next].slot_prev = i;
            slot_heads_[t.slot] = i;
        }
        return op;
    }

    uint32_t index_of(const Op& op) const noexcept {
        return static_cast<uint32_t>(&op - ops_.data());
    }

    FdState& fd_state(int fd) noexcept {
        if (static_cast<size_t>(fd) >= fds_.size()) fds_.resize(static_cast<size_t>(fd) + 64);
        return fds_[fd];
    }

    void mark_dirty(int fd) noexcept {
        FdState& st = fd_state(fd);
        if (!st.dirty) {
            st.dirty = true;
            dirty_.push_back(fd);
        }
    }

    // Puts the op on its fd's waiter list; epoll interest is synced before the next wait.
    void arm(Op& op) noexcept {
        if (op.fd < 0) return finish(index_of(op), -EBADF);
        uint32_t i = index_of(op);
        FdState& st = fd_state(op.fd);
        op.fd_prev = kNone;
        op.fd_next = st.head;
        if (st.head != kNone) ops_[st.head].fd_prev = i;
        st.head = i;
        mark_dirty(op.fd);
    }

    void unlink_fd(Op& op) noexcept {
        FdState& st = fd_state(op.fd);
        if (op.fd_prev != kNone)
            ops_[op.fd_prev].fd_next = op.fd_next;
        else
            st.head = op.fd_next;
        if (op.fd_next != kNone) ops_[op.fd_next].fd_prev = op.fd_prev;
        op.fd_next = op.fd_prev = kNone;
        mark_dirty(op.fd);
    }

    void complete_now(Token t, int32_t res) noexcept {
        ready_.push_back(Completion{t, res, 0, false});
    }

    // Final completion: queue it, unlink the op everywhere and recycle its record.
    void finish(uint32_t i, int32_t res) noexcept {
        Op& op = ops_[i];
        ready_.push_back(Completion{op.token, res, 0, false});
        unlink_fd(op);
        if (op.token.slot != Token::kInternalSlot) {
            if (op.slot_prev != kNone)
                ops_[op.slot_prev].slot_next = op.slot_next;
            else
                slot_heads_[op.token.slot] = op.slot_next;
            if (op.slot_next != kNone) ops_[op.slot_next].slot_prev = op.slot_prev;
        }
        op.live = false;
        free_.push_back(i);
    }

    void sync_interest() noexcept {
        // Index loop: failing an fd below re-marks it dirty (appends to dirty_).
        for (size_t k = 0; k < dirty_.size(); ++k) {
            int fd = dirty_[k];
            FdState& st = fds_[fd];
            st.dirty = false;
            uint32_t want = 0;
            for (uint32_t i = st.head; i != kNone; i = ops_[i].fd_next) want |= ops_[i].want;
            if (want == st.registered && (st.added || want == 0)) continue;
            epoll_event ev{};
            ev.events = want;
            ev.data.fd = fd;
            int rc;
            if (st.added) {
                rc = ::epoll_ctl(epfd_.get(), EPOLL_CTL_MOD, fd, &ev);
                // The fd was closed behind our back (epoll dropped it) and the number reused.
                if (rc < 0 && errno == ENOENT)
                    rc = ::epoll_ctl(epfd_.get(), EPOLL_CTL_ADD, fd, &ev);
            } else {
                rc = ::epoll_ctl(epfd_.get(), EPOLL_CTL_ADD, fd, &ev);
                if (rc < 0 && errno == EEXIST)
                    rc = ::epoll_ctl(epfd_.get(), EPOLL_CTL_MOD, fd, &ev);
            }
            if (rc < 0) {
                // Not pollable (EPERM: regular file) or bad fd: every waiter fails with it.
                int err = -errno;
                while (st.head != kNone) finish(st.head, err);
                st.dirty = false;
                st.added = false;
                st.registered = 0;
                continue;
            }
            st.added = true;
            st.registered = want;
        }
        dirty_.clear();
    }

    void on_ready(int fd, uint32_t revents) noexcept {
        if (static_cast<size_t>(fd) >= fds_.size()) return;
        uint32_t i = fds_[fd].head;
        if (i == kNone) mark_dirty(fd);  // nobody waits: drop the interest (level-triggered)
        while (i != kNone) {
            uint32_t next = ops_[i].fd_next;
            if ((ops_[i].want & revents) != 0 || (revents & kBadEvents) != 0) attempt(i, revents);
            i = next;
        }
    }

    static bool again(ssize_t r) noexcept { return r < 0 && (errno == EAGAIN); }

    void attempt(uint32_t i, uint32_t revents) noexcept {
        Op& op = ops_[i];
        ssize_t r = 0;
        switch (op.kind) {
            case Kind::accept:
                for (int n = 0; n < 32; ++n) {
                    int cfd = ::accept4(op.fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (cfd < 0) {
                        if (errno == EAGAIN) return;
                        return finish(i, -errno);
                    }
                    if (!op.multishot) return finish(i, cfd);
                    ready_.push_back(Completion{op.token, cfd, 0, true});
                }
                return;
            case Kind::connect: {
                int err = 0;
                socklen_t len = sizeof err;
                if (::getsockopt(op.fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) err = errno;
                return finish(i, -err);
            }
            case Kind::recv:
                r = ::recv(op.fd, op.buf, op.len, op.flags | MSG_DONTWAIT);
                break;
            case Kind::send:
                r = ::send(op.fd, op.cbuf, op.len, op.flags | MSG_DONTWAIT | MSG_NOSIGNAL);
                break;
            case Kind::read:
                r = ::read(op.fd, op.buf, op.len);
                break;
            case Kind::recvmsg:
                r = ::recvmsg(op.fd, static_cast<msghdr*>(op.buf), op.flags | MSG_DONTWAIT);
                break;
            case Kind::sendmsg:
                r = ::sendmsg(op.fd, static_cast<const msghdr*>(op.cbuf),
                              op.flags | MSG_DONTWAIT | MSG_NOSIGNAL);
                break;
            case Kind::splice:
                r = ::splice(op.src, nullptr, op.dst, nullptr, op.len,
                             SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
                if (again(r)) {
                    // The side we waited on is ready, so the other one blocks: wait on it next.
                    unlink_fd(op);
                    bool on_src = op.want == EPOLLIN;
                    op.fd = on_src ? op.dst : op.src;
                    op.want = on_src ? EPOLLOUT : EPOLLIN;
                    arm(op);
                    return;
                }
                break;
            case Kind::poll:
                return finish(i, static_cast<int32_t>(revents & (op.want | kBadEvents)));
        }
        if (again(r)) return;
        finish(i, r < 0 ? -errno : static_cast<int32_t>(r));
    }

    UniqueFd epfd_;
    Caps caps_;
    std::vector<Op> ops_;
    std::vector<uint32_t> free_;
    std::vector<FdState> fds_;
    std::vector<int> dirty_;
    std::vector<uint32_t> slot_heads_;
    std::vector<Completion> ready_;
};

}  // namespace

Result<std::unique_ptr<Loop>> make_epoll_loop() {
    auto loop = std::make_unique<EpollLoop>();
    if (auto r = loop->init(); !r) return std::move(r).error();
    return std::unique_ptr<Loop>(std::move(loop));
}

}  // namespace runewarp::core
