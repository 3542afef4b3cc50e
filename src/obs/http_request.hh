// The HTTP/1.x request head the metrics listener accepts: request line and header lines, bounded,
// parsed without allocation. Pure: no syscalls.
#pragma once

#include <cstddef>
#include <string_view>

namespace runewarp::obs {

enum class HttpParse : unsigned char {
    kIncomplete,  // no end of head yet: read more (within the limit)
    kOk,          // a whole, well-formed head
    kBad,         // malformed: answer 400
    kTooLarge,    // the head does not end within the limit: answer 431
};

struct HttpRequest {
    std::string_view method;   // token, e.g. "GET"
    std::string_view target;   // as sent, e.g. "/metrics?x=1"
    std::string_view path;     // target without the query
    std::string_view version;  // "HTTP/1.0" or "HTTP/1.1"
    size_t head_length = 0;    // bytes up to and including the blank line
    // Whether the connection may carry another request after the answer: HTTP/1.1 unless a
    // Connection header lists "close", HTTP/1.0 only with "Connection: keep-alive"; never when
    // the head announces a body (Content-Length other than 0, or Transfer-Encoding), which the
    // listener does not read.
    bool keep_alive = false;
};

// The metrics listener's bound on a request head.
constexpr size_t kMaxRequestHead = 8192;

// Parses the head at the start of `buf`; only bytes within `limit` count. Bytes after the head
// are the next request on a kept-alive connection, or an unread body (then keep_alive is false).
HttpParse parse_http_request(std::string_view buf, HttpRequest& out,
                             size_t limit = kMaxRequestHead) noexcept;

}  // namespace runewarp::obs
