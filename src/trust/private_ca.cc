// Private CA and leaf profiles over GnuTLS: generation, CA pair loading, leaf checks.
#include "trust/private_ca.hh"

#include <array>
#include <initializer_list>
#include <vector>

#include "core/file.hh"
#include "trust/material.hh"
#include "trust/x509_util.hh"

namespace runewarp::trust {

namespace {

Result<void> first_error(std::initializer_list<Result<void>> steps) {
    for (const auto& s : steps) {
        if (!s) return s.error();
    }
    return {};
}

Result<Crt> make_ca_crt(gnutls_x509_privkey_t key, std::string_view common_name,
                        std::time_t not_before) {
    auto crt = new_crt(key, not_before, not_before + kPrivateCaDays * kDaySeconds);
    if (!crt) return crt;
    gnutls_x509_crt_t c = crt->get();
    auto r = first_error({
        gnutls_check(
            gnutls_x509_crt_set_dn_by_oid(c, GNUTLS_OID_X520_COMMON_NAME, 0, common_name.data(),
                                          static_cast<unsigned>(common_name.size())),
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

Result<Crt> make_leaf_crt(gnutls_x509_privkey_t key, const std::string& hostname,
                          gnutls_x509_crt_t ca, gnutls_x509_privkey_t ca_key,
                          std::time_t not_before) {
    auto crt = new_crt(key, not_before, not_before + kPrivateLeafDays * kDaySeconds);
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

Result<KeyCertPem> to_pem(gnutls_x509_privkey_t key, gnutls_x509_crt_t crt) {
    auto k = export_key_pem(key);
    if (!k) return std::move(k).error();
    auto c = export_crt_pem(crt);
    if (!c) return std::move(c).error();
    return KeyCertPem{std::move(*k), std::move(*c)};
}

bool is_ca(gnutls_x509_crt_t crt) noexcept {
    unsigned critical = 0;
    return gnutls_x509_crt_get_ca_status(crt, &critical) > 0;
}

// The chain verifies against the CA certificates in `ca_pem` for `hostname` as a TLS server
// certificate.
Result<void> verify_chain(const std::vector<Crt>& chain, const std::string& ca_pem,
                          const std::string& crt_path, const std::string& ca_path,
                          const std::string& hostname, bool check_time) {
    gnutls_x509_trust_list_t tl = nullptr;
    if (int rc = gnutls_x509_trust_list_init(&tl, 0); rc < 0) {
        return gnutls_error("cannot allocate trust list", rc);
    }
    TrustList tl_owner(tl);
    gnutls_datum_t ca_datum = datum_of(ca_pem);
    if (int rc =
            gnutls_x509_trust_list_add_trust_mem(tl, &ca_datum, nullptr, GNUTLS_X509_FMT_PEM, 0, 0);
        rc < 0) {
        return gnutls_error("cannot load " + ca_path, rc);
    }
    std::vector<gnutls_x509_crt_t> raw;
    for (const Crt& c : chain) raw.push_back(c.get());
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
    return {};
}

}  // namespace

Result<KeyCertPem> make_private_ca(std::string_view common_name, std::time_t now) {
    auto key = generate_p256_key();
    if (!key) return std::move(key).error();
    auto crt = make_ca_crt(key->get(), common_name, now - kBackdateSeconds);
    if (!crt) return std::move(crt).error();
    return to_pem(key->get(), crt->get());
}

Result<IssuedLeaf> issue_private_leaf(const KeyCertPem& ca, const std::string& hostname,
                                      std::time_t now, const std::string& ca_key_path,
                                      const std::string& ca_crt_path) {
    auto ca_key = import_key_pem(ca.key, ca_key_path);
    if (!ca_key) return std::move(ca_key).error();
    auto ca_crt = import_crt_pem(ca.crt, ca_crt_path);
    if (!ca_crt) return std::move(ca_crt).error();
    auto key = generate_p256_key();
    if (!key) return std::move(key).error();
    IssuedLeaf out;
    out.not_before = now - kBackdateSeconds;
    out.not_after = out.not_before + kPrivateLeafDays * kDaySeconds;
    auto leaf = make_leaf_crt(key->get(), hostname, ca_crt->get(), ca_key->get(), out.not_before);
    if (!leaf) return std::move(leaf).error();
    auto pem = to_pem(key->get(), leaf->get());
    if (!pem) return std::move(pem).error();
    out.pem = std::move(*pem);
    return out;
}

Result<KeyCertPem> load_private_ca(const std::string& key_path, const std::string& crt_path) {
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
    if (!is_ca(crt->get())) return Error::msg(crt_path + " is not a CA certificate");
    return KeyCertPem{std::move(*key_pem), std::move(*crt_pem)};
}

Result<LoadedLeaf> load_leaf(const std::string& crt_path, const std::string& key_path,
                             const std::string& hostname, const std::string* ca_path,
                             bool check_time) {
    auto crt_pem = core::read_file(crt_path);
    if (!crt_pem) return std::move(crt_pem).error();
    auto key_pem = read_private_key(key_path);
    if (!key_pem) return std::move(key_pem).error();
    std::string ca_pem;
    if (ca_path != nullptr) {
        auto r = core::read_file(*ca_path);
        if (!r) return std::move(r).error();
        ca_pem = std::move(*r);
    }

    auto chain = import_crt_list_pem(*crt_pem, crt_path, true);
    if (!chain) return std::move(chain).error();
    auto key = import_key_pem(*key_pem, key_path);
    if (!key) return std::move(key).error();
    if (ca_path != nullptr) {
        auto cas = import_crt_list_pem(ca_pem, *ca_path);
        if (!cas) return std::move(cas).error();
        for (const Crt& ca : *cas) {
            if (!is_ca(ca.get())) {
                return Error::msg(*ca_path + " holds a certificate that is not a CA certificate");
            }
        }
    }
    gnutls_x509_crt_t leaf = chain->front().get();
    auto match = key_matches_crt(key->get(), leaf);
    if (!match) return std::move(match).error();
    if (!*match) return Error::msg(key_path + " is not the key of " + crt_path);

    if (ca_path != nullptr) {
        if (auto v = verify_chain(*chain, ca_pem, crt_path, *ca_path, hostname, check_time); !v) {
            return std::move(v).error();
        }
    } else if (gnutls_x509_crt_check_hostname(leaf, hostname.c_str()) == 0) {
        return Error::msg(crt_path + " is not valid for hostname " + hostname +
                          ": no DNS subjectAltName or common name matches it");
    }
    LoadedLeaf out;
    out.not_before = gnutls_x509_crt_get_activation_time(leaf);
    out.not_after = gnutls_x509_crt_get_expiration_time(leaf);
    out.cert_pem = std::move(*crt_pem);
    out.key_pem = std::move(*key_pem);
    return out;
}

}  // namespace runewarp::trust
