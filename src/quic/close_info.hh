// CloseInfo: how a connection ended, the close codes the roles use, and its one-line description.
#pragma once

#include <ngtcp2/ngtcp2.h>

#include <cstdint>
#include <string>
#include <string_view>

#include "quic/tls.hh"

namespace runewarp::quic {

inline constexpr uint64_t kAppCloseCode = 0;  // application close, all reasons
inline constexpr uint64_t kCryptoErrorAccessDenied = NGTCP2_CRYPTO_ERROR | kAlertAccessDenied;

// How a connection ended, as the application sees it.
struct CloseInfo {
    enum class Kind : uint8_t {
        local,         // we closed (close() or a local error): see code/reason
        remote,        // the peer sent CONNECTION_CLOSE
        idle_timeout,  // max_idle_timeout passed without traffic
        handshake_timeout,
        stateless_reset,  // the peer forgot us
        dropped,          // silently discarded (e.g. unusable first packet)
    };
    Kind kind = Kind::local;
    bool application = false;  // application close (else transport error code)
    uint64_t code = 0;         // e.g. 0x0131 = CRYPTO_ERROR access_denied
    std::string reason;
};

// One line for logs: "idle timeout", "closed by <peer> (application error 0x0): <reason>", ...
std::string describe_close(const CloseInfo& info, std::string_view peer);

}  // namespace runewarp::quic
