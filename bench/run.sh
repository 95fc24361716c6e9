#!/usr/bin/env bash
# dapi load benchmark: dapi vs an nginx reference on the same machine, in the same run.
# Run it with `make bench` (installs wrk + nginx, builds build/dapi, then runs this).
# Everything listens on 127.0.0.1 only; every wait is bounded; the processes this script
# starts are stopped by PID on exit. Output goes to bench/out/ (git-ignored).
# How to read the numbers: bench/README.md.
#
# Tunables (environment): DAPI_BIN (build/dapi), NGINX_BIN (/usr/sbin/nginx), WRK_BIN (wrk),
# BENCH_DURATION (10s per throughput run), BENCH_WARMUP (2s), BENCH_LAT_DURATION (5s),
# BENCH_LAT_ROUNDS (3: part c's page 1 / last page pairs; the round with the median ratio),
# BENCH_ROUNDS (1 dapi/nginx pair per throughput measure), BENCH_THREADS (2), BENCH_CONNECTIONS (32), BENCH_HTTP_THREADS (nginx worker_processes; when set,
# also passed to dapi as --http-threads; default 2 = dapi's default HTTP threads),
# SMALLQ_BIN (build/bench/smallq), BENCH_SMALLQ_CONNECTIONS (8), BENCH_SMALLQ_ROUNDS (3: part
# i's disk/tmpfs/ceiling runs, whose ratio varies by about 0.08 run to run), BENCH_DISK_DIR (bench/out: a
# directory on a real disk for part i's state dir, and for the creation log of its ceiling run),
# BENCH_TMPFS_DIR (/dev/shm).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=$ROOT/bench/out
DAPI_BIN=${DAPI_BIN:-$ROOT/build/dapi}
NGINX_BIN=${NGINX_BIN:-/usr/sbin/nginx}
WRK_BIN=${WRK_BIN:-wrk}
DUR=${BENCH_DURATION:-10s}
WARM=${BENCH_WARMUP:-2s}
LAT_DUR=${BENCH_LAT_DURATION:-5s}
LAT_NR=${BENCH_LAT_ROUNDS:-3}
THREADS=${BENCH_THREADS:-2}
ROUNDS=${BENCH_ROUNDS:-1}
SQ_NR=${BENCH_SMALLQ_ROUNDS:-3}
CONNS=${BENCH_CONNECTIONS:-32}
NGINX_WORKERS=${BENCH_HTTP_THREADS:-2}
SMALLQ_BIN=${SMALLQ_BIN:-$ROOT/build/bench/smallq}
SQ_CONNS=${BENCH_SMALLQ_CONNECTIONS:-8}
DISK_DIR=${BENCH_DISK_DIR:-$OUT}
TMPFS_DIR=${BENCH_TMPFS_DIR:-/dev/shm}
DAPI_EXTRA=()
[ -n "${BENCH_HTTP_THREADS:-}" ] && DAPI_EXTRA+=(--http-threads "$BENCH_HTTP_THREADS")
KEY=benchkey
HOST=127.0.0.1
BIG_ROWS=1000000                      # part c needs a 1M-row result (10,000 pages of 100)
LAST_PAGE=$((BIG_ROWS / 100))

die() { echo "bench: $*" >&2; exit 1; }
note() { echo "bench: $*" >&2; }

for t in curl python3 awk zstd gzip "$WRK_BIN"; do
    command -v "$t" >/dev/null || die "$t not found (run 'make bench', which installs it)"
done
[ -x "$DAPI_BIN" ] || die "$DAPI_BIN not found (run 'make bench' or 'make build/dapi')"
[ -x "$NGINX_BIN" ] || die "$NGINX_BIN not found (run 'make bench', which installs nginx-light)"
[ -x "$SMALLQ_BIN" ] || die "$SMALLQ_BIN not found (run 'make bench' or 'make build/bench/smallq')"

mkdir -p "$OUT"
rm -f "$OUT"/wrk-*.txt "$OUT"/summary.txt "$OUT"/dapi.log "$OUT"/dapi.stdout "$OUT"/nginx-*.log \
    "$OUT"/smallq-*.txt "$OUT"/dapi-smallq-*.log
TMP=$(mktemp -d "${TMPDIR:-/tmp}/dapi-bench.XXXXXX")
DAPI_PID=
NGINX_PID=
SQ_PID=
SQ_STATES=()

stop_pid() { # stop_pid PID: TERM, wait up to 5 s, then KILL. Only PIDs this script started.
    local pid=$1 _
    [ -n "$pid" ] || return 0
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
    wait "$pid" 2>/dev/null || true
}
cleanup() {
    local rc=$?
    stop_pid "$NGINX_PID"
    stop_pid "$DAPI_PID"
    stop_pid "$SQ_PID"
    [ ${#SQ_STATES[@]} -eq 0 ] || rm -rf "${SQ_STATES[@]}"
    # The access log of a load run is huge; keep its head and tail only.
    if [ -f "$OUT/dapi.log" ] && [ "$(stat -c %s "$OUT/dapi.log")" -gt 8000000 ]; then
        { head -n 200 "$OUT/dapi.log"; echo "... (bench: $(wc -l <"$OUT/dapi.log") lines, middle cut) ..."
          tail -n 200 "$OUT/dapi.log"; } >"$OUT/dapi.log.cut" && mv "$OUT/dapi.log.cut" "$OUT/dapi.log"
    fi
    [ -f "$TMP/nginx/error.log" ] && cp "$TMP/nginx/error.log" "$OUT/nginx-error.log" 2>/dev/null
    rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
json_field() { # json_field FILE EXPR: evaluates a python expression on j = parsed JSON
    python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); v=eval(sys.argv[2]); print(v)' "$1" "$2"
}
secs() { # wrk duration "10s" -> 10
    local d=$1; case $d in *m) echo $((${d%m} * 60));; *s) echo "${d%s}";; *) echo "$d";; esac
}

# --- 1. sample lake + state dir -----------------------------------------------------------
DATA=$TMP/data
STATE=$TMP/state
mkdir -p "$STATE"
note "writing the sample lake into $DATA"
t0=$(date +%s%N)
timeout 300 "$DAPI_BIN" sample-data "$DATA" >"$TMP/sample-data.txt" 2>&1 \
    || { cat "$TMP/sample-data.txt" >&2; die "dapi sample-data failed"; }
SAMPLE_MS=$(( ($(date +%s%N) - t0) / 1000000 ))

# --- 2. dapi ---------------------------------------------------------------------------------
note "starting dapi"
DAPI_API_KEYS=$KEY "$DAPI_BIN" serve --host $HOST --port 0 --data-dir "$DATA" --state-dir "$STATE" \
    --log-format text ${DAPI_EXTRA[@]+"${DAPI_EXTRA[@]}"} >"$OUT/dapi.stdout" 2>"$OUT/dapi.log" &
DAPI_PID=$!
DAPI_PORT=
for _ in $(seq 300); do
    DAPI_PORT=$(sed -n 's|.*dapi listening on http://127\.0\.0\.1:\([0-9][0-9]*\).*|\1|p' "$OUT/dapi.stdout" | head -n 1)
    [ -n "$DAPI_PORT" ] && break
    kill -0 "$DAPI_PID" 2>/dev/null || { tail -n 20 "$OUT/dapi.log" >&2; die "dapi exited at start"; }
    sleep 0.1
done
[ -n "$DAPI_PORT" ] || die "dapi did not print 'dapi listening on http://127.0.0.1:PORT' within 30 s"
DAPI=http://$HOST:$DAPI_PORT
curl -fsS --max-time 5 "$DAPI/api/health" >/dev/null || die "GET $DAPI/api/health failed"

# --- 3. nginx reference -----------------------------------------------------------------------
NG=$TMP/nginx
mkdir -p "$NG/www" "$NG/temp"
NGV=$("$NGINX_BIN" -V 2>&1)
temp_paths="client_body_temp_path $NG/temp/body;"
for m in proxy fastcgi uwsgi scgi; do
    grep -q -- "--without-http_${m}_module" <<<"$NGV" || temp_paths+=" ${m}_temp_path $NG/temp/$m;"
done
user_line=
[ "$(id -u)" -eq 0 ] && user_line="user root;"   # else workers run as nobody and can't read $TMP

start_nginx() { # writes the config for port $1 and starts nginx; returns 1 if it did not come up
    local port=$1
    cat >"$NG/nginx.conf" <<EOF
# Generated by bench/run.sh: the reference server for dapi's benchmark.
$user_line
worker_processes $NGINX_WORKERS;
pid $NG/nginx.pid;
error_log $NG/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    $temp_paths
    keepalive_timeout 65s;
    keepalive_requests 1000000;   # never close a keep-alive connection during a run
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    open_file_cache max=16 inactive=60s;
    open_file_cache_valid 60s;
    server {
        listen $HOST:$port;
        server_name _;
        location = /health {
            default_type application/json;
            return 200 '{"status":"ok"}';
        }
        location = /page1.json {
            default_type application/json;
            root $NG/www;
        }
        location = /page1.zst {
            default_type application/json;
            add_header Content-Encoding zstd;
            add_header Vary Accept-Encoding;
            root $NG/www;
        }
        location = /page1.gz {
            default_type application/json;
            add_header Content-Encoding gzip;
            add_header Vary Accept-Encoding;
            root $NG/www;
        }
    }
}
EOF
    "$NGINX_BIN" -t -q -p "$NG" -e "$NG/error.log" -c "$NG/nginx.conf" >"$NG/test.log" 2>&1 \
        || { cat "$NG/test.log" >&2; die "nginx rejected its generated config"; }
    "$NGINX_BIN" -p "$NG" -e "$NG/error.log" -c "$NG/nginx.conf" -g 'daemon off;' \
        >"$NG/stdout.log" 2>&1 &
    NGINX_PID=$!
    local _
    for _ in $(seq 50); do
        kill -0 "$NGINX_PID" 2>/dev/null || { NGINX_PID=; return 1; }
        curl -fsS --max-time 2 -o /dev/null "http://$HOST:$port/health" 2>/dev/null && return 0
        sleep 0.1
    done
    stop_pid "$NGINX_PID"; NGINX_PID=
    return 1
}
note "starting nginx ($NGINX_WORKERS workers)"
NGINX_PORT=
for _ in 1 2 3 4 5; do
    p=$(free_port)
    if start_nginx "$p"; then NGINX_PORT=$p; break; fi
done
[ -n "$NGINX_PORT" ] || { cat "$NG/error.log" "$NG/stdout.log" >&2 2>/dev/null; die "nginx did not start"; }
NGINX=http://$HOST:$NGINX_PORT
cp "$NG/nginx.conf" "$OUT/nginx.conf"

# --- 4. queries -------------------------------------------------------------------------------
api_post_query() { # api_post_query SQL OUTFILE -> prints HTTP status; body in OUTFILE
    local body
    body=$(python3 -c 'import json,sys; print(json.dumps({"sql_query": sys.argv[1]}))' "$1")
    curl -sS --max-time 180 -o "$2" -D "$TMP/create.headers" -w '%{http_code}' -H "x-api-key: $KEY" \
        -H 'Content-Type: application/json' -X POST --data-binary "$body" "$DAPI/api/queries"
}
create_query() { # create_query SQL -> prints the slug
    local code
    code=$(api_post_query "$1" "$TMP/create.json") || die "POST /api/queries failed (curl)"
    [ "$code" = 200 ] || die "POST /api/queries for [$1] -> $code: $(head -c 500 "$TMP/create.json")"
    json_field "$TMP/create.json" 'j["query_slug"]'
}
fetch_page() { # fetch_page SLUG PAGE OUTFILE: retries until 200 (materialisation), max 180 s
    local slug=$1 page=$2 outf=$3 code deadline=$((SECONDS + 180))
    while :; do
        code=$(curl -sS --max-time 180 -o "$outf" -w '%{http_code}' -H "x-api-key: $KEY" \
            "$DAPI/api/queries/$slug/results?page_number=$page") || code=000
        [ "$code" = 200 ] && return 0
        [ $SECONDS -lt $deadline ] || die "page $page of $slug: HTTP $code after 180 s: $(head -c 500 "$outf")"
        kill -0 "$DAPI_PID" 2>/dev/null || die "dapi died while materialising $slug"
        sleep 0.2
    done
}

note "counting rows of nekt_raw tables"
BIG_TABLE=
BIG_COUNT=0
COUNTS=
for t in customers orders order_items; do
    slug=$(create_query "SELECT count(*) AS n FROM \"nekt_raw\".\"$t\"")
    fetch_page "$slug" 1 "$TMP/count.json"
    n=$(json_field "$TMP/count.json" 'list(j["data"][0].values())[0]')
    COUNTS+="$t=$n "
    if [ "$n" -gt "$BIG_COUNT" ]; then BIG_COUNT=$n; BIG_TABLE=$t; fi
done
note "row counts: $COUNTS-> largest nekt_raw.$BIG_TABLE ($BIG_COUNT rows)"

timed_query() { # timed_query SQL -> sets SLUG, TTFP_MS, CREATE_MS, PAGE1_MS; page 1 in $TMP/p1.json
    local t0 t1 code
    t0=$(date +%s%N)
    code=$(api_post_query "$1" "$TMP/create.json") || die "POST /api/queries failed (curl)"
    t1=$(date +%s%N)
    [ "$code" = 200 ] || die "POST /api/queries for [$1] -> $code: $(head -c 500 "$TMP/create.json")"
    SLUG=$(json_field "$TMP/create.json" 'j["query_slug"]')
    fetch_page "$SLUG" 1 "$TMP/p1.json"
    TTFP_MS=$(( ($(date +%s%N) - t0) / 1000000 ))
    CREATE_MS=$(( (t1 - t0) / 1000000 ))
    PAGE1_MS=$((TTFP_MS - CREATE_MS))
}

note "creating SELECT * FROM nekt_raw.$BIG_TABLE and waiting for page 1"
timed_query "SELECT * FROM \"nekt_raw\".\"$BIG_TABLE\""
PAGE_SLUG=$SLUG
PAGE_SQL="SELECT * FROM \"nekt_raw\".\"$BIG_TABLE\""
cp "$TMP/p1.json" "$NG/www/page1.json"
cp "$TMP/p1.json" "$OUT/page1.json"
PAGE_BYTES=$(stat -c %s "$NG/www/page1.json")
PAGE_ROWS=$(json_field "$TMP/p1.json" 'len(j["data"])')

if [ "$BIG_COUNT" -ge "$BIG_ROWS" ]; then
    LAT_SLUG=$PAGE_SLUG; LAT_SQL=$PAGE_SQL; LAT_ROWS=$BIG_COUNT
    TTFP_SQL=$PAGE_SQL
else
    note "largest table has $BIG_COUNT < $BIG_ROWS rows: using SELECT * FROM range($BIG_ROWS) for parts c and e"
    LAT_SQL="SELECT * FROM range($BIG_ROWS)"
    timed_query "$LAT_SQL"
    LAT_SLUG=$SLUG; LAT_ROWS=$BIG_ROWS
    TTFP_SQL=$LAT_SQL
fi
fetch_page "$LAT_SLUG" "$LAST_PAGE" "$TMP/plast.json"
LAST_ROWS=$(json_field "$TMP/plast.json" 'len(j["data"])')
[ "$LAST_ROWS" -gt 0 ] || note "WARNING: page $LAST_PAGE of the $LAT_ROWS-row result is empty"

# Result reuse: the same query again shares the stored result (X-Dapi-Reused: true).
FRESH_TTFP_MS=$TTFP_MS; FRESH_CREATE_MS=$CREATE_MS; FRESH_PAGE1_MS=$PAGE1_MS
note "creating the same query again (result reuse) and waiting for page 1"
timed_query "$TTFP_SQL"
REUSE_TTFP_MS=$TTFP_MS; REUSE_CREATE_MS=$CREATE_MS; REUSE_PAGE1_MS=$PAGE1_MS
REUSED=no
grep -qi '^x-dapi-reused: *true' "$TMP/create.headers" && REUSED=yes
[ "$REUSED" = yes ] || note "WARNING: the second creation was not reused"
TTFP_MS=$FRESH_TTFP_MS; CREATE_MS=$FRESH_CREATE_MS; PAGE1_MS=$FRESH_PAGE1_MS

# Progressive pages: page 1 of a fresh run (no reuse) is served once its 100 rows are written,
# long before the run ends. Timed in one python process: e's curl and python start-ups would
# dominate a page-1 time of a few ms.
note "page 1 vs the whole run of [$TTFP_SQL], 3 fresh runs"
read -r FP_PAGE1_MS FP_FULL_MS FP_R FP_HIT_MS FP_HIT_R FP_EACH < <(timeout 900 python3 "$ROOT/bench/first-page.py" \
    "$DAPI" "$KEY" "$TTFP_SQL" 3) || die "bench/first-page.py failed"

# The nginx file must be byte-identical to what dapi serves.
curl -fsS --max-time 10 -o "$TMP/ng-page1.json" "$NGINX/page1.json"
curl -fsS --max-time 10 -o "$TMP/dapi-page1.json" -H "x-api-key: $KEY" \
    "$DAPI/api/queries/$PAGE_SLUG/results?page_number=1"
cmp -s "$TMP/ng-page1.json" "$TMP/dapi-page1.json" \
    || note "WARNING: dapi's page 1 changed between requests; nginx serves the first copy"
# The same page as dapi sends it to a client that accepts zstd (its stored frame between two
# small frames of the envelope), for nginx to serve as a static file with that encoding.
curl -fsS --max-time 10 -o "$NG/www/page1.zst" -H "x-api-key: $KEY" -H 'Accept-Encoding: zstd' \
    "$DAPI/api/queries/$PAGE_SLUG/results?page_number=1"
ZPAGE_BYTES=$(stat -c %s "$NG/www/page1.zst")
zstd -dcq "$NG/www/page1.zst" | cmp -s - "$TMP/dapi-page1.json" \
    || die "dapi's zstd page 1 does not decode to its plain page 1"
curl -fsS --max-time 10 -o "$TMP/ng-page1.zst" -H 'Accept-Encoding: zstd' "$NGINX/page1.zst"
cmp -s "$TMP/ng-page1.zst" "$NG/www/page1.zst" || die "nginx does not serve the zstd page as is"
# The same page as dapi sends it to a client that accepts gzip and not zstd (gzipped once,
# then kept in its page cache), for nginx to serve as a static file with that encoding.
curl -fsS --max-time 10 -o "$NG/www/page1.gz" -H "x-api-key: $KEY" -H 'Accept-Encoding: gzip' \
    "$DAPI/api/queries/$PAGE_SLUG/results?page_number=1"
GPAGE_BYTES=$(stat -c %s "$NG/www/page1.gz")
gzip -dc <"$NG/www/page1.gz" | cmp -s - "$TMP/dapi-page1.json" \
    || die "dapi's gzip page 1 does not decode to its plain page 1"
curl -fsS --max-time 10 -o "$TMP/ng-page1.gz" -H 'Accept-Encoding: gzip' "$NGINX/page1.gz"
cmp -s "$TMP/ng-page1.gz" "$NG/www/page1.gz" || die "nginx does not serve the gzip page as is"

# Disk bytes of the 1M-row result: the file as stored (DAPIRES2, zstd pages) and what the
# same rows took as text before (DAPIRES1: header, rows, pages + 1 offsets) — the sum of the
# pages' decoded lengths, which the file's index records; page 1's is checked against the
# plain page dapi serves.
read -r DISK_AFTER DISK_BEFORE DISK_PAGE1 < <(python3 - "$STATE/queries/$LAT_SLUG/result.bin" <<'PY'
import os, struct, sys
f = open(sys.argv[1], "rb")
h = f.read(64)
assert h[:8] == b"DAPIRES2", h[:8]
rows, pages, _, data_len, index_off, total = struct.unpack("<6Q", h[8:56])
f.seek(index_off + 8 * (pages + 1))
lens = struct.unpack("<%dQ" % pages, f.read(8 * pages))
print(os.path.getsize(sys.argv[1]), 64 + sum(lens) + 8 * (pages + 1), lens[0] if lens else 0)
PY
) || die "cannot read the 1M-row result file"
if [ "$LAT_SLUG" = "$PAGE_SLUG" ]; then
    env_len=$(python3 -c 'import sys; b=open(sys.argv[1],"rb").read(); print(b.index(b"\"data\":[") + 8 + 2)' "$TMP/dapi-page1.json")
    [ $((PAGE_BYTES - env_len)) -eq "$DISK_PAGE1" ] \
        || note "WARNING: page 1's rows are $((PAGE_BYTES - env_len)) bytes, the index says $DISK_PAGE1"
fi

# i. A whole 1M-row result to NDJSON end to end — `dapi query -f ndjson` (create, run, one
# streamed export) into a file — against DuckDB itself running the same query and COPYing it
# to a JSON file (bench/duckdb-copy.c, over the same files as dapi's view). Three runs each,
# medians; dapi's runs are fresh (a WHERE clause that changes nothing but the query's
# identity: no result reuse).
COPY_BIN=${COPY_BIN:-$ROOT/build/bench/duckdb-copy}
EXPORT_SQL="SELECT * FROM \"nekt_raw\".\"$BIG_TABLE\""
median3() { printf '%s\n' "$@" | sort -n | sed -n 2p; }
note "j. $EXPORT_SQL to NDJSON: dapi query vs DuckDB COPY, 3 runs each"
if [ -x "$COPY_BIN" ]; then
    if [ -d "$DATA/nekt_raw/$BIG_TABLE" ]; then
        SRC="read_parquet('$DATA/nekt_raw/$BIG_TABLE/*/*.parquet', hive_partitioning = true, union_by_name = true)"
    else
        SRC="read_parquet('$DATA/nekt_raw/$BIG_TABLE.parquet')"
    fi
    DUCK_EACH=; DAPI_EACH=
    for i in 1 2 3; do
        ms=$(timeout 600 "$COPY_BIN" "CREATE SCHEMA nekt_raw; CREATE VIEW nekt_raw.\"$BIG_TABLE\" AS SELECT * FROM $SRC" \
            "$EXPORT_SQL" "$TMP/duck.json") || die "bench/duckdb-copy failed"
        DUCK_EACH+="$ms "
        t0=$(date +%s%N)
        DAPI_URL=$DAPI DAPI_API_KEY=$KEY timeout 600 "$DAPI_BIN" query -q -f ndjson \
            "$EXPORT_SQL WHERE $i > 0" >"$TMP/dapi.ndjson" || die "dapi query -f ndjson failed"
        DAPI_EACH+="$(( ($(date +%s%N) - t0) / 1000000 )) "
    done
    EXP_DUCK_MS=$(median3 $DUCK_EACH); EXP_DAPI_MS=$(median3 $DAPI_EACH)
    EXP_ROWS=$(wc -l <"$TMP/dapi.ndjson"); EXP_DUCK_ROWS=$(wc -l <"$TMP/duck.json")
    [ "$EXP_ROWS" = "$EXP_DUCK_ROWS" ] || note "WARNING: dapi wrote $EXP_ROWS rows, DuckDB $EXP_DUCK_ROWS"
    EXP_BYTES=$(stat -c %s "$TMP/dapi.ndjson"); EXP_DUCK_BYTES=$(stat -c %s "$TMP/duck.json")
    rm -f "$TMP/dapi.ndjson" "$TMP/duck.json"
else
    note "WARNING: $COPY_BIN missing (make build/bench/duckdb-copy): part i skipped"
    EXP_DUCK_MS=0; EXP_DAPI_MS=0; EXP_ROWS=0; EXP_BYTES=0; EXP_DUCK_BYTES=0; DUCK_EACH=; DAPI_EACH=
fi

# --- 5. measurements ---------------------------------------------------------------------------
# run_wrk NAME ARGS... : full wrk output in bench/out/wrk-NAME.txt
run_wrk() {
    local name=$1; shift
    local d lim
    d=$(printf '%s\n' "$@" | sed -n 's/^-d//p' | head -n 1)
    lim=$(( $(secs "${d:-10s}") + 30 ))
    timeout "$lim" "$WRK_BIN" "$@" >"$OUT/wrk-$name.txt" 2>&1 \
        || { cat "$OUT/wrk-$name.txt" >&2; die "wrk $name failed"; }
    if grep -qE 'Non-2xx|Socket errors' "$OUT/wrk-$name.txt"; then
        note "WARNING ($name): $(grep -E 'Non-2xx|Socket errors' "$OUT/wrk-$name.txt" | tr -s ' ' | tr '\n' ';')"
    fi
}
rps() { awk '/^Requests\/sec:/ {printf "%.0f", $2}' "$OUT/wrk-$1.txt"; }
xfer() { awk '/^Transfer\/sec:/ {print $2}' "$OUT/wrk-$1.txt"; }
errs() { # non-2xx + socket errors
    awk '/Non-2xx or 3xx responses:/ {n+=$NF} /Socket errors:/ {gsub(",","");
         for (i=1;i<=NF;i++) if ($i ~ /^[0-9]+$/) n+=$i} END {print n+0}' "$OUT/wrk-$1.txt"
}
to_ms() { # wrk latency "123.45us" / "1.2ms" / "1.5s" / "2.0m" -> ms
    awk -v v="$1" 'BEGIN { n = v + 0; u = v; sub(/^[0-9.]+/, "", u);
        if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000;
        printf "%.3f", n }'
}
lat_mean() { to_ms "$(awk '$1 == "Latency" && NF >= 4 {print $2; exit}' "$OUT/wrk-$1.txt")"; }
lat_pct() { to_ms "$(awk -v p="$2%" '$1 == p {print $2; exit}' "$OUT/wrk-$1.txt")"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
verdict() { # verdict RATIO OP TARGET
    awk -v r="$1" -v op="$2" -v t="$3" 'BEGIN { if (r == "n/a") { print "MISS"; exit }
        ok = (op == ">=") ? (r + 0 >= t + 0) : (r + 0 <= t + 0); print ok ? "PASS" : "MISS" }'
}

# CPU accounting, to tell a quiet machine from a shared one: jiffies used by everything
# (/proc/stat) minus those used by dapi, nginx (master + workers) and this script's children
# (wrk, curl, python3) = CPU taken by other processes during the measurements.
cpu_total_busy() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat; }
cpu_total_all() { awk '/^cpu / {s = 0; for (i = 2; i <= NF; i++) s += $i; print s}' /proc/stat; }
pid_cpu() { # utime + stime of PID in jiffies (0 if gone)
    local f
    f=$(cat "/proc/$1/stat" 2>/dev/null) || { echo 0; return; }
    awk '{print $12 + $13}' <<<"${f##*) }"
}
ours_cpu() { # sets OURS_CPU; must run in this shell (not in $(...)) for `times` to count wrk
    local sum=0 p kids
    times >"$TMP/times"
    sum=$((sum + $(pid_cpu "$DAPI_PID") + $(pid_cpu "$NGINX_PID")))
    kids=$(cat "/proc/$NGINX_PID/task/$NGINX_PID/children" 2>/dev/null || true)
    for p in $kids; do sum=$((sum + $(pid_cpu "$p"))); done
    # reaped children of this shell (wrk, curl, python3), in seconds -> jiffies
    sum=$((sum + $(awk -v hz="$(getconf CLK_TCK)" 'NR == 2 {
        t = 0; for (i = 1; i <= 2; i++) { v = $i; m = v; sub(/m.*/, "", m); sub(/^[0-9]+m/, "", v);
        sub(/s$/, "", v); t += m * 60 + v } printf "%d", t * hz }' "$TMP/times")))
    OURS_CPU=$sum
}
ours_cpu; CPU_OURS0=$OURS_CPU; CPU_BUSY0=$(cpu_total_busy); CPU_ALL0=$(cpu_total_all)
LOADAVG0=$(cut -d' ' -f1-3 /proc/loadavg)

HDR=(-H "x-api-key: $KEY")
LOAD=(-t"$THREADS" -c"$CONNS")
D_HEALTH=$DAPI/api/health
N_HEALTH=$NGINX/health
D_PAGE="$DAPI/api/queries/$PAGE_SLUG/results?page_number=1"
N_PAGE=$NGINX/page1.json
N_ZPAGE=$NGINX/page1.zst
ZHDR=(-H 'Accept-Encoding: zstd')
N_GPAGE=$NGINX/page1.gz
GHDR=(-H 'Accept-Encoding: gzip, deflate')

# wrk_pair NAME DAPI_URL NGINX_URL [wrk args]: a warm-up of each, then ROUNDS rounds
# alternating dapi and nginx (wrk-NAME-dapi-R.txt, wrk-NAME-nginx-R.txt)
wrk_pair() {
    local name=$1 d=$2 n=$3
    shift 3
    run_wrk "warm-$name-dapi" "${LOAD[@]}" -d"$WARM" "$@" "$d"
    run_wrk "warm-$name-nginx" "${LOAD[@]}" -d"$WARM" "$@" "$n"
    for r in $(seq "$ROUNDS"); do
        run_wrk "$name-dapi-$r" "${LOAD[@]}" -d"$DUR" "$@" "$d"
        run_wrk "$name-nginx-$r" "${LOAD[@]}" -d"$DUR" "$@" "$n"
    done
}

note "a. health: warm-up $WARM each, then $DUR each, alternating dapi / nginx"
wrk_pair health "$D_HEALTH" "$N_HEALTH"
note "b. results page 1 ($PAGE_BYTES bytes): warm-up $WARM each, then $DUR each, alternating"
wrk_pair page "$D_PAGE" "$N_PAGE" "${HDR[@]}"
note "g. results page 1 compressed ($ZPAGE_BYTES bytes, zstd): warm-up $WARM each, then $DUR each, alternating"
wrk_pair zpage "$D_PAGE" "$N_ZPAGE" "${HDR[@]}" "${ZHDR[@]}"
note "g. results page 1 gzipped ($GPAGE_BYTES bytes, a client taking gzip, deflate): warm-up $WARM each, then $DUR each, alternating"
wrk_pair gpage "$D_PAGE" "$N_GPAGE" "${HDR[@]}" "${GHDR[@]}"

note "c. latency, 1 connection: page 1 vs page $LAST_PAGE of the $LAT_ROWS-row result, $LAT_DUR each x $LAT_NR"
L_FIRST="$DAPI/api/queries/$LAT_SLUG/results?page_number=1"
L_LAST="$DAPI/api/queries/$LAT_SLUG/results?page_number=$LAST_PAGE"
run_wrk warm-lat-first -t1 -c1 -d"$WARM" "${HDR[@]}" "$L_FIRST"
run_wrk warm-lat-last -t1 -c1 -d"$WARM" "${HDR[@]}" "$L_LAST"
for r in $(seq "$LAT_NR"); do # (a mean over one 5 s run moves with one stall: rounds, the median kept)
    run_wrk "lat-first-$r" -t1 -c1 -d"$LAT_DUR" --latency "${HDR[@]}" "$L_FIRST"
    run_wrk "lat-last-$r" -t1 -c1 -d"$LAT_DUR" --latency "${HDR[@]}" "$L_LAST"
done

# i. small queries: create + page 1 of SELECT 1 (each runs: no reuse), $SQ_CONNS keep-alive
# clients, against a dapi of its own whose state dir is on a real disk, then on tmpfs.
fs_type() { stat -f -c %T "$1" 2>/dev/null || echo unknown; }
smallq_run() { # smallq_run NAME DIR: a fresh dapi with its state dir in DIR; smallq-NAME.txt
    # The state dirs are removed at exit, not between runs: deleting tens of thousands of
    # files right before the next disk run would measure ext4's allocator skipping the inodes
    # freed in the last 30 s (docs/design.md, Durability), not dapi.
    # (SQ_DATA: another lake than the bench's; SQ_ARGS: more settings — part k; SQ_LOG_DIR:
    # put the creation log alone there — queries/.log a symbolic link to a file in that dir)
    local name=$1 dir=$2 port= _ SQ_STATE SQ_LOG
    SQ_STATE=$(mktemp -d "$dir/dapi-bench-state.XXXXXX")
    SQ_STATES+=("$SQ_STATE")
    if [ -n "${SQ_LOG_DIR:-}" ]; then
        SQ_LOG=$(mktemp "$SQ_LOG_DIR/dapi-bench-log.XXXXXX")
        SQ_STATES+=("$SQ_LOG")
        rm -f "$SQ_LOG" # dapi makes it (1 MiB of zeros) through the link
        mkdir -p "$SQ_STATE/queries"
        ln -s "$SQ_LOG" "$SQ_STATE/queries/.log"
    fi
    DAPI_API_KEYS=$KEY "$DAPI_BIN" serve --host $HOST --port 0 --data-dir "${SQ_DATA:-$DATA}" \
        --state-dir "$SQ_STATE" --log-format text ${DAPI_EXTRA[@]+"${DAPI_EXTRA[@]}"} ${SQ_ARGS:-} \
        >"$TMP/sq.stdout" 2>"$OUT/dapi-smallq-$name.log" &
    SQ_PID=$!
    for _ in $(seq 300); do
        port=$(sed -n 's|.*dapi listening on http://127\.0\.0\.1:\([0-9][0-9]*\).*|\1|p' "$TMP/sq.stdout" | head -n 1)
        [ -n "$port" ] && break
        kill -0 "$SQ_PID" 2>/dev/null || die "dapi ($name) exited at start"
        sleep 0.1
    done
    [ -n "$port" ] || die "dapi ($name) did not start within 30 s"
    if [ -n "${SQ_FILL:-}" ]; then # (SQ_FILL seconds of the same queries first: part l)
        timeout $((SQ_FILL + 60)) "$SMALLQ_BIN" $HOST "$port" "$KEY" "$SQ_CONNS" "$SQ_FILL" \
            >"$OUT/smallq-fill-$name.txt" 2>&1 || die "smallq fill ($name) failed"
    fi
    timeout $(( $(secs "$WARM") + 60 )) "$SMALLQ_BIN" $HOST "$port" "$KEY" "$SQ_CONNS" "$(secs "$WARM")" \
        >"$OUT/smallq-warm-$name.txt" 2>&1 || die "smallq warm-up ($name) failed"
    timeout $(( $(secs "$DUR") + 60 )) "$SMALLQ_BIN" $HOST "$port" "$KEY" "$SQ_CONNS" "$(secs "$DUR")" \
        >"$OUT/smallq-$name.txt" 2>&1 || die "smallq ($name) failed: $(cat "$OUT/smallq-$name.txt")"
    stop_pid "$SQ_PID"; SQ_PID=
    # (the ceiling measures nothing if dapi wrote its log anywhere but through the link)
    [ -z "${SQ_LOG_DIR:-}" ] || { [ -L "$SQ_STATE/queries/.log" ] && [ -s "$SQ_LOG" ]; } ||
        die "smallq ($name): the creation log is not the file on the disk ($SQ_LOG)"
}
sq_qps() { awk '/^queries\/s:/ {printf "%.0f", $2}' "$OUT/smallq-$1.txt"; }
sq_failed() { awk '/^failed:/ {print $2}' "$OUT/smallq-$1.txt"; }
mkdir -p "$DISK_DIR"
DISK_FS=$(fs_type "$DISK_DIR"); TMPFS_FS=$(fs_type "$TMPFS_DIR")
[ "$DISK_FS" != tmpfs ] || note "WARNING: BENCH_DISK_DIR $DISK_DIR is on tmpfs: part i compares tmpfs with tmpfs"
[ "$TMPFS_FS" = tmpfs ] || note "WARNING: BENCH_TMPFS_DIR $TMPFS_DIR is not tmpfs ($TMPFS_FS)"
note "i. small queries, $SQ_CONNS clients: state dir on disk ($DISK_DIR, $DISK_FS), on tmpfs ($TMPFS_DIR), and on tmpfs with the creation log alone on disk, $DUR each x $SQ_NR"
for r in $(seq "$SQ_NR"); do
    smallq_run "disk-$r" "$DISK_DIR"
    smallq_run "tmpfs-$r" "$TMPFS_DIR"
    SQ_LOG_DIR=$DISK_DIR smallq_run "logdisk-$r" "$TMPFS_DIR"
done

# k. the same small queries over a lake of 200 tables x 20 CSV files (4,000 files), state dir
# on tmpfs: with the lake watched (--lake-watch auto: walked only after a change) and scanned
# for every query (--lake-watch off, as before the watch).
LK_DATA=$TMP/lake-4000
for t in $(seq 200); do
    mkdir -p "$LK_DATA/nekt_raw/t$t"
    for f in $(seq 20); do printf 'a,b\n%d,x\n' "$f" >"$LK_DATA/nekt_raw/t$t/part$f.csv"; done
done
note "k. small queries over a lake of 4,000 files: watched, then scanned for every query, $DUR each x $ROUNDS"
for r in $(seq "$ROUNDS"); do
    SQ_DATA=$LK_DATA SQ_ARGS="--lake-watch auto" smallq_run "lake-watch-$r" "$TMPFS_DIR"
    SQ_DATA=$LK_DATA SQ_ARGS="--lake-watch off" smallq_run "lake-off-$r" "$TMPFS_DIR"
done

# l. the loop of i (state dir on tmpfs) from a key at its quota: --max-state-bytes-per-key
# holds QUOTA_Q of its queries, filled first, so each creation deletes the key's oldest
# (docs/design.md, "Admission and quotas": that used to walk every kept query under the
# registry's lock). Against part i's tmpfs runs (a fresh key).
QUOTA_Q=16000
QUOTA_BYTES=$((QUOTA_Q * (8192 + 128))) # (each query's charge, and its one-row result)
note "l. small queries of a key at its quota ($QUOTA_Q queries), $DUR x $ROUNDS"
for r in $(seq "$ROUNDS"); do
    SQ_FILL=$((QUOTA_Q / 800 + 2)) SQ_ARGS="--max-state-bytes-per-key $QUOTA_BYTES" \
        smallq_run "quota-$r" "$TMPFS_DIR"
done

CPU_BUSY1=$(cpu_total_busy); CPU_ALL1=$(cpu_total_all); ours_cpu; CPU_OURS1=$OURS_CPU
FOREIGN_PCT=$(awk -v b=$((CPU_BUSY1 - CPU_BUSY0)) -v a=$((CPU_ALL1 - CPU_ALL0)) \
    -v o=$((CPU_OURS1 - CPU_OURS0)) 'BEGIN { f = (a > 0) ? 100 * (b - o) / a : 0;
    if (f < 0) f = 0; printf "%.0f", f }')

# d. peak RSS
kill -0 "$DAPI_PID" 2>/dev/null || die "dapi died during the benchmark (see bench/out/dapi.log)"
HWM_KB=$(awk '/^VmHWM:/ {print $2}' "/proc/$DAPI_PID/status")
RSS_KB=$(awk '/^VmRSS:/ {print $2}' "/proc/$DAPI_PID/status")

# --- 6. summary ----------------------------------------------------------------------------------
mean_rps() { # mean_rps PREFIX: mean req/s over the rounds
    local r sum=0
    for r in $(seq "$ROUNDS"); do sum=$((sum + $(rps "$1-$r"))); done
    echo $((sum / ROUNDS))
}
round_ratios() { # round_ratios WHAT: "r1 r2 ..." when there is more than one round
    local r out=
    [ "$ROUNDS" -gt 1 ] || return 0
    for r in $(seq "$ROUNDS"); do out+="$(ratio "$(rps "$1-dapi-$r")" "$(rps "$1-nginx-$r")") "; done
    echo "(rounds: ${out% })"
}
H_D=$(mean_rps health-dapi); H_N=$(mean_rps health-nginx); H_R=$(ratio "$H_D" "$H_N")
P_D=$(mean_rps page-dapi);   P_N=$(mean_rps page-nginx);   P_R=$(ratio "$P_D" "$P_N")
Z_D=$(mean_rps zpage-dapi);  Z_N=$(mean_rps zpage-nginx);  Z_R=$(ratio "$Z_D" "$Z_N")
G_D=$(mean_rps gpage-dapi);  G_N=$(mean_rps gpage-nginx);  G_R=$(ratio "$G_D" "$G_N")
SQ_D=0; SQ_T=0; SQ_L=0; SQ_ERRS=0; SQ_ROUNDS=; SQ_LROUNDS=
for r in $(seq "$SQ_NR"); do
    SQ_D=$((SQ_D + $(sq_qps "disk-$r"))); SQ_T=$((SQ_T + $(sq_qps "tmpfs-$r")))
    SQ_L=$((SQ_L + $(sq_qps "logdisk-$r")))
    SQ_ERRS=$((SQ_ERRS + $(sq_failed "disk-$r") + $(sq_failed "tmpfs-$r") + $(sq_failed "logdisk-$r")))
    SQ_ROUNDS+="$(ratio "$(sq_qps "disk-$r")" "$(sq_qps "tmpfs-$r")") "
    SQ_LROUNDS+="$(ratio "$(sq_qps "logdisk-$r")" "$(sq_qps "tmpfs-$r")") "
done
SQ_D=$((SQ_D / SQ_NR)); SQ_T=$((SQ_T / SQ_NR)); SQ_L=$((SQ_L / SQ_NR))
SQ_R=$(ratio "$SQ_D" "$SQ_T"); SQ_LR=$(ratio "$SQ_L" "$SQ_T")
[ "$SQ_NR" -gt 1 ] && SQ_ROUNDS="(rounds: ${SQ_ROUNDS% })" || SQ_ROUNDS=
[ "$SQ_NR" -gt 1 ] && SQ_LROUNDS="(rounds: ${SQ_LROUNDS% })" || SQ_LROUNDS=
LK_W=0; LK_O=0
for r in $(seq "$ROUNDS"); do
    LK_W=$((LK_W + $(sq_qps "lake-watch-$r"))); LK_O=$((LK_O + $(sq_qps "lake-off-$r")))
    SQ_ERRS=$((SQ_ERRS + $(sq_failed "lake-watch-$r") + $(sq_failed "lake-off-$r")))
done
LK_W=$((LK_W / ROUNDS)); LK_O=$((LK_O / ROUNDS))
QU=0; QU_FILL=0; QU_ROUNDS=
for r in $(seq "$ROUNDS"); do
    QU=$((QU + $(sq_qps "quota-$r"))); SQ_ERRS=$((SQ_ERRS + $(sq_failed "quota-$r")))
    f=$(awk '/^queries:/ {print $2}' "$OUT/smallq-fill-quota-$r.txt"); QU_FILL=$((QU_FILL + ${f:-0}))
    QU_ROUNDS+="$(ratio "$(sq_qps "quota-$r")" "$(sq_qps "tmpfs-$r")") "
done
QU=$((QU / ROUNDS)); QU_FILL=$((QU_FILL / ROUNDS)); QU_R=$(ratio "$QU" "$SQ_T")
[ "$ROUNDS" -gt 1 ] && QU_ROUNDS="(rounds: ${QU_ROUNDS% })" || QU_ROUNDS=
# part c: each round's ratio of means; the round with the median ratio is the one shown
L_ROUNDS=; L_BY=
for r in $(seq "$LAT_NR"); do
    rr=$(ratio "$(lat_mean "lat-last-$r")" "$(lat_mean "lat-first-$r")")
    L_ROUNDS+="$rr "; L_BY+="$rr $r"$'\n'
done
L_MID=$(printf '%s' "$L_BY" | sort -n | sed -n "$(( (LAT_NR + 1) / 2 ))p" | cut -d' ' -f2)
F_MEAN=$(lat_mean "lat-first-$L_MID"); F_P50=$(lat_pct "lat-first-$L_MID" 50); F_P99=$(lat_pct "lat-first-$L_MID" 99)
L_MEAN=$(lat_mean "lat-last-$L_MID");  L_P50=$(lat_pct "lat-last-$L_MID" 50);  L_P99=$(lat_pct "lat-last-$L_MID" 99)
L_R=$(ratio "$L_MEAN" "$F_MEAN")
F_RPS=$(rps "lat-first-$L_MID"); L_RPS=$(rps "lat-last-$L_MID")
[ "$LAT_NR" -gt 1 ] && L_ROUNDS="; rounds: ${L_ROUNDS% }, median shown" || L_ROUNDS=
ERRS=0
for f in "$OUT"/wrk-health-*.txt "$OUT"/wrk-page-*.txt "$OUT"/wrk-zpage-*.txt "$OUT"/wrk-gpage-*.txt "$OUT"/wrk-lat-*.txt; do
    n=${f##*/wrk-}; ERRS=$((ERRS + $(errs "${n%.txt}")))
done

first_line() { "$@" 2>&1 | head -n 1 || true; }
V_DAPI=$(first_line "$DAPI_BIN" --version)
V_NGINX=$(first_line "$NGINX_BIN" -v | sed 's/^nginx version: //')
V_WRK=$(first_line "$WRK_BIN" -v | sed 's/ *\[.*//; s/ *Copyright.*//')

{
    echo "dapi benchmark — $(date -u '+%Y-%m-%d %H:%M:%S UTC') — nproc $(nproc) — $(uname -sr)"
    echo "versions: $V_DAPI | $V_NGINX | $V_WRK"
    echo "lake: nekt_raw row counts ${COUNTS% } (sample-data took ${SAMPLE_MS} ms)"
    echo "load: wrk -t$THREADS -c$CONNS -d$DUR x $ROUNDS round(s) after a $WARM warm-up, dapi and nginx alternating;"
    echo "      nginx: $NGINX_WORKERS workers, keep-alive, access log off; dapi: ${BENCH_HTTP_THREADS:-default (2)} HTTP threads"
    echo
    printf '%-44s %12s %12s %7s %8s %s\n' "measure" "dapi" "nginx" "ratio" "target" "verdict"
    printf '%-44s %12s %12s %7s %8s %s\n' "a. GET health, req/s" "$H_D" "$H_N" "$H_R" ">= 0.9" \
        "$(verdict "$H_R" '>=' 0.9) $(round_ratios health)"
    printf '%-44s %12s %12s %7s %8s %s\n' "b. results page 1 ($PAGE_BYTES B, $PAGE_ROWS rows), req/s" \
        "$P_D" "$P_N" "$P_R" ">= 0.8" "$(verdict "$P_R" '>=' 0.8) $(round_ratios page)"
    printf '%-44s %12s %12s\n' "   same, transfer/s (round 1)" "$(xfer page-dapi-1)" "$(xfer page-nginx-1)"
    printf '%-44s %12s %12s %7s %8s %s\n' "g. page 1 as zstd ($ZPAGE_BYTES B), req/s" \
        "$Z_D" "$Z_N" "$Z_R" ">= 0.8" "$(verdict "$Z_R" '>=' 0.8) $(round_ratios zpage)"
    printf '%-44s %12s %12s\n' "   same, transfer/s (round 1)" "$(xfer zpage-dapi-1)" "$(xfer zpage-nginx-1)"
    printf '%-44s %12s %12s %7s %8s %s\n' "g. page 1 as gzip ($GPAGE_BYTES B), req/s" \
        "$G_D" "$G_N" "$G_R" ">= 0.8" "$(verdict "$G_R" '>=' 0.8) $(round_ratios gpage)"
    printf '%-44s %12s %12s\n' "   same, transfer/s (round 1)" "$(xfer gpage-dapi-1)" "$(xfer gpage-nginx-1)"
    echo
    echo "c. latency on the $LAT_ROWS-row result, 1 connection, $LAT_DUR each, $LAT_NR round(s) (ms):"
    printf '%-44s %9s %9s %9s %9s\n' "" "mean" "p50" "p99" "req/s"
    printf '%-44s %9s %9s %9s %9s\n' "   page 1" "$F_MEAN" "$F_P50" "$F_P99" "$F_RPS"
    printf '%-44s %9s %9s %9s %9s\n' "   page $LAST_PAGE ($LAST_ROWS rows)" "$L_MEAN" "$L_P50" "$L_P99" "$L_RPS"
    printf '%-44s %12s %12s %7s %8s %s\n' "   mean(page $LAST_PAGE) / mean(page 1)" "" "" "$L_R" "<= 1.5" \
        "$(verdict "$L_R" '<=' 1.5) (p50 ratio $(ratio "$L_P50" "$F_P50")$L_ROUNDS)"
    echo
    printf '%-44s %s\n' "d. dapi peak RSS (VmHWM)" "$((HWM_KB / 1024)) MiB ($HWM_KB kB; VmRSS at end $((RSS_KB / 1024)) MiB)"
    printf '%-44s %s\n' "h. disk bytes of the $LAT_ROWS-row result" \
        "$DISK_AFTER (zstd pages) vs $DISK_BEFORE as text before (DAPIRES1); ratio $(ratio "$DISK_AFTER" "$DISK_BEFORE")"
    printf '%-44s %s\n' "e. time to first page, $LAT_ROWS rows" "$TTFP_MS ms (POST $CREATE_MS ms + page 1 $PAGE1_MS ms; curl and python start-ups included)"
    printf '%-44s %s\n' "   query" "$TTFP_SQL"
    printf '%-44s %12s %12s %7s %8s %s\n' "   page 1 / whole run, fresh runs (median)" "$FP_PAGE1_MS ms" \
        "$FP_FULL_MS ms" "$FP_R" "<= 0.10" "$(verdict "$FP_R" '<=' 0.10) (page 1/whole ms: $FP_EACH)"
    printf '%-44s %12s %12s %7s\n' "f. POST + page 1, reuse hit / fresh (median)" "$FP_HIT_MS ms" \
        "$FP_PAGE1_MS ms" "$FP_HIT_R"
    printf '%-44s %s\n' "   the same with curl, as e (reuse hit: $REUSED)" \
        "$REUSE_TTFP_MS ms (POST $REUSE_CREATE_MS ms + page 1 $REUSE_PAGE1_MS ms); ÷ e: $(ratio "$REUSE_TTFP_MS" "$TTFP_MS")"
    printf '%-44s %12s %12s %7s %8s %s\n' "j. $EXP_ROWS rows to NDJSON (dapi query / DuckDB COPY)" \
        "$EXP_DAPI_MS ms" "$EXP_DUCK_MS ms" "$(ratio "$EXP_DAPI_MS" "$EXP_DUCK_MS")" "<= 1.3" \
        "$(verdict "$(ratio "$EXP_DAPI_MS" "$EXP_DUCK_MS")" '<=' 1.3) (ms each: dapi ${DAPI_EACH% }, DuckDB ${DUCK_EACH% }; $EXP_BYTES vs $EXP_DUCK_BYTES B)"
    echo
    echo "i. small queries: create + page 1 of SELECT 1, $SQ_CONNS keep-alive clients (bench/smallq), queries/s:"
    printf '%-44s %12s %12s %7s %8s %s\n' "" "disk" "tmpfs" "ratio" "target" "verdict"
    printf '%-44s %12s %12s %7s %8s %s\n' "   small queries disk/tmpfs" "$SQ_D" "$SQ_T" "$SQ_R" ">= 0.90" \
        "$(verdict "$SQ_R" '>=' 0.90) $SQ_ROUNDS"
    printf '%-44s %12s %12s %7s %8s %s\n' "   ceiling: creation log alone on disk/tmpfs" "$SQ_L" "$SQ_T" "$SQ_LR" "" \
        "reported: the most a store syncing each creation could reach here $SQ_LROUNDS"
    printf '%-44s %s\n' "   state dirs" "disk: $DISK_DIR ($DISK_FS); tmpfs: $TMPFS_DIR ($TMPFS_FS); failed requests: $SQ_ERRS"
    printf '%-44s %12s %12s %7s\n' "k. same, lake of 4,000 files (tmpfs)" "watched" "scanned" "ratio"
    printf '%-44s %12s %12s %7s %s\n' "   --lake-watch auto / off, queries/s" "$LK_W" "$LK_O" \
        "$(ratio "$LK_W" "$LK_O")" "(the one-table lake on tmpfs, part i: $SQ_T)"
    printf '%-44s %12s %12s %7s\n' "l. same, a key at its quota (tmpfs)" "at quota" "fresh" "ratio"
    printf '%-44s %12s %12s %7s %8s %s\n' "   each creation deletes its oldest, queries/s" "$QU" "$SQ_T" \
        "$QU_R" ">= 0.80" "$(verdict "$QU_R" '>=' 0.80) $QU_ROUNDS (quota: $QUOTA_Q queries; $QU_FILL made first)"
    echo
    echo "machine: load average $LOADAVG0 before the measurements; other processes used" \
        "$FOREIGN_PCT% of all CPU time during them"
    [ "$FOREIGN_PCT" -le 10 ] || echo "WARNING: the machine was shared (> 10% CPU elsewhere): ratios are unreliable, re-run on a quiet machine"
    if [ "$ERRS" -gt 0 ]; then
        echo "WARNING: $ERRS non-2xx responses or socket errors in the measured runs (see bench/out/wrk-*.txt)"
    else
        echo "no non-2xx responses or socket errors in the measured runs"
    fi
    echo "ratios compare runs on the same machine in the same run; expect ±30% run to run (bench/README.md)."
    echo "a MISS is reported, not failed: the bench measures, the tests assert behaviour."
} | tee "$OUT/summary.txt"
