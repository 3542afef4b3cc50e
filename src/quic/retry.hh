// QUIC address validation: when to answer an Initial with a Retry, and the Retry tokens' keys.
#pragma once

#include <ngtcp2/ngtcp2.h>
#include <ngtcp2/ngtcp2_crypto.h>

#include <cstddef>
#include <cstdint>
#include <span>

namespace runewarp::quic {

// When the server answers a client Initial that carries no token with a Retry (a token bound to
// the client's address) instead of starting a handshake. A Retry commits no state, so a flood of
// Initials from spoofed addresses cannot take the handshake slots: only a client that receives
// the Retry at its address can come back with the token.
enum class RetryPolicy : uint8_t {
    automatic,  // once half the handshake slots are taken (the rest go to validated clients)
    always,     // every token-less Initial: one extra round trip per connection
    never,      // no address validation: an Initial takes a slot while one is free
};

// Makes and checks Retry tokens (ngtcp2_crypto's AEAD-sealed format: the client address, the
// client's first DCID, the Retry's source CID and the time). The key is random, lives only in
// memory and is replaced every `rotation_ns`; a token made with the current or the previous key
// is accepted until it is `lifetime_ns` old.
class RetryTokens {
public:
    static constexpr size_t kMaxLen = NGTCP2_CRYPTO_MAX_RETRY_TOKENLEN;

    RetryTokens(int64_t lifetime_ns, int64_t rotation_ns, int64_t now_ns) noexcept;
    ~RetryTokens();
    RetryTokens(const RetryTokens&) = delete;
    RetryTokens& operator=(const RetryTokens&) = delete;

    // The token for a Retry answering an Initial with DCID `odcid` from `remote`; the client's
    // next Initial carries it with `retry_scid` (the Retry's source CID) as its DCID. Returns the
    // token's length, 0 on failure.
    size_t make(std::span<uint8_t, kMaxLen> out, uint32_t version, const ngtcp2_addr& remote,
                const ngtcp2_cid& retry_scid, const ngtcp2_cid& odcid, int64_t now_ns) noexcept;
    // Whether `token` is one of ours for this address, version and DCID, and still valid; then
    // `odcid` is the DCID of the client's first Initial.
    bool verify(ngtcp2_cid& odcid, std::span<const uint8_t> token, uint32_t version,
                const ngtcp2_addr& remote, const ngtcp2_cid& dcid, int64_t now_ns) noexcept;

    uint64_t rotations() const noexcept { return rotations_; }

private:
    static constexpr size_t kKeyLen = 32;
    void rotate_if_due(int64_t now_ns) noexcept;

    uint8_t key_[kKeyLen];
    uint8_t prev_[kKeyLen];
    bool has_prev_ = false;
    int64_t born_ns_;  // when key_ was made
    int64_t lifetime_ns_;
    int64_t rotation_ns_;
    uint64_t rotations_ = 0;
};

}  // namespace runewarp::quic
