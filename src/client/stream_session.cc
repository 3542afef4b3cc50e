// StreamSession: one Server-opened stream: prefix intake, Service selection, backend connect,
// initial write, relay.
#include "client/stream_session.hh"

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>

#include "client/client.hh"
#include "client/client_shard.hh"
#include "core/clock.hh"
#include "proto/proxy_v2.hh"

namespace runewarp::client {

StreamSession::StreamSession(core::Worker& w, ClientShard& shard) noexcept
    : core::Session(w), shard_(shard) {}

StreamSession::~StreamSession() = default;

void StreamSession::start(quic::Stream& s, core::SlotId slot) noexcept {
    slot_ = slot;
    stream_ = &s;
    // The configuration now: a reload during this stream leaves its Service in place.
    cfg_ = shard_.config_snapshot();
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
    if (service_ != nullptr && service_->tls_mode == config::TlsMode::kTerminate &&
        phase_ == Phase::intake) {
        // Everything offered now (and the FIN with it) feeds the handshake: the pump becomes
        // the stream's handler, and bytes left in the stream now would wait for a read.
        start_terminate(data.subspan(take), fin);
        return data.size();
    }
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
    shard_.log().warn("client warning", {}, "rejected stream: " + reason);
    finish(true);
}

void StreamSession::route() noexcept {
    sni_ = decoder_->sni();
    offers_acme_tls1_ = decoder_->offers_acme_tls1();
    tuple_ = decoder_->tuple();
    visitor_offset_ = decoder_->visitor_offset();
    decoder_.reset();
    service_ = select_service(cfg_->services, sni_);
    if (service_ == nullptr) {
        shard_.metrics().unmatched_streams.add();
        shard_.log().warn("client route unavailable",
                          {{"public-hostname", sni_}, {"reason", "no-matching-service"}});
        return finish(true);
    }
    backend_text_ = service_->backend.text();
    counts_ = shard_.service_counts(service_->label);
    if (counts_ != nullptr) {
        counts_->streams.add();
        counts_->active.add(1);
    }
    if (service_->tls_mode == config::TlsMode::kTerminate) {
        shard_.log().debug("client route terminate",
                           {{"public-hostname", sni_}, {"backend-address", backend_text_}});
        return;  // on_stream_data starts the handshake with every byte it was offered
    }
    shard_.log().debug("client route passthrough",
                       {{"public-hostname", sni_}, {"backend-address", backend_text_}});
    connect_phase();
}

void StreamSession::start_terminate(std::span<const uint8_t> rest, bool fin) noexcept {
    phase_ = Phase::handshake;
    arm_step_timer();  // 5 s for the handshake
    quic::Stream* s = stream_;
    stream_ = nullptr;  // the TLS pump owns the stream from here on
    tls_ = std::make_unique<relay::TlsStreamPump>();
    if (offers_acme_tls1_ && s != nullptr)
        return start_challenge(*s, take_visitor_bytes(rest), fin);
    certs_ = shard_.terminate_certs();
    const TerminateCredential* cred = certs_ ? certs_->find(sni_) : nullptr;
    const TerminateTls* tt = shard_.terminate_tls();
    if (cred == nullptr || tt == nullptr || s == nullptr) {
        shard_.log().warn("client route unavailable", {{"public-hostname", sni_},
                                                       {"backend-address", backend_text_},
                                                       {"reason", "tls-config-missing"}});
        if (s == nullptr) return finish(true);
        return tls_->start_refusal(*this, *s);
    }
    auto session = tt->new_session(*cred, service_->alpn);
    if (!session) {
        shard_.log().warn("client route unavailable",
                          {{"public-hostname", sni_},
                           {"backend-address", backend_text_},
                           {"reason", "tls-config-missing"}},
                          session.error().message);
        return tls_->start_refusal(*this, *s);
    }
    // The ClientHello (and whatever followed it) is fed to the handshake first.
    tls_->start_handshake(*this, *s, *session, take_visitor_bytes(rest), fin);
}

std::vector<uint8_t> StreamSession::take_visitor_bytes(std::span<const uint8_t> rest) noexcept {
    std::vector<uint8_t> initial(prefix_.begin() + static_cast<ptrdiff_t>(visitor_offset_),
                                 prefix_.end());
    initial.insert(initial.end(), rest.begin(), rest.end());
    prefix_.clear();
    prefix_.shrink_to_fit();
    visitor_offset_ = 0;
    return initial;
}

void StreamSession::start_challenge(quic::Stream& s, std::vector<uint8_t> initial,
                                    bool fin) noexcept {
    const acme::ChallengeBoard* board = shard_.acme_board();
    const TerminateTls* tt = shard_.terminate_tls();
    if (board == nullptr || tt == nullptr) {
        // The hostname's certificate is not managed through ACME: nothing answers acme-tls/1.
        shard_.log().warn("client route unavailable", {{"public-hostname", sni_},
                                                       {"backend-address", backend_text_},
                                                       {"reason", "acme-tls-config-missing"}});
        return tls_->start_refusal(*this, s);
    }
    challenge_ = board->find(sni_);
    if (challenge_ == nullptr) {
        // No order waits on this hostname (a late or stray validation connection).
        shard_.log().debug("client route unavailable", {{"public-hostname", sni_},
                                                        {"backend-address", backend_text_},
                                                        {"reason", "acme-challenge-not-pending"}});
        return tls_->start_refusal(*this, s);
    }
    auto session = tt->new_challenge_session(challenge_->credentials());
    if (!session) {
        shard_.log().warn("client acme challenge failed", {{"public-hostname", sni_}},
                          session.error().message);
        return tls_->start_refusal(*this, s);
    }
    tls_->start_handshake_only(*this, s, *session, initial, fin);
}

void StreamSession::tls_handshake_done() noexcept {
    if (phase_ != Phase::handshake) return;
    if (challenge_ != nullptr) {
        // The pump is closing the stream (close_notify, FIN): the validator has what it needs.
        challenge_answered_ = true;
        shard_.log().debug("client acme challenge answered", {{"public-hostname", sni_}});
        return;
    }
    if (shard_.log().enabled(obs::Level::kDebug)) {
        gnutls_session_t gs = tls_->session();
        gnutls_datum_t proto{};
        std::string alpn = gnutls_alpn_get_selected_protocol(gs, &proto) == 0
                               ? std::string(reinterpret_cast<const char*>(proto.data), proto.size)
                               : std::string("none");
        const char* ver = gnutls_protocol_get_name(gnutls_protocol_get_version(gs));
        shard_.log().debug("client terminate handshake completed",
                           {{"public-hostname", sni_},
                            {"tls-version", ver != nullptr ? ver : "unknown"},
                            {"alpn", alpn}});
    }
    connect_phase();
}

void StreamSession::connect_phase() noexcept {
    arm_step_timer();  // 5 s for resolution and connect together
    connect_started_ns_ = core::now_ns();
    net::ResolvedAddress lit;
    if (net::literal_address(service_->backend.host, service_->backend.port, lit)) {
        return connect_backend({lit});
    }
    net::Resolver* r = shard_.resolver();
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
    if (tls_ == nullptr && visitor_offset_ < prefix_.size()) {
        initial_bytes_ = prefix_.size() - visitor_offset_;
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
    if (tls_ != nullptr) {
        phase_ = Phase::relay;
        return tls_->start_relay(fd_.get());
    }
    if (stream_ == nullptr) return finish(true);
    phase_ = Phase::relay;
    quic::Stream* s = stream_;
    stream_ = nullptr;  // the pump owns the stream from here on
    pump_.start(*this, fd_.get(), *s);
}

void StreamSession::backend_failed(const char* reason, const std::string& detail) noexcept {
    if (counts_ != nullptr && phase_ != Phase::write) counts_->backend_failures.add();
    shard_.log().warn(
        "client route unavailable",
        {{"public-hostname", sni_}, {"backend-address", backend_text_}, {"reason", reason}},
        short_cause(detail));
    if (short_cause(detail) != detail) {
        shard_.log().debug("client route unavailable detail", {{"public-hostname", sni_}}, detail);
    }
    finish(true);
}

void StreamSession::pump_wait_tcp(bool write) noexcept {
    relay::wait_tcp(*this, fd_.get(), write, kOpPollRead, kOpPollWrite);
}

void StreamSession::pump_finished(bool reset) noexcept {
    if (phase_ == Phase::done) return;  // finish() is cutting the pump
    // The TLS pump ended before the relay: the stream went away, or a refusal completed.
    if (phase_ != Phase::relay) {
        if (tls_ != nullptr && tls_->handshake_error() != 0) {
            shard_.log().debug("client route unavailable",
                               {{"public-hostname", sni_},
                                {"backend-address", backend_text_},
                                {"reason", "tls-handshake-failed"}},
                               gnutls_strerror(tls_->handshake_error()));
        }
        return finish(reset);
    }
    linger_reset_ = reset;
    phase_ = Phase::done;
    abort(0);
}

void StreamSession::finish(bool reset) noexcept {
    if (phase_ == Phase::done) return;
    if (phase_ == Phase::relay) {
        // Calls pump_finished.
        if (tls_ != nullptr) {
            tls_->abort();
        } else {
            pump_.abort();
        }
        return;
    }
    phase_ = Phase::done;
    if (timer_armed_) {
        worker().cancel_timer(timer_);
        timer_armed_ = false;
    }
    if (resolve_id_ != 0) {
        if (net::Resolver* r = shard_.resolver()) r->cancel(resolve_id_);
        resolve_id_ = 0;
    }
    connector_.cancel(*this);
    if (tls_ != nullptr) tls_->abort();  // resets the stream if the pump still holds it
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
                shard_.metrics().backend_connect.observe_ns(core::now_ns() - connect_started_ns_);
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
            case Phase::handshake:
                // An answered challenge only waits for the validator to close.
                if (challenge_answered_) return finish(true);
                shard_.log().debug("client route unavailable",
                                   {{"public-hostname", sni_},
                                    {"backend-address", backend_text_},
                                    {"reason", "tls-handshake-timeout"}});
                return finish(true);
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
        case kOpPollWrite:
            if (phase_ != Phase::relay) return;
            if (tls_ != nullptr) {
                tls_->on_tcp_ready(c.token.op == kOpPollWrite, c.result);
            } else {
                pump_.on_tcp_ready(c.token.op == kOpPollWrite, c.result);
            }
            return;
        default:
            return;
    }
}

void StreamSession::on_quiesced() noexcept {
    if (counts_ != nullptr) {
        counts_->active.add(-1);
        if (tls_ != nullptr) {
            counts_->bytes_in.add(tls_->bytes_to_tcp());
            counts_->bytes_out.add(tls_->bytes_to_stream());
        } else {
            counts_->bytes_in.add(initial_bytes_ + pump_.bytes_to_tcp());
            counts_->bytes_out.add(pump_.bytes_to_stream());
        }
        counts_ = nullptr;
    }
    connector_.release(*this);
    if (fd_ && linger_reset_) {
        linger l{1, 0};
        (void)::setsockopt(fd_.get(), SOL_SOCKET, SO_LINGER, &l, sizeof(l));
    }
    if (fd_) close_fd(fd_);
    shard_.stream_done(slot_);  // frees this session: nothing after this line
}

}  // namespace runewarp::client
