// Startup rules: build support and trust material on top of the config loader, per role.
#include <criterion/criterion.h>

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "core/file.hh"
#include "preflight/preflight.hh"
#include "tests/support/temp_tree.hh"
#include "trust/client_identity.hh"
#include "trust/material.hh"
#include "trust/server_cert.hh"

using namespace runewarp;

namespace {

std::string g_dir;

void setup_dir() {
    g_dir = test::make_temp_tree("runewarp-preflight");
    cr_assert(!g_dir.empty());
}

void teardown_dir() {
    test::remove_temp_tree(g_dir);
}

const std::string kHost = "tunnel.example.test";
const std::string kIdentity = "4f7b6f7a9b0f0d2b91e92c8a5df6a44e0123456789abcdef0123456789abcdef";

config::LoadOptions options(config::Role role, const std::string& text) {
    std::string path = g_dir + (role == config::Role::kServer ? "/server.ini" : "/client.ini");
    auto w = trust::replace_file(path, text, 0644);
    cr_assert(w.ok());
    config::LoadOptions o;
    o.role = role;
    o.path = path;
    o.env.home = g_dir + "/home";
    return o;
}

std::string problems_of(const config::LoadOutcome& r) {
    return config::format_report(config::Role::kServer, "x", r);
}

std::string slurp(const std::string& path) {
    auto r = core::read_file(path);
    cr_assert(r.ok());
    return *r;
}

std::string server_ini(const std::string& extra = "") {
    return "[server]\nhostname = " + kHost + "\ncert-dir = " + g_dir + "/cert\n" + extra +
           "[tunnel \"t\"]\npublic-hostnames = app.example.test\n" +
           "client-identity = " + kIdentity + "\n";
}

std::string client_ini(const std::string& service_extra = "", const std::string& extra = "") {
    return "[client]\nserver-address = " + kHost + "\nidentity-dir = " + g_dir + "/identity\n" +
           extra + "[service \"web\"]\npublic-hostnames = app.example.test\n" +
           "backend-address = 127.0.0.1:8443\n" + service_extra;
}

}  // namespace

TestSuite(preflight, .init = setup_dir, .fini = teardown_dir);

Test(preflight, the_server_starts_with_the_certificate_it_checked) {
    cr_assert(trust::init_server_cert(g_dir + "/cert", kHost).ok());
    auto checked = preflight::check_server(options(config::Role::kServer, server_ini()));
    cr_assert(checked.ok(), "%s", problems_of(checked.report).c_str());
    cr_assert(checked.report.ok());
    cr_assert_eq(checked.startup->config.hostname, kHost);
    cr_assert(checked.startup->tunnel_cert.has_value());
    cr_assert(checked.startup->tunnel_cert->cert_pem == slurp(g_dir + "/cert/server.crt"));
    cr_assert(checked.startup->tunnel_cert->key_pem == slurp(g_dir + "/cert/server.key"));

    // Without a Tunnel no certificate is needed, nor loaded.
    auto routes = preflight::check_server(
        options(config::Role::kServer, "[server]\nhostname = " + kHost +
                                           "\n[route \"r\"]\npublic-hostnames = a.example.test\n"
                                           "upstream-address = 127.0.0.1:8443\n"));
    cr_assert(routes.ok(), "%s", problems_of(routes.report).c_str());
    cr_assert(!routes.startup->tunnel_cert.has_value());
}

Test(preflight, config_problems_come_first_and_leave_no_startup) {
    auto checked = preflight::check_server(options(config::Role::kServer, "[server]\n"));
    cr_assert(!checked.ok());
    cr_assert(!checked.report.ok());
    cr_assert(!checked.report.server.has_value(), "no model on failure");
}

Test(preflight, build_support_and_material_problems_are_reported_together) {
    // ACME and managed mode at once: both problems, no startup.
    std::string text = "[server]\nhostname = " + kHost +
                       "\n[server.acme]\nemail = a@example.test\n"
                       "[route \"r\"]\npublic-hostnames = a.example.test\n"
                       "upstream-address = 127.0.0.1:8443\n";
    auto good = preflight::check_server(options(config::Role::kServer, text));
    cr_assert(good.ok(), "%s", problems_of(good.report).c_str());
    cr_assert(!good.startup->tunnel_cert, "ACME: no manual material is loaded");
    auto bad_text = text;
    bad_text.replace(bad_text.find("a@example.test"), 14, "a@localhost");
    auto acme = preflight::check_server(options(config::Role::kServer, bad_text));
    cr_assert(!acme.ok());
    std::string report = problems_of(acme.report);
    cr_assert(
        report.find("server.acme.email: a@localhost is not an email address") != std::string::npos,
        "%s", report.c_str());
    cr_assert(acme.report.hints.empty(), "%s", report.c_str());

    // Client ACME (no manual certificate needed) and a broken identity: the identity problem.
    cr_assert(trust::init_client_identity(g_dir + "/identity").ok());
    cr_assert_eq(chmod((g_dir + "/identity/client.key").c_str(), 0640), 0);
    auto client = preflight::check_client(
        options(config::Role::kClient,
                client_ini("tls-mode = terminate\n[client.acme]\nemail = a@example.test\n")));
    cr_assert(!client.ok());
    report = config::format_report(config::Role::kClient, "x", client.report);
    cr_assert(report.find("missing certificate") == std::string::npos,
              "ACME needs no manual material: %s", report.c_str());
    cr_assert(report.find("chmod 600 " + g_dir + "/identity/client.key") != std::string::npos, "%s",
              report.c_str());
}

Test(preflight, every_tunnel_attempt_reloads_the_client_material_by_the_same_rules) {
    cr_assert(trust::init_server_cert(g_dir + "/cert", kHost).ok());
    auto id = trust::init_client_identity(g_dir + "/identity");
    cr_assert(id.ok());
    auto checked = preflight::check_client(options(
        config::Role::kClient, client_ini("", "server-trust = ca-file\nserver-ca-file = " + g_dir +
                                                  "/cert/server-ca.crt\n")));
    cr_assert(checked.ok(), "%s", problems_of(checked.report).c_str());
    const preflight::ClientStartup& start = *checked.startup;
    cr_assert_eq(start.material.identity.identity, id->identity);
    cr_assert(start.material.server_trust == config::Trust::kCaFile);
    cr_assert(start.material.server_ca_pem == slurp(g_dir + "/cert/server-ca.crt"));

    auto again = preflight::load_client_material(start.config);
    cr_assert(again.ok());
    cr_assert(again->identity.key_pem == start.material.identity.key_pem);

    // The material changes under the running Client: the next attempt sees every problem.
    cr_assert_eq(chmod((g_dir + "/identity/client.key").c_str(), 0644), 0);
    cr_assert(trust::replace_file(g_dir + "/cert/server-ca.crt", "", 0644).ok());
    auto broken = preflight::load_client_material(start.config);
    cr_assert(!broken.ok());
    const std::string& m = broken.error().message;
    cr_assert(m.find("client.identity-dir: ") != std::string::npos, "%s", m.c_str());
    cr_assert(m.find("; client.server-ca-file: no certificate in ") != std::string::npos, "%s",
              m.c_str());
}

namespace {

// A certificate and key for `host` in <pub>/<host>/public.{crt,key}, made with the private CA
// code the trust module shares.
void write_public_cert(const std::string& pub, const std::string& host) {
    std::string scratch = g_dir + "/scratch-" + host;
    cr_assert(trust::init_server_cert(scratch, host).ok());
    cr_assert(trust::ensure_dir(pub + "/" + host, 0755).ok());
    cr_assert(
        trust::replace_file(pub + "/" + host + "/public.crt", slurp(scratch + "/server.crt"), 0644)
            .ok());
    cr_assert(
        trust::replace_file(pub + "/" + host + "/public.key", slurp(scratch + "/server.key"), 0600)
            .ok());
}

}  // namespace

Test(preflight, every_terminating_hostname_needs_its_certificate_at_startup) {
    cr_assert(trust::init_client_identity(g_dir + "/identity").ok());
    std::string pub = g_dir + "/pub";
    cr_assert(trust::ensure_dir(pub, 0755).ok());
    std::string ini = client_ini("tls-mode = terminate\n", "public-cert-dir = " + pub + "\n") +
                      "[service \"api\"]\npublic-hostnames = api.example.test, app2.example.test\n"
                      "backend-address = 127.0.0.1:8080\ntls-mode = terminate\n"
                      "[service \"pass\"]\npublic-hostnames = tls.example.test\n"
                      "backend-address = 127.0.0.1:8443\n";
    write_public_cert(pub, "app.example.test");
    write_public_cert(pub, "api.example.test");

    // app2 has nothing: its own message, naming the command that makes it; the passthrough
    // hostname needs nothing.
    auto missing = preflight::check_client(options(config::Role::kClient, ini));
    cr_assert(!missing.ok());
    std::string report = config::format_report(config::Role::kClient, "x", missing.report);
    cr_assert(report.find("missing certificate for terminating hostname app2.example.test: run "
                          "`runewarp client public-cert init --hostname app2.example.test`") !=
                  std::string::npos,
              "%s", report.c_str());
    cr_assert(report.find("api.example.test") == std::string::npos, "%s", report.c_str());
    cr_assert(report.find("tls.example.test") == std::string::npos, "%s", report.c_str());

    write_public_cert(pub, "app2.example.test");
    auto ok = preflight::check_client(options(config::Role::kClient, ini));
    cr_assert(ok.ok(), "%s", config::format_report(config::Role::kClient, "x", ok.report).c_str());
    const auto& certs = ok.startup->terminate_certs;
    cr_assert_eq(certs.size(), 3u);
    // Sorted, canonical, each with the PEM that was checked.
    cr_assert_eq(certs[0].hostname, "api.example.test");
    cr_assert_eq(certs[1].hostname, "app.example.test");
    cr_assert_eq(certs[2].hostname, "app2.example.test");
    cr_assert(certs[1].cert_pem == slurp(pub + "/app.example.test/public.crt"));
    cr_assert(certs[1].key_pem == slurp(pub + "/app.example.test/public.key"));
    cr_assert_eq(preflight::terminating_hostnames(ok.startup->config).size(), 3u);
}

Test(preflight, acme_state_directories_are_prepared_private_at_startup) {
    auto mode_of = [](const std::string& p) {
        struct stat st {};
        cr_assert_eq(::stat(p.c_str(), &st), 0, "%s", p.c_str());
        return static_cast<unsigned>(st.st_mode & 07777);
    };
    // The default one is created 0700 with its missing parents, whatever the umask.
    config::Acme a;
    a.email = "a@example.test";
    a.state_dir = g_dir + "/acme-state/server/acme";
    a.state_dir_is_default = true;
    mode_t old = ::umask(0);
    auto r = preflight::prepare_acme_state_dir(a);
    ::umask(old);
    cr_assert(r.ok(), "%s", r.ok() ? "" : r.error().message.c_str());
    cr_expect_eq(mode_of(a.state_dir), 0700u);
    cr_expect_eq(mode_of(g_dir + "/acme-state/server"), 0700u);
    // An existing default one that others can enter is made private; running twice is fine.
    cr_assert_eq(::chmod(a.state_dir.c_str(), 0755), 0);
    cr_assert(preflight::prepare_acme_state_dir(a).ok());
    cr_expect_eq(mode_of(a.state_dir), 0700u);

    // An explicit one must exist and is left as it is.
    a.state_dir = g_dir + "/acme-explicit";
    a.state_dir_is_default = false;
    auto missing = preflight::prepare_acme_state_dir(a);
    cr_assert(!missing.ok());
    cr_expect_eq(missing.error().message,
                 "ACME state directory " + a.state_dir + " does not exist");
    cr_assert(!trust::path_exists(a.state_dir), "an explicit directory is never created");
    cr_assert(trust::ensure_dir(a.state_dir, 0750).ok());
    cr_assert(preflight::prepare_acme_state_dir(a).ok());
    cr_expect_eq(mode_of(a.state_dir), 0750u);
}
