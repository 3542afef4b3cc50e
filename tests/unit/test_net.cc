// net: address ordering for connection races, the c-ares resolver on the loop, and the Happy
// Eyeballs connector, on both event backends.
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <dirent.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "core/clock.hh"
#include "core/worker.hh"
#include "net/address.hh"
#include "net/connector.hh"
#include "net/resolver.hh"

using namespace runewarp;
using runewarp::net::ResolvedAddress;

namespace {

constexpr core::BackendChoice kBackends[] = {core::BackendChoice::io_uring,
                                             core::BackendChoice::epoll};

std::unique_ptr<core::Worker> make_worker(core::BackendChoice b) {
    core::WorkerOptions o;
    o.loop.choice = b;
    o.loop.honour_env = false;
    o.max_slots = 256;
    auto w = core::Worker::create(o);
    cr_assert(w.ok(), "worker: %s", w.ok() ? "" : w.error().message.c_str());
    return std::move(*w);
}

void run_until(core::Worker& w, auto done, int64_t ms, const char* what) {
    auto r = w.run_until(done, core::now_ns() + ms * core::kNsPerMs);
    cr_assert(r.ok(), "loop broken: %s", r.ok() ? "" : r.error().message.c_str());
    cr_assert(*r, "[%s] timed out waiting for: %s", core::backend_name(w.backend()), what);
}

ResolvedAddress addr(const char* ip, uint16_t port) {
    ResolvedAddress a;
    cr_assert(net::literal_address(ip, port, a), "%s", ip);
    return a;
}

size_t open_fds() {
    size_t n = 0;
    DIR* d = opendir("/proc/self/fd");
    while (dirent* e = readdir(d)) n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

// A listening socket on 127.0.0.1 with an ephemeral port.
int listener(uint16_t& port, int backlog = 16) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
    cr_assert_eq(::listen(fd, backlog), 0);
    socklen_t len = sizeof sa;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len);
    port = ntohs(sa.sin_port);
    return fd;
}

// A port nobody listens on (bound, never listening, so nothing else takes it meanwhile).
int closed_port(uint16_t& port) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
    socklen_t len = sizeof sa;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len);
    port = ntohs(sa.sin_port);
    return fd;
}

// A listener whose accept queue is full: further SYNs are dropped, so a connect to it neither
// succeeds nor fails for a long time (a silent address).
struct SilentListener {
    int lfd = -1;
    std::vector<int> held;
    uint16_t port = 0;
    SilentListener() {
        lfd = listener(port, 0);
        sockaddr_in sa{};
        sa.sin_family = AF_INET;
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        sa.sin_port = htons(port);
        // Fill the queue (backlog 0 admits one or two) with blocking connects that complete.
        for (int i = 0; i < 3; ++i) {
            int c = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
            ::connect(c, reinterpret_cast<sockaddr*>(&sa), sizeof sa);
            held.push_back(c);
        }
    }
    ~SilentListener() {
        for (int c : held) ::close(c);
        ::close(lfd);
    }
};

struct Racer final : core::Session {
    net::Connector connector{16, 15};
    bool done = false;
    bool quiesced = false;
    int64_t started = 0;
    int64_t finished = 0;
    explicit Racer(core::Worker& w) : core::Session(w) { cr_assert(open()); }
    void start(std::vector<ResolvedAddress> addrs) {
        started = core::now_ns();
        connector.start(*this, std::make_shared<const std::vector<ResolvedAddress>>(addrs), true);
        check();
    }
    void check() {
        if (!done && connector.status() != net::Connector::Status::kPending) {
            done = true;
            finished = core::now_ns();
        }
    }
    void on_event(const core::Completion& c) noexcept override {
        if (connector.on_completion(*this, c)) check();
    }
    void on_quiesced() noexcept override {
        connector.release(*this);
        quiesced = true;
    }
};

struct Catcher final : net::ResolveListener {
    int calls = 0;
    net::Resolution last;
    void on_resolved(uint64_t, net::Resolution& r) noexcept override {
        ++calls;
        last = std::move(r);
    }
};

}  // namespace

Test(net, interleave_alternates_families_from_the_first) {
    std::vector<ResolvedAddress> v = {addr("::1", 1), addr("2001:db8::1", 1), addr("127.0.0.1", 1),
                                      addr("::1", 1), addr("127.0.0.2", 1), addr("127.0.0.3", 1)};
    net::interleave_families(v);
    std::vector<std::string> got;
    for (auto& a : v) got.push_back(net::format_address(a));
    std::vector<std::string> want = {"[::1]:1", "127.0.0.1:1", "[2001:db8::1]:1", "127.0.0.2:1",
                                     "127.0.0.3:1"};
    cr_assert_eq(got.size(), want.size());
    for (size_t i = 0; i < want.size(); ++i)
        cr_assert_str_eq(got[i].c_str(), want[i].c_str(), "position %zu", i);
}

Test(net, literal_addresses_are_not_names) {
    ResolvedAddress a;
    cr_assert(net::literal_address("192.0.2.1", 443, a));
    std::string text = net::format_address(a);
    cr_assert_str_eq(text.c_str(), "192.0.2.1:443");
    cr_assert(net::literal_address("2001:db8::1", 8443, a));
    text = net::format_address(a);
    cr_assert_str_eq(text.c_str(), "[2001:db8::1]:8443");
    cr_assert_not(net::literal_address("localhost", 443, a));
    cr_assert_not(net::literal_address("[::1]", 443, a));
}

Test(net, resolver_answers_from_the_hosts_file_and_literals_off_the_call) {
    for (auto b : kBackends) {
        auto w = make_worker(b);
        auto r = net::Resolver::create(*w);
        cr_assert(r.ok(), "%s", r.ok() ? "" : r.error().message.c_str());
        Catcher local, literal;
        (*r)->resolve("localhost", 8443, SOCK_STREAM, local);
        (*r)->resolve("127.0.0.9", 443, SOCK_DGRAM, literal);
        // Never from inside resolve(): the listener hears of it from the loop.
        cr_assert_eq(local.calls + literal.calls, 0);
        run_until(*w, [&] { return local.calls == 1 && literal.calls == 1; }, 5000, "answers");
        cr_assert(local.last.error.empty(), "%s", local.last.error.c_str());
        bool has_v4 = false;
        for (auto& a : local.last.addrs)
            has_v4 |= net::format_address(a) == "127.0.0.1:8443";
        cr_assert(has_v4, "localhost resolves to 127.0.0.1 through /etc/hosts");
        cr_assert_eq(literal.last.addrs.size(), 1u);
        std::string lit = net::format_address(literal.last.addrs[0]);
        cr_assert_str_eq(lit.c_str(), "127.0.0.9:443");
        (*r)->shutdown();
        run_until(*w, [&] { return (*r)->quiesced(); }, 2000, "resolver quiesced");
    }
}

Test(net, resolver_reports_a_name_that_does_not_resolve) {
    auto w = make_worker(core::BackendChoice::automatic);
    auto r = net::Resolver::create(*w);
    cr_assert(r.ok());
    Catcher bad;
    (*r)->resolve("name.invalid", 1, SOCK_STREAM, bad);
    run_until(*w, [&] { return bad.calls == 1; }, 20000, "an answer for name.invalid");
    cr_assert_not(bad.last.error.empty());
    cr_assert(bad.last.addrs.empty());
    (*r)->shutdown();
    run_until(*w, [&] { return (*r)->quiesced(); }, 2000, "resolver quiesced");
}

Test(net, resolver_cancel_and_shutdown_call_nobody_and_close_every_socket) {
    for (auto b : kBackends) {
        // A name server that never answers: the second query is certainly still outstanding
        // when the resolver stops, whatever the host's resolv.conf holds (a server that refuses
        // at once would answer it within the first loop turn).
        int mute = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        cr_assert_geq(mute, 0);
        sockaddr_in ma{};
        ma.sin_family = AF_INET;
        ma.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        cr_assert_eq(::bind(mute, reinterpret_cast<sockaddr*>(&ma), sizeof ma), 0);
        socklen_t ml = sizeof ma;
        cr_assert_eq(::getsockname(mute, reinterpret_cast<sockaddr*>(&ma), &ml), 0);
        net::ResolverOptions ro;
        ro.servers = "127.0.0.1:" + std::to_string(ntohs(ma.sin_port));
        size_t before = open_fds();
        {
            auto w = make_worker(b);
            size_t with_worker = open_fds();
            auto r = net::Resolver::create(*w, ro);
            cr_assert(r.ok());
            Catcher a, c;
            uint64_t id = (*r)->resolve("localhost", 1, SOCK_STREAM, a);
            (*r)->cancel(id);
            // A name that goes to the network: still outstanding when the resolver stops.
            (*r)->resolve("runewarp-test.invalid", 1, SOCK_STREAM, c);
            (void)w->run_once(0);
            (*r)->shutdown();
            run_until(*w, [&] { return (*r)->quiesced(); }, 2000, "resolver quiesced");
            cr_assert_eq(a.calls, 0);
            cr_assert_eq(c.calls, 0);
            cr_assert_eq(open_fds(), with_worker, "every c-ares socket is closed");
        }
        cr_assert_eq(open_fds(), before);
        ::close(mute);
    }
}

Test(net, a_refused_address_hands_over_to_the_next_at_once) {
    for (auto b : kBackends) {
        auto w = make_worker(b);
        uint16_t dead_port = 0, live_port = 0;
        int dead = closed_port(dead_port);
        int live = listener(live_port);
        size_t before = open_fds();
        auto* r = new Racer(*w);
        r->start({addr("127.0.0.1", dead_port), addr("127.0.0.1", live_port)});
        run_until(*w, [&] { return r->done; }, 3000, "race over");
        cr_assert(r->connector.status() == net::Connector::Status::kConnected);
        std::string won = net::format_address(r->connector.winner_address());
        std::string want = net::format_address(addr("127.0.0.1", live_port));
        cr_assert_str_eq(won.c_str(), want.c_str());
        cr_assert_lt(r->finished - r->started, net::kAttemptDelayNs,
                     "a refusal does not wait for the stagger");
        core::UniqueFd s = r->connector.take_socket();
        cr_assert(s.valid());
        s.reset();
        r->abort(0);
        run_until(*w, [&] { return r->quiesced; }, 2000, "quiesced");
        delete r;
        cr_assert_eq(open_fds(), before, "no socket left behind");
        ::close(dead);
        ::close(live);
    }
}

Test(net, a_silent_address_is_raced_after_the_stagger_and_loses) {
    for (auto b : kBackends) {
        auto w = make_worker(b);
        SilentListener silent;
        uint16_t live_port = 0;
        int live = listener(live_port);
        size_t before = open_fds();
        auto* r = new Racer(*w);
        r->start({addr("127.0.0.1", silent.port), addr("127.0.0.1", live_port)});
        run_until(*w, [&] { return r->done; }, 3000, "race over");
        cr_assert(r->connector.status() == net::Connector::Status::kConnected);
        std::string won = net::format_address(r->connector.winner_address());
        std::string want = net::format_address(addr("127.0.0.1", live_port));
        cr_assert_str_eq(won.c_str(), want.c_str());
        cr_assert_geq(r->finished - r->started, net::kAttemptDelayNs,
                      "the second address starts only after the stagger");
        cr_assert_eq(r->connector.attempts_started(), 2u);
        core::UniqueFd s = r->connector.take_socket();
        s.reset();
        // The silent attempt was cancelled; its socket is closed once its connect completed.
        r->abort(0);
        run_until(*w, [&] { return r->quiesced; }, 2000, "quiesced");
        delete r;
        cr_assert_eq(open_fds(), before, "the losing socket is closed");
        ::close(live);
    }
}

Test(net, every_address_refused_fails_with_the_first_error) {
    for (auto b : kBackends) {
        auto w = make_worker(b);
        uint16_t p1 = 0, p2 = 0;
        int d1 = closed_port(p1), d2 = closed_port(p2);
        auto* r = new Racer(*w);
        r->start({addr("127.0.0.1", p1), addr("127.0.0.1", p2)});
        run_until(*w, [&] { return r->done; }, 3000, "race over");
        cr_assert(r->connector.status() == net::Connector::Status::kFailed);
        cr_assert_eq(r->connector.first_error(), ECONNREFUSED);
        cr_assert_eq(r->connector.attempts_started(), 2u);
        r->abort(0);
        run_until(*w, [&] { return r->quiesced; }, 2000, "quiesced");
        delete r;
        ::close(d1);
        ::close(d2);
    }
}
