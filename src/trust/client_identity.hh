// Client identity material: Ed25519 key (0600), self-signed certificate, identity file.
#pragma once

#include <ctime>
#include <string>
#include <string_view>

#include "runewarp/result.hh"

namespace runewarp::trust {

inline constexpr std::string_view kClientKeyFile = "client.key";                // 0600
inline constexpr std::string_view kClientCertFile = "client.crt";               // 0644
inline constexpr std::string_view kClientIdentityFile = "client-identity.txt";  // 0644
inline constexpr std::string_view kClientCertDnsName = "runewarp-client";
inline constexpr std::time_t kClientCertDays = 36'500;

// Freshly generated material, not yet on disk.
struct ClientIdentityMaterial {
    std::string key_pem;   // PKCS#8 PEM
    std::string cert_pem;  // self-signed X.509 v3
    std::string identity;  // 64 lowercase hex
    std::time_t not_before = 0;
    std::time_t not_after = 0;
};

// New Ed25519 key and certificate: SAN dNSName runewarp-client, KU digitalSignature, EKU
// clientAuth, notBefore = now - 60 s, notAfter = notBefore + 36,500 days.
Result<ClientIdentityMaterial> generate_client_identity(std::time_t now);

// The validated material of an identity directory, as the Client presents it.
struct ClientIdentityFiles {
    std::string identity;  // 64 lowercase hex
    std::string cert_pem;  // client.crt
    std::string key_pem;   // client.key
};

// Reads and validates the three files in `dir`: the stored identity (whitespace-trimmed) must
// be well formed and equal the identity of client.key and of client.crt; client.key must be
// accessible by its owner only. Expiry is ignored.
Result<ClientIdentityFiles> load_client_identity_files(const std::string& dir);

// The identity of load_client_identity_files.
Result<std::string> load_client_identity(const std::string& dir);

struct ClientIdentityInit {
    std::string identity;
    bool created = false;  // false: valid material was already there
};

// Valid material: reported as existing. None of the files: creates the directory (0700) and
// the files. Anything else fails "incomplete or inconsistent" with the file list.
Result<ClientIdentityInit> init_client_identity(const std::string& dir);

// Needs valid material; writes a new key, certificate and identity, each atomically replaced.
Result<std::string> rotate_client_identity(const std::string& dir);

}  // namespace runewarp::trust
