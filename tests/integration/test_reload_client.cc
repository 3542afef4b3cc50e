// Live configuration reload of the Client with the real binaries (spec 10.1): `runewarp reload
// --role client` over the control socket and SIGHUP. Server addresses added and removed, Services
// added and removed, broken files refused while the running configuration keeps serving,
// restart-only settings reported, log-level applied at once, a download in flight through a
// removed Service finishing byte for byte.
#include <criterion/criterion.h>

#include <csignal>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "tests/integration/tunnel_support.hh"

using namespace runewarp;
using namespace runewarp::test;

namespace {

// `needle` replaced by `with` (it must occur).
std::string replaced(std::string text, const std::string& needle, const std::string& with) {
    auto pos = text.find(needle);
    cr_assert_neq(pos, std::string::npos, "no '%s' in:\n%s", needle.c_str(), text.c_str());
    return text.replace(pos, needle.size(), with);
}

// The Client config file of a Tunnel (Client 0) and its text at startup.
struct ClientFile {
    explicit ClientFile(Tunnel& t) : path(t.out("client-0.ini")), original(read_file(path)) {}
    void write(const std::string& text) const { write_file(path, text); }
    std::string path;
    std::string original;
};

// `runewarp reload --role client -c <file>` as an operator runs it next to the Client: the same
// runtime directory, so it finds the Client's control socket.
RunResult reload(Tunnel& t, const std::string& path) {
    return run(
        {runewarp_binary(), "reload", "--role", "client", "-c", path}, Millis{30000},
        {"RUNTIME_DIRECTORY=" + t.client().runtime_dir(), "XDG_CONFIG_HOME=" + t.out("xdg-config"),
         "XDG_DATA_HOME=" + t.out("xdg-data"), "XDG_STATE_HOME=" + t.out("xdg-state")});
}

void assert_reloaded(const RunResult& r, int generation, Tunnel& t) {
    const std::string want = "reloaded: generation " + std::to_string(generation) + "\n";
    cr_assert(r.status.success() && r.out.rfind(want, 0) == 0,
              "reload: %s\nstdout: %s\nstderr: %s\n%s", r.status.describe().c_str(), r.out.c_str(),
              r.err.c_str(), t.client_log().c_str());
}

void assert_visitor_reaches(const HttpsTarget& target, const std::string& body,
                            const std::string& out_file, Tunnel& t) {
    CurlResult n = curl_download(target, "/name", out_file, Millis{20000});
    cr_assert(n.ok(), "curl %s:%u: %s http %d %s\n%s", target.host.c_str(), target.port,
              n.status.describe().c_str(), n.http_code, n.stderr_text.c_str(),
              t.client_log().c_str());
    cr_assert_eq(read_file(out_file), body);
}

void assert_visitor_refused(const HttpsTarget& target, const std::string& out_file) {
    CurlResult n = curl_download(target, "/name", out_file, Millis{20000});
    cr_assert_not(n.timed_out, "curl hung");
    cr_assert_not(n.ok(), "the Visitor still got through: http %d", n.http_code);
}

// A second Server sharing the first one's certificate and pinned identities, on ports of its own.
struct SecondServer {
    explicit SecondServer(Tunnel& t) : public_port(free_port()), tunnel_port(free_port()) {
        std::string ini = read_file(t.out("server.ini"));
        ini = replaced(ini, hp("127.0.0.1", t.public_port()), hp("127.0.0.1", public_port));
        ini = replaced(ini, hp("127.0.0.1", t.configured_tunnel_port()),
                       hp("127.0.0.1", tunnel_port));
        write_file(t.out("server-b.ini"), ini);
        daemon.emplace(DaemonOptions{
            .argv = {runewarp_binary(), "server", "-c", t.out("server-b.ini")},
            .env = {"XDG_CONFIG_HOME=" + t.out("xdg-config-b"),
                    "XDG_DATA_HOME=" + t.out("xdg-data-b"),
                    "XDG_STATE_HOME=" + t.out("xdg-state-b"), "RUNEWARP_SERVER_HOSTNAME="},
            .log_path = t.out("server-b.log"),
            .ready_log_line = "server tunnel listener ready",
        });
    }
    std::uint16_t public_port;
    std::uint16_t tunnel_port;
    std::optional<Daemon> daemon;
};

const std::string kBackendName = "backend " + kApp + "\n";

}  // namespace

// The Client moves from Server A to Server B: B is dialled at once, A's live connection keeps
// serving until it closes and is never dialled again. With two workers, each one does so with its
// own connection, and each change is logged once.
Test(reload_client, a_server_address_added_and_one_removed, .timeout = 180) {
    Tunnel t({.client_workers = 2});
    t.wait_pool_ready();
    SecondServer b(t);
    const std::string addr_a = hp(kServerName, t.tunnel_port());
    const std::string addr_b = hp(kServerName, b.tunnel_port);

    ClientFile file(t);
    file.write(replaced(file.original, "server-address = " + addr_a, "server-address = " + addr_b));
    assert_reloaded(reload(t, file.path), 2, t);
    cr_assert(t.wait_client("client server address added: server-address=" + addr_b), "%s",
              t.client_log().c_str());
    cr_assert(t.wait_client("client server address removed: server-address=" + addr_a), "%s",
              t.client_log().c_str());
    cr_assert(t.wait_client("client tunnel connection connected: server-address=" + addr_b, 2),
              "%s", t.client_log().c_str());
    cr_assert(
        wait_until(
            [&] { return count_of(b.daemon->log(), "server tunnel connection accepted") >= 2; },
            Millis{10000}),
        "%s", b.daemon->log().c_str());
    cr_assert_eq(count_of(t.client_log(), "client server address added"), 1u, "%s",
                 t.client_log().c_str());
    cr_assert_eq(count_of(t.client_log(), "client server address removed"), 1u, "%s",
                 t.client_log().c_str());

    // Visitors reach the backend through B, and still through A's connection from before.
    const HttpsTarget via_b{kApp, b.public_port, "127.0.0.1", t.backend().ca_file()};
    assert_visitor_reaches(via_b, kBackendName, t.out("via-b.txt"), t);
    assert_visitor_reaches(t.target(), kBackendName, t.out("via-a.txt"), t);

    // A goes away: its connection closes and the Client does not dial A again.
    const std::string dial_a = "client tunnel connection connecting: server-address=" + addr_a;
    const std::size_t dials_before = count_of(t.client_log(), dial_a);
    t.stop_server();
    cr_assert(t.wait_client("client tunnel connection closed: server-address=" + addr_a, 2), "%s",
              t.client_log().c_str());
    cr_assert(t.wait_client("it is not dialled again", 2), "%s", t.client_log().c_str());
    // Longer than the first retry window (1 s) a kept worker would wait before it dialled.
    cr_assert_not(
        wait_until([&] { return count_of(t.client_log(), dial_a) > dials_before; }, Millis{4000}),
        "the removed address was dialled again:\n%s", t.client_log().c_str());
    assert_visitor_reaches(via_b, kBackendName, t.out("via-b-2.txt"), t);
    t.stop_client_cleanly();
}

// A Service added by a reload serves new Visitors; a Service removed by one no longer does.
Test(reload_client, a_service_added_and_one_removed, .timeout = 180) {
    Tunnel t({});
    NginxFixture other(NginxOptions{.name = "other", .hostnames = {kOther}});
    cr_assert(t.wait_client("client ready"), "%s", t.client_log().c_str());
    const HttpsTarget other_target{kOther, t.public_port(), "127.0.0.1", other.ca_file()};
    assert_visitor_refused(other_target, t.out("other-0.txt"));

    ClientFile file(t);
    const std::string other_service = "\n[service \"other\"]\npublic-hostnames = " + kOther +
                                      "\nbackend-address = " + hp("127.0.0.1", other.port()) + "\n";
    file.write(file.original + other_service);
    assert_reloaded(reload(t, file.path), 2, t);
    assert_visitor_reaches(other_target, "other " + kOther + "\n", t.out("other-1.txt"), t);
    assert_visitor_reaches(t.target(), kBackendName, t.out("app-1.txt"), t);

    // Without [service "app"]: new Visitors for its hostname find no Service.
    const std::string without_app =
        file.original.substr(0, file.original.find("\n[service \"app\"]")) + "\n" + other_service;
    file.write(without_app);
    assert_reloaded(reload(t, file.path), 3, t);
    assert_visitor_refused(t.target(), t.out("app-2.txt"));
    cr_assert(t.wait_client("client route unavailable: public-hostname=" + kApp), "%s",
              t.client_log().c_str());
    cr_assert(t.wait_client("reason=no-matching-service"), "%s", t.client_log().c_str());
    assert_visitor_reaches(other_target, "other " + kOther + "\n", t.out("other-2.txt"), t);
    t.stop_client_cleanly();
}

// A broken file never replaces the running configuration: `runewarp reload` exits 1 with the
// problems, a SIGHUP logs them, Visitors keep getting through, and a valid file applies after.
Test(reload_client, a_broken_file_is_refused_and_the_client_keeps_serving, .timeout = 180) {
    Tunnel t({});
    cr_assert(t.wait_client("client ready"), "%s", t.client_log().c_str());
    ClientFile file(t);

    // A syntax error.
    file.write(file.original + "\n[service \"broken\"\n");
    RunResult r = reload(t, file.path);
    cr_assert(r.status.exited && r.status.code == 1, "reload: %s\n%s", r.status.describe().c_str(),
              r.out.c_str());
    cr_assert_neq(r.err.find("invalid client config in " + file.path), std::string::npos, "%s",
                  r.err.c_str());
    // The Client's own check refuses it as well (SIGHUP skips the command's check).
    cr_assert(t.client().process().signal(SIGHUP));
    cr_assert(t.wait_client("config reload failed: generation=1"), "%s", t.client_log().c_str());
    cr_assert_neq(t.client_log().find("invalid client config in " + file.path), std::string::npos);
    assert_visitor_reaches(t.target(), kBackendName, t.out("after-syntax.txt"), t);

    // A terminating Service whose certificate is not in public-cert-dir.
    const std::string certs = t.out("public-certs");
    make_dirs(certs);
    std::string missing = replaced(file.original, "\n[service \"app\"]",
                                   "public-cert-dir = " + certs + "\n\n[service \"app\"]");
    missing += "\n[service \"term\"]\npublic-hostnames = " + kOther +
               "\ntls-mode = terminate\nbackend-address = 127.0.0.1:9\n";
    file.write(missing);
    r = reload(t, file.path);
    cr_assert(r.status.exited && r.status.code == 1, "reload: %s\n%s", r.status.describe().c_str(),
              r.out.c_str());
    cr_assert_neq(r.err.find("missing certificate for terminating hostname " + kOther),
                  std::string::npos, "%s", r.err.c_str());
    cr_assert(t.client().process().signal(SIGHUP));
    cr_assert(t.wait_client("config reload failed: generation=1", 2), "%s", t.client_log().c_str());
    assert_visitor_reaches(t.target(), kBackendName, t.out("after-missing.txt"), t);
    cr_assert_eq(t.client_log().find("config reloaded"), std::string::npos);

    // Fixed: the next reload applies.
    file.write(file.original);
    assert_reloaded(reload(t, file.path), 2, t);
    cr_assert(t.wait_client("config reloaded: generation=2"), "%s", t.client_log().c_str());
    assert_visitor_reaches(t.target(), kBackendName, t.out("after-fix.txt"), t);
    t.stop_client_cleanly();
}

// SIGHUP reloads too: log-level applies at once, log-format waits for a restart (a WARN says so,
// and `runewarp reload` prints the same note).
Test(reload_client, sighup_reloads_log_level_live_and_notes_restart_only_keys, .timeout = 180) {
    Tunnel t({});
    cr_assert(t.wait_client("client ready"), "%s", t.client_log().c_str());
    assert_visitor_reaches(t.target(), kBackendName, t.out("debug.txt"), t);
    const std::string routed = "client route passthrough: public-hostname=" + kApp;
    cr_assert(t.wait_client(routed), "%s", t.client_log().c_str());

    ClientFile file(t);
    file.write(
        replaced(file.original, "log-level = debug\n", "log-level = info\nlog-format = json\n"));
    cr_assert(t.client().process().signal(SIGHUP));
    cr_assert(t.wait_client("config reloaded: generation=2"), "%s", t.client_log().c_str());
    cr_assert(t.wait_client("client config change needs a restart: log-format: changed; applies "
                            "on restart"),
              "%s", t.client_log().c_str());
    const std::string log = t.client_log();
    // Still text lines (log-format kept), and the per-stream DEBUG line is gone (log-level).
    cr_assert_eq(log.find("{\"ts\""), std::string::npos, "%s", log.c_str());
    const std::size_t routed_before = count_of(log, routed);
    assert_visitor_reaches(t.target(), kBackendName, t.out("info.txt"), t);
    cr_assert_eq(count_of(t.client_log(), routed), routed_before, "%s", t.client_log().c_str());

    RunResult r = reload(t, file.path);
    assert_reloaded(r, 3, t);
    cr_assert_eq(r.out, "reloaded: generation 3\nlog-format: changed; applies on restart\n");
    t.stop_client_cleanly();
}

// A 64 MiB download through a Service finishes byte for byte although a reload removed the
// Service mid-transfer; new Visitors for its hostname are refused at once.
Test(reload_client, a_download_in_flight_survives_the_removal_of_its_service, .timeout = 240) {
    Tunnel t({});
    NginxFixture other(NginxOptions{.name = "other", .hostnames = {kOther}});
    cr_assert(t.wait_client("client ready"), "%s", t.client_log().c_str());
    const CachedFile big = cached_random_file(64u << 20, 31);
    t.backend().add_file("big.bin", big.path);
    auto args = curl_base_args(t.target());
    // About 4 s at 16 MiB/s: the reload lands while most of the file is still to come.
    args.insert(args.end(), {"--limit-rate", "16M", "--output", t.out("big.bin"),
                             https_url(t.target(), "/files/big.bin")});
    Process curl = Process::spawn({.argv = args, .err = Output::file(t.out("curl.err"))});
    cr_assert(wait_until([&] { return file_size(t.out("big.bin")) >= (4u << 20); }, Millis{30000}),
              "download did not start\n%s", t.client_log().c_str());

    ClientFile file(t);
    file.write(file.original.substr(0, file.original.find("\n[service \"app\"]")) +
               "\n\n[service \"other\"]\npublic-hostnames = " + kOther +
               "\nbackend-address = " + hp("127.0.0.1", other.port()) + "\n");
    assert_reloaded(reload(t, file.path), 2, t);
    cr_assert_lt(file_size(t.out("big.bin")), 64u << 20, "the download ended before the reload");
    assert_visitor_refused(t.target(), t.out("refused.txt"));

    std::optional<ExitStatus> done = curl.wait_exit(Millis{120000});
    cr_assert(done.has_value() && done->success(), "curl: %s %s",
              done ? done->describe().c_str() : "running", read_file(t.out("curl.err")).c_str());
    cr_assert_eq(file_size(t.out("big.bin")), 64u << 20);
    cr_assert_eq(sha256_file(t.out("big.bin")), big.sha256);
    t.stop_client_cleanly();
}
