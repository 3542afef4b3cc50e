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

bool ascii_iequal(std::string_view a, std::string_view b) noexcept {
    if (a.size() != b.size()) return false;
    for (size_t i = 0; i < a.size(); ++i) {
        char x = a[i], y = b[i];
        if (x >= 'A' && x <= 'Z') x = static_cast<char>(x - 'A' + 'a');
        if (y >= 'A' && y <= 'Z') y = static_cast<char>(y - 'A' + 'a');
        if (x != y) return false;
    }
    return true;
}

std::string_view trim_ows(std::string_view s) noexcept {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
    return s;
}

// Whether a comma-separated header value lists `token` (case-insensitive).
bool lists_token(std::string_view value, std::string_view token) noexcept {
    while (!value.empty()) {
        size_t comma = value.find(',');
        if (ascii_iequal(trim_ows(value.substr(0, comma)), token)) return true;
        if (comma == std::string_view::npos) break;
        value.remove_prefix(comma + 1);
    }
    return false;
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
    bool close = false, keep_alive = false, body = false;
    while (true) {
        if (!next_line(buf, pos, line)) {
            return truncated || buf.size() >= limit ? HttpParse::kTooLarge : HttpParse::kIncomplete;
        }
        if (line.empty()) break;
        size_t colon = line.find(':');
        if (colon == std::string_view::npos) return HttpParse::kBad;
        // No whitespace before the colon, no obsolete line folding.
        if (!is_token(line.substr(0, colon))) return HttpParse::kBad;
        std::string_view name = line.substr(0, colon);
        std::string_view value = line.substr(colon + 1);
        if (!is_field_value(value)) return HttpParse::kBad;
        if (ascii_iequal(name, "connection")) {
            close = close || lists_token(value, "close");
            keep_alive = keep_alive || lists_token(value, "keep-alive");
        } else if (ascii_iequal(name, "transfer-encoding")) {
            body = true;
        } else if (ascii_iequal(name, "content-length")) {
            body = body || trim_ows(value) != "0";
        }
    }
    out.method = method;
    out.target = target;
    out.path = target.substr(0, target.find('?'));
    out.version = version;
    out.head_length = pos;
    out.keep_alive = !close && !body && (version == "HTTP/1.1" || keep_alive);
    return HttpParse::kOk;
}

}  // namespace runewarp::obs
