// Incremental TLS ClientHello parser: record reassembly, SNI and acme-tls/1 detection.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

namespace runewarp::proto {

// Most bytes buffered before the ClientHello must be complete; exactly this many is accepted.
inline constexpr std::size_t kMaxClientHelloBytes = 16384;

enum class HelloStatus {
    kIncomplete,  // need more bytes (at EOF this is `incomplete-client-hello`)
    kOk,          // complete, valid, with a usable SNI
    kNotTls,      // first bytes are not a TLS handshake record (SSLv2, alert, HTTP, ...)
    kInvalidTls,  // malformed records or ClientHello
    kNoSni,       // no server_name, or an IP literal in it
    kInvalidSni,  // server_name fails the hostname rules
    kTooLarge,    // ClientHello cannot complete within kMaxClientHelloBytes
};

// The reason code logs and drop counters use: "non-tls-client-hello", "missing-sni-client-hello",
// "invalid-sni-client-hello", "oversized-client-hello", "incomplete-client-hello" (kIncomplete,
// meant for EOF), "invalid-tls-client-hello"; "ok" for kOk.
const char* reason_code(HelloStatus s) noexcept;

// Feed only the newly seen bytes each time; the parser keeps its state, so total work is O(n)
// however the bytes are split. Bytes are never modified. Once a terminal status is reached,
// feed() ignores input and returns it again. About 16.5 KiB; reuse one per connection.
class ClientHelloParser {
public:
    // User-provided so that the 16 KiB buffer is not zero-filled: only bytes written are read.
    ClientHelloParser() noexcept {}

    // Back to the initial state for a new connection, without touching the 16 KiB buffer
    // (cheaper than assigning a fresh parser).
    void reset() noexcept;

    HelloStatus feed(std::span<const std::uint8_t> more);

    HelloStatus status() const noexcept { return status_; }
    // Bytes consumed so far; stops growing at hello_end() (later bytes are trailing bytes).
    std::size_t bytes_seen() const noexcept { return seen_; }
    // On kOk: offset just past the record that completes the ClientHello. Every byte after it is
    // a trailing byte the caller keeps and forwards verbatim.
    std::size_t hello_end() const noexcept { return hello_end_; }
    // Bytes still needed before the parser can make progress (for SO_RCVLOWAT); 0 when terminal.
    // bytes_seen() + bytes_needed() never exceeds kMaxClientHelloBytes.
    std::size_t bytes_needed() const noexcept;
    // On kOk: canonical (normalized) SNI.
    const std::string& sni() const noexcept { return sni_; }
    // On kOk: the ALPN list contains "acme-tls/1".
    bool offers_acme_tls1() const noexcept { return acme_tls1_; }

private:
    HelloStatus after_record_header();
    HelloStatus check_cap() const noexcept;
    HelloStatus parse_hello();

    HelloStatus status_ = HelloStatus::kIncomplete;
    bool in_body_ = false;     // inside a record body (else reading a record header)
    std::size_t seen_ = 0;     // wire bytes consumed
    std::size_t records_ = 0;  // complete record headers seen
    std::size_t rec_hdr_have_ = 0;
    std::size_t rec_remaining_ = 0;  // body bytes left in the current record
    std::size_t hs_have_ = 0;        // handshake bytes reassembled
    std::size_t hs_total_ = 0;       // 4 + handshake length, 0 until known
    std::size_t hello_end_ = 0;
    bool acme_tls1_ = false;
    std::array<std::uint8_t, 5> rec_hdr_{};
    std::string sni_;
    // Handshake bytes only (record headers stripped); never more than the wire bytes, so it fits.
    std::array<std::uint8_t, kMaxClientHelloBytes> hs_;
};

}  // namespace runewarp::proto
