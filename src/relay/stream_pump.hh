// StreamPump: relays one TCP socket and one QUIC stream both ways with flow control in both
// directions and no per-connection byte buffer of its own.
#pragma once

#include <cstdint>
#include <span>

#include "core/worker.hh"
#include "quic/connection.hh"

namespace runewarp::relay {

// What the owning session must do for the pump; the pump never submits loop ops itself, so the
// session's in-flight accounting and teardown rule stay in one place.
class StreamPumpOwner {
public:
    // Arm a one-shot readiness wait on the TCP socket: POLLIN|POLLRDHUP for tcp->stream
    // (write == false) or POLLOUT for stream->tcp (write == true), each with its own op so both
    // may be in flight; deliver the completion to StreamPump::on_tcp_ready(write, result).
    virtual void pump_wait_tcp(bool write) noexcept = 0;
    // Both directions finished cleanly (FIN each way), or `reset` when the pair was aborted.
    // Called at most once; the owner tears down (the stream may still be closing).
    virtual void pump_finished(bool reset) noexcept = 0;

protected:
    ~StreamPumpOwner() = default;
};

// What most owners do for pump_wait_tcp(): a one-shot poll on `fd` through their own Session,
// `read_op` for POLLIN|POLLRDHUP and `write_op` for POLLOUT (nothing once the owner aborts).
void wait_tcp(core::Session& owner, int fd, bool write, uint8_t read_op, uint8_t write_op) noexcept;

// TCP -> stream: a readable socket is read straight into the free part of the stream's bounded
// send ring (Stream::write_regions), and only once a worthwhile share of it is free; so bytes
// wait only in the kernel socket buffer or in the send ring (kept until acknowledged).
// Stream -> TCP: received bytes are sent to the socket directly from the stream's receive
// buffer; what the socket does not take stays there and withholds QUIC credit, which slows
// the sender. FIN maps to FIN in the same direction; any reset or error aborts both with
// RESET_STREAM + STOP_SENDING (code 1) and an abortive TCP close.
class StreamPump final : public quic::StreamHandler {
public:
    StreamPump() = default;
    StreamPump(const StreamPump&) = delete;
    StreamPump& operator=(const StreamPump&) = delete;

    // Starts both directions.
    void start(StreamPumpOwner& owner, int fd, quic::Stream& stream) noexcept;

    // The TCP readiness wait asked for by pump_wait_tcp() completed with `revents` (or -errno).
    void on_tcp_ready(bool write, int revents) noexcept;
    // Cut both directions (shutdown, limits): RESET_STREAM + abortive TCP close.
    void abort() noexcept;
    // The stream is gone for good (on_stream_closed ran, or the connection died).
    bool stream_gone() const noexcept { return stream_ == nullptr; }

    uint64_t bytes_to_stream() const noexcept { return to_stream_; }
    uint64_t bytes_to_tcp() const noexcept { return to_tcp_; }
    bool was_reset() const noexcept { return reset_; }

    // quic::StreamHandler
    size_t on_stream_data(quic::Stream& s, std::span<const uint8_t> data,
                          bool fin) noexcept override;
    void on_stream_writable(quic::Stream& s) noexcept override;
    void on_stream_reset(quic::Stream& s, uint64_t code) noexcept override;
    void on_stream_closed(quic::Stream& s, uint64_t code) noexcept override;

private:
    void read_tcp() noexcept;
    void arm() noexcept;
    void fail() noexcept;
    void maybe_finished() noexcept;

    StreamPumpOwner* owner_ = nullptr;
    quic::Stream* stream_ = nullptr;
    int fd_ = -1;
    uint64_t to_stream_ = 0;
    uint64_t to_tcp_ = 0;
    uint64_t direct_iteration_ = 0;   // worker iteration of the last uncoalesced small send
    bool tcp_eof_ = false;            // TCP read side ended; FIN queued on the stream
    bool stream_fin_ = false;         // stream FIN delivered to TCP as shutdown(SHUT_WR)
    bool want_read_ = false;          // tcp->stream waits for POLLIN
    bool want_write_ = false;         // stream->tcp waits for POLLOUT
    bool blocked_on_stream_ = false;  // tcp->stream waits for stream send space
    bool flushing_ = false;           // resume_read() on writability: send what the stream offers
    bool read_armed_ = false;
    bool write_armed_ = false;
    bool reset_ = false;
    bool finished_ = false;
};

}  // namespace runewarp::relay
