// Corpus replay driver: runs LLVMFuzzerTestOneInput over every file of the given files or
// directories without a fuzzing engine, so every corpus is exercised by the normal `make check`.
#include <dirent.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "core/file.hh"
#include "fuzz/fuzz_target.hh"

namespace {

int run_file(const std::string& path) {
    auto bytes = runewarp::core::read_file(path);
    if (!bytes) {
        std::fprintf(stderr, "replay: %s\n", bytes.error().message.c_str());
        return 1;
    }
    // Copy into an exactly sized heap block so ASan catches any read past the input.
    std::vector<uint8_t> exact(bytes->begin(), bytes->end());
    LLVMFuzzerTestOneInput(exact.empty() ? nullptr : exact.data(), exact.size());
    return 0;
}

int run_path(const std::string& path, size_t& count) {
    struct stat st {};
    if (stat(path.c_str(), &st) != 0) {
        std::fprintf(stderr, "replay: %s: %s\n", path.c_str(), std::strerror(errno));
        return 1;
    }
    if (!S_ISDIR(st.st_mode)) {
        ++count;
        return run_file(path);
    }
    DIR* dir = opendir(path.c_str());
    if (dir == nullptr) return 1;
    std::vector<std::string> names;
    while (dirent* e = readdir(dir)) {
        if (e->d_name[0] == '.') continue;
        names.emplace_back(e->d_name);
    }
    closedir(dir);
    int rc = 0;
    for (const auto& n : names) rc |= run_path(path + "/" + n, count);
    return rc;
}

}  // namespace

int main(int argc, char** argv) {
    size_t count = 0;
    int rc = 0;
    for (int i = 1; i < argc; ++i) rc |= run_path(argv[i], count);
    std::printf("replay: %zu inputs\n", count);
    if (count == 0) {
        std::fprintf(stderr, "replay: empty corpus\n");
        return 1;
    }
    return rc;
}
