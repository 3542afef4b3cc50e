// core: the loop API on both backends (io_uring and epoll), slab, timers, signals, teardown.
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "core/clock.hh"
#include "core/file.hh"
#include "core/loop.hh"
#include "core/mailbox.hh"
#include "core/pipe_pool.hh"
#include "core/slab.hh"
#include "core/timer_heap.hh"
#include "core/worker.hh"

using namespace runewarp::core;

namespace {

constexpr BackendChoice kBackends[] = {BackendChoice::io_uring, BackendChoice::epoll};

std::unique_ptr<Worker> make_worker(BackendChoice b) {
    WorkerOptions o;
    o.loop.choice = b;
    o.loop.honour_env = false;
    o.max_slots = 256;
    auto w = Worker::create(o);
    cr_assert(w.ok(), "worker: %s", w.ok() ? "" : w.error().message.c_str());
    cr_assert_eq((*w)->backend() == Backend::io_uring, b == BackendChoice::io_uring);
    return std::move(*w);
}

int64_t deadline_in_ms(int64_t ms) {
    return now_ns() + ms * kNsPerMs;
}

void run_until(Worker& w, auto done, int64_t ms, const char* what) {
    auto r = w.run_until(done, deadline_in_ms(ms));
    cr_assert(r.ok(), "loop broken: %s", r.ok() ? "" : r.error().message.c_str());
    cr_assert(*r, "[%s] timed out waiting for: %s", backend_name(w.backend()), what);
}

sockaddr_in loopback(uint16_t port) {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(port);
    return a;
}

int listener(uint16_t& port) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    sockaddr_in a = loopback(0);
    cr_assert_eq(bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    cr_assert_eq(listen(fd, 64), 0);
    socklen_t len = sizeof a;
    getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
    port = ntohs(a.sin_port);
    return fd;
}

int dial_blocking(uint16_t port) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a = loopback(port);
    cr_assert_eq(connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    return fd;
}

// Connected loopback pair; the second (accepted) end is non-blocking for the loop.
std::pair<int, int> tcp_pair() {
    uint16_t port = 0;
    int l = listener(port);
    int c = dial_blocking(port);
    pollfd p{l, POLLIN, 0};
    cr_assert_eq(::poll(&p, 1, 2000), 1);
    int s = accept4(l, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    cr_assert_geq(s, 0);
    close(l);
    return {c, s};
}

int count_fds() {
    int n = 0;
    DIR* d = opendir("/proc/self/fd");
    while (dirent* e = readdir(d))
        if (e->d_name[0] != '.') ++n;
    closedir(d);
    return n;
}

uint8_t pattern(size_t i) {
    return static_cast<uint8_t>((i * 2654435761u) >> 11);
}

// ---- test sessions
// -------------------------------------------------------------------------------

enum Op : uint8_t { kAccept = 1, kRecv, kSend, kConnect, kSpliceIn, kSpliceOut, kTimer };

struct Echo final : Session {
    Slab<Echo>* home = nullptr;
    UniqueFd fd;
    char buf[4096];
    int* closed = nullptr;
    Echo(Worker& w, Slab<Echo>* h, int f, int* c) : Session(w), home(h), fd(f), closed(c) {}
    void start() {
        cr_assert(open());
        recv(kRecv, fd.get(), buf, sizeof buf);
    }
    void on_event(const Completion& c) noexcept override {
        if (aborting()) return;
        if (c.token.op == kRecv) {
            if (c.result <= 0) return abort(c.result);
            send(kSend, fd.get(), buf, static_cast<uint32_t>(c.result));
        } else if (c.token.op == kSend) {
            if (c.result < 0) return abort(c.result);
            recv(kRecv, fd.get(), buf, sizeof buf);
        }
    }
    void on_quiesced() noexcept override {
        close_fd(fd);
        ++*closed;
        home->free(id_in_home);
    }
    SlotId id_in_home{};
};

struct Acceptor final : Session {
    int fd;
    int accepted = 0;
    Slab<Echo>* echoes;
    int* closed;
    Acceptor(Worker& w, int f, Slab<Echo>* e, int* c) : Session(w), fd(f), echoes(e), closed(c) {}
    void start() {
        cr_assert(open());
        accept(kAccept, fd, true);
    }
    void on_event(const Completion& c) noexcept override {
        if (c.result >= 0) {
            if (aborting()) {
                ::close(c.result);
                return;
            }
            ++accepted;
            auto id = echoes->alloc(worker(), echoes, c.result, closed);
            cr_assert(id.has_value());
            Echo* e = echoes->get(*id);
            if (e == nullptr) return;
            e->id_in_home = *id;
            e->start();
        }
        if (!c.more && !aborting()) accept(kAccept, fd, true);  // re-arm (single-shot fallback)
    }
    void on_quiesced() noexcept override {}
};

}  // namespace

Test(core, accept_and_echo_on_both_backends) {
    for (BackendChoice b : kBackends) {
        auto w = make_worker(b);
        uint16_t port = 0;
        int l = listener(port);
        Slab<Echo> echoes(16);
        int closed = 0;
        Acceptor acc(*w, l, &echoes, &closed);
        acc.start();
        std::atomic<int> ok_clients{0};
        std::thread clients([port, &ok_clients] {
            for (int i = 0; i < 3; ++i) {
                int c = dial_blocking(port);
                std::string msg = "hello " + std::to_string(i);
                if (write(c, msg.data(), msg.size()) != static_cast<ssize_t>(msg.size())) break;
                char buf[64];
                size_t got = 0;
                while (got < msg.size()) {
                    ssize_t n = read(c, buf + got, sizeof buf - got);
                    if (n <= 0) break;
                    got += static_cast<size_t>(n);
                }
                if (got == msg.size() && memcmp(buf, msg.data(), got) == 0) ++ok_clients;
                close(c);
            }
        });
        run_until(
            *w, [&] { return closed == 3; }, 5000, "three echo sessions to finish");
        clients.join();
        cr_assert_eq(ok_clients.load(), 3);
        cr_assert_eq(acc.accepted, 3);
        cr_assert_eq(echoes.size(), 0u);
        acc.abort(0);
        run_until(
            *w, [&] { return acc.in_flight() == 0 && !w->attached(acc.id()); }, 2000,
            "acceptor teardown");
        close(l);
    }
}

namespace {
struct Probe final : Session {
    std::vector<Completion> seen;
    bool quiesced = false;
    explicit Probe(Worker& w) : Session(w) { cr_assert(open()); }
    void on_event(const Completion& c) noexcept override { seen.push_back(c); }
    void on_quiesced() noexcept override { quiesced = true; }
};
}  // namespace

Test(core, connect_to_closed_port_fails_with_econnrefused) {
    for (BackendChoice b : kBackends) {
        auto w = make_worker(b);
        // A port that was bound and released: nothing listens there.
        uint16_t port = 0;
        int l = listener(port);
        close(l);
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        sockaddr_in a = loopback(port);
        Probe p(*w);
        p.connect(kConnect, fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
        run_until(
            *w, [&] { return !p.seen.empty(); }, 3000, "connect completion");
        cr_assert_eq(p.seen[0].result, -ECONNREFUSED, "[%s] got %d", backend_name(w->backend()),
                     p.seen[0].result);
        cr_assert_eq(p.in_flight(), 0u);
        close(fd);
    }
}

Test(core, timers_fire_in_order_and_cancelled_timers_do_not) {
    for (BackendChoice b : kBackends) {
        auto w = make_worker(b);
        Probe p(*w);
        const int64_t t0 = now_ns();
        p.arm_timer(30, t0 + 30 * kNsPerMs);
        p.arm_timer(10, t0 + 10 * kNsPerMs);
        TimerHandle cancelled = p.arm_timer(15, t0 + 15 * kNsPerMs);
        TimerHandle moved = p.arm_timer(5, t0 + 5 * kNsPerMs);
        p.arm_timer(20, t0 + 20 * kNsPerMs);
        cr_assert(w->cancel_timer(cancelled));
        cr_assert_not(w->cancel_timer(cancelled), "second cancel of one handle must be a no-op");
        cr_assert(w->rearm_timer(moved, t0 + 25 * kNsPerMs));
        run_until(
            *w, [&] { return p.seen.size() >= 4; }, 3000, "four timers");
        const uint8_t want[] = {10, 20, 5, 30};
        for (size_t i = 0; i < 4; ++i) {
            cr_assert_eq(p.seen[i].token.op, want[i], "[%s] timer %zu fired op %u",
                         backend_name(w->backend()), i, p.seen[i].token.op);
            cr_assert_eq(p.seen[i].result, -ETIME);
            cr_assert(p.seen[i].flags & kCompletionTimer);
        }
        cr_assert_geq(now_ns() - t0, 30 * kNsPerMs, "a timer fired early");
        // Nothing else is armed: the cancelled one must not show up later either.
        auto r = w->run_once(20 * kNsPerMs);
        cr_assert(r.ok());
        cr_assert_eq(p.seen.size(), 4u);
    }
}

Test(core, stale_completion_after_slot_reuse_is_ignored) {
    for (BackendChoice b : kBackends) {
        auto w = make_worker(b);
        auto [c, s] = tcp_pair();
        auto old_session = std::make_unique<Probe>(*w);
        SlotId old_id = old_session->id();
        old_session->poll(kRecv, s, POLLIN);
        // Break the teardown rule on purpose: free the slot while the poll is in flight.
        w->detach(old_id);
        Probe fresh(*w);
        cr_assert_eq(fresh.id().slot, old_id.slot, "free list should hand the slot back");
        cr_assert_neq(fresh.id().generation, old_id.generation);

        cr_assert_eq(write(c, "x", 1), 1);
        uint64_t stale_before = w->stale_completions();
        run_until(
            *w, [&] { return w->stale_completions() > stale_before; }, 3000,
            "the stale completion");
        cr_assert(fresh.seen.empty(), "a completion for the old generation reached the new slot");
        cr_assert(old_session->seen.empty());
        close(c);
        close(s);
    }
}

namespace {
struct Holder final : Session {
    UniqueFd a, b;
    char buf[64];
    int cancelled = 0;
    bool done = false;
    Holder(Worker& w, int x, int y) : Session(w), a(x), b(y) { cr_assert(open()); }
    void start() {
        recv(kRecv, a.get(), buf, sizeof buf);
        poll(kSend, b.get(), POLLIN);
        accept(kAccept, b.get(), true);  // fails (not a listener) or waits: either way tracked
    }
    void on_event(const Completion& c) noexcept override {
        if (c.result == -ECANCELED) ++cancelled;
    }
    void on_quiesced() noexcept override {
        cr_assert_eq(in_flight(), 0u);
        close_fd(a);
        close_fd(b);
        done = true;
    }
};
}  // namespace

Test(core, cancel_and_teardown_leave_no_fd_open) {
    for (BackendChoice b : kBackends) {
        auto w = make_worker(b);
        const int before = count_fds();
        std::vector<std::unique_ptr<Holder>> hs;
        std::vector<int> peers;
        for (int i = 0; i < 8; ++i) {
            auto [c1, s1] = tcp_pair();
            auto [c2, s2] = tcp_pair();
            peers.push_back(c1);
            peers.push_back(c2);
            hs.push_back(std::make_unique<Holder>(*w, s1, s2));
            hs.back()->start();
        }
        // Let the ops reach the kernel / epoll, then tear everything down.
        cr_assert(w->run_once(0).ok());
        for (auto& h : hs) {
            cr_assert_gt(h->in_flight(), 0u);
            h->abort(ECANCELED);
            h->abort(EIO);  // only the first abort counts
            cr_assert_eq(h->abort_reason(), ECANCELED);
        }
        run_until(
            *w,
            [&] {
                for (auto& h : hs)
                    if (!h->done) return false;
                return true;
            },
            3000, "all sessions quiescent");
        for (auto& h : hs) {
            cr_assert_geq(h->cancelled, 2, "recv and poll should complete with -ECANCELED");
            cr_assert_not(w->attached(h->id()));
        }
        for (int fd : peers) close(fd);
        cr_assert_eq(count_fds(), before, "[%s] fds leaked", backend_name(w->backend()));
        cr_assert_eq(w->attached_count(), 0u);
    }
}

namespace {
// One-direction splice relay: src socket -> pipe -> dst socket, then half-close dst.
struct Relay final : Session {
    int src, dst;
    Pipe pipe;
    int64_t pending = 0;
    uint64_t moved = 0;
    bool finished = false;
    int error = 0;
    Relay(Worker& w, int s, int d, Pipe p) : Session(w), src(s), dst(d), pipe(p) {
        cr_assert(open());
    }
    void pull() { splice(kSpliceIn, src, pipe.wr, 1u << 16); }
    void push() { splice(kSpliceOut, pipe.rd, dst, static_cast<uint32_t>(pending)); }
    void on_event(const Completion& c) noexcept override {
        if (aborting()) return;
        if (c.result == -EAGAIN) return c.token.op == kSpliceIn ? pull() : push();
        if (c.result < 0) {
            error = c.result;
            return abort(-c.result);
        }
        if (c.token.op == kSpliceIn) {
            if (c.result == 0) {
                shutdown(dst, SHUT_WR);
                finished = true;
                return abort(0);
            }
            pending = c.result;
            return push();
        }
        pending -= c.result;
        moved += static_cast<uint64_t>(c.result);
        if (pending > 0) return push();
        pull();
    }
    void on_quiesced() noexcept override {}
};
}  // namespace

Test(core, splice_relay_through_the_loop_is_byte_identical) {
    constexpr size_t kTotal = 3u << 20;
    for (BackendChoice b : kBackends) {
        auto w = make_worker(b);
        PipePool pool(2, 1u << 16);
        auto [src_c, src_s] = tcp_pair();
        auto [dst_c, dst_s] = tcp_pair();
        auto pipe = pool.acquire();
        cr_assert(pipe.ok());
        Relay relay(*w, src_s, dst_s, *pipe);
        relay.pull();

        std::thread writer([fd = src_c] {
            std::vector<uint8_t> chunk(65536);
            for (size_t off = 0; off < kTotal; off += chunk.size()) {
                for (size_t i = 0; i < chunk.size(); ++i) chunk[i] = pattern(off + i);
                const uint8_t* p = chunk.data();
                size_t n = chunk.size();
                while (n > 0) {
                    ssize_t k = write(fd, p, n);
                    if (k <= 0) return;
                    p += k;
                    n -= static_cast<size_t>(k);
                }
            }
            shutdown(fd, SHUT_WR);
        });
        std::atomic<size_t> received{0};
        std::atomic<bool> intact{true};
        std::thread reader([fd = dst_c, &received, &intact] {
            uint8_t buf[65536];
            size_t got = 0;
            for (;;) {
                ssize_t n = read(fd, buf, sizeof buf);
                if (n <= 0) break;
                for (ssize_t i = 0; i < n; ++i)
                    if (buf[i] != pattern(got + static_cast<size_t>(i))) intact = false;
                got += static_cast<size_t>(n);
                received = got;
            }
        });
        // Wait on loop-visible state only: the reader thread's EOF wakes no completion.
        run_until(
            *w, [&] { return relay.finished || relay.error != 0; }, 20000, "relay to finish");
        writer.join();
        reader.join();
        cr_assert_eq(relay.error, 0, "[%s] splice error %d", backend_name(w->backend()),
                     relay.error);
        cr_assert_eq(relay.moved, kTotal);
        cr_assert_eq(received.load(), kTotal);
        cr_assert(intact.load(), "[%s] relayed bytes differ", backend_name(w->backend()));
        run_until(
            *w, [&] { return relay.in_flight() == 0; }, 2000, "relay quiescent");
        pool.release(*pipe);
        cr_assert_eq(pool.idle(), 1u, "an empty pipe goes back to the pool");
        for (int fd : {src_c, src_s, dst_c, dst_s}) close(fd);
    }
}

namespace {
struct SigCatcher final : SignalListener {
    std::vector<uint32_t> signos;
    void on_signal(const signalfd_siginfo& info) noexcept override {
        signos.push_back(info.ssi_signo);
    }
};
}  // namespace

Test(core, signalfd_delivers_sigusr1_through_the_loop) {
    for (BackendChoice b : kBackends) {
        auto w = make_worker(b);
        SigCatcher catcher;
        auto r = w->watch_signals({SIGUSR1}, catcher);
        cr_assert(r.ok(), "%s", r.ok() ? "" : r.error().message.c_str());
        cr_assert(w->run_once(0).ok());
        cr_assert_eq(raise(SIGUSR1), 0);  // blocked, so it waits for the signalfd
        run_until(
            *w, [&] { return !catcher.signos.empty(); }, 3000, "SIGUSR1");
        cr_assert_eq(catcher.signos[0], static_cast<uint32_t>(SIGUSR1));
        cr_assert_eq(raise(SIGUSR1), 0);  // the read is re-armed
        run_until(
            *w, [&] { return catcher.signos.size() == 2; }, 3000, "second SIGUSR1");
    }
}

namespace {
int fail_eperm() {
    return EPERM;
}
}  // namespace

Test(core, backend_selection_honours_env_and_reports_fallback_reason) {
    setenv("RUNEWARP_EVENT_BACKEND", "epoll", 1);
    auto e = make_loop();
    cr_assert(e.ok());
    cr_assert_eq(e->loop->backend(), Backend::epoll);
    cr_assert(e->fallback_reason.empty(), "a forced epoll is not a fallback");

    setenv("RUNEWARP_EVENT_BACKEND", "io_uring", 1);
    auto u = make_loop();
    cr_assert(u.ok(), "%s", u.ok() ? "" : u.error().message.c_str());
    cr_assert_eq(u->loop->backend(), Backend::io_uring);

    setenv("RUNEWARP_EVENT_BACKEND", "kqueue", 1);
    cr_assert_not(make_loop().ok(), "an unknown backend name must be rejected");
    unsetenv("RUNEWARP_EVENT_BACKEND");

    LoopOptions o;
    o.probe_hook = fail_eperm;
    auto f = make_loop(o);
    cr_assert(f.ok());
    cr_assert_eq(f->loop->backend(), Backend::epoll);
    cr_assert(f->fallback_reason.find("io_uring unavailable: io_uring_setup: Operation not "
                                      "permitted (seccomp or kernel.io_uring_disabled?)") !=
                  std::string::npos,
              "reason: %s", f->fallback_reason.c_str());

    LoopOptions huge;
    huge.ring_entries = 1u << 20;  // beyond IORING_MAX_ENTRIES: io_uring_setup fails EINVAL
    auto h = make_loop(huge);
    cr_assert(h.ok());
    cr_assert_eq(h->loop->backend(), Backend::epoll);
    cr_assert(h->fallback_reason.find("Invalid argument") != std::string::npos, "reason: %s",
              h->fallback_reason.c_str());

    LoopOptions strict;
    strict.choice = BackendChoice::io_uring;
    strict.probe_hook = fail_eperm;
    auto s = make_loop(strict);
    cr_assert_not(s.ok(), "an explicit io_uring choice must not fall back silently");
    cr_assert_eq(s.error().code, EPERM);
}

Test(core, slab_reuses_slots_with_new_generations_and_enforces_capacity) {
    Slab<std::string> slab(2);
    auto a = slab.alloc("a");
    auto b = slab.alloc("b");
    cr_assert(a && b);
    cr_assert_not(slab.alloc("c").has_value(), "capacity is fixed");
    std::string* pa = slab.get(*a);
    cr_assert(pa != nullptr && *pa == "a");
    cr_assert(slab.free(*a));
    cr_assert_not(slab.free(*a), "double free is refused");
    cr_assert_null(slab.get(*a));
    auto c = slab.alloc("c");
    cr_assert_eq(c->slot, a->slot);
    cr_assert_neq(c->generation, a->generation);
    cr_assert_null(slab.get(*a), "stale id must not resolve to the new object");
    std::string* pc = slab.get(*c);
    cr_assert(pc != nullptr && *pc == "c");
}

namespace {

uint64_t self_rss_kib() {
    std::FILE* f = std::fopen("/proc/self/status", "r");
    if (f == nullptr) return 0;
    char line[256];
    uint64_t kib = 0;
    while (std::fgets(line, sizeof line, f) != nullptr) {
        if (std::strncmp(line, "VmRSS:", 6) == 0) kib = std::strtoull(line + 6, nullptr, 10);
    }
    std::fclose(f);
    return kib;
}

}  // namespace

// A slab is sized for the worst case (every admissible Visitor on one worker), so slots never
// used must not cost resident memory: 100000 cells of 4 KiB are 400 MB of address space.
Test(core, slab_costs_resident_memory_only_for_slots_in_use) {
    using Page = std::array<char, 4096>;
    const uint64_t before = self_rss_kib();
    cr_assert_gt(before, 0u);
    Slab<Page> slab(100000);
    std::vector<SlotId> ids;
    for (int i = 0; i < 100; ++i) {
        auto id = slab.alloc();
        cr_assert(id.has_value());
        Page* page = slab.get(*id);
        cr_assert_not_null(page);
        if (page != nullptr) (*page)[0] = 1;
        ids.push_back(*id);
    }
    const uint64_t after = self_rss_kib();
    cr_assert_lt(after - before, 16u * 1024, "a 100000-slot slab with 100 in use took %llu KiB",
                 static_cast<unsigned long long>(after - before));
    // Freed slots are reused before fresh ones, and every slot can be filled.
    cr_assert(slab.free(ids.back()));
    auto again = slab.alloc();
    cr_assert(again.has_value());
    cr_assert_eq(again->slot, ids.back().slot);
    cr_assert_neq(again->generation, ids.back().generation);
    cr_assert_null(slab.get(ids.back()));
    Slab<int> small(3);
    cr_assert(small.alloc(1) && small.alloc(2));
    cr_assert_not(small.full());
    cr_assert(small.alloc(3).has_value());
    cr_assert(small.full());
    cr_assert_not(small.alloc(4).has_value());
    cr_assert_null(small.get(SlotId{}), "a zeroed id never resolves");
}

Test(core, token_packing_round_trips_the_documented_layout) {
    Token t{0xABCDEF, 0x12345678, 0x7F};
    uint64_t v = t.pack();
    cr_assert_eq(v, (uint64_t{0xABCDEF} << 40) | (uint64_t{0x12345678} << 8) | 0x7F);
    cr_assert(Token::unpack(v) == t);
}

Test(core, pipe_pool_is_bounded_and_discards_non_empty_pipes) {
    PipePool pool(2, 1u << 20);
    auto p1 = pool.acquire();
    auto p2 = pool.acquire();
    cr_assert(p1.ok() && p2.ok());
    auto p3 = pool.acquire();
    cr_assert_not(p3.ok());
    cr_assert_eq(p3.error().code, EAGAIN);
    cr_assert(fcntl(p1->rd, F_GETFL) & O_NONBLOCK);
    cr_assert(fcntl(p1->wr, F_GETFD) & FD_CLOEXEC);
    cr_assert_eq(write(p2->wr, "left", 4), 4);
    pool.release(*p2);
    cr_assert_eq(pool.idle(), 0u, "a pipe with leftover bytes must not be reused");
    pool.release(*p1);
    cr_assert_eq(pool.idle(), 1u);
    cr_assert_eq(pool.lent(), 0u);
}

// ---- bounded file reads -------------------------------------------------------------------------

Test(core, read_file_is_bounded_and_refuses_what_is_not_a_regular_file) {
    char tmpl[] = "/tmp/runewarp-core-XXXXXX";
    cr_assert(mkdtemp(tmpl) != nullptr);
    const std::string dir = tmpl;
    const std::string path = dir + "/f";
    int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
    cr_assert(fd >= 0);
    std::string content(3000, 'x');
    cr_assert_eq(write(fd, content.data(), content.size()), static_cast<ssize_t>(content.size()));
    close(fd);

    struct stat st {};
    auto whole = runewarp::core::read_file(path, 3000, &st);
    cr_assert(whole.ok(), "%s", whole.ok() ? "" : whole.error().message.c_str());
    cr_assert(*whole == content);
    cr_assert_eq(st.st_mode & 07777, 0640u, "the stat of the file read is handed back");

    auto big = runewarp::core::read_file(path, 2999);
    cr_assert(!big.ok(), "one byte over the bound is refused");
    cr_assert(big.error().message.find("too large") != std::string::npos, "%s",
              big.error().message.c_str());

    auto missing = runewarp::core::read_file(dir + "/nope");
    cr_assert(!missing.ok());
    cr_assert_eq(missing.error().code, ENOENT);
    const std::string want = "cannot read " + dir + "/nope: No such file or directory";
    cr_assert_str_eq(missing.error().message.c_str(), want.c_str());
    auto maybe = runewarp::core::read_file_if_exists(dir + "/nope");
    cr_assert(maybe.ok() && !maybe->has_value());

    auto directory = runewarp::core::read_file(dir);
    cr_assert(!directory.ok());
    cr_assert(directory.error().message.find("not a regular file") != std::string::npos);

    // A FIFO without a writer would block a plain open(2) forever.
    const std::string fifo = dir + "/fifo";
    cr_assert_eq(mkfifo(fifo.c_str(), 0600), 0);
    auto pipe_read = runewarp::core::read_file(fifo);
    cr_assert(!pipe_read.ok());
    cr_assert(pipe_read.error().message.find("not a regular file") != std::string::npos);

    unlink(fifo.c_str());
    unlink(path.c_str());
    rmdir(dir.c_str());
}

Test(core, mailbox_runs_posts_from_other_threads_on_the_loop_thread_in_order) {
    for (BackendChoice b : kBackends) {
        auto w = make_worker(b);
        auto mb = Mailbox::create(*w);
        cr_assert(mb.ok(), "%s", mb.ok() ? "" : mb.error().message.c_str());
        Mailbox& box = **mb;
        const std::thread::id loop_thread = std::this_thread::get_id();
        std::vector<int> seen;
        bool on_loop_thread = true;
        constexpr int kPosts = 1000;
        std::thread poster([&] {
            for (int i = 0; i < kPosts; ++i) {
                box.post([&, i] {
                    seen.push_back(i);
                    on_loop_thread = on_loop_thread && std::this_thread::get_id() == loop_thread;
                });
            }
        });
        run_until(
            *w, [&] { return seen.size() == kPosts; }, 5000, "every post");
        poster.join();
        cr_assert(on_loop_thread, "[%s] a post ran off the loop thread",
                  backend_name(w->backend()));
        for (int i = 0; i < kPosts; ++i) cr_assert_eq(seen[i], i, "posts run in order");

        // After shutdown, posts are dropped and the mailbox quiesces (its eventfd closed).
        box.shutdown();
        box.post([&] { seen.push_back(-1); });
        run_until(
            *w, [&] { return box.quiesced(); }, 3000, "quiesced");
        auto r = w->run_once(20 * kNsPerMs);
        cr_assert(r.ok());
        cr_assert_eq(seen.size(), size_t{kPosts}, "a post after shutdown ran");
    }
}
