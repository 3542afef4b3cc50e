// Command-line parsing against the command table, and help/usage text rendering.
#include "cli/command.hh"

#include <unistd.h>

#include <cerrno>

namespace runewarp::cli {

namespace {

void write_all(int fd, std::string_view text) {
    while (!text.empty()) {
        ssize_t n = ::write(fd, text.data(), text.size());
        if (n < 0) {
            if (errno == EINTR) continue;
            return;  // nothing sensible left to do when stdout/stderr is gone
        }
        text.remove_prefix(static_cast<std::size_t>(n));
    }
}

// The flag as written in messages: "--config <PATH>" or "--help".
std::string flag_display(const FlagSpec& f) {
    std::string s = "--";
    s.append(f.long_name);
    if (!f.value_name.empty()) {
        s.append(" <");
        s.append(f.value_name);
        s.push_back('>');
    }
    return s;
}

// Flags accepted at the end of `path`: the command's own, then inherited ones from ancestors
// (runtime-only ones too unless `for_help`).
std::vector<const FlagSpec*> visible_flags(const std::vector<const CommandSpec*>& path,
                                           bool for_help = false) {
    std::vector<const FlagSpec*> out;
    const CommandSpec* leaf = path.back();
    for (const FlagSpec& f : leaf->flags) out.push_back(&f);
    for (std::size_t i = path.size() - 1; i-- > 0;) {
        for (const FlagSpec& f : path[i]->flags) {
            if (f.inherited || (f.runtime_only && !for_help)) out.push_back(&f);
        }
    }
    return out;
}

// The command in `path` whose flag list holds `spec`.
const CommandSpec* declaring_command(const std::vector<const CommandSpec*>& path,
                                     const FlagSpec* spec) {
    for (const CommandSpec* c : path) {
        for (const FlagSpec& f : c->flags) {
            if (&f == spec) return c;
        }
    }
    return nullptr;
}

const FlagSpec* find_long(const std::vector<const FlagSpec*>& flags, std::string_view name) {
    for (const FlagSpec* f : flags) {
        if (f->long_name == name) return f;
    }
    return nullptr;
}

const FlagSpec* find_short(const std::vector<const FlagSpec*>& flags, char c) {
    for (const FlagSpec* f : flags) {
        if (f->short_name != 0 && f->short_name == c) return f;
    }
    return nullptr;
}

const CommandSpec* find_sub(const CommandSpec& cmd, std::string_view name) {
    for (const CommandSpec& s : cmd.subcommands) {
        if (s.name == name) return &s;
    }
    return nullptr;
}

std::string quoted(std::string_view s) {
    std::string out = "'";
    out.append(s);
    out.push_back('\'');
    return out;
}

// Pads `left` to `width` and appends `right`: one row of an aligned two-column list.
void append_row(std::string& out, std::string_view left, std::size_t width,
                std::string_view right) {
    out.append("  ");
    out.append(left);
    if (!right.empty()) {
        out.append(width - left.size() + 2, ' ');
        out.append(right);
    }
    out.push_back('\n');
}

std::string flag_column(const FlagSpec& f) {
    std::string s;
    if (f.short_name != 0) {
        s.push_back('-');
        s.push_back(f.short_name);
        s.append(", ");
    } else {
        s.append("    ");
    }
    s.append(flag_display(f));
    if (f.repeatable) s.append("...");
    return s;
}

const FlagSpec kHelpFlag{.long_name = "help", .short_name = 'h', .help = "Print help"};

}  // namespace

void FdConsole::out(std::string_view text) {
    write_all(STDOUT_FILENO, text);
}
void FdConsole::err(std::string_view text) {
    write_all(STDERR_FILENO, text);
}

bool Invocation::has(std::string_view long_name) const {
    for (const auto& [name, v] : flags) {
        if (name == long_name) return true;
    }
    return false;
}

std::optional<std::string> Invocation::value(std::string_view long_name) const {
    std::optional<std::string> out;
    for (const auto& [name, v] : flags) {
        if (name == long_name) out = v;
    }
    return out;
}

const CommandSpec* Invocation::owner(std::string_view long_name) const {
    const CommandSpec* out = nullptr;
    for (std::size_t i = 0; i < flags.size() && i < flag_owners.size(); ++i) {
        if (flags[i].first == long_name) out = flag_owners[i];
    }
    return out;
}

std::vector<std::string> Invocation::values(std::string_view long_name) const {
    std::vector<std::string> out;
    for (const auto& [name, v] : flags) {
        if (name == long_name) out.push_back(v);
    }
    return out;
}

ParseResult parse(const CommandSpec& root, const std::vector<std::string_view>& args) {
    ParseResult r;
    Invocation& inv = r.invocation;
    inv.path.push_back(&root);
    auto fail = [&](std::string message) {
        r.kind = ParseResult::Kind::kUsageError;
        r.error = std::move(message);
        return r;
    };

    bool operands_only = false;
    for (std::size_t i = 0; i < args.size(); ++i) {
        std::string_view arg = args[i];
        const CommandSpec& cur = *inv.path.back();

        bool is_flag = !operands_only && arg.size() > 1 && arg[0] == '-';
        if (is_flag && arg == "--") {
            operands_only = true;
            continue;
        }
        if (is_flag) {
            if (arg == "-h" || arg == "--help") {
                r.kind = ParseResult::Kind::kHelp;
                return r;
            }
            auto flags = visible_flags(inv.path);
            const FlagSpec* spec = nullptr;
            std::optional<std::string_view> attached;  // value given in the same argument
            if (arg.starts_with("--")) {
                std::string_view name = arg.substr(2);
                if (auto eq = name.find('='); eq != std::string_view::npos) {
                    attached = name.substr(eq + 1);
                    name = name.substr(0, eq);
                }
                spec = find_long(flags, name);
            } else {
                spec = find_short(flags, arg[1]);
                if (arg.size() > 2) attached = arg.substr(2);
                if (spec != nullptr && spec->value_name.empty() && attached) spec = nullptr;
            }
            if (spec == nullptr) return fail("unexpected argument " + quoted(arg) + " found");
            std::string value;
            if (spec->value_name.empty()) {
                if (attached) {
                    return fail("unexpected value " + quoted(*attached) + " for " +
                                quoted(flag_display(*spec)));
                }
                if (spec->long_name == "version" && inv.path.size() == 1) {
                    r.kind = ParseResult::Kind::kVersion;
                    return r;
                }
            } else if (attached) {
                value = std::string(*attached);
            } else if (i + 1 < args.size() && !(args[i + 1].size() > 1 && args[i + 1][0] == '-')) {
                value = std::string(args[++i]);
            } else {
                return fail("a value is required for " + quoted(flag_display(*spec)) +
                            " but none was supplied");
            }
            if (!spec->choices.empty()) {
                bool allowed = false;
                std::string list;
                for (std::string_view c : spec->choices) {
                    allowed = allowed || c == value;
                    if (!list.empty()) list.append(", ");
                    list.append(c);
                }
                if (!allowed) {
                    return fail("invalid value " + quoted(value) + " for " +
                                quoted(flag_display(*spec)) + " [possible values: " + list + "]");
                }
            }
            if (!spec->repeatable && inv.has(spec->long_name)) {
                return fail("the argument " + quoted(flag_display(*spec)) +
                            " cannot be used multiple times");
            }
            inv.flags.emplace_back(spec->long_name, std::move(value));
            inv.flag_owners.push_back(declaring_command(inv.path, spec));
            continue;
        }

        // An operand: a subcommand while the current command has them, else a positional.
        if (!cur.subcommands.empty() && inv.operands.empty()) {
            if (const CommandSpec* sub = find_sub(cur, arg)) {
                inv.path.push_back(sub);
                continue;
            }
            if (cur.operands.empty()) {
                return fail("unrecognized subcommand " + quoted(arg));
            }
        }
        if (cur.operands.empty()) return fail("unexpected argument " + quoted(arg) + " found");
        inv.operands.emplace_back(arg);
    }

    if (inv.path.back()->handler == nullptr) r.kind = ParseResult::Kind::kNeedsGroup;
    return r;
}

std::vector<const CommandSpec*> find_path(const CommandSpec& root,
                                          const std::vector<std::string>& names) {
    std::vector<const CommandSpec*> path{&root};
    for (const std::string& n : names) {
        const CommandSpec* sub = find_sub(*path.back(), n);
        if (sub == nullptr) return {};
        path.push_back(sub);
    }
    return path;
}

std::string command_line(const std::vector<const CommandSpec*>& path) {
    std::string s;
    for (const CommandSpec* c : path) {
        if (!s.empty()) s.push_back(' ');
        s.append(c->name);
    }
    return s;
}

std::string usage_line(const std::vector<const CommandSpec*>& path) {
    const CommandSpec& leaf = *path.back();
    std::string s = command_line(path);
    s.append(" [OPTIONS]");
    if (!leaf.subcommands.empty()) s.append(leaf.handler == nullptr ? " <COMMAND>" : " [COMMAND]");
    if (!leaf.operands.empty() && leaf.subcommands.empty()) {
        s.push_back(' ');
        s.append(leaf.operands);
    }
    return s;
}

std::string render_help(const std::vector<const CommandSpec*>& path, std::string_view banner) {
    const CommandSpec& leaf = *path.back();
    std::string out;
    if (!banner.empty()) {
        out.append(banner);
        out.append("\n\n");
    } else if (!leaf.summary.empty()) {
        out.append(leaf.summary);
        out.append("\n\n");
    }
    if (!leaf.description.empty()) {
        out.append(leaf.description);
        out.append("\n\n");
    }
    out.append("Usage: ");
    out.append(usage_line(path));
    out.push_back('\n');

    if (!leaf.subcommands.empty()) {
        std::size_t width = 0;
        for (const CommandSpec& s : leaf.subcommands) width = std::max(width, s.name.size());
        out.append("\nCommands:\n");
        for (const CommandSpec& s : leaf.subcommands) append_row(out, s.name, width, s.summary);
    }

    std::vector<const FlagSpec*> flags = visible_flags(path, true);
    flags.push_back(&kHelpFlag);
    std::size_t width = 0;
    for (const FlagSpec* f : flags) width = std::max(width, flag_column(*f).size());
    out.append("\nOptions:\n");
    for (const FlagSpec* f : flags) {
        std::string help(f->help);
        if (!f->choices.empty()) {
            help.append(" [possible values: ");
            for (std::size_t i = 0; i < f->choices.size(); ++i) {
                if (i > 0) help.append(", ");
                help.append(f->choices[i]);
            }
            help.push_back(']');
        }
        append_row(out, flag_column(*f), width, help);
    }
    return out;
}

std::string render_usage_error(const std::vector<const CommandSpec*>& path,
                               std::string_view message) {
    std::string out = "error: ";
    out.append(message);
    out.append("\n\nUsage: ");
    out.append(usage_line(path));
    out.append("\n\nFor more information, try '--help'.\n");
    return out;
}

}  // namespace runewarp::cli
