// Shared helpers of the Server edge end-to-end suites (test_edge.cc, test_systemd.cc,
// test_floods.cc): a runewarp Server with routes written to a temp INI and started as a Daemon.
#pragma once

#include <criterion/criterion.h>
#include <sys/resource.h>

#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

#include "tests/support/daemon.hh"
#include "tests/support/files.hh"
#include "tests/support/net.hh"
#include "tests/support/process.hh"

namespace runewarp::test::edge {

inline constexpr const char* kServerHostname = "edge.example.test";

struct Route {
    std::string label{};
    std::vector<std::string> hostnames{};
    std::string upstream{};  // "127.0.0.1:443" / "[::1]:443"
    bool proxy_v2 = false;
};

struct ServerSpec {
    std::string public_bind{};            // e.g. "127.0.0.1:20001"
    std::string readiness_bind{};         // empty: none
    std::string graceful = "30s";         // graceful-shutdown-duration
    std::string visitor_proxy_trusted{};  // non-empty: visitor-proxy-protocol = v2 with these CIDRs
    std::vector<Route> routes{};
    std::vector<std::string> launcher{};  // argv prefix, e.g. {"prlimit", "--nofile=64:64", "--"}
    std::vector<std::string> env{};       // "NAME=value" for the daemon, over the environment
};

inline std::string server_ini(const ServerSpec& s) {
    std::string c = "log-level = debug\n\n[server]\n";
    c += std::string("hostname = ") + kServerHostname + "\n";
    c += "public-bind-address = " + s.public_bind + "\n";
    if (!s.readiness_bind.empty()) c += "readiness-bind-address = " + s.readiness_bind + "\n";
    c += "graceful-shutdown-duration = " + s.graceful + "\n";
    if (!s.visitor_proxy_trusted.empty()) {
        c += "visitor-proxy-protocol = v2\n";
        c += "visitor-proxy-trusted-networks = " + s.visitor_proxy_trusted + "\n";
    }
    for (const Route& r : s.routes) {
        c += "\n[route \"" + r.label + "\"]\npublic-hostnames = ";
        for (std::size_t i = 0; i < r.hostnames.size(); ++i) c += (i ? ", " : "") + r.hostnames[i];
        c += "\nupstream-address = " + r.upstream + "\n";
        if (r.proxy_v2) c += "proxy-protocol = v2\n";
    }
    return c;
}

// Raises the soft fd limit to the hard one (children inherit it).
inline void raise_fd_limit() {
    rlimit rl{};
    if (::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        ::setrlimit(RLIMIT_NOFILE, &rl);
    }
}

// Counts the occurrences of needle in text.
inline std::size_t count_of(const std::string& text, const std::string& needle) {
    std::size_t n = 0;
    for (std::size_t p = text.find(needle); p != std::string::npos; p = text.find(needle, p + 1))
        ++n;
    return n;
}

// A runewarp Server with its config in a private temp dir.
class Edge {
public:
    explicit Edge(ServerSpec spec, Family family = Family::kV4) : spec_(std::move(spec)) {
        if (spec_.public_bind.empty()) {
            port_ = free_port(family);
            spec_.public_bind = host_port(loopback(family), port_);
        } else {
            port_ = static_cast<std::uint16_t>(
                std::stoi(spec_.public_bind.substr(spec_.public_bind.rfind(':') + 1)));
        }
        write_file(dir_ / "server.ini", server_ini(spec_));
        std::vector<std::string> argv = spec_.launcher;
        for (std::string a :
             {runewarp_binary(), std::string("server"), std::string("-c"), dir_ / "server.ini"})
            argv.push_back(std::move(a));
        daemon_.emplace(DaemonOptions{.argv = argv,
                                      .env = spec_.env,
                                      .log_path = dir_ / "runewarp.log",
                                      .ready_log_line = spec_.readiness_bind.empty()
                                                            ? "server public listener ready"
                                                            : "server readiness gained"});
        // The backend matrix is only meaningful when the requested backend is the one running.
        if (const char* want = std::getenv("RUNEWARP_EVENT_BACKEND"))
            cr_assert(daemon_->wait_log(std::string("backend=") + want, Millis{5000}), "%s",
                      log().c_str());
    }
    std::uint16_t port() const { return port_; }
    Daemon& daemon() { return *daemon_; }
    std::string log() const { return daemon_->log(); }
    bool wait_log(const std::string& needle, Millis d = Millis{5000}) const {
        return daemon_->wait_log(needle, d);
    }
    const std::string& dir() const { return dir_.path(); }

private:
    ServerSpec spec_;
    TempDir dir_{"runewarp-edge"};
    std::uint16_t port_ = 0;
    std::optional<Daemon> daemon_;
};

}  // namespace runewarp::test::edge
