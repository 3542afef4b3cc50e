// Public hostname certificate commands: target hostnames (--hostname or the terminating
// Services of the selected config), the directory, then the trust module.
#include "cli/public_cert_cmd.hh"

#include <algorithm>
#include <string>
#include <vector>

#include "cli/common.hh"
#include "cli/identity_cmd.hh"
#include "config/ini_document.hh"
#include "proto/hostname.hh"
#include "trust/public_cert.hh"

namespace runewarp::cli {

namespace {

enum class Action { kInit, kRenew, kRotateCa };

Result<std::string> public_cert_dir(const Invocation& inv, const MaterialConfig& cfg) {
    if (auto d = inv.value("dir")) {
        if (d->empty()) return Error::msg("--dir must not be empty");
        return config::resolve_cli_path(cfg.env, *d);
    }
    if (auto v = cfg.value("client", "public-cert-dir"); v && !v->empty()) {
        return config::resolve_relative_to_file(cfg.path, *v);
    }
    if (cfg.roots.data.empty()) {
        return Error::msg(
            "unable to resolve the XDG data base directory: set XDG_DATA_HOME or HOME, or use "
            "--dir");
    }
    return config::default_public_cert_dir(cfg.roots);
}

// The items of a list value: split on commas and ASCII whitespace, empty items dropped.
void split_list(const std::string& value, std::vector<std::string>& out) {
    std::string item;
    for (char c : value) {
        if (c == ',' || c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f') {
            if (!item.empty()) out.push_back(std::move(item));
            item.clear();
        } else {
            item.push_back(c);
        }
    }
    if (!item.empty()) out.push_back(std::move(item));
}

// Every Public hostname of the config's `tls-mode = terminate` Services, canonical, sorted,
// without duplicates. The raw file is read (not the validated config): the certificate
// directory a config names may not exist before `init` creates it.
Result<std::vector<std::string>> terminating_hostnames(const MaterialConfig& cfg) {
    config::RawDocument doc = config::parse_ini(cfg.text, cfg.path);
    bool has_client = std::any_of(doc.sections.begin(), doc.sections.end(), [](const auto& s) {
        return s.valid && s.kind == config::SectionKind::kClient;
    });
    if (!has_client) {
        return Error::msg("config file " + cfg.path +
                          " has no [client] section; cannot derive terminating hostnames");
    }
    std::vector<std::string> out;
    for (const config::RawSection& s : doc.sections) {
        if (!s.valid || s.kind != config::SectionKind::kService) continue;
        std::string mode;
        std::vector<std::string> items;
        for (const config::RawEntry& e : s.entries) {
            if (e.key == "tls-mode") mode = e.value;
            if (e.key == "public-hostnames") split_list(e.value, items);
        }
        if (mode != "terminate") continue;
        for (const std::string& item : items) {
            auto h = proto::normalize_hostname(item);
            if (!h.ok()) {
                return Error::msg("invalid public hostname \"" + item + "\" in service \"" +
                                  s.label + "\" of " + cfg.path + ": " +
                                  proto::hostname_error_text(h.error));
            }
            out.push_back(h.canonical);
        }
    }
    std::sort(out.begin(), out.end());
    out.erase(std::unique(out.begin(), out.end()), out.end());
    if (out.empty()) {
        return Error::msg("config file " + cfg.path +
                          " has no service with tls-mode = terminate and public-hostnames; use "
                          "--hostname to name the target");
    }
    return out;
}

// --hostname (one) or every terminating Public hostname of the selected config.
Result<std::vector<std::string>> targets(const Invocation& inv, const MaterialConfig& cfg,
                                         Action action) {
    if (auto flag = inv.value("hostname")) {
        auto h = proto::normalize_hostname(*flag);
        if (!h.ok()) {
            return Error::msg("invalid --hostname \"" + *flag +
                              "\": " + proto::hostname_error_text(h.error));
        }
        return std::vector<std::string>{h.canonical};
    }
    if (cfg.path.empty()) {
        if (action == Action::kRotateCa) {
            return Error::msg(
                "`runewarp client public-cert rotate-ca` needs a selected config to find every "
                "terminating Public hostname: use --config PATH or create the default config");
        }
        return Error::msg(
            "--hostname is required when no config is selected (use --config PATH, or create the "
            "default config, to target the public-hostnames of its tls-mode = terminate "
            "services)");
    }
    return terminating_hostnames(cfg);
}

int run(const Invocation& inv, Console& console, Action action) {
    if (auto rc = reject_runtime_flags(inv, console)) return *rc;
    auto cfg = select_material_config(inv);
    if (!cfg) return fail(console, cfg.error().message);
    auto hosts = targets(inv, *cfg, action);
    if (!hosts) return fail(console, hosts.error().message);
    auto dir = public_cert_dir(inv, *cfg);
    if (!dir) return fail(console, dir.error().message);
    Result<trust::PublicCertSummary> r = Error::msg("unreachable");
    switch (action) {
        case Action::kInit:
            r = trust::init_public_cert(*dir, *hosts);
            break;
        case Action::kRenew:
            r = trust::renew_public_cert(*dir, *hosts);
            break;
        case Action::kRotateCa:
            r = trust::rotate_public_ca(*dir, *hosts);
            break;
    }
    if (!r) return fail(console, r.error().message);
    console.out(trust::format_public_cert_summary(*r));
    return kExitOk;
}

}  // namespace

int run_client_public_cert_init(const Invocation& inv, Console& console) {
    return run(inv, console, Action::kInit);
}

int run_client_public_cert_renew(const Invocation& inv, Console& console) {
    return run(inv, console, Action::kRenew);
}

int run_client_public_cert_rotate_ca(const Invocation& inv, Console& console) {
    return run(inv, console, Action::kRotateCa);
}

}  // namespace runewarp::cli
