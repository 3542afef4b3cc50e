// `runewarp server`: resolve and validate the config, then run the Server role.
#pragma once

#include "cli/command.hh"

namespace runewarp::cli {

int run_server_command(const Invocation& inv, Console& console);

}  // namespace runewarp::cli
