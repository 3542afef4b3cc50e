// VisitorSession: one Visitor TCP connection on the public listener, as an explicit state
// machine: ProxyHeader -> Hello -> (Connect | Open) -> Relay -> Closed:
// a direct route connects an upstream and splices, a Tunnel route opens a QUIC stream on a pool
// member and relays through a StreamPump.
#pragma once

#include <gnutls/gnutls.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "acme/challenge.hh"
#include "core/timer_heap.hh"
#include "core/unique_fd.hh"
#include "core/worker.hh"
#include "net/connector.hh"
#include "proto/clienthello.hh"
#include "proto/endpoint.hh"
#include "proto/proxy_v2.hh"
#include "relay/splice_pump.hh"
#include "relay/stream_pump.hh"
#include "server/admission.hh"
#include "server/close_reason.hh"
#include "server/intake_pool.hh"
#include "server/route_table.hh"
#include "server/server_metrics.hh"
#include "server/tunnel_registry.hh"

namespace runewarp::server {

class EdgeShard;
struct VisitorHandoff;

// kAcme: answering a TLS-ALPN-01 challenge for the Server hostname (handshake, close_notify).
enum class VisitorState : uint8_t { kProxyHeader, kHello, kConnect, kOpen, kRelay, kAcme, kClosed };
const char* visitor_state_name(VisitorState s) noexcept;

class VisitorSession final : public core::Session,
                             private relay::StreamPumpOwner,
                             private StreamWaiter {
public:
    VisitorSession(core::Worker& w, EdgeShard& shard, int fd, uint64_t conn_id) noexcept;
    ~VisitorSession() override;

    // Starts intake; the global pre-routing slot is already held by the caller.
    void start() noexcept;
    // Continues a Visitor another shard placed on a Tunnel connection this shard owns (its
    // intake is done and its pre-routing slots are released): opens the stream like route()
    // would have, or places it again when that connection stopped answering meanwhile.
    void resume_tunnel(const VisitorHandoff& h) noexcept;
    // Shutdown began: a Visitor still in intake is cancelled; relays keep running.
    void on_shutdown_started() noexcept;
    // The graceful window ended (or fast shutdown): cut whatever still runs.
    void cut() noexcept;

    VisitorState state() const noexcept { return state_; }
    bool relaying() const noexcept { return state_ == VisitorState::kRelay; }
    // While relaying: the label's counters (null before routing) and the bytes relayed so far,
    // which the scrape adds to the counts of finished relays.
    const RouteCounts* route_counts() const noexcept { return counts_; }
    bool tunnel_target() const noexcept { return tunnel_; }
    const TunnelMember* member() const noexcept { return member_.get(); }
    uint64_t bytes_in() const noexcept;
    uint64_t bytes_out() const noexcept;

protected:
    void on_event(const core::Completion& c) noexcept override;
    void on_quiesced() noexcept override;

private:
    enum Op : uint8_t {
        kOpPollVisitor = 1,
        kOpPollUpstream = 2,
        kOpDeadline = 4,
        kOpPollVisitorOut = 5,  // tunnel relay: the Visitor socket takes bytes again
        kOpRaceTimer = 15,      // the upstream connector's stagger timer
        kOpConnectBase = 16,    // the upstream connector's attempts (16..19)
    };

    void fail(CloseReason r) noexcept;
    void finish(CloseReason r) noexcept;
    void release_pre_routing() noexcept;
    bool take_source_slot() noexcept;
    bool take_relay_slot() noexcept;

    void arm_intake_poll() noexcept;
    void on_intake_readable(int revents) noexcept;
    bool step_proxy_header(const uint8_t* data, size_t len, bool eof) noexcept;
    void step_hello(const uint8_t* data, size_t len, bool eof) noexcept;
    void route() noexcept;
    void connect_upstream() noexcept;
    void on_connector_event(const core::Completion& c) noexcept;
    void on_connected() noexcept;
    void start_relay() noexcept;
    void drive_relay(bool from_visitor_poll, bool from_upstream_poll) noexcept;

    // Tunnel route: member (placement), then on the member's shard: pending-open slot, stream
    // (5 s), active slot, prefix, relay. `hops`: hand-overs this Visitor already made.
    void route_tunnel(std::string_view label, uint32_t hops = 0) noexcept;
    void open_on_member() noexcept;
    // The member's connection lives on another shard: the socket and what intake learnt go
    // there; this session ends without a trace (no log line, no drop counted).
    void hand_off(std::string_view label, uint32_t hops) noexcept;
    void try_open_stream() noexcept;
    void on_stream_opened(quic::Stream& s) noexcept;
    void refuse_stream(quic::Stream& s, CloseReason r) noexcept;
    void stop_waiting() noexcept;
    // TLS-ALPN-01 (spec 5.4 step 7): a GnuTLS server handshake with the pending challenge
    // certificate on the Visitor socket (the ClientHello is still queued there: intake only
    // peeked), non-blocking, within 5 s of routing; then close_notify and close.
    void answer_acme_challenge() noexcept;
    void continue_acme() noexcept;
    static ssize_t acme_pull(gnutls_transport_ptr_t p, void* buf, size_t len) noexcept;
    static ssize_t acme_push(gnutls_transport_ptr_t p, const void* buf, size_t len) noexcept;

    void pump_wait_tcp(bool write) noexcept override;
    void pump_finished(bool reset) noexcept override;
    void on_stream_credit() noexcept override;

    EdgeShard& shard_;
    // The configuration this Visitor started under (a reload swaps the server's, not this one).
    std::shared_ptr<const config::ServerConfig> cfg_;
    core::UniqueFd visitor_;
    core::UniqueFd upstream_;
    uint64_t conn_id_;
    int64_t started_ns_ = 0;
    int64_t relay_started_ns_ = 0;
    RouteCounts* counts_ = nullptr;  // the route or Tunnel label's counters, set at routing
    core::TimerHandle deadline_{};
    std::unique_ptr<IntakeState> intake_;
    proto::Tuple tuple_{};
    SourceKey source_key_{};
    std::string sni_;
    const DirectRoute* route_ = nullptr;
    std::shared_ptr<const RouteTable> routes_;  // keeps route_ alive across a reload
    // Every upstream address, Happy Eyeballs style, within the 5 s connect deadline.
    net::Connector connector_{kOpConnectBase, kOpRaceTimer};
    relay::SplicePump to_upstream_;
    relay::SplicePump to_visitor_;
    // Tunnel route: the label (owned by routes_), the member and the pump.
    std::string_view tunnel_label_;
    std::shared_ptr<TunnelMember> member_;
    relay::StreamPump pump_;
    size_t buffered_ = 0;  // Visitor bytes seen by intake, consumed into the stream prefix
    // TLS-ALPN-01: the challenge (its credentials stay alive while the session uses them).
    std::shared_ptr<const acme::ChallengeCert> challenge_;
    gnutls_session_t acme_tls_ = nullptr;
    bool acme_handshake_done_ = false;
    VisitorState state_ = VisitorState::kProxyHeader;
    CloseReason reason_ = CloseReason::kNone;
    bool holds_global_ = false;
    bool holds_source_ = false;
    bool holds_relay_ = false;
    bool holds_pending_ = false;
    bool tunnel_ = false;
    bool waiting_credit_ = false;
    bool pump_started_ = false;
    bool handed_off_ = false;
    bool counted_ = false;  // member_->active_streams includes this relay
    bool visitor_poll_armed_ = false;
    bool upstream_poll_armed_ = false;
    size_t live_index_ = SIZE_MAX;  // position in EdgeShard::live_
    core::SlotId slab_id_{};

    friend class EdgeShard;
};

}  // namespace runewarp::server
