// `runewarp client`: select the config (or a CLI-only start), apply the startup rules, then run.
#include "cli/client_cmd.hh"

#include <string>

#include "cli/common.hh"
#include "client/client.hh"
#include "config/paths.hh"
#include "preflight/preflight.hh"

namespace runewarp::cli {

int run_client_command(const Invocation& inv, Console& console) {
    config::Env env = config::Env::from_process();
    // --config (a missing file is fatal), else the default path if the file exists, else a
    // CLI-only start.
    auto selection = config::resolve_config_path(inv.value("config"), env);
    // Without --config an unresolvable default location only means: no file, CLI-only.
    if (!selection && inv.value("config")) return fail(console, selection.error().message);
    config::ConfigSelection chosen;
    if (selection) chosen = std::move(*selection);
    config::LoadOptions options = load_options(config::Role::kClient, chosen, env);
    options.overrides.server_addresses = inv.values("server-address");
    if (auto b = inv.value("backend-address")) options.overrides.backend_address = *b;
    if (auto c = inv.value("control-address")) options.overrides.control_address = *c;
    // The same rules as `config check`, so whatever it accepts starts here.
    auto checked = preflight::check_client(options);
    if (!checked.ok()) {
        console.err(config::format_report(config::Role::kClient, chosen.path, checked.report));
        return kExitFailure;
    }
    const config::ClientConfig& cfg = checked.startup->config;
    configure_logging(cfg.log_level, cfg.log_format);
    // The options go along: a reload loads the file the same way.
    return client::run_client(std::move(options), std::move(*checked.startup));
}

}  // namespace runewarp::cli
