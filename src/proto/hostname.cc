// Hostname normalisation/validation and IP-literal detection (spec 4.4), pure code for fuzzing.
#include "proto/hostname.hh"

#include <cstddef>
#include <cstdint>

namespace runewarp::proto {

namespace {

constexpr std::size_t kMaxName = 253;
constexpr std::size_t kMaxLabel = 63;

bool is_digit(char c) noexcept {
    return c >= '0' && c <= '9';
}

int hex_value(char c) noexcept {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

// Dotted quad exactly as glibc inet_pton(AF_INET) accepts it: four decimal octets 0-255,
// no leading zeros ("01" is rejected, "0" is fine), nothing else.
bool parse_ipv4(std::string_view s) noexcept {
    int octets = 0;
    std::size_t i = 0;
    while (true) {
        if (i >= s.size() || !is_digit(s[i])) return false;
        unsigned value = 0;
        std::size_t start = i;
        while (i < s.size() && is_digit(s[i])) {
            if (i > start && s[start] == '0') return false;
            value = value * 10 + static_cast<unsigned>(s[i] - '0');
            if (value > 255) return false;
            ++i;
        }
        ++octets;
        if (i == s.size()) return octets == 4;
        if (s[i] != '.' || octets == 4) return false;
        ++i;
    }
}

// IPv6 text as inet_pton(AF_INET6) accepts it (RFC 4291 2.2): up to eight groups of 1-4 hex
// digits, at most one "::", optionally ending in an embedded dotted quad worth two groups.
bool parse_ipv6(std::string_view s) noexcept {
    if (s.empty()) return false;
    std::size_t i = 0;
    if (s[0] == ':') {
        if (s.size() < 2 || s[1] != ':') return false;
    }
    int groups = 0;  // 16-bit groups written so far
    bool saw_gap = false;
    while (i < s.size()) {
        if (s[i] == ':') {
            // Only reachable at a "::" (a single ':' is consumed after its group).
            if (i + 1 >= s.size() || s[i + 1] != ':' || saw_gap) return false;
            saw_gap = true;
            i += 2;
            continue;
        }
        // A group: hex digits, or a trailing IPv4 dotted quad.
        std::size_t start = i;
        while (i < s.size() && hex_value(s[i]) >= 0) ++i;
        if (i < s.size() && s[i] == '.') {
            if (!parse_ipv4(s.substr(start))) return false;
            groups += 2;
            i = s.size();
            break;
        }
        std::size_t len = i - start;
        if (len == 0 || len > 4) return false;
        ++groups;
        if (groups > 8) return false;
        if (i == s.size()) break;
        if (s[i] != ':') return false;
        // Single ':' separator: must be followed by another group, or be the start of "::".
        if (i + 1 < s.size() && s[i + 1] == ':') continue;
        ++i;
        if (i == s.size()) return false;
    }
    if (saw_gap) return groups <= 7;
    return groups == 8;
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
    return parse_ipv4(s) || parse_ipv6(s);
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
