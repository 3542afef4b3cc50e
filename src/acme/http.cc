#include "acme/http.hh"

#include <curl/curl.h>
#include <strings.h>

#include <cctype>
#include <charconv>
#include <cstring>
#include <ctime>
#include <mutex>

#include "runewarp_version.h"

namespace runewarp::acme {

namespace {

constexpr long kConnectTimeoutMs = 10'000;
constexpr long kTotalTimeoutMs = 30'000;
constexpr std::size_t kMaxBody = 1024 * 1024;  // certificate chains are a few KiB

void global_init_once() {
    static std::once_flag once;
    std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

std::string_view trim(std::string_view v) {
    while (!v.empty() && std::isspace(static_cast<unsigned char>(v.front()))) v.remove_prefix(1);
    while (!v.empty() && std::isspace(static_cast<unsigned char>(v.back()))) v.remove_suffix(1);
    return v;
}

long parse_retry_after(std::string_view v) {
    long secs = 0;
    auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), secs);
    if (ec == std::errc() && p == v.data() + v.size() && secs >= 0) return secs;
    std::string date(v);
    std::time_t t = curl_getdate(date.c_str(), nullptr);
    if (t < 0) return -1;
    std::time_t now = std::time(nullptr);
    return t > now ? static_cast<long>(t - now) : 0;
}

}  // namespace

struct HttpClient::State {
    std::string ca_file;
    const std::atomic<bool>* abort = nullptr;
    CURL* curl = nullptr;
    HttpResponse* resp = nullptr;
    bool body_too_large = false;
    char errbuf[CURL_ERROR_SIZE] = {};

    static size_t on_body(char* ptr, size_t size, size_t nmemb, void* user) {
        auto* st = static_cast<State*>(user);
        size_t n = size * nmemb;
        if (st->resp->body.size() + n > kMaxBody) {
            st->body_too_large = true;
            return 0;
        }
        st->resp->body.append(ptr, n);
        return n;
    }

    static size_t on_header(char* ptr, size_t size, size_t nmemb, void* user) {
        auto* st = static_cast<State*>(user);
        size_t n = size * nmemb;
        std::string_view line(ptr, n);
        auto colon = line.find(':');
        if (colon == std::string_view::npos) {
            // A new status line (after a redirect or 100 Continue) starts a new header block.
            if (line.starts_with("HTTP/")) {
                st->resp->replay_nonce.clear();
                st->resp->location.clear();
                st->resp->content_type.clear();
                st->resp->retry_after_s = -1;
            }
            return n;
        }
        std::string_view name = trim(line.substr(0, colon));
        std::string_view value = trim(line.substr(colon + 1));
        auto is = [&](const char* h) {
            return name.size() == std::strlen(h) && strncasecmp(name.data(), h, name.size()) == 0;
        };
        if (is("Replay-Nonce")) {
            st->resp->replay_nonce.assign(value);
        } else if (is("Location")) {
            st->resp->location.assign(value);
        } else if (is("Content-Type")) {
            st->resp->content_type.assign(value);
        } else if (is("Retry-After")) {
            st->resp->retry_after_s = parse_retry_after(value);
        }
        return n;
    }

    static int on_progress(void* user, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
        auto* st = static_cast<State*>(user);
        return st->abort != nullptr && st->abort->load() ? 1 : 0;
    }
};

HttpClient::HttpClient(std::string ca_file, const std::atomic<bool>* abort)
    : st_(std::make_unique<State>()) {
    global_init_once();
    st_->ca_file = std::move(ca_file);
    st_->abort = abort;
}

HttpClient::~HttpClient() {
    if (st_->curl != nullptr) curl_easy_cleanup(st_->curl);
}

Result<HttpResponse> HttpClient::request(HttpMethod method, const std::string& url,
                                         std::string_view body, const char* accept) {
    if (st_->abort != nullptr && st_->abort->load()) return Error::msg("stopped");
    if (!url.starts_with("https://")) return Error::msg("refusing a non-HTTPS URL");
    if (st_->curl == nullptr) {
        st_->curl = curl_easy_init();
        if (st_->curl == nullptr) return Error::msg("cannot initialise libcurl");
    } else {
        curl_easy_reset(st_->curl);  // keeps the connection cache
    }
    CURL* c = st_->curl;
    HttpResponse resp;
    st_->resp = &resp;
    st_->body_too_large = false;
    st_->errbuf[0] = '\0';

    static const std::string user_agent = std::string("runewarp/") + RUNEWARP_VERSION;
    curl_easy_setopt(c, CURLOPT_URL, url.c_str());
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "https");
    curl_easy_setopt(c, CURLOPT_HTTP_VERSION, CURL_HTTP_VERSION_1_1);
    curl_easy_setopt(c, CURLOPT_USERAGENT, user_agent.c_str());
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, kConnectTimeoutMs);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, kTotalTimeoutMs);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L);
    if (!st_->ca_file.empty()) curl_easy_setopt(c, CURLOPT_CAINFO, st_->ca_file.c_str());
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, st_->errbuf);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, &State::on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, st_.get());
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, &State::on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, st_.get());
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, &State::on_progress);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, st_.get());

    struct curl_slist* headers = nullptr;
    if (method == HttpMethod::kPost) {
        headers = curl_slist_append(headers, "Content-Type: application/jose+json");
        curl_easy_setopt(c, CURLOPT_POST, 1L);
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body.data());
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
    } else if (method == HttpMethod::kHead) {
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    }
    headers = curl_slist_append(headers, "Expect:");
    if (accept != nullptr) {
        std::string h = std::string("Accept: ") + accept;
        headers = curl_slist_append(headers, h.c_str());
    }
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);

    CURLcode rc = curl_easy_perform(c);
    curl_slist_free_all(headers);
    st_->resp = nullptr;
    if (rc == CURLE_ABORTED_BY_CALLBACK) return Error::msg("stopped");
    if (st_->body_too_large) return Error::msg("response body too large (" + url + ")");
    if (rc != CURLE_OK) {
        // "<short cause>: <curl's detail> (<url>)": WARN lines keep the part before ": ".
        std::string m = curl_easy_strerror(rc);
        if (st_->errbuf[0] != '\0') m += std::string(": ") + st_->errbuf;
        return Error::msg(m + " (" + url + ")");
    }
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &resp.status);
    return resp;
}

}  // namespace runewarp::acme
