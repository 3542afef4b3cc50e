// Client ACME end to end with the real binary: `runewarp server` (manual tunnel certificate) and
// `runewarp client` with a terminating Service for other.example.test in front of a plain-HTTP
// nginx and [client.acme] pointing at pebble. pebble resolves every name to 127.0.0.1 and its
// TLS-ALPN-01 validator dials the Server's public port, so the validation travels the Visitor
// path: Server, tunnel, Client, which answers it without touching the backend. The Visitors
// (curl, gnutls-cli) trust only pebble's issuing root. app.example.test stays a passthrough
// Service to a TLS nginx throughout.
#include <criterion/criterion.h>
#include <gnutls/x509.h>

#include <csignal>
#include <optional>
#include <string>
#include <vector>

#include "tests/integration/tunnel_support.hh"
#include "tests/support/pebble.hh"

using namespace runewarp::test;

namespace {

const std::string kTerm = kOther;  // the terminating hostname, certified through ACME

// The Tunnel with the passthrough Service (app.example.test) and the terminating one
// (other.example.test, plaintext nginx), pebble validating through the Server's public port,
// and the Client's [client.acme] pointing at it. Nothing runs ACME until the test starts
// pebble and the Client.
struct AcmeSetup {
    explicit AcmeSetup(int validity_s = 0, bool dead_second_address = false)
        : plain(NginxOptions{.name = "plain", .hostnames = {kTerm}, .plaintext = true}),
          backend_address(hp("127.0.0.1", plain.plain_port())),
          tunnel(Tunnel::Options{
              .dead_second_address = dead_second_address,
              .start_clients = false,
              .services_extra = "\n[service \"term\"]\npublic-hostnames = " + kTerm +
                                "\ntls-mode = terminate\nbackend-address = " + backend_address +
                                "\n",
          }),
          pebble(tunnel.out("pebble"),
                 PebbleOptions{.tls_port = tunnel.public_port(), .validity_s = validity_s}) {
        make_dirs(state_dir());
        tunnel.set_client_extra("\n[client.acme]\nemail = ops@example.test\nstate-dir = " +
                                state_dir() + "\ndirectory-url = " + pebble.directory_url() +
                                "\nca-file = " + pebble.https_ca_file() + "\n");
    }

    std::string state_dir() const { return tunnel.out("acme-state"); }
    // The terminating hostname, for a Visitor trusting only pebble's issuing root (pebble must
    // run: the root is fetched from it).
    HttpsTarget term() {
        return {kTerm, tunnel.public_port(), "127.0.0.1", pebble.issuer_root_file()};
    }
    void start_client() {
        tunnel.start_client(0);
        cr_assert(tunnel.wait_client("client ready: server-address=" + kServerName), "%s",
                  tunnel.client_log().c_str());
    }
    // The Client logged the issuance and swapped the certificate in for new streams.
    void wait_installed(std::size_t n = 1) {
        cr_assert(tunnel.wait_client("client acme certificate installed: public-hostname=" + kTerm,
                                     n, Millis{90000}),
                  "%s\n--- pebble\n%s", tunnel.client_log().c_str(), pebble.log().c_str());
    }
    // The passthrough Service answers (its own TLS nginx).
    void check_passthrough(const std::string& name) {
        CurlResult r = curl_download(tunnel.target(), "/name", tunnel.out(name), Millis{30000});
        cr_assert(r.ok(), "passthrough: %s %s", r.status.describe().c_str(), r.stderr_text.c_str());
        cr_assert_eq(read_file(tunnel.out(name)), "backend " + kApp + "\n");
    }
    // Every request the plaintext backend saw is one of the test's own (no TLS bytes arrived,
    // which nginx would log as a 400): the validation never reached it.
    std::size_t backend_requests() {
        const std::string path = plain.access_log();
        const std::string log = file_exists(path) ? read_file(path) : "";
        std::size_t lines = count_of(log, "\n");
        cr_assert_eq(count_of(log, "\"GET /"), lines, "%s", log.c_str());
        cr_assert_eq(count_of(log, "\" 400 "), 0u, "%s", log.c_str());
        return lines;
    }

    NginxFixture plain;
    std::string backend_address;
    Tunnel tunnel;
    Pebble pebble;
};

// The DER of the certificate a Visitor gets for kTerm on the public port (gnutls-cli verifying
// against `ca_file`); empty when the handshake failed.
std::string served_cert_der(AcmeSetup& s, const std::string& ca_file, const std::string& name) {
    const std::string saved = s.tunnel.out(name + ".pem");
    RunResult r = run({"gnutls-cli", "127.0.0.1", "--port", std::to_string(s.tunnel.public_port()),
                       "--sni-hostname", kTerm, "--verify-hostname", kTerm, "--x509cafile", ca_file,
                       "--save-cert", saved},
                      Millis{15000});
    if (!r.status.success() || !file_exists(saved)) return {};
    std::string pem = read_file(saved);
    gnutls_x509_crt_t crt = nullptr;
    gnutls_x509_crt_init(&crt);
    gnutls_datum_t in{reinterpret_cast<unsigned char*>(pem.data()),
                      static_cast<unsigned>(pem.size())};
    std::string der;
    gnutls_datum_t out{};
    if (gnutls_x509_crt_import(crt, &in, GNUTLS_X509_FMT_PEM) >= 0 &&
        gnutls_x509_crt_export2(crt, GNUTLS_X509_FMT_DER, &out) >= 0) {
        der.assign(reinterpret_cast<const char*>(out.data), out.size);
        gnutls_free(out.data);
    }
    gnutls_x509_crt_deinit(crt);
    return der;
}

}  // namespace

Test(client_acme, fails_closed_until_issued_through_the_tunnel_then_serves_https, .timeout = 240) {
    AcmeSetup s;
    // pebble is down: the first order cannot even start, so the hostname has no certificate.
    s.start_client();
    cr_assert(s.tunnel.wait_client("client acme first issuance starting: public-hostname=" + kTerm +
                                   " reason=no-ready-cached-certificate"),
              "%s", s.tunnel.client_log().c_str());
    cr_assert(s.tunnel.wait_client("client acme failed: public-hostname=" + kTerm), "%s",
              s.tunnel.client_log().c_str());

    // A Visitor now: the handshake fails closed (curl 35), with the refusal, not a timeout.
    HttpsTarget early{kTerm, s.tunnel.public_port(), "127.0.0.1", s.plain.ca_file()};
    CurlResult refused = curl_download(early, "/name", s.tunnel.out("early.txt"), Millis{20000});
    cr_assert_not(refused.timed_out);
    cr_assert(refused.status.exited && refused.status.code == 35, "%s %s",
              refused.status.describe().c_str(), refused.stderr_text.c_str());
    cr_assert(s.tunnel.wait_client("client route unavailable: public-hostname=" + kTerm +
                                       " backend-address=" + s.backend_address +
                                       " reason=tls-config-missing",
                                   1, Millis{5000}),
              "%s", s.tunnel.client_log().c_str());
    cr_assert_eq(s.backend_requests(), 0u);
    s.check_passthrough("app-before.txt");

    // pebble comes up: the manager's next attempt orders, pebble validates through the tunnel.
    s.pebble.start();
    cr_assert(s.tunnel.wait_client("client acme certificate issued: public-hostname=" + kTerm, 1,
                                   Millis{90000}),
              "%s\n--- pebble\n%s", s.tunnel.client_log().c_str(), s.pebble.log().c_str());
    s.wait_installed();
    cr_assert(s.tunnel.wait_client("client acme challenge answered: public-hostname=" + kTerm),
              "%s", s.tunnel.client_log().c_str());

    const std::string sha = s.plain.add_random_file("f.bin", 1u << 20, 21);
    CurlResult d = curl_download(s.term(), "/files/f.bin", s.tunnel.out("f.bin"), Millis{60000});
    cr_assert(d.ok(), "curl: %s http %d %s\n%s", d.status.describe().c_str(), d.http_code,
              d.stderr_text.c_str(), s.tunnel.client_log().c_str());
    cr_assert_eq(d.sha256, sha);
    // The validation connections ended at the Client: the backend saw the download only.
    cr_assert_eq(s.backend_requests(), 1u);

    // acme-tls/1 with no challenge pending: refused like a hostname without a certificate
    // (handshake_failure and a clean close, well before any deadline), backend untouched.
    RunResult stray =
        run({"gnutls-cli", "127.0.0.1", "--port", std::to_string(s.tunnel.public_port()),
             "--sni-hostname", kTerm, "--alpn", "acme-tls/1", "--insecure"},
            Millis{15000});
    cr_assert_not(stray.timed_out);
    cr_assert_not(stray.status.success(), "%s %s", stray.out.c_str(), stray.err.c_str());
    cr_assert((stray.out + stray.err).find("Received alert [40]") != std::string::npos, "%s %s",
              stray.out.c_str(), stray.err.c_str());
    cr_assert(s.tunnel.wait_client("client route unavailable: public-hostname=" + kTerm +
                                       " backend-address=" + s.backend_address +
                                       " reason=acme-challenge-not-pending",
                                   1, Millis{5000}),
              "%s", s.tunnel.client_log().c_str());
    cr_assert_eq(s.backend_requests(), 1u);
    s.check_passthrough("app-after.txt");

    // The certificate is in the state directory for the next start.
    cr_assert_neq(
        s.tunnel.client_log().find("client acme certificate issued: public-hostname=" + kTerm),
        std::string::npos);
    s.tunnel.stop_client_cleanly();
}

Test(client_acme, a_restart_serves_the_cached_certificate_without_a_new_order, .timeout = 240) {
    AcmeSetup s;
    s.pebble.start();
    const std::string root = s.pebble.issuer_root_file();
    s.start_client();
    s.wait_installed();
    const std::string issued = served_cert_der(s, root, "issued");
    cr_assert_neq(issued, "", "no certificate served after issuance\n%s",
                  s.tunnel.client_log().c_str());
    s.tunnel.stop_client_cleanly();

    // The ACME server is gone: only the cache can serve.
    s.pebble.stop();
    s.start_client();
    const std::string log = s.tunnel.client_log();
    cr_assert_neq(log.find("client acme cached certificate ready: public-hostname=" + kTerm),
                  std::string::npos, "%s", log.c_str());
    cr_assert_neq(log.find("renewal=not-due"), std::string::npos, "%s", log.c_str());
    cr_assert_eq(log.find("first issuance starting"), std::string::npos, "%s", log.c_str());
    cr_assert_eq(log.find("renewal starting"), std::string::npos, "%s", log.c_str());

    // At once (no wait for any manager): the same certificate, and the backend behind it.
    cr_assert(served_cert_der(s, root, "cached") == issued, "another certificate after restart\n%s",
              s.tunnel.client_log().c_str());
    const std::string sha = s.plain.add_random_file("g.bin", 256u << 10, 22);
    CurlResult d = curl_download({kTerm, s.tunnel.public_port(), "127.0.0.1", root}, "/files/g.bin",
                                 s.tunnel.out("g.bin"), Millis{30000});
    cr_assert(d.ok(), "curl: %s %s", d.status.describe().c_str(), d.stderr_text.c_str());
    cr_assert_eq(d.sha256, sha);
    s.check_passthrough("app.txt");
    cr_assert_eq(s.tunnel.client_log().find("client acme certificate issued"), std::string::npos);

    // SIGHUP has no public-cert-dir to read: the ACME certificate stays.
    cr_assert(s.tunnel.client().process().signal(SIGHUP));
    cr_assert(s.tunnel.wait_client("client reload requested"), "%s", s.tunnel.client_log().c_str());
    cr_assert(served_cert_der(s, root, "after-sighup") == issued, "%s",
              s.tunnel.client_log().c_str());
    s.tunnel.stop_client_cleanly();
}

Test(client_acme, a_dead_manager_ends_the_client_with_exit_1, .timeout = 120) {
    AcmeSetup s;
    s.pebble.start();
    // An account key the manager cannot use: its thread stops, and the Client with it.
    write_file(s.state_dir() + "/account.key", "not a key\n", 0600);
    // Run directly: it may end before a Daemon would count it as started.
    RunResult r =
        run({runewarp_binary(), "client", "-c", s.tunnel.write_client_config(0)}, Millis{30000});
    const std::string log = r.out + r.err;
    cr_assert_not(r.timed_out, "the Client kept running\n%s", log.c_str());
    cr_assert(r.status.exited && r.status.code == 1, "%s\n%s", r.status.describe().c_str(),
              log.c_str());
    cr_assert_neq(log.find("ERROR client acme stopped: public-hostname=" + kTerm),
                  std::string::npos, "%s", log.c_str());
    cr_assert_neq(log.find("client instance graceful shutdown started"), std::string::npos, "%s",
                  log.c_str());
    cr_assert_eq(log.find("Sanitizer"), std::string::npos, "%s", log.c_str());
}

Test(client_acme, renewal_keeps_a_download_in_flight_and_new_connections_get_the_new_certificate,
     .timeout = 300) {
    // 30 s certificates: renewal two thirds in, about 20 s after issuance.
    AcmeSetup s(30);
    s.pebble.start();
    const std::string root = s.pebble.issuer_root_file();
    s.start_client();
    s.wait_installed();
    const std::string first = served_cert_der(s, root, "first");
    cr_assert_neq(first, "", "%s", s.tunnel.client_log().c_str());

    // 1 MiB at 32 KiB/s: about 32 s in flight, across the renewal.
    const std::string slow_sha = s.plain.add_random_file("slow.bin", 1u << 20, 23);
    CurlDownload slow(s.term(), "/slow/slow.bin", s.tunnel.out("slow.bin"), Millis{120000});
    cr_assert(wait_until([&] { return file_size(s.tunnel.out("slow.bin")) > 0; }, Millis{10000}),
              "the download did not start\n%s", s.tunnel.client_log().c_str());

    cr_assert(s.tunnel.wait_client("client acme certificate renewed: public-hostname=" + kTerm, 1,
                                   Millis{60000}),
              "%s\n--- pebble\n%s", s.tunnel.client_log().c_str(), s.pebble.log().c_str());
    s.wait_installed(2);
    cr_assert_not(slow.finish(Millis{0}).has_value(), "the download ended before the renewal");

    // A new connection gets the renewed certificate.
    const std::string second = served_cert_der(s, root, "second");
    cr_assert_neq(second, "", "%s", s.tunnel.client_log().c_str());
    cr_assert(second != first, "new connections still get the first certificate");

    // The expiry check covers ACME certificates (30 s left is well within 21 days), and the
    // SIGHUP that runs it keeps them.
    cr_assert(s.tunnel.client().process().signal(SIGHUP));
    cr_assert(s.tunnel.wait_client("client certificate expiring: public-hostname=" + kTerm +
                                   " path=" + s.state_dir()),
              "%s", s.tunnel.client_log().c_str());
    cr_assert(s.tunnel.wait_client("the client renews it through ACME"), "%s",
              s.tunnel.client_log().c_str());
    cr_assert_neq(served_cert_der(s, root, "after-sighup"), "", "%s",
                  s.tunnel.client_log().c_str());

    std::optional<CurlResult> d = slow.finish(Millis{90000});
    cr_assert(d.has_value(), "the download in flight did not finish");
    cr_assert(d->ok(), "curl: %s http %d %s", d->status.describe().c_str(), d->http_code,
              d->stderr_text.c_str());
    cr_assert_eq(d->sha256, slow_sha);
    s.check_passthrough("app.txt");
    s.tunnel.stop_client_cleanly();
}

Test(client_acme, one_manager_serves_every_server_address_and_survives_a_reconnect,
     .timeout = 240) {
    // Two Server addresses (the second one dead): two address workers, one manager.
    AcmeSetup s(0, true);
    s.pebble.start();
    const std::string root = s.pebble.issuer_root_file();
    s.start_client();
    s.wait_installed();
    const std::string issued = served_cert_der(s, root, "issued");
    cr_assert_neq(issued, "", "%s", s.tunnel.client_log().c_str());
    std::string log = s.tunnel.client_log();
    cr_assert_eq(count_of(log, "client acme first issuance starting"), 1u, "%s", log.c_str());
    cr_assert_eq(count_of(log, "client acme certificate issued"), 1u, "%s", log.c_str());

    // The Server restarts: the Client reconnects and keeps serving the same certificate,
    // without another order.
    s.tunnel.stop_server();
    s.tunnel.start_server();
    cr_assert(s.tunnel.wait_client("client tunnel connection connected: server-address=" +
                                       hp(kServerName, s.tunnel.tunnel_port()),
                                   2, Millis{60000}),
              "%s", s.tunnel.client_log().c_str());
    cr_assert(served_cert_der(s, root, "reconnected") == issued, "%s",
              s.tunnel.client_log().c_str());
    const std::string sha = s.plain.add_random_file("h.bin", 256u << 10, 24);
    CurlResult d = curl_download(s.term(), "/files/h.bin", s.tunnel.out("h.bin"), Millis{30000});
    cr_assert(d.ok(), "curl: %s %s", d.status.describe().c_str(), d.stderr_text.c_str());
    cr_assert_eq(d.sha256, sha);
    log = s.tunnel.client_log();
    cr_assert_eq(count_of(log, "client acme first issuance starting"), 1u, "%s", log.c_str());
    cr_assert_eq(count_of(log, "client acme certificate issued"), 1u, "%s", log.c_str());
    cr_assert_eq(count_of(log, "client acme renewal starting"), 0u, "%s", log.c_str());
    s.tunnel.stop_client_cleanly();
}
