// `runewarp doctor server|client` and `runewarp lint`.
//
// doctor runs its checks in a fixed order and prints one line each: the config (the loader's
// rules, as `config check`; a broken file stops here), the material (files, key modes,
// certificate/key match, chain, names, expiry), then the role's reach: the Server's listener
// addresses and direct-route upstreams, the Client's Server addresses (DNS and a QUIC handshake
// with its real identity and trust) and backends. It never serves: listener addresses are bound
// and closed at once, the handshake is closed with application code 0.
#include "cli/doctor_cmd.hh"

#include <sys/socket.h>
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <string>
#include <vector>

#include "cli/common.hh"
#include "cli/doctor_probe.hh"
#include "cli/lint.hh"
#include "core/file.hh"
#include "preflight/preflight.hh"
#include "quic/tls.hh"
#include "trust/anchors.hh"
#include "trust/cert_expiry.hh"
#include "trust/client_identity.hh"
#include "trust/material.hh"
#include "trust/public_cert.hh"
#include "trust/server_cert.hh"
#include "trust/x509_util.hh"

namespace runewarp::cli {

namespace {

using doctor::Finding;
using doctor::Verdict;

constexpr std::chrono::milliseconds kTcpTimeout{3000};
constexpr std::chrono::milliseconds kHandshakeTimeout{5000};

// The lines of one doctor run, printed as they are found (a slow probe shows where it is).
class Report {
public:
    explicit Report(Console& c) : console_(c) {}

    void add(Verdict v, std::string_view check, std::string_view detail) {
        const char* tag = v == Verdict::kOk ? "ok   " : v == Verdict::kWarn ? "warn " : "FAIL ";
        std::string line(tag);
        line.append(check);
        line.append(": ");
        line.append(detail);
        line.push_back('\n');
        console_.out(line);
        ++checks_;
        if (v == Verdict::kFail) ++failed_;
        if (v == Verdict::kWarn) ++warned_;
    }
    void add(std::string_view check, const Finding& f) { add(f.verdict, check, f.detail); }
    void ok(std::string_view check, std::string_view detail) { add(Verdict::kOk, check, detail); }
    void fail(std::string_view check, std::string_view detail) {
        add(Verdict::kFail, check, detail);
    }
    void raw(std::string_view text) { console_.out(text); }
    int failed() const noexcept { return failed_; }

    int finish(std::string_view role) {
        std::string v = "verdict: ";
        if (failed_ == 0) {
            v += "ok, runewarp " + std::string(role) + " is ready (" + std::to_string(checks_) +
                 " checks";
            if (warned_ > 0) v += ", " + std::to_string(warned_) + " warnings";
            v += ")\n";
        } else {
            v += "FAIL, " + std::to_string(failed_) + " of " + std::to_string(checks_) +
                 " checks failed";
            if (warned_ > 0) v += ", " + std::to_string(warned_) + " warnings";
            v += "\n";
        }
        console_.out(v);
        return failed_ == 0 ? kExitOk : kExitFailure;
    }

private:
    Console& console_;
    int checks_ = 0;
    int failed_ = 0;
    int warned_ = 0;
};

std::string octal_mode(mode_t m) {
    char b[8];
    std::snprintf(b, sizeof b, "%04o", static_cast<unsigned>(m & 07777));
    return b;
}

// A certificate and its key as one role serves or presents them. `ca_path` empty: no chain to
// check (self-signed identity, or a certificate from elsewhere); `hostname` empty: no names.
struct PairSpec {
    std::string label;      // "server certificate", "public certificate app.example.com"
    std::string cert_path;  // leaf first, then intermediates
    std::string key_path;
    std::string ca_path{};
    std::string hostname{};
    bool check_expiry = true;
};

// Verifies `chain` (leaf first) against the CA certificates of `ca_pem`; time is left to the
// expiry check. "" when it verifies, else GnuTLS's reason.
std::string verify_chain(const std::vector<trust::Crt>& chain, const std::string& ca_pem,
                         const std::string& ca_path) {
    auto cas = trust::import_crt_list_pem(ca_pem, ca_path);
    if (!cas) return cas.error().message;
    std::vector<gnutls_x509_crt_t> list, roots;
    for (const auto& c : chain) list.push_back(c.get());
    for (const auto& c : *cas) roots.push_back(c.get());
    unsigned status = 0;
    int rc = gnutls_x509_crt_list_verify(
        list.data(), static_cast<unsigned>(list.size()), roots.data(),
        static_cast<unsigned>(roots.size()), nullptr, 0,
        GNUTLS_VERIFY_DISABLE_TIME_CHECKS | GNUTLS_VERIFY_DISABLE_TRUSTED_TIME_CHECKS, &status);
    if (rc < 0) return gnutls_strerror(rc);
    if (status == 0) return {};
    gnutls_datum_t out{};
    if (gnutls_certificate_verification_status_print(status, GNUTLS_CRT_X509, &out, 0) != 0)
        return "verification failed";
    std::string s(reinterpret_cast<const char*>(out.data), out.size);
    gnutls_free(out.data);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\n')) s.pop_back();
    return s;
}

Finding expiry_finding(const std::string& path, std::time_t not_after, std::time_t now) {
    trust::ExpiryStatus st = trust::expiry_level(now, not_after);
    std::string until = trust::rfc3339_utc(not_after);
    switch (st.level) {
        case trust::ExpiryLevel::kExpired:
            return {Verdict::kFail, path + " expired at " + until};
        case trust::ExpiryLevel::kExpiring:
            return {Verdict::kWarn, path + " expires in " + std::to_string(st.days_left) +
                                        " days (" + until + "); renew it"};
        case trust::ExpiryLevel::kValid:
            break;
    }
    return {Verdict::kOk, path + " valid for " + std::to_string(st.days_left) +
                              " more days (until " + until + ")"};
}

// Files present, key mode, key match, chain, names, expiry: one line each. False when a check
// failed.
bool check_pair(Report& r, const PairSpec& p) {
    const int failed_before = r.failed();
    std::vector<std::string> missing;
    for (const std::string* f : {&p.cert_path, &p.key_path, &p.ca_path}) {
        if (!f->empty() && !trust::path_exists(*f)) missing.push_back(*f);
    }
    if (!missing.empty()) {
        std::string m;
        for (const auto& f : missing) m += (m.empty() ? "" : ", ") + f;
        r.fail("material " + p.label, "missing " + m);
        return false;
    }
    struct stat st {};
    auto key_pem = core::read_file(p.key_path, core::kMaxSmallFile, &st);
    auto cert_pem = core::read_file(p.cert_path);
    if (!key_pem || !cert_pem) {
        r.fail("material " + p.label,
               !key_pem ? key_pem.error().message : cert_pem.error().message);
        return false;
    }
    r.ok("material " + p.label, p.cert_path + ", " + p.key_path);

    if ((st.st_mode & 077) != 0) {
        r.fail("key mode " + p.label, p.key_path + " has mode " + octal_mode(st.st_mode) +
                                          ": group or others may access the private key (run "
                                          "`chmod 600 " +
                                          p.key_path + "`)");
    } else {
        r.ok("key mode " + p.label, p.key_path + " is " + octal_mode(st.st_mode));
    }

    auto chain = trust::import_crt_list_pem(*cert_pem, p.cert_path, true);
    if (!chain) {
        r.fail("certificate " + p.label, chain.error().message);
        return false;
    }
    const gnutls_x509_crt_t leaf = chain->front().get();
    auto key = trust::import_key_pem(*key_pem, p.key_path);
    if (!key) {
        r.fail("key match " + p.label, key.error().message);
    } else {
        auto match = trust::key_matches_crt(key->get(), leaf);
        if (!match) {
            r.fail("key match " + p.label, match.error().message);
        } else if (!*match) {
            r.fail("key match " + p.label,
                   p.key_path + " is not the key of the certificate in " + p.cert_path);
        } else {
            r.ok("key match " + p.label, p.key_path + " is the certificate's key");
        }
    }

    if (!p.ca_path.empty()) {
        auto ca_pem = core::read_file(p.ca_path);
        std::string why =
            ca_pem ? verify_chain(*chain, *ca_pem, p.ca_path) : ca_pem.error().message;
        if (why.empty()) {
            r.ok("chain " + p.label, p.cert_path + " is issued by " + p.ca_path);
        } else {
            r.fail("chain " + p.label,
                   p.cert_path + " does not verify against " + p.ca_path + ": " + why);
        }
    }
    if (!p.hostname.empty()) {
        if (gnutls_x509_crt_check_hostname(leaf, p.hostname.c_str()) != 0) {
            r.ok("names " + p.label, p.cert_path + " is valid for " + p.hostname);
        } else {
            r.fail("names " + p.label, p.cert_path + " is not valid for " + p.hostname +
                                           " (no matching DNS subjectAltName or common name)");
        }
    }
    if (p.check_expiry) {
        const std::time_t now = std::time(nullptr);
        Finding worst{Verdict::kOk, {}};
        for (const std::string* f : {&p.cert_path, &p.ca_path}) {
            if (f->empty()) continue;
            auto na = trust::certificate_file_not_after(*f);
            Finding e =
                na ? expiry_finding(*f, *na, now) : Finding{Verdict::kFail, na.error().message};
            if (worst.detail.empty() || e.verdict > worst.verdict) {
                worst = e;
            }
        }
        r.add("expiry " + p.label, worst);
    }
    return r.failed() == failed_before;
}

// The config line: the loader's rules (as `config check`). On failure the report is printed and
// doctor stops: nothing else can be trusted.
template <typename Model>
std::optional<Model> check_config(Report& r, config::Role role, const Invocation& inv,
                                  config::LoadOptions& options,
                                  std::optional<Model> config::LoadOutcome::*m) {
    config::Env env = config::Env::from_process();
    auto selection = select_config(inv, env);
    if (!selection) {
        r.fail("config", selection.error().message);
        return std::nullopt;
    }
    const std::string& path = selection->path;
    struct stat st {};
    if (::stat(path.c_str(), &st) == 0 && !S_ISREG(st.st_mode)) {
        r.fail("config", path + " is not a regular file");
        return std::nullopt;
    }
    options = load_options(role, *selection, env);
    config::LoadOutcome outcome = config::load(options);
    const char* name = role == config::Role::kServer ? "server" : "client";
    if (!outcome.ok()) {
        r.fail("config", path + " is not a valid " + std::string(name) + " config");
        r.raw(config::format_report(role, path, outcome));
        return std::nullopt;
    }
    r.ok("config", path + " is a valid " + std::string(name) + " config");
    return std::move(outcome.*m);
}

// The startup rules the daemon applies (`config check`): reported here only when the checks
// above missed a problem, so a doctor run never passes a config the daemon would refuse.
template <typename Checked>
void startup_backstop(Report& r, int failed_before, const Checked& checked) {
    if (checked.report.ok()) {
        r.ok("startup rules", "`config check` accepts the config and its material");
        return;
    }
    if (r.failed() > failed_before) return;  // already explained line by line
    for (const auto& p : checked.report.problems) r.fail("startup rules", p.message);
}

std::string join_hostnames(const std::vector<std::string>& v) {
    std::string s;
    for (const auto& h : v) s += (s.empty() ? "" : ", ") + h;
    return s;
}

}  // namespace

int run_doctor_server(const Invocation& inv, Console& console) {
    Report r(console);
    config::LoadOptions options;
    auto cfg = check_config(r, config::Role::kServer, inv, options, &config::LoadOutcome::server);
    if (!cfg) return r.finish("server");

    const int before_material = r.failed();
    if (cfg->tunnels.empty()) {
        r.ok("material", "no [tunnel]: the Server needs no certificate material");
    } else if (cfg->acme) {
        r.ok("material",
             "the tunnel certificate comes from ACME ([server.acme]); nothing to check "
             "offline");
    } else {
        check_pair(r, PairSpec{
                          .label = "server certificate",
                          .cert_path = trust::join_path(cfg->cert_dir, trust::kServerCertFile),
                          .key_path = trust::join_path(cfg->cert_dir, trust::kServerKeyFile),
                          .ca_path = trust::join_path(cfg->cert_dir, trust::kServerCaFile),
                          .hostname = cfg->hostname,
                      });
    }
    startup_backstop(r, before_material, preflight::check_server(options));

    // Listeners: bindable, or already served by the running daemon.
    r.add("port public",
          doctor::check_bindable(cfg->public_bind, doctor::Transport::kTcp, "server"));
    if (!cfg->tunnels.empty()) {
        r.add("port tunnel",
              doctor::check_bindable(cfg->tunnel_bind, doctor::Transport::kUdp, "server"));
    }
    if (cfg->readiness_bind) {
        r.add("port readiness",
              doctor::check_bindable(*cfg->readiness_bind, doctor::Transport::kTcp, "server"));
    }

    for (const config::Route& route : cfg->routes) {
        r.add("upstream route \"" + route.label + "\"",
              doctor::check_tcp_reachable(route.upstream, kTcpTimeout));
    }
    return r.finish("server");
}

int run_doctor_client(const Invocation& inv, Console& console) {
    Report r(console);
    config::LoadOptions options;
    auto cfg = check_config(r, config::Role::kClient, inv, options, &config::LoadOutcome::client);
    if (!cfg) return r.finish("client");

    const int before_material = r.failed();
    // The identity: key mode and match first (their own lines), then the stored identity.
    const std::string id_dir = cfg->identity_dir;
    bool identity_ok =
        check_pair(r, PairSpec{
                          .label = "client identity",
                          .cert_path = trust::join_path(id_dir, trust::kClientCertFile),
                          .key_path = trust::join_path(id_dir, trust::kClientKeyFile),
                          .ca_path = {},
                          .hostname = {},
                          .check_expiry = false,  // pinned by key, not by validity
                      });
    if (identity_ok) {
        auto id = trust::load_client_identity(id_dir);
        if (id) {
            r.ok("identity", *id + " (pin it in the Server's [tunnel] client-identities)");
        } else {
            r.fail("identity", id.error().message);
        }
    }
    if (cfg->server_trust == config::Trust::kCaFile) {
        auto ca = trust::load_ca_file(cfg->server_ca_file);
        if (ca) {
            r.ok("server trust", "ca-file " + cfg->server_ca_file);
        } else {
            r.fail("server trust", ca.error().message);
        }
    } else {
        auto n = trust::count_system_trust_anchors();
        if (!n || *n == 0) {
            r.fail("server trust",
                   n ? "the system trust store holds no CA certificates" : n.error().message);
        } else {
            r.ok("server trust", "system store (" + std::to_string(*n) + " CA certificates)");
        }
    }
    if (!cfg->public_cert_dir.empty()) {
        const std::string ca = trust::join_path(cfg->public_cert_dir, trust::kPublicCaFile);
        const bool have_ca = trust::path_exists(ca);
        for (const std::string& h : preflight::terminating_hostnames(*cfg)) {
            check_pair(r, PairSpec{
                              .label = "public certificate " + h,
                              .cert_path = trust::public_cert_path(cfg->public_cert_dir, h),
                              .key_path = trust::public_key_path(cfg->public_cert_dir, h),
                              // The files may come from another CA than public-ca.crt.
                              .ca_path = have_ca ? ca : std::string(),
                              .hostname = h,
                          });
        }
    } else if (cfg->acme) {
        r.ok("public certificates", "from ACME ([client.acme]) for " +
                                        join_hostnames(preflight::terminating_hostnames(*cfg)));
    }
    startup_backstop(r, before_material, preflight::check_client(options));

    // Server addresses: DNS, then a handshake with the real identity and trust.
    auto material = preflight::load_client_material(*cfg);
    for (const config::HostPort& sa : cfg->server_addresses) {
        const std::string label = "server " + sa.text();
        doctor::Resolved res = doctor::resolve(sa, SOCK_DGRAM);
        if (res.addrs.empty()) {
            r.fail(label, res.error);
            continue;
        }
        std::string addrs;
        for (const auto& a : res.addrs)
            addrs += (addrs.empty() ? "" : ", ") + doctor::address_text(a);
        r.ok("dns " + sa.host, addrs);
        if (!material) {
            r.fail(label, "no handshake attempted: " + material.error().message);
            continue;
        }
        quic::ClientTlsConfig tc;
        tc.server_name = sa.host;
        tc.cert_pem = material->identity.cert_pem;
        tc.key_pem = material->identity.key_pem;
        if (material->server_trust == config::Trust::kCaFile) {
            tc.trust = quic::ServerTrust::ca_file;
            tc.ca_pem = material->server_ca_pem;
        }
        auto tls = quic::ClientTls::create(std::move(tc));
        if (!tls) {
            r.fail(label, "server trust: " + tls.error().message);
            continue;
        }
        for (std::size_t i = 0; i < res.addrs.size(); ++i) {
            r.add(label,
                  doctor::quic_handshake(res.addrs[i], res.lens[i], **tls, kHandshakeTimeout));
        }
    }

    for (const config::Service& s : cfg->services) {
        r.add("backend service \"" + s.label + "\"",
              doctor::check_tcp_reachable(s.backend, kTcpTimeout));
    }
    return r.finish("client");
}

// ---- lint

namespace {

std::vector<proto::Endpoint> lookup_addresses(const config::HostPort& hp) {
    std::vector<proto::Endpoint> out;
    doctor::Resolved r = doctor::resolve(hp, SOCK_STREAM);
    for (const auto& a : r.addrs) {
        if (auto e = proto::from_sockaddr(a)) out.push_back(*e);
    }
    return out;
}

}  // namespace

int run_lint(const Invocation& inv, Console& console) {
    const bool pair_flags = inv.has("server-config") || inv.has("client-config");
    if (pair_flags && inv.has("config")) {
        console.err(render_usage_error(
            inv.path, "--config cannot be used with --server-config or --client-config"));
        return kExitUsage;
    }
    config::Env env = config::Env::from_process();
    struct Target {
        config::Role role;
        std::string path;
        bool is_default = false;
    };
    std::vector<Target> targets;
    if (pair_flags) {
        if (auto p = inv.value("server-config")) targets.push_back({config::Role::kServer, *p});
        if (auto p = inv.value("client-config")) targets.push_back({config::Role::kClient, *p});
    } else {
        auto selection = select_config(inv, env);
        if (!selection) return fail(console, selection.error().message);
        auto present = config::sections_present(selection->path);
        if (!present) return fail(console, present.error().message);
        if (present->server)
            targets.push_back({config::Role::kServer, selection->path, selection->is_default});
        if (present->client)
            targets.push_back({config::Role::kClient, selection->path, selection->is_default});
        if (targets.empty())
            return fail(console,
                        selection->path + " has neither a [server] nor a [client] section");
    }

    std::optional<config::ServerConfig> server;
    std::optional<config::ClientConfig> client;
    bool invalid = false;
    for (const Target& t : targets) {
        struct stat st {};
        if (::stat(t.path.c_str(), &st) == 0 && !S_ISREG(st.st_mode))
            return fail(console, t.path + " is not a regular file");
        config::LoadOptions o;
        o.role = t.role;
        o.path = t.path;
        o.path_is_default = t.is_default;
        o.env = env;
        config::LoadOutcome outcome = config::load(o);
        if (!outcome.ok()) {
            console.err(config::format_report(t.role, t.path, outcome));
            invalid = true;
            continue;
        }
        if (t.role == config::Role::kServer)
            server = std::move(outcome.server);
        else
            client = std::move(outcome.client);
    }
    if (invalid) return kExitFailure;

    std::vector<LintFinding> findings;
    if (server) {
        auto f = lint_server(*server, lookup_addresses);
        findings.insert(findings.end(), f.begin(), f.end());
    }
    if (client) {
        auto f = lint_client(*client, lookup_addresses);
        findings.insert(findings.end(), f.begin(), f.end());
    }
    if (server && client) {
        auto id = trust::load_client_identity(client->identity_dir);
        auto f = lint_pair(*server, *client, id ? std::optional<std::string>(*id) : std::nullopt,
                           id ? std::string() : id.error().message);
        findings.insert(findings.end(), f.begin(), f.end());
    }
    std::string out;
    for (const LintFinding& f : findings) out += format_finding(f);
    if (findings.empty()) out = "lint: no warnings\n";
    console.out(out);
    return findings.empty() ? kExitOk : kExitFailure;
}

}  // namespace runewarp::cli
