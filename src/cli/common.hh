// Pieces every runtime and config command shares: raw error output before a logger exists,
// the "no config found" message, and logger set-up from a validated config.
#pragma once

#include <string>
#include <string_view>

#include "cli/command.hh"
#include "config/config.hh"

namespace runewarp::cli {

// "error: <message>" on stderr (errors before the logger exists go raw); exit 1.
int fail(Console& console, std::string_view message);

// Resolution found no file: names the default paths tried.
std::string no_config_message(const config::ConfigSelection& selection);

// The config file `server` and `config check` need: --config, else the first default location
// that exists; finding none is an error naming the paths tried.
Result<config::ConfigSelection> select_config(const Invocation& inv, const config::Env& env);

// Load options for `role` from a selection, without runtime overrides.
config::LoadOptions load_options(config::Role role, const config::ConfigSelection& selection,
                                 const config::Env& env);

// Applies log-level and log-format of a validated config to the process logger.
void configure_logging(config::LogLevel level, config::LogFormat format) noexcept;

}  // namespace runewarp::cli
