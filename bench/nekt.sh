#!/usr/bin/env bash
# Nekt forwarding benchmark: time to page through a 100,000-row result (1000 pages of 100)
# through `dapi serve --backend nekt` in front of the Nekt emulator (`--emulate-nekt`), for
# the v2 (sql-query: one execution, pages served locally) and v1 (Explorer: one upstream
# execution + polling per page) protocols, next to the reference middleware's design cost.
# Loopback only; every wait is bounded; the processes it starts are stopped by PID on exit.
# Writes bench/out/nekt.txt. How to read it: bench/nekt.md.
#
# Tunables (environment): DAPI_BIN (build/dapi), BENCH_NEKT_ROWS (100000),
# BENCH_NEKT_V1_PAGES (200: v1 pages measured; the rest is extrapolated; 0 = all).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=$ROOT/bench/out
DAPI_BIN=${DAPI_BIN:-$ROOT/build/dapi}
ROWS=${BENCH_NEKT_ROWS:-100000}
V1_PAGES=${BENCH_NEKT_V1_PAGES:-200}
KEY=nektkey1
HOST=127.0.0.1

die() { echo "bench/nekt: $*" >&2; exit 1; }
note() { echo "bench/nekt: $*" >&2; }

command -v python3 >/dev/null || die "python3 not found"
[ -x "$DAPI_BIN" ] || die "$DAPI_BIN not found (run 'make build/dapi')"

mkdir -p "$OUT"
rm -f "$OUT"/nekt.txt "$OUT"/nekt-*.log
TMP=$(mktemp -d "${TMPDIR:-/tmp}/dapi-bench-nekt.XXXXXX")
PIDS=()

stop_pid() { # stop_pid PID: TERM, wait up to 15 s, then KILL. Only PIDs this script started.
    local pid=$1 i
    [ -n "$pid" ] || return 0
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
cleanup() {
    local rc=$? i
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do stop_pid "${PIDS[i]}"; done
    for f in emu fwd-v2 fwd-v1; do
        [ -f "$TMP/$f.err" ] && cp "$TMP/$f.err" "$OUT/nekt-$f.log"
    done
    rm -rf "$TMP"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start NAME ENV... -- ARGS...: starts `dapi serve` in the background, sets PORT.
start() {
    local name=$1 i
    shift
    local envs=()
    while [ "$1" != "--" ]; do envs+=("$1"); shift; done
    shift
    mkdir -p "$TMP/$name-state"
    env -u DAPI_API_KEYS -u DAPI_NEKT_API_KEY "${envs[@]}" "$DAPI_BIN" serve --host "$HOST" --port 0 \
        --state-dir "$TMP/$name-state" "$@" >"$TMP/$name.out" 2>"$TMP/$name.err" &
    PIDS+=($!)
    PORT=
    for i in $(seq 300); do
        PORT=$(sed -n 's|^dapi listening on http://[0-9.]*:\([0-9]*\)$|\1|p' "$TMP/$name.out" | head -1)
        [ -n "$PORT" ] && break
        kill -0 "${PIDS[-1]}" 2>/dev/null || die "$name exited at start: $(tail -3 "$TMP/$name.err")"
        sleep 0.1
    done
    [ -n "$PORT" ] || die "$name did not start within 30 s"
}

mkdir -p "$TMP/lake"
start emu DAPI_API_KEYS=nektkey1,nektkey2 -- --data-dir "$TMP/lake" --emulate-nekt \
    --emulate-rows-per-file 10000
EMU=$PORT
start fwd-v2 -- --data-dir "$TMP/lake" --backend nekt --nekt-url "http://$HOST:$EMU" --nekt-api v2
FV2=$PORT
start fwd-v1 -- --data-dir "$TMP/lake" --backend nekt --nekt-url "http://$HOST:$EMU" --nekt-api v1
FV1=$PORT
note "emulator :$EMU, forwarder v2 :$FV2, forwarder v1 :$FV1; $ROWS rows"

timeout 110 python3 - "$HOST" "$EMU" "$FV2" "$FV1" "$KEY" "$ROWS" "$V1_PAGES" >"$TMP/result.txt" <<'PY' || die "the client failed or ran past 110 s: $(tail -5 "$TMP/result.txt" 2>/dev/null)"
import http.client, json, sys, time

host, emu, fv2, fv1, key, rows, v1_pages = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], int(sys.argv[6]), int(sys.argv[7])
SQL = "SELECT i, i*2 AS j, 'row ' || i AS s FROM range(%d) t(i) ORDER BY i" % rows
pages_all = rows // 100 + 1  # the last full page is followed by an empty one

class Conn:
    """One keep-alive connection, as a paging client would use."""
    def __init__(self, port):
        self.port = port
        self.c = http.client.HTTPConnection(host, port, timeout=300)
    def req(self, method, path, body=None):
        h = {"x-api-key": key}
        if body is not None:
            body = json.dumps(body).encode()
            h["Content-Type"] = "application/json"
        self.c.request(method, path, body=body, headers=h)
        r = self.c.getresponse()
        data = r.read()
        if r.status != 200:
            raise SystemExit("HTTP %d on %s :%d%s: %s" % (r.status, method, self.port, path, data[:300]))
        return json.loads(data)

def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100.0 * (len(xs) - 1))))]

def run(port, max_pages):
    c = Conn(port)
    t0 = time.monotonic()
    slug = c.req("POST", "/api/queries", {"sql_query": SQL})["query_slug"]
    t_create = time.monotonic() - t0
    lat, n, got, first, last = [], 0, 0, None, None
    for p in range(1, max_pages + 1):
        t = time.monotonic()
        data = c.req("GET", "/api/queries/%s/results?page_number=%d" % (slug, p))["data"]
        lat.append(time.monotonic() - t)
        n += 1
        got += len(data)
        if data:
            first = first or data[0]
            last = data[-1]
        if len(data) < 100:
            break
    return {"create": t_create, "total": time.monotonic() - t0, "pages": n, "rows": got,
            "lat": lat, "first": first, "last": last}

def check(r, what, full):
    if full:
        assert r["rows"] == rows, "%s: %d rows, expected %d" % (what, r["rows"], rows)
        assert r["last"] == {"i": rows - 1, "j": 2 * (rows - 1), "s": "row %d" % (rows - 1)}, "%s: last row %r" % (what, r["last"])
    assert r["first"] == {"i": 0, "j": 0, "s": "row 0"}, "%s: first row %r" % (what, r["first"])

local = run(emu, pages_all)       # the emulator's own local API (dapi, local backend): baseline
check(local, "local", True)
v2 = run(fv2, pages_all)
check(v2, "v2", True)
cap = pages_all if v1_pages <= 0 else min(v1_pages, pages_all)
v1 = run(fv1, cap)
check(v1, "v1", cap == pages_all)

def ms(x): return "%.2f ms" % (x * 1000)
out = []
out.append("dapi Nekt forwarding benchmark: %d rows = %d pages of 100 (+1 empty page), one keep-alive client, loopback" % (rows, rows // 100))
out.append("SQL: %s" % SQL)
out.append("")
out.append("%-44s %12s %9s %14s %14s %14s" % ("path", "total", "pages", "create", "page>1 median", "page>1 p99"))
def line(name, r, total=None, pages=None):
    after = r["lat"][1:] or r["lat"]
    out.append("%-44s %12s %9s %14s %14s %14s" % (name, total or "%.2f s" % r["total"], pages or str(r["pages"]), ms(r["create"]), ms(pct(after, 50)), ms(pct(after, 99))))
line("local dapi (emulator's own API, baseline)", local)
line("forwarder v2 (sql-query, run once)", v2)
if v1["pages"] < pages_all:
    per = (v1["total"] - v1["create"] - v1["lat"][0]) / max(1, v1["pages"] - 1)
    est = v1["create"] + v1["lat"][0] + per * (pages_all - 1)
    line("forwarder v1 (Explorer, measured)", v1)
    out.append("%-44s %12s %9s   (extrapolated: create + page 1 + %d x mean page>1 %s)" % ("forwarder v1, all pages", "~%.1f s" % est, str(pages_all), pages_all - 1, ms(per)))
else:
    line("forwarder v1 (Explorer)", v1)
out.append("%-44s %12s %9s   (computed, not measured: 1 upstream execution + >= 2 s polling per page; +2 s for the empty page)" % ("reference middleware (design cost)", ">= %d s" % (2 * (rows // 100)), str(rows // 100)))
out.append("")
out.append("page 1 latency: local %s, v2 %s (includes waiting for the upstream run + download), v1 %s" % (ms(local["lat"][0]), ms(v2["lat"][0]), ms(v1["lat"][0])))
out.append("v2: every page after the first is served from the materialised result; v1: each new page is an upstream execution, polled with backoff (from 5 ms, doubling, at most 2 s).")
print("\n".join(out))
PY

# Stop the servers first so that their access logs are complete.
for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do stop_pid "${PIDS[i]}"; done
PIDS=()

{
    cat "$TMP/result.txt"
    echo
    echo "upstream calls seen by the emulator: $(grep -c 'access POST "/api/v1/sql-query/"' "$TMP/emu.err" || true) sql-query," \
        "$(grep -c 'access POST "/api/v1/explorer/queries/[^"]*/execution/"' "$TMP/emu.err" || true) v1 executions," \
        "$(grep -c 'access GET "/api/v1/explorer/queries/[^"]*/execution/[^"/]*/"' "$TMP/emu.err" || true) v1 status polls," \
        "$(grep -c 'access GET "/emu-files/' "$TMP/emu.err" || true) file downloads"
    echo "machine: $(nproc) CPUs; $(uname -sr); $("$DAPI_BIN" --version 2>/dev/null | head -1 || echo dapi)"
} | tee "$OUT/nekt.txt"
