// Long-running programs under test: one combined log, readiness by ports and log lines.
#include "tests/support/daemon.hh"

#include <cstdlib>
#include <stdexcept>

#include "tests/support/files.hh"
#include "tests/support/net.hh"

namespace runewarp::test {

std::string runewarp_binary() {
    const char* b = std::getenv("RUNEWARP_BIN");
    return b && *b ? std::string(b) : std::string("build/runewarp");
}

std::string Daemon::runtime_dir() const {
    return opts_.log_path + ".run";
}

Daemon::Daemon(DaemonOptions opts) : opts_(std::move(opts)) {
    if (opts_.log_path.empty()) throw std::runtime_error("Daemon: log_path is required");
    SpawnOptions so;
    so.argv = opts_.argv;
    so.env = opts_.env;
    // Every daemon gets a runtime directory of its own, as systemd's RuntimeDirectory= gives
    // each unit: daemons of parallel tests never share a control socket.
    bool has_runtime_dir = false;
    for (const auto& e : so.env) has_runtime_dir |= e.rfind("RUNTIME_DIRECTORY=", 0) == 0;
    if (!has_runtime_dir) so.env.push_back("RUNTIME_DIRECTORY=" + runtime_dir());
    so.out = Output::file(opts_.log_path);
    so.err = Output::same_as_stdout();
    proc_ = Process::spawn(std::move(so));

    auto ready = [&] {
        if (!proc_.running()) return true;  // stop waiting; reported below
        for (const auto& [addr, port] : opts_.ready_ports) {
            if (!tcp_accepting(addr, port)) return false;
        }
        return opts_.ready_log_line.empty() ||
               log().find(opts_.ready_log_line) != std::string::npos;
    };
    wait_until(ready, opts_.start_deadline, Millis{10});
    if (!proc_.running()) {
        throw std::runtime_error(opts_.argv.front() + " exited during start-up (" +
                                 proc_.status()->describe() + "):\n" + log());
    }
    if (!ready()) {
        throw std::runtime_error(opts_.argv.front() + " not ready after " +
                                 std::to_string(opts_.start_deadline.count()) + " ms:\n" + log());
    }
}

std::string Daemon::log() const {
    return file_exists(opts_.log_path) ? read_file(opts_.log_path) : std::string();
}

bool Daemon::wait_log(std::string_view needle, Millis deadline) const {
    return wait_file_contains(opts_.log_path, needle, deadline);
}

}  // namespace runewarp::test
