// `config show` and `config init` text, both driven by the key registry so a new key appears in
// them without touching this file.
#include "config/render.hh"

#include <algorithm>
#include <array>
#include <cctype>
#include <string_view>

#include "config/ini_document.hh"
#include "config/registry.hh"

namespace runewarp::config {

namespace {

constexpr std::size_t kWrap = 78;        // comment paragraphs
constexpr std::size_t kListWidth = 150;  // list items per line before the key is repeated

const char* role_name(Role role) {
    return role == Role::kServer ? "server" : "client";
}

// The section kind of a recorded header ("server", "tunnel \"apps\"", "" for the top level).
SectionKind kind_of(std::string_view header) {
    static constexpr std::array kAll = {
        SectionKind::kServer,  SectionKind::kServerAcme, SectionKind::kTunnel,
        SectionKind::kRoute,   SectionKind::kClient,     SectionKind::kClientAcme,
        SectionKind::kService, SectionKind::kControl,    SectionKind::kMetrics,
    };
    for (SectionKind k : kAll) {
        std::string_view name = section_kind_name(k);
        if (section_is_labelled(k) ? header.starts_with(std::string(name) + " \"")
                                   : header == name) {
            return k;
        }
    }
    return SectionKind::kTop;
}

// `key = value` with a trailing `; comment`, or the comment on its own line first when both would
// not fit the loader's line limit together.
void put_line(std::string& out, bool live, std::string_view key, std::string_view value,
              std::string_view comment) {
    std::string line = live ? "" : "; ";
    line.append(key);
    line.append(" =");
    if (!value.empty()) {
        line.push_back(' ');
        line.append(value);
    }
    if (comment.empty()) {
        out += line + "\n";
    } else if (line.size() + 4 + comment.size() <= kMaxLineBytes) {
        out += line + "  ; " + std::string(comment) + "\n";
    } else {
        out += "; " + std::string(comment) + "\n" + line + "\n";
    }
}

// A list on as few lines as fit: the key repeats for the rest (the loader concatenates them).
void put_list(std::string& out, bool live, std::string_view key,
              const std::vector<std::string>& items, std::string_view comment) {
    std::string chunk;
    bool first = true;
    for (const auto& item : items) {
        if (!chunk.empty() && key.size() + chunk.size() + item.size() + 5 > kListWidth) {
            put_line(out, live, key, chunk, first ? comment : std::string_view{});
            first = false;
            chunk.clear();
        }
        if (!chunk.empty()) chunk += ", ";
        chunk += item;
    }
    put_line(out, live, key, chunk, first ? comment : std::string_view{});
}

void put_comment(std::string& out, std::string_view text, std::string_view prefix = "# ") {
    std::string line(prefix);
    std::size_t start = 0;
    while (start < text.size()) {
        std::size_t end = text.find(' ', start);
        if (end == std::string_view::npos) end = text.size();
        std::string_view word = text.substr(start, end - start);
        if (line.size() > prefix.size() && line.size() + 1 + word.size() > kWrap) {
            out += line + "\n";
            line = std::string(prefix);
        }
        if (line.size() > prefix.size()) line.push_back(' ');
        line.append(word);
        start = end + 1;
    }
    if (line.size() > prefix.size()) out += line + "\n";
}

std::string join(std::span<const std::string_view> items) {
    std::string out;
    for (auto i : items) {
        if (!out.empty()) out += ", ";
        out += i;
    }
    return out;
}

// ---- config init ---------------------------------------------------------------------------

constexpr std::string_view kPlaceholderIdentity =
    "0000000000000000000000000000000000000000000000000000000000000000";

// Values the starter sets because the key has no default (or the role needs one to start).
std::string_view starter_value(SectionKind kind, std::string_view key) {
    struct Row {
        SectionKind kind;
        std::string_view key;
        std::string_view value;
    };
    static constexpr Row kRows[] = {
        {SectionKind::kServer, "hostname", "tunnel.example.com"},
        {SectionKind::kTunnel, "public-hostnames", "app.example.com"},
        {SectionKind::kTunnel, "client-identity", kPlaceholderIdentity},
        {SectionKind::kClient, "server-address", "tunnel.example.com"},
        {SectionKind::kService, "public-hostnames", "app.example.com"},
        {SectionKind::kService, "backend-address", "127.0.0.1:8443"},
    };
    for (const Row& r : kRows) {
        if (r.kind == kind && r.key == key) return r.value;
    }
    return {};
}

// Illustrations for keys that are unset by default, shown commented out.
std::string_view example_value(SectionKind kind, std::string_view key) {
    struct Row {
        SectionKind kind;
        std::string_view key;
        std::string_view value;
    };
    static constexpr Row kRows[] = {
        {SectionKind::kServer, "readiness-bind-address", "127.0.0.1:9000"},
        {SectionKind::kServer, "visitor-proxy-protocol", "v2"},
        {SectionKind::kServer, "visitor-proxy-trusted-networks", "10.0.0.0/8, fd00::/8"},
        {SectionKind::kServerAcme, "email", "admin@example.com"},
        {SectionKind::kServerAcme, "ca-file", "/etc/ssl/acme-roots.pem"},
        {SectionKind::kClientAcme, "email", "admin@example.com"},
        {SectionKind::kClientAcme, "ca-file", "/etc/ssl/acme-roots.pem"},
        {SectionKind::kTunnel, "client-identities", "<identity>, <identity>"},
        {SectionKind::kRoute, "public-hostnames", "www.example.com"},
        {SectionKind::kRoute, "upstream-address", "127.0.0.1:8443"},
        {SectionKind::kRoute, "proxy-protocol", "v2"},
        {SectionKind::kClient, "server-addresses",
         "tunnel-a.example.com, tunnel-b.example.com:8443"},
        {SectionKind::kService, "proxy-protocol", "v2"},
        {SectionKind::kMetrics, "prometheus-bind-address", "127.0.0.1:9100"},
    };
    for (const Row& r : kRows) {
        if (r.kind == kind && r.key == key) return r.value;
    }
    return {};
}

// One section of the starter: each key's explanation, then the key (live when the starter sets
// it in a live section, else commented out).
void starter_section(std::string& out, SectionKind kind, std::string_view label, bool live,
                     const Roots& roots) {
    if (kind != SectionKind::kTop) {
        std::string header = "[" + std::string(section_kind_name(kind));
        if (section_is_labelled(kind)) header += " \"" + std::string(label) + "\"";
        header += "]";
        out += (live ? "" : "; ") + header + "\n";
    }
    for (const KeySpec& spec : key_registry()) {
        if (spec.section != kind) continue;
        std::string doc(spec.doc);
        if (!doc.empty()) doc.front() = static_cast<char>(std::toupper(doc.front()));
        doc += ".";
        if (!spec.choices.empty()) doc += " One of: " + join(spec.choices) + ".";
        std::string shown;
        std::string path = default_path(spec, roots);
        if (auto d = default_value(spec)) {
            doc += " Default: " + std::string(*d) + ".";
            shown = std::string(*d);
        } else if (!path.empty()) {
            doc += " Default: " + path + ".";
            shown = path;
        } else if (spec.default_text.starts_with('<')) {
            doc += " Default: " + std::string(spec.default_text) + ".";
        } else if (spec.default_text == "(required)") {
            doc += " Required.";
        } else {
            std::string_view t = spec.default_text;
            if (t.starts_with("(unset: ")) {
                doc += " Unset: " + std::string(t.substr(8, t.size() - 9)) + ".";
            } else if (t == "(unset)") {
                doc += " Unset by default.";
            }
        }
        if (kind == SectionKind::kTunnel && spec.name == "client-identity") {
            doc +=
                " Replace the placeholder with what `runewarp client identity show` prints on "
                "the Client.";
        }
        put_comment(out, doc);
        std::string_view set = live ? starter_value(kind, spec.name) : std::string_view{};
        if (!set.empty()) {
            put_line(out, true, spec.name, set, {});
            continue;
        }
        std::string_view value = starter_value(kind, spec.name);
        if (value.empty()) value = example_value(kind, spec.name);
        if (value.empty()) value = shown;
        put_line(out, false, spec.name, value, {});
    }
}

}  // namespace

std::string render_effective(Role role, const RoleConfig& cfg) {
    std::string out = std::string("# Effective ") + role_name(role) + " configuration";
    out +=
        cfg.config_path.empty() ? " (command-line flags only)\n" : " of " + cfg.config_path + "\n";
    out += std::string("# ") + (cfg.layout == Layout::kSystem ? "System" : "User") +
           " layout: <data> = " + (cfg.data_root.empty() ? "(unresolved)" : cfg.data_root) +
           ", <state> = " + (cfg.state_root.empty() ? "(unresolved)" : cfg.state_root) + "\n";
    put_comment(out,
                "Each key ends with its source: file:LINE, flag --NAME, env NAME or default. "
                "Defaults and unset keys are commented out; paths are resolved.");
    for (const SettingsSection& section : cfg.settings) {
        SectionKind kind = kind_of(section.header);
        if (!section.header.empty()) {
            out += "\n";
            if (section.synthesized) out += "# Not in the file: made from command-line flags.\n";
            out += "[" + section.header + "]\n";
        }
        for (const Setting& s : section.settings) {
            bool live = s.origin.source != Source::kDefault && !s.values.empty();
            std::string origin = origin_text(s.origin);
            if (s.values.empty()) {
                const KeySpec* spec = find_key(kind, s.key);
                std::string_view text = spec ? spec->default_text : std::string_view{};
                put_line(out, false, s.key, text, origin);
                continue;
            }
            const KeySpec* spec = find_key(kind, s.key);
            if (spec && is_list(spec->type)) {
                put_list(out, live, s.key, s.values, origin);
            } else {
                put_line(out, live, s.key, s.values.front(), origin);
            }
        }
    }
    return out;
}

std::string render_starter(Role role, const Roots& roots) {
    std::string out = std::string("# runewarp ") + role_name(role) +
                      " configuration, made by `runewarp config init --role " + role_name(role) +
                      "`.\n";
    put_comment(out,
                "INI: `key = value`; lines starting with `;` or `#` are comments. A key shown "
                "commented out is at its default (or unset): remove the `;` to change it. Paths "
                "are relative to this file's directory. Every key is described in "
                "runewarp.conf(5).");
    put_comment(out, std::string("Check the file with `runewarp config check --role ") +
                         role_name(role) + "`, change it safely with `runewarp config edit`.");
    out += "\n";
    starter_section(out, SectionKind::kTop, {}, true, roots);
    out += "\n";
    if (role == Role::kServer) {
        put_comment(out,
                    "The Server: Visitors connect to the public listener (TCP), Clients to the "
                    "tunnel listener (QUIC). The tunnel certificate comes from cert-dir "
                    "(`runewarp server cert init`) unless [server.acme] is used.");
        starter_section(out, SectionKind::kServer, {}, true, roots);
        out += "\n";
        put_comment(out,
                    "Optional: certify the Server hostname through an ACME CA instead of "
                    "cert-dir. Remove the `;` before the header and the keys to use it.");
        starter_section(out, SectionKind::kServerAcme, {}, false, roots);
        out += "\n";
        put_comment(out,
                    "A Tunnel: Visitors of these Public hostnames are relayed to the Clients with "
                    "one of these identities. Repeat the section with other labels for more "
                    "Tunnels.");
        starter_section(out, SectionKind::kTunnel, "apps", true, roots);
        out += "\n";
        put_comment(out,
                    "Optional: a direct route splices Visitors of these hostnames to a TCP "
                    "upstream next to the Server, without a Tunnel.");
        starter_section(out, SectionKind::kRoute, "web", false, roots);
    } else {
        put_comment(out,
                    "The Client: connects to the Server address(es) over QUIC with its identity "
                    "(`runewarp client identity init`) and relays streams to the Services.");
        starter_section(out, SectionKind::kClient, {}, true, roots);
        out += "\n";
        put_comment(out,
                    "Optional: certify the Public hostnames of tls-mode = terminate Services "
                    "through an ACME CA instead of public-cert-dir. Remove the `;` before the "
                    "header and the keys to use it.");
        starter_section(out, SectionKind::kClientAcme, {}, false, roots);
        out += "\n";
        put_comment(out,
                    "A Service: streams for these Public hostnames go to this backend. Repeat the "
                    "section with other labels for more Services; one Service without "
                    "public-hostnames takes every hostname (Catch-all).");
        starter_section(out, SectionKind::kService, "web", true, roots);
    }
    out += "\n";
    put_comment(out,
                "Optional: metrics and a status page over HTTP (/metrics in the Prometheus text "
                "format, /status.json, and a live page at /). Keep it on a loopback or private "
                "address: it has no authentication. Remove the `;` before the header and the key "
                "to use it.");
    starter_section(out, SectionKind::kMetrics, {}, false, roots);
    return out;
}

}  // namespace runewarp::config
