// `runewarp config check`: config resolution and, per role present, the daemon's startup rules.
#include "cli/config_check.hh"

#include <sys/stat.h>

#include <string>
#include <vector>

#include "cli/common.hh"
#include "preflight/preflight.hh"

namespace runewarp::cli {

int run_config_check(const Invocation& inv, Console& console) {
    config::Env env = config::Env::from_process();
    auto selection = select_config(inv, env);
    if (!selection) return fail(console, selection.error().message);
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

    // Exactly what `runewarp server` and `runewarp client` apply before they start, material
    // included: the report is the one the daemon would print.
    bool ok = true;
    for (config::Role role : roles) {
        config::LoadOptions options = load_options(role, *selection, env);
        const config::LoadOutcome report = role == config::Role::kServer
                                               ? preflight::check_server(options).report
                                               : preflight::check_client(options).report;
        if (!report.ok()) {
            console.err(config::format_report(role, path, report));
            ok = false;
        }
    }
    if (!ok) return kExitFailure;
    console.out("ok\n");
    return kExitOk;
}

}  // namespace runewarp::cli
