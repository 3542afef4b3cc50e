// Long-running programs under test (runewarp server/client, or any daemon): started with one
// combined log file, ready when their ports accept, waited on through their log lines.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "tests/support/process.hh"

namespace runewarp::test {

// The runewarp binary under test: $RUNEWARP_BIN (set by meson for every test), else build/runewarp.
std::string runewarp_binary();

struct DaemonOptions {
    std::vector<std::string> argv{};  // argv[0] is the program
    std::vector<std::string> env{};   // "NAME=value" over the current environment
    std::string log_path{};           // stdout and stderr, interleaved (required)
    // TCP listeners that must accept before the daemon counts as started ({"127.0.0.1", port}).
    std::vector<std::pair<std::string, std::uint16_t>> ready_ports{};
    std::string ready_log_line{};  // or/and: a log line that must appear
    Millis start_deadline{10000};
};

class Daemon {
public:
    // Starts the program and waits until it is ready; throws std::runtime_error with the log when
    // it exits first or is not ready by the deadline.
    explicit Daemon(DaemonOptions opts);
    Daemon(Daemon&&) = default;
    Daemon& operator=(Daemon&&) = default;

    Process& process() { return proc_; }
    pid_t pid() const { return proc_.pid(); }
    const std::string& log_path() const { return opts_.log_path; }
    std::string log() const;
    bool wait_log(std::string_view needle, Millis deadline) const;
    // RUNTIME_DIRECTORY the daemon got (<log_path>.run, unless opts.env set one): its control
    // socket is control.sock in there.
    std::string runtime_dir() const;

    // SIGTERM (graceful), then SIGKILL after `grace`; returns how it ended.
    ExitStatus stop(Millis grace = Millis{5000}) { return proc_.stop(grace); }

private:
    DaemonOptions opts_;
    Process proc_;
};

}  // namespace runewarp::test
