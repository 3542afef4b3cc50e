// Client identity material: generation, validation on every read, init and rotate.
#include "trust/client_identity.hh"

#include <array>
#include <optional>

#include "core/file.hh"
#include "trust/identity.hh"
#include "trust/material.hh"
#include "trust/x509_util.hh"

namespace runewarp::trust {

namespace {

constexpr std::array<std::string_view, 3> kFiles = {kClientKeyFile, kClientCertFile,
                                                    kClientIdentityFile};

Error incomplete(const std::string& dir, const MaterialSurvey& files, const std::string& detail) {
    return incomplete_material(
        "client identity material", dir, files, detail,
        "Repair or remove these files and rerun `runewarp client identity init`, or rotate the "
        "identity with `runewarp client identity rotate` once the files are consistent");
}

// Writes the three files: O_EXCL into a fresh directory, else atomic replacement. The key goes
// first: a crash between the renames leaves a mismatch that every read reports.
Result<void> write_identity(const std::string& dir, const ClientIdentityMaterial& m, bool fresh) {
    auto put = fresh ? write_new_file : replace_file;
    const std::pair<std::string_view, std::pair<const std::string*, mode_t>> files[] = {
        {kClientKeyFile, {&m.key_pem, 0600}},
        {kClientCertFile, {&m.cert_pem, 0644}},
        {kClientIdentityFile, {&m.identity, 0644}},
    };
    for (const auto& [name, what] : files) {
        if (auto w = put(join_path(dir, name), *what.first, what.second); !w) return w;
    }
    return {};
}

Result<ClientIdentityInit> create(const std::string& dir) {
    auto m = generate_client_identity(std::time(nullptr));
    if (!m) return std::move(m).error();
    if (auto d = ensure_dir(dir, 0700); !d) return std::move(d).error();
    if (auto w = write_identity(dir, *m, true); !w) return std::move(w).error();
    return ClientIdentityInit{m->identity, true};
}

}  // namespace

Result<ClientIdentityMaterial> generate_client_identity(std::time_t now) {
    auto key = generate_ed25519_key();
    if (!key) return std::move(key).error();
    ClientIdentityMaterial m;
    m.not_before = now - kBackdateSeconds;
    m.not_after = m.not_before + kClientCertDays * kDaySeconds;
    auto crt = new_crt(key->get(), m.not_before, m.not_after);
    if (!crt) return std::move(crt).error();
    gnutls_x509_crt_t c = crt->get();

    const std::string dns(kClientCertDnsName);
    Result<void> steps[] = {
        gnutls_check(gnutls_x509_crt_set_dn_by_oid(c, GNUTLS_OID_X520_COMMON_NAME, 0, dns.data(),
                                                   static_cast<unsigned>(dns.size())),
                     "set subject"),
        gnutls_check(gnutls_x509_crt_set_subject_alt_name(c, GNUTLS_SAN_DNSNAME, dns.data(),
                                                          static_cast<unsigned>(dns.size()),
                                                          GNUTLS_FSAN_SET),
                     "set subjectAltName"),
        gnutls_check(gnutls_x509_crt_set_key_usage(c, GNUTLS_KEY_DIGITAL_SIGNATURE),
                     "set keyUsage"),
        gnutls_check(gnutls_x509_crt_set_key_purpose_oid(c, GNUTLS_KP_TLS_WWW_CLIENT, 0),
                     "set extendedKeyUsage"),
        // Ed25519 signs the message itself (RFC 8032 PureEdDSA); GnuTLS picks the digest.
        gnutls_check(gnutls_x509_crt_sign2(c, c, key->get(), GNUTLS_DIG_UNKNOWN, 0),
                     "sign client certificate"),
    };
    for (auto& s : steps) {
        if (!s) return std::move(s).error();
    }

    auto pem = export_key_pem(key->get());
    if (!pem) return std::move(pem).error();
    m.key_pem = std::move(*pem);
    auto cert_pem = export_crt_pem(c);
    if (!cert_pem) return std::move(cert_pem).error();
    m.cert_pem = std::move(*cert_pem);
    auto id = identity_of_certificate(c);
    if (!id) return std::move(id).error();
    m.identity = std::move(*id);
    return m;
}

Result<ClientIdentityFiles> load_client_identity_files(const std::string& dir) {
    std::array<std::optional<std::string>, 3> contents;
    MaterialSurvey files;
    for (std::size_t i = 0; i < kFiles.size(); ++i) {
        const std::string path = join_path(dir, kFiles[i]);
        auto r = kFiles[i] == kClientKeyFile ? read_private_key_if_exists(path)
                                             : core::read_file_if_exists(path);
        if (!r) return std::move(r).error();
        contents[i] = std::move(*r);
        (contents[i] ? files.present : files.missing).push_back(kFiles[i]);
    }
    if (files.present.empty()) {
        return Error::msg("no client identity in " + dir + ": run `runewarp client identity init`");
    }
    if (!files.missing.empty()) return incomplete(dir, files, {});

    const std::string key_path = join_path(dir, kClientKeyFile);
    const std::string crt_path = join_path(dir, kClientCertFile);
    const std::string id_path = join_path(dir, kClientIdentityFile);
    std::string_view stored = trim(*contents[2]);
    if (!is_valid_identity(stored)) {
        return Error::msg("stored client identity in " + id_path +
                          " is not 64 lowercase hexadecimal characters");
    }
    auto key = import_key_pem(*contents[0], key_path);
    if (!key) return std::move(key).error();
    auto crt = import_crt_pem(*contents[1], crt_path);
    if (!crt) return std::move(crt).error();
    auto from_key = identity_of_privkey(key->get());
    if (!from_key) return Error::msg(key_path + ": " + from_key.error().message);
    auto from_crt = identity_of_certificate(crt->get());
    if (!from_crt) return Error::msg(crt_path + ": " + from_crt.error().message);
    for (const std::string* derived : {&*from_key, &*from_crt}) {
        if (*derived != stored) {
            return Error::msg("stored client identity " + std::string(stored) +
                              " does not match the current key or certificate identity " +
                              *derived);
        }
    }
    return ClientIdentityFiles{std::string(stored), std::move(*contents[1]),
                               std::move(*contents[0])};
}

Result<std::string> load_client_identity(const std::string& dir) {
    auto files = load_client_identity_files(dir);
    if (!files) return std::move(files).error();
    return std::move(files->identity);
}

Result<ClientIdentityInit> init_client_identity(const std::string& dir) {
    MaterialSurvey files = survey_files(dir, kFiles);
    if (files.present.empty()) return create(dir);
    if (!files.missing.empty()) return incomplete(dir, files, {});
    auto id = load_client_identity(dir);
    if (!id) return incomplete(dir, files, id.error().message);
    return ClientIdentityInit{std::move(*id), false};
}

Result<std::string> rotate_client_identity(const std::string& dir) {
    auto old = load_client_identity(dir);
    if (!old) return std::move(old).error();
    auto m = generate_client_identity(std::time(nullptr));
    if (!m) return std::move(m).error();
    if (auto w = write_identity(dir, *m, false); !w) return std::move(w).error();
    return std::move(m->identity);
}

}  // namespace runewarp::trust
