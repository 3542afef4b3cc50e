// Process resource limits: RLIMIT_NOFILE raised at startup.
#include "sys/limits.hh"

#include <sys/resource.h>

#include <algorithm>
#include <cstdio>

namespace runewarp::sys {

namespace {

// fs.nr_open bounds any RLIMIT_NOFILE; setrlimit fails with EPERM above it.
std::uint64_t nr_open() noexcept {
    std::uint64_t v = 1048576;
    if (std::FILE* f = std::fopen("/proc/sys/fs/nr_open", "re")) {
        unsigned long long n = 0;
        if (std::fscanf(f, "%llu", &n) == 1 && n > 0) v = n;
        std::fclose(f);
    }
    return v;
}

}  // namespace

std::uint64_t raise_nofile_limit(std::uint64_t wanted) noexcept {
    rlimit rl{};
    if (::getrlimit(RLIMIT_NOFILE, &rl) != 0) return 0;
    if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < wanted) {
        // Only a privileged process may raise the hard limit; EPERM leaves it as it was.
        rlimit up{};
        up.rlim_max = std::min<std::uint64_t>(wanted, nr_open());
        up.rlim_cur = up.rlim_max;
        if (up.rlim_max > rl.rlim_max && ::setrlimit(RLIMIT_NOFILE, &up) == 0) return up.rlim_cur;
    }
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (::setrlimit(RLIMIT_NOFILE, &rl) != 0) (void)::getrlimit(RLIMIT_NOFILE, &rl);
    }
    return rl.rlim_cur;
}

}  // namespace runewarp::sys
