// GnuTLS glue for tunnel connections: credentials, priorities, ALPN, mTLS admission.
#pragma once

#include <gnutls/gnutls.h>
#include <ngtcp2/ngtcp2_crypto.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>

#include "runewarp/result.hh"

namespace runewarp::quic {

inline constexpr std::string_view kAlpn = "runewarp/1";
inline constexpr uint8_t kAlertAccessDenied = 49;          // CRYPTO_ERROR 0x0131
inline constexpr uint8_t kAlertCertificateRequired = 116;  // CRYPTO_ERROR 0x0174

// Decides whether a Client is admitted, given its leaf certificate (DER). Runs inside the
// handshake, on the worker thread; chains, names and validity are deliberately not checked.
using PeerVerifier = std::function<bool(std::span<const uint8_t> leaf_der)>;

class ServerCredentials;

// Per-connection TLS state, reachable from the GnuTLS session pointer. `conn_ref` comes first:
// ngtcp2's GnuTLS glue reads the session pointer as an ngtcp2_crypto_conn_ref.
struct TlsConnState {
    ngtcp2_crypto_conn_ref conn_ref{};
    const PeerVerifier* verifier = nullptr;  // server side only
    bool access_denied = false;              // set by the verify hook, read by the alert hook
    bool had_peer_cert = false;
    // Server side: the credentials the session was given. GnuTLS does not copy them, so the
    // connection keeps them alive while ServerTls moves on to a newer certificate. The owner
    // must destroy the session before this state.
    std::shared_ptr<const ServerCredentials> credentials;
};

struct SessionDeleter {
    void operator()(gnutls_session_t s) const noexcept { gnutls_deinit(s); }
};
using TlsSession = std::unique_ptr<gnutls_session_int, SessionDeleter>;

// One Server certificate chain + key as GnuTLS credentials (with the Client verify hook),
// immutable once built; shared by every session that uses it.
class ServerCredentials {
public:
    // Validates the pair (PEM chain leaf first, matching key); empty cert and key build
    // credentials without a certificate, with which every handshake fails.
    static Result<std::shared_ptr<const ServerCredentials>> create(std::string_view cert_pem,
                                                                   std::string_view key_pem);
    ~ServerCredentials();
    ServerCredentials(const ServerCredentials&) = delete;
    ServerCredentials& operator=(const ServerCredentials&) = delete;

    gnutls_certificate_credentials_t get() const noexcept { return cred_; }
    bool has_certificate() const noexcept { return has_cert_; }

private:
    ServerCredentials() = default;
    gnutls_certificate_credentials_t cred_ = nullptr;
    bool has_cert_ = false;
};

// Server credentials: the Server certificate chain + key, and the admission callback.
struct ServerTlsConfig {
    std::string cert_pem;  // leaf first, then intermediates; empty (with key_pem): none yet
    std::string key_pem;
    PeerVerifier verify;  // required
};

class ServerTls {
public:
    // Without a certificate (both PEMs empty) every Tunnel handshake fails with a TLS alert until
    // set_certificate() installs one.
    static Result<std::unique_ptr<ServerTls>> create(ServerTlsConfig cfg);
    ~ServerTls();
    ServerTls(const ServerTls&) = delete;
    ServerTls& operator=(const ServerTls&) = delete;

    // A configured server session bound to `state` (which must outlive the session). The
    // caller fills state.conn_ref before the handshake starts. The session uses the current
    // credentials and `state` keeps a reference to them.
    Result<TlsSession> new_session(TlsConnState& state) const;

    // Validates and installs a new certificate chain + key for the handshakes that start from
    // now on; connections already established keep the credentials they were made with. On
    // error nothing changes.
    // Any thread: every worker's listener makes sessions from one ServerTls.
    Result<void> set_certificate(std::string_view cert_pem, std::string_view key_pem);
    bool has_certificate() const noexcept { return credentials()->has_certificate(); }
    std::shared_ptr<const ServerCredentials> credentials() const noexcept {
        std::lock_guard lock(mu_);
        return current_;
    }

private:
    ServerTls() = default;
    mutable std::mutex mu_;                             // guards current_ (the pointer only)
    std::shared_ptr<const ServerCredentials> current_;  // never null
    gnutls_priority_t prio_ = nullptr;
    PeerVerifier verify_;
};

enum class ServerTrust { system, ca_file };

// Client credentials: how the Server certificate is trusted, and the Client identity.
struct ClientTlsConfig {
    std::string server_name;  // SNI and the name the Server certificate must match
    ServerTrust trust = ServerTrust::system;
    std::string ca_pem;    // ServerTrust::ca_file: the exclusive CA bundle (PEM), no system roots
    std::string cert_pem;  // the Client identity certificate (Ed25519 or P-256)
    std::string key_pem;   // empty cert/key: present no certificate (the Server refuses)
};

class ClientTls {
public:
    static Result<std::unique_ptr<ClientTls>> create(ClientTlsConfig cfg);
    ~ClientTls();
    ClientTls(const ClientTls&) = delete;
    ClientTls& operator=(const ClientTls&) = delete;

    Result<TlsSession> new_session(TlsConnState& state) const;
    const std::string& server_name() const noexcept { return server_name_; }

private:
    ClientTls() = default;
    gnutls_certificate_credentials_t cred_ = nullptr;
    gnutls_priority_t prio_ = nullptr;
    std::string server_name_;
};

// Whether the negotiated ALPN is runewarp/1 (checked once the handshake completes).
bool alpn_ok(gnutls_session_t s) noexcept;

}  // namespace runewarp::quic
