// The metrics listener end to end with the real binaries: a Server with a direct route and a
// Tunnel, a Client whose Service backend is a byte sink owned by the test, raw Visitors. /metrics
// is parsed by the reference parser (prometheus_client.parser, run by /usr/bin/python3); the
// status page is rendered by headless Chromium.
#include <criterion/criterion.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "tests/integration/tunnel_support.hh"
#include "tests/support/tls.hh"

using namespace runewarp;
using namespace runewarp::test;
using nlohmann::json;

namespace {

const std::string kDirect = "direct.example.test";
constexpr std::size_t kReply = 3000;  // what the sink answers each connection after its EOF

// A TCP upstream/backend owned by the test: per connection, reads until EOF, counts the bytes,
// answers kReply bytes and closes.
class Sink {
public:
    Sink() {
        fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        int one = 1;
        ::setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        cr_assert_eq(::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
        cr_assert_eq(::listen(fd_, 128), 0);
        socklen_t len = sizeof a;
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
        port_ = ntohs(a.sin_port);
        thread_ = std::thread([this] { serve(); });
    }
    ~Sink() {
        stop_ = true;
        ::shutdown(fd_, SHUT_RDWR);
        thread_.join();
        for (auto& t : conns_) t.join();
        ::close(fd_);
    }
    std::uint16_t port() const { return port_; }
    std::uint64_t received() const { return received_; }

private:
    void serve() {
        while (!stop_) {
            int c = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
            if (c < 0) {
                if (stop_) return;
                continue;
            }
            conns_.emplace_back([this, c] {
                char buf[65536];
                for (;;) {
                    ssize_t n = ::recv(c, buf, sizeof buf, 0);
                    if (n <= 0) break;
                    received_ += static_cast<std::uint64_t>(n);
                }
                std::string reply(kReply, 'r');
                (void)send_all(c, reply);
                ::close(c);
            });
        }
    }
    int fd_ = -1;
    std::uint16_t port_ = 0;
    std::atomic<bool> stop_{false};
    std::atomic<std::uint64_t> received_{0};
    std::thread thread_;
    std::vector<std::thread> conns_;
};

std::string trim(std::string s) {
    while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
    return s;
}

struct HttpAnswer {
    int status = 0;
    std::string head;
    std::string body;
};

HttpAnswer http_get(std::uint16_t port, const std::string& path,
                    const std::string& method = "GET") {
    RawConnection c("127.0.0.1", port);
    c.send(method + " " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    PeerReaction r = c.wait_closed(Millis{10000});
    HttpAnswer a;
    auto end = r.received.find("\r\n\r\n");
    if (end == std::string::npos) return a;
    a.head = r.received.substr(0, end);
    a.body = r.received.substr(end + 4);
    if (a.head.starts_with("HTTP/1.1 ")) a.status = std::stoi(a.head.substr(9, 3));
    return a;
}

// Every sample of a scrape as the reference parser reads it: [[name, {labels}, value], ...].
json parse_exposition(const std::string& text, const std::string& dir) {
    const std::string file = dir + "/scrape.txt";
    write_file(file, text);
    const char* script = R"PY(
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = {"families": [], "samples": []}
for fam in text_string_to_metric_families(open(sys.argv[1]).read()):
    out["families"].append([fam.name, fam.type])
    for s in fam.samples:
        out["samples"].append([s.name, s.labels, s.value])
print(json.dumps(out))
)PY";
    RunResult r = run({"/usr/bin/python3", "-c", script, file}, Millis{30000});
    cr_assert(r.status.success(), "prometheus parser failed: %s\n%s", r.err.c_str(), text.c_str());
    return json::parse(r.out);
}

double sample(const json& parsed, const std::string& name, const json& labels) {
    for (const auto& s : parsed["samples"]) {
        if (s[0] != name) continue;
        bool match = true;
        for (auto it = labels.begin(); it != labels.end(); ++it) {
            if (!s[1].contains(it.key()) || s[1][it.key()] != it.value()) match = false;
        }
        if (match) return s[2].get<double>();
    }
    cr_assert_fail("no sample %s %s", name.c_str(), labels.dump().c_str());
    return 0;
}

// One raw Visitor: a ClientHello for `sni` plus `extra` bytes, half-close, read until closed.
PeerReaction visit(std::uint16_t port, const std::string& hello, std::size_t extra) {
    RawConnection c("127.0.0.1", port);
    c.send(hello + std::string(extra, 'v'));
    c.shutdown_write();
    return c.wait_closed(Millis{15000});
}

struct Setup {
    Sink sink;
    std::uint16_t server_metrics = free_port();
    std::uint16_t client_metrics = free_port();
    Tunnel t;
    // `server_lines`: more [server] keys, e.g. "workers = 2\n"; `client_lines` more [client]
    // keys; `client_workers`: the Client's workers (Tunnel connections).
    explicit Setup(const std::string& server_lines = {}, int client_workers = 1,
                   const std::string& client_lines = {})
        : t(Tunnel::Options{
              .backend_override = hp("127.0.0.1", sink.port()),
              .client_workers = client_workers,
              .server_extra = server_lines + "\n[route \"web\"]\npublic-hostnames = " + kDirect +
                              "\nupstream-address = " + hp("127.0.0.1", sink.port()) +
                              "\n\n[metrics]\nprometheus-bind-address = " +
                              hp("127.0.0.1", server_metrics) + "\n",
              .client_extra = client_lines + "\n[metrics]\nprometheus-bind-address = " +
                              hp("127.0.0.1", client_metrics) + "\n",
          }) {
        cr_assert(t.wait_client("client tunnel connection connected"), "%s",
                  t.client_log().c_str());
        t.wait_pool_ready();
    }
};

// Reads one whole response (head and Content-Length body) off a kept-alive connection; bytes past
// it stay in `carry` for the next call.
HttpAnswer read_response(RawConnection& c, std::string& carry) {
    HttpAnswer a;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    for (;;) {
        auto end = carry.find("\r\n\r\n");
        if (end != std::string::npos) {
            std::string head = carry.substr(0, end);
            auto cl = head.find("Content-Length: ");
            cr_assert_neq(cl, std::string::npos, "%s", head.c_str());
            std::size_t len = std::stoul(head.substr(cl + 16));
            if (carry.size() >= end + 4 + len) {
                a.head = head;
                a.body = carry.substr(end + 4, len);
                carry.erase(0, end + 4 + len);
                a.status = std::stoi(head.substr(9, 3));
                return a;
            }
        }
        cr_assert(std::chrono::steady_clock::now() < deadline, "no whole response: %s",
                  carry.substr(0, 200).c_str());
        std::string more = c.recv_at_least(1, Millis{1000});
        carry += more;
    }
}

}  // namespace

Test(metrics, scrape_parses_and_counts_exactly, .timeout = 240) {
    Setup s;
    Tunnel& t = s.t;
    cr_assert(t.server().wait_log("server metrics listener ready", Millis{5000}));

    json before = parse_exposition(http_get(s.server_metrics, "/metrics").body, t.out(""));
    // Every family the brief names is there and typed.
    std::set<std::string> families;
    for (const auto& f : before["families"]) families.insert(f[0].get<std::string>());
    for (const char* f : {"runewarp_visitor_connections_accepted",
                          "runewarp_visitor_connections_dropped",
                          "runewarp_visitor_connections_active",
                          "runewarp_relayed_bytes",
                          "runewarp_tunnel_connections",
                          "runewarp_tunnel_handshakes_in_flight",
                          "runewarp_tunnel_handshake_failures",
                          "runewarp_tunnel_streams_opened",
                          "runewarp_tunnel_streams_active",
                          "runewarp_tunnel_streams_reset",
                          "runewarp_tunnel_connection_rtt_seconds",
                          "runewarp_tunnel_connection_cwnd_bytes",
                          "runewarp_visitor_intake_duration_seconds",
                          "runewarp_relay_duration_seconds",
                          "runewarp_admission_saturation_events",
                          "runewarp_certificate_expiry_timestamp_seconds",
                          "runewarp_build_info",
                          "runewarp_config_reload_success",
                          "runewarp_config_generation",
                          "process_open_fds",
                          "process_resident_memory_bytes"}) {
        cr_assert(families.count(f), "family %s missing", f);
    }
    cr_assert_eq(sample(before, "runewarp_tunnel_connections", {{"tunnel", "app"}}), 1.0);
    cr_assert_gt(sample(before, "runewarp_certificate_expiry_timestamp_seconds", {}), 1.6e9);

    // N Visitors through the direct route and N through the Tunnel, M bytes each.
    constexpr int kN = 5;
    constexpr std::size_t kM = 100000;
    const std::string direct_hello = capture_client_hello(kDirect);
    const std::string tunnel_hello = capture_client_hello(kApp);
    // Every Visitor gets the whole answer back, and the counters match it byte for byte.
    std::uint64_t direct_back = 0, tunnel_back = 0;
    for (int i = 0; i < kN; ++i) {
        PeerReaction r = visit(t.public_port(), direct_hello, kM);
        cr_assert_eq(r.received.size(), kReply, "direct visit %d got %zu bytes", i,
                     r.received.size());
        direct_back += r.received.size();
        r = visit(t.public_port(), tunnel_hello, kM);
        cr_assert_eq(r.received.size(), kReply, "tunnel visit %d got %zu bytes\n%s", i,
                     r.received.size(), t.client_log().c_str());
        tunnel_back += r.received.size();
    }
    // Closed Visitors are counted once their sessions end: wait for the gauge to settle.
    json after;
    cr_assert(wait_until(
        [&] {
            after = parse_exposition(http_get(s.server_metrics, "/metrics").body, t.out(""));
            return sample(after, "runewarp_visitor_connections_active", {}) == 0 &&
                   sample(after, "runewarp_tunnel_streams_active", {{"tunnel", "app"}}) == 0;
        },
        Millis{10000}));
    auto delta = [&](const std::string& name, const json& labels) {
        return sample(after, name, labels) - sample(before, name, labels);
    };
    cr_assert_eq(delta("runewarp_visitor_connections_accepted_total", {}), 2.0 * kN);
    const double sent = static_cast<double>(direct_hello.size() + kM);
    cr_assert_eq(delta("runewarp_relayed_bytes_total",
                       {{"direction", "in"}, {"target_kind", "direct"}, {"route", "web"}}),
                 kN * sent);
    cr_assert_eq(delta("runewarp_relayed_bytes_total",
                       {{"direction", "out"}, {"target_kind", "direct"}, {"route", "web"}}),
                 static_cast<double>(direct_back));
    cr_assert_eq(delta("runewarp_relayed_bytes_total",
                       {{"direction", "in"}, {"target_kind", "tunnel"}, {"route", "app"}}),
                 kN * static_cast<double>(tunnel_hello.size() + kM));
    cr_assert_eq(delta("runewarp_relayed_bytes_total",
                       {{"direction", "out"}, {"target_kind", "tunnel"}, {"route", "app"}}),
                 static_cast<double>(tunnel_back));
    cr_assert_eq(delta("runewarp_tunnel_streams_opened_total", {{"tunnel", "app"}}), kN);
    cr_assert_eq(delta("runewarp_relay_duration_seconds_count", {}), 2.0 * kN);
    cr_assert_eq(delta("runewarp_visitor_intake_duration_seconds_count", {}), 2.0 * kN);

    // The Client's side of the same streams.
    json client = parse_exposition(http_get(s.client_metrics, "/metrics").body, t.out(""));
    cr_assert_eq(sample(client, "runewarp_client_streams_total", {{"service", "app"}}), kN);
    cr_assert_eq(sample(client, "runewarp_client_streams_active", {{"service", "app"}}), 0);
    cr_assert_eq(sample(client, "runewarp_client_backend_connect_duration_seconds_count", {}), kN);
    cr_assert_eq(sample(client, "runewarp_client_connected_servers", {}), 1);
    cr_assert_eq(sample(client, "runewarp_client_relayed_bytes_total",
                        {{"direction", "in"}, {"service", "app"}}),
                 kN * static_cast<double>(tunnel_hello.size() + kM));
    cr_assert_eq(
        sample(client, "runewarp_client_backend_connect_failures_total", {{"service", "app"}}), 0);
    t.stop_client_cleanly();
}

// Two workers: the public listener group spreads Visitors over both, and Visitors the second
// worker accepts for the Tunnel are handed to the first (which holds the Tunnel connection) and
// relayed whole; the per-worker counters add up to the total.
Test(metrics, two_workers_share_visitors_and_relay_tunnel_streams_whole, .timeout = 240) {
    Setup s("workers = 2\n");
    Tunnel& t = s.t;
    cr_assert(t.server().wait_log("server public listener ready: bind-address=" +
                                      hp("127.0.0.1", t.public_port()) + " workers=2",
                                  Millis{5000}),
              "%s", t.server().log().c_str());
    json before = parse_exposition(http_get(s.server_metrics, "/metrics").body, t.out(""));
    constexpr int kN = 100;
    constexpr std::size_t kM = 20000;
    const std::string direct_hello = capture_client_hello(kDirect);
    const std::string tunnel_hello = capture_client_hello(kApp);
    for (int i = 0; i < kN; ++i) {
        PeerReaction r = visit(t.public_port(), direct_hello, kM);
        cr_assert_eq(r.received.size(), kReply, "direct visit %d got %zu bytes", i,
                     r.received.size());
        r = visit(t.public_port(), tunnel_hello, kM);
        cr_assert_eq(r.received.size(), kReply, "tunnel visit %d got %zu bytes\n%s\n%s", i,
                     r.received.size(), t.server().log().c_str(), t.client_log().c_str());
    }
    json after;
    cr_assert(wait_until(
        [&] {
            after = parse_exposition(http_get(s.server_metrics, "/metrics").body, t.out(""));
            return sample(after, "runewarp_visitor_connections_active", {}) == 0;
        },
        Millis{10000}));
    auto delta = [&](const std::string& name, const json& labels) {
        return sample(after, name, labels) - sample(before, name, labels);
    };
    const double w0 =
        delta("runewarp_worker_visitor_connections_accepted_total", {{"worker", "0"}});
    const double w1 =
        delta("runewarp_worker_visitor_connections_accepted_total", {{"worker", "1"}});
    cr_log_info("worker 0 accepted %.0f, worker 1 accepted %.0f", w0, w1);
    cr_assert_eq(w0 + w1, 2.0 * kN);
    cr_assert_eq(delta("runewarp_visitor_connections_accepted_total", {}), 2.0 * kN);
    // Reuseport hashes each connection's ports: 200 of them all on one worker is (1/2)^199.
    cr_assert_gt(w0, 0.0);
    cr_assert_gt(w1, 0.0);
    cr_assert_eq(delta("runewarp_relayed_bytes_total",
                       {{"direction", "in"}, {"target_kind", "tunnel"}, {"route", "app"}}),
                 kN * static_cast<double>(tunnel_hello.size() + kM));
    cr_assert_eq(delta("runewarp_relayed_bytes_total",
                       {{"direction", "in"}, {"target_kind", "direct"}, {"route", "web"}}),
                 kN * static_cast<double>(direct_hello.size() + kM));
    cr_assert_eq(delta("runewarp_tunnel_streams_opened_total", {{"tunnel", "app"}}), kN);
    cr_assert_eq(delta("runewarp_relay_duration_seconds_count", {}), 2.0 * kN);
    t.stop_client_cleanly();
}

// [client] workers = 2: each worker keeps its own Tunnel connection to the Server address (two
// pool members of one identity), the Server spreads the Visitors over both, the stream-handler
// budget ([client] max-streams) counts over both workers together, and every stream is relayed
// whole.
Test(metrics, client_workers_each_hold_a_connection_and_share_the_streams_and_budget,
     .timeout = 240) {
    constexpr int kHeld = 30;
    // One Server worker: its placement decisions come one after another, so the split is exact.
    Setup s("workers = 1\n", 2, "max-streams = " + std::to_string(kHeld) + "\n");
    Tunnel& t = s.t;
    auto server_status = [&] {
        return json::parse(http_get(s.server_metrics, "/status.json").body);
    };
    json st = server_status();
    cr_assert_eq(st["tunnels"][0]["members"].size(), 2u, "%s", st.dump(2).c_str());
    cr_assert_eq(st["tunnels"][0]["members"][0]["identity"],
                 st["tunnels"][0]["members"][1]["identity"]);
    json cs = json::parse(http_get(s.client_metrics, "/status.json").body);
    cr_assert_eq(cs["servers"].size(), 1u, "%s", cs.dump(2).c_str());
    cr_assert_eq(cs["servers"][0]["connections"], 2, "%s", cs.dump(2).c_str());
    cr_assert_eq(cs["servers"][0]["connected"], true);
    cr_assert_eq(cs["totals"]["servers_connected"], 1);

    // The whole budget held open: each stream waits at the sink for its Visitor's EOF.
    constexpr std::size_t kM = 20000;
    const std::string hello = capture_client_hello(kApp);
    std::vector<std::unique_ptr<RawConnection>> held;
    for (int i = 0; i < kHeld; ++i) {
        held.push_back(std::make_unique<RawConnection>("127.0.0.1", t.public_port()));
        cr_assert(held.back()->send(hello + std::string(kM, 'v')));
    }
    // Least active streams first: half on each member, so both workers of the Client relay.
    cr_assert(wait_until(
                  [&] {
                      st = server_status();
                      const json& m = st["tunnels"][0]["members"];
                      return m.size() == 2 && m[0]["active_streams"] == kHeld / 2 &&
                             m[1]["active_streams"] == kHeld / 2;
                  },
                  Millis{15000}),
              "%s\n%s", st.dump(2).c_str(), t.client_log().c_str());
    cr_assert(
        wait_until([&] { return s.sink.received() == kHeld * (hello.size() + kM); }, Millis{15000}),
        "the sink received %llu bytes", static_cast<unsigned long long>(s.sink.received()));

    // One more: the budget is spent over both workers together, so whichever connection the
    // Server opens it on, the Client resets the stream and the Visitor is closed unanswered.
    PeerReaction over = visit(t.public_port(), hello, 10);
    cr_assert_eq(over.received.size(), 0u, "got %zu bytes", over.received.size());
    cr_assert(t.wait_client("client stream handlers saturated: active-work=" +
                            std::to_string(kHeld) + " limit=" + std::to_string(kHeld)),
              "%s", t.client_log().c_str());

    // The held Visitors finish whole.
    for (auto& c : held) c->shutdown_write();
    for (int i = 0; i < kHeld; ++i) {
        PeerReaction r = held[static_cast<std::size_t>(i)]->wait_closed(Millis{15000});
        cr_assert_eq(r.received.size(), kReply, "held Visitor %d got %zu bytes", i,
                     r.received.size());
    }
    held.clear();
    cr_assert_eq(s.sink.received(), kHeld * (hello.size() + kM));
    // Handlers free again: the next Visitor is served, and the recovery is logged once.
    cr_assert(wait_until(
        [&] {
            return json::parse(http_get(s.client_metrics, "/status.json")
                                   .body)["totals"]["streams_active"] == 0;
        },
        Millis{10000}));
    PeerReaction again = visit(t.public_port(), hello, 10);
    cr_assert_eq(again.received.size(), kReply, "%s", t.client_log().c_str());
    cr_assert(t.wait_client("client stream handlers recovered"), "%s", t.client_log().c_str());
    json client = parse_exposition(http_get(s.client_metrics, "/metrics").body, t.out(""));
    cr_assert_eq(sample(client, "runewarp_client_streams_total", {{"service", "app"}}),
                 kHeld + 1.0);
    cr_assert_eq(sample(client, "runewarp_client_server_connects_total",
                        {{"server_address", hp(kServerName, t.tunnel_port())}}),
                 2.0);
    t.stop_client_cleanly();
}

namespace {

// Waits until `want` of `conns` were closed by the peer (their bytes in `got`), or the deadline.
// Returns how many are closed.
std::size_t wait_closed_count(std::vector<std::unique_ptr<RawConnection>>& conns,
                              std::vector<std::string>& got, std::vector<bool>& closed,
                              std::size_t want, Millis deadline) {
    const auto end = std::chrono::steady_clock::now() + deadline;
    auto count = [&] {
        return static_cast<std::size_t>(std::count(closed.begin(), closed.end(), true));
    };
    while (count() < want && std::chrono::steady_clock::now() < end) {
        std::vector<pollfd> fds;
        std::vector<std::size_t> which;
        for (std::size_t i = 0; i < conns.size(); ++i) {
            if (closed[i]) continue;
            fds.push_back(pollfd{conns[i]->fd(), POLLIN, 0});
            which.push_back(i);
        }
        if (::poll(fds.data(), fds.size(), 100) <= 0) continue;
        for (std::size_t k = 0; k < fds.size(); ++k) {
            if (fds[k].revents == 0) continue;
            char buf[65536];
            ssize_t n = ::recv(fds[k].fd, buf, sizeof buf, MSG_DONTWAIT);
            if (n > 0)
                got[which[k]].append(buf, static_cast<std::size_t>(n));
            else if (n == 0 || (errno != EAGAIN && errno != EINTR))
                closed[which[k]] = true;
        }
    }
    return count();
}

}  // namespace

// A worker stuck in a busy loop (its thread stopped with ptrace while the others run) holds up
// only the Visitors it owns: the other worker's direct Visitors and every Tunnel stream (the
// Tunnel connection lives on the other worker, which each Tunnel Visitor is handed to) keep
// going, and so does the metrics listener when the stuck one is not worker 0. Once it runs again,
// its Visitors finish whole.
Test(metrics, a_stuck_worker_holds_up_only_its_own_visitors, .timeout = 240) {
    Setup s("workers = 2\n");
    Tunnel& t = s.t;
    cr_assert(t.server().wait_log("server public listener ready: bind-address=" +
                                      hp("127.0.0.1", t.public_port()) + " workers=2",
                                  Millis{5000}),
              "%s", t.server().log().c_str());
    constexpr std::size_t kDirectN = 40, kTunnelN = 20, kFirst = 1000, kSecond = 50000;
    const std::string direct_hello = capture_client_hello(kDirect);
    const std::string tunnel_hello = capture_client_hello(kApp);
    const std::string worker_counter = "runewarp_worker_visitor_connections_accepted_total";
    json before = parse_exposition(http_get(s.server_metrics, "/metrics").body, t.out(""));

    std::vector<std::unique_ptr<RawConnection>> conns;
    for (std::size_t i = 0; i < kDirectN; ++i) {
        conns.push_back(std::make_unique<RawConnection>("127.0.0.1", t.public_port()));
        cr_assert(conns.back()->send(direct_hello + std::string(kFirst, 'v')));
    }
    // Every direct Visitor reached the upstream (its first bytes did): which worker took how many.
    const std::uint64_t direct_first = kDirectN * (direct_hello.size() + kFirst);
    cr_assert(wait_until([&] { return s.sink.received() == direct_first; }, Millis{15000}),
              "sink got %llu of %llu", static_cast<unsigned long long>(s.sink.received()),
              static_cast<unsigned long long>(direct_first));
    json mid = parse_exposition(http_get(s.server_metrics, "/metrics").body, t.out(""));
    const double on_w0 = sample(mid, worker_counter, {{"worker", "0"}}) -
                         sample(before, worker_counter, {{"worker", "0"}});
    const double on_w1 = sample(mid, worker_counter, {{"worker", "1"}}) -
                         sample(before, worker_counter, {{"worker", "1"}});
    cr_log_info("direct Visitors: worker 0 took %.0f, worker 1 took %.0f", on_w0, on_w1);
    cr_assert_eq(on_w0 + on_w1, static_cast<double>(kDirectN));
    // Reuseport hashes each connection's ports: 40 on one worker is (1/2)^39.
    cr_assert_gt(on_w1, 0.0);
    cr_assert_gt(on_w0, 0.0);
    // Tunnel Visitors: every one handed over to worker 0 and relayed through a stream.
    for (std::size_t i = 0; i < kTunnelN; ++i) {
        conns.push_back(std::make_unique<RawConnection>("127.0.0.1", t.public_port()));
        cr_assert(conns.back()->send(tunnel_hello + std::string(kFirst, 'v')));
    }
    const std::uint64_t first = direct_first + kTunnelN * (tunnel_hello.size() + kFirst);
    cr_assert(wait_until([&] { return s.sink.received() == first; }, Millis{15000}),
              "sink got %llu of %llu\n%s", static_cast<unsigned long long>(s.sink.received()),
              static_cast<unsigned long long>(first), t.client_log().c_str());

    // The worker that owns the Tunnel connection keeps running; the other one is stopped (worker
    // 0 is the main thread, whose thread id is the process id).
    const std::string slog = t.server().log();
    const std::size_t at = slog.find("server tunnel connection accepted");
    cr_assert_neq(at, std::string::npos, "%s", slog.c_str());
    const std::string line = slog.substr(at, slog.find('\n', at) - at);
    const bool tunnel_on_1 = line.find(" worker=1") != std::string::npos;
    const int stuck = tunnel_on_1 ? 0 : 1;
    cr_log_info("the Tunnel connection is on worker %d; stopping worker %d", 1 - stuck, stuck);
    const pid_t tid = stuck == 0 ? t.server().pid() : find_thread(t.server().pid(), "rw-worker-1");
    cr_assert_neq(tid, 0, "no thread rw-worker-1 in the Server");
    ThreadStall stall(tid);
    cr_assert(stall.error().empty(), "cannot stop worker %d: %s", stuck, stall.error().c_str());
    // Every Visitor sends its second part and ends; the sink answers each kReply bytes after EOF.
    for (auto& c : conns) {
        cr_assert(c->send(std::string(kSecond, 'w')));
        c->shutdown_write();
    }
    std::vector<std::string> got(conns.size());
    std::vector<bool> closed(conns.size(), false);
    const std::size_t movable = static_cast<std::size_t>(stuck == 1 ? on_w0 : on_w1) + kTunnelN;
    std::size_t done = wait_closed_count(conns, got, closed, movable, Millis{20000});
    cr_assert_eq(done, movable, "with worker %d stopped, %zu of %zu Visitors finished\n%s", stuck,
                 done, movable, t.server().log().c_str());
    for (std::size_t i = kDirectN; i < conns.size(); ++i)
        cr_assert(closed[i], "Tunnel Visitor %zu waited for the stopped worker", i);
    // The metrics listener (worker 0) answers meanwhile.
    if (stuck == 1) cr_assert_eq(http_get(s.server_metrics, "/metrics").status, 200);
    // The stopped worker's Visitors stay held for a while (a busy loop), and none is lost.
    done = wait_closed_count(conns, got, closed, movable + 1, Millis{1000});
    cr_assert_eq(done, movable, "a Visitor of the stopped worker finished");
    stall.resume();
    done = wait_closed_count(conns, got, closed, conns.size(), Millis{20000});
    cr_assert_eq(done, conns.size(), "after the worker ran again, %zu of %zu Visitors finished",
                 done, conns.size());
    for (std::size_t i = 0; i < conns.size(); ++i)
        cr_assert_eq(got[i], std::string(kReply, 'r'), "Visitor %zu got %zu bytes", i,
                     got[i].size());
    const std::uint64_t total = first + conns.size() * kSecond;
    cr_assert(wait_until([&] { return s.sink.received() == total; }, Millis{15000}),
              "sink got %llu of %llu", static_cast<unsigned long long>(s.sink.received()),
              static_cast<unsigned long long>(total));
    cr_assert(t.server().process().running());
    t.stop_client_cleanly();
}

Test(metrics, labels_never_carry_visitor_data, .timeout = 240) {
    Setup s;
    Tunnel& t = s.t;
    std::mt19937_64 rng(std::random_device{}());
    std::vector<std::string> snis;
    for (int i = 0; i < 20; ++i) {
        std::string sni = "v" + std::to_string(rng() % 1000000000) + ".random.example.test";
        snis.push_back(sni);
        (void)visit(t.public_port(), capture_client_hello(sni), 10);
    }
    cr_assert(wait_until(
        [&] {
            json p = parse_exposition(http_get(s.server_metrics, "/metrics").body, t.out(""));
            return sample(p, "runewarp_visitor_connections_dropped_total",
                          {{"reason", "unauthorized-public-hostname"}}) == 20;
        },
        Millis{10000}));
    const std::set<std::string> routes = {"web", "app"};
    const std::string identity = trim(read_file(t.identity_dir() + "/client-identity.txt"));
    for (std::uint16_t port : {s.server_metrics, s.client_metrics}) {
        std::string text = http_get(port, "/metrics").body;
        std::string status = http_get(port, "/status.json").body;
        for (const auto& sni : snis) {
            cr_assert_eq(text.find(sni), std::string::npos, "%s leaked", sni.c_str());
            cr_assert_eq(status.find(sni), std::string::npos, "%s leaked", sni.c_str());
        }
        // No Visitor address either (they all come from 127.0.0.1; the only address allowed in
        // /status.json is the Client's, which is a member's `address`).
        cr_assert_eq(text.find("127.0.0.1"), std::string::npos);
        json parsed = parse_exposition(text, t.out(""));
        for (const auto& smp : parsed["samples"]) {
            for (auto it = smp[1].begin(); it != smp[1].end(); ++it) {
                const std::string k = it.key(), v = it.value().get<std::string>();
                if (k == "route" || k == "tunnel" || k == "service") {
                    cr_assert(routes.count(v), "label %s=%s", k.c_str(), v.c_str());
                } else if (k == "reason" || k == "scope" || k == "direction" ||
                           k == "target_kind" || k == "role") {
                    for (char c : v) {
                        cr_assert((c >= 'a' && c <= 'z') || c == '-', "label %s=%s", k.c_str(),
                                  v.c_str());
                    }
                } else if (k == "client_identity") {
                    cr_assert_eq(v, identity);
                } else if (k == "member") {
                    cr_assert_eq(v, "0");
                } else if (k == "worker") {
                    // A worker's index: digits only.
                    cr_assert(!v.empty() && v.find_first_not_of("0123456789") == std::string::npos,
                              "label %s=%s", k.c_str(), v.c_str());
                } else if (k == "server_address") {
                    cr_assert_eq(v, hp(kServerName, t.tunnel_port()));
                } else if (k == "cert") {
                    cr_assert(v.starts_with(t.out("")), "cert %s", v.c_str());
                } else {
                    cr_assert(k == "version" || k == "le", "unexpected label %s=%s", k.c_str(),
                              v.c_str());
                }
            }
        }
    }
    t.stop_client_cleanly();
}

Test(metrics, http_answers_and_refusals, .timeout = 120) {
    Setup s;
    HttpAnswer m = http_get(s.server_metrics, "/metrics");
    cr_assert_eq(m.status, 200);
    cr_assert_neq(m.head.find("Content-Type: text/plain; version=0.0.4"), std::string::npos);
    cr_assert_eq(http_get(s.server_metrics, "/nope").status, 404);
    cr_assert_eq(http_get(s.server_metrics, "/metrics", "POST").status, 405);
    HttpAnswer page = http_get(s.server_metrics, "/");
    cr_assert_eq(page.status, 200);
    cr_assert_neq(page.head.find("text/html"), std::string::npos);
    // Self-contained: no external scripts, styles or images.
    cr_assert_eq(page.body.find("src=\"http"), std::string::npos);
    cr_assert_eq(page.body.find("href=\"http"), std::string::npos);
    json st = json::parse(http_get(s.server_metrics, "/status.json").body);
    cr_assert_eq(st["role"], "server");
    cr_assert_eq(st["tunnels"][0]["label"], "app");
    cr_assert_eq(st["tunnels"][0]["members"].size(), 1u);
    // A request head over 8 KiB is refused, and so is garbage.
    {
        RawConnection c("127.0.0.1", s.server_metrics);
        c.send("GET /metrics HTTP/1.1\r\nX: " + std::string(9000, 'a') + "\r\n\r\n");
        PeerReaction r = c.wait_closed(Millis{10000});
        cr_assert(r.received.starts_with("HTTP/1.1 431"), "%s", r.received.substr(0, 40).c_str());
    }
    {
        RawConnection c("127.0.0.1", s.server_metrics);
        c.send("\x16\x03\x01 junk\r\n\r\n");
        PeerReaction r = c.wait_closed(Millis{10000});
        cr_assert(r.received.starts_with("HTTP/1.1 400"), "%s", r.received.substr(0, 40).c_str());
    }
    // A silent connection is closed after 5 s and the listener still answers meanwhile.
    {
        RawConnection idle("127.0.0.1", s.server_metrics);
        cr_assert_eq(http_get(s.server_metrics, "/metrics").status, 200);
        PeerReaction r = idle.wait_closed(Millis{9000});
        cr_assert(r.closed, "an idle scraper is cut after 5 s");
    }
    json c = json::parse(http_get(s.client_metrics, "/status.json").body);
    cr_assert_eq(c["role"], "client");
    cr_assert_eq(c["servers"][0]["connected"], true);
    s.t.stop_client_cleanly();
}

// Prometheus keeps its scrape connection open: HTTP/1.1 requests are answered on one connection,
// pipelined heads in order, until one says `Connection: close`; when all 32 places are taken, the
// connection idle the longest makes room for a new scraper.
Test(metrics, keep_alive_pipelining_and_room_for_new_scrapers, .timeout = 120) {
    Setup s;
    const std::string get = " HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    {
        RawConnection c("127.0.0.1", s.server_metrics);
        std::string carry;
        c.send("GET /metrics" + get);
        HttpAnswer first = read_response(c, carry);
        cr_assert_eq(first.status, 200);
        cr_assert_eq(first.head.find("Connection: close"), std::string::npos, "%s",
                     first.head.c_str());
        cr_assert_neq(first.body.find("runewarp_build_info{"), std::string::npos);
        c.send("GET /status.json" + get);
        HttpAnswer second = read_response(c, carry);
        cr_assert_eq(second.status, 200);
        cr_assert_eq(json::parse(second.body)["role"], "server");
        // Three heads in one write: answered in order, the last one closes.
        c.send("GET /nope" + get + "HEAD /metrics" + get +
               "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
        cr_assert_eq(read_response(c, carry).status, 404);
        PeerReaction rest = c.wait_closed(Millis{10000});
        cr_assert(rest.closed, "Connection: close is honoured");
        carry += rest.received;
        // HEAD: a head only (it announces the length of the body it leaves out), then the GET.
        cr_assert(carry.starts_with("HTTP/1.1 200"), "%s", carry.substr(0, 80).c_str());
        const auto head_end = carry.find("\r\n\r\n");
        cr_assert_neq(head_end, std::string::npos, "%s", carry.substr(0, 200).c_str());
        const std::string last = carry.substr(head_end + 4);
        cr_assert(last.starts_with("HTTP/1.1 200"), "HEAD sent a body: %s",
                  last.substr(0, 80).c_str());
        std::string last_carry = last;
        HttpAnswer third = read_response(c, last_carry);
        cr_assert_neq(third.head.find("Connection: close"), std::string::npos, "%s",
                      third.head.c_str());
        cr_assert_neq(third.body.find("runewarp_build_info{"), std::string::npos);
        cr_assert(last_carry.empty(), "bytes after the last answer: %s", last_carry.c_str());
    }
    // HTTP/1.0 without keep-alive, and a request announcing a body: answered, then closed.
    for (const char* head : {"GET /metrics HTTP/1.0\r\n\r\n",
                             "GET /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"}) {
        RawConnection c("127.0.0.1", s.server_metrics);
        c.send(head);
        PeerReaction r = c.wait_closed(Millis{10000});
        cr_assert(r.closed, "%s", head);
        cr_assert(r.received.starts_with("HTTP/1.1 200"), "%s", r.received.substr(0, 40).c_str());
    }
    // 32 scrapers that keep their connections open, then one more: it is answered and the
    // first (idle the longest) is closed; the others stay.
    std::vector<std::unique_ptr<RawConnection>> kept;
    for (int i = 0; i < 32; ++i) {
        kept.push_back(std::make_unique<RawConnection>("127.0.0.1", s.server_metrics));
        std::string carry;
        kept.back()->send("GET /status.json" + get);
        cr_assert_eq(read_response(*kept.back(), carry).status, 200, "scraper %d", i);
    }
    cr_assert_eq(http_get(s.server_metrics, "/metrics").status, 200,
                 "a new scraper gets in when 32 connections sit idle");
    PeerReaction oldest = kept.front()->wait_closed(Millis{10000});
    cr_assert(oldest.closed, "the connection idle the longest made room");
    {
        std::string carry;
        kept.back()->send("GET /metrics" + get);
        cr_assert_eq(read_response(*kept.back(), carry).status, 200, "the newest stays open");
    }
    s.t.stop_client_cleanly();
}

// The status page in headless Chromium: route and member rows, and figures that move while a
// transfer runs.
Test(metrics, status_page_in_headless_chromium, .timeout = 300) {
    const std::string chromium = "/usr/bin/chromium";
    cr_assert(file_exists(chromium), "%s is required", chromium.c_str());
    Setup s;
    Tunnel& t = s.t;
    const std::string identity = trim(read_file(t.identity_dir() + "/client-identity.txt"));
    // A slow Visitor through the Tunnel for the whole test: 64 KiB every 50 ms.
    std::atomic<bool> done{false};
    const std::string hello = capture_client_hello(kApp);
    std::thread visitor([&] {
        RawConnection c("127.0.0.1", t.public_port());
        c.send(hello);
        const std::string chunk(65536, 'x');
        while (!done) {
            if (!c.send(chunk)) break;
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
        }
        c.shutdown_write();
        (void)c.wait_closed(Millis{10000});
    });
    auto dump = [&] {
        RunResult r =
            run({chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--user-data-dir=" + t.out("chromium"), "--virtual-time-budget=5000", "--dump-dom",
                 "http://127.0.0.1:" + std::to_string(s.server_metrics) + "/"},
                Millis{90000});
        cr_assert(r.status.success(), "chromium: %s\n%s", r.status.describe().c_str(),
                  r.err.c_str());
        return r.out;
    };
    auto between = [](const std::string& dom, const std::string& from) {
        auto a = dom.find(from);
        if (a == std::string::npos) return std::string();
        auto b = dom.find('<', a);
        return dom.substr(a, b - a);
    };
    // Wait until the relay carries bytes, then dump twice.
    cr_assert(wait_until(
        [&] {
            json st = json::parse(http_get(s.server_metrics, "/status.json").body);
            return st["totals"]["bytes_in"].get<std::uint64_t>() > 0;
        },
        Millis{10000}));
    std::string first = dump();
    std::string second = dump();
    done = true;
    visitor.join();
    for (const std::string* dom : {&first, &second}) {
        cr_assert_neq(dom->find("class=\"route\" data-label=\"web\""), std::string::npos, "%s",
                      dom->c_str());
        cr_assert_neq(dom->find("class=\"route\" data-label=\"app\""), std::string::npos);
        cr_assert_neq(
            dom->find("class=\"member\" data-tunnel=\"app\" data-identity=\"" + identity + "\""),
            std::string::npos, "%s", dom->c_str());
    }
    std::string a = between(first, "id=\"total-bytes_in\">");
    std::string b = between(second, "id=\"total-bytes_in\">");
    cr_assert(!a.empty() && !b.empty(), "%s", first.c_str());
    cr_assert_neq(a, b, "the totals did not move during the transfer: %s", a.c_str());
    t.stop_client_cleanly();
}
