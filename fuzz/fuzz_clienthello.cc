// Fuzz target for the ClientHello parser and the stream prefix decoder: the same input fed whole
// and in small chunks (sizes derived from the first byte) must give the same result.
#include <cstddef>
#include <cstdint>
#include <span>

#include "fuzz/fuzz_target.hh"
#include "proto/clienthello.hh"
#include "proto/stream_prefix.hh"

using runewarp::fuzz::check;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    using namespace runewarp::proto;
    std::span<const std::uint8_t> in(data, size);

    auto* whole = new ClientHelloParser();
    HelloStatus a = whole->feed(in);
    check(whole->bytes_seen() <= kMaxClientHelloBytes);
    check(whole->bytes_seen() <= size);
    if (a == HelloStatus::kOk) {
        check(whole->hello_end() <= size && whole->hello_end() == whole->bytes_seen());
        check(!whole->sni().empty());
    }

    std::size_t step = size > 0 ? (data[0] % 17) + 1 : 1;
    auto* chunked = new ClientHelloParser();
    HelloStatus b = HelloStatus::kIncomplete;
    for (std::size_t off = 0; off < size; off += step) {
        check(chunked->bytes_seen() + chunked->bytes_needed() <= kMaxClientHelloBytes);
        b = chunked->feed(in.subspan(off, std::min(step, size - off)));
    }
    check(a == b);
    // After a rejection the consumed count depends on where the chunk ended; only compare it
    // while parsing is still meaningful.
    if (a == HelloStatus::kOk || a == HelloStatus::kIncomplete) {
        check(whole->bytes_seen() == chunked->bytes_seen());
    }
    if (a == HelloStatus::kOk) {
        check(whole->sni() == chunked->sni());
        check(whole->hello_end() == chunked->hello_end());
        check(whole->offers_acme_tls1() == chunked->offers_acme_tls1());
    }
    delete whole;
    delete chunked;

    // The same bytes as a tunnel stream (PROXY header first) must never crash either.
    auto* prefix = new StreamPrefixDecoder();
    PrefixStatus p = prefix->feed(in);
    if (p == PrefixStatus::kDone) check(prefix->hello_end() <= size);
    delete prefix;
    return 0;
}
