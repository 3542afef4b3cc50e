// HTTP/1.x request head parser for the metrics listener.
#include "obs/http_request.hh"

namespace runewarp::obs {

namespace {

bool is_tchar(char c) noexcept {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
    switch (c) {
        case '!':
        case '#':
        case '$':
        case '%':
        case '&':
        case '\'':
        case '*':
        case '+':
        case '-':
        case '.':
        case '^':
        case '_':
        case '`':
        case '|':
        case '~':
            return true;
        default:
            return false;
    }
}

bool is_token(std::string_view s) noexcept {
    if (s.empty()) return false;
    for (char c : s) {
        if (!is_tchar(c)) return false;
    }
    return true;
}

// Visible ASCII only: no spaces or control bytes inside a request target.
bool is_target(std::string_view s) noexcept {
    if (s.empty() || s.front() != '/') return false;
    for (char c : s) {
        auto u = static_cast<unsigned char>(c);
        if (u <= 0x20 || u >= 0x7f) return false;
    }
    return true;
}

// Header field values: visible ASCII, spaces, tabs and obs-text; no other control bytes.
bool is_field_value(std::string_view s) noexcept {
    for (char c : s) {
        auto u = static_cast<unsigned char>(c);
        if ((u < 0x20 && c != '\t') || u == 0x7f) return false;
    }
    return true;
}

// One line without its terminator (CRLF, or a bare LF as RFC 9112 allows recipients to accept).
// False when no terminator lies within `buf`.
bool next_line(std::string_view buf, size_t& pos, std::string_view& line) noexcept {
    size_t lf = buf.find('\n', pos);
    if (lf == std::string_view::npos) return false;
    size_t end = lf;
    if (end > pos && buf[end - 1] == '\r') --end;
    line = buf.substr(pos, end - pos);
    pos = lf + 1;
    return true;
}

}  // namespace

HttpParse parse_http_request(std::string_view buf, HttpRequest& out, size_t limit) noexcept {
    out = HttpRequest{};
    const bool truncated = buf.size() > limit;
    if (truncated) buf = buf.substr(0, limit);
    size_t pos = 0;
    std::string_view line;
    if (!next_line(buf, pos, line)) {
        // A request line that cannot be valid is refused before waiting for more.
        for (char c : buf) {
            auto u = static_cast<unsigned char>(c);
            if ((u < 0x20 && c != '\r') || u >= 0x7f) return HttpParse::kBad;
        }
        return truncated || buf.size() >= limit ? HttpParse::kTooLarge : HttpParse::kIncomplete;
    }
    // request-line = method SP request-target SP HTTP-version
    size_t sp1 = line.find(' ');
    if (sp1 == std::string_view::npos) return HttpParse::kBad;
    size_t sp2 = line.find(' ', sp1 + 1);
    if (sp2 == std::string_view::npos) return HttpParse::kBad;
    std::string_view method = line.substr(0, sp1);
    std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
    std::string_view version = line.substr(sp2 + 1);
    if (!is_token(method) || !is_target(target)) return HttpParse::kBad;
    if (version != "HTTP/1.1" && version != "HTTP/1.0") return HttpParse::kBad;
    // header-field lines up to the blank line.
    while (true) {
        if (!next_line(buf, pos, line)) {
            return truncated || buf.size() >= limit ? HttpParse::kTooLarge : HttpParse::kIncomplete;
        }
        if (line.empty()) break;
        size_t colon = line.find(':');
        if (colon == std::string_view::npos) return HttpParse::kBad;
        // No whitespace before the colon, no obsolete line folding.
        if (!is_token(line.substr(0, colon))) return HttpParse::kBad;
        if (!is_field_value(line.substr(colon + 1))) return HttpParse::kBad;
    }
    out.method = method;
    out.target = target;
    out.path = target.substr(0, target.find('?'));
    out.version = version;
    out.head_length = pos;
    return HttpParse::kOk;
}

}  // namespace runewarp::obs
