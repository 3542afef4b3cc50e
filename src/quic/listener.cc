// Listener: Initial intake, routing by destination connection ID, handshake admission; dial().
#include "quic/listener.hh"

#include <gnutls/crypto.h>
#include <ngtcp2/ngtcp2_crypto.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace runewarp::quic {

CidKey CidKey::of(const uint8_t* p, size_t n) noexcept {
    CidKey k;
    k.len = static_cast<uint8_t>(std::min<size_t>(n, NGTCP2_MAX_CIDLEN));
    std::memcpy(k.data.data(), p, k.len);
    return k;
}

size_t CidHash::operator()(const CidKey& k) const noexcept {
    // FNV-1a: connection IDs are random already; this only spreads them over buckets.
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < k.len; ++i) h = (h ^ k.data[i]) * 1099511628211ull;
    return static_cast<size_t>(h);
}

// ---- Listener -----------------------------------------------------------------------------------

Listener::Listener(core::Worker& w, const ServerTls& tls, AcceptHandler& accept,
                   const ListenerConfig& cfg) noexcept
    : worker_(w),
      tls_(tls),
      accept_(accept),
      cfg_(cfg),
      tokens_(cfg.retry_token_lifetime_ns, cfg.retry_key_rotation_ns, core::now_ns()) {
    (void)gnutls_rnd(GNUTLS_RND_KEY, secret_, sizeof secret_);
}

Result<std::unique_ptr<Listener>> Listener::create(core::Worker& w, const sockaddr* addr,
                                                   socklen_t len, const ServerTls& tls,
                                                   AcceptHandler& accept,
                                                   const ListenerConfig& cfg) {
    if (auto r = check_steering(cfg.steering); !r) return std::move(r).error();
    std::unique_ptr<Listener> l(new Listener(w, tls, accept, cfg));
    auto ep = UdpEndpoint::bind(w, addr, len, *l, cfg.endpoint);
    if (!ep) return std::move(ep).error();
    l->ep_ = *ep;
    return l;
}

Result<std::unique_ptr<Listener>> Listener::adopt(core::Worker& w, core::UniqueFd fd,
                                                  const ServerTls& tls, AcceptHandler& accept,
                                                  const ListenerConfig& cfg) {
    if (auto r = check_steering(cfg.steering); !r) return std::move(r).error();
    std::unique_ptr<Listener> l(new Listener(w, tls, accept, cfg));
    auto ep = UdpEndpoint::adopt(w, std::move(fd), *l, cfg.endpoint);
    if (!ep) return std::move(ep).error();
    l->ep_ = *ep;
    return l;
}

Listener::~Listener() {
    // Connections outlive us only as orphans that retire on their own.
    std::vector<Connection*> all;
    all.reserve(conns_.size());
    for (auto& [c, cids] : conns_) all.push_back(c);
    conns_.clear();
    by_cid_.clear();
    // The group's count keeps only the other listeners' handshakes.
    if (cfg_.handshake_group != nullptr)
        cfg_.handshake_group->fetch_sub(handshaking_, std::memory_order_relaxed);
    handshaking_ = 0;
    in_handshake_.clear();
    for (Connection* c : all) {
        c->orphan();
        c->terminate();
    }
    if (ep_ != nullptr) ep_->close();
}

size_t Listener::cid_count(const Connection& c) const noexcept {
    auto it = conns_.find(const_cast<Connection*>(&c));
    return it == conns_.end() ? 0 : it->second.size();
}

std::span<const CidKey> Listener::cids(const Connection& c) const noexcept {
    auto it = conns_.find(const_cast<Connection*>(&c));
    if (it == conns_.end()) return {};
    return it->second;
}

void Listener::close_all(uint64_t app_code, std::string_view reason) noexcept {
    std::vector<Connection*> all;
    all.reserve(conns_.size());
    for (auto& [c, cids] : conns_) all.push_back(c);
    for (Connection* c : all) c->close(app_code, reason);
}

void Listener::on_datagram(UdpEndpoint& ep, const ngtcp2_path& path,
                           std::span<const uint8_t> data) noexcept {
    ngtcp2_version_cid vc;
    int rv = ngtcp2_pkt_decode_version_cid(&vc, data.data(), data.size(), Connection::kCidLen);
    if (rv == NGTCP2_ERR_VERSION_NEGOTIATION) {
        send_version_negotiation(ep, path, vc);
        return;
    }
    if (rv != 0) return;
    auto it = by_cid_.find(CidKey::of(vc.dcid, vc.dcidlen));
    if (it != by_cid_.end()) {
        it->second->feed(ep, path, data);
        return;
    }
    if (vc.version == 0) {
        // Short header for a connection we do not know: tell the peer with a stateless reset.
        send_stateless_reset(ep, path, vc, data.size());
        return;
    }
    accept_initial(ep, path, data);
}

void Listener::accept_initial(UdpEndpoint& ep, const ngtcp2_path& path,
                              std::span<const uint8_t> data) noexcept {
    ngtcp2_pkt_hd hd;
    if (ngtcp2_accept(&hd, data.data(), data.size()) != 0) return;  // not an acceptable Initial
    if (hd.type != NGTCP2_PKT_INITIAL) return;
    const int64_t now = ep.rx_time() > 0 ? ep.rx_time() : core::now_ns();
    ValidatedInitial validated{};
    // We never send NEW_TOKEN, so the only token we can check is our own Retry token; any other
    // (a stale token from some other server) counts as none.
    const bool retry_token = hd.tokenlen > 0 && hd.token[0] == NGTCP2_CRYPTO_TOKEN_MAGIC_RETRY;
    if (retry_token) {
        if (!tokens_.verify(validated.original_dcid, {hd.token, hd.tokenlen}, hd.version,
                            path.remote, hd.dcid, now)) {
            // Forged, for another address, or too old. The client cannot take a second Retry,
            // so tell it at once (INVALID_TOKEN) rather than let it time out.
            ++tokens_rejected_;
            send_initial_close(ep, path, hd, NGTCP2_INVALID_TOKEN, data.size());
            return;
        }
        validated.token = {hd.token, hd.tokenlen};
    }
    if (const size_t n = handshakes_counted(); n >= cfg_.max_handshakes) {
        // Every handshake slot is taken: refuse the newest with CONNECTION_REFUSED.
        send_initial_close(ep, path, hd, NGTCP2_CONNECTION_REFUSED, data.size());
        ++refused_;
        accept_.on_handshake_refused(n);
        return;
    }
    if (!retry_token && wants_retry()) {
        send_retry(ep, path, hd, data.size(), now);
        return;
    }
    auto c = Connection::create_server(worker_, *this, ep, tls_, path, hd,
                                       retry_token ? &validated : nullptr, cfg_.conn);
    if (!c) return;
    Connection* conn = *c;
    handshake_started();
    in_handshake_.insert(conn);
    accept_.on_handshake_admitted();
    // The client keeps using its chosen destination ID until it learns ours.
    by_cid_[CidKey::of(hd.dcid.data, hd.dcid.datalen)] = conn;
    conns_[conn].push_back(CidKey::of(hd.dcid.data, hd.dcid.datalen));
    conn->feed(ep, path, data);
}

bool Listener::wants_retry() const noexcept {
    switch (cfg_.retry) {
        case RetryPolicy::always:
            return true;
        case RetryPolicy::never:
            return false;
        case RetryPolicy::automatic:
            break;
    }
    // Half the slots at most go to unvalidated addresses: spoofed Initials cannot take the rest.
    return handshakes_counted() >= std::max<size_t>(cfg_.max_handshakes / 2, 1);
}

void Listener::send_retry(UdpEndpoint& ep, const ngtcp2_path& path, const ngtcp2_pkt_hd& hd,
                          size_t initial_len, int64_t now) noexcept {
    // The client's next Initial is addressed to this ID, and only this listener can open the
    // token: steered, it comes back to this member of the group, not to the one its hash picks.
    ngtcp2_cid scid;
    make_steered_cid(scid, Connection::kCidLen, cfg_.steering);
    uint8_t token[RetryTokens::kMaxLen];
    size_t tokenlen = tokens_.make(token, hd.version, path.remote, scid, hd.dcid, now);
    if (tokenlen == 0) return;
    // One Retry per Initial and never larger than it (about 130 bytes against at least 1200):
    // answering a spoofed address gives an attacker no amplification.
    uint8_t* buf = ep.tx_buffer();
    ngtcp2_ssize n =
        ngtcp2_crypto_write_retry(buf, std::min(initial_len, UdpEndpoint::kMaxPacket), hd.version,
                                  &hd.scid, &scid, &hd.dcid, token, tokenlen);
    if (n <= 0) return;
    (void)ep.send(path, buf, static_cast<size_t>(n), static_cast<size_t>(n));
    ++retries_sent_;
}

void Listener::send_initial_close(UdpEndpoint& ep, const ngtcp2_path& path, const ngtcp2_pkt_hd& hd,
                                  uint64_t code, size_t initial_len) noexcept {
    // Stateless: sealed with the Initial keys derived from the client's DCID.
    uint8_t* buf = ep.tx_buffer();
    ngtcp2_ssize n =
        ngtcp2_crypto_write_connection_close(buf, std::min(initial_len, UdpEndpoint::kMaxPacket),
                                             hd.version, &hd.scid, &hd.dcid, code, nullptr, 0);
    if (n > 0) (void)ep.send(path, buf, static_cast<size_t>(n), static_cast<size_t>(n));
}

void Listener::send_version_negotiation(UdpEndpoint& ep, const ngtcp2_path& path,
                                        const ngtcp2_version_cid& vc) noexcept {
    const uint32_t versions[] = {NGTCP2_PROTO_VER_V1};
    uint8_t unused = 0;
    (void)gnutls_rnd(GNUTLS_RND_NONCE, &unused, 1);
    uint8_t* buf = ep.tx_buffer();
    ngtcp2_ssize n =
        ngtcp2_pkt_write_version_negotiation(buf, UdpEndpoint::kMaxPacket, unused, vc.scid,
                                             vc.scidlen, vc.dcid, vc.dcidlen, versions, 1);
    if (n > 0) (void)ep.send(path, buf, static_cast<size_t>(n), static_cast<size_t>(n));
}

void Listener::send_stateless_reset(UdpEndpoint& ep, const ngtcp2_path& path,
                                    const ngtcp2_version_cid& vc, size_t pktlen) noexcept {
    // Smaller than what triggered it (no reset loops), and never for tiny packets (RFC 9000
    // 10.3.3: a reset must be indistinguishable from a short-header packet).
    constexpr size_t kMinLen =
        NGTCP2_STATELESS_RESET_TOKENLEN + NGTCP2_MIN_STATELESS_RESET_RANDLEN + 1;
    if (pktlen <= kMinLen + 1) return;
    // A bounded number per second: resets cost a token derivation and answer spoofable input.
    int64_t now = core::now_ns();
    if (now - reset_window_start_ >= core::kNsPerSec) {
        reset_window_start_ = now;
        resets_in_window_ = 0;
    }
    if (resets_in_window_ >= kMaxResetsPerSecond) return;
    ++resets_in_window_;
    ngtcp2_cid cid;
    ngtcp2_cid_init(&cid, vc.dcid, vc.dcidlen);
    uint8_t token[NGTCP2_STATELESS_RESET_TOKENLEN];
    if (ngtcp2_crypto_generate_stateless_reset_token(token, secret_, sizeof secret_, &cid) != 0)
        return;
    size_t randlen = std::min<size_t>(pktlen - 1 - NGTCP2_STATELESS_RESET_TOKENLEN - 1, 40);
    uint8_t rnd[40];
    (void)gnutls_rnd(GNUTLS_RND_NONCE, rnd, randlen);
    uint8_t* buf = ep.tx_buffer();
    ngtcp2_ssize n =
        ngtcp2_pkt_write_stateless_reset(buf, UdpEndpoint::kMaxPacket, token, rnd, randlen);
    if (n > 0) {
        (void)ep.send(path, buf, static_cast<size_t>(n), static_cast<size_t>(n));
        ++resets_sent_;
    }
}

void Listener::on_read_batch_done(UdpEndpoint&) noexcept {}

void Listener::on_writable(UdpEndpoint&) noexcept {
    for (auto& [c, cids] : conns_) c->flush();
}

void Listener::on_cid_added(Connection& c, const ngtcp2_cid& cid) noexcept {
    CidKey k = CidKey::of(cid.data, cid.datalen);
    by_cid_[k] = &c;
    std::vector<CidKey>& ids = conns_[&c];
    // Room for the active IDs, a retiring one and the client's first DCID: no regrowth later.
    if (ids.capacity() == 0) ids.reserve(8);
    ids.push_back(k);
}

void Listener::on_cid_removed(Connection& c, const ngtcp2_cid& cid) noexcept {
    CidKey k = CidKey::of(cid.data, cid.datalen);
    auto it = by_cid_.find(k);
    if (it != by_cid_.end() && it->second == &c) by_cid_.erase(it);
    // The connection's own list forgets it too (swap with the last: order does not matter), so
    // a connection that migrates for days keeps as many IDs as it has active.
    auto owned = conns_.find(&c);
    if (owned == conns_.end()) return;
    std::vector<CidKey>& ids = owned->second;
    auto pos = std::find(ids.begin(), ids.end(), k);
    if (pos == ids.end()) return;
    *pos = ids.back();
    ids.pop_back();
}

void Listener::handshake_started() noexcept {
    ++handshaking_;
    if (cfg_.handshake_group != nullptr)
        cfg_.handshake_group->fetch_add(1, std::memory_order_relaxed);
}

void Listener::handshake_ended(Connection& c) noexcept {
    if (in_handshake_.erase(&c) == 0) return;
    --handshaking_;
    if (cfg_.handshake_group != nullptr)
        cfg_.handshake_group->fetch_sub(1, std::memory_order_relaxed);
}

void Listener::on_handshake_finished(Connection& c, bool ok) noexcept {
    handshake_ended(c);
    if (ok) {
        accept_.on_connection(c);
    } else {
        accept_.on_handshake_failed(c);
    }
}

void Listener::on_retired(Connection& c) noexcept {
    handshake_ended(c);
    auto it = conns_.find(&c);
    if (it == conns_.end()) return;
    for (const CidKey& k : it->second) {
        auto m = by_cid_.find(k);
        if (m != by_cid_.end() && m->second == &c) by_cid_.erase(m);
    }
    conns_.erase(it);
}

void Listener::on_migrated(Connection&, UdpEndpoint&) noexcept {}

// ---- Client dial --------------------------------------------------------------------------------

namespace {

// Owns a client connection's sockets; frees itself when the connection retires.
class ClientLink final : public DatagramSink, public ConnectionOwner {
public:
    ClientLink(core::Worker& w, const DialOptions& opts) noexcept : worker_(w), opts_(opts) {
        (void)gnutls_rnd(GNUTLS_RND_KEY, secret_, sizeof secret_);
    }

    Result<UdpEndpoint*> fresh_endpoint(const sockaddr* remote, socklen_t len) noexcept {
        sockaddr_storage any{};
        any.ss_family = remote->sa_family;
        socklen_t alen = remote->sa_family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in);
        auto ep = UdpEndpoint::bind(worker_, reinterpret_cast<sockaddr*>(&any), alen, *this,
                                    opts_.endpoint);
        if (!ep) return std::move(ep).error();
        if (auto r = (*ep)->connect_peer(remote, len); !r) {
            (*ep)->close();
            return std::move(r).error();
        }
        return *ep;
    }

    void on_datagram(UdpEndpoint& ep, const ngtcp2_path& path,
                     std::span<const uint8_t> data) noexcept override {
        if (conn_ != nullptr) conn_->feed(ep, path, data);
    }
    void on_read_batch_done(UdpEndpoint&) noexcept override {}
    void on_writable(UdpEndpoint&) noexcept override {
        if (conn_ != nullptr) conn_->flush();
    }
    void on_cid_added(Connection&, const ngtcp2_cid&) noexcept override {}
    void on_cid_removed(Connection&, const ngtcp2_cid&) noexcept override {}
    void on_handshake_finished(Connection&, bool) noexcept override {}
    void on_retired(Connection&) noexcept override {
        conn_ = nullptr;
        for (UdpEndpoint*& e : eps_) {
            if (e != nullptr) e->close();
            e = nullptr;
        }
        delete this;
    }
    void on_migrated(Connection& c, UdpEndpoint& old) noexcept override {
        c.forget_endpoint(old);
        for (UdpEndpoint*& e : eps_) {
            if (e == &old) e = nullptr;
        }
        old.close();
    }
    std::span<const uint8_t> reset_secret() const noexcept override { return secret_; }

    void add_endpoint(UdpEndpoint* ep) noexcept {
        for (UdpEndpoint*& e : eps_) {
            if (e == nullptr) {
                e = ep;
                return;
            }
        }
    }
    bool has_free_slot() const noexcept {
        for (UdpEndpoint* e : eps_) {
            if (e == nullptr) return true;
        }
        return false;
    }

    core::Worker& worker_;
    DialOptions opts_;
    Connection* conn_ = nullptr;
    UdpEndpoint* eps_[2] = {nullptr, nullptr};
    sockaddr_storage remote_{};
    socklen_t remote_len_ = 0;
    uint8_t secret_[32];
};

}  // namespace

Result<Connection*> dial(core::Worker& w, const sockaddr* remote, socklen_t remote_len,
                         const ClientTls& tls, ConnectionHandler& handler,
                         const DialOptions& opts) {
    if (remote_len > sizeof(sockaddr_storage)) return Error{EINVAL, "address too long"};
    auto* link = new ClientLink(w, opts);
    std::memcpy(&link->remote_, remote, remote_len);
    link->remote_len_ = remote_len;
    auto ep = link->fresh_endpoint(remote, remote_len);
    if (!ep) {
        delete link;
        return std::move(ep).error();
    }
    link->add_endpoint(*ep);
    auto c = Connection::create_client(w, *link, **ep, remote, remote_len, tls, opts.conn);
    if (!c) {
        (*ep)->close();
        delete link;
        return std::move(c).error();
    }
    link->conn_ = *c;
    (*c)->set_handler(&handler);
    return *c;
}

Result<void> rebind(Connection& c) noexcept {
    if (c.role() != Role::client) return Error{EINVAL, "rebind: not a client connection"};
    auto& link = static_cast<ClientLink&>(c.owner());
    if (!link.has_free_slot()) return Error{EBUSY, "rebind: a migration is still in progress"};
    auto ep = link.fresh_endpoint(reinterpret_cast<sockaddr*>(&link.remote_), link.remote_len_);
    if (!ep) return std::move(ep).error();
    link.add_endpoint(*ep);
    if (auto r = c.migrate(**ep); !r) {
        for (UdpEndpoint*& e : link.eps_) {
            if (e == *ep) e = nullptr;
        }
        (*ep)->close();
        return r;
    }
    return {};
}

}  // namespace runewarp::quic
