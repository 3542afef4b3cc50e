// CertExpiryWatch: expiry levels of the served certificates turned into operator log lines.
#include "server/cert_watch.hh"

#include "trust/x509_util.hh"

namespace runewarp::server {

namespace {

// The renewed files are read at startup only, so renewing is not enough by itself.
constexpr const char* kRenewHint =
    "renew it with `runewarp server cert renew`, then reload the server (`runewarp reload`) to "
    "load it";
constexpr const char* kAcmeHint =
    "the ACME manager renews it; see the `server acme` lines for why it has not";

}  // namespace

void CertExpiryWatch::add(std::string path, std::time_t not_after, Source source) {
    certs_.push_back({std::move(path), not_after, source});
}

void CertExpiryWatch::replace(std::string path, std::time_t not_after, Source source) {
    certs_.clear();
    add(std::move(path), not_after, source);
}

trust::ExpiryLevel CertExpiryWatch::check(std::time_t now) noexcept {
    trust::ExpiryLevel worst = trust::ExpiryLevel::kValid;
    for (const Served& c : certs_) {
        const trust::ExpiryStatus st = trust::expiry_level(now, c.not_after);
        const std::string expires = trust::rfc3339_utc(c.not_after);
        const char* hint = c.source == Source::kAcme ? kAcmeHint : kRenewHint;
        if (st.level == trust::ExpiryLevel::kExpired) {
            log_.error("server certificate expired", {{"path", c.path}, {"expires-at", expires}},
                       std::string("Clients refuse it; ") + hint);
            worst = trust::ExpiryLevel::kExpired;
        } else if (st.level == trust::ExpiryLevel::kExpiring) {
            log_.warn("server certificate expiring",
                      {{"path", c.path}, {"expires-at", expires}, {"days-left", st.days_left}},
                      hint);
            if (worst == trust::ExpiryLevel::kValid) worst = trust::ExpiryLevel::kExpiring;
        }
    }
    return worst;
}

}  // namespace runewarp::server
