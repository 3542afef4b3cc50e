// Endpoint parsing/formatting (libc inet_pton/inet_ntop: pure, no syscalls) and IPv4 unmapping.
#include "proto/endpoint.hh"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cstddef>
#include <cstring>

namespace runewarp::proto {

namespace {

bool is_digit(char c) noexcept {
    return c >= '0' && c <= '9';
}

// inet_pton wants a NUL-terminated string: copy the view into a bounded buffer. The longest
// literal inet_pton accepts is 45 characters (six full groups and a dotted quad); a view with an
// embedded NUL would be cut short by inet_pton and is refused here.
bool to_c_string(std::string_view s, std::array<char, 64>& out) noexcept {
    if (s.size() >= out.size() || s.find('\0') != std::string_view::npos) return false;
    // An empty view may have a null data(): memcpy must not see it, even for zero bytes.
    if (!s.empty()) std::memcpy(out.data(), s.data(), s.size());
    out[s.size()] = '\0';
    return true;
}

bool is_v4_mapped(const std::array<std::uint8_t, 16>& a) noexcept {
    for (std::size_t i = 0; i < 10; ++i) {
        if (a[i] != 0) return false;
    }
    return a[10] == 0xff && a[11] == 0xff;
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
    std::array<char, 64> c{};
    if (!to_c_string(text, c)) return std::nullopt;
    Endpoint e;
    if (::inet_pton(AF_INET, c.data(), e.addr.data()) == 1) return e;
    std::array<std::uint8_t, 16> a{};
    if (::inet_pton(AF_INET6, c.data(), a.data()) == 1) return Endpoint::v6(a, 0);
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
    char buf[INET6_ADDRSTRLEN];
    const int af = e.family == Family::kV4 ? AF_INET : AF_INET6;
    // Cannot fail: the family is valid and the buffer holds the longest text.
    if (::inet_ntop(af, e.addr.data(), buf, sizeof buf) == nullptr) return {};
    return buf;
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
