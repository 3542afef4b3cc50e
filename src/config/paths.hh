// Config path resolution (--config, XDG, /etc) and default material locations: user vs system
// layout.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "runewarp/result.hh"

namespace runewarp::config {

// The process environment the loader looks at, injectable so tests never read the real one.
// Empty strings count as unset.
struct Env {
    std::string xdg_config_home;
    std::string xdg_data_home;
    std::string xdg_state_home;
    std::string home;
    std::string state_directory;  // systemd STATE_DIRECTORY (colon-separated list)
    std::string server_hostname;  // RUNEWARP_SERVER_HOSTNAME
    std::string cwd;              // base for relative CLI paths; empty = leave them relative
    unsigned euid = 1000;

    static Env from_process();
};

enum class Layout { kUser, kSystem };

inline constexpr const char* kSystemConfigPath = "/etc/runewarp/config.ini";

struct ConfigSelection {
    std::string path;                // empty when nothing was found
    bool is_default = false;         // chosen by resolution, not by --config
    std::vector<std::string> tried;  // default candidates looked at, in order
};

// --config PATH, else $XDG_CONFIG_HOME (or $HOME/.config)/runewarp/config.ini if it exists, else
// /etc/runewarp/config.ini if it exists. Returns an empty path when none exists; an error only
// when no XDG base is usable and /etc has no config either.
Result<ConfigSelection> resolve_config_path(const std::optional<std::string>& cli_path,
                                            const Env& env);

// The user-layout config path ($XDG_CONFIG_HOME or $HOME/.config), or empty if neither is set.
std::string user_config_path(const Env& env);

struct Roots {
    Layout layout = Layout::kUser;
    std::string data;   // empty when unresolvable (user layout without HOME/XDG)
    std::string state;  // same
};

// System layout when the config lives under /etc/runewarp/, or when no config is selected and
// euid is 0; else user layout.
Roots resolve_roots(const std::string& config_path, const Env& env);

// Default material paths below the roots.
std::string default_server_cert_dir(const Roots& r);      // <data>/server/cert
std::string default_client_identity_dir(const Roots& r);  // <data>/client/identity
std::string default_public_cert_dir(const Roots& r);      // <data>/client/public-cert
std::string default_client_ca_file(const Roots& r);       // <data>/client/server-ca.crt
std::string default_control_ca_file(const Roots& r);      // <data>/control/ca.crt
std::string default_server_identity_dir(const Roots& r);  // <data>/server/identity
std::string default_server_acme_dir(const Roots& r);      // <state>/server/acme
std::string default_client_acme_dir(const Roots& r);      // <state>/client/acme

// A path from the config file resolves against the file's directory; absolute paths stay.
std::string resolve_relative_to_file(const std::string& config_path, const std::string& value);

// A CLI path resolves against env.cwd (when set).
std::string resolve_cli_path(const Env& env, const std::string& value);

}  // namespace runewarp::config
