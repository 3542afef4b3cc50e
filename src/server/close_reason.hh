// CloseReason: why a Visitor connection ended, and its stable text for logs and counters.
#pragma once

#include <cstdint>

namespace runewarp::server {

// Why a Visitor connection ended; the access line and counters use reason_text().
enum class CloseReason : uint8_t {
    kNone,
    kDone,   // both directions finished with FIN
    kReset,  // reset or error on either side during relay
    kUntrustedProxyPeer,
    kInvalidProxyHeader,
    kNotTls,
    kInvalidTls,
    kMissingSni,
    kInvalidSni,
    kOversized,
    kIncomplete,
    kHelloTimeout,
    kHelloIoError,
    kNonAcmeServerHostname,
    kAcmeConfigMissing,
    kUnauthorizedHostname,
    kNoActiveTunnel,
    kSourceSaturated,
    kRelaySaturated,
    kUpstreamConnectFailed,
    kUpstreamTimeout,
    kUpstreamWriteFailed,
    kPendingOpenSaturated,
    kShutdown,
    kInternal,
    kAcmeNoChallenge,       // acme-tls/1 for the Server hostname, no challenge pending
    kAcmeHandshakeFailed,   // the TLS-ALPN-01 handshake failed (or the socket did)
    kAcmeHandshakeTimeout,  // the TLS-ALPN-01 handshake did not finish within 5 s
};
const char* reason_text(CloseReason r) noexcept;

}  // namespace runewarp::server
