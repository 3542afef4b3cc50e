// StreamPump: relays one TCP socket and one QUIC stream both ways with flow control in both
// directions and no per-connection byte buffer of its own.
#include "relay/stream_pump.hh"

#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>

namespace runewarp::relay {

void wait_tcp(core::Session& owner, int fd, bool write, uint8_t read_op,
              uint8_t write_op) noexcept {
    if (owner.aborting()) return;
    if (write) {
        owner.poll(write_op, fd, POLLOUT);
    } else {
        owner.poll(read_op, fd, POLLIN | POLLRDHUP);
    }
}

namespace {

// Reads per readiness event before yielding to other connections; the wait completes again at
// once when more is queued (readiness is level-triggered).
constexpr int kReadsPerEvent = 8;
// Stream bytes arrive one QUIC packet (about 1200 bytes) at a time. The first piece of a loop
// iteration is sent at once (a lone request or response waits for nothing); further pieces
// smaller than this are gathered in the stream and written to the socket once per iteration:
// the writability wait completes only after every datagram of the current batch was processed,
// so a burst costs two send(2) calls instead of one per packet.
constexpr size_t kCoalesceBelow = 16 * 1024;
// A nearly full send ring is not read into: fewer than this many free bytes wait for ACKs.
constexpr size_t kMinRead = 16 * 1024;

void set_linger_reset(int fd) noexcept {
    linger l{1, 0};
    (void)::setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
}

}  // namespace

void StreamPump::start(StreamPumpOwner& owner, int fd, quic::Stream& stream) noexcept {
    owner_ = &owner;
    fd_ = fd;
    stream_ = &stream;
    stream.set_handler(this);
    want_read_ = true;
    arm();
    // Bytes that arrived before the handler was set are offered now.
    if (stream_ != nullptr) stream_->resume_read();
}

void StreamPump::arm() noexcept {
    if (finished_) return;
    if (want_read_ && !read_armed_) {
        read_armed_ = true;
        owner_->pump_wait_tcp(false);
    }
    if (want_write_ && !write_armed_) {
        write_armed_ = true;
        owner_->pump_wait_tcp(true);
    }
}

void StreamPump::on_tcp_ready(bool write, int revents) noexcept {
    (write ? write_armed_ : read_armed_) = false;
    if (finished_) return;
    if (revents < 0) {
        if (revents == -ECANCELED) return;
        return fail();
    }
    if (write) {
        want_write_ = false;
        // The socket takes bytes again (or a gathered burst is due): the stream offers what it
        // holds, and this time it goes out.
        flushing_ = true;
        if (stream_ != nullptr) stream_->resume_read();
        flushing_ = false;
    } else {
        want_read_ = false;
        read_tcp();
    }
    arm();
}

void StreamPump::read_tcp() noexcept {
    for (int i = 0; i < kReadsPerEvent && !finished_; ++i) {
        if (stream_ == nullptr) return fail();
        // Read straight into the stream's send ring (no copy through a scratch buffer), and
        // only when a worthwhile part of it is free: a nearly full ring waits for ACKs to free
        // a good share (on_stream_writable) instead of reading a few bytes per ACK.
        std::span<uint8_t> regions[2];
        size_t nv = stream_->write_regions(regions);
        size_t space = 0;
        iovec iov[2];
        for (size_t k = 0; k < nv; ++k) {
            iov[k] = iovec{regions[k].data(), regions[k].size()};
            space += regions[k].size();
        }
        if (space == 0 || (space < kMinRead && stream_->tx_buffered() > 0)) {
            blocked_on_stream_ = true;
            stream_->wait_writable();
            return;
        }
        msghdr msg{};
        msg.msg_iov = iov;
        msg.msg_iovlen = nv;
        ssize_t n = ::recvmsg(fd_, &msg, MSG_DONTWAIT);
        if (n > 0) {
            auto len = static_cast<size_t>(n);
            stream_->commit_write(len);
            to_stream_ += len;
            if (len < space) break;  // the socket is drained for now
            continue;
        }
        stream_->commit_write(0);
        if (n == 0) {
            // TCP FIN -> STREAM FIN in the same direction.
            tcp_eof_ = true;
            stream_->shutdown_write();
            return maybe_finished();
        }
        if (errno == EINTR) continue;
        if (errno == EAGAIN) break;  // EWOULDBLOCK == EAGAIN on Linux
        return fail();
    }
    if (!finished_ && !tcp_eof_ && !blocked_on_stream_) want_read_ = true;
}

size_t StreamPump::on_stream_data(quic::Stream& s, std::span<const uint8_t> data,
                                  bool fin) noexcept {
    if (finished_) return 0;
    if (!flushing_ && !fin && !data.empty() && data.size() < kCoalesceBelow) {
        // The first small piece of a batch goes out at once: a request or a response that fits
        // one packet costs one send and no wait (and no receive buffer in the stream). Later
        // pieces of the same batch are left in the stream (credit is withheld only until the
        // flush) and sent together once the loop has drained the batch.
        uint64_t it = s.connection().worker().iteration();
        if (it == direct_iteration_) {
            want_write_ = true;
            arm();
            return 0;
        }
        direct_iteration_ = it;
    }
    size_t taken = 0;
    while (taken < data.size()) {
        ssize_t n =
            ::send(fd_, data.data() + taken, data.size() - taken, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n > 0) {
            taken += static_cast<size_t>(n);
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == EAGAIN) {
            // The socket is full: keep the rest in the stream (withholding credit) until the
            // socket drains.
            to_tcp_ += taken;
            want_write_ = true;
            arm();
            return taken;
        }
        fail();
        return taken;
    }
    to_tcp_ += taken;
    if (fin && !stream_fin_) {
        // STREAM FIN -> shutdown(SHUT_WR) in the same direction.
        stream_fin_ = true;
        if (::shutdown(fd_, SHUT_WR) != 0 && errno != ENOTCONN) {
            fail();
            return taken;
        }
        maybe_finished();
    }
    return taken;
}

void StreamPump::on_stream_writable(quic::Stream&) noexcept {
    if (!blocked_on_stream_ || finished_) return;
    blocked_on_stream_ = false;
    read_tcp();
    arm();
}

void StreamPump::on_stream_reset(quic::Stream&, uint64_t) noexcept {
    // The peer aborted (RESET_STREAM or STOP_SENDING): abort the pair.
    fail();
}

void StreamPump::on_stream_closed(quic::Stream&, uint64_t code) noexcept {
    stream_ = nullptr;
    if (finished_) return;
    if (code != 0 || !(tcp_eof_ && stream_fin_)) {
        // The stream ended without both FINs (connection lost, reset): abort the TCP side.
        reset_ = true;
        set_linger_reset(fd_);
        finished_ = true;
        owner_->pump_finished(true);
    }
}

void StreamPump::maybe_finished() noexcept {
    if (finished_ || !(tcp_eof_ && stream_fin_)) return;
    finished_ = true;
    // The stream finishes on its own (data still waiting for acknowledgement stays with it);
    // it must not call back into a pump that is about to go away.
    if (stream_ != nullptr) {
        stream_->set_handler(nullptr);
        stream_ = nullptr;
    }
    owner_->pump_finished(false);
}

void StreamPump::fail() noexcept {
    if (finished_) return;
    finished_ = true;
    reset_ = true;
    if (stream_ != nullptr) {
        stream_->set_handler(nullptr);
        stream_->reset(quic::kStreamErrorCode);
        stream_ = nullptr;
    }
    if (fd_ >= 0) set_linger_reset(fd_);
    owner_->pump_finished(true);
}

void StreamPump::abort() noexcept {
    fail();
}

}  // namespace runewarp::relay
