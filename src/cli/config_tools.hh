// `runewarp config show|init|edit`: the effective configuration with each value's source, a
// commented starter file, and validated editing with atomic replacement.
#pragma once

#include "cli/command.hh"

namespace runewarp::cli {

int run_config_show(const Invocation& inv, Console& console);
int run_config_init(const Invocation& inv, Console& console);
int run_config_edit(const Invocation& inv, Console& console);

}  // namespace runewarp::cli
