// Terminate mode end to end with the real binary: `runewarp server` and `runewarp client`, where a
// Client Service with `tls-mode = terminate` runs the Visitor's TLS session itself with the
// hostname's certificate from `public-cert-dir` and relays plaintext to a plain-HTTP nginx. The
// Visitors (curl, gnutls-cli, raw sockets) trust only the public hostname CA the test made. The
// Tunnel owns two hostnames: app.example.test stays a passthrough Service to a TLS nginx, and
// other.example.test is the terminating one.
#include <criterion/criterion.h>

#include <arpa/inet.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include "tests/integration/tunnel_support.hh"
#include "tests/support/tls.hh"

using namespace runewarp::test;

namespace {

using Clock = std::chrono::steady_clock;

const std::string kTerm = kOther;  // the terminating hostname

// A `public-cert-dir` laid out as the daemon reads it: public-ca.crt from a CA named "Runewarp
// Public Hostname CA", and <host>/public.crt with <host>/public.key (0600) for each hostname.
class PublicCertDir {
public:
    explicit PublicCertDir(const std::vector<std::string>& hosts) {
        ca_.write_cert(ca_file());
        for (const auto& h : hosts) issue(h);
    }
    const std::string& path() const { return dir_.path(); }
    std::string ca_file() const { return dir_ / "public-ca.crt"; }
    std::string cert(const std::string& host) const { return dir_ / (host + "/public.crt"); }
    // A new leaf and key for host, each put in place with a rename (as a renewal replaces them).
    void issue(const std::string& host) {
        const std::string d = dir_ / host;
        make_dirs(d);
        ::chmod(d.c_str(), 0755);
        CertFiles f = ca_.issue({host}, d, "public.new");
        cr_assert_eq(std::rename(f.key.c_str(), (d + "/public.key").c_str()), 0);
        cr_assert_eq(std::rename(f.cert.c_str(), (d + "/public.crt").c_str()), 0);
    }
    void remove(const std::string& host) { remove_tree(dir_ / host); }

private:
    TempDir dir_{"runewarp-public-cert"};
    TestCa ca_{"Runewarp Public Hostname CA"};
};

// The DER of the first certificate in a PEM text; empty when there is none.
std::string first_cert_der(const std::string& pem) {
    gnutls_x509_crt_t crt = nullptr;
    gnutls_x509_crt_init(&crt);
    gnutls_datum_t in{reinterpret_cast<unsigned char*>(const_cast<char*>(pem.data())),
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

struct TermOptions {
    bool material = true;   // write the terminating hostname's certificate before the Client starts
    bool proxy_v2 = false;  // the terminating Service sends PROXY v2 to nginx's plain PROXY port
    bool h2 = false;        // `alpn = h2, http/1.1` and nginx's h2c port as the backend
    bool start_clients = true;
};

// The Tunnel with a passthrough Service (app.example.test, TLS nginx) and a terminating Service
// (other.example.test) whose backend is a second nginx with plaintext listeners.
struct Setup {
    explicit Setup(TermOptions o)
        : certs(o.material ? std::vector<std::string>{kTerm} : std::vector<std::string>{}),
          plain(NginxOptions{.name = "plain",
                             .hostnames = {kTerm},
                             .proxy_protocol = o.proxy_v2,
                             .plaintext = true,
                             .h2c = o.h2}),
          backend_address(hp("127.0.0.1", o.h2         ? plain.h2c_port()
                                          : o.proxy_v2 ? plain.plain_proxy_port()
                                                       : plain.plain_port())),
          tunnel(Tunnel::Options{
              .start_clients = o.start_clients,
              .client_extra = "public-cert-dir = " + certs.path() + "\n",
              .services_extra = "\n[service \"term\"]\npublic-hostnames = " + kTerm +
                                "\ntls-mode = terminate\nbackend-address = " + backend_address +
                                "\n" + (o.proxy_v2 ? "proxy-protocol = v2\n" : "") +
                                (o.h2 ? "alpn = h2, http/1.1\n" : ""),
          }) {}

    // The terminating hostname as a Visitor trusting only the public hostname CA reaches it.
    HttpsTarget term() const { return {kTerm, tunnel.public_port(), "127.0.0.1", certs.ca_file()}; }
    void wait_ready() {
        cr_assert(tunnel.wait_client("client ready: server-address=" + kServerName), "%s",
                  tunnel.client_log().c_str());
    }

    PublicCertDir certs;
    NginxFixture plain;
    std::string backend_address;
    Tunnel tunnel;
};

// One curl run against a target: `-w` adds the HTTP code, body size and HTTP version; `-v` puts
// the negotiated TLS version and ALPN on stderr.
struct CurlRun {
    RunResult r;
    int http_code = 0;
    std::uint64_t bytes = 0;
    std::string http_version;
    std::string sha256;  // of the downloaded body, when out_file is set
};

CurlRun curl_run(const HttpsTarget& t, const std::vector<std::string>& extra,
                 const std::string& url_path, const std::string& out_file,
                 Millis deadline = Millis{60000}) {
    auto args = curl_base_args(t);
    args.push_back("-v");
    args.insert(args.end(), extra.begin(), extra.end());
    args.insert(args.end(),
                {"--output", out_file.empty() ? "/dev/null" : out_file, "--write-out",
                 "%{http_code} %{size_download} %{http_version}", https_url(t, url_path)});
    CurlRun c;
    c.r = run(args, deadline);
    unsigned long long bytes = 0;
    char version[16] = {0};
    std::sscanf(c.r.out.c_str(), "%d %llu %15s", &c.http_code, &bytes, version);
    c.bytes = bytes;
    c.http_version = version;
    if (!out_file.empty() && file_exists(out_file)) c.sha256 = sha256_file(out_file);
    return c;
}

std::string describe(const CurlRun& c) {
    return c.r.status.describe() + (c.r.timed_out ? " (timed out)" : "") + " http " +
           std::to_string(c.http_code) + " " + c.r.out + "\n" + c.r.err.substr(0, 4000);
}

// gnutls-cli as a Visitor: connects to 127.0.0.1:<port> with the target's SNI, verifies against
// the target's CA only, writes `request` (then the body file, if any) and keeps its stdin open
// (gnutls-cli ends the session at EOF on stdin) until the peer closes.
struct GnutlsRun {
    std::optional<ExitStatus> status;  // nullopt: still running at the deadline (killed)
    std::string info;                  // its informational messages and stderr
    std::string headers;               // of the HTTP response
    std::string body;
    std::string saved_cert;  // the peer's chain (PEM) as it saw it
};

GnutlsRun gnutls_run(const HttpsTarget& t, const std::string& dir, const std::string& name,
                     const std::string& request, const std::vector<std::string>& extra,
                     const std::string& body_file = {}, Millis deadline = Millis{60000}) {
    std::signal(SIGPIPE, SIG_IGN);  // gnutls-cli may exit while the body is still being written
    const std::string base = dir + "/" + name;
    SpawnOptions so;
    so.argv = {
        "gnutls-cli", t.address,           "--port",      std::to_string(t.port), "--sni-hostname",
        t.host,       "--verify-hostname", t.host,        "--x509cafile",         t.ca_file,
        "--logfile",  base + ".log",       "--save-cert", base + ".chain.pem"};
    so.argv.insert(so.argv.end(), extra.begin(), extra.end());
    so.out = Output::file(base + ".out");
    so.err = Output::file(base + ".err");
    so.stdin_pipe = true;
    Process p = Process::spawn(std::move(so));
    p.write_stdin(request);
    if (!body_file.empty()) p.write_stdin(read_file(body_file));
    GnutlsRun g;
    g.status = p.wait_exit(deadline);
    if (!g.status) p.stop(Millis{0});
    for (const char* ext : {".log", ".err"})
        if (file_exists(base + ext)) g.info += read_file(base + ext);
    if (file_exists(base + ".chain.pem")) g.saved_cert = read_file(base + ".chain.pem");
    std::string raw = file_exists(base + ".out") ? read_file(base + ".out") : "";
    auto split = raw.find("\r\n\r\n");
    if (split != std::string::npos) {
        g.headers = raw.substr(0, split);
        g.body = raw.substr(split + 4);
    }
    return g;
}

std::string get_request(const std::string& host, const std::string& path) {
    return "GET " + path + " HTTP/1.1\r\nHost: " + host + "\r\nConnection: close\r\n\r\n";
}

std::string describe(const GnutlsRun& g) {
    return (g.status ? g.status->describe() : std::string("still running at the deadline")) + "\n" +
           g.headers + "\n" + g.info.substr(0, 4000);
}

constexpr std::uint64_t k64MiB = 64u << 20;

}  // namespace

Test(terminate, curl_downloads_and_uploads_64mib_through_the_client, .timeout = 240) {
    Setup s({});
    s.wait_ready();
    const CachedFile big = cached_random_file(k64MiB, 11);
    s.plain.add_file("big.bin", big.path);

    CurlRun n = curl_run(s.term(), {}, "/name", s.tunnel.out("name.txt"));
    cr_assert(n.r.status.success() && n.http_code == 200, "%s\n%s", describe(n).c_str(),
              s.tunnel.client_log().c_str());
    // The plain listener answered: the Client took the TLS off.
    cr_assert_eq(read_file(s.tunnel.out("name.txt")), "plain " + kTerm + "\n");

    CurlRun d = curl_run(s.term(), {}, "/files/big.bin", s.tunnel.out("big.bin"), Millis{180000});
    cr_assert(d.r.status.success() && d.http_code == 200, "%s", describe(d).c_str());
    cr_assert_eq(d.bytes, k64MiB);
    cr_assert_eq(d.sha256, big.sha256);

    CurlResult u = curl_upload(s.term(), "/upload/up.bin", big.path, Millis{180000});
    cr_assert(u.ok(), "curl: %s http %d %s", u.status.describe().c_str(), u.http_code,
              u.stderr_text.c_str());
    cr_assert_eq(sha256_file(s.plain.upload_path("up.bin")), big.sha256);

    cr_assert(s.tunnel.wait_client("client route terminate: public-hostname=" + kTerm +
                                       " backend-address=" + s.backend_address,
                                   3, Millis{1000}),
              "%s", s.tunnel.client_log().c_str());
    s.tunnel.stop_client_cleanly();
}

// gnutls-cli writes what it receives to stdout one byte per write() (about 0.5 MB/s whatever the
// peer, nginx directly too), so its download is 4 MiB: the 64 MiB download through the Client is
// curl's test above. The upload goes at full speed and stays 64 MiB.
Test(terminate, gnutls_cli_downloads_4mib_and_uploads_64mib_through_the_client, .timeout = 300) {
    Setup s({});
    s.wait_ready();
    const CachedFile big = cached_random_file(k64MiB, 12);
    const std::string small_sha = s.plain.add_random_file("small.bin", 4u << 20, 13);

    GnutlsRun d = gnutls_run(s.term(), s.tunnel.out(""), "download",
                             get_request(kTerm, "/files/small.bin"), {}, {}, Millis{120000});
    cr_assert(d.headers.starts_with("HTTP/1.1 200"), "%s", describe(d).c_str());
    cr_assert_eq(d.body.size(), 4u << 20, "%s", describe(d).c_str());
    cr_assert_eq(sha256_hex(d.body), small_sha);

    const std::string put = "PUT /upload/up.bin HTTP/1.1\r\nHost: " + kTerm +
                            "\r\nContent-Length: " + std::to_string(k64MiB) +
                            "\r\nConnection: close\r\n\r\n";
    GnutlsRun u =
        gnutls_run(s.term(), s.tunnel.out(""), "upload", put, {}, big.path, Millis{180000});
    cr_assert(u.headers.starts_with("HTTP/1.1 201"), "%s", describe(u).c_str());
    cr_assert_eq(sha256_file(s.plain.upload_path("up.bin")), big.sha256);
    s.tunnel.stop_client_cleanly();
}

Test(terminate, tls12_and_tls13_are_each_negotiated, .timeout = 120) {
    Setup s({});
    s.wait_ready();
    const std::string body_sha = s.plain.add_random_file("f.bin", 1u << 20, 3);

    struct Case {
        std::vector<std::string> curl_flags;
        std::string curl_says;
        std::string priority;
        std::string gnutls_says;
    };
    const std::vector<Case> cases = {
        {{"--tlsv1.2", "--tls-max", "1.2"},
         "SSL connection using TLSv1.2 ",
         "NORMAL:-VERS-ALL:+VERS-TLS1.2",
         "- Description: (TLS1.2-"},
        {{"--tlsv1.3"},
         "SSL connection using TLSv1.3 ",
         "NORMAL:-VERS-ALL:+VERS-TLS1.3",
         "- Description: (TLS1.3-"},
    };
    int i = 0;
    for (const Case& c : cases) {
        const std::string out = s.tunnel.out("f-" + std::to_string(i) + ".bin");
        CurlRun r = curl_run(s.term(), c.curl_flags, "/files/f.bin", out);
        cr_assert(r.r.status.success() && r.http_code == 200, "%s", describe(r).c_str());
        cr_assert_eq(r.sha256, body_sha);
        cr_assert(r.r.err.find(c.curl_says) != std::string::npos, "expected `%s`: %s",
                  c.curl_says.c_str(), r.r.err.c_str());

        GnutlsRun g = gnutls_run(s.term(), s.tunnel.out(""), "v" + std::to_string(i),
                                 get_request(kTerm, "/files/f.bin"), {"--priority", c.priority});
        cr_assert(g.headers.starts_with("HTTP/1.1 200"), "%s", describe(g).c_str());
        cr_assert_eq(sha256_hex(g.body), body_sha);
        cr_assert(g.info.find(c.gnutls_says) != std::string::npos, "expected `%s`: %s",
                  c.gnutls_says.c_str(), g.info.c_str());
        ++i;
    }
    s.tunnel.stop_client_cleanly();
}

Test(terminate, default_alpn_offers_only_http11, .timeout = 120) {
    Setup s({});
    s.wait_ready();
    CurlRun r = curl_run(s.term(), {"--http2"}, "/proto", s.tunnel.out("proto.txt"));
    cr_assert(r.r.status.success() && r.http_code == 200, "%s", describe(r).c_str());
    cr_assert_eq(r.http_version, "1.1", "%s", describe(r).c_str());
    cr_assert(r.r.err.find("ALPN: server accepted h2") == std::string::npos, "%s", r.r.err.c_str());
    cr_assert_eq(read_file(s.tunnel.out("proto.txt")), "HTTP/1.1\n");

    // A Visitor offering only h2 gets no protocol from the Client's list either.
    GnutlsRun g = gnutls_run(s.term(), s.tunnel.out(""), "h2-only", get_request(kTerm, "/proto"),
                             {"--alpn", "h2"});
    cr_assert(g.info.find("Application protocol: h2") == std::string::npos, "%s",
              describe(g).c_str());
    s.tunnel.stop_client_cleanly();
}

Test(terminate, alpn_h2_reaches_an_h2c_backend_end_to_end, .timeout = 180) {
    Setup s({.h2 = true});
    s.wait_ready();
    CurlRun r = curl_run(s.term(), {"--http2"}, "/proto", s.tunnel.out("proto.txt"));
    cr_assert(r.r.status.success() && r.http_code == 200, "%s\n%s", describe(r).c_str(),
              s.tunnel.client_log().c_str());
    cr_assert_eq(r.http_version, "2", "%s", describe(r).c_str());
    cr_assert_eq(read_file(s.tunnel.out("proto.txt")), "HTTP/2.0\n");

    // Bulk bytes over the HTTP/2 session too.
    const CachedFile big = cached_random_file(k64MiB, 13);
    s.plain.add_file("big.bin", big.path);
    CurlRun d =
        curl_run(s.term(), {"--http2"}, "/files/big.bin", s.tunnel.out("big.bin"), Millis{180000});
    cr_assert(d.r.status.success() && d.http_code == 200, "%s", describe(d).c_str());
    cr_assert_eq(d.http_version, "2");
    cr_assert_eq(d.sha256, big.sha256);
    s.tunnel.stop_client_cleanly();
}

Test(terminate, a_visitor_without_the_public_ca_fails_and_one_with_it_succeeds, .timeout = 120) {
    Setup s({});
    s.wait_ready();
    HttpsTarget wrong = s.term();
    wrong.ca_file = s.plain.ca_file();  // a CA, just not the one that issued the hostname's leaf
    CurlRun bad = curl_run(wrong, {}, "/name", {}, Millis{20000});
    cr_assert(bad.r.status.exited && bad.r.status.code == 60, "%s", describe(bad).c_str());

    CurlRun good = curl_run(s.term(), {}, "/name", s.tunnel.out("name.txt"), Millis{20000});
    cr_assert(good.r.status.success() && good.http_code == 200, "%s", describe(good).c_str());
    cr_assert_eq(read_file(s.tunnel.out("name.txt")), "plain " + kTerm + "\n");
    s.tunnel.stop_client_cleanly();
}

// Spec 10.1: a reload applies the startup rules in full, so removed material fails the SIGHUP
// reload as a whole: one ERROR names the missing file and the certificate from before keeps
// serving; once the material is back, the next SIGHUP applies.
Test(terminate, removed_material_fails_the_sighup_reload_and_keeps_serving, .timeout = 180) {
    Setup s({});
    s.wait_ready();
    const std::string old_der = first_cert_der(read_file(s.certs.cert(kTerm)));
    CurlRun before = curl_run(s.term(), {}, "/name", {}, Millis{20000});
    cr_assert(before.r.status.success() && before.http_code == 200, "%s", describe(before).c_str());

    s.certs.remove(kTerm);
    cr_assert(s.tunnel.client().process().signal(SIGHUP));
    cr_assert(s.tunnel.wait_client("config reload failed: generation=1"), "%s",
              s.tunnel.client_log().c_str());
    const std::string log = s.tunnel.client_log();
    cr_assert_neq(log.find(kTerm), std::string::npos, "%s", log.c_str());
    cr_assert_eq(log.find("config reloaded"), std::string::npos, "%s", log.c_str());

    GnutlsRun kept = gnutls_run(s.term(), s.tunnel.out(""), "kept", get_request(kTerm, "/name"), {},
                                {}, Millis{15000});
    cr_assert(kept.headers.starts_with("HTTP/1.1 200"), "%s", describe(kept).c_str());
    cr_assert(first_cert_der(kept.saved_cert) == old_der, "the Visitor saw another certificate");
    cr_assert_eq(kept.body, "plain " + kTerm + "\n");

    s.certs.issue(kTerm);
    const std::string new_der = first_cert_der(read_file(s.certs.cert(kTerm)));
    cr_assert(s.tunnel.client().process().signal(SIGHUP));
    cr_assert(s.tunnel.wait_client("config reloaded: generation=2"), "%s",
              s.tunnel.client_log().c_str());
    GnutlsRun renewed = gnutls_run(s.term(), s.tunnel.out(""), "renewed",
                                   get_request(kTerm, "/name"), {}, {}, Millis{15000});
    cr_assert(renewed.headers.starts_with("HTTP/1.1 200"), "%s", describe(renewed).c_str());
    cr_assert(first_cert_der(renewed.saved_cert) == new_der, "the reload did not apply");

    // The passthrough Service of the same Client is untouched.
    CurlResult pass = curl_download(s.tunnel.target(), "/name", s.tunnel.out("app.txt"));
    cr_assert(pass.ok(), "curl: %s %s", pass.status.describe().c_str(), pass.stderr_text.c_str());
    cr_assert_eq(read_file(s.tunnel.out("app.txt")), "backend " + kApp + "\n");
    s.tunnel.stop_client_cleanly();
}

Test(terminate, startup_without_material_fails_naming_the_hostname, .timeout = 120) {
    Setup s({.material = false, .start_clients = false});
    const std::string ini = s.tunnel.write_client_config(0);
    RunResult r = run({runewarp_binary(), "client", "-c", ini}, Millis{20000});
    cr_assert_not(r.timed_out, "the Client started without material: %s", r.err.c_str());
    cr_assert(r.status.exited && r.status.code != 0, "%s: %s", r.status.describe().c_str(),
              r.err.c_str());
    cr_assert(
        r.err.find("missing certificate for terminating hostname " + kTerm) != std::string::npos,
        "%s", r.err.c_str());
}

Test(terminate, a_stalled_handshake_is_closed_after_about_five_seconds, .timeout = 180) {
    Setup s({});
    s.wait_ready();
    // 320 KiB at 32 KiB/s: a download on another stream that lasts about ten seconds.
    const std::string slow_sha = s.plain.add_random_file("slow.bin", 320u << 10, 4);
    CurlDownload slow(s.term(), "/slow/slow.bin", s.tunnel.out("slow.bin"), Millis{60000});

    // A complete ClientHello and then silence; and one followed by a record cut short.
    const std::string hello = capture_client_hello(kTerm);
    RawConnection silent("127.0.0.1", s.tunnel.public_port());
    RawConnection partial("127.0.0.1", s.tunnel.public_port());
    cr_assert(silent.send(hello));
    cr_assert(partial.send(hello + std::string("\x17\x03\x03\x00\x40", 5) + "0123456789"));
    // Both are waited on from the moment their bytes went out.
    const auto sent = Clock::now();
    for (RawConnection* c : {&silent, &partial}) {
        PeerReaction r = c->wait_closed(Millis{15000});
        const auto after = std::chrono::duration_cast<Millis>(Clock::now() - sent).count();
        cr_assert(r.closed, "not closed within 15 s\n%s", s.tunnel.client_log().c_str());
        cr_assert(after >= 4000 && after <= 9000, "closed after %lld ms",
                  static_cast<long long>(after));
        // The Client's server flight came first: the Client ran the handshake, not the Server.
        cr_assert(r.received.starts_with("\x16\x03"), "received %zu bytes", r.received.size());
    }

    std::optional<CurlResult> d = slow.finish(Millis{60000});
    cr_assert(d.has_value(), "the concurrent download did not finish");
    cr_assert(d->ok(), "curl: %s http %d %s", d->status.describe().c_str(), d->http_code,
              d->stderr_text.c_str());
    cr_assert_eq(d->sha256, slow_sha);
    s.tunnel.stop_client_cleanly();
}

Test(terminate, passthrough_and_terminate_services_share_a_tunnel, .timeout = 240) {
    Setup s({});
    s.wait_ready();
    const CachedFile a = cached_random_file(k64MiB, 14);
    const CachedFile b = cached_random_file(k64MiB, 15);
    s.tunnel.backend().add_file("a.bin", a.path);
    s.plain.add_file("b.bin", b.path);

    CurlDownload pass(s.tunnel.target(), "/files/a.bin", s.tunnel.out("a.bin"), Millis{180000});
    CurlDownload term(s.term(), "/files/b.bin", s.tunnel.out("b.bin"), Millis{180000});
    std::optional<CurlResult> pr = pass.finish(Millis{190000});
    std::optional<CurlResult> tr = term.finish(Millis{190000});
    cr_assert(pr.has_value() && tr.has_value());
    cr_assert(pr->ok(), "passthrough: %s %s", pr->status.describe().c_str(),
              pr->stderr_text.c_str());
    cr_assert(tr->ok(), "terminate: %s %s", tr->status.describe().c_str(), tr->stderr_text.c_str());
    cr_assert_eq(pr->sha256, a.sha256);
    cr_assert_eq(tr->sha256, b.sha256);

    const std::string log = s.tunnel.client_log();
    cr_assert_neq(log.find("client route passthrough: public-hostname=" + kApp), std::string::npos,
                  "%s", log.c_str());
    cr_assert_neq(log.find("client route terminate: public-hostname=" + kTerm), std::string::npos,
                  "%s", log.c_str());
    s.tunnel.stop_client_cleanly();
}

Test(terminate, proxy_v2_to_the_plaintext_backend_carries_the_visitor_address, .timeout = 120) {
    Setup s({.proxy_v2 = true});
    s.wait_ready();
    // A Visitor from 127.0.0.7: the header must carry its address, not the Client's.
    Fd fd = tcp_connect_from("127.0.0.7", "127.0.0.1", s.tunnel.public_port());
    cr_assert(fd.valid());
    sockaddr_in local{};
    socklen_t len = sizeof local;
    cr_assert_eq(::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&local), &len), 0);
    const unsigned visitor_port = ntohs(local.sin_port);
    HttpResponse r = https_get_over(std::move(fd), kTerm, s.certs.ca_file(), "/proxy");
    cr_assert(r.ok && r.status == 200, "%s %s\n%s\n%s", r.error.c_str(), r.headers.c_str(),
              s.tunnel.client_log().c_str(), read_file(s.plain.error_log()).c_str());
    const std::string expected = "127.0.0.7:" + std::to_string(visitor_port) +
                                 " 127.0.0.1:" + std::to_string(s.tunnel.public_port()) + "\n";
    cr_assert_eq(r.body, expected, "got `%s`, expected `%s`", r.body.c_str(), expected.c_str());
    s.tunnel.stop_client_cleanly();
}

Test(terminate, sighup_serves_renewed_material_and_keeps_streams_in_flight, .timeout = 180) {
    Setup s({});
    s.wait_ready();
    const std::string old_der = first_cert_der(read_file(s.certs.cert(kTerm)));
    GnutlsRun first =
        gnutls_run(s.term(), s.tunnel.out(""), "first", get_request(kTerm, "/small"), {});
    cr_assert(first.headers.starts_with("HTTP/1.1 200"), "%s", describe(first).c_str());
    cr_assert(first_cert_der(first.saved_cert) == old_der, "the Visitor saw another certificate");

    // 320 KiB at 32 KiB/s: in flight for about ten seconds, across the reload.
    const std::string slow_sha = s.plain.add_random_file("slow.bin", 320u << 10, 6);
    CurlDownload slow(s.term(), "/slow/slow.bin", s.tunnel.out("slow.bin"), Millis{60000});
    cr_assert(wait_until([&] { return file_size(s.tunnel.out("slow.bin")) > 0; }, Millis{10000}),
              "the download did not start\n%s", s.tunnel.client_log().c_str());

    s.certs.issue(kTerm);
    const std::string new_der = first_cert_der(read_file(s.certs.cert(kTerm)));
    cr_assert(new_der != old_der);
    cr_assert(s.tunnel.client().process().signal(SIGHUP));
    cr_assert_not(slow.finish(Millis{0}).has_value(), "the download ended before the reload");

    int n = 0;
    GnutlsRun seen;
    bool renewed = wait_until(
        [&] {
            seen = gnutls_run(s.term(), s.tunnel.out(""), "after-" + std::to_string(n++),
                              get_request(kTerm, "/small"), {}, {}, Millis{15000});
            return first_cert_der(seen.saved_cert) == new_der;
        },
        Millis{20000}, Millis{100});
    cr_assert(renewed, "new Visitors still see the old certificate: %s\n%s", describe(seen).c_str(),
              s.tunnel.client_log().c_str());
    cr_assert(seen.headers.starts_with("HTTP/1.1 200"), "%s", describe(seen).c_str());
    cr_assert_eq(seen.body, "ok\n");

    std::optional<CurlResult> d = slow.finish(Millis{60000});
    cr_assert(d.has_value(), "the download in flight did not finish");
    cr_assert(d->ok(), "curl: %s http %d %s", d->status.describe().c_str(), d->http_code,
              d->stderr_text.c_str());
    cr_assert_eq(d->sha256, slow_sha);
    s.tunnel.stop_client_cleanly();
}
