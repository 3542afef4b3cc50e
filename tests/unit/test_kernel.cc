// Kernel behaviour the event loop relies on, checked directly with liburing and syscalls.
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <fcntl.h>
#include <liburing.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

namespace {

struct Ring {
    io_uring ring{};
    Ring() { cr_assert_eq(io_uring_queue_init(64, &ring, 0), 0, "io_uring_queue_init"); }
    ~Ring() { io_uring_queue_exit(&ring); }
    io_uring_sqe* sqe() {
        io_uring_sqe* s = io_uring_get_sqe(&ring);
        cr_assert_not_null(s);
        return s;
    }
    // Waits for one CQE up to `ms`; copies it out and consumes it. False on timeout.
    bool wait(int ms, io_uring_cqe& out) {
        __kernel_timespec ts{ms / 1000, (ms % 1000) * 1'000'000LL};
        io_uring_cqe* cqe = nullptr;
        int ret = io_uring_submit_and_wait_timeout(&ring, &cqe, 1, &ts, nullptr);
        if (ret == -ETIME || cqe == nullptr) return false;
        cr_assert_geq(ret, 0, "wait: %s", strerror(-ret));
        out = *cqe;
        io_uring_cqe_seen(&ring, cqe);
        return true;
    }
};

int listener(uint16_t& port) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert_geq(fd, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    cr_assert_eq(listen(fd, 64), 0);
    socklen_t len = sizeof a;
    cr_assert_eq(getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len), 0);
    port = ntohs(a.sin_port);
    return fd;
}

int dial(uint16_t port) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert_geq(fd, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(port);
    cr_assert_eq(connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    return fd;
}

// A connected loopback pair: first = dialled end, second = accepted end.
std::pair<int, int> tcp_pair() {
    uint16_t port = 0;
    int l = listener(port);
    int c = dial(port);
    int s = accept4(l, nullptr, nullptr, SOCK_CLOEXEC);
    cr_assert_geq(s, 0);
    close(l);
    return {c, s};
}

void set_nonblocking(int fd) {
    cr_assert_eq(fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK), 0);
}

void write_all(int fd, const void* p, size_t n) {
    auto* b = static_cast<const uint8_t*>(p);
    while (n > 0) {
        ssize_t w = write(fd, b, n);
        cr_assert_gt(w, 0);
        b += w;
        n -= static_cast<size_t>(w);
    }
}

uint8_t pattern(size_t i) {
    return static_cast<uint8_t>((i * 2654435761u) >> 13);
}

}  // namespace

Test(kernel, multishot_accept_delivers_several_connections_from_one_sqe) {
    Ring r;
    uint16_t port = 0;
    int l = listener(port);
    io_uring_sqe* s = r.sqe();
    io_uring_prep_multishot_accept(s, l, nullptr, nullptr, SOCK_CLOEXEC);
    io_uring_sqe_set_data64(s, 42);
    io_uring_submit(&r.ring);

    int clients[3];
    for (int& c : clients) c = dial(port);
    for (int i = 0; i < 3; ++i) {
        io_uring_cqe cqe{};
        cr_assert(r.wait(2000, cqe), "accept completion %d missing", i);
        cr_assert_eq(cqe.user_data, 42u);
        cr_assert_geq(cqe.res, 0, "accept: %s", strerror(-cqe.res));
        cr_assert(cqe.flags & IORING_CQE_F_MORE, "multishot accept must stay armed");
        close(cqe.res);
    }
    for (int c : clients) close(c);
    close(l);
}

Test(kernel, poll_with_rcvlowat_waits_for_n_bytes_and_peek_does_not_consume) {
    Ring r;
    auto [c, s] = tcp_pair();
    set_nonblocking(s);
    int lowat = 100;
    cr_assert_eq(setsockopt(s, SOL_SOCKET, SO_RCVLOWAT, &lowat, sizeof lowat), 0);

    io_uring_sqe* sqe = r.sqe();
    io_uring_prep_poll_add(sqe, s, POLLIN);
    io_uring_sqe_set_data64(sqe, 1);
    io_uring_submit(&r.ring);

    char part[100];
    for (size_t i = 0; i < sizeof part; ++i) part[i] = static_cast<char>(i);
    write_all(c, part, 40);  // a partly arrived ClientHello
    io_uring_cqe cqe{};
    cr_assert_not(r.wait(150, cqe), "poll completed with 40 of 100 bytes queued");
    write_all(c, part + 40, 60);
    cr_assert(r.wait(2000, cqe), "poll did not complete with 100 bytes queued");
    cr_assert(cqe.res & POLLIN);

    char buf[256];
    cr_assert_eq(recv(s, buf, sizeof buf, MSG_PEEK), 100);
    cr_assert_eq(recv(s, buf, sizeof buf, MSG_PEEK), 100, "peek consumed bytes");
    cr_assert_eq(memcmp(buf, part, 100), 0);
    close(c);
    close(s);
}

Test(kernel, recv_peek_armed_on_empty_socket_completes_only_at_rcvlowat) {
    Ring r;
    auto [c, s] = tcp_pair();
    set_nonblocking(s);
    int lowat = 64;
    cr_assert_eq(setsockopt(s, SOL_SOCKET, SO_RCVLOWAT, &lowat, sizeof lowat), 0);
    char buf[256];
    io_uring_sqe* sqe = r.sqe();
    io_uring_prep_recv(sqe, s, buf, sizeof buf, MSG_PEEK);
    io_uring_sqe_set_data64(sqe, 2);
    io_uring_submit(&r.ring);

    char data[64];
    memset(data, 'h', sizeof data);
    write_all(c, data, 20);
    io_uring_cqe cqe{};
    cr_assert_not(r.wait(150, cqe), "peek completed below SO_RCVLOWAT");
    write_all(c, data + 20, 44);
    cr_assert(r.wait(2000, cqe));
    cr_assert_eq(cqe.res, 64);
    cr_assert_eq(recv(s, buf, sizeof buf, 0), 64, "peeked bytes still queued");
    close(c);
    close(s);
}

Test(kernel, bare_splice_from_empty_nonblocking_socket_is_eagain) {
    // Why the loop links a poll in front of every splice: IORING_OP_SPLICE is not poll-driven.
    Ring r;
    auto [c, s] = tcp_pair();
    set_nonblocking(s);
    int p[2];
    cr_assert_eq(pipe2(p, O_NONBLOCK | O_CLOEXEC), 0);
    io_uring_sqe* sqe = r.sqe();
    io_uring_prep_splice(sqe, s, -1, p[1], -1, 4096, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    io_uring_submit(&r.ring);
    io_uring_cqe cqe{};
    cr_assert(r.wait(2000, cqe));
    cr_assert_eq(cqe.res, -EAGAIN);
    close(p[0]);
    close(p[1]);
    close(c);
    close(s);
}

Test(kernel, splice_socket_pipe_socket_moves_bytes_intact) {
    constexpr size_t kTotal = 4u << 20;
    Ring r;
    auto [src_c, src_s] = tcp_pair();  // writer -> src_c ... src_s -> pipe
    auto [dst_c, dst_s] = tcp_pair();  // pipe -> dst_s ... dst_c -> reader
    set_nonblocking(src_s);
    set_nonblocking(dst_s);
    int p[2];
    cr_assert_eq(pipe2(p, O_NONBLOCK | O_CLOEXEC), 0);

    std::thread writer([fd = src_c] {
        std::vector<uint8_t> chunk(65536);
        for (size_t off = 0; off < kTotal; off += chunk.size()) {
            for (size_t i = 0; i < chunk.size(); ++i) chunk[i] = pattern(off + i);
            write_all(fd, chunk.data(), chunk.size());
        }
        shutdown(fd, SHUT_WR);
    });
    size_t received = 0;
    bool intact = true;
    std::thread reader([fd = dst_c, &received, &intact] {
        uint8_t buf[65536];
        for (;;) {
            ssize_t n = read(fd, buf, sizeof buf);
            if (n <= 0) break;
            for (ssize_t i = 0; i < n; ++i)
                if (buf[i] != pattern(received + static_cast<size_t>(i))) intact = false;
            received += static_cast<size_t>(n);
        }
    });

    // poll(src readable) -> splice(src -> pipe), then poll(dst writable) -> splice(pipe -> dst).
    auto chain = [&](int in, int out, unsigned len, uint64_t tag) {
        io_uring_sqe* a = r.sqe();
        io_uring_prep_poll_add(a, in, POLLIN);
        io_uring_sqe_set_flags(a, IOSQE_IO_LINK | IOSQE_CQE_SKIP_SUCCESS);
        io_uring_sqe* b = r.sqe();
        io_uring_prep_poll_add(b, out, POLLOUT);
        io_uring_sqe_set_flags(b, IOSQE_IO_LINK | IOSQE_CQE_SKIP_SUCCESS);
        io_uring_sqe* sp = r.sqe();
        io_uring_prep_splice(sp, in, -1, out, -1, len, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
        io_uring_sqe_set_data64(sp, tag);
    };
    size_t moved = 0;
    for (;;) {
        chain(src_s, p[1], 65536, 1);
        io_uring_cqe cqe{};
        cr_assert(r.wait(5000, cqe), "splice in stalled");
        if (cqe.res == -EAGAIN) continue;
        cr_assert_geq(cqe.res, 0, "splice in: %s", strerror(-cqe.res));
        if (cqe.res == 0) break;
        int pending = cqe.res;
        while (pending > 0) {
            chain(p[0], dst_s, static_cast<unsigned>(pending), 2);
            cr_assert(r.wait(5000, cqe), "splice out stalled");
            if (cqe.res == -EAGAIN) continue;
            cr_assert_gt(cqe.res, 0, "splice out: %s", strerror(-cqe.res));
            pending -= cqe.res;
            moved += static_cast<size_t>(cqe.res);
        }
    }
    shutdown(dst_s, SHUT_WR);
    writer.join();
    reader.join();
    cr_assert_eq(moved, kTotal);
    cr_assert_eq(received, kTotal);
    cr_assert(intact, "relayed bytes differ from the source");
    for (int fd : {src_c, src_s, dst_c, dst_s, p[0], p[1]}) close(fd);
}

Test(kernel, cancel_of_inflight_recv_completes_with_ecanceled) {
    Ring r;
    auto [c, s] = tcp_pair();
    set_nonblocking(s);
    char buf[64];
    io_uring_sqe* sqe = r.sqe();
    io_uring_prep_recv(sqe, s, buf, sizeof buf, 0);
    io_uring_sqe_set_data64(sqe, 7);
    io_uring_submit(&r.ring);
    io_uring_cqe cqe{};
    cr_assert_not(r.wait(50, cqe), "recv on an idle socket completed");

    sqe = r.sqe();
    io_uring_prep_cancel64(sqe, 7, 0);
    io_uring_sqe_set_data64(sqe, 8);
    io_uring_submit(&r.ring);
    bool saw_recv = false, saw_cancel = false;
    for (int i = 0; i < 2; ++i) {
        cr_assert(r.wait(2000, cqe));
        if (cqe.user_data == 7) {
            saw_recv = true;
            cr_assert_eq(cqe.res, -ECANCELED);
        } else {
            saw_cancel = true;
            cr_assert_eq(cqe.user_data, 8u);
            cr_assert_eq(cqe.res, 0, "cancel: %s", strerror(-cqe.res));
        }
    }
    cr_assert(saw_recv && saw_cancel);
    close(c);
    close(s);
}
