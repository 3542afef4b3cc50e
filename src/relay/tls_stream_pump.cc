// TlsStreamPump: a GnuTLS server session on a QUIC stream's bytes, relaying plaintext to TCP.
#include "relay/tls_stream_pump.hh"

#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace runewarp::relay {

namespace {

constexpr size_t kRecord = 16 * 1024;    // the largest TLS record plaintext
constexpr size_t kRecordOverhead = 512;  // header, IV, tag, MAC and padding of any suite
constexpr int kReadsPerEvent = 8;        // then yield to other connections
// A fatal handshake_failure alert in a plaintext record: what a Visitor gets when there is no
// certificate to answer with.
constexpr uint8_t kHandshakeFailureAlert[] = {0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28};

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
    phase_ = Phase::kConnecting;
    owner_->tls_handshake_done();
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
    plain_in_ = std::make_unique<uint8_t[]>(kRecord);
    plain_out_ = std::make_unique<uint8_t[]>(kRecord);
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

bool TlsStreamPump::flush_plain_out() noexcept {
    while (plain_in_off_ < plain_in_len_) {
        ssize_t n = ::send(fd_, plain_in_.get() + plain_in_off_, plain_in_len_ - plain_in_off_,
                           MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n > 0) {
            plain_in_off_ += static_cast<size_t>(n);
            to_tcp_ += static_cast<uint64_t>(n);
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == EAGAIN) {
            want_write_ = true;
            return false;
        }
        fail();
        return false;
    }
    plain_in_off_ = plain_in_len_ = 0;
    return true;
}

void TlsStreamPump::decrypt_to_tcp() noexcept {
    while (phase_ == Phase::kRelay && !tls_eof_) {
        if (!flush_plain_out()) return;
        ssize_t n = gnutls_record_recv(session_, plain_in_.get(), kRecord);
        if (n > 0) {
            plain_in_off_ = 0;
            plain_in_len_ = static_cast<size_t>(n);
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
        if (plain_out_len_ == 0) {
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
            ssize_t n = ::recv(fd_, plain_out_.get(), want, MSG_DONTWAIT);
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
            plain_out_len_ = static_cast<size_t>(n);
            drained = plain_out_len_ < want;  // the socket is empty for now
        }
        ssize_t r = gnutls_record_send(session_, plain_out_.get(), plain_out_len_);
        if (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED) {
            // Retried with the same bytes once the stream has room.
            blocked_on_stream_ = true;
            if (stream_ != nullptr) stream_->wait_writable();
            return;
        }
        if (r < 0) return fail();
        auto sent = static_cast<size_t>(r);
        to_stream_ += sent;
        if (sent < plain_out_len_) {
            // A smaller record size the Visitor asked for: the rest goes in the next record.
            std::memmove(plain_out_.get(), plain_out_.get() + sent, plain_out_len_ - sent);
        }
        plain_out_len_ -= sent;
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
