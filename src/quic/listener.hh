// Listener (server: Initial intake, CID routing, handshake admission) and dial (client).
#pragma once

#include <sys/socket.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <span>
#include <string_view>
#include <unordered_map>
#include <unordered_set>

#include "core/worker.hh"
#include "quic/connection.hh"
#include "quic/retry.hh"
#include "quic/steering.hh"
#include "quic/tls.hh"
#include "quic/udp_endpoint.hh"
#include "runewarp/result.hh"

namespace runewarp::quic {

// A connection ID as a map key (no allocation per lookup).
struct CidKey {
    uint8_t len = 0;
    std::array<uint8_t, NGTCP2_MAX_CIDLEN> data{};
    static CidKey of(const uint8_t* p, size_t n) noexcept;
    bool operator==(const CidKey& o) const noexcept {
        return len == o.len && std::equal(data.begin(), data.begin() + len, o.data.begin());
    }
};
struct CidHash {
    size_t operator()(const CidKey& k) const noexcept;
};

struct ListenerConfig {
    ConnectionConfig conn;
    EndpointOptions endpoint;
    size_t max_handshakes = 256;  // handshakes in flight; the newest Initial beyond is refused
    // The handshakes in flight of every listener of one tunnel UDP group (each on its own
    // worker), so the limit and the Retry threshold hold for the group; null: this listener's.
    // Listeners deciding at the same moment on different threads may pass the limit by one each.
    std::shared_ptr<std::atomic<size_t>> handshake_group;
    RetryPolicy retry = RetryPolicy::automatic;  // when an Initial must prove its address
    int64_t retry_token_lifetime_ns = 10 * core::kNsPerSec;
    int64_t retry_key_rotation_ns = 3600 * core::kNsPerSec;  // the previous key stays valid
    // Member `index` of a `count`-socket group steered by connection ID (steering.hh): every
    // connection ID this listener chooses (connections' own, Retry source IDs) has a first byte
    // b with b % count == index. {1, 0}: no steering. create()/adopt() refuse invalid values.
    CidSteering steering;
};

class AcceptHandler {
public:
    // An established connection whose Client the verifier admitted: take it over with
    // c.set_handler() (and usually c.set_user_data()) before returning.
    virtual void on_connection(Connection& c) noexcept = 0;
    // A handshake ended without an established connection (c.close_info() says why); `c`
    // retires right after.
    virtual void on_handshake_failed(const Connection& c) noexcept { (void)c; }
    // An Initial was refused with CONNECTION_REFUSED because `in_flight` handshakes (the limit)
    // were running; and a later Initial was admitted again (handshake_admitted). No state exists
    // for a refused Initial: these are for saturation logs.
    virtual void on_handshake_refused(size_t in_flight) noexcept { (void)in_flight; }
    virtual void on_handshake_admitted() noexcept {}

protected:
    ~AcceptHandler() = default;
};

class Listener final : private DatagramSink, private ConnectionOwner {
public:
    static Result<std::unique_ptr<Listener>> create(core::Worker& w, const sockaddr* addr,
                                                    socklen_t len, const ServerTls& tls,
                                                    AcceptHandler& accept,
                                                    const ListenerConfig& cfg = {});
    // The same on an already bound UDP socket (socket activation `tunnel`).
    static Result<std::unique_ptr<Listener>> adopt(core::Worker& w, core::UniqueFd fd,
                                                   const ServerTls& tls, AcceptHandler& accept,
                                                   const ListenerConfig& cfg = {});
    // Drops every connection at once (no closing period) and closes the socket.
    ~Listener();
    Listener(const Listener&) = delete;
    Listener& operator=(const Listener&) = delete;

    UdpEndpoint& endpoint() noexcept { return *ep_; }
    size_t connection_count() const noexcept { return conns_.size(); }
    size_t handshakes() const noexcept { return handshaking_; }
    // What the limit is checked against: the group's handshakes, or this listener's.
    size_t handshakes_counted() const noexcept {
        return cfg_.handshake_group != nullptr
                   ? cfg_.handshake_group->load(std::memory_order_relaxed)
                   : handshaking_;
    }
    uint64_t refused() const noexcept { return refused_; }
    // Retry packets sent, and Initials answered with INVALID_TOKEN (forged, foreign or expired
    // Retry token).
    uint64_t retries() const noexcept { return retries_sent_; }
    uint64_t tokens_rejected() const noexcept { return tokens_rejected_; }
    uint64_t retry_key_rotations() const noexcept { return tokens_.rotations(); }
    uint64_t stateless_resets() const noexcept { return resets_sent_; }
    // Connection IDs the listener routes to `c` (its own, plus the client's first DCID while in
    // use), and to all connections: bounded by the active connection ID limit, not by history.
    size_t cid_count(const Connection& c) const noexcept;
    size_t routed_cids() const noexcept { return by_cid_.size(); }
    // Those connection IDs themselves (valid until the listener next runs).
    std::span<const CidKey> cids(const Connection& c) const noexcept;
    CidSteering steering() const noexcept { return cfg_.steering; }
    // Application close of every connection (e.g. code 0, "graceful shutdown").
    void close_all(uint64_t app_code, std::string_view reason) noexcept;

private:
    Listener(core::Worker& w, const ServerTls& tls, AcceptHandler& accept,
             const ListenerConfig& cfg) noexcept;

    void on_datagram(UdpEndpoint& ep, const ngtcp2_path& path,
                     std::span<const uint8_t> data) noexcept override;
    void on_read_batch_done(UdpEndpoint& ep) noexcept override;
    void on_writable(UdpEndpoint& ep) noexcept override;

    void on_cid_added(Connection& c, const ngtcp2_cid& cid) noexcept override;
    void on_cid_removed(Connection& c, const ngtcp2_cid& cid) noexcept override;
    void on_handshake_finished(Connection& c, bool ok) noexcept override;
    void on_retired(Connection& c) noexcept override;
    void on_migrated(Connection& c, UdpEndpoint& old) noexcept override;
    std::span<const uint8_t> reset_secret() const noexcept override { return secret_; }
    CidSteering cid_steering() const noexcept override { return cfg_.steering; }

    void handshake_started() noexcept;
    void handshake_ended(Connection& c) noexcept;
    void accept_initial(UdpEndpoint& ep, const ngtcp2_path& path,
                        std::span<const uint8_t> data) noexcept;
    bool wants_retry() const noexcept;
    void send_retry(UdpEndpoint& ep, const ngtcp2_path& path, const ngtcp2_pkt_hd& hd,
                    size_t initial_len, int64_t now) noexcept;
    void send_initial_close(UdpEndpoint& ep, const ngtcp2_path& path, const ngtcp2_pkt_hd& hd,
                            uint64_t code, size_t initial_len) noexcept;
    void send_version_negotiation(UdpEndpoint& ep, const ngtcp2_path& path,
                                  const ngtcp2_version_cid& vc) noexcept;
    void send_stateless_reset(UdpEndpoint& ep, const ngtcp2_path& path,
                              const ngtcp2_version_cid& vc, size_t pktlen) noexcept;

    core::Worker& worker_;
    const ServerTls& tls_;
    AcceptHandler& accept_;
    ListenerConfig cfg_;
    UdpEndpoint* ep_ = nullptr;
    uint8_t secret_[32];
    std::unordered_map<CidKey, Connection*, CidHash> by_cid_;
    std::unordered_map<Connection*, std::vector<CidKey>> conns_;
    std::unordered_set<Connection*> in_handshake_;
    size_t handshaking_ = 0;
    uint64_t refused_ = 0;
    uint64_t resets_sent_ = 0;
    RetryTokens tokens_;
    uint64_t retries_sent_ = 0;
    uint64_t tokens_rejected_ = 0;
    static constexpr uint32_t kMaxResetsPerSecond = 256;
    int64_t reset_window_start_ = 0;
    uint32_t resets_in_window_ = 0;
};

struct DialOptions {
    ConnectionConfig conn;
    EndpointOptions endpoint;
};

// Client: a fresh ephemeral UDP socket (family of `remote`) connected to `remote`, and a client
// connection on it. The handler learns everything (on_established, on_closed); the connection
// and its sockets are freed after its closing/draining period.
Result<Connection*> dial(core::Worker& w, const sockaddr* remote, socklen_t remote_len,
                         const ClientTls& tls, ConnectionHandler& handler,
                         const DialOptions& opts = {});

// Client: moves an established client connection (from dial()) to a fresh UDP socket with a new
// ephemeral port (connection migration); the old socket is closed once the new path
// is validated. Error code EAGAIN: the server has not yet issued a spare connection ID (it does a
// round trip after the previous migration); EBUSY: the previous migration is still validating.
Result<void> rebind(Connection& c) noexcept;

}  // namespace runewarp::quic
