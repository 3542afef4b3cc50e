// The end-to-end test fixtures themselves: processes, waits, ports, TLS material, the nginx
// backend (download, upload, PROXY v2 listener), the raw Visitor and the UDP impairment relay.
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "tests/support/curl.hh"
#include "tests/support/daemon.hh"
#include "tests/support/files.hh"
#include "tests/support/net.hh"
#include "tests/support/nginx.hh"
#include "tests/support/pebble.hh"
#include "tests/support/process.hh"
#include "tests/support/tls.hh"
#include "tests/support/udp_relay.hh"

using namespace runewarp::test;

namespace {

bool pid_alive(pid_t pid) {
    return ::kill(pid, 0) == 0;
}

HttpsTarget target_of(const NginxFixture& n, const std::string& host) {
    return HttpsTarget{host, n.port(), n.address(), n.ca_file()};
}

}  // namespace

Test(fixtures, process_reports_exit_code_and_output) {
    RunResult r = run({"sh", "-c", "echo out; echo err >&2; exit 3"}, Millis{5000});
    cr_assert(r.status.exited);
    cr_assert_eq(r.status.code, 3);
    cr_assert_str_eq(r.out.c_str(), "out\n");
    cr_assert_str_eq(r.err.c_str(), "err\n");
}

Test(fixtures, process_environment_is_layered) {
    RunResult r = run({"sh", "-c", "printf %s \"$RW_FIXTURE_VAR\""}, Millis{5000},
                      {"RW_FIXTURE_VAR=layered"});
    cr_assert(r.status.success());
    cr_assert_str_eq(r.out.c_str(), "layered");
}

Test(fixtures, process_spawn_of_missing_program_throws) {
    bool threw = false;
    try {
        Process::spawn({.argv = {"/nonexistent/runewarp-fixture"}});
    } catch (const std::exception&) {
        threw = true;
    }
    cr_assert(threw);
}

Test(fixtures, process_and_its_group_die_with_the_handle) {
    TempDir dir;
    const std::string child_pid_file = dir / "child.pid";
    pid_t pid = -1;
    {
        Process p = Process::spawn(
            {.argv = {"sh", "-c", "sleep 300 & echo $! > " + child_pid_file + "; wait"}});
        pid = p.pid();
        cr_assert(wait_file_contains(child_pid_file, "\n", Millis{5000}));
        cr_assert(p.running());
    }
    const pid_t grandchild = std::stoi(read_file(child_pid_file));
    cr_assert_not(pid_alive(pid), "the shell was not killed");
    cr_assert(wait_until([&] { return !pid_alive(grandchild); }, Millis{5000}),
              "the shell's child survived");
}

Test(fixtures, process_wait_exit_honours_the_deadline) {
    Process p = Process::spawn({.argv = {"sleep", "300"}});
    cr_assert_not(p.wait_exit(Millis{50}).has_value());
    cr_assert(p.signal(SIGTERM));
    auto st = p.wait_exit(Millis{5000});
    cr_assert(st.has_value());
    cr_assert_eq(st->signal, SIGTERM);
}

Test(fixtures, free_ports_are_distinct_and_bindable) {
    std::uint16_t a = free_port(Family::kV4);
    std::uint16_t b = free_port(Family::kV4);
    std::uint16_t c = free_port(Family::kV6);
    cr_assert_neq(a, b);
    cr_assert_neq(b, c);
    cr_assert_not(tcp_accepting("127.0.0.1", a));
    cr_assert_eq(host_port("::1", 443), "[::1]:443");
}

// A port handed out is claimed among every test process of the machine: its claim cannot be
// taken again while this process runs, so a suite running alongside never gets the same port.
Test(fixtures, free_ports_are_claimed_among_test_processes) {
    const std::uint16_t port = free_port();
    errno = 0;
    cr_assert_not(claim_port(port).valid());
    cr_assert_eq(errno, EADDRINUSE);
}

// Children run with a runtime directory of the test process' own, not an inherited one (nor,
// without one, a daemon's machine-wide /run/runewarp-<role>/), unless the caller names one.
Test(fixtures, children_get_a_private_runtime_directory) {
    cr_assert_eq(::setenv("RUNTIME_DIRECTORY", "/run/shared-by-everyone", 1), 0);
    auto dir_of_child = [](const std::vector<std::string>& env) {
        RunResult r = run({"sh", "-c", "printf %s \"$RUNTIME_DIRECTORY\""}, Millis{5000}, env);
        cr_assert(r.status.success());
        return r.out;
    };
    const std::string dir = dir_of_child({});
    cr_assert_neq(dir, "/run/shared-by-everyone");
    cr_assert(file_exists(dir), "%s", dir.c_str());
    cr_assert_eq(dir_of_child({}), dir, "one directory for the whole test process");
    cr_assert_eq(dir_of_child({"RUNTIME_DIRECTORY=/tmp/named"}), "/tmp/named");
}

Test(fixtures, temp_dir_is_removed) {
    std::string path;
    {
        TempDir d;
        path = d.path();
        make_dirs(d / "a/b");
        write_file(d / "a/b/file", "x");
        cr_assert(file_exists(d / "a/b/file"));
    }
    cr_assert_not(file_exists(path));
}

Test(fixtures, sha256_matches_known_vector) {
    cr_assert_eq(sha256_hex("abc"),
                 "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    TempDir d;
    const std::string sum = write_random_file(d / "r.bin", 3 * 1024 * 1024 + 5, 7);
    cr_assert_eq(file_size(d / "r.bin"), 3u * 1024 * 1024 + 5);
    cr_assert_eq(sha256_file(d / "r.bin"), sum);
}

Test(fixtures, client_hello_capture_holds_the_sni) {
    const std::string hello = capture_client_hello("app.example.test", {"acme-tls/1"});
    cr_assert_gt(hello.size(), 5u);
    cr_assert_eq(static_cast<unsigned char>(hello[0]), 22);  // handshake record
    cr_assert_eq(static_cast<unsigned char>(hello[5]), 1);   // ClientHello
    cr_assert_neq(hello.find("app.example.test"), std::string::npos);
    cr_assert_neq(hello.find("acme-tls/1"), std::string::npos);
}

Test(fixtures, proxy_v2_header_is_byte_exact) {
    // The example of spec 5.7: 192.0.2.10:12345 -> 198.51.100.20:443.
    const std::string h = proxy_v2_header("192.0.2.10", 12345, "198.51.100.20", 443);
    cr_assert_eq(to_hex(reinterpret_cast<const unsigned char*>(h.data()), h.size()),
                 "0d0a0d0a000d0a515549540a2111000cc000020ac63364143039"
                 "01bb");
    cr_assert_eq(proxy_v2_header("2001:db8::1", 1, "2001:db8::2", 2).size(), 52u);
}

Test(fixtures, nginx_serves_a_16mib_file_with_matching_hash) {
    NginxFixture nginx({.hostnames = {"app.example.test", "api.example.test"}});
    const std::string sum = nginx.add_random_file("blob.bin", 16u << 20);
    TempDir out;
    CurlResult r =
        curl_download(target_of(nginx, "api.example.test"), "/files/blob.bin", out / "blob.bin");
    cr_assert(r.ok(), "curl: %s, http %d: %s", r.status.describe().c_str(), r.http_code,
              r.stderr_text.c_str());
    cr_assert_eq(r.bytes, 16u << 20);
    cr_assert_eq(r.sha256, sum);
}

Test(fixtures, nginx_upload_round_trip_hash_matches) {
    NginxFixture nginx;
    TempDir d;
    const std::string sum = write_random_file(d / "up.bin", 5u << 20, 42);
    CurlResult r =
        curl_upload(target_of(nginx, "app.example.test"), "/upload/up.bin", d / "up.bin");
    cr_assert(r.ok(), "curl: %s, http %d: %s", r.status.describe().c_str(), r.http_code,
              r.stderr_text.c_str());
    cr_assert_eq(r.sha256, sum);
    cr_assert_eq(sha256_file(nginx.upload_path("up.bin")), sum);
}

Test(fixtures, nginx_rejects_a_certificate_from_another_ca) {
    NginxFixture nginx;
    TempDir d;
    TestCa other;
    other.write_cert(d / "other.crt");
    HttpsTarget t = target_of(nginx, "app.example.test");
    t.ca_file = d / "other.crt";
    CurlResult r = curl_download(t, "/small", d / "small");
    cr_assert_not(r.status.success());
    cr_assert_eq(r.http_code, 0);
}

Test(fixtures, nginx_listens_on_ipv6_and_reports_the_sni) {
    NginxFixture nginx({.name = "six", .address = "::1"});
    HttpResponse r = https_get_over(tcp_connect("::1", nginx.port()), "app.example.test",
                                    nginx.ca_file(), "/name");
    cr_assert(r.ok, "%s", r.error.c_str());
    cr_assert_eq(r.status, 200);
    cr_assert_eq(r.body, "six app.example.test\n");
}

Test(fixtures, nginx_proxy_listener_reports_the_proxy_v2_tuple) {
    NginxFixture nginx({.proxy_protocol = true});
    const std::string header = proxy_v2_header("203.0.113.9", 54321, "198.51.100.10", 443);
    cr_assert_eq(header.size(), 28u);
    HttpResponse r = https_get_over(tcp_connect("127.0.0.1", nginx.proxy_port()),
                                    "app.example.test", nginx.ca_file(), "/proxy", header);
    cr_assert(r.ok, "%s\n%s", r.error.c_str(), read_file(nginx.error_log()).c_str());
    cr_assert_eq(r.status, 200);
    cr_assert_eq(r.body, "203.0.113.9:54321 198.51.100.10:443\n");
}

Test(fixtures, nginx_plaintext_h2c_and_plain_proxy_listeners_serve_the_same_endpoints) {
    NginxFixture nginx({.name = "plain", .proxy_protocol = true, .plaintext = true, .h2c = true});
    const std::string sha = nginx.add_random_file("f.bin", 1u << 20, 9);
    TempDir d;
    const std::string base = "http://app.example.test:";
    auto get = [&](std::uint16_t port, const std::string& path, const std::string& out,
                   std::vector<std::string> extra = {}) {
        std::vector<std::string> a{"curl",
                                   "--silent",
                                   "--show-error",
                                   "--noproxy",
                                   "*",
                                   "--resolve",
                                   "app.example.test:" + std::to_string(port) + ":127.0.0.1",
                                   "--output",
                                   out,
                                   "--write-out",
                                   "%{http_code} %{http_version}"};
        a.insert(a.end(), extra.begin(), extra.end());
        a.push_back(base + std::to_string(port) + path);
        return run(a, Millis{20000});
    };
    RunResult name = get(nginx.plain_port(), "/name", d / "name");
    cr_assert_eq(name.out, "200 1.1", "%s", name.err.c_str());
    cr_assert_eq(read_file(d / "name"), "plain app.example.test\n");
    RunResult file = get(nginx.plain_port(), "/files/f.bin", d / "f.bin");
    cr_assert_eq(file.out, "200 1.1", "%s", file.err.c_str());
    cr_assert_eq(sha256_file(d / "f.bin"), sha);

    RunResult h2 = get(nginx.h2c_port(), "/proto", d / "proto", {"--http2-prior-knowledge"});
    cr_assert_eq(h2.out, "200 2", "%s", h2.err.c_str());
    cr_assert_eq(read_file(d / "proto"), "HTTP/2.0\n");

    RawConnection c("127.0.0.1", nginx.plain_proxy_port());
    cr_assert(c.send(proxy_v2_header("203.0.113.9", 54321, "198.51.100.10", 443) +
                     "GET /proxy HTTP/1.0\r\nHost: app.example.test\r\n\r\n"));
    PeerReaction r = c.wait_closed(Millis{5000});
    cr_assert(r.closed);
    cr_assert(r.received.ends_with("\r\n\r\n203.0.113.9:54321 198.51.100.10:443\n"), "%s",
              r.received.c_str());
}

Test(fixtures, raw_visitor_sees_the_peer_close_without_bytes) {
    NginxFixture nginx;
    // Half a ClientHello, then silence: nginx waits (client_header_timeout 60 s), so we close
    // our side instead and watch nginx close without sending a single byte back.
    const std::string hello = capture_client_hello("app.example.test");
    RawVisit v =
        raw_visit("127.0.0.1", nginx.port(), std::string_view(hello).substr(0, hello.size() / 2),
                  Millis{5000}, /*half_close=*/true);
    cr_assert(v.connected);
    cr_assert(v.reaction.closed);
    cr_assert(v.reaction.received.empty());
}

Test(fixtures, raw_visitor_reports_bytes_and_a_deadline) {
    NginxFixture nginx;
    RawConnection c("127.0.0.1", nginx.port());
    cr_assert(c.send("GET / HTTP/1.0\r\n\r\n"));  // plain HTTP to a TLS port: nginx answers 400
    PeerReaction r = c.wait_closed(Millis{5000});
    cr_assert(r.closed);
    cr_assert_neq(r.received.find("400"), std::string::npos);

    RawConnection silent("127.0.0.1", nginx.port());
    PeerReaction s = silent.wait_closed(Millis{100});
    cr_assert_not(s.closed);
}

Test(fixtures, wait_helpers_observe_log_lines_and_exits) {
    TempDir d;
    const std::string log = d / "log";
    Process p = Process::spawn(
        {.argv = {"sh", "-c", "echo ready >&2; exec sleep 300"}, .err = Output::file(log)});
    cr_assert(wait_file_contains(log, "ready", Millis{5000}));
    cr_assert_not(wait_file_contains(log, "never", Millis{30}));
    p.signal(SIGKILL);
    cr_assert(wait_until([&] { return !p.running(); }, Millis{5000}));
    cr_assert_eq(p.status()->signal, SIGKILL);
}

Test(fixtures, daemon_is_ready_on_its_log_line_and_stops) {
    TempDir d;
    Daemon daemon({.argv = {"sh", "-c", "echo out-line; echo listening >&2; exec sleep 300"},
                   .log_path = d / "daemon.log",
                   .ready_log_line = "listening"});
    cr_assert(daemon.wait_log("out-line", Millis{5000}), "stdout and stderr share the log");
    ExitStatus st = daemon.stop(Millis{5000});
    cr_assert_eq(st.signal, SIGTERM);
}

Test(fixtures, daemon_that_exits_early_reports_its_log) {
    TempDir d;
    std::string what;
    try {
        Daemon daemon({.argv = {"sh", "-c", "echo cannot bind >&2; exit 1"},
                       .log_path = d / "daemon.log",
                       .ready_ports = {{"127.0.0.1", free_port()}}});
    } catch (const std::exception& e) {
        what = e.what();
    }
    cr_assert_neq(what.find("exit code 1"), std::string::npos, "%s", what.c_str());
    cr_assert_neq(what.find("cannot bind"), std::string::npos, "%s", what.c_str());
}

Test(fixtures, runewarp_binary_comes_from_the_environment) {
    cr_assert_not(runewarp_binary().empty());
}

// ---- the UDP impairment relay ----------------------------------------------------------------

namespace {

// A loopback UDP socket playing the downstream peer or the upstream in the relay tests.
class UdpPeer {
public:
    UdpPeer() : fd_(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0)) {
        cr_assert(fd_.valid());
        int big = 4 << 20;
        (void)::setsockopt(fd_.get(), SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof big);
        sockaddr_in a = addr(0);
        cr_assert_eq(::bind(fd_.get(), reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
        socklen_t len = sizeof a;
        cr_assert_eq(::getsockname(fd_.get(), reinterpret_cast<sockaddr*>(&a), &len), 0);
        port_ = ntohs(a.sin_port);
    }
    std::uint16_t port() const { return port_; }
    void send_to(std::uint16_t port, const std::string& payload) {
        sockaddr_in a = addr(port);
        cr_assert_eq(::sendto(fd_.get(), payload.data(), payload.size(), 0,
                              reinterpret_cast<sockaddr*>(&a), sizeof a),
                     static_cast<ssize_t>(payload.size()), "sendto: %s", std::strerror(errno));
    }
    struct Datagram {
        std::string payload;
        std::uint16_t from_port = 0;
    };
    // The next datagram, or nullopt when none arrives before the deadline.
    std::optional<Datagram> recv(Millis deadline = Millis{10000}) {
        pollfd p{fd_.get(), POLLIN, 0};
        if (::poll(&p, 1, static_cast<int>(deadline.count())) != 1) return std::nullopt;
        std::string buf(65536, '\0');
        sockaddr_in from{};
        socklen_t flen = sizeof from;
        ssize_t n = ::recvfrom(fd_.get(), buf.data(), buf.size(), 0,
                               reinterpret_cast<sockaddr*>(&from), &flen);
        if (n < 0) return std::nullopt;
        buf.resize(static_cast<std::size_t>(n));
        return Datagram{std::move(buf), ntohs(from.sin_port)};
    }

private:
    static sockaddr_in addr(std::uint16_t port) {
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_port = htons(port);
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        return a;
    }
    Fd fd_;
    std::uint16_t port_ = 0;
};

std::string numbered(int i, std::size_t size = 0) {
    std::string s = std::to_string(i) + ":";
    if (s.size() < size) s.resize(size, static_cast<char>('a' + i % 26));
    return s;
}

int number_of(const std::string& payload) {
    return std::stoi(payload.substr(0, payload.find(':')));
}

// Sends n numbered datagrams from `from` through the relay in bursts, each burst waiting until
// the relay has read it (so no socket buffer overflows), then collects what reached `to`: the
// relay's forwarded + duplicated count for this call, in arrival order.
std::vector<int> pass_through(UdpRelay& relay, RelayDir dir, UdpPeer& from, std::uint16_t to_port,
                              UdpPeer& to, int n) {
    const UdpRelayStats before = relay.stats(dir);
    const std::uint64_t base = before.received;
    for (int i = 0; i < n; ++i) {
        from.send_to(to_port, numbered(i, 100));
        if (i % 50 == 49 || i == n - 1) {
            const std::uint64_t want = base + static_cast<std::uint64_t>(i) + 1;
            cr_assert(wait_until([&] { return relay.stats(dir).received >= want; }, Millis{10000}),
                      "%s", relay.describe().c_str());
        }
    }
    // Everything read; held (reordered) datagrams go out within the hold time.
    cr_assert(wait_until(
                  [&] {
                      UdpRelayStats st = relay.stats(dir);
                      return st.forwarded + st.dropped == st.received;
                  },
                  Millis{10000}),
              "%s", relay.describe().c_str());
    UdpRelayStats st = relay.stats(dir);
    const std::uint64_t arriving =
        st.forwarded + st.duplicated - before.forwarded - before.duplicated;
    std::vector<int> got;
    while (got.size() < arriving) {
        auto d = to.recv();
        cr_assert(d.has_value(), "got %zu of %llu: %s", got.size(),
                  static_cast<unsigned long long>(arriving), relay.describe().c_str());
        got.push_back(number_of(d->payload));
    }
    return got;
}

}  // namespace

Test(fixtures, udp_relay_without_impairment_forwards_in_order_both_ways) {
    UdpPeer up, down;
    std::unique_ptr<UdpRelay> relay_owner = UdpRelay::start({.upstream_port = up.port()});
    UdpRelay& relay = *relay_owner;
    cr_assert_neq(relay.port(), 0);
    cr_assert_neq(relay.outbound_port(), relay.port());

    // The largest IPv4 UDP payload passes whole.
    down.send_to(relay.port(), numbered(7, 65507));
    auto big = up.recv();
    cr_assert(big.has_value(), "%s", relay.describe().c_str());
    cr_assert_eq(big->payload, numbered(7, 65507));
    cr_assert_eq(big->from_port, relay.outbound_port());

    std::vector<int> got = pass_through(relay, RelayDir::kToUpstream, down, relay.port(), up, 1000);
    cr_assert_eq(got.size(), 1000u);
    for (int i = 0; i < 1000; ++i) cr_assert_eq(got[static_cast<std::size_t>(i)], i);

    // The reply goes back to the peer the relay learned, from the relay's own port.
    got = pass_through(relay, RelayDir::kToDownstream, up, relay.outbound_port(), down, 1000);
    cr_assert_eq(got.size(), 1000u);
    for (int i = 0; i < 1000; ++i) cr_assert_eq(got[static_cast<std::size_t>(i)], i);
    up.send_to(relay.outbound_port(), "from-upstream");
    auto back = down.recv();
    cr_assert(back.has_value());
    cr_assert_eq(back->from_port, relay.port());

    for (RelayDir d : {RelayDir::kToUpstream, RelayDir::kToDownstream}) {
        UdpRelayStats st = relay.stats(d);
        cr_assert_eq(st.dropped + st.duplicated + st.reordered + st.send_errors, 0u, "%s",
                     relay.describe().c_str());
    }

    // A new downstream address is followed.
    UdpPeer moved;
    moved.send_to(relay.port(), numbered(1));
    cr_assert(up.recv().has_value());
    up.send_to(relay.outbound_port(), "to-the-new-peer");
    auto to_moved = moved.recv();
    cr_assert(to_moved.has_value(), "%s", relay.describe().c_str());
    cr_assert_eq(to_moved->payload, "to-the-new-peer");
}

Test(fixtures, udp_relay_seeded_loss_is_plausible_and_reproducible) {
    auto lossy_run = [](std::uint64_t seed) {
        UdpPeer up, down;
        std::unique_ptr<UdpRelay> relay_owner = UdpRelay::start(
            {.upstream_port = up.port(), .to_upstream = {.loss = 0.1}, .seed = seed});
        UdpRelay& relay = *relay_owner;
        std::vector<int> got =
            pass_through(relay, RelayDir::kToUpstream, down, relay.port(), up, 2000);
        UdpRelayStats st = relay.stats(RelayDir::kToUpstream);
        cr_assert_eq(st.received, 2000u);
        cr_assert_eq(st.forwarded + st.dropped, 2000u);
        cr_assert_eq(got.size(), st.forwarded);
        // 10% of 2000: mean 200, standard deviation about 13.4; six of them either side.
        cr_assert(st.dropped >= 120 && st.dropped <= 280, "%s", relay.describe().c_str());
        for (std::size_t i = 1; i < got.size(); ++i) cr_assert_lt(got[i - 1], got[i]);
        return got;
    };
    std::vector<int> a = lossy_run(42);
    std::vector<int> b = lossy_run(42);
    std::vector<int> c = lossy_run(43);
    cr_assert(a == b, "the same seed dropped different datagrams");
    cr_assert(a != c, "different seeds dropped the same datagrams");
}

Test(fixtures, udp_relay_duplicates_and_reorders_without_losing) {
    UdpPeer up, down;
    std::unique_ptr<UdpRelay> relay_owner = UdpRelay::start(
        {.upstream_port = up.port(), .to_upstream = {.duplicate = 0.1, .reorder = 0.1}, .seed = 7});
    UdpRelay& relay = *relay_owner;
    std::vector<int> got = pass_through(relay, RelayDir::kToUpstream, down, relay.port(), up, 2000);
    UdpRelayStats st = relay.stats(RelayDir::kToUpstream);
    cr_assert_eq(st.dropped, 0u);
    cr_assert_eq(st.forwarded, 2000u);
    cr_assert(st.duplicated >= 120 && st.duplicated <= 280, "%s", relay.describe().c_str());
    cr_assert(st.reordered >= 120 && st.reordered <= 280, "%s", relay.describe().c_str());
    cr_assert_eq(got.size(), 2000u + st.duplicated);
    std::vector<int> seen(2000, 0);
    std::size_t late = 0;
    int highest = -1;
    for (int v : got) {
        cr_assert(v >= 0 && v < 2000);
        ++seen[static_cast<std::size_t>(v)];
        if (v < highest) ++late;
        highest = std::max(highest, v);
    }
    std::uint64_t extra = 0;
    for (int k : seen) {
        cr_assert(k == 1 || k == 2);
        extra += static_cast<std::uint64_t>(k - 1);
    }
    cr_assert_eq(extra, st.duplicated);
    cr_assert_gt(late, 0u, "nothing arrived out of order: %s", relay.describe().c_str());
}

Test(fixtures, udp_relay_rebind_changes_the_source_port_the_upstream_sees) {
    UdpPeer up, down;
    std::unique_ptr<UdpRelay> relay_owner = UdpRelay::start({.upstream_port = up.port()});
    UdpRelay& relay = *relay_owner;
    down.send_to(relay.port(), "before");
    auto d1 = up.recv();
    cr_assert(d1.has_value());
    const std::uint16_t old_port = d1->from_port;
    cr_assert_eq(old_port, relay.outbound_port());
    cr_assert_eq(relay.sent_on_current_outbound(), 1u);

    const std::uint16_t new_port = relay.rebind();
    cr_assert_neq(new_port, old_port);
    cr_assert_eq(relay.outbound_port(), new_port);
    cr_assert_eq(relay.rebinds(), 1u);
    cr_assert_eq(relay.sent_on_current_outbound(), 0u);

    down.send_to(relay.port(), "after");
    auto d2 = up.recv();
    cr_assert(d2.has_value(), "%s", relay.describe().c_str());
    cr_assert_eq(d2->payload, "after");
    cr_assert_eq(d2->from_port, new_port);
    cr_assert_eq(relay.sent_on_current_outbound(), 1u);

    // The upstream answers the new address; the relay passes it to the same downstream peer.
    up.send_to(new_port, "reply");
    auto back = down.recv();
    cr_assert(back.has_value(), "%s", relay.describe().c_str());
    cr_assert_eq(back->payload, "reply");
    cr_assert_eq(back->from_port, relay.port());
    cr_assert_eq(relay.received_on_current_outbound(), 1u);
}

namespace {

// GET over pebble's HTTPS with curl, trusting `ca`; the body, empty on failure.
std::string https_get(const std::string& url, const std::string& ca) {
    SpawnOptions so;
    so.argv = {"curl", "-sS", "--fail", "--cacert", ca, url};
    so.out = Output::pipe();
    Process p = Process::spawn(std::move(so));
    std::string body = p.read_stdout(Millis{10000});
    auto st = p.wait_exit(Millis{10000});
    return st && st->success() ? body : std::string();
}

}  // namespace

Test(fixtures, pebble_serves_its_directory_and_restarts_on_the_same_port) {
    TempDir d;
    Pebble pebble(d.path() + "/pebble", PebbleOptions{});
    pebble.start();
    std::string dir = https_get(pebble.directory_url(), pebble.https_ca_file());
    cr_assert(dir.find("\"newOrder\"") != std::string::npos, "directory: %s", dir.c_str());
    std::string root = read_file(pebble.issuer_root_file());
    cr_assert(root.find("BEGIN CERTIFICATE") != std::string::npos);

    // Down: nothing answers; up again: the same URL, and a new issuing root.
    pebble.stop();
    cr_assert(https_get(pebble.directory_url(), pebble.https_ca_file()).empty());
    pebble.start();
    dir = https_get(pebble.directory_url(), pebble.https_ca_file());
    cr_assert(dir.find("\"newNonce\"") != std::string::npos, "directory: %s", dir.c_str());
    cr_assert(read_file(pebble.issuer_root_file()) != root, "pebble makes a root per start");
}
