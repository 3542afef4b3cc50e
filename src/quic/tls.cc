// GnuTLS glue for tunnel connections: priorities, ALPN, mTLS admission and the alert substitution.
#include "quic/tls.hh"

#include <gnutls/x509.h>
#include <ngtcp2/ngtcp2.h>
#include <ngtcp2/ngtcp2_crypto_gnutls.h>

#include <utility>

namespace runewarp::quic {

namespace {

// TLS 1.3 only; AES-GCM and ChaCha20-Poly1305; X25519, P-256 and P-384; no middlebox
// compatibility mode (QUIC forbids it).
constexpr const char* kPriority =
    "NORMAL:-VERS-ALL:+VERS-TLS1.3:-CIPHER-ALL:+AES-128-GCM:+AES-256-GCM:+CHACHA20-POLY1305:"
    "-GROUP-ALL:+GROUP-X25519:+GROUP-SECP256R1:+GROUP-SECP384R1:%DISABLE_TLS13_COMPAT_MODE";

Error tls_error(const char* what, int rv) {
    return Error::msg(std::string(what) + ": " + gnutls_strerror(rv));
}

gnutls_datum_t datum(std::string_view s) noexcept {
    return gnutls_datum_t{reinterpret_cast<unsigned char*>(const_cast<char*>(s.data())),
                          static_cast<unsigned>(s.size())};
}

TlsConnState* state_of(gnutls_session_t s) noexcept {
    return static_cast<TlsConnState*>(gnutls_session_get_ptr(s));
}

// Server verify hook: no chain, name or expiry checks (Clients are pinned by identity); the leaf
// goes to the callback.
// GnuTLS still checks CertificateVerify, i.e. that the Client holds the key.
int verify_client(gnutls_session_t s) noexcept {
    TlsConnState* st = state_of(s);
    if (st == nullptr || st->verifier == nullptr) return GNUTLS_E_CERTIFICATE_ERROR;
    unsigned n = 0;
    const gnutls_datum_t* certs = gnutls_certificate_get_peers(s, &n);
    if (certs == nullptr || n == 0) return GNUTLS_E_NO_CERTIFICATE_FOUND;
    st->had_peer_cert = true;
    if (!(*st->verifier)(std::span<const uint8_t>(certs[0].data, certs[0].size))) {
        st->access_denied = true;
        return GNUTLS_E_CERTIFICATE_ERROR;
    }
    return 0;
}

// Alert hook (replaces the one ngtcp2's glue installs): an identity the callback refused leaves
// as access_denied (49) instead of GnuTLS's bad_certificate, so the Client sees 0x0131.
int alert_hook(gnutls_session_t s, gnutls_record_encryption_level_t /*level*/,
               gnutls_alert_level_t /*alert_level*/, gnutls_alert_description_t desc) noexcept {
    TlsConnState* st = state_of(s);
    if (st == nullptr || st->conn_ref.get_conn == nullptr) return 0;
    ngtcp2_conn* conn = st->conn_ref.get_conn(&st->conn_ref);
    if (conn == nullptr) return 0;
    uint8_t alert = static_cast<uint8_t>(desc);
    if (st->access_denied) alert = kAlertAccessDenied;
    ngtcp2_conn_set_tls_alert(conn, alert);
    return 0;
}

Result<gnutls_priority_t> make_priority() {
    gnutls_priority_t p = nullptr;
    int rv = gnutls_priority_init(&p, kPriority, nullptr);
    if (rv != 0) return tls_error("gnutls_priority_init", rv);
    return p;
}

Result<void> set_alpn(gnutls_session_t s, unsigned flags) {
    gnutls_datum_t proto{reinterpret_cast<unsigned char*>(const_cast<char*>(kAlpn.data())),
                         static_cast<unsigned>(kAlpn.size())};
    int rv = gnutls_alpn_set_protocols(s, &proto, 1, flags | GNUTLS_ALPN_MANDATORY);
    if (rv != 0) return tls_error("gnutls_alpn_set_protocols", rv);
    return {};
}

}  // namespace

bool alpn_ok(gnutls_session_t s) noexcept {
    gnutls_datum_t got{};
    if (gnutls_alpn_get_selected_protocol(s, &got) != 0) return false;
    return std::string_view(reinterpret_cast<const char*>(got.data), got.size) == kAlpn;
}

// ---- Server -------------------------------------------------------------------------------------

Result<std::shared_ptr<const ServerCredentials>> ServerCredentials::create(
    std::string_view cert_pem, std::string_view key_pem) {
    std::shared_ptr<ServerCredentials> c(new ServerCredentials());
    int rv = gnutls_certificate_allocate_credentials(&c->cred_);
    if (rv != 0) return tls_error("gnutls_certificate_allocate_credentials", rv);
    if (!cert_pem.empty() || !key_pem.empty()) {
        gnutls_datum_t cert = datum(cert_pem), key = datum(key_pem);
        rv = gnutls_certificate_set_x509_key_mem2(c->cred_, &cert, &key, GNUTLS_X509_FMT_PEM,
                                                  nullptr, 0);
        if (rv < 0) return tls_error("server certificate/key", rv);
        c->has_cert_ = true;
    }
    gnutls_certificate_set_verify_function(c->cred_, verify_client);
    return std::shared_ptr<const ServerCredentials>(std::move(c));
}

ServerCredentials::~ServerCredentials() {
    if (cred_ != nullptr) gnutls_certificate_free_credentials(cred_);
}

Result<std::unique_ptr<ServerTls>> ServerTls::create(ServerTlsConfig cfg) {
    if (!cfg.verify) return Error::msg("server TLS: no client verifier");
    std::unique_ptr<ServerTls> t(new ServerTls());
    t->verify_ = std::move(cfg.verify);
    auto c = ServerCredentials::create(cfg.cert_pem, cfg.key_pem);
    if (!c) return std::move(c).error();
    t->current_ = std::move(*c);
    auto p = make_priority();
    if (!p) return std::move(p).error();
    t->prio_ = *p;
    return t;
}

ServerTls::~ServerTls() {
    if (prio_ != nullptr) gnutls_priority_deinit(prio_);
}

Result<void> ServerTls::set_certificate(std::string_view cert_pem, std::string_view key_pem) {
    if (cert_pem.empty() || key_pem.empty()) return Error::msg("server certificate/key: empty");
    auto c = ServerCredentials::create(cert_pem, key_pem);
    if (!c) return std::move(c).error();
    std::shared_ptr<const ServerCredentials> old;
    {
        std::lock_guard lock(mu_);
        old = std::exchange(current_, std::move(*c));
    }
    return {};  // the old credentials go when their last session does (outside the lock)
}

Result<TlsSession> ServerTls::new_session(TlsConnState& state) const {
    gnutls_session_t raw = nullptr;
    // No tickets: every handshake carries and re-verifies the Client certificate.
    // No GNUTLS_ENABLE_EARLY_DATA: 0-RTT is never accepted.
    int rv = gnutls_init(&raw, GNUTLS_SERVER | GNUTLS_NO_TICKETS | GNUTLS_NO_AUTO_SEND_TICKET |
                                   GNUTLS_NO_END_OF_EARLY_DATA);
    if (rv != 0) return tls_error("gnutls_init", rv);
    TlsSession s(raw);
    std::shared_ptr<const ServerCredentials> cred = credentials();
    if ((rv = gnutls_priority_set(raw, prio_)) != 0) return tls_error("gnutls_priority_set", rv);
    if ((rv = gnutls_credentials_set(raw, GNUTLS_CRD_CERTIFICATE, cred->get())) != 0)
        return tls_error("gnutls_credentials_set", rv);
    gnutls_certificate_server_set_request(raw, GNUTLS_CERT_REQUIRE);
    if (ngtcp2_crypto_gnutls_configure_server_session(raw) != 0)
        return Error::msg("ngtcp2_crypto_gnutls_configure_server_session failed");
    gnutls_alert_set_read_function(raw, alert_hook);
    if (auto a = set_alpn(raw, GNUTLS_ALPN_SERVER_PRECEDENCE); !a) return std::move(a).error();
    state.verifier = &verify_;
    state.credentials = std::move(cred);
    gnutls_session_set_ptr(raw, &state);
    return s;
}

// ---- Client -------------------------------------------------------------------------------------

Result<std::unique_ptr<ClientTls>> ClientTls::create(ClientTlsConfig cfg) {
    if (cfg.server_name.empty()) return Error::msg("client TLS: no server name");
    std::unique_ptr<ClientTls> t(new ClientTls());
    t->server_name_ = std::move(cfg.server_name);
    int rv = gnutls_certificate_allocate_credentials(&t->cred_);
    if (rv != 0) return tls_error("gnutls_certificate_allocate_credentials", rv);
    if (cfg.trust == ServerTrust::system) {
        rv = gnutls_certificate_set_x509_system_trust(t->cred_);
        if (rv < 0) return tls_error("system trust store", rv);
        if (rv == 0) return Error::msg("system trust store: no CA certificates");
    } else {
        gnutls_datum_t ca = datum(cfg.ca_pem);
        rv = gnutls_certificate_set_x509_trust_mem(t->cred_, &ca, GNUTLS_X509_FMT_PEM);
        if (rv < 0) return tls_error("CA file", rv);
        if (rv == 0) return Error::msg("CA file: no CA certificates");
    }
    if (!cfg.cert_pem.empty() || !cfg.key_pem.empty()) {
        gnutls_datum_t cert = datum(cfg.cert_pem), key = datum(cfg.key_pem);
        rv = gnutls_certificate_set_x509_key_mem2(t->cred_, &cert, &key, GNUTLS_X509_FMT_PEM,
                                                  nullptr, 0);
        if (rv < 0) return tls_error("client certificate/key", rv);
    }
    auto p = make_priority();
    if (!p) return std::move(p).error();
    t->prio_ = *p;
    return t;
}

ClientTls::~ClientTls() {
    if (prio_ != nullptr) gnutls_priority_deinit(prio_);
    if (cred_ != nullptr) gnutls_certificate_free_credentials(cred_);
}

Result<TlsSession> ClientTls::new_session(TlsConnState& state) const {
    gnutls_session_t raw = nullptr;
    int rv = gnutls_init(&raw, GNUTLS_CLIENT | GNUTLS_NO_TICKETS | GNUTLS_NO_END_OF_EARLY_DATA);
    if (rv != 0) return tls_error("gnutls_init", rv);
    TlsSession s(raw);
    if ((rv = gnutls_priority_set(raw, prio_)) != 0) return tls_error("gnutls_priority_set", rv);
    if ((rv = gnutls_credentials_set(raw, GNUTLS_CRD_CERTIFICATE, cred_)) != 0)
        return tls_error("gnutls_credentials_set", rv);
    if (ngtcp2_crypto_gnutls_configure_client_session(raw) != 0)
        return Error::msg("ngtcp2_crypto_gnutls_configure_client_session failed");
    gnutls_alert_set_read_function(raw, alert_hook);
    if (auto a = set_alpn(raw, 0); !a) return std::move(a).error();
    rv = gnutls_server_name_set(raw, GNUTLS_NAME_DNS, server_name_.data(), server_name_.size());
    if (rv != 0) return tls_error("gnutls_server_name_set", rv);
    gnutls_session_set_verify_cert(raw, server_name_.c_str(), 0);
    gnutls_session_set_ptr(raw, &state);
    return s;
}

}  // namespace runewarp::quic
