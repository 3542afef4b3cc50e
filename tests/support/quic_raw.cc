// RawQuicClient: an ngtcp2 client connection with the crypto glue only, stepped by the test.
#include "tests/support/quic_raw.hh"

#include <arpa/inet.h>
#include <gnutls/crypto.h>
#include <netinet/in.h>
#include <ngtcp2/ngtcp2_crypto.h>
#include <time.h>
#include <unistd.h>

#include <cstring>

namespace runewarp::test {

namespace {

ngtcp2_tstamp now_ts() {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<ngtcp2_tstamp>(ts.tv_sec) * NGTCP2_SECONDS +
           static_cast<ngtcp2_tstamp>(ts.tv_nsec);
}

void random_cid(ngtcp2_cid& cid, size_t len) {
    uint8_t b[NGTCP2_MAX_CIDLEN];
    (void)gnutls_rnd(GNUTLS_RND_NONCE, b, len);
    ngtcp2_cid_init(&cid, b, len);
}

void rand_cb(uint8_t* dest, size_t len, const ngtcp2_rand_ctx*) noexcept {
    (void)gnutls_rnd(GNUTLS_RND_NONCE, dest, len);
}

int new_cid_cb(ngtcp2_conn*, ngtcp2_cid* cid, uint8_t* token, size_t len, void*) noexcept {
    random_cid(*cid, len);
    (void)gnutls_rnd(GNUTLS_RND_NONCE, token, NGTCP2_STATELESS_RESET_TOKENLEN);
    return 0;
}

}  // namespace

ngtcp2_conn* RawQuicClient::get_conn(ngtcp2_crypto_conn_ref* ref) noexcept {
    return static_cast<RawQuicClient*>(ref->user_data)->conn_;
}

std::unique_ptr<RawQuicClient> RawQuicClient::create(const quic::ClientTls& tls,
                                                     const sockaddr* local, socklen_t local_len,
                                                     const sockaddr* remote, socklen_t remote_len,
                                                     std::span<const uint8_t> token) {
    std::unique_ptr<RawQuicClient> c(new RawQuicClient());
    std::memcpy(&c->local_, local, local_len);
    c->local_len_ = local_len;
    std::memcpy(&c->remote_, remote, remote_len);
    c->remote_len_ = remote_len;
    c->state_.conn_ref.get_conn = get_conn;
    c->state_.conn_ref.user_data = c.get();

    ngtcp2_callbacks cb{};
    cb.client_initial = ngtcp2_crypto_client_initial_cb;
    cb.recv_retry = ngtcp2_crypto_recv_retry_cb;
    cb.recv_crypto_data = ngtcp2_crypto_recv_crypto_data_cb;
    cb.encrypt = ngtcp2_crypto_encrypt_cb;
    cb.decrypt = ngtcp2_crypto_decrypt_cb;
    cb.hp_mask = ngtcp2_crypto_hp_mask_cb;
    cb.update_key = ngtcp2_crypto_update_key_cb;
    cb.delete_crypto_aead_ctx = ngtcp2_crypto_delete_crypto_aead_ctx_cb;
    cb.delete_crypto_cipher_ctx = ngtcp2_crypto_delete_crypto_cipher_ctx_cb;
    cb.get_path_challenge_data = ngtcp2_crypto_get_path_challenge_data_cb;
    cb.version_negotiation = ngtcp2_crypto_version_negotiation_cb;
    cb.rand = rand_cb;
    cb.get_new_connection_id = new_cid_cb;

    ngtcp2_settings s;
    ngtcp2_settings_default(&s);
    s.initial_ts = now_ts();
    s.token = token.empty() ? nullptr : token.data();
    s.tokenlen = token.size();
    ngtcp2_transport_params p;
    ngtcp2_transport_params_default(&p);
    p.initial_max_streams_bidi = 1024;
    p.initial_max_data = 1 << 20;
    p.initial_max_stream_data_bidi_local = 1 << 20;
    p.initial_max_stream_data_bidi_remote = 1 << 20;
    ngtcp2_cid dcid, scid;
    random_cid(dcid, 18);
    random_cid(scid, 16);
    c->scid_ = scid;
    ngtcp2_path path{};
    path.local.addr = reinterpret_cast<sockaddr*>(&c->local_);
    path.local.addrlen = c->local_len_;
    path.remote.addr = reinterpret_cast<sockaddr*>(&c->remote_);
    path.remote.addrlen = c->remote_len_;
    if (ngtcp2_conn_client_new(&c->conn_, &dcid, &scid, &path, NGTCP2_PROTO_VER_V1, &cb, &s, &p,
                               nullptr, c.get()) != 0)
        return nullptr;
    auto t = tls.new_session(c->state_);
    if (!t) return nullptr;
    c->tls_ = std::move(*t);
    ngtcp2_conn_set_tls_native_handle(c->conn_, c->tls_.get());
    return c;
}

RawQuicClient::~RawQuicClient() {
    if (conn_ != nullptr) ngtcp2_conn_del(conn_);
}

std::vector<uint8_t> RawQuicClient::next_datagram() {
    std::vector<uint8_t> out(1500);
    ngtcp2_path_storage ps;
    ngtcp2_path_storage_zero(&ps);
    ngtcp2_pkt_info pi{};
    ngtcp2_ssize n = ngtcp2_conn_write_pkt(conn_, &ps.path, &pi, out.data(), out.size(), now_ts());
    out.resize(n > 0 ? static_cast<size_t>(n) : 0);
    return out;
}

int RawQuicClient::read(std::span<const uint8_t> datagram) {
    ngtcp2_path path{};
    path.local.addr = reinterpret_cast<sockaddr*>(&local_);
    path.local.addrlen = local_len_;
    path.remote.addr = reinterpret_cast<sockaddr*>(&remote_);
    path.remote.addrlen = remote_len_;
    ngtcp2_pkt_info pi{};
    return ngtcp2_conn_read_pkt(conn_, &path, &pi, datagram.data(), datagram.size(), now_ts());
}

uint64_t RawQuicClient::peer_close_code() const {
    const ngtcp2_ccerr* e = ngtcp2_conn_get_ccerr(conn_);
    return e != nullptr ? e->error_code : 0;
}

bool RawQuicClient::addressed_to(std::span<const uint8_t> d) const {
    // Long header: flags, version (4), DCID length, DCID.
    if (d.size() < 6 || (d[0] & 0x80) == 0) return false;
    const size_t len = d[5];
    return len == scid_.datalen && d.size() >= 6 + len &&
           std::memcmp(d.data() + 6, scid_.data, len) == 0;
}

int bind_udp(const char* addr) {
    int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    sockaddr_in a{};
    a.sin_family = AF_INET;
    if (::inet_pton(AF_INET, addr, &a.sin_addr) != 1 ||
        ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
        ::close(fd);
        return -1;
    }
    return fd;
}

int long_header_type(std::span<const uint8_t> d) {
    // QUIC v1 long header: form bit, fixed bit, two type bits; then a 32-bit version of 1.
    if (d.size() < 7 || (d[0] & 0xc0) != 0xc0) return -1;
    if (d[1] != 0 || d[2] != 0 || d[3] != 0 || d[4] != 1) return -1;
    constexpr int kTypes[4] = {NGTCP2_PKT_INITIAL, NGTCP2_PKT_0RTT, NGTCP2_PKT_HANDSHAKE,
                               NGTCP2_PKT_RETRY};
    return kTypes[(d[0] >> 4) & 0x3];
}

}  // namespace runewarp::test
