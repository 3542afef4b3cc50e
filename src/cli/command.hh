// The command table (commands, flags, help text, handlers), the argv parser and help rendering.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace runewarp::cli {

// Process exit codes: 0 success, 1 config/material/runtime failure, 2 usage error.
enum ExitCode : int {
    kExitOk = 0,       // success, help, version, orderly shutdown
    kExitFailure = 1,  // config/validation/material/startup/runtime failure
    kExitUsage = 2,    // unknown command or flag, missing or invalid flag value
};

// stdout/stderr for command output; injectable so handlers can be driven without a process.
class Console {
public:
    virtual ~Console() = default;
    virtual void out(std::string_view text) = 0;
    virtual void err(std::string_view text) = 0;
};

// Writes to fds 1 and 2 directly (no stdio buffering to lose on exit).
class FdConsole final : public Console {
public:
    void out(std::string_view text) override;
    void err(std::string_view text) override;
};

struct FlagSpec {
    std::string_view long_name{};   // without the leading "--"
    char short_name = 0;            // 0 when the flag has no short form
    std::string_view value_name{};  // e.g. "PATH"; empty for a switch without value
    std::string_view help{};
    bool repeatable = false;
    // Accepted at any depth below the command that declares it (`-c/--config` under
    // `server` and `client`); stored under the declaring flag's long name.
    bool inherited = false;
    // A runtime flag that is also accepted below its command, so material subcommands can
    // reject it with a precise message (exit 1) instead of a usage error. Listed only
    // in the declaring command's own help.
    bool runtime_only = false;
    std::vector<std::string_view> choices{};  // allowed values; empty = any
};

struct CommandSpec;
struct Invocation;
using Handler = int (*)(const Invocation& inv, Console& console);

struct CommandSpec {
    std::string_view name{};
    std::string_view summary{};      // one line, shown in the parent's command list
    std::string_view description{};  // paragraph shown in this command's own help; may be empty
    std::string_view operands{};     // usage text for positional operands, e.g. "[COMMAND]..."
    std::vector<FlagSpec> flags{};
    std::vector<CommandSpec> subcommands{};
    // nullptr: a group that needs a subcommand (its help goes to stderr, exit 2).
    Handler handler = nullptr;
};

// A parsed command line, handed to the leaf command's handler.
struct Invocation {
    std::vector<const CommandSpec*> path;  // root first, the command to run last
    std::vector<std::pair<std::string_view, std::string>> flags;  // (long name, value) in order
    std::vector<const CommandSpec*> flag_owners;                  // the command declaring flags[i]
    std::vector<std::string> operands;

    bool has(std::string_view long_name) const;
    // The last value given for a flag (switches give an empty value).
    std::optional<std::string> value(std::string_view long_name) const;
    std::vector<std::string> values(std::string_view long_name) const;
    // The command that declares the last given flag of that name; nullptr if not given.
    const CommandSpec* owner(std::string_view long_name) const;
};

struct ParseResult {
    enum class Kind {
        kRun,         // run invocation.path.back()->handler
        kHelp,        // print help of invocation.path.back() on stdout, exit 0
        kVersion,     // print the version on stdout, exit 0
        kNeedsGroup,  // a group without its subcommand: help on stderr, exit 2
        kUsageError,  // `error` on stderr with usage and the --help hint, exit 2
    };
    Kind kind = Kind::kRun;
    Invocation invocation;
    std::string error;
};

// Parses argv (without argv[0]) against the tree rooted at `root`. `-h/--help` is accepted at
// every depth; the root's `version` flag (long name "version") ends parsing with kVersion.
ParseResult parse(const CommandSpec& root, const std::vector<std::string_view>& args);

// Finds the command at `names` below root (for `help COMMAND...`); the path is empty if unknown.
std::vector<const CommandSpec*> find_path(const CommandSpec& root,
                                          const std::vector<std::string>& names);

// "runewarp config check"
std::string command_line(const std::vector<const CommandSpec*>& path);
// "runewarp config check [OPTIONS]"
std::string usage_line(const std::vector<const CommandSpec*>& path);
// Full help text of the last command in path. `banner` is printed first when non-empty.
std::string render_help(const std::vector<const CommandSpec*>& path, std::string_view banner);
// "error: <message>\n\nUsage: ...\n\nFor more information, try '--help'.\n"
std::string render_usage_error(const std::vector<const CommandSpec*>& path,
                               std::string_view message);

}  // namespace runewarp::cli
