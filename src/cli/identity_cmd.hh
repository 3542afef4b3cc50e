// `runewarp client identity init|rotate|show`, and the config selection shared by the
// material commands.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "cli/command.hh"
#include "config/paths.hh"
#include "runewarp/result.hh"

namespace runewarp::cli {

// The config a material command looks at: --config if given (it must be readable), else the
// default config only if it exists. `path` is empty when none is selected.
struct MaterialConfig {
    config::Env env;
    std::string path;
    std::string text;
    config::Roots roots;

    // The last value of `key` in the first section of `section` ("server" or "client"), with
    // surrounding whitespace and quotes removed; nullopt when absent.
    std::optional<std::string> value(std::string_view section, std::string_view key) const;
};

Result<MaterialConfig> select_material_config(const Invocation& inv);

// Rejects flags declared by an ancestor as runtime-only ("`--server-address` may be used only
// with `runewarp client`, not `runewarp client identity show`"): prints it and returns exit 1.
std::optional<int> reject_runtime_flags(const Invocation& inv, Console& console);

int run_client_identity_init(const Invocation& inv, Console& console);
int run_client_identity_rotate(const Invocation& inv, Console& console);
int run_client_identity_show(const Invocation& inv, Console& console);

}  // namespace runewarp::cli
