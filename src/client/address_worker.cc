// AddressWorker: resolution, a Happy Eyeballs race of QUIC dials, retry policy, live connection.
#include "client/address_worker.hh"

#include <sys/socket.h>

#include <chrono>

#include "client/client_shard.hh"
#include "core/clock.hh"
#include "net/address.hh"
#include "obs/log.hh"
#include "quic/listener.hh"

namespace runewarp::client {

namespace {

bool is_clean_close(const quic::CloseInfo& info) noexcept {
    using K = quic::CloseInfo::Kind;
    return (info.kind == K::remote || info.kind == K::local) && info.code == 0;
}

bool is_unauthorized(const quic::CloseInfo& info) noexcept {
    return !info.application && info.code == quic::kCryptoErrorAccessDenied;
}

// At most this many addresses of one answer are dialled in a round.
constexpr size_t kMaxAddressesPerRound = 8;
// TLS credentials kept for connections that may still be closing.
constexpr size_t kKeptCredentials = 8;

}  // namespace

AddressWorker::AddressWorker(core::Worker& w, ClientShard& shard,
                             const config::HostPort& addr) noexcept
    : core::Session(w), shard_(shard), addr_(addr), addr_text_(addr.text()) {}

AddressWorker::~AddressWorker() = default;

void AddressWorker::attempt() noexcept {
    if (stopped_ || retiring_) return;
    ++rounds_;
    round_unauthorized_ = false;
    last_failed_address_.clear();
    last_cause_.clear();
    net::ResolvedAddress lit;
    if (net::literal_address(addr_.host, addr_.port, lit)) {
        net::Resolution r;
        r.addrs.push_back(lit);
        return on_resolved(0, r);
    }
    net::Resolver* r = shard_.resolver();
    if (r == nullptr) return;
    resolve_id_ = r->resolve(addr_.host, addr_.port, SOCK_DGRAM, *this);
}

void AddressWorker::on_resolved(uint64_t, net::Resolution& r) noexcept {
    resolve_id_ = 0;
    if (stopped_) return;
    if (!r.error.empty()) {
        bool first = first_failure();
        int64_t next = schedule_retry();
        obs::Level lvl = first ? obs::Level::kError : obs::Level::kWarn;
        if (shard_.log().enabled(lvl)) {
            shard_.log().log(lvl, "client tunnel resolution failed",
                             {{"server-address", addr_text_},
                              {"retry", retry_kind()},
                              {"next-retry-delay", std::chrono::milliseconds(next * 1000)}},
                             r.error);
        }
        return;
    }
    auto tls = shard_.load_tls(addr_.host);
    if (!tls) {
        shard_.log().error("client local material failed", {{"server-address", addr_text_}},
                           tls.error().message);
        return shard_.fatal(tls.error().message);
    }
    tls_.push_back(std::move(*tls));
    while (tls_.size() > kKeptCredentials) tls_.pop_front();
    addrs_ = std::move(r.addrs);
    net::interleave_families(addrs_);
    if (addrs_.size() > kMaxAddressesPerRound) addrs_.resize(kMaxAddressesPerRound);
    next_addr_ = 0;
    start_next_dial();
}

void AddressWorker::start_next_dial() noexcept {
    cancel_stagger();
    while (!stopped_ && conn_ == nullptr && next_addr_ < addrs_.size()) {
        const net::ResolvedAddress& a = addrs_[next_addr_++];
        std::string text = net::format_address(a);
        shard_.log().info(
            "client tunnel connection connecting",
            {{"server-address", addr_text_}, {"resolved-address", text}, {"retry", retry_kind()}});
        quic::DialOptions opts;
        opts.conn.max_streams_bidi = shard_.cfg().max_streams;
        auto c = quic::dial(shard_.worker(), a.sa(), a.len, *tls_.back(), *this, opts);
        if (!c) {
            log_attempt_failure(text, c.error().message);
            continue;  // this address cannot even be dialled: the next one starts now
        }
        dials_.push_back(Dial{*c, std::move(text)});
        if (next_addr_ < addrs_.size()) {
            stagger_timer_ = arm_timer(kOpStagger, core::now_ns() + net::kAttemptDelayNs);
            stagger_armed_ = true;
        }
        return;
    }
    if (!stopped_ && conn_ == nullptr && dials_.empty()) round_failed();
}

void AddressWorker::log_attempt_failure(const std::string& resolved,
                                        const std::string& cause) noexcept {
    last_failed_address_ = resolved;
    last_cause_ = cause;
    shard_.log().debug("client tunnel connection attempt failed",
                       {{"server-address", addr_text_}, {"resolved-address", resolved}}, cause);
}

void AddressWorker::round_failed() noexcept {
    bool first = first_failure();
    int64_t next = schedule_retry();
    std::chrono::milliseconds delay(next * 1000);
    obs::Logger& log = shard_.log();
    if (round_unauthorized_) {
        log.warn("client tunnel connection unauthorized",
                 {{"server-address", addr_text_},
                  {"resolved-address", last_failed_address_},
                  {"retry", retry_kind()},
                  {"next-retry-delay", delay}},
                 "the Server does not admit this client identity");
        return;
    }
    obs::Level lvl = first ? obs::Level::kError : obs::Level::kWarn;
    if (log.enabled(lvl)) {
        log.log(lvl, "client tunnel connection failed",
                {{"server-address", addr_text_},
                 {"resolved-address", last_failed_address_},
                 {"retry", retry_kind()},
                 {"next-retry-delay", delay}},
                short_cause(last_cause_));
    }
    if (short_cause(last_cause_) != last_cause_) {
        log.debug("client tunnel connection failed detail", {{"server-address", addr_text_}},
                  last_cause_);
    }
}

void AddressWorker::close_dials() noexcept {
    std::vector<Dial> dials;
    dials.swap(dials_);
    for (Dial& d : dials) {
        d.conn->set_handler(nullptr);
        d.conn->close(quic::kAppCloseCode, "graceful shutdown");
    }
}

void AddressWorker::cancel_stagger() noexcept {
    if (stagger_armed_) {
        worker().cancel_timer(stagger_timer_);
        stagger_armed_ = false;
    }
}

void AddressWorker::on_established(quic::Connection& c) noexcept {
    if (stopped_) return;
    auto it =
        std::find_if(dials_.begin(), dials_.end(), [&](const Dial& d) { return d.conn == &c; });
    if (it == dials_.end()) return;
    conn_ = &c;
    resolved_text_ = std::move(it->resolved_text);
    dials_.erase(it);
    // First authenticated connection wins the race: the other dials are closed.
    cancel_stagger();
    close_dials();
    if (ServerAddressCounts* sc = shard_.server_counts(addr_text_); sc != nullptr) {
        sc->connects.add();
        if (ever_connected_) sc->reconnects.add();
    }
    ever_connected_ = true;
    retry_.reset();
    shard_.log().info("client tunnel connection connected",
                      {{"server-address", addr_text_}, {"resolved-address", resolved_text_}});
    shard_.on_connected(*this);
}

void AddressWorker::on_stream_opened(quic::Connection&, quic::Stream& s) noexcept {
    if (stopped_) {
        s.reset(quic::kStreamErrorCode);
        return;
    }
    shard_.accept_stream(s);
}

void AddressWorker::on_closed(quic::Connection& c, const quic::CloseInfo& info) noexcept {
    std::string cause = quic::describe_close(info, "server");
    if (&c == conn_) {
        conn_ = nullptr;
        shard_.on_disconnected(*this);
        if (stopped_) return;
        if (retiring_) {
            shard_.log().info("client tunnel connection closed", {{"server-address", addr_text_}},
                              cause +
                                  "; the address was removed from the configuration, it is "
                                  "not dialled again");
            stop();
            return;
        }
        std::chrono::milliseconds delay(schedule_retry() * 1000);
        if (is_clean_close(info)) {
            shard_.log().info("client tunnel connection closed",
                              {{"server-address", addr_text_}, {"next-retry-delay", delay}}, cause);
        } else {
            shard_.log().warn("client tunnel connection dropped",
                              {{"server-address", addr_text_}, {"next-retry-delay", delay}}, cause);
        }
        return;
    }
    auto it =
        std::find_if(dials_.begin(), dials_.end(), [&](const Dial& d) { return d.conn == &c; });
    if (it == dials_.end()) return;
    std::string resolved = std::move(it->resolved_text);
    dials_.erase(it);
    if (stopped_) return;
    log_attempt_failure(resolved, cause);
    if (is_unauthorized(info)) {
        // The Server answered and refused this identity: other addresses would hear the same.
        round_unauthorized_ = true;
        cancel_stagger();
        close_dials();
        next_addr_ = addrs_.size();
    }
    // A failed dial hands over to the next address at once.
    start_next_dial();
}

int64_t AddressWorker::schedule_retry() noexcept {
    int64_t delay = retry_.next_delay_ns(shard_.random());
    int64_t deadline = core::now_ns() + delay;
    if (!(retry_armed_ && worker().rearm_timer(retry_timer_, deadline))) {
        retry_timer_ = arm_timer(kOpRetry, deadline);
        retry_armed_ = true;
    }
    return delay_log_seconds(delay);
}

void AddressWorker::on_event(const core::Completion& c) noexcept {
    if (!(c.flags & core::kCompletionTimer)) return;
    if (c.token.op == kOpRetry) {
        retry_armed_ = false;
        attempt();
    } else if (c.token.op == kOpStagger) {
        stagger_armed_ = false;
        start_next_dial();
    }
}

void AddressWorker::retire() noexcept {
    if (stopped_ || retiring_) return;
    if (conn_ == nullptr) {
        // Nothing serves through it: stop the round in progress and any retry at once.
        stopped_ = true;
        cancel_rounds();
        abort(0);
        return;
    }
    retiring_ = true;
    cancel_rounds();
}

bool AddressWorker::reactivate() noexcept {
    if (stopped_ || !retiring_) return false;
    retiring_ = false;
    return true;
}

void AddressWorker::cancel_rounds() noexcept {
    if (retry_armed_) {
        worker().cancel_timer(retry_timer_);
        retry_armed_ = false;
    }
    cancel_stagger();
    if (resolve_id_ != 0) {
        if (net::Resolver* r = shard_.resolver()) r->cancel(resolve_id_);
        resolve_id_ = 0;
    }
    close_dials();
}

void AddressWorker::stop() noexcept {
    if (stopped_) return;
    stopped_ = true;
    retiring_ = false;
    cancel_rounds();
    if (conn_ != nullptr) {
        quic::Connection* c = conn_;
        conn_ = nullptr;
        shard_.on_disconnected(*this);
        shard_.log().info("client instance graceful shutdown closing tunnel connection",
                          {{"server-address", addr_text_}});
        c->set_handler(nullptr);
        c->close(quic::kAppCloseCode, "graceful shutdown");
    }
    abort(0);
}

}  // namespace runewarp::client
