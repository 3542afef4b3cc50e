#include "sys/limits.hh"

#include <sys/resource.h>

namespace runewarp::sys {

unsigned long raise_nofile_limit() noexcept {
    rlimit rl{};
    if (::getrlimit(RLIMIT_NOFILE, &rl) != 0) return 0;
    if (rl.rlim_cur < rl.rlim_max) {
        rlimit want = rl;
        want.rlim_cur = rl.rlim_max;
        if (::setrlimit(RLIMIT_NOFILE, &want) == 0) rl = want;
    }
    return static_cast<unsigned long>(rl.rlim_cur);
}

}  // namespace runewarp::sys
