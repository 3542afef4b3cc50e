// TlsStreamPump: terminates a Visitor's TLS carried on a QUIC stream with a GnuTLS server session
// and relays the plaintext to a TCP socket, both ways, with flow control in both directions.
#pragma once

#include <gnutls/gnutls.h>

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "quic/connection.hh"
#include "relay/stream_pump.hh"

namespace runewarp::relay {

class TlsStreamPumpOwner : public StreamPumpOwner {
public:
    // The handshake completed: connect the backend, then call start_relay(). Until then the
    // pump takes no stream bytes (they wait in the stream, withholding credit). In
    // handshake-only mode the pump is already closing the stream: there is nothing to connect.
    virtual void tls_handshake_done() noexcept = 0;

protected:
    ~TlsStreamPumpOwner() = default;
};

// Phases: handshake (the bytes already taken from the stream, the ClientHello, are fed first)
// -> waiting for the backend -> relay. A refused or failed handshake is answered with a fatal
// alert and a FIN (a clean close the Visitor sees as a handshake failure); the pump then drains
// what the Visitor still sends until the stream closes, and reports pump_finished(false).
// Any other failure resets the stream (code 1) and closes the TCP side abortively.
//
// Stream -> TCP: ciphertext is pulled by GnuTLS from the span the stream offers; each decrypted
// record goes to the socket at once; what the socket does not take is kept (one record at most)
// and no further stream bytes are taken until it is written. TCP -> stream: at most one TLS
// record of plaintext is read when the stream's send ring has room for the whole record, so
// GnuTLS never has to hold ciphertext back. Records pass through a per-thread buffer; a stream
// gets buffers of its own only when a side does not take a whole record.
class TlsStreamPump final : public quic::StreamHandler {
public:
    TlsStreamPump() = default;
    TlsStreamPump(const TlsStreamPump&) = delete;
    TlsStreamPump& operator=(const TlsStreamPump&) = delete;
    ~TlsStreamPump();

    // Takes ownership of `session` (a GnuTLS server session with its credentials set; the pump
    // installs its own transport) and of the stream. `initial` is copied; `initial_fin` when the
    // stream's FIN came with it.
    void start_handshake(TlsStreamPumpOwner& owner, quic::Stream& stream, gnutls_session_t session,
                         std::span<const uint8_t> initial, bool initial_fin) noexcept;
    // Handshake-only mode (a TLS-ALPN-01 challenge answer, RFC 8737): the same handshake, and
    // once it completed a close_notify and a FIN instead of a relay; tls_handshake_done() is
    // reported, then what the peer still sends is drained until the stream closes and
    // pump_finished(false) follows. A failed handshake ends as in start_handshake.
    void start_handshake_only(TlsStreamPumpOwner& owner, quic::Stream& stream,
                              gnutls_session_t session, std::span<const uint8_t> initial,
                              bool initial_fin) noexcept;
    // Answers with a fatal handshake_failure alert and a FIN without running a handshake (no
    // certificate for the hostname).
    void start_refusal(TlsStreamPumpOwner& owner, quic::Stream& stream) noexcept;
    // The backend is connected (and any PROXY header written): relay plaintext on `fd`.
    void start_relay(int fd) noexcept;

    void on_tcp_ready(bool write, int revents) noexcept;
    // Cut both directions: RESET_STREAM + abortive TCP close.
    void abort() noexcept;

    bool handshake_complete() const noexcept { return handshake_done_; }
    // The GnuTLS error that ended the handshake (0 when none did).
    int handshake_error() const noexcept { return handshake_error_; }
    // Set once the handshake completed; valid until the pump is destroyed.
    gnutls_session_t session() const noexcept { return session_; }
    uint64_t bytes_to_stream() const noexcept { return to_stream_; }
    uint64_t bytes_to_tcp() const noexcept { return to_tcp_; }

    // quic::StreamHandler
    size_t on_stream_data(quic::Stream& s, std::span<const uint8_t> data,
                          bool fin) noexcept override;
    void on_stream_writable(quic::Stream& s) noexcept override;
    void on_stream_reset(quic::Stream& s, uint64_t code) noexcept override;
    void on_stream_closed(quic::Stream& s, uint64_t code) noexcept override;

private:
    enum class Phase : uint8_t { kIdle, kHandshake, kConnecting, kRelay, kClosing, kFinished };

    static ssize_t pull(gnutls_transport_ptr_t p, void* buf, size_t len) noexcept;
    static ssize_t push(gnutls_transport_ptr_t p, const void* buf, size_t len) noexcept;

    void run_handshake() noexcept;
    void refuse(int alert_error) noexcept;
    // Handshake-only mode: close_notify and FIN after the handshake, then drain.
    void close_after_handshake() noexcept;
    // Decrypts what GnuTLS holds or can pull and writes it to the socket.
    void decrypt_to_tcp() noexcept;
    bool flush_plain_out() noexcept;
    // Sends plaintext to the socket; what it does not take is kept (false then).
    bool send_plain(const uint8_t* data, size_t len) noexcept;
    void read_tcp() noexcept;
    void arm() noexcept;
    void fail() noexcept;
    void maybe_finished() noexcept;
    void finish_clean() noexcept;

    TlsStreamPumpOwner* owner_ = nullptr;
    quic::Stream* stream_ = nullptr;
    gnutls_session_t session_ = nullptr;
    int fd_ = -1;
    Phase phase_ = Phase::kIdle;
    int handshake_error_ = 0;
    bool handshake_only_ = false;
    bool handshake_done_ = false;

    // Ciphertext GnuTLS may pull: the initial bytes, then the span the stream offers now.
    std::vector<uint8_t> initial_;
    size_t initial_off_ = 0;
    bool initial_fin_ = false;
    std::span<const uint8_t> in_{};
    size_t in_used_ = 0;
    bool in_fin_ = false;

    // Plaintext one side did not take yet, one TLS record at most each; allocated the first
    // time it happens (records pass through a per-thread buffer otherwise).
    std::unique_ptr<uint8_t[]> plain_in_;  // decrypted, waiting for the socket
    size_t plain_in_off_ = 0;
    size_t plain_in_len_ = 0;
    std::unique_ptr<uint8_t[]> plain_out_;  // read from the socket, waiting for GnuTLS
    size_t plain_out_len_ = 0;              // a record_send that returned AGAIN (retried as is)

    uint64_t to_stream_ = 0;
    uint64_t to_tcp_ = 0;
    bool tcp_eof_ = false;            // TCP read side ended; close_notify and FIN queued
    bool tls_eof_ = false;            // Visitor's close_notify or FIN delivered as SHUT_WR
    bool want_read_ = false;          // tcp->stream waits for POLLIN
    bool want_write_ = false;         // stream->tcp waits for POLLOUT
    bool blocked_on_stream_ = false;  // tcp->stream waits for stream send space
    bool read_armed_ = false;
    bool write_armed_ = false;
};

}  // namespace runewarp::relay
