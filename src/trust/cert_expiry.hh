// Certificate expiry: when a certificate stops being valid (its notAfter) and how close that is,
// so the daemons can warn the operator weeks ahead instead of letting handshakes fail.
#pragma once

#include <cstdint>
#include <ctime>
#include <string>
#include <string_view>

#include "runewarp/result.hh"

namespace runewarp::trust {

// A certificate closer to its notAfter than this is worth a warning.
inline constexpr int64_t kExpiryWarnDays = 21;

enum class ExpiryLevel : uint8_t {
    kValid,     // more than the warning window left
    kExpiring,  // within the warning window (WARN)
    kExpired,   // at or past notAfter (ERROR)
};

struct ExpiryStatus {
    ExpiryLevel level = ExpiryLevel::kValid;
    // Whole days until notAfter, rounded down (12.9 days left is 12); 0 once expired.
    int64_t days_left = 0;
};

// Pure: the level of a certificate valid until `not_after`, seen at `now`.
ExpiryStatus expiry_level(std::time_t now, std::time_t not_after,
                          int64_t warn_days = kExpiryWarnDays) noexcept;

// The notAfter of the first certificate of a PEM text (`origin` names it in errors).
Result<std::time_t> certificate_not_after(std::string_view pem, const std::string& origin);
// The same for a PEM file.
Result<std::time_t> certificate_file_not_after(const std::string& path);

}  // namespace runewarp::trust
