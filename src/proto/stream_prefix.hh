// Tunnel stream framing: PROXY v2 header then the Visitor's ClientHello, decoded
// incrementally by the Client; encoded by the Server.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "proto/clienthello.hh"
#include "proto/endpoint.hh"
#include "proto/proxy_v2.hh"

namespace runewarp::proto {

enum class PrefixStatus {
    kNeedMore,  // feed more stream bytes
    kDone,      // tuple(), sni(), offers_acme_tls1() and visitor_offset() are valid
    kError,     // reason() says why; reset the stream
};

// Decodes the start of a runewarp/1 stream. Feed newly received bytes only; the decoder keeps
// state and never re-parses. It never modifies or keeps a copy of the Visitor bytes beyond the
// ClientHello reassembly buffer: the caller keeps everything from visitor_offset() on and
// forwards it verbatim (ClientHello included).
class StreamPrefixDecoder {
public:
    PrefixStatus feed(std::span<const std::uint8_t> more);

    PrefixStatus status() const noexcept { return status_; }
    // Why the stream was rejected, e.g. "invalid PROXY v2 header: LOCAL command not accepted" or
    // "non-tls-client-hello". On EOF while kNeedMore, use eof_reason().
    const char* reason() const noexcept { return reason_; }
    const char* eof_reason() const noexcept;
    // Bytes still needed to make progress; 0 when not kNeedMore.
    std::size_t bytes_needed() const noexcept;

    const Tuple& tuple() const noexcept { return proxy_.tuple(); }
    const std::string& sni() const noexcept { return hello_.sni(); }
    bool offers_acme_tls1() const noexcept { return hello_.offers_acme_tls1(); }
    // Stream offset where Visitor bytes start (= PROXY header size).
    std::size_t visitor_offset() const noexcept { return proxy_.header_size(); }
    // Stream offset just past the ClientHello's last record.
    std::size_t hello_end() const noexcept { return proxy_.header_size() + hello_.hello_end(); }

private:
    PrefixStatus status_ = PrefixStatus::kNeedMore;
    const char* reason_ = "";
    ProxyV2Decoder proxy_;
    ClientHelloParser hello_;
};

// Server side: writes the stream's PROXY v2 header (28 or 52 bytes) for `t` into `out`; the
// caller appends the buffered Visitor bytes right after it in the same write. Returns the header
// length (proxy_v2_size(family)), or 0 when the tuple mixes families or `out` is too small.
std::size_t encode_stream_prefix(const Tuple& t, std::span<std::uint8_t> out) noexcept;

// Text for a PROXY failure inside a stream, "invalid PROXY v2 header: <detail>".
const char* stream_proxy_reason(ProxyStatus s) noexcept;

}  // namespace runewarp::proto
