// The one table of config keys; the loader, `config show`/`init` and the man page follow it.
#include "config/registry.hh"

#include <algorithm>
#include <array>

#include "config/values.hh"
#include "proto/hostname.hh"

namespace runewarp::config {

namespace {

constexpr std::array<std::string_view, 6> kLogLevels = {"off",  "error", "warn",
                                                        "info", "debug", "trace"};
constexpr std::array<std::string_view, 2> kLogFormats = {"text", "json"};
constexpr std::array<std::string_view, 3> kBackends = {"auto", "io_uring", "epoll"};
constexpr std::array<std::string_view, 1> kProxy = {"v2"};
constexpr std::array<std::string_view, 2> kTrust = {"system", "ca-file"};
constexpr std::array<std::string_view, 2> kTlsModes = {"passthrough", "terminate"};
constexpr std::array<std::string_view, 3> kRetry = {"auto", "always", "never"};

using K = SectionKind;
using T = ValueType;

// The largest stream limit a key accepts: beyond it the preallocated tables alone would take
// gigabytes.
constexpr std::uint32_t kMaxCountLimit = 262'144;

const std::array kKeys = {
    KeySpec{K::kTop, "log-level", T::kEnum, "info", "log verbosity (trace currently equals debug)",
            kLogLevels},
    KeySpec{K::kTop, "log-format", T::kEnum, "text", "text lines or one JSON object per line",
            kLogFormats},

    KeySpec{K::kServer,
            "hostname",
            T::kHostname,
            "(required)",
            "Server hostname; overridden by --hostname or RUNEWARP_SERVER_HOSTNAME",
            {}},
    KeySpec{K::kServer,
            "cert-dir",
            T::kPath,
            "<data>/server/cert",
            "manual Server certificate directory (server.crt, server.key, server-ca.crt)",
            {}},
    KeySpec{K::kServer,
            "public-bind-address",
            T::kSocketAddress,
            "0.0.0.0:443",
            "TCP listener for Visitors",
            {}},
    KeySpec{K::kServer,
            "tunnel-bind-address",
            T::kSocketAddress,
            "0.0.0.0:443",
            "UDP listener for QUIC Tunnel connections",
            {}},
    KeySpec{K::kServer, "tunnel-retry", T::kEnum, "auto",
            "QUIC address validation: Retry once half the 256 handshake slots are taken (auto), "
            "for every new Tunnel connection (always), or never",
            kRetry},
    KeySpec{K::kServer,
            "readiness-bind-address",
            T::kSocketAddress,
            "(unset)",
            "TCP readiness probe listener",
            {}},
    KeySpec{K::kServer,
            "graceful-shutdown-duration",
            T::kDuration,
            "60s",
            "how long SIGTERM waits for streams to finish",
            {}},
    KeySpec{K::kServer, "visitor-proxy-protocol", T::kEnum, "(unset)",
            "expect a PROXY v2 header from a load balancer on every Visitor connection", kProxy},
    KeySpec{K::kServer,
            "visitor-proxy-trusted-networks",
            T::kCidrList,
            "(unset)",
            "networks allowed to send PROXY v2 headers",
            {}},
    KeySpec{K::kServer,
            "identity-dir",
            T::kPath,
            "<data>/server/identity",
            "Server identity for Managed mode only",
            {}},
    KeySpec{K::kServer, "event-backend", T::kEnum, "auto",
            "event loop backend: io_uring when a probe ring works, else epoll", kBackends},
    KeySpec{K::kServer,
            "workers",
            T::kWorkers,
            "auto",
            "event loop threads, shared-nothing: auto = one per usable core, or 1 to 64",
            {}},
    KeySpec{K::kServer,
            "max-active-streams",
            T::kCount,
            "4096",
            "Visitors relayed at once, direct and through Tunnels; the newest beyond is reset",
            {},
            1,
            kMaxCountLimit},
    KeySpec{K::kServer,
            "max-pending-stream-opens",
            T::kCount,
            "1024",
            "Tunnel stream opens in progress at once; the newest Visitor beyond is dropped",
            {},
            1,
            kMaxCountLimit},

    KeySpec{K::kServerAcme, "email", T::kString, "(required)", "ACME account contact", {}},
    KeySpec{K::kServerAcme,
            "state-dir",
            T::kPath,
            "<state>/server/acme",
            "ACME account and certificate cache",
            {}},
    KeySpec{K::kServerAcme,
            "directory-url",
            T::kString,
            "https://acme-v02.api.letsencrypt.org/directory",
            "ACME directory (an https:// URL; a private or test CA's)",
            {}},
    KeySpec{K::kServerAcme,
            "ca-file",
            T::kPath,
            "(unset: system trust)",
            "PEM roots trusted for the ACME server's HTTPS",
            {}},

    KeySpec{K::kTunnel,
            "public-hostnames",
            T::kHostnameList,
            "(required)",
            "Public hostnames routed to this Tunnel",
            {}},
    KeySpec{K::kTunnel,
            "client-identity",
            T::kIdentity,
            "(unset)",
            "the one Client identity admitted to this Tunnel",
            {}},
    KeySpec{K::kTunnel,
            "client-identities",
            T::kIdentityList,
            "(unset)",
            "Client identities admitted to this Tunnel",
            {}},

    KeySpec{K::kRoute,
            "public-hostnames",
            T::kHostnameList,
            "(required)",
            "Public hostnames spliced to the upstream",
            {}},
    KeySpec{K::kRoute,
            "upstream-address",
            T::kHostPort,
            "(required)",
            "TCP upstream, host:port or [v6]:port",
            {}},
    KeySpec{K::kRoute, "proxy-protocol", T::kEnum, "(unset)",
            "send a PROXY v2 header to the upstream", kProxy},

    KeySpec{K::kClient,
            "server-address",
            T::kServerAddress,
            "(unset)",
            "one Server address, hostname[:port]",
            {}},
    KeySpec{K::kClient,
            "server-addresses",
            T::kServerAddressList,
            "(unset)",
            "several Server addresses, hostname[:port] each",
            {}},
    KeySpec{K::kClient, "server-trust", T::kEnum, "system",
            "how the Server certificate is verified", kTrust},
    KeySpec{K::kClient,
            "server-ca-file",
            T::kPath,
            "<data>/client/server-ca.crt",
            "CA bundle for server-trust = ca-file",
            {}},
    KeySpec{K::kClient,
            "identity-dir",
            T::kPath,
            "<data>/client/identity",
            "Client identity (client.crt, client.key, client-identity.txt)",
            {}},
    KeySpec{K::kClient,
            "public-cert-dir",
            T::kPath,
            "<data>/client/public-cert",
            "manual certificates for terminate-mode Services",
            {}},
    KeySpec{K::kClient, "event-backend", T::kEnum, "auto", "event loop backend", kBackends},
    KeySpec{K::kClient,
            "workers",
            T::kWorkers,
            "auto",
            "event loop threads, each with its own connection to every Server address: auto = "
            "one per usable core, or 1 to 64",
            {}},
    KeySpec{K::kClient,
            "max-streams",
            T::kCount,
            "1024",
            "Visitor streams handled at once per Server connection set; granted to each Server as "
            "its QUIC stream limit, the newest beyond is reset",
            {},
            1,
            kMaxCountLimit},

    KeySpec{K::kClientAcme, "email", T::kString, "(required)", "ACME account contact", {}},
    KeySpec{K::kClientAcme,
            "state-dir",
            T::kPath,
            "<state>/client/acme",
            "ACME account and certificate cache",
            {}},
    KeySpec{K::kClientAcme,
            "directory-url",
            T::kString,
            "https://acme-v02.api.letsencrypt.org/directory",
            "ACME directory (an https:// URL; a private or test CA's)",
            {}},
    KeySpec{K::kClientAcme,
            "ca-file",
            T::kPath,
            "(unset: system trust)",
            "PEM roots trusted for the ACME server's HTTPS",
            {}},

    KeySpec{K::kService,
            "public-hostnames",
            T::kHostnameList,
            "(unset: Catch-all)",
            "Public hostnames served by this Service",
            {}},
    KeySpec{K::kService,
            "backend-address",
            T::kHostPort,
            "(required)",
            "local backend, literal socket address or host:port",
            {}},
    KeySpec{K::kService, "tls-mode", T::kEnum, "passthrough",
            "relay TLS untouched or terminate it on the Client", kTlsModes},
    KeySpec{K::kService, "proxy-protocol", T::kEnum, "(unset)",
            "send a PROXY v2 header to the backend", kProxy},
    KeySpec{K::kService,
            "alpn",
            T::kAlpnList,
            "http/1.1",
            "ALPN protocols a terminating Service offers, preferred first",
            {}},

    KeySpec{K::kControl,
            "address",
            T::kServerAddress,
            "(required)",
            "Control endpoint, hostname[:port] (Managed mode)",
            {}},
    KeySpec{K::kMetrics,
            "prometheus-bind-address",
            T::kSocketAddress,
            "(unset)",
            "HTTP listener for /metrics (Prometheus text), /status.json and the status page",
            {}},

    KeySpec{K::kControl, "trust", T::kEnum, "system", "how the Control certificate is verified",
            kTrust},
    KeySpec{K::kControl,
            "ca-file",
            T::kPath,
            "<data>/control/ca.crt",
            "CA bundle for trust = ca-file",
            {}},
};

// The problem text of a parsed value, or nothing when it parsed.
template <typename Value>
std::optional<std::string> problem_of(const Parsed<Value>& parsed) {
    if (auto* e = std::get_if<std::string>(&parsed)) return *e;
    return std::nullopt;
}

constexpr std::string_view kDataRoot = "<data>/";
constexpr std::string_view kStateRoot = "<state>/";

std::string join_choices(std::span<const std::string_view> choices) {
    std::string out;
    for (auto c : choices) {
        if (!out.empty()) out += ", ";
        out += c;
    }
    return out;
}

}  // namespace

bool is_list(ValueType t) noexcept {
    return t == T::kHostnameList || t == T::kIdentityList || t == T::kServerAddressList ||
           t == T::kCidrList || t == T::kAlpnList;
}

std::span<const KeySpec> key_registry() noexcept {
    return kKeys;
}

const KeySpec* find_key(SectionKind section, std::string_view name) noexcept {
    for (const auto& k : kKeys) {
        if (k.section == section && k.name == name) return &k;
    }
    return nullptr;
}

std::string_view section_kind_name(SectionKind k) noexcept {
    switch (k) {
        case K::kTop:
            return "";
        case K::kServer:
            return "server";
        case K::kServerAcme:
            return "server.acme";
        case K::kTunnel:
            return "tunnel";
        case K::kRoute:
            return "route";
        case K::kClient:
            return "client";
        case K::kClientAcme:
            return "client.acme";
        case K::kService:
            return "service";
        case K::kControl:
            return "control";
        case K::kMetrics:
            return "metrics";
    }
    return "";
}

bool section_is_labelled(SectionKind k) noexcept {
    return k == K::kTunnel || k == K::kRoute || k == K::kService;
}

std::optional<std::string> check_value(const KeySpec& spec, std::string_view value) {
    auto err = [](const std::string& text) { return std::optional<std::string>(text); };
    switch (spec.type) {
        case T::kString:
        case T::kPath:
            if (value.empty()) return err("must not be empty");
            return std::nullopt;
        case T::kEnum:
            if (std::find(spec.choices.begin(), spec.choices.end(), value) == spec.choices.end()) {
                return err("must be one of " + join_choices(spec.choices));
            }
            return std::nullopt;
        case T::kHostname:
        case T::kHostnameList: {
            auto h = proto::normalize_hostname(value);
            if (!h.ok()) return err(proto::hostname_error_text(h.error));
            return std::nullopt;
        }
        case T::kIdentity:
        case T::kIdentityList:
            if (!is_identity(value)) {
                return err("client identity must be exactly 64 lowercase hex characters");
            }
            return std::nullopt;
        case T::kSocketAddress:
            return problem_of(parse_socket_address(value));
        case T::kServerAddress:
        case T::kServerAddressList:
            return problem_of(parse_server_address(value));
        case T::kHostPort:
            return problem_of(parse_host_port(value));
        case T::kDuration:
            return problem_of(parse_duration_ms(value));
        case T::kCidrList:
            return problem_of(parse_cidr(value));
        case T::kCount:
            return problem_of(parse_count(value, spec.min, spec.max));
        case T::kWorkers:
            return problem_of(parse_workers(value));
        case T::kAlpnList:
            if (value.empty() || value.size() > 255) {
                return err("an ALPN protocol id is 1 to 255 bytes");
            }
            for (char c : value) {
                if (c <= 0x20 || c >= 0x7f) {
                    return err("an ALPN protocol id is printable ASCII without spaces");
                }
            }
            return std::nullopt;
    }
    return std::nullopt;
}

std::optional<std::string_view> default_value(const KeySpec& spec) noexcept {
    std::string_view d = spec.default_text;
    if (d.empty() || d.front() == '(' || d.front() == '<') return std::nullopt;
    return d;
}

bool default_path_is_state(const KeySpec& spec) noexcept {
    return spec.default_text.starts_with(kStateRoot);
}

std::string default_path(const KeySpec& spec, const Roots& roots) {
    std::string_view d = spec.default_text;
    const bool state = d.starts_with(kStateRoot);
    if (!state && !d.starts_with(kDataRoot)) return {};
    const std::string& root = state ? roots.state : roots.data;
    if (root.empty()) return {};
    d.remove_prefix(state ? kStateRoot.size() : kDataRoot.size());
    std::string out = root;
    if (out.back() != '/') out.push_back('/');
    out.append(d);
    return out;
}

std::string default_path(SectionKind section, std::string_view name, const Roots& roots) {
    const KeySpec* spec = find_key(section, name);
    return spec == nullptr ? std::string() : default_path(*spec, roots);
}

}  // namespace runewarp::config
