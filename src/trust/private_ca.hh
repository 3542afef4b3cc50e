// The private CA and leaf certificate profiles (ECDSA P-256) shared by the manual Server
// certificate and the manual Public hostname certificates: making a CA, issuing a leaf from it,
// loading a CA pair, and loading and checking a leaf with its key.
#pragma once

#include <ctime>
#include <string>
#include <string_view>

#include "runewarp/result.hh"

namespace runewarp::trust {

inline constexpr std::time_t kPrivateCaDays = 3650;
inline constexpr std::time_t kPrivateLeafDays = 90;
// Renewal is suggested two thirds into the leaf's lifetime.
inline constexpr std::time_t kPrivateLeafRenewAfterDays = 60;

// A private key (PKCS#8 PEM) and its certificate (PEM).
struct KeyCertPem {
    std::string key;
    std::string crt;
};

// A leaf and its validity window.
struct IssuedLeaf {
    KeyCertPem pem;
    std::time_t not_before = 0;
    std::time_t not_after = 0;
};

// A self-signed CA: new P-256 key, subject CN `common_name`, basicConstraints CA:TRUE without a
// path length, keyUsage digitalSignature + keyCertSign + cRLSign, notBefore `now` - 60 s,
// 3650 days.
Result<KeyCertPem> make_private_ca(std::string_view common_name, std::time_t now);

// A leaf for a canonical `hostname` signed (ecdsa-with-SHA256) by `ca`: new P-256 key, CN and
// DNS subjectAltName = hostname, keyUsage digitalSignature + keyEncipherment, extendedKeyUsage
// serverAuth, authorityKeyIdentifier, notBefore `now` - 60 s, 90 days. The paths name the CA
// files in errors.
Result<IssuedLeaf> issue_private_leaf(const KeyCertPem& ca, const std::string& hostname,
                                      std::time_t now, const std::string& ca_key_path,
                                      const std::string& ca_crt_path);

// Reads a CA pair: the key (owner-only access), the certificate, which must be a CA certificate
// whose public key is the key's.
Result<KeyCertPem> load_private_ca(const std::string& key_path, const std::string& crt_path);

// A leaf certificate file and its key, once checked.
struct LoadedLeaf {
    std::string cert_pem;  // the leaf, then any intermediates
    std::string key_pem;
    std::time_t not_before = 0;  // of the leaf
    std::time_t not_after = 0;
};

// Reads and checks a served certificate: `crt_path` holds the leaf first, then intermediates
// each issued by the next; `key_path` is the leaf's key with owner-only access. With `ca_path`,
// that file holds only CA certificates and the chain verifies against it for `hostname`
// (serverAuth); without, the leaf's DNS subjectAltName (or CN when it has none) must match
// `hostname`. Time is checked only when `check_time` is set (and only against a CA).
Result<LoadedLeaf> load_leaf(const std::string& crt_path, const std::string& key_path,
                             const std::string& hostname, const std::string* ca_path,
                             bool check_time);

}  // namespace runewarp::trust
