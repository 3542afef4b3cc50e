// server-acme: the Server's tunnel certificate through ACME, end to end with the real binaries.
// pebble (the ACME test server) validates TLS-ALPN-01 for real by connecting to the Server's public
// listener (pebble's tlsPort is the Server's public port; its DNS resolves every name to
// 127.0.0.1); a real Client trusting pebble's issuing root connects, and curl Visitors reach an
// nginx TLS backend through the tunnel. An in-process QUIC probe (its own pinned identity, its
// own Tunnel) reads the certificate the Server presents to a new handshake.
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <gnutls/x509.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <ctime>
#include <optional>
#include <string>
#include <vector>

#include "core/clock.hh"
#include "core/worker.hh"
#include "quic/connection.hh"
#include "quic/listener.hh"
#include "quic/tls.hh"
#include "tests/integration/tunnel_support.hh"
#include "tests/support/pebble.hh"
#include "tests/support/tls.hh"

using namespace runewarp::test;
namespace core = runewarp::core;
namespace quic = runewarp::quic;

namespace {

const std::string kDirect = "direct.example.test";  // a direct route on the same listener
const std::string kProbe = "probe.example.test";    // the probe identity's Tunnel

// What a new Tunnel handshake saw: the Server's leaf (DER), or how the handshake failed.
struct Probe {
    bool established = false;
    bool closed = false;
    quic::CloseInfo info;
    std::string leaf_der;

    std::time_t not_after() const {
        gnutls_x509_crt_t crt = nullptr;
        cr_assert_eq(gnutls_x509_crt_init(&crt), 0);
        gnutls_datum_t d{reinterpret_cast<unsigned char*>(const_cast<char*>(leaf_der.data())),
                         static_cast<unsigned>(leaf_der.size())};
        cr_assert_eq(gnutls_x509_crt_import(crt, &d, GNUTLS_X509_FMT_DER), 0);
        std::time_t t = gnutls_x509_crt_get_expiration_time(crt);
        gnutls_x509_crt_deinit(crt);
        return t;
    }
};

struct ProbeHandler final : quic::ConnectionHandler {
    Probe* out = nullptr;
    quic::Connection* conn = nullptr;
    void on_established(quic::Connection& c) noexcept override {
        out->established = true;
        auto der = c.peer_certificate();
        out->leaf_der.assign(reinterpret_cast<const char*>(der.data()), der.size());
    }
    void on_stream_opened(quic::Connection&, quic::Stream& s) noexcept override { s.reset(); }
    void on_streams_available(quic::Connection&) noexcept override {}
    void on_closed(quic::Connection&, const quic::CloseInfo& i) noexcept override {
        out->closed = true;
        out->info = i;
    }
};

// One Tunnel handshake to 127.0.0.1:port as `identity_dir`'s identity, trusting `ca_file`
// exclusively; closed again at once.
Probe probe_tunnel(std::uint16_t port, const std::string& ca_file,
                   const std::string& identity_dir) {
    Probe p;
    auto w = core::Worker::create();
    cr_assert(w.ok());
    quic::ClientTlsConfig cc;
    cc.server_name = kServerName;
    cc.trust = quic::ServerTrust::ca_file;
    cc.ca_pem = read_file(ca_file);
    cc.cert_pem = read_file(identity_dir + "/client.crt");
    cc.key_pem = read_file(identity_dir + "/client.key");
    auto tls = quic::ClientTls::create(std::move(cc));
    cr_assert(tls.ok(), "%s", tls.ok() ? "" : tls.error().message.c_str());
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ProbeHandler h;
    h.out = &p;
    auto c = quic::dial(**w, reinterpret_cast<sockaddr*>(&sa), sizeof sa, **tls, h);
    cr_assert(c.ok(), "%s", c.ok() ? "" : c.error().message.c_str());
    auto done = (*w)->run_until([&] { return p.established || p.closed; },
                                core::now_ns() + 15 * core::kNsPerSec);
    cr_assert(done.ok() && *done, "the probe handshake neither finished nor failed");
    if (p.established && !p.closed) (*c)->close(quic::kAppCloseCode, "probe done");
    auto drained = (*w)->run_until([&] { return (*w)->attached_count() == 0; },
                                   core::now_ns() + 10 * core::kNsPerSec);
    cr_assert(drained.ok() && *drained, "probe sessions left behind");
    return p;
}

// A TCP port that accepts and never answers: pebble's validator connects here and hangs, so a
// challenge stays pending on the Server's board for a while.
class HeldListener {
public:
    HeldListener() {
        port_ = free_port();
        fd_ = Fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
        int one = 1;
        (void)::setsockopt(fd_.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        sockaddr_in sa{};
        sa.sin_family = AF_INET;
        sa.sin_port = htons(port_);
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        cr_assert_eq(::bind(fd_.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
        cr_assert_eq(::listen(fd_.get(), 16), 0);
    }
    std::uint16_t port() const { return port_; }
    // Waits for the validator's connection and keeps it open.
    bool wait_accept(Millis deadline) {
        pollfd p{fd_.get(), POLLIN, 0};
        if (::poll(&p, 1, static_cast<int>(deadline.count())) != 1) return false;
        int c = ::accept4(fd_.get(), nullptr, nullptr, SOCK_CLOEXEC);
        if (c < 0) return false;
        held_.emplace_back(c);
        return true;
    }

private:
    std::uint16_t port_ = 0;
    Fd fd_;
    std::vector<Fd> held_;
};

struct AcmeOptions {
    int validity_s = 0;            // pebble certificateValidityPeriod; 0: 5 years
    bool start_pebble = true;      // else the test starts it (the ACME server is down at first)
    bool hold_validation = false;  // pebble validates against a HeldListener, not the Server
};

// pebble, nginx, identities and configs for a Server with [server.acme] and its Client.
class AcmeSetup {
public:
    explicit AcmeSetup(AcmeOptions o) : opts_(o) {
        public_port_ = free_port();
        tunnel_port_ = free_port();
        std::uint16_t validated = public_port_;
        if (opts_.hold_validation) {
            held_.emplace();
            validated = held_->port();
        }
        pebble_.emplace(dir_ / "pebble",
                        PebbleOptions{.tls_port = validated, .validity_s = opts_.validity_s});
        if (opts_.start_pebble) pebble_->start();
        identity_ = identity_init("identity");
        probe_identity_ = identity_init("probe");
        make_dirs(state_dir());
        ::chmod(state_dir().c_str(), 0700);
        write_file(dir_ / "hosts", "127.0.0.1 " + kServerName + "\n");

        std::string ini = "log-level = debug\n\n[server]\nhostname = " + kServerName + "\n";
        ini += "public-bind-address = " + hp("127.0.0.1", public_port_) + "\n";
        ini += "tunnel-bind-address = " + hp("127.0.0.1", tunnel_port_) + "\n";
        ini += "graceful-shutdown-duration = 0s\n";
        ini += "\n[server.acme]\nemail = ops@example.test\n";
        ini += "state-dir = " + state_dir() + "\n";
        ini += "directory-url = " + pebble_->directory_url() + "\n";
        ini += "ca-file = " + pebble_->https_ca_file() + "\n";
        ini += "\n[tunnel \"app\"]\npublic-hostnames = " + kApp +
               "\nclient-identities = " + identity_ + "\n";
        ini += "\n[tunnel \"probe\"]\npublic-hostnames = " + kProbe +
               "\nclient-identities = " + probe_identity_ + "\n";
        ini += "\n[route \"direct\"]\npublic-hostnames = " + kDirect +
               "\nupstream-address = " + hp("127.0.0.1", backend_.port()) + "\n";
        write_file(dir_ / "server.ini", ini);
    }

    void start_server() {
        server_.emplace(DaemonOptions{
            .argv = {runewarp_binary(), "server", "-c", dir_ / "server.ini"},
            .env = env(),
            .log_path = dir_ / ("server-" + std::to_string(server_starts_++) + ".log"),
            .ready_log_line = "server tunnel listener ready",
        });
    }
    // Runs the Server in the foreground until it exits by itself (or the deadline kills it).
    RunResult run_server_to_exit(Millis deadline) {
        return run({runewarp_binary(), "server", "-c", dir_ / "server.ini"}, deadline, env());
    }
    // Stops the Server (SIGTERM): it must exit 0.
    void stop_server() {
        ExitStatus st = server_->stop();
        cr_assert(st.success(), "server exit: %s\n%s", st.describe().c_str(),
                  server_->log().c_str());
        server_.reset();
    }

    // The Client trusts pebble's issuing root only (fetched now: pebble makes one per start).
    void start_client() {
        root_file_ = pebble_->issuer_root_file();
        std::string cini = "log-level = debug\n\n[client]\n";
        cini += "server-address = " + hp(kServerName, tunnel_port_) + "\n";
        cini += "server-trust = ca-file\nserver-ca-file = " + root_file_ + "\n";
        cini += "identity-dir = " + (dir_ / "identity") + "\n";
        cini += "\n[service \"app\"]\npublic-hostnames = " + kApp +
                "\nbackend-address = " + hp("127.0.0.1", backend_.port()) + "\n";
        write_file(dir_ / "client.ini", cini);
        std::string cmd = "mount --bind '" + (dir_ / "hosts") + "' /etc/hosts && exec '" +
                          runewarp_binary() + "' client -c '" + (dir_ / "client.ini") + "'";
        client_.emplace(DaemonOptions{
            .argv = {"unshare", "-m", "sh", "-c", cmd},
            .env = env(),
            .log_path = dir_ / "client.log",
            .ready_log_line = "client tunnel connection connecting",
        });
    }
    void stop_client() {
        ExitStatus st = client_->stop();
        cr_assert(st.success(), "client exit: %s\n%s", st.describe().c_str(),
                  client_->log().c_str());
        client_.reset();
    }

    bool wait_server(const std::string& needle, std::size_t n = 1, Millis d = Millis{60000}) {
        return wait_until([&] { return count_of(server_->log(), needle) >= n; }, d);
    }
    bool wait_client(const std::string& needle, std::size_t n = 1, Millis d = Millis{60000}) {
        return wait_until([&] { return count_of(client_->log(), needle) >= n; }, d);
    }
    // Both logs and pebble's, for assertion messages.
    std::string logs() {
        std::string s = "--- server\n" + (server_ ? server_->log() : std::string("(stopped)"));
        if (client_) s += "\n--- client\n" + client_->log();
        s += "\n--- pebble\n" + pebble_->log();
        return s;
    }

    // A new Tunnel handshake as the probe identity (trusting pebble's root).
    Probe probe() {
        if (root_file_.empty()) root_file_ = pebble_->issuer_root_file();
        return probe_tunnel(tunnel_port_, root_file_, dir_ / "probe");
    }

    HttpsTarget tunnel_target() const {
        return {kApp, public_port_, "127.0.0.1", backend_.ca_file()};
    }
    HttpsTarget direct_target() const {
        return {kDirect, public_port_, "127.0.0.1", backend_.ca_file()};
    }
    std::string state_dir() const { return dir_ / "acme-state"; }
    std::string out(const std::string& name) const { return dir_ / name; }
    std::uint16_t public_port() const { return public_port_; }
    std::uint16_t server_tunnel_port() const { return tunnel_port_; }
    Pebble& pebble() { return *pebble_; }
    NginxFixture& backend() { return backend_; }
    Daemon& server() { return *server_; }
    Daemon& client() { return *client_; }
    HeldListener& held() { return *held_; }

private:
    std::vector<std::string> env() const {
        return {"XDG_CONFIG_HOME=" + (dir_ / "xdg-config"), "XDG_DATA_HOME=" + (dir_ / "xdg-data"),
                "XDG_STATE_HOME=" + (dir_ / "xdg-state"), "RUNEWARP_SERVER_HOSTNAME="};
    }
    std::string identity_init(const std::string& name) {
        std::string d = dir_ / name;
        auto r = run({runewarp_binary(), "client", "identity", "init", "--dir", d}, Millis{30000},
                     env());
        cr_assert(r.status.success(), "identity init: %s %s", r.out.c_str(), r.err.c_str());
        std::string id = read_file(d + "/client-identity.txt");
        while (!id.empty() && (id.back() == '\n' || id.back() == ' ')) id.pop_back();
        return id;
    }

    AcmeOptions opts_;
    TempDir dir_;
    NginxFixture backend_{NginxOptions{.hostnames = {kApp, kDirect}}};
    std::optional<HeldListener> held_;
    std::optional<Pebble> pebble_;
    std::string identity_;
    std::string probe_identity_;
    std::string root_file_;
    std::uint16_t public_port_ = 0;
    std::uint16_t tunnel_port_ = 0;
    int server_starts_ = 0;
    std::optional<Daemon> server_;
    std::optional<Daemon> client_;
};

void download_ok(const HttpsTarget& t, const std::string& name, const std::string& sha,
                 const std::string& out, const std::string& context) {
    CurlResult r = curl_download(t, "/files/" + name, out, Millis{60000});
    cr_assert(r.ok(), "curl %s: exit %s http %d: %s\n%s", t.host.c_str(),
              r.status.describe().c_str(), r.http_code, r.stderr_text.c_str(), context.c_str());
    cr_assert_str_eq(r.sha256.c_str(), sha.c_str());
}

}  // namespace

// The Server gets its certificate through its own public listener (pebble validates TLS-ALPN-01
// for real), serves it to the Tunnel, and a Client trusting pebble's root carries a Visitor.
Test(server_acme, issues_through_the_public_listener_and_serves_the_tunnel, .timeout = 180) {
    AcmeSetup s(AcmeOptions{});
    std::string sha = s.backend().add_random_file("one.bin", 1 << 20, 11);
    s.start_server();
    cr_assert(s.wait_server("server acme first issuance starting"), "%s", s.logs().c_str());
    // The public port is not 443: the operator is told where validation must arrive.
    cr_assert(s.wait_server("server acme challenge reachability: bind-address=127.0.0.1:" +
                            std::to_string(s.public_port())),
              "%s", s.logs().c_str());
    cr_assert(s.wait_server("server acme certificate issued"), "%s", s.logs().c_str());
    std::string log = s.server().log();
    cr_assert_neq(log.find("server acme challenge answered: server-hostname=" + kServerName),
                  std::string::npos, "%s", s.logs().c_str());
    cr_assert(file_exists(s.state_dir() + "/account.key"), "%s", s.logs().c_str());

    s.start_client();
    cr_assert(s.wait_client("client ready"), "%s", s.logs().c_str());
    cr_assert(s.wait_server("server tunnel connection accepted"), "%s", s.logs().c_str());
    download_ok(s.tunnel_target(), "one.bin", sha, s.out("via-tunnel.bin"), s.logs());
    download_ok(s.direct_target(), "one.bin", sha, s.out("direct.bin"), s.logs());

    // A new handshake presents the issued certificate, chained to pebble's root.
    Probe p = s.probe();
    cr_assert(p.established, "%s", s.logs().c_str());
    cr_assert_gt(p.not_after(), std::time(nullptr) + 86400 * 365);

    s.stop_client();
    s.stop_server();
}

// No challenge pending: a ClientHello for the Server hostname offering acme-tls/1 is dropped
// without a byte (DEBUG reason), and other Visitors are unaffected.
Test(server_acme, acme_tls_without_a_pending_challenge_is_dropped, .timeout = 180) {
    AcmeSetup s(AcmeOptions{});
    std::string sha = s.backend().add_random_file("one.bin", 256 << 10, 12);
    s.start_server();
    cr_assert(s.wait_server("server acme certificate issued"), "%s", s.logs().c_str());

    std::string hello = capture_client_hello(kServerName, {"acme-tls/1"});
    for (int i = 0; i < 3; ++i) {
        RawVisit v = raw_visit("127.0.0.1", s.public_port(), hello, Millis{3000});
        cr_assert(v.connected);
        cr_assert(v.reaction.closed, "not dropped");
        cr_assert(v.reaction.received.empty(), "%zu bytes written", v.reaction.received.size());
        download_ok(s.direct_target(), "one.bin", sha, s.out("direct.bin"), s.logs());
    }
    cr_assert(s.wait_server("reason=acme-challenge-not-pending", 3), "%s", s.logs().c_str());
    // Other ALPNs for the Server hostname stay refused as before.
    RawVisit h2 = raw_visit("127.0.0.1", s.public_port(), capture_client_hello(kServerName, {"h2"}),
                            Millis{3000});
    cr_assert(h2.reaction.closed && h2.reaction.received.empty());
    cr_assert(s.wait_server("reason=non-acme-server-hostname"), "%s", s.logs().c_str());
    std::string log = s.server().log();
    cr_assert_eq(log.find("server visitor intake rejected: reason=acme"), std::string::npos, "%s",
                 log.c_str());
    s.stop_server();
}

// While a challenge is pending (pebble's validator hangs on a held port), an acme-tls/1 Visitor
// gets the challenge handshake; one that stalls after its ClientHello is closed at 5 s.
Test(server_acme, stalled_challenge_handshake_is_closed_at_the_deadline, .timeout = 180) {
    AcmeSetup s(AcmeOptions{.hold_validation = true});
    s.start_server();
    // The manager publishes the challenge before asking pebble to validate it.
    cr_assert(s.held().wait_accept(Millis{60000}), "pebble never validated\n%s", s.logs().c_str());
    RawConnection c("127.0.0.1", s.public_port());
    auto sent = std::chrono::steady_clock::now();
    cr_assert(c.send(capture_client_hello(kServerName, {"acme-tls/1"})));
    std::string got = c.recv_at_least(5, Millis{3000});
    cr_assert_geq(got.size(), 5u, "no handshake answer\n%s", s.logs().c_str());
    cr_assert_eq(static_cast<unsigned char>(got[0]), 0x16u, "not a TLS handshake record");
    // The Visitor never finishes the handshake.
    PeerReaction r = c.wait_closed(Millis{10000});
    auto took = std::chrono::duration_cast<Millis>(std::chrono::steady_clock::now() - sent);
    cr_assert(r.closed, "a stalled handshake was not closed\n%s", s.logs().c_str());
    cr_assert_geq(took.count(), 4500, "closed after %lld ms", static_cast<long long>(took.count()));
    cr_assert_leq(took.count(), 7500, "closed after %lld ms", static_cast<long long>(took.count()));
    cr_assert(s.wait_server("reason=acme-tls-handshake-timeout"), "%s", s.logs().c_str());

    // Still no certificate (validation never completes): a real Client's handshakes fail
    // cleanly and it keeps retrying with its backoff; the Server stays up.
    s.start_client();
    cr_assert(s.wait_client("client tunnel connection failed", 2), "%s", s.logs().c_str());
    cr_assert_eq(count_of(s.client().log(), "client ready"), 0u, "%s", s.logs().c_str());
    cr_assert(s.server().process().running(), "%s", s.logs().c_str());
    s.stop_client();
    s.stop_server();
}

// The ACME server is down at startup: direct routes work, the manager fails and backs off, and
// Tunnel handshakes fail cleanly; once pebble is up the certificate is issued and the tunnel
// carries Visitors.
Test(server_acme, acme_server_down_at_startup, .timeout = 240) {
    AcmeSetup s(AcmeOptions{.start_pebble = false});
    std::string sha = s.backend().add_random_file("one.bin", 512 << 10, 13);
    s.start_server();
    cr_assert(s.wait_server("server acme failed"), "%s", s.logs().c_str());
    download_ok(s.direct_target(), "one.bin", sha, s.out("direct.bin"), s.logs());

    // No certificate yet: a Tunnel handshake fails with a TLS alert, the Server keeps serving.
    {
        TempDir any;
        TlsMaterial m = make_tls_material(any.path(), {kServerName});
        Probe p = probe_tunnel(s.server_tunnel_port(), m.ca_file, s.out("probe"));
        cr_assert(!p.established);
        cr_assert(p.closed);
        cr_assert_eq(p.info.kind, quic::CloseInfo::Kind::remote);
        cr_assert(!p.info.application);
        cr_assert_eq(p.info.code & ~0xffull, 0x100ull, "code 0x%llx",
                     static_cast<unsigned long long>(p.info.code));
    }
    cr_assert(s.wait_server("no Server certificate yet (ACME issuance pending)"), "%s",
              s.logs().c_str());
    download_ok(s.direct_target(), "one.bin", sha, s.out("direct2.bin"), s.logs());

    s.pebble().start();
    cr_assert(s.wait_server("server acme certificate issued", 1, Millis{90000}), "%s",
              s.logs().c_str());
    s.start_client();
    cr_assert(s.wait_client("client ready"), "%s", s.logs().c_str());
    download_ok(s.tunnel_target(), "one.bin", sha, s.out("via-tunnel.bin"), s.logs());
    s.stop_client();
    s.stop_server();
}

// A restart serves the cached certificate at once and keeps the account: no new issuance, even
// with the ACME server gone.
Test(server_acme, restart_reuses_the_cached_account_and_certificate, .timeout = 180) {
    AcmeSetup s(AcmeOptions{});
    std::string sha = s.backend().add_random_file("one.bin", 256 << 10, 14);
    s.start_server();
    cr_assert(s.wait_server("server acme certificate issued"), "%s", s.logs().c_str());
    Probe first = s.probe();
    cr_assert(first.established, "%s", s.logs().c_str());
    s.stop_server();
    std::string account = read_file(s.state_dir() + "/account.key");
    (void)s.pebble().issuer_root_file();  // fetched while pebble runs
    s.pebble().stop();

    s.start_server();
    cr_assert(s.wait_server("server acme cached certificate ready"), "%s", s.logs().c_str());
    std::string log = s.server().log();
    cr_assert_eq(log.find("first issuance starting"), std::string::npos, "%s", log.c_str());
    cr_assert_neq(log.find("renewal=not-due"), std::string::npos, "%s", log.c_str());
    s.start_client();
    cr_assert(s.wait_client("client ready", 1, Millis{10000}), "%s", s.logs().c_str());
    cr_assert_eq(count_of(s.client().log(), "client tunnel connection failed"), 0u, "%s",
                 s.logs().c_str());
    download_ok(s.tunnel_target(), "one.bin", sha, s.out("via-tunnel.bin"), s.logs());
    Probe again = s.probe();
    cr_assert(again.established);
    cr_assert(again.leaf_der == first.leaf_der, "the cached certificate is served");
    cr_assert(read_file(s.state_dir() + "/account.key") == account, "the account key changed");
    s.stop_client();
    s.stop_server();
}

// Renewal swaps the certificate under live connections: a download through a Tunnel connection
// made before the renewal finishes after it, and a new handshake sees the renewed certificate.
Test(server_acme, renewal_keeps_live_connections_and_serves_the_new_certificate, .timeout = 300) {
    AcmeSetup s(AcmeOptions{.validity_s = 40});
    // /slow/ sends 32 KiB/s: 1.5 MiB takes about 48 s, across the renewal at ~27 s.
    std::string sha = s.backend().add_random_file("long.bin", 1536 << 10, 15);
    s.start_server();
    cr_assert(s.wait_server("server acme certificate issued"), "%s", s.logs().c_str());
    s.start_client();
    cr_assert(s.wait_client("client ready"), "%s", s.logs().c_str());
    Probe before = s.probe();
    cr_assert(before.established, "%s", s.logs().c_str());

    CurlDownload dl(s.tunnel_target(), "/slow/long.bin", s.out("long.bin"), Millis{150000});
    cr_assert(s.wait_server("server acme certificate renewed", 1, Millis{90000}), "%s",
              s.logs().c_str());
    // The manager logs the renewal, then hands the certificate to the loop, which installs it.
    cr_assert(s.wait_server("server acme certificate installed", 2, Millis{10000}), "%s",
              s.logs().c_str());
    cr_assert(!dl.finish(Millis{0}).has_value(), "the download ended before the renewal");
    Probe after = s.probe();
    cr_assert(after.established, "%s", s.logs().c_str());
    cr_assert(after.leaf_der != before.leaf_der, "the renewed certificate is not served");
    cr_assert_neq(after.not_after(), before.not_after());

    auto r = dl.finish(Millis{120000});
    cr_assert(r.has_value(), "the download did not finish");
    cr_assert(r->ok(), "curl: exit %s http %d: %s\n%s", r->status.describe().c_str(), r->http_code,
              r->stderr_text.c_str(), s.logs().c_str());
    cr_assert_str_eq(r->sha256.c_str(), sha.c_str());
    // The Client never had to reconnect.
    cr_assert_eq(count_of(s.client().log(), "client ready"), 1u, "%s", s.logs().c_str());
    cr_assert_eq(count_of(s.server().log(), "server tunnel connection dropped"), 0u, "%s",
                 s.logs().c_str());
    s.stop_client();
    s.stop_server();
}

// The manager cannot go on (its account key is unusable): ERROR, fast shutdown, exit 1.
Test(server_acme, a_dead_manager_stops_the_server_with_exit_1, .timeout = 120) {
    AcmeSetup s(AcmeOptions{});
    write_file(s.state_dir() + "/account.key", "not a key\n", 0600);
    RunResult r = s.run_server_to_exit(Millis{30000});
    std::string out = r.out + r.err;
    cr_assert(r.status.exited, "%s\n%s", r.status.describe().c_str(), out.c_str());
    cr_assert_eq(r.status.code, 1, "%s", out.c_str());
    // It was serving when the manager died, and stopped because of it.
    cr_assert_neq(out.find("server public listener ready"), std::string::npos, "%s", out.c_str());
    cr_assert_neq(out.find("ERROR server acme stopped"), std::string::npos, "%s", out.c_str());
    cr_assert_neq(out.find("server orderly shutdown started: mode=fast"), std::string::npos, "%s",
                  out.c_str());
}
