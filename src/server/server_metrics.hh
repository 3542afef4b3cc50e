// ServerMetrics: the Server's counters, bumped by every worker's loop (relaxed atomic adds, no
// lock, no allocation) and read when /metrics or /status.json is scraped. They live beside the
// configuration snapshots, never inside them, so a reload never resets them; one set per process.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

#include "config/config.hh"
#include "obs/metrics.hh"
#include "server/close_reason.hh"

namespace runewarp::server {

// One route or Tunnel label: the bytes of its finished relays (live relays are added at scrape
// time), how many relays started and how many ended in a reset.
struct RouteCounts {
    obs::Counter bytes_in;   // Visitor -> upstream or Client
    obs::Counter bytes_out;  // upstream or Client -> Visitor
    obs::Counter relays;     // relays (direct) or streams (Tunnel) started
    obs::Counter resets;     // of those, ended by a reset or error
};

// Why a Tunnel connection attempt failed: a fixed set, never anything from the wire.
enum class HandshakeFailure : uint8_t {
    kUnauthorized,   // the Client identity is not pinned by any Tunnel
    kSaturated,      // 256 handshakes in flight: the Initial was refused
    kNoCertificate,  // no Server certificate yet (ACME issuance pending)
    kError,          // any other handshake failure (TLS alert, timeout, transport error)
    kJoinRefused,    // authenticated, but the pool or the identity limit was reached
    kCount
};
const char* handshake_failure_name(HandshakeFailure f) noexcept;

// Dropped Visitors are counted per CloseReason; this slot counts those refused at accept because
// the global pre-routing limit (or the session table) was full.
constexpr size_t kDropGlobalSaturated = 31;
constexpr size_t kDropSlots = 32;
const char* drop_reason_name(size_t slot) noexcept;
// Whether `slot` is a reason a Visitor can be dropped for (exposed even while zero).
bool drop_reason_listed(size_t slot) noexcept;

struct ServerMetrics {
    obs::Counter accepted;
    std::array<obs::Counter, kDropSlots> dropped;
    obs::LabelSlots<RouteCounts> direct;  // by [route "LABEL"]
    obs::LabelSlots<RouteCounts> tunnel;  // by [tunnel "LABEL"]
    std::array<obs::Counter, static_cast<size_t>(HandshakeFailure::kCount)> handshake_failures;
    obs::Counter tunnel_connections_accepted;
    obs::Histogram intake{obs::setup_buckets()};  // accept -> routing decision
    obs::Histogram relay{obs::relay_buckets()};   // relay start -> close

    // Adds the slots of every route and Tunnel label `cfg` names (startup and each reload;
    // labels a reload removed keep their slots and counts).
    void add_labels(const config::ServerConfig& cfg);
    void count_handshake_failure(HandshakeFailure f) noexcept {
        handshake_failures[static_cast<size_t>(f)].add();
    }
};

}  // namespace runewarp::server
