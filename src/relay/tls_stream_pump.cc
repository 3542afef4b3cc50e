// TlsStreamPump: a GnuTLS server session on a QUIC stream's bytes, relaying plaintext to TCP.
#include "relay/tls_stream_pump.hh"

#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <new>

namespace runewarp::relay {

namespace {

constexpr size_t kRecord = 16 * 1024;    // the largest TLS record plaintext
constexpr size_t kRecordOverhead = 512;  // header, IV, tag, MAC and padding of any suite
constexpr int kReadsPerEvent = 8;        // then yield to other connections
// A fatal handshake_failure alert in a plaintext record: what a Visitor gets when there is no
// certificate to answer with.
constexpr uint8_t kHandshakeFailureAlert[] = {0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28};

// One record of plaintext per worker thread: decrypted records and socket reads pass through
// it and are handed on at once; only what the other side does not take is copied into the
// pump's own buffers (allocated then, so an idle or flowing stream holds none).
uint8_t* scratch() noexcept {
    static thread_local std::unique_ptr<uint8_t[]> buf;
    if (!buf) buf.reset(new (std::nothrow) uint8_t[kRecord]);
    return buf.get();
}

// `len` bytes at `src` into `dst` (allocated on first use), which may overlap.
void keep(std::unique_ptr<uint8_t[]>& dst, const uint8_t* src, size_t len) noexcept {
    if (!dst) dst.reset(new (std::nothrow) uint8_t[kRecord]);
    if (dst && src != dst.get()) std::memmove(dst.get(), src, len);
}

void set_linger_reset(int fd) noexcept {
    linger l{1, 0};
    (void)::setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
}

}  // namespace

TlsStreamPump::~TlsStreamPump() {
    if (session_ != nullptr) gnutls_deinit(session_);
}

ssize_t TlsStreamPump::pull(gnutls_transport_ptr_t p, void* buf, size_t len) noexcept {
    auto* self = static_cast<TlsStreamPump*>(p);
    auto* out = static_cast<uint8_t*>(buf);
    if (self->initial_off_ < self->initial_.size()) {
        size_t n = std::min(len, self->initial_.size() - self->initial_off_);
        std::memcpy(out, self->initial_.data() + self->initial_off_, n);
        self->initial_off_ += n;
        return static_cast<ssize_t>(n);
    }
    if (self->in_used_ < self->in_.size()) {
        size_t n = std::min(len, self->in_.size() - self->in_used_);
        std::memcpy(out, self->in_.data() + self->in_used_, n);
        self->in_used_ += n;
        return static_cast<ssize_t>(n);
    }
    if (self->in_fin_ || self->initial_fin_) return 0;
    gnutls_transport_set_errno(self->session_, EAGAIN);
    return -1;
}

ssize_t TlsStreamPump::push(gnutls_transport_ptr_t p, const void* buf, size_t len) noexcept {
    auto* self = static_cast<TlsStreamPump*>(p);
    if (self->stream_ == nullptr) {
        gnutls_transport_set_errno(self->session_, EPIPE);
        return -1;
    }
    size_t n = self->stream_->write({static_cast<const uint8_t*>(buf), len});
    if (n == 0) {
        gnutls_transport_set_errno(self->session_, EAGAIN);
        return -1;
    }
    return static_cast<ssize_t>(n);
}

void TlsStreamPump::start_handshake(TlsStreamPumpOwner& owner, quic::Stream& stream,
                                    gnutls_session_t session, std::span<const uint8_t> initial,
                                    bool initial_fin) noexcept {
    owner_ = &owner;
    stream_ = &stream;
    session_ = session;
    stream.set_handler(this);
    initial_.assign(initial.begin(), initial.end());
    initial_fin_ = initial_fin;
    gnutls_transport_set_ptr(session_, this);
    gnutls_transport_set_pull_function(session_, &TlsStreamPump::pull);
    gnutls_transport_set_push_function(session_, &TlsStreamPump::push);
    // The owner's step timer bounds the handshake; GnuTLS keeps no clock of its own.
    gnutls_handshake_set_timeout(session_, GNUTLS_INDEFINITE_TIMEOUT);
    phase_ = Phase::kHandshake;
    run_handshake();
    // Bytes that arrived before the handler was set are offered now.
    if (phase_ == Phase::kHandshake && stream_ != nullptr) stream_->resume_read();
}

void TlsStreamPump::start_handshake_only(TlsStreamPumpOwner& owner, quic::Stream& stream,
                                         gnutls_session_t session, std::span<const uint8_t> initial,
                                         bool initial_fin) noexcept {
    handshake_only_ = true;
    start_handshake(owner, stream, session, initial, initial_fin);
}

void TlsStreamPump::start_refusal(TlsStreamPumpOwner& owner, quic::Stream& stream) noexcept {
    owner_ = &owner;
    stream_ = &stream;
    stream.set_handler(this);
    refuse(0);
}

void TlsStreamPump::run_handshake() noexcept {
    for (;;) {
        int r = gnutls_handshake(session_);
        if (r == GNUTLS_E_SUCCESS) break;
        if (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED) return;
        if (gnutls_error_is_fatal(r) == 0) continue;  // a warning alert: go on
        handshake_error_ = r;
        return refuse(r);
    }
    initial_.clear();
    initial_.shrink_to_fit();
    handshake_done_ = true;
    if (handshake_only_) return close_after_handshake();
    phase_ = Phase::kConnecting;
    owner_->tls_handshake_done();
}

void TlsStreamPump::close_after_handshake() noexcept {
    phase_ = Phase::kClosing;
    if (stream_ != nullptr) {
        // The validator closes as soon as it has seen the certificate (RFC 8737); a
        // close_notify that does not fit now is not worth waiting for: the FIN ends it anyway.
        (void)gnutls_bye(session_, GNUTLS_SHUT_WR);
        stream_->shutdown_write();
    }
    owner_->tls_handshake_done();
    if (phase_ != Phase::kClosing) return;  // the owner cut the pump
    if (stream_ == nullptr) return finish_clean();
    stream_->resume_read();
}

void TlsStreamPump::refuse(int error) noexcept {
    phase_ = Phase::kClosing;
    if (stream_ == nullptr) return finish_clean();
    if (session_ != nullptr && error != 0) {
        // The alert that fits the failure (none when the Visitor itself went away or alerted).
        if (error != GNUTLS_E_PREMATURE_TERMINATION && error != GNUTLS_E_FATAL_ALERT_RECEIVED) {
            (void)gnutls_alert_send_appropriate(session_, error);
        }
    } else if (error == 0) {
        (void)stream_->write(kHandshakeFailureAlert);
    }
    stream_->shutdown_write();
    // What the Visitor still sends is drained until the stream closes (the owner's timer bounds
    // the wait).
    stream_->resume_read();
}

void TlsStreamPump::start_relay(int fd) noexcept {
    if (phase_ != Phase::kConnecting) return;
    fd_ = fd;
    phase_ = Phase::kRelay;
    if (scratch() == nullptr) return fail();
    want_read_ = true;
    // Plaintext GnuTLS already decrypted (or can from bytes it holds) goes out first; then the
    // stream offers what waited during the backend connect.
    decrypt_to_tcp();
    arm();
    if (phase_ == Phase::kRelay && stream_ != nullptr) stream_->resume_read();
}

void TlsStreamPump::arm() noexcept {
    if (phase_ != Phase::kRelay) return;
    if (want_read_ && !read_armed_) {
        read_armed_ = true;
        owner_->pump_wait_tcp(false);
    }
    if (want_write_ && !write_armed_) {
        write_armed_ = true;
        owner_->pump_wait_tcp(true);
    }
}

void TlsStreamPump::on_tcp_ready(bool write, int revents) noexcept {
    (write ? write_armed_ : read_armed_) = false;
    if (phase_ != Phase::kRelay) return;
    if (revents < 0) {
        if (revents == -ECANCELED) return;
        return fail();
    }
    if (write) {
        want_write_ = false;
        if (!flush_plain_out()) return arm();
        decrypt_to_tcp();
        if (phase_ == Phase::kRelay && stream_ != nullptr) stream_->resume_read();
    } else {
        want_read_ = false;
        read_tcp();
    }
    arm();
}

bool TlsStreamPump::send_plain(const uint8_t* data, size_t len) noexcept {
    size_t off = 0;
    while (off < len) {
        ssize_t n = ::send(fd_, data + off, len - off, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n > 0) {
            off += static_cast<size_t>(n);
            to_tcp_ += static_cast<uint64_t>(n);
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == EAGAIN) {
            // The socket is full: keep the rest of the record until it drains.
            keep(plain_in_, data + off, len - off);
            if (!plain_in_) {
                fail();
                return false;
            }
            plain_in_off_ = 0;
            plain_in_len_ = len - off;
            want_write_ = true;
            return false;
        }
        fail();
        return false;
    }
    return true;
}

bool TlsStreamPump::flush_plain_out() noexcept {
    if (plain_in_off_ >= plain_in_len_) return true;
    const uint8_t* p = plain_in_.get() + plain_in_off_;
    size_t len = plain_in_len_ - plain_in_off_;
    plain_in_off_ = plain_in_len_ = 0;
    return send_plain(p, len);
}

void TlsStreamPump::decrypt_to_tcp() noexcept {
    while (phase_ == Phase::kRelay && !tls_eof_) {
        if (!flush_plain_out()) return;
        uint8_t* buf = scratch();
        ssize_t n = gnutls_record_recv(session_, buf, kRecord);
        if (n > 0) {
            if (!send_plain(buf, static_cast<size_t>(n))) return;
            continue;
        }
        if (n == 0 || n == GNUTLS_E_PREMATURE_TERMINATION) {
            // close_notify, or the stream's FIN without one: FIN to the backend.
            tls_eof_ = true;
            if (::shutdown(fd_, SHUT_WR) != 0 && errno != ENOTCONN) return fail();
            return maybe_finished();
        }
        if (n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED) return;
        if (gnutls_error_is_fatal(static_cast<int>(n)) == 0) continue;
        return fail();
    }
}

void TlsStreamPump::read_tcp() noexcept {
    int reads = 0;
    bool drained = false;
    while (phase_ == Phase::kRelay && !tcp_eof_) {
        if (stream_ == nullptr) return fail();
        const uint8_t* src = plain_out_.get();
        size_t len = plain_out_len_;
        if (len == 0) {
            if (drained || reads == kReadsPerEvent) break;
            // Read only as much plaintext as the send ring can take as one whole record, so the
            // ciphertext never has to wait inside GnuTLS.
            size_t space = stream_->write_space();
            if (space < 2 * kRecordOverhead ||
                (space < kRecord + kRecordOverhead && stream_->tx_buffered() > 0)) {
                blocked_on_stream_ = true;
                stream_->wait_writable();
                return;
            }
            size_t want = std::min(kRecord, space - kRecordOverhead);
            uint8_t* buf = scratch();
            ssize_t n = ::recv(fd_, buf, want, MSG_DONTWAIT);
            if (n == 0) {
                // TCP FIN -> close_notify and STREAM FIN.
                tcp_eof_ = true;
                (void)gnutls_bye(session_, GNUTLS_SHUT_WR);
                if (stream_ != nullptr) stream_->shutdown_write();
                return maybe_finished();
            }
            if (n < 0) {
                if (errno == EINTR) continue;
                if (errno == EAGAIN) break;
                return fail();
            }
            ++reads;
            src = buf;
            len = static_cast<size_t>(n);
            drained = len < want;  // the socket is empty for now
        }
        ssize_t r = gnutls_record_send(session_, src, len);
        if (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED) {
            // Retried with the same bytes once the stream has room.
            keep(plain_out_, src, len);
            if (!plain_out_) return fail();
            plain_out_len_ = len;
            blocked_on_stream_ = true;
            if (stream_ != nullptr) stream_->wait_writable();
            return;
        }
        if (r < 0) return fail();
        auto sent = static_cast<size_t>(r);
        to_stream_ += sent;
        plain_out_len_ = 0;
        if (sent < len) {
            // A smaller record size the Visitor asked for: the rest goes in the next record.
            keep(plain_out_, src + sent, len - sent);
            if (!plain_out_) return fail();
            plain_out_len_ = len - sent;
        }
    }
    if (phase_ == Phase::kRelay && !tcp_eof_ && !blocked_on_stream_) want_read_ = true;
}

size_t TlsStreamPump::on_stream_data(quic::Stream&, std::span<const uint8_t> data,
                                     bool fin) noexcept {
    switch (phase_) {
        case Phase::kHandshake: {
            in_ = data;
            in_used_ = 0;
            in_fin_ = fin;
            run_handshake();
            size_t used = in_used_;
            in_ = {};
            in_used_ = 0;
            in_fin_ = false;
            // Refused, failed or (handshake-only) answered: the rest is drained with this
            // delivery, FIN included, so the close does not wait for more bytes to arrive.
            if (phase_ == Phase::kClosing) return data.size();
            return used;
        }
        case Phase::kRelay: {
            if (tls_eof_) return data.size();  // nothing counts after close_notify
            if (plain_in_off_ < plain_in_len_) {
                want_write_ = true;  // the socket has not taken the last record yet
                arm();
                return 0;
            }
            in_ = data;
            in_used_ = 0;
            in_fin_ = fin;
            decrypt_to_tcp();
            size_t used = in_used_;
            in_ = {};
            in_used_ = 0;
            in_fin_ = false;
            arm();
            return used;
        }
        case Phase::kClosing:
            return data.size();
        case Phase::kIdle:
        case Phase::kConnecting:
        case Phase::kFinished:
            return 0;
    }
    return 0;
}

void TlsStreamPump::on_stream_writable(quic::Stream&) noexcept {
    if (!blocked_on_stream_ || phase_ != Phase::kRelay) return;
    blocked_on_stream_ = false;
    read_tcp();
    arm();
}

void TlsStreamPump::on_stream_reset(quic::Stream&, uint64_t) noexcept {
    if (phase_ == Phase::kClosing) return;  // the close completes with on_stream_closed
    fail();
}

void TlsStreamPump::on_stream_closed(quic::Stream&, uint64_t code) noexcept {
    stream_ = nullptr;
    if (phase_ == Phase::kFinished) return;
    if (phase_ == Phase::kClosing) return finish_clean();
    if (code != 0 || !(tcp_eof_ && tls_eof_)) {
        phase_ = Phase::kFinished;
        if (fd_ >= 0) set_linger_reset(fd_);
        owner_->pump_finished(true);
    }
}

void TlsStreamPump::finish_clean() noexcept {
    if (phase_ == Phase::kFinished) return;
    phase_ = Phase::kFinished;
    if (stream_ != nullptr) {
        stream_->set_handler(nullptr);
        stream_ = nullptr;
    }
    owner_->pump_finished(false);
}

void TlsStreamPump::maybe_finished() noexcept {
    if (phase_ != Phase::kRelay || !(tcp_eof_ && tls_eof_)) return;
    finish_clean();
}

void TlsStreamPump::fail() noexcept {
    if (phase_ == Phase::kFinished) return;
    phase_ = Phase::kFinished;
    if (stream_ != nullptr) {
        stream_->set_handler(nullptr);
        stream_->reset(quic::kStreamErrorCode);
        stream_ = nullptr;
    }
    if (fd_ >= 0) set_linger_reset(fd_);
    owner_->pump_finished(true);
}

void TlsStreamPump::abort() noexcept {
    fail();
}

}  // namespace runewarp::relay
