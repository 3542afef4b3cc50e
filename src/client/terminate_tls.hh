// Terminate mode's TLS: the per-hostname certificate snapshot (immutable, replaced whole, held
// by each terminating stream) and the process-wide GnuTLS server settings (priorities, the
// session ticket master key) that every terminating session starts from.
#pragma once

#include <gnutls/gnutls.h>

#include <ctime>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "runewarp/result.hh"
#include "trust/public_cert.hh"

namespace runewarp::client {

// One hostname's certificate, ready for GnuTLS: from public-cert-dir, or issued through ACME.
class TerminateCredential {
public:
    static Result<std::unique_ptr<TerminateCredential>> load(const trust::PublicCertMaterial& m);
    // An ACME certificate (chain leaf first, and its key, as PEM); `origin` names it in errors
    // and expiry lines (the state directory).
    static Result<std::unique_ptr<TerminateCredential>> from_acme(const std::string& cert_pem,
                                                                  const std::string& key_pem,
                                                                  std::time_t not_after,
                                                                  const std::string& origin);
    ~TerminateCredential();
    TerminateCredential(const TerminateCredential&) = delete;
    TerminateCredential& operator=(const TerminateCredential&) = delete;

    gnutls_certificate_credentials_t get() const noexcept { return creds_; }
    const std::string& cert_path() const noexcept { return cert_path_; }
    std::time_t not_after() const noexcept { return not_after_; }
    // Issued through ACME (renewed by the Client itself), not read from public-cert-dir.
    bool acme() const noexcept { return acme_; }

private:
    TerminateCredential() = default;
    static Result<std::unique_ptr<TerminateCredential>> from_pem(const std::string& cert_pem,
                                                                 const std::string& key_pem,
                                                                 const std::string& origin);
    gnutls_certificate_credentials_t creds_ = nullptr;
    std::string cert_path_;
    std::time_t not_after_ = 0;
    bool acme_ = false;
};

// The certificates of every terminating hostname at one moment. Never changed after it is
// built: a new one replaces it, and sessions keep the one they started with (shared_ptr), so a
// certificate can be swapped while connections stay up.
class TerminateCerts {
public:
    // nullptr when the hostname has no certificate (ACME pending, material removed).
    const TerminateCredential* find(const std::string& hostname) const noexcept;
    size_t size() const noexcept { return by_host_.size(); }
    template <typename F>
    void for_each(F&& f) const {
        for (const auto& [host, cred] : by_host_) f(host, *cred);
    }

    // Builds a snapshot from loaded material (every entry must load).
    static Result<std::shared_ptr<const TerminateCerts>> build(
        const std::vector<trust::PublicCertMaterial>& material);
    // `base` with `hostname` replaced by `cred` (or removed when cred is null).
    static std::shared_ptr<const TerminateCerts> with(
        const std::shared_ptr<const TerminateCerts>& base, const std::string& hostname,
        std::shared_ptr<const TerminateCredential> cred);

private:
    std::map<std::string, std::shared_ptr<const TerminateCredential>, std::less<>> by_host_;
};

using TerminateCertsRef = std::shared_ptr<const TerminateCerts>;

// Process-wide server settings: TLS 1.2 and 1.3 with the server's cipher preference, and one
// session ticket master key per process. GnuTLS derives the key that encrypts tickets from it
// and rotates that key every ticket lifetime, so tickets older than about two lifetimes stop
// resuming.
class TerminateTls {
public:
    static constexpr unsigned kTicketLifetimeSeconds = 3600;

    static Result<std::unique_ptr<TerminateTls>> create();
    ~TerminateTls();
    TerminateTls(const TerminateTls&) = delete;
    TerminateTls& operator=(const TerminateTls&) = delete;

    // A server session presenting `cred`, offering `alpn` (preferred first). The caller
    // installs the transport.
    Result<gnutls_session_t> new_session(const TerminateCredential& cred,
                                         const std::vector<std::string>& alpn) const;
    // A server session answering a TLS-ALPN-01 challenge (RFC 8737) with `challenge` (the
    // challenge certificate's credentials): ALPN acme-tls/1 only and mandatory, no session
    // tickets. The caller installs the transport.
    Result<gnutls_session_t> new_challenge_session(
        gnutls_certificate_credentials_t challenge) const;

private:
    TerminateTls() = default;
    Result<gnutls_session_t> server_session(gnutls_certificate_credentials_t cred,
                                            const std::vector<std::string>& alpn,
                                            bool challenge) const;
    gnutls_priority_t priority_ = nullptr;
    gnutls_datum_t ticket_key_{nullptr, 0};
};

}  // namespace runewarp::client
