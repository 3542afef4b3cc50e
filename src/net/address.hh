// Resolved socket addresses and the order in which a Happy Eyeballs race tries them.
#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <string>
#include <vector>

namespace runewarp::net {

struct ResolvedAddress {
    sockaddr_storage addr{};
    socklen_t len = 0;

    const sockaddr* sa() const noexcept { return reinterpret_cast<const sockaddr*>(&addr); }
    int family() const noexcept { return addr.ss_family; }
};

// "1.2.3.4:443" or "[2001:db8::1]:443" ("unknown" for anything but AF_INET / AF_INET6).
std::string format_address(const ResolvedAddress& a);

// An IP literal host (no brackets) with `port`; false when `host` is a name.
bool literal_address(const std::string& host, uint16_t port, ResolvedAddress& out) noexcept;

// Reorders addresses for a connection race (RFC 8305 section 4): the family of the first
// address first, then alternating families, each family keeping the resolver's order.
// Duplicates are dropped.
void interleave_families(std::vector<ResolvedAddress>& addrs);

// The stagger between two attempts of a race: the next address starts this long after the
// previous one if that one has not answered (RFC 8305's recommended 250 ms).
inline constexpr int64_t kAttemptDelayNs = 250'000'000;

}  // namespace runewarp::net
