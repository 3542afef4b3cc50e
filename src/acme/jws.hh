// JSON Web Signatures for ACME (RFC 7515, RFC 8555 section 6.2): an ES256 account key, its JWK and
// RFC 7638 thumbprint, key authorizations, and flattened JWS request bodies.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "runewarp/result.hh"
#include "trust/gnutls_util.hh"

namespace runewarp::acme {

// base64url without padding (RFC 4648 section 5).
std::string b64url(std::string_view bytes);
// Strict inverse of b64url (no padding, no whitespace); nullopt on anything else.
std::optional<std::string> b64url_decode(std::string_view text);

// SHA-256 of `bytes`, raw 32 bytes.
std::string sha256(std::string_view bytes);

// An ECDSA P-256 key that signs ES256.
class EcKey {
public:
    static Result<EcKey> generate();
    static Result<EcKey> from_pem(std::string_view pem, const std::string& origin);

    Result<std::string> pem() const;
    // {"crv":"P-256","kty":"EC","x":"..","y":".."}: the RFC 7638 member order, no spaces, so it
    // is both the JWK and the thumbprint input.
    const std::string& jwk() const noexcept { return jwk_; }
    // b64url(SHA-256(jwk())).
    std::string thumbprint() const;
    // token "." thumbprint (RFC 8555 section 8.1).
    std::string key_authorization(std::string_view token) const;
    // Raw r||s (64 bytes) ES256 signature of `data`.
    Result<std::string> sign(std::string_view data) const;

    gnutls_x509_privkey_t x509() const noexcept { return x509_.get(); }

private:
    static Result<EcKey> from_x509(trust::X509Key key);
    trust::X509Key x509_;
    trust::Privkey priv_;
    std::string jwk_;
};

// A flattened JWS JSON body. Exactly one of `kid` and the key's JWK identifies the account:
// empty `kid` embeds the JWK (newAccount). `payload` nullopt is POST-as-GET (empty payload).
Result<std::string> jws_body(const EcKey& key, std::string_view kid, std::string_view nonce,
                             std::string_view url, const std::optional<std::string>& payload);

}  // namespace runewarp::acme
