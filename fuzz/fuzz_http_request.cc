// Fuzz target for the metrics listener's request head parser: never reads past the limit, a
// parsed head is a prefix of the input with a token method, a "/" target and an HTTP/1.x
// version, and parsing is stable when more bytes follow a complete head.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz/fuzz_target.hh"
#include "obs/http_request.hh"

using runewarp::fuzz::check;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    using namespace runewarp::obs;
    std::string_view raw(reinterpret_cast<const char*>(data), size);
    HttpRequest req;
    HttpParse r = parse_http_request(raw, req);
    if (r == HttpParse::kOk) {
        check(req.head_length > 0 && req.head_length <= raw.size());
        check(req.head_length <= kMaxRequestHead);
        check(!req.method.empty() && req.target.starts_with('/'));
        check(req.path.size() <= req.target.size() && req.target.starts_with(req.path));
        check(req.version == "HTTP/1.1" || req.version == "HTTP/1.0");
        // The same head followed by more bytes parses the same.
        std::string more(raw.substr(0, req.head_length));
        more += "trailing body bytes";
        HttpRequest again;
        check(parse_http_request(more, again) == HttpParse::kOk);
        check(again.head_length == req.head_length && again.target == req.target);
    } else if (r == HttpParse::kIncomplete) {
        check(raw.size() < kMaxRequestHead);
    }
    // A smaller limit never turns a refusal into success.
    HttpRequest small;
    HttpParse s = parse_http_request(raw, small, 64);
    if (r == HttpParse::kBad) check(s != HttpParse::kOk);
    if (s == HttpParse::kOk) check(small.head_length <= 64);
    return 0;
}
