// The tunnel end to end with the real binary: `runewarp server` with a [tunnel] pinning the
// Client identities, one or more `runewarp client` instances with exclusive CA trust, nginx as the
// TLS backend of the passthrough Service. Shared by the tunnel suites (test_tunnel.cc,
// test_tunnel_impaired.cc, test_terminate.cc, which adds its own Services to the Client).
//
// A Client must reach the Server under its certificate name (tunnel.example.test), so each runs
// in a private mount namespace whose /etc/hosts maps that name to loopback.
#pragma once

#include <criterion/criterion.h>

#include <csignal>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "tests/support/curl.hh"
#include "tests/support/daemon.hh"
#include "tests/support/files.hh"
#include "tests/support/net.hh"
#include "tests/support/nginx.hh"
#include "tests/support/process.hh"

namespace runewarp::test {

inline const std::string kServerName = "tunnel.example.test";
inline const std::string kApp = "app.example.test";
inline const std::string kOther = "other.example.test";  // owned by the Tunnel, no Client Service

inline std::string hp(const std::string& host, std::uint16_t port) {
    return host + ":" + std::to_string(port);
}

inline std::size_t count_of(const std::string& text, const std::string& needle) {
    std::size_t n = 0;
    for (auto pos = text.find(needle); pos != std::string::npos; pos = text.find(needle, pos + 1))
        ++n;
    return n;
}

class Tunnel {
public:
    struct Options {
        bool pin_client = true;             // else the Server pins an unrelated identity
        bool cli_backend = false;           // --server-address/--backend-address overlay
        std::string backend_override = {};  // backend-address instead of nginx
        bool dead_second_address = false;   // a second Server address where nothing listens
        std::string notify_socket = {};     // NOTIFY_SOCKET for the first Client
        bool proxy_v2 = false;              // the Service sends PROXY v2 to nginx's PROXY port
        int clients = 1;                    // Client instances, each with its own pinned identity
        // `workers` of each Client: that many Tunnel connections per Server address (0: no key,
        // one per usable core). 1 by default: most tests count connections, reconnects or their
        // lines; the tests of several Client workers ask for more.
        int client_workers = 1;
        bool start_clients = true;             // else the test calls start_client(i, port) itself
        std::string graceful_shutdown = "0s";  // the Server's graceful-shutdown-duration
        // The tunnel socket comes from systemd-socket-activate (name `tunnel`); the configured
        // tunnel-bind-address is another, unused port.
        bool activated_tunnel = false;
        // server-trust = system: the Client's private mount namespace sees a system bundle
        // (/etc/ssl/certs/ca-certificates.crt) holding only the Server's CA.
        bool system_trust = false;
        std::string server_extra = {};  // more [server] lines, e.g. "tunnel-retry = never\n"
        std::string client_extra = {};  // more [client] lines, e.g. "public-cert-dir = DIR\n"
        // More sections after the Client's [service "app"], e.g. a terminating Service for
        // kOther (not with cli_backend, which writes no [service]).
        std::string services_extra = {};
    };

    explicit Tunnel(Options o) : opts_(o) {
        std::string pinned;
        for (int i = 0; i < opts_.clients; ++i) {
            identities_.push_back(identity_init(identity_name(i)));
            if (!pinned.empty()) pinned += ", ";
            pinned += identities_.back();
        }
        if (!opts_.pin_client) pinned = identity_init("other");
        auto r = run({runewarp_binary(), "server", "cert", "init", "--hostname", kServerName,
                      "--dir", dir_ / "cert"},
                     Millis{30000}, env());
        cr_assert(r.status.success(), "cert init: %s %s", r.out.c_str(), r.err.c_str());
        public_port_ = free_port();
        tunnel_port_ = free_port();
        std::string ini = "log-level = debug\n\n[server]\nhostname = " + kServerName + "\n";
        ini += "cert-dir = " + (dir_ / "cert") + "\n";
        ini += "public-bind-address = " + hp("127.0.0.1", public_port_) + "\n";
        configured_tunnel_port_ = opts_.activated_tunnel ? free_port() : tunnel_port_;
        ini += "tunnel-bind-address = " + hp("127.0.0.1", configured_tunnel_port_) + "\n";
        ini += "graceful-shutdown-duration = " + opts_.graceful_shutdown + "\n";
        ini += opts_.server_extra;
        ini += "\n[tunnel \"app\"]\npublic-hostnames = " + kApp + ", " + kOther +
               "\nclient-identities = " + pinned + "\n";
        write_file(dir_ / "server.ini", ini);
        start_server();
        write_file(dir_ / "hosts", "127.0.0.1 " + kServerName + "\n");
        clients_.resize(static_cast<std::size_t>(opts_.clients));
        if (opts_.start_clients) {
            for (int i = 0; i < opts_.clients; ++i) start_client(i);
        }
    }

    // Starts Client i against the Server's tunnel port, or against `port` on loopback (a relay).
    void start_client(int i, std::uint16_t port = 0) {
        std::string ini_path = write_client_config(i, port);
        std::string cmd = "mount --bind '" + (dir_ / "hosts") + "' /etc/hosts && ";
        if (opts_.system_trust) {
            cmd += "mount --bind '" + (dir_ / "cert/server-ca.crt") +
                   "' /etc/ssl/certs/ca-certificates.crt && ";
        }
        cmd += "exec '" + runewarp_binary() + "' client -c '" + ini_path + "'";
        if (opts_.cli_backend) {
            cmd += " --server-address " + hp(kServerName, port == 0 ? tunnel_port_ : port) +
                   " --backend-address " + backend_address();
        }
        std::vector<std::string> cenv = env();
        if (i == 0 && !opts_.notify_socket.empty()) {
            cenv.push_back("NOTIFY_SOCKET=" + opts_.notify_socket);
            // A ping per second: the test drains the socket only now and then.
            cenv.push_back("WATCHDOG_USEC=2000000");
        }
        std::string log =
            i == 0 ? std::string("client.log") : "client-" + std::to_string(i) + ".log";
        clients_[static_cast<std::size_t>(i)].emplace(DaemonOptions{
            .argv = {"unshare", "-m", "sh", "-c", cmd},
            .env = cenv,
            .log_path = dir_ / log,
            .ready_log_line = "client tunnel connection connecting",
        });
    }

    // Writes Client i's config file (Server at `port`, 0: the tunnel port) and returns its path;
    // start_client() runs it, a test may also run the binary on it itself.
    std::string write_client_config(int i, std::uint16_t port = 0) {
        if (port == 0) port = tunnel_port_;
        std::string cini = "log-level = debug\n\n[client]\n";
        // With the CLI overlay the file's address is wrong on purpose: the flag replaces it.
        if (opts_.cli_backend) {
            cini += "server-address = " + hp("unused.example.test", 9) + "\n";
        } else if (opts_.dead_second_address) {
            dead_port_ = free_port();
            cini += "server-addresses = " + hp(kServerName, port) + ", " +
                    hp(kServerName, dead_port_) + "\n";
        } else {
            cini += "server-address = " + hp(kServerName, port) + "\n";
        }
        if (opts_.system_trust) {
            cini += "server-trust = system\n";
        } else {
            cini +=
                "server-trust = ca-file\nserver-ca-file = " + (dir_ / "cert/server-ca.crt") + "\n";
        }
        cini += "identity-dir = " + (dir_ / identity_name(i)) + "\n";
        if (opts_.client_workers > 0)
            cini += "workers = " + std::to_string(opts_.client_workers) + "\n";
        cini += opts_.client_extra;
        if (!opts_.cli_backend) {
            cini += "\n[service \"app\"]\npublic-hostnames = " + kApp +
                    "\nbackend-address = " + backend_address() + "\n";
            if (opts_.proxy_v2) cini += "proxy-protocol = v2\n";
            cini += opts_.services_extra;
        }
        std::string ini_path = dir_ / ("client-" + std::to_string(i) + ".ini");
        write_file(ini_path, cini);
        return ini_path;
    }

    void start_server() {
        std::vector<std::string> argv = {runewarp_binary(), "server", "-c", dir_ / "server.ini"};
        std::string ready = "server tunnel listener ready";
        if (opts_.activated_tunnel) {
            // The program is executed when the first datagram (the Client's Initial) arrives.
            argv.insert(argv.begin(), {find_program("systemd-socket-activate"), "--datagram", "-l",
                                       hp("127.0.0.1", tunnel_port_), "--fdname=tunnel"});
            ready = "Listening on 127.0.0.1:" + std::to_string(tunnel_port_);
        }
        server_.emplace(DaemonOptions{
            .argv = argv,
            .env = env(),
            .log_path = dir_ / ("server-" + std::to_string(server_starts_++) + ".log"),
            .ready_log_line = ready,
        });
    }

    // Replaces the extra [client] lines for Clients started (or configs written) from now on:
    // for settings known only once the Server runs (an ACME directory that validates through
    // the Server's public port).
    void set_client_extra(std::string extra) { opts_.client_extra = std::move(extra); }
    std::uint16_t public_port() const { return public_port_; }
    std::uint16_t tunnel_port() const { return tunnel_port_; }
    std::uint16_t configured_tunnel_port() const { return configured_tunnel_port_; }
    std::uint16_t dead_port() const { return dead_port_; }
    std::string identity_dir(int i = 0) const { return dir_ / identity_name(i); }
    const std::string& identity(int i = 0) const {
        return identities_[static_cast<std::size_t>(i)];
    }
    HttpsTarget target() const { return {kApp, public_port_, "127.0.0.1", backend_.ca_file()}; }
    NginxFixture& backend() { return backend_; }
    Daemon& server() { return *server_; }
    Daemon& client(int i = 0) { return *clients_[static_cast<std::size_t>(i)]; }
    bool client_running(int i) const { return clients_[static_cast<std::size_t>(i)].has_value(); }
    void stop_server() {
        server_->stop();
        server_.reset();
    }
    // SIGKILL to Client i (its whole process group): no close frame reaches the Server.
    void kill_client(int i) {
        auto& c = clients_[static_cast<std::size_t>(i)];
        c->process().signal(SIGKILL, true);
        (void)c->process().wait_exit(Millis{10000});
        c.reset();
    }
    // Waits until Client i's log holds `needle` at least `n` times.
    bool wait_client(const std::string& needle, std::size_t n = 1, Millis d = Millis{30000},
                     int i = 0) {
        return wait_until([&] { return count_of(client(i).log(), needle) >= n; }, d);
    }
    bool wait_server(const std::string& needle, std::size_t n = 1, Millis d = Millis{30000}) {
        return wait_until([&] { return count_of(server_->log(), needle) >= n; }, d);
    }
    // Every Client is ready and the Server counted each connection into the pool.
    void wait_pool_ready() {
        for (int i = 0; i < opts_.clients; ++i)
            cr_assert(wait_client("client ready", 1, Millis{30000}, i), "%s",
                      client_log(i).c_str());
        const int per_client = opts_.client_workers > 0 ? opts_.client_workers : 1;
        cr_assert(wait_server("server tunnel connection accepted",
                              static_cast<std::size_t>(opts_.clients * per_client)),
                  "%s", server_->log().c_str());
    }
    std::string client_log(int i = 0) { return client(i).log(); }
    // Stops Client i (SIGTERM): it must exit 0 without a sanitizer report.
    void stop_client_cleanly(int i = 0) {
        ExitStatus st = client(i).stop();
        std::string log = client(i).log();
        cr_assert(st.success(), "client exit: %s\n%s", st.describe().c_str(), log.c_str());
        cr_assert_eq(log.find("Sanitizer"), std::string::npos, "%s", log.c_str());
        cr_assert_eq(log.find("runtime error"), std::string::npos, "%s", log.c_str());
        cr_assert_neq(log.find("client instance graceful shutdown started"), std::string::npos);
    }
    std::string out(const std::string& name) const { return dir_ / name; }

private:
    static std::string identity_name(int i) {
        return i == 0 ? std::string("identity") : "identity-" + std::to_string(i);
    }
    std::vector<std::string> env() const {
        return {"XDG_CONFIG_HOME=" + (dir_ / "xdg-config"), "XDG_DATA_HOME=" + (dir_ / "xdg-data"),
                "XDG_STATE_HOME=" + (dir_ / "xdg-state"), "RUNEWARP_SERVER_HOSTNAME="};
    }
    std::string backend_address() const {
        if (!opts_.backend_override.empty()) return opts_.backend_override;
        return hp("127.0.0.1", opts_.proxy_v2 ? backend_.proxy_port() : backend_.port());
    }
    std::string identity_init(const std::string& name) {
        std::string d = dir_ / name;
        auto r = run({runewarp_binary(), "client", "identity", "init", "--dir", d}, Millis{30000},
                     env());
        cr_assert(r.status.success(), "identity init: %s %s", r.out.c_str(), r.err.c_str());
        std::string id = read_file(d + "/client-identity.txt");
        while (!id.empty() && (id.back() == '\n' || id.back() == ' ')) id.pop_back();
        return id;
    }

    Options opts_;
    TempDir dir_;
    NginxFixture backend_{NginxOptions{.hostnames = {kApp}, .proxy_protocol = opts_.proxy_v2}};
    std::vector<std::string> identities_;
    std::uint16_t public_port_ = 0;
    std::uint16_t tunnel_port_ = 0;
    std::uint16_t configured_tunnel_port_ = 0;
    std::uint16_t dead_port_ = 0;
    int server_starts_ = 0;
    std::optional<Daemon> server_;
    std::vector<std::optional<Daemon>> clients_;
};

}  // namespace runewarp::test
