// Endpoint (IP address + port) and address tuple: plain values shared by PROXY v2, framing and
// logs.
#pragma once

#include <sys/socket.h>

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace runewarp::proto {

enum class Family : std::uint8_t { kV4, kV6 };

// An IP endpoint. IPv4 uses addr[0..3] in network order and leaves the rest zero, so the
// defaulted operator== compares meaningfully.
struct Endpoint {
    Family family = Family::kV4;
    std::array<std::uint8_t, 16> addr{};
    std::uint16_t port = 0;

    static Endpoint v4(std::array<std::uint8_t, 4> a, std::uint16_t port) noexcept;
    static Endpoint v6(const std::array<std::uint8_t, 16>& a, std::uint16_t port) noexcept;

    bool operator==(const Endpoint&) const = default;
};

// Source and destination of one Visitor connection; both members always share a family.
struct Tuple {
    Endpoint source;
    Endpoint destination;
    bool operator==(const Tuple&) const = default;
};

// Parses an IP literal with libc inet_pton (IPv4 dotted quad without leading zeros, IPv6 with
// "::" and embedded IPv4). No brackets, no zone id, no port, no embedded NUL. Port is 0.
std::optional<Endpoint> parse_ip(std::string_view text) noexcept;

// Parses "1.2.3.4:443" or "[::1]:443" (port 0-65535, decimal, no sign).
std::optional<Endpoint> parse_endpoint(std::string_view text) noexcept;

// "1.2.3.4" or IPv6 text from libc inet_ntop: lowercase, the longest run of zero groups
// compressed ("2001:db8::1"), mapped addresses as "::ffff:1.2.3.4".
std::string format_ip(const Endpoint& e);

// "1.2.3.4:443" or "[2001:db8::1]:443".
std::string format_endpoint(const Endpoint& e);

// Dual-stack sockets report IPv4 peers as ::ffff:a.b.c.d; returns the plain IPv4 endpoint for
// those, so an IPv4 Visitor has one canonical address whatever the socket, and `e` unchanged
// otherwise.
Endpoint unmap_v4(const Endpoint& e) noexcept;

// Conversions to and from the kernel's socket address structures (plain struct copies, no
// syscalls). from_sockaddr accepts AF_INET and AF_INET6 only; it does not unmap.
std::optional<Endpoint> from_sockaddr(const sockaddr* sa, socklen_t len) noexcept;
inline std::optional<Endpoint> from_sockaddr(const sockaddr_storage& ss) noexcept {
    return from_sockaddr(reinterpret_cast<const sockaddr*>(&ss), sizeof ss);
}
socklen_t to_sockaddr(const Endpoint& e, sockaddr_storage& out) noexcept;

}  // namespace runewarp::proto
