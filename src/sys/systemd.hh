// systemd integration: named socket-activation fds, sd_notify state changes, watchdog interval.
#pragma once

#include <chrono>
#include <string>
#include <string_view>
#include <vector>

#include "runewarp/result.hh"

namespace runewarp::sys {

// One socket handed over by the service manager (LISTEN_FDS / LISTEN_FDNAMES).
struct ActivatedSocket {
    std::string name;  // FileDescriptorName= of the socket unit
    int fd = -1;
    int type = 0;  // SOCK_STREAM or SOCK_DGRAM, read back with SO_TYPE
};

// What a role accepts: the name, the socket type it must have.
struct ExpectedSocket {
    std::string_view name;
    int type;
};

// Collects the activated sockets and checks them against `expected` by name, never by position:
// an unknown name, a name given twice, or a wrong socket type is an error.
// With no socket activation the result is empty. Unsets LISTEN_* so children never inherit them.
Result<std::vector<ActivatedSocket>> collect_activated_sockets(
    const std::vector<ExpectedSocket>& expected);

// sd_notify wrappers; each is a no-op when NOTIFY_SOCKET is unset.
void notify_ready(std::string_view status);
void notify_status(std::string_view status);
void notify_stopping();
void notify_reloading();
void notify_watchdog();

// The interval at which WATCHDOG=1 must be sent (half of WATCHDOG_USEC), or zero when the
// service manager does not expect watchdog pings from this process.
std::chrono::microseconds watchdog_ping_interval();

}  // namespace runewarp::sys
