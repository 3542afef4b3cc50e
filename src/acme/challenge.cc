#include "acme/challenge.hh"

#include <gnutls/crypto.h>
#include <gnutls/x509.h>

#include <array>
#include <ctime>

#include "trust/gnutls_util.hh"
#include "trust/x509_util.hh"

namespace runewarp::acme {

namespace {
constexpr const char* kAcmeIdentifierOid = "1.3.6.1.5.5.7.1.31";
constexpr std::time_t kChallengeBackdate = 3600;
constexpr std::time_t kChallengeLifetime = 7 * 86'400;
constexpr std::size_t kMaxCommonName = 64;
}  // namespace

Result<std::shared_ptr<const ChallengeCert>> ChallengeCert::create(
    std::string_view hostname, std::string_view key_authorization) {
    if (hostname.empty() || hostname.size() > 253) {
        return Error::msg("challenge certificate needs a hostname");
    }
    auto key = trust::generate_p256_key();
    if (!key) return std::move(key).error();
    std::time_t now = std::time(nullptr);
    auto crt = trust::new_crt(key->get(), now - kChallengeBackdate, now + kChallengeLifetime);
    if (!crt) return std::move(crt).error();

    // id-pe-acmeIdentifier: Authorization ::= OCTET STRING (SIZE (32)), SHA-256 of the key
    // authorization, DER-encoded as the extension value.
    std::array<unsigned char, 34> ext{};
    ext[0] = 0x04;
    ext[1] = 0x20;
    gnutls_hash_fast(GNUTLS_DIG_SHA256, key_authorization.data(), key_authorization.size(),
                     ext.data() + 2);
    gnutls_datum_t ext_value{ext.data(), static_cast<unsigned>(ext.size())};
    int rc = 0;
    // A CN only when it fits X.520's 64 characters; the SAN is what the validator checks.
    if (hostname.size() <= kMaxCommonName) {
        rc = gnutls_x509_crt_set_dn_by_oid(crt->get(), GNUTLS_OID_X520_COMMON_NAME, 0,
                                           hostname.data(), static_cast<unsigned>(hostname.size()));
        if (rc < 0) return trust::gnutls_error("cannot set challenge subject", rc);
    }
    rc = gnutls_x509_crt_set_subject_alt_name(crt->get(), GNUTLS_SAN_DNSNAME, hostname.data(),
                                              static_cast<unsigned>(hostname.size()),
                                              GNUTLS_FSAN_SET);
    if (rc < 0) return trust::gnutls_error("cannot set challenge subjectAltName", rc);
    rc = gnutls_x509_crt_set_extension_by_oid(crt->get(), kAcmeIdentifierOid, ext_value.data,
                                              ext_value.size, 1);
    if (rc < 0) return trust::gnutls_error("cannot set acmeIdentifier extension", rc);
    rc = gnutls_x509_crt_sign2(crt->get(), crt->get(), key->get(), GNUTLS_DIG_SHA256, 0);
    if (rc < 0) return trust::gnutls_error("cannot sign challenge certificate", rc);
    auto pem = trust::export_crt_pem(crt->get());
    if (!pem) return std::move(pem).error();

    std::shared_ptr<ChallengeCert> out(new ChallengeCert());
    rc = gnutls_certificate_allocate_credentials(&out->cred_);
    if (rc < 0) {
        out->cred_ = nullptr;
        return trust::gnutls_error("cannot allocate credentials", rc);
    }
    gnutls_x509_crt_t chain[1] = {crt->get()};
    rc = gnutls_certificate_set_x509_key(out->cred_, chain, 1, key->get());
    if (rc < 0) return trust::gnutls_error("cannot load challenge certificate", rc);
    out->hostname_.assign(hostname);
    out->cert_pem_ = std::move(*pem);
    return std::shared_ptr<const ChallengeCert>(std::move(out));
}

ChallengeCert::~ChallengeCert() {
    if (cred_ != nullptr) gnutls_certificate_free_credentials(cred_);
}

void ChallengeBoard::publish(const std::string& hostname,
                             std::shared_ptr<const ChallengeCert> cert) {
    std::lock_guard lock(mu_);
    pending_[hostname] = std::move(cert);
}

void ChallengeBoard::withdraw(const std::string& hostname) {
    std::lock_guard lock(mu_);
    pending_.erase(hostname);
}

std::shared_ptr<const ChallengeCert> ChallengeBoard::find(std::string_view hostname) const {
    std::lock_guard lock(mu_);
    auto it = pending_.find(hostname);
    return it == pending_.end() ? nullptr : it->second;
}

}  // namespace runewarp::acme
