// Client identity: SHA-256 over the DER SubjectPublicKeyInfo, 64 lowercase hex.
#pragma once

#include <gnutls/abstract.h>
#include <gnutls/x509.h>

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "runewarp/result.hh"

namespace runewarp::trust {

inline constexpr std::size_t kIdentityLength = 64;

// Exactly 64 characters of [0-9a-f] (no uppercase, no separators, no whitespace).
bool is_valid_identity(std::string_view s) noexcept;

// Lowercase hex SHA-256 of `spki_der` (the whole SEQUENCE, tag and length included).
std::string identity_of_spki(std::span<const std::uint8_t> spki_der);

// The exact TLV bytes of the subjectPublicKeyInfo inside a DER certificate (the element after
// `subject` in TBSCertificate). Strict DER walker for attacker-supplied input: definite minimal
// lengths only, low tag numbers only, every element inside its parent, nothing trailing the
// certificate. The returned span points into `cert_der`.
Result<std::span<const std::uint8_t>> find_certificate_spki(std::span<const std::uint8_t> cert_der);

// Identity of a DER certificate (via find_certificate_spki; normative for the Server).
Result<std::string> identity_of_certificate_der(std::span<const std::uint8_t> cert_der);

// Identity of a parsed certificate: its DER export hashed by the walker.
Result<std::string> identity_of_certificate(gnutls_x509_crt_t crt);

// Identity of a public key: gnutls_pubkey_export2(DER), then SHA-256.
Result<std::string> identity_of_pubkey(gnutls_pubkey_t key);

// Identity of the public half of a private key.
Result<std::string> identity_of_privkey(gnutls_x509_privkey_t key);

}  // namespace runewarp::trust
