#include "acme/challenge.hh"

namespace runewarp::acme {

Result<std::shared_ptr<const ChallengeCert>> ChallengeCert::create(
    std::string_view hostname, std::string_view key_authorization) {
    (void)hostname, (void)key_authorization;
    return Error::msg("TLS-ALPN-01 challenge certificates are not implemented yet");
}

ChallengeCert::~ChallengeCert() {
    if (cred_ != nullptr) gnutls_certificate_free_credentials(cred_);
}

void ChallengeBoard::publish(const std::string& hostname,
                             std::shared_ptr<const ChallengeCert> cert) {
    std::lock_guard lock(mu_);
    pending_[hostname] = std::move(cert);
}

void ChallengeBoard::withdraw(const std::string& hostname) {
    std::lock_guard lock(mu_);
    pending_.erase(hostname);
}

std::shared_ptr<const ChallengeCert> ChallengeBoard::find(std::string_view hostname) const {
    std::lock_guard lock(mu_);
    auto it = pending_.find(hostname);
    return it == pending_.end() ? nullptr : it->second;
}

}  // namespace runewarp::acme
