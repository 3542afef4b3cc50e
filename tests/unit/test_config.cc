// Config module tests: broken-config table with exact messages, examples, paths, overlays,
// registry.
#include <criterion/criterion.h>
#include <sched.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "config/config.hh"
#include "config/ini_document.hh"
#include "config/paths.hh"
#include "config/registry.hh"
#include "config/render.hh"
#include "config/values.hh"
#include "core/file.hh"

using namespace runewarp::config;
namespace proto = runewarp::proto;
namespace fs = std::filesystem;

namespace {

constexpr const char* kId = "4f7b6f7a9b0f0d2b91e92c8a5df6a44e0123456789abcdef0123456789abcdef";
constexpr const char* kId2 = "91e92c8a5df6a44e91e92c8a5df6a44e91e92c8a5df6a44e91e92c8a5df6a44e";

// A scratch directory holding valid-looking material: cert/, identity/, ca.crt, empty/, acme/.
struct Scratch {
    std::string dir;
    Scratch() {
        char tmpl[] = "/tmp/runewarp-config-XXXXXX";
        char* d = mkdtemp(tmpl);
        cr_assert(d != nullptr);
        dir = d;
        touch_all("cert", {"server.crt", "server.key", "server-ca.crt"});
        touch_all("identity", {"client.crt", "client.key", "client-identity.txt"});
        fs::create_directories(dir + "/empty");
        fs::create_directories(dir + "/acme");
        fs::create_directories(dir + "/public-cert");
        write("ca.crt", "x");
    }
    ~Scratch() {
        std::error_code ec;
        fs::remove_all(dir, ec);
    }
    void touch_all(const std::string& sub, std::initializer_list<const char*> files) {
        fs::create_directories(dir + "/" + sub);
        for (const char* f : files) write(sub + "/" + f, "x");
    }
    void write(const std::string& rel, const std::string& text) {
        std::ofstream(dir + "/" + rel) << text;
    }
    std::string path() const { return dir + "/config.ini"; }
    Env env() const {
        Env e;
        e.home = dir + "/home";
        e.cwd = dir;
        return e;
    }
};

std::string subst(std::string s, const std::string& dir) {
    for (std::size_t pos; (pos = s.find("@DIR@")) != std::string::npos;) s.replace(pos, 5, dir);
    for (std::size_t pos; (pos = s.find("@ID@")) != std::string::npos;) s.replace(pos, 4, kId);
    for (std::size_t pos; (pos = s.find("@ID2@")) != std::string::npos;) s.replace(pos, 5, kId2);
    return s;
}

LoadOutcome load_text(const Scratch& s, Role role, const std::string& text, Overrides ov = {}) {
    LoadOptions o;
    o.role = role;
    o.path = s.path();
    o.path_is_default = false;
    o.env = s.env();
    o.overrides = std::move(ov);
    return load_from_string(subst(text, s.dir), o);
}

std::string dump(const LoadOutcome& out) {
    std::string d;
    for (const auto& p : out.problems) d += "[" + std::to_string(p.line) + "] " + p.message + "\n";
    return d;
}

std::string read_file(const std::string& p) {
    auto text = runewarp::core::read_file(p);
    cr_assert(text.ok(), "%s", text.ok() ? "" : text.error().message.c_str());
    return *text;
}

#define S_HEAD "[server]\nhostname = tunnel.example.com\ncert-dir = cert\n"
#define TUN "[tunnel \"apps\"]\npublic-hostnames = app.example.com\nclient-identity = @ID@\n"
#define C_HEAD "[client]\nserver-address = tunnel.example.com\nidentity-dir = identity\n"
#define SVC \
    "[service \"web\"]\npublic-hostnames = app.example.com\nbackend-address = 127.0.0.1:8080\n"

struct Case {
    Role role;
    const char* ini;
    int line;
    const char* message;
    const char* hint;  // expected sole hint, or nullptr for none
};

const std::string kLong = "# " + std::string(200, 'x') + "\n";

const Case kCases[] = {
    // pre-scan and syntax
    {Role::kServer, S_HEAD TUN "[server]\n", 7, "duplicate section [server] (first at line 1)",
     nullptr},
    {Role::kServer, S_HEAD TUN "[tunnel \"apps\"]\n", 7,
     "duplicate section [tunnel \"apps\"] (first at line 4)", nullptr},
    {Role::kServer, S_HEAD "garbage\n" TUN, 4, "syntax error at line 4", nullptr},
    {Role::kServer, S_HEAD TUN "[statsd]\n", 7, "unknown section [statsd]", nullptr},
    {Role::kServer, S_HEAD TUN "[metrics]\nprometheus-bind-address = localhost:9100\n", 8,
     "metrics.prometheus-bind-address: invalid value \"localhost:9100\": must be a literal "
     "socket address such as 0.0.0.0:443 or [::]:443 (no hostnames)",
     nullptr},
    {Role::kServer, S_HEAD TUN "[server.cert]\n", 7, "unknown section [server.cert]", nullptr},
    {Role::kServer, S_HEAD TUN "[route \"Web\"]\n", 7,
     "invalid route label \"Web\": labels match [a-z0-9][a-z0-9_-]{0,62}", nullptr},
    {Role::kServer, S_HEAD TUN "[tunnel apps2]\n", 7,
     "invalid section name [tunnel apps2]: expected [tunnel \"LABEL\"]", nullptr},
    {Role::kServer, S_HEAD TUN "[service \"-web\"]\n", 7,
     "invalid service label \"-web\": labels match [a-z0-9][a-z0-9_-]{0,62}", nullptr},
    {Role::kServer, "hostname = x.example.com\n" S_HEAD TUN, 1,
     "unknown field hostname in the top level", nullptr},
    {Role::kServer, S_HEAD "identity-directory = x\n" TUN, 4,
     "unknown field identity-directory in [server]", nullptr},
    {Role::kServer, S_HEAD "hostname = other.example.com\n" TUN, 4,
     "`hostname` given more than once in [server]", nullptr},
    {Role::kServer,
     "[server]\nhostname = tunnel.example.com\n  other.example.com\ncert-dir = cert\n" TUN, 3,
     "`hostname` given more than once in [server]", nullptr},
    {Role::kServer, S_HEAD "[tunnel \"apps\"]\npublic-hostnames = , ,\nclient-identity = @ID@\n", 5,
     "tunnel \"apps\": public-hostnames must not be an empty list", nullptr},
    // top level
    {Role::kServer, "log-level = verbose\n" S_HEAD TUN, 1,
     "log-level: invalid value \"verbose\": must be one of off, error, warn, info, debug, trace",
     nullptr},
    {Role::kClient, "log-format = xml\n" C_HEAD SVC, 1,
     "log-format: invalid value \"xml\": must be one of text, json", nullptr},
    // [server] keys
    {Role::kServer, "[server]\nhostname = 192.0.2.1\ncert-dir = cert\n" TUN, 2,
     "server.hostname: invalid value \"192.0.2.1\": must not be an IP address literal", nullptr},
    {Role::kServer, "[server]\nhostname = tunnel_1.example.com\ncert-dir = cert\n" TUN, 2,
     "server.hostname: invalid value \"tunnel_1.example.com\": labels must be 1-63 characters of "
     "a-z, 0-9 and '-', not starting or ending with '-'",
     nullptr},
    {Role::kServer, "[server]\ncert-dir = cert\n" TUN, 1, "server.hostname is required", nullptr},
    {Role::kServer, S_HEAD "graceful-shutdown-duration = 1.5s\n" TUN, 4,
     "server.graceful-shutdown-duration: invalid value \"1.5s\": must be an unsigned integer "
     "followed by one unit of ms, s, m or h (e.g. 60s)",
     nullptr},
    {Role::kServer, S_HEAD "graceful-shutdown-duration = 1m30s\n" TUN, 4,
     "server.graceful-shutdown-duration: invalid value \"1m30s\": must be an unsigned integer "
     "followed by one unit of ms, s, m or h (e.g. 60s)",
     nullptr},
    {Role::kServer, S_HEAD "graceful-shutdown-duration = -1s\n" TUN, 4,
     "server.graceful-shutdown-duration: invalid value \"-1s\": must be an unsigned integer "
     "followed by one unit of ms, s, m or h (e.g. 60s)",
     nullptr},
    {Role::kServer, S_HEAD "graceful-shutdown-duration = 10 s\n" TUN, 4,
     "server.graceful-shutdown-duration: invalid value \"10 s\": must be an unsigned integer "
     "followed by one unit of ms, s, m or h (e.g. 60s)",
     nullptr},
    {Role::kServer, S_HEAD "public-bind-address = localhost:443\n" TUN, 4,
     "server.public-bind-address: invalid value \"localhost:443\": must be a literal socket "
     "address such as 0.0.0.0:443 or [::]:443 (no hostnames)",
     nullptr},
    {Role::kServer, S_HEAD "tunnel-bind-address = ::443\n" TUN, 4,
     "server.tunnel-bind-address: invalid value \"::443\": must be a literal socket "
     "address such as 0.0.0.0:443 or [::]:443 (no hostnames)",
     nullptr},
    {Role::kServer, S_HEAD "visitor-proxy-protocol = v1\n" TUN, 4,
     "server.visitor-proxy-protocol: invalid value \"v1\": must be one of v2", nullptr},
    {Role::kServer, S_HEAD "visitor-proxy-protocol = v2\n" TUN, 4,
     "server.visitor-proxy-trusted-networks is required when server.visitor-proxy-protocol = v2",
     nullptr},
    {Role::kServer, S_HEAD "visitor-proxy-trusted-networks = 10.0.0.0/8\n" TUN, 4,
     "server.visitor-proxy-trusted-networks is allowed only with server.visitor-proxy-protocol = "
     "v2",
     nullptr},
    {Role::kServer,
     S_HEAD
     "visitor-proxy-protocol = v2\nvisitor-proxy-trusted-networks = 127.0.0.0/8 10.0.0.1/8\n" TUN,
     5,
     "server.visitor-proxy-trusted-networks: invalid value \"10.0.0.1/8\": host bits must be zero "
     "(did you mean 10.0.0.0/8?)",
     nullptr},
    {Role::kServer,
     S_HEAD "visitor-proxy-protocol = v2\nvisitor-proxy-trusted-networks = fd00::/129\n" TUN, 5,
     "server.visitor-proxy-trusted-networks: invalid value \"fd00::/129\": prefix must be at most "
     "128",
     nullptr},
    {Role::kServer, S_HEAD "identity-dir = identity\n" TUN, 4,
     "server.identity-dir is allowed only in managed mode ([control])", nullptr},
    {Role::kServer, S_HEAD "event-backend = kqueue\n" TUN, 4,
     "server.event-backend: invalid value \"kqueue\": must be one of auto, io_uring, epoll",
     nullptr},
    {Role::kServer, S_HEAD "tunnel-retry = sometimes\n" TUN, 4,
     "server.tunnel-retry: invalid value \"sometimes\": must be one of auto, always, never",
     nullptr},
    {Role::kServer, S_HEAD "tunnel-retry = Always\n" TUN, 4,
     "server.tunnel-retry: invalid value \"Always\": must be one of auto, always, never", nullptr},
    {Role::kServer, S_HEAD "tunnel-retry =\n" TUN, 4,
     "server.tunnel-retry: invalid value \"\": must be one of auto, always, never", nullptr},
    {Role::kServer, S_HEAD "max-active-streams = 0\n" TUN, 4,
     "server.max-active-streams: invalid value \"0\": must be a whole number from 1 to 262144",
     nullptr},
    {Role::kServer, S_HEAD "max-pending-stream-opens = 262145\n" TUN, 4,
     "server.max-pending-stream-opens: invalid value \"262145\": must be a whole number from 1 "
     "to 262144",
     nullptr},
    {Role::kServer, S_HEAD "max-active-streams = 10k\n" TUN, 4,
     "server.max-active-streams: invalid value \"10k\": must be a whole number from 1 to 262144",
     nullptr},
    {Role::kClient, C_HEAD "max-streams = -1\n" SVC, 4,
     "client.max-streams: invalid value \"-1\": must be a whole number from 1 to 262144", nullptr},
    {Role::kServer, S_HEAD "workers = 0\n" TUN, 4,
     "server.workers: invalid value \"0\": must be auto or a whole number from 1 to 64", nullptr},
    {Role::kClient, C_HEAD "workers = 65\n" SVC, 4,
     "client.workers: invalid value \"65\": must be auto or a whole number from 1 to 64", nullptr},
    {Role::kClient, C_HEAD "workers = Auto\n" SVC, 4,
     "client.workers: invalid value \"Auto\": must be auto or a whole number from 1 to 64",
     nullptr},
    // material and ACME
    {Role::kServer, "[server]\nhostname = tunnel.example.com\ncert-dir = empty\n" TUN, 3,
     "server.cert-dir: @DIR@/empty is missing server.crt, server.key, server-ca.crt",
     "Hint: runewarp server cert init --config @DIR@/config.ini"},
    {Role::kServer, "[server]\nhostname = tunnel.example.com\ncert-dir = nope\n" TUN, 3,
     "server.cert-dir: directory @DIR@/nope does not exist",
     "Hint: runewarp server cert init --config @DIR@/config.ini"},
    {Role::kServer, S_HEAD "[server.acme]\nemail = admin@example.com\n" TUN, 3,
     "server.cert-dir and [server.acme] are mutually exclusive", nullptr},
    {Role::kServer, "[server]\nhostname = tunnel.example.com\n[server.acme]\n" TUN, 3,
     "server.acme.email is required", nullptr},
    {Role::kServer,
     "[server]\nhostname = tunnel.example.com\n[server.acme]\nemail = a@example.com\nstate-dir = "
     "nope\n" TUN,
     5, "server.acme.state-dir: directory @DIR@/nope does not exist", nullptr},
    // tunnels and routes, and the rules across them
    {Role::kServer, TUN, 0, "missing [server] section", nullptr},
    {Role::kServer, S_HEAD, 0,
     "at least one [tunnel \"LABEL\"] or [route \"LABEL\"] section is required", nullptr},
    {Role::kServer, S_HEAD "[tunnel \"apps\"]\npublic-hostnames = app.example.com\n", 4,
     "tunnel \"apps\": client-identity or client-identities is required", nullptr},
    {Role::kServer, S_HEAD "[tunnel \"apps\"]\nclient-identity = @ID@\n", 4,
     "tunnel \"apps\": public-hostnames is required", nullptr},
    {Role::kServer, S_HEAD TUN "client-identities = @ID2@\n", 7,
     "tunnel \"apps\": client-identity and client-identities are mutually exclusive", nullptr},
    {Role::kServer,
     S_HEAD "[tunnel \"apps\"]\npublic-hostnames = app.example.com\nclient-identity = "
            "4F7B6F7A9B0F0D2B91E92C8A5DF6A44E0123456789ABCDEF0123456789ABCDEF\n",
     6,
     "tunnel \"apps\": client-identity: invalid value "
     "\"4F7B6F7A9B0F0D2B91E92C8A5DF6A44E0123456789ABCDEF0123456789ABCDEF\": client identity must "
     "be "
     "exactly 64 lowercase hex characters",
     nullptr},
    {Role::kServer,
     S_HEAD "[tunnel \"apps\"]\npublic-hostnames = app.example.com\nclient-identities = "
            "4f:7b:6f:7a\n",
     6,
     "tunnel \"apps\": client-identities: invalid value \"4f:7b:6f:7a\": client identity must be "
     "exactly 64 lowercase hex characters",
     nullptr},
    {Role::kServer,
     S_HEAD TUN "[tunnel \"api\"]\npublic-hostnames = App.Example.COM.\nclient-identity = @ID2@\n",
     8, "public hostname app.example.com appears in both tunnel \"apps\" and tunnel \"api\"",
     nullptr},
    {Role::kServer,
     S_HEAD TUN "[tunnel \"api\"]\npublic-hostnames = api.example.com\nclient-identity = @ID@\n", 9,
     "client identity 4f7b6f7a9b0f0d2b91e92c8a5df6a44e0123456789abcdef0123456789abcdef appears in "
     "both tunnel \"apps\" and tunnel \"api\"",
     nullptr},
    {Role::kServer,
     S_HEAD "[tunnel \"apps\"]\npublic-hostnames = app.example.com, tunnel.example.com\n"
            "client-identity = @ID@\n",
     5,
     "tunnel \"apps\": public hostname tunnel.example.com is the Server hostname (server.hostname)",
     nullptr},
    {Role::kServer,
     S_HEAD "[tunnel \"apps\"]\npublic-hostnames = *.example.com\nclient-identity = @ID@\n", 5,
     "tunnel \"apps\": public-hostnames: invalid value \"*.example.com\": must not contain "
     "wildcards ('*')",
     nullptr},
    {Role::kServer,
     S_HEAD TUN "[route \"local\"]\npublic-hostnames = app.example.com\nupstream-address = "
                "127.0.0.1:8443\n",
     8, "public hostname app.example.com appears in both tunnel \"apps\" and route \"local\"",
     nullptr},
    {Role::kServer,
     "[server]\nhostname = tunnel.example.com\n[route \"local\"]\npublic-hostnames = "
     "tunnel.example.com\nupstream-address = 127.0.0.1:8443\n",
     4,
     "route \"local\": public hostname tunnel.example.com is the Server hostname (server.hostname)",
     nullptr},
    {Role::kServer,
     "[server]\nhostname = tunnel.example.com\n[route \"local\"]\npublic-hostnames = "
     "web.example.com\nupstream-address = 127.0.0.1:0\n",
     5,
     "route \"local\": upstream-address: invalid value \"127.0.0.1:0\": must be host:port or a "
     "literal socket address such as [::1]:8443, port 1-65535",
     nullptr},
    {Role::kServer,
     "[server]\nhostname = tunnel.example.com\n[route \"local\"]\npublic-hostnames = "
     "web.example.com\n",
     3, "route \"local\": upstream-address is required", nullptr},
    {Role::kServer,
     "[server]\nhostname = tunnel.example.com\n[route \"local\"]\npublic-hostnames = "
     "web.example.com\nupstream-address = [::1]:8443\nproxy-protocol = v1\n",
     6, "route \"local\": proxy-protocol: invalid value \"v1\": must be one of v2", nullptr},
    // [client] keys and the rules across them
    {Role::kClient, SVC, 0,
     "`--server-address` is required when the selected config has no [client] section", nullptr},
    {Role::kClient, C_HEAD "server-addresses = tunnel-b.example.com\n" SVC, 4,
     "client.server-address and client.server-addresses are mutually exclusive", nullptr},
    {Role::kClient, "[client]\nidentity-dir = identity\n" SVC, 1,
     "client.server-address or client.server-addresses is required", nullptr},
    {Role::kClient, "[client]\nserver-address = 192.0.2.1\nidentity-dir = identity\n" SVC, 2,
     "client.server-address: invalid value \"192.0.2.1\": must be a hostname, not an IP address "
     "literal",
     nullptr},
    {Role::kClient, "[client]\nserver-address = [::1]:443\nidentity-dir = identity\n" SVC, 2,
     "client.server-address: invalid value \"[::1]:443\": must be a hostname, not an IP address "
     "literal",
     nullptr},
    {Role::kClient,
     "[client]\nserver-address = tunnel.example.com:0\nidentity-dir = identity\n" SVC, 2,
     "client.server-address: invalid value \"tunnel.example.com:0\": port must be a number from 1 "
     "to 65535",
     nullptr},
    {Role::kClient,
     "[client]\nserver-addresses = tunnel.example.com:65536\nidentity-dir = identity\n" SVC, 2,
     "client.server-addresses: invalid value \"tunnel.example.com:65536\": port must be a number "
     "from 1 to 65535",
     nullptr},
    {Role::kClient,
     "[client]\nserver-addresses = Tunnel.example.com\nserver-addresses = "
     "tunnel.example.com:443\nidentity-dir = identity\n" SVC,
     0, "duplicate Server address tunnel.example.com:443", nullptr},
    {Role::kClient, C_HEAD "server-trust = pinned\n" SVC, 4,
     "client.server-trust: invalid value \"pinned\": must be one of system, ca-file", nullptr},
    {Role::kClient, C_HEAD "server-ca-file = ca.crt\n" SVC, 4,
     "client.server-ca-file is allowed only with client.server-trust = ca-file", nullptr},
    {Role::kClient, C_HEAD "server-trust = ca-file\nserver-ca-file = nope.crt\n" SVC, 5,
     "client.server-ca-file: file @DIR@/nope.crt does not exist", nullptr},
    {Role::kClient, "[client]\nserver-address = tunnel.example.com\nidentity-dir = empty\n" SVC, 3,
     "client.identity-dir: @DIR@/empty is missing client.crt, client.key, client-identity.txt",
     "Hint: runewarp client identity init --config @DIR@/config.ini"},
    // services
    {Role::kClient, C_HEAD SVC "[service \"all\"]\nbackend-address = 127.0.0.1:9000\n", 7,
     "service \"all\": public-hostnames may be omitted only when this is the only service "
     "(Catch-all)",
     nullptr},
    {Role::kClient,
     C_HEAD "[service \"all\"]\nbackend-address = 127.0.0.1:9000\ntls-mode = terminate\n", 4,
     "service \"all\": a Catch-all service (no public-hostnames) must use tls-mode = passthrough",
     nullptr},
    {Role::kClient,
     C_HEAD "[service \"web\"]\npublic-hostnames = app.example.com\nbackend-address = localhost\n",
     6,
     "service \"web\": backend-address: invalid value \"localhost\": must be host:port or a "
     "literal "
     "socket address such as [::1]:8443, port 1-65535",
     nullptr},
    {Role::kClient,
     C_HEAD "[service \"web\"]\npublic-hostnames = app.example.com\nbackend-address = ::1:8080\n",
     6,
     "service \"web\": backend-address: invalid value \"::1:8080\": an IPv6 address must be "
     "written "
     "in brackets, e.g. [::1]:8443",
     nullptr},
    {Role::kClient, C_HEAD "[service \"web\"]\npublic-hostnames = app.example.com\n", 4,
     "service \"web\": backend-address is required", nullptr},
    {Role::kClient,
     C_HEAD SVC "[service \"api\"]\npublic-hostnames = APP.example.com\nbackend-address = "
                "127.0.0.1:9000\n",
     8, "public hostname app.example.com appears in both service \"web\" and service \"api\"",
     nullptr},
    {Role::kClient, C_HEAD SVC "tls-mode = offload\n", 7,
     "service \"web\": tls-mode: invalid value \"offload\": must be one of passthrough, terminate",
     nullptr},
    {Role::kClient, C_HEAD "public-cert-dir = public-cert\n" SVC, 4,
     "client.public-cert-dir requires a service with tls-mode = terminate", nullptr},
    {Role::kClient, C_HEAD "[client.acme]\nemail = a@example.com\n" SVC, 4,
     "[client.acme] requires a service with tls-mode = terminate", nullptr},
    {Role::kClient,
     C_HEAD "public-cert-dir = public-cert\n[client.acme]\nemail = a@example.com\n" SVC
            "tls-mode = terminate\n",
     4, "client.public-cert-dir and [client.acme] are mutually exclusive", nullptr},
    {Role::kClient, C_HEAD "public-cert-dir = nope\n" SVC "tls-mode = terminate\n", 4,
     "client.public-cert-dir: directory @DIR@/nope does not exist",
     "Hint: runewarp client public-cert init --config @DIR@/config.ini"},
    // [control] (Managed mode)
    {Role::kClient, "[client]\nidentity-dir = identity\n" SVC "[control]\naddress = 192.0.2.1\n", 7,
     "control.address: invalid value \"192.0.2.1\": must be a hostname, not an IP address literal",
     nullptr},
    {Role::kClient, C_HEAD SVC "[control]\naddress = control.example.com\n", 2,
     "static Server addresses are not allowed in managed mode ([control])", nullptr},
    {Role::kClient,
     "[client]\nidentity-dir = identity\n" SVC
     "[control]\naddress = control.example.com\nca-file = ca.crt\n",
     8, "control.ca-file is allowed only with control.trust = ca-file", nullptr},
    // other role's sections still need valid names
    {Role::kClient, C_HEAD SVC "[tunnel \"Bad\"]\n", 7,
     "invalid tunnel label \"Bad\": labels match [a-z0-9][a-z0-9_-]{0,62}", nullptr},
};

}  // namespace

Test(config, broken_configs_report_exact_messages) {
    cr_assert_geq(sizeof kCases / sizeof kCases[0], 30u);
    Scratch s;
    int index = 0;
    for (const auto& c : kCases) {
        auto out = load_text(s, c.role, c.ini);
        std::string want = subst(c.message, s.dir);
        cr_expect_eq(out.problems.size(), 1u, "case %d (%s): expected one problem, got:\n%s", index,
                     want.c_str(), dump(out).c_str());
        if (!out.problems.empty()) {
            cr_expect_eq(out.problems[0].message, want, "case %d: got '%s' want '%s'", index,
                         out.problems[0].message.c_str(), want.c_str());
            cr_expect_eq(out.problems[0].line, c.line, "case %d: line %d want %d", index,
                         out.problems[0].line, c.line);
            cr_expect_eq(out.problems[0].file, s.path());
        }
        cr_expect(!out.server && !out.client, "case %d: a model despite problems", index);
        if (c.hint) {
            cr_expect(out.hints.size() == 1 && out.hints[0] == subst(c.hint, s.dir),
                      "case %d: hint", index);
        } else {
            cr_expect(out.hints.empty(), "case %d: unexpected hint", index);
        }
        ++index;
    }
}

Test(config, long_line_is_rejected_by_number) {
    Scratch s;
    auto out = load_text(s, Role::kServer, std::string(S_HEAD) + kLong + TUN);
    cr_assert_eq(out.problems.size(), 1u, "%s", dump(out).c_str());
    cr_expect_eq(out.problems[0].line, 4);
    cr_expect_eq(out.problems[0].message, "line 4 is longer than 199 bytes");
    // 199 bytes is still fine.
    auto ok =
        load_text(s, Role::kServer, std::string(S_HEAD) + "#" + std::string(198, 'y') + "\n" + TUN);
    cr_expect(ok.ok(), "%s", dump(ok).c_str());
}

Test(config, all_problems_are_reported_together) {
    Scratch s;
    auto out = load_text(s, Role::kServer,
                         "log-level = loud\n[server]\nhostname = 1.2.3.4\ncert-dir = empty\n"
                         "[tunnel \"apps\"]\npublic-hostnames = a.example.com\n"
                         "client-identity = ABC\nfoo = bar\n");
    cr_assert_eq(out.problems.size(), 5u, "%s", dump(out).c_str());
    cr_expect_eq(out.problems[0].line, 1);
    cr_expect_eq(out.problems[1].line, 3);
    cr_expect_eq(out.problems[2].line, 4);
    cr_expect_eq(out.problems[3].line, 7);
    cr_expect_eq(out.problems[4].message, "unknown field foo in [tunnel \"apps\"]");
}

Test(config, report_format_matches_spec) {
    Scratch s;
    auto out = load_text(s, Role::kServer,
                         "[server]\nhostname = tunnel.example.com\ncert-dir = empty\n" TUN);
    std::string text = format_report(Role::kServer, s.path(), out);
    std::string want = "invalid server config in " + s.path() +
                       ":\n- line 3: server.cert-dir: " + s.dir +
                       "/empty is missing server.crt, server.key, server-ca.crt\n" +
                       "Hint: runewarp server cert init --config " + s.path() + "\n";
    cr_expect_eq(text, want, "got:\n%s", text.c_str());

    // Default config path: no --config in the hint; lineless problems have no "line" prefix.
    LoadOptions o;
    o.role = Role::kServer;
    o.path = s.path();
    o.path_is_default = true;
    o.env = s.env();
    auto out2 = load_from_string(S_HEAD, o);
    std::string text2 = format_report(Role::kServer, s.path(), out2);
    cr_expect_eq(text2, "invalid server config in " + s.path() +
                            ":\n- at least one [tunnel \"LABEL\"] or [route \"LABEL\"] section is "
                            "required\n");
    cr_expect_eq(format_report(Role::kServer, s.path(), load_text(s, Role::kServer, S_HEAD TUN)),
                 "");
}

Test(config, server_example_validates) {
    Scratch s;
    std::string text = read_file(RUNEWARP_TEST_DATA "/config/server-example.ini");
    cr_assert(!text.empty());
    auto out = load_text(s, Role::kServer, text);
    cr_assert(out.ok(), "%s", dump(out).c_str());
    const ServerConfig& c = *out.server;
    cr_expect_eq(c.hostname, "tunnel.example.com");
    cr_expect(c.acme.has_value());
    cr_expect_eq(c.acme->email, "admin@example.com");
    cr_expect(c.acme->state_dir_is_default);
    cr_expect_eq(c.acme->state_dir, s.dir + "/home/.local/state/runewarp/server/acme");
    cr_expect(c.cert_dir.empty());
    cr_expect(c.readiness_bind.has_value());
    cr_expect_eq(proto::format_endpoint(*c.readiness_bind), "127.0.0.1:9000");
    cr_expect_eq(proto::format_endpoint(c.public_bind), "0.0.0.0:443");
    cr_expect_eq(c.graceful_shutdown_ms, 60000u);
    cr_assert_eq(c.tunnels.size(), 1u);
    cr_expect_eq(c.tunnels[0].label, "apps");
    cr_expect(c.tunnels[0].public_hostnames ==
              std::vector<std::string>({"app.example.com", "api.example.com"}));
    cr_expect(c.tunnels[0].identities == std::vector<std::string>({kId, kId2}));
    cr_expect(!c.managed_requested);
    cr_expect(c.log_level == LogLevel::kInfo);
    // The Server ignores Client sections, even broken ones, but the file must not be created.
    cr_expect(!fs::exists(c.acme->state_dir));
    auto both = load_text(s, Role::kServer, text + "[client]\nbogus = 1\n");
    cr_expect(both.ok(), "%s", dump(both).c_str());
}

Test(config, client_example_validates) {
    Scratch s;
    std::string text = read_file(RUNEWARP_TEST_DATA "/config/client-example.ini");
    cr_assert(!text.empty());
    auto replace = [&](const std::string& from, const std::string& to) {
        auto pos = text.find(from);
        cr_assert(pos != std::string::npos);
        text.replace(pos, from.size(), to);
    };
    replace("/etc/runewarp/server-ca.crt", s.dir + "/ca.crt");
    replace("/var/lib/runewarp/client/identity", s.dir + "/identity");
    replace("/var/lib/runewarp/client/public-cert", "public-cert");  // relative to the file
    auto out = load_text(s, Role::kClient, text);
    cr_assert(out.ok(), "%s", dump(out).c_str());
    const ClientConfig& c = *out.client;
    cr_assert_eq(c.server_addresses.size(), 2u);
    cr_expect_eq(c.server_addresses[0].text(), "tunnel-a.example.com:443");
    cr_expect_eq(c.server_addresses[1].text(), "tunnel-b.example.com:8443");
    cr_expect(c.server_trust == Trust::kCaFile);
    cr_expect_eq(c.server_ca_file, s.dir + "/ca.crt");
    cr_expect_eq(c.identity_dir, s.dir + "/identity");
    cr_expect_eq(c.public_cert_dir, s.dir + "/public-cert");
    cr_assert_eq(c.services.size(), 2u);
    cr_expect_eq(c.services[0].label, "web");
    cr_expect(c.services[0].proxy_v2);
    cr_expect(c.services[0].tls_mode == TlsMode::kPassthrough);
    cr_expect_eq(c.services[0].backend.text(), "localhost:8443");
    cr_expect(!c.services[0].backend.host_is_literal);
    cr_expect(c.services[1].tls_mode == TlsMode::kTerminate);
    cr_expect(c.services[1].backend.host_is_literal);
    // The Client ignores Server sections, even broken ones.
    auto both = load_text(s, Role::kClient, text + "[server]\nhostname = 1.2.3.4\n");
    cr_expect(both.ok(), "%s", dump(both).c_str());
}

Test(config, values_are_parsed_into_the_model) {
    Scratch s;
    auto out = load_text(
        s, Role::kServer,
        "log-level = trace\nlog-format = \"json\"\n[server]\nhostname = Tunnel.Example.COM.\n"
        "cert-dir = cert\npublic-bind-address = [::]:443\ntunnel-bind-address = 127.0.0.1:0\n"
        "graceful-shutdown-duration = 0s\nvisitor-proxy-protocol = v2\n"
        "visitor-proxy-trusted-networks = 10.0.0.0/8,fd00::/8\n"
        "visitor-proxy-trusted-networks = 192.0.2.7/32\nevent-backend = epoll\n"
        "[tunnel \"apps\"]\npublic-hostnames = a.example.com\n  b.example.com\n"
        "client-identities = @ID@ @ID2@\n"
        "[route \"local\"]\npublic-hostnames = c.example.com\nupstream-address = [::1]:8443\n"
        "proxy-protocol = v2\n");
    cr_assert(out.ok(), "%s", dump(out).c_str());
    const ServerConfig& c = *out.server;
    cr_expect(c.log_level == LogLevel::kTrace);
    cr_expect(c.log_format == LogFormat::kJson);
    cr_expect(c.event_backend == EventBackend::kEpoll);
    cr_expect_eq(c.hostname, "tunnel.example.com");
    cr_expect(c.public_bind.family == proto::Family::kV6);
    cr_expect_eq(proto::format_endpoint(c.public_bind), "[::]:443");
    cr_expect_eq(c.tunnel_bind.port, 0);
    cr_expect_eq(c.graceful_shutdown_ms, 0u);
    cr_expect(c.visitor_proxy_v2);
    cr_assert_eq(c.visitor_proxy_trusted_networks.size(), 3u);
    cr_expect_eq(c.visitor_proxy_trusted_networks[1].text, "fd00::/8");
    cr_expect_eq(c.visitor_proxy_trusted_networks[2].prefix, 32u);
    cr_expect_eq(c.cert_dir, s.dir + "/cert");
    cr_expect(c.tunnels[0].public_hostnames ==
              std::vector<std::string>({"a.example.com", "b.example.com"}));
    cr_expect_eq(c.tunnels[0].identities.size(), 2u);
    cr_assert_eq(c.routes.size(), 1u);
    cr_expect_eq(c.routes[0].upstream.text(), "[::1]:8443");
    cr_expect(c.routes[0].proxy_v2);
}

Test(config, durations_units) {
    Scratch s;
    const std::pair<const char*, std::uint64_t> cases[] = {
        {"250ms", 250}, {"5s", 5000}, {"2m", 120000}, {"1h", 3600000}};
    for (auto [text, ms] : cases) {
        auto out =
            load_text(s, Role::kServer,
                      std::string(S_HEAD) + "graceful-shutdown-duration = " + text + "\n" + TUN);
        cr_assert(out.ok(), "%s: %s", text, dump(out).c_str());
        cr_expect_eq(out.server->graceful_shutdown_ms, ms, "%s", text);
    }
}

Test(config, tunnel_retry_values) {
    Scratch s;
    auto def = load_text(s, Role::kServer, S_HEAD TUN);
    cr_assert(def.ok(), "%s", dump(def).c_str());
    cr_expect(def.server->tunnel_retry == TunnelRetry::kAuto, "auto by default");
    const std::pair<const char*, TunnelRetry> cases[] = {{"auto", TunnelRetry::kAuto},
                                                         {"always", TunnelRetry::kAlways},
                                                         {"never", TunnelRetry::kNever}};
    for (auto [text, want] : cases) {
        auto out = load_text(s, Role::kServer,
                             std::string(S_HEAD) + "tunnel-retry = " + text + "\n" + TUN);
        cr_assert(out.ok(), "%s: %s", text, dump(out).c_str());
        cr_expect(out.server->tunnel_retry == want, "%s", text);
    }
}

Test(config, stream_limits_default_to_the_reference_and_take_counts) {
    Scratch s;
    auto def = load_text(s, Role::kServer, S_HEAD TUN);
    cr_assert(def.ok(), "%s", dump(def).c_str());
    cr_expect_eq(def.server->max_active_streams, 4096u);
    cr_expect_eq(def.server->max_pending_stream_opens, 1024u);
    auto set = load_text(s, Role::kServer,
                         S_HEAD "max-active-streams = 262144\nmax-pending-stream-opens = 1\n" TUN);
    cr_assert(set.ok(), "%s", dump(set).c_str());
    cr_expect_eq(set.server->max_active_streams, 262144u);
    cr_expect_eq(set.server->max_pending_stream_opens, 1u);
    auto cdef = load_text(s, Role::kClient, C_HEAD SVC);
    cr_assert(cdef.ok(), "%s", dump(cdef).c_str());
    cr_expect_eq(cdef.client->max_streams, 1024u);
    auto cset = load_text(s, Role::kClient, C_HEAD "max-streams = 10000\n" SVC);
    cr_assert(cset.ok(), "%s", dump(cset).c_str());
    cr_expect_eq(cset.client->max_streams, 10000u);
}

Test(config, workers_auto_or_count) {
    Scratch s;
    auto def = load_text(s, Role::kServer, S_HEAD TUN);
    cr_assert(def.ok(), "%s", dump(def).c_str());
    cr_expect_eq(def.server->workers, 0u);
    auto two = load_text(s, Role::kServer, S_HEAD "workers = 2\n" TUN);
    cr_assert(two.ok(), "%s", dump(two).c_str());
    cr_expect_eq(two.server->workers, 2u);
    auto cmax = load_text(s, Role::kClient, C_HEAD "workers = 64\n" SVC);
    cr_assert(cmax.ok(), "%s", dump(cmax).c_str());
    cr_expect_eq(cmax.client->workers, 64u);
    auto cauto = load_text(s, Role::kClient, C_HEAD "workers = auto\n" SVC);
    cr_assert(cauto.ok(), "%s", dump(cauto).c_str());
    cr_expect_eq(cauto.client->workers, 0u);
    // auto: the CPUs this process may run on.
    cpu_set_t set;
    CPU_ZERO(&set);
    cr_assert_eq(sched_getaffinity(0, sizeof set, &set), 0);
    cr_expect_eq(resolve_workers(0), static_cast<uint32_t>(CPU_COUNT(&set)));
    cr_expect_eq(resolve_workers(3), 3u);
}

Test(config, terminate_alpn_values) {
    Scratch s;
    auto def = load_text(s, Role::kClient, C_HEAD SVC "tls-mode = terminate\n");
    cr_assert(def.ok(), "%s", dump(def).c_str());
    cr_assert_eq(def.client->services.at(0).alpn.size(), 1u);
    cr_expect_eq(def.client->services.at(0).alpn[0], "http/1.1", "http/1.1 alone by default");

    auto h2 = load_text(s, Role::kClient, C_HEAD SVC "tls-mode = terminate\nalpn = h2, http/1.1\n");
    cr_assert(h2.ok(), "%s", dump(h2).c_str());
    const auto& a = h2.client->services.at(0).alpn;
    cr_assert_eq(a.size(), 2u);
    cr_expect_eq(a[0], "h2", "the order given is the order of preference");
    cr_expect_eq(a[1], "http/1.1");

    const std::pair<const char*, const char*> bad[] = {
        {"tls-mode = passthrough\nalpn = h2\n",
         "service \"web\": alpn applies only to tls-mode = terminate"},
        {"tls-mode = terminate\nalpn = h2, h2\n", "alpn protocol h2 is listed twice"},
        {"tls-mode = terminate\nalpn = a,b,c,d,e,f,g,h,i\n", "alpn lists at most 8 protocols"},
        {"tls-mode = terminate\nalpn = h\x01x\n", "printable ASCII without spaces"},
    };
    for (auto [extra, want] : bad) {
        auto out = load_text(s, Role::kClient, std::string(C_HEAD SVC) + extra);
        cr_assert(!out.ok(), "%s accepted", extra);
        cr_expect(dump(out).find(want) != std::string::npos, "%s: %s", extra, dump(out).c_str());
    }
}

Test(config, routes_only_server_needs_no_cert_dir) {
    Scratch s;
    auto out = load_text(s, Role::kServer,
                         "[server]\nhostname = tunnel.example.com\ncert-dir = does-not-exist\n"
                         "[route \"local\"]\npublic-hostnames = web.example.com\n"
                         "upstream-address = backend.internal:8443\n");
    cr_assert(out.ok(), "%s", dump(out).c_str());
    cr_expect(out.server->tunnels.empty());
    cr_expect_eq(out.server->routes[0].upstream.host, "backend.internal");
}

Test(config, default_cert_dir_missing_gives_hint_without_config_flag_for_default_path) {
    Scratch s;
    LoadOptions o;
    o.role = Role::kServer;
    o.path = s.path();
    o.path_is_default = true;
    o.env = s.env();
    auto out = load_from_string(subst("[server]\nhostname = tunnel.example.com\n" TUN, s.dir), o);
    cr_assert_eq(out.problems.size(), 1u, "%s", dump(out).c_str());
    cr_expect_eq(out.problems[0].message,
                 "server.cert-dir: directory " + s.dir +
                     "/home/.local/share/runewarp/server/cert does not exist");
    cr_expect_eq(out.problems[0].line, 0);
    cr_assert_eq(out.hints.size(), 1u);
    cr_expect_eq(out.hints[0], "Hint: runewarp server cert init");
}

Test(config, server_hostname_override_precedence) {
    Scratch s;
    const char* ini = S_HEAD TUN;
    auto base = load_text(s, Role::kServer, ini);
    cr_assert(base.ok());
    cr_expect_eq(base.server->hostname, "tunnel.example.com");
    cr_expect(base.server->hostname_source == Source::kFile);

    LoadOptions o;
    o.role = Role::kServer;
    o.path = s.path();
    o.env = s.env();
    o.env.server_hostname = "Env.Example.com";
    auto env = load_from_string(subst(ini, s.dir), o);
    cr_assert(env.ok(), "%s", dump(env).c_str());
    cr_expect_eq(env.server->hostname, "env.example.com");
    cr_expect(env.server->hostname_source == Source::kEnv);

    o.overrides.hostname = "flag.example.com";
    auto flag = load_from_string(subst(ini, s.dir), o);
    cr_assert(flag.ok());
    cr_expect_eq(flag.server->hostname, "flag.example.com");
    cr_expect(flag.server->hostname_source == Source::kFlag);

    o.overrides.hostname = "1.2.3.4";
    auto bad = load_from_string(subst(ini, s.dir), o);
    cr_assert_eq(bad.problems.size(), 1u);
    cr_expect_eq(bad.problems[0].message,
                 "--hostname \"1.2.3.4\": must not be an IP address literal");

    // A flag rescues an invalid configured hostname; the override still may not be a Public
    // hostname.
    o.overrides.hostname = "app.example.com";
    auto clash =
        load_from_string(subst("[server]\nhostname = bad_name\ncert-dir = cert\n" TUN, s.dir), o);
    cr_assert_eq(clash.problems.size(), 1u, "%s", dump(clash).c_str());
    cr_expect_eq(clash.problems[0].message,
                 "tunnel \"apps\": public hostname app.example.com is the Server hostname "
                 "(server.hostname)");
}

Test(config, client_server_address_flags_replace_file_values) {
    Scratch s;
    Overrides ov;
    ov.server_addresses = {"b.example.com:8443", "A.example.com"};
    auto out = load_text(s, Role::kClient,
                         "[client]\nserver-address = 192.0.2.1\nserver-addresses = x.example.com\n"
                         "identity-dir = identity\n" SVC,
                         ov);
    cr_assert(out.ok(), "%s", dump(out).c_str());
    cr_assert_eq(out.client->server_addresses.size(), 2u);
    cr_expect_eq(out.client->server_addresses[0].text(), "b.example.com:8443");
    cr_expect_eq(out.client->server_addresses[1].text(), "a.example.com:443");
    cr_expect(out.client->server_addresses_source == Source::kFlag);

    ov.server_addresses = {"10.0.0.1:443"};
    auto bad = load_text(s, Role::kClient, C_HEAD SVC, ov);
    cr_assert_eq(bad.problems.size(), 1u);
    cr_expect_eq(
        bad.problems[0].message,
        "--server-address \"10.0.0.1:443\": must be a hostname, not an IP address literal");
}

Test(config, backend_address_flag_rules) {
    Scratch s;
    Overrides ov;
    ov.backend_address = "127.0.0.1:8080";
    auto ok = load_text(s, Role::kClient, C_HEAD, ov);
    cr_assert(ok.ok(), "%s", dump(ok).c_str());
    cr_assert_eq(ok.client->services.size(), 1u);
    cr_expect(ok.client->services[0].catch_all());
    cr_expect(ok.client->services[0].tls_mode == TlsMode::kPassthrough);
    cr_expect_eq(ok.client->services[0].backend.text(), "127.0.0.1:8080");

    const char* msg =
        "`--backend-address` cannot be used when the config has [service \"LABEL\"] sections";
    auto with_service = load_text(s, Role::kClient, C_HEAD SVC, ov);
    cr_assert_eq(with_service.problems.size(), 1u, "%s", dump(with_service).c_str());
    cr_expect_eq(with_service.problems[0].message, msg);
    // Even a malformed [service ...] header counts.
    auto malformed = load_text(s, Role::kClient, C_HEAD "[service \"Bad Label\"]\n", ov);
    bool found = false;
    for (const auto& p : malformed.problems) found = found || p.message == msg;
    cr_expect(found, "%s", dump(malformed).c_str());
}

Test(config, file_without_client_section_works_with_flags) {
    Scratch s;
    s.touch_all("home/.local/share/runewarp/client/identity",
                {"client.crt", "client.key", "client-identity.txt"});
    Overrides ov;
    ov.server_addresses = {"tunnel.example.com"};
    ov.backend_address = "localhost:8080";
    auto out = load_text(s, Role::kClient, S_HEAD TUN, ov);
    cr_assert(out.ok(), "%s", dump(out).c_str());
    cr_expect_eq(out.client->identity_dir, s.dir + "/home/.local/share/runewarp/client/identity");

    Overrides only_addr;
    only_addr.server_addresses = {"tunnel.example.com"};
    auto missing = load_text(s, Role::kClient, S_HEAD TUN, only_addr);
    cr_assert_eq(missing.problems.size(), 1u, "%s", dump(missing).c_str());
    cr_expect_eq(
        missing.problems[0].message,
        "`--backend-address` is required when the selected config has no [client] section");
}

Test(config, control_address_with_server_address_is_an_error) {
    Scratch s;
    Overrides ov;
    ov.server_addresses = {"tunnel.example.com"};
    ov.control_address = "control.example.com";
    auto out = load_text(s, Role::kClient, C_HEAD SVC, ov);
    cr_assert_eq(out.problems.size(), 1u, "%s", dump(out).c_str());
    cr_expect_eq(out.problems[0].message,
                 "`--control-address` cannot be combined with `--server-address`");

    // --control-address alone selects Managed mode, which the model records.
    Overrides managed;
    managed.control_address = "control.example.com:8443";
    auto m = load_text(s, Role::kClient, "[client]\nidentity-dir = identity\n" SVC, managed);
    cr_assert(m.ok(), "%s", dump(m).c_str());
    cr_expect(m.client->managed_requested);
    cr_expect_eq(m.client->control->address.text(), "control.example.com:8443");
}

Test(config, cli_only_client_start) {
    Scratch s;
    s.touch_all("home/.local/share/runewarp/client/identity",
                {"client.crt", "client.key", "client-identity.txt"});
    LoadOptions o;
    o.role = Role::kClient;
    o.env = s.env();
    o.overrides.server_addresses = {"tunnel.example.com:8443"};
    o.overrides.backend_address = "[::1]:8080";
    auto out = load(o);
    cr_assert(out.ok(), "%s", dump(out).c_str());
    cr_expect(out.client->config_path.empty());
    cr_expect(out.client->server_trust == Trust::kSystem);
    cr_expect_eq(out.client->services[0].backend.text(), "[::1]:8080");
    cr_expect(out.client->layout == Layout::kUser);

    o.overrides.backend_address.reset();
    auto missing = load(o);
    cr_assert_eq(missing.problems.size(), 1u, "%s", dump(missing).c_str());
    cr_expect_eq(missing.problems[0].message,
                 "`--backend-address` is required when no config file is selected");
    cr_expect_eq(format_report(Role::kClient, "", missing),
                 "invalid client config in command-line flags:\n- `--backend-address` is "
                 "required when no config file is selected\n");
}

Test(config, managed_server_is_recorded) {
    Scratch s;
    s.touch_all("sid", {"server.crt", "server.key", "server-identity.txt"});
    auto out = load_text(s, Role::kServer,
                         S_HEAD "identity-dir = sid\n[control]\naddress = control.example.com\n");
    cr_assert(out.ok(), "%s", dump(out).c_str());
    cr_expect(out.server->managed_requested);
    cr_expect_eq(out.server->identity_dir, s.dir + "/sid");
    auto tunnels = load_text(
        s, Role::kServer, S_HEAD "identity-dir = sid\n" TUN "[control]\naddress = c.example.com\n");
    cr_assert_eq(tunnels.problems.size(), 1u, "%s", dump(tunnels).c_str());
    cr_expect_eq(tunnels.problems[0].message,
                 "tunnel \"apps\": tunnel sections are not allowed in managed mode ([control])");
}

Test(config, load_reads_files_and_reports_missing_ones) {
    Scratch s;
    s.write("config.ini", subst(S_HEAD TUN, s.dir));
    LoadOptions o;
    o.role = Role::kServer;
    o.path = s.path();
    o.env = s.env();
    auto out = load(o);
    cr_assert(out.ok(), "%s", dump(out).c_str());
    cr_expect_eq(out.server->config_path, s.path());
    o.path = s.dir + "/missing.ini";
    auto missing = load(o);
    cr_assert_eq(missing.problems.size(), 1u);
    cr_expect_eq(missing.problems[0].message,
                 "cannot read " + s.dir + "/missing.ini: No such file or directory");
}

Test(config, sections_present_detects_roles) {
    auto both = sections_present_in("[server]\n[client]\n");
    cr_expect(both.server && both.client);
    auto service_only = sections_present_in("[service \"web\"]\n");
    cr_expect(!service_only.server && service_only.client);
    auto none = sections_present_in("log-level = info\n[control]\n");
    cr_expect(!none.server && !none.client);
    auto missing = sections_present("/nonexistent/runewarp.ini");
    cr_expect(!missing.ok());
}

Test(config, config_path_resolution) {
    Scratch s;
    Env e = s.env();
    // --config is relative to the working directory.
    auto cli = resolve_config_path(std::string("x.ini"), e);
    cr_assert(cli.ok());
    cr_expect_eq(cli->path, s.dir + "/x.ini");
    cr_expect(!cli->is_default);

    e.xdg_config_home = s.dir + "/xdg";
    s.touch_all("xdg/runewarp", {"config.ini"});
    auto xdg = resolve_config_path(std::nullopt, e);
    cr_assert(xdg.ok());
    cr_expect_eq(xdg->path, s.dir + "/xdg/runewarp/config.ini");
    cr_expect(xdg->is_default);

    // Empty XDG_CONFIG_HOME falls back to $HOME/.config.
    e.xdg_config_home.clear();
    cr_expect_eq(user_config_path(e), s.dir + "/home/.config/runewarp/config.ini");
    s.touch_all("home/.config/runewarp", {"config.ini"});
    auto home = resolve_config_path(std::nullopt, e);
    cr_assert(home.ok());
    cr_expect_eq(home->path, s.dir + "/home/.config/runewarp/config.ini");

    // Nothing usable: depends on whether this host has /etc/runewarp/config.ini.
    e.home.clear();
    auto none = resolve_config_path(std::nullopt, e);
    bool etc = fs::is_regular_file(kSystemConfigPath);
    if (etc) {
        cr_assert(none.ok());
        cr_expect_eq(none->path, kSystemConfigPath);
    } else {
        cr_assert(!none.ok());
        cr_expect_eq(
            none.error().message,
            "unable to resolve the XDG config base directory: set XDG_CONFIG_HOME or HOME");
    }
}

Test(config, layouts_and_roots) {
    Env e;
    e.home = "/home/u";
    e.xdg_data_home = "/d";
    auto user = resolve_roots("/home/u/.config/runewarp/config.ini", e);
    cr_expect(user.layout == Layout::kUser);
    cr_expect_eq(user.data, "/d/runewarp");
    cr_expect_eq(user.state, "/home/u/.local/state/runewarp");
    cr_expect_eq(default_server_cert_dir(user), "/d/runewarp/server/cert");
    cr_expect_eq(default_client_acme_dir(user), "/home/u/.local/state/runewarp/client/acme");

    e.state_directory = "/var/lib/first:/var/lib/second";
    auto sys = resolve_roots("/etc/runewarp/config.ini", e);
    cr_expect(sys.layout == Layout::kSystem);
    cr_expect_eq(sys.data, "/var/lib/first");
    cr_expect_eq(sys.state, "/var/lib/first");
    cr_expect_eq(default_client_identity_dir(sys), "/var/lib/first/client/identity");
    cr_expect_eq(default_control_ca_file(sys), "/var/lib/first/control/ca.crt");

    e.state_directory.clear();
    e.euid = 0;
    auto root = resolve_roots("", e);
    cr_expect(root.layout == Layout::kSystem);
    cr_expect_eq(root.data, "/var/lib/runewarp");
    cr_expect_eq(default_server_acme_dir(root), "/var/lib/runewarp/server/acme");
    // A root user with an explicit non-/etc config keeps the user layout.
    cr_expect(resolve_roots("/root/x.ini", e).layout == Layout::kUser);

    cr_expect_eq(resolve_relative_to_file("/etc/runewarp/config.ini", "certs"),
                 "/etc/runewarp/certs");
    cr_expect_eq(resolve_relative_to_file("/etc/runewarp/config.ini", "/abs"), "/abs");
    cr_expect_eq(resolve_relative_to_file("config.ini", "certs"), "certs");
}

Test(config, registry_is_complete_and_documented) {
    std::string man = read_file(RUNEWARP_TEST_DATA "/../../man/runewarp.conf.5");
    cr_assert(!man.empty());
    std::size_t n = 0;
    for (const auto& k : key_registry()) {
        ++n;
        cr_expect(man.find(std::string("Cm ") + std::string(k.name)) != std::string::npos,
                  "key %.*s is not documented in runewarp.conf(5)", static_cast<int>(k.name.size()),
                  k.name.data());
        cr_expect(!k.doc.empty());
        cr_expect(find_key(k.section, k.name) == &k);
        if (k.type == ValueType::kEnum) cr_expect(!k.choices.empty());
    }
    cr_expect_geq(n, 36u);
    for (const char* key : {"log-level", "log-format"}) cr_expect(find_key(SectionKind::kTop, key));
    cr_expect(find_key(SectionKind::kServer, "event-backend"));
    cr_expect(find_key(SectionKind::kTop, "hostname") == nullptr);
}

Test(config, registry_defaults_are_what_the_loader_applies) {
    // Every concrete default is a valid value of its key, every other default says why it has no
    // value, and path defaults lie below a root.
    for (const auto& k : key_registry()) {
        const std::string name(k.name);
        const std::string text(k.default_text);
        if (auto d = default_value(k)) {
            cr_expect(!check_value(k, *d).has_value(), "default of %s does not validate: %s",
                      name.c_str(), text.c_str());
        } else if (k.type == ValueType::kPath && !text.starts_with("(")) {
            cr_expect(text.starts_with("<data>/") || text.starts_with("<state>/"),
                      "path default of %s: %s", name.c_str(), text.c_str());
        } else {
            cr_expect(text.starts_with("("), "default of %s: %s", name.c_str(), text.c_str());
        }
    }

    // A minimal file takes each default from the registry: a changed registry text is a changed
    // model, so the two can never disagree.
    Scratch s;
    auto out = load_text(s, Role::kServer,
                         "[server]\nhostname = tunnel.example.com\n"
                         "[route \"r\"]\npublic-hostnames = a.example.com\n"
                         "upstream-address = 127.0.0.1:8443\n");
    cr_assert(out.ok(), "%s", dump(out).c_str());
    const ServerConfig& c = *out.server;
    auto text_of = [](SectionKind kind, const char* key) {
        return std::string(*default_value(*find_key(kind, key)));
    };
    cr_expect_eq(proto::format_endpoint(c.public_bind),
                 text_of(SectionKind::kServer, "public-bind-address"));
    cr_expect_eq(proto::format_endpoint(c.tunnel_bind),
                 text_of(SectionKind::kServer, "tunnel-bind-address"));
    cr_expect_eq(c.graceful_shutdown_ms, std::get<std::uint64_t>(parse_duration_ms(text_of(
                                             SectionKind::kServer, "graceful-shutdown-duration"))));
    cr_expect_eq(std::string(log_level_name(c.log_level)), text_of(SectionKind::kTop, "log-level"));
    cr_expect_eq(std::string(log_format_name(c.log_format)),
                 text_of(SectionKind::kTop, "log-format"));
    cr_expect_eq(std::string(event_backend_name(c.event_backend)),
                 text_of(SectionKind::kServer, "event-backend"));

    Roots r;
    r.data = "/d";
    r.state = "/s";
    cr_expect_eq(default_path(SectionKind::kServer, "cert-dir", r), "/d/server/cert");
    cr_expect_eq(default_path(SectionKind::kClientAcme, "state-dir", r), "/s/client/acme");
    cr_expect_eq(default_path(SectionKind::kServer, "hostname", r), "", "not a path default");
    r.data.clear();
    cr_expect_eq(default_server_cert_dir(r), "", "an unresolved root has no default path");
}

// ---- Effective values and their origins (`config show`), starter files (`config init`) --------

namespace {

const SettingsSection* find_section(const RoleConfig& cfg, const std::string& header) {
    for (const auto& sec : cfg.settings) {
        if (sec.header == header) return &sec;
    }
    return nullptr;
}

const Setting& find_setting(const RoleConfig& cfg, const std::string& header,
                            const std::string& key) {
    const SettingsSection* sec = find_section(cfg, header);
    cr_assert(sec != nullptr, "no section [%s] recorded", header.c_str());
    for (const auto& st : sec->settings) {
        if (st.key == key) return st;
    }
    cr_assert_fail("no key %s in [%s]", key.c_str(), header.c_str());
    return sec->settings.front();
}

std::string origin_of(const RoleConfig& cfg, const std::string& header, const std::string& key) {
    return origin_text(find_setting(cfg, header, key).origin);
}

std::string first_value(const RoleConfig& cfg, const std::string& header, const std::string& key) {
    const Setting& st = find_setting(cfg, header, key);
    return st.values.empty() ? std::string("<unset>") : st.values.front();
}

// Every line of a text, for the loader's line limit.
std::size_t longest_line(const std::string& text) {
    std::size_t longest = 0, start = 0;
    while (start < text.size()) {
        std::size_t end = text.find('\n', start);
        if (end == std::string::npos) end = text.size();
        longest = std::max(longest, end - start);
        start = end + 1;
    }
    return longest;
}

}  // namespace

Test(config, origin_text_forms) {
    cr_expect_eq(origin_text(Origin{}), "default");
    cr_expect_eq(origin_text(Origin{Source::kFile, 12, {}}), "file:12");
    cr_expect_eq(origin_text(Origin{Source::kFlag, 0, "--hostname"}), "flag --hostname");
    cr_expect_eq(origin_text(Origin{Source::kEnv, 0, "RUNEWARP_SERVER_HOSTNAME"}),
                 "env RUNEWARP_SERVER_HOSTNAME");
}

Test(config, settings_record_file_lines_defaults_and_resolved_paths) {
    Scratch s;
    auto out = load_text(s, Role::kServer,
                         "log-level = debug\n"  // 1
                         "[server]\n"           // 2
                         "hostname = tunnel.example.com\n"
                         "cert-dir = cert\n"  // 4
                         "graceful-shutdown-duration = 5s\n" TUN);
    cr_assert(out.ok(), "%s", dump(out).c_str());
    const ServerConfig& c = *out.server;
    cr_expect_eq(origin_of(c, "", "log-level"), "file:1");
    cr_expect_eq(first_value(c, "", "log-level"), "debug");
    cr_expect_eq(origin_of(c, "", "log-format"), "default");
    cr_expect_eq(first_value(c, "", "log-format"), "text");
    cr_expect_eq(origin_of(c, "server", "hostname"), "file:3");
    cr_expect_eq(origin_of(c, "server", "cert-dir"), "file:4");
    cr_expect_eq(first_value(c, "server", "cert-dir"), s.dir + "/cert",
                 "resolved against the file");
    cr_expect_eq(origin_of(c, "server", "graceful-shutdown-duration"), "file:5");
    cr_expect_eq(origin_of(c, "server", "public-bind-address"), "default");
    cr_expect_eq(first_value(c, "server", "public-bind-address"), "0.0.0.0:443");
    cr_expect_eq(origin_of(c, "server", "readiness-bind-address"), "default");
    cr_expect(find_setting(c, "server", "readiness-bind-address").values.empty());
    cr_expect_eq(first_value(c, "server", "identity-dir"),
                 s.dir + "/home/.local/share/runewarp/server/identity",
                 "path default below <data>");
    cr_expect_eq(origin_of(c, "tunnel \"apps\"", "public-hostnames"), "file:7");
    cr_expect_eq(origin_of(c, "tunnel \"apps\"", "client-identity"), "file:8");
    cr_expect(find_setting(c, "tunnel \"apps\"", "client-identities").values.empty());
    // Every registry key of every recorded section, nothing else.
    for (const auto& sec : c.settings) {
        std::size_t want = 0;
        SectionKind kind = sec.header.empty()       ? SectionKind::kTop
                           : sec.header == "server" ? SectionKind::kServer
                                                    : SectionKind::kTunnel;
        for (const auto& k : key_registry()) want += k.section == kind ? 1 : 0;
        cr_expect_eq(sec.settings.size(), want, "[%s]", sec.header.c_str());
    }
    cr_expect_eq(c.settings.size(), 3u);
}

Test(config, settings_record_env_and_flag_overrides) {
    Scratch s;
    LoadOptions o;
    o.role = Role::kServer;
    o.path = s.path();
    o.env = s.env();
    o.env.server_hostname = "Env.Example.com";
    const std::string ini = subst(S_HEAD TUN, s.dir);
    auto env = load_from_string(ini, o);
    cr_assert(env.ok(), "%s", dump(env).c_str());
    cr_expect_eq(origin_of(*env.server, "server", "hostname"), "env RUNEWARP_SERVER_HOSTNAME");
    cr_expect_eq(first_value(*env.server, "server", "hostname"), "env.example.com");

    o.overrides.hostname = "flag.example.com";
    auto flag = load_from_string(ini, o);
    cr_assert(flag.ok(), "%s", dump(flag).c_str());
    cr_expect_eq(origin_of(*flag.server, "server", "hostname"), "flag --hostname");
    cr_expect_eq(first_value(*flag.server, "server", "hostname"), "flag.example.com");
    cr_expect_eq(origin_of(*flag.server, "server", "cert-dir"), "file:3");

    // Client: --server-address replaces both file keys; --backend-address makes the Catch-all.
    Overrides ov;
    ov.server_addresses = {"b.example.com:8443", "a.example.com"};
    ov.backend_address = "127.0.0.1:9000";
    auto cli = load_text(s, Role::kClient, C_HEAD, ov);
    cr_assert(cli.ok(), "%s", dump(cli).c_str());
    const ClientConfig& c = *cli.client;
    const Setting& many = find_setting(c, "client", "server-addresses");
    cr_expect_eq(origin_text(many.origin), "flag --server-address");
    cr_expect(many.values == std::vector<std::string>({"b.example.com:8443", "a.example.com:443"}));
    cr_expect(find_setting(c, "client", "server-address").values.empty(),
              "the file's server-address is replaced");
    cr_expect_eq(origin_of(c, "client", "identity-dir"), "file:3");
    const SettingsSection* svc = find_section(c, "service \"cli\"");
    cr_assert(svc != nullptr);
    cr_expect(svc->synthesized);
    cr_expect_eq(origin_of(c, "service \"cli\"", "backend-address"), "flag --backend-address");
    cr_expect_eq(origin_of(c, "service \"cli\"", "tls-mode"), "default");
}

Test(config, repeated_sections_are_recorded_in_file_order) {
    Scratch s;
    auto out = load_text(s, Role::kServer,
                         S_HEAD
                         "[route \"zz\"]\npublic-hostnames = r.example.com\n"
                         "upstream-address = 127.0.0.1:8443\n" TUN
                         "[tunnel \"aa\"]\npublic-hostnames = b.example.com\n"
                         "client-identities = @ID2@\n"
                         "[client]\nserver-address = ignored.example.com\n");
    cr_assert(out.ok(), "%s", dump(out).c_str());
    std::vector<std::string> headers;
    for (const auto& sec : out.server->settings) headers.push_back(sec.header);
    cr_expect(headers == std::vector<std::string>(
                             {"", "server", "route \"zz\"", "tunnel \"apps\"", "tunnel \"aa\""}),
              "the Server records only its own sections, in file order");
}

Test(config, rendered_effective_config_validates_to_the_same_model) {
    Scratch s;
    // Six identities on one key: a rendered list longer than a line must wrap onto repeated keys.
    std::string ids_lines;
    for (int i = 0; i < 6; ++i) {
        std::string id(64, static_cast<char>('a' + i));
        ids_lines += "client-identities = " + id + "\n";
    }
    const std::string ini =
        "log-level = warn\n"
        "[server]\nhostname = Tunnel.Example.com\ncert-dir = cert\n"
        "readiness-bind-address = 127.0.0.1:9000\n"
        "[tunnel \"apps\"]\npublic-hostnames = app.example.com, "
        "api.example.com\n" +
        ids_lines +
        "[route \"r\"]\npublic-hostnames = r.example.com\n"
        "upstream-address = 127.0.0.1:8443\nproxy-protocol = v2\n";
    Overrides ov;
    ov.hostname = "flag.example.com";
    auto out = load_text(s, Role::kServer, ini, ov);
    cr_assert(out.ok(), "%s", dump(out).c_str());
    std::string text = render_effective(Role::kServer, *out.server);
    cr_expect_leq(longest_line(text), kMaxLineBytes, "%s", text.c_str());
    cr_expect(text.find("hostname = flag.example.com  ; flag --hostname\n") != std::string::npos,
              "%s", text.c_str());
    cr_expect(text.find("log-level = warn  ; file:1\n") != std::string::npos, "%s", text.c_str());
    cr_expect(text.find("; log-format = text  ; default\n") != std::string::npos, "%s",
              text.c_str());
    cr_expect(text.find("cert-dir = " + s.dir + "/cert  ; file:4\n") != std::string::npos, "%s",
              text.c_str());
    cr_expect(text.find("; client-identity = (unset)  ; default\n") != std::string::npos, "%s",
              text.c_str());
    // Every registry key of the role's sections appears.
    for (const auto& k : key_registry()) {
        if (k.section == SectionKind::kClient || k.section == SectionKind::kClientAcme ||
            k.section == SectionKind::kService || k.section == SectionKind::kControl ||
            k.section == SectionKind::kServerAcme || k.section == SectionKind::kMetrics) {
            continue;
        }
        cr_expect(text.find(std::string(k.name) + " =") != std::string::npos, "%.*s missing",
                  static_cast<int>(k.name.size()), k.name.data());
    }

    // Fed back without the flag, the text gives the same model.
    LoadOptions o;
    o.role = Role::kServer;
    o.path = s.path();
    o.env = s.env();
    auto again = load_from_string(text, o);
    cr_assert(again.ok(), "%s\n%s", dump(again).c_str(), text.c_str());
    const ServerConfig& a = *again.server;
    const ServerConfig& b = *out.server;
    cr_expect_eq(a.hostname, b.hostname);
    cr_expect_eq(a.cert_dir, b.cert_dir);
    cr_expect(a.log_level == b.log_level);
    cr_expect(a.readiness_bind.has_value());
    cr_assert_eq(a.tunnels.size(), 1u);
    cr_expect(a.tunnels[0].identities == b.tunnels[0].identities);
    cr_expect_eq(a.tunnels[0].identities.size(), 6u);
    cr_expect(a.tunnels[0].public_hostnames == b.tunnels[0].public_hostnames);
    cr_assert_eq(a.routes.size(), 1u);
    cr_expect(a.routes[0].proxy_v2);
    std::size_t at = text.find("\nhostname = ");
    cr_assert(at != std::string::npos);
    int line = 2 + static_cast<int>(std::count(text.begin(), text.begin() + at, '\n'));
    cr_expect_eq(origin_of(a, "server", "hostname"), "file:" + std::to_string(line),
                 "now from the rendered file");
}

Test(config, rendered_client_config_validates) {
    Scratch s;
    auto out = load_text(s, Role::kClient,
                         C_HEAD
                         "server-trust = ca-file\nserver-ca-file = ca.crt\n"
                         "[service \"web\"]\npublic-hostnames = app.example.com\n"
                         "backend-address = 127.0.0.1:8080\ntls-mode = terminate\n"
                         "alpn = h2, http/1.1\npublic-cert-dir = x\n");
    // public-cert-dir in a [service] is unknown: proves the fixture is checked at all.
    cr_assert(!out.ok());
    out = load_text(s, Role::kClient,
                    C_HEAD
                    "server-trust = ca-file\nserver-ca-file = ca.crt\n"
                    "public-cert-dir = public-cert\n"
                    "[service \"web\"]\npublic-hostnames = app.example.com\n"
                    "backend-address = 127.0.0.1:8080\ntls-mode = terminate\n"
                    "alpn = h2, http/1.1\n"
                    "[service \"plain\"]\npublic-hostnames = wiki.example.com\n"
                    "backend-address = localhost:8443\n");
    cr_assert(out.ok(), "%s", dump(out).c_str());
    std::string text = render_effective(Role::kClient, *out.client);
    cr_expect(text.find("; alpn = http/1.1  ; default\n") != std::string::npos, "%s", text.c_str());
    LoadOptions o;
    o.role = Role::kClient;
    o.path = s.path();
    o.env = s.env();
    auto again = load_from_string(text, o);
    cr_assert(again.ok(), "%s\n%s", dump(again).c_str(), text.c_str());
    cr_assert_eq(again.client->services.size(), 2u);
    cr_expect(again.client->services[0].alpn == std::vector<std::string>({"h2", "http/1.1"}));
    cr_expect_eq(again.client->services[1].label, "plain");
    cr_expect_eq(again.client->server_ca_file, s.dir + "/ca.crt");
}

Test(config, starter_files_parse_with_only_material_missing) {
    for (Role role : {Role::kServer, Role::kClient}) {
        Scratch s;
        Roots roots = resolve_roots(s.path(), s.env());
        std::string text = render_starter(role, roots);
        cr_expect_leq(longest_line(text), kMaxLineBytes);
        LoadOptions o;
        o.role = role;
        o.path = s.path();
        o.env = s.env();
        auto out = load_from_string(text, o);
        cr_assert(!out.ok(), "the default material does not exist yet");
        for (const auto& p : out.problems) {
            cr_expect(p.message.find("does not exist") != std::string::npos ||
                          p.message.find("is missing") != std::string::npos,
                      "not a material problem: %s", p.message.c_str());
        }
        // Once the material exists at the default places the starter names, it is valid.
        if (role == Role::kServer) {
            s.touch_all("home/.local/share/runewarp/server/cert",
                        {"server.crt", "server.key", "server-ca.crt"});
        } else {
            s.touch_all("home/.local/share/runewarp/client/identity",
                        {"client.crt", "client.key", "client-identity.txt"});
        }
        auto ok = load_from_string(text, o);
        cr_expect(ok.ok(), "%s", dump(ok).c_str());
        // Every key of the role's sections is explained and shown.
        for (const auto& k : key_registry()) {
            bool server_key = k.section == SectionKind::kServer ||
                              k.section == SectionKind::kServerAcme ||
                              k.section == SectionKind::kTunnel || k.section == SectionKind::kRoute;
            bool client_key = k.section == SectionKind::kClient ||
                              k.section == SectionKind::kClientAcme ||
                              k.section == SectionKind::kService;
            if (!(k.section == SectionKind::kTop ||
                  (role == Role::kServer ? server_key : client_key))) {
                continue;
            }
            cr_expect(text.find(std::string(k.name) + " =") != std::string::npos, "%.*s missing",
                      static_cast<int>(k.name.size()), k.name.data());
        }
    }
}

// [metrics] is accepted by both roles, appears in `config show` when the file has it and in the
// starter file as a commented example on loopback.
Test(config, metrics_section_for_both_roles) {
    Scratch s;
    auto srv = load_text(s, Role::kServer,
                         S_HEAD TUN "[metrics]\nprometheus-bind-address = 127.0.0.1:9100\n");
    cr_assert(srv.ok(), "%s", dump(srv).c_str());
    cr_assert(srv.server->metrics_bind.has_value());
    cr_expect_eq(proto::format_endpoint(*srv.server->metrics_bind), "127.0.0.1:9100");
    std::string shown = render_effective(Role::kServer, *srv.server);
    cr_expect(shown.find("[metrics]\nprometheus-bind-address = 127.0.0.1:9100  ; file:") !=
                  std::string::npos,
              "%s", shown.c_str());
    auto none = load_text(s, Role::kServer, S_HEAD TUN);
    cr_assert(none.ok());
    cr_expect(!none.server->metrics_bind.has_value());
    for (Role role : {Role::kServer, Role::kClient}) {
        std::string starter = render_starter(role, Roots{});
        cr_expect(starter.find("; [metrics]\n") != std::string::npos, "%s", starter.c_str());
        cr_expect(starter.find("; prometheus-bind-address = 127.0.0.1:9100\n") != std::string::npos,
                  "%s", starter.c_str());
    }
}
