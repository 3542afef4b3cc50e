// The Server's certificate expiry warnings with the real binary: a tunnel certificate close to
// its notAfter is a WARN at startup, an expired one an ERROR, and the Server starts and serves
// either way (Clients pin the CA; the operator must see the problem, not lose the Server).
// Runs once per event-loop backend (RUNEWARP_EVENT_BACKEND).
#include <criterion/criterion.h>

#include <cstdint>
#include <ctime>
#include <optional>
#include <string>

#include "tests/support/daemon.hh"
#include "tests/support/files.hh"
#include "tests/support/net.hh"
#include "tests/support/process.hh"
#include "tests/support/tls.hh"

using namespace runewarp::test;

namespace {

const std::string kServerName = "tunnel.example.test";
constexpr std::time_t kDay = 86'400;

std::string rfc3339(std::time_t t) {
    std::tm tm{};
    ::gmtime_r(&t, &tm);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return buf;
}

// The line the Server writes about the certificate in `cert_dir`: a warning with the days left,
// or (no days) the error of an expired one.
std::string expiry_line(const std::string& cert_dir, std::time_t not_after,
                        std::optional<int> days_left) {
    std::string l =
        days_left ? " WARN server certificate expiring: " : "ERROR server certificate expired: ";
    l += "path=" + cert_dir + "/server.crt expires-at=" + rfc3339(not_after);
    l += days_left ? " days-left=" + std::to_string(*days_left) + ": " : ": Clients refuse it; ";
    return l +
           "renew it with `runewarp server cert renew`, then reload the server (`runewarp reload`) "
           "to load it\n";
}

// A Server with one Tunnel (so it loads cert-dir) on free loopback ports. Its certificate comes
// from `server cert init`, or is made by hand with the given validity.
class CertServer {
public:
    CertServer(const TempDir& dir, std::optional<Validity> leaf) : cert_dir_(dir / "cert") {
        if (leaf) {
            write_server_cert_dir(cert_dir_, kServerName, *leaf);
        } else {
            auto r = run({runewarp_binary(), "server", "cert", "init", "--hostname", kServerName,
                          "--dir", cert_dir_},
                         Millis{30000});
            cr_assert(r.status.success(), "cert init: %s %s", r.out.c_str(), r.err.c_str());
        }
        public_port_ = free_port();
        const std::uint16_t tunnel_port = free_port();
        std::string ini = "log-level = debug\n\n[server]\nhostname = " + kServerName + "\n";
        ini += "cert-dir = " + cert_dir_ + "\n";
        ini += "public-bind-address = 127.0.0.1:" + std::to_string(public_port_) + "\n";
        ini += "tunnel-bind-address = 127.0.0.1:" + std::to_string(tunnel_port) + "\n";
        ini += "\n[tunnel \"app\"]\npublic-hostnames = app.example.test\nclient-identities = " +
               std::string(64, 'a') + "\n";
        write_file(dir / "server.ini", ini);
        daemon_.emplace(DaemonOptions{
            .argv = {runewarp_binary(), "server", "-c", dir / "server.ini"},
            .log_path = dir / "server.log",
            .ready_log_line = "server tunnel listener ready",
        });
    }

    const std::string& cert_dir() const { return cert_dir_; }
    Daemon& daemon() { return *daemon_; }
    std::string log() const { return daemon_->log(); }

    // The event loop runs (so the startup check is behind us) and Visitors still get answers:
    // a non-TLS Visitor is dropped without a byte and its rejection is logged.
    void assert_serving() {
        RawVisit v = raw_visit("127.0.0.1", public_port_, "GET / HTTP/1.0\r\n\r\n", Millis{5000});
        cr_assert(v.connected, "%s", log().c_str());
        cr_assert(v.reaction.closed && v.reaction.received.empty(), "%s", log().c_str());
        cr_assert(daemon_->wait_log("reason=non-tls-client-hello", Millis{5000}), "%s",
                  log().c_str());
        cr_assert(daemon_->process().running());
    }

private:
    std::string cert_dir_;
    std::uint16_t public_port_ = 0;
    std::optional<Daemon> daemon_;
};

}  // namespace

TestSuite(server_cert, .timeout = 60);

Test(server_cert, a_certificate_within_21_days_of_expiry_is_a_startup_warning) {
    TempDir dir;
    const std::time_t now = std::time(nullptr);
    // 9 days and 23 hours left: 9 whole days.
    const Validity v{now - 80 * kDay, now + 10 * kDay - 3600};
    CertServer s(dir, v);
    const std::string line = expiry_line(s.cert_dir(), v.not_after, 9);
    cr_assert(s.daemon().wait_log(line, Millis{5000}), "%s", s.log().c_str());
    s.assert_serving();
    // One line per check: the next is due in a day.
    cr_assert_eq(s.log().find("server certificate expiring", s.log().find(line) + line.size()),
                 std::string::npos, "%s", s.log().c_str());
    cr_assert_eq(s.log().find("ERROR"), std::string::npos, "%s", s.log().c_str());
}

Test(server_cert, an_expired_certificate_is_an_error_and_the_server_still_serves) {
    TempDir dir;
    const std::time_t now = std::time(nullptr);
    const Validity v{now - 91 * kDay, now - kDay};
    CertServer s(dir, v);
    cr_assert(
        s.daemon().wait_log(expiry_line(s.cert_dir(), v.not_after, std::nullopt), Millis{5000}),
        "%s", s.log().c_str());
    s.assert_serving();
    cr_assert_eq(s.log().find("server certificate expiring"), std::string::npos, "%s",
                 s.log().c_str());
}

Test(server_cert, a_fresh_certificate_logs_no_expiry_line) {
    TempDir dir;
    CertServer s(dir, std::nullopt);
    s.assert_serving();
    cr_assert_eq(s.log().find("server certificate"), std::string::npos, "%s", s.log().c_str());
}
