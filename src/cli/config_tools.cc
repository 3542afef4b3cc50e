// `runewarp config show|init|edit`. All three follow `config check`: show prints only what the
// startup rules accept, init writes what they parse, edit saves only what they accept.
#include "cli/config_tools.hh"

#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "cli/common.hh"
#include "config/render.hh"
#include "core/file.hh"
#include "core/unique_fd.hh"
#include "preflight/preflight.hh"
#include "trust/material.hh"

namespace runewarp::cli {

namespace {

using core::base_of;
using core::dir_of;

const char* role_name(config::Role r) {
    return r == config::Role::kServer ? "server" : "client";
}

void replace_all(std::string& s, const std::string& from, const std::string& to) {
    if (from.empty()) return;
    for (std::size_t pos = 0; (pos = s.find(from, pos)) != std::string::npos; pos += to.size()) {
        s.replace(pos, from.size(), to);
    }
}

// The `config check` report of `path` for `role`, empty when the startup rules accept it.
// `shown_path` names the file in the report (the original when `path` is an edited copy).
std::string check_report(config::Role role, const config::LoadOptions& options,
                         const std::string& shown_path) {
    config::LoadOutcome report = role == config::Role::kServer
                                     ? preflight::check_server(options).report
                                     : preflight::check_client(options).report;
    if (report.ok()) return {};
    std::string text = config::format_report(role, shown_path, report);
    replace_all(text, options.path, shown_path);
    return text;
}

// The roles a file's text holds by its section headers, as `config check` picks them.
std::vector<config::Role> roles_present(std::string_view text) {
    config::SectionsPresent p = config::sections_present_in(text);
    std::vector<config::Role> roles;
    if (p.server) roles.push_back(config::Role::kServer);
    if (p.client) roles.push_back(config::Role::kClient);
    return roles;
}

std::optional<config::Role> role_flag(const Invocation& inv) {
    auto r = inv.value("role");
    if (!r) return std::nullopt;
    return *r == "server" ? config::Role::kServer : config::Role::kClient;
}

// ---- edit: signals, the editor, the answer --------------------------------------------------

volatile sig_atomic_t g_interrupted = 0;

void note_signal(int) {
    g_interrupted = 1;
}

// While `config edit` runs, SIGINT/SIGTERM/SIGHUP only set a flag (without SA_RESTART, so a
// pending prompt read returns): the edited copy is then discarded instead of left behind. The
// editor still gets the default dispositions, as exec resets caught signals.
class SignalGuard {
public:
    SignalGuard() {
        struct sigaction sa {};
        sa.sa_handler = note_signal;
        sigemptyset(&sa.sa_mask);
        for (int i = 0; i < 3; ++i) sigaction(kSignals[i], &sa, &old_[i]);
    }
    ~SignalGuard() {
        for (int i = 0; i < 3; ++i) sigaction(kSignals[i], &old_[i], nullptr);
    }
    SignalGuard(const SignalGuard&) = delete;
    SignalGuard& operator=(const SignalGuard&) = delete;

private:
    static constexpr int kSignals[3] = {SIGINT, SIGTERM, SIGHUP};
    struct sigaction old_[3]{};
};

// Removes the edited copy on every way out except a successful rename.
class TempFile {
public:
    explicit TempFile(std::string path) : path_(std::move(path)) {}
    ~TempFile() {
        if (!path_.empty()) ::unlink(path_.c_str());
    }
    TempFile(const TempFile&) = delete;
    TempFile& operator=(const TempFile&) = delete;
    const std::string& path() const { return path_; }
    void release() { path_.clear(); }

private:
    std::string path_;
};

// Runs `editor FILE` through /bin/sh, so values such as "code --wait" work; returns the exit
// status, or -1 when the editor could not run or was killed by a signal.
int run_editor(const std::string& editor, const std::string& file) {
    pid_t pid = ::fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        std::string script = editor + " \"$1\"";
        ::execl("/bin/sh", "sh", "-c", script.c_str(), "sh", file.c_str(),
                static_cast<char*>(nullptr));
        ::_exit(127);
    }
    // Terminal interrupts (SIGINT, SIGQUIT) belong to the editor while it runs (vi users press
    // Ctrl-C to leave insert mode): ignored here until it exits, as git does.
    struct sigaction ignore {};
    ignore.sa_handler = SIG_IGN;
    sigemptyset(&ignore.sa_mask);
    struct sigaction old_int {
    }, old_quit{};
    ::sigaction(SIGINT, &ignore, &old_int);
    ::sigaction(SIGQUIT, &ignore, &old_quit);
    int status = 0;
    pid_t waited = -1;
    while ((waited = ::waitpid(pid, &status, 0)) < 0 && errno == EINTR) {
    }
    ::sigaction(SIGINT, &old_int, nullptr);
    ::sigaction(SIGQUIT, &old_quit, nullptr);
    if (waited < 0) return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// One answer line from stdin, read a byte at a time so nothing meant for a later prompt (or a
// later editor) is consumed. nullopt on EOF, error or interruption.
std::optional<std::string> read_answer() {
    std::string line;
    for (;;) {
        char c = 0;
        ssize_t n = ::read(STDIN_FILENO, &c, 1);
        if (n < 0 && errno == EINTR && !g_interrupted) continue;
        if (n <= 0) {
            if (line.empty() || g_interrupted) return std::nullopt;
            return line;
        }
        if (c == '\n') return line;
        line.push_back(c);
    }
}

bool answered_no(const std::optional<std::string>& answer) {
    if (!answer) return true;
    std::string_view a(*answer);
    while (!a.empty() && (a.front() == ' ' || a.front() == '\t')) a.remove_prefix(1);
    return !a.empty() && (a.front() == 'n' || a.front() == 'N');
}

// Gives the edited copy the original's mode and owner (editors may write a new file in its
// place), then makes it durable.
Result<void> match_and_sync(const std::string& path, const struct stat& original) {
    core::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
    if (!fd) return Error::sys(errno, "cannot open " + path);
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) return Error::sys(errno, "cannot stat " + path);
    if (!S_ISREG(st.st_mode)) return Error::msg(path + " is no longer a regular file");
    if ((st.st_uid != original.st_uid || st.st_gid != original.st_gid) &&
        ::fchown(fd.get(), original.st_uid, original.st_gid) != 0) {
        return Error::sys(errno, "cannot give the edited copy the owner of the original (uid " +
                                     std::to_string(original.st_uid) + ", gid " +
                                     std::to_string(original.st_gid) + ")");
    }
    if (::fchmod(fd.get(), original.st_mode & 07777) != 0) {
        return Error::sys(errno, "cannot set the mode of " + path);
    }
    if (::fsync(fd.get()) != 0) return Error::sys(errno, "cannot sync " + path);
    return {};
}

Result<void> sync_dir(const std::string& dir) {
    core::UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!fd) return Error::sys(errno, "cannot open directory " + dir);
    if (::fsync(fd.get()) != 0) return Error::sys(errno, "cannot sync directory " + dir);
    return {};
}

// A copy of the original next to it (same directory, so relative paths and the layout resolve
// alike), created with O_EXCL and the original's mode and owner. Keeps a ".ini" suffix for the
// editor's syntax highlighting.
Result<std::string> make_copy(const std::string& path, const std::string& text,
                              const struct stat& original) {
    std::string base = base_of(path);
    std::string suffix = base.ends_with(".ini") ? ".ini" : "";
    std::string stem = base.substr(0, base.size() - suffix.size());
    std::string tmpl = dir_of(path) + "/." + stem + ".edit-XXXXXX" + suffix;
    int raw = ::mkostemps(tmpl.data(), static_cast<int>(suffix.size()), O_CLOEXEC);
    if (raw < 0)
        return Error::sys(errno, "cannot create a copy of " + path + " in " + dir_of(path));
    core::UniqueFd fd(raw);
    TempFile guard(tmpl);
    std::string_view left(text);
    while (!left.empty()) {
        ssize_t n = ::write(fd.get(), left.data(), left.size());
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return Error::sys(errno, "cannot write " + tmpl);
        left.remove_prefix(static_cast<std::size_t>(n));
    }
    fd.reset();
    if (auto r = match_and_sync(tmpl, original); !r) return std::move(r).error();
    guard.release();
    return tmpl;
}

}  // namespace

// ---- show ------------------------------------------------------------------------------------

int run_config_show(const Invocation& inv, Console& console) {
    config::Env env = config::Env::from_process();
    auto selection = select_config(inv, env);
    if (!selection) return fail(console, selection.error().message);
    const std::string& path = selection->path;
    struct stat st {};
    if (::stat(path.c_str(), &st) == 0 && !S_ISREG(st.st_mode)) {
        return fail(console, path + " is not a regular file");
    }
    config::Role role{};
    if (auto r = role_flag(inv)) {
        role = *r;
    } else {
        auto text = core::read_file(path);
        if (!text) return fail(console, text.error().message);
        auto roles = roles_present(*text);
        if (roles.empty()) {
            return fail(console, path + " has neither a [server] nor a [client] section");
        }
        if (roles.size() > 1) {
            return fail(console, path +
                                     " has both a [server] and a [client] section; choose one "
                                     "with --role server or --role client");
        }
        role = roles.front();
    }

    config::LoadOptions options = load_options(role, *selection, env);
    const bool server = role == config::Role::kServer;
    for (const char* flag : {"hostname"}) {
        if (!server && inv.has(flag)) {
            return fail(console, std::string("--") + flag + " applies only to the server role");
        }
    }
    for (const char* flag : {"server-address", "backend-address"}) {
        if (server && inv.has(flag)) {
            return fail(console, std::string("--") + flag + " applies only to the client role");
        }
    }
    if (auto h = inv.value("hostname")) options.overrides.hostname = *h;
    if (auto c = inv.value("control-address")) options.overrides.control_address = *c;
    options.overrides.server_addresses = inv.values("server-address");
    if (auto b = inv.value("backend-address")) options.overrides.backend_address = *b;

    // Only what the role would start with is shown: the same rules and report as config check.
    if (server) {
        auto checked = preflight::check_server(options);
        if (!checked.ok()) {
            console.err(config::format_report(role, path, checked.report));
            return kExitFailure;
        }
        console.out(config::render_effective(role, checked.startup->config));
    } else {
        auto checked = preflight::check_client(options);
        if (!checked.ok()) {
            console.err(config::format_report(role, path, checked.report));
            return kExitFailure;
        }
        console.out(config::render_effective(role, checked.startup->config));
    }
    return kExitOk;
}

// ---- init ------------------------------------------------------------------------------------

int run_config_init(const Invocation& inv, Console& console) {
    auto role = role_flag(inv);
    if (!role) {
        console.err(render_usage_error(
            inv.path, "the following required argument was not provided: --role <ROLE>"));
        return kExitUsage;
    }
    config::Env env = config::Env::from_process();
    std::string default_path =
        env.euid == 0 ? std::string(config::kSystemConfigPath) : config::user_config_path(env);
    std::string path;
    if (auto out = inv.value("output")) {
        if (out->empty()) return fail(console, "--output must not be empty");
        path = config::resolve_cli_path(env, *out);
    } else if (default_path.empty()) {
        return fail(console,
                    "unable to resolve the XDG config base directory: set XDG_CONFIG_HOME or HOME "
                    "(or use --output PATH)");
    } else {
        path = default_path;
    }
    const bool is_default = path == default_path;
    const std::string config_arg = is_default ? "" : " --config " + path;

    struct stat st {};
    if (::lstat(path.c_str(), &st) == 0) {
        return fail(console, path +
                                 " already exists; config init never overwrites a file (change "
                                 "it with `runewarp config edit" +
                                 config_arg + "`, or write elsewhere with --output PATH)");
    }
    if (auto d = trust::ensure_dir(dir_of(path), 0755); !d) {
        return fail(console, d.error().message);
    }
    config::Roots roots = config::resolve_roots(path, env);
    std::string text = config::render_starter(*role, roots);
    // 0640: the file names material but holds none; group read lets a service group use it.
    if (auto w = trust::write_new_file(path, text, 0640); !w) {
        return fail(console, w.error().message);
    }
    std::string out = "wrote " + path + "\nNext:\n";
    if (*role == config::Role::kServer) {
        out += "  1. set server.hostname and the [tunnel \"apps\"] values: runewarp config edit" +
               config_arg + "\n";
        out += "  2. create the tunnel certificate: runewarp server cert init" + config_arg + "\n";
    } else {
        out +=
            "  1. set client.server-address and the [service \"web\"] values: runewarp config "
            "edit" +
            config_arg + "\n";
        out += "  2. create the Client identity: runewarp client identity init" + config_arg + "\n";
    }
    out += std::string("  3. check it: runewarp config check --role ") + role_name(*role) +
           config_arg + "\n";
    console.out(out);
    return kExitOk;
}

// ---- edit ------------------------------------------------------------------------------------

int run_config_edit(const Invocation& inv, Console& console) {
    config::Env env = config::Env::from_process();
    auto selection = config::resolve_config_path(inv.value("config"), env);
    if (!selection) return fail(console, selection.error().message);
    const std::string init_hint = " (create one with `runewarp config init --role server|client" +
                                  std::string(inv.has("config") ? " --output PATH" : "") + "`)";
    if (selection->path.empty()) {
        return fail(console, no_config_message(*selection) + init_hint);
    }
    const std::string& path = selection->path;

    // Edit what a link points at, so the link itself stays.
    char* resolved = ::realpath(path.c_str(), nullptr);
    if (resolved == nullptr) {
        if (errno == ENOENT) return fail(console, path + " does not exist" + init_hint);
        return fail(console, Error::sys(errno, "cannot resolve " + path).message);
    }
    const std::string target(resolved);
    ::free(resolved);
    struct stat original_st {};
    auto original = core::read_file(target, core::kMaxSmallFile, &original_st);
    if (!original) return fail(console, original.error().message);
    if (!S_ISREG(original_st.st_mode)) return fail(console, path + " is not a regular file");

    SignalGuard signals;
    g_interrupted = 0;
    auto copy = make_copy(target, *original, original_st);
    if (!copy) return fail(console, copy.error().message);
    TempFile temp(*copy);

    std::string editor = "vi";
    if (const char* e = ::getenv("EDITOR"); e != nullptr && *e != '\0') editor = e;
    if (const char* v = ::getenv("VISUAL"); v != nullptr && *v != '\0') editor = v;

    std::vector<config::Role> roles;
    for (;;) {
        int status = run_editor(editor, temp.path());
        if (g_interrupted) return fail(console, "interrupted; " + path + " is unchanged");
        if (status != 0) {
            return fail(console, "the editor (" + editor + ") " +
                                     (status < 0 ? std::string("did not run to completion")
                                                 : "exited with status " + std::to_string(status)) +
                                     "; " + path + " is unchanged");
        }
        auto edited = core::read_file(temp.path());
        if (!edited) return fail(console, edited.error().message + "; " + path + " is unchanged");
        if (*edited == *original) {
            console.out(path + " is unchanged\n");
            return kExitOk;
        }

        roles.clear();
        if (auto r = role_flag(inv)) {
            roles.push_back(*r);
        } else {
            roles = roles_present(*edited);
        }
        std::string report;
        if (roles.empty()) report = path + " has neither a [server] nor a [client] section\n";
        config::ConfigSelection edited_sel{temp.path(), selection->is_default, {}};
        for (config::Role role : roles) {
            report += check_report(role, load_options(role, edited_sel, env), path);
        }
        if (report.empty()) break;

        console.err(report);
        console.err("Edit again? [Y/n] ");
        auto answer = read_answer();
        if (!answer) console.err("\n");  // end of input: finish the prompt's line
        if (answered_no(answer)) {
            return fail(console, "changes discarded; " + path + " is unchanged");
        }
    }

    if (auto r = match_and_sync(temp.path(), original_st); !r) {
        return fail(console, r.error().message + "; " + path + " is unchanged");
    }
    if (::rename(temp.path().c_str(), target.c_str()) != 0) {
        return fail(console,
                    Error::sys(errno, "cannot replace " + target).message + "; it is unchanged");
    }
    temp.release();
    if (auto r = sync_dir(dir_of(target)); !r) return fail(console, r.error().message);

    // A running daemon applies it on reload (spec 10.1), without dropping connections.
    std::string out = "saved " + path + "\nTo apply it to a running daemon:";
    for (size_t i = 0; i < roles.size(); ++i) {
        if (i > 0) out += " and";
        out += std::string(" systemctl reload runewarp-") + role_name(roles[i]);
    }
    out += "\n(or: runewarp reload";
    if (roles.size() == 1) out += std::string(" --role ") + role_name(roles[0]);
    out += " -c " + path + ")";
    out += "\n";
    console.out(out);
    return kExitOk;
}

}  // namespace runewarp::cli
