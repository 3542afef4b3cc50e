// Stream prefix decoder: chains the strict PROXY v2 decoder and the ClientHello parser.
#include "proto/stream_prefix.hh"

namespace runewarp::proto {

const char* stream_proxy_reason(ProxyStatus s) noexcept {
    switch (s) {
        case ProxyStatus::kNeedMore:
            return "invalid PROXY v2 header: incomplete";
        case ProxyStatus::kOk:
            return "ok";
        case ProxyStatus::kBadSignature:
            return "invalid PROXY v2 header: bad signature";
        case ProxyStatus::kBadVersion:
            return "invalid PROXY v2 header: unsupported version";
        case ProxyStatus::kLocal:
            return "invalid PROXY v2 header: LOCAL command not accepted";
        case ProxyStatus::kBadCommand:
            return "invalid PROXY v2 header: unknown command";
        case ProxyStatus::kUdp:
            return "invalid PROXY v2 header: UDP not accepted";
        case ProxyStatus::kBadFamily:
            return "invalid PROXY v2 header: unsupported address family";
        case ProxyStatus::kTooLong:
            return "invalid PROXY v2 header: longer than 16384 bytes";
        case ProxyStatus::kTooShort:
            return "invalid PROXY v2 header: address block too short";
    }
    return "invalid PROXY v2 header";
}

PrefixStatus StreamPrefixDecoder::feed(std::span<const std::uint8_t> more) {
    if (status_ != PrefixStatus::kNeedMore) return status_;
    if (proxy_.status() != ProxyStatus::kOk) {
        auto r = proxy_.feed(more);
        if (r.status == ProxyStatus::kNeedMore) return status_;
        if (r.status != ProxyStatus::kOk) {
            reason_ = stream_proxy_reason(r.status);
            status_ = PrefixStatus::kError;
            return status_;
        }
        more = more.subspan(r.consumed);
    }
    if (more.empty()) return status_;
    HelloStatus h = hello_.feed(more);
    if (h == HelloStatus::kIncomplete) return status_;
    if (h == HelloStatus::kOk) {
        status_ = PrefixStatus::kDone;
        reason_ = "ok";
    } else {
        status_ = PrefixStatus::kError;
        reason_ = reason_code(h);
    }
    return status_;
}

const char* StreamPrefixDecoder::eof_reason() const noexcept {
    if (status_ != PrefixStatus::kNeedMore) return reason_;
    if (proxy_.status() != ProxyStatus::kOk) return stream_proxy_reason(ProxyStatus::kNeedMore);
    return reason_code(HelloStatus::kIncomplete);
}

std::size_t StreamPrefixDecoder::bytes_needed() const noexcept {
    if (status_ != PrefixStatus::kNeedMore) return 0;
    if (proxy_.status() != ProxyStatus::kOk) return proxy_.bytes_needed();
    return hello_.bytes_needed();
}

std::size_t encode_stream_prefix(const Tuple& t, std::span<std::uint8_t> out) noexcept {
    std::size_t written = 0;
    if (!encode_proxy_v2(t, out, written)) return 0;
    return written;
}

}  // namespace runewarp::proto
