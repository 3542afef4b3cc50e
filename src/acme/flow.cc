#include "acme/flow.hh"

#include <gnutls/x509.h>

#include <algorithm>
#include <ctime>
#include <nlohmann/json.hpp>

#include "trust/gnutls_util.hh"
#include "trust/x509_util.hh"

namespace runewarp::acme {

namespace {

constexpr int kMaxBadNonceRetries = 10;
constexpr int kMaxPolls = 12;             // 1+2+4+8+16*8 s: a little over 2 minutes
constexpr long kMaxRetryAfterPollS = 60;  // a poll never waits longer than this
constexpr const char* kPemChain = "application/pem-certificate-chain";

struct ChallengeWithdraw {
    ChallengeBoard* board;
    const std::string& hostname;
    ~ChallengeWithdraw() { board->withdraw(hostname); }
};

bool fail(FlowError& err, FailReason reason, std::string message, long retry_after = -1) {
    err.reason = reason;
    err.message = std::move(message);
    err.retry_after_s = retry_after;
    return false;
}

std::string short_url(const std::string& url) {
    // Only the path: enough to tell the requests apart without repeating the host.
    auto scheme = url.find("://");
    auto slash = url.find('/', scheme == std::string::npos ? 0 : scheme + 3);
    return slash == std::string::npos ? url : url.substr(slash);
}

}  // namespace

Result<std::string> make_csr_der(gnutls_x509_privkey_t key, const std::string& hostname) {
    gnutls_x509_crq_t raw = nullptr;
    int rc = gnutls_x509_crq_init(&raw);
    if (rc < 0) return trust::gnutls_error("cannot allocate CSR", rc);
    std::unique_ptr<gnutls_x509_crq_int, decltype(&gnutls_x509_crq_deinit)> crq(
        raw, gnutls_x509_crq_deinit);
    // CN only when it fits X.520's 64 characters (CAs refuse longer ones); the SAN names the
    // hostname either way.
    const bool with_cn = hostname.size() <= 64;
    if ((rc = gnutls_x509_crq_set_version(raw, 1)) < 0 ||
        (rc = gnutls_x509_crq_set_key(raw, key)) < 0 ||
        (with_cn &&
         (rc = gnutls_x509_crq_set_dn_by_oid(raw, GNUTLS_OID_X520_COMMON_NAME, 0, hostname.data(),
                                             static_cast<unsigned>(hostname.size()))) < 0) ||
        (rc = gnutls_x509_crq_set_subject_alt_name(raw, GNUTLS_SAN_DNSNAME, hostname.data(),
                                                   static_cast<unsigned>(hostname.size()),
                                                   GNUTLS_FSAN_SET)) < 0 ||
        (rc = gnutls_x509_crq_sign2(raw, key, GNUTLS_DIG_SHA256, 0)) < 0) {
        return trust::gnutls_error("cannot build CSR", rc);
    }
    trust::OwnedDatum der;
    rc = gnutls_x509_crq_export2(raw, GNUTLS_X509_FMT_DER, der.out());
    if (rc < 0) return trust::gnutls_error("cannot export CSR", rc);
    return der.str();
}

const char* reason_name(FailReason r) {
    switch (r) {
        case FailReason::kNetwork:
            return "acme-server-unreachable";
        case FailReason::kServer:
            return "acme-server-error";
        case FailReason::kChallenge:
            return "challenge-failed";
        case FailReason::kOrder:
            return "order-invalid";
        case FailReason::kResponse:
            return "bad-acme-response";
        case FailReason::kLocal:
            return "local-error";
        case FailReason::kStopped:
            return "stopped";
    }
    return "unknown";
}

Stats& stats() {
    static Stats s;
    return s;
}

std::chrono::milliseconds poll_delay(int attempt, long retry_after_s) {
    if (retry_after_s > 0) {
        return std::chrono::seconds(std::min(retry_after_s, kMaxRetryAfterPollS));
    }
    return std::chrono::seconds(1L << std::min(attempt, 4));
}

std::int64_t backoff_seconds(int failures, long retry_after_s) {
    constexpr int kMaxExponent = 16;
    const std::int64_t cap = std::int64_t{1} << kMaxExponent;
    std::int64_t delay = std::int64_t{1} << std::clamp(failures - 1, 0, kMaxExponent);
    if (retry_after_s > delay) delay = std::min<std::int64_t>(retry_after_s, cap);
    return delay;
}

Flow::Flow(std::string directory_url, std::string ca_file, std::string email, const EcKey& account,
           std::shared_ptr<ChallengeBoard> board, const std::atomic<bool>* stop, FlowHooks hooks)
    : directory_url_(std::move(directory_url)),
      email_(std::move(email)),
      account_(account),
      board_(std::move(board)),
      stop_(stop),
      hooks_(std::move(hooks)),
      http_(std::move(ca_file), stop) {}

bool Flow::ensure_directory(FlowError& err) {
    if (dir_) return true;
    auto r = http_.request(HttpMethod::kGet, directory_url_);
    if (!r) return fail(err, FailReason::kNetwork, r.error().message);
    if (r->status != 200) {
        return fail(err, FailReason::kServer,
                    "HTTP " + std::to_string(r->status) + " from GET " + short_url(directory_url_),
                    r->retry_after_s);
    }
    auto d = parse_directory(r->body);
    if (!d) return fail(err, FailReason::kResponse, d.error().message);
    dir_ = std::move(*d);
    return true;
}

bool Flow::fetch_nonce(FlowError& err) {
    auto r = http_.request(HttpMethod::kHead, dir_->new_nonce);
    if (!r) return fail(err, FailReason::kNetwork, r.error().message);
    if (r->replay_nonce.empty()) {
        return fail(err, FailReason::kServer,
                    "no nonce (HTTP " + std::to_string(r->status) + " from HEAD " +
                        short_url(dir_->new_nonce) + ")",
                    r->retry_after_s);
    }
    nonce_ = std::move(r->replay_nonce);
    return true;
}

bool Flow::post(const std::string& url, const std::optional<std::string>& payload, bool use_jwk,
                HttpResponse& out, FlowError& err, const char* accept) {
    for (int attempt = 0;; ++attempt) {
        if (stop_->load()) return fail(err, FailReason::kStopped, "stopped");
        if (nonce_.empty() && !fetch_nonce(err)) return false;
        auto body = jws_body(account_, use_jwk ? std::string_view() : kid_, nonce_, url, payload);
        if (!body) return fail(err, FailReason::kLocal, body.error().message);
        nonce_.clear();  // a nonce is good for one request
        auto r = http_.request(HttpMethod::kPost, url, *body, accept);
        if (!r) return fail(err, FailReason::kNetwork, r.error().message);
        nonce_ = r->replay_nonce;
        if (r->status >= 200 && r->status < 300) {
            out = std::move(*r);
            return true;
        }
        auto problem = parse_problem(r->body);
        if (problem && problem->type == kBadNonce && attempt < kMaxBadNonceRetries) {
            stats().bad_nonce_retries.fetch_add(1);
            continue;
        }
        // "<problem type>: <detail> (HTTP <n> from POST <path>)"; a badNonce detail may quote
        // the nonce, which is never logged.
        std::string where = "HTTP " + std::to_string(r->status) + " from POST " + short_url(url);
        std::string what;
        if (problem && problem->type == kBadNonce) {
            what = problem->type + ": too many rejected nonces (" + where + ")";
        } else if (problem) {
            what = describe(*problem) + " (" + where + ")";
        } else {
            what = where;
        }
        return fail(err, FailReason::kServer, std::move(what), r->retry_after_s);
    }
}

bool Flow::ensure_account(FlowError& err) {
    if (!kid_.empty()) return true;
    nlohmann::json payload = {{"termsOfServiceAgreed", true}};
    if (!email_.empty()) payload["contact"] = nlohmann::json::array({"mailto:" + email_});
    HttpResponse r;
    std::string text = payload.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    if (!post(dir_->new_account, text, /*use_jwk=*/true, r, err)) return false;
    if (r.location.empty()) {
        return fail(err, FailReason::kResponse, "newAccount answered without a Location");
    }
    kid_ = std::move(r.location);
    return true;
}

bool Flow::authorize(const std::string& hostname, const std::string& authz_url, FlowError& err) {
    HttpResponse r;
    if (!post(authz_url, std::nullopt, false, r, err)) return false;
    auto authz = parse_authorization(r.body);
    if (!authz) return fail(err, FailReason::kResponse, authz.error().message);
    if (authz->status == "valid") return true;  // reused from an earlier order
    if (authz->status != "pending") {
        return fail(err, FailReason::kChallenge, "authorization is " + authz->status);
    }
    if (authz->identifier.type != "dns" || authz->identifier.value != hostname) {
        return fail(err, FailReason::kResponse,
                    "authorization is for another identifier: " + authz->identifier.value);
    }
    const Challenge* ch = nullptr;
    for (const auto& c : authz->challenges) {
        if (c.type == "tls-alpn-01") ch = &c;
    }
    if (ch == nullptr) return fail(err, FailReason::kChallenge, "no tls-alpn-01 challenge offered");
    if (ch->token.empty() || ch->token.size() > 256) {
        return fail(err, FailReason::kResponse, "tls-alpn-01 challenge has no usable token");
    }
    auto cert = ChallengeCert::create(hostname, account_.key_authorization(ch->token));
    if (!cert) return fail(err, FailReason::kLocal, cert.error().message);

    board_->publish(hostname, std::move(*cert));
    ChallengeWithdraw withdraw{board_.get(), hostname};

    HttpResponse cr;
    if (!post(ch->url, std::string("{}"), false, cr, err)) return false;
    for (int attempt = 0; attempt < kMaxPolls; ++attempt) {
        if (!hooks_.wait(poll_delay(attempt, r.retry_after_s))) {
            return fail(err, FailReason::kStopped, "stopped");
        }
        if (!post(authz_url, std::nullopt, false, r, err)) return false;
        auto a = parse_authorization(r.body);
        if (!a) return fail(err, FailReason::kResponse, a.error().message);
        if (a->status == "valid") {
            if (hooks_.on_challenge) hooks_.on_challenge(true, {});
            return true;
        }
        if (a->status == "pending") continue;
        // The CA's words first (they say what it saw), then the problem type.
        std::string detail = "authorization is " + a->status;
        for (const auto& c : a->challenges) {
            if (c.type != "tls-alpn-01" || !c.error) continue;
            detail =
                c.error->detail.empty() ? c.error->type : c.error->detail + ": " + c.error->type;
        }
        if (hooks_.on_challenge) hooks_.on_challenge(false, detail);
        return fail(err, FailReason::kChallenge, std::move(detail));
    }
    return fail(err, FailReason::kChallenge, "authorization still pending after polling");
}

bool Flow::wait_order(const std::string& order_url, Order& order, bool until_not_processing,
                      FlowError& err) {
    long retry_after = -1;
    for (int attempt = 0;; ++attempt) {
        bool busy = until_not_processing ? order.status == "processing" : order.status == "pending";
        if (!busy) return true;
        if (attempt >= kMaxPolls) {
            return fail(err, FailReason::kOrder, "order still " + order.status + " after polling");
        }
        if (!hooks_.wait(poll_delay(attempt, retry_after))) {
            return fail(err, FailReason::kStopped, "stopped");
        }
        HttpResponse r;
        if (!post(order_url, std::nullopt, false, r, err)) return false;
        auto o = parse_order(r.body);
        if (!o) return fail(err, FailReason::kResponse, o.error().message);
        order = std::move(*o);
        retry_after = r.retry_after_s;
    }
}

bool Flow::issue(const std::string& hostname, Certificate& out, FlowError& err) {
    stats().issue_attempts.fetch_add(1);
    bool ok = [&] {
        if (!ensure_directory(err) || !ensure_account(err)) return false;

        nlohmann::json req = {
            {"identifiers", nlohmann::json::array({{{"type", "dns"}, {"value", hostname}}})}};
        HttpResponse r;
        if (!post(dir_->new_order,
                  req.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace), false, r,
                  err)) {
            return false;
        }
        auto order = parse_order(r.body);
        if (!order) return fail(err, FailReason::kResponse, order.error().message);
        if (r.location.empty()) {
            return fail(err, FailReason::kResponse, "newOrder answered without a Location");
        }
        stats().orders_placed.fetch_add(1);
        const std::string order_url = r.location;

        for (const auto& a : order->authorizations) {
            if (!authorize(hostname, a, err)) return false;
        }
        // Authorizations are valid: the order turns ready (pebble may take a moment).
        if (!post(order_url, std::nullopt, false, r, err)) return false;
        order = parse_order(r.body);
        if (!order) return fail(err, FailReason::kResponse, order.error().message);
        if (!wait_order(order_url, *order, false, err)) return false;
        if (order->status != "ready") {
            return fail(err, FailReason::kOrder,
                        "order is " + order->status +
                            (order->error ? ": " + describe(*order->error) : std::string()));
        }

        auto key = trust::generate_p256_key();
        if (!key) return fail(err, FailReason::kLocal, key.error().message);
        auto csr = make_csr_der(key->get(), hostname);
        if (!csr) return fail(err, FailReason::kLocal, csr.error().message);
        nlohmann::json fin = {{"csr", b64url(*csr)}};
        if (!post(order->finalize, fin.dump(), false, r, err)) return false;
        order = parse_order(r.body);
        if (!order) return fail(err, FailReason::kResponse, order.error().message);
        if (!wait_order(order_url, *order, true, err)) return false;
        if (order->status != "valid" || order->certificate.empty()) {
            return fail(err, FailReason::kOrder,
                        "order is " + order->status +
                            (order->error ? ": " + describe(*order->error) : std::string()));
        }

        if (!post(order->certificate, std::nullopt, false, r, err, kPemChain)) return false;
        auto chain = trust::import_crt_list_pem(r.body, "the downloaded certificate", true);
        if (!chain) return fail(err, FailReason::kResponse, chain.error().message);
        auto match = trust::key_matches_crt(key->get(), chain->front().get());
        if (!match || !*match) {
            return fail(err, FailReason::kResponse,
                        "the downloaded certificate is not for the requested key");
        }
        if (gnutls_x509_crt_check_hostname(chain->front().get(), hostname.c_str()) == 0) {
            return fail(err, FailReason::kResponse,
                        "the downloaded certificate does not name " + hostname);
        }
        auto key_pem = trust::export_key_pem(key->get());
        if (!key_pem) return fail(err, FailReason::kLocal, key_pem.error().message);
        std::time_t not_after = gnutls_x509_crt_get_expiration_time(chain->front().get());
        if (not_after <= std::time(nullptr)) {
            return fail(err, FailReason::kResponse, "the downloaded certificate has expired");
        }
        // Stored and handed on as exactly the certificates, leaf first, whatever else the body
        // held around them.
        std::string chain_pem;
        for (const auto& c : *chain) {
            auto pem = trust::export_crt_pem(c.get());
            if (!pem) return fail(err, FailReason::kLocal, pem.error().message);
            chain_pem += *pem;
        }
        out.cert_pem = std::move(chain_pem);
        out.key_pem = std::move(*key_pem);
        out.not_before = gnutls_x509_crt_get_activation_time(chain->front().get());
        out.not_after = gnutls_x509_crt_get_expiration_time(chain->front().get());
        return true;
    }();
    if (!ok) {
        // Start over next time: the directory, the account (a CA may forget it) and the nonce.
        dir_.reset();
        kid_.clear();
        nonce_.clear();
        if (stop_->load()) err.reason = FailReason::kStopped;
    }
    return ok;
}

}  // namespace runewarp::acme
