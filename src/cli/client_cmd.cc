// `runewarp client`: select and validate the config (or a CLI-only start), then run the Client.
#include "cli/client_cmd.hh"

#include <string>

#include "cli/common.hh"
#include "client/client.hh"
#include "config/config.hh"
#include "config/paths.hh"
#include "obs/log.hh"

namespace runewarp::cli {

int run_client_command(const Invocation& inv, Console& console) {
    config::Env env = config::Env::from_process();
    // Spec 3.5: --config (a missing file is fatal), else the default path if the file exists,
    // else a CLI-only start.
    auto selection = config::resolve_config_path(inv.value("config"), env);
    // Without --config an unresolvable default location only means: no file, CLI-only.
    if (!selection && inv.value("config")) return fail(console, selection.error().message);
    config::ConfigSelection chosen;
    if (selection) chosen = std::move(*selection);
    config::LoadOptions options;
    options.role = config::Role::kClient;
    options.path = chosen.path;
    options.path_is_default = chosen.is_default;
    options.env = env;
    options.overrides.server_addresses = inv.values("server-address");
    if (auto b = inv.value("backend-address")) options.overrides.backend_address = *b;
    if (auto c = inv.value("control-address")) options.overrides.control_address = *c;
    config::LoadOutcome outcome = config::load(options);
    if (!outcome.ok()) {
        console.err(config::format_report(config::Role::kClient, chosen.path, outcome));
        return kExitFailure;
    }
    const config::ClientConfig& cfg = *outcome.client;
    if (cfg.managed_requested) return fail(console, "managed mode is not supported by this build");
    if (auto s = client::check_supported(cfg); !s) return fail(console, s.error().message);
    configure_logging(cfg.log_level, cfg.log_format);
    return client::run_client(cfg);
}

}  // namespace runewarp::cli
