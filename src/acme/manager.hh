// ACME manager: keeps one hostname's certificate issued and renewed through ACME v2 (RFC 8555)
// with TLS-ALPN-01 (RFC 8737), on its own thread, so the event loops never wait on it.
//
// Role-agnostic: the Server runs one for the Server hostname, a terminating Client one per
// terminating Public hostname; both share the account cached in the state directory. The role
// answers challenges from the ChallengeBoard and installs certificates handed to on_certificate.
#pragma once

#include <cstdint>
#include <ctime>
#include <functional>
#include <memory>
#include <string>

#include "acme/challenge.hh"
#include "config/config.hh"
#include "obs/log.hh"
#include "runewarp/result.hh"

namespace runewarp::acme {

inline constexpr const char* kLetsEncryptDirectory =
    "https://acme-v02.api.letsencrypt.org/directory";

enum class Role { kServer, kClient };  // log prefix `server acme` / `client acme`

struct ManagerOptions {
    Role role = Role::kServer;
    std::string hostname;  // canonical
    std::string email;     // mailto: contact
    std::string directory_url = kLetsEncryptDirectory;
    std::string ca_file;     // PEM roots for the ACME server's HTTPS; empty = system trust
    std::string state_dir;   // exists (0700); account key and per-hostname certificate cache
    obs::LoggerOptions log;  // the manager logs through its own Logger on stderr
};

// The options a role's [server.acme] or [client.acme] section gives for `hostname`; the manager
// logs like `log` (the role's own logger options).
ManagerOptions manager_options(Role role, std::string hostname, const config::Acme& acme,
                               const obs::LoggerOptions& log);

// An issued certificate: chain (leaf first) and key as PEM, and the leaf's validity.
struct Certificate {
    std::string cert_pem;
    std::string key_pem;
    std::time_t not_before = 0;
    std::time_t not_after = 0;
};

class Manager {
public:
    // Called on the manager thread after a certificate was issued or renewed and written to the
    // cache. The role posts it to its loop(s); it must not block.
    using OnCertificate = std::function<void(std::shared_ptr<const Certificate>)>;
    // Called on the manager thread when the manager cannot go on (it has logged the ERROR);
    // the role shuts down fast and exits 1 (spec 6.4).
    using OnFatal = std::function<void(const std::string& why)>;

    // Reads the cache (never the network) and logs the startup line: `cached certificate
    // ready`, `first issuance starting reason=no-ready-cached-certificate`, or `renewal
    // starting`. Fails only when the state directory is unusable.
    static Result<std::unique_ptr<Manager>> create(ManagerOptions opts,
                                                   std::shared_ptr<ChallengeBoard> board,
                                                   OnCertificate on_certificate, OnFatal on_fatal);
    ~Manager();  // stop()s
    Manager(const Manager&) = delete;
    Manager& operator=(const Manager&) = delete;

    // The cached certificate found by create() when it has not expired, else null.
    std::shared_ptr<const Certificate> cached() const;

    // Starts the thread: issuance when nothing usable is cached, then renewal once two thirds
    // of the validity window have passed; failed orders retry after 2^n s (n capped at 16).
    void start();
    // Wakes the thread (an HTTP request in flight is aborted) and joins it. Idempotent.
    void stop();

    const ManagerOptions& options() const noexcept;

private:
    Manager() = default;
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace runewarp::acme
