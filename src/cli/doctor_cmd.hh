// `runewarp doctor server|client` (checks a configuration, its material and what it talks to,
// without serving) and `runewarp lint` (warnings a valid configuration may still deserve).
#pragma once

#include "cli/command.hh"

namespace runewarp::cli {

int run_doctor_server(const Invocation& inv, Console& console);
int run_doctor_client(const Invocation& inv, Console& console);
int run_lint(const Invocation& inv, Console& console);

}  // namespace runewarp::cli
