// The ACME state directory: the account key shared by every hostname (`account.key`) and one
// directory per hostname with `certificate.pem` (chain, leaf first) and `private.key`. Keys and
// certificates are 0600, hostname directories 0700; every write is atomic (trust::replace_file).
#pragma once

#include <ctime>
#include <string>
#include <string_view>

#include "acme/jws.hh"
#include "acme/manager.hh"
#include "runewarp/result.hh"

namespace runewarp::acme {

// Reads `<dir>/account.key`, or makes a new one when there is none. Two managers racing on the
// same directory end up with the same key (the file is published with link(2), never replaced).
Result<EcKey> load_or_create_account_key(const std::string& state_dir);

enum class CacheStatus { kMissing, kUnreadable, kExpired, kReady };

struct CacheEntry {
    CacheStatus status = CacheStatus::kMissing;
    Certificate cert;   // filled for kExpired and kReady
    std::string error;  // for kUnreadable
};

std::string certificate_path(const std::string& state_dir, const std::string& hostname);
std::string private_key_path(const std::string& state_dir, const std::string& hostname);

CacheEntry load_cached(const std::string& state_dir, const std::string& hostname, std::time_t now);
// Writes the key, then the certificate, into `<dir>/<hostname>/` (made 0700 when missing).
Result<void> store_certificate(const std::string& state_dir, const std::string& hostname,
                               const Certificate& cert);

// Two thirds into the certificate's validity window.
std::time_t renewal_time(const Certificate& cert);

}  // namespace runewarp::acme
