// `runewarp reload`: the `config check` rules first (a broken file never reaches the daemon),
// then one request over the role's control socket; the daemon's answer decides the exit code,
// so `systemctl reload` fails visibly when the daemon refused the new configuration.
#include "cli/reload_cmd.hh"

#include <stdlib.h>
#include <sys/stat.h>

#include <chrono>
#include <string>

#include "cli/common.hh"
#include "preflight/preflight.hh"
#include "sys/control.hh"

namespace runewarp::cli {

namespace {

// Long enough for a reload that waits on new upstream names (10 s) on a slow host, short of
// systemd's default reload timeout (90 s).
constexpr std::chrono::seconds kAnswerTimeout{60};

}  // namespace

int run_reload(const Invocation& inv, Console& console) {
    config::Env env = config::Env::from_process();
    auto selection = select_config(inv, env);
    if (!selection) return fail(console, selection.error().message);
    const std::string& path = selection->path;
    struct stat st {};
    if (::stat(path.c_str(), &st) == 0 && !S_ISREG(st.st_mode))
        return fail(console, path + " is not a regular file");

    config::Role role;
    if (auto r = inv.value("role")) {
        role = *r == "server" ? config::Role::kServer : config::Role::kClient;
    } else {
        auto present = config::sections_present(path);
        if (!present) return fail(console, present.error().message);
        if (present->server && present->client)
            return fail(console, path +
                                     " has both a [server] and a [client] section; say which "
                                     "daemon to reload with --role");
        if (!present->server && !present->client)
            return fail(console, path + " has neither a [server] nor a [client] section");
        role = present->server ? config::Role::kServer : config::Role::kClient;
    }
    const char* role_name = role == config::Role::kServer ? "server" : "client";

    // The daemon applies the same rules again; checking here first means a broken file is
    // reported in full even when no daemon runs.
    config::LoadOptions options = load_options(role, *selection, env);
    const config::LoadOutcome report = role == config::Role::kServer
                                           ? preflight::check_server(options).report
                                           : preflight::check_client(options).report;
    if (!report.ok()) {
        console.err(config::format_report(role, path, report));
        return kExitFailure;
    }

    const std::string socket = sys::control_socket_path(role_name);
    if (socket.empty()) {
        return fail(console,
                    "no runtime directory to find the " + std::string(role_name) +
                        " control socket in (RUNTIME_DIRECTORY or XDG_RUNTIME_DIR); send SIGHUP "
                        "to the daemon instead");
    }
    // The daemon compares files, from its own working directory.
    std::string absolute = path;
    if (char* real = ::realpath(path.c_str(), nullptr); real != nullptr) {
        absolute = real;
        ::free(real);
    }
    auto outcome = sys::request_reload(socket, absolute, kAnswerTimeout);
    if (!outcome) return fail(console, outcome.error().message);
    if (!outcome->ok) {
        std::string msg = "the " + std::string(role_name) + " refused the new configuration (" +
                          "generation " + std::to_string(outcome->generation) +
                          " keeps serving):\n" + outcome->text;
        if (msg.back() != '\n') msg.push_back('\n');
        console.err("error: " + msg);
        return kExitFailure;
    }
    std::string out = "reloaded: generation " + std::to_string(outcome->generation) + "\n";
    if (!outcome->text.empty()) {
        out += outcome->text;
        if (out.back() != '\n') out.push_back('\n');
    }
    console.out(out);
    return kExitOk;
}

}  // namespace runewarp::cli
