#!/bin/bash
# `runewarp config show|init|edit` through the real binary: what show prints re-validates, init
# never overwrites and writes a file that parses, edit saves only valid files atomically.
# Usage: cli_test.sh RUNEWARP_BIN TEST_DATA_DIR
set -uo pipefail
bin=$1
tmp=$(mktemp -d /tmp/runewarp-cli-test-XXXXXX)
trap 'rm -rf "$tmp"' EXIT

# Only what the test controls: no host config, XDG roots inside the scratch directory. Every
# command names its file (-c/--output): as root the default path would be /etc/runewarp.
export HOME=$tmp/home XDG_CONFIG_HOME=$tmp/xdg XDG_DATA_HOME=$tmp/data XDG_STATE_HOME=$tmp/state
export LC_ALL=C
unset VISUAL EDITOR RUNEWARP_SERVER_HOSTNAME STATE_DIRECTORY
mkdir -p "$HOME" "$XDG_CONFIG_HOME" "$XDG_DATA_HOME" "$XDG_STATE_HOME"

failures=0
fail() {
    echo "FAIL: $*" >&2
    failures=$((failures + 1))
}
pass() { echo "ok: $*"; }

# run [VAR=value...] -- args...: runs the binary, sets $rc, $out, $err.
run() {
    local envs=()
    while [ "$1" != "--" ]; do
        envs+=("$1")
        shift
    done
    shift
    env "${envs[@]}" "$bin" "$@" >"$tmp/out" 2>"$tmp/err" <"${stdin:-/dev/null}"
    rc=$?
    out=$(cat "$tmp/out")
    err=$(cat "$tmp/err")
}
expect_rc() { # name want
    if [ "$rc" -ne "$2" ]; then
        fail "$1: exit $rc, expected $2; stdout: $out; stderr: $err"
        return 1
    fi
    return 0
}
expect_in() { # name haystack needle
    case "$2" in
    *"$3"*) return 0 ;;
    esac
    fail "$1: missing \`$3\` in: $2"
    return 1
}
expect_not_in() { # name haystack needle
    case "$2" in
    *"$3"*)
        fail "$1: unexpected \`$3\` in: $2"
        return 1
        ;;
    esac
    return 0
}
no_leftovers() { # name dir
    local left
    left=$(find "$2" -maxdepth 1 -name '.*.edit-*' | head -n 1)
    [ -z "$left" ] || fail "$1: edited copy left behind: $left"
}

# ---- help ------------------------------------------------------------------------------------
run -- config --help
expect_rc "config --help" 0 && for c in check show init edit; do
    expect_in "config --help lists $c" "$out" "  $c "
done && pass "config help lists check, show, init, edit"
run -- help config edit
expect_rc "help config edit" 0 && expect_in "edit help" "$out" "VISUAL" && pass "edit help"

# ---- init ------------------------------------------------------------------------------------
srv=$tmp/server.ini
run -- config init --output "$srv"
expect_rc "init without --role" 2 && expect_in "init without --role" "$err" "--role" &&
    [ ! -e "$srv" ] && pass "init needs --role"

run -- config init --role server --output "$srv"
if expect_rc "init server" 0; then
    expect_in "init names the file" "$out" "wrote $srv"
    [ "$(stat -c %a "$srv")" = 640 ] || fail "init mode: $(stat -c %a "$srv")"
    expect_in "init comments" "$(cat "$srv")" "; public-bind-address = 0.0.0.0:443"
    pass "init writes a commented starter file, mode 0640"
fi
before=$(sha256sum "$srv")
run -- config init --role client --output "$srv"
expect_rc "init over an existing file" 1 && expect_in "init refusal" "$err" "already exists" &&
    [ "$before" = "$(sha256sum "$srv")" ] && pass "init never overwrites"

# The starter parses; the only problems are the material it names, which `cert init` creates.
run -- config check --role server -c "$srv"
if expect_rc "check starter (no material)" 1; then
    while IFS= read -r line; do
        case "$line" in
        "- "*"does not exist"* | "- "*"is missing"*) ;;
        "- "*) fail "starter problem that is not missing material: $line" ;;
        esac
    done <<<"$err"
fi
run -- server cert init -c "$srv"
expect_rc "server cert init for the starter" 0
run -- config check --role server -c "$srv"
expect_rc "server starter with material" 0 && pass "server starter passes config check once its material exists"

cli=$tmp/client.ini
run -- config init --role client --output "$cli"
expect_rc "init client" 0
run -- config check --role client -c "$cli"
if expect_rc "check client starter (no material)" 1; then
    while IFS= read -r line; do
        case "$line" in
        "- "*"does not exist"* | "- "*"is missing"*) ;;
        "- "*) fail "client starter problem that is not missing material: $line" ;;
        esac
    done <<<"$err"
fi
run -- client identity init -c "$cli"
expect_rc "client identity init for the starter" 0
run -- config check --role client -c "$cli"
expect_rc "client starter with material" 0 && pass "client starter passes config check once its material exists"

# ---- show ------------------------------------------------------------------------------------
run -- server cert init --dir "$tmp/cert" --hostname tunnel.example.com
expect_rc "server cert init" 0
show=$tmp/show.ini
cat >"$show" <<EOF
log-level = debug
[server]
hostname = tunnel.example.com
cert-dir = cert
public-bind-address = 127.0.0.1:0

[tunnel "b"]
public-hostnames = b.example.com
client-identity = 4f7b6f7a9b0f0d2b91e92c8a5df6a44e0123456789abcdef0123456789abcdef

[tunnel "a"]
public-hostnames = a.example.com
client-identities = 91e92c8a5df6a44e91e92c8a5df6a44e91e92c8a5df6a44e91e92c8a5df6a44e
EOF
run -- config show -c "$show"
if expect_rc "show" 0; then
    expect_in "show file line" "$out" "hostname = tunnel.example.com  ; file:3"
    expect_in "show resolved path" "$out" "cert-dir = $tmp/cert  ; file:4"
    expect_in "show default" "$out" "; tunnel-bind-address = 0.0.0.0:443  ; default"
    expect_in "show unset" "$out" "; readiness-bind-address = (unset)  ; default"
    expect_in "show sections in file order" "$out" '[tunnel "b"]'
    case "$out" in
    *'[tunnel "b"]'*'[tunnel "a"]'*) ;;
    *) fail "show: tunnels not in file order: $out" ;;
    esac
    expect_not_in "show prints no key material" "$out" "BEGIN"
    printf '%s\n' "$out" >"$tmp/shown.ini"
    run -- config check -c "$tmp/shown.ini"
    expect_rc "config check of show's output" 0 && pass "show output re-validates with config check"
fi
# Every registry key of the sections shown appears (spot check one per section).
run -- config show -c "$show" --role server
for key in log-format event-backend tunnel-retry visitor-proxy-trusted-networks client-identities; do
    expect_in "show lists $key" "$out" "$key ="
done

# Flags and the environment, on a routes-only Server (no certificate involved).
routes=$tmp/routes.ini
printf '[server]\nhostname = tunnel.example.com\n[route "r"]\npublic-hostnames = r.example.com\nupstream-address = 127.0.0.1:8443\n' >"$routes"
run -- config show -c "$routes" --hostname Flag.Example.com
expect_rc "show --hostname" 0 && expect_in "show flag source" "$out" "hostname = flag.example.com  ; flag --hostname" &&
    pass "show names flag sources"
run RUNEWARP_SERVER_HOSTNAME=env.example.com -- config show -c "$routes"
expect_rc "show with env" 0 && expect_in "show env source" "$out" "hostname = env.example.com  ; env RUNEWARP_SERVER_HOSTNAME" &&
    pass "show names environment sources"
run -- config show -c "$routes" --role client
expect_rc "show client of a server file" 1 && expect_in "show invalid" "$err" "invalid client config in $routes:" &&
    [ -z "$out" ] && pass "show of an invalid config prints the check report, exit 1"
run -- config show -c "$routes" --server-address x.example.com
expect_rc "show client flag on server" 1 && expect_in "role flag mismatch" "$err" "--server-address"
both=$tmp/both.ini
cat "$routes" >"$both"
printf '[client]\nserver-address = tunnel.example.com\n' >>"$both"
run -- config show -c "$both"
expect_rc "show both roles without --role" 1 && expect_in "show needs --role" "$err" "--role"

# ---- edit ------------------------------------------------------------------------------------
cat >"$tmp/ed-debug.sh" <<'EOF'
#!/bin/sh
sed -i 's/^log-level = debug$/log-level = warn/' "$1"
EOF
cat >"$tmp/ed-garbage.sh" <<'EOF'
#!/bin/sh
echo "this is not ini" >>"$1"
EOF
# First run breaks the file, the second repairs it and makes a valid change.
cat >"$tmp/ed-twice.sh" <<EOF
#!/bin/sh
n=\$(cat "$tmp/count" 2>/dev/null || echo 0)
n=\$((n + 1))
echo \$n >"$tmp/count"
if [ \$n -eq 1 ]; then
    echo "this is not ini" >>"\$1"
else
    sed -i '/^this is not ini\$/d; s/^log-level = .*/log-level = error/' "\$1"
fi
EOF
chmod +x "$tmp"/ed-*.sh

edited=$tmp/edit.ini
cp "$show" "$edited"
chmod 600 "$edited"
ino=$(stat -c %i "$edited")
run EDITOR="$tmp/ed-debug.sh" -- config edit -c "$edited"
if expect_rc "edit valid change" 0; then
    expect_in "edit valid change" "$(cat "$edited")" "log-level = warn"
    [ "$(stat -c %a "$edited")" = 600 ] || fail "edit changed the mode: $(stat -c %a "$edited")"
    [ "$(stat -c %i "$edited")" != "$ino" ] || fail "edit did not replace the file by rename"
    expect_in "edit says what next" "$out" "systemctl reload runewarp-server"
    pass "edit saves a valid change atomically, keeping the mode"
fi
no_leftovers "edit valid change" "$tmp"

cp "$edited" "$tmp/edit.before"
printf 'n\n' >"$tmp/answer-n"
stdin=$tmp/answer-n run EDITOR="$tmp/ed-garbage.sh" -- config edit -c "$edited"
expect_rc "edit syntax error, answer n" 1 && expect_in "edit report" "$err" "syntax error" &&
    expect_in "edit prompt" "$err" "Edit again? [Y/n]" &&
    cmp -s "$edited" "$tmp/edit.before" && pass "edit with errors and answer n leaves the original"
cmp -s "$edited" "$tmp/edit.before" || fail "edit answer n changed the original"
no_leftovers "edit answer n" "$tmp"

run EDITOR="$tmp/ed-garbage.sh" -- config edit -c "$edited"
expect_rc "edit syntax error, end of input" 1 && cmp -s "$edited" "$tmp/edit.before" &&
    pass "edit with errors and no answer leaves the original"
no_leftovers "edit end of input" "$tmp"

printf 'y\n' >"$tmp/answer-y"
stdin=$tmp/answer-y run EDITOR="$tmp/ed-twice.sh" -- config edit -c "$edited"
if expect_rc "edit again after an error" 0; then
    [ "$(cat "$tmp/count")" = 2 ] || fail "edit again: editor ran $(cat "$tmp/count") times"
    expect_in "edit again saved" "$(cat "$edited")" "log-level = error"
    expect_not_in "edit again saved the fixed copy" "$(cat "$edited")" "this is not ini"
    expect_in "edit again prompt" "$err" "Edit again? [Y/n]"
    pass "edit asks again and saves the repaired copy"
fi
no_leftovers "edit again" "$tmp"

# $VISUAL beats $EDITOR and runs through the shell, so arguments work ("code --wait" style).
ino=$(stat -c %i "$edited")
run VISUAL="sh $tmp/ed-garbage.sh" EDITOR=/bin/true -- config edit -c "$edited" --role server
expect_rc "VISUAL with arguments" 1 && expect_in "VISUAL was used" "$err" "syntax error" &&
    pass "VISUAL is preferred and run through /bin/sh"
run EDITOR=/bin/true -- config edit -c "$edited"
expect_rc "edit unchanged" 0 && expect_in "edit unchanged" "$out" "is unchanged" &&
    [ "$(stat -c %i "$edited")" = "$ino" ] && pass "an unchanged file is not rewritten"
run EDITOR=/bin/false -- config edit -c "$edited"
expect_rc "editor failure" 1 && [ "$(stat -c %i "$edited")" = "$ino" ] &&
    pass "a failing editor leaves the original"
no_leftovers "editor failure" "$tmp"
run EDITOR=/bin/true -- config edit -c "$tmp/missing.ini"
expect_rc "edit of a missing file" 1 && expect_in "edit missing" "$err" "does not exist" &&
    expect_in "edit missing suggests init" "$err" "config init" && pass "edit of a missing file suggests init"

# Through a symlink: the target is replaced, the link stays.
ln -s "$edited" "$tmp/link.ini"
run EDITOR="$tmp/ed-debug.sh" -- config edit -c "$tmp/link.ini"
sed -i 's/^log-level = error$/log-level = debug/' "$edited"
run EDITOR="$tmp/ed-debug.sh" -- config edit -c "$tmp/link.ini"
expect_rc "edit through a link" 0 && [ -L "$tmp/link.ini" ] &&
    expect_in "edit through a link" "$(cat "$edited")" "log-level = warn" && pass "edit follows a link and keeps it"

# The owner is kept (needs root to hand the file to another user).
if [ "$(id -u)" = 0 ]; then
    chown 65534:65534 "$edited"
    sed -i 's/^log-level = warn$/log-level = debug/' "$edited"
    run EDITOR="$tmp/ed-debug.sh" -- config edit -c "$edited"
    expect_rc "edit keeps the owner" 0 && [ "$(stat -c %u:%g "$edited")" = 65534:65534 ] &&
        pass "edit keeps the owner"
    [ "$(stat -c %u:%g "$edited")" = 65534:65534 ] || fail "edit changed the owner: $(stat -c %u:%g "$edited")"
else
    echo "note: owner preservation is checked only as root"
fi

if [ "$failures" -ne 0 ]; then
    echo "$failures failure(s)" >&2
    exit 1
fi
echo "all config tool checks passed"
