// systemd integration: named socket-activation fds, sd_notify state changes, watchdog interval.
#include "sys/systemd.hh"

#include <sys/socket.h>
#include <systemd/sd-daemon.h>

#include <cerrno>
#include <cstdlib>
#include <string>

namespace runewarp::sys {

Result<std::vector<ActivatedSocket>> collect_activated_sockets(
    const std::vector<ExpectedSocket>& expected) {
    char** names = nullptr;
    // unset_environment = 1: LISTEN_* must not leak into anything we might spawn.
    int n = sd_listen_fds_with_names(1, &names);
    if (n < 0) return Error::sys(-n, "socket activation: sd_listen_fds_with_names");
    std::vector<ActivatedSocket> out;
    std::string problem;
    for (int i = 0; i < n; ++i) {
        ActivatedSocket s;
        s.fd = SD_LISTEN_FDS_START + i;
        s.name = (names != nullptr && names[i] != nullptr) ? names[i] : "";
        int type = 0;
        socklen_t len = sizeof(type);
        if (getsockopt(s.fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0) {
            if (problem.empty())
                problem = "socket activation: fd named '" + s.name + "' is not a socket";
        }
        s.type = type;
        const ExpectedSocket* match = nullptr;
        for (const auto& e : expected)
            if (e.name == s.name) match = &e;
        if (problem.empty()) {
            if (match == nullptr) {
                problem = "socket activation: unknown socket name '" + s.name + "'";
            } else if (match->type != type) {
                problem = "socket activation: socket '" + s.name +
                          "' has the wrong type (expected " +
                          (match->type == SOCK_STREAM ? "stream" : "datagram") + ")";
            } else {
                for (const auto& prev : out)
                    if (prev.name == s.name)
                        problem = "socket activation: socket name '" + s.name + "' given twice";
            }
        }
        out.push_back(std::move(s));
    }
    if (names != nullptr) {
        for (int i = 0; i < n; ++i) std::free(names[i]);
        std::free(names);
    }
    if (!problem.empty()) return Error::msg(problem);
    return out;
}

namespace {

void notify(const std::string& msg) {
    sd_notify(0, msg.c_str());
}

}  // namespace

void notify_ready(std::string_view status) {
    std::string msg = "READY=1";
    if (!status.empty()) msg += "\nSTATUS=" + std::string(status);
    notify(msg);
}

void notify_status(std::string_view status) {
    notify("STATUS=" + std::string(status));
}

void notify_stopping() {
    notify("STOPPING=1");
}

void notify_reloading() {
    // RELOADING=1 with MONOTONIC_USEC, as systemd >= 253 expects for Type=notify-reload.
    // std::chrono::steady_clock is CLOCK_MONOTONIC on Linux.
    auto usec = std::chrono::duration_cast<std::chrono::microseconds>(
                    std::chrono::steady_clock::now().time_since_epoch())
                    .count();
    sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%lld", static_cast<long long>(usec));
}

void notify_watchdog() {
    notify("WATCHDOG=1");
}

std::chrono::microseconds watchdog_ping_interval() {
    uint64_t usec = 0;
    if (sd_watchdog_enabled(0, &usec) <= 0 || usec == 0) return std::chrono::microseconds{0};
    return std::chrono::microseconds{usec / 2};
}

}  // namespace runewarp::sys
