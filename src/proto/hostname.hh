// Hostname normalisation and validation: the one canonical form used everywhere.
#pragma once

#include <string>
#include <string_view>

namespace runewarp::proto {

enum class HostnameError {
    kNone = 0,
    kEmpty,      // empty after removing trailing dots
    kNonAscii,   // raw Unicode: IDNs must be given as xn-- A-labels
    kWildcard,   // contains '*'
    kIpLiteral,  // parses as an IPv4 or IPv6 literal
    kTooLong,    // > 253 bytes
    kBadLabel,   // empty label, label > 63, bad character, leading/trailing '-'
};

// Human text for an error, e.g. "must not be an IP address literal".
const char* hostname_error_text(HostnameError e) noexcept;

struct HostnameResult {
    HostnameError error = HostnameError::kNone;
    std::string canonical;  // valid only when error == kNone
    bool ok() const noexcept { return error == HostnameError::kNone; }
};

// Removes every trailing '.', ASCII-lowercases, then validates.
HostnameResult normalize_hostname(std::string_view raw);

// True when `s` parses as an IPv4 or IPv6 literal (libc inet_pton, see parse_ip).
bool is_ip_literal(std::string_view s) noexcept;

}  // namespace runewarp::proto
