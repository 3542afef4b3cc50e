// Connection: one ngtcp2_conn (either role) with its TLS session, timer, streams and close states.
#pragma once

#include <ngtcp2/ngtcp2.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "core/worker.hh"
#include "quic/close_info.hh"
#include "quic/steering.hh"
#include "quic/stream.hh"
#include "quic/tls.hh"
#include "quic/udp_endpoint.hh"
#include "runewarp/result.hh"

namespace runewarp::quic {

enum class Role { server, client };

struct ConnectionConfig {
    uint64_t stream_window = 1'250'000;      // per-stream receive window (fixed)
    uint64_t conn_window = 16ull << 20;      // initial connection window
    uint64_t max_conn_window = 64ull << 20;  // auto-tuning ceiling
    int64_t idle_timeout_ns = 60 * core::kNsPerSec;
    int64_t keep_alive_ns = 20 * core::kNsPerSec;
    int64_t handshake_timeout_ns = 10 * core::kNsPerSec;
    size_t send_buffer = kStreamSendBuffer;
    // Client: the streams the Server may have open at once (initial_max_streams_bidi; ngtcp2
    // grants more as streams close). The Server grants none.
    uint64_t max_streams_bidi = 1024;
};

// The UDP payload sizes PMTUD tries, in order, once the handshake is confirmed: a 1500-byte
// Ethernet path over IPv6 and IPv4, a 9000-byte jumbo-frame path over IPv6 and IPv4, then larger
// sizes for loopback and large-MTU virtual links. A probe lost 3 times ends the search at the last
// acknowledged size; no data ever rides in a probe, so nothing is lost when one fails.
inline constexpr uint16_t kPmtudProbes[] = {1452, 1472, 8952, 8972, 16384, 32768, 64768};

// A client Initial that carried a valid Retry token: its DCID is the Retry's source CID, and the
// token names the DCID of the client's first Initial. ngtcp2 repeats both in the transport
// parameters, so the client knows no one else answered for the server.
struct ValidatedInitial {
    ngtcp2_cid original_dcid;
    std::span<const uint8_t> token;
};

// What the role sees of a connection.
class ConnectionHandler {
public:
    // Handshake finished and the peer is authenticated (server: the verifier admitted the
    // Client; client: the Server confirmed the handshake).
    virtual void on_established(Connection& c) noexcept = 0;
    // The peer opened `s` (client role): set a handler, or reset it.
    virtual void on_stream_opened(Connection& c, Stream& s) noexcept = 0;
    // Local stream credit grew: open_stream() may succeed again.
    virtual void on_streams_available(Connection& c) noexcept = 0;
    // The connection is unusable; its streams were closed just before. The Connection object
    // lingers through the closing/draining period and is then freed by its owner.
    virtual void on_closed(Connection& c, const CloseInfo& info) noexcept = 0;

protected:
    ~ConnectionHandler() = default;
};

// The listener or dialer that owns a connection: routing of connection IDs and its packets.
class ConnectionOwner {
public:
    virtual void on_cid_added(Connection& c, const ngtcp2_cid& cid) noexcept = 0;
    virtual void on_cid_removed(Connection& c, const ngtcp2_cid& cid) noexcept = 0;
    virtual void on_handshake_finished(Connection& c, bool ok) noexcept = 0;
    // The connection is finished for good; the owner frees it (not from inside this call).
    virtual void on_retired(Connection& c) noexcept = 0;
    // Client migration settled: `old` no longer carries this connection (the replaced socket,
    // or the new one when its path failed validation).
    virtual void on_migrated(Connection& c, UdpEndpoint& old) noexcept = 0;
    // Secret for stateless reset tokens.
    virtual std::span<const uint8_t> reset_secret() const noexcept = 0;
    // Server: the rule every connection ID the connection chooses must follow (its first
    // SCID and each one it issues in NEW_CONNECTION_ID), so that the owner's member of a steered
    // socket group receives the packets addressed to it. Clients choose freely (the default).
    virtual CidSteering cid_steering() const noexcept { return {}; }

protected:
    ~ConnectionOwner() = default;
};

class Connection final : public core::Session {
public:
    static constexpr size_t kCidLen = 16;

    // Server side: from an accepted Initial. `scid` is ours, `hd` the client's Initial header.
    // `validated` when the Initial carried a valid Retry token (else nullptr).
    static Result<Connection*> create_server(core::Worker& w, ConnectionOwner& owner,
                                             UdpEndpoint& ep, const ServerTls& tls,
                                             const ngtcp2_path& path, const ngtcp2_pkt_hd& hd,
                                             const ValidatedInitial* validated,
                                             const ConnectionConfig& cfg);
    // Client side: starts the handshake towards `remote` from ep.
    static Result<Connection*> create_client(core::Worker& w, ConnectionOwner& owner,
                                             UdpEndpoint& ep, const sockaddr* remote,
                                             socklen_t remote_len, const ClientTls& tls,
                                             const ConnectionConfig& cfg);

    Role role() const noexcept { return role_; }
    void set_handler(ConnectionHandler* h) noexcept { handler_ = h; }
    ConnectionHandler* handler() const noexcept { return handler_; }
    void* user_data() const noexcept { return user_; }
    void set_user_data(void* p) noexcept { user_ = p; }
    bool established() const noexcept { return established_; }
    bool closed() const noexcept { return state_ != State::open; }
    ngtcp2_conn* raw() noexcept { return conn_; }
    ConnectionOwner& owner() noexcept { return *owner_; }
    // The peer's leaf certificate (DER), for identity derivation after the handshake.
    std::span<const uint8_t> peer_certificate() const noexcept;
    const CloseInfo& close_info() const noexcept { return close_info_; }

    // Opens a bidirectional stream. Error code EAGAIN: no stream credit now, wait for
    // on_streams_available().
    Result<Stream*> open_stream(StreamHandler& h) noexcept;
    size_t stream_count() const noexcept { return streams_.size(); }
    // Connection-level send credit the peer has granted and we have not used.
    uint64_t peer_credit() const noexcept;

    // Application close (code 0 and a short reason, e.g. "graceful shutdown"); sends
    // CONNECTION_CLOSE now, then lingers for the closing period.
    void close(uint64_t app_code, std::string_view reason) noexcept;

    // Client: move to a new local socket (connection migration with path validation). The
    // endpoint must be connected to the same remote; the old one is released once validated.
    // If the new path fails validation, the connection returns to the old socket and the new
    // one is released (counted by failed_migrations()).
    Result<void> migrate(UdpEndpoint& ep) noexcept;
    uint64_t failed_migrations() const noexcept { return failed_migrations_; }
    UdpEndpoint* endpoint() const noexcept { return ep_; }
    // The endpoint dropped out (closed by its owner); packets are no longer sent through it.
    void forget_endpoint(UdpEndpoint& ep) noexcept;

    // Owner entry points. feed() processes one datagram; the reply is written in a batch when
    // the connection's timer fires (due at once) after the current completions.
    void feed(UdpEndpoint& ep, const ngtcp2_path& path, std::span<const uint8_t> pkt) noexcept;
    // Writes whatever is pending (ACKs, stream data, control frames) in GSO batches.
    void flush() noexcept;
    // Retires immediately without a closing period (owner shutdown).
    void terminate() noexcept;
    // The owner is going away: later owner notifications go nowhere. Call terminate() too.
    void orphan() noexcept;

    // Bytes buffered across streams (send + receive), for memory bounds.
    size_t buffered_bytes() const noexcept;

    // The peer has answered nothing for a while although we have packets in flight: no packet
    // received for kUnresponsiveNs (or 4 PTO if longer) since the later of the last received
    // packet and the first unacknowledged send. A killed peer whose NAT mapping vanished looks
    // like this long before the 60 s idle timeout closes the connection.
    static constexpr int64_t kUnresponsiveNs = 2'000'000'000;
    bool unresponsive(int64_t now_ns) const noexcept;
    // Client keep-alive while any stream is open (see update_keep_alive).
    static constexpr int64_t kBusyKeepAliveNs = 1'000'000'000;

    // For ngtcp2 trampolines (internal).
    struct Callbacks;

private:
    friend class Stream;
    friend struct Callbacks;
    enum class State : uint8_t { open, closing, draining, done };
    static constexpr uint8_t kOpTimer = 1;

    Connection(core::Worker& w, ConnectionOwner& owner, UdpEndpoint& ep, Role role,
               const ConnectionConfig& cfg) noexcept;
    friend struct std::default_delete<Connection>;
    ~Connection() override;
    void on_event(const core::Completion& c) noexcept override;
    void on_quiesced() noexcept override;

    Result<void> init_tls_server(const ServerTls& tls);
    Result<void> init_tls_client(const ClientTls& tls);
    void settings_and_params(ngtcp2_settings& s, ngtcp2_transport_params& p) const noexcept;
    // What both roles do once the ngtcp2_conn exists: attach the TLS session, set the keep-alive,
    // take a worker slot and route our first connection ID.
    Result<void> start(Result<TlsSession> t, const ngtcp2_cid& scid) noexcept;
    void update_timer() noexcept;
    void want_write() noexcept;
    void write_streams() noexcept;
    SendStatus send_batch(const ngtcp2_path& path, size_t len, size_t seg) noexcept;
    UdpEndpoint* endpoint_for(const ngtcp2_path& path) noexcept;
    void handle_error(int liberr) noexcept;
    void start_closing(const ngtcp2_ccerr& err) noexcept;
    void start_draining() noexcept;
    void finish(CloseInfo::Kind kind) noexcept;
    void notify_closed() noexcept;
    void close_all_streams() noexcept;
    void queue_stream(Stream& s) noexcept;
    void update_keep_alive() noexcept;
    Stream* stream(int64_t id) noexcept;
    Stream* add_stream(int64_t id) noexcept;
    // ngtcp2 closed stream `id` (both FINs, or a reset). A clean close that finds received
    // bytes (or the FIN) not yet taken by the handler keeps the stream until they are.
    void remove_stream(int64_t id, uint64_t code) noexcept;
    void drop_stream(int64_t id, uint64_t code) noexcept;
    // Streams ngtcp2 closed while their handler still had bytes to take, finished once taken
    // (or once the handler lets go or resets): checked at each flush.
    void finish_lingering_streams() noexcept;
    void after_processing() noexcept;
    void settle_migration() noexcept;

    ConnectionOwner* owner_;
    UdpEndpoint* ep_;
    UdpEndpoint* old_ep_ = nullptr;  // during migration
    Role role_;
    ConnectionConfig cfg_;
    ConnectionHandler* handler_ = nullptr;
    void* user_ = nullptr;
    ngtcp2_conn* conn_ = nullptr;
    TlsConnState tls_state_;
    TlsSession tls_;
    State state_ = State::open;
    bool established_ = false;
    bool handshake_pending_ = false;  // handshake finished inside ngtcp2; tell the handler after
    bool closed_notified_ = false;
    bool write_pending_ = false;
    bool migration_done_pending_ = false;
    bool migration_failed_pending_ = false;  // path validation failed: back to old_ep_
    bool streams_available_pending_ = false;
    bool close_pending_ = false;
    bool stateless_reset_ = false;
    bool hs_reported_ = false;
    uint64_t pending_close_code_ = 0;
    std::string pending_close_reason_;
    int in_ngtcp2_ = 0;
    core::TimerHandle timer_{};
    bool timer_armed_ = false;
    bool flush_scheduled_ = false;  // the timer is armed "now" for a pending write
    int64_t linger_deadline_ = 0;
    bool busy_keep_alive_ = false;
    int64_t last_rx_ns_ = 0;          // last packet the peer sent that ngtcp2 accepted
    int64_t in_flight_since_ns_ = 0;  // the last write round that began with nothing in flight
    std::vector<uint8_t> close_pkt_;  // CONNECTION_CLOSE to repeat during the closing period
    uint64_t close_answers_ = 0;
    uint64_t failed_migrations_ = 0;
    ngtcp2_path_storage close_ps_{};
    CloseInfo close_info_;
    std::unordered_map<int64_t, std::unique_ptr<Stream>> streams_;
    std::vector<Stream*> send_queue_;  // streams with unsent data, round-robin
    size_t send_rr_ = 0;
    // Closed streams wait here until no caller can be on their stack (freed at the next flush).
    std::vector<std::unique_ptr<Stream>> graveyard_;
    std::vector<int64_t> lingering_;  // ids of streams ngtcp2 closed before their bytes were taken
};

}  // namespace runewarp::quic
