// Server certificate commands: directory and hostname resolution, then the trust module.
#include "cli/cert_cmd.hh"

#include "cli/common.hh"
#include "cli/identity_cmd.hh"
#include "proto/hostname.hh"
#include "trust/server_cert.hh"

namespace runewarp::cli {

namespace {

Result<std::string> cert_dir(const Invocation& inv, const MaterialConfig& cfg) {
    if (auto d = inv.value("dir")) {
        if (d->empty()) return Error::msg("--dir must not be empty");
        return config::resolve_cli_path(cfg.env, *d);
    }
    if (auto v = cfg.value("server", "cert-dir"); v && !v->empty()) {
        return config::resolve_relative_to_file(cfg.path, *v);
    }
    if (cfg.roots.data.empty()) {
        return Error::msg(
            "unable to resolve the XDG data base directory: set XDG_DATA_HOME or HOME, or use "
            "--dir");
    }
    return config::default_server_cert_dir(cfg.roots);
}

Result<std::string> normalized(std::string_view origin, const std::string& raw) {
    auto h = proto::normalize_hostname(raw);
    if (!h.ok()) {
        return Error::msg("invalid " + std::string(origin) + " \"" + raw +
                          "\": " + proto::hostname_error_text(h.error));
    }
    return h.canonical;
}

// --hostname > RUNEWARP_SERVER_HOSTNAME > server.hostname; a --hostname that differs from a
// configured hostname fails.
Result<std::string> cert_hostname(const Invocation& inv, const MaterialConfig& cfg) {
    std::optional<std::string> configured;
    if (auto v = cfg.value("server", "hostname")) {
        auto h = normalized("server.hostname in " + cfg.path, *v);
        if (!h) return h;
        configured = std::move(*h);
    }
    if (auto flag = inv.value("hostname")) {
        auto h = normalized("--hostname", *flag);
        if (!h) return h;
        if (configured && *configured != *h) {
            return Error::msg("`--hostname` " + *h + " does not match configured server.hostname " +
                              *configured + " in " + cfg.path);
        }
        return h;
    }
    if (!cfg.env.server_hostname.empty()) {
        return normalized("RUNEWARP_SERVER_HOSTNAME", cfg.env.server_hostname);
    }
    if (configured) return std::move(*configured);
    return Error::msg(
        "server hostname is required via --hostname, RUNEWARP_SERVER_HOSTNAME, or "
        "server.hostname in config");
}

enum class Action { kInit, kRenew, kRotateCa };

int run(const Invocation& inv, Console& console, Action action) {
    if (auto rc = reject_runtime_flags(inv, console)) return *rc;
    auto cfg = select_material_config(inv);
    if (!cfg) return fail(console, cfg.error().message);
    auto dir = cert_dir(inv, *cfg);
    if (!dir) return fail(console, dir.error().message);
    Result<trust::ServerCertSummary> r = Error::msg("unreachable");
    if (action == Action::kRenew) {
        r = trust::renew_server_cert(*dir);
    } else {
        auto host = cert_hostname(inv, *cfg);
        if (!host) return fail(console, host.error().message);
        r = action == Action::kInit ? trust::init_server_cert(*dir, *host)
                                    : trust::rotate_server_ca(*dir, *host);
    }
    if (!r) return fail(console, r.error().message);
    console.out(trust::format_server_cert_summary(*r));
    if (action == Action::kRenew) {
        // A running Server serves the certificate it loaded until it is reloaded.
        console.out(
            "A running server keeps serving the previous certificate until it is reloaded "
            "(runewarp reload, or systemctl reload runewarp-server).\n");
    }
    return kExitOk;
}

}  // namespace

int run_server_cert_init(const Invocation& inv, Console& console) {
    return run(inv, console, Action::kInit);
}

int run_server_cert_renew(const Invocation& inv, Console& console) {
    return run(inv, console, Action::kRenew);
}

int run_server_cert_rotate_ca(const Invocation& inv, Console& console) {
    return run(inv, console, Action::kRotateCa);
}

}  // namespace runewarp::cli
