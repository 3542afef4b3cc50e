// Entry point of the command line: builds the command table and dispatches argv to a handler.
#pragma once

#include "cli/command.hh"

namespace runewarp::cli {

// First line of the top-level help.
inline constexpr std::string_view kBanner = "Runewarp: Public ingress. Private by design.";

// The full command tree of this build.
const CommandSpec& command_tree();

// Parses argv, runs the selected command, returns the process exit code (0, 1 or 2).
int run(int argc, char** argv);
int run(const std::vector<std::string_view>& args, Console& console);

}  // namespace runewarp::cli
