// Process resource limits: the soft RLIMIT_NOFILE raised to the hard limit at startup.
#include "sys/limits.hh"

#include <sys/resource.h>

namespace runewarp::sys {

void raise_nofile_limit() noexcept {
    rlimit rl{};
    if (::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        (void)::setrlimit(RLIMIT_NOFILE, &rl);
    }
}

}  // namespace runewarp::sys
