// CertExpiryWatch: the certificates the Server serves and the warnings about their expiry,
// written at startup and then once a day.
#pragma once

#include <cstdint>
#include <ctime>
#include <string>
#include <vector>

#include "obs/log.hh"
#include "trust/cert_expiry.hh"

namespace runewarp::server {

class CertExpiryWatch {
public:
    static constexpr int64_t kCheckIntervalNs = 86'400'000'000'000;  // daily

    // Where a served certificate comes from, for the operator hint: manual files are renewed
    // by hand and loaded at startup; ACME certificates are renewed by the manager.
    enum class Source : uint8_t { kManual, kAcme };

    explicit CertExpiryWatch(obs::Logger& log) noexcept : log_(log) {}

    // A certificate the daemon serves: its file and the notAfter of what was loaded from it
    // (the daemon keeps serving that one until it restarts, whatever the file holds later).
    void add(std::string path, std::time_t not_after, Source source = Source::kManual);
    // The served certificate changed at runtime (ACME issuance or renewal): the watch now holds
    // just this one.
    void replace(std::string path, std::time_t not_after, Source source);
    bool empty() const noexcept { return certs_.empty(); }

    // WARN `server certificate expiring` within the warning window, ERROR `server certificate
    // expired` past notAfter, nothing otherwise; returns the worst level seen.
    trust::ExpiryLevel check(std::time_t now) noexcept;

    struct Served {
        std::string path;
        std::time_t not_after;
        Source source;
    };
    // The certificates served now (the metrics and the status page show their expiry).
    const std::vector<Served>& served() const noexcept { return certs_; }

private:
    obs::Logger& log_;
    std::vector<Served> certs_;
};

}  // namespace runewarp::server
