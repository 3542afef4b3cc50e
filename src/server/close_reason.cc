// CloseReason texts: the `reason=` values of access, rejection and route lines.
#include "server/close_reason.hh"

namespace runewarp::server {

const char* reason_text(CloseReason r) noexcept {
    switch (r) {
        case CloseReason::kNone:
            return "none";
        case CloseReason::kDone:
            return "done";
        case CloseReason::kReset:
            return "reset";
        case CloseReason::kUntrustedProxyPeer:
            return "untrusted-proxy-peer";
        case CloseReason::kInvalidProxyHeader:
            return "invalid-proxy-header";
        case CloseReason::kNotTls:
            return "non-tls-client-hello";
        case CloseReason::kInvalidTls:
            return "invalid-tls-client-hello";
        case CloseReason::kMissingSni:
            return "missing-sni-client-hello";
        case CloseReason::kInvalidSni:
            return "invalid-sni-client-hello";
        case CloseReason::kOversized:
            return "oversized-client-hello";
        case CloseReason::kIncomplete:
            return "incomplete-client-hello";
        case CloseReason::kHelloTimeout:
            return "client-hello-timeout";
        case CloseReason::kHelloIoError:
            return "client-hello-io-error";
        case CloseReason::kNonAcmeServerHostname:
            return "non-acme-server-hostname";
        case CloseReason::kAcmeConfigMissing:
            return "acme-tls-config-missing";
        case CloseReason::kUnauthorizedHostname:
            return "unauthorized-public-hostname";
        case CloseReason::kNoActiveTunnel:
            return "no-active-tunnel-connection";
        case CloseReason::kSourceSaturated:
            return "visitor-source-saturated";
        case CloseReason::kRelaySaturated:
            return "active-relay-saturated";
        case CloseReason::kUpstreamConnectFailed:
            return "upstream-connect-failed";
        case CloseReason::kUpstreamTimeout:
            return "upstream-connect-timeout";
        case CloseReason::kUpstreamWriteFailed:
            return "upstream-write-failed";
        case CloseReason::kPendingOpenSaturated:
            return "pending-stream-open-saturated";
        case CloseReason::kShutdown:
            return "shutdown";
        case CloseReason::kInternal:
            return "internal-error";
        case CloseReason::kAcmeNoChallenge:
            return "acme-challenge-not-pending";
        case CloseReason::kAcmeHandshakeFailed:
            return "acme-tls-handshake-failed";
        case CloseReason::kAcmeHandshakeTimeout:
            return "acme-tls-handshake-timeout";
    }
    return "unknown";
}

}  // namespace runewarp::server
