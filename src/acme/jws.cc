#include "acme/jws.hh"

#include <gnutls/crypto.h>

#include <array>
#include <nlohmann/json.hpp>

#include "trust/x509_util.hh"

namespace runewarp::acme {

namespace {

constexpr char kB64Url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
constexpr std::size_t kCoordBytes = 32;  // P-256

int b64url_value(char c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '-') return 62;
    if (c == '_') return 63;
    return -1;
}

// An unsigned big-endian integer as exactly `width` bytes: GnuTLS may add a leading zero (sign)
// byte or drop leading zero bytes. Nullopt when the value does not fit.
std::optional<std::string> fixed_width(const gnutls_datum_t& d, std::size_t width) {
    std::string_view v(reinterpret_cast<const char*>(d.data), d.size);
    while (v.size() > width && v.front() == '\0') v.remove_prefix(1);
    if (v.size() > width) return std::nullopt;
    std::string out(width - v.size(), '\0');
    out.append(v);
    return out;
}

struct DatumFree {
    gnutls_datum_t d{nullptr, 0};
    ~DatumFree() { gnutls_free(d.data); }
};

}  // namespace

std::string b64url(std::string_view bytes) {
    std::string out;
    out.reserve((bytes.size() * 4 + 2) / 3);
    std::size_t i = 0;
    auto u = [&](std::size_t k) { return static_cast<unsigned char>(bytes[k]); };
    for (; i + 3 <= bytes.size(); i += 3) {
        unsigned v = (u(i) << 16) | (u(i + 1) << 8) | u(i + 2);
        out.push_back(kB64Url[(v >> 18) & 63]);
        out.push_back(kB64Url[(v >> 12) & 63]);
        out.push_back(kB64Url[(v >> 6) & 63]);
        out.push_back(kB64Url[v & 63]);
    }
    std::size_t rest = bytes.size() - i;
    if (rest == 1) {
        unsigned v = u(i) << 16;
        out.push_back(kB64Url[(v >> 18) & 63]);
        out.push_back(kB64Url[(v >> 12) & 63]);
    } else if (rest == 2) {
        unsigned v = (u(i) << 16) | (u(i + 1) << 8);
        out.push_back(kB64Url[(v >> 18) & 63]);
        out.push_back(kB64Url[(v >> 12) & 63]);
        out.push_back(kB64Url[(v >> 6) & 63]);
    }
    return out;
}

std::optional<std::string> b64url_decode(std::string_view text) {
    if (text.size() % 4 == 1) return std::nullopt;
    std::string out;
    out.reserve(text.size() * 3 / 4);
    unsigned acc = 0;
    int bits = 0;
    for (char c : text) {
        int v = b64url_value(c);
        if (v < 0) return std::nullopt;
        acc = (acc << 6) | static_cast<unsigned>(v);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out.push_back(static_cast<char>((acc >> bits) & 0xff));
        }
    }
    // Canonical form only: the unused low bits of the last character are zero.
    if (bits > 0 && (acc & ((1u << bits) - 1)) != 0) return std::nullopt;
    return out;
}

std::string sha256(std::string_view bytes) {
    std::array<unsigned char, 32> md{};
    gnutls_hash_fast(GNUTLS_DIG_SHA256, bytes.data(), bytes.size(), md.data());
    return std::string(reinterpret_cast<const char*>(md.data()), md.size());
}

Result<EcKey> EcKey::from_x509(trust::X509Key key) {
    EcKey out;
    out.x509_ = std::move(key);
    gnutls_privkey_t raw = nullptr;
    int rc = gnutls_privkey_init(&raw);
    if (rc < 0) return trust::gnutls_error("cannot allocate key", rc);
    out.priv_.reset(raw);
    rc = gnutls_privkey_import_x509(raw, out.x509_.get(), GNUTLS_PRIVKEY_IMPORT_COPY);
    if (rc < 0) return trust::gnutls_error("cannot use key", rc);

    gnutls_ecc_curve_t curve = GNUTLS_ECC_CURVE_INVALID;
    DatumFree x, y, k;
    rc = gnutls_x509_privkey_export_ecc_raw(out.x509_.get(), &curve, &x.d, &y.d, &k.d);
    if (rc < 0) return trust::gnutls_error("key is not an ECDSA key", rc);
    if (curve != GNUTLS_ECC_CURVE_SECP256R1) return Error::msg("key is not ECDSA P-256");
    auto xs = fixed_width(x.d, kCoordBytes);
    auto ys = fixed_width(y.d, kCoordBytes);
    if (!xs || !ys) return Error::msg("key has a malformed public point");
    out.jwk_ =
        R"({"crv":"P-256","kty":"EC","x":")" + b64url(*xs) + R"(","y":")" + b64url(*ys) + R"("})";
    return out;
}

Result<EcKey> EcKey::generate() {
    auto key = trust::generate_p256_key();
    if (!key) return std::move(key).error();
    return from_x509(std::move(*key));
}

Result<EcKey> EcKey::from_pem(std::string_view pem, const std::string& origin) {
    auto key = trust::import_key_pem(pem, origin);
    if (!key) return std::move(key).error();
    auto out = from_x509(std::move(*key));
    if (!out) return Error::msg(origin + ": " + out.error().message);
    return out;
}

Result<std::string> EcKey::pem() const {
    return trust::export_key_pem(x509_.get());
}

std::string EcKey::thumbprint() const {
    return b64url(sha256(jwk_));
}

std::string EcKey::key_authorization(std::string_view token) const {
    std::string out(token);
    out.push_back('.');
    out.append(thumbprint());
    return out;
}

Result<std::string> EcKey::sign(std::string_view data) const {
    gnutls_datum_t in = trust::datum_of(data);
    DatumFree der;
    int rc = gnutls_privkey_sign_data2(priv_.get(), GNUTLS_SIGN_ECDSA_SHA256, 0, &in, &der.d);
    if (rc < 0) return trust::gnutls_error("cannot sign", rc);
    DatumFree r, s;
    rc = gnutls_decode_rs_value(&der.d, &r.d, &s.d);
    if (rc < 0) return trust::gnutls_error("cannot decode signature", rc);
    auto rs = fixed_width(r.d, kCoordBytes);
    auto ss = fixed_width(s.d, kCoordBytes);
    if (!rs || !ss) return Error::msg("signature value out of range");
    return *rs + *ss;
}

Result<std::string> jws_body(const EcKey& key, std::string_view kid, std::string_view nonce,
                             std::string_view url, const std::optional<std::string>& payload) {
    // Built by hand so the JWK keeps its canonical text; the strings are ours (URLs and nonces
    // from the server are escaped through nlohmann::json).
    auto quoted = [](std::string_view v) {
        return nlohmann::json(std::string(v))
            .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    };
    std::string header = R"({"alg":"ES256",)";
    if (kid.empty()) {
        header += R"("jwk":)" + key.jwk();
    } else {
        header += R"("kid":)" + quoted(kid);
    }
    header += R"(,"nonce":)" + quoted(nonce) + R"(,"url":)" + quoted(url) + "}";
    std::string prot = b64url(header);
    std::string pay = payload ? b64url(*payload) : std::string();
    auto sig = key.sign(prot + "." + pay);
    if (!sig) return std::move(sig).error();
    return R"({"protected":")" + prot + R"(","payload":")" + pay + R"(","signature":")" +
           b64url(*sig) + R"("})";
}

}  // namespace runewarp::acme
