// Pieces every runtime and config command shares: raw error output before a logger exists,
// the "no config found" message, and logger set-up from a validated config.
#include "cli/common.hh"

#include "obs/log.hh"
#include "sys/role_reload.hh"

namespace runewarp::cli {

int fail(Console& console, std::string_view message) {
    std::string line = "error: ";
    line.append(message);
    line.push_back('\n');
    console.err(line);
    return kExitFailure;
}

std::string no_config_message(const config::ConfigSelection& selection) {
    std::string msg = "no config file found; tried ";
    for (std::size_t i = 0; i < selection.tried.size(); ++i) {
        if (i > 0) msg.append(", ");
        msg.append(selection.tried[i]);
    }
    if (selection.tried.empty()) msg.append("nothing");
    msg.append(" (use --config PATH)");
    return msg;
}

Result<config::ConfigSelection> select_config(const Invocation& inv, const config::Env& env) {
    auto selection = config::resolve_config_path(inv.value("config"), env);
    if (!selection) return std::move(selection).error();
    if (selection->path.empty()) return Error::msg(no_config_message(*selection));
    return selection;
}

config::LoadOptions load_options(config::Role role, const config::ConfigSelection& selection,
                                 const config::Env& env) {
    config::LoadOptions options;
    options.role = role;
    options.path = selection.path;
    options.path_is_default = selection.is_default;
    options.env = env;
    return options;
}

void configure_logging(config::LogLevel level, config::LogFormat format) noexcept {
    sys::configure_logging(level, format);
}

}  // namespace runewarp::cli
