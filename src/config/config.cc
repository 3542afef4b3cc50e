// Config loading: registry-driven key checks, CLI overlays, cross-field rules, model building.
#include "config/config.hh"

#include <sched.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <map>
#include <set>

#include "config/ini_document.hh"
#include "config/registry.hh"
#include "config/values.hh"
#include "core/file.hh"
#include "proto/hostname.hh"

namespace runewarp::config {

namespace {

bool dir_exists(const std::string& p) {
    struct stat st {};
    return ::stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

bool file_exists(const std::string& p) {
    struct stat st {};
    return ::stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

// An ACME directory URL: https://, a non-empty host (name, IPv4 or [IPv6]), optional port and
// path; no spaces, user info or fragment.
bool acme_url_ok(const std::string& u) {
    constexpr std::string_view scheme = "https://";
    if (u.size() <= scheme.size() || u.compare(0, scheme.size(), scheme) != 0) return false;
    for (unsigned char c : u) {
        if (c <= 0x20 || c >= 0x7f || c == '#') return false;
    }
    std::string_view rest(u);
    rest.remove_prefix(scheme.size());
    std::string_view authority = rest.substr(0, rest.find('/'));
    if (authority.empty() || authority.find('@') != std::string_view::npos) return false;
    if (authority.front() == '[') {
        auto close = authority.find(']');
        if (close == std::string_view::npos || close == 1) return false;
        authority.remove_prefix(close + 1);
        if (authority.empty()) return true;
        if (authority.front() != ':') return false;
    } else {
        auto colon = authority.find(':');
        if (colon == 0) return false;
        if (colon == std::string_view::npos) return true;
        authority.remove_prefix(colon);
    }
    authority.remove_prefix(1);  // ':'
    if (authority.empty() || authority.size() > 5) return false;
    unsigned port = 0;
    for (char c : authority) {
        if (c < '0' || c > '9') return false;
        port = port * 10 + unsigned(c - '0');
    }
    return port >= 1 && port <= 65535;
}

// One key after the generic checks: its items (one for scalars) and first line.
struct Value {
    std::vector<std::string> items;
    int line = 0;
    bool valid = true;
    const std::string& one() const { return items.front(); }
};

struct Section {
    SectionKind kind = SectionKind::kTop;
    std::string label;
    int line = 0;
    std::map<std::string, Value> keys;

    const Value* get(const std::string& k) const {
        auto it = keys.find(k);
        return it == keys.end() ? nullptr : &it->second;
    }
    // Present and well formed.
    const Value* good(const std::string& k) const {
        auto* v = get(k);
        return v && v->valid ? v : nullptr;
    }
};

std::string where(const Section& s) {
    switch (s.kind) {
        case SectionKind::kTunnel:
        case SectionKind::kRoute:
        case SectionKind::kService:
            return std::string(section_kind_name(s.kind)) + " \"" + s.label + "\"";
        default:
            return std::string(section_kind_name(s.kind));
    }
}

// "server.hostname", "tunnel \"apps\": public-hostnames", "log-level".
std::string key_path(const Section& s, std::string_view key) {
    switch (s.kind) {
        case SectionKind::kTop:
            return std::string(key);
        case SectionKind::kTunnel:
        case SectionKind::kRoute:
        case SectionKind::kService:
            return where(s) + ": " + std::string(key);
        default:
            return where(s) + "." + std::string(key);
    }
}

std::string header_text(const Section& s) {
    if (s.kind == SectionKind::kTop) return "the top level";
    return "[" + (section_is_labelled(s.kind) ? where(s) : where(s)) + "]";
}

// The enumerator whose name is `text` (already validated against the registry's choices).
template <typename E>
E named(std::string_view text, std::initializer_list<E> all, const char* (*name)(E) noexcept) {
    for (E e : all) {
        if (text == name(e)) return e;
    }
    return *all.begin();
}

const char* trust_name(Trust t) noexcept {
    return t == Trust::kCaFile ? "ca-file" : "system";
}

const char* tls_mode_name(TlsMode m) noexcept {
    return m == TlsMode::kTerminate ? "terminate" : "passthrough";
}

class Loader {
public:
    Loader(const LoadOptions& opt, LoadOutcome& out) : opt_(opt), out_(out) {}

    void run(std::string_view text);

private:
    void problem(int line, std::string msg) {
        out_.problems.push_back(Problem{opt_.path, line, std::move(msg)});
    }
    void hint(std::string_view command) {
        std::string h = "Hint: runewarp " + std::string(command);
        if (!opt_.path.empty() && !opt_.path_is_default) h += " --config " + opt_.path;
        if (std::find(out_.hints.begin(), out_.hints.end(), h) == out_.hints.end()) {
            out_.hints.push_back(h);
        }
    }

    bool own_section(SectionKind k) const;
    void collect(const RawDocument& doc);
    Section check_section(const RawSection& raw, const std::set<std::string>& skip);
    std::string file_path(const std::string& v) const {
        return resolve_relative_to_file(opt_.path, v);
    }
    bool need_data_root() {
        if (!roots_.data.empty()) return true;
        if (!data_root_reported_) {
            problem(0, "unable to resolve the XDG data base directory: set XDG_DATA_HOME or HOME");
            data_root_reported_ = true;
        }
        return false;
    }
    bool need_state_root() {
        if (!roots_.state.empty()) return true;
        problem(0, "unable to resolve the XDG state base directory: set XDG_STATE_HOME or HOME");
        return false;
    }
    // The registry's path default of a key below its root; empty (and the unresolvable root
    // reported) when that root is unknown.
    std::string default_path_of(SectionKind kind, std::string_view key) {
        const KeySpec* spec = find_key(kind, key);
        if (spec == nullptr) return {};
        if (!(default_path_is_state(*spec) ? need_state_root() : need_data_root())) return {};
        return default_path(*spec, roots_);
    }

    std::optional<std::string> setting(const Section* s, SectionKind kind,
                                       std::string_view key) const;
    // A kCount key's value (already checked against its range), or `fallback` when unset.
    std::uint32_t count_setting(const Section* s, SectionKind kind, std::string_view key,
                                std::uint32_t fallback) const;
    // `workers` (0 = auto), or 0 when unset.
    std::uint32_t workers_setting(const Section* s, SectionKind kind) const;
    void role_common(RoleConfig& cfg, const Section* role_section, SectionKind role_kind);
    std::optional<Acme> acme(const Section* s);
    std::optional<Control> control(bool& managed);
    void check_material_dir(const std::string& key, int line, const std::string& dir,
                            std::initializer_list<const char*> files, const char* hint_cmd);
    std::vector<std::string> hostnames(const Section& s, const Value& v);

    void server();
    void client();

    // A value the flags or the environment impose on a key, for record_settings.
    struct Forced {
        SectionKind kind;
        std::string_view key;
        std::vector<std::string> values;
        Origin origin;
    };
    Setting setting_of(const KeySpec& spec, const Section* s) const;
    void record_settings(RoleConfig& cfg, const std::vector<Forced>& forced,
                         const std::string& synthesized_service) const;

    const LoadOptions& opt_;
    LoadOutcome& out_;
    Roots roots_;
    bool data_root_reported_ = false;
    bool any_service_header_ = false;
    std::vector<Section> sections_;  // valid sections this role validates, file order
};

bool Loader::own_section(SectionKind k) const {
    switch (k) {
        case SectionKind::kTop:
        case SectionKind::kControl:
        case SectionKind::kMetrics:
            return true;
        case SectionKind::kServer:
        case SectionKind::kServerAcme:
        case SectionKind::kTunnel:
        case SectionKind::kRoute:
            return opt_.role == Role::kServer;
        case SectionKind::kClient:
        case SectionKind::kClientAcme:
        case SectionKind::kService:
            return opt_.role == Role::kClient;
    }
    return false;
}

Section Loader::check_section(const RawSection& raw, const std::set<std::string>& skip) {
    Section s;
    s.kind = raw.kind;
    s.label = raw.label;
    s.line = raw.line;
    for (const auto& e : raw.entries) {
        const KeySpec* spec = find_key(raw.kind, e.key);
        if (!spec) {
            problem(e.line, "unknown field " + e.key + " in " + header_text(s));
            continue;
        }
        if (skip.count(e.key)) continue;
        auto [it, fresh] = s.keys.try_emplace(e.key);
        Value& v = it->second;
        if (fresh) v.line = e.line;
        if (!is_list(spec->type)) {
            if (!fresh) {
                problem(e.line, "`" + e.key + "` given more than once in " + header_text(s));
                continue;
            }
            v.items.push_back(e.value);
            if (auto err = check_value(*spec, e.value)) {
                problem(e.line,
                        key_path(s, e.key) + ": invalid value \"" + e.value + "\": " + *err);
                v.valid = false;
            }
            continue;
        }
        std::string item;
        auto flush = [&] {
            if (item.empty()) return;
            if (auto err = check_value(*spec, item)) {
                problem(e.line, key_path(s, e.key) + ": invalid value \"" + item + "\": " + *err);
                v.valid = false;
            }
            v.items.push_back(item);
            item.clear();
        };
        for (char c : e.value) {
            if (c == ',' || c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' ||
                c == '\f') {
                flush();
            } else {
                item += c;
            }
        }
        flush();
    }
    for (auto& [key, v] : s.keys) {
        const KeySpec* spec = find_key(s.kind, key);
        if (spec && is_list(spec->type) && v.items.empty() && v.valid) {
            problem(v.line, key_path(s, key) + " must not be an empty list");
            v.valid = false;
        }
    }
    return s;
}

void Loader::collect(const RawDocument& doc) {
    any_service_header_ = doc.any_service_header;
    for (const auto& raw : doc.sections) {
        if (!raw.valid || !own_section(raw.kind)) continue;
        std::set<std::string> skip;
        // CLI overlays replace file values before validation, so a bad file value is not reported.
        if (raw.kind == SectionKind::kServer &&
            (opt_.overrides.hostname || !opt_.env.server_hostname.empty())) {
            skip.insert("hostname");
        }
        if (raw.kind == SectionKind::kClient && !opt_.overrides.server_addresses.empty()) {
            skip.insert("server-address");
            skip.insert("server-addresses");
        }
        if (raw.kind == SectionKind::kControl && opt_.overrides.control_address) {
            skip.insert("address");
        }
        sections_.push_back(check_section(raw, skip));
    }
}

// The value of a scalar key: the file's when present and well formed, else the registry's
// default. Nothing when the file's value is invalid (already reported) or the key has no
// default ("(unset)", "(required)").
std::uint32_t Loader::count_setting(const Section* s, SectionKind kind, std::string_view key,
                                    std::uint32_t fallback) const {
    auto v = setting(s, kind, key);
    const KeySpec* spec = find_key(kind, key);
    if (!v || spec == nullptr) return fallback;
    auto n = parse_count(*v, spec->min, spec->max);
    return std::holds_alternative<std::uint32_t>(n) ? std::get<std::uint32_t>(n) : fallback;
}

std::uint32_t Loader::workers_setting(const Section* s, SectionKind kind) const {
    auto v = setting(s, kind, "workers");
    if (!v) return 0;
    auto n = parse_workers(*v);
    return std::holds_alternative<std::uint32_t>(n) ? std::get<std::uint32_t>(n) : 0;
}

std::optional<std::string> Loader::setting(const Section* s, SectionKind kind,
                                           std::string_view key) const {
    if (s != nullptr) {
        if (const Value* v = s->get(std::string(key))) {
            if (!v->valid) return std::nullopt;
            return v->one();
        }
    }
    const KeySpec* spec = find_key(kind, key);
    if (spec == nullptr) return std::nullopt;
    if (auto d = default_value(*spec)) return std::string(*d);
    return std::nullopt;
}

// The fields both roles share: origin, roots, logging, the event backend and managed mode.
void Loader::role_common(RoleConfig& cfg, const Section* role_section, SectionKind role_kind) {
    cfg.config_path = opt_.path;
    cfg.layout = roots_.layout;
    cfg.data_root = roots_.data;
    cfg.state_root = roots_.state;
    const Section& top = sections_.front();
    if (auto v = setting(&top, SectionKind::kTop, "log-level")) {
        cfg.log_level = named(*v,
                              {LogLevel::kOff, LogLevel::kError, LogLevel::kWarn, LogLevel::kInfo,
                               LogLevel::kDebug, LogLevel::kTrace},
                              log_level_name);
    }
    if (auto v = setting(&top, SectionKind::kTop, "log-format")) {
        cfg.log_format = named(*v, {LogFormat::kText, LogFormat::kJson}, log_format_name);
    }
    for (const auto& sec : sections_) {
        if (sec.kind != SectionKind::kMetrics) continue;
        if (const Value* v = sec.good("prometheus-bind-address")) {
            auto parsed = parse_socket_address(v->one());
            if (auto* ep = std::get_if<proto::Endpoint>(&parsed)) cfg.metrics_bind = *ep;
        }
    }
    if (auto v = setting(role_section, role_kind, "event-backend")) {
        cfg.event_backend =
            named(*v, {EventBackend::kAuto, EventBackend::kIoUring, EventBackend::kEpoll},
                  event_backend_name);
    }
}

void Loader::check_material_dir(const std::string& key, int line, const std::string& dir,
                                std::initializer_list<const char*> files, const char* hint_cmd) {
    if (!dir_exists(dir)) {
        problem(line, key + ": directory " + dir + " does not exist");
        if (hint_cmd) hint(hint_cmd);
        return;
    }
    std::string missing;
    for (const char* f : files) {
        if (!file_exists(dir + "/" + f)) missing += std::string(missing.empty() ? "" : ", ") + f;
    }
    if (!missing.empty()) {
        problem(line, key + ": " + dir + " is missing " + missing);
        if (hint_cmd) hint(hint_cmd);
    }
}

std::vector<std::string> Loader::hostnames(const Section&, const Value& v) {
    std::vector<std::string> out;
    for (const auto& item : v.items) {
        auto h = proto::normalize_hostname(item);
        if (h.ok()) out.push_back(h.canonical);
    }
    return out;
}

std::optional<Acme> Loader::acme(const Section* s) {
    if (!s) return std::nullopt;
    Acme a;
    if (auto* v = s->good("email")) {
        a.email = v->one();
    } else if (!s->get("email")) {
        problem(s->line, where(*s) + ".email is required");
    }
    if (auto* v = s->good("state-dir")) {
        a.state_dir = file_path(v->one());
        a.state_dir_is_default = false;
        if (!dir_exists(a.state_dir)) {
            problem(v->line,
                    where(*s) + ".state-dir: directory " + a.state_dir + " does not exist");
        }
    } else if (!s->get("state-dir")) {
        a.state_dir = default_path_of(s->kind, "state-dir");
    }
    a.directory_url = setting(s, s->kind, "directory-url").value_or("");
    if (auto* v = s->good("directory-url")) {
        if (!acme_url_ok(a.directory_url)) {
            problem(v->line, where(*s) +
                                 ".directory-url: expected an https:// URL with a host, got " +
                                 a.directory_url);
        }
    }
    if (auto* v = s->good("ca-file")) {
        a.ca_file = file_path(v->one());
        if (!file_exists(a.ca_file)) {
            problem(v->line, where(*s) + ".ca-file: file " + a.ca_file + " does not exist");
        }
    }
    return a;
}

std::optional<Control> Loader::control(bool& managed) {
    const Section* s = nullptr;
    for (const auto& sec : sections_) {
        if (sec.kind == SectionKind::kControl) s = &sec;
    }
    managed = s != nullptr || opt_.overrides.control_address.has_value();
    if (!managed) return std::nullopt;
    Control c;
    if (opt_.overrides.control_address) {
        auto r = parse_server_address(*opt_.overrides.control_address);
        if (auto* e = std::get_if<std::string>(&r)) {
            problem(0, "--control-address \"" + *opt_.overrides.control_address + "\": " + *e);
        } else {
            c.address = std::get<HostPort>(r);
        }
    } else if (auto* v = s->good("address")) {
        c.address = std::get<HostPort>(parse_server_address(v->one()));
    } else if (!s->get("address")) {
        problem(s->line, "control.address is required");
    }
    if (auto v = setting(s, SectionKind::kControl, "trust")) {
        c.trust = named(*v, {Trust::kSystem, Trust::kCaFile}, trust_name);
    }
    if (!s) return c;
    const Value* ca = s->good("ca-file");
    if (ca && c.trust != Trust::kCaFile) {
        problem(ca->line, "control.ca-file is allowed only with control.trust = ca-file");
    }
    if (c.trust == Trust::kCaFile) {
        if (ca) {
            c.ca_file = file_path(ca->one());
        } else {
            c.ca_file = default_path_of(SectionKind::kControl, "ca-file");
        }
        if (!c.ca_file.empty() && !file_exists(c.ca_file)) {
            problem(ca ? ca->line : s->line,
                    "control.ca-file: file " + c.ca_file + " does not exist");
        }
    }
    return c;
}

// The effective value of one key in one section: the file's (paths resolved against the file),
// else the registry's default (path defaults below the resolved roots), else unset.
Setting Loader::setting_of(const KeySpec& spec, const Section* s) const {
    Setting out;
    out.key = std::string(spec.name);
    if (s != nullptr) {
        if (const Value* v = s->get(out.key)) {
            out.origin = Origin{Source::kFile, v->line, {}};
            for (const auto& item : v->items) {
                out.values.push_back(spec.type == ValueType::kPath ? file_path(item) : item);
            }
            return out;
        }
    }
    if (auto d = default_value(spec)) {
        out.values.emplace_back(*d);
    } else if (std::string p = default_path(spec, roots_); !p.empty()) {
        out.values.push_back(std::move(p));
    }
    return out;
}

// Records, per section of the role and per registry key, the value the model was built from and
// where it came from. Sections the flags imply but the file lacks ([client] for
// --server-address, [control] for --control-address, the --backend-address Catch-all) follow
// the file's sections.
void Loader::record_settings(RoleConfig& cfg, const std::vector<Forced>& forced,
                             const std::string& synthesized_service) const {
    auto header_of = [](SectionKind kind, const std::string& label) {
        std::string h(section_kind_name(kind));
        if (section_is_labelled(kind)) h += " \"" + label + "\"";
        return h;
    };
    auto emit = [&](SectionKind kind, const std::string& label, const Section* s,
                    bool synthesized) {
        SettingsSection out;
        out.header = header_of(kind, label);
        out.synthesized = synthesized;
        for (const KeySpec& spec : key_registry()) {
            if (spec.section != kind) continue;
            auto f = std::find_if(forced.begin(), forced.end(), [&](const Forced& x) {
                return x.kind == kind && x.key == spec.name;
            });
            if (f != forced.end() && !section_is_labelled(kind)) {
                out.settings.push_back(Setting{std::string(spec.name), f->values, f->origin});
            } else {
                out.settings.push_back(setting_of(spec, s));
            }
        }
        cfg.settings.push_back(std::move(out));
    };
    for (const Section& s : sections_) emit(s.kind, s.label, &s, false);
    for (const Forced& f : forced) {
        if (section_is_labelled(f.kind)) continue;
        bool present = std::any_of(
            cfg.settings.begin(), cfg.settings.end(),
            [&](const SettingsSection& x) { return x.header == section_kind_name(f.kind); });
        if (!present) emit(f.kind, {}, nullptr, true);
    }
    if (!synthesized_service.empty()) {
        SettingsSection out;
        out.header = header_of(SectionKind::kService, "cli");
        out.synthesized = true;
        for (const KeySpec& spec : key_registry()) {
            if (spec.section != SectionKind::kService) continue;
            if (spec.name == "backend-address") {
                out.settings.push_back(Setting{std::string(spec.name),
                                               {synthesized_service},
                                               Origin{Source::kFlag, 0, "--backend-address"}});
            } else {
                out.settings.push_back(setting_of(spec, nullptr));
            }
        }
        cfg.settings.push_back(std::move(out));
    }
}

void Loader::run(std::string_view text) {
    RawDocument doc = parse_ini(text, opt_.path);
    out_.problems = doc.problems;
    roots_ = resolve_roots(opt_.path, opt_.env);
    collect(doc);
    // Global keys other than log-level/log-format are rejected by the registry as unknown.
    if (opt_.role == Role::kServer) {
        server();
    } else {
        client();
    }
    std::stable_sort(out_.problems.begin(), out_.problems.end(),
                     [](const Problem& a, const Problem& b) {
                         auto key = [](const Problem& p) { return p.line == 0 ? 1 << 30 : p.line; };
                         return key(a) < key(b);
                     });
    if (!out_.problems.empty()) {
        out_.server.reset();
        out_.client.reset();
    }
}

// ---- Server ------------------------------------------------------------------------------------

void Loader::server() {
    ServerConfig cfg;
    const Section* srv = nullptr;
    const Section* acme_sec = nullptr;
    std::vector<const Section*> tunnels;
    std::vector<const Section*> routes;
    for (const auto& s : sections_) {
        if (s.kind == SectionKind::kServer) srv = &s;
        if (s.kind == SectionKind::kServerAcme) acme_sec = &s;
        if (s.kind == SectionKind::kTunnel) tunnels.push_back(&s);
        if (s.kind == SectionKind::kRoute) routes.push_back(&s);
    }
    role_common(cfg, srv, SectionKind::kServer);
    if (opt_.path.empty()) {
        problem(0, "the Server needs a config file");
        return;
    }
    if (!srv) {
        problem(0, "missing [server] section");
        return;
    }
    cfg.control = control(cfg.managed_requested);

    // Hostname: --hostname > RUNEWARP_SERVER_HOSTNAME > server.hostname.
    std::optional<std::string> host_raw;
    std::string host_origin;
    if (opt_.overrides.hostname) {
        host_raw = *opt_.overrides.hostname;
        host_origin = "--hostname";
        cfg.hostname_source = Source::kFlag;
    } else if (!opt_.env.server_hostname.empty()) {
        host_raw = opt_.env.server_hostname;
        host_origin = "RUNEWARP_SERVER_HOSTNAME";
        cfg.hostname_source = Source::kEnv;
    }
    if (host_raw) {
        auto h = proto::normalize_hostname(*host_raw);
        if (h.ok()) {
            cfg.hostname = h.canonical;
        } else {
            problem(0,
                    host_origin + " \"" + *host_raw + "\": " + proto::hostname_error_text(h.error));
        }
    } else if (auto* v = srv->good("hostname")) {
        cfg.hostname = proto::normalize_hostname(v->one()).canonical;
    } else if (!srv->get("hostname")) {
        problem(srv->line, "server.hostname is required");
    }

    auto endpoint = [&](const char* key) -> std::optional<proto::Endpoint> {
        auto v = setting(srv, SectionKind::kServer, key);
        if (!v) return std::nullopt;
        return std::get<proto::Endpoint>(parse_socket_address(*v));
    };
    if (auto e = endpoint("public-bind-address")) cfg.public_bind = *e;
    if (auto e = endpoint("tunnel-bind-address")) cfg.tunnel_bind = *e;
    if (auto v = setting(srv, SectionKind::kServer, "tunnel-retry")) {
        cfg.tunnel_retry = *v == "always"  ? TunnelRetry::kAlways
                           : *v == "never" ? TunnelRetry::kNever
                                           : TunnelRetry::kAuto;
    }
    cfg.readiness_bind = endpoint("readiness-bind-address");
    if (auto v = setting(srv, SectionKind::kServer, "graceful-shutdown-duration")) {
        cfg.graceful_shutdown_ms = std::get<std::uint64_t>(parse_duration_ms(*v));
    }
    cfg.workers = workers_setting(srv, SectionKind::kServer);
    cfg.max_active_streams =
        count_setting(srv, SectionKind::kServer, "max-active-streams", cfg.max_active_streams);
    cfg.max_pending_stream_opens = count_setting(
        srv, SectionKind::kServer, "max-pending-stream-opens", cfg.max_pending_stream_opens);

    // PROXY v2 ingress: networks required with v2 and forbidden without it.
    const Value* vpp = srv->get("visitor-proxy-protocol");
    const Value* nets = srv->get("visitor-proxy-trusted-networks");
    cfg.visitor_proxy_v2 = vpp && vpp->valid;
    if (cfg.visitor_proxy_v2 && !nets) {
        problem(vpp->line,
                "server.visitor-proxy-trusted-networks is required when "
                "server.visitor-proxy-protocol = v2");
    }
    if (nets && !vpp) {
        problem(nets->line,
                "server.visitor-proxy-trusted-networks is allowed only with "
                "server.visitor-proxy-protocol = v2");
    }
    if (nets && nets->valid) {
        for (const auto& item : nets->items)
            cfg.visitor_proxy_trusted_networks.push_back(std::get<Cidr>(parse_cidr(item)));
    }

    // ACME vs manual certificate.
    cfg.acme = acme(acme_sec);
    const Value* cert_dir = srv->get("cert-dir");
    if (acme_sec && cert_dir) {
        problem(cert_dir->line, "server.cert-dir and [server.acme] are mutually exclusive");
    }
    bool needs_cert = !tunnels.empty() || cfg.managed_requested;
    if (!acme_sec && needs_cert) {
        if (cert_dir && cert_dir->valid) {
            cfg.cert_dir = file_path(cert_dir->one());
        } else if (!cert_dir) {
            cfg.cert_dir = default_path_of(SectionKind::kServer, "cert-dir");
        }
        if (!cfg.cert_dir.empty()) {
            check_material_dir("server.cert-dir", cert_dir ? cert_dir->line : 0, cfg.cert_dir,
                               {"server.crt", "server.key", "server-ca.crt"}, "server cert init");
        }
    } else if (!acme_sec && cert_dir && cert_dir->valid) {
        cfg.cert_dir = file_path(cert_dir->one());  // recorded, not checked: no Tunnel uses it
    }

    // Managed mode: identity-dir only there, Tunnel sections forbidden there.
    const Value* idd = srv->get("identity-dir");
    if (!cfg.managed_requested) {
        if (idd)
            problem(idd->line, "server.identity-dir is allowed only in managed mode ([control])");
        if (tunnels.empty() && routes.empty()) {
            problem(0, "at least one [tunnel \"LABEL\"] or [route \"LABEL\"] section is required");
        }
    } else {
        for (const auto* t : tunnels) {
            problem(t->line,
                    where(*t) + ": tunnel sections are not allowed in managed mode ([control])");
        }
        if (idd && idd->valid) {
            cfg.identity_dir = file_path(idd->one());
        } else if (!idd) {
            cfg.identity_dir = default_path_of(SectionKind::kServer, "identity-dir");
        }
        if (!cfg.identity_dir.empty()) {
            if (cfg.identity_dir == cfg.cert_dir) {
                problem(idd ? idd->line : 0,
                        "server.identity-dir must differ from server.cert-dir");
            }
            check_material_dir("server.identity-dir", idd ? idd->line : 0, cfg.identity_dir,
                               {"server.crt", "server.key", "server-identity.txt"}, nullptr);
        }
    }

    // Public hostnames: unique across Tunnels and routes, never the Server hostname.
    std::map<std::string, std::string> owner;  // hostname -> "tunnel \"a\""
    std::map<std::string, std::string> identity_owner;
    auto claim = [&](const Section& s, const Value& v, std::vector<std::string>& out) {
        std::set<std::string> local;
        for (const auto& h : hostnames(s, v)) {
            if (!local.insert(h).second) {
                problem(v.line, where(s) + ": public hostname " + h + " is listed twice");
                continue;
            }
            if (!cfg.hostname.empty() && h == cfg.hostname) {
                problem(v.line, where(s) + ": public hostname " + h +
                                    " is the Server hostname (server.hostname)");
            }
            auto [it, fresh] = owner.emplace(h, where(s));
            if (!fresh) {
                problem(v.line, "public hostname " + h + " appears in both " + it->second +
                                    " and " + where(s));
            }
            out.push_back(h);
        }
    };
    for (const auto* t : tunnels) {
        Tunnel tun;
        tun.label = t->label;
        if (auto* v = t->get("public-hostnames")) {
            if (v->valid) claim(*t, *v, tun.public_hostnames);
        } else {
            problem(t->line, where(*t) + ": public-hostnames is required");
        }
        const Value* one = t->get("client-identity");
        const Value* many = t->get("client-identities");
        if (one && many) {
            problem(many->line,
                    where(*t) + ": client-identity and client-identities are mutually exclusive");
        } else if (!one && !many) {
            problem(t->line, where(*t) + ": client-identity or client-identities is required");
        }
        for (const Value* v : {one, many}) {
            if (!v || !v->valid) continue;
            for (const auto& id : v->items) {
                if (std::find(tun.identities.begin(), tun.identities.end(), id) !=
                    tun.identities.end()) {
                    problem(v->line, where(*t) + ": client identity " + id + " is listed twice");
                    continue;
                }
                auto [it, fresh] = identity_owner.emplace(id, where(*t));
                if (!fresh) {
                    problem(v->line, "client identity " + id + " appears in both " + it->second +
                                         " and " + where(*t));
                }
                tun.identities.push_back(id);
            }
        }
        cfg.tunnels.push_back(std::move(tun));
    }
    for (const auto* r : routes) {
        Route route;
        route.label = r->label;
        if (auto* v = r->get("public-hostnames")) {
            if (v->valid) claim(*r, *v, route.public_hostnames);
        } else {
            problem(r->line, where(*r) + ": public-hostnames is required");
        }
        if (auto* v = r->get("upstream-address")) {
            if (v->valid) route.upstream = std::get<HostPort>(parse_host_port(v->one()));
        } else {
            problem(r->line, where(*r) + ": upstream-address is required");
        }
        route.proxy_v2 = r->good("proxy-protocol") != nullptr;
        cfg.routes.push_back(std::move(route));
    }
    std::vector<Forced> forced;
    if (cfg.hostname_source != Source::kFile) {
        forced.push_back(Forced{SectionKind::kServer,
                                "hostname",
                                {cfg.hostname},
                                cfg.hostname_source == Source::kFlag
                                    ? Origin{Source::kFlag, 0, "--hostname"}
                                    : Origin{Source::kEnv, 0, "RUNEWARP_SERVER_HOSTNAME"}});
    }
    if (opt_.overrides.control_address && cfg.control) {
        forced.push_back(Forced{SectionKind::kControl,
                                "address",
                                {cfg.control->address.text()},
                                Origin{Source::kFlag, 0, "--control-address"}});
    }
    record_settings(cfg, forced, {});
    out_.server = std::move(cfg);
}

// ---- Client ------------------------------------------------------------------------------------

void Loader::client() {
    ClientConfig cfg;
    const Section* cli = nullptr;
    const Section* acme_sec = nullptr;
    std::vector<const Section*> services;
    for (const auto& s : sections_) {
        if (s.kind == SectionKind::kClient) cli = &s;
        if (s.kind == SectionKind::kClientAcme) acme_sec = &s;
        if (s.kind == SectionKind::kService) services.push_back(&s);
    }
    role_common(cfg, cli, SectionKind::kClient);
    const auto& ov = opt_.overrides;
    bool cli_only = opt_.path.empty();
    bool role_missing = false;  // no [client] and no flags: material checks would only add noise
    cfg.control = control(cfg.managed_requested);
    if (ov.control_address && !ov.server_addresses.empty()) {
        problem(0, "`--control-address` cannot be combined with `--server-address`");
    }

    // Server addresses: flags replace both file keys; otherwise exactly one file shape.
    if (!ov.server_addresses.empty()) {
        cfg.server_addresses_source = Source::kFlag;
        for (const auto& a : ov.server_addresses) {
            auto r = parse_server_address(a);
            if (auto* e = std::get_if<std::string>(&r)) {
                problem(0, "--server-address \"" + a + "\": " + *e);
            } else {
                cfg.server_addresses.push_back(std::get<HostPort>(r));
            }
        }
    } else if (cli) {
        const Value* one = cli->get("server-address");
        const Value* many = cli->get("server-addresses");
        if (one && many) {
            problem(many->line,
                    "client.server-address and client.server-addresses are mutually exclusive");
        } else if (cfg.managed_requested) {
            if (one || many) {
                problem((one ? one : many)->line,
                        "static Server addresses are not allowed in managed mode ([control])");
            }
        } else if (!one && !many) {
            problem(cli->line, "client.server-address or client.server-addresses is required");
        }
        for (const Value* v : {one, many}) {
            if (!v || !v->valid) continue;
            for (const auto& item : v->items) {
                cfg.server_addresses.push_back(std::get<HostPort>(parse_server_address(item)));
            }
        }
    } else if (!cfg.managed_requested) {
        role_missing = true;
        problem(0, cli_only ? "`--server-address` is required when no config file is selected"
                            : "`--server-address` is required when the selected config has no "
                              "[client] section");
    }
    {
        std::set<std::string> seen;
        for (const auto& a : cfg.server_addresses) {
            if (!seen.insert(a.text()).second) problem(0, "duplicate Server address " + a.text());
        }
    }

    // Services: from the file, or one Catch-all synthesized from --backend-address.
    if (ov.backend_address) {
        if (any_service_header_) {
            problem(0,
                    "`--backend-address` cannot be used when the config has [service \"LABEL\"] "
                    "sections");
        } else {
            auto r = parse_host_port(*ov.backend_address);
            if (auto* e = std::get_if<std::string>(&r)) {
                problem(0, "--backend-address \"" + *ov.backend_address + "\": " + *e);
            } else {
                Service s;
                s.label = "cli";
                s.backend = std::get<HostPort>(r);
                s.tls_mode = TlsMode::kPassthrough;  // a synthesized Catch-all never terminates
                cfg.services.push_back(std::move(s));
            }
        }
    } else if (services.empty() && !any_service_header_) {
        if (cli_only) {
            problem(0, "`--backend-address` is required when no config file is selected");
        } else if (!cli) {
            problem(0,
                    "`--backend-address` is required when the selected config has no [client] "
                    "section");
        } else {
            problem(0, "at least one [service \"LABEL\"] section is required");
        }
    }
    std::map<std::string, std::string> owner;
    for (const auto* s : services) {
        Service svc;
        svc.label = s->label;
        if (auto* v = s->get("backend-address")) {
            if (v->valid) svc.backend = std::get<HostPort>(parse_host_port(v->one()));
        } else {
            problem(s->line, where(*s) + ": backend-address is required");
        }
        if (auto v = setting(s, SectionKind::kService, "tls-mode")) {
            svc.tls_mode = named(*v, {TlsMode::kPassthrough, TlsMode::kTerminate}, tls_mode_name);
        }
        svc.proxy_v2 = s->good("proxy-protocol") != nullptr;
        if (const Value* av = s->get("alpn")) {
            if (svc.tls_mode != TlsMode::kTerminate) {
                problem(av->line, where(*s) + ": alpn applies only to tls-mode = terminate");
            } else if (av->valid && av->items.size() > 8) {
                problem(av->line, where(*s) + ": alpn lists at most 8 protocols");
            } else if (av->valid) {
                std::set<std::string> seen;
                svc.alpn.clear();
                for (const auto& a : av->items) {
                    if (!seen.insert(a).second) {
                        problem(av->line, where(*s) + ": alpn protocol " + a + " is listed twice");
                        continue;
                    }
                    svc.alpn.push_back(a);
                }
            }
        }
        const Value* hv = s->get("public-hostnames");
        if (hv && hv->valid) {
            std::set<std::string> local;
            for (const auto& h : hostnames(*s, *hv)) {
                if (!local.insert(h).second) {
                    problem(hv->line, where(*s) + ": public hostname " + h + " is listed twice");
                    continue;
                }
                auto [it, fresh] = owner.emplace(h, where(*s));
                if (!fresh) {
                    problem(hv->line, "public hostname " + h + " appears in both " + it->second +
                                          " and " + where(*s));
                }
                svc.public_hostnames.push_back(h);
            }
        } else if (!hv) {
            if (services.size() > 1) {
                problem(s->line, where(*s) +
                                     ": public-hostnames may be omitted only when this is the "
                                     "only service (Catch-all)");
            }
            if (svc.tls_mode == TlsMode::kTerminate) {
                problem(s->line, where(*s) +
                                     ": a Catch-all service (no public-hostnames) must use "
                                     "tls-mode = passthrough");
            }
        }
        cfg.services.push_back(std::move(svc));
    }
    bool has_terminate =
        std::any_of(cfg.services.begin(), cfg.services.end(),
                    [](const Service& s) { return s.tls_mode == TlsMode::kTerminate; });

    // Trust, identity and certificate sources ([client] keys; defaults when CLI-only).
    auto val = [&](const char* k) -> const Value* { return cli ? cli->get(k) : nullptr; };
    cfg.max_streams = count_setting(cli, SectionKind::kClient, "max-streams", cfg.max_streams);
    cfg.workers = workers_setting(cli, SectionKind::kClient);
    if (auto v = setting(cli, SectionKind::kClient, "server-trust")) {
        cfg.server_trust = named(*v, {Trust::kSystem, Trust::kCaFile}, trust_name);
    }
    const Value* ca = val("server-ca-file");
    if (ca && cfg.server_trust != Trust::kCaFile) {
        problem(ca->line,
                "client.server-ca-file is allowed only with client.server-trust = ca-file");
    }
    if (cfg.server_trust == Trust::kCaFile) {
        if (ca && ca->valid) {
            cfg.server_ca_file = file_path(ca->one());
        } else if (!ca) {
            cfg.server_ca_file = default_path_of(SectionKind::kClient, "server-ca-file");
        }
        if (!cfg.server_ca_file.empty() && !file_exists(cfg.server_ca_file)) {
            problem(ca ? ca->line : 0,
                    "client.server-ca-file: file " + cfg.server_ca_file + " does not exist");
        }
    }
    const Value* idd = val("identity-dir");
    if (idd && idd->valid) {
        cfg.identity_dir = file_path(idd->one());
    } else if (!idd) {
        cfg.identity_dir = default_path_of(SectionKind::kClient, "identity-dir");
    }
    if (!cfg.identity_dir.empty() && !role_missing) {
        check_material_dir("client.identity-dir", idd ? idd->line : 0, cfg.identity_dir,
                           {"client.crt", "client.key", "client-identity.txt"},
                           "client identity init");
    }

    cfg.acme = acme(acme_sec);
    const Value* pcd = val("public-cert-dir");
    if (acme_sec && !has_terminate) {
        problem(acme_sec->line, "[client.acme] requires a service with tls-mode = terminate");
    }
    if (pcd && !has_terminate) {
        problem(pcd->line, "client.public-cert-dir requires a service with tls-mode = terminate");
    }
    if (pcd && acme_sec) {
        problem(pcd->line, "client.public-cert-dir and [client.acme] are mutually exclusive");
    }
    if (has_terminate && !acme_sec) {
        if (pcd && pcd->valid) {
            cfg.public_cert_dir = file_path(pcd->one());
            if (!dir_exists(cfg.public_cert_dir)) {
                problem(pcd->line, "client.public-cert-dir: directory " + cfg.public_cert_dir +
                                       " does not exist");
                hint("client public-cert init");
            }
        } else if (!pcd) {
            cfg.public_cert_dir = default_path_of(SectionKind::kClient, "public-cert-dir");
        }
    }
    std::vector<Forced> forced;
    if (!ov.server_addresses.empty()) {
        std::vector<std::string> texts;
        for (const auto& a : cfg.server_addresses) texts.push_back(a.text());
        // Both file keys are replaced: the flags' list stands in for them.
        forced.push_back(Forced{SectionKind::kClient, "server-address", {}, Origin{}});
        forced.push_back(Forced{SectionKind::kClient, "server-addresses", std::move(texts),
                                Origin{Source::kFlag, 0, "--server-address"}});
    }
    if (ov.control_address && cfg.control) {
        forced.push_back(Forced{SectionKind::kControl,
                                "address",
                                {cfg.control->address.text()},
                                Origin{Source::kFlag, 0, "--control-address"}});
    }
    std::string cli_backend;
    if (ov.backend_address && !cfg.services.empty())
        cli_backend = cfg.services.front().backend.text();
    record_settings(cfg, forced, cli_backend);
    out_.client = std::move(cfg);
}

}  // namespace

LoadOutcome load_from_string(std::string_view text, const LoadOptions& options) {
    LoadOutcome out;
    Loader(options, out).run(text);
    return out;
}

LoadOutcome load(const LoadOptions& options) {
    if (options.path.empty()) return load_from_string({}, options);
    auto text = core::read_file(options.path);
    if (!text) {
        LoadOutcome out;
        out.problems.push_back(Problem{options.path, 0, text.error().message});
        return out;
    }
    return load_from_string(*text, options);
}

std::string origin_text(const Origin& o) {
    switch (o.source) {
        case Source::kFile:
            return "file:" + std::to_string(o.line);
        case Source::kFlag:
            return "flag " + o.name;
        case Source::kEnv:
            return "env " + o.name;
        case Source::kDefault:
            break;
    }
    return "default";
}

std::string format_report(Role role, const std::string& path, const LoadOutcome& outcome) {
    if (outcome.problems.empty()) return {};
    std::string out = std::string("invalid ") + (role == Role::kServer ? "server" : "client") +
                      " config in " + (path.empty() ? "command-line flags" : path) + ":\n";
    for (const auto& p : outcome.problems) {
        out += "- ";
        if (p.line > 0) out += "line " + std::to_string(p.line) + ": ";
        out += p.message + "\n";
    }
    for (const auto& h : outcome.hints) out += h + "\n";
    return out;
}

SectionsPresent sections_present_in(std::string_view text) {
    RawDocument doc = parse_ini(text, {});
    SectionsPresent p;
    for (const auto& s : doc.sections) {
        if (s.line == 0) continue;
        p.server = p.server || s.kind == SectionKind::kServer;
        p.client = p.client || s.kind == SectionKind::kClient;
    }
    p.client = p.client || doc.any_service_header;
    return p;
}

Result<SectionsPresent> sections_present(const std::string& path) {
    auto text = core::read_file(path);
    if (!text) return std::move(text).error();
    return sections_present_in(*text);
}

const char* log_level_name(LogLevel l) noexcept {
    switch (l) {
        case LogLevel::kOff:
            return "off";
        case LogLevel::kError:
            return "error";
        case LogLevel::kWarn:
            return "warn";
        case LogLevel::kInfo:
            return "info";
        case LogLevel::kDebug:
            return "debug";
        case LogLevel::kTrace:
            return "trace";
    }
    return "info";
}

const char* log_format_name(LogFormat f) noexcept {
    return f == LogFormat::kJson ? "json" : "text";
}

const char* event_backend_name(EventBackend b) noexcept {
    switch (b) {
        case EventBackend::kAuto:
            return "auto";
        case EventBackend::kIoUring:
            return "io_uring";
        case EventBackend::kEpoll:
            return "epoll";
    }
    return "auto";
}

}  // namespace runewarp::config

namespace runewarp::config {

std::string workers_text(std::uint32_t workers) {
    return workers == 0 ? std::string("auto") : std::to_string(workers);
}

std::uint32_t resolve_workers(std::uint32_t workers) noexcept {
    if (workers != 0) return std::min(workers, kMaxWorkers);
    cpu_set_t set;
    CPU_ZERO(&set);
    long n = 0;
    if (sched_getaffinity(0, sizeof set, &set) == 0) n = CPU_COUNT(&set);
    if (n <= 0) n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n <= 0) n = 1;
    return static_cast<std::uint32_t>(std::min<long>(n, kMaxWorkers));
}

}  // namespace runewarp::config
