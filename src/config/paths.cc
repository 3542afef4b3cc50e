// Config path resolution (--config, XDG, /etc) and the user vs system layout of defaults.
#include "config/paths.hh"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>

#include "config/registry.hh"
#include "core/file.hh"

namespace runewarp::config {

namespace {

using core::dir_of;

std::string env_or_empty(const char* name) {
    const char* v = std::getenv(name);
    return v ? std::string(v) : std::string();
}

bool is_regular_file(const std::string& path) {
    struct stat st {};
    return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

std::string join(const std::string& base, const std::string& rel) {
    if (base.empty()) return rel;
    if (base.back() == '/') return base + rel;
    return base + "/" + rel;
}
}  // namespace

Env Env::from_process() {
    Env e;
    e.xdg_config_home = env_or_empty("XDG_CONFIG_HOME");
    e.xdg_data_home = env_or_empty("XDG_DATA_HOME");
    e.xdg_state_home = env_or_empty("XDG_STATE_HOME");
    e.home = env_or_empty("HOME");
    e.state_directory = env_or_empty("STATE_DIRECTORY");
    e.server_hostname = env_or_empty("RUNEWARP_SERVER_HOSTNAME");
    char buf[4096];
    if (::getcwd(buf, sizeof buf) != nullptr) e.cwd = buf;
    e.euid = static_cast<unsigned>(::geteuid());
    return e;
}

std::string user_config_path(const Env& env) {
    if (!env.xdg_config_home.empty()) return join(env.xdg_config_home, "runewarp/config.ini");
    if (!env.home.empty()) return join(env.home, ".config/runewarp/config.ini");
    return {};
}

Result<ConfigSelection> resolve_config_path(const std::optional<std::string>& cli_path,
                                            const Env& env) {
    ConfigSelection sel;
    if (cli_path) {
        sel.path = resolve_cli_path(env, *cli_path);
        return sel;
    }
    std::string user = user_config_path(env);
    if (!user.empty()) {
        sel.tried.push_back(user);
        if (is_regular_file(user)) {
            sel.path = user;
            sel.is_default = true;
            return sel;
        }
    }
    sel.tried.push_back(kSystemConfigPath);
    if (is_regular_file(kSystemConfigPath)) {
        sel.path = kSystemConfigPath;
        sel.is_default = true;
        return sel;
    }
    if (user.empty()) {
        return Error::msg(
            "unable to resolve the XDG config base directory: set XDG_CONFIG_HOME or HOME");
    }
    return sel;
}

Roots resolve_roots(const std::string& config_path, const Env& env) {
    Roots r;
    bool system = config_path.empty() ? env.euid == 0 : config_path.starts_with("/etc/runewarp/");
    if (system) {
        r.layout = Layout::kSystem;
        std::string first = env.state_directory.substr(0, env.state_directory.find(':'));
        r.data = first.empty() ? "/var/lib/runewarp" : first;
        r.state = r.data;
        return r;
    }
    r.layout = Layout::kUser;
    if (!env.xdg_data_home.empty()) {
        r.data = join(env.xdg_data_home, "runewarp");
    } else if (!env.home.empty()) {
        r.data = join(env.home, ".local/share/runewarp");
    }
    if (!env.xdg_state_home.empty()) {
        r.state = join(env.xdg_state_home, "runewarp");
    } else if (!env.home.empty()) {
        r.state = join(env.home, ".local/state/runewarp");
    }
    return r;
}

// The defaults themselves live in the key registry, the one table of keys and defaults.
std::string default_server_cert_dir(const Roots& r) {
    return default_path(SectionKind::kServer, "cert-dir", r);
}
std::string default_client_identity_dir(const Roots& r) {
    return default_path(SectionKind::kClient, "identity-dir", r);
}
std::string default_public_cert_dir(const Roots& r) {
    return default_path(SectionKind::kClient, "public-cert-dir", r);
}
std::string default_client_ca_file(const Roots& r) {
    return default_path(SectionKind::kClient, "server-ca-file", r);
}
std::string default_control_ca_file(const Roots& r) {
    return default_path(SectionKind::kControl, "ca-file", r);
}
std::string default_server_identity_dir(const Roots& r) {
    return default_path(SectionKind::kServer, "identity-dir", r);
}
std::string default_server_acme_dir(const Roots& r) {
    return default_path(SectionKind::kServerAcme, "state-dir", r);
}
std::string default_client_acme_dir(const Roots& r) {
    return default_path(SectionKind::kClientAcme, "state-dir", r);
}

std::string resolve_relative_to_file(const std::string& config_path, const std::string& value) {
    if (value.starts_with('/') || config_path.empty()) return value;
    std::string dir = dir_of(config_path);
    if (dir == ".") return value;
    return join(dir, value);
}

std::string resolve_cli_path(const Env& env, const std::string& value) {
    if (value.starts_with('/') || env.cwd.empty()) return value;
    return join(env.cwd, value);
}

}  // namespace runewarp::config
