// `runewarp server`: resolve the config, apply the startup rules, then run the Server role.
#include "cli/server_cmd.hh"

#include <string>

#include "cli/common.hh"
#include "obs/log.hh"
#include "preflight/preflight.hh"
#include "server/edge_server.hh"

namespace runewarp::cli {

int run_server_command(const Invocation& inv, Console& console) {
    config::Env env = config::Env::from_process();
    auto selection = select_config(inv, env);
    if (!selection) return fail(console, selection.error().message);
    config::LoadOptions options = load_options(config::Role::kServer, *selection, env);
    if (auto h = inv.value("hostname")) options.overrides.hostname = *h;
    if (auto c = inv.value("control-address")) options.overrides.control_address = *c;
    // The same rules as `config check`, so whatever it accepts starts here.
    auto checked = preflight::check_server(options);
    if (!checked.ok()) {
        console.err(config::format_report(config::Role::kServer, selection->path, checked.report));
        return kExitFailure;
    }
    preflight::ServerStartup& start = *checked.startup;
    configure_logging(start.config.log_level, start.config.log_format);
    if (start.config.acme) {
        // Runtime only: a default state directory is created now (0700), an explicit one must
        // exist; either way a failure stops the startup.
        if (auto r = preflight::prepare_acme_state_dir(*start.config.acme); !r) {
            obs::process_logger().error("server startup failed", {}, r.error().message);
            return kExitFailure;
        }
    }
    return server::run_server(options, std::move(start));
}

}  // namespace runewarp::cli
