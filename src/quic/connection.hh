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
#include "quic/tls.hh"
#include "quic/udp_endpoint.hh"
#include "runewarp/result.hh"

namespace runewarp::quic {

class Connection;
class Stream;

// Spec 5.2 / 5.9 constants.
inline constexpr uint64_t kStreamErrorCode = 1;          // every stream-level abort
inline constexpr uint64_t kAppCloseCode = 0;             // application close, all reasons
inline constexpr size_t kStreamSendBuffer = 256 * 1024;  // unacknowledged bytes per stream
inline constexpr uint64_t kCryptoErrorAccessDenied = NGTCP2_CRYPTO_ERROR | kAlertAccessDenied;

enum class Role { server, client };

struct ConnectionConfig {
    uint64_t stream_window = 1'250'000;      // per-stream receive window (fixed)
    uint64_t conn_window = 16ull << 20;      // initial connection window
    uint64_t max_conn_window = 64ull << 20;  // auto-tuning ceiling
    int64_t idle_timeout_ns = 60 * core::kNsPerSec;
    int64_t keep_alive_ns = 20 * core::kNsPerSec;
    int64_t handshake_timeout_ns = 10 * core::kNsPerSec;
    size_t send_buffer = kStreamSendBuffer;
};

// How a connection ended, as the application sees it.
struct CloseInfo {
    enum class Kind : uint8_t {
        local,         // we closed (close() or a local error): see code/reason
        remote,        // the peer sent CONNECTION_CLOSE
        idle_timeout,  // max_idle_timeout passed without traffic
        handshake_timeout,
        stateless_reset,  // the peer forgot us
        dropped,          // silently discarded (e.g. unusable first packet)
    };
    Kind kind = Kind::local;
    bool application = false;  // application close (else transport error code)
    uint64_t code = 0;         // e.g. 0x0131 = CRYPTO_ERROR access_denied
    std::string reason;
};

// One line for logs: "idle timeout", "closed by <peer> (application error 0x0): <reason>", ...
std::string describe_close(const CloseInfo& info, std::string_view peer);

// The relay side of one stream. Callbacks run on the worker thread, sometimes from inside
// ngtcp2 processing: they may call any Stream method (writes are queued and sent afterwards).
class StreamHandler {
public:
    // In-order bytes; `fin` when they end the stream (data may be empty then). Return how many
    // were taken; the rest stays buffered in the stream, bounded by the receive window because
    // credit is returned to the peer only for taken bytes. Call Stream::resume_read() to get
    // the rest offered again.
    virtual size_t on_stream_data(Stream& s, std::span<const uint8_t> data, bool fin) noexcept = 0;
    // The send buffer had been full and has room again (the peer acknowledged data).
    virtual void on_stream_writable(Stream& s) noexcept = 0;
    // The peer sent RESET_STREAM or STOP_SENDING with `code`.
    virtual void on_stream_reset(Stream& s, uint64_t code) noexcept = 0;
    // Both directions are finished (or the connection is gone). The Stream is freed after this
    // returns; `code` is the application error code if the stream was reset, else 0.
    virtual void on_stream_closed(Stream& s, uint64_t code) noexcept = 0;

protected:
    ~StreamHandler() = default;
};

class Stream {
public:
    ~Stream();
    Stream(const Stream&) = delete;
    Stream& operator=(const Stream&) = delete;
    int64_t id() const noexcept { return id_; }
    // The send ring is held only while bytes are unacknowledged (idle streams hold none).
    bool holds_send_ring() const noexcept { return tx_ != nullptr; }
    // The receive buffer is held only while the consumer has bytes left to take.
    bool holds_receive_buffer() const noexcept { return rx_ != nullptr; }
    Connection& connection() noexcept { return conn_; }
    void set_handler(StreamHandler* h) noexcept { handler_ = h; }
    void* user_data() const noexcept { return user_; }
    void set_user_data(void* p) noexcept { user_ = p; }

    // Copies as much of `data` as the bounded send buffer takes and returns that count. Less
    // than data.size() means the buffer is full: on_stream_writable() follows once the peer
    // acknowledges bytes. Data leaves as the stream and connection credit allow.
    size_t write(std::span<const uint8_t> data) noexcept;
    size_t write_space() const noexcept;
    // Zero-copy variant of write() for a producer that reads from a socket: the free part of
    // the send ring as up to two regions (v[0] first), or 0 regions when write() would take
    // nothing. Fill a prefix of them, then commit_write(n) with the count actually filled
    // (0 is allowed). The regions are valid until the next call on this stream.
    size_t write_regions(std::span<uint8_t> (&v)[2]) noexcept;
    void commit_write(size_t n) noexcept;
    // Asks for on_stream_writable() once a good share of the ring is free again, without
    // writing (a producer that does not want to read a few bytes at a time).
    void wait_writable() noexcept { want_writable_ = true; }
    // FIN after the bytes already written. Further writes are refused.
    void shutdown_write() noexcept;
    // Offers buffered received bytes to the handler again (after it returned less than given).
    void resume_read() noexcept;
    // Abort both directions: RESET_STREAM + STOP_SENDING with `code` (spec 5.9: always 1).
    void reset(uint64_t code = kStreamErrorCode) noexcept;

    // Whether the peer's stream credit stopped the last send (cleared when it grants more), and
    // how much stream credit is left now. Connection::peer_credit() is the connection's share.
    bool flow_blocked() const noexcept { return flow_blocked_; }
    uint64_t peer_credit() const noexcept;
    size_t tx_buffered() const noexcept { return static_cast<size_t>(end_ - acked_); }
    size_t rx_buffered() const noexcept { return rx_len_; }
    size_t rx_capacity() const noexcept { return rx_cap_; }
    bool fin_received() const noexcept { return fin_recv_; }
    uint64_t bytes_received() const noexcept { return recv_off_; }
    uint64_t bytes_acked() const noexcept { return acked_; }

private:
    friend class Connection;
    Stream(Connection& c, int64_t id, size_t send_cap) noexcept
        : conn_(c), id_(id), tx_cap_(send_cap) {}

    // Unsent bytes [sent_, end_) as up to two iovecs (the ring may wrap).
    size_t unsent(ngtcp2_vec* v) const noexcept;
    bool has_unsent() const noexcept { return sent_ < end_ || (fin_queued_ && !fin_sent_); }
    void on_acked(uint64_t offset, uint64_t len) noexcept;
    void on_data(std::span<const uint8_t> data, bool fin) noexcept;
    bool rx_push(std::span<const uint8_t> data) noexcept;
    void consume(size_t n) noexcept;

    Connection& conn_;
    int64_t id_;
    StreamHandler* handler_ = nullptr;
    void* user_ = nullptr;

    std::unique_ptr<uint8_t[]> tx_;  // ring of tx_cap_ bytes, allocated on first write
    size_t tx_cap_;
    uint64_t acked_ = 0;  // stream offsets: [acked_, sent_) in flight, [sent_, end_) unsent
    uint64_t sent_ = 0;
    uint64_t end_ = 0;
    bool fin_queued_ = false;
    bool fin_sent_ = false;
    bool want_writable_ = false;
    bool flow_blocked_ =
        false;             // ngtcp2 said STREAM_DATA_BLOCKED; cleared on extend_max_stream_data
    bool queued_ = false;  // in the connection's send queue

    std::unique_ptr<uint8_t[]> rx_;  // ring for bytes the handler has not taken yet
    size_t rx_cap_ = 0;
    size_t rx_head_ = 0;
    size_t rx_len_ = 0;
    uint64_t recv_off_ = 0;
    bool fin_recv_ = false;
    bool fin_delivered_ = false;
    bool reset_ = false;
    bool closed_ = false;
    bool delivering_ = false;
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
    // Client migration finished: `old` no longer carries this connection.
    virtual void on_migrated(Connection& c, UdpEndpoint& old) noexcept = 0;
    // Secret for stateless reset tokens.
    virtual std::span<const uint8_t> reset_secret() const noexcept = 0;

protected:
    ~ConnectionOwner() = default;
};

class Connection final : public core::Session {
public:
    static constexpr size_t kCidLen = 16;

    // Server side: from an accepted Initial. `scid` is ours, `hd` the client's Initial header.
    static Result<Connection*> create_server(core::Worker& w, ConnectionOwner& owner,
                                             UdpEndpoint& ep, const ServerTls& tls,
                                             const ngtcp2_path& path, const ngtcp2_pkt_hd& hd,
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

    // Application close (code 0 and a spec 5.9 reason, e.g. "graceful shutdown"); sends
    // CONNECTION_CLOSE now, then lingers for the closing period.
    void close(uint64_t app_code, std::string_view reason) noexcept;

    // Client: move to a new local socket (connection migration with path validation). The
    // endpoint must be connected to the same remote; the old one is released once validated.
    Result<void> migrate(UdpEndpoint& ep) noexcept;
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
    // like this long before the idle timeout (spec 5.2: 60 s) closes the connection.
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
    void remove_stream(int64_t id, uint64_t code) noexcept;
    void after_processing() noexcept;

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
    ngtcp2_path_storage close_ps_{};
    CloseInfo close_info_;
    std::unordered_map<int64_t, std::unique_ptr<Stream>> streams_;
    std::vector<Stream*> send_queue_;  // streams with unsent data, round-robin
    size_t send_rr_ = 0;
    // Closed streams wait here until no caller can be on their stack (freed at the next flush).
    std::vector<std::unique_ptr<Stream>> graveyard_;
};

}  // namespace runewarp::quic
