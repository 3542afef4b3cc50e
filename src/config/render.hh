// INI text made from the key registry: the effective configuration (`config show`) and a
// commented starter file (`config init`).
#pragma once

#include <string>

#include "config/config.hh"
#include "config/paths.hh"

namespace runewarp::config {

// The role's effective configuration as INI: every registry key of every section the model
// recorded (RoleConfig::settings), each followed by its origin as a comment. Values from the
// file, flags or the environment are live lines; defaults and unset keys are commented out, so
// the text validates like the configuration it describes. Paths only, never file contents.
std::string render_effective(Role role, const RoleConfig& cfg);

// A commented starter file for a role: every key of its sections with a short explanation,
// defaults commented out (path defaults resolved below `roots`), placeholders for the values
// that have no default. It parses cleanly; only the material it names may be missing.
std::string render_starter(Role role, const Roots& roots);

}  // namespace runewarp::config
