// One ACME order end to end (RFC 8555 section 7, RFC 8737): directory, nonce, account, order,
// TLS-ALPN-01 authorizations through the ChallengeBoard, finalize with a CSR, certificate
// download. Blocking; runs on the manager thread.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "acme/challenge.hh"
#include "acme/http.hh"
#include "acme/jws.hh"
#include "acme/manager.hh"
#include "acme/messages.hh"
#include "runewarp/result.hh"

namespace runewarp::acme {

// Why an order failed, for the `reason=` field.
enum class FailReason { kNetwork, kServer, kChallenge, kOrder, kResponse, kLocal, kStopped };
const char* reason_name(FailReason r);

struct FlowError {
    FailReason reason = FailReason::kServer;
    std::string message;
    long retry_after_s = -1;  // from the failing response, when it had one
};

struct FlowHooks {
    // Sleeps up to `d`; false when the manager is stopping.
    std::function<bool(std::chrono::milliseconds d)> wait;
    // An authorization became valid (`true`) or invalid (`false`, with the problem).
    std::function<void(bool valid, const std::string& detail)> on_challenge;
};

// What every Flow and Manager of this process did, for tests and diagnostics.
struct Stats {
    std::atomic<std::uint64_t> issue_attempts{0};     // Flow::issue calls
    std::atomic<std::uint64_t> orders_placed{0};      // newOrder requests that created an order
    std::atomic<std::uint64_t> bad_nonce_retries{0};  // requests repeated after badNonce
    std::atomic<std::uint64_t> renewal_waits{0};      // a manager went to sleep until renewal
};
Stats& stats();

class Flow {
public:
    Flow(std::string directory_url, std::string ca_file, std::string email, const EcKey& account,
         std::shared_ptr<ChallengeBoard> board, const std::atomic<bool>* stop, FlowHooks hooks);

    // Issues a certificate for `hostname` with a fresh P-256 key.
    bool issue(const std::string& hostname, Certificate& out, FlowError& err);

private:
    bool ensure_directory(FlowError& err);
    bool ensure_account(FlowError& err);
    bool fetch_nonce(FlowError& err);
    // A signed POST (payload nullopt: POST-as-GET) with badNonce retries. Success is 2xx.
    bool post(const std::string& url, const std::optional<std::string>& payload, bool use_jwk,
              HttpResponse& out, FlowError& err, const char* accept = nullptr);
    bool authorize(const std::string& hostname, const std::string& authz_url, FlowError& err);
    bool wait_order(const std::string& order_url, Order& order, bool until_not_processing,
                    FlowError& err);

    std::string directory_url_;
    std::string email_;
    const EcKey& account_;
    std::shared_ptr<ChallengeBoard> board_;
    const std::atomic<bool>* stop_;
    FlowHooks hooks_;
    HttpClient http_;
    std::optional<Directory> dir_;
    std::string kid_;
    std::string nonce_;
};

// The DER CSR sent to finalize: `key`, SAN dNSName = hostname, CN = hostname when it fits 64
// characters, SHA-256 signature.
Result<std::string> make_csr_der(gnutls_x509_privkey_t key, const std::string& hostname);

// Polling waits: 1, 2, 4, 8, 16, 16, ... s (attempt 0 is the first wait); a Retry-After from
// the last response replaces it, up to 60 s.
std::chrono::milliseconds poll_delay(int attempt, long retry_after_s);

// The wait before the next order after `failures` (>= 1) consecutive failed ones: 2^(failures-1)
// s with the exponent capped at 16, or a larger Retry-After (up to the same cap).
std::int64_t backoff_seconds(int failures, long retry_after_s);

}  // namespace runewarp::acme
