#!/usr/bin/env bash
# What scraping costs the data path: the same bulk download through a direct route, once with
# nobody scraping and once with /metrics scraped 100 times per second; prints both throughputs and
# their ratio. Not part of `make check`.
#
#   RUNEWARP_BIN=build/runewarp bench/metrics_scrape.sh        # 1 GiB per run, 3 runs each
#   BULK_MIB=256 RUNS=1 bench/metrics_scrape.sh
#
# Needs python3 and curl. Everything listens on loopback ports picked at start.
set -euo pipefail

BIN=${RUNEWARP_BIN:-build/runewarp}
BULK_MIB=${BULK_MIB:-1024}
RUNS=${RUNS:-3}
RATE=${SCRAPES_PER_SECOND:-100}
[ -x "$BIN" ] || { echo "metrics_scrape: $BIN not found (set RUNEWARP_BIN)" >&2; exit 1; }

DIR=$(mktemp -d /tmp/runewarp-metrics-bench.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$DIR"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
PUBLIC=$(free_port); UPSTREAM=$(free_port); METRICS=$(free_port)

# The upstream: takes the ClientHello (a close with unread bytes would be a reset) and sends
# BULK_MIB MiB to every connection.
cat > "$DIR/upstream.py" <<PY
import socket, threading
chunk = b"x" * (1 << 20)
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", $UPSTREAM)); s.listen(16)
def serve(c):
    try:
        c.recv(65536)
        for _ in range($BULK_MIB): c.sendall(chunk)
    finally:
        c.close()
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
PY
python3 "$DIR/upstream.py" & PIDS+=($!)

cat > "$DIR/server.ini" <<INI
log-level = warn
[server]
hostname = tunnel.bench.test
public-bind-address = 127.0.0.1:$PUBLIC
[route "bulk"]
public-hostnames = bulk.bench.test
upstream-address = 127.0.0.1:$UPSTREAM
[metrics]
prometheus-bind-address = 127.0.0.1:$METRICS
INI
"$BIN" server -c "$DIR/server.ini" > "$DIR/server.log" 2>&1 & SERVER=$!; PIDS+=($SERVER)
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$METRICS/metrics" >/dev/null && break; sleep 0.1; done

# One download: a real ClientHello for the route's hostname, then read until the upstream closes.
cat > "$DIR/visitor.py" <<PY
import socket, ssl, time
ctx = ssl.create_default_context()
inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
obj = ctx.wrap_bio(inc, out, server_hostname="bulk.bench.test")
try:
    obj.do_handshake()
except ssl.SSLWantReadError:
    pass
hello = out.read()
s = socket.create_connection(("127.0.0.1", $PUBLIC))
start = time.monotonic()
s.sendall(hello)
buf = bytearray(1 << 20); got = 0
while True:
    n = s.recv_into(buf)
    if n == 0: break
    got += n
secs = time.monotonic() - start
assert got == $BULK_MIB << 20, got
print("%.1f" % (got / secs / (1 << 20)))
PY

# One process scraping at a fixed rate over one kept-alive connection, as Prometheus does: forking
# curl and sleep 100 times a second would measure process creation on the benchmark's cores
# instead of the daemon's cost.
cat > "$DIR/scraper.py" <<PY
import socket, time
period = 1.0 / $RATE
req = b"GET /metrics HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\n\\r\\n"
s = socket.create_connection(("127.0.0.1", $METRICS))
f = s.makefile("rb")
next_at = time.monotonic()
while True:
    s.sendall(req)
    length = 0
    while True:
        line = f.readline()
        if line in (b"\\r\\n", b""): break
        if line.lower().startswith(b"content-length:"): length = int(line.split(b":")[1])
    if len(f.read(length)) != length: raise SystemExit("short answer")
    next_at += period
    delay = next_at - time.monotonic()
    if delay > 0:
        time.sleep(delay)
PY
scraper() { exec python3 "$DIR/scraper.py"; }

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# The daemon's CPU time (user + system, clock ticks) so far.
ticks() { awk '{print $14 + $15}' "/proc/$SERVER/stat"; }
HZ=$(getconf CLK_TCK)

quiet=(); scraped=(); quiet_ticks=0; scraped_ticks=0
for r in $(seq "$RUNS"); do
    t0=$(ticks)
    quiet+=("$(python3 "$DIR/visitor.py")")
    t1=$(ticks)
    scraper & SP=$!
    scraped+=("$(python3 "$DIR/visitor.py")")
    t2=$(ticks)
    kill "$SP"; wait "$SP" 2>/dev/null || true
    quiet_ticks=$((quiet_ticks + t1 - t0)); scraped_ticks=$((scraped_ticks + t2 - t1))
    echo "run $r: ${quiet[-1]} MiB/s without scraping, ${scraped[-1]} MiB/s at $RATE scrapes/s"
done
Q=$(printf '%s\n' "${quiet[@]}" | median)
S=$(printf '%s\n' "${scraped[@]}" | median)
echo "median: $Q MiB/s without scraping, $S MiB/s while scraped $RATE times per second"
python3 -c "print('throughput ratio (scraped / quiet): %.3f' % ($S / $Q))"
python3 -c "
gib = $RUNS * $BULK_MIB / 1024
print('daemon CPU per GiB relayed: %.0f ms without scraping, %.0f ms while scraped'
      % ($quiet_ticks * 1000 / $HZ / gib, $scraped_ticks * 1000 / $HZ / gib))"
