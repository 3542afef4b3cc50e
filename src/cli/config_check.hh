// `runewarp config check`: resolve the config file and validate it for one or both roles.
#pragma once

#include "cli/command.hh"

namespace runewarp::cli {

int run_config_check(const Invocation& inv, Console& console);

}  // namespace runewarp::cli
