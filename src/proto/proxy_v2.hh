// PROXY protocol v2 (Visitor ingress and Tunnel stream prefix): strict incremental decoder and
// byte-exact encoder.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>

#include "proto/endpoint.hh"

namespace runewarp::proto {

inline constexpr std::size_t kProxyV2FixedSize = 16;
inline constexpr std::size_t kProxyV2SizeV4 = 28;
inline constexpr std::size_t kProxyV2SizeV6 = 52;
inline constexpr std::size_t kProxyV2MaxHeader = 16384;  // 16 + L may not exceed this

enum class ProxyStatus {
    kNeedMore,      // header not complete yet
    kOk,            // header complete; tuple() and header_size() are valid
    kBadSignature,  // first 12 bytes are not the v2 signature
    kBadVersion,    // version nibble is not 2
    kLocal,         // LOCAL command (health checks): rejected, we need a real tuple
    kBadCommand,    // command nibble neither PROXY nor LOCAL
    kUdp,           // UDP over IPv4/IPv6
    kBadFamily,     // UNSPEC, AF_UNIX or unknown address family
    kTooLong,       // 16 + L > 16384
    kTooShort,      // L smaller than the addresses of the family
};

// Stable short text for logs, e.g. "LOCAL command not accepted".
const char* proxy_status_text(ProxyStatus s) noexcept;

// Incremental decoder: feed any split of the bytes, even one at a time. It consumes bytes only up
// to the end of the header, so what follows (the ClientHello) stays with the caller. TLVs are
// skipped without being stored. Once a terminal status is reached, feed() returns it again.
class ProxyV2Decoder {
public:
    struct FeedResult {
        ProxyStatus status;
        std::size_t consumed;  // bytes of `more` that belong to the header
    };

    FeedResult feed(std::span<const std::uint8_t> more) noexcept;

    ProxyStatus status() const noexcept { return status_; }
    // Total header length 16 + L (valid once the fixed part is in, and on kOk).
    std::size_t header_size() const noexcept { return header_size_; }
    // Bytes still needed to make progress (never more than what completes the header); 0 when done.
    std::size_t bytes_needed() const noexcept;
    const Tuple& tuple() const noexcept { return tuple_; }

private:
    ProxyStatus check_fixed_byte(std::size_t index) noexcept;
    void decode_addresses() noexcept;

    ProxyStatus status_ = ProxyStatus::kNeedMore;
    std::size_t seen_ = 0;         // header bytes consumed so far
    std::size_t header_size_ = 0;  // 16 + L, 0 until known
    std::size_t addr_size_ = 0;    // 12 or 36
    std::array<std::uint8_t, kProxyV2FixedSize> fixed_{};
    std::array<std::uint8_t, 36> addrs_{};
    Tuple tuple_{};
};

// Header size for a family: 28 (IPv4) or 52 (IPv6).
std::size_t proxy_v2_size(Family f) noexcept;

// Writes the PROXY v2 header for `t` (no TLVs) into `out` and sets `written`. Returns false,
// writing nothing, if the families differ or `out` is too small.
bool encode_proxy_v2(const Tuple& t, std::span<std::uint8_t> out, std::size_t& written) noexcept;

}  // namespace runewarp::proto
