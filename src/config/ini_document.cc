// Raw INI layer: inih does the key/value parsing; a pre-scan of the same lines supplies what
// Debian's inih r55 cannot (header lines, empty sections, duplicate headers, the 200-byte limit).
#include "config/ini_document.hh"

#include <ini.h>

#include <cctype>
#include <cstring>
#include <map>

namespace runewarp::config {

namespace {

bool is_space(char c) noexcept {
    return std::isspace(static_cast<unsigned char>(c)) != 0;
}

// inih's inline-comment-aware search: stops at one of `chars` or at ';' after whitespace.
std::size_t find_chars_or_comment(std::string_view s, std::string_view chars) {
    bool was_space = false;
    for (std::size_t i = 0; i < s.size(); ++i) {
        if (chars.find(s[i]) != std::string_view::npos) return i;
        if (was_space && s[i] == ';') return i;
        was_space = is_space(s[i]);
    }
    return s.size();
}

std::string_view trim(std::string_view s) {
    while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
    while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
    return s;
}

bool valid_label(std::string_view l) {
    if (l.empty() || l.size() > 63) return false;
    auto alnum = [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); };
    if (!alnum(l.front())) return false;
    for (char c : l) {
        if (!alnum(c) && c != '_' && c != '-') return false;
    }
    return true;
}

struct HeaderCheck {
    SectionKind kind = SectionKind::kTop;
    std::string label;
    std::string problem;  // empty when valid
    bool names_service = false;
};

HeaderCheck check_header(std::string_view name) {
    HeaderCheck h;
    static constexpr std::pair<std::string_view, SectionKind> kPlain[] = {
        {"server", SectionKind::kServer},   {"server.acme", SectionKind::kServerAcme},
        {"client", SectionKind::kClient},   {"client.acme", SectionKind::kClientAcme},
        {"control", SectionKind::kControl}, {"metrics", SectionKind::kMetrics},
    };
    for (const auto& [text, kind] : kPlain) {
        if (name == text) {
            h.kind = kind;
            return h;
        }
    }
    static constexpr std::pair<std::string_view, SectionKind> kLabelled[] = {
        {"tunnel", SectionKind::kTunnel},
        {"route", SectionKind::kRoute},
        {"service", SectionKind::kService},
    };
    for (const auto& [word, kind] : kLabelled) {
        if (!name.starts_with(word)) continue;
        std::string_view rest = name.substr(word.size());
        if (!rest.empty() && rest.front() != ' ' && rest.front() != '"') continue;
        h.kind = kind;
        h.names_service = kind == SectionKind::kService;
        if (rest.size() < 3 || rest.front() != ' ' || rest[1] != '"' || rest.back() != '"') {
            h.problem = "invalid section name [" + std::string(name) + "]: expected [" +
                        std::string(word) + " \"LABEL\"]";
            return h;
        }
        std::string_view label = rest.substr(2, rest.size() - 3);
        if (!valid_label(label)) {
            h.problem = "invalid " + std::string(word) + " label \"" + std::string(label) +
                        "\": labels match [a-z0-9][a-z0-9_-]{0,62}";
            return h;
        }
        h.label = std::string(label);
        return h;
    }
    h.problem = "unknown section [" + std::string(name) + "]";
    return h;
}

struct ParseState {
    std::vector<std::string_view> lines;  // lines fed to inih (long ones blanked)
    std::vector<int> section_of_line;     // index into doc.sections, per line
    std::size_t next = 0;                 // next line to feed
    RawDocument* doc = nullptr;
};

// inih reader: one line per call, without the newline (every fed line fits the buffer).
char* read_line(char* str, int num, void* stream) noexcept {
    auto* st = static_cast<ParseState*>(stream);
    if (st->next >= st->lines.size() || num <= 0) return nullptr;
    std::string_view l = st->lines[st->next++];
    std::size_t n = std::min(l.size(), static_cast<std::size_t>(num - 1));
    // A blanked (over-long) line is an empty view whose data() may be null: memcpy must not see it.
    if (n > 0) std::memcpy(str, l.data(), n);
    str[n] = '\0';
    return str;
}

int on_pair(void* user, const char* /*section*/, const char* name, const char* value) noexcept {
    auto* st = static_cast<ParseState*>(user);
    if (st->next == 0) return 1;
    std::size_t line_index = st->next - 1;
    auto& sec = st->doc->sections[static_cast<std::size_t>(st->section_of_line[line_index])];
    std::string_view v = value ? value : "";
    if (v.size() >= 2 && v.front() == '"' && v.back() == '"') v = v.substr(1, v.size() - 2);
    sec.entries.push_back(
        RawEntry{name ? name : "", std::string(v), static_cast<int>(line_index) + 1});
    return 1;
}

}  // namespace

RawDocument parse_ini(std::string_view text, const std::string& file) {
    RawDocument doc;
    doc.sections.push_back(RawSection{});
    ParseState st;
    st.doc = &doc;

    std::vector<std::string_view> raw;
    for (std::size_t pos = 0; pos <= text.size();) {
        auto nl = text.find('\n', pos);
        if (nl == std::string_view::npos) {
            if (pos < text.size()) raw.push_back(text.substr(pos));
            break;
        }
        raw.push_back(text.substr(pos, nl - pos));
        pos = nl + 1;
    }

    std::map<std::string, int> first_header_line;
    bool prev_name = false;  // mirrors inih: an indented line after a key continues it
    int current = 0;
    for (std::size_t i = 0; i < raw.size(); ++i) {
        int lineno = static_cast<int>(i) + 1;
        std::string_view l = raw[i];
        if (l.size() > kMaxLineBytes) {
            doc.problems.push_back(Problem{file, lineno,
                                           "line " + std::to_string(lineno) + " is longer than " +
                                               std::to_string(kMaxLineBytes) + " bytes"});
            st.lines.push_back(std::string_view());
            st.section_of_line.push_back(current);
            continue;
        }
        st.lines.push_back(l);
        // inih works on C strings: a NUL ends the line.
        if (auto nul = l.find('\0'); nul != std::string_view::npos) l = l.substr(0, nul);
        if (i == 0 && l.starts_with("\xEF\xBB\xBF")) l.remove_prefix(3);
        while (!l.empty() && is_space(l.back())) l.remove_suffix(1);
        std::size_t indent = 0;
        while (indent < l.size() && is_space(l[indent])) ++indent;
        std::string_view start = l.substr(indent);
        if (start.empty() || start.front() == ';' || start.front() == '#') {
            // comment or blank line
        } else if (prev_name && indent > 0) {
            // continuation line: a repeated key for inih
        } else if (start.front() == '[') {
            auto end = find_chars_or_comment(start.substr(1), "]");
            if (end < start.size() - 1 && start[1 + end] == ']') {
                std::string name(start.substr(1, end));
                prev_name = false;
                HeaderCheck h = check_header(name);
                doc.any_service_header = doc.any_service_header || h.names_service;
                RawSection sec;
                sec.kind = h.kind;
                sec.label = h.label;
                sec.header = name;
                sec.line = lineno;
                sec.valid = h.problem.empty();
                if (!h.problem.empty()) doc.problems.push_back(Problem{file, lineno, h.problem});
                auto [it, inserted] = first_header_line.emplace(name, lineno);
                if (!inserted) {
                    sec.valid = false;
                    doc.problems.push_back(Problem{file, lineno,
                                                   "duplicate section [" + name +
                                                       "] (first at line " +
                                                       std::to_string(it->second) + ")"});
                }
                doc.sections.push_back(std::move(sec));
                current = static_cast<int>(doc.sections.size()) - 1;
            }
        } else {
            auto end = find_chars_or_comment(start, "=:");
            if (end < start.size()) prev_name = !trim(start.substr(0, end)).empty();
        }
        st.section_of_line.push_back(current);
    }

    int rc = ini_parse_stream(read_line, &st, on_pair, &st);
    if (rc > 0) {
        doc.problems.push_back(Problem{file, rc, "syntax error at line " + std::to_string(rc)});
    } else if (rc < 0) {
        doc.problems.push_back(Problem{file, 0, "out of memory while parsing"});
    }
    return doc;
}

}  // namespace runewarp::config
