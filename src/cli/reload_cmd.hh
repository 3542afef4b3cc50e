// `runewarp reload`: validate the configuration, then ask the running daemon to apply it and
// report what it answered.
#pragma once

#include "cli/command.hh"

namespace runewarp::cli {

int run_reload(const Invocation& inv, Console& console);

}  // namespace runewarp::cli
