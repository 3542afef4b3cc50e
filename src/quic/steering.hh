// CID steering: one UDP SO_REUSEPORT group per tunnel address, one member per worker, and a
// classic BPF program that hands each datagram to the member named by its destination CID.
#pragma once

#include <ngtcp2/ngtcp2.h>
#include <sys/socket.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "core/unique_fd.hh"
#include "runewarp/result.hh"

namespace runewarp::quic {

// Which member of a steered group this side is: every connection ID it chooses has a first byte
// b with b % count == index, so the group's program (attach_cid_steering) delivers the packets
// addressed to it here. count 1 is "no steering" (any first byte).
struct CidSteering {
    uint32_t count = 1;
    uint32_t index = 0;
    bool operator==(const CidSteering&) const noexcept = default;
};

// The largest group: the program steers on one byte, so each member needs a value of its own.
inline constexpr uint32_t kMaxSteeredMembers = 256;

// count in [1, 256] and index < count; otherwise an Error saying which.
Result<void> check_steering(CidSteering s);

// Fills `cid` with `len` random bytes (len <= NGTCP2_MAX_CIDLEN) whose first byte satisfies
// `s`: b = (r % (256 / count)) * count + index, uniform over the valid values. `s` must have
// passed check_steering(); count 1 is a plain random connection ID.
void make_steered_cid(ngtcp2_cid& cid, size_t len, CidSteering s) noexcept;

// Attaches to `fd` (any member of a SO_REUSEPORT group; the program belongs to the group) a
// classic BPF program returning the group index for a QUIC datagram: the first byte of its
// destination CID (byte 6 of a long header, byte 1 of a short one) modulo `count`. Needs no
// capability. count in [1, 256].
Result<void> attach_cid_steering(int fd, uint32_t count);

// `count` non-blocking UDP sockets with SO_REUSEPORT, all bound to `addr` (port 0: the first
// gets an ephemeral port, the others bind to that one), with the steering program attached
// once the group is complete (count > 1). Element i is the group member the program names with
// index i: member i is meant for a Listener with CidSteering{count, i}.
Result<std::vector<core::UniqueFd>> bind_udp_group(const sockaddr* addr, socklen_t len,
                                                   uint32_t count);

// A socket-activated UDP socket as the first member of a group: if it has SO_REUSEPORT set,
// count - 1 more sockets join it on its local address and the program is attached; otherwise
// the group is `first` alone, and the caller runs a single tunnel worker. That is also the case
// when the kernel refuses the others (a reuseport group only takes sockets of the user that
// created the first: systemd, when the service runs as another user). `alone` (if not null)
// gets why the group is `first` alone. `first` is element 0 either way.
Result<std::vector<core::UniqueFd>> join_udp_group(core::UniqueFd first, uint32_t count,
                                                   std::string* alone = nullptr);

}  // namespace runewarp::quic
