// describe_close: one log line for how a connection ended, naming the TLS alert of a CRYPTO_ERROR.
#include "quic/close_info.hh"

#include <gnutls/gnutls.h>

#include <cstdio>

namespace runewarp::quic {

std::string describe_close(const CloseInfo& info, std::string_view peer) {
    using K = CloseInfo::Kind;
    switch (info.kind) {
        case K::idle_timeout:
            return "idle timeout";
        case K::handshake_timeout:
            return "handshake timeout";
        case K::stateless_reset:
            return "stateless reset";
        case K::dropped:
            return "connection dropped";
        case K::local:
        case K::remote:
            break;
    }
    char code[32];
    std::snprintf(code, sizeof(code), "0x%llx", static_cast<unsigned long long>(info.code));
    std::string s = info.kind == K::remote ? "closed by " + std::string(peer) : "closed locally";
    s += info.application ? " (application error " : " (transport error ";
    s += code;
    if (!info.application && (info.code & ~uint64_t{0xff}) == NGTCP2_CRYPTO_ERROR) {
        // CRYPTO_ERROR carries the TLS alert in its low byte (RFC 9001 4.8).
        const char* alert =
            gnutls_alert_get_strname(static_cast<gnutls_alert_description_t>(info.code & 0xff));
        if (alert != nullptr) {
            // "GNUTLS_A_ACCESS_DENIED" -> "access_denied", the RFC 8446 name.
            std::string_view name(alert);
            if (name.starts_with("GNUTLS_A_")) name.remove_prefix(9);
            s += ", TLS alert ";
            for (char ch : name)
                s += static_cast<char>(ch >= 'A' && ch <= 'Z' ? ch - 'A' + 'a' : ch);
        }
    }
    s += ")";
    if (!info.reason.empty()) s += ": " + info.reason;
    return s;
}

}  // namespace runewarp::quic
