// Stream: send ring freed by ACKs, receive buffer credited only for consumed bytes, buffer pools.
#include "quic/stream.hh"

#include <sys/mman.h>

#include <algorithm>
#include <cstring>
#include <new>
#include <vector>

#include "quic/connection.hh"

namespace runewarp::quic {

void MappedBytesFree::operator()(uint8_t* p) const noexcept {
    if (p != nullptr) ::munmap(p, len);
}

size_t Stream::write_space() const noexcept {
    if (reset_ || fin_queued_ || closed_) return 0;
    return tx_cap_ - static_cast<size_t>(end_ - acked_);
}

namespace {

// Per-worker pools of stream buffers (a Worker runs on one thread, hence thread_local): a stream
// holds its send ring (256 KiB) or receive buffer (one window) only while it has bytes in it, so
// an idle stream costs no buffer (idle connections must stay cheap), and a busy worker reuses
// buffers instead of mapping one per burst. Only buffers of the pool's size are kept.
//
// Each buffer is a mapping of its own rather than heap memory: after a burst of thousands of
// streams, freed heap chunks would keep every page a ClientHello once touched resident (the
// allocator returns only the top of its heap, and it serves large sizes from the heap once one
// such chunk was freed), and idle streams would appear to cost tens of KiB each.
struct BufferPool {
    size_t size;
    size_t max_kept;
    std::vector<MappedBytes> kept{};

    MappedBytes take(size_t cap) noexcept {
        if (cap == size && !kept.empty()) {
            auto r = std::move(kept.back());
            kept.pop_back();
            return r;
        }
        void* p = ::mmap(nullptr, cap, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) return MappedBytes(nullptr, MappedBytesFree{0});
        return MappedBytes(static_cast<uint8_t*>(p), MappedBytesFree{cap});
    }
    void give(MappedBytes r, size_t cap) noexcept {
        if (r && cap == size && kept.size() < max_kept) kept.push_back(std::move(r));
    }
};

thread_local BufferPool t_tx_pool{kStreamSendBuffer, 64};

// A writer that found the send ring full is woken when at least 1/kWritableFraction is free.
constexpr size_t kWritableFraction = 4;
thread_local BufferPool t_rx_pool{ConnectionConfig{}.stream_window, 16};

}  // namespace

Stream::~Stream() {
    t_tx_pool.give(std::move(tx_), tx_cap_);
    t_rx_pool.give(std::move(rx_), rx_cap_);
}

size_t Stream::write(std::span<const uint8_t> data) noexcept {
    std::span<uint8_t> v[2];
    size_t nv = write_regions(v);
    size_t n = 0;
    for (size_t k = 0; k < nv && n < data.size(); ++k) {
        size_t c = std::min(v[k].size(), data.size() - n);
        std::memcpy(v[k].data(), data.data() + n, c);
        n += c;
    }
    if (n < data.size()) want_writable_ = true;
    commit_write(n);
    return n;
}

size_t Stream::write_regions(std::span<uint8_t> (&v)[2]) noexcept {
    size_t space = conn_.closed() ? 0 : write_space();
    if (space == 0) {
        want_writable_ = true;
        return 0;
    }
    if (!tx_) {
        tx_ = t_tx_pool.take(tx_cap_);
        if (!tx_) return 0;
    }
    size_t pos = static_cast<size_t>(end_ % tx_cap_);
    size_t first = std::min(space, tx_cap_ - pos);
    v[0] = std::span<uint8_t>(tx_.get() + pos, first);
    if (space == first) return 1;
    v[1] = std::span<uint8_t>(tx_.get(), space - first);
    return 2;
}

void Stream::commit_write(size_t n) noexcept {
    if (n == 0) {
        // Nothing came: a ring that holds nothing in flight goes back to the pool.
        if (acked_ == end_ && sent_ == end_ && tx_) t_tx_pool.give(std::move(tx_), tx_cap_);
        return;
    }
    end_ += std::min(n, write_space());
    conn_.queue_stream(*this);
    conn_.want_write();
}

uint64_t Stream::peer_credit() const noexcept {
    if (closed_ || reset_ || transport_closed_ || conn_.closed()) return 0;
    return ngtcp2_conn_get_max_stream_data_left(conn_.conn_, id_);
}

size_t Stream::unsent(ngtcp2_vec* v) const noexcept {
    size_t len = static_cast<size_t>(end_ - sent_);
    if (len == 0) return 0;
    size_t pos = static_cast<size_t>(sent_ % tx_cap_);
    size_t first = std::min(len, tx_cap_ - pos);
    v[0] = ngtcp2_vec{tx_.get() + pos, first};
    if (len == first) return 1;
    v[1] = ngtcp2_vec{tx_.get(), len - first};
    return 2;
}

void Stream::on_acked(uint64_t offset, uint64_t len) noexcept {
    // ngtcp2 reports acknowledged data in order; the ring slots before `acked_` are free again.
    acked_ = std::max(acked_, std::min(offset + len, end_));
    // Everything written was sent and acknowledged: ngtcp2 no longer points into the ring.
    if (acked_ == end_ && sent_ == end_ && tx_) t_tx_pool.give(std::move(tx_), tx_cap_);
    // Wake the writer only once a worthwhile share of the ring is free (or all of it): ACKs
    // arrive every packet or two, and waking per ACK made the TCP side read a few KiB at a time.
    if (want_writable_ && (write_space() >= tx_cap_ / kWritableFraction || acked_ == end_)) {
        want_writable_ = false;
        if (handler_ != nullptr) handler_->on_stream_writable(*this);
    }
}

void Stream::shutdown_write() noexcept {
    if (fin_queued_ || reset_ || closed_) return;
    fin_queued_ = true;
    conn_.queue_stream(*this);
    conn_.want_write();
}

void Stream::set_handler(StreamHandler* h) noexcept {
    handler_ = h;
    // A stream ngtcp2 already closed is finished at the next flush once nobody reads it.
    if (h == nullptr && transport_closed_) conn_.want_write();
}

void Stream::reset(uint64_t code) noexcept {
    if (reset_ || closed_) return;
    reset_ = true;
    want_writable_ = false;
    // A stream ngtcp2 already closed has nothing left to abort on the wire.
    if (!conn_.closed() && !transport_closed_)
        ngtcp2_conn_shutdown_stream(conn_.conn_, 0, id_, code);
    conn_.want_write();
}

void Stream::consume(size_t n) noexcept {
    if (n == 0 || conn_.closed()) return;
    // Credit goes back to the peer only for bytes the consumer took: a slow consumer slows the
    // sender instead of growing a buffer here. A stream ngtcp2 closed needs no stream credit,
    // but the connection's window still counts its bytes.
    if (!transport_closed_) ngtcp2_conn_extend_max_stream_offset(conn_.conn_, id_, n);
    ngtcp2_conn_extend_max_offset(conn_.conn_, n);
    conn_.want_write();
}

bool Stream::rx_push(std::span<const uint8_t> data) noexcept {
    if (data.empty()) return true;
    if (!rx_) {
        // The window bounds what the peer may send beyond what we consumed.
        rx_cap_ = static_cast<size_t>(conn_.cfg_.stream_window);
        rx_ = t_rx_pool.take(rx_cap_);
        if (!rx_) return false;
    }
    if (rx_len_ + data.size() > rx_cap_) return false;
    size_t tail = (rx_head_ + rx_len_) % rx_cap_;
    size_t first = std::min(data.size(), rx_cap_ - tail);
    std::memcpy(rx_.get() + tail, data.data(), first);
    if (data.size() > first) std::memcpy(rx_.get(), data.data() + first, data.size() - first);
    rx_len_ += data.size();
    return true;
}

void Stream::on_data(std::span<const uint8_t> data, bool fin) noexcept {
    recv_off_ += data.size();
    if (fin) fin_recv_ = true;
    if (reset_ || closed_) return;
    if (rx_len_ > 0 || handler_ == nullptr || delivering_) {
        if (!rx_push(data)) reset();
        return;
    }
    delivering_ = true;
    size_t taken = std::min(handler_->on_stream_data(*this, data, fin), data.size());
    delivering_ = false;
    consume(taken);
    if (taken < data.size()) {
        if (!rx_push(data.subspan(taken))) reset();
    } else if (fin) {
        fin_delivered_ = true;
    }
}

void Stream::resume_read() noexcept {
    if (delivering_ || handler_ == nullptr || reset_ || closed_) return;
    delivering_ = true;
    while (rx_len_ > 0 || (fin_recv_ && !fin_delivered_)) {
        size_t first = std::min(rx_len_, rx_cap_ - rx_head_);
        bool fin = fin_recv_ && first == rx_len_;
        std::span<const uint8_t> chunk(rx_ ? rx_.get() + rx_head_ : nullptr, first);
        size_t taken = std::min(handler_->on_stream_data(*this, chunk, fin), first);
        if (first > 0) {
            rx_head_ = (rx_head_ + taken) % rx_cap_;
            rx_len_ -= taken;
        }
        consume(taken);
        if (taken == first && fin) fin_delivered_ = true;
        if (taken < first || handler_ == nullptr || reset_ || closed_) break;
        if (first == 0) break;
    }
    if (rx_len_ == 0) {
        rx_head_ = 0;
        t_rx_pool.give(std::move(rx_), rx_cap_);  // drained: an idle stream holds no receive buffer
    }
    delivering_ = false;
    if (transport_closed_ && !undelivered()) conn_.want_write();  // finished at the next flush
}

}  // namespace runewarp::quic
