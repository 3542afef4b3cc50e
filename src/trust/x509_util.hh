// Key and certificate helpers shared by the client identity and the private Server CA.
#pragma once

#include <ctime>
#include <string>
#include <string_view>
#include <vector>

#include "runewarp/result.hh"
#include "trust/gnutls_util.hh"

namespace runewarp::trust {

inline constexpr std::time_t kBackdateSeconds = 60;  // every notBefore is now - 60 s
inline constexpr std::time_t kDaySeconds = 86'400;

Result<X509Key> generate_ed25519_key();
Result<X509Key> generate_p256_key();

// PKCS#8 PEM, unencrypted ("-----BEGIN PRIVATE KEY-----").
Result<std::string> export_key_pem(gnutls_x509_privkey_t key);
Result<X509Key> import_key_pem(std::string_view pem, const std::string& path);

Result<std::string> export_crt_pem(gnutls_x509_crt_t crt);
// The first certificate of a PEM file.
Result<Crt> import_crt_pem(std::string_view pem, const std::string& path);
// Every certificate of a PEM file (at least one). `chain`: each certificate must be issued by
// the next one (a leaf followed by its intermediates).
Result<std::vector<Crt>> import_crt_list_pem(std::string_view pem, const std::string& path,
                                             bool chain = false);

// Version 3, a random positive serial of 16 bytes, the validity window, the subject key and its
// subjectKeyIdentifier. The caller adds names and extensions, then signs.
Result<Crt> new_crt(gnutls_x509_privkey_t subject_key, std::time_t not_before,
                    std::time_t not_after);

// True when the certificate's public key is the key's public half.
Result<bool> key_matches_crt(gnutls_x509_privkey_t key, gnutls_x509_crt_t crt);

// "2026-05-01T10:00:00Z"
std::string rfc3339_utc(std::time_t t);

}  // namespace runewarp::trust
