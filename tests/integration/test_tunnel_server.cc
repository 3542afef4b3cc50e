// The Server's tunnel side end to end (spec 5.2-5.4, 5.7, 5.9, 5.12, 5.14): the real binary with
// `server cert init` material and a [tunnel], driven by in-process QUIC Clients built from the
// quic module and raw TCP Visitors on loopback.
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "core/clock.hh"
#include "core/worker.hh"
#include "quic/connection.hh"
#include "quic/listener.hh"
#include "quic/tls.hh"
#include "tests/integration/edge_support.hh"
#include "tests/support/daemon.hh"
#include "tests/support/files.hh"
#include "tests/support/hosts.hh"
#include "tests/support/net.hh"
#include "tests/support/nginx.hh"
#include "tests/support/process.hh"
#include "tests/support/tls.hh"

using namespace runewarp;
using namespace runewarp::test;
using namespace runewarp::test::edge;

namespace {

// Single-label and resolvable on every test host, so a real `runewarp client` can dial it. The
// Client runs with a stock host's /etc/hosts (kStockHosts), where it resolves to ::1 first while
// the Server listens on 127.0.0.1 only.
const std::string kServerName = "localhost";
const std::string kApp = "app.example.test";

// A Client identity made by `runewarp client identity init`.
struct Identity {
    std::string cert_pem;
    std::string key_pem;
    std::string id;
};

std::vector<std::string> material_env(const TempDir& d) {
    return {"XDG_CONFIG_HOME=" + (d / "xdg-config"), "XDG_DATA_HOME=" + (d / "xdg-data"),
            "XDG_STATE_HOME=" + (d / "xdg-state"), "RUNEWARP_SERVER_HOSTNAME="};
}

Identity make_identity(const TempDir& d, const std::string& name) {
    std::string dir = d / name;
    auto r = run({runewarp_binary(), "client", "identity", "init", "--dir", dir}, Millis{30000},
                 material_env(d));
    cr_assert(r.status.success(), "identity init: %s %s", r.out.c_str(), r.err.c_str());
    return {read_file(dir + "/client.crt"), read_file(dir + "/client.key"),
            read_file(dir + "/client-identity.txt")};
}

// One in-process Client connection and the streams the Server opens on it.
struct ClientStream final : quic::StreamHandler {
    quic::Stream* stream = nullptr;
    std::string received;
    bool fin = false;
    bool reset = false;
    bool closed = false;
    bool paused = false;  // take nothing (withholds flow-control credit)
    size_t on_stream_data(quic::Stream&, std::span<const uint8_t> d, bool f) noexcept override {
        if (paused) return 0;
        received.append(reinterpret_cast<const char*>(d.data()), d.size());
        if (f) fin = true;
        return d.size();
    }
    void on_stream_writable(quic::Stream&) noexcept override {}
    void on_stream_reset(quic::Stream&, uint64_t) noexcept override { reset = true; }
    void on_stream_closed(quic::Stream&, uint64_t) noexcept override {
        closed = true;
        stream = nullptr;
    }
};

struct TestClient final : quic::ConnectionHandler {
    quic::Connection* conn = nullptr;
    bool established = false;
    bool closed = false;
    quic::CloseInfo info;
    std::vector<std::unique_ptr<ClientStream>> streams;

    void on_established(quic::Connection&) noexcept override { established = true; }
    void on_stream_opened(quic::Connection&, quic::Stream& s) noexcept override {
        auto cs = std::make_unique<ClientStream>();
        cs->stream = &s;
        s.set_handler(cs.get());
        streams.push_back(std::move(cs));
    }
    void on_streams_available(quic::Connection&) noexcept override {}
    void on_closed(quic::Connection&, const quic::CloseInfo& i) noexcept override {
        closed = true;
        info = i;
        conn = nullptr;
    }
};

// The Server under test plus the worker that runs the in-process Clients.
class Harness {
public:
    // `extra`: more [server] lines (e.g. "workers = 2\n").
    explicit Harness(size_t pinned = 1, std::string graceful = "30s", std::string extra = {}) {
        for (size_t i = 0; i < pinned; ++i)
            pinned_.push_back(make_identity(dir_, "identity-" + std::to_string(i)));
        auto r = run({runewarp_binary(), "server", "cert", "init", "--hostname", kServerName,
                      "--dir", dir_ / "cert"},
                     Millis{30000}, material_env(dir_));
        cr_assert(r.status.success(), "cert init: %s %s", r.out.c_str(), r.err.c_str());
        public_port_ = free_port();
        tunnel_port_ = free_port();
        std::string ini = "log-level = debug\n\n[server]\nhostname = " + kServerName + "\n";
        ini += "cert-dir = " + (dir_ / "cert") + "\n";
        ini += "public-bind-address = " + host_port("127.0.0.1", public_port_) + "\n";
        ini += "tunnel-bind-address = " + host_port("127.0.0.1", tunnel_port_) + "\n";
        ini += "graceful-shutdown-duration = " + graceful + "\n";
        ini += extra;
        // One key per identity: a list of many would pass the 199-byte line limit.
        ini += "\n[tunnel \"app\"]\npublic-hostnames = " + kApp + "\n";
        for (const Identity& id : pinned_) ini += "client-identities = " + id.id + "\n";
        write_file(dir_ / "server.ini", ini);
        std::vector<std::string> env = material_env(dir_);
        daemon_.emplace(DaemonOptions{
            .argv = {runewarp_binary(), "server", "-c", dir_ / "server.ini"},
            .env = env,
            .log_path = dir_ / "runewarp.log",
            .ready_log_line = "server tunnel listener ready",
        });

        core::WorkerOptions o;
        o.max_slots = 1024;
        auto w = core::Worker::create(o);
        cr_assert(w.ok(), "worker");
        worker_ = std::move(*w);
    }
    ~Harness() {
        for (auto& c : clients_)
            if (c->conn != nullptr) c->conn->close(quic::kAppCloseCode, "graceful shutdown");
        // Connections linger through their closing period; let them retire before the worker
        // (and the credentials they use) go away.
        spin_until([&] { return worker_->attached_count() == 0; }, Millis{5000});
    }

    const Identity& pinned(size_t i) const { return pinned_[i]; }
    Identity unpinned() { return make_identity(dir_, "unpinned"); }
    Daemon& daemon() { return *daemon_; }
    std::string log() const { return daemon_->log(); }
    uint16_t public_port() const { return public_port_; }
    uint16_t tunnel_port() const { return tunnel_port_; }
    const TempDir& dir() const { return dir_; }
    const std::vector<std::unique_ptr<TestClient>>& clients() const { return clients_; }

    // Runs the Clients' loop until cond() holds or the deadline passes.
    bool spin_until(const std::function<bool()>& cond, Millis deadline) {
        int64_t end = core::now_ns() + deadline.count() * 1'000'000;
        while (!cond()) {
            int64_t left = end - core::now_ns();
            if (left <= 0) return cond();
            auto r = worker_->run_once(std::min<int64_t>(left, 5'000'000));
            cr_assert(r.ok(), "client loop");
        }
        return true;
    }

    TestClient& dial(const Identity& id) {
        auto tls = quic::ClientTls::create({kServerName, quic::ServerTrust::ca_file,
                                            read_file(dir_ / "cert/server-ca.crt"), id.cert_pem,
                                            id.key_pem});
        cr_assert(tls.ok(), "client tls: %s", tls.ok() ? "" : tls.error().message.c_str());
        tls_.push_back(std::move(*tls));
        clients_.push_back(std::make_unique<TestClient>());
        TestClient& c = *clients_.back();
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_port = htons(tunnel_port_);
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        auto conn =
            quic::dial(*worker_, reinterpret_cast<sockaddr*>(&a), sizeof(a), *tls_.back(), c);
        cr_assert(conn.ok(), "dial: %s", conn.ok() ? "" : conn.error().message.c_str());
        c.conn = *conn;
        return c;
    }

    // Dials and waits until the Server counted the connection into the pool.
    TestClient& connect(const Identity& id, size_t members_after) {
        TestClient& c = dial(id);
        std::string line = "tunnel=app members=" + std::to_string(members_after);
        cr_assert(spin_until([&] { return c.established && log().find(line) != std::string::npos; },
                             Millis{10000}),
                  "client not admitted: %s", log().c_str());
        return c;
    }

private:
    TempDir dir_{"runewarp-tunsrv"};
    std::vector<Identity> pinned_;
    uint16_t public_port_ = 0;
    uint16_t tunnel_port_ = 0;
    std::optional<Daemon> daemon_;
    std::unique_ptr<core::Worker> worker_;
    std::vector<std::unique_ptr<quic::ClientTls>> tls_;
    std::vector<std::unique_ptr<TestClient>> clients_;
};

void set_nonblocking(int fd) {
    int one = 1;
    cr_assert_eq(::ioctl(fd, FIONBIO, &one), 0);
}

// Reads what is available on a non-blocking socket; false on EOF/reset.
bool drain(int fd, std::string& into, bool& eof) {
    char buf[16384];
    for (;;) {
        ssize_t n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
        if (n > 0) {
            into.append(buf, static_cast<size_t>(n));
            continue;
        }
        if (n == 0) {
            eof = true;
            return false;
        }
        if (errno == EAGAIN || errno == EINTR) return true;
        eof = true;
        return false;
    }
}

std::string be16(uint16_t v) {
    return std::string{static_cast<char>(v >> 8), static_cast<char>(v & 0xff)};
}

// The expected 28-byte stream prefix for 127.0.0.1:src -> 127.0.0.1:dst (spec 5.7).
std::string expected_prefix(uint16_t src, uint16_t dst) {
    std::string h("\r\n\r\n\0\r\nQUIT\n", 12);
    h += '\x21';
    h += '\x11';
    h += be16(12);
    h += std::string("\x7f\x00\x00\x01", 4);
    h += std::string("\x7f\x00\x00\x01", 4);
    h += be16(src);
    h += be16(dst);
    return h;
}

// A Visitor on a raw socket: sends a real ClientHello for `sni` (plus `extra`).
struct Visitor {
    RawConnection raw;
    std::string hello;
    std::string got;
    bool eof = false;
    Visitor(uint16_t port, const std::string& sni, const std::string& extra = {})
        : raw("127.0.0.1", port), hello(capture_client_hello(sni)) {
        cr_assert(raw.send(hello + extra));
        set_nonblocking(raw.fd());
    }
    uint16_t local_port() const { return raw.local().second; }
    void poll_in() { drain(raw.fd(), got, eof); }
};

ClientStream& last_stream(TestClient& c) {
    cr_assert_not(c.streams.empty());
    return *c.streams.back();
}

size_t received_on_last(const TestClient& c) {
    return c.streams.empty() ? 0 : c.streams.back()->received.size();
}

}  // namespace

TestSuite(tunnel_server, .timeout = 120);

Test(tunnel_server, visitor_bytes_arrive_behind_the_proxy_header_and_flow_both_ways) {
    Harness h;
    TestClient& c = h.connect(h.pinned(0), 1);
    Visitor v(h.public_port(), kApp, "early-bytes");
    std::string want = expected_prefix(v.local_port(), h.public_port()) + v.hello + "early-bytes";
    cr_assert(h.spin_until([&] { return received_on_last(c) >= want.size(); }, Millis{10000}),
              "no stream: %s", h.log().c_str());
    ClientStream& s = last_stream(c);
    cr_assert_eq(s.received.size(), want.size());
    cr_assert(s.received == want, "prefix or Visitor bytes differ");

    // Client -> Visitor.
    std::string reply(200000, 'r');
    size_t off = 0;
    cr_assert(h.spin_until(
        [&] {
            if (s.stream != nullptr && off < reply.size())
                off += s.stream->write(
                    {reinterpret_cast<const uint8_t*>(reply.data()) + off, reply.size() - off});
            v.poll_in();
            return v.got.size() >= reply.size();
        },
        Millis{10000}));
    cr_assert(v.got == reply);

    // Visitor -> Client after the prefix, then FIN maps to FIN both ways.
    cr_assert(v.raw.send("more visitor bytes"));
    v.raw.shutdown_write();
    cr_assert(h.spin_until([&] { return s.fin; }, Millis{10000}), "no FIN on the stream");
    cr_assert(s.received == want + "more visitor bytes");
    cr_assert(s.stream != nullptr);
    s.stream->shutdown_write();
    cr_assert(h.spin_until(
        [&] {
            v.poll_in();
            return v.eof;
        },
        Millis{10000}));
    cr_assert(v.got == reply, "the Visitor got extra bytes");
    cr_assert(h.daemon().wait_log("route=app target=tunnel", Millis{5000}), "%s", h.log().c_str());
    cr_assert(h.log().find("reason=done") != std::string::npos, "%s", h.log().c_str());
}

Test(tunnel_server, unpinned_identity_gets_access_denied) {
    Harness h;
    TestClient& c = h.dial(h.unpinned());
    cr_assert(h.spin_until([&] { return c.closed; }, Millis{10000}));
    cr_assert_not(c.established);
    cr_assert_eq(c.info.code, quic::kCryptoErrorAccessDenied, "code 0x%llx",
                 static_cast<unsigned long long>(c.info.code));
    cr_assert(h.daemon().wait_log("server tunnel connection unauthorized", Millis{5000}));
    cr_assert(h.log().find("server tunnel connection accepted") == std::string::npos);
}

// Spec 11: a Client without a certificate is refused in the handshake; the Server says so once
// (spec 7: `server tunnel connection failed`, 10 s limit) and recovers on the next good one.
Test(tunnel_server, client_without_a_certificate_fails_the_handshake) {
    Harness h;
    Identity none;
    TestClient& c = h.dial(none);
    cr_assert(h.spin_until([&] { return c.closed; }, Millis{10000}));
    cr_assert_not(c.established);
    cr_assert(h.daemon().wait_log("server tunnel connection failed: ", Millis{5000}), "%s",
              h.log().c_str());
    cr_assert_eq(h.log().find("server tunnel connection unauthorized"), std::string::npos);
    h.connect(h.pinned(0), 1);
    cr_assert(h.daemon().wait_log("server admission recovered: scope=quic-handshake-failure",
                                  Millis{5000}),
              "%s", h.log().c_str());
}

Test(tunnel_server, no_connected_client_drops_the_visitor_without_a_byte) {
    Harness h;
    auto visit = raw_visit("127.0.0.1", h.public_port(), capture_client_hello(kApp), Millis{10000});
    cr_assert(visit.connected);
    cr_assert(visit.reaction.closed);
    cr_assert(visit.reaction.received.empty());
    cr_assert(h.daemon().wait_log("server route unavailable: public-hostname=app.example.test "
                                  "reason=no-active-tunnel-connection",
                                  Millis{5000}),
              "%s", h.log().c_str());
}

Test(tunnel_server, busier_member_loses_placement) {
    Harness h(2);
    TestClient& a = h.connect(h.pinned(0), 1);
    TestClient& b = h.connect(h.pinned(1), 2);
    auto total = [&] { return a.streams.size() + b.streams.size(); };

    Visitor v1(h.public_port(), kApp);
    cr_assert(h.spin_until([&] { return total() == 1; }, Millis{10000}));
    TestClient& first = a.streams.empty() ? b : a;
    TestClient& second = &first == &a ? b : a;

    // The first member is busy: the next Visitor lands on the other one.
    Visitor v2(h.public_port(), kApp);
    cr_assert(h.spin_until([&] { return total() == 2; }, Millis{10000}));
    cr_assert_eq(second.streams.size(), 1u);

    // v1 ends (FIN both ways); its member's count drops, so with v2 still running the third
    // Visitor goes to the first member again.
    ClientStream& s1 = *first.streams[0];
    v1.raw.shutdown_write();
    cr_assert(h.spin_until([&] { return s1.fin; }, Millis{10000}));
    s1.stream->shutdown_write();
    cr_assert(h.spin_until(
                  [&] {
                      v1.poll_in();
                      return v1.eof && h.log().find("reason=done") != std::string::npos;
                  },
                  Millis{10000}),
              "%s", h.log().c_str());
    Visitor v3(h.public_port(), kApp);
    cr_assert(h.spin_until([&] { return total() == 3; }, Millis{10000}));
    cr_assert_eq(first.streams.size(), 2u);
    cr_assert_eq(second.streams.size(), 1u);
    cr_assert(h.log().find("route=app target=tunnel") != std::string::npos, "%s", h.log().c_str());
}

Test(tunnel_server, graceful_shutdown_closes_tunnels_cleanly_after_routed_streams) {
    Harness h(1, "30s");
    TestClient& c = h.connect(h.pinned(0), 1);
    Visitor v(h.public_port(), kApp);
    cr_assert(h.spin_until([&] { return !c.streams.empty(); }, Millis{10000}));
    ClientStream& s = last_stream(c);
    h.daemon().process().signal(SIGTERM);
    cr_assert(h.daemon().wait_log("server orderly shutdown started", Millis{5000}));
    // The routed stream keeps running: bytes still flow, and the connection stays up.
    std::string late = "still relayed";
    cr_assert(s.stream != nullptr);
    s.stream->write({reinterpret_cast<const uint8_t*>(late.data()), late.size()});
    cr_assert(h.spin_until(
        [&] {
            v.poll_in();
            return v.got == late;
        },
        Millis{10000}));
    cr_assert_not(c.closed);
    // New Tunnel connections are not admitted once shutdown began.
    TestClient& late_client = h.dial(h.pinned(0));
    cr_assert(h.spin_until([&] { return late_client.closed; }, Millis{10000}));
    cr_assert(late_client.info.application);
    cr_assert_str_eq(late_client.info.reason.c_str(), "server shutting down");
    cr_assert_not(c.closed);
    // The stream ends: the Server closes the Tunnel connection with application 0.
    v.raw.shutdown_write();
    cr_assert(h.spin_until([&] { return s.fin; }, Millis{10000}));
    s.stream->shutdown_write();
    cr_assert(h.spin_until([&] { return c.closed; }, Millis{10000}), "%s", h.log().c_str());
    cr_assert(c.info.application);
    cr_assert_eq(c.info.code, 0u);
    cr_assert_str_eq(c.info.reason.c_str(), "graceful shutdown");
    auto st = h.daemon().process().wait_exit(Millis{5000});
    cr_assert(st.has_value() && st->success(), "%s", h.log().c_str());
    cr_assert(h.log().find("server orderly shutdown closing tunnel connections: mode=graceful "
                           "active-tunnel-connections=1") != std::string::npos,
              "%s", h.log().c_str());
}

// Flow control both ways: the Client stops taking bytes until the Server's stream send buffer is
// full and the Visitor's socket backs up, then resumes; and the Visitor stops reading while the
// Client sends. Every byte arrives, in order.
Test(tunnel_server, bulk_both_ways_survives_full_buffers) {
    Harness h;
    TestClient& c = h.connect(h.pinned(0), 1);
    Visitor v(h.public_port(), kApp);
    cr_assert(h.spin_until([&] { return received_on_last(c) > 0; }, Millis{10000}));
    ClientStream& s = last_stream(c);
    size_t prefix = s.received.size();

    std::string up(32u << 20, '\0');
    for (size_t i = 0; i < up.size(); ++i) up[i] = static_cast<char>((i * 7919u) >> 3);
    size_t sent = 0;
    auto push = [&] {
        while (sent < up.size()) {
            ssize_t n =
                ::send(v.raw.fd(), up.data() + sent, up.size() - sent, MSG_DONTWAIT | MSG_NOSIGNAL);
            if (n <= 0) return;
            sent += static_cast<size_t>(n);
        }
    };
    // Phase 1: the Client takes nothing; the Visitor backs up once everything in between is full.
    s.paused = true;
    int64_t stalled_since = 0;
    h.spin_until(
        [&] {
            size_t before = sent;
            push();
            if (sent != before) stalled_since = core::now_ns();
            return stalled_since != 0 && core::now_ns() - stalled_since > 300'000'000;
        },
        Millis{20000});
    cr_assert_lt(sent, up.size(), "the Visitor never backed up");
    cr_assert_gt(sent, size_t{1} << 20);
    // Phase 2: the Client takes everything again.
    s.paused = false;
    cr_assert(s.stream != nullptr);
    s.stream->resume_read();
    cr_assert(h.spin_until(
                  [&] {
                      push();
                      return s.received.size() == prefix + up.size();
                  },
                  Millis{30000}),
              "got %zu of %zu", s.received.size() - prefix, up.size());
    cr_assert(s.received.compare(prefix, up.size(), up) == 0, "upload bytes differ");

    // Client -> Visitor while the Visitor does not read for a while.
    std::string down(32u << 20, '\0');
    for (size_t i = 0; i < down.size(); ++i) down[i] = static_cast<char>((i * 104729u) >> 5);
    size_t off = 0;
    auto write_down = [&] {
        if (s.stream != nullptr && off < down.size())
            off += s.stream->write(
                {reinterpret_cast<const uint8_t*>(down.data()) + off, down.size() - off});
    };
    int64_t quiet_until = core::now_ns() + 500'000'000;
    h.spin_until(
        [&] {
            write_down();
            return core::now_ns() > quiet_until;
        },
        Millis{2000});
    cr_assert_lt(off, down.size(), "nothing pushed back on the Client");
    cr_assert(h.spin_until(
                  [&] {
                      write_down();
                      v.poll_in();
                      return v.got.size() >= down.size();
                  },
                  Millis{30000}),
              "got %zu of %zu", v.got.size(), down.size());
    cr_assert(v.got == down, "download bytes differ");
}

// The real Client role: `runewarp client` with the pinned identity, exclusive CA trust and a
// passthrough Service with Backend PROXY emission; the Visitor's HTTPS reaches nginx, which sees
// the Visitor's own tuple. The Client dials `localhost` on a stock host's /etc/hosts: ::1 comes
// first and nothing answers there, so it must race on to 127.0.0.1 (every address is tried), for
// the QUIC dial and for the backend connect.
Test(tunnel_server, runewarp_client_serves_visitors_end_to_end) {
    NginxFixture backend({.name = "backend", .hostnames = {kApp}, .proxy_protocol = true});
    Harness h;
    std::string ini = "log-level = debug\n\n[client]\n";
    ini += "server-address = " + kServerName + ":" + std::to_string(h.tunnel_port()) + "\n";
    ini += "server-trust = ca-file\nserver-ca-file = " + (h.dir() / "cert/server-ca.crt") + "\n";
    ini += "identity-dir = " + (h.dir() / "identity-0") + "\n";
    ini += "\n[service \"app\"]\npublic-hostnames = " + kApp + "\n";
    // `localhost` too: nginx listens on 127.0.0.1 only, so the backend connect races on as well.
    ini += "backend-address = " + host_port("localhost", backend.proxy_port()) + "\n";
    ini += "proxy-protocol = v2\n";
    write_file(h.dir() / "client.ini", ini);
    write_file(h.dir() / "hosts", kStockHosts);
    Daemon client(DaemonOptions{
        .argv = with_hosts_file(h.dir() / "hosts",
                                {runewarp_binary(), "client", "-c", h.dir() / "client.ini"}),
        .env = material_env(h.dir()),
        .log_path = h.dir() / "client.log",
        .ready_log_line = "client tunnel connection connected",
    });
    cr_assert(h.daemon().wait_log("tunnel=app members=1", Millis{10000}), "%s", h.log().c_str());
    const std::string port = std::to_string(h.tunnel_port());
    std::string clog = client.log();
    size_t v6 = clog.find("connecting: server-address=localhost:" + port +
                          " resolved-address=[::1]:" + port);
    size_t won = clog.find("connected: server-address=localhost:" + port +
                           " resolved-address=127.0.0.1:" + port);
    cr_assert(v6 != std::string::npos && won != std::string::npos && v6 < won,
              "::1 is dialled first and 127.0.0.1 wins:\n%s", clog.c_str());

    Fd fd = tcp_connect("127.0.0.1", h.public_port());
    sockaddr_in local{};
    socklen_t len = sizeof(local);
    cr_assert_eq(::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&local), &len), 0);
    uint16_t visitor_port = ntohs(local.sin_port);
    HttpResponse r =
        https_get_over(std::move(fd), kApp, backend.ca_file(), "/proxy", {}, Millis{15000});
    cr_assert(r.ok, "%s\nserver:\n%s\nclient:\n%s", r.error.c_str(), h.log().c_str(),
              client.log().c_str());
    cr_assert_eq(r.status, 200);
    std::string want = "127.0.0.1:" + std::to_string(visitor_port) +
                       " 127.0.0.1:" + std::to_string(h.public_port()) + "\n";
    cr_assert_str_eq(r.body.c_str(), want.c_str());
    cr_assert(h.daemon().wait_log("route=app target=tunnel", Millis{5000}), "%s", h.log().c_str());

    // The Client leaving empties the pool: the next Visitor is dropped without a byte.
    client.stop();
    cr_assert(h.daemon().wait_log("tunnel=app members=0", Millis{10000}), "%s", h.log().c_str());
    auto visit = raw_visit("127.0.0.1", h.public_port(), capture_client_hello(kApp), Millis{10000});
    cr_assert(visit.reaction.closed);
    cr_assert(visit.reaction.received.empty());
}

// Fast shutdown (SIGQUIT) does not wait: the routed stream is reset, the Visitor is cut, and the
// Tunnel connection still gets a clean application close.
Test(tunnel_server, fast_shutdown_cuts_routed_streams_and_closes_cleanly) {
    Harness h;
    TestClient& c = h.connect(h.pinned(0), 1);
    Visitor v(h.public_port(), kApp);
    cr_assert(h.spin_until([&] { return received_on_last(c) > 0; }, Millis{10000}));
    ClientStream& s = last_stream(c);
    h.daemon().process().signal(SIGQUIT);
    cr_assert(h.spin_until([&] { return c.closed; }, Millis{10000}), "%s", h.log().c_str());
    cr_assert(s.reset || s.closed);
    cr_assert(c.info.application);
    cr_assert_eq(c.info.code, 0u);
    cr_assert_str_eq(c.info.reason.c_str(), "graceful shutdown");
    cr_assert(h.spin_until(
        [&] {
            v.poll_in();
            return v.eof;
        },
        Millis{10000}));
    auto st = h.daemon().process().wait_exit(Millis{5000});
    cr_assert(st.has_value() && st->success(), "%s", h.log().c_str());
    cr_assert(h.log().find("server orderly shutdown closing tunnel connections: mode=fast "
                           "active-tunnel-connections=1") != std::string::npos,
              "%s", h.log().c_str());
}

// Server certificate material that does not verify for the Server hostname is a startup error
// in the `config check` report format that names the material; nothing is missing, so there is
// no hint to make it.
Test(tunnel_server, unusable_server_certificate_fails_startup_naming_the_material) {
    TempDir d("runewarp-tunsrv");
    Identity id = make_identity(d, "identity");
    auto init = run({runewarp_binary(), "server", "cert", "init", "--hostname",
                     "other.example.test", "--dir", d / "cert"},
                    Millis{30000}, material_env(d));
    cr_assert(init.status.success(), "%s", init.err.c_str());
    std::string ini = "[server]\nhostname = " + kServerName + "\ncert-dir = " + (d / "cert") +
                      "\npublic-bind-address = " + host_port("127.0.0.1", free_port()) +
                      "\ntunnel-bind-address = " + host_port("127.0.0.1", free_port()) +
                      "\n\n[tunnel \"app\"]\npublic-hostnames = " + kApp +
                      "\nclient-identity = " + id.id + "\n";
    write_file(d / "server.ini", ini);
    auto r =
        run({runewarp_binary(), "server", "-c", d / "server.ini"}, Millis{20000}, material_env(d));
    cr_assert_not(r.timed_out);
    cr_assert_eq(r.status.code, 1, "%s", r.status.describe().c_str());
    std::string out = r.out + r.err;
    cr_assert(out.starts_with("invalid server config in " + (d / "server.ini") + ":\n"), "%s",
              out.c_str());
    cr_assert(out.find("- server.cert-dir: server certificate material in " + (d / "cert") +
                       " is not usable: ") != std::string::npos,
              "%s", out.c_str());
    cr_assert(out.find("does not verify against") != std::string::npos, "%s", out.c_str());
    cr_assert(out.find("Hint:") == std::string::npos, "%s", out.c_str());
}

// Two identities share one pool; when one member leaves, Visitors continue on the other, and
// the members count follows.
Test(tunnel_server, traffic_continues_on_the_remaining_member) {
    Harness h(2);
    TestClient& a = h.connect(h.pinned(0), 1);
    TestClient& b = h.connect(h.pinned(1), 2);
    a.conn->close(quic::kAppCloseCode, "graceful shutdown");
    cr_assert(h.daemon().wait_log("server tunnel connection closed: client-identity=" +
                                      h.pinned(0).id + " tunnel=app members=1",
                                  Millis{10000}),
              "%s", h.log().c_str());
    for (int i = 0; i < 3; ++i) {
        Visitor v(h.public_port(), kApp);
        cr_assert(h.spin_until([&] { return b.streams.size() == static_cast<size_t>(i + 1); },
                               Millis{10000}),
                  "%s", h.log().c_str());
    }
    cr_assert(a.streams.empty());
}

namespace {

// A Visitor of the many-connections test: its bytes, and the answer the in-process Client sends
// once the stream ended.
struct BatchVisitor {
    std::unique_ptr<RawConnection> raw;
    std::string sent;
    std::string got;
    bool eof = false;
};

// Lines of `log` holding both `a` and `b`.
size_t lines_with(const std::string& log, const std::string& a, const std::string& b) {
    size_t n = 0, start = 0;
    while (start < log.size()) {
        size_t end = log.find('\n', start);
        if (end == std::string::npos) end = log.size();
        std::string_view line(log.data() + start, end - start);
        if (line.find(a) != std::string_view::npos && line.find(b) != std::string_view::npos) ++n;
        start = end + 1;
    }
    return n;
}

std::string answer_for(const std::string& received) {
    // What a stream got decides the answer, so a mixed-up stream shows as a wrong answer.
    return "answer:" + std::to_string(std::hash<std::string>{}(received)) + ":" +
           std::to_string(received.size());
}

// Runs `count` Visitors through the Tunnel, `batch` at a time: each sends a ClientHello and a
// payload of its own, then ends; the in-process Clients answer each stream (after its FIN) with a
// digest of what the stream carried. Asserts every Visitor got the answer for its own bytes.
void visit_in_batches(Harness& h, size_t count, size_t batch, const std::string& round) {
    const std::string hello = capture_client_hello(kApp);
    std::set<ClientStream*> answered;
    for (size_t done = 0; done < count; done += batch) {
        std::vector<BatchVisitor> vs(std::min(batch, count - done));
        for (size_t i = 0; i < vs.size(); ++i) {
            BatchVisitor& v = vs[i];
            v.raw = std::make_unique<RawConnection>("127.0.0.1", h.public_port());
            std::string payload = round + ":" + std::to_string(done + i) + ":" +
                                  std::string(100 + (done + i) % 900, 'p');
            v.sent = expected_prefix(v.raw->local().second, h.public_port()) + hello + payload;
            cr_assert(v.raw->send(hello + payload));
            v.raw->shutdown_write();
            set_nonblocking(v.raw->fd());
        }
        bool ok = h.spin_until(
            [&] {
                for (const auto& c : h.clients()) {
                    for (auto& s : c->streams) {
                        if (!s->fin || s->stream == nullptr || answered.count(s.get())) continue;
                        std::string a = answer_for(s->received);
                        if (s->stream->write(
                                {reinterpret_cast<const uint8_t*>(a.data()), a.size()}) != a.size())
                            continue;  // a fresh stream's buffer takes it; retried otherwise
                        s->stream->shutdown_write();
                        answered.insert(s.get());
                    }
                }
                bool all = true;
                for (BatchVisitor& v : vs) {
                    if (!v.eof) drain(v.raw->fd(), v.got, v.eof);
                    all = all && v.eof;
                }
                return all;
            },
            Millis{30000});
        size_t open = 0;
        for (const BatchVisitor& v : vs) open += v.eof ? 0 : 1;
        cr_assert(ok, "round %s: %zu of %zu Visitors still open\n%s", round.c_str(), open,
                  vs.size(),
                  h.log().substr(h.log().size() > 4000 ? h.log().size() - 4000 : 0).c_str());
        for (size_t i = 0; i < vs.size(); ++i) {
            cr_assert_eq(vs[i].got, answer_for(vs[i].sent), "round %s Visitor %zu: wrong answer",
                         round.c_str(), done + i);
        }
    }
}

}  // namespace

// With two workers, Tunnel connections are spread over both (the tunnel UDP group, steered by a
// byte of the Server-chosen connection ID), every packet of a connection reaches the worker that
// owns it (a packet on the other one would get a stateless reset and kill the connection), and
// that still holds after every Client migrated to a new port. Visitors accepted by one worker
// reach streams of connections the other one owns.
Test(tunnel_server, two_workers_own_tunnel_connections_across_migration, .timeout = 300) {
    constexpr size_t kIdentities = 4, kPerIdentity = 50, kConns = kIdentities * kPerIdentity;
    constexpr size_t kVisitors = 2000, kBatch = 200;
    Harness h(kIdentities, "30s", "workers = 2\n");
    cr_assert(h.daemon().wait_log("server tunnel listener ready: bind-address=" +
                                      host_port("127.0.0.1", h.tunnel_port()) + " workers=2",
                                  Millis{5000}),
              "%s", h.log().c_str());
    for (size_t i = 0; i < kConns; ++i) h.dial(h.pinned(i % kIdentities));
    auto established = [&] {
        size_t n = 0;
        for (const auto& c : h.clients()) n += c->established && !c->closed ? 1 : 0;
        return n;
    };
    cr_assert(h.spin_until(
                  [&] {
                      return established() == kConns &&
                             h.log().find("tunnel=app members=" + std::to_string(kConns)) !=
                                 std::string::npos;
                  },
                  Millis{60000}),
              "%zu of %zu connections joined\n%s", established(), kConns, h.log().c_str());
    const std::string log = h.log();
    const std::string accepted = "server tunnel connection accepted";
    const size_t on0 = lines_with(log, accepted, " worker=0"),
                 on1 = lines_with(log, accepted, " worker=1");
    cr_log_info("tunnel connections: worker 0 owns %zu, worker 1 owns %zu", on0, on1);
    cr_assert_eq(on0 + on1, kConns, "%s", log.c_str());
    // Client Initials carry random connection IDs: 200 on one worker is (1/2)^199.
    cr_assert_gt(on0, 0u);
    cr_assert_gt(on1, 0u);

    visit_in_batches(h, kVisitors, kBatch, "first");
    size_t used = 0;
    for (const auto& c : h.clients()) used += c->streams.empty() ? 0 : 1;
    cr_assert_gt(used, kConns / 2, "only %zu connections carried streams", used);

    // Every Client moves to a new UDP port (connection migration), and traffic goes on.
    std::vector<bool> moved(kConns, false);
    cr_assert(h.spin_until(
                  [&] {
                      bool all = true;
                      for (size_t i = 0; i < kConns; ++i) {
                          TestClient& c = *h.clients()[i];
                          if (!moved[i] && c.conn != nullptr) moved[i] = quic::rebind(*c.conn).ok();
                          all = all && moved[i];
                      }
                      return all;
                  },
                  Millis{20000}),
              "not every connection could migrate");
    visit_in_batches(h, kVisitors, kBatch, "second");
    cr_assert_eq(established(), kConns, "a connection closed\n%s", h.log().c_str());
    cr_assert_eq(h.log().find("server tunnel connection dropped"), std::string::npos, "%s",
                 h.log().c_str());
    cr_assert_eq(h.log().find("server tunnel connection closed"), std::string::npos, "%s",
                 h.log().c_str());
}
