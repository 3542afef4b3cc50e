// Hostname normalisation/validation and IP-literal detection, pure code for fuzzing.
#include "proto/hostname.hh"

#include "proto/endpoint.hh"

#include <cstddef>

namespace runewarp::proto {

namespace {

constexpr std::size_t kMaxName = 253;
constexpr std::size_t kMaxLabel = 63;

bool is_digit(char c) noexcept {
    return c >= '0' && c <= '9';
}

bool valid_label(std::string_view label) noexcept {
    if (label.empty() || label.size() > kMaxLabel) return false;
    if (label.front() == '-' || label.back() == '-') return false;
    for (char c : label) {
        bool ok = (c >= 'a' && c <= 'z') || is_digit(c) || c == '-';
        if (!ok) return false;
    }
    return true;
}

}  // namespace

const char* hostname_error_text(HostnameError e) noexcept {
    switch (e) {
        case HostnameError::kNone:
            return "valid";
        case HostnameError::kEmpty:
            return "must not be empty";
        case HostnameError::kNonAscii:
            return "must be ASCII (give internationalized names as xn-- A-labels)";
        case HostnameError::kWildcard:
            return "must not contain wildcards ('*')";
        case HostnameError::kIpLiteral:
            return "must not be an IP address literal";
        case HostnameError::kTooLong:
            return "must be at most 253 bytes long";
        case HostnameError::kBadLabel:
            return "labels must be 1-63 characters of a-z, 0-9 and '-', not starting or ending "
                   "with '-'";
    }
    return "invalid hostname";
}

bool is_ip_literal(std::string_view s) noexcept {
    return parse_ip(s).has_value();
}

HostnameResult normalize_hostname(std::string_view raw) {
    HostnameResult r;
    while (!raw.empty() && raw.back() == '.') raw.remove_suffix(1);
    if (raw.empty()) {
        r.error = HostnameError::kEmpty;
        return r;
    }
    for (char c : raw) {
        if (static_cast<unsigned char>(c) >= 0x80) {
            r.error = HostnameError::kNonAscii;
            return r;
        }
    }
    if (raw.find('*') != std::string_view::npos) {
        r.error = HostnameError::kWildcard;
        return r;
    }
    if (is_ip_literal(raw)) {
        r.error = HostnameError::kIpLiteral;
        return r;
    }
    if (raw.size() > kMaxName) {
        r.error = HostnameError::kTooLong;
        return r;
    }
    std::string name(raw);
    for (char& c : name) {
        if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    }
    std::string_view rest(name);
    while (true) {
        std::size_t dot = rest.find('.');
        if (!valid_label(rest.substr(0, dot))) {
            r.error = HostnameError::kBadLabel;
            return r;
        }
        if (dot == std::string_view::npos) break;
        rest.remove_prefix(dot + 1);
    }
    r.canonical = std::move(name);
    return r;
}

}  // namespace runewarp::proto
