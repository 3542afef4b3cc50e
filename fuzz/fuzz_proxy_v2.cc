// Fuzz target for the PROXY v2 decoder: whole vs byte-at-a-time agree, and a decoded tuple
// re-encodes to a header that decodes to the same tuple (and to the same bytes without TLVs).
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>

#include "fuzz/fuzz_target.hh"
#include "proto/proxy_v2.hh"

using runewarp::fuzz::check;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    using namespace runewarp::proto;
    std::span<const std::uint8_t> in(data, size);

    ProxyV2Decoder whole;
    auto r = whole.feed(in);
    check(r.consumed <= size);

    ProxyV2Decoder bytewise;
    std::size_t consumed = 0;
    ProxyStatus s = ProxyStatus::kNeedMore;
    for (std::size_t i = 0; i < size && s == ProxyStatus::kNeedMore; ++i) {
        auto one = bytewise.feed(in.subspan(i, 1));
        consumed += one.consumed;
        s = one.status;
    }
    check(s == r.status);
    if (r.status != ProxyStatus::kOk) return 0;
    check(consumed == r.consumed && r.consumed == whole.header_size());
    check(whole.tuple() == bytewise.tuple());

    std::uint8_t out[kProxyV2SizeV6];
    std::size_t n = 0;
    check(encode_proxy_v2(whole.tuple(), out, n));
    check(n == proxy_v2_size(whole.tuple().source.family));
    if (whole.header_size() == n) check(std::memcmp(out, data, n) == 0);
    ProxyV2Decoder again;
    auto r2 = again.feed(std::span<const std::uint8_t>(out, n));
    check(r2.status == ProxyStatus::kOk && r2.consumed == n);
    check(again.tuple() == whole.tuple());
    return 0;
}
