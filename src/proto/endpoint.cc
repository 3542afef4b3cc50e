// Endpoint parsing/formatting (inet_pton-compatible, syscall-free) and IPv4-mapped unmapping.
#include "proto/endpoint.hh"

#include <netinet/in.h>

#include <cstddef>
#include <cstring>

namespace runewarp::proto {

namespace {

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
bool parse_ipv4(std::string_view s, std::uint8_t* out) noexcept {
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
        out[octets++] = static_cast<std::uint8_t>(value);
        if (i == s.size()) return octets == 4;
        if (s[i] != '.' || octets == 4) return false;
        ++i;
    }
}

// IPv6 text as inet_pton(AF_INET6) accepts it (RFC 4291 2.2): up to eight groups of 1-4 hex
// digits, at most one "::" standing for at least one zero group, optionally ending in an
// embedded dotted quad worth two groups.
bool parse_ipv6(std::string_view s, std::array<std::uint8_t, 16>& out) noexcept {
    if (s.empty()) return false;
    if (s[0] == ':' && (s.size() < 2 || s[1] != ':')) return false;
    std::array<std::uint8_t, 16> buf{};
    int groups = 0;   // 16-bit groups written so far
    int gap_at = -1;  // group index where "::" sits
    std::size_t i = 0;
    while (i < s.size()) {
        if (s[i] == ':') {
            // Only reachable at a "::" (a single ':' is consumed after its group).
            if (i + 1 >= s.size() || s[i + 1] != ':' || gap_at >= 0) return false;
            gap_at = groups;
            i += 2;
            continue;
        }
        std::size_t start = i;
        unsigned value = 0;
        while (i < s.size() && hex_value(s[i]) >= 0) {
            value = value * 16 + static_cast<unsigned>(hex_value(s[i]));
            ++i;
            if (i - start > 4) break;
        }
        if (i < s.size() && s[i] == '.') {
            if (groups > 6) return false;
            if (!parse_ipv4(s.substr(start), &buf[static_cast<std::size_t>(groups) * 2])) {
                return false;
            }
            groups += 2;
            i = s.size();
            break;
        }
        std::size_t len = i - start;
        if (len == 0 || len > 4 || groups >= 8) return false;
        buf[static_cast<std::size_t>(groups) * 2] = static_cast<std::uint8_t>(value >> 8);
        buf[static_cast<std::size_t>(groups) * 2 + 1] = static_cast<std::uint8_t>(value);
        ++groups;
        if (i == s.size()) break;
        if (s[i] != ':') return false;
        if (i + 1 < s.size() && s[i + 1] == ':') continue;  // start of "::"
        ++i;
        if (i == s.size()) return false;  // trailing single ':'
    }
    if (gap_at >= 0) {
        if (groups > 7) return false;
        // Move the groups after the gap to the end; the gap stays zero.
        int tail = groups - gap_at;
        out.fill(0);
        for (int g = 0; g < gap_at; ++g) {
            out[static_cast<std::size_t>(g) * 2] = buf[static_cast<std::size_t>(g) * 2];
            out[static_cast<std::size_t>(g) * 2 + 1] = buf[static_cast<std::size_t>(g) * 2 + 1];
        }
        for (int g = 0; g < tail; ++g) {
            auto from = static_cast<std::size_t>(gap_at + g) * 2;
            auto to = static_cast<std::size_t>(8 - tail + g) * 2;
            out[to] = buf[from];
            out[to + 1] = buf[from + 1];
        }
        return true;
    }
    if (groups != 8) return false;
    out = buf;
    return true;
}

bool is_v4_mapped(const std::array<std::uint8_t, 16>& a) noexcept {
    for (std::size_t i = 0; i < 10; ++i) {
        if (a[i] != 0) return false;
    }
    return a[10] == 0xff && a[11] == 0xff;
}

void append_v4(std::string& out, const std::uint8_t* a) {
    for (int i = 0; i < 4; ++i) {
        if (i > 0) out += '.';
        out += std::to_string(a[i]);
    }
}

}  // namespace

Endpoint Endpoint::v4(std::array<std::uint8_t, 4> a, std::uint16_t p) noexcept {
    Endpoint e;
    e.family = Family::kV4;
    for (std::size_t i = 0; i < 4; ++i) e.addr[i] = a[i];
    e.port = p;
    return e;
}

Endpoint Endpoint::v6(const std::array<std::uint8_t, 16>& a, std::uint16_t p) noexcept {
    Endpoint e;
    e.family = Family::kV6;
    e.addr = a;
    e.port = p;
    return e;
}

std::optional<Endpoint> parse_ip(std::string_view text) noexcept {
    Endpoint e;
    if (parse_ipv4(text, e.addr.data())) return e;
    std::array<std::uint8_t, 16> a{};
    if (parse_ipv6(text, a)) return Endpoint::v6(a, 0);
    return std::nullopt;
}

std::optional<Endpoint> parse_endpoint(std::string_view text) noexcept {
    std::string_view host;
    std::string_view port;
    if (!text.empty() && text.front() == '[') {
        auto close = text.find(']');
        if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':') {
            return std::nullopt;
        }
        host = text.substr(1, close - 1);
        port = text.substr(close + 2);
    } else {
        auto colon = text.rfind(':');
        if (colon == std::string_view::npos) return std::nullopt;
        host = text.substr(0, colon);
        port = text.substr(colon + 1);
    }
    if (port.empty() || port.size() > 5) return std::nullopt;
    unsigned value = 0;
    for (char c : port) {
        if (!is_digit(c)) return std::nullopt;
        value = value * 10 + static_cast<unsigned>(c - '0');
    }
    if (value > 65535) return std::nullopt;
    auto ip = parse_ip(host);
    if (!ip) return std::nullopt;
    bool bracketed = text.front() == '[';
    // IPv6 needs brackets; IPv4 must not have them.
    if (bracketed != (ip->family == Family::kV6)) return std::nullopt;
    ip->port = static_cast<std::uint16_t>(value);
    return ip;
}

std::string format_ip(const Endpoint& e) {
    std::string out;
    if (e.family == Family::kV4) {
        append_v4(out, e.addr.data());
        return out;
    }
    if (is_v4_mapped(e.addr)) {
        out = "::ffff:";
        append_v4(out, &e.addr[12]);
        return out;
    }
    std::array<unsigned, 8> g{};
    for (std::size_t i = 0; i < 8; ++i) {
        g[i] = static_cast<unsigned>(e.addr[i * 2]) << 8 | e.addr[i * 2 + 1];
    }
    // RFC 5952 4.2: compress the longest run (>= 2) of zero groups, the first one on a tie.
    int best = -1;
    int best_len = 1;
    for (int i = 0; i < 8;) {
        if (g[static_cast<std::size_t>(i)] != 0) {
            ++i;
            continue;
        }
        int j = i;
        while (j < 8 && g[static_cast<std::size_t>(j)] == 0) ++j;
        if (j - i > best_len) {
            best = i;
            best_len = j - i;
        }
        i = j;
    }
    static constexpr char kHex[] = "0123456789abcdef";
    for (int i = 0; i < 8; ++i) {
        if (i == best) {
            out += "::";
            i += best_len - 1;
            continue;
        }
        if (i > 0 && i != best + best_len) out += ':';
        unsigned v = g[static_cast<std::size_t>(i)];
        bool started = false;
        for (int shift = 12; shift >= 0; shift -= 4) {
            unsigned nib = (v >> shift) & 0xf;
            if (nib == 0 && !started && shift > 0) continue;
            started = true;
            out += kHex[nib];
        }
    }
    return out;
}

std::string format_endpoint(const Endpoint& e) {
    std::string out;
    if (e.family == Family::kV6) {
        out = "[" + format_ip(e) + "]";
    } else {
        out = format_ip(e);
    }
    out += ':';
    out += std::to_string(e.port);
    return out;
}

Endpoint unmap_v4(const Endpoint& e) noexcept {
    if (e.family != Family::kV6 || !is_v4_mapped(e.addr)) return e;
    return Endpoint::v4({e.addr[12], e.addr[13], e.addr[14], e.addr[15]}, e.port);
}

std::optional<Endpoint> from_sockaddr(const sockaddr* sa, socklen_t len) noexcept {
    if (sa == nullptr) return std::nullopt;
    if (sa->sa_family == AF_INET && len >= static_cast<socklen_t>(sizeof(sockaddr_in))) {
        sockaddr_in in{};
        std::memcpy(&in, sa, sizeof in);
        std::array<std::uint8_t, 4> a{};
        std::memcpy(a.data(), &in.sin_addr, 4);
        return Endpoint::v4(a, ntohs(in.sin_port));
    }
    if (sa->sa_family == AF_INET6 && len >= static_cast<socklen_t>(sizeof(sockaddr_in6))) {
        sockaddr_in6 in6{};
        std::memcpy(&in6, sa, sizeof in6);
        std::array<std::uint8_t, 16> a{};
        std::memcpy(a.data(), &in6.sin6_addr, 16);
        return Endpoint::v6(a, ntohs(in6.sin6_port));
    }
    return std::nullopt;
}

socklen_t to_sockaddr(const Endpoint& e, sockaddr_storage& out) noexcept {
    std::memset(&out, 0, sizeof out);
    if (e.family == Family::kV4) {
        sockaddr_in in{};
        in.sin_family = AF_INET;
        in.sin_port = htons(e.port);
        std::memcpy(&in.sin_addr, e.addr.data(), 4);
        std::memcpy(&out, &in, sizeof in);
        return sizeof in;
    }
    sockaddr_in6 in6{};
    in6.sin6_family = AF_INET6;
    in6.sin6_port = htons(e.port);
    std::memcpy(&in6.sin6_addr, e.addr.data(), 16);
    std::memcpy(&out, &in6, sizeof in6);
    return sizeof in6;
}

}  // namespace runewarp::proto
