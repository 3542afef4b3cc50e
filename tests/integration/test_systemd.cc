// The Server under a service manager (spec 5.14, 12.2): socket activation by name (public and
// metrics), sd_notify
// READY/STOPPING/WATCHDOG, and the epoll fallback when a seccomp filter blocks io_uring.
#include <criterion/criterion.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "tests/integration/edge_support.hh"
#include "tests/support/daemon.hh"
#include "tests/support/files.hh"
#include "tests/support/net.hh"
#include "tests/support/nginx.hh"
#include "tests/support/process.hh"
#include "tests/support/tls.hh"

using namespace runewarp::test;
using namespace runewarp::test::edge;

namespace {

const std::string kApp = "app.example.test";

// A config whose public-bind-address is a port nobody listens on (activation must win).
std::string write_config(const TempDir& dir, const NginxFixture& n, std::uint16_t public_port) {
    ServerSpec s{
        .public_bind = host_port("127.0.0.1", public_port),
        .routes = {
            {.label = "app", .hostnames = {kApp}, .upstream = host_port(n.address(), n.port())}}};
    const std::string path = dir / "server.ini";
    write_file(path, server_ini(s));
    return path;
}

std::string socket_activate() {
    const std::string p = find_program("systemd-socket-activate");
    cr_assert_not(p.empty(), "systemd-socket-activate is not installed");
    return p;
}

// A NOTIFY_SOCKET: a unix datagram socket collecting sd_notify messages.
class NotifySocket {
public:
    explicit NotifySocket(const std::string& path) : path_(path) {
        int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        sockaddr_un a{};
        a.sun_family = AF_UNIX;
        std::strncpy(a.sun_path, path.c_str(), sizeof a.sun_path - 1);
        if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0)
            throw std::runtime_error("bind " + path + ": " + std::strerror(errno));
        fd_ = Fd(fd);
    }
    const std::string& path() const { return path_; }
    // Reads every datagram that arrives until one contains needle or the deadline passes.
    bool wait_for(const std::string& needle, Millis deadline) {
        return wait_until(
            [&] {
                drain_();
                return count(needle) > 0;
            },
            deadline);
    }
    std::size_t count(const std::string& needle) const {
        std::size_t n = 0;
        for (const auto& m : messages_)
            if (m.find(needle) != std::string::npos) ++n;
        return n;
    }
    // Index of the first message at or after `from` containing needle, or npos.
    std::size_t find(const std::string& needle, std::size_t from = 0) const {
        for (std::size_t i = from; i < messages_.size(); ++i)
            if (messages_[i].find(needle) != std::string::npos) return i;
        return std::string::npos;
    }
    std::string all() const {
        std::string s;
        for (const auto& m : messages_) s += "[" + m + "]";
        return s;
    }

private:
    void drain_() {
        char buf[4096];
        for (;;) {
            ssize_t n = ::recv(fd_.get(), buf, sizeof buf, MSG_DONTWAIT);
            if (n <= 0) return;
            messages_.emplace_back(buf, static_cast<std::size_t>(n));
        }
    }
    std::string path_;
    Fd fd_;
    std::vector<std::string> messages_;
};

}  // namespace

TestSuite(systemd, .timeout = 60);

Test(systemd, socket_activated_public_listener_serves_and_the_configured_address_is_ignored) {
    NginxFixture nginx({.name = "alpha", .hostnames = {kApp}});
    TempDir dir;
    const std::uint16_t configured = free_port();
    const std::uint16_t activated = free_port();
    const std::string ini = write_config(dir, nginx, configured);
    // systemd-socket-activate execs the program when the first connection arrives: the
    // readiness probe on the activated port is that connection.
    Daemon d({.argv = {socket_activate(), "-l", host_port("127.0.0.1", activated),
                       "--fdname=public", runewarp_binary(), "server", "-c", ini},
              .log_path = dir / "runewarp.log",
              .ready_ports = {{"127.0.0.1", activated}},
              .ready_log_line = "server public listener ready"});
    cr_assert(d.wait_log("bind-address=127.0.0.1:" + std::to_string(activated), Millis{5000}), "%s",
              d.log().c_str());
    HttpResponse r =
        https_get_over(tcp_connect("127.0.0.1", activated), kApp, nginx.ca_file(), "/name");
    cr_assert(r.ok, "%s\n%s", r.error.c_str(), d.log().c_str());
    cr_assert_eq(r.body, "alpha app.example.test\n");
    cr_assert_not(tcp_accepting("127.0.0.1", configured), "the configured address was bound");
    cr_assert_neq(d.log().find("server public listener socket-activated"), std::string::npos,
                  "the differing address is a warning: %s", d.log().c_str());
    ExitStatus st = d.stop(Millis{10000});
    cr_assert(st.success(), "%s", st.describe().c_str());
}

// Two named sockets from the service manager: `public` serves Visitors and `metrics` answers
// /metrics, while the configured metrics address stays unbound.
Test(systemd, socket_activated_metrics_listener_answers_and_the_configured_address_is_ignored) {
    NginxFixture nginx({.name = "alpha", .hostnames = {kApp}});
    TempDir dir;
    const std::uint16_t activated = free_port();
    const std::uint16_t metrics = free_port();
    const std::uint16_t configured_metrics = free_port();
    const std::string ini = write_config(dir, nginx, free_port());
    write_file(ini, read_file(ini) + "\n[metrics]\nprometheus-bind-address = " +
                        host_port("127.0.0.1", configured_metrics) + "\n");
    Daemon d({.argv = {socket_activate(), "-l", host_port("127.0.0.1", activated), "-l",
                       host_port("127.0.0.1", metrics), "--fdname=public:metrics",
                       runewarp_binary(), "server", "-c", ini},
              .log_path = dir / "runewarp.log",
              .ready_ports = {{"127.0.0.1", activated}},
              .ready_log_line = "server metrics listener ready"});
    cr_assert(d.wait_log("server metrics listener socket-activated", Millis{5000}), "%s",
              d.log().c_str());
    RawConnection c("127.0.0.1", metrics);
    c.send("GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    PeerReaction r = c.wait_closed(Millis{10000});
    cr_assert(r.received.starts_with("HTTP/1.1 200"), "%s", r.received.substr(0, 200).c_str());
    cr_assert_neq(r.received.find("runewarp_build_info{"), std::string::npos);
    cr_assert_not(tcp_accepting("127.0.0.1", configured_metrics),
                  "the configured metrics address was bound");
    ExitStatus st = d.stop(Millis{10000});
    cr_assert(st.success(), "%s", st.describe().c_str());
}

Test(systemd, unknown_activated_fd_name_is_fatal) {
    NginxFixture nginx({.hostnames = {kApp}});
    TempDir dir;
    const std::string ini = write_config(dir, nginx, free_port());
    const std::uint16_t port = free_port();
    Process p =
        Process::spawn({.argv = {socket_activate(), "-l", host_port("127.0.0.1", port),
                                 "--fdname=bogus-name", runewarp_binary(), "server", "-c", ini},
                        .out = Output::file(dir / "out.log"),
                        .err = Output::same_as_stdout()});
    // The first connection makes systemd-socket-activate exec the program.
    cr_assert(wait_tcp_accepting("127.0.0.1", port, Millis{5000}));
    auto st = p.wait_exit(Millis{10000});
    cr_assert(st.has_value(), "the daemon kept running with an unknown fd name");
    cr_assert(st->exited);
    cr_assert_eq(st->code, 1, "%s", st->describe().c_str());
    const std::string out = read_file(dir / "out.log");
    cr_assert_neq(out.find("bogus-name"), std::string::npos, "%s", out.c_str());
}

Test(systemd, ready_stopping_and_watchdog_notifications) {
    NginxFixture nginx({.name = "alpha", .hostnames = {kApp}});
    TempDir dir;
    const std::uint16_t port = free_port();
    const std::string ini = write_config(dir, nginx, port);
    NotifySocket notify(dir / "notify.sock");
    Process p = Process::spawn({.argv = {"sh", "-c", "WATCHDOG_PID=$$ exec \"$0\" \"$@\"",
                                         runewarp_binary(), "server", "-c", ini},
                                .env = {"NOTIFY_SOCKET=" + notify.path(), "WATCHDOG_USEC=200000"},
                                .out = Output::file(dir / "runewarp.log"),
                                .err = Output::same_as_stdout()});
    cr_assert(notify.wait_for("READY=1", Millis{10000}), "no READY=1: %s\n%s", notify.all().c_str(),
              read_file(dir / "runewarp.log").c_str());
    // Listeners work at the moment READY arrives.
    HttpResponse r = https_get_over(tcp_connect("127.0.0.1", port), kApp, nginx.ca_file(), "/name");
    cr_assert(r.ok, "%s", r.error.c_str());
    cr_assert_eq(r.body, "alpha app.example.test\n");

    cr_assert(wait_until(
                  [&] {
                      notify.wait_for("WATCHDOG=1", Millis{0});
                      return notify.count("WATCHDOG=1") >= 4;
                  },
                  Millis{5000}),
              "watchdog pings: %s", notify.all().c_str());
    cr_assert_eq(notify.count("STOPPING=1"), 0u);

    cr_assert(p.signal(SIGTERM));
    cr_assert(notify.wait_for("STOPPING=1", Millis{5000}), "%s", notify.all().c_str());
    auto st = p.wait_exit(Millis{10000});
    cr_assert(st && st->success());
}

// Reload under a service manager (spec 10.1, systemd 252 has no Type=notify-reload): RELOADING=1
// with MONOTONIC_USEC before the reload, READY=1 after it, for an applied reload and a refused
// one alike; `runewarp reload` reports each outcome through its exit code.
Test(systemd, reload_sends_reloading_then_ready) {
    NginxFixture nginx({.name = "alpha", .hostnames = {kApp}});
    TempDir dir;
    const std::uint16_t port = free_port();
    const std::string ini = write_config(dir, nginx, port);
    NotifySocket notify(dir / "notify.sock");
    const std::string runtime = "RUNTIME_DIRECTORY=" + (dir / "run");
    Process p = Process::spawn({.argv = {runewarp_binary(), "server", "-c", ini},
                                .env = {"NOTIFY_SOCKET=" + notify.path(), runtime},
                                .out = Output::file(dir / "runewarp.log"),
                                .err = Output::same_as_stdout()});
    cr_assert(notify.wait_for("READY=1", Millis{10000}), "no READY=1: %s\n%s", notify.all().c_str(),
              read_file(dir / "runewarp.log").c_str());
    const std::size_t first_ready = notify.find("READY=1");

    RunResult ok =
        run({runewarp_binary(), "reload", "--role", "server", "-c", ini}, Millis{30000}, {runtime});
    cr_assert(ok.status.success(), "%s%s\n%s", ok.out.c_str(), ok.err.c_str(),
              read_file(dir / "runewarp.log").c_str());
    cr_assert_eq(ok.out.rfind("reloaded: generation 2", 0), 0u, "%s", ok.out.c_str());
    // The daemon answers after READY=1 went out, so both are there now.
    cr_assert(notify.wait_for("RELOADING=1", Millis{5000}), "%s", notify.all().c_str());
    const std::size_t reloading = notify.find("RELOADING=1", first_ready + 1);
    cr_assert_neq(reloading, std::string::npos, "%s", notify.all().c_str());
    cr_assert(notify.wait_for("MONOTONIC_USEC=", Millis{0}), "%s", notify.all().c_str());
    cr_assert(wait_until(
                  [&] {
                      notify.wait_for("READY=1", Millis{0});
                      return notify.find("READY=1", reloading + 1) != std::string::npos;
                  },
                  Millis{5000}),
              "no READY=1 after RELOADING=1: %s", notify.all().c_str());

    // A refused reload: the same pair, and the command fails with the problems.
    write_file(ini, read_file(ini) + "this is not ini\n");
    RunResult bad =
        run({runewarp_binary(), "reload", "--role", "server", "-c", ini}, Millis{30000}, {runtime});
    cr_assert(bad.status.exited && bad.status.code == 1, "%s", bad.status.describe().c_str());
    cr_assert_neq(bad.err.find("syntax error"), std::string::npos, "%s", bad.err.c_str());
    // Broken on disk is caught before the daemon is asked; SIGHUP makes the daemon find it.
    cr_assert(p.signal(SIGHUP));
    cr_assert(wait_until(
                  [&] {
                      notify.wait_for("RELOADING=1", Millis{0});
                      return notify.find("RELOADING=1", reloading + 1) != std::string::npos;
                  },
                  Millis{5000}),
              "%s", notify.all().c_str());
    const std::size_t second = notify.find("RELOADING=1", reloading + 1);
    cr_assert(wait_until(
                  [&] {
                      notify.wait_for("READY=1", Millis{0});
                      return notify.find("READY=1", second + 1) != std::string::npos;
                  },
                  Millis{5000}),
              "%s", notify.all().c_str());
    const std::string log = read_file(dir / "runewarp.log");
    cr_assert_neq(log.find("config reloaded: generation=2"), std::string::npos, "%s", log.c_str());
    cr_assert_neq(log.find("config reload failed"), std::string::npos, "%s", log.c_str());
    // Still serving on the configuration it had.
    HttpResponse r = https_get_over(tcp_connect("127.0.0.1", port), kApp, nginx.ca_file(), "/name");
    cr_assert(r.ok, "%s", r.error.c_str());
    cr_assert(p.signal(SIGTERM));
    auto st = p.wait_exit(Millis{10000});
    cr_assert(st && st->success());
}

Test(systemd, watchdog_for_another_pid_is_not_pinged) {
    NginxFixture nginx({.hostnames = {kApp}});
    TempDir dir;
    const std::string ini = write_config(dir, nginx, free_port());
    NotifySocket notify(dir / "notify.sock");
    Process p = Process::spawn(
        {.argv = {runewarp_binary(), "server", "-c", ini},
         .env = {"NOTIFY_SOCKET=" + notify.path(), "WATCHDOG_USEC=100000", "WATCHDOG_PID=1"},
         .out = Output::file(dir / "runewarp.log"),
         .err = Output::same_as_stdout()});
    cr_assert(notify.wait_for("READY=1", Millis{10000}));
    // A watchdog meant for another process: READY arrives, pings never do (ten intervals of the
    // would-be watchdog are observed).
    cr_assert_not(notify.wait_for("WATCHDOG=1", Millis{1000}), "%s", notify.all().c_str());
    cr_assert(p.signal(SIGTERM));
    cr_assert(notify.wait_for("STOPPING=1", Millis{5000}));
    auto st = p.wait_exit(Millis{10000});
    cr_assert(st && st->success());
}

Test(systemd, epoll_fallback_when_seccomp_blocks_io_uring) {
    const char* wrapper = std::getenv("NO_URING_EXEC");
    cr_assert(wrapper != nullptr && *wrapper, "NO_URING_EXEC is not set");
    NginxFixture nginx({.name = "alpha", .hostnames = {kApp}});
    TempDir dir;
    const std::uint16_t port = free_port();
    const std::string ini = write_config(dir, nginx, port);
    Daemon d({.argv = {wrapper, runewarp_binary(), "server", "-c", ini},
              .log_path = dir / "runewarp.log",
              .ready_log_line = "server public listener ready"});
    const std::string log = d.log();
    const auto fb = log.find("server event backend fallback");
    cr_assert_neq(fb, std::string::npos, "%s", log.c_str());
    const std::string line = log.substr(fb, log.find('\n', fb) - fb);
    cr_assert_neq(line.find("io_uring unavailable"), std::string::npos, "%s", line.c_str());
    cr_assert_neq(line.find("Operation not permitted"), std::string::npos, "%s", line.c_str());
    cr_assert_neq(log.find("server event backend: backend=epoll"), std::string::npos, "%s",
                  log.c_str());
    HttpResponse r = https_get_over(tcp_connect("127.0.0.1", port), kApp, nginx.ca_file(), "/name");
    cr_assert(r.ok, "%s\n%s", r.error.c_str(), d.log().c_str());
    cr_assert_eq(r.body, "alpha app.example.test\n");
    ExitStatus st = d.stop(Millis{10000});
    cr_assert(st.success(), "%s", st.describe().c_str());
}
