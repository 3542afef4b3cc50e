// The tunnel end to end with the real binary twice: `runewarp server` with a [tunnel] pinning the
// Client identity, `runewarp client` with exclusive CA trust, nginx as the TLS backend and curl
// as the Visitor (spec 3.5, 5.7, 5.8, 5.13, 5.14, 11). The Visitor validates the backend's own
// certificate: the bytes pass through both daemons still encrypted.
//
// The Client must reach the Server under its certificate name (tunnel.example.test), so it runs in
// a private mount namespace whose /etc/hosts maps that name to loopback.
#include <criterion/criterion.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "core/clock.hh"
#include "core/worker.hh"
#include "proto/stream_prefix.hh"
#include "quic/connection.hh"
#include "quic/listener.hh"
#include "quic/tls.hh"
#include "tests/integration/tunnel_support.hh"
#include "tests/support/files.hh"
#include "tests/support/tls.hh"

using namespace runewarp;
using namespace runewarp::test;

namespace {

// A NOTIFY_SOCKET collecting the Client's sd_notify datagrams.
class NotifySocket {
public:
    explicit NotifySocket(const std::string& path) : path_(path) {
        fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        sockaddr_un a{};
        a.sun_family = AF_UNIX;
        std::strncpy(a.sun_path, path.c_str(), sizeof a.sun_path - 1);
        cr_assert_eq(::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a), 0, "bind %s",
                     path.c_str());
    }
    ~NotifySocket() { ::close(fd_); }
    NotifySocket(const NotifySocket&) = delete;
    NotifySocket& operator=(const NotifySocket&) = delete;
    const std::string& path() const { return path_; }
    bool wait_for(const std::string& needle, Millis deadline) {
        return wait_until(
            [&] {
                char buf[4096];
                for (;;) {
                    ssize_t n = ::recv(fd_, buf, sizeof buf, MSG_DONTWAIT);
                    if (n <= 0) break;
                    all_ += "[" + std::string(buf, static_cast<std::size_t>(n)) + "]";
                }
                return all_.find(needle) != std::string::npos;
            },
            deadline);
    }
    const std::string& all() const { return all_; }

private:
    std::string path_;
    int fd_ = -1;
    std::string all_;
};

}  // namespace

Test(tunnel, passthrough_end_to_end_with_256mib_each_way, .timeout = 400) {
    Tunnel t({});
    cr_assert(t.wait_client("client ready: server-address=" + kServerName), "%s",
              t.client_log().c_str());
    cr_assert(t.client().wait_log("client tunnel connection connected", Millis{1000}));

    CurlResult n = curl_download(t.target(), "/name", t.out("name.txt"));
    cr_assert(n.ok(), "curl: %s http %d %s\n%s", n.status.describe().c_str(), n.http_code,
              n.stderr_text.c_str(), t.client_log().c_str());
    cr_assert_eq(read_file(t.out("name.txt")), "backend " + kApp + "\n");

    const CachedFile big = cached_random_file(256u << 20, 5);
    t.backend().add_file("big.bin", big.path);
    CurlResult d = curl_download(t.target(), "/files/big.bin", t.out("big.bin"), Millis{180000});
    cr_assert(d.ok(), "curl: %s http %d %s", d.status.describe().c_str(), d.http_code,
              d.stderr_text.c_str());
    cr_assert_eq(d.bytes, 256u << 20);
    cr_assert_eq(d.sha256, big.sha256);

    CurlResult u = curl_upload(t.target(), "/upload/up.bin", big.path, Millis{180000});
    cr_assert(u.ok(), "curl: %s http %d %s", u.status.describe().c_str(), u.http_code,
              u.stderr_text.c_str());
    cr_assert_eq(sha256_file(t.backend().upload_path("up.bin")), big.sha256);
    cr_assert(
        t.client().wait_log("client route passthrough: public-hostname=" + kApp, Millis{1000}));

    ExitStatus st = t.client().stop();
    cr_assert(st.success(), "client exit: %s", st.describe().c_str());
    std::string log = t.client_log();
    cr_assert_neq(log.find("client instance graceful shutdown started"), std::string::npos);
    cr_assert_neq(log.find("client instance graceful shutdown closing tunnel connection"),
                  std::string::npos, "%s", log.c_str());
}

// Spec 11: the same with `server-trust = system`: the Client trusts the Server through the system
// store only (here a bundle holding the Server's CA, seen only inside the Client's namespace).
Test(tunnel, passthrough_with_system_trust, .timeout = 120) {
    Tunnel t({.system_trust = true});
    cr_assert(t.wait_client("client ready: server-address=" + kServerName), "%s",
              t.client_log().c_str());
    CurlResult n = curl_download(t.target(), "/name", t.out("name.txt"));
    cr_assert(n.ok(), "curl: %s %s", n.status.describe().c_str(), n.stderr_text.c_str());
    cr_assert_eq(read_file(t.out("name.txt")), "backend " + kApp + "\n");
    t.stop_client_cleanly();
}

Test(tunnel, cli_overlay_starts_a_catch_all_service, .timeout = 120) {
    Tunnel t({.cli_backend = true});
    cr_assert(t.wait_client("client ready: server-address=" + kServerName), "%s",
              t.client_log().c_str());
    CurlResult n = curl_download(t.target(), "/name", t.out("name.txt"));
    cr_assert(n.ok(), "curl: %s http %d %s\n%s", n.status.describe().c_str(), n.http_code,
              n.stderr_text.c_str(), t.client_log().c_str());
    cr_assert_eq(read_file(t.out("name.txt")), "backend " + kApp + "\n");
    cr_assert_eq(t.client_log().find("unused.example.test"), std::string::npos);
    t.stop_client_cleanly();
}

Test(tunnel, unpinned_identity_is_unauthorized_and_retried, .timeout = 120) {
    Tunnel t({.pin_client = false});
    cr_assert(t.wait_client("client tunnel connection unauthorized: server-address=", 2), "%s",
              t.client_log().c_str());
    std::string log = t.client_log();
    cr_assert_neq(log.find("retry=initial next-retry-delay="), std::string::npos, "%s",
                  log.c_str());
    cr_assert_neq(log.find("retry=retry"), std::string::npos, "%s", log.c_str());
    cr_assert_eq(log.find("client ready"), std::string::npos, "%s", log.c_str());
    CurlResult n = curl_download(t.target(), "/name", t.out("name.txt"), Millis{10000});
    cr_assert_not(n.ok());
    t.stop_client_cleanly();
}

Test(tunnel, client_reconnects_after_a_server_restart, .timeout = 180) {
    Tunnel t({});
    cr_assert(t.wait_client("client tunnel connection connected"), "%s", t.client_log().c_str());
    t.stop_server();
    cr_assert(t.wait_client("client tunnel connection closed: server-address=") ||
                  t.wait_client("client tunnel connection dropped: server-address="),
              "%s", t.client_log().c_str());
    t.start_server();
    cr_assert(t.wait_client("client tunnel connection connected", 2, Millis{90000}), "%s",
              t.client_log().c_str());
    cr_assert_eq(count_of(t.client_log(), "client ready"), 1u);
    CurlResult n = curl_download(t.target(), "/name", t.out("name.txt"));
    cr_assert(n.ok(), "curl: %s http %d %s\n%s", n.status.describe().c_str(), n.http_code,
              n.stderr_text.c_str(), t.client_log().c_str());
    t.stop_client_cleanly();
}

Test(tunnel, unreachable_backend_fails_the_visitor_handshake, .timeout = 120) {
    Tunnel t({.backend_override = hp("127.0.0.1", free_port())});
    cr_assert(t.wait_client("client ready"), "%s", t.client_log().c_str());
    CurlResult n = curl_download(t.target(), "/name", t.out("name.txt"), Millis{20000});
    cr_assert_not(n.status.success());
    cr_assert_eq(n.http_code, 0);
    cr_assert(t.wait_client("client route unavailable: public-hostname=" + kApp), "%s",
              t.client_log().c_str());
    cr_assert_neq(t.client_log().find("reason=backend-connect-failed"), std::string::npos);
    t.stop_client_cleanly();
}

Test(tunnel, proxy_v2_to_the_backend_carries_the_visitor_tuple, .timeout = 120) {
    Tunnel t({.proxy_v2 = true});
    cr_assert(t.wait_client("client ready"), "%s", t.client_log().c_str());
    CurlResult n = curl_download(t.target(), "/proxy", t.out("proxy.txt"));
    cr_assert(n.ok(), "curl: %s http %d %s\n%s\n%s", n.status.describe().c_str(), n.http_code,
              n.stderr_text.c_str(), t.client_log().c_str(),
              read_file(t.backend().error_log()).c_str());
    std::string seen = read_file(t.out("proxy.txt"));
    // "<src>:<sport> <dst>:<dport>": the Visitor as the Server saw it, and the public listener.
    cr_assert(seen.starts_with("127.0.0.1:"), "%s", seen.c_str());
    cr_assert(seen.ends_with(" 127.0.0.1:" + std::to_string(t.public_port()) + "\n"), "%s",
              seen.c_str());
    t.stop_client_cleanly();
}

Test(tunnel, unreadable_identity_on_a_retry_is_fatal, .timeout = 120) {
    Tunnel t({});
    cr_assert(t.wait_client("client tunnel connection connected"), "%s", t.client_log().c_str());
    remove_tree(t.identity_dir() + "/client.key");
    t.stop_server();
    std::optional<ExitStatus> st = t.client().process().wait_exit(Millis{60000});
    cr_assert(st.has_value(), "client still running\n%s", t.client_log().c_str());
    cr_assert(st->exited && st->code == 1, "client: %s\n%s", st->describe().c_str(),
              t.client_log().c_str());
    cr_assert_neq(t.client_log().find("client local material failed"), std::string::npos, "%s",
                  t.client_log().c_str());
}

Test(tunnel, a_dead_server_address_does_not_hold_back_the_live_one, .timeout = 120) {
    TempDir nd;
    NotifySocket notify(nd / "notify");
    Tunnel t({.dead_second_address = true, .notify_socket = notify.path()});
    cr_assert(t.wait_client("client ready: server-address=" + kServerName), "%s",
              t.client_log().c_str());
    cr_assert(notify.wait_for("READY=1", Millis{10000}), "%s", notify.all().c_str());
    cr_assert(notify.wait_for("STATUS=connected 1/2 server addresses", Millis{10000}), "%s",
              notify.all().c_str());
    cr_assert(notify.wait_for("WATCHDOG=1", Millis{10000}), "%s", notify.all().c_str());
    CurlResult n = curl_download(t.target(), "/name", t.out("name.txt"));
    cr_assert(n.ok(), "curl: %s http %d %s\n%s", n.status.describe().c_str(), n.http_code,
              n.stderr_text.c_str(), t.client_log().c_str());
    std::string dead = hp(kServerName, t.dead_port());
    cr_assert(t.wait_client("client tunnel connection connecting: server-address=" + dead), "%s",
              t.client_log().c_str());
    cr_assert(
        t.wait_client("client tunnel connection failed: server-address=" + dead, 1, Millis{60000}),
        "%s", t.client_log().c_str());
    t.stop_client_cleanly();
    cr_assert(notify.wait_for("STOPPING=1", Millis{10000}), "%s", notify.all().c_str());
}

Test(tunnel, a_hostname_without_a_service_resets_the_stream, .timeout = 120) {
    Tunnel t({});
    cr_assert(t.wait_client("client ready"), "%s", t.client_log().c_str());
    HttpsTarget other = t.target();
    other.host = kOther;
    CurlResult n = curl_download(other, "/name", t.out("name.txt"), Millis{20000});
    cr_assert_not(n.status.success());
    cr_assert(t.wait_client("client route unavailable: public-hostname=" + kOther +
                            " reason=no-matching-service"),
              "%s\n%s\ncurl: %s", t.client_log().c_str(), t.server().log().c_str(),
              n.stderr_text.c_str());
    // The Tunnel connection itself is unaffected.
    CurlResult ok = curl_download(t.target(), "/name", t.out("ok.txt"));
    cr_assert(ok.ok(), "curl: %s %s", ok.status.describe().c_str(), ok.stderr_text.c_str());
    t.stop_client_cleanly();
}

// Spec 5.14: the Server adopts a socket-activated `tunnel` datagram socket instead of binding
// tunnel-bind-address; the Client's first Initial is what makes systemd-socket-activate start it.
Test(tunnel, socket_activated_tunnel_listener_serves, .timeout = 120) {
    Tunnel t({.activated_tunnel = true});
    cr_assert(t.wait_client("client ready"), "%s\n%s", t.client_log().c_str(),
              t.server().log().c_str());
    CurlResult n = curl_download(t.target(), "/name", t.out("name.txt"));
    cr_assert(n.ok(), "curl: %s %s", n.status.describe().c_str(), n.stderr_text.c_str());
    cr_assert_eq(read_file(t.out("name.txt")), "backend " + kApp + "\n");
    std::string slog = t.server().log();
    cr_assert_neq(slog.find("server tunnel listener socket-activated: bind-address=127.0.0.1:" +
                            std::to_string(t.tunnel_port())),
                  std::string::npos, "%s", slog.c_str());
    cr_assert_neq(slog.find("server tunnel listener ready: bind-address=127.0.0.1:" +
                            std::to_string(t.tunnel_port())),
                  std::string::npos, "%s", slog.c_str());
    // The configured address was never bound: a socket can take it.
    int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(t.configured_tunnel_port());
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int rc = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
    ::close(fd);
    cr_assert_eq(rc, 0, "the configured tunnel address was bound");
    t.stop_client_cleanly();
}

// Spec 5.12 with real Clients: while every stream stays open, placement alternates between the
// two pool members, so each Client serves exactly half.
Test(tunnel, two_clients_share_the_pool_least_active_first, .timeout = 120) {
    Tunnel t({.clients = 2});
    t.wait_pool_ready();

    std::vector<std::unique_ptr<TlsClient>> open;
    for (int i = 0; i < 8; ++i) {
        Fd fd = tcp_connect("127.0.0.1", t.public_port());
        cr_assert(fd.valid());
        open.push_back(std::make_unique<TlsClient>(std::move(fd), kApp, t.backend().ca_file()));
        cr_assert(open.back()->handshake(Millis{10000}), "visitor %d: %s", i,
                  open.back()->error().c_str());
    }
    const std::string routed = "client route passthrough: public-hostname=" + kApp;
    cr_assert_eq(count_of(t.client_log(0), routed), 4u, "%s", t.client_log(0).c_str());
    cr_assert_eq(count_of(t.client_log(1), routed), 4u, "%s", t.client_log(1).c_str());
    open.clear();
    t.stop_client_cleanly(1);
    t.stop_client_cleanly(0);
}

// Spec 11: when a pool member leaves (here SIGKILL: no close frame ever reaches the Server),
// traffic continues on the other; when the last one leaves, Visitors fail.
Test(tunnel, failover_when_a_client_is_killed, .timeout = 180) {
    Tunnel t({.clients = 2});
    t.wait_pool_ready();
    for (int i = 0; i < 4; ++i) {
        CurlResult n = curl_download(t.target(), "/name", t.out("name.txt"));
        cr_assert(n.ok(), "curl: %s %s", n.status.describe().c_str(), n.stderr_text.c_str());
    }
    const std::string routed = "client route passthrough: public-hostname=" + kApp;
    cr_assert_eq(count_of(t.client_log(1), routed), 2u, "%s", t.client_log(1).c_str());
    // curl is done once it has every byte, the Server's side of a stream only when the Client
    // has acknowledged its end. A stream still open on the Client about to die would keep it the
    // busier member: no Visitor would be placed there, and the Server, which judges a member's
    // liveness when it places a Visitor, would never find it silent. Kill only once all four
    // streams closed.
    cr_assert(wait_until([&] { return count_of(t.server().log(), "server visitor closed:") >= 4; },
                         Millis{10000}),
              "%s", t.server().log().c_str());

    t.kill_client(1);
    // The Server learns of the loss only from silence: a Visitor placed on the dead member
    // before then fails (spec 5.12: no second try), every later one lands on the live Client.
    int failed = 0;
    for (int i = 0; i < 12; ++i) {
        CurlResult n = curl_download(t.target(), "/name", t.out("name.txt"), Millis{8000});
        if (!n.ok()) ++failed;
        cr_assert_leq(failed, 1, "visitor %d failed too: %s\n%s", i, n.stderr_text.c_str(),
                      t.server().log().c_str());
        if (n.ok()) cr_assert_eq(read_file(t.out("name.txt")), "backend " + kApp + "\n");
    }
    cr_assert_geq(count_of(t.client_log(0), routed), 2u + 11u, "%s", t.client_log(0).c_str());

    cr_assert(
        t.wait_server("server tunnel connection unresponsive: client-identity=" + t.identity(1)),
        "%s", t.server().log().c_str());

    // The last responsive member leaves: Visitors are dropped at once, without a byte, although
    // the silent member stays in the pool until its idle timeout.
    t.stop_client_cleanly(0);
    cr_assert(t.wait_server("server tunnel connection closed"), "%s", t.server().log().c_str());
    RawVisit v = raw_visit("127.0.0.1", t.public_port(), capture_client_hello(kApp), Millis{10000});
    cr_assert(v.connected);
    cr_assert(v.reaction.closed, "the Visitor was not dropped\n%s", t.server().log().c_str());
    cr_assert(v.reaction.received.empty());
    cr_assert(t.wait_server("reason=no-active-tunnel-connection"), "%s", t.server().log().c_str());
}

// Spec 5.14 and 11: a routed stream keeps running through a graceful Server shutdown; the Server
// refuses new Visitors at once, exits right after the stream ends, and the Client sees a clean
// close.
Test(tunnel, graceful_server_shutdown_lets_a_routed_stream_finish, .timeout = 180) {
    Tunnel t({.graceful_shutdown = "60s"});
    cr_assert(t.wait_client("client ready"), "%s", t.client_log().c_str());
    const CachedFile big = cached_random_file(32u << 20, 9);
    t.backend().add_file("slow.bin", big.path);
    auto args = curl_base_args(t.target());
    // About 4 s at 8 MiB/s: the shutdown starts while most of the file is still to come.
    args.insert(args.end(), {"--limit-rate", "8M", "--output", t.out("slow.bin"),
                             https_url(t.target(), "/files/slow.bin")});
    Process curl = Process::spawn({.argv = args, .err = Output::file(t.out("curl.err"))});
    cr_assert(wait_until([&] { return file_size(t.out("slow.bin")) >= (4u << 20); }, Millis{30000}),
              "download did not start\n%s", t.server().log().c_str());

    cr_assert(t.server().process().signal(SIGTERM));
    cr_assert(t.wait_server("server orderly shutdown started: mode=graceful"));
    cr_assert(
        wait_until([&] { return !tcp_accepting("127.0.0.1", t.public_port()); }, Millis{5000}));
    std::optional<ExitStatus> done = curl.wait_exit(Millis{60000});
    cr_assert(done.has_value() && done->success(), "curl: %s %s",
              done ? done->describe().c_str() : "running", read_file(t.out("curl.err")).c_str());
    cr_assert_eq(sha256_file(t.out("slow.bin")), big.sha256);

    std::optional<ExitStatus> st = t.server().process().wait_exit(Millis{10000});
    cr_assert(st.has_value() && st->success(), "server: %s\n%s",
              st ? st->describe().c_str() : "running", t.server().log().c_str());
    std::string slog = t.server().log();
    cr_assert_eq(slog.find("server graceful shutdown deadline expired"), std::string::npos);
    cr_assert_neq(slog.find("server orderly shutdown complete"), std::string::npos, "%s",
                  slog.c_str());
    cr_assert(t.wait_client("client tunnel connection closed: server-address="), "%s",
              t.client_log().c_str());
    cr_assert_eq(t.client_log().find("client tunnel connection dropped"), std::string::npos, "%s",
                 t.client_log().c_str());
    t.stop_client_cleanly();
}

namespace {

// Sockets in `state` (hex, "01" = ESTABLISHED) whose local port is `port`, from /proc/net/tcp.
std::size_t tcp_sockets_on(std::uint16_t port, const char* state = "01") {
    std::string table = read_file("/proc/net/tcp");
    char want[8];
    std::snprintf(want, sizeof want, ":%04X", port);
    std::size_t n = 0;
    std::size_t pos = table.find('\n');
    while (pos != std::string::npos && pos + 1 < table.size()) {
        std::size_t end = table.find('\n', pos + 1);
        std::string line = table.substr(pos + 1, end == std::string::npos ? end : end - pos - 1);
        // "  sl  local_address rem_address   st ..."
        char local[64], remote[64], st[8];
        if (std::sscanf(line.c_str(), "%*s %63s %63s %7s", local, remote, st) == 3 &&
            std::string_view(local).ends_with(want) && std::string_view(st) == state) {
            ++n;
        }
        pos = end;
    }
    return n;
}

// The lines of a daemon log that say why something ended early (warnings, errors, closes with a
// reason other than done), at most `max` of them: the diagnosis a failed load test prints.
std::string notable_lines(const std::string& log, std::size_t max = 40) {
    std::string out;
    std::size_t n = 0, pos = 0;
    while (pos < log.size() && n < max) {
        std::size_t end = log.find('\n', pos);
        if (end == std::string::npos) end = log.size();
        std::string_view line(log.data() + pos, end - pos);
        const bool closed_early = line.find(" closed") != std::string_view::npos &&
                                  line.find("reason=") != std::string_view::npos &&
                                  line.find("reason=done") == std::string_view::npos;
        if (line.find("WARN") != std::string_view::npos ||
            line.find("ERROR") != std::string_view::npos || closed_early) {
            out.append(line).push_back('\n');
            ++n;
        }
        pos = end + 1;
    }
    return out;
}

}  // namespace

// 1000 Visitors at once through one tunnel connection, each its own QUIC stream and backend
// connection, every body checked by hash. Four source addresses keep each under the per-source
// intake limit (256); the backend sends each body at 32 KiB/s, so every transfer lasts about 8 s
// and all 1000 are open together.
Test(tunnel, a_thousand_concurrent_visitor_streams, .timeout = 300) {
    Tunnel t({});
    cr_assert(t.wait_client("client ready"), "%s", t.client_log().c_str());
    const CachedFile body = cached_random_file(256u << 10, 11);
    t.backend().add_file("k.bin", body.path);
    make_dirs(t.out("many"));
    std::vector<Process> curls;
    for (int c = 0; c < 4; ++c) {
        auto args = curl_base_args(t.target());
        std::string src = "127.0.0." + std::to_string(2 + c);
        args.insert(args.end(),
                    {"--parallel", "--parallel-immediate", "--parallel-max", "250", "--interface",
                     src, "--max-time", "120", "--output-dir", t.out("many"), "--output",
                     std::to_string(c) + "-#1.bin", "--write-out", "%{http_code}\\n",
                     https_url(t.target(), "/slow/k.bin?[1-250]")});
        curls.push_back(Process::spawn({.argv = args,
                                        .out = Output::file(t.out("codes-" + std::to_string(c))),
                                        .err = Output::file(t.out("err-" + std::to_string(c)))}));
    }
    // All 1000 backend connections are up at the same time.
    std::size_t peak = 0;
    bool all_open = wait_until(
        [&] {
            peak = std::max(peak, tcp_sockets_on(t.backend().port()));
            return peak >= 1000;
        },
        Millis{60000}, Millis{50});
    cr_assert(all_open, "peak %zu concurrent backend connections\n%s\nserver:\n%s\nclient:\n%s",
              peak, read_file(t.out("err-0")).substr(0, 2000).c_str(),
              notable_lines(t.server().log()).c_str(), notable_lines(t.client_log()).c_str());
    for (int c = 0; c < 4; ++c) {
        std::optional<ExitStatus> st = curls[static_cast<std::size_t>(c)].wait_exit(Millis{150000});
        cr_assert(st.has_value() && st->success(), "curl %d: %s %s", c,
                  st ? st->describe().c_str() : "running",
                  read_file(t.out("err-" + std::to_string(c))).c_str());
        cr_assert_eq(count_of(read_file(t.out("codes-" + std::to_string(c))), "200\n"), 250u);
        for (int i = 1; i <= 250; ++i) {
            std::string f = t.out("many/" + std::to_string(c) + "-" + std::to_string(i) + ".bin");
            cr_assert_eq(sha256_file(f), body.sha256, "%s", f.c_str());
        }
    }
    cr_assert_eq(count_of(t.client_log(), "client route passthrough: public-hostname=" + kApp),
                 1000u);
    cr_assert_eq(t.client_log().find("saturated"), std::string::npos, "%s", t.client_log().c_str());
    cr_assert_eq(t.server().log().find("saturated"), std::string::npos);
    t.stop_client_cleanly();
}

// A backend that answers only after the Visitor's half-close and then closes at once: the
// whole answer reaches the Visitor. ngtcp2 closes a stream as soon as every byte arrived and the
// other direction was acknowledged; bytes still waiting for a full socket (or for the next loop
// iteration) must be delivered all the same, with the FIN after them, not cut by a reset.
Test(tunnel, an_answer_after_the_visitors_half_close_arrives_whole, .timeout = 120) {
    int lfd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(::bind(lfd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    cr_assert_eq(::listen(lfd, 64), 0);
    socklen_t alen = sizeof a;
    ::getsockname(lfd, reinterpret_cast<sockaddr*>(&a), &alen);
    const std::uint16_t port = ntohs(a.sin_port);
    // Answers of several sizes: one packet, a few packets, more than a stream window.
    const std::vector<std::size_t> sizes = {3000, 3000, 3000, 70000, 3000, 1u << 20, 3000};
    std::vector<std::string> answers;
    for (std::size_t i = 0; i < sizes.size(); ++i) {
        std::string b(sizes[i], '\0');
        for (std::size_t k = 0; k < b.size(); ++k)
            b[k] = static_cast<char>((k * 131 + i * 17 + (k >> 9)) & 0xff);
        answers.push_back(std::move(b));
    }
    std::atomic<bool> stop{false};
    std::thread backend([&] {
        for (std::size_t i = 0; i < answers.size() && !stop; ++i) {
            int c = ::accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC);
            if (c < 0) return;
            char buf[65536];
            while (::recv(c, buf, sizeof buf, 0) > 0) {
            }
            (void)send_all(c, answers[i]);
            ::close(c);
        }
    });
    Tunnel t({.backend_override = hp("127.0.0.1", port)});
    cr_assert(t.wait_client("client ready"), "%s", t.client_log().c_str());
    const std::string hello = capture_client_hello(kApp);
    for (std::size_t i = 0; i < answers.size(); ++i) {
        RawConnection c("127.0.0.1", t.public_port());
        c.send(hello + std::string(20000, 'v'));
        c.shutdown_write();
        PeerReaction r = c.wait_closed(Millis{20000});
        cr_assert(r.closed && !r.reset, "visit %zu: closed %d reset %d after %zu bytes\n%s", i,
                  r.closed, r.reset, r.received.size(), t.client_log().c_str());
        cr_assert_eq(r.received.size(), answers[i].size(), "visit %zu", i);
        cr_assert_eq(sha256_hex(r.received), sha256_hex(answers[i]), "visit %zu", i);
    }
    stop = true;
    ::shutdown(lfd, SHUT_RDWR);
    backend.join();
    ::close(lfd);
    t.stop_client_cleanly();
}

// ---- the Client against an in-process QUIC Server: streams the real Server never sends ----------

namespace {

struct ProbeStream final : quic::StreamHandler {
    bool reset = false;
    bool closed = false;
    size_t on_stream_data(quic::Stream&, std::span<const uint8_t> d, bool) noexcept override {
        return d.size();
    }
    void on_stream_writable(quic::Stream&) noexcept override {}
    void on_stream_reset(quic::Stream&, uint64_t) noexcept override { reset = true; }
    void on_stream_closed(quic::Stream&, uint64_t code) noexcept override {
        closed = true;
        if (code != 0) reset = true;
    }
};

struct ProbeServer final : quic::AcceptHandler, quic::ConnectionHandler {
    quic::Connection* conn = nullptr;
    void on_connection(quic::Connection& c) noexcept override {
        conn = &c;
        c.set_handler(this);
    }
    void on_established(quic::Connection&) noexcept override {}
    void on_stream_opened(quic::Connection&, quic::Stream& s) noexcept override { s.reset(); }
    void on_streams_available(quic::Connection&) noexcept override {}
    void on_closed(quic::Connection&, const quic::CloseInfo&) noexcept override { conn = nullptr; }
};

}  // namespace

Test(tunnel, malformed_and_stalled_streams_are_reset_alone, .timeout = 120) {
    TempDir dir;
    std::vector<std::string> env = {"XDG_CONFIG_HOME=" + (dir / "xdg-config"),
                                    "XDG_DATA_HOME=" + (dir / "xdg-data"),
                                    "XDG_STATE_HOME=" + (dir / "xdg-state")};
    auto r = run({runewarp_binary(), "client", "identity", "init", "--dir", dir / "identity"},
                 Millis{30000}, env);
    cr_assert(r.status.success(), "%s", r.err.c_str());
    r = run({runewarp_binary(), "server", "cert", "init", "--hostname", kServerName, "--dir",
             dir / "cert"},
            Millis{30000}, env);
    cr_assert(r.status.success(), "%s", r.err.c_str());

    auto w = core::Worker::create();
    cr_assert(w.ok());
    auto tls = quic::ServerTls::create({read_file(dir / "cert/server.crt"),
                                        read_file(dir / "cert/server.key"),
                                        [](std::span<const uint8_t>) { return true; }});
    cr_assert(tls.ok(), "%s", tls.ok() ? "" : tls.error().message.c_str());
    std::uint16_t port = free_port();
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ProbeServer server;
    auto l =
        quic::Listener::create(**w, reinterpret_cast<sockaddr*>(&sa), sizeof sa, **tls, server);
    cr_assert(l.ok(), "%s", l.ok() ? "" : l.error().message.c_str());

    write_file(dir / "hosts", "127.0.0.1 " + kServerName + "\n");
    write_file(dir / "client.ini",
               "log-level = debug\n[client]\nserver-address = " + hp(kServerName, port) +
                   "\nserver-trust = ca-file\nserver-ca-file = " + (dir / "cert/server-ca.crt") +
                   "\nidentity-dir = " + (dir / "identity") +
                   "\n[service \"all\"]\nbackend-address = 127.0.0.1:9\n");
    std::string cmd = "mount --bind '" + (dir / "hosts") + "' /etc/hosts && exec '" +
                      runewarp_binary() + "' client -c '" + (dir / "client.ini") + "'";
    Daemon client(DaemonOptions{.argv = {"unshare", "-m", "sh", "-c", cmd},
                                .env = env,
                                .log_path = dir / "client.log",
                                .ready_log_line = "client tunnel connection connecting"});
    auto up = (*w)->run_until([&] { return server.conn != nullptr; },
                              runewarp::core::now_ns() + 20 * runewarp::core::kNsPerSec);
    cr_assert(up.ok() && *up, "%s", client.log().c_str());

    runewarp::proto::Tuple t{runewarp::proto::Endpoint::v4({192, 0, 2, 10}, 12345),
                             runewarp::proto::Endpoint::v4({198, 51, 100, 20}, 443)};
    uint8_t hdr[64];
    size_t hn = runewarp::proto::encode_stream_prefix(t, hdr);
    cr_assert_eq(hn, 28u);

    ProbeStream garbage, stalled;
    auto s1 = server.conn->open_stream(garbage);
    cr_assert(s1.ok());
    std::string bytes(reinterpret_cast<const char*>(hdr), hn);
    bytes += "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    (*s1)->write({reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()});
    auto s2 = server.conn->open_stream(stalled);
    cr_assert(s2.ok());
    (*s2)->write({hdr, hn});

    auto done = (*w)->run_until([&] { return garbage.reset; },
                                runewarp::core::now_ns() + 3 * runewarp::core::kNsPerSec);
    cr_assert(done.ok() && *done, "%s", client.log().c_str());
    cr_assert_not(stalled.reset, "the stalled stream waits for its 5 s intake deadline");
    done = (*w)->run_until([&] { return stalled.reset; },
                           runewarp::core::now_ns() + 15 * runewarp::core::kNsPerSec);
    cr_assert(done.ok() && *done, "%s", client.log().c_str());
    std::string log = client.log();
    cr_assert_eq(count_of(log, "client warning: rejected stream: "), 2u, "%s", log.c_str());
    cr_assert_neq(log.find("rejected stream: stream intake timeout"), std::string::npos, "%s",
                  log.c_str());
    // The connection itself survives both.
    cr_assert_not_null(server.conn);
    cr_assert_eq(log.find("client tunnel connection dropped"), std::string::npos, "%s",
                 log.c_str());
    ExitStatus st = client.stop();
    cr_assert(st.success(), "%s", st.describe().c_str());
    // Tear the in-process Server down through the loop (endpoint and connections free
    // themselves only once their ops completed), so nothing is left to leak.
    (*l).reset();
    auto drained = (*w)->run_until([&] { return (*w)->attached_count() == 0; },
                                   runewarp::core::now_ns() + 5 * runewarp::core::kNsPerSec);
    cr_assert(drained.ok() && *drained, "%u sessions still attached", (*w)->attached_count());
}
