// A bare ngtcp2 client connection driven by hand, for tests that need genuine QUIC packets
// without a full client: the Initials of a real runewarp ClientHello (fresh connection IDs each
// time), optionally carrying a token, and a way to read what the server answered (a Retry, a
// stateless CONNECTION_CLOSE). It sends nothing by itself and never finishes a handshake.
#pragma once

#include <ngtcp2/ngtcp2.h>
#include <sys/socket.h>

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "quic/tls.hh"

namespace runewarp::test {

class RawQuicClient {
public:
    // A client connection from `local` to `remote` with a fresh random DCID; `token` goes into
    // its first Initial as is (empty: none). `tls` must outlive the client.
    static std::unique_ptr<RawQuicClient> create(const quic::ClientTls& tls, const sockaddr* local,
                                                 socklen_t local_len, const sockaddr* remote,
                                                 socklen_t remote_len,
                                                 std::span<const uint8_t> token = {});
    ~RawQuicClient();
    RawQuicClient(const RawQuicClient&) = delete;
    RawQuicClient& operator=(const RawQuicClient&) = delete;

    // The next datagram the connection sends now (its first call: the padded Initial); empty
    // when it has nothing to send.
    std::vector<uint8_t> next_datagram();
    // Processes a datagram from the server; ngtcp2's result (NGTCP2_ERR_DRAINING after a
    // CONNECTION_CLOSE; a Retry is taken in and the next Initial then carries its token).
    int read(std::span<const uint8_t> datagram);
    // The peer's CONNECTION_CLOSE error code once read() returned NGTCP2_ERR_DRAINING.
    uint64_t peer_close_code() const;
    // Whether a long-header datagram is addressed to this client (its DCID is our SCID): tells
    // the answers to this connection from late ones to an earlier connection on the same socket.
    bool addressed_to(std::span<const uint8_t> datagram) const;
    ngtcp2_conn* raw() { return conn_; }

private:
    RawQuicClient() = default;
    static ngtcp2_conn* get_conn(ngtcp2_crypto_conn_ref* ref) noexcept;

    ngtcp2_conn* conn_ = nullptr;
    ngtcp2_cid scid_{};
    quic::TlsConnState state_{};
    quic::TlsSession tls_;
    sockaddr_storage local_{};
    socklen_t local_len_ = 0;
    sockaddr_storage remote_{};
    socklen_t remote_len_ = 0;
};

// A UDP socket bound to `addr`:0 (an IPv4 literal, any 127.0.0.0/8 address on Linux loopback);
// non-blocking. Returns -1 on failure.
int bind_udp(const char* addr);

// Long-header packet type of a datagram from a server, or -1 for a short header or garbage:
// NGTCP2_PKT_RETRY, NGTCP2_PKT_INITIAL, ...
int long_header_type(std::span<const uint8_t> datagram);

}  // namespace runewarp::test
