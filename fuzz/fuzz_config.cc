// Fuzz target: arbitrary bytes as a config file, validated for both roles; must never crash.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "config/config.hh"
#include "fuzz/fuzz_target.hh"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    using namespace runewarp::config;
    std::string_view text(reinterpret_cast<const char*>(data), size);
    LoadOptions opt;
    // Paths point nowhere useful so existence checks stay cheap and deterministic.
    opt.path = "/nonexistent/runewarp-fuzz/config.ini";
    opt.env.home = "/nonexistent/runewarp-fuzz/home";
    for (Role role : {Role::kServer, Role::kClient}) {
        opt.role = role;
        LoadOutcome out = load_from_string(text, opt);
        (void)format_report(role, opt.path, out);
    }
    (void)sections_present_in(text);
    return 0;
}
