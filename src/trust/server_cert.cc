// Private Server CA and leaf: generation, consistency checks, init, renew and rotate-ca.
#include "trust/server_cert.hh"

#include <array>
#include <optional>
#include <vector>

#include "core/file.hh"
#include "proto/hostname.hh"
#include "trust/material.hh"
#include "trust/x509_util.hh"

namespace runewarp::trust {

namespace {

constexpr std::array<std::string_view, 5> kFiles = {kServerCertFile, kServerKeyFile, kServerCaFile,
                                                    kServerCaKeyFile, kServerHostnameFile};

struct Pem {
    std::string key;
    std::string crt;
};

struct ServerMaterial {
    Pem ca;
    Pem leaf;
    std::time_t not_before = 0;
    std::time_t not_after = 0;
};

Result<void> first_error(std::initializer_list<Result<void>> steps) {
    for (const auto& s : steps) {
        if (!s) return s.error();
    }
    return {};
}

Result<Crt> make_ca(gnutls_x509_privkey_t key, std::time_t not_before) {
    auto crt = new_crt(key, not_before, not_before + kServerCaDays * kDaySeconds);
    if (!crt) return crt;
    gnutls_x509_crt_t c = crt->get();
    auto r = first_error({
        gnutls_check(gnutls_x509_crt_set_dn_by_oid(
                         c, GNUTLS_OID_X520_COMMON_NAME, 0, kServerCaCommonName.data(),
                         static_cast<unsigned>(kServerCaCommonName.size())),
                     "set CA subject"),
        // CA:TRUE without pathLenConstraint (negative = absent).
        gnutls_check(gnutls_x509_crt_set_basic_constraints(c, 1, -1), "set basicConstraints"),
        gnutls_check(
            gnutls_x509_crt_set_key_usage(
                c, GNUTLS_KEY_DIGITAL_SIGNATURE | GNUTLS_KEY_KEY_CERT_SIGN | GNUTLS_KEY_CRL_SIGN),
            "set keyUsage"),
    });
    if (!r) return r.error();
    if (auto s = gnutls_check(gnutls_x509_crt_sign2(c, c, key, GNUTLS_DIG_SHA256, 0), "sign CA");
        !s) {
        return s.error();
    }
    return crt;
}

Result<Crt> make_leaf(gnutls_x509_privkey_t key, const std::string& hostname, gnutls_x509_crt_t ca,
                      gnutls_x509_privkey_t ca_key, std::time_t not_before) {
    auto crt = new_crt(key, not_before, not_before + kServerCertDays * kDaySeconds);
    if (!crt) return crt;
    gnutls_x509_crt_t c = crt->get();
    std::array<unsigned char, 64> ca_id{};
    std::size_t ca_id_size = ca_id.size();
    unsigned critical = 0;
    if (auto r = gnutls_check(
            gnutls_x509_crt_get_subject_key_id(ca, ca_id.data(), &ca_id_size, &critical),
            "read CA subjectKeyIdentifier");
        !r) {
        return r.error();
    }
    auto r = first_error({
        gnutls_check(
            gnutls_x509_crt_set_dn_by_oid(c, GNUTLS_OID_X520_COMMON_NAME, 0, hostname.data(),
                                          static_cast<unsigned>(hostname.size())),
            "set subject"),
        gnutls_check(gnutls_x509_crt_set_subject_alt_name(c, GNUTLS_SAN_DNSNAME, hostname.data(),
                                                          static_cast<unsigned>(hostname.size()),
                                                          GNUTLS_FSAN_SET),
                     "set subjectAltName"),
        gnutls_check(gnutls_x509_crt_set_basic_constraints(c, 0, -1), "set basicConstraints"),
        gnutls_check(gnutls_x509_crt_set_key_usage(
                         c, GNUTLS_KEY_DIGITAL_SIGNATURE | GNUTLS_KEY_KEY_ENCIPHERMENT),
                     "set keyUsage"),
        gnutls_check(gnutls_x509_crt_set_key_purpose_oid(c, GNUTLS_KP_TLS_WWW_SERVER, 0),
                     "set extendedKeyUsage"),
        gnutls_check(gnutls_x509_crt_set_authority_key_id(c, ca_id.data(), ca_id_size),
                     "set authorityKeyIdentifier"),
    });
    if (!r) return r.error();
    if (auto s =
            gnutls_check(gnutls_x509_crt_sign2(c, ca, ca_key, GNUTLS_DIG_SHA256, 0), "sign leaf");
        !s) {
        return s.error();
    }
    return crt;
}

Result<Pem> to_pem(gnutls_x509_privkey_t key, gnutls_x509_crt_t crt) {
    auto k = export_key_pem(key);
    if (!k) return std::move(k).error();
    auto c = export_crt_pem(crt);
    if (!c) return std::move(c).error();
    return Pem{std::move(*k), std::move(*c)};
}

// A leaf for `hostname` from the CA in `ca` (PEM).
Result<ServerMaterial> issue_leaf(const Pem& ca, const std::string& hostname, std::time_t now,
                                  const std::string& dir) {
    auto ca_key = import_key_pem(ca.key, join_path(dir, kServerCaKeyFile));
    if (!ca_key) return std::move(ca_key).error();
    auto ca_crt = import_crt_pem(ca.crt, join_path(dir, kServerCaFile));
    if (!ca_crt) return std::move(ca_crt).error();
    auto key = generate_p256_key();
    if (!key) return std::move(key).error();
    ServerMaterial m;
    m.ca = ca;
    m.not_before = now - kBackdateSeconds;
    m.not_after = m.not_before + kServerCertDays * kDaySeconds;
    auto leaf = make_leaf(key->get(), hostname, ca_crt->get(), ca_key->get(), m.not_before);
    if (!leaf) return std::move(leaf).error();
    auto pem = to_pem(key->get(), leaf->get());
    if (!pem) return std::move(pem).error();
    m.leaf = std::move(*pem);
    return m;
}

Result<ServerMaterial> generate_all(const std::string& hostname, std::time_t now,
                                    const std::string& dir) {
    auto ca_key = generate_p256_key();
    if (!ca_key) return std::move(ca_key).error();
    auto ca = make_ca(ca_key->get(), now - kBackdateSeconds);
    if (!ca) return std::move(ca).error();
    auto ca_pem = to_pem(ca_key->get(), ca->get());
    if (!ca_pem) return std::move(ca_pem).error();
    return issue_leaf(*ca_pem, hostname, now, dir);
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
    std::string key_path = join_path(dir, kServerCaKeyFile);
    std::string crt_path = join_path(dir, kServerCaFile);
    auto key_pem = read_private_key(key_path);
    if (!key_pem) return std::move(key_pem).error();
    auto crt_pem = core::read_file(crt_path);
    if (!crt_pem) return std::move(crt_pem).error();
    auto key = import_key_pem(*key_pem, key_path);
    if (!key) return std::move(key).error();
    auto crt = import_crt_pem(*crt_pem, crt_path);
    if (!crt) return std::move(crt).error();
    auto match = key_matches_crt(key->get(), crt->get());
    if (!match) return std::move(match).error();
    if (!*match) return Error::msg(key_path + " is not the key of " + crt_path);
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
    Pem ca;
    auto ca_key = read_private_key(join_path(dir, kServerCaKeyFile));
    if (!ca_key) return std::move(ca_key).error();
    auto ca_crt = core::read_file(join_path(dir, kServerCaFile));
    if (!ca_crt) return std::move(ca_crt).error();
    ca.key = std::move(*ca_key);
    ca.crt = std::move(*ca_crt);
    auto m = issue_leaf(ca, *hostname, std::time(nullptr), dir);
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
    const std::string key_path = join_path(dir, kServerKeyFile);
    const std::string ca_path = join_path(dir, kServerCaFile);
    auto crt_pem = core::read_file(crt_path);
    if (!crt_pem) return std::move(crt_pem).error();
    auto key_pem = read_private_key(key_path);
    if (!key_pem) return std::move(key_pem).error();
    auto ca_pem = core::read_file(ca_path);
    if (!ca_pem) return std::move(ca_pem).error();

    auto chain = import_crt_list_pem(*crt_pem, crt_path, true);
    if (!chain) return std::move(chain).error();
    auto key = import_key_pem(*key_pem, key_path);
    if (!key) return std::move(key).error();
    auto cas = import_crt_list_pem(*ca_pem, ca_path);
    if (!cas) return std::move(cas).error();
    for (const Crt& ca : *cas) {
        unsigned critical = 0;
        if (gnutls_x509_crt_get_ca_status(ca.get(), &critical) <= 0) {
            return Error::msg(ca_path + " holds a certificate that is not a CA certificate");
        }
    }
    gnutls_x509_crt_t leaf = chain->front().get();
    auto match = key_matches_crt(key->get(), leaf);
    if (!match) return std::move(match).error();
    if (!*match) return Error::msg(key_path + " is not the key of " + crt_path);

    gnutls_x509_trust_list_t tl = nullptr;
    if (int rc = gnutls_x509_trust_list_init(&tl, 0); rc < 0) {
        return gnutls_error("cannot allocate trust list", rc);
    }
    TrustList tl_owner(tl);
    gnutls_datum_t ca_datum = datum_of(*ca_pem);
    if (int rc =
            gnutls_x509_trust_list_add_trust_mem(tl, &ca_datum, nullptr, GNUTLS_X509_FMT_PEM, 0, 0);
        rc < 0) {
        return gnutls_error("cannot load " + ca_path, rc);
    }
    std::vector<gnutls_x509_crt_t> raw;
    for (const Crt& c : *chain) raw.push_back(c.get());
    gnutls_typed_vdata_st vdata[2] = {
        {GNUTLS_DT_DNS_HOSTNAME,
         const_cast<unsigned char*>(reinterpret_cast<const unsigned char*>(hostname.c_str())), 0},
        {GNUTLS_DT_KEY_PURPOSE_OID,
         const_cast<unsigned char*>(
             reinterpret_cast<const unsigned char*>(GNUTLS_KP_TLS_WWW_SERVER)),
         0},
    };
    unsigned flags = check_time ? 0 : GNUTLS_VERIFY_DISABLE_TIME_CHECKS;
    unsigned status = 0;
    int rc = gnutls_x509_trust_list_verify_crt2(tl, raw.data(), static_cast<unsigned>(raw.size()),
                                                vdata, 2, flags, &status, nullptr);
    if (rc < 0) return gnutls_error("cannot verify " + crt_path, rc);
    if (status != 0) {
        OwnedDatum text;
        std::string why = "verification failed";
        if (gnutls_certificate_verification_status_print(status, GNUTLS_CRT_X509, text.out(), 0) >=
            0) {
            why = text.str();
        }
        return Error::msg(crt_path + " does not verify against " + ca_path + " for " + hostname +
                          ": " + why);
    }
    ServerCertMaterial out;
    out.validity.not_before = gnutls_x509_crt_get_activation_time(leaf);
    out.validity.not_after = gnutls_x509_crt_get_expiration_time(leaf);
    out.cert_path = crt_path;
    out.cert_pem = std::move(*crt_pem);
    out.key_pem = std::move(*key_pem);
    return out;
}

Result<ServerCertCheck> verify_server_cert_dir(const std::string& dir, const std::string& hostname,
                                               bool check_time) {
    auto m = load_server_cert_dir(dir, hostname, check_time);
    if (!m) return std::move(m).error();
    return m->validity;
}

}  // namespace runewarp::trust
