// Key generation, PEM import/export and certificate skeletons over GnuTLS.
#include "trust/x509_util.hh"

#include <gnutls/crypto.h>

#include <array>
#include <cstdint>

#include "trust/identity.hh"

namespace runewarp::trust {

namespace {

Result<X509Key> generate_key(gnutls_pk_algorithm_t algo, gnutls_ecc_curve_t curve) {
    gnutls_x509_privkey_t raw = nullptr;
    int rc = gnutls_x509_privkey_init(&raw);
    if (rc < 0) return gnutls_error("cannot allocate key", rc);
    X509Key key(raw);
    rc = gnutls_x509_privkey_generate(raw, algo, GNUTLS_CURVE_TO_BITS(curve), 0);
    if (rc < 0) return gnutls_error("cannot generate key", rc);
    return key;
}

}  // namespace

Result<X509Key> generate_ed25519_key() {
    return generate_key(GNUTLS_PK_EDDSA_ED25519, GNUTLS_ECC_CURVE_ED25519);
}

Result<X509Key> generate_p256_key() {
    return generate_key(GNUTLS_PK_ECDSA, GNUTLS_ECC_CURVE_SECP256R1);
}

Result<std::string> export_key_pem(gnutls_x509_privkey_t key) {
    OwnedDatum out;
    int rc = gnutls_x509_privkey_export2_pkcs8(key, GNUTLS_X509_FMT_PEM, nullptr, GNUTLS_PKCS_PLAIN,
                                               out.out());
    if (rc < 0) return gnutls_error("cannot export private key", rc);
    return out.str();
}

Result<X509Key> import_key_pem(std::string_view pem, const std::string& path) {
    gnutls_x509_privkey_t raw = nullptr;
    int rc = gnutls_x509_privkey_init(&raw);
    if (rc < 0) return gnutls_error("cannot allocate key", rc);
    X509Key key(raw);
    gnutls_datum_t d = datum_of(pem);
    rc = gnutls_x509_privkey_import2(raw, &d, GNUTLS_X509_FMT_PEM, nullptr, GNUTLS_PKCS_PLAIN);
    if (rc < 0) return gnutls_error("cannot parse private key " + path, rc);
    return key;
}

Result<std::string> export_crt_pem(gnutls_x509_crt_t crt) {
    OwnedDatum out;
    int rc = gnutls_x509_crt_export2(crt, GNUTLS_X509_FMT_PEM, out.out());
    if (rc < 0) return gnutls_error("cannot export certificate", rc);
    return out.str();
}

Result<std::vector<Crt>> import_crt_list_pem(std::string_view pem, const std::string& path,
                                             bool chain) {
    gnutls_x509_crt_t* list = nullptr;
    unsigned int n = 0;
    gnutls_datum_t d = datum_of(pem);
    int rc = gnutls_x509_crt_list_import2(&list, &n, &d, GNUTLS_X509_FMT_PEM,
                                          chain ? GNUTLS_X509_CRT_LIST_FAIL_IF_UNSORTED : 0);
    if (rc == GNUTLS_E_NO_CERTIFICATE_FOUND) return Error::msg("no certificate in " + path);
    if (rc < 0) return gnutls_error("cannot parse certificate " + path, rc);
    std::vector<Crt> out;
    for (unsigned int i = 0; i < n; ++i) out.emplace_back(list[i]);
    gnutls_free(list);
    if (out.empty()) return Error::msg("no certificate in " + path);
    return out;
}

Result<Crt> import_crt_pem(std::string_view pem, const std::string& path) {
    auto list = import_crt_list_pem(pem, path);
    if (!list) return std::move(list).error();
    return std::move(list->front());
}

Result<Crt> new_crt(gnutls_x509_privkey_t subject_key, std::time_t not_before,
                    std::time_t not_after) {
    gnutls_x509_crt_t raw = nullptr;
    int rc = gnutls_x509_crt_init(&raw);
    if (rc < 0) return gnutls_error("cannot allocate certificate", rc);
    Crt crt(raw);
    if ((rc = gnutls_x509_crt_set_version(raw, 3)) < 0) return gnutls_error("set version", rc);

    // RFC 5280 4.1.2.2: positive, at most 20 octets. Clearing the top bit keeps the INTEGER
    // positive and setting the low bit of the first octet keeps its encoding minimal.
    std::array<std::uint8_t, 16> serial{};
    if ((rc = gnutls_rnd(GNUTLS_RND_NONCE, serial.data(), serial.size())) < 0) {
        return gnutls_error("cannot generate serial", rc);
    }
    serial[0] = static_cast<std::uint8_t>((serial[0] & 0x7f) | 0x01);
    if ((rc = gnutls_x509_crt_set_serial(raw, serial.data(), serial.size())) < 0) {
        return gnutls_error("set serial", rc);
    }
    if ((rc = gnutls_x509_crt_set_activation_time(raw, not_before)) < 0) {
        return gnutls_error("set notBefore", rc);
    }
    if ((rc = gnutls_x509_crt_set_expiration_time(raw, not_after)) < 0) {
        return gnutls_error("set notAfter", rc);
    }
    if ((rc = gnutls_x509_crt_set_key(raw, subject_key)) < 0) return gnutls_error("set key", rc);

    std::array<unsigned char, 64> key_id{};
    std::size_t key_id_size = key_id.size();
    rc = gnutls_x509_crt_get_key_id(raw, GNUTLS_KEYID_USE_SHA1, key_id.data(), &key_id_size);
    if (rc < 0) return gnutls_error("compute key id", rc);
    if ((rc = gnutls_x509_crt_set_subject_key_id(raw, key_id.data(), key_id_size)) < 0) {
        return gnutls_error("set subjectKeyIdentifier", rc);
    }
    return crt;
}

Result<bool> key_matches_crt(gnutls_x509_privkey_t key, gnutls_x509_crt_t crt) {
    auto from_key = identity_of_privkey(key);
    if (!from_key) return std::move(from_key).error();
    auto from_crt = identity_of_certificate(crt);
    if (!from_crt) return std::move(from_crt).error();
    return *from_key == *from_crt;
}

std::string rfc3339_utc(std::time_t t) {
    struct tm tm {};
    gmtime_r(&t, &tm);
    char buf[32];
    std::size_t n = std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return std::string(buf, n);
}

}  // namespace runewarp::trust
