// Manual Server certificate material: a private ECDSA P-256 CA and its leaf for the Server
// hostname, made and checked here.
#pragma once

#include <ctime>
#include <string>
#include <string_view>

#include "runewarp/result.hh"
#include "trust/private_ca.hh"

namespace runewarp::trust {

inline constexpr std::string_view kServerCertFile = "server.crt";                     // 0644
inline constexpr std::string_view kServerKeyFile = "server.key";                      // 0600
inline constexpr std::string_view kServerCaFile = "server-ca.crt";                    // 0644
inline constexpr std::string_view kServerStateDir = "state";                          // 0700
inline constexpr std::string_view kServerCaKeyFile = "state/server-ca.key";           // 0600
inline constexpr std::string_view kServerHostnameFile = "state/server-hostname.txt";  // 0644
inline constexpr std::string_view kServerCaCommonName = "Runewarp Server CA";
inline constexpr std::time_t kServerCertDays = kPrivateLeafDays;
inline constexpr std::time_t kServerCaDays = kPrivateCaDays;
inline constexpr std::time_t kServerRenewAfterDays = kPrivateLeafRenewAfterDays;

// What `server cert ...` reports in its summary lines.
struct ServerCertSummary {
    std::string headline;  // e.g. "Server certificate initialized"
    std::string hostname;
    std::string dir;
    std::time_t not_before = 0;  // of server.crt
    std::time_t not_after = 0;
};

// The summary lines, each ending in '\n', timestamps in RFC 3339 UTC.
std::string format_server_cert_summary(const ServerCertSummary& s);

// `init` for a canonical hostname: complete valid material for it is reported as existing;
// material for another hostname or only some of the five files fail; otherwise creates the
// directory (0755), state/ (0700) and every file.
Result<ServerCertSummary> init_server_cert(const std::string& dir, const std::string& hostname);

// `renew`: new leaf key and certificate from the existing CA for the stored hostname; the CA
// files stay byte-identical.
Result<ServerCertSummary> renew_server_cert(const std::string& dir);

// `rotate-ca`: new CA and leaf for `hostname`, generated before any file is replaced; every
// file including the stored hostname is atomically replaced.
Result<ServerCertSummary> rotate_server_ca(const std::string& dir, const std::string& hostname);

struct ServerCertCheck {
    std::time_t not_before = 0;
    std::time_t not_after = 0;
};

// The Server certificate as the Server serves it, once checked.
struct ServerCertMaterial {
    std::string cert_pem;   // server.crt: the leaf, then any intermediates
    std::string key_pem;    // server.key
    std::string cert_path;  // <dir>/server.crt, for messages
    ServerCertCheck validity;
};

// What the Server checks and loads at startup: server.crt (leaf first, optional intermediates)
// verifies against server-ca.crt for `hostname` (serverAuth), server-ca.crt holds only CA
// certificates, server.key is the leaf's key and is accessible by its owner only. Time is
// checked only when `check_time` is set.
Result<ServerCertMaterial> load_server_cert_dir(const std::string& dir, const std::string& hostname,
                                                bool check_time = false);

// The same checks as load_server_cert_dir, keeping only the validity window.
Result<ServerCertCheck> verify_server_cert_dir(const std::string& dir, const std::string& hostname,
                                               bool check_time = false);

}  // namespace runewarp::trust
