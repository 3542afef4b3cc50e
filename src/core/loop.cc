// Backend selection: probe io_uring, fall back to epoll with a reason, honour the env override.
#include <cstdlib>
#include <cstring>
#include <string_view>

#include "core/loop.hh"

namespace runewarp::core {

const char* backend_name(Backend b) noexcept {
    return b == Backend::io_uring ? "io_uring" : "epoll";
}

namespace {

Result<BackendChoice> env_choice() {
    const char* v = std::getenv("RUNEWARP_EVENT_BACKEND");
    if (v == nullptr || *v == '\0') return BackendChoice::automatic;
    std::string_view s(v);
    if (s == "io_uring") return BackendChoice::io_uring;
    if (s == "epoll") return BackendChoice::epoll;
    if (s == "auto") return BackendChoice::automatic;
    return Error::msg("RUNEWARP_EVENT_BACKEND: expected io_uring, epoll or auto, got '" +
                      std::string(s) + "'");
}

Result<std::unique_ptr<Loop>> try_uring(const LoopOptions& opts) {
    if (opts.probe_hook != nullptr) {
        if (int err = opts.probe_hook(); err != 0) return Error::sys(err, "io_uring_setup");
    }
    return make_uring_loop(opts.ring_entries);
}

std::string hint_for(const Error& e) {
    if (e.code == EPERM || e.code == EACCES) return " (seccomp or kernel.io_uring_disabled?)";
    if (e.code == ENOSYS) return " (kernel built without io_uring?)";
    return "";
}

}  // namespace

Result<LoopSelection> make_loop(const LoopOptions& opts) {
    BackendChoice choice = opts.choice;
    if (opts.honour_env && choice == BackendChoice::automatic) {
        auto env = env_choice();
        if (!env) return std::move(env).error();
        choice = *env;
    }

    LoopSelection sel;
    if (choice == BackendChoice::epoll) {
        auto l = make_epoll_loop();
        if (!l) return std::move(l).error();
        sel.loop = std::move(*l);
        return sel;
    }
    auto ring = try_uring(opts);
    if (ring) {
        sel.loop = std::move(*ring);
        return sel;
    }
    std::string reason = "io_uring unavailable: " + ring.error().message + hint_for(ring.error());
    if (choice == BackendChoice::io_uring) return Error{ring.error().code, reason};

    auto l = make_epoll_loop();
    if (!l) return std::move(l).error();
    sel.loop = std::move(*l);
    sel.fallback_reason = std::move(reason);
    return sel;
}

}  // namespace runewarp::core
