// `runewarp client`: select and validate the config (or a CLI-only start), then run the Client.
#pragma once

#include "cli/command.hh"

namespace runewarp::cli {

int run_client_command(const Invocation& inv, Console& console);

}  // namespace runewarp::cli
