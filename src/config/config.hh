// Public config API: load and validate an INI file into an immutable Server or Client model.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "config/paths.hh"
#include "proto/endpoint.hh"
#include "runewarp/result.hh"

namespace runewarp::config {

enum class Role { kServer, kClient };

enum class LogLevel { kOff, kError, kWarn, kInfo, kDebug, kTrace };
enum class LogFormat { kText, kJson };
enum class EventBackend { kAuto, kIoUring, kEpoll };
enum class Trust { kSystem, kCaFile };
enum class TlsMode { kPassthrough, kTerminate };
// When the Server answers a QUIC Initial with a Retry (address validation) instead of a handshake.
enum class TunnelRetry { kAuto, kAlways, kNever };

// One validation problem. line 0 means the problem is not tied to a line.
struct Problem {
    std::string file;
    int line = 0;
    std::string message;
};

// Runtime flags that replace file values before validation (a flag beats the environment,
// which beats the file) or complete a file-less Client start.
struct Overrides {
    std::optional<std::string> hostname;         // server --hostname
    std::vector<std::string> server_addresses;   // client --server-address (repeatable)
    std::optional<std::string> backend_address;  // client --backend-address
    std::optional<std::string> control_address;  // --control-address (Managed mode)
};

struct LoadOptions {
    Role role = Role::kServer;
    std::string path;  // empty = CLI-only (Client only)
    bool path_is_default = false;
    Overrides overrides;
    Env env;
};

// A DNS name (canonical) or literal plus a port: Server addresses, backends, upstreams.
struct HostPort {
    std::string host;  // canonical hostname, or an IP literal without brackets
    std::uint16_t port = 0;
    bool host_is_literal = false;
    std::string text() const;  // "host:port" or "[v6]:port"
};

struct Cidr {
    proto::Endpoint address;  // port unused
    unsigned prefix = 0;
    std::string text;
};

struct Tunnel {
    std::string label;
    std::vector<std::string> public_hostnames;  // canonical, file order
    std::vector<std::string> identities;        // 64 lowercase hex each
};

struct Route {
    std::string label;
    std::vector<std::string> public_hostnames;
    HostPort upstream;
    bool proxy_v2 = false;
};

struct Acme {
    std::string email;
    std::string state_dir;
    bool state_dir_is_default = true;  // default dirs are created at startup after validation
    std::string directory_url;         // https:// URL; default Let's Encrypt production
    std::string ca_file;               // PEM roots for the ACME HTTPS; empty = system trust
    bool operator==(const Acme&) const = default;
};

struct Control {
    HostPort address;
    Trust trust{};
    std::string ca_file;  // set when trust == kCaFile
};

// Where a value came from, for `config show`.
enum class Source { kDefault, kFile, kEnv, kFlag };

// The origin of one effective value: a file line, a flag, an environment variable or the key
// registry's default.
struct Origin {
    Source source = Source::kDefault;
    int line = 0;      // kFile: the key's first line
    std::string name;  // kFlag: "--hostname"; kEnv: "RUNEWARP_SERVER_HOSTNAME"
};

// "file:12", "flag --hostname", "env RUNEWARP_SERVER_HOSTNAME" or "default".
std::string origin_text(const Origin& o);

// One registry key of one section as the loader resolved it. Only `config show` reads these;
// the loader records them once per load (a few short strings per key).
struct Setting {
    std::string key;
    std::vector<std::string> values;  // one item for scalars; empty when the key is unset
    Origin origin;
};

struct SettingsSection {
    std::string header;        // text between the brackets ("server", "tunnel \"apps\""); "" = top
    bool synthesized = false;  // made from flags (no such section in the file)
    std::vector<Setting> settings;  // every registry key of the section, in registry order
};

// The loader sets every field of a role's model, from the file or from the key registry's
// default (the one table of defaults); the initializers are placeholders, not defaults.

// What both roles' models hold: where the config came from, logging, the loop, managed mode.
struct RoleConfig {
    std::string config_path;  // empty for a CLI-only Client start
    Layout layout = Layout::kUser;
    std::string data_root;
    std::string state_root;
    LogLevel log_level{};
    LogFormat log_format{};
    EventBackend event_backend{};
    // [metrics] prometheus-bind-address: the metrics listener (restart-only); unset = off.
    std::optional<proto::Endpoint> metrics_bind;

    // Managed mode ([control] or --control-address): validated here, refused by this build at
    // startup (preflight).
    bool managed_requested = false;
    std::optional<Control> control;

    // Every key of the role's sections (file order, then sections made from flags) with its
    // effective value and origin: defaults applied, overrides in, paths resolved.
    std::vector<SettingsSection> settings;
};

struct ServerConfig : RoleConfig {
    std::string hostname;  // canonical
    Source hostname_source = Source::kFile;
    std::string cert_dir;  // empty when ACME is used or no Tunnel exists
    proto::Endpoint public_bind;
    proto::Endpoint tunnel_bind;
    TunnelRetry tunnel_retry = TunnelRetry::kAuto;
    std::optional<proto::Endpoint> readiness_bind;
    std::uint64_t graceful_shutdown_ms = 0;
    // [server] max-active-streams / max-pending-stream-opens (spec 5.11 values by default;
    // restart-only).
    std::uint32_t max_active_streams = 4096;
    // [server] workers: 0 = auto (one per usable core, see resolve_workers).
    std::uint32_t workers = 0;
    std::uint32_t max_pending_stream_opens = 1024;
    bool visitor_proxy_v2 = false;
    std::vector<Cidr> visitor_proxy_trusted_networks;
    std::optional<Acme> acme;
    std::vector<Tunnel> tunnels;
    std::vector<Route> routes;
    std::string identity_dir;  // Managed only
};

struct Service {
    std::string label;
    std::vector<std::string> public_hostnames;  // empty = Catch-all
    HostPort backend;
    TlsMode tls_mode{};
    bool proxy_v2 = false;
    // Terminate mode: the ALPN protocol ids offered to Visitors, preferred first.
    std::vector<std::string> alpn{"http/1.1"};
    bool catch_all() const noexcept { return public_hostnames.empty(); }
};

struct ClientConfig : RoleConfig {
    std::vector<HostPort> server_addresses;  // canonical host, in order
    Source server_addresses_source = Source::kFile;
    Trust server_trust{};
    std::string server_ca_file;  // set when server_trust == kCaFile
    std::string identity_dir;
    std::string public_cert_dir;  // set when a terminate Service exists and no ACME
    std::optional<Acme> acme;
    std::vector<Service> services;
    // [client] max-streams: stream handlers per instance and the QUIC stream limit granted to
    // each Server (spec 5.11's 1024 by default; restart-only).
    std::uint32_t max_streams = 1024;
    // [client] workers: 0 = auto (one per usable core, see resolve_workers).
    std::uint32_t workers = 0;
};

struct LoadOutcome {
    std::optional<ServerConfig> server;  // set only when problems is empty
    std::optional<ClientConfig> client;
    std::vector<Problem> problems;
    std::vector<std::string> hints;  // e.g. "Hint: runewarp server cert init --config x.ini"
    bool ok() const noexcept { return problems.empty(); }
};

// Reads options.path (or nothing for CLI-only) and validates it for options.role.
LoadOutcome load(const LoadOptions& options);

// Same rules on in-memory text; `options.path` is used for messages and relative paths.
LoadOutcome load_from_string(std::string_view text, const LoadOptions& options);

// "invalid server config in <path>:" + "- [line N: ]<message>" lines + hint lines, each ending
// in '\n'. Empty when the outcome has no problems.
std::string format_report(Role role, const std::string& path, const LoadOutcome& outcome);

// Which role sections a file holds (by header only), for `config check` without --role.
struct SectionsPresent {
    bool server = false;  // [server]
    bool client = false;  // [client] or any [service ...]
};
Result<SectionsPresent> sections_present(const std::string& path);
SectionsPresent sections_present_in(std::string_view text);

const char* log_level_name(LogLevel l) noexcept;
const char* log_format_name(LogFormat f) noexcept;
const char* event_backend_name(EventBackend b) noexcept;

// `workers` as written: "auto" for 0, else the number.
std::string workers_text(std::uint32_t workers);
// The number of worker threads to run for `workers`: the configured number, or for 0 (auto)
// the CPUs this process may run on (sched_getaffinity), at most kMaxWorkers (64).
std::uint32_t resolve_workers(std::uint32_t workers) noexcept;

}  // namespace runewarp::config
