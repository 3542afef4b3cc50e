// Client role: one tunnel worker per Server address on one core::Worker,
// Server-opened streams routed to Services and relayed to backends.
#pragma once

#include <string_view>
#include <vector>

#include "config/config.hh"
#include "preflight/preflight.hh"
#include "runewarp/result.hh"
#include "trust/public_cert.hh"

namespace runewarp::client {

// Fixed limits: the 5 s step deadlines, the 100 ms close flush (stream handlers per process are
// [client] max-streams).
// intake / terminate handshake / connect / write
inline constexpr int64_t kStreamStepTimeoutNs = 5'000'000'000;
inline constexpr int64_t kCloseFlushNs = 100'000'000;

// The Service for a stream's SNI: the sole Catch-all Service wins; else the Service listing the
// exact (canonical) SNI; nullptr when none matches.
const config::Service* select_service(const std::vector<config::Service>& services,
                                      std::string_view sni) noexcept;

// Runs the Client for a config that passed preflight::check_client (`startup`), until a signal
// stops it. Every Tunnel attempt reloads the trust and identity material by the same rules
// (preflight::load_client_material). Returns the process exit code (0 orderly, 1 fatal: broken
// loop, local trust or identity material no longer usable). A reload (SIGHUP, `runewarp
// reload`) loads the configuration again with `options` and applies it live.
int run_client(config::LoadOptions options, preflight::ClientStartup startup) noexcept;

}  // namespace runewarp::client
