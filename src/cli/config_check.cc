// `runewarp config check`: config resolution (spec 3.8) and validation of each role present.
#include "cli/config_check.hh"

#include <sys/stat.h>

#include <string>
#include <vector>

#include "cli/common.hh"
#include "config/config.hh"

namespace runewarp::cli {

int run_config_check(const Invocation& inv, Console& console) {
    config::Env env = config::Env::from_process();
    auto selection = config::resolve_config_path(inv.value("config"), env);
    if (!selection) return fail(console, selection.error().message);
    if (selection->path.empty()) return fail(console, no_config_message(*selection));
    const std::string& path = selection->path;
    // A directory would read as an empty file; say what is wrong instead.
    struct stat st {};
    if (stat(path.c_str(), &st) == 0 && !S_ISREG(st.st_mode)) {
        return fail(console, path + " is not a regular file");
    }

    std::vector<config::Role> roles;
    if (auto role = inv.value("role")) {
        roles.push_back(*role == "server" ? config::Role::kServer : config::Role::kClient);
    } else {
        auto present = config::sections_present(path);
        if (!present) return fail(console, present.error().message);
        if (present->server) roles.push_back(config::Role::kServer);
        if (present->client) roles.push_back(config::Role::kClient);
        if (roles.empty()) {
            return fail(console, path + " has neither a [server] nor a [client] section");
        }
    }

    bool ok = true;
    for (config::Role role : roles) {
        config::LoadOptions options;
        options.role = role;
        options.path = path;
        options.path_is_default = selection->is_default;
        options.env = env;
        config::LoadOutcome outcome = config::load(options);
        if (!outcome.ok()) {
            console.err(config::format_report(role, path, outcome));
            ok = false;
        }
    }
    if (!ok) return kExitFailure;
    console.out("ok\n");
    return kExitOk;
}

}  // namespace runewarp::cli
