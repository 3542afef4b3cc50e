// `runewarp doctor server|client` and `runewarp lint` with the real binary (spec 10.9): a working
// tunnel, a Server that does not pin the Client, a Server certificate the Client does not trust,
// a closed UDP port, a dead backend; Server material with a readable key, a dead upstream, busy
// ports; each lint rule on a minimal file and a clean file.
//
// As in the tunnel suites, a Client-side doctor runs in a private mount namespace whose
// /etc/hosts maps the Server's certificate name to loopback.
#include <criterion/criterion.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sstream>
#include <string>
#include <vector>

#include "tests/integration/tunnel_support.hh"

using namespace runewarp::test;

namespace {

const std::vector<std::string> kEnv = {"RUNEWARP_SERVER_HOSTNAME=", "LC_ALL=C"};

RunResult doctor(const std::vector<std::string>& args) {
    std::vector<std::string> argv = {runewarp_binary()};
    argv.insert(argv.end(), args.begin(), args.end());
    return run(argv, Millis{60000}, kEnv);
}

// `runewarp doctor client -c ini` as the Client daemon would run: /etc/hosts names the Server.
RunResult doctor_client(Tunnel& t, const std::string& ini) {
    std::string cmd = "mount --bind '" + t.out("hosts") + "' /etc/hosts && exec '" +
                      runewarp_binary() + "' doctor client -c '" + ini + "'";
    return run({"unshare", "-m", "sh", "-c", cmd}, Millis{60000}, kEnv);
}

std::string dump(const RunResult& r) {
    return "exit " + r.status.describe() + "\nstdout:\n" + r.out + "\nstderr:\n" + r.err;
}

// The output line starting with `prefix` ("FAIL backend"), or "".
std::string line_with(const std::string& out, const std::string& prefix) {
    std::istringstream in(out);
    std::string line;
    while (std::getline(in, line)) {
        if (line.rfind(prefix, 0) == 0) return line;
    }
    return {};
}

bool has(const std::string& s, const std::string& needle) {
    return s.find(needle) != std::string::npos;
}

// Every line is `ok ...` except the verdict.
void assert_all_ok(const RunResult& r) {
    std::istringstream in(r.out);
    std::string line;
    int n = 0;
    while (std::getline(in, line)) {
        if (line.rfind("verdict: ", 0) == 0) continue;
        cr_assert(line.rfind("ok   ", 0) == 0, "not ok: %s\n%s", line.c_str(), dump(r).c_str());
        ++n;
    }
    cr_assert_gt(n, 3, "%s", dump(r).c_str());
    cr_assert(has(r.out, "verdict: ok"), "%s", dump(r).c_str());
}

// ---- Client side

Test(doctor, client_against_working_server) {
    Tunnel t({.start_clients = false});
    std::string ini = t.write_client_config(0);
    RunResult r = doctor_client(t, ini);
    cr_assert(r.status.success(), "%s", dump(r).c_str());
    assert_all_ok(r);
    cr_assert(has(r.out, "handshake complete"), "%s", dump(r).c_str());
    cr_assert(has(r.out, "ok   backend service \"app\""), "%s", dump(r).c_str());
    // The Server saw an admitted connection closed cleanly by the Client.
    cr_assert(t.wait_server("server tunnel connection accepted"), "%s", t.server().log().c_str());
}

Test(doctor, client_identity_not_pinned) {
    Tunnel t({.pin_client = false, .start_clients = false});
    RunResult r = doctor_client(t, t.write_client_config(0));
    cr_assert_eq(r.status.code, 1, "%s", dump(r).c_str());
    std::string l = line_with(r.out, "FAIL server tunnel.example.test:");
    cr_assert(has(l, "identity not pinned"), "%s", dump(r).c_str());
    cr_assert(has(r.out, "verdict: FAIL"), "%s", dump(r).c_str());
}

Test(doctor, client_server_certificate_not_trusted) {
    Tunnel t({.start_clients = false});
    // Another private CA for the same name: the Client trusts it alone, not the Server's.
    RunResult init =
        doctor({"server", "cert", "init", "--hostname", kServerName, "--dir", t.out("other-ca")});
    cr_assert(init.status.success(), "%s", dump(init).c_str());
    std::string ini = t.write_client_config(0);
    std::string text = read_file(ini);
    const std::string from = t.out("cert/server-ca.crt");
    text.replace(text.find(from), from.size(), t.out("other-ca/server-ca.crt"));
    write_file(ini, text);
    RunResult r = doctor_client(t, ini);
    cr_assert_eq(r.status.code, 1, "%s", dump(r).c_str());
    std::string l = line_with(r.out, "FAIL server tunnel.example.test:");
    cr_assert(has(l, "certificate not trusted"), "%s", dump(r).c_str());
}

Test(doctor, client_closed_udp_port) {
    Tunnel t({.start_clients = false});
    RunResult r = doctor_client(t, t.write_client_config(0, free_port()));
    cr_assert_eq(r.status.code, 1, "%s", dump(r).c_str());
    std::string l = line_with(r.out, "FAIL server tunnel.example.test:");
    cr_assert(has(l, "port unreachable") || has(l, "timeout"), "%s", dump(r).c_str());
    // The backend is still checked after the Server address failed.
    cr_assert(has(r.out, "ok   backend service \"app\""), "%s", dump(r).c_str());
}

Test(doctor, client_unreachable_backend) {
    Tunnel t({.backend_override = hp("127.0.0.1", free_port()), .start_clients = false});
    RunResult r = doctor_client(t, t.write_client_config(0));
    cr_assert_eq(r.status.code, 1, "%s", dump(r).c_str());
    std::string l = line_with(r.out, "FAIL backend service \"app\"");
    cr_assert(has(l, "Connection refused"), "%s", dump(r).c_str());
    cr_assert(has(r.out, "handshake complete"), "%s", dump(r).c_str());
}

Test(doctor, client_unresolvable_server_address) {
    Tunnel t({.start_clients = false});
    std::string ini = t.write_client_config(0);
    std::string text = read_file(ini);
    const std::string from = "server-address = " + kServerName;
    text.replace(text.find(from), from.size(), "server-address = nowhere.invalid");
    write_file(ini, text);
    RunResult r = doctor_client(t, ini);
    cr_assert_eq(r.status.code, 1, "%s", dump(r).c_str());
    cr_assert(has(line_with(r.out, "FAIL server nowhere.invalid:"), "DNS: "), "%s",
              dump(r).c_str());
}

// ---- Server side

// A Server config with fresh material in `dir`; `extra` goes into [server], `routes` after the
// [tunnel].
std::string server_config(const TempDir& dir, const std::string& extra, const std::string& routes,
                          std::uint16_t public_port, std::uint16_t tunnel_port) {
    if (!file_exists(dir / "cert/server.crt")) {
        RunResult init =
            doctor({"server", "cert", "init", "--hostname", kServerName, "--dir", dir / "cert"});
        cr_assert(init.status.success(), "%s", dump(init).c_str());
    }
    std::string ini = "[server]\nhostname = " + kServerName + "\ncert-dir = " + (dir / "cert") +
                      "\npublic-bind-address = " + hp("127.0.0.1", public_port) +
                      "\ntunnel-bind-address = " + hp("127.0.0.1", tunnel_port) + "\n" + extra +
                      "\n[tunnel \"app\"]\npublic-hostnames = " + kApp +
                      "\nclient-identities = " + std::string(64, 'a') + "\n" + routes;
    std::string path = dir / "server.ini";
    write_file(path, ini);
    return path;
}

// A TCP listener on loopback (an upstream that accepts, or a port held by this process).
Fd listen_tcp(std::uint16_t port) {
    Fd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    int one = 1;
    ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(::bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    cr_assert_eq(::listen(fd.get(), 16), 0);
    return fd;
}

Test(doctor, server_good_config) {
    TempDir dir;
    std::uint16_t up = free_port();
    Fd upstream = listen_tcp(up);
    std::string ini = server_config(
        dir, "readiness-bind-address = " + hp("127.0.0.1", free_port()) + "\n",
        "\n[route \"web\"]\npublic-hostnames = web.example.test\nupstream-address = " +
            hp("127.0.0.1", up) + "\n",
        free_port(), free_port());
    RunResult r = doctor({"doctor", "server", "-c", ini});
    cr_assert(r.status.success(), "%s", dump(r).c_str());
    assert_all_ok(r);
    for (const char* check :
         {"ok   key mode server certificate", "ok   chain server certificate",
          "ok   names server certificate", "ok   expiry server certificate", "ok   port public",
          "ok   port tunnel", "ok   port readiness", "ok   upstream route \"web\""}) {
        cr_assert(has(r.out, check), "%s missing\n%s", check, dump(r).c_str());
    }
}

Test(doctor, server_key_readable_by_others) {
    TempDir dir;
    std::string ini = server_config(dir, "", "", free_port(), free_port());
    cr_assert_eq(::chmod((dir / "cert/server.key").c_str(), 0644), 0);
    RunResult r = doctor({"doctor", "server", "-c", ini});
    cr_assert_eq(r.status.code, 1, "%s", dump(r).c_str());
    std::string l = line_with(r.out, "FAIL key mode server certificate");
    cr_assert(has(l, "0644") && has(l, "chmod 600"), "%s", dump(r).c_str());
    // The other material checks still ran and passed.
    cr_assert(has(r.out, "ok   key match server certificate"), "%s", dump(r).c_str());
}

Test(doctor, server_dead_upstream) {
    TempDir dir;
    std::string ini = server_config(dir, "",
                                    "\n[route \"web\"]\npublic-hostnames = web.example.test\n"
                                    "upstream-address = " +
                                        hp("127.0.0.1", free_port()) + "\n",
                                    free_port(), free_port());
    RunResult r = doctor({"doctor", "server", "-c", ini});
    cr_assert_eq(r.status.code, 1, "%s", dump(r).c_str());
    std::string l = line_with(r.out, "FAIL upstream route \"web\"");
    cr_assert(has(l, "Connection refused"), "%s", dump(r).c_str());
}

Test(doctor, server_port_held_by_another_program) {
    TempDir dir;
    std::uint16_t port = free_port();
    Fd holder = listen_tcp(port);
    std::string ini = server_config(dir, "", "", port, free_port());
    RunResult r = doctor({"doctor", "server", "-c", ini});
    cr_assert_eq(r.status.code, 1, "%s", dump(r).c_str());
    std::string l = line_with(r.out, "FAIL port public");
    cr_assert(has(l, "in use by") && has(l, "pid " + std::to_string(::getpid())), "%s",
              dump(r).c_str());
}

Test(doctor, server_ports_held_by_running_server) {
    Tunnel t({.start_clients = false});
    RunResult r = doctor({"doctor", "server", "-c", t.out("server.ini")});
    cr_assert(r.status.success(), "%s", dump(r).c_str());
    std::string pid = "pid " + std::to_string(t.server().pid());
    cr_assert(has(line_with(r.out, "ok   port public"), "held by the running runewarp server"),
              "%s", dump(r).c_str());
    cr_assert(has(line_with(r.out, "ok   port tunnel"), pid), "%s", dump(r).c_str());
}

Test(doctor, invalid_config_stops) {
    TempDir dir;
    write_file(dir / "bad.ini", "[server]\nhostname = -bad-\n");
    RunResult r = doctor({"doctor", "server", "-c", dir / "bad.ini"});
    cr_assert_eq(r.status.code, 1, "%s", dump(r).c_str());
    cr_assert(r.out.rfind("FAIL config: ", 0) == 0, "%s", dump(r).c_str());
    cr_assert(has(r.out, "invalid server config in"), "%s", dump(r).c_str());
    cr_assert(!has(r.out, "port public"), "%s", dump(r).c_str());
}

// ---- lint

struct LintFiles {
    TempDir dir;
    std::string id_a = std::string(64, 'a');
    std::string id_b = std::string(64, 'b');

    std::string server(const std::string& server_extra, const std::string& sections) {
        if (!file_exists(dir / "cert/server.crt")) {
            RunResult init = doctor(
                {"server", "cert", "init", "--hostname", kServerName, "--dir", dir / "cert"});
            cr_assert(init.status.success(), "%s", dump(init).c_str());
        }
        std::string ini = "[server]\nhostname = " + kServerName + "\ncert-dir = " + (dir / "cert") +
                          "\npublic-bind-address = 0.0.0.0:443\n" + server_extra + sections;
        write_file(dir / "server.ini", ini);
        return dir / "server.ini";
    }
    std::string pool(const std::string& hostnames, const std::string& ids) {
        return "\n[tunnel \"app\"]\npublic-hostnames = " + hostnames +
               "\nclient-identities = " + ids + "\n";
    }
    std::string identity() {
        std::string d = dir / "identity";
        if (!file_exists(d + "/client-identity.txt")) {
            RunResult r = doctor({"client", "identity", "init", "--dir", d});
            cr_assert(r.status.success(), "%s", dump(r).c_str());
        }
        std::string id = read_file(d + "/client-identity.txt");
        while (!id.empty() && (id.back() == '\n' || id.back() == ' ')) id.pop_back();
        return id;
    }
    std::string client(const std::string& services) {
        identity();
        std::string ini =
            "[client]\nserver-address = " + kServerName +
            "\nserver-trust = ca-file\nserver-ca-file = " + (dir / "cert/server-ca.crt") +
            "\nidentity-dir = " + (dir / "identity") + "\n" + services;
        write_file(dir / "client.ini", ini);
        return dir / "client.ini";
    }
};

RunResult lint(const std::vector<std::string>& args) {
    std::vector<std::string> a = {"lint"};
    a.insert(a.end(), args.begin(), args.end());
    return doctor(a);
}

void assert_single_warning(const RunResult& r, const std::string& rule) {
    cr_assert_eq(r.status.code, 1, "%s", dump(r).c_str());
    cr_assert(r.out.rfind("warn " + rule + ": ", 0) == 0, "%s", dump(r).c_str());
    cr_assert_eq(count_of(r.out, "\n"), 1u, "%s", dump(r).c_str());
}

Test(doctor, lint_clean_server_config) {
    LintFiles f;
    std::string ini =
        f.server("readiness-bind-address = 127.0.0.1:9000\n", f.pool(kApp, f.id_a + ", " + f.id_b));
    RunResult r = lint({"-c", ini});
    cr_assert(r.status.success(), "%s", dump(r).c_str());
    cr_assert_eq(r.out, "lint: no warnings\n", "%s", dump(r).c_str());
}

Test(doctor, lint_public_port) {
    LintFiles f;
    std::string ini = f.server("", f.pool(kApp, f.id_a + ", " + f.id_b));
    std::string text = read_file(ini);
    text.replace(text.find("0.0.0.0:443"), 11, "0.0.0.0:8443");
    write_file(ini, text);
    assert_single_warning(lint({"-c", ini}), "public-port");
}

Test(doctor, lint_readiness_exposed) {
    LintFiles f;
    std::string ini =
        f.server("readiness-bind-address = 0.0.0.0:9000\n", f.pool(kApp, f.id_a + ", " + f.id_b));
    assert_single_warning(lint({"-c", ini}), "readiness-exposed");
}

Test(doctor, lint_single_member_pool) {
    LintFiles f;
    std::string ini = f.server("", f.pool(kApp, f.id_a));
    assert_single_warning(lint({"-c", ini}), "single-member-pool");
}

Test(doctor, lint_proxy_to_public_upstream) {
    LintFiles f;
    std::string ini =
        f.server("",
                 "\n[route \"web\"]\npublic-hostnames = web.example.test\nupstream-address = "
                 "198.51.100.7:443\nproxy-protocol = v2\n"
                 "\n[route \"lan\"]\npublic-hostnames = lan.example.test\nupstream-address = "
                 "10.1.2.3:443\nproxy-protocol = v2\n");
    RunResult r = lint({"-c", ini});
    assert_single_warning(r, "proxy-to-public");
    cr_assert(has(r.out, "route \"web\""), "%s", dump(r).c_str());
}

Test(doctor, lint_proxy_to_public_backend) {
    LintFiles f;
    f.server("", f.pool(kApp, f.id_a + ", " + f.id_b));
    std::string ini = f.client("\n[service \"app\"]\npublic-hostnames = " + kApp +
                               "\nbackend-address = 203.0.113.9:8443\nproxy-protocol = v2\n");
    RunResult r = lint({"-c", ini});
    assert_single_warning(r, "proxy-to-public");
    cr_assert(has(r.out, "service \"app\""), "%s", dump(r).c_str());
}

Test(doctor, lint_pair_mirroring_and_pinning) {
    LintFiles f;
    std::string id = f.identity();
    std::string server = f.server("", f.pool(kApp + ", " + kOther, id + ", " + f.id_b));
    std::string client = f.client("\n[service \"app\"]\npublic-hostnames = " + kApp +
                                  ", extra.example.test\nbackend-address = 127.0.0.1:8443\n");
    RunResult r = lint({"--server-config", server, "--client-config", client});
    cr_assert_eq(r.status.code, 1, "%s", dump(r).c_str());
    cr_assert(has(line_with(r.out, "warn service-not-tunneled"), "extra.example.test"), "%s",
              dump(r).c_str());
    cr_assert(has(line_with(r.out, "warn tunnel-without-service"), kOther), "%s", dump(r).c_str());
    cr_assert(!has(r.out, "identity-not-pinned"), "%s", dump(r).c_str());
    cr_assert_eq(count_of(r.out, "\n"), 2u, "%s", dump(r).c_str());

    // The same Client, not pinned by the Server.
    f.server("", f.pool(kApp + ", " + kOther, f.id_a + ", " + f.id_b));
    r = lint({"--server-config", server, "--client-config", client});
    cr_assert_eq(r.status.code, 1, "%s", dump(r).c_str());
    cr_assert(has(line_with(r.out, "warn identity-not-pinned"), id), "%s", dump(r).c_str());
}

Test(doctor, lint_pair_catch_all_and_clean) {
    LintFiles f;
    std::string id = f.identity();
    std::string server = f.server("", f.pool(kApp + ", " + kOther, id + ", " + f.id_b));
    std::string client = f.client("\n[service \"all\"]\nbackend-address = 127.0.0.1:8443\n");
    // A Catch-all Service serves every Tunnel hostname.
    RunResult r = lint({"--server-config", server, "--client-config", client});
    cr_assert(r.status.success(), "%s", dump(r).c_str());
    cr_assert_eq(r.out, "lint: no warnings\n", "%s", dump(r).c_str());
}

Test(doctor, lint_usage_and_invalid) {
    LintFiles f;
    std::string ini = f.server("", f.pool(kApp, f.id_a + ", " + f.id_b));
    RunResult r = lint({"-c", ini, "--server-config", ini});
    cr_assert_eq(r.status.code, 2, "%s", dump(r).c_str());
    write_file(f.dir / "bad.ini", "[server]\nhostname = -bad-\n");
    r = lint({"-c", f.dir / "bad.ini"});
    cr_assert_eq(r.status.code, 1, "%s", dump(r).c_str());
    cr_assert(has(r.err, "invalid server config in"), "%s", dump(r).c_str());
}

}  // namespace
