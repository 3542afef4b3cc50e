// AddressWorker: the tunnel connection to one Server address — resolution, a Happy Eyeballs race
// of QUIC dials over every resolved address, the retry policy, and the live connection.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "client/retry.hh"
#include "config/config.hh"
#include "core/worker.hh"
#include "net/resolver.hh"
#include "quic/connection.hh"
#include "quic/tls.hh"

namespace runewarp::client {

class ClientShard;

// One attempt round: the host is resolved (every attempt; IP literals never leave the loop), the
// Client identity and Server trust are re-read, and the addresses are dialled in RFC 8305 order
// (families alternating, starting with the resolver's first): the next address starts when the
// previous dial failed or after 250 ms without a handshake, the first authenticated connection
// wins and the other dials are closed. An `unauthorized` refusal ends the round. When every dial
// failed, the retry policy picks the delay of the next round.
class AddressWorker final : public core::Session,
                            public quic::ConnectionHandler,
                            public net::ResolveListener {
public:
    AddressWorker(core::Worker& w, ClientShard& shard, const config::HostPort& addr) noexcept;
    ~AddressWorker() override;
    void start() noexcept { attempt(); }
    // Stops retrying and closes the connection (application 0, "graceful shutdown").
    void stop() noexcept;
    // The address left the configuration (reload): no new round starts and dials in progress
    // are closed; a live connection keeps serving until it closes and is never re-dialled.
    void retire() noexcept;
    // The address came back before its retired connection closed: that connection serves
    // (and is retried) again. False when nothing is left to take back.
    bool reactivate() noexcept;
    // Removed by a reload, its connection still serving.
    bool draining() const noexcept { return retiring_ && !stopped_; }
    bool connected() const noexcept { return conn_ != nullptr; }
    const std::string& address_text() const noexcept { return addr_text_; }
    // The authenticated connection (null while not connected) and the address it reached.
    quic::Connection* connection() const noexcept { return conn_; }
    const std::string& resolved_text() const noexcept { return resolved_text_; }

    // quic::ConnectionHandler
    void on_established(quic::Connection& c) noexcept override;
    void on_stream_opened(quic::Connection& c, quic::Stream& s) noexcept override;
    void on_streams_available(quic::Connection&) noexcept override {}
    void on_closed(quic::Connection& c, const quic::CloseInfo& info) noexcept override;

    // net::ResolveListener
    void on_resolved(uint64_t id, net::Resolution& r) noexcept override;

private:
    static constexpr uint8_t kOpRetry = 1;
    static constexpr uint8_t kOpStagger = 2;
    struct Dial {
        quic::Connection* conn = nullptr;
        std::string resolved_text;
    };

    void on_event(const core::Completion& c) noexcept override;
    void on_quiesced() noexcept override {}
    void attempt() noexcept;
    void start_next_dial() noexcept;
    void round_failed() noexcept;
    void close_dials() noexcept;
    void cancel_stagger() noexcept;
    // Cancels the retry timer, the stagger timer, the lookup and the dials in progress.
    void cancel_rounds() noexcept;
    // Schedules the next round and returns its delay in whole seconds for the log line.
    int64_t schedule_retry() noexcept;
    const char* retry_kind() const noexcept { return rounds_ <= 1 ? "initial" : "retry"; }
    bool first_failure() const noexcept { return rounds_ <= 1 && !ever_connected_; }
    void log_attempt_failure(const std::string& resolved, const std::string& cause) noexcept;

    ClientShard& shard_;
    config::HostPort addr_;
    std::string addr_text_;
    RetryPolicy retry_;
    std::vector<net::ResolvedAddress> addrs_;  // this round's race order
    size_t next_addr_ = 0;
    std::vector<Dial> dials_;           // handshakes in progress
    quic::Connection* conn_ = nullptr;  // the authenticated connection
    std::string resolved_text_;         // its address
    std::string last_failed_address_;
    std::string last_cause_;
    bool round_unauthorized_ = false;
    // TLS credentials of recent rounds: a connection's session refers to them until it is
    // freed after its closing period, so they are kept a while after the round ends.
    std::deque<std::unique_ptr<quic::ClientTls>> tls_;
    uint64_t resolve_id_ = 0;
    uint64_t rounds_ = 0;
    core::TimerHandle retry_timer_{};
    core::TimerHandle stagger_timer_{};
    bool retry_armed_ = false;
    bool stagger_armed_ = false;
    bool ever_connected_ = false;
    bool stopped_ = false;
    bool retiring_ = false;  // removed by a reload, its connection still live
};

}  // namespace runewarp::client
