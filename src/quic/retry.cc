// RetryTokens: a random in-memory key, replaced on a schedule, sealing ngtcp2_crypto Retry tokens.
#include "quic/retry.hh"

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>

#include <cstring>

namespace runewarp::quic {

namespace {

void fresh_key(uint8_t* key, size_t len) noexcept {
    (void)gnutls_rnd(GNUTLS_RND_KEY, key, len);
}

}  // namespace

RetryTokens::RetryTokens(int64_t lifetime_ns, int64_t rotation_ns, int64_t now_ns) noexcept
    : born_ns_(now_ns), lifetime_ns_(lifetime_ns), rotation_ns_(rotation_ns) {
    fresh_key(key_, kKeyLen);
    std::memset(prev_, 0, kKeyLen);
}

RetryTokens::~RetryTokens() {
    gnutls_memset(key_, 0, kKeyLen);
    gnutls_memset(prev_, 0, kKeyLen);
}

void RetryTokens::rotate_if_due(int64_t now_ns) noexcept {
    if (rotation_ns_ <= 0 || now_ns - born_ns_ < rotation_ns_) return;
    // One period over: the old key still opens the tokens it made just before. Two or more
    // (nothing asked for a while): those tokens are older than a period, longer than any
    // token lives, so the old key goes too.
    has_prev_ = now_ns - born_ns_ < 2 * rotation_ns_;
    if (has_prev_) {
        std::memcpy(prev_, key_, kKeyLen);
    } else {
        gnutls_memset(prev_, 0, kKeyLen);
    }
    fresh_key(key_, kKeyLen);
    born_ns_ = now_ns;
    ++rotations_;
}

size_t RetryTokens::make(std::span<uint8_t, kMaxLen> out, uint32_t version,
                         const ngtcp2_addr& remote, const ngtcp2_cid& retry_scid,
                         const ngtcp2_cid& odcid, int64_t now_ns) noexcept {
    rotate_if_due(now_ns);
    ngtcp2_ssize n = ngtcp2_crypto_generate_retry_token(out.data(), key_, kKeyLen, version,
                                                        remote.addr, remote.addrlen, &retry_scid,
                                                        &odcid, static_cast<ngtcp2_tstamp>(now_ns));
    return n > 0 ? static_cast<size_t>(n) : 0;
}

bool RetryTokens::verify(ngtcp2_cid& odcid, std::span<const uint8_t> token, uint32_t version,
                         const ngtcp2_addr& remote, const ngtcp2_cid& dcid,
                         int64_t now_ns) noexcept {
    rotate_if_due(now_ns);
    const auto lifetime = static_cast<ngtcp2_duration>(lifetime_ns_);
    const auto ts = static_cast<ngtcp2_tstamp>(now_ns);
    if (ngtcp2_crypto_verify_retry_token(&odcid, token.data(), token.size(), key_, kKeyLen, version,
                                         remote.addr, remote.addrlen, &dcid, lifetime, ts) == 0)
        return true;
    return has_prev_ && ngtcp2_crypto_verify_retry_token(&odcid, token.data(), token.size(), prev_,
                                                         kKeyLen, version, remote.addr,
                                                         remote.addrlen, &dcid, lifetime, ts) == 0;
}

}  // namespace runewarp::quic
