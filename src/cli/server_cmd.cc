// `runewarp server`: resolve and validate the config, then run the Server role.
#include "cli/server_cmd.hh"

#include <string>

#include "cli/common.hh"
#include "config/config.hh"
#include "obs/log.hh"
#include "server/edge_server.hh"

namespace runewarp::cli {

int run_server_command(const Invocation& inv, Console& console) {
    config::Env env = config::Env::from_process();
    auto selection = config::resolve_config_path(inv.value("config"), env);
    if (!selection) return fail(console, selection.error().message);
    if (selection->path.empty()) return fail(console, no_config_message(*selection));
    config::LoadOptions options;
    options.role = config::Role::kServer;
    options.path = selection->path;
    options.path_is_default = selection->is_default;
    options.env = env;
    if (auto h = inv.value("hostname")) options.overrides.hostname = *h;
    if (auto c = inv.value("control-address")) options.overrides.control_address = *c;
    config::LoadOutcome outcome = config::load(options);
    if (!outcome.ok()) {
        console.err(config::format_report(config::Role::kServer, selection->path, outcome));
        return kExitFailure;
    }
    const config::ServerConfig& cfg = *outcome.server;
    if (cfg.managed_requested) return fail(console, "managed mode is not supported by this build");
    configure_logging(cfg.log_level, cfg.log_format);
    return server::run_server(cfg);
}

}  // namespace runewarp::cli
