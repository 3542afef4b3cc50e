// no_uring_exec: runs a command under a seccomp filter that makes io_uring_setup(2) (and its
// siblings) fail with EPERM, the way the default seccomp profiles of Docker 25+ and containerd
// do. Used to prove that runewarp falls back to its epoll backend and says why.
//
//   no_uring_exec PROGRAM [ARG]...
#include <seccomp.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

int main(int argc, char** argv) {
    if (argc < 2) {
        std::fprintf(stderr, "usage: no_uring_exec PROGRAM [ARG]...\n");
        return 2;
    }
    scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
    if (ctx == nullptr) {
        std::fprintf(stderr, "no_uring_exec: seccomp_init failed\n");
        return 1;
    }
    const int calls[] = {SCMP_SYS(io_uring_setup), SCMP_SYS(io_uring_enter),
                         SCMP_SYS(io_uring_register)};
    for (int nr : calls) {
        int rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), nr, 0);
        if (rc != 0) {
            std::fprintf(stderr, "no_uring_exec: seccomp_rule_add: %s\n", std::strerror(-rc));
            return 1;
        }
    }
    // NO_NEW_PRIVS is set by seccomp_load by default (SCMP_FLTATR_CTL_NNP), so no root is needed.
    int rc = seccomp_load(ctx);
    seccomp_release(ctx);
    if (rc != 0) {
        std::fprintf(stderr, "no_uring_exec: seccomp_load: %s\n", std::strerror(-rc));
        return 1;
    }
    execvp(argv[1], argv + 1);
    std::fprintf(stderr, "no_uring_exec: %s: %s\n", argv[1], std::strerror(errno));
    return 127;
}
