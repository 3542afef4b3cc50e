// PROXY protocol v2 decoder/encoder: fail closed on anything but PROXY over TCP/IPv4 or TCP/IPv6.
#include "proto/proxy_v2.hh"

#include <algorithm>

namespace runewarp::proto {

namespace {

constexpr std::array<std::uint8_t, 12> kSignature = {0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d,
                                                     0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a};
constexpr std::uint8_t kVersionProxy = 0x21;
constexpr std::uint8_t kFamilyTcp4 = 0x11;
constexpr std::uint8_t kFamilyTcp6 = 0x21;

std::uint16_t read_be16(const std::uint8_t* p) noexcept {
    return static_cast<std::uint16_t>(p[0] << 8 | p[1]);
}

void write_be16(std::uint8_t* p, std::uint16_t v) noexcept {
    p[0] = static_cast<std::uint8_t>(v >> 8);
    p[1] = static_cast<std::uint8_t>(v);
}

}  // namespace

const char* proxy_status_text(ProxyStatus s) noexcept {
    switch (s) {
        case ProxyStatus::kNeedMore:
            return "incomplete PROXY v2 header";
        case ProxyStatus::kOk:
            return "ok";
        case ProxyStatus::kBadSignature:
            return "bad PROXY v2 signature";
        case ProxyStatus::kBadVersion:
            return "unsupported PROXY protocol version";
        case ProxyStatus::kLocal:
            return "LOCAL command not accepted";
        case ProxyStatus::kBadCommand:
            return "unknown PROXY v2 command";
        case ProxyStatus::kUdp:
            return "UDP transport not accepted";
        case ProxyStatus::kBadFamily:
            return "unsupported PROXY v2 address family";
        case ProxyStatus::kTooLong:
            return "PROXY v2 header longer than 16384 bytes";
        case ProxyStatus::kTooShort:
            return "PROXY v2 address block too short";
    }
    return "invalid PROXY v2 header";
}

// Validates fixed byte `index` as soon as it arrives, so garbage is rejected without waiting.
ProxyStatus ProxyV2Decoder::check_fixed_byte(std::size_t index) noexcept {
    std::uint8_t b = fixed_[index];
    if (index < kSignature.size()) {
        return b == kSignature[index] ? ProxyStatus::kNeedMore : ProxyStatus::kBadSignature;
    }
    if (index == 12) {
        if ((b >> 4) != 2) return ProxyStatus::kBadVersion;
        if (b == 0x20) return ProxyStatus::kLocal;
        return b == kVersionProxy ? ProxyStatus::kNeedMore : ProxyStatus::kBadCommand;
    }
    if (index == 13) {
        if (b == kFamilyTcp4) {
            addr_size_ = 12;
            return ProxyStatus::kNeedMore;
        }
        if (b == kFamilyTcp6) {
            addr_size_ = 36;
            return ProxyStatus::kNeedMore;
        }
        if (b == 0x12 || b == 0x22) return ProxyStatus::kUdp;
        return ProxyStatus::kBadFamily;
    }
    if (index == 15) {
        std::size_t len = read_be16(&fixed_[14]);
        if (kProxyV2FixedSize + len > kProxyV2MaxHeader) return ProxyStatus::kTooLong;
        if (len < addr_size_) return ProxyStatus::kTooShort;
        header_size_ = kProxyV2FixedSize + len;
    }
    return ProxyStatus::kNeedMore;
}

void ProxyV2Decoder::decode_addresses() noexcept {
    if (addr_size_ == 12) {
        const std::uint8_t* a = addrs_.data();
        tuple_.source = Endpoint::v4({a[0], a[1], a[2], a[3]}, read_be16(a + 8));
        tuple_.destination = Endpoint::v4({a[4], a[5], a[6], a[7]}, read_be16(a + 10));
        return;
    }
    std::array<std::uint8_t, 16> src{};
    std::array<std::uint8_t, 16> dst{};
    std::copy_n(addrs_.begin(), 16, src.begin());
    std::copy_n(addrs_.begin() + 16, 16, dst.begin());
    tuple_.source = Endpoint::v6(src, read_be16(&addrs_[32]));
    tuple_.destination = Endpoint::v6(dst, read_be16(&addrs_[34]));
}

ProxyV2Decoder::FeedResult ProxyV2Decoder::feed(std::span<const std::uint8_t> more) noexcept {
    std::size_t used = 0;
    while (status_ == ProxyStatus::kNeedMore && used < more.size()) {
        if (seen_ < kProxyV2FixedSize) {
            fixed_[seen_] = more[used++];
            status_ = check_fixed_byte(seen_);
            ++seen_;
            continue;
        }
        // Address block then TLVs: copy what we keep, skip the rest by counting.
        std::size_t take = std::min(more.size() - used, header_size_ - seen_);
        std::size_t body_off = seen_ - kProxyV2FixedSize;
        if (body_off < addr_size_) {
            std::size_t n = std::min(take, addr_size_ - body_off);
            std::copy_n(more.begin() + static_cast<std::ptrdiff_t>(used), n,
                        addrs_.begin() + static_cast<std::ptrdiff_t>(body_off));
        }
        used += take;
        seen_ += take;
        if (seen_ == header_size_) {
            decode_addresses();
            status_ = ProxyStatus::kOk;
        }
    }
    return {status_, used};
}

std::size_t ProxyV2Decoder::bytes_needed() const noexcept {
    if (status_ != ProxyStatus::kNeedMore) return 0;
    if (seen_ < kProxyV2FixedSize) return kProxyV2FixedSize - seen_;
    return header_size_ - seen_;
}

std::size_t proxy_v2_size(Family f) noexcept {
    return f == Family::kV4 ? kProxyV2SizeV4 : kProxyV2SizeV6;
}

bool encode_proxy_v2(const Tuple& t, std::span<std::uint8_t> out, std::size_t& written) noexcept {
    written = 0;
    if (t.source.family != t.destination.family) return false;
    bool v4 = t.source.family == Family::kV4;
    std::size_t total = proxy_v2_size(t.source.family);
    if (out.size() < total) return false;
    std::uint8_t* p = out.data();
    std::copy(kSignature.begin(), kSignature.end(), p);
    p[12] = kVersionProxy;
    p[13] = v4 ? kFamilyTcp4 : kFamilyTcp6;
    write_be16(p + 14, static_cast<std::uint16_t>(total - kProxyV2FixedSize));
    std::size_t alen = v4 ? 4 : 16;
    std::uint8_t* a = p + kProxyV2FixedSize;
    std::copy_n(t.source.addr.begin(), alen, a);
    std::copy_n(t.destination.addr.begin(), alen, a + alen);
    write_be16(a + 2 * alen, t.source.port);
    write_be16(a + 2 * alen + 2, t.destination.port);
    written = total;
    return true;
}

}  // namespace runewarp::proto
