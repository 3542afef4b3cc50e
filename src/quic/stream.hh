// Stream: one bidirectional QUIC stream's bounded send ring and receive buffer, and its handler.
#pragma once

#include <ngtcp2/ngtcp2.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>

namespace runewarp::quic {

class Connection;
class Stream;

inline constexpr uint64_t kStreamErrorCode = 1;          // every stream-level abort
inline constexpr size_t kStreamSendBuffer = 256 * 1024;  // unacknowledged bytes per stream

// A stream buffer with a mapping of its own (see stream.cc): freeing it gives its pages back to
// the kernel at once, whatever else the heap holds.
struct MappedBytesFree {
    size_t len = 0;
    void operator()(uint8_t* p) const noexcept;
};
using MappedBytes = std::unique_ptr<uint8_t[], MappedBytesFree>;

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
    void set_handler(StreamHandler* h) noexcept;
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
    // Abort both directions: RESET_STREAM + STOP_SENDING with `code` (the tunnel always uses 1).
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
    // Received bytes (or the FIN) the handler has not taken yet.
    bool undelivered() const noexcept { return rx_len_ > 0 || (fin_recv_ && !fin_delivered_); }

    Connection& conn_;
    int64_t id_;
    StreamHandler* handler_ = nullptr;
    void* user_ = nullptr;

    MappedBytes tx_;  // ring of tx_cap_ bytes, mapped on first write
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

    MappedBytes rx_;  // ring for bytes the handler has not taken yet
    size_t rx_cap_ = 0;
    size_t rx_head_ = 0;
    size_t rx_len_ = 0;
    uint64_t recv_off_ = 0;
    bool fin_recv_ = false;
    bool fin_delivered_ = false;
    bool reset_ = false;
    bool closed_ = false;
    bool transport_closed_ = false;  // ngtcp2 closed it; only undelivered bytes keep it here
    bool delivering_ = false;
};

}  // namespace runewarp::quic
