// VisitorSession: one Visitor TCP connection on the public listener, as an explicit state
// machine: ProxyHeader -> Hello -> (Connect | Open) -> Relay -> Closed.
#include "server/visitor.hh"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>

#include "core/clock.hh"
#include "proto/stream_prefix.hh"
#include "quic/connection.hh"
#include "server/edge_shard.hh"

namespace runewarp::server {

namespace {

constexpr int64_t kIntakeDeadlineNs = 5'000'000'000;   // PROXY header + ClientHello
constexpr int64_t kConnectDeadlineNs = 5'000'000'000;  // direct route upstream connect
constexpr int64_t kOpenDeadlineNs = 5'000'000'000;     // Tunnel stream open, credit included
constexpr int64_t kAcmeDeadlineNs = 5'000'000'000;     // TLS-ALPN-01 handshake and close
// Bytes one pump call may move before yielding to other connections.
constexpr uint64_t kPumpBudget = 1u << 20;

proto::Endpoint endpoint_of(const sockaddr_storage& ss) noexcept {
    // Dual-stack listeners report IPv4 peers as ::ffff:a.b.c.d: canonical form is plain IPv4.
    return proto::unmap_v4(proto::from_sockaddr(ss).value_or(proto::Endpoint{}));
}

bool in_cidr(const proto::Endpoint& ip, const config::Cidr& c) noexcept {
    if (ip.family != c.address.family) return false;
    unsigned bits = c.prefix;
    size_t i = 0;
    for (; bits >= 8; bits -= 8, ++i)
        if (ip.addr[i] != c.address.addr[i]) return false;
    if (bits == 0) return true;
    auto mask = static_cast<uint8_t>(0xff00u >> bits);
    return (ip.addr[i] & mask) == (c.address.addr[i] & mask);
}

CloseReason reason_of(proto::HelloStatus s) noexcept {
    switch (s) {
        case proto::HelloStatus::kNotTls:
            return CloseReason::kNotTls;
        case proto::HelloStatus::kInvalidTls:
            return CloseReason::kInvalidTls;
        case proto::HelloStatus::kNoSni:
            return CloseReason::kMissingSni;
        case proto::HelloStatus::kInvalidSni:
            return CloseReason::kInvalidSni;
        case proto::HelloStatus::kTooLarge:
            return CloseReason::kOversized;
        case proto::HelloStatus::kIncomplete:
            return CloseReason::kIncomplete;
        case proto::HelloStatus::kOk:
            break;
    }
    return CloseReason::kInternal;
}

void set_nodelay(int fd) noexcept {
    int one = 1;
    (void)::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

// An abortive close: the peer sees RST instead of FIN.
void set_linger_reset(int fd) noexcept {
    linger l{1, 0};
    (void)::setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
}

}  // namespace

const char* visitor_state_name(VisitorState s) noexcept {
    switch (s) {
        case VisitorState::kProxyHeader:
            return "proxy-header";
        case VisitorState::kHello:
            return "hello";
        case VisitorState::kConnect:
            return "connect";
        case VisitorState::kOpen:
            return "open";
        case VisitorState::kRelay:
            return "relay";
        case VisitorState::kAcme:
            return "acme-tls";
        case VisitorState::kClosed:
            return "closed";
    }
    return "unknown";
}

VisitorSession::VisitorSession(core::Worker& w, EdgeShard& shard, int fd, uint64_t conn_id) noexcept
    : core::Session(w), shard_(shard), visitor_(fd), conn_id_(conn_id) {}

VisitorSession::~VisitorSession() {
    if (acme_tls_ != nullptr) gnutls_deinit(acme_tls_);
}

void VisitorSession::start() noexcept {
    started_ns_ = core::now_ns();
    holds_global_ = true;
    cfg_ = shard_.config_snapshot();
    const auto& cfg = *cfg_;

    sockaddr_storage peer{}, local{};
    socklen_t plen = sizeof(peer), llen = sizeof(local);
    if (::getpeername(visitor_.get(), reinterpret_cast<sockaddr*>(&peer), &plen) != 0 ||
        ::getsockname(visitor_.get(), reinterpret_cast<sockaddr*>(&local), &llen) != 0) {
        // The Visitor already vanished (ENOTCONN): nothing to serve.
        return fail(CloseReason::kHelloIoError);
    }
    tuple_.source = endpoint_of(peer);
    tuple_.destination = endpoint_of(local);

    if (cfg.visitor_proxy_v2) {
        bool trusted = false;
        for (const auto& c : cfg.visitor_proxy_trusted_networks)
            if (in_cidr(tuple_.source, c)) trusted = true;
        if (!trusted) return fail(CloseReason::kUntrustedProxyPeer);
        state_ = VisitorState::kProxyHeader;
    } else {
        state_ = VisitorState::kHello;
        if (!take_source_slot()) return;
    }
    intake_ = shard_.intake_pool().borrow();
    if (intake_ == nullptr) return fail(CloseReason::kInternal);
    deadline_ = arm_timer(kOpDeadline, started_ns_ + kIntakeDeadlineNs);
    arm_intake_poll();
}

void VisitorSession::arm_intake_poll() noexcept {
    // SO_RCVLOWAT makes readiness wait until enough bytes for progress are queued, so a
    // ClientHello arriving in small pieces does not wake us per segment. The queue still holds
    // every byte peeked so far (MSG_PEEK does not consume).
    size_t need = state_ == VisitorState::kProxyHeader ? intake_->proxy.bytes_needed()
                                                       : intake_->hello.bytes_needed();
    int lowat = static_cast<int>(intake_->peeked + (need > 0 ? need : 1));
    (void)::setsockopt(visitor_.get(), SOL_SOCKET, SO_RCVLOWAT, &lowat, sizeof(lowat));
    visitor_poll_armed_ = true;
    poll(kOpPollVisitor, visitor_.get(), POLLIN | POLLRDHUP);
}

void VisitorSession::on_intake_readable(int revents) noexcept {
    uint8_t* buf = shard_.peek_buffer();
    ssize_t n = ::recv(visitor_.get(), buf, EdgeShard::kPeekCapacity, MSG_PEEK | MSG_DONTWAIT);
    if (n < 0) {
        if (errno == EAGAIN || errno == EINTR) return arm_intake_poll();
        return fail(state_ == VisitorState::kProxyHeader ? CloseReason::kInvalidProxyHeader
                                                         : CloseReason::kHelloIoError);
    }
    auto have = static_cast<size_t>(n);
    bool eof = n == 0 || (have <= intake_->peeked && (revents & (POLLRDHUP | POLLHUP)) != 0);
    if (have < intake_->peeked) return fail(CloseReason::kHelloIoError);  // cannot shrink
    const uint8_t* fresh = buf + intake_->peeked;
    size_t fresh_len = have - intake_->peeked;
    intake_->peeked = have;
    // Readiness reported a half-close together with the last bytes: treat it as EOF once those
    // bytes are fed and still do not complete the message.
    bool hup = (revents & (POLLRDHUP | POLLHUP)) != 0;

    if (state_ == VisitorState::kProxyHeader) {
        if (!step_proxy_header(fresh, fresh_len, eof || hup)) return;
        // The header was consumed; what is queued now starts with the ClientHello.
        fresh = nullptr;
        fresh_len = 0;
        if (state_ != VisitorState::kHello) return;
        return arm_intake_poll();
    }
    step_hello(fresh, fresh_len, eof || hup);
}

bool VisitorSession::step_proxy_header(const uint8_t* data, size_t len, bool eof) noexcept {
    auto r = intake_->proxy.feed(std::span<const uint8_t>(data, len));
    if (r.status == proto::ProxyStatus::kNeedMore) {
        if (eof) {
            fail(CloseReason::kInvalidProxyHeader);
            return false;
        }
        arm_intake_poll();
        return false;
    }
    if (r.status != proto::ProxyStatus::kOk) {
        fail(CloseReason::kInvalidProxyHeader);
        return false;
    }
    // Consume exactly the header; the ClientHello stays queued for peeking.
    size_t hdr = intake_->proxy.header_size();
    size_t got = 0;
    while (got < hdr) {
        ssize_t n = ::recv(visitor_.get(), shard_.peek_buffer(), hdr - got, MSG_DONTWAIT);
        if (n <= 0) {
            if (n < 0 && errno == EINTR) continue;
            fail(CloseReason::kInvalidProxyHeader);
            return false;
        }
        got += static_cast<size_t>(n);
    }
    tuple_ = intake_->proxy.tuple();
    intake_->peeked = 0;
    if (!take_source_slot()) return false;
    state_ = VisitorState::kHello;
    return true;
}

bool VisitorSession::take_source_slot() noexcept {
    // Keyed by the canonical source IP: the peer, or the PROXY v2 source when trusted.
    source_key_ = SourceKey::of(tuple_.source);
    Admission& adm = shard_.admission();
    if (!adm.try_pre_routing_source(source_key_)) {
        const uint32_t limit = adm.limits().pre_routing_per_source;
        shard_.admission_log().saturated(AdmissionScope::kVisitorSource, limit, limit);
        fail(CloseReason::kSourceSaturated);
        return false;
    }
    holds_source_ = true;
    shard_.admission_log().admitted(AdmissionScope::kVisitorSource);
    return true;
}

void VisitorSession::step_hello(const uint8_t* data, size_t len, bool eof) noexcept {
    auto st = intake_->hello.feed(std::span<const uint8_t>(data, len));
    if (st == proto::HelloStatus::kIncomplete) {
        if (eof) return fail(CloseReason::kIncomplete);
        return arm_intake_poll();
    }
    if (st != proto::HelloStatus::kOk) return fail(reason_of(st));
    route();
}

void VisitorSession::release_pre_routing() noexcept {
    if (holds_source_) {
        shard_.admission().release_pre_routing_source(source_key_);
        holds_source_ = false;
    }
    if (holds_global_) {
        shard_.admission().release_pre_routing_global();
        holds_global_ = false;
    }
    if (intake_ != nullptr) shard_.intake_pool().give_back(std::move(intake_));
}

uint64_t VisitorSession::bytes_in() const noexcept {
    if (state_ != VisitorState::kRelay) return 0;
    return tunnel_ ? pump_.bytes_to_stream() + buffered_ : to_upstream_.bytes();
}

uint64_t VisitorSession::bytes_out() const noexcept {
    if (state_ != VisitorState::kRelay) return 0;
    return tunnel_ ? pump_.bytes_to_tcp() : to_visitor_.bytes();
}

void VisitorSession::route() noexcept {
    shard_.metrics().intake.observe_ns(core::now_ns() - started_ns_);
    sni_ = intake_->hello.sni();
    bool acme = intake_->hello.offers_acme_tls1();
    // Everything intake saw (the ClientHello and whatever followed) is still queued in the
    // socket; a Tunnel route consumes exactly this much into the stream prefix.
    buffered_ = intake_->peeked;
    // Routed work never holds pre-routing slots, whatever routing decides.
    release_pre_routing();
    int one = 1;
    (void)::setsockopt(visitor_.get(), SOL_SOCKET, SO_RCVLOWAT, &one, sizeof(one));

    if (sni_ == cfg_->hostname) {
        // Only TLS-ALPN-01 challenges are served for the Server hostname, and only with
        // [server.acme] (manual mode cannot answer one).
        if (!acme) return fail(CloseReason::kNonAcmeServerHostname);
        if (shard_.acme_board() == nullptr) return fail(CloseReason::kAcmeConfigMissing);
        return answer_acme_challenge();
    }
    routes_ = shard_.routes();
    const RouteTarget* target = routes_->find(sni_);
    if (target == nullptr) return fail(CloseReason::kUnauthorizedHostname);
    if (target->kind == RouteTarget::Kind::kTunnel) return route_tunnel(target->tunnel_label);
    route_ = target->direct;
    counts_ = shard_.direct_counts(route_->label);
    if (!take_relay_slot()) return fail(CloseReason::kRelaySaturated);
    connect_upstream();
}

bool VisitorSession::take_relay_slot() noexcept {
    Admission& adm = shard_.admission();
    if (!adm.try_active_relay()) {
        shard_.admission_log().saturated(AdmissionScope::kActiveRelay, adm.active_relays(),
                                         adm.limits().active_relays);
        return false;
    }
    holds_relay_ = true;
    shard_.admission_log().admitted(AdmissionScope::kActiveRelay);
    return true;
}

void VisitorSession::connect_upstream() noexcept {
    state_ = VisitorState::kConnect;
    if (!worker().rearm_timer(deadline_, core::now_ns() + kConnectDeadlineNs))
        deadline_ = arm_timer(kOpDeadline, core::now_ns() + kConnectDeadlineNs);
    connector_.start(*this, route_->addresses(), true);
    if (connector_.status() == net::Connector::Status::kFailed)
        fail(CloseReason::kUpstreamConnectFailed);
}

void VisitorSession::on_connector_event(const core::Completion& c) noexcept {
    // Every completion of the connector's ops is fed to it, also after abort(), so that it
    // knows which sockets are no longer in flight.
    if (!connector_.on_completion(*this, c) || aborting() || state_ != VisitorState::kConnect)
        return;
    switch (connector_.status()) {
        case net::Connector::Status::kPending:
            return;
        case net::Connector::Status::kConnected:
            upstream_ = connector_.take_socket();
            return on_connected();
        case net::Connector::Status::kFailed:
            return fail(CloseReason::kUpstreamConnectFailed);
    }
}

void VisitorSession::on_connected() noexcept {
    worker().cancel_timer(deadline_);
    if (route_->proxy_v2) {
        std::array<uint8_t, 64> hdr{};
        size_t len = 0;
        if (!proto::encode_proxy_v2(tuple_, hdr, len))
            return fail(CloseReason::kUpstreamWriteFailed);
        // A fresh connection has an empty send buffer: 28/52 bytes always fit at once.
        ssize_t n = ::send(upstream_.get(), hdr.data(), len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n != static_cast<ssize_t>(len)) return fail(CloseReason::kUpstreamWriteFailed);
    }
    start_relay();
}

void VisitorSession::start_relay() noexcept {
    state_ = VisitorState::kRelay;
    relay_started_ns_ = core::now_ns();
    if (counts_ != nullptr) counts_->relays.add();
    set_nodelay(visitor_.get());
    to_upstream_ = relay::SplicePump(visitor_.get(), upstream_.get());
    to_visitor_ = relay::SplicePump(upstream_.get(), visitor_.get());
    shard_.log().debug("server route forwarded", {{"public-hostname", sni_}});
    drive_relay(true, true);
}

void VisitorSession::drive_relay(bool up, bool down) noexcept {
    struct Dir {
        relay::SplicePump& pump;
        bool run;
        bool& armed;
        uint8_t op;
        int src;
        int dst;
    };
    Dir dirs[2] = {
        {to_upstream_, up, visitor_poll_armed_, kOpPollVisitor, visitor_.get(), upstream_.get()},
        {to_visitor_, down, upstream_poll_armed_, kOpPollUpstream, upstream_.get(), visitor_.get()},
    };
    for (auto& d : dirs) {
        if (!d.run || d.armed || d.pump.done()) continue;
        switch (d.pump.pump(shard_.pipes(), kPumpBudget)) {
            case relay::PumpWait::kReadable:
                d.armed = true;
                poll(d.op, d.src, POLLIN | POLLRDHUP);
                break;
            case relay::PumpWait::kWritable:
                d.armed = true;
                poll(d.op, d.dst, POLLOUT);
                break;
            case relay::PumpWait::kDone:
                break;
            case relay::PumpWait::kError:
                return fail(CloseReason::kReset);
        }
    }
    if (to_upstream_.done() && to_visitor_.done()) finish(CloseReason::kDone);
}

void VisitorSession::route_tunnel(std::string_view label, uint32_t hops) noexcept {
    // A placement the next shard finds stale is made again there, at most this many times.
    constexpr uint32_t kMaxHops = 2;
    tunnel_ = true;
    tunnel_label_ = label;
    counts_ = shard_.tunnel_counts(label);
    TunnelRegistry* reg = shard_.tunnels();
    if (reg == nullptr || reg->sealed()) return fail(CloseReason::kShutdown);
    member_ = reg->pick(label, shard_.index());
    if (member_ == nullptr) return fail(CloseReason::kNoActiveTunnel);
    if (member_->shard != shard_.index()) {
        if (hops >= kMaxHops) return fail(CloseReason::kNoActiveTunnel);
        return hand_off(label, hops + 1);
    }
    open_on_member();
}

void VisitorSession::open_on_member() noexcept {
    Admission& adm = shard_.admission();
    if (!adm.try_pending_open()) {
        shard_.admission_log().saturated(AdmissionScope::kPendingOpen, adm.pending_opens(),
                                         adm.limits().pending_opens);
        return fail(CloseReason::kPendingOpenSaturated);
    }
    holds_pending_ = true;
    shard_.admission_log().admitted(AdmissionScope::kPendingOpen);
    state_ = VisitorState::kOpen;
    if (!worker().rearm_timer(deadline_, core::now_ns() + kOpenDeadlineNs))
        deadline_ = arm_timer(kOpDeadline, core::now_ns() + kOpenDeadlineNs);
    try_open_stream();
}

void VisitorSession::hand_off(std::string_view label, uint32_t hops) noexcept {
    auto h = std::make_shared<VisitorHandoff>();
    h->member = std::move(member_);
    h->hops = hops;
    h->conn_id = conn_id_;
    h->started_ns = started_ns_;
    h->snap = shard_.snapshot();
    h->snap.cfg = cfg_;
    h->snap.routes = routes_;
    h->label = label;
    h->sni = sni_;
    h->tuple = tuple_;
    h->buffered = buffered_;
    // Nothing is in flight on the socket (routing runs from the intake poll's completion).
    h->fd = std::move(visitor_);
    handed_off_ = true;
    shard_.hand_off(std::move(h));
    finish(CloseReason::kDone);
}

void VisitorSession::resume_tunnel(const VisitorHandoff& h) noexcept {
    started_ns_ = h.started_ns;
    cfg_ = h.snap.cfg;
    routes_ = h.snap.routes;
    sni_ = h.sni;
    tuple_ = h.tuple;
    buffered_ = h.buffered;
    state_ = VisitorState::kHello;
    tunnel_ = true;
    tunnel_label_ = h.label;
    counts_ = shard_.tunnel_counts(h.label);
    // The chosen member failing before the stream exists fails the Visitor (spec 5.12: no
    // second try).
    if (h.member != nullptr && !h.member->alive) return fail(CloseReason::kNoActiveTunnel);
    // The placement holds when its connection, owned here, answers now; one that stopped
    // answering since its own worker last looked is passed over as placement would have.
    TunnelRegistry* reg = shard_.tunnels();
    if (h.member != nullptr && h.member->shard == shard_.index() && reg != nullptr &&
        !reg->sealed() && reg->responsive(*h.member)) {
        member_ = h.member;
        return open_on_member();
    }
    route_tunnel(h.label, h.hops);
}

void VisitorSession::try_open_stream() noexcept {
    // The chosen member failing before the stream exists fails the Visitor: no second try.
    if (!member_->alive || member_->connection == nullptr)
        return fail(CloseReason::kNoActiveTunnel);
    auto* conn = static_cast<quic::Connection*>(member_->connection);
    auto s = conn->open_stream(pump_);
    if (!s) {
        if (s.error().code == EAGAIN) {
            // No stream credit: on_streams_available() wakes us (within the open deadline).
            waiting_credit_ = true;
            member_->waiters.push_back(this);
            return;
        }
        return fail(CloseReason::kNoActiveTunnel);
    }
    on_stream_opened(**s);
}

void VisitorSession::on_stream_credit() noexcept {
    waiting_credit_ = false;  // the member cleared its list before waking us
    if (aborting() || state_ != VisitorState::kOpen) return;
    try_open_stream();
}

void VisitorSession::stop_waiting() noexcept {
    if (!waiting_credit_ || member_ == nullptr) return;
    std::erase(member_->waiters, static_cast<StreamWaiter*>(this));
    waiting_credit_ = false;
}

void VisitorSession::refuse_stream(quic::Stream& s, CloseReason r) noexcept {
    // RESET_STREAM + STOP_SENDING with code 1; nothing of the Visitor was sent.
    s.set_handler(nullptr);
    s.reset(quic::kStreamErrorCode);
    fail(r);
}

void VisitorSession::on_stream_opened(quic::Stream& s) noexcept {
    worker().cancel_timer(deadline_);
    Admission& adm = shard_.admission();
    if (holds_pending_) {
        adm.release_pending_open();
        holds_pending_ = false;
    }
    // The stream exists: trade the pending-open slot for an active-routed-stream slot.
    if (!take_relay_slot()) return refuse_stream(s, CloseReason::kRelaySaturated);
    // Registration still open and the member still mapped (the table is one snapshot
    // for the process lifetime, so the member's liveness is what can change).
    TunnelRegistry* reg = shard_.tunnels();
    if (reg == nullptr || reg->sealed()) return refuse_stream(s, CloseReason::kShutdown);
    if (!member_->alive) return refuse_stream(s, CloseReason::kNoActiveTunnel);

    // Consume what intake peeked and send it behind the PROXY v2 header, one write.
    uint8_t* buf = shard_.prefix_buffer();
    size_t hdr = proto::encode_stream_prefix(tuple_, std::span<uint8_t>(buf, 64));
    if (hdr == 0 || buffered_ > EdgeShard::kPeekCapacity)
        return refuse_stream(s, CloseReason::kInternal);
    size_t got = 0;
    while (got < buffered_) {
        ssize_t n = ::recv(visitor_.get(), buf + hdr + got, buffered_ - got, MSG_DONTWAIT);
        if (n > 0) {
            got += static_cast<size_t>(n);
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        // The bytes were queued when peeked; losing them means the socket broke.
        return refuse_stream(s, CloseReason::kHelloIoError);
    }
    // A fresh stream's send buffer (256 KiB) takes the whole prefix (<= 16 KiB + 52).
    if (s.write(std::span<const uint8_t>(buf, hdr + got)) != hdr + got)
        return refuse_stream(s, CloseReason::kInternal);

    reg->stream_started(*member_);
    counted_ = true;
    state_ = VisitorState::kRelay;
    relay_started_ns_ = core::now_ns();
    if (counts_ != nullptr) counts_->relays.add();
    set_nodelay(visitor_.get());
    shard_.log().debug("server route forwarded", {{"public-hostname", sni_}});
    pump_started_ = true;
    pump_.start(*this, visitor_.get(), s);
}

void VisitorSession::answer_acme_challenge() noexcept {
    challenge_ = shard_.acme_board()->find(sni_);
    if (challenge_ == nullptr) return fail(CloseReason::kAcmeNoChallenge);
    // A handshake in progress holds an active-relay slot: their number stays bounded.
    if (!take_relay_slot()) return fail(CloseReason::kRelaySaturated);
    state_ = VisitorState::kAcme;
    if (!worker().rearm_timer(deadline_, core::now_ns() + kAcmeDeadlineNs))
        deadline_ = arm_timer(kOpDeadline, core::now_ns() + kAcmeDeadlineNs);

    if (gnutls_init(&acme_tls_, GNUTLS_SERVER | GNUTLS_NO_TICKETS | GNUTLS_NONBLOCK) != 0) {
        acme_tls_ = nullptr;
        return fail(CloseReason::kInternal);
    }
    const auto alpn = acme::kAcmeTlsAlpn;
    gnutls_datum_t proto{reinterpret_cast<unsigned char*>(const_cast<char*>(alpn.data())),
                         static_cast<unsigned>(alpn.size())};
    if (gnutls_set_default_priority(acme_tls_) != 0 ||
        gnutls_credentials_set(acme_tls_, GNUTLS_CRD_CERTIFICATE, challenge_->credentials()) != 0 ||
        gnutls_alpn_set_protocols(acme_tls_, &proto, 1, GNUTLS_ALPN_MANDATORY) != 0)
        return fail(CloseReason::kInternal);
    gnutls_certificate_server_set_request(acme_tls_, GNUTLS_CERT_IGNORE);
    gnutls_transport_set_ptr(acme_tls_, this);
    gnutls_transport_set_pull_function(acme_tls_, &VisitorSession::acme_pull);
    gnutls_transport_set_push_function(acme_tls_, &VisitorSession::acme_push);
    gnutls_handshake_set_timeout(acme_tls_, GNUTLS_INDEFINITE_TIMEOUT);  // our deadline rules
    continue_acme();
}

ssize_t VisitorSession::acme_pull(gnutls_transport_ptr_t p, void* buf, size_t len) noexcept {
    // The ClientHello intake peeked is still queued: GnuTLS reads it first, from the socket.
    auto* v = static_cast<VisitorSession*>(p);
    ssize_t n = ::recv(v->visitor_.get(), buf, len, MSG_DONTWAIT);
    if (n < 0) gnutls_transport_set_errno(v->acme_tls_, errno == EWOULDBLOCK ? EAGAIN : errno);
    return n;
}

ssize_t VisitorSession::acme_push(gnutls_transport_ptr_t p, const void* buf, size_t len) noexcept {
    auto* v = static_cast<VisitorSession*>(p);
    ssize_t n = ::send(v->visitor_.get(), buf, len, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n < 0) gnutls_transport_set_errno(v->acme_tls_, errno == EWOULDBLOCK ? EAGAIN : errno);
    return n;
}

void VisitorSession::continue_acme() noexcept {
    int rv = 0;
    if (!acme_handshake_done_) {
        do {
            rv = gnutls_handshake(acme_tls_);
        } while (rv < 0 && rv != GNUTLS_E_AGAIN && gnutls_error_is_fatal(rv) == 0);
        if (rv == 0) {
            acme_handshake_done_ = true;
            shard_.log().debug("server acme challenge answered", {{"server-hostname", sni_}});
        }
    }
    if (acme_handshake_done_) rv = gnutls_bye(acme_tls_, GNUTLS_SHUT_WR);
    if (rv == GNUTLS_E_AGAIN || rv == GNUTLS_E_INTERRUPTED) {
        // Readiness through the loop, never a blocking wait.
        if (gnutls_record_get_direction(acme_tls_) == 1) {
            poll(kOpPollVisitorOut, visitor_.get(), POLLOUT);
        } else {
            visitor_poll_armed_ = true;
            poll(kOpPollVisitor, visitor_.get(), POLLIN | POLLRDHUP);
        }
        return;
    }
    if (!acme_handshake_done_) {
        shard_.log().debug("server acme challenge handshake failed", {{"server-hostname", sni_}},
                           gnutls_strerror(rv));
        return fail(CloseReason::kAcmeHandshakeFailed);
    }
    // close_notify sent (or the peer already went): the answer is complete.
    finish(CloseReason::kDone);
}

void VisitorSession::pump_wait_tcp(bool write) noexcept {
    relay::wait_tcp(*this, visitor_.get(), write, kOpPollVisitor, kOpPollVisitorOut);
}

void VisitorSession::pump_finished(bool reset) noexcept {
    if (reset) return fail(CloseReason::kReset);
    finish(CloseReason::kDone);
}

void VisitorSession::on_event(const core::Completion& c) noexcept {
    if (connector_.owns_op(c.token.op)) return on_connector_event(c);
    if (aborting()) return;  // late completions of a session being torn down
    switch (c.token.op) {
        case kOpDeadline:
            if (state_ == VisitorState::kOpen) return fail(CloseReason::kNoActiveTunnel);
            if (state_ == VisitorState::kAcme) return fail(CloseReason::kAcmeHandshakeTimeout);
            return fail(state_ == VisitorState::kConnect ? CloseReason::kUpstreamTimeout
                                                         : CloseReason::kHelloTimeout);
        case kOpPollVisitorOut:
            if (pump_started_) pump_.on_tcp_ready(true, c.result);
            if (state_ == VisitorState::kAcme) {
                if (c.result < 0 && c.result != -EINTR)
                    return fail(CloseReason::kAcmeHandshakeFailed);
                return continue_acme();
            }
            return;
        case kOpPollVisitor:
            if (pump_started_) return pump_.on_tcp_ready(false, c.result);
            visitor_poll_armed_ = false;
            if (state_ == VisitorState::kAcme) {
                if (c.result < 0 && c.result != -EINTR)
                    return fail(CloseReason::kAcmeHandshakeFailed);
                return continue_acme();
            }
            if (c.result < 0 && c.result != -EINTR) {
                return fail(state_ == VisitorState::kRelay ? CloseReason::kReset
                                                           : CloseReason::kHelloIoError);
            }
            if (state_ == VisitorState::kRelay) return drive_relay(true, false);
            return on_intake_readable(c.result < 0 ? 0 : c.result);
        case kOpPollUpstream:
            upstream_poll_armed_ = false;
            if (c.result < 0 && c.result != -EINTR) return fail(CloseReason::kReset);
            return drive_relay(false, true);
        default:
            return;
    }
}

void VisitorSession::on_shutdown_started() noexcept {
    // Stream registration is sealed: a Visitor still waiting for its stream goes too.
    if (state_ == VisitorState::kProxyHeader || state_ == VisitorState::kHello ||
        state_ == VisitorState::kOpen || state_ == VisitorState::kAcme)
        fail(CloseReason::kShutdown);
}

void VisitorSession::cut() noexcept {
    if (state_ == VisitorState::kClosed) return;
    if (state_ == VisitorState::kRelay) {
        set_linger_reset(visitor_.get());
        if (upstream_.valid()) set_linger_reset(upstream_.get());
    }
    finish(CloseReason::kShutdown);
}

void VisitorSession::fail(CloseReason r) noexcept {
    if (r == CloseReason::kReset) {
        // A reset or error on either side aborts both with RST.
        set_linger_reset(visitor_.get());
        if (upstream_.valid()) set_linger_reset(upstream_.get());
    }
    finish(r);
}

void VisitorSession::finish(CloseReason r) noexcept {
    if (state_ == VisitorState::kClosed || aborting()) return;
    reason_ = r;
    if (deadline_.valid()) worker().cancel_timer(deadline_);
    abort(static_cast<int>(r));
    stop_waiting();
    // A tunnel relay still running is cut: RESET_STREAM + STOP_SENDING (code 1), RST to the
    // Visitor (a no-op when the pump already finished).
    if (pump_started_) pump_.abort();
}

void VisitorSession::on_quiesced() noexcept {
    // Nothing is in flight any more: pipes, fds and slots can go.
    VisitorState last = state_;
    if (handed_off_) {
        // Shard 0 carries on with the socket: nothing ended here.
        state_ = VisitorState::kClosed;
        release_pre_routing();
        routes_.reset();
        shard_.on_visitor_closed(*this, slab_id_);  // destroys *this
        return;
    }
    // The counts move from the live relay to its label in the same loop step that removes the
    // session from the live list, so a scrape never sees them twice or not at all.
    ServerMetrics& m = shard_.metrics();
    if (last == VisitorState::kRelay) {
        const uint64_t in = bytes_in(), out = bytes_out();
        if (counts_ != nullptr) {
            counts_->bytes_in.add(in);
            counts_->bytes_out.add(out);
            if (reason_ == CloseReason::kReset) counts_->resets.add();
        }
        if (tunnel_ && member_ != nullptr) {
            member_->bytes_in += in;
            member_->bytes_out += out;
        }
        m.relay.observe_ns(core::now_ns() - relay_started_ns_);
    } else if (!(last == VisitorState::kAcme && reason_ == CloseReason::kDone)) {
        m.dropped[static_cast<size_t>(reason_) % kDropSlots].add();
    }
    state_ = VisitorState::kClosed;
    to_upstream_.release(shard_.pipes());
    to_visitor_.release(shard_.pipes());
    release_pre_routing();
    if (holds_relay_) {
        shard_.admission().release_active_relay();
        holds_relay_ = false;
    }
    if (holds_pending_) {
        shard_.admission().release_pending_open();
        holds_pending_ = false;
    }
    stop_waiting();
    if (pump_started_) pump_.abort();  // never leave the stream pointing at a freed pump
    if (counted_ && shard_.tunnels() != nullptr) shard_.tunnels()->stream_ended(*member_);
    counted_ = false;
    member_.reset();
    if (acme_tls_ != nullptr) {
        gnutls_deinit(acme_tls_);
        acme_tls_ = nullptr;
    }
    challenge_.reset();
    connector_.release(*this);
    close_fd(upstream_);
    close_fd(visitor_);

    auto& log = shard_.log();
    if (last == VisitorState::kRelay && tunnel_) {
        auto dur = std::chrono::milliseconds((core::now_ns() - started_ns_) / 1'000'000);
        if (log.enabled(obs::Level::kInfo)) {
            log.info("server visitor closed", {{"conn", conn_id_},
                                               {"state", visitor_state_name(last)},
                                               {"public-hostname", sni_},
                                               {"route", tunnel_label_},
                                               {"target", "tunnel"},
                                               {"bytes-in", pump_.bytes_to_stream() + buffered_},
                                               {"bytes-out", pump_.bytes_to_tcp()},
                                               {"duration", dur},
                                               {"reason", reason_text(reason_)}});
        }
    } else if (last == VisitorState::kRelay || last == VisitorState::kConnect) {
        auto dur = std::chrono::milliseconds((core::now_ns() - started_ns_) / 1'000'000);
        if (log.enabled(obs::Level::kInfo)) {
            log.info("server visitor closed",
                     {{"conn", conn_id_},
                      {"state", visitor_state_name(last)},
                      {"public-hostname", sni_},
                      {"route", route_ != nullptr ? std::string_view(route_->label) : "-"},
                      {"target", route_ != nullptr ? std::string_view(route_->upstream_text) : "-"},
                      {"bytes-in", to_upstream_.bytes()},
                      {"bytes-out", to_visitor_.bytes()},
                      {"duration", dur},
                      {"reason", reason_text(reason_)}});
        }
        if (reason_ == CloseReason::kUpstreamConnectFailed ||
            reason_ == CloseReason::kUpstreamTimeout ||
            reason_ == CloseReason::kUpstreamWriteFailed)
            shard_.admission_log().rejected(reason_, sni_);
    } else if (last == VisitorState::kAcme && reason_ == CloseReason::kDone) {
        // Answered: `server acme challenge answered` was logged.
    } else if (reason_ != CloseReason::kShutdown) {
        if (log.enabled(obs::Level::kDebug)) {
            if (sni_.empty()) {
                log.debug("server route rejected", {{"reason", reason_text(reason_)}});
            } else {
                log.debug("server route rejected",
                          {{"public-hostname", sni_}, {"reason", reason_text(reason_)}});
            }
        }
        shard_.admission_log().rejected(reason_, sni_);
    }
    routes_.reset();
    shard_.on_visitor_closed(*this, slab_id_);  // destroys *this
}

}  // namespace runewarp::server
