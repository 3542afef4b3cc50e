// StreamSession: one Server-opened stream, from the stream prefix (PROXY v2 header + ClientHello)
// through Service selection and the backend connect to the relay.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "acme/challenge.hh"
#include "client/client_metrics.hh"
#include "client/terminate_tls.hh"
#include "config/config.hh"
#include "core/slab.hh"
#include "core/unique_fd.hh"
#include "core/worker.hh"
#include "net/connector.hh"
#include "net/resolver.hh"
#include "proto/endpoint.hh"
#include "proto/stream_prefix.hh"
#include "quic/connection.hh"
#include "relay/stream_pump.hh"
#include "relay/tls_stream_pump.hh"

namespace runewarp::client {

class ClientShard;

// Phases: intake (the prefix decoder is fed as bytes arrive, 5 s) -> [terminate: TLS handshake
// with the hostname's certificate, 5 s] -> resolve + connect (every address of the backend
// host, Happy Eyeballs, 5 s together) -> write (optional PROXY v2 header + the buffered Visitor
// bytes as one send (passthrough) or the header alone (terminate), 5 s) -> relay (a StreamPump,
// or the TlsStreamPump that ran the handshake, owns the stream).
// Any failure resets only this stream (code 1); a terminating hostname without a certificate
// gets a handshake_failure alert and a clean close. A terminating stream whose ClientHello offers
// acme-tls/1 never reaches the backend: the pending TLS-ALPN-01 challenge for the hostname is
// answered (handshake with the challenge certificate, then a clean close), or the stream is
// refused like a hostname without a certificate.
class StreamSession final : public core::Session,
                            public quic::StreamHandler,
                            public relay::TlsStreamPumpOwner,
                            public net::ResolveListener {
public:
    StreamSession(core::Worker& w, ClientShard& shard) noexcept;
    ~StreamSession() override;
    void start(quic::Stream& s, core::SlotId slot) noexcept;

    // quic::StreamHandler (before the relay starts)
    size_t on_stream_data(quic::Stream& s, std::span<const uint8_t> data,
                          bool fin) noexcept override;
    void on_stream_writable(quic::Stream&) noexcept override {}
    void on_stream_reset(quic::Stream& s, uint64_t code) noexcept override;
    void on_stream_closed(quic::Stream& s, uint64_t code) noexcept override;

    // relay::StreamPumpOwner
    void pump_wait_tcp(bool write) noexcept override;
    void pump_finished(bool reset) noexcept override;
    // relay::TlsStreamPumpOwner
    void tls_handshake_done() noexcept override;

    // net::ResolveListener
    void on_resolved(uint64_t id, net::Resolution& r) noexcept override;

private:
    enum class Phase : uint8_t { intake, handshake, resolve, connect, write, relay, done };
    static constexpr uint8_t kOpTimer = 1;
    static constexpr uint8_t kOpSend = 3;
    static constexpr uint8_t kOpPollRead = 4;
    static constexpr uint8_t kOpPollWrite = 5;
    static constexpr uint8_t kOpRaceTimer = 15;
    static constexpr uint8_t kOpConnectBase = 16;  // the connector's attempts

    void on_event(const core::Completion& c) noexcept override;
    void on_quiesced() noexcept override;

    void reject(const std::string& reason) noexcept;
    void route() noexcept;
    // Terminate: the TLS handshake on the ClientHello and `rest` (what followed it).
    void start_terminate(std::span<const uint8_t> rest, bool fin) noexcept;
    // Terminate with acme-tls/1 offered: answers the hostname's pending challenge or refuses.
    void start_challenge(quic::Stream& s, std::vector<uint8_t> initial, bool fin) noexcept;
    // The Visitor bytes buffered past the PROXY header plus `rest`, as the TLS pump takes them;
    // the prefix buffer is released.
    std::vector<uint8_t> take_visitor_bytes(std::span<const uint8_t> rest) noexcept;
    void connect_phase() noexcept;
    void connect_backend(std::vector<net::ResolvedAddress> addrs) noexcept;
    void send_initial() noexcept;
    void start_relay() noexcept;
    void backend_failed(const char* reason, const std::string& detail) noexcept;
    // Ends the session; `reset` aborts the stream (code 1) if it is still ours.
    void finish(bool reset) noexcept;
    void arm_step_timer() noexcept;

    ClientShard& shard_;
    core::SlotId slot_{};
    ServiceCounts* counts_ = nullptr;  // the Service's counters once routed
    int64_t connect_started_ns_ = 0;
    uint64_t initial_bytes_ = 0;  // Visitor bytes written with the first send (before the pump)
    quic::Stream* stream_ = nullptr;
    Phase phase_ = Phase::intake;
    // Needed only until the ClientHello is complete (it carries a 16 KiB reassembly buffer).
    std::unique_ptr<proto::StreamPrefixDecoder> decoder_;
    std::vector<uint8_t> prefix_;  // stream bytes taken so far (PROXY header + Visitor bytes)
    size_t visitor_offset_ = 0;    // where the Visitor bytes start in prefix_
    proto::Tuple tuple_{};
    std::string sni_;
    bool offers_acme_tls1_ = false;
    bool challenge_answered_ = false;
    // The configuration this stream started with; service_ points into it.
    std::shared_ptr<const config::ClientConfig> cfg_;
    const config::Service* service_ = nullptr;
    std::string backend_text_;
    uint64_t resolve_id_ = 0;
    net::Connector connector_{kOpConnectBase, kOpRaceTimer};
    core::UniqueFd fd_;
    std::vector<uint8_t> out_;
    size_t out_off_ = 0;
    relay::StreamPump pump_;
    // Terminate mode: the certificate snapshot this stream started with, and its TLS pump.
    TerminateCertsRef certs_;
    // A challenge answer: the certificate whose credentials the pump's session uses (declared
    // before the pump, so it outlives the session).
    std::shared_ptr<const acme::ChallengeCert> challenge_;
    std::unique_ptr<relay::TlsStreamPump> tls_;
    core::TimerHandle timer_{};
    bool timer_armed_ = false;
    bool linger_reset_ = false;
};

}  // namespace runewarp::client
