// Client role runtime: address workers with reconnect, stream sessions, shutdown.
#include "client/client.hh"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <deque>
#include <memory>
#include <random>
#include <string>

#include "client/resolver.hh"
#include "client/retry.hh"
#include "core/clock.hh"
#include "core/worker.hh"
#include "obs/log.hh"
#include "preflight/preflight.hh"
#include "proto/proxy_v2.hh"
#include "proto/stream_prefix.hh"
#include "quic/connection.hh"
#include "quic/listener.hh"
#include "quic/tls.hh"
#include "relay/stream_pump.hh"
#include "sys/limits.hh"
#include "sys/systemd.hh"

namespace runewarp::client {

const config::Service* select_service(const std::vector<config::Service>& services,
                                      std::string_view sni) noexcept {
    if (services.size() == 1 && services.front().catch_all()) return &services.front();
    for (const config::Service& s : services) {
        for (const std::string& h : s.public_hostnames) {
            if (h == sni) return &s;
        }
    }
    return nullptr;
}

namespace {

class ClientInstance;

core::BackendChoice backend_choice(config::EventBackend b) noexcept {
    switch (b) {
        case config::EventBackend::kIoUring:
            return core::BackendChoice::io_uring;
        case config::EventBackend::kEpoll:
            return core::BackendChoice::epoll;
        case config::EventBackend::kAuto:
            break;
    }
    return core::BackendChoice::automatic;
}

// The short cause of a nested error for operator lines: the text before the first ": ".
std::string short_cause(const std::string& s) {
    auto pos = s.find(": ");
    return pos == std::string::npos ? s : s.substr(0, pos);
}

std::string describe_close(const quic::CloseInfo& info) {
    return quic::describe_close(info, "server");
}

bool is_clean_close(const quic::CloseInfo& info) noexcept {
    using K = quic::CloseInfo::Kind;
    return (info.kind == K::remote || info.kind == K::local) && info.code == 0;
}

bool is_unauthorized(const quic::CloseInfo& info) noexcept {
    return !info.application && info.code == quic::kCryptoErrorAccessDenied;
}

// ---- stream sessions --------------------------------------------------------------------------

class StreamSession final : public core::Session,
                            public quic::StreamHandler,
                            public relay::StreamPumpOwner,
                            public ResolveListener {
public:
    StreamSession(core::Worker& w, ClientInstance& inst) noexcept : core::Session(w), inst_(inst) {}
    void start(quic::Stream& s) noexcept;

    // quic::StreamHandler (before the relay starts)
    size_t on_stream_data(quic::Stream& s, std::span<const uint8_t> data,
                          bool fin) noexcept override;
    void on_stream_writable(quic::Stream&) noexcept override {}
    void on_stream_reset(quic::Stream& s, uint64_t code) noexcept override;
    void on_stream_closed(quic::Stream& s, uint64_t code) noexcept override;

    // relay::StreamPumpOwner
    void pump_wait_tcp(bool write) noexcept override;
    void pump_finished(bool reset) noexcept override;

    // ResolveListener
    void on_resolved(uint64_t id, const std::string& error,
                     std::vector<ResolvedAddress>& addrs) noexcept override;

private:
    enum class Phase : uint8_t { intake, resolve, connect, write, relay, done };
    static constexpr uint8_t kOpTimer = 1;
    static constexpr uint8_t kOpConnect = 2;
    static constexpr uint8_t kOpSend = 3;
    static constexpr uint8_t kOpPollRead = 4;
    static constexpr uint8_t kOpPollWrite = 5;

    void on_event(const core::Completion& c) noexcept override;
    void on_quiesced() noexcept override;

    void reject(const std::string& reason) noexcept;
    void route() noexcept;
    void try_next_address() noexcept;
    void send_initial() noexcept;
    void start_relay() noexcept;
    void backend_failed(const char* reason, const std::string& detail) noexcept;
    // Ends the session; `reset` aborts the stream (code 1) if it is still ours.
    void finish(bool reset) noexcept;
    void arm_step_timer() noexcept;

    ClientInstance& inst_;
    quic::Stream* stream_ = nullptr;
    Phase phase_ = Phase::intake;
    proto::StreamPrefixDecoder decoder_;
    std::vector<uint8_t> prefix_;  // stream bytes taken so far (PROXY header + Visitor bytes)
    const config::Service* service_ = nullptr;
    std::string backend_text_;
    std::vector<ResolvedAddress> addrs_;
    size_t next_addr_ = 0;
    uint64_t resolve_id_ = 0;
    core::UniqueFd fd_;
    std::vector<uint8_t> out_;
    size_t out_off_ = 0;
    relay::StreamPump pump_;
    core::TimerHandle timer_{};
    bool timer_armed_ = false;
    bool linger_reset_ = false;
};

// ---- address workers --------------------------------------------------------------------------

class AddressWorker final : public core::Session,
                            public quic::ConnectionHandler,
                            public ResolveListener {
public:
    AddressWorker(core::Worker& w, ClientInstance& inst, const config::HostPort& addr) noexcept
        : core::Session(w), inst_(inst), addr_(addr), addr_text_(addr.text()) {}
    void start() noexcept { attempt(); }
    void stop() noexcept;
    bool connected() const noexcept { return connected_; }
    const std::string& address_text() const noexcept { return addr_text_; }

    // quic::ConnectionHandler
    void on_established(quic::Connection& c) noexcept override;
    void on_stream_opened(quic::Connection& c, quic::Stream& s) noexcept override;
    void on_streams_available(quic::Connection&) noexcept override {}
    void on_closed(quic::Connection& c, const quic::CloseInfo& info) noexcept override;

    // ResolveListener
    void on_resolved(uint64_t id, const std::string& error,
                     std::vector<ResolvedAddress>& addrs) noexcept override;

private:
    static constexpr uint8_t kOpRetry = 1;
    void on_event(const core::Completion& c) noexcept override;
    void on_quiesced() noexcept override;
    void attempt() noexcept;
    void dial(const ResolvedAddress& a) noexcept;
    // Schedules the next attempt and returns its delay in whole seconds for the log line.
    int64_t schedule_retry() noexcept;
    const char* retry_kind() const noexcept { return attempts_ <= 1 ? "initial" : "retry"; }
    bool first_failure() const noexcept { return attempts_ <= 1 && !ever_connected_; }

    ClientInstance& inst_;
    config::HostPort addr_;
    std::string addr_text_;
    std::string resolved_text_;
    RetryPolicy retry_;
    quic::Connection* conn_ = nullptr;
    // TLS credentials of recent attempts: a connection's session refers to them until it is
    // freed after its closing period, so they are kept a while after the attempt ends.
    std::deque<std::unique_ptr<quic::ClientTls>> tls_;
    uint64_t resolve_id_ = 0;
    uint64_t attempts_ = 0;
    core::TimerHandle timer_{};
    bool timer_armed_ = false;
    bool connected_ = false;
    bool ever_connected_ = false;
    bool stopped_ = false;
};

// ---- watchdog ---------------------------------------------------------------------------------

// Sends WATCHDOG=1 from the event loop every half WATCHDOG_USEC (spec 5.14).
class WatchdogSession final : public core::Session {
public:
    WatchdogSession(core::Worker& w, int64_t interval_ns) noexcept
        : core::Session(w), interval_ns_(interval_ns) {}
    void start() noexcept { arm_timer(kOpPing, core::now_ns() + interval_ns_); }

private:
    static constexpr uint8_t kOpPing = 1;
    void on_event(const core::Completion& c) noexcept override {
        if (!(c.flags & core::kCompletionTimer)) return;
        sys::notify_watchdog();
        arm_timer(kOpPing, core::now_ns() + interval_ns_);
    }
    void on_quiesced() noexcept override {}
    int64_t interval_ns_;
};

// ---- the instance -----------------------------------------------------------------------------

class ClientInstance final : public core::SignalListener {
public:
    ClientInstance(const config::ClientConfig& cfg, obs::Logger& log) : cfg_(cfg), log_(log) {}
    int run() noexcept;

    obs::Logger& log() noexcept { return log_; }
    const config::ClientConfig& cfg() const noexcept { return cfg_; }
    core::Worker& worker() noexcept { return *worker_; }
    // nullptr once shutdown began (the resolver session is gone).
    Resolver* resolver() noexcept { return resolver_; }
    uint64_t random() noexcept { return rng_(); }
    bool shutting_down() const noexcept { return shutting_down_; }

    Result<std::unique_ptr<quic::ClientTls>> load_tls(const std::string& server_name);
    void fatal(const std::string& message) noexcept;
    void on_connected(AddressWorker& w) noexcept;
    void on_disconnected() noexcept;
    void accept_stream(quic::Stream& s) noexcept;
    void stream_done() noexcept;
    void worker_done() noexcept { --live_workers_; }

    void on_signal(const signalfd_siginfo& info) noexcept override;

private:
    void begin_shutdown() noexcept;
    void update_status() noexcept;

    const config::ClientConfig& cfg_;
    obs::Logger& log_;
    std::unique_ptr<core::Worker> worker_;
    Resolver* resolver_ = nullptr;
    std::unique_ptr<WatchdogSession> watchdog_;
    std::vector<AddressWorker*> workers_;
    std::mt19937_64 rng_{std::random_device{}()};
    obs::RateLimiter saturation_limiter_;
    unsigned active_streams_ = 0;
    unsigned connected_count_ = 0;
    size_t live_workers_ = 0;
    bool ready_logged_ = false;
    bool shutting_down_ = false;
    int exit_code_ = 0;
};

// ---- StreamSession ----------------------------------------------------------------------------

void StreamSession::start(quic::Stream& s) noexcept {
    stream_ = &s;
    s.set_handler(this);
    arm_step_timer();
}

void StreamSession::arm_step_timer() noexcept {
    int64_t deadline = core::now_ns() + kStreamStepTimeoutNs;
    if (timer_armed_) {
        worker().rearm_timer(timer_, deadline);
    } else {
        timer_ = arm_timer(kOpTimer, deadline);
        timer_armed_ = true;
    }
}

size_t StreamSession::on_stream_data(quic::Stream&, std::span<const uint8_t> data,
                                     bool fin) noexcept {
    if (phase_ != Phase::intake) return 0;
    size_t before = prefix_.size();
    proto::PrefixStatus st = decoder_.feed(data);
    if (st == proto::PrefixStatus::kError) {
        reject(decoder_.reason());
        return data.size();
    }
    if (st == proto::PrefixStatus::kNeedMore) {
        prefix_.insert(prefix_.end(), data.begin(), data.end());
        if (fin) reject(decoder_.eof_reason());
        return data.size();
    }
    // Done: keep exactly the prefix through the ClientHello; later bytes stay in the stream
    // for the relay, and so does the FIN (it must reach the pump).
    size_t end = decoder_.hello_end();
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
    const std::string& sni = decoder_.sni();
    service_ = select_service(inst_.cfg().services, sni);
    if (service_ == nullptr) {
        inst_.log().warn("client route unavailable",
                         {{"public-hostname", sni}, {"reason", "no-matching-service"}});
        return finish(true);
    }
    backend_text_ = service_->backend.text();
    inst_.log().debug("client route passthrough",
                      {{"public-hostname", sni}, {"backend-address", backend_text_}});
    arm_step_timer();  // 5 s for resolution and connect together
    ResolvedAddress lit;
    if (literal_address(service_->backend.host, service_->backend.port, lit)) {
        addrs_.push_back(lit);
        phase_ = Phase::connect;
        return try_next_address();
    }
    Resolver* r = inst_.resolver();
    if (r == nullptr) return finish(true);
    phase_ = Phase::resolve;
    resolve_id_ = r->resolve(service_->backend.host, service_->backend.port, SOCK_STREAM, *this);
}

void StreamSession::on_resolved(uint64_t, const std::string& error,
                                std::vector<ResolvedAddress>& addrs) noexcept {
    resolve_id_ = 0;
    if (phase_ != Phase::resolve) return;
    if (!error.empty()) return backend_failed("backend-connect-failed", error);
    addrs_ = std::move(addrs);
    phase_ = Phase::connect;
    try_next_address();
}

void StreamSession::try_next_address() noexcept {
    if (fd_) close_fd(fd_);
    if (next_addr_ >= addrs_.size()) {
        return backend_failed("backend-connect-failed", "no address accepted the connection");
    }
    const ResolvedAddress& a = addrs_[next_addr_++];
    int fd = ::socket(a.addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return backend_failed("backend-connect-failed", "socket failed");
    fd_ = core::UniqueFd(fd);
    int one = 1;
    (void)::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    connect(kOpConnect, fd, reinterpret_cast<const sockaddr*>(&a.addr), a.len);
}

void StreamSession::send_initial() noexcept {
    out_.clear();
    const proto::Tuple& t = decoder_.tuple();
    if (service_->proxy_v2) {
        uint8_t hdr[64];
        size_t n = 0;
        if (!proto::encode_proxy_v2(t, hdr, n)) {
            return backend_failed("backend-write-failed", "cannot encode PROXY v2 header");
        }
        out_.insert(out_.end(), hdr, hdr + n);
    }
    size_t off = decoder_.visitor_offset();
    if (off < prefix_.size()) {
        out_.insert(out_.end(), prefix_.begin() + static_cast<ptrdiff_t>(off), prefix_.end());
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
    inst_.log().warn("client route unavailable",
                     {{"public-hostname", decoder_.sni()},
                      {"backend-address", backend_text_},
                      {"reason", reason}},
                     short_cause(detail));
    if (short_cause(detail) != detail) {
        inst_.log().debug("client route unavailable detail", {{"public-hostname", decoder_.sni()}},
                          detail);
    }
    finish(true);
}

void StreamSession::pump_wait_tcp(bool write) noexcept {
    if (aborting()) return;
    if (write) {
        poll(kOpPollWrite, fd_.get(), POLLOUT);
    } else {
        poll(kOpPollRead, fd_.get(), POLLIN | POLLRDHUP);
    }
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
        if (Resolver* r = inst_.resolver()) r->cancel(resolve_id_);
        resolve_id_ = 0;
    }
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
        case kOpConnect:
            if (phase_ != Phase::connect) return;
            if (c.result < 0) return try_next_address();
            return send_initial();
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
    if (fd_ && linger_reset_) {
        linger l{1, 0};
        (void)::setsockopt(fd_.get(), SOL_SOCKET, SO_LINGER, &l, sizeof(l));
    }
    if (fd_) close_fd(fd_);
    ClientInstance& inst = inst_;
    delete this;
    inst.stream_done();
}

// ---- AddressWorker ----------------------------------------------------------------------------

void AddressWorker::attempt() noexcept {
    if (stopped_) return;
    ++attempts_;
    ResolvedAddress lit;
    if (literal_address(addr_.host, addr_.port, lit)) {
        std::vector<ResolvedAddress> v{lit};
        return on_resolved(0, {}, v);
    }
    Resolver* r = inst_.resolver();
    if (r == nullptr) return;
    resolve_id_ = r->resolve(addr_.host, addr_.port, SOCK_DGRAM, *this);
}

void AddressWorker::on_resolved(uint64_t, const std::string& error,
                                std::vector<ResolvedAddress>& addrs) noexcept {
    resolve_id_ = 0;
    if (stopped_) return;
    if (!error.empty()) {
        bool first = first_failure();
        int64_t next = schedule_retry();
        obs::Level lvl = first ? obs::Level::kError : obs::Level::kWarn;
        if (inst_.log().enabled(lvl)) {
            inst_.log().log(lvl, "client tunnel resolution failed",
                            {{"server-address", addr_text_},
                             {"retry", retry_kind()},
                             {"next-retry-delay", std::chrono::milliseconds(next * 1000)}},
                            short_cause(error));
        }
        if (short_cause(error) != error) {
            inst_.log().debug("client tunnel resolution failed detail",
                              {{"server-address", addr_text_}}, error);
        }
        return;
    }
    dial(addrs.front());
}

void AddressWorker::dial(const ResolvedAddress& a) noexcept {
    resolved_text_ = format_sockaddr(reinterpret_cast<const sockaddr*>(&a.addr), a.len);
    auto tls = inst_.load_tls(addr_.host);
    if (!tls) {
        inst_.log().error("client local material failed", {{"server-address", addr_text_}},
                          tls.error().message);
        return inst_.fatal(tls.error().message);
    }
    inst_.log().info("client tunnel connection connecting", {{"server-address", addr_text_},
                                                             {"resolved-address", resolved_text_},
                                                             {"retry", retry_kind()}});
    auto c =
        quic::dial(inst_.worker(), reinterpret_cast<const sockaddr*>(&a.addr), a.len, **tls, *this);
    tls_.push_back(std::move(*tls));
    while (tls_.size() > 8) tls_.pop_front();
    if (!c) {
        bool first = first_failure();
        int64_t next = schedule_retry();
        obs::Level lvl = first ? obs::Level::kError : obs::Level::kWarn;
        if (inst_.log().enabled(lvl)) {
            inst_.log().log(lvl, "client tunnel connection failed",
                            {{"server-address", addr_text_},
                             {"resolved-address", resolved_text_},
                             {"retry", retry_kind()},
                             {"next-retry-delay", std::chrono::milliseconds(next * 1000)}},
                            short_cause(c.error().message));
        }
        if (short_cause(c.error().message) != c.error().message) {
            inst_.log().debug("client tunnel connection failed detail",
                              {{"server-address", addr_text_}}, c.error().message);
        }
        return;
    }
    conn_ = *c;
}

void AddressWorker::on_established(quic::Connection& c) noexcept {
    if (&c != conn_ || stopped_) return;
    connected_ = true;
    ever_connected_ = true;
    retry_.reset();
    inst_.log().info("client tunnel connection connected",
                     {{"server-address", addr_text_}, {"resolved-address", resolved_text_}});
    inst_.on_connected(*this);
}

void AddressWorker::on_stream_opened(quic::Connection&, quic::Stream& s) noexcept {
    if (stopped_) {
        s.reset(quic::kStreamErrorCode);
        return;
    }
    inst_.accept_stream(s);
}

void AddressWorker::on_closed(quic::Connection& c, const quic::CloseInfo& info) noexcept {
    if (&c != conn_) return;
    conn_ = nullptr;
    bool was_connected = connected_;
    if (connected_) {
        connected_ = false;
        inst_.on_disconnected();
    }
    if (stopped_) return;
    bool first = first_failure();
    int64_t next = schedule_retry();
    std::chrono::milliseconds delay(next * 1000);
    std::string cause = describe_close(info);
    obs::Logger& log = inst_.log();
    if (was_connected) {
        if (is_clean_close(info)) {
            log.info("client tunnel connection closed",
                     {{"server-address", addr_text_}, {"next-retry-delay", delay}}, cause);
        } else {
            log.warn("client tunnel connection dropped",
                     {{"server-address", addr_text_}, {"next-retry-delay", delay}}, cause);
        }
        return;
    }
    if (is_unauthorized(info)) {
        log.warn("client tunnel connection unauthorized",
                 {{"server-address", addr_text_},
                  {"resolved-address", resolved_text_},
                  {"retry", retry_kind()},
                  {"next-retry-delay", delay}},
                 "the Server does not admit this client identity");
        return;
    }
    obs::Level lvl = first ? obs::Level::kError : obs::Level::kWarn;
    if (log.enabled(lvl)) {
        log.log(lvl, "client tunnel connection failed",
                {{"server-address", addr_text_},
                 {"resolved-address", resolved_text_},
                 {"retry", retry_kind()},
                 {"next-retry-delay", delay}},
                cause);
    }
}

int64_t AddressWorker::schedule_retry() noexcept {
    int64_t delay = retry_.next_delay_ns(inst_.random());
    int64_t deadline = core::now_ns() + delay;
    if (timer_armed_) {
        worker().rearm_timer(timer_, deadline);
    } else {
        timer_ = arm_timer(kOpRetry, deadline);
        timer_armed_ = true;
    }
    return delay_log_seconds(delay);
}

void AddressWorker::on_event(const core::Completion& c) noexcept {
    if ((c.flags & core::kCompletionTimer) && c.token.op == kOpRetry) {
        timer_armed_ = false;
        attempt();
    }
}

void AddressWorker::stop() noexcept {
    if (stopped_) return;
    stopped_ = true;
    if (timer_armed_) {
        worker().cancel_timer(timer_);
        timer_armed_ = false;
    }
    if (resolve_id_ != 0) {
        if (Resolver* r = inst_.resolver()) r->cancel(resolve_id_);
        resolve_id_ = 0;
    }
    if (conn_ != nullptr) {
        quic::Connection* c = conn_;
        conn_ = nullptr;
        if (connected_) {
            connected_ = false;
            inst_.on_disconnected();
        }
        inst_.log().info("client instance graceful shutdown closing tunnel connection",
                         {{"server-address", addr_text_}});
        c->set_handler(nullptr);
        c->close(quic::kAppCloseCode, "graceful shutdown");
    }
    abort(0);
}

void AddressWorker::on_quiesced() noexcept {
    // Owned by the instance, which frees it after the loop ends (the TLS credentials must
    // outlive closing connections).
    inst_.worker_done();
}

// ---- ClientInstance ---------------------------------------------------------------------------

Result<std::unique_ptr<quic::ClientTls>> ClientInstance::load_tls(const std::string& server_name) {
    // Reloaded on every attempt by the rules `config check` and startup apply.
    auto m = preflight::load_client_material(cfg_);
    if (!m) return std::move(m).error();
    quic::ClientTlsConfig tc;
    tc.server_name = server_name;
    tc.cert_pem = std::move(m->identity.cert_pem);
    tc.key_pem = std::move(m->identity.key_pem);
    if (m->server_trust == config::Trust::kCaFile) {
        tc.trust = quic::ServerTrust::ca_file;
        tc.ca_pem = std::move(m->server_ca_pem);
    } else {
        tc.trust = quic::ServerTrust::system;
    }
    auto tls = quic::ClientTls::create(std::move(tc));
    if (!tls) return Error::msg("server trust: " + tls.error().message);
    return std::move(*tls);
}

void ClientInstance::fatal(const std::string&) noexcept {
    exit_code_ = 1;
    begin_shutdown();
}

void ClientInstance::on_connected(AddressWorker& w) noexcept {
    ++connected_count_;
    if (!ready_logged_) {
        ready_logged_ = true;
        log_.info("client ready", {{"server-address", w.address_text()}});
    }
    update_status();
}

void ClientInstance::on_disconnected() noexcept {
    if (connected_count_ > 0) --connected_count_;
    update_status();
}

void ClientInstance::update_status() noexcept {
    if (shutting_down_) return;
    std::string s = "connected " + std::to_string(connected_count_) + "/" +
                    std::to_string(workers_.size()) + " server addresses";
    sys::notify_status(s);
}

void ClientInstance::accept_stream(quic::Stream& s) noexcept {
    if (shutting_down_ || active_streams_ >= kMaxStreamHandlers) {
        s.reset(quic::kStreamErrorCode);
        if (!shutting_down_) {
            if (auto d = saturation_limiter_.on_saturated(); d.log) {
                log_.warn("client stream handlers saturated",
                          {{"active-work", active_streams_}, {"limit", kMaxStreamHandlers}});
            }
        }
        return;
    }
    auto* ss = new StreamSession(*worker_, *this);
    if (!ss->open()) {
        delete ss;
        s.reset(quic::kStreamErrorCode);
        return;
    }
    ++active_streams_;
    if (saturation_limiter_.on_success()) log_.info("client stream handlers recovered");
    ss->start(s);
}

void ClientInstance::stream_done() noexcept {
    if (active_streams_ > 0) --active_streams_;
}

void ClientInstance::on_signal(const signalfd_siginfo& info) noexcept {
    switch (info.ssi_signo) {
        case SIGTERM:
        case SIGINT:
        case SIGQUIT:
            begin_shutdown();
            return;
        default:
            return;  // SIGHUP: reload is not part of this build
    }
}

void ClientInstance::begin_shutdown() noexcept {
    if (shutting_down_) return;
    shutting_down_ = true;
    log_.info("client instance graceful shutdown started");
    sys::notify_stopping();
    for (AddressWorker* w : workers_) w->stop();
    if (resolver_ != nullptr) {
        resolver_->shutdown();
        resolver_ = nullptr;
    }
    worker_->stop();
}

int ClientInstance::run() noexcept {
    core::WorkerOptions wo;
    wo.loop.choice = backend_choice(cfg_.event_backend);
    auto w = core::Worker::create(wo);
    if (!w) {
        log_.error("client startup failed", {}, w.error().message);
        return 1;
    }
    worker_ = std::move(*w);
    if (!worker_->fallback_reason().empty()) {
        log_.warn("client event loop fallback", {{"backend", "epoll"}}, worker_->fallback_reason());
    }
    if (auto r = worker_->watch_signals({SIGTERM, SIGINT, SIGQUIT, SIGHUP}, *this); !r) {
        log_.error("client startup failed", {}, r.error().message);
        return 1;
    }
    auto r = Resolver::create(*worker_, 4);
    if (!r) {
        log_.error("client startup failed", {}, r.error().message);
        return 1;
    }
    resolver_ = *r;
    for (const config::HostPort& hp : cfg_.server_addresses) {
        auto* aw = new AddressWorker(*worker_, *this, hp);
        if (!aw->open()) {
            delete aw;
            log_.error("client startup failed", {}, "no handler slot");
            return 1;
        }
        workers_.push_back(aw);
    }
    live_workers_ = workers_.size();
    if (auto wd = sys::watchdog_ping_interval(); wd.count() > 0) {
        watchdog_ = std::make_unique<WatchdogSession>(*worker_, wd.count() * 1000);
        if (watchdog_->open()) watchdog_->start();
    }
    sys::notify_ready("connected 0/" + std::to_string(workers_.size()) + " server addresses");
    for (AddressWorker* aw : workers_) aw->start();
    while (!shutting_down_) {
        auto rr = worker_->run_once();
        if (!rr) {
            log_.error("client event loop failed", {}, rr.error().message);
            exit_code_ = 1;
            begin_shutdown();
        }
    }
    // Let CONNECTION_CLOSE frames leave (spec 5.14: 100 ms), then exit.
    (void)worker_->run_until([] { return false; }, core::now_ns() + kCloseFlushNs);
    return exit_code_;
}

}  // namespace

int run_client(const config::ClientConfig& cfg) noexcept {
    obs::Logger& log = obs::process_logger();
    // Every Visitor stream holds a backend socket: up to 1024 per connection.
    sys::raise_nofile_limit();
    // The instance (and with it every session) lives until process exit: closing connections
    // may still hold it when the flush window ends.
    static ClientInstance* instance = nullptr;
    instance = new ClientInstance(cfg, log);
    return instance->run();
}

}  // namespace runewarp::client
