// A scratch directory per test for unit suites that do not link the end-to-end support library:
// made with mkdtemp, removed with everything below it (links are not followed).
#pragma once

#include <ftw.h>
#include <stdlib.h>

#include <cstdio>
#include <string>

namespace runewarp::test {

// A fresh directory /tmp/<prefix>-XXXXXX; empty when mkdtemp fails.
inline std::string make_temp_tree(const std::string& prefix) {
    std::string tmpl = "/tmp/" + prefix + "-XXXXXX";
    if (::mkdtemp(tmpl.data()) == nullptr) return {};
    return tmpl;
}

inline void remove_temp_tree(const std::string& dir) {
    if (dir.empty()) return;
    ::nftw(
        dir.c_str(),
        [](const char* path, const struct stat*, int, struct FTW*) { return std::remove(path); },
        16, FTW_DEPTH | FTW_PHYS);
}

}  // namespace runewarp::test
