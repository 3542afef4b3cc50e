// Manual Public hostname certificates for terminating Services: a private CA and one leaf per
// Public hostname (made by `runewarp client public-cert ...`), and the Client's loader.
#pragma once

#include <ctime>
#include <string>
#include <string_view>
#include <vector>

#include "runewarp/result.hh"
#include "trust/private_ca.hh"

namespace runewarp::trust {

// Layout of a public-cert directory (mode 0755).
inline constexpr std::string_view kPublicCaFile = "public-ca.crt";           // 0644
inline constexpr std::string_view kPublicStateDir = "state";                 // 0700
inline constexpr std::string_view kPublicCaKeyFile = "state/public-ca.key";  // 0600
inline constexpr std::string_view kPublicLeafCertFile = "public.crt";        // <hostname>/, 0644
inline constexpr std::string_view kPublicLeafKeyFile = "public.key";         // <hostname>/, 0600
inline constexpr std::string_view kPublicCaCommonName = "Runewarp Public Hostname CA";

enum class PublicCertAction { kInit, kRenew, kRotateCa };

// What a `client public-cert ...` command did, for its printed lines.
struct PublicCertSummary {
    PublicCertAction action = PublicCertAction::kInit;
    std::string dir;
    std::vector<std::string> existing;  // init: hostnames whose material already existed
    std::vector<std::string> issued;    // hostnames that got a new leaf, in target order
    // Validity of the first issued leaf, else of the first existing one.
    std::time_t not_before = 0;
    std::time_t not_after = 0;
};

// The printed lines, each ending in '\n', timestamps in RFC 3339 UTC:
//   init:      ["Public hostname certificate material already exists for: a, b"]
//              "Public hostname CA: <dir>/public-ca.crt"
//              ["Initialized leaf certificate(s) for: x, y"]
//   renew:     "Renewed leaf certificate(s) for: ..."
//   rotate-ca: "Public hostname CA rotated: <dir>/public-ca.crt"
//              "Reissued leaf certificate(s) for: ..."
// then "Leaf certificate lifetime: 90 days", "Issued at (UTC): ...", "Renew after (UTC): ..."
// (issued + 60 days) and "Expires at (UTC): ...".
std::string format_public_cert_summary(const PublicCertSummary& s);

// `<dir>/<hostname>/public.crt` and `.../public.key`.
std::string public_cert_path(const std::string& dir, const std::string& hostname);
std::string public_key_path(const std::string& dir, const std::string& hostname);

// `init` for canonical, distinct hostnames. Per hostname: nothing present makes a new CA (once)
// and a leaf; the CA present and the leaf absent makes a leaf from that CA (the CA files stay
// byte-identical); both present (and consistent) is reported as existing. Any half-present
// pair (a CA certificate without its key or the reverse, a leaf certificate without its key or
// the reverse, a leaf without the CA) fails as incomplete or inconsistent before anything is
// written.
Result<PublicCertSummary> init_public_cert(const std::string& dir,
                                           const std::vector<std::string>& hostnames);

// `renew`: a new leaf key and certificate per hostname from the existing CA, every leaf
// generated before the first is written, each file atomically replaced.
Result<PublicCertSummary> renew_public_cert(const std::string& dir,
                                            const std::vector<std::string>& hostnames);

// `rotate-ca`: a new CA and a new leaf for every hostname, all generated before anything is
// written, then every file atomically replaced (the CA first).
Result<PublicCertSummary> rotate_public_ca(const std::string& dir,
                                           const std::vector<std::string>& hostnames);

// A terminating hostname's certificate as the Client serves it.
struct PublicCertMaterial {
    std::string hostname;   // canonical
    std::string cert_pem;   // <dir>/<hostname>/public.crt: leaf first, then intermediates
    std::string key_pem;    // <dir>/<hostname>/public.key
    std::string cert_path;  // for messages
    std::time_t not_before = 0, not_after = 0;  // of the leaf
};

// Loads `<dir>/<hostname>/public.crt` and `public.key`. Both missing: "missing certificate for
// terminating hostname H: run `runewarp client public-cert init --hostname H`". One missing or
// unreadable, a key that group or others may access, a key that is not the leaf's, a leaf not
// valid for the hostname (DNS subjectAltName, else CN), intermediates out of order: an error
// naming the file and the cause. Time is not checked, and public-ca.crt is not needed (the
// files may come from another CA).
Result<PublicCertMaterial> load_public_cert(const std::string& dir, const std::string& hostname);

// True when neither <hostname>/public.crt nor public.key exists (removed material).
bool public_cert_absent(const std::string& dir, const std::string& hostname);

}  // namespace runewarp::trust
