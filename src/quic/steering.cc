// CID steering: the steered connection ID rule, the reuseport BPF program, UDP group binding.
#include "quic/steering.hh"

#include <gnutls/crypto.h>
#include <linux/filter.h>
#include <netinet/in.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <iterator>
#include <string>

#include "quic/udp_endpoint.hh"

#ifndef SO_ATTACH_REUSEPORT_CBPF
#define SO_ATTACH_REUSEPORT_CBPF 51
#endif

namespace runewarp::quic {

Result<void> check_steering(CidSteering s) {
    if (s.count == 0 || s.count > kMaxSteeredMembers) {
        return Error{EINVAL, "CID steering: " + std::to_string(s.count) + " group members (1 to " +
                                 std::to_string(kMaxSteeredMembers) + ")"};
    }
    if (s.index >= s.count) {
        return Error{EINVAL, "CID steering: member " + std::to_string(s.index) + " of " +
                                 std::to_string(s.count)};
    }
    return {};
}

void make_steered_cid(ngtcp2_cid& cid, size_t len, CidSteering s) noexcept {
    len = std::min<size_t>(len, NGTCP2_MAX_CIDLEN);
    // The CID bytes and 4 more to pick the first byte from: a 32-bit draw reduced modulo at most
    // 256 values is uniform to within 2^-24, where one random byte modulo 85 (count 3) would
    // favour the low values by a sixth.
    uint8_t buf[NGTCP2_MAX_CIDLEN + 4];
    (void)gnutls_rnd(GNUTLS_RND_NONCE, buf, len + 4);
    if (len > 0 && s.count > 1 && s.count <= kMaxSteeredMembers && s.index < s.count) {
        uint32_t r;
        std::memcpy(&r, buf + len, sizeof r);
        const uint32_t choices = kMaxSteeredMembers / s.count;  // values b with b % count == index
        buf[0] = static_cast<uint8_t>((r % choices) * s.count + s.index);
    }
    ngtcp2_cid_init(&cid, buf, len);
}

Result<void> attach_cid_steering(int fd, uint32_t count) {
    if (auto r = check_steering({count, 0}); !r) return r;
    // The kernel runs a reuseport program with the packet data starting at the UDP payload
    // (run_bpf_filter in net/core/sock_reuseport.c pulls the UDP header first), so the offsets
    // below are QUIC header offsets:
    //   long header (first byte & 0x80): flags, version (4), DCID length, DCID -> byte 6
    //   short header: flags, DCID -> byte 1
    // The result is the byte modulo `count`, which is the member index (bind order). Two cases
    // leave the choice to the kernel's own hash or to member 0, both harmless:
    // - A datagram too short for the load (an empty one, or a 1-6 byte long header): classic BPF
    //   ends the program with 0 on an out-of-bounds load, so member 0 gets it. No QUIC packet is
    //   that short; the listener drops it.
    // - An index >= the number of sockets in the group (only while the group is being built, or
    //   when members closed): the kernel ignores the program's answer and hashes the 4-tuple.
    // Client Initials carry a DCID the client chose at random: they are spread over the members
    // by it, deterministically (every Initial with that DCID reaches the same member, which
    // creates the connection with CIDs of its own).
    sock_filter code[] = {
        BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 0),             // A = flags byte
        BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, 0x80, 2, 0),  // long header: to 4
        BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 1),             // short: A = DCID[0]
        BPF_JUMP(BPF_JMP | BPF_JA | BPF_K, 1, 0, 0),       // to 5
        BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 6),             // long: A = DCID[0]
        BPF_STMT(BPF_ALU | BPF_MOD | BPF_K, count),        // A %= count
        BPF_STMT(BPF_RET | BPF_A, 0),                      // member A
    };
    sock_fprog prog{static_cast<unsigned short>(std::size(code)), code};
    if (::setsockopt(fd, SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, &prog, sizeof prog) != 0)
        return Error::sys(errno, "setsockopt(SO_ATTACH_REUSEPORT_CBPF)");
    return {};
}

namespace {

// Adds members to `group` (which holds its first, bound socket) until it has `count`, each bound
// to the first one's local address, then attaches the program.
Result<void> complete_group(std::vector<core::UniqueFd>& group, uint32_t count, int v6only) {
    if (count > 1) {
        // The bound address of the first member: its port when the request said port 0.
        sockaddr_storage local{};
        socklen_t len = sizeof local;
        if (::getsockname(group[0].get(), reinterpret_cast<sockaddr*>(&local), &len) != 0)
            return Error::sys(errno, "getsockname(udp)");
        group.reserve(count);
        // The kernel appends each socket to the group as it binds: the vector's order is the
        // group's order, i.e. the index the program returns for a member.
        while (group.size() < count) {
            auto fd = bind_udp_socket(reinterpret_cast<sockaddr*>(&local), len, true, v6only);
            if (!fd) return std::move(fd).error();
            group.push_back(std::move(*fd));
        }
        // Until now the kernel spread datagrams by its hash; nothing runs on these sockets yet.
        if (auto r = attach_cid_steering(group[0].get(), count); !r) return std::move(r).error();
    }
    return {};
}

}  // namespace

Result<std::vector<core::UniqueFd>> bind_udp_group(const sockaddr* addr, socklen_t len,
                                                   uint32_t count) {
    if (auto r = check_steering({count, 0}); !r) return std::move(r).error();
    auto first = bind_udp_socket(addr, len, count > 1);
    if (!first) return std::move(first).error();
    std::vector<core::UniqueFd> group;
    group.push_back(std::move(*first));
    if (auto r = complete_group(group, count, -1); !r) return std::move(r).error();
    return group;
}

Result<std::vector<core::UniqueFd>> join_udp_group(core::UniqueFd first, uint32_t count,
                                                   std::string* alone) {
    if (auto r = check_steering({count, 0}); !r) return std::move(r).error();
    int reuseport = 0;
    socklen_t olen = sizeof reuseport;
    if (::getsockopt(first.get(), SOL_SOCKET, SO_REUSEPORT, &reuseport, &olen) != 0)
        return Error::sys(errno, "getsockopt(SO_REUSEPORT)");
    std::vector<core::UniqueFd> group;
    group.push_back(std::move(first));
    // Without SO_REUSEPORT (set before it was bound) no other socket can share the address.
    if (reuseport == 0) {
        if (alone != nullptr && count > 1) *alone = "the activated socket has no SO_REUSEPORT";
        return group;
    }
    sockaddr_storage local{};
    socklen_t len = sizeof local;
    if (::getsockname(group[0].get(), reinterpret_cast<sockaddr*>(&local), &len) != 0)
        return Error::sys(errno, "getsockname(udp)");
    int v6only = -1;
    if (local.ss_family == AF_INET6) {
        // A wildcard member with another IPV6_V6ONLY would not share the activated socket's
        // address (nor its group).
        int v = 0;
        socklen_t vlen = sizeof v;
        if (::getsockopt(group[0].get(), IPPROTO_IPV6, IPV6_V6ONLY, &v, &vlen) == 0) v6only = v;
    }
    if (auto r = complete_group(group, count, v6only); !r) {
        // Typically EADDRINUSE: the socket belongs to another user (the service manager).
        if (alone != nullptr) *alone = r.error().message;
        group.resize(1);
        return group;
    }
    return group;
}

}  // namespace runewarp::quic
