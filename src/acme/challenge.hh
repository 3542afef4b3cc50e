// TLS-ALPN-01 (RFC 8737) challenge certificates, and the board where an ACME manager publishes
// the ones it is waiting on so the event loops can answer a ClientHello that offers acme-tls/1.
#pragma once

#include <gnutls/gnutls.h>

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "runewarp/result.hh"

namespace runewarp::acme {

inline constexpr std::string_view kAcmeTlsAlpn = "acme-tls/1";

// A self-signed certificate for one hostname: SAN dNSName = the hostname and the critical
// id-pe-acmeIdentifier extension (1.3.6.1.5.5.7.1.31) holding SHA-256(key authorization), with a
// fresh P-256 key; ready as GnuTLS server credentials. Immutable once built.
class ChallengeCert {
public:
    static Result<std::shared_ptr<const ChallengeCert>> create(std::string_view hostname,
                                                               std::string_view key_authorization);
    ~ChallengeCert();
    ChallengeCert(const ChallengeCert&) = delete;
    ChallengeCert& operator=(const ChallengeCert&) = delete;

    gnutls_certificate_credentials_t credentials() const noexcept { return cred_; }
    const std::string& hostname() const noexcept { return hostname_; }
    const std::string& cert_pem() const noexcept { return cert_pem_; }

private:
    ChallengeCert() = default;
    gnutls_certificate_credentials_t cred_ = nullptr;
    std::string hostname_;
    std::string cert_pem_;
};

// The challenges pending validation, by canonical hostname. Written by manager threads, read by
// loop threads (only when a ClientHello offers acme-tls/1, so a mutex is enough). A reader keeps
// the shared_ptr for as long as its handshake uses the credentials.
class ChallengeBoard {
public:
    void publish(const std::string& hostname, std::shared_ptr<const ChallengeCert> cert);
    void withdraw(const std::string& hostname);
    // Null when no challenge is pending for `hostname`.
    std::shared_ptr<const ChallengeCert> find(std::string_view hostname) const;

private:
    mutable std::mutex mu_;
    std::map<std::string, std::shared_ptr<const ChallengeCert>, std::less<>> pending_;
};

}  // namespace runewarp::acme
