// Private Server CA and leaf: generation, consistency checks, init, renew and rotate-ca.
#include "trust/server_cert.hh"

#include <array>

#include "core/file.hh"
#include "proto/hostname.hh"
#include "trust/material.hh"
#include "trust/private_ca.hh"
#include "trust/x509_util.hh"

namespace runewarp::trust {

namespace {

constexpr std::array<std::string_view, 5> kFiles = {kServerCertFile, kServerKeyFile, kServerCaFile,
                                                    kServerCaKeyFile, kServerHostnameFile};

struct ServerMaterial {
    KeyCertPem ca;
    KeyCertPem leaf;
    std::time_t not_before = 0;
    std::time_t not_after = 0;
};

// A leaf for `hostname` from the CA in `ca` (PEM).
Result<ServerMaterial> issue_leaf(const KeyCertPem& ca, const std::string& hostname,
                                  std::time_t now, const std::string& dir) {
    auto leaf = issue_private_leaf(ca, hostname, now, join_path(dir, kServerCaKeyFile),
                                   join_path(dir, kServerCaFile));
    if (!leaf) return std::move(leaf).error();
    return ServerMaterial{ca, std::move(leaf->pem), leaf->not_before, leaf->not_after};
}

Result<ServerMaterial> generate_all(const std::string& hostname, std::time_t now,
                                    const std::string& dir) {
    auto ca = make_private_ca(kServerCaCommonName, now);
    if (!ca) return std::move(ca).error();
    return issue_leaf(*ca, hostname, now, dir);
}

Result<void> ensure_dirs(const std::string& dir) {
    if (auto d = ensure_dir(dir, 0755); !d) return d;
    return ensure_dir(join_path(dir, kServerStateDir), 0700);
}

// Writes every file: O_EXCL for a fresh directory, atomic replacement otherwise.
Result<void> write_all(const std::string& dir, const ServerMaterial& m, const std::string& host,
                       bool fresh) {
    auto put = fresh ? write_new_file : replace_file;
    const std::pair<std::string_view, std::pair<const std::string*, mode_t>> files[] = {
        {kServerCaKeyFile, {&m.ca.key, 0600}}, {kServerCaFile, {&m.ca.crt, 0644}},
        {kServerKeyFile, {&m.leaf.key, 0600}}, {kServerCertFile, {&m.leaf.crt, 0644}},
        {kServerHostnameFile, {&host, 0644}},
    };
    for (const auto& [name, what] : files) {
        if (auto w = put(join_path(dir, name), *what.first, what.second); !w) return w;
    }
    return {};
}

ServerCertSummary summary(std::string headline, const std::string& hostname, const std::string& dir,
                          std::time_t nb, std::time_t na) {
    return ServerCertSummary{std::move(headline), hostname, dir, nb, na};
}

Error incomplete(const std::string& dir, const MaterialSurvey& files, const std::string& detail) {
    return incomplete_material(
        "Server certificate material", dir, files, detail,
        "Repair or remove these files and rerun `runewarp server cert init`");
}

// The stored hostname, canonical.
Result<std::string> stored_hostname(const std::string& dir) {
    std::string path = join_path(dir, kServerHostnameFile);
    auto text = core::read_file(path);
    if (!text) return std::move(text).error();
    auto h = proto::normalize_hostname(trim(*text));
    if (!h.ok()) {
        return Error::msg("stored Server hostname in " + path +
                          " is invalid: " + proto::hostname_error_text(h.error));
    }
    return h.canonical;
}

// All five files consistent: the runtime check plus the CA key matching the CA certificate.
Result<ServerCertCheck> check_complete(const std::string& dir, const std::string& hostname) {
    auto v = verify_server_cert_dir(dir, hostname, false);
    if (!v) return v;
    auto ca = load_private_ca(join_path(dir, kServerCaKeyFile), join_path(dir, kServerCaFile));
    if (!ca) return std::move(ca).error();
    return v;
}

}  // namespace

std::string format_server_cert_summary(const ServerCertSummary& s) {
    std::string out;
    auto line = [&out](std::string_view a, const std::string& b) {
        out.append(a);
        out.append(b);
        out.push_back('\n');
    };
    out.append(s.headline);
    out.push_back('\n');
    line("Server hostname: ", s.hostname);
    line("Certificate directory: ", s.dir);
    line("Server certificate: ", join_path(s.dir, kServerCertFile));
    line("Server certificate authority: ", join_path(s.dir, kServerCaFile));
    line("Certificate lifetime: ", std::to_string(kServerCertDays) + " days");
    line("Renew after (UTC): ", rfc3339_utc(s.not_before + kServerRenewAfterDays * kDaySeconds));
    line("Issued at (UTC): ", rfc3339_utc(s.not_before));
    line("Expires at (UTC): ", rfc3339_utc(s.not_after));
    return out;
}

Result<ServerCertSummary> init_server_cert(const std::string& dir, const std::string& hostname) {
    MaterialSurvey p = survey_files(dir, kFiles);
    if (p.missing.empty()) {
        auto stored = stored_hostname(dir);
        if (!stored) return incomplete(dir, p, stored.error().message);
        if (*stored != hostname) {
            return Error::msg("Server certificate material in " + dir +
                              " already belongs to Server hostname " + *stored + ", not " +
                              hostname + "; use `runewarp server cert rotate-ca` to replace it");
        }
        auto v = check_complete(dir, hostname);
        if (!v) return incomplete(dir, p, v.error().message);
        return summary("Server certificate material already exists", hostname, dir, v->not_before,
                       v->not_after);
    }
    if (!p.present.empty()) return incomplete(dir, p, {});
    auto m = generate_all(hostname, std::time(nullptr), dir);
    if (!m) return std::move(m).error();
    if (auto d = ensure_dirs(dir); !d) return std::move(d).error();
    if (auto w = write_all(dir, *m, hostname, true); !w) return std::move(w).error();
    return summary("Server certificate initialized", hostname, dir, m->not_before, m->not_after);
}

Result<ServerCertSummary> renew_server_cert(const std::string& dir) {
    MaterialSurvey p = survey_files(dir, kFiles);
    if (p.present.empty()) {
        return Error::msg("no Server certificate material in " + dir +
                          ": run `runewarp server cert init` first");
    }
    if (!p.missing.empty()) return incomplete(dir, p, {});
    auto hostname = stored_hostname(dir);
    if (!hostname) return std::move(hostname).error();
    if (auto v = check_complete(dir, *hostname); !v) return incomplete(dir, p, v.error().message);
    auto ca = load_private_ca(join_path(dir, kServerCaKeyFile), join_path(dir, kServerCaFile));
    if (!ca) return std::move(ca).error();
    auto m = issue_leaf(*ca, *hostname, std::time(nullptr), dir);
    if (!m) return std::move(m).error();
    if (auto w = replace_file(join_path(dir, kServerKeyFile), m->leaf.key, 0600); !w) {
        return std::move(w).error();
    }
    if (auto w = replace_file(join_path(dir, kServerCertFile), m->leaf.crt, 0644); !w) {
        return std::move(w).error();
    }
    return summary("Server certificate renewed", *hostname, dir, m->not_before, m->not_after);
}

Result<ServerCertSummary> rotate_server_ca(const std::string& dir, const std::string& hostname) {
    auto m = generate_all(hostname, std::time(nullptr), dir);
    if (!m) return std::move(m).error();
    if (auto d = ensure_dirs(dir); !d) return std::move(d).error();
    if (auto w = write_all(dir, *m, hostname, false); !w) return std::move(w).error();
    return summary("Server certificate authority rotated", hostname, dir, m->not_before,
                   m->not_after);
}

Result<ServerCertMaterial> load_server_cert_dir(const std::string& dir, const std::string& hostname,
                                                bool check_time) {
    const std::string crt_path = join_path(dir, kServerCertFile);
    const std::string ca_path = join_path(dir, kServerCaFile);
    auto leaf = load_leaf(crt_path, join_path(dir, kServerKeyFile), hostname, &ca_path, check_time);
    if (!leaf) return std::move(leaf).error();
    ServerCertMaterial out;
    out.validity.not_before = leaf->not_before;
    out.validity.not_after = leaf->not_after;
    out.cert_path = crt_path;
    out.cert_pem = std::move(leaf->cert_pem);
    out.key_pem = std::move(leaf->key_pem);
    return out;
}

Result<ServerCertCheck> verify_server_cert_dir(const std::string& dir, const std::string& hostname,
                                               bool check_time) {
    auto m = load_server_cert_dir(dir, hostname, check_time);
    if (!m) return std::move(m).error();
    return m->validity;
}

}  // namespace runewarp::trust
