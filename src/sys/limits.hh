// Process resource limits a relay daemon needs.
#pragma once

#include <cstdint>

namespace runewarp::sys {

// The descriptor limit both roles ask for: the units' LimitNOFILE=. Every relay holds two
// sockets and, while bytes flow, pipes; the Client holds one backend socket per stream (up to
// 1024 per tunnel connection).
inline constexpr std::uint64_t kWantedNofile = 65536;

// Raises RLIMIT_NOFILE towards `wanted`: a privileged process (root, CAP_SYS_RESOURCE) raises
// the hard limit too, capped by fs.nr_open; anybody raises the soft limit to the hard one. A
// daemon started from a shell whose `ulimit -n` is 1024 (soft and hard), or by systemd with the
// default soft 1024, would otherwise fail Visitors past a thousand. Returns the soft limit now
// in force.
std::uint64_t raise_nofile_limit(std::uint64_t wanted = kWantedNofile) noexcept;

// Below this, a daemon warns at startup that a full load runs out of descriptors.
inline constexpr std::uint64_t kMinimumNofile = 4096;

}  // namespace runewarp::sys
