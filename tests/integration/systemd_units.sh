#!/bin/bash
# Verifies the shipped systemd units: `systemd-analyze verify` accepts them (with ExecStart
# pointed at the built binary) and `systemd-analyze security` rates every service at an exposure
# of 2.0 or less (spec 10.3).
set -euo pipefail
bin=$1
src=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for f in "$src"/*.service "$src"/*.socket; do
    sed "s#/usr/bin/runewarp#$bin#g" "$f" > "$tmp/$(basename "$f")"
done
cd "$tmp"
# Reload goes through `runewarp reload`, which needs the unit's runtime directory for the
# control socket.
for r in server client; do
    grep -qx "ExecReload=$bin reload --role $r --config /etc/runewarp/config.ini" \
        "runewarp-$r.service" || { echo "FAIL: runewarp-$r.service: ExecReload" >&2; exit 1; }
    grep -qx "RuntimeDirectory=runewarp-$r" "runewarp-$r.service" ||
        { echo "FAIL: runewarp-$r.service: RuntimeDirectory" >&2; exit 1; }
done
systemd-analyze verify --man=no ./*.service ./*.socket
for s in ./*.service; do
    out=$(systemd-analyze security --offline=true --threshold=20 "$s" 2>&1) || {
        echo "$out" >&2
        echo "FAIL: $s is above the 2.0 exposure threshold" >&2
        exit 1
    }
    echo "$out" | tail -n 1
done
