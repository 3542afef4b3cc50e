// Client identity derivation: a strict DER walker to the certificate SPKI, and SHA-256 hex.
#include "trust/identity.hh"

#include <gnutls/crypto.h>

#include <array>

#include "trust/gnutls_util.hh"

namespace runewarp::trust {

namespace {

constexpr std::uint8_t kTagInteger = 0x02;
constexpr std::uint8_t kTagBitString = 0x03;
constexpr std::uint8_t kTagSequence = 0x30;
constexpr std::uint8_t kTagVersion = 0xa0;  // [0] EXPLICIT, constructed

// One DER element: its tag, the whole TLV and the contents.
struct Tlv {
    std::uint8_t tag = 0;
    std::span<const std::uint8_t> whole;
    std::span<const std::uint8_t> content;
};

// Reads one element at the start of `in`. X.690 DER: definite length in the minimal number of
// octets; certificates never need more than 4 length octets, and anything longer than the input
// is rejected before any byte beyond it is touched.
Result<Tlv> read_tlv(std::span<const std::uint8_t> in) {
    if (in.size() < 2) return Error::msg("truncated DER element");
    std::uint8_t tag = in[0];
    if ((tag & 0x1f) == 0x1f) return Error::msg("DER high tag numbers are not expected here");
    std::size_t pos = 1;
    std::uint8_t first = in[pos++];
    std::size_t len = 0;
    if (first < 0x80) {
        len = first;
    } else {
        std::size_t n = first & 0x7f;
        if (n == 0) return Error::msg("indefinite DER length");
        if (n > 4) return Error::msg("DER length too large");
        if (in.size() - pos < n) return Error::msg("truncated DER length");
        if (in[pos] == 0) return Error::msg("non-minimal DER length");
        for (std::size_t i = 0; i < n; ++i) len = (len << 8) | in[pos++];
        if (len < 0x80) return Error::msg("non-minimal DER length");
    }
    if (in.size() - pos < len) return Error::msg("DER element longer than its container");
    Tlv t;
    t.tag = tag;
    t.whole = in.subspan(0, pos + len);
    t.content = in.subspan(pos, len);
    return t;
}

// Reads the next element of a constructed value and advances `rest` past it.
Result<Tlv> next(std::span<const std::uint8_t>& rest, std::uint8_t want, const char* what) {
    auto t = read_tlv(rest);
    if (!t) return Error::msg(std::string(what) + ": " + t.error().message);
    if (t->tag != want) return Error::msg(std::string(what) + ": unexpected DER tag");
    rest = rest.subspan(t->whole.size());
    return t;
}

std::string hex_lower(std::span<const std::uint8_t> bytes) {
    static constexpr char kDigits[] = "0123456789abcdef";
    std::string out;
    out.reserve(bytes.size() * 2);
    for (std::uint8_t b : bytes) {
        out.push_back(kDigits[b >> 4]);
        out.push_back(kDigits[b & 0x0f]);
    }
    return out;
}

}  // namespace

bool is_valid_identity(std::string_view s) noexcept {
    if (s.size() != kIdentityLength) return false;
    for (char c : s) {
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
    }
    return true;
}

std::string identity_of_spki(std::span<const std::uint8_t> spki_der) {
    std::array<std::uint8_t, 32> digest{};
    // SHA-256 over memory cannot fail unless the library is broken (FIPS self-test failure).
    if (gnutls_hash_fast(GNUTLS_DIG_SHA256, spki_der.data(), spki_der.size(), digest.data()) != 0) {
        return {};
    }
    return hex_lower(digest);
}

Result<std::span<const std::uint8_t>> find_certificate_spki(
    std::span<const std::uint8_t> cert_der) {
    // Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signatureValue }
    auto cert = read_tlv(cert_der);
    if (!cert) return Error::msg("certificate: " + cert.error().message);
    if (cert->tag != kTagSequence) return Error::msg("certificate: not a DER SEQUENCE");
    if (cert->whole.size() != cert_der.size()) {
        return Error::msg("certificate: trailing bytes after the DER SEQUENCE");
    }
    std::span<const std::uint8_t> rest = cert->content;
    auto tbs = next(rest, kTagSequence, "tbsCertificate");
    if (!tbs) return tbs.error();

    // TBSCertificate ::= SEQUENCE { [0] version OPTIONAL, serialNumber, signature, issuer,
    //                               validity, subject, subjectPublicKeyInfo, ... }
    std::span<const std::uint8_t> fields = tbs->content;
    if (!fields.empty() && fields[0] == kTagVersion) {
        auto v = next(fields, kTagVersion, "version");
        if (!v) return v.error();
    }
    auto serial = next(fields, kTagInteger, "serialNumber");
    if (!serial) return serial.error();
    for (const char* what : {"signature", "issuer", "validity", "subject"}) {
        auto f = next(fields, kTagSequence, what);
        if (!f) return f.error();
    }
    auto spki = next(fields, kTagSequence, "subjectPublicKeyInfo");
    if (!spki) return spki.error();

    // SubjectPublicKeyInfo ::= SEQUENCE { algorithm AlgorithmIdentifier, subjectPublicKey BIT
    // STRING } and nothing else.
    std::span<const std::uint8_t> inner = spki->content;
    auto alg = next(inner, kTagSequence, "subjectPublicKeyInfo algorithm");
    if (!alg) return alg.error();
    auto bits = next(inner, kTagBitString, "subjectPublicKey");
    if (!bits) return bits.error();
    if (!inner.empty()) return Error::msg("subjectPublicKeyInfo: unexpected trailing element");
    return spki->whole;
}

Result<std::string> identity_of_certificate_der(std::span<const std::uint8_t> cert_der) {
    auto spki = find_certificate_spki(cert_der);
    if (!spki) return spki.error();
    return identity_of_spki(*spki);
}

Result<std::string> identity_of_certificate(gnutls_x509_crt_t crt) {
    OwnedDatum der;
    int rc = gnutls_x509_crt_export2(crt, GNUTLS_X509_FMT_DER, der.out());
    if (rc < 0) return gnutls_error("cannot export certificate", rc);
    return identity_of_certificate_der(
        std::span<const std::uint8_t>(der.get().data, der.get().size));
}

Result<std::string> identity_of_pubkey(gnutls_pubkey_t key) {
    OwnedDatum der;
    int rc = gnutls_pubkey_export2(key, GNUTLS_X509_FMT_DER, der.out());
    if (rc < 0) return gnutls_error("cannot export public key", rc);
    return identity_of_spki(std::span<const std::uint8_t>(der.get().data, der.get().size));
}

Result<std::string> identity_of_privkey(gnutls_x509_privkey_t key) {
    gnutls_privkey_t priv = nullptr;
    int rc = gnutls_privkey_init(&priv);
    if (rc < 0) return gnutls_error("cannot allocate key", rc);
    Privkey priv_owner(priv);
    rc = gnutls_privkey_import_x509(priv, key, 0);
    if (rc < 0) return gnutls_error("cannot import private key", rc);
    gnutls_pubkey_t pub = nullptr;
    rc = gnutls_pubkey_init(&pub);
    if (rc < 0) return gnutls_error("cannot allocate public key", rc);
    Pubkey pub_owner(pub);
    rc = gnutls_pubkey_import_privkey(pub, priv, 0, 0);
    if (rc < 0) return gnutls_error("cannot derive public key", rc);
    return identity_of_pubkey(pub);
}

}  // namespace runewarp::trust
