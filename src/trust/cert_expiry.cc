// Certificate expiry: notAfter through GnuTLS and the warning window.
#include "trust/cert_expiry.hh"

#include <gnutls/x509.h>

#include "core/file.hh"
#include "trust/material.hh"
#include "trust/x509_util.hh"

namespace runewarp::trust {

ExpiryStatus expiry_level(std::time_t now, std::time_t not_after, int64_t warn_days) noexcept {
    ExpiryStatus s;
    if (now >= not_after) {
        s.level = ExpiryLevel::kExpired;
        return s;
    }
    const int64_t left = static_cast<int64_t>(not_after) - static_cast<int64_t>(now);
    s.days_left = left / kDaySeconds;
    s.level = left <= warn_days * kDaySeconds ? ExpiryLevel::kExpiring : ExpiryLevel::kValid;
    return s;
}

Result<std::time_t> certificate_not_after(std::string_view pem, const std::string& origin) {
    auto crt = import_crt_pem(pem, origin);
    if (!crt) return std::move(crt).error();
    std::time_t t = gnutls_x509_crt_get_expiration_time(crt->get());
    if (t == static_cast<std::time_t>(-1)) return Error::msg(origin + ": no readable notAfter");
    return t;
}

Result<std::time_t> certificate_file_not_after(const std::string& path) {
    auto pem = core::read_file(path);
    if (!pem) return std::move(pem).error();
    return certificate_not_after(*pem, path);
}

}  // namespace runewarp::trust
