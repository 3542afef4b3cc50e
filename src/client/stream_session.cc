// StreamSession: one Server-opened stream: prefix intake, Service selection, backend connect,
// initial write, relay.
#include "client/stream_session.hh"

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>

#include "client/client.hh"
#include "client/instance.hh"
#include "core/clock.hh"
#include "proto/proxy_v2.hh"

namespace runewarp::client {

StreamSession::StreamSession(core::Worker& w, ClientInstance& inst) noexcept
    : core::Session(w), inst_(inst) {}

StreamSession::~StreamSession() = default;

void StreamSession::start(quic::Stream& s, core::SlotId slot) noexcept {
    slot_ = slot;
    stream_ = &s;
    decoder_ = std::make_unique<proto::StreamPrefixDecoder>();
    s.set_handler(this);
    arm_step_timer();
}

void StreamSession::arm_step_timer() noexcept {
    int64_t deadline = core::now_ns() + kStreamStepTimeoutNs;
    if (timer_armed_ && worker().rearm_timer(timer_, deadline)) return;
    timer_ = arm_timer(kOpTimer, deadline);
    timer_armed_ = true;
}

size_t StreamSession::on_stream_data(quic::Stream&, std::span<const uint8_t> data,
                                     bool fin) noexcept {
    if (phase_ != Phase::intake || decoder_ == nullptr) return 0;
    size_t before = prefix_.size();
    proto::PrefixStatus st = decoder_->feed(data);
    if (st == proto::PrefixStatus::kError) {
        reject(decoder_->reason());
        return data.size();
    }
    if (st == proto::PrefixStatus::kNeedMore) {
        prefix_.insert(prefix_.end(), data.begin(), data.end());
        if (fin) reject(decoder_->eof_reason());
        return data.size();
    }
    // Done: keep exactly the prefix through the ClientHello; later bytes stay in the stream
    // for the relay, and so does the FIN (it must reach the pump).
    size_t end = decoder_->hello_end();
    size_t take = end > before ? std::min(data.size(), end - before) : 0;
    if (fin && take == data.size() && take > 0) --take;
    prefix_.insert(prefix_.end(), data.begin(), data.begin() + static_cast<ptrdiff_t>(take));
    route();
    return take;
}

void StreamSession::on_stream_reset(quic::Stream&, uint64_t) noexcept {
    finish(true);
}

void StreamSession::on_stream_closed(quic::Stream&, uint64_t) noexcept {
    stream_ = nullptr;
    finish(true);
}

void StreamSession::reject(const std::string& reason) noexcept {
    inst_.log().warn("client warning", {}, "rejected stream: " + reason);
    finish(true);
}

void StreamSession::route() noexcept {
    sni_ = decoder_->sni();
    tuple_ = decoder_->tuple();
    visitor_offset_ = decoder_->visitor_offset();
    decoder_.reset();
    service_ = select_service(inst_.cfg().services, sni_);
    if (service_ == nullptr) {
        inst_.log().warn("client route unavailable",
                         {{"public-hostname", sni_}, {"reason", "no-matching-service"}});
        return finish(true);
    }
    backend_text_ = service_->backend.text();
    inst_.log().debug("client route passthrough",
                      {{"public-hostname", sni_}, {"backend-address", backend_text_}});
    arm_step_timer();  // 5 s for resolution and connect together
    net::ResolvedAddress lit;
    if (net::literal_address(service_->backend.host, service_->backend.port, lit)) {
        return connect_backend({lit});
    }
    net::Resolver* r = inst_.resolver();
    if (r == nullptr) return finish(true);
    phase_ = Phase::resolve;
    resolve_id_ = r->resolve(service_->backend.host, service_->backend.port, SOCK_STREAM, *this);
}

void StreamSession::on_resolved(uint64_t, net::Resolution& r) noexcept {
    resolve_id_ = 0;
    if (phase_ != Phase::resolve) return;
    if (!r.error.empty()) {
        return backend_failed("backend-connect-failed",
                              "cannot resolve " + backend_text_ + ": " + r.error);
    }
    connect_backend(std::move(r.addrs));
}

void StreamSession::connect_backend(std::vector<net::ResolvedAddress> addrs) noexcept {
    phase_ = Phase::connect;
    net::interleave_families(addrs);
    connector_.start(
        *this, std::make_shared<const std::vector<net::ResolvedAddress>>(std::move(addrs)), true);
    if (connector_.status() == net::Connector::Status::kFailed) {
        return backend_failed("backend-connect-failed", std::strerror(connector_.first_error()));
    }
}

void StreamSession::send_initial() noexcept {
    out_.clear();
    if (service_->proxy_v2) {
        uint8_t hdr[64];
        size_t n = 0;
        if (!proto::encode_proxy_v2(tuple_, hdr, n)) {
            return backend_failed("backend-write-failed", "cannot encode PROXY v2 header");
        }
        out_.insert(out_.end(), hdr, hdr + n);
    }
    if (visitor_offset_ < prefix_.size()) {
        out_.insert(out_.end(), prefix_.begin() + static_cast<ptrdiff_t>(visitor_offset_),
                    prefix_.end());
    }
    prefix_.clear();
    prefix_.shrink_to_fit();
    out_off_ = 0;
    phase_ = Phase::write;
    arm_step_timer();
    if (out_.empty()) return start_relay();
    send(kOpSend, fd_.get(), out_.data(), static_cast<uint32_t>(out_.size()), MSG_NOSIGNAL);
}

void StreamSession::start_relay() noexcept {
    out_.clear();
    out_.shrink_to_fit();
    if (timer_armed_) {
        worker().cancel_timer(timer_);
        timer_armed_ = false;
    }
    if (stream_ == nullptr) return finish(true);
    phase_ = Phase::relay;
    quic::Stream* s = stream_;
    stream_ = nullptr;  // the pump owns the stream from here on
    pump_.start(*this, fd_.get(), *s);
}

void StreamSession::backend_failed(const char* reason, const std::string& detail) noexcept {
    inst_.log().warn(
        "client route unavailable",
        {{"public-hostname", sni_}, {"backend-address", backend_text_}, {"reason", reason}},
        short_cause(detail));
    if (short_cause(detail) != detail) {
        inst_.log().debug("client route unavailable detail", {{"public-hostname", sni_}}, detail);
    }
    finish(true);
}

void StreamSession::pump_wait_tcp(bool write) noexcept {
    relay::wait_tcp(*this, fd_.get(), write, kOpPollRead, kOpPollWrite);
}

void StreamSession::pump_finished(bool reset) noexcept {
    linger_reset_ = reset;
    phase_ = Phase::done;
    abort(0);
}

void StreamSession::finish(bool reset) noexcept {
    if (phase_ == Phase::done) return;
    if (phase_ == Phase::relay) {
        pump_.abort();  // calls pump_finished
        return;
    }
    phase_ = Phase::done;
    if (timer_armed_) {
        worker().cancel_timer(timer_);
        timer_armed_ = false;
    }
    if (resolve_id_ != 0) {
        if (net::Resolver* r = inst_.resolver()) r->cancel(resolve_id_);
        resolve_id_ = 0;
    }
    connector_.cancel(*this);
    if (stream_ != nullptr) {
        quic::Stream* s = stream_;
        stream_ = nullptr;
        s->set_handler(nullptr);
        if (reset) s->reset(quic::kStreamErrorCode);
    }
    linger_reset_ = reset;
    abort(0);
}

void StreamSession::on_event(const core::Completion& c) noexcept {
    if (connector_.owns_op(c.token.op)) {
        if (!connector_.on_completion(*this, c) || phase_ != Phase::connect) return;
        switch (connector_.status()) {
            case net::Connector::Status::kPending:
                return;
            case net::Connector::Status::kConnected:
                fd_ = connector_.take_socket();
                return send_initial();
            case net::Connector::Status::kFailed:
                return backend_failed("backend-connect-failed",
                                      std::strerror(connector_.first_error()));
        }
        return;
    }
    if (c.flags & core::kCompletionTimer) {
        timer_armed_ = false;
        switch (phase_) {
            case Phase::intake:
                return reject("stream intake timeout");
            case Phase::resolve:
            case Phase::connect:
                return backend_failed("backend-connect-failed", "timeout");
            case Phase::write:
                return backend_failed("backend-write-failed", "timeout");
            case Phase::relay:
            case Phase::done:
                return;
        }
        return;
    }
    switch (c.token.op) {
        case kOpSend:
            if (phase_ != Phase::write) return;
            if (c.result == -EAGAIN || c.result == -EINTR) {
                send(kOpSend, fd_.get(), out_.data() + out_off_,
                     static_cast<uint32_t>(out_.size() - out_off_), MSG_NOSIGNAL);
                return;
            }
            if (c.result <= 0) return backend_failed("backend-write-failed", "send failed");
            out_off_ += static_cast<size_t>(c.result);
            if (out_off_ < out_.size()) {
                send(kOpSend, fd_.get(), out_.data() + out_off_,
                     static_cast<uint32_t>(out_.size() - out_off_), MSG_NOSIGNAL);
                return;
            }
            return start_relay();
        case kOpPollRead:
            if (phase_ == Phase::relay) pump_.on_tcp_ready(false, c.result);
            return;
        case kOpPollWrite:
            if (phase_ == Phase::relay) pump_.on_tcp_ready(true, c.result);
            return;
        default:
            return;
    }
}

void StreamSession::on_quiesced() noexcept {
    connector_.release(*this);
    if (fd_ && linger_reset_) {
        linger l{1, 0};
        (void)::setsockopt(fd_.get(), SOL_SOCKET, SO_LINGER, &l, sizeof(l));
    }
    if (fd_) close_fd(fd_);
    inst_.stream_done(slot_);  // frees this session: nothing after this line
}

}  // namespace runewarp::client
