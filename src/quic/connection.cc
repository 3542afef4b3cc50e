// Connection: ngtcp2 trampolines and the connection lifecycle (feed, writes, expiry, closing).
#include "quic/connection.hh"

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <ngtcp2/ngtcp2_crypto.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace runewarp::quic {

namespace {

ngtcp2_tstamp ts_now() noexcept {
    return static_cast<ngtcp2_tstamp>(core::now_ns());
}

uint64_t bytes_in_flight(ngtcp2_conn* c) noexcept {
    ngtcp2_conn_info ci;
    ngtcp2_conn_get_conn_info(c, &ci);
    return ci.bytes_in_flight;
}

void random_bytes(uint8_t* p, size_t n) noexcept {
    (void)gnutls_rnd(GNUTLS_RND_NONCE, p, n);
}

void random_cid(ngtcp2_cid& cid, size_t len) noexcept {
    uint8_t buf[NGTCP2_MAX_CIDLEN];
    random_bytes(buf, len);
    ngtcp2_cid_init(&cid, buf, len);
}

ngtcp2_conn* get_conn(ngtcp2_crypto_conn_ref* ref) noexcept {
    return static_cast<Connection*>(ref->user_data)->raw();
}

bool same_port(const sockaddr* a, const sockaddr* b) noexcept {
    if (a == nullptr || b == nullptr || a->sa_family != b->sa_family) return false;
    if (a->sa_family == AF_INET) {
        return reinterpret_cast<const sockaddr_in*>(a)->sin_port ==
               reinterpret_cast<const sockaddr_in*>(b)->sin_port;
    }
    if (a->sa_family == AF_INET6) {
        return reinterpret_cast<const sockaddr_in6*>(a)->sin6_port ==
               reinterpret_cast<const sockaddr_in6*>(b)->sin6_port;
    }
    return false;
}

bool server_initiated_bidi(int64_t id) noexcept {
    return (id & 0x3) == 0x1;
}

}  // namespace

// ---- ngtcp2 trampolines -------------------------------------------------------------------------

struct Connection::Callbacks {
    static Connection& self(void* ud) noexcept { return *static_cast<Connection*>(ud); }

    static void rand(uint8_t* dest, size_t len, const ngtcp2_rand_ctx*) noexcept {
        random_bytes(dest, len);
    }
    static int new_cid(ngtcp2_conn*, ngtcp2_cid* cid, uint8_t* token, size_t len,
                       void* ud) noexcept {
        Connection& c = self(ud);
        // A server's further IDs follow the same steering as its first one: after a migration
        // the client addresses us by one of these, from a new port the kernel knows nothing of.
        if (c.role_ == Role::server) {
            make_steered_cid(*cid, len, c.owner_->cid_steering());
        } else {
            random_cid(*cid, len);
        }
        auto secret = c.owner_->reset_secret();
        if (ngtcp2_crypto_generate_stateless_reset_token(token, secret.data(), secret.size(),
                                                         cid) != 0)
            return NGTCP2_ERR_CALLBACK_FAILURE;
        c.owner_->on_cid_added(c, *cid);
        return 0;
    }
    static int remove_cid(ngtcp2_conn*, const ngtcp2_cid* cid, void* ud) noexcept {
        Connection& c = self(ud);
        c.owner_->on_cid_removed(c, *cid);
        return 0;
    }
    static int handshake_completed(ngtcp2_conn*, void* ud) noexcept {
        Connection& c = self(ud);
        if (!alpn_ok(c.tls_.get())) return NGTCP2_ERR_CALLBACK_FAILURE;
        // The server's handshake completes only after the Client's certificate was admitted.
        // A client waits for confirmation (HANDSHAKE_DONE): the Server may still refuse it.
        if (c.role_ == Role::server) c.handshake_pending_ = true;
        return 0;
    }
    static int handshake_confirmed(ngtcp2_conn*, void* ud) noexcept {
        Connection& c = self(ud);
        if (c.role_ == Role::client) c.handshake_pending_ = true;
        return 0;
    }
    static int stream_open(ngtcp2_conn*, int64_t id, void* ud) noexcept {
        Connection& c = self(ud);
        Stream* s = c.add_stream(id);
        if (s == nullptr) return NGTCP2_ERR_CALLBACK_FAILURE;
        if (c.handler_ != nullptr) {
            c.handler_->on_stream_opened(c, *s);
        } else {
            s->reset();
        }
        return 0;
    }
    static int recv_stream_data(ngtcp2_conn*, uint32_t flags, int64_t id, uint64_t,
                                const uint8_t* data, size_t len, void* ud, void* sud) noexcept {
        Stream* s = sud != nullptr ? static_cast<Stream*>(sud) : self(ud).stream(id);
        if (s == nullptr) return 0;
        s->on_data(std::span<const uint8_t>(data, len), (flags & NGTCP2_STREAM_DATA_FLAG_FIN) != 0);
        return 0;
    }
    static int acked(ngtcp2_conn*, int64_t id, uint64_t offset, uint64_t len, void* ud,
                     void* sud) noexcept {
        Stream* s = sud != nullptr ? static_cast<Stream*>(sud) : self(ud).stream(id);
        if (s != nullptr) s->on_acked(offset, len);
        return 0;
    }
    static int stream_close(ngtcp2_conn* conn, uint32_t flags, int64_t id, uint64_t code, void* ud,
                            void*) noexcept {
        Connection& c = self(ud);
        if (!(flags & NGTCP2_STREAM_CLOSE_FLAG_APP_ERROR_CODE_SET)) code = 0;
        // ngtcp2 does not replenish remote stream credit itself: one stream back per closed one.
        if (c.role_ == Role::client && server_initiated_bidi(id))
            ngtcp2_conn_extend_max_streams_bidi(conn, 1);
        c.remove_stream(id, code);
        return 0;
    }
    static int stream_reset(ngtcp2_conn*, int64_t id, uint64_t, uint64_t code, void* ud,
                            void*) noexcept {
        Connection& c = self(ud);
        Stream* s = c.stream(id);
        if (s != nullptr && s->handler_ != nullptr) s->handler_->on_stream_reset(*s, code);
        return 0;
    }
    static int stop_sending(ngtcp2_conn*, int64_t id, uint64_t code, void* ud, void*) noexcept {
        return stream_reset(nullptr, id, 0, code, ud, nullptr);
    }
    static int extend_local_bidi(ngtcp2_conn*, uint64_t, void* ud) noexcept {
        self(ud).streams_available_pending_ = true;
        return 0;
    }
    static int extend_stream_data(ngtcp2_conn*, int64_t id, uint64_t, void* ud, void*) noexcept {
        Connection& c = self(ud);
        if (Stream* s = c.stream(id)) {
            s->flow_blocked_ = false;
            if (s->has_unsent()) c.queue_stream(*s);
        }
        return 0;
    }
    static int path_validation(ngtcp2_conn*, uint32_t, const ngtcp2_path* path, const ngtcp2_path*,
                               ngtcp2_path_validation_result res, void* ud) noexcept {
        Connection& c = self(ud);
        // Only the client's own move (the path of its newest socket) is settled here.
        if (c.role_ != Role::client || c.old_ep_ == nullptr || c.ep_ == nullptr ||
            !same_port(path->local.addr, c.ep_->local_addr()))
            return 0;
        if (res == NGTCP2_PATH_VALIDATION_RESULT_SUCCESS) c.migration_done_pending_ = true;
        // The new path never answered: ngtcp2 stays on the old one (it only probed the new
        // path), and so do we; the new socket is released, a later migration may try again.
        if (res == NGTCP2_PATH_VALIDATION_RESULT_FAILURE) c.migration_failed_pending_ = true;
        return 0;
    }
    static int stateless_reset(ngtcp2_conn*, const ngtcp2_pkt_stateless_reset*, void* ud) noexcept {
        self(ud).stateless_reset_ = true;
        return 0;
    }
};

namespace {

void fill_callbacks(ngtcp2_callbacks& cb, Role role) noexcept {
    using C = Connection::Callbacks;
    cb = ngtcp2_callbacks{};
    if (role == Role::client) {
        cb.client_initial = ngtcp2_crypto_client_initial_cb;
        cb.recv_retry = ngtcp2_crypto_recv_retry_cb;
    } else {
        cb.recv_client_initial = ngtcp2_crypto_recv_client_initial_cb;
    }
    cb.recv_crypto_data = ngtcp2_crypto_recv_crypto_data_cb;
    cb.encrypt = ngtcp2_crypto_encrypt_cb;
    cb.decrypt = ngtcp2_crypto_decrypt_cb;
    cb.hp_mask = ngtcp2_crypto_hp_mask_cb;
    cb.update_key = ngtcp2_crypto_update_key_cb;
    cb.delete_crypto_aead_ctx = ngtcp2_crypto_delete_crypto_aead_ctx_cb;
    cb.delete_crypto_cipher_ctx = ngtcp2_crypto_delete_crypto_cipher_ctx_cb;
    cb.get_path_challenge_data = ngtcp2_crypto_get_path_challenge_data_cb;
    cb.version_negotiation = ngtcp2_crypto_version_negotiation_cb;
    cb.rand = C::rand;
    cb.get_new_connection_id = C::new_cid;
    cb.remove_connection_id = C::remove_cid;
    cb.handshake_completed = C::handshake_completed;
    cb.handshake_confirmed = C::handshake_confirmed;
    cb.stream_open = C::stream_open;
    cb.recv_stream_data = C::recv_stream_data;
    cb.acked_stream_data_offset = C::acked;
    cb.stream_close = C::stream_close;
    cb.stream_reset = C::stream_reset;
    cb.stream_stop_sending = C::stop_sending;
    cb.extend_max_local_streams_bidi = C::extend_local_bidi;
    cb.extend_max_stream_data = C::extend_stream_data;
    cb.path_validation = C::path_validation;
    cb.recv_stateless_reset = C::stateless_reset;
}

}  // namespace

// ---- Connection ---------------------------------------------------------------------------------

Connection::Connection(core::Worker& w, ConnectionOwner& owner, UdpEndpoint& ep, Role role,
                       const ConnectionConfig& cfg) noexcept
    : Session(w), owner_(&owner), ep_(&ep), role_(role), cfg_(cfg) {
    tls_state_.conn_ref.get_conn = get_conn;
    tls_state_.conn_ref.user_data = this;
}

Connection::~Connection() {
    streams_.clear();
    graveyard_.clear();
    if (conn_ != nullptr) ngtcp2_conn_del(conn_);
}

void Connection::settings_and_params(ngtcp2_settings& s,
                                     ngtcp2_transport_params& p) const noexcept {
    ngtcp2_settings_default(&s);
    s.initial_ts = ts_now();
    s.handshake_timeout = static_cast<ngtcp2_duration>(cfg_.handshake_timeout_ns);
    s.max_window = cfg_.max_conn_window;  // connection window auto-tuning up to this
    // Path MTU discovery (RFC 8899) through ngtcp2, with our probe list up to the largest probe.
    s.pmtud_probes = kPmtudProbes;
    s.pmtud_probeslen = std::size(kPmtudProbes);
    s.max_tx_udp_payload_size = kPmtudProbes[std::size(kPmtudProbes) - 1];
    static_assert(kPmtudProbes[std::size(kPmtudProbes) - 1] <= UdpEndpoint::kMaxPacket);
    ngtcp2_transport_params_default(&p);
    p.initial_max_stream_data_bidi_local = cfg_.stream_window;
    p.initial_max_stream_data_bidi_remote = cfg_.stream_window;
    p.initial_max_stream_data_uni = 0;
    p.initial_max_data = cfg_.conn_window;
    // Only the Server opens streams: it grants none, the Client its [client] max-streams.
    p.initial_max_streams_bidi = role_ == Role::server ? 0 : cfg_.max_streams_bidi;
    p.initial_max_streams_uni = 0;
    p.max_idle_timeout = static_cast<ngtcp2_duration>(cfg_.idle_timeout_ns);
    p.active_connection_id_limit = 4;  // spare connection IDs for migration
}

Result<Connection*> Connection::create_server(core::Worker& w, ConnectionOwner& owner,
                                              UdpEndpoint& ep, const ServerTls& tls,
                                              const ngtcp2_path& path, const ngtcp2_pkt_hd& hd,
                                              const ValidatedInitial* validated,
                                              const ConnectionConfig& cfg) {
    std::unique_ptr<Connection> c(new Connection(w, owner, ep, Role::server, cfg));
    ngtcp2_settings s;
    ngtcp2_transport_params p;
    c->settings_and_params(s, p);
    // The Initial being processed was stamped when its batch was read; ngtcp2 must not see it
    // as older than the connection.
    if (ep.rx_time() > 0) s.initial_ts = static_cast<ngtcp2_tstamp>(ep.rx_time());
    if (validated != nullptr) {
        // After a Retry: the original DCID comes from the token, this Initial's DCID is the
        // Retry's source CID, and the address counts as validated (no amplification limit).
        p.original_dcid = validated->original_dcid;
        p.retry_scid = hd.dcid;
        p.retry_scid_present = 1;
        s.token = validated->token.data();
        s.tokenlen = validated->token.size();
        s.token_type = NGTCP2_TOKEN_TYPE_RETRY;
    } else {
        p.original_dcid = hd.dcid;
    }
    p.original_dcid_present = 1;
    ngtcp2_cid scid;
    make_steered_cid(scid, kCidLen, owner.cid_steering());
    auto secret = owner.reset_secret();
    if (ngtcp2_crypto_generate_stateless_reset_token(p.stateless_reset_token, secret.data(),
                                                     secret.size(), &scid) != 0)
        return Error::msg("stateless reset token");
    p.stateless_reset_token_present = 1;
    ngtcp2_callbacks cb;
    fill_callbacks(cb, Role::server);
    int rv = ngtcp2_conn_server_new(&c->conn_, &hd.scid, &scid, &path, hd.version, &cb, &s, &p,
                                    nullptr, c.get());
    if (rv != 0) return Error::msg(std::string("ngtcp2_conn_server_new: ") + ngtcp2_strerror(rv));
    if (auto r = c->start(tls.new_session(c->tls_state_), scid); !r) return std::move(r).error();
    return c.release();
}

Result<void> Connection::start(Result<TlsSession> t, const ngtcp2_cid& scid) noexcept {
    if (!t) return std::move(t).error();
    tls_ = std::move(*t);
    ngtcp2_conn_set_tls_native_handle(conn_, tls_.get());
    ngtcp2_conn_set_keep_alive_timeout(conn_, static_cast<ngtcp2_duration>(cfg_.keep_alive_ns));
    if (!open()) return Error::msg("worker full: no slot for a connection");
    owner_->on_cid_added(*this, scid);
    return {};
}

Result<Connection*> Connection::create_client(core::Worker& w, ConnectionOwner& owner,
                                              UdpEndpoint& ep, const sockaddr* remote,
                                              socklen_t remote_len, const ClientTls& tls,
                                              const ConnectionConfig& cfg) {
    std::unique_ptr<Connection> c(new Connection(w, owner, ep, Role::client, cfg));
    ngtcp2_settings s;
    ngtcp2_transport_params p;
    c->settings_and_params(s, p);
    ngtcp2_cid dcid, scid;
    random_cid(dcid, 18);
    random_cid(scid, kCidLen);
    ngtcp2_path path{};
    path.local.addr = const_cast<sockaddr*>(ep.local_addr());
    path.local.addrlen = ep.local_addrlen();
    path.remote.addr = const_cast<sockaddr*>(remote);
    path.remote.addrlen = remote_len;
    ngtcp2_callbacks cb;
    fill_callbacks(cb, Role::client);
    int rv = ngtcp2_conn_client_new(&c->conn_, &dcid, &scid, &path, NGTCP2_PROTO_VER_V1, &cb, &s,
                                    &p, nullptr, c.get());
    if (rv != 0) return Error::msg(std::string("ngtcp2_conn_client_new: ") + ngtcp2_strerror(rv));
    if (auto r = c->start(tls.new_session(c->tls_state_), scid); !r) return std::move(r).error();
    Connection* raw = c.release();
    raw->want_write();  // the first Initial leaves with the next timer pass
    return raw;
}

std::span<const uint8_t> Connection::peer_certificate() const noexcept {
    if (!tls_) return {};
    unsigned n = 0;
    const gnutls_datum_t* certs = gnutls_certificate_get_peers(tls_.get(), &n);
    if (certs == nullptr || n == 0) return {};
    return std::span<const uint8_t>(certs[0].data, certs[0].size);
}

Stream* Connection::stream(int64_t id) noexcept {
    auto it = streams_.find(id);
    return it == streams_.end() ? nullptr : it->second.get();
}

Stream* Connection::add_stream(int64_t id) noexcept {
    std::unique_ptr<Stream> s(new (std::nothrow) Stream(*this, id, cfg_.send_buffer));
    if (!s) return nullptr;
    Stream* raw = s.get();
    streams_[id] = std::move(s);
    ngtcp2_conn_set_stream_user_data(conn_, id, raw);
    update_keep_alive();
    return raw;
}

void Connection::remove_stream(int64_t id, uint64_t code) noexcept {
    auto it = streams_.find(id);
    if (it == streams_.end()) return;
    Stream& st = *it->second;
    if (code == 0 && st.handler_ != nullptr && !st.reset_ && st.undelivered()) {
        // ngtcp2 closes a stream once every byte arrived and ours were acknowledged, whether
        // or not the handler took them: a consumer behind a full socket would lose the tail of
        // a response (and see a close without FIN). The stream stays, detached from ngtcp2,
        // until the handler has taken everything.
        st.transport_closed_ = true;
        lingering_.push_back(id);
        return;
    }
    drop_stream(id, code);
}

void Connection::finish_lingering_streams() noexcept {
    for (size_t i = 0; i < lingering_.size();) {
        auto it = streams_.find(lingering_[i]);
        if (it == streams_.end()) {
            lingering_[i] = lingering_.back();
            lingering_.pop_back();
            continue;
        }
        Stream& st = *it->second;
        if (st.handler_ != nullptr && !st.reset_ && st.undelivered()) {
            ++i;
            continue;
        }
        int64_t id = lingering_[i];
        lingering_[i] = lingering_.back();
        lingering_.pop_back();
        drop_stream(id, st.reset_ ? kStreamErrorCode : 0);
    }
}

void Connection::drop_stream(int64_t id, uint64_t code) noexcept {
    auto it = streams_.find(id);
    if (it == streams_.end()) return;
    std::unique_ptr<Stream> s = std::move(it->second);
    streams_.erase(it);
    update_keep_alive();
    s->closed_ = true;
    if (s->queued_) std::erase(send_queue_, s.get());
    s->queued_ = false;
    StreamHandler* h = s->handler_;
    s->handler_ = nullptr;
    Stream* raw = s.get();
    graveyard_.push_back(std::move(s));
    if (h != nullptr) h->on_stream_closed(*raw, code);
}

void Connection::update_keep_alive() noexcept {
    // A Client with open streams may fall silent for long (flow-control blocked by a slow
    // Visitor, or only receiving). If its address changes meanwhile (NAT rebinding), the Server
    // keeps sending to the old one and nothing moves until the Client speaks: with streams open
    // it pings after kBusyKeepAliveNs of silence, otherwise after the configured keep-alive.
    if (role_ != Role::client || conn_ == nullptr) return;
    const bool busy = !streams_.empty();
    if (busy == busy_keep_alive_) return;
    busy_keep_alive_ = busy;
    const int64_t d = busy ? std::min(cfg_.keep_alive_ns, kBusyKeepAliveNs) : cfg_.keep_alive_ns;
    ngtcp2_conn_set_keep_alive_timeout(conn_, static_cast<ngtcp2_duration>(d));
}

void Connection::queue_stream(Stream& s) noexcept {
    if (s.closed_ || s.reset_ || s.queued_ || s.transport_closed_) return;
    s.queued_ = true;
    send_queue_.push_back(&s);
}

Result<Stream*> Connection::open_stream(StreamHandler& h) noexcept {
    if (state_ != State::open || !established_) return Error{ENOTCONN, "connection not open"};
    int64_t id = -1;
    int rv = ngtcp2_conn_open_bidi_stream(conn_, &id, nullptr);
    if (rv == NGTCP2_ERR_STREAM_ID_BLOCKED) return Error{EAGAIN, "no stream credit"};
    if (rv != 0) return Error{EIO, std::string("open stream: ") + ngtcp2_strerror(rv)};
    Stream* s = add_stream(id);
    if (s == nullptr) {
        ngtcp2_conn_shutdown_stream(conn_, 0, id, kStreamErrorCode);
        return Error{ENOMEM, "stream allocation"};
    }
    s->handler_ = &h;
    return s;
}

uint64_t Connection::peer_credit() const noexcept {
    return closed() ? 0 : ngtcp2_conn_get_max_data_left(conn_);
}

size_t Connection::buffered_bytes() const noexcept {
    size_t n = 0;
    for (const auto& [id, s] : streams_) n += s->tx_buffered() + s->rx_buffered();
    return n;
}

void Connection::want_write() noexcept {
    if (state_ != State::open) return;
    write_pending_ = true;
    // Already due "now": the flush after this batch re-reads the expiry anyway, so a datagram
    // or a write does not need its own expiry query and timer-heap update.
    if (flush_scheduled_) return;
    if (in_ngtcp2_ == 0) update_timer();
}

void Connection::update_timer() noexcept {
    flush_scheduled_ = false;
    if (aborting() || state_ == State::done) {
        if (timer_armed_) worker().cancel_timer(timer_);
        timer_armed_ = false;
        return;
    }
    int64_t deadline = -1;
    if (state_ == State::closing || state_ == State::draining) {
        deadline = linger_deadline_;
    } else {
        ngtcp2_tstamp exp = ngtcp2_conn_get_expiry(conn_);
        if (exp != UINT64_MAX)
            deadline = static_cast<int64_t>(std::min<ngtcp2_tstamp>(exp, INT64_MAX));
        // Pending writes go out once the current batch of completions has been handled.
        // A blocked socket resumes through the owner's on_writable(), not by polling here.
        if (write_pending_ && ep_ != nullptr && !ep_->blocked()) {
            deadline = core::now_ns();
            flush_scheduled_ = true;
        }
    }
    if (deadline < 0) {
        if (timer_armed_) worker().cancel_timer(timer_);
        timer_armed_ = false;
        return;
    }
    if (!timer_armed_ || !worker().rearm_timer(timer_, deadline)) {
        timer_ = arm_timer(kOpTimer, deadline);
    }
    timer_armed_ = true;
}

void Connection::on_event(const core::Completion& c) noexcept {
    if (c.token.op != kOpTimer || aborting()) return;
    timer_armed_ = false;  // a fired handle is stale
    flush_scheduled_ = false;
    int64_t now = core::now_ns();
    if (state_ == State::closing || state_ == State::draining) {
        if (now >= linger_deadline_) {
            finish(close_info_.kind);
        } else {
            update_timer();
        }
        return;
    }
    if (state_ != State::open) return;
    ngtcp2_tstamp exp = ngtcp2_conn_get_expiry(conn_);
    if (exp <= static_cast<ngtcp2_tstamp>(now)) {
        int rv = ngtcp2_conn_handle_expiry(conn_, static_cast<ngtcp2_tstamp>(now));
        if (rv != 0) {
            handle_error(rv);
            return;
        }
    }
    flush();
}

void Connection::feed(UdpEndpoint& ep, const ngtcp2_path& path,
                      std::span<const uint8_t> pkt) noexcept {
    if (aborting() || state_ == State::done || state_ == State::draining) return;
    if (state_ == State::closing) {
        // Answer packets during the closing period with the same CONNECTION_CLOSE, backing off
        // exponentially (the 1st, 2nd, 4th, 8th ... packet) so a flood is not amplified.
        ++close_answers_;
        if (!close_pkt_.empty() && (close_answers_ & (close_answers_ - 1)) == 0) {
            std::memcpy(ep.tx_buffer(), close_pkt_.data(), close_pkt_.size());
            (void)ep.send(path, ep.tx_buffer(), close_pkt_.size(), close_pkt_.size());
        }
        return;
    }
    ngtcp2_pkt_info pi{};
    ++in_ngtcp2_;
    // One clock read per received batch (the endpoint stamps it), not one per packet.
    const auto ts = static_cast<ngtcp2_tstamp>(ep.rx_time());
    int rv = ngtcp2_conn_read_pkt(conn_, &path, &pi, pkt.data(), pkt.size(), ts);
    --in_ngtcp2_;
    if (rv != 0) {
        handle_error(rv);
        return;
    }
    last_rx_ns_ = static_cast<int64_t>(ts);
    after_processing();
    want_write();
}

void Connection::after_processing() noexcept {
    if (state_ != State::open) return;
    if (handshake_pending_) {
        handshake_pending_ = false;
        established_ = true;
        hs_reported_ = true;
        owner_->on_handshake_finished(*this, true);
        if (handler_ != nullptr && state_ == State::open) handler_->on_established(*this);
    }
    settle_migration();
    if (streams_available_pending_ && state_ == State::open) {
        streams_available_pending_ = false;
        if (handler_ != nullptr && established_) handler_->on_streams_available(*this);
    }
    if (close_pending_ && state_ == State::open) {
        close_pending_ = false;
        close(pending_close_code_, pending_close_reason_);
    }
}

void Connection::settle_migration() noexcept {
    if (!migration_done_pending_ && !migration_failed_pending_) return;
    const bool failed = migration_failed_pending_ && !migration_done_pending_;
    migration_done_pending_ = false;
    migration_failed_pending_ = false;
    if (old_ep_ == nullptr || ep_ == nullptr) return;
    UdpEndpoint* unused = old_ep_;
    if (failed) {
        unused = ep_;
        ep_ = old_ep_;
        ++failed_migrations_;
    }
    old_ep_ = nullptr;
    owner_->on_migrated(*this, *unused);
}

void Connection::flush() noexcept {
    graveyard_.clear();
    if (state_ != State::open || aborting()) return;
    if (!lingering_.empty()) finish_lingering_streams();
    after_processing();
    if (state_ != State::open) return;
    write_pending_ = false;
    write_streams();
    // A path validation can also end inside a write (its deadline is checked there).
    if (state_ == State::open) settle_migration();
    update_timer();
}

UdpEndpoint* Connection::endpoint_for(const ngtcp2_path& path) noexcept {
    if (old_ep_ != nullptr && same_port(path.local.addr, old_ep_->local_addr())) return old_ep_;
    return ep_;
}

SendStatus Connection::send_batch(const ngtcp2_path& path, size_t len, size_t seg) noexcept {
    UdpEndpoint* e = endpoint_for(path);
    if (e == nullptr || ep_ == nullptr) return SendStatus::dropped;
    return e->send(path, ep_->tx_buffer(), len, seg);
}

void Connection::write_streams() noexcept {
    if (ep_ == nullptr) return;
    if (ep_->blocked()) {
        write_pending_ = true;  // resumed by the owner on writable
        return;
    }
    // Nothing in flight before this round: what it sends starts a new wait for the peer.
    const bool idle_before = bytes_in_flight(conn_) == 0;
    uint8_t* buf = ep_->tx_buffer();
    // Packets are as large as the path's proven size (path_pkt); a PMTUD probe may be larger
    // (up to max_pkt), so every write may take that much, and a batch of path-sized packets
    // stays within one GSO send.
    const size_t max_pkt =
        std::min(ngtcp2_conn_get_max_tx_udp_payload_size(conn_), UdpEndpoint::kMaxPacket);
    const size_t path_pkt = std::min(ngtcp2_conn_get_path_max_tx_udp_payload_size(conn_), max_pkt);
    const size_t max_pkts = std::clamp<size_t>(ngtcp2_conn_get_send_quantum(conn_) / path_pkt, 1,
                                               UdpEndpoint::kMaxSegments);
    ngtcp2_path_storage ps, batch;
    ngtcp2_path_storage_zero(&ps);
    ngtcp2_path_storage_zero(&batch);
    size_t off = 0, seg = 0, in_batch = 0, total = 0;
    const ngtcp2_tstamp ts = ts_now();
    auto send_now = [&]() noexcept -> bool {
        SendStatus st = SendStatus::sent;
        if (off > 0) st = send_batch(batch.path, off, seg);
        off = 0;
        in_batch = 0;
        return st != SendStatus::blocked;
    };
    for (;;) {
        Stream* s = nullptr;
        while (!send_queue_.empty()) {
            if (send_rr_ >= send_queue_.size()) send_rr_ = 0;
            Stream* cand = send_queue_[send_rr_];
            if (cand->has_unsent() && !cand->flow_blocked_ && !cand->reset_) {
                s = cand;
                break;
            }
            cand->queued_ = false;
            send_queue_.erase(send_queue_.begin() + static_cast<ptrdiff_t>(send_rr_));
        }
        ngtcp2_vec vec[2];
        size_t nvec = 0;
        int64_t sid = -1;
        uint32_t flags = NGTCP2_WRITE_STREAM_FLAG_MORE;
        if (s != nullptr) {
            sid = s->id_;
            nvec = s->unsent(vec);
            if (s->fin_queued_ && !s->fin_sent_) flags |= NGTCP2_WRITE_STREAM_FLAG_FIN;
        }
        ngtcp2_ssize ndatalen = -1;
        ngtcp2_pkt_info pi{};
        const size_t room = std::min(max_pkt, UdpEndpoint::kTxCapacity - off);
        ngtcp2_ssize n = ngtcp2_conn_writev_stream(conn_, &ps.path, &pi, buf + off, room, &ndatalen,
                                                   flags, sid, vec, nvec, ts);
        if (s != nullptr && ndatalen >= 0) {
            s->sent_ += static_cast<uint64_t>(ndatalen);
            if ((flags & NGTCP2_WRITE_STREAM_FLAG_FIN) && s->sent_ == s->end_) s->fin_sent_ = true;
            // Rotate: the next packet serves the next stream.
            if (!send_queue_.empty()) send_rr_ = (send_rr_ + 1) % send_queue_.size();
        }
        if (n < 0) {
            if (n == NGTCP2_ERR_WRITE_MORE) continue;
            if (n == NGTCP2_ERR_STREAM_DATA_BLOCKED && s != nullptr) {
                s->flow_blocked_ = true;
                continue;
            }
            if ((n == NGTCP2_ERR_STREAM_SHUT_WR || n == NGTCP2_ERR_STREAM_NOT_FOUND) &&
                s != nullptr) {
                s->queued_ = false;
                std::erase(send_queue_, s);
                continue;
            }
            (void)send_now();
            handle_error(static_cast<int>(n));
            return;
        }
        if (n == 0) break;
        size_t len = static_cast<size_t>(n);
        if (off > 0 && (!ngtcp2_path_eq(&batch.path, &ps.path) || len > seg)) {
            // A batch has one path and one segment size: send what we have, start anew.
            uint8_t* pkt = buf + off;
            if (!send_now()) break;
            std::memmove(buf, pkt, len);
        }
        if (off == 0) {
            ngtcp2_path_copy(&batch.path, &ps.path);
            seg = len;
        }
        off += len;
        ++in_batch;
        ++total;
        if (len < seg || in_batch >= UdpEndpoint::kMaxSegments ||
            off + path_pkt > UdpEndpoint::kBatchBytes) {
            if (!send_now()) break;
        }
        if (total >= max_pkts) {
            // Paced: the rest goes when ngtcp2's expiry (the pacing timer) says so.
            write_pending_ = false;
            break;
        }
    }
    (void)send_now();
    ngtcp2_conn_update_pkt_tx_time(conn_, ts);
    if (idle_before && total > 0) in_flight_since_ns_ = static_cast<int64_t>(ts);
}

bool Connection::unresponsive(int64_t now_ns) const noexcept {
    if (state_ != State::open || !established_ || bytes_in_flight(conn_) == 0) return false;
    const int64_t since = std::max(last_rx_ns_, in_flight_since_ns_);
    const auto pto4 = static_cast<int64_t>(4 * ngtcp2_conn_get_pto(conn_));
    return now_ns - since > std::max(kUnresponsiveNs, pto4);
}

void Connection::handle_error(int liberr) noexcept {
    if (state_ != State::open) return;
    switch (liberr) {
        case NGTCP2_ERR_DRAINING:
            start_draining();
            return;
        case NGTCP2_ERR_IDLE_CLOSE:
            finish(CloseInfo::Kind::idle_timeout);
            return;
        case NGTCP2_ERR_HANDSHAKE_TIMEOUT:
            finish(CloseInfo::Kind::handshake_timeout);
            return;
        case NGTCP2_ERR_DROP_CONN:
            finish(CloseInfo::Kind::dropped);
            return;
        default:
            break;
    }
    ngtcp2_ccerr e;
    ngtcp2_ccerr_default(&e);
    if (liberr == NGTCP2_ERR_CRYPTO) {
        ngtcp2_ccerr_set_tls_alert(&e, ngtcp2_conn_get_tls_alert(conn_), nullptr, 0);
    } else {
        ngtcp2_ccerr_set_liberr(&e, liberr, nullptr, 0);
    }
    start_closing(e);
}

void Connection::close(uint64_t app_code, std::string_view reason) noexcept {
    if (state_ != State::open) return;
    if (in_ngtcp2_ > 0) {
        close_pending_ = true;
        pending_close_code_ = app_code;
        pending_close_reason_.assign(reason);
        want_write();
        return;
    }
    ngtcp2_ccerr e;
    ngtcp2_ccerr_default(&e);
    ngtcp2_ccerr_set_application_error(
        &e, app_code, reinterpret_cast<const uint8_t*>(reason.data()), reason.size());
    start_closing(e);
}

void Connection::start_closing(const ngtcp2_ccerr& err) noexcept {
    close_info_.kind = CloseInfo::Kind::local;
    close_info_.application = err.type == NGTCP2_CCERR_TYPE_APPLICATION;
    close_info_.code = err.error_code;
    close_info_.reason.assign(reinterpret_cast<const char*>(err.reason), err.reasonlen);
    if (ep_ == nullptr || ngtcp2_conn_in_closing_period(conn_) ||
        ngtcp2_conn_in_draining_period(conn_)) {
        finish(CloseInfo::Kind::local);
        return;
    }
    ngtcp2_path_storage_zero(&close_ps_);
    ngtcp2_pkt_info pi{};
    uint8_t* buf = ep_->tx_buffer();
    ngtcp2_ssize n = ngtcp2_conn_write_connection_close(conn_, &close_ps_.path, &pi, buf,
                                                        UdpEndpoint::kMaxPacket, &err, ts_now());
    if (n <= 0) {
        finish(CloseInfo::Kind::local);
        return;
    }
    close_pkt_.assign(buf, buf + n);
    (void)send_batch(close_ps_.path, static_cast<size_t>(n), static_cast<size_t>(n));
    state_ = State::closing;
    linger_deadline_ = core::now_ns() + 3 * static_cast<int64_t>(ngtcp2_conn_get_pto(conn_));
    notify_closed();
    update_timer();
}

void Connection::start_draining() noexcept {
    const ngtcp2_ccerr* e = ngtcp2_conn_get_ccerr(conn_);
    close_info_.kind =
        stateless_reset_ ? CloseInfo::Kind::stateless_reset : CloseInfo::Kind::remote;
    close_info_.application = e->type == NGTCP2_CCERR_TYPE_APPLICATION;
    close_info_.code = e->error_code;
    close_info_.reason.assign(reinterpret_cast<const char*>(e->reason), e->reasonlen);
    state_ = State::draining;
    linger_deadline_ = core::now_ns() + 3 * static_cast<int64_t>(ngtcp2_conn_get_pto(conn_));
    notify_closed();
    update_timer();
}

void Connection::finish(CloseInfo::Kind kind) noexcept {
    if (state_ == State::done) return;
    if (!closed_notified_) {
        close_info_.kind = kind;
        if (kind != CloseInfo::Kind::local) {
            close_info_.application = false;
            close_info_.code = 0;
        }
    }
    state_ = State::done;
    notify_closed();
    update_timer();
    abort(0);
}

void Connection::terminate() noexcept {
    finish(closed_notified_ ? close_info_.kind : CloseInfo::Kind::local);
}

void Connection::notify_closed() noexcept {
    if (closed_notified_) return;
    closed_notified_ = true;
    if (!hs_reported_) {
        hs_reported_ = true;
        owner_->on_handshake_finished(*this, false);
    }
    close_all_streams();
    ConnectionHandler* h = handler_;
    handler_ = nullptr;
    if (h != nullptr) h->on_closed(*this, close_info_);
}

void Connection::close_all_streams() noexcept {
    // Losing the connection aborts its streams (each reset with code 1).
    while (!streams_.empty()) drop_stream(streams_.begin()->first, kStreamErrorCode);
    lingering_.clear();
    for (Stream* s : send_queue_) s->queued_ = false;
    send_queue_.clear();
}

Result<void> Connection::migrate(UdpEndpoint& ep) noexcept {
    if (role_ != Role::client) return Error{EINVAL, "only a client migrates"};
    if (state_ != State::open || !established_) return Error{ENOTCONN, "connection not open"};
    const ngtcp2_path* cur = ngtcp2_conn_get_path(conn_);
    ngtcp2_path path{};
    path.local.addr = const_cast<sockaddr*>(ep.local_addr());
    path.local.addrlen = ep.local_addrlen();
    path.remote = cur->remote;
    int rv = ngtcp2_conn_initiate_migration(conn_, &path, ts_now());
    // The server replaces the connection ID the last migration retired a round trip later.
    if (rv == NGTCP2_ERR_CONN_ID_BLOCKED) return Error{EAGAIN, "migration: no spare connection ID"};
    if (rv != 0) return Error{EIO, std::string("migration: ") + ngtcp2_strerror(rv)};
    if (old_ep_ != nullptr && old_ep_ != ep_) {
        // A move still being validated was aborted: ngtcp2 never left the old path, so the
        // socket that goes is the unvalidated one.
        UdpEndpoint* probe = ep_;
        ep_ = old_ep_;
        old_ep_ = nullptr;
        owner_->on_migrated(*this, *probe);
    }
    old_ep_ = ep_;
    ep_ = &ep;
    want_write();
    return {};
}

void Connection::forget_endpoint(UdpEndpoint& ep) noexcept {
    if (old_ep_ == &ep) old_ep_ = nullptr;
    if (ep_ == &ep) ep_ = nullptr;
}

namespace {

// Where an orphaned connection's notifications go.
class NullOwner final : public ConnectionOwner {
public:
    void on_cid_added(Connection&, const ngtcp2_cid&) noexcept override {}
    void on_cid_removed(Connection&, const ngtcp2_cid&) noexcept override {}
    void on_handshake_finished(Connection&, bool) noexcept override {}
    void on_retired(Connection&) noexcept override {}
    void on_migrated(Connection&, UdpEndpoint&) noexcept override {}
    std::span<const uint8_t> reset_secret() const noexcept override { return secret_; }

private:
    uint8_t secret_[32]{};
};

NullOwner g_null_owner;

}  // namespace

void Connection::orphan() noexcept {
    owner_ = &g_null_owner;
    ep_ = nullptr;
    old_ep_ = nullptr;
}

void Connection::on_quiesced() noexcept {
    owner_->on_retired(*this);
    delete this;
}

}  // namespace runewarp::quic
