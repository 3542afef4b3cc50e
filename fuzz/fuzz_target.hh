// What every fuzz target shares: the libFuzzer entry point's declaration and a property check
// that aborts, so libFuzzer and the corpus replay both report a broken property as a crash.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace runewarp::fuzz {

inline void check(bool ok) {
    if (!ok) std::abort();
}

}  // namespace runewarp::fuzz
