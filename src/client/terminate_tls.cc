// Terminate mode's TLS: certificate snapshots and the GnuTLS server settings.
#include "client/terminate_tls.hh"

#include <cstring>

#include "acme/challenge.hh"

namespace runewarp::client {

namespace {

// TLS 1.2 and 1.3 only, in the server's order of preference: X25519 first (the key share
// browsers and curl send, so no HelloRetryRequest round trip, and the cheapest exchange), AEAD
// ciphers only, AES-128-GCM first (the cheapest per byte with AES-NI).
constexpr const char* kPriority =
    "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2:"
    "-GROUP-ALL:+GROUP-X25519:+GROUP-SECP256R1:+GROUP-SECP384R1:+GROUP-X448:+GROUP-SECP521R1:"
    "-CIPHER-ALL:+AES-128-GCM:+CHACHA20-POLY1305:+AES-256-GCM:%SERVER_PRECEDENCE";

std::string gnutls_text(int rc) {
    return gnutls_strerror(rc);
}

}  // namespace

Result<std::unique_ptr<TerminateCredential>> TerminateCredential::from_pem(
    const std::string& cert_pem, const std::string& key_pem, const std::string& origin) {
    std::unique_ptr<TerminateCredential> c(new TerminateCredential());
    int rc = gnutls_certificate_allocate_credentials(&c->creds_);
    if (rc < 0) return Error::msg("cannot allocate TLS credentials: " + gnutls_text(rc));
    gnutls_datum_t cert{reinterpret_cast<unsigned char*>(const_cast<char*>(cert_pem.data())),
                        static_cast<unsigned>(cert_pem.size())};
    gnutls_datum_t key{reinterpret_cast<unsigned char*>(const_cast<char*>(key_pem.data())),
                       static_cast<unsigned>(key_pem.size())};
    rc = gnutls_certificate_set_x509_key_mem2(c->creds_, &cert, &key, GNUTLS_X509_FMT_PEM, nullptr,
                                              0);
    if (rc < 0) {
        return Error::msg(origin + ": cannot use the certificate and key: " + gnutls_text(rc));
    }
    c->cert_path_ = origin;
    return c;
}

Result<std::unique_ptr<TerminateCredential>> TerminateCredential::load(
    const trust::PublicCertMaterial& m) {
    auto c = from_pem(m.cert_pem, m.key_pem, m.cert_path);
    if (!c) return c;
    (*c)->not_after_ = m.not_after;
    return c;
}

Result<std::unique_ptr<TerminateCredential>> TerminateCredential::from_acme(
    const std::string& cert_pem, const std::string& key_pem, std::time_t not_after,
    const std::string& origin) {
    auto c = from_pem(cert_pem, key_pem, origin);
    if (!c) return c;
    (*c)->not_after_ = not_after;
    (*c)->acme_ = true;
    return c;
}

TerminateCredential::~TerminateCredential() {
    if (creds_ != nullptr) gnutls_certificate_free_credentials(creds_);
}

const TerminateCredential* TerminateCerts::find(const std::string& hostname) const noexcept {
    auto it = by_host_.find(hostname);
    return it == by_host_.end() ? nullptr : it->second.get();
}

Result<std::shared_ptr<const TerminateCerts>> TerminateCerts::build(
    const std::vector<trust::PublicCertMaterial>& material) {
    auto snap = std::make_shared<TerminateCerts>();
    for (const auto& m : material) {
        auto c = TerminateCredential::load(m);
        if (!c) return c.error();
        snap->by_host_[m.hostname] = std::shared_ptr<const TerminateCredential>(std::move(*c));
    }
    return std::shared_ptr<const TerminateCerts>(std::move(snap));
}

std::shared_ptr<const TerminateCerts> TerminateCerts::with(
    const std::shared_ptr<const TerminateCerts>& base, const std::string& hostname,
    std::shared_ptr<const TerminateCredential> cred) {
    auto snap = std::make_shared<TerminateCerts>();
    if (base) snap->by_host_ = base->by_host_;
    if (cred) {
        snap->by_host_[hostname] = std::move(cred);
    } else {
        snap->by_host_.erase(hostname);
    }
    return snap;
}

Result<std::unique_ptr<TerminateTls>> TerminateTls::create() {
    std::unique_ptr<TerminateTls> t(new TerminateTls());
    const char* err = nullptr;
    int rc = gnutls_priority_init(&t->priority_, kPriority, &err);
    if (rc < 0) return Error::msg("cannot set the TLS priorities: " + gnutls_text(rc));
    rc = gnutls_session_ticket_key_generate(&t->ticket_key_);
    if (rc < 0) return Error::msg("cannot make the session ticket key: " + gnutls_text(rc));
    return t;
}

TerminateTls::~TerminateTls() {
    if (priority_ != nullptr) gnutls_priority_deinit(priority_);
    if (ticket_key_.data != nullptr) {
        gnutls_memset(ticket_key_.data, 0, ticket_key_.size);
        gnutls_free(ticket_key_.data);
    }
}

Result<gnutls_session_t> TerminateTls::new_session(const TerminateCredential& cred,
                                                   const std::vector<std::string>& alpn) const {
    return server_session(cred.get(), alpn, false);
}

Result<gnutls_session_t> TerminateTls::new_challenge_session(
    gnutls_certificate_credentials_t challenge) const {
    static const std::vector<std::string> kAlpn{std::string(acme::kAcmeTlsAlpn)};
    return server_session(challenge, kAlpn, true);
}

Result<gnutls_session_t> TerminateTls::server_session(gnutls_certificate_credentials_t cred,
                                                      const std::vector<std::string>& alpn,
                                                      bool challenge) const {
    gnutls_session_t s = nullptr;
    int rc = gnutls_init(&s, GNUTLS_SERVER | GNUTLS_NONBLOCK | GNUTLS_NO_SIGNAL);
    if (rc < 0) return Error::msg("cannot start a TLS session: " + gnutls_text(rc));
    auto failed = [&](const char* what) {
        gnutls_deinit(s);
        return Error::msg(std::string(what) + ": " + gnutls_text(rc));
    };
    if ((rc = gnutls_priority_set(s, priority_)) < 0) return failed("cannot set TLS priorities");
    if ((rc = gnutls_credentials_set(s, GNUTLS_CRD_CERTIFICATE, cred)) < 0) {
        return failed("cannot set the certificate");
    }
    gnutls_certificate_server_set_request(s, GNUTLS_CERT_IGNORE);
    // A challenge answer is one handshake the validator closes at once: nothing to resume.
    if (!challenge) {
        if ((rc = gnutls_session_ticket_enable_server(s, &ticket_key_)) < 0) {
            return failed("cannot enable session tickets");
        }
        gnutls_db_set_cache_expiration(s, kTicketLifetimeSeconds);
    }
    if (!alpn.empty()) {
        gnutls_datum_t protos[8];
        unsigned n = 0;
        for (const auto& a : alpn) {
            if (n == 8) break;
            protos[n++] =
                gnutls_datum_t{reinterpret_cast<unsigned char*>(const_cast<char*>(a.data())),
                               static_cast<unsigned>(a.size())};
        }
        // RFC 8737: the challenge is answered only when acme-tls/1 is negotiated.
        unsigned flags = GNUTLS_ALPN_SERVER_PRECEDENCE | (challenge ? GNUTLS_ALPN_MANDATORY : 0);
        if ((rc = gnutls_alpn_set_protocols(s, protos, n, flags)) < 0) {
            return failed("cannot set ALPN");
        }
    }
    return s;
}

}  // namespace runewarp::client
