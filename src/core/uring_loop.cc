// The io_uring backend of Loop: one ring per worker, ops tagged with packed tokens, batched CQEs.
#include <liburing.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <memory>
#include <vector>

#include "core/loop.hh"

namespace runewarp::core {
namespace {

// Op values >= 0x80 are reserved for the backend: the poll prefixes linked in front of a
// splice carry the splice's token with this bit set, so cancel(token) can reach them too.
constexpr uint8_t kPrefixBit = 0x80;
constexpr uint8_t kOpInternalCancel = 0x81;

bool probe_has(io_uring_probe* p, int op) {
    return io_uring_opcode_supported(p, op) != 0;
}

class UringLoop final : public Loop {
public:
    UringLoop() = default;
    UringLoop(const UringLoop&) = delete;
    UringLoop& operator=(const UringLoop&) = delete;
    ~UringLoop() override {
        for (size_t g = 0; g < groups_.size(); ++g)
            if (groups_[g].ring != nullptr) remove_buffer_ring(static_cast<int>(g));
        if (initialised_) io_uring_queue_exit(&ring_);
    }

    Result<void> init(uint32_t entries) {
        // SINGLE_ISSUER | DEFER_TASKRUN (6.1+) run completion work only when we wait, on this
        // thread, which is exactly the worker model. Older kernels reject the flags with EINVAL.
        const unsigned attempts[] = {IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN,
                                     IORING_SETUP_SINGLE_ISSUER, 0};
        int ret = -EINVAL;
        for (unsigned flags : attempts) {
            io_uring_params p{};
            p.flags = flags;
            ret = io_uring_queue_init_params(entries, &ring_, &p);
            if (ret == 0) {
                features_ = p.features;
                defer_taskrun_ = (flags & IORING_SETUP_DEFER_TASKRUN) != 0;
                break;
            }
            if (ret != -EINVAL) break;
        }
        if (ret < 0) return Error::sys(-ret, "io_uring_setup");
        initialised_ = true;

        if (!(features_ & IORING_FEAT_CQE_SKIP) || !(features_ & IORING_FEAT_NODROP))
            return Error::msg("io_uring_setup: kernel lacks IORING_FEAT_CQE_SKIP/NODROP");
        io_uring_probe* probe = io_uring_get_probe_ring(&ring_);
        if (probe == nullptr) return Error::msg("io_uring_get_probe: probe unsupported");
        const int needed[] = {IORING_OP_ACCEPT, IORING_OP_CONNECT,  IORING_OP_RECV,
                              IORING_OP_SEND,   IORING_OP_RECVMSG,  IORING_OP_SENDMSG,
                              IORING_OP_SPLICE, IORING_OP_POLL_ADD, IORING_OP_ASYNC_CANCEL,
                              IORING_OP_READ};
        for (int op : needed) {
            if (!probe_has(probe, op)) {
                io_uring_free_probe(probe);
                return Error::msg("io_uring_get_probe: opcode " + std::to_string(op) +
                                  " unsupported");
            }
        }
        // Multishot accept and buffer rings arrived in 5.19 together with IORING_OP_SOCKET,
        // which the probe can see (multishot itself is a flag, not an opcode).
        caps_.multishot_accept = probe_has(probe, IORING_OP_SOCKET);
        caps_.buffer_rings = caps_.multishot_accept;
        io_uring_free_probe(probe);
        return {};
    }

    Backend backend() const noexcept override { return Backend::io_uring; }
    const Caps& caps() const noexcept override { return caps_; }

    void accept(Token t, int fd, bool multishot) noexcept override {
        io_uring_sqe* sqe = sqe_for(t);
        if (sqe == nullptr) return;
        if (multishot && caps_.multishot_accept)
            io_uring_prep_multishot_accept(sqe, fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        else
            io_uring_prep_accept(sqe, fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    }
    void connect(Token t, int fd, const sockaddr* addr, socklen_t len) noexcept override {
        if (io_uring_sqe* sqe = sqe_for(t)) io_uring_prep_connect(sqe, fd, addr, len);
    }
    void recv(Token t, int fd, void* buf, uint32_t len, int flags) noexcept override {
        if (io_uring_sqe* sqe = sqe_for(t)) io_uring_prep_recv(sqe, fd, buf, len, flags);
    }
    void send(Token t, int fd, const void* buf, uint32_t len, int flags) noexcept override {
        if (io_uring_sqe* sqe = sqe_for(t))
            io_uring_prep_send(sqe, fd, buf, len, flags | MSG_NOSIGNAL);
    }
    void read(Token t, int fd, void* buf, uint32_t len) noexcept override {
        // Offset -1: "current position", the only meaning that also fits non-seekable fds.
        if (io_uring_sqe* sqe = sqe_for(t)) io_uring_prep_read(sqe, fd, buf, len, UINT64_MAX);
    }
    void recvmsg(Token t, int fd, msghdr* msg, int flags) noexcept override {
        if (io_uring_sqe* sqe = sqe_for(t)) io_uring_prep_recvmsg(sqe, fd, msg, flags);
    }
    void sendmsg(Token t, int fd, const msghdr* msg, int flags) noexcept override {
        if (io_uring_sqe* sqe = sqe_for(t))
            io_uring_prep_sendmsg(sqe, fd, msg, flags | MSG_NOSIGNAL);
    }
    void splice(Token t, int fd_in, int fd_out, uint32_t len) noexcept override {
        // IORING_OP_SPLICE is never poll-driven by the kernel: on an O_NONBLOCK socket it would
        // complete with -EAGAIN. So it is linked behind one-shot polls (source readable, sink
        // writable) whose successful CQEs are skipped; only the splice's own CQE is visible.
        // A failed poll breaks the link and the splice completes with -ECANCELED.
        Token prefix = t;
        prefix.op = static_cast<uint8_t>(t.op | kPrefixBit);
        ensure_space(3);
        io_uring_sqe* p1 = sqe_for(prefix);
        io_uring_sqe* p2 = sqe_for(prefix);
        io_uring_sqe* sp = sqe_for(t);
        if (p1 == nullptr || p2 == nullptr || sp == nullptr) return;
        io_uring_prep_poll_add(p1, fd_in, POLLIN);
        io_uring_sqe_set_flags(p1, IOSQE_IO_LINK | IOSQE_CQE_SKIP_SUCCESS);
        io_uring_prep_poll_add(p2, fd_out, POLLOUT);
        io_uring_sqe_set_flags(p2, IOSQE_IO_LINK | IOSQE_CQE_SKIP_SUCCESS);
        io_uring_prep_splice(sp, fd_in, -1, fd_out, -1, len, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    }
    void poll(Token t, int fd, uint32_t events) noexcept override {
        if (io_uring_sqe* sqe = sqe_for(t)) io_uring_prep_poll_add(sqe, fd, events);
    }
    void cancel(Token t) noexcept override {
        Token prefix = t;
        prefix.op = static_cast<uint8_t>(t.op | kPrefixBit);
        ensure_space(2);
        // The prefix first: a splice still waiting behind its polls is reachable only via them.
        for (Token target : {prefix, t}) {
            io_uring_sqe* sqe = sqe_for(Token{Token::kInternalSlot, 0, kOpInternalCancel});
            if (sqe == nullptr) return;
            io_uring_prep_cancel64(sqe, target.pack(), IORING_ASYNC_CANCEL_ALL);
        }
    }
    void close(int fd) noexcept override {
        if (fd >= 0) ::close(fd);
    }

    int add_buffer_ring(uint8_t* storage, uint32_t count, uint32_t size) noexcept override {
        if (!caps_.buffer_rings) return -EOPNOTSUPP;
        if (count == 0 || count > 32768 || (count & (count - 1)) != 0) return -EINVAL;
        size_t gid = 0;
        while (gid < groups_.size() && groups_[gid].ring != nullptr) ++gid;
        if (gid >= 0xffff) return -ENOSPC;
        // liburing 2.3 has no io_uring_setup_buf_ring(): the ring itself is page-aligned memory
        // we map and register.
        size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
        size_t bytes = (count * sizeof(io_uring_buf) + page - 1) / page * page;
        void* mem =
            ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
        if (mem == MAP_FAILED) return -errno;
        io_uring_buf_reg reg{};
        reg.ring_addr = reinterpret_cast<uint64_t>(mem);
        reg.ring_entries = count;
        reg.bgid = static_cast<uint16_t>(gid);
        int ret = io_uring_register_buf_ring(&ring_, &reg, 0);
        if (ret < 0) {
            ::munmap(mem, bytes);
            return ret;
        }
        auto* br = static_cast<io_uring_buf_ring*>(mem);
        io_uring_buf_ring_init(br);
        BufGroup g{br, storage, size, io_uring_buf_ring_mask(count), bytes};
        for (uint32_t i = 0; i < count; ++i)
            io_uring_buf_ring_add(br, storage + static_cast<size_t>(i) * size, size,
                                  static_cast<unsigned short>(i), g.mask, static_cast<int>(i));
        io_uring_buf_ring_advance(br, static_cast<int>(count));
        if (gid == groups_.size())
            groups_.push_back(g);
        else
            groups_[gid] = g;
        return static_cast<int>(gid);
    }
    void remove_buffer_ring(int group) noexcept override {
        if (group < 0 || static_cast<size_t>(group) >= groups_.size()) return;
        BufGroup& g = groups_[static_cast<size_t>(group)];
        if (g.ring == nullptr) return;
        (void)io_uring_unregister_buf_ring(&ring_, group);
        ::munmap(g.ring, g.ring_bytes);
        g = BufGroup{};
    }
    void recycle_buffer(int group, uint16_t bid) noexcept override {
        BufGroup& g = groups_[static_cast<size_t>(group)];
        io_uring_buf_ring_add(g.ring, g.storage + static_cast<size_t>(bid) * g.size, g.size, bid,
                              g.mask, 0);
        io_uring_buf_ring_advance(g.ring, 1);
    }
    void recvmsg_multishot(Token t, int fd, const msghdr* msg, int group) noexcept override {
        io_uring_sqe* sqe = sqe_for(t);
        if (sqe == nullptr) return;
        io_uring_prep_recvmsg_multishot(sqe, fd, const_cast<msghdr*>(msg), 0);
        sqe->flags |= IOSQE_BUFFER_SELECT;
        sqe->buf_group = static_cast<uint16_t>(group);
    }

    Result<int> run_once(CompletionSink& sink, int64_t timeout_ns) noexcept override {
        if (broken_ != 0) return Error::sys(broken_, "io_uring: submission queue stuck");
        int ret;
        if (timeout_ns == 0) {
            ret = io_uring_submit(&ring_);
            if (ret >= 0 && defer_taskrun_) ret = io_uring_get_events(&ring_);
        } else if (timeout_ns < 0) {
            ret = io_uring_submit_and_wait(&ring_, 1);
        } else {
            __kernel_timespec ts{};
            ts.tv_sec = timeout_ns / 1'000'000'000;
            ts.tv_nsec = timeout_ns % 1'000'000'000;
            io_uring_cqe* first = nullptr;
            ret = io_uring_submit_and_wait_timeout(&ring_, &first, 1, &ts, nullptr);
        }
        // ETIME: the wait timed out; EINTR: a signal; EAGAIN/EBUSY: CQ backlog, reaped below.
        if (ret < 0 && ret != -ETIME && ret != -EINTR && ret != -EAGAIN && ret != -EBUSY)
            return Error::sys(-ret, "io_uring_enter");

        int delivered = 0;
        unsigned seen = 0;
        unsigned head;
        io_uring_cqe* cqe;
        io_uring_for_each_cqe(&ring_, head, cqe) {
            ++seen;
            if (cqe->user_data == LIBURING_UDATA_TIMEOUT) continue;
            Token t = Token::unpack(cqe->user_data);
            if ((t.op & kPrefixBit) != 0) continue;  // backend-owned: cancels, poll prefixes
            Completion c{t, cqe->res, cqe->flags, (cqe->flags & IORING_CQE_F_MORE) != 0};
            sink.on_completion(c);
            ++delivered;
        }
        io_uring_cq_advance(&ring_, seen);
        return delivered;
    }

private:
    // Makes room for `n` SQEs in a row (a linked chain must not be split by a submit).
    void ensure_space(unsigned n) noexcept {
        if (io_uring_sq_space_left(&ring_) < n) io_uring_submit(&ring_);
    }

    // SQ full: submit what is queued and retry; the kernel consumes SQEs on submit.
    io_uring_sqe* sqe_for(Token t) noexcept {
        io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
        for (int attempt = 0; sqe == nullptr && attempt < 8; ++attempt) {
            int ret = io_uring_submit(&ring_);
            if (ret < 0 && defer_taskrun_) io_uring_get_events(&ring_);
            sqe = io_uring_get_sqe(&ring_);
        }
        if (sqe == nullptr) {
            broken_ = EBUSY;
            return nullptr;
        }
        io_uring_sqe_set_data64(sqe, t.pack());
        return sqe;
    }

    struct BufGroup {
        io_uring_buf_ring* ring = nullptr;
        uint8_t* storage = nullptr;
        uint32_t size = 0;
        int mask = 0;
        size_t ring_bytes = 0;
    };

    io_uring ring_{};
    std::vector<BufGroup> groups_;  // index = buffer group id
    bool initialised_ = false;
    bool defer_taskrun_ = false;
    unsigned features_ = 0;
    int broken_ = 0;
    Caps caps_;
};

}  // namespace

bool parse_recvmsg_buffer(uint8_t* buf, size_t len, const msghdr& msg,
                          RecvmsgBuffer& out) noexcept {
    msghdr m = msg;
    io_uring_recvmsg_out* o = io_uring_recvmsg_validate(buf, static_cast<int>(len), &m);
    if (o == nullptr) return false;
    out.name = static_cast<const sockaddr*>(io_uring_recvmsg_name(o));
    out.namelen = std::min<socklen_t>(o->namelen, m.msg_namelen);
    out.control = msghdr{};
    out.control.msg_control = reinterpret_cast<uint8_t*>(io_uring_recvmsg_name(o)) + m.msg_namelen;
    out.control.msg_controllen = std::min<size_t>(o->controllen, m.msg_controllen);
    out.payload = static_cast<const uint8_t*>(io_uring_recvmsg_payload(o, &m));
    out.payload_len = io_uring_recvmsg_payload_length(o, static_cast<int>(len), &m);
    out.truncated = (o->flags & MSG_TRUNC) != 0;
    return true;
}

Result<std::unique_ptr<Loop>> make_uring_loop(uint32_t entries) {
    auto loop = std::make_unique<UringLoop>();
    if (auto r = loop->init(entries); !r) return std::move(r).error();
    return std::unique_ptr<Loop>(std::move(loop));
}

}  // namespace runewarp::core
