// The Server's public side end to end (spec 5.1, 5.4-5.11, 5.14, 12.1): the real binary in front
// of nginx upstreams, with curl, GnuTLS and raw sockets as Visitors. Runs once per event-loop
// backend (RUNEWARP_EVENT_BACKEND=io_uring|epoll is set by the test registration).
#include <criterion/criterion.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "tests/integration/edge_support.hh"
#include "tests/support/curl.hh"
#include "tests/support/daemon.hh"
#include "tests/support/files.hh"
#include "tests/support/hosts.hh"
#include "tests/support/net.hh"
#include "tests/support/nginx.hh"
#include "tests/support/process.hh"
#include "tests/support/tls.hh"

using namespace runewarp::test;
using namespace runewarp::test::edge;
using Clock = std::chrono::steady_clock;

namespace {

const std::string kApp = "app.example.test";
const std::string kWiki = "wiki.example.test";

Millis since(Clock::time_point t) {
    return std::chrono::duration_cast<Millis>(Clock::now() - t);
}

std::string upstream_of(const NginxFixture& n, bool proxy = false) {
    return host_port(n.address(), proxy ? n.proxy_port() : n.port());
}

HttpResponse get_via(const Edge& e, const std::string& host, const std::string& ca,
                     const std::string& path, std::string_view preamble = {},
                     const std::string& addr = "127.0.0.1") {
    return https_get_over(tcp_connect(addr, e.port()), host, ca, path, preamble, Millis{15000});
}

// Two upstreams: alpha serves app.example.test (plus a PROXY v2 listener), beta serves wiki.
struct Upstreams {
    NginxFixture alpha{{.name = "alpha", .hostnames = {kApp}, .proxy_protocol = true}};
    NginxFixture beta{{.name = "beta", .hostnames = {kWiki, "docs.example.test"}}};

    std::vector<Route> routes() const {
        return {{.label = "app", .hostnames = {kApp}, .upstream = upstream_of(alpha)},
                {.label = "wiki",
                 .hostnames = {kWiki, "docs.example.test"},
                 .upstream = upstream_of(beta)}};
    }
};

// An open TLS session through the proxy on which nothing is sent yet (an idle relay).
std::unique_ptr<TlsClient> open_idle_relay(const Edge& e, const NginxFixture& n,
                                           const std::string& host) {
    auto c = std::make_unique<TlsClient>(tcp_connect("127.0.0.1", e.port()), host, n.ca_file());
    cr_assert(c->handshake(Millis{10000}), "handshake: %s", c->error().c_str());
    return c;
}

std::string get_request(const std::string& host, const std::string& path) {
    return "GET " + path + " HTTP/1.1\r\nHost: " + host + "\r\nConnection: close\r\n\r\n";
}

// True when the peer closed (EOF or reset) the socket; waits up to the deadline. Pending bytes
// (e.g. TLS session tickets nobody read) are discarded.
bool socket_closed(int fd, Millis deadline) {
    return wait_until(
        [&] {
            char b[4096];
            for (;;) {
                ssize_t n = ::recv(fd, b, sizeof b, MSG_DONTWAIT);
                if (n > 0) continue;
                return n == 0 || (errno != EAGAIN && errno != EINTR);
            }
        },
        deadline);
}

// A raw TCP upstream on a thread: accepts one connection and then plays its script.
class RawUpstream {
public:
    enum class Mode { kReplyAfterEof, kResetAfter };
    RawUpstream(Mode mode, std::size_t reset_after = 0) : mode_(mode), reset_after_(reset_after) {
        port_ = free_port();
        int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_port = htons(port_);
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        int one = 1;
        ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(fd, 16) != 0)
            throw std::runtime_error("raw upstream: bind/listen failed");
        listen_ = Fd(fd);
        thread_ = std::thread([this] { run_(); });
    }
    ~RawUpstream() {
        stop_ = true;
        thread_.join();
    }
    std::uint16_t port() const { return port_; }
    bool done() const { return done_; }
    // Valid once done().
    const std::string& received() const { return received_; }
    bool saw_eof() const { return saw_eof_; }

    static constexpr std::string_view kReply = "reply-after-eof";

private:
    bool poll_in_(int fd) {
        while (!stop_) {
            pollfd p{fd, POLLIN, 0};
            if (::poll(&p, 1, 20) > 0) return true;
        }
        return false;
    }
    void run_() {
        if (!poll_in_(listen_.get())) return;
        Fd c(::accept4(listen_.get(), nullptr, nullptr, SOCK_CLOEXEC));
        char buf[16384];
        for (;;) {
            if (mode_ == Mode::kResetAfter && received_.size() >= reset_after_) {
                linger l{1, 0};
                ::setsockopt(c.get(), SOL_SOCKET, SO_LINGER, &l, sizeof l);
                c.reset();
                break;
            }
            if (!poll_in_(c.get())) break;
            ssize_t n = ::recv(c.get(), buf, sizeof buf, 0);
            if (n > 0) {
                received_.append(buf, static_cast<std::size_t>(n));
                continue;
            }
            saw_eof_ = n == 0;
            if (saw_eof_ && mode_ == Mode::kReplyAfterEof) send_all(c.get(), kReply);
            break;
        }
        done_ = true;
    }

    Mode mode_;
    std::size_t reset_after_;
    std::uint16_t port_ = 0;
    Fd listen_;
    std::thread thread_;
    std::atomic<bool> stop_{false};
    std::atomic<bool> done_{false};
    std::string received_;
    bool saw_eof_ = false;
};

// Sits between a TLS client (one end of a socketpair) and the proxy and forwards the first TLS
// record (the ClientHello) one byte per segment, waiting after each until the kernel has sent it;
// everything else is forwarded as it comes.
class ByteByBytePump {
public:
    explicit ByteByBytePump(Fd upstream) : up_(std::move(upstream)) {
        int sv[2];
        if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
            throw std::runtime_error("socketpair");
        client_ = Fd(sv[0]);
        inner_ = Fd(sv[1]);
        int one = 1;
        ::setsockopt(up_.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        thread_ = std::thread([this] { run_(); });
    }
    ~ByteByBytePump() {
        stop_ = true;
        thread_.join();
    }
    Fd take_client() { return std::move(client_); }
    std::size_t single_byte_segments() const { return single_; }

private:
    void run_() {
        bool a_open = true, b_open = true;
        std::string head;  // the first 5 bytes: the record header gives the record length
        std::size_t slow_limit = 5;
        std::size_t forwarded = 0;
        char buf[16384];
        while (!stop_ && (a_open || b_open)) {
            pollfd p[2] = {{inner_.get(), static_cast<short>(a_open ? POLLIN : 0), 0},
                           {up_.get(), static_cast<short>(b_open ? POLLIN : 0), 0}};
            if (::poll(p, 2, 20) <= 0) continue;
            if (a_open && (p[0].revents & (POLLIN | POLLHUP))) {
                ssize_t n = ::recv(inner_.get(), buf, sizeof buf, 0);
                if (n <= 0) {
                    ::shutdown(up_.get(), SHUT_WR);
                    a_open = false;
                } else {
                    std::string_view data(buf, static_cast<std::size_t>(n));
                    while (!data.empty() && forwarded < slow_limit) {
                        if (::send(up_.get(), data.data(), 1, MSG_NOSIGNAL) != 1) return;
                        if (head.size() < 5) head.push_back(data.front());
                        data.remove_prefix(1);
                        ++forwarded;
                        ++single_;
                        if (forwarded == 5) {
                            slow_limit = 5 + ((static_cast<unsigned char>(head[3]) << 8) |
                                              static_cast<unsigned char>(head[4]));
                        }
                        // The pause: until the byte has left the send queue.
                        wait_until(
                            [&] {
                                int unsent = 0;
                                return ::ioctl(up_.get(), SIOCOUTQNSD, &unsent) == 0 && unsent == 0;
                            },
                            Millis{2000}, Millis{1});
                    }
                    if (!data.empty() && !send_all(up_.get(), data)) return;
                    forwarded += data.size();
                }
            }
            if (b_open && (p[1].revents & (POLLIN | POLLHUP | POLLERR))) {
                ssize_t n = ::recv(up_.get(), buf, sizeof buf, 0);
                if (n <= 0) {
                    ::shutdown(inner_.get(), SHUT_WR);
                    b_open = false;
                } else if (!send_all(inner_.get(), std::string_view(buf, n))) {
                    return;
                }
            }
        }
    }

    Fd up_, client_, inner_;
    std::thread thread_;
    std::atomic<bool> stop_{false};
    std::atomic<std::size_t> single_{0};
};

// A ClientHello whose SNI is an IP literal: GnuTLS refuses to send one, so a hostname of the
// same length is captured and overwritten in place.
std::string hello_with_ip_sni() {
    const std::string name = "a.example.io";
    const std::string ip = "10.100.200.1";
    std::string hello = capture_client_hello(name);
    const std::size_t at = hello.find(name);
    cr_assert_neq(at, std::string::npos);
    cr_assert_eq(hello.find(name, at + 1), std::string::npos);
    hello.replace(at, name.size(), ip);
    return hello;
}

}  // namespace

TestSuite(edge, .timeout = 120);

Test(edge, each_sni_reaches_its_own_upstream) {
    Upstreams up;
    Edge e({.routes = up.routes()});

    HttpResponse a = get_via(e, kApp, up.alpha.ca_file(), "/name");
    cr_assert(a.ok, "%s\n%s", a.error.c_str(), e.log().c_str());
    cr_assert_eq(a.body, "alpha app.example.test\n");
    HttpResponse w = get_via(e, kWiki, up.beta.ca_file(), "/name");
    cr_assert(w.ok, "%s", w.error.c_str());
    cr_assert_eq(w.body, "beta wiki.example.test\n");
    HttpResponse d = get_via(e, "docs.example.test", up.beta.ca_file(), "/name");
    cr_assert(d.ok, "%s", d.error.c_str());
    cr_assert_eq(d.body, "beta docs.example.test\n");

    // curl as a Visitor too, and the access line of a relayed connection.
    TempDir out;
    CurlResult c =
        curl_download({kWiki, e.port(), "127.0.0.1", up.beta.ca_file()}, "/small", out / "s");
    cr_assert(c.ok(), "%s", c.stderr_text.c_str());
    cr_assert_eq(read_file(out / "s"), "ok\n");
    cr_assert(e.wait_log("route=app"));
    const std::string log = e.log();
    cr_assert_neq(log.find("server visitor closed: conn="), std::string::npos, "%s", log.c_str());
    cr_assert_neq(log.find("state=relay public-hostname=app.example.test route=app target=" +
                           upstream_of(up.alpha)),
                  std::string::npos, "%s", log.c_str());
    cr_assert_neq(log.find("reason=done"), std::string::npos, "%s", log.c_str());
}

Test(edge, large_download_and_upload_are_byte_identical, .timeout = 240) {
    Upstreams up;
    Edge e({.routes = up.routes()});
    const CachedFile big = cached_random_file(256u << 20, 7);
    up.alpha.add_file("big.bin", big.path);
    const HttpsTarget t{kApp, e.port(), "127.0.0.1", up.alpha.ca_file()};
    TempDir out;

    CurlResult d = curl_download(t, "/files/big.bin", out / "big.bin", Millis{180000});
    cr_assert(d.ok(), "curl: %s http %d %s", d.status.describe().c_str(), d.http_code,
              d.stderr_text.c_str());
    cr_assert_eq(d.bytes, 256u << 20);
    cr_assert_eq(d.sha256, big.sha256);
    remove_tree(out / "big.bin");

    CurlResult u = curl_upload(t, "/upload/up.bin", big.path, Millis{180000});
    cr_assert(u.ok(), "curl: %s http %d %s", u.status.describe().c_str(), u.http_code,
              u.stderr_text.c_str());
    cr_assert_eq(sha256_file(up.alpha.upload_path("up.bin")), big.sha256);
    remove_tree(up.alpha.upload_path("up.bin"));
    cr_assert(e.wait_log("bytes-in=268"), "%s", e.log().c_str());  // 268435456 + TLS overhead
}

Test(edge, unroutable_visitors_are_dropped_without_a_byte) {
    Upstreams up;
    Edge e({.routes = up.routes()});
    const std::string app_hello = capture_client_hello(kApp);
    struct Case {
        const char* what;
        std::string bytes;
        bool half_close;
        const char* reason;
    };
    const std::vector<Case> cases = {
        {"plain HTTP", "GET / HTTP/1.1\r\nHost: app.example.test\r\n\r\n", false,
         "reason=non-tls-client-hello"},
        {"TLS without SNI", capture_client_hello(""), false, "reason=missing-sni-client-hello"},
        {"IP literal as SNI", hello_with_ip_sni(), false, "reason=missing-sni-client-hello"},
        {"unknown SNI", capture_client_hello("nobody.example.test"), false,
         "reason=unauthorized-public-hostname"},
        {"Server hostname without acme-tls/1", capture_client_hello(kServerHostname, {"h2"}), false,
         "reason=non-acme-server-hostname"},
        {"half a ClientHello then EOF", app_hello.substr(0, app_hello.size() / 2), true,
         "reason=incomplete-client-hello"},
        // One full 16 KiB record of a 32 KiB ClientHello: more than 16384 bytes buffered.
        {"oversized ClientHello",
         std::string("\x16\x03\x01\x40\x00\x01\x00\x80\x00", 9) + std::string(16384 + 64, 'A'),
         false, "reason=oversized-client-hello"},
    };
    for (const Case& c : cases) {
        RawVisit v = raw_visit("127.0.0.1", e.port(), c.bytes, Millis{4000}, c.half_close);
        cr_assert(v.connected, "%s", c.what);
        cr_assert(v.reaction.closed, "%s: not closed", c.what);
        cr_assert(v.reaction.received.empty(), "%s: %zu bytes written", c.what,
                  v.reaction.received.size());
        cr_assert(e.wait_log(c.reason), "%s: no %s in\n%s", c.what, c.reason, e.log().c_str());
    }
    // Nothing reached an upstream and routing still works.
    cr_assert_eq(count_of(e.log(), "state=relay"), 0u, "%s", e.log().c_str());
    HttpResponse a = get_via(e, kApp, up.alpha.ca_file(), "/name");
    cr_assert(a.ok, "%s", a.error.c_str());
}

Test(edge, slowloris_is_dropped_at_the_intake_deadline_while_others_are_served) {
    Upstreams up;
    Edge e({.routes = up.routes()});
    const std::string hello = capture_client_hello(kApp);
    RawConnection slow("127.0.0.1", e.port());
    const auto start = Clock::now();
    cr_assert(slow.send(std::string_view(hello).substr(0, hello.size() / 2)));

    // Meanwhile, other Visitors are served.
    for (int i = 0; i < 5; ++i) {
        HttpResponse r = get_via(e, i % 2 ? kApp : kWiki,
                                 i % 2 ? up.alpha.ca_file() : up.beta.ca_file(), "/name");
        cr_assert(r.ok, "%s", r.error.c_str());
    }
    cr_assert_lt(since(start).count(), 4000, "serving others took too long to prove anything");

    PeerReaction r = slow.wait_closed(Millis{9000});
    const Millis elapsed = since(start);
    cr_assert(r.closed, "the slowloris was not dropped");
    cr_assert(r.received.empty());
    cr_assert_geq(elapsed.count(), 4800, "dropped after %lld ms", (long long)elapsed.count());
    cr_assert_lt(elapsed.count(), 8000, "dropped after %lld ms", (long long)elapsed.count());
    cr_assert(e.wait_log("reason=client-hello-timeout"), "%s", e.log().c_str());
}

namespace {

// Indices of the connections the peer has closed (FIN or RST), without waiting.
std::vector<size_t> closed_connections(std::vector<RawConnection>& conns) {
    std::vector<pollfd> pfds;
    for (const RawConnection& c : conns) pfds.push_back({c.fd(), POLLIN | POLLRDHUP, 0});
    std::vector<size_t> out;
    if (::poll(pfds.data(), pfds.size(), 0) <= 0) return out;
    for (size_t i = 0; i < pfds.size(); ++i) {
        if ((pfds[i].revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0) out.push_back(i);
    }
    return out;
}

}  // namespace

Test(edge, per_source_intake_limit_closes_one_and_recovers) {
    raise_fd_limit();
    Upstreams up;
    Edge e({.routes = up.routes()});
    // 257 Visitors from 127.0.0.1 connect and send nothing. Workers accept from their own
    // queues, not in connect order, so which one is refused is not known: exactly one is.
    std::vector<RawConnection> idle;
    for (int i = 0; i < 257; ++i) idle.emplace_back("127.0.0.1", e.port());
    std::vector<size_t> closed;
    cr_assert(wait_until(
                  [&] {
                      closed = closed_connections(idle);
                      return !closed.empty();
                  },
                  Millis{3000}),
              "none of 257 Visitors from one source was closed\n%s", e.log().c_str());
    cr_assert(e.wait_log("server admission saturated"), "%s", e.log().c_str());
    closed = closed_connections(idle);
    cr_assert_eq(closed.size(), 1u, "%zu of 257 Visitors from one source were closed",
                 closed.size());
    PeerReaction r = idle[closed.front()].wait_closed(Millis{1000});
    cr_assert(r.closed);
    cr_assert(r.received.empty());
    idle.erase(idle.begin() + static_cast<std::ptrdiff_t>(closed.front()));

    // Their slots come back exactly once: after they leave, Visitors are served again.
    idle.clear();
    cr_assert(wait_until([&] { return count_of(e.log(), "reason=incomplete-client-hello") >= 256; },
                         Millis{10000}),
              "%zu", count_of(e.log(), "reason=incomplete-client-hello"));
    HttpResponse a = get_via(e, kApp, up.alpha.ca_file(), "/name");
    cr_assert(a.ok, "%s\n%s", a.error.c_str(), e.log().c_str());
    cr_assert_eq(a.body, "alpha app.example.test\n");
    cr_assert(e.wait_log("server admission recovered"), "%s", e.log().c_str());
}

Test(edge, client_hello_delivered_byte_by_byte_still_routes) {
    Upstreams up;
    Edge e({.routes = up.routes()});
    ByteByBytePump pump(tcp_connect("127.0.0.1", e.port()));
    TlsClient c(pump.take_client(), kWiki, up.beta.ca_file());
    cr_assert(c.handshake(Millis{30000}), "%s\n%s", c.error().c_str(), e.log().c_str());
    cr_assert_gt(pump.single_byte_segments(), 100u);
    cr_assert(c.send(get_request(kWiki, "/name")));
    const std::string reply = c.recv_until_close(Millis{10000});
    cr_assert_neq(reply.find("\r\n\r\nbeta wiki.example.test\n"), std::string::npos, "%s",
                  reply.c_str());
}

Test(edge, proxy_v2_from_a_trusted_peer_is_honoured) {
    Upstreams up;
    auto routes = up.routes();
    routes[0].upstream = upstream_of(up.alpha, /*proxy=*/true);
    routes[0].proxy_v2 = true;
    Edge e({.visitor_proxy_trusted = "127.0.0.0/8", .routes = routes});
    const std::string header = proxy_v2_header("203.0.113.9", 54321, "198.51.100.10", 443);
    HttpResponse r = get_via(e, kApp, up.alpha.ca_file(), "/proxy", header);
    cr_assert(r.ok, "%s\n%s", r.error.c_str(), e.log().c_str());
    cr_assert_eq(r.body, "203.0.113.9:54321 198.51.100.10:443\n");

    // A route without proxy-protocol still gets the TLS bytes only (the header was consumed).
    HttpResponse w = get_via(e, kWiki, up.beta.ca_file(), "/name",
                             proxy_v2_header("2001:db8::1", 1000, "2001:db8::2", 443));
    cr_assert(w.ok, "%s", w.error.c_str());
    cr_assert_eq(w.body, "beta wiki.example.test\n");
}

Test(edge, upstream_sees_the_visitor_socket_tuple_without_ingress_proxy) {
    Upstreams up;
    auto routes = up.routes();
    routes[0].upstream = upstream_of(up.alpha, /*proxy=*/true);
    routes[0].proxy_v2 = true;
    Edge e({.routes = routes});
    Fd fd = tcp_connect("127.0.0.1", e.port());
    cr_assert(fd.valid());
    RawConnection probe_local(Fd(::dup(fd.get())));
    const auto [lip, lport] = probe_local.local();
    HttpResponse r = https_get_over(std::move(fd), kApp, up.alpha.ca_file(), "/proxy");
    cr_assert(r.ok, "%s\n%s", r.error.c_str(), e.log().c_str());
    cr_assert_eq(r.body, lip + ":" + std::to_string(lport) +
                             " 127.0.0.1:" + std::to_string(e.port()) + "\n");
}

Test(edge, proxy_v2_from_an_untrusted_peer_is_dropped) {
    Upstreams up;
    Edge e({.visitor_proxy_trusted = "10.0.0.0/8", .routes = up.routes()});
    RawVisit v = raw_visit(
        "127.0.0.1", e.port(),
        proxy_v2_header("203.0.113.9", 54321, "198.51.100.10", 443) + capture_client_hello(kApp),
        Millis{4000});
    cr_assert(v.connected);
    cr_assert(v.reaction.closed);
    cr_assert(v.reaction.received.empty());
    cr_assert(e.wait_log("reason=untrusted-proxy-peer"), "%s", e.log().c_str());
    cr_assert_eq(count_of(e.log(), "state=relay"), 0u);
}

Test(edge, bad_or_local_proxy_v2_headers_are_dropped) {
    Upstreams up;
    Edge e({.visitor_proxy_trusted = "127.0.0.0/8", .routes = up.routes()});
    const std::string hello = capture_client_hello(kApp);
    const std::string good = proxy_v2_header("203.0.113.9", 54321, "198.51.100.10", 443);
    std::string local = good;
    local[12] = '\x20';  // LOCAL command
    std::string bad_signature = good;
    bad_signature[3] = 'X';
    std::string udp = good;
    udp[13] = '\x12';  // UDP over IPv4
    std::string short_len = good;
    short_len[15] = 4;  // length below the 12 address bytes of IPv4
    short_len.resize(16 + 4);
    for (const std::string& h : {local, bad_signature, udp, short_len, std::string()}) {
        RawVisit v = raw_visit("127.0.0.1", e.port(), h + hello, Millis{4000});
        cr_assert(v.connected);
        cr_assert(v.reaction.closed, "header of %zu bytes not dropped", h.size());
        cr_assert(v.reaction.received.empty());
    }
    cr_assert(wait_until([&] { return count_of(e.log(), "reason=invalid-proxy-header") >= 5; },
                         Millis{5000}),
              "%s", e.log().c_str());
    cr_assert_eq(count_of(e.log(), "state=relay"), 0u);
}

Test(edge, unreachable_upstream_closes_the_visitor_only) {
    Upstreams up;
    auto routes = up.routes();
    routes.push_back({.label = "down",
                      .hostnames = {"down.example.test"},
                      .upstream = host_port("127.0.0.1", free_port())});
    Edge e({.routes = routes});

    auto busy = open_idle_relay(e, up.alpha, kApp);  // relay in flight on the other route
    RawVisit v =
        raw_visit("127.0.0.1", e.port(), capture_client_hello("down.example.test"), Millis{6000});
    cr_assert(v.connected);
    cr_assert(v.reaction.closed, "the Visitor of a dead upstream was not closed");
    cr_assert(v.reaction.received.empty());
    cr_assert(e.wait_log("reason=upstream-connect-failed"), "%s", e.log().c_str());

    cr_assert(busy->send(get_request(kApp, "/name")));
    const std::string reply = busy->recv_until_close(Millis{10000});
    cr_assert_neq(reply.find("alpha app.example.test\n"), std::string::npos, "%s", reply.c_str());
}

// On a stock host `localhost` resolves to ::1 first; an upstream listening on 127.0.0.1 only is
// still reached: every resolved address is tried (a refusal hands over at once).
Test(edge, an_upstream_whose_first_address_refuses_is_reached_on_the_next) {
    NginxFixture alpha{{.name = "alpha", .hostnames = {kApp}}};
    TempDir d;
    write_file(d / "hosts", kStockHosts);
    const std::string upstream = host_port("localhost", alpha.port());
    Edge e({.routes = {{.label = "app", .hostnames = {kApp}, .upstream = upstream}},
            .launcher = with_hosts_file(d / "hosts", {})});
    const std::string port = std::to_string(alpha.port());
    cr_assert(e.wait_log("server route upstream resolved: route=app upstream-address=" + upstream +
                         " addresses=[::1]:" + port + ",127.0.0.1:" + port),
              "%s", e.log().c_str());
    for (int i = 0; i < 3; ++i) {
        HttpResponse a = get_via(e, kApp, alpha.ca_file(), "/name");
        cr_assert(a.ok, "%s\n%s", a.error.c_str(), e.log().c_str());
        cr_assert_eq(a.body, "alpha app.example.test\n");
    }
    cr_assert_eq(e.log().find("reason=upstream-connect-failed"), std::string::npos, "%s",
                 e.log().c_str());
}

// A name that does not resolve at startup is a startup error naming the route: the Server never
// serves a route it cannot reach.
Test(edge, an_upstream_name_that_does_not_resolve_fails_startup) {
    TempDir d;
    write_file(d / "hosts", kStockHosts);
    write_file(d / "resolv.conf", "");
    ServerSpec spec{.public_bind = host_port("127.0.0.1", free_port()),
                    .routes = {{.label = "app",
                                .hostnames = {kApp},
                                .upstream = "nothing.example.invalid:443"}}};
    write_file(d / "server.ini", server_ini(spec));
    RunResult r = run(with_hosts_file(d / "hosts", {runewarp_binary(), "server", "-c", d / "server.ini"},
                                      d / "resolv.conf"),
                      Millis{30000});
    cr_assert_eq(r.status.code, 1, "%s", r.status.describe().c_str());
    cr_assert_neq(r.err.find("route \"app\": upstream-address nothing.example.invalid:443: "
                             "cannot resolve nothing.example.invalid: "),
                  std::string::npos, "%s", r.err.c_str());
}

// An upstream name is resolved again once its answer's TTL has run out (/etc/hosts answers have
// none, so the floor of 5 s applies): new Visitors follow the new address, the running relay
// keeps its upstream.
Test(edge, an_upstream_name_is_resolved_again_when_its_ttl_runs_out, .timeout = 120) {
    std::uint16_t port = free_port();
    NginxFixture two{{.name = "two", .address = "127.0.0.2", .port = port, .hostnames = {kApp}}};
    NginxFixture three{
        {.name = "three", .address = "127.0.0.3", .port = port, .hostnames = {kApp}}};
    TempDir d;
    write_file(d / "hosts", "127.0.0.2 upstream.example.test\n");
    const std::string upstream = host_port("upstream.example.test", port);
    Edge e({.routes = {{.label = "app", .hostnames = {kApp}, .upstream = upstream}},
            .launcher = with_hosts_file(d / "hosts", {})});
    HttpResponse a = get_via(e, kApp, two.ca_file(), "/name");
    cr_assert(a.ok, "%s\n%s", a.error.c_str(), e.log().c_str());
    cr_assert_eq(a.body, "two app.example.test\n");
    auto busy = open_idle_relay(e, two, kApp);

    write_file(d / "hosts", "127.0.0.3 upstream.example.test\n");  // in place: same inode
    cr_assert(e.wait_log("server route upstream addresses changed: route=app upstream-address=" +
                             upstream + " addresses=127.0.0.3:" + std::to_string(port),
                         Millis{20000}),
              "%s", e.log().c_str());
    HttpResponse b = get_via(e, kApp, three.ca_file(), "/name");
    cr_assert(b.ok, "%s\n%s", b.error.c_str(), e.log().c_str());
    cr_assert_eq(b.body, "three app.example.test\n");

    cr_assert(busy->send(get_request(kApp, "/name")));
    const std::string reply = busy->recv_until_close(Millis{10000});
    cr_assert_neq(reply.find("two app.example.test\n"), std::string::npos, "%s", reply.c_str());
}

Test(edge, two_thousand_concurrent_visitors_complete, .timeout = 180) {
    raise_fd_limit();
    Upstreams up;
    Edge e({.routes = up.routes()});
    constexpr int kThreads = 4;
    constexpr int kPerThread = 500;
    std::vector<std::vector<std::unique_ptr<TlsClient>>> clients(kThreads);
    std::atomic<int> established{0};
    std::atomic<int> ok{0};
    std::vector<std::string> errors(kThreads);
    std::atomic<bool> go{false};

    auto worker = [&](int t) {
        const bool app = t % 2 == 0;
        const std::string host = app ? kApp : kWiki;
        const std::string ca = app ? up.alpha.ca_file() : up.beta.ca_file();
        for (int i = 0; i < kPerThread; ++i) {
            auto c = std::make_unique<TlsClient>(tcp_connect("127.0.0.1", e.port()), host, ca);
            if (!c->handshake(Millis{30000})) {
                errors[t] = "handshake " + std::to_string(i) + ": " + c->error();
                return;
            }
            clients[t].push_back(std::move(c));
            ++established;
        }
        // Every connection stays open until all of them are: 2000 relays at once.
        while (!go) std::this_thread::yield();
        const std::string expect = app ? "alpha" : "beta";
        for (auto& c : clients[t]) {
            if (!c->send(get_request(host, "/small"))) continue;
            const std::string r = c->recv_until_close(Millis{30000});
            if (r.rfind("HTTP/1.1 200", 0) == 0 && r.size() > 3 &&
                r.compare(r.size() - 3, 3, "ok\n") == 0)
                ++ok;
        }
    };
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) threads.emplace_back(worker, t);
    const bool all_open =
        wait_until([&] { return established == kThreads * kPerThread; }, Millis{90000}, Millis{20});
    go = true;
    for (auto& th : threads) th.join();
    clients.clear();
    for (const auto& err : errors) cr_assert(err.empty(), "%s", err.c_str());
    cr_assert(all_open, "only %d connections established", established.load());
    cr_assert_eq(ok.load(), kThreads * kPerThread);
    cr_assert(wait_until([&] { return count_of(e.log(), "reason=done") == 2000u; }, Millis{20000}),
              "%zu relays logged", count_of(e.log(), "reason=done"));
    cr_assert_eq(count_of(e.log(), "admission saturated"), 0u);
}

Test(edge, ipv6_visitor_and_upstream) {
    NginxFixture six({.name = "six", .address = "::1", .hostnames = {kApp}});
    Edge e({.routes = {{.label = "app", .hostnames = {kApp}, .upstream = upstream_of(six)}}},
           Family::kV6);
    HttpResponse r = get_via(e, kApp, six.ca_file(), "/name", {}, "::1");
    cr_assert(r.ok, "%s\n%s", r.error.c_str(), e.log().c_str());
    cr_assert_eq(r.body, "six app.example.test\n");
    cr_assert(e.wait_log("target=[::1]:" + std::to_string(six.port())), "%s", e.log().c_str());
}

Test(edge, dual_stack_listener_reports_ipv4_visitors_as_plain_ipv4) {
    Upstreams up;
    auto routes = up.routes();
    routes[0].upstream = upstream_of(up.alpha, /*proxy=*/true);
    routes[0].proxy_v2 = true;
    const std::uint16_t port = free_port(Family::kV6);
    Edge e({.public_bind = "[::]:" + std::to_string(port), .routes = routes});
    Fd fd = tcp_connect("127.0.0.1", port);
    cr_assert(fd.valid());
    RawConnection probe_local(Fd(::dup(fd.get())));
    const auto [lip, lport] = probe_local.local();
    HttpResponse r = https_get_over(std::move(fd), kApp, up.alpha.ca_file(), "/proxy");
    cr_assert(r.ok, "%s\n%s", r.error.c_str(), e.log().c_str());
    cr_assert_eq(
        r.body, "127.0.0.1:" + std::to_string(lport) + " 127.0.0.1:" + std::to_string(port) + "\n");
}

Test(edge, sigterm_lets_a_running_download_finish_and_refuses_new_visitors, .timeout = 180) {
    Upstreams up;
    const std::uint16_t ready = free_port();
    Edge e({.readiness_bind = host_port("127.0.0.1", ready), .routes = up.routes()});
    const CachedFile file = cached_random_file(64u << 20, 11);
    up.alpha.add_file("f.bin", file.path);
    TempDir out;
    const HttpsTarget t{kApp, e.port(), "127.0.0.1", up.alpha.ca_file()};
    auto args = curl_base_args(t);
    args.insert(args.end(),
                {"--limit-rate", "24M", "--output", out / "f.bin", https_url(t, "/files/f.bin")});
    Process curl = Process::spawn({.argv = args, .err = Output::file(out / "curl.err")});
    cr_assert(
        wait_until(
            [&] { return file_exists(out / "f.bin") && file_size(out / "f.bin") >= (4u << 20); },
            Millis{20000}),
        "download did not start: %s", read_file(out / "curl.err").c_str());

    RawConnection in_intake("127.0.0.1", e.port());
    const std::string hello = capture_client_hello(kApp);
    cr_assert(in_intake.send(std::string_view(hello).substr(0, 20)));

    cr_assert(e.daemon().process().signal(SIGTERM));
    cr_assert(e.wait_log("server orderly shutdown started: mode=graceful"), "%s", e.log().c_str());
    // A Visitor still in intake is dropped at once, not at its 5 s deadline.
    PeerReaction cancelled = in_intake.wait_closed(Millis{2000});
    cr_assert(cancelled.closed, "a Visitor in intake survived the shutdown start");
    cr_assert(cancelled.received.empty());
    cr_assert(wait_until([&] { return !tcp_accepting("127.0.0.1", ready); }, Millis{3000}),
              "readiness still accepting");
    cr_assert(wait_until([&] { return !tcp_accepting("127.0.0.1", e.port()); }, Millis{3000}),
              "public listener still accepting");
    cr_assert(curl.running(), "the download ended before the listeners closed");
    cr_assert(e.daemon().process().running(), "exited while a relay was running");
    int err = 0;
    Fd refused = tcp_connect("127.0.0.1", e.port(), Millis{2000}, &err);
    cr_assert_not(refused.valid());
    cr_assert_eq(err, ECONNREFUSED);

    auto cs = curl.wait_exit(Millis{120000});
    cr_assert(cs && cs->success(), "curl: %s", read_file(out / "curl.err").c_str());
    cr_assert_eq(sha256_file(out / "f.bin"), file.sha256);
    auto st = e.daemon().process().wait_exit(Millis{10000});
    cr_assert(st.has_value(), "still running after the last relay ended");
    cr_assert(st->success(), "%s\n%s", st->describe().c_str(), e.log().c_str());
    cr_assert(e.wait_log("server orderly shutdown complete"));
    cr_assert_eq(count_of(e.log(), "deadline expired"), 0u);
}

Test(edge, graceful_deadline_cuts_a_stalled_relay) {
    Upstreams up;
    Edge e({.graceful = "1s", .routes = up.routes()});
    auto stalled = open_idle_relay(e, up.alpha, kApp);
    const auto start = Clock::now();
    cr_assert(e.daemon().process().signal(SIGTERM));
    auto st = e.daemon().process().wait_exit(Millis{6000});
    const Millis elapsed = since(start);
    cr_assert(st.has_value(), "not cut after the graceful window");
    cr_assert(st->success(), "%s", st->describe().c_str());
    cr_assert_geq(elapsed.count(), 900, "exited after %lld ms", (long long)elapsed.count());
    cr_assert_lt(elapsed.count(), 3000, "exited after %lld ms", (long long)elapsed.count());
    cr_assert(socket_closed(stalled->fd(), Millis{2000}));
    const std::string log = e.log();
    cr_assert_neq(log.find("server graceful shutdown deadline expired"), std::string::npos, "%s",
                  log.c_str());
    cr_assert_neq(log.find("server orderly shutdown complete"), std::string::npos);
}

Test(edge, sigquit_shuts_down_fast) {
    Upstreams up;
    Edge e({.graceful = "30s", .routes = up.routes()});
    auto stalled = open_idle_relay(e, up.beta, kWiki);
    const auto start = Clock::now();
    cr_assert(e.daemon().process().signal(SIGQUIT));
    auto st = e.daemon().process().wait_exit(Millis{5000});
    cr_assert(st.has_value());
    cr_assert(st->success(), "%s", st->describe().c_str());
    cr_assert_lt(since(start).count(), 2000);
    cr_assert(socket_closed(stalled->fd(), Millis{2000}));
    cr_assert(e.wait_log("server orderly shutdown started: mode=fast"), "%s", e.log().c_str());
}

Test(edge, zero_graceful_duration_makes_sigterm_fast) {
    Upstreams up;
    Edge e({.graceful = "0s", .routes = up.routes()});
    auto stalled = open_idle_relay(e, up.alpha, kApp);
    const auto start = Clock::now();
    cr_assert(e.daemon().process().signal(SIGTERM));
    auto st = e.daemon().process().wait_exit(Millis{5000});
    cr_assert(st.has_value() && st->success(), "%s", e.log().c_str());
    cr_assert_lt(since(start).count(), 2000);
    cr_assert(socket_closed(stalled->fd(), Millis{2000}));
    cr_assert(e.wait_log("server orderly shutdown started: mode=fast"), "%s", e.log().c_str());
}

Test(edge, sigint_during_graceful_escalates_to_fast) {
    Upstreams up;
    Edge e({.graceful = "30s", .routes = up.routes()});
    auto stalled = open_idle_relay(e, up.alpha, kApp);
    cr_assert(e.daemon().process().signal(SIGTERM));
    cr_assert(e.wait_log("mode=graceful"));
    cr_assert(e.daemon().process().signal(SIGTERM));  // repeated SIGTERM is ignored
    cr_assert_not(e.daemon().process().wait_exit(Millis{300}).has_value());
    cr_assert(e.daemon().process().signal(SIGINT));
    auto st = e.daemon().process().wait_exit(Millis{3000});
    cr_assert(st.has_value() && st->success(), "%s", e.log().c_str());
    cr_assert(e.wait_log("server orderly shutdown escalated: mode=fast"), "%s", e.log().c_str());
}

Test(edge, readiness_listener_accepts_while_running_and_stops_first) {
    Upstreams up;
    const std::uint16_t ready = free_port();
    Edge e({.readiness_bind = host_port("127.0.0.1", ready), .routes = up.routes()});
    RawConnection probe("127.0.0.1", ready);
    PeerReaction pr = probe.wait_closed(Millis{3000});
    cr_assert(pr.closed, "a probe is closed at once");
    cr_assert(pr.received.empty());

    auto busy = open_idle_relay(e, up.alpha, kApp);  // keeps the process in its drain
    cr_assert(e.daemon().process().signal(SIGTERM));
    cr_assert(wait_until([&] { return !tcp_accepting("127.0.0.1", ready); }, Millis{3000}));
    cr_assert(e.daemon().process().running());
    const std::string log = e.log();
    const auto lost = log.find("server readiness lost");
    cr_assert_neq(lost, std::string::npos, "%s", log.c_str());
    cr_assert_lt(log.find("server orderly shutdown started"), lost);
    // The relay in flight still works during the drain.
    cr_assert(busy->send(get_request(kApp, "/name")));
    const std::string reply = busy->recv_until_close(Millis{10000});
    cr_assert_neq(reply.find("alpha app.example.test\n"), std::string::npos, "%s", reply.c_str());
    busy.reset();  // the last relay ends: the drain is over
    auto st = e.daemon().process().wait_exit(Millis{10000});
    cr_assert(st && st->success());
}

Test(edge, half_close_reaches_the_upstream_and_the_reply_still_flows) {
    RawUpstream raw(RawUpstream::Mode::kReplyAfterEof);
    Edge e({.routes = {{.label = "raw",
                        .hostnames = {"raw.example.test"},
                        .upstream = host_port("127.0.0.1", raw.port())}}});
    const std::string sent = capture_client_hello("raw.example.test") + "request-after-hello";
    RawConnection c("127.0.0.1", e.port());
    cr_assert(c.send(sent));
    c.shutdown_write();
    PeerReaction r = c.wait_closed(Millis{10000});
    cr_assert(wait_until([&] { return raw.done(); }, Millis{5000}));
    cr_assert(raw.saw_eof(), "the upstream did not see the Visitor's FIN");
    cr_assert(raw.received() == sent, "the upstream got %zu bytes", raw.received().size());
    cr_assert(r.closed);
    cr_assert_not(r.reset);
    cr_assert_eq(r.received, std::string(RawUpstream::kReply));
    cr_assert(e.wait_log("route=raw"), "%s", e.log().c_str());
}

Test(edge, upstream_reset_resets_the_visitor) {
    const std::string hello = capture_client_hello("raw.example.test");
    RawUpstream raw(RawUpstream::Mode::kResetAfter, hello.size());
    Edge e({.routes = {{.label = "raw",
                        .hostnames = {"raw.example.test"},
                        .upstream = host_port("127.0.0.1", raw.port())}}});
    RawConnection c("127.0.0.1", e.port());
    cr_assert(c.send(hello));
    PeerReaction r = c.wait_closed(Millis{10000});
    // The upstream thread marks itself done right after its reset, which may reach the Visitor
    // first: wait for the flag instead of assuming an order.
    cr_assert(wait_until([&] { return raw.done(); }, Millis{5000}));
    cr_assert(r.closed);
    cr_assert(r.reset, "the Visitor saw an orderly close instead of a reset");
    cr_assert(r.received.empty());
}
