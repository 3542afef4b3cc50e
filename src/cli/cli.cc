// The command table of this build, `help`, `version`, and argv dispatch with exit codes.
#include "cli/cli.hh"

#include <csignal>
#include <string>

#include "cli/cert_cmd.hh"
#include "cli/client_cmd.hh"
#include "cli/config_check.hh"
#include "cli/config_tools.hh"
#include "cli/doctor_cmd.hh"
#include "cli/identity_cmd.hh"
#include "cli/public_cert_cmd.hh"
#include "cli/reload_cmd.hh"
#include "cli/server_cmd.hh"
#include "runewarp_version.h"

namespace runewarp::cli {

namespace {

constexpr std::string_view kTopDescription =
    "Runewarp publishes TLS services that run behind NAT or firewalls without opening inbound\n"
    "ports. A public server routes visitor TLS connections by SNI, without decrypting them,\n"
    "over a mutually authenticated QUIC tunnel to a client that runs next to the backends.";

std::string version_line() {
    std::string s = "runewarp ";
    s.append(RUNEWARP_VERSION);
    s.push_back('\n');
    return s;
}

std::string help_text(const std::vector<const CommandSpec*>& path) {
    return render_help(path, path.size() == 1 ? kBanner : std::string_view{});
}

int run_root(const Invocation& inv, Console& console) {
    console.out(help_text(inv.path));
    return kExitOk;
}

int run_version(const Invocation&, Console& console) {
    console.out(version_line());
    return kExitOk;
}

int run_help(const Invocation& inv, Console& console) {
    const CommandSpec& root = *inv.path.front();
    auto path = find_path(root, inv.operands);
    if (path.empty()) {
        std::string unknown;
        for (const std::string& o : inv.operands) {
            if (!unknown.empty()) unknown.push_back(' ');
            unknown.append(o);
        }
        console.err(render_usage_error(inv.path, "unrecognized subcommand '" + unknown + "'"));
        return kExitUsage;
    }
    console.out(help_text(path));
    return kExitOk;
}

FlagSpec dir_flag(std::string_view help) {
    return FlagSpec{.long_name = "dir", .value_name = "DIR", .help = help};
}

FlagSpec hostname_flag(std::string_view help) {
    return FlagSpec{.long_name = "hostname", .value_name = "HOSTNAME", .help = help};
}

// `-c/--config` of the runtime commands, accepted by their material subcommands too.
FlagSpec role_config_flag() {
    return FlagSpec{.long_name = "config",
                    .short_name = 'c',
                    .value_name = "PATH",
                    .help = "Config file",
                    .inherited = true};
}

FlagSpec control_address_flag() {
    return FlagSpec{.long_name = "control-address",
                    .value_name = "HOST[:PORT]",
                    .help = "Replace control.address (managed mode)",
                    .runtime_only = true};
}

CommandSpec server_cert_group() {
    constexpr std::string_view kDirHelp =
        "Certificate directory (default: server.cert-dir, else <data>/server/cert)";
    constexpr std::string_view kHostHelp =
        "Server hostname (else RUNEWARP_SERVER_HOSTNAME, else server.hostname)";
    CommandSpec init{
        .name = "init",
        .summary = "Create the private Server CA and a certificate for the Server hostname",
        .flags = {dir_flag(kDirHelp), hostname_flag(kHostHelp)},
        .handler = run_server_cert_init,
    };
    CommandSpec renew{
        .name = "renew",
        .summary = "Issue a new Server certificate from the existing CA",
        .flags = {dir_flag(kDirHelp)},
        .handler = run_server_cert_renew,
    };
    CommandSpec rotate_ca{
        .name = "rotate-ca",
        .summary = "Replace the CA and the Server certificate (Clients need the new CA)",
        .flags = {dir_flag(kDirHelp), hostname_flag(kHostHelp)},
        .handler = run_server_cert_rotate_ca,
    };
    return CommandSpec{
        .name = "cert",
        .summary = "Manage the manual Server certificate and its private CA",
        .subcommands = {std::move(init), std::move(renew), std::move(rotate_ca)},
    };
}

CommandSpec public_cert_group() {
    constexpr std::string_view kDirHelp =
        "Certificate directory (default: client.public-cert-dir, else <data>/client/public-cert)";
    constexpr std::string_view kHostHelp =
        "Public hostname (default: those of the config's terminating services)";
    constexpr std::string_view kTargets =
        "Targets: --hostname, else the public-hostnames of every [service] with\n"
        "tls-mode = terminate in the selected config (--config, else the default config).";
    CommandSpec init{
        .name = "init",
        .summary =
            "Create the Public hostname CA and a leaf certificate per hostname unless they "
            "exist",
        .description = kTargets,
        .flags = {dir_flag(kDirHelp), hostname_flag(kHostHelp)},
        .handler = run_client_public_cert_init,
    };
    CommandSpec renew{
        .name = "renew",
        .summary = "Issue new leaf certificates from the existing Public hostname CA",
        .description = kTargets,
        .flags = {dir_flag(kDirHelp), hostname_flag(kHostHelp)},
        .handler = run_client_public_cert_renew,
    };
    CommandSpec rotate_ca{
        .name = "rotate-ca",
        .summary =
            "Replace the Public hostname CA and reissue every leaf (Visitors need the new CA)",
        .description =
            "Every Public hostname of the tls-mode = terminate services in the selected config\n"
            "(--config, else the default config) gets a leaf from the new CA.",
        .flags = {dir_flag(kDirHelp)},
        .handler = run_client_public_cert_rotate_ca,
    };
    return CommandSpec{
        .name = "public-cert",
        .summary = "Manage the manual certificates of terminating Public hostnames",
        .description =
            "A private CA (public-ca.crt, state/public-ca.key) issues a 90-day certificate per\n"
            "Public hostname (<hostname>/public.crt, <hostname>/public.key) that the Client "
            "serves\n"
            "to Visitors of tls-mode = terminate services; Visitors must trust public-ca.crt.",
        .subcommands = {std::move(init), std::move(renew), std::move(rotate_ca)},
    };
}

CommandSpec client_group() {
    constexpr std::string_view kDirHelp =
        "Identity directory (default: client.identity-dir, else <data>/client/identity)";
    CommandSpec init{
        .name = "init",
        .summary = "Create the Client identity key and certificate unless they exist",
        .flags = {dir_flag(kDirHelp)},
        .handler = run_client_identity_init,
    };
    CommandSpec rotate{
        .name = "rotate",
        .summary = "Replace the Client identity with a new key",
        .flags = {dir_flag(kDirHelp)},
        .handler = run_client_identity_rotate,
    };
    CommandSpec show{
        .name = "show",
        .summary = "Print the Client identity",
        .flags = {dir_flag(kDirHelp)},
        .handler = run_client_identity_show,
    };
    CommandSpec identity{
        .name = "identity",
        .summary = "Manage the Client identity pinned by the Server",
        .subcommands = {std::move(init), std::move(rotate), std::move(show)},
    };
    CommandSpec public_cert = public_cert_group();
    return CommandSpec{
        .name = "client",
        .summary = "Run the Client: relay tunnel streams from the Server to local backends",
        .description =
            "Connects to every Server address over QUIC with the Client identity and relays\n"
            "each stream the Server opens to the [service] whose public-hostnames holds the SNI.\n"
            "Without a config file, --server-address and --backend-address start one passthrough\n"
            "Catch-all Service. A terminate-mode Service's certificates come from\n"
            "client.public-cert-dir (`runewarp client public-cert init`) or, with [client.acme],\n"
            "from an ACME CA. SIGHUP re-reads the manual certificates.\n"
            "SIGTERM, SIGINT or SIGQUIT: close the tunnel connections and exit.",
        .flags =
            {
                role_config_flag(),
                FlagSpec{.long_name = "server-address",
                         .value_name = "HOST[:PORT]",
                         .help = "Replace the configured Server address(es)",
                         .repeatable = true,
                         .runtime_only = true},
                FlagSpec{.long_name = "backend-address",
                         .value_name = "ADDR",
                         .help = "Backend of the sole Catch-all Service",
                         .runtime_only = true},
                control_address_flag(),
            },
        .subcommands = {std::move(identity), std::move(public_cert)},
        .handler = run_client_command,
    };
}

FlagSpec config_file_flag(std::string_view help) {
    return FlagSpec{.long_name = "config", .short_name = 'c', .value_name = "PATH", .help = help};
}

FlagSpec role_flag(std::string_view help) {
    return FlagSpec{
        .long_name = "role", .value_name = "ROLE", .help = help, .choices = {"server", "client"}};
}

CommandSpec config_show() {
    return CommandSpec{
        .name = "show",
        .summary = "Print the effective configuration with the source of every value",
        .description =
            "Prints the configuration a role would start with, as INI that `config check`\n"
            "accepts: every key of the role's sections after defaults, the flags below,\n"
            "RUNEWARP_SERVER_HOSTNAME and path resolution. Each key ends with its source:\n"
            "file:LINE, flag --NAME, env NAME or default; defaults and unset keys are commented\n"
            "out. Only paths are printed, never key material. Without --role the role is the\n"
            "one whose section the file has. An invalid configuration prints the `config check`\n"
            "report instead (exit 1).",
        .flags =
            {
                config_file_flag("Config file (default: found as the daemon finds it)"),
                role_flag("Show this role's configuration"),
                FlagSpec{.long_name = "hostname",
                         .value_name = "HOSTNAME",
                         .help = "As `runewarp server --hostname` (server role)"},
                FlagSpec{.long_name = "server-address",
                         .value_name = "HOST[:PORT]",
                         .help = "As `runewarp client --server-address` (client role)",
                         .repeatable = true},
                FlagSpec{.long_name = "backend-address",
                         .value_name = "ADDR",
                         .help = "As `runewarp client --backend-address` (client role)"},
                FlagSpec{.long_name = "control-address",
                         .value_name = "HOST[:PORT]",
                         .help = "As the runtime --control-address"},
            },
        .handler = run_config_show,
    };
}

CommandSpec config_init() {
    return CommandSpec{
        .name = "init",
        .summary = "Write a commented starter configuration for a role",
        .description =
            "Writes every key of the role's sections with a short explanation, defaults\n"
            "commented out, to $XDG_CONFIG_HOME/runewarp/config.ini (or\n"
            "~/.config/runewarp/config.ini; /etc/runewarp/config.ini as root) or --output. An\n"
            "existing file is never overwritten (exit 1). The file is created with mode 0640.",
        .flags =
            {
                role_flag("Role of the starter file (required)"),
                FlagSpec{.long_name = "output",
                         .short_name = 'o',
                         .value_name = "PATH",
                         .help = "Write here instead of the default config path"},
            },
        .handler = run_config_init,
    };
}

CommandSpec config_edit() {
    return CommandSpec{
        .name = "edit",
        .summary = "Edit the configuration safely: validated, replaced atomically",
        .description =
            "Opens $VISUAL, else $EDITOR, else vi (run through /bin/sh) on a copy of the file in\n"
            "its directory. The saved copy is checked like `config check` (for --role, else for\n"
            "every role whose section it has); on problems the report is printed and \"Edit\n"
            "again? [Y/n]\" asked on stdin: n or end of input discards the copy (exit 1). A\n"
            "valid copy replaces the file atomically with its mode and owner; an unchanged one\n"
            "is discarded (exit 0).",
        .flags =
            {
                config_file_flag("Config file (default: found as the daemon finds it)"),
                role_flag("Check the edited file for this role only"),
            },
        .handler = run_config_edit,
    };
}

CommandSpec doctor_group() {
    CommandSpec server{
        .name = "server",
        .summary = "Check the Server's config, material, listener ports and upstreams",
        .description =
            "Checks, in order: the config (the `config check` rules; a broken file stops\n"
            "here), the tunnel certificate in server.cert-dir (files, key mode 0600,\n"
            "certificate/key match, chain to server-ca.crt, names, expiry: warn within 21\n"
            "days, fail once expired), each listener address (bindable, or held by the running\n"
            "runewarp server), and a TCP connect (3 s) to every address of each [route]\n"
            "upstream.\n\n"
            "One line per check (`ok`, `warn` or `FAIL` and the reason), then a verdict line;\n"
            "exit 0 when nothing failed (warnings allowed), 1 otherwise. Nothing is served:\n"
            "listener addresses are bound and released at once.",
        .flags = {FlagSpec{.long_name = "config",
                           .short_name = 'c',
                           .value_name = "PATH",
                           .help = "Config file (default: found as the daemon finds it)"}},
        .handler = run_doctor_server,
    };
    CommandSpec client{
        .name = "client",
        .summary = "Check the Client's config, material, Server handshake and backends",
        .description =
            "Checks, in order: the config (the `config check` rules; a broken file stops\n"
            "here), the Client identity (key mode 0600, key match), the Server trust, the\n"
            "certificates of terminating Public hostnames, then for each Server address its\n"
            "DNS and a QUIC handshake (5 s) with the configured identity and trust, naming the\n"
            "cause of a failure (DNS, no route, timeout, port unreachable, certificate not\n"
            "trusted, identity not pinned), and a TCP connect (3 s) to each backend.\n\n"
            "One line per check (`ok`, `warn` or `FAIL` and the reason), then a verdict line;\n"
            "exit 0 when nothing failed (warnings allowed), 1 otherwise. The handshake is\n"
            "closed at once (application code 0); no stream is opened.",
        .flags = {FlagSpec{.long_name = "config",
                           .short_name = 'c',
                           .value_name = "PATH",
                           .help = "Config file (default: found as the daemon finds it)"}},
        .handler = run_doctor_client,
    };
    return CommandSpec{
        .name = "doctor",
        .summary = "Check that a role can start and reach its peers, without serving",
        .subcommands = {std::move(server), std::move(client)},
    };
}

CommandSpec lint_command() {
    return CommandSpec{
        .name = "lint",
        .summary = "Warn about valid but doubtful configuration (exit 1 when any)",
        .description =
            "Prints one `warn RULE: ...` line per finding, or `lint: no warnings`; exit 0 when\n"
            "there is none, 1 when there is any (or a file is invalid: the `config check`\n"
            "report). With --config, every role whose section the file has is linted (and the\n"
            "pair, when it has both). Rules: route-tunnel-overlap, public-port (not 443),\n"
            "readiness-exposed (not loopback), single-member-pool (a [tunnel] with one\n"
            "identity), proxy-to-public (PROXY v2 to a public upstream or backend); with both\n"
            "roles: service-not-tunneled, tunnel-without-service (not with a Catch-all\n"
            "Service) and identity-not-pinned (the Client's identity in no [tunnel]).",
        .flags =
            {
                config_file_flag("Config file (default: found as the daemon finds it)"),
                FlagSpec{.long_name = "server-config",
                         .value_name = "PATH",
                         .help = "The Server's config file (with --client-config: both compared)"},
                FlagSpec{.long_name = "client-config",
                         .value_name = "PATH",
                         .help = "The Client's config file"},
            },
        .handler = run_lint,
    };
}

CommandSpec build_tree() {
    CommandSpec config_check{
        .name = "check",
        .summary = "Check a config file and its material by the daemon's startup rules",
        .description =
            "Without --config the file is found as the daemon finds it: $XDG_CONFIG_HOME/runewarp/"
            "config.ini\n(or ~/.config/runewarp/config.ini), then /etc/runewarp/config.ini. "
            "Without --role every role\nwhose section the file has ([server], [client]) is "
            "checked, by the rules `runewarp server` and\n`runewarp client` apply before they "
            "start: the config, what this build supports, and the keys\nand certificates it "
            "names (chain, hostname, key match, key mode 0600). Every problem is\nreported; "
            "`ok` when there is none.",
        .flags =
            {
                FlagSpec{.long_name = "config",
                         .short_name = 'c',
                         .value_name = "PATH",
                         .help = "Config file to check"},
                FlagSpec{.long_name = "role",
                         .value_name = "ROLE",
                         .help = "Check only this role",
                         .choices = {"server", "client"}},
            },
        .handler = run_config_check,
    };
    CommandSpec config{
        .name = "config",
        .summary = "Work with configuration files",
        .subcommands = {std::move(config_check), config_show(), config_init(), config_edit()},
    };
    CommandSpec server{
        .name = "server",
        .summary = "Run the Server: route Visitor TLS by SNI into tunnels or to upstreams",
        .description =
            "Accepts Visitor TCP on server.public-bind-address, reads the TLS ClientHello and\n"
            "relays the still-encrypted bytes to the [tunnel] or [route] whose public-hostnames\n"
            "holds the SNI; Clients connect to server.tunnel-bind-address (QUIC). The tunnel\n"
            "certificate comes from server.cert-dir (`runewarp server cert init`) or, with\n"
            "[server.acme], from an ACME CA (TLS-ALPN-01 answered on the public listener).\n"
            "SIGTERM or SIGINT: graceful shutdown; SIGQUIT (or a second SIGINT): fast shutdown.",
        .flags =
            {
                role_config_flag(),
                FlagSpec{.long_name = "hostname",
                         .value_name = "HOSTNAME",
                         .help = "Replace server.hostname (also RUNEWARP_SERVER_HOSTNAME)",
                         .runtime_only = true},
                control_address_flag(),
            },
        .subcommands = {server_cert_group()},
        .handler = run_server_command,
    };
    CommandSpec reload{
        .name = "reload",
        .summary = "Apply a changed configuration to the running daemon without a restart",
        .description =
            "Checks the file by the `config check` rules (problems: the report, exit 1), then "
            "asks\n"
            "the running daemon of the role over its control socket ($RUNTIME_DIRECTORY/\n"
            "control.sock, else /run/runewarp-ROLE/control.sock as root, else\n"
            "$XDG_RUNTIME_DIR/runewarp-ROLE/control.sock) to reload it, and waits for the answer:\n"
            "`reloaded: generation N` and any notes (exit 0), or the daemon's problems (exit 1;\n"
            "the previous configuration keeps serving). Without --role the role is the one whose\n"
            "section the file has. SIGHUP reloads too, without an answer.",
        .flags =
            {
                config_file_flag("Config file the daemon runs with (default: found as the "
                                 "daemon finds it)"),
                role_flag("Reload this role's daemon"),
            },
        .handler = run_reload,
    };
    CommandSpec help{
        .name = "help",
        .summary = "Print help for runewarp or for a command",
        .operands = "[COMMAND]...",
        .handler = run_help,
    };
    CommandSpec version{
        .name = "version",
        .summary = "Print the version",
        .handler = run_version,
    };
    return CommandSpec{
        .name = "runewarp",
        .summary = {},
        .description = kTopDescription,
        .flags = {FlagSpec{.long_name = "version", .short_name = 'V', .help = "Print version"}},
        .subcommands = {std::move(server), client_group(), std::move(config), std::move(reload),
                        doctor_group(), lint_command(), std::move(help), std::move(version)},
        .handler = run_root,
    };
}

}  // namespace

const CommandSpec& command_tree() {
    static const CommandSpec tree = build_tree();
    return tree;
}

int run(const std::vector<std::string_view>& args, Console& console) {
    ParseResult parsed = parse(command_tree(), args);
    const auto& path = parsed.invocation.path;
    switch (parsed.kind) {
        case ParseResult::Kind::kHelp:
            console.out(help_text(path));
            return kExitOk;
        case ParseResult::Kind::kVersion:
            console.out(version_line());
            return kExitOk;
        case ParseResult::Kind::kNeedsGroup:
            console.err(help_text(path));
            return kExitUsage;
        case ParseResult::Kind::kUsageError:
            console.err(render_usage_error(path, parsed.error));
            return kExitUsage;
        case ParseResult::Kind::kRun:
            break;
    }
    return path.back()->handler(parsed.invocation, console);
}

int run(int argc, char** argv) {
    // A closed stdout/stderr or peer must surface as EPIPE, not kill the process.
    std::signal(SIGPIPE, SIG_IGN);
    std::vector<std::string_view> args;
    for (int i = 1; i < argc; ++i) args.emplace_back(argv[i]);
    FdConsole console;
    return run(args, console);
}

}  // namespace runewarp::cli
