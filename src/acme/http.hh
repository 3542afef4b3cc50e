// The ACME HTTPS client: libcurl's easy API, blocking, on the manager thread. HTTP/1.1, the
// configured CA file or the system trust, bounded bodies and timeouts, and an abort flag that
// ends a request in flight within about a second.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <string_view>

#include "runewarp/result.hh"

namespace runewarp::acme {

struct HttpResponse {
    long status = 0;
    std::string body;
    std::string content_type;
    std::string replay_nonce;
    std::string location;
    long retry_after_s = -1;  // -1 when absent or unparseable
};

enum class HttpMethod { kGet, kHead, kPost };

class HttpClient {
public:
    // `ca_file` empty: the system trust. `abort` is polled while a request runs.
    HttpClient(std::string ca_file, const std::atomic<bool>* abort);
    ~HttpClient();
    HttpClient(const HttpClient&) = delete;
    HttpClient& operator=(const HttpClient&) = delete;

    // A transport error (DNS, TCP, TLS, timeout, abort) is an Error; any HTTP status is a
    // response. POST bodies are sent as application/jose+json.
    Result<HttpResponse> request(HttpMethod method, const std::string& url,
                                 std::string_view body = {}, const char* accept = nullptr);

private:
    struct State;
    std::unique_ptr<State> st_;
};

}  // namespace runewarp::acme
