// `runewarp server`: resolve and validate the config, then run the Server role.
#include "cli/server_cmd.hh"

#include <string>

#include "config/config.hh"
#include "obs/log.hh"
#include "server/edge_server.hh"

namespace runewarp::cli {

namespace {

int fail(Console& console, std::string_view message) {
    std::string line = "error: ";
    line.append(message);
    line.push_back('\n');
    console.err(line);
    return kExitFailure;
}

obs::Level level_of(config::LogLevel l) noexcept {
    switch (l) {
        case config::LogLevel::kOff:
            return obs::Level::kOff;
        case config::LogLevel::kError:
            return obs::Level::kError;
        case config::LogLevel::kWarn:
            return obs::Level::kWarn;
        case config::LogLevel::kInfo:
            return obs::Level::kInfo;
        case config::LogLevel::kDebug:
        case config::LogLevel::kTrace:
            return obs::Level::kDebug;
    }
    return obs::Level::kInfo;
}

}  // namespace

int run_server_command(const Invocation& inv, Console& console) {
    config::Env env = config::Env::from_process();
    auto selection = config::resolve_config_path(inv.value("config"), env);
    if (!selection) return fail(console, selection.error().message);
    if (selection->path.empty()) {
        std::string msg = "no config file found; tried ";
        for (std::size_t i = 0; i < selection->tried.size(); ++i) {
            if (i > 0) msg.append(", ");
            msg.append(selection->tried[i]);
        }
        if (selection->tried.empty()) msg.append("nothing");
        msg.append(" (use --config PATH)");
        return fail(console, msg);
    }
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
    obs::configure_process_logger(
        level_of(cfg.log_level),
        cfg.log_format == config::LogFormat::kJson ? obs::Format::kJson : obs::Format::kText);
    return server::run_server(cfg);
}

}  // namespace runewarp::cli
