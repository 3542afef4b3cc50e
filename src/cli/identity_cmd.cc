// Client identity commands: directory resolution (--dir > client.identity-dir > default).
#include "cli/identity_cmd.hh"

#include "cli/common.hh"
#include "config/ini_document.hh"
#include "core/file.hh"
#include "trust/client_identity.hh"
#include "trust/material.hh"

namespace runewarp::cli {

namespace {

config::SectionKind kind_of(std::string_view section) {
    return section == "server" ? config::SectionKind::kServer : config::SectionKind::kClient;
}

Result<std::string> identity_dir(const Invocation& inv) {
    auto cfg = select_material_config(inv);
    if (!cfg) return std::move(cfg).error();
    if (auto d = inv.value("dir")) {
        if (d->empty()) return Error::msg("--dir must not be empty");
        return config::resolve_cli_path(cfg->env, *d);
    }
    if (auto v = cfg->value("client", "identity-dir"); v && !v->empty()) {
        return config::resolve_relative_to_file(cfg->path, *v);
    }
    std::string dir = config::default_client_identity_dir(cfg->roots);
    if (cfg->roots.data.empty()) {
        return Error::msg(
            "unable to resolve the XDG data base directory: set XDG_DATA_HOME or HOME, or use "
            "--dir");
    }
    return dir;
}

std::string summary(std::string_view headline, const std::string& id, const std::string& dir) {
    std::string out(headline);
    out.append(id);
    out.append("\nIdentity directory: ");
    out.append(dir);
    out.push_back('\n');
    return out;
}

}  // namespace

std::optional<std::string> MaterialConfig::value(std::string_view section,
                                                 std::string_view key) const {
    if (path.empty()) return std::nullopt;
    config::RawDocument doc = config::parse_ini(text, path);
    const config::SectionKind want = kind_of(section);
    for (const config::RawSection& s : doc.sections) {
        if (s.kind != want || !s.valid) continue;
        std::optional<std::string> out;
        for (const config::RawEntry& e : s.entries) {
            if (e.key == key) out = e.value;
        }
        return out;
    }
    return std::nullopt;
}

Result<MaterialConfig> select_material_config(const Invocation& inv) {
    MaterialConfig cfg;
    cfg.env = config::Env::from_process();
    if (auto c = inv.value("config")) {
        cfg.path = config::resolve_cli_path(cfg.env, *c);
        auto text = core::read_file(cfg.path);
        if (!text) return std::move(text).error();
        cfg.text = std::move(*text);
    } else if (auto sel = config::resolve_config_path(std::nullopt, cfg.env);
               sel && !sel->path.empty()) {
        // The default config counts only when it exists; an unreadable one is still an error.
        cfg.path = sel->path;
        auto text = core::read_file(cfg.path);
        if (!text) return std::move(text).error();
        cfg.text = std::move(*text);
    }
    cfg.roots = config::resolve_roots(cfg.path, cfg.env);
    return cfg;
}

std::optional<int> reject_runtime_flags(const Invocation& inv, Console& console) {
    for (std::size_t i = 0; i < inv.flags.size() && i < inv.flag_owners.size(); ++i) {
        const CommandSpec* owner = inv.flag_owners[i];
        if (owner == nullptr || owner == inv.path.back()) continue;
        for (const FlagSpec& f : owner->flags) {
            if (f.long_name != inv.flags[i].first || !f.runtime_only) continue;
            // The runtime command is the ancestor that declares the flag.
            std::vector<const CommandSpec*> runtime_path;
            for (const CommandSpec* c : inv.path) {
                runtime_path.push_back(c);
                if (c == owner) break;
            }
            std::string m = "`--";
            m.append(f.long_name);
            m.append("` may be used only with `");
            m.append(command_line(runtime_path));
            m.append("`, not `");
            m.append(command_line(inv.path));
            m.append("`");
            return fail(console, m);
        }
    }
    return std::nullopt;
}

namespace {

// The steps every `client identity ...` command shares: runtime flags refused, the directory
// resolved, then `act(dir)` returns the text to print (or the error).
template <typename Act>
int identity_command(const Invocation& inv, Console& console, Act act) {
    if (auto rc = reject_runtime_flags(inv, console)) return *rc;
    auto dir = identity_dir(inv);
    if (!dir) return fail(console, dir.error().message);
    Result<std::string> text = act(*dir);
    if (!text) return fail(console, text.error().message);
    console.out(*text);
    return kExitOk;
}

}  // namespace

int run_client_identity_init(const Invocation& inv, Console& console) {
    return identity_command(inv, console, [](const std::string& dir) -> Result<std::string> {
        auto r = trust::init_client_identity(dir);
        if (!r) return std::move(r).error();
        return summary(
            r->created ? "Client identity initialized: " : "Client identity already exists: ",
            r->identity, dir);
    });
}

int run_client_identity_rotate(const Invocation& inv, Console& console) {
    return identity_command(inv, console, [](const std::string& dir) -> Result<std::string> {
        auto r = trust::rotate_client_identity(dir);
        if (!r) return std::move(r).error();
        return summary("Client identity rotated: ", *r, dir);
    });
}

int run_client_identity_show(const Invocation& inv, Console& console) {
    return identity_command(inv, console, [](const std::string& dir) -> Result<std::string> {
        auto r = trust::load_client_identity(dir);
        if (!r) return std::move(r).error();
        return *r + "\n";
    });
}

}  // namespace runewarp::cli
