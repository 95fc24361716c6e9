#!/usr/bin/env bash
# Builds the libFuzzer drivers (tests/fuzz/fuzz_*.c) into build/fuzz/ and runs each for
# SECONDS (default 30) on a scratch copy of its seed corpus (tests/fuzz/corpus/<driver>/ is
# never modified). Prints one line per driver and a final "N passed, N failed" line; exits 1
# if any driver failed to build or found a crash (the input is kept in
# build/fuzz/artifacts/<driver>/, the log in build/fuzz/logs/<driver>.log).
#
#   tests/fuzz/run.sh [SECONDS] [DRIVER...]     e.g. tests/fuzz/run.sh 60 fuzz_page
#
# Environment: CLANG (default clang), FUZZ_JOBS (drivers run at once, default 1),
# FUZZ_ARGS (extra libFuzzer flags), FUZZ_PYINT_MIN_N (see README.md).
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1

secs=${1:-30}
shift $(($# > 0 ? 1 : 0))
case $secs in '' | *[!0-9]*) echo "usage: tests/fuzz/run.sh [SECONDS] [DRIVER...]" >&2; exit 2 ;; esac
CLANG=${CLANG:-clang}
jobs=${FUZZ_JOBS:-1}
OUT=build/fuzz
DUCKDB=third_party/duckdb
PKGS=$(sed -n "s/^PKGS *:= *//p" Makefile) # the libraries dapi links, as the Makefile lists them
# shellcheck disable=SC2086  # PKGS is a list
PKG_CFLAGS=$(pkg-config --cflags $PKGS 2>/dev/null)
# shellcheck disable=SC2086
PKG_LIBS=$(pkg-config --libs $PKGS 2>/dev/null)

if ! command -v "$CLANG" >/dev/null; then
    echo "fuzz: $CLANG not found (Debian: apt-get install clang libclang-rt-dev)" >&2
    exit 1
fi

# -fno-sanitize-recover makes every UBSan report fatal, so it counts as a crash.
SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined"
CFLAGS="-std=c17 -D_GNU_SOURCE -g -O1 -fno-omit-frame-pointer -pthread -Wall -Wextra
        -Wshadow -Wno-unused-parameter -I. -Iinclude -Isrc -Itests/fuzz
        -isystem $DUCKDB/include -DDUCKDB_API_NO_DEPRECATED"
BASE="src/base/buf.c src/base/err.c"

# driver -> the sources it links (instrumented with it) and extra link flags.
declare -A SRCS LIBS
SRCS[fuzz_jsonin]="src/base/jsonin.c";                           LIBS[fuzz_jsonin]="-ljansson"
SRCS[fuzz_json_str]="src/base/json.c $BASE";                     LIBS[fuzz_json_str]="-lm"
# result.c names its temporary files with dapi_random_base62 (src/auth/keys.c, OpenSSL).
SRCS[fuzz_result]="src/store/result.c src/store/codec.c src/engine/render.c src/base/json.c src/auth/keys.c src/base/clock.c $BASE"
LIBS[fuzz_result]="-lcrypto -lzstd -lm"
SRCS[fuzz_faults]="src/emu/faults.c";                            LIBS[fuzz_faults]=""
SRCS[fuzz_page]="src/client/page.c $BASE";                       LIBS[fuzz_page]=""
SRCS[fuzz_rows]="src/base/rows.c $BASE";                         LIBS[fuzz_rows]=""
SRCS[fuzz_sandbox]="src/engine/sandbox.c src/engine/allowlist.c src/base/jsonin.c"
LIBS[fuzz_sandbox]="-ljansson"
# dapi_api_parse_pyint lives in src/api/queries.c, which needs most of the library: link
# queries.c itself into the driver and the rest from an instrumented copy of the library.
SRCS[fuzz_pyint]="src/api/queries.c";                            LIBS[fuzz_pyint]="LIBDAPI"
# Bearer tokens and JWKS files (src/auth/jwt.c, OpenSSL; limits from ratelimit.c).
SRCS[fuzz_jwt]="src/auth/jwt.c src/auth/ratelimit.c src/auth/keys.c src/base/jsonin.c"
LIBS[fuzz_jwt]="-ljansson -lcrypto -lm"
all=(fuzz_jsonin fuzz_pyint fuzz_json_str fuzz_result fuzz_faults fuzz_page fuzz_rows fuzz_sandbox fuzz_jwt)
drivers=("$@")
[ ${#drivers[@]} -eq 0 ] && drivers=("${all[@]}")
for d in "${drivers[@]}"; do
    [ -n "${SRCS[$d]+x}" ] || { echo "fuzz: unknown driver $d (known: ${all[*]})" >&2; exit 2; }
done

mkdir -p "$OUT/obj" "$OUT/logs"

# The instrumented library for fuzz_pyint, rebuilt when any source, header, embedded file or
# this script changed.
build_libdapi() {
    local lib=$OUT/libdapi-fuzz.a
    if [ ! -f "$DUCKDB/include/duckdb.h" ]; then
        echo "fuzz: DuckDB is missing: run 'make deps' (scripts/deps.sh) first" >&2
        return 1
    fi
    if [ -f "$lib" ] && [ -z "$(find src include console docs/openapi.json tests/fuzz/run.sh -type f -newer "$lib" | head -n 1)" ]; then
        return 0
    fi
    local objs=() s o pids=() rc=0
    for s in src/*/*.c; do
        [ "$s" = src/app/main.c ] || [ "$s" = src/api/queries.c ] && continue
        o=$OUT/obj/${s//\//_}.o
        objs+=("$o")
        # shellcheck disable=SC2086  # the flag variables are lists
        $CLANG $CFLAGS $SAN -fsanitize=fuzzer-no-link $PKG_CFLAGS -c "$s" -o "$o" &
        pids+=($!)
    done
    # The embedded OpenAPI document (src/api/openapi.c serves it), generated as `make` does.
    python3 scripts/embed-openapi.py docs/openapi.json include/dapi/version.h "$OUT/obj/openapi.c" \
        && $CLANG $CFLAGS $SAN -c "$OUT/obj/openapi.c" -o "$OUT/obj/openapi.o" || rc=1
    objs+=("$OUT/obj/openapi.o")
    # The embedded console (src/api/console.c serves it), likewise.
    python3 scripts/embed-console.py "$OUT/obj/console.c" console/*.html console/*.css console/*.js \
        && $CLANG $CFLAGS $SAN -c "$OUT/obj/console.c" -o "$OUT/obj/console.o" || rc=1
    objs+=("$OUT/obj/console.o")
    for p in "${pids[@]}"; do wait "$p" || rc=1; done
    [ $rc -eq 0 ] || return 1
    rm -f "$lib" && ar rcs "$lib" "${objs[@]}"
}

LIBDAPI_LINK="$OUT/libdapi-fuzz.a $PKG_LIBS -L$DUCKDB/lib -lduckdb -Wl,-rpath,$PWD/$DUCKDB/lib -lm"

# Links the driver with the sources listed above. If that fails, the list no longer matches
# src/ (a parser gained a dependency): the link is retried with the instrumented library
# supplying whatever is missing, and the build log says so.
build_driver() {
    local d=$1 libs=${LIBS[$1]} log=$OUT/logs/$1.build.log
    [ "$libs" = LIBDAPI ] && libs="$PKG_CFLAGS $LIBDAPI_LINK"
    # shellcheck disable=SC2086  # the flag variables are lists
    $CLANG $CFLAGS $SAN -fsanitize=fuzzer -o "$OUT/$d" "tests/fuzz/$d.c" ${SRCS[$d]} $libs \
        >"$log" 2>&1 && return 0
    [ "${LIBS[$d]}" = LIBDAPI ] && return 1
    grep -q 'undefined reference' "$log" && build_libdapi >>"$log" 2>&1 || return 1
    echo "fuzz: $d: retrying the link with $OUT/libdapi-fuzz.a (update SRCS[$d] in run.sh)" \
        | tee -a "$log" >&2
    # shellcheck disable=SC2086
    $CLANG $CFLAGS $SAN -fsanitize=fuzzer -o "$OUT/$d" "tests/fuzz/$d.c" ${SRCS[$d]} $libs \
        $PKG_CFLAGS $LIBDAPI_LINK >>"$log" 2>&1
}

passed=0 failed=0
declare -A BUILT
need_lib=0
for d in "${drivers[@]}"; do [ "${LIBS[$d]}" = LIBDAPI ] && need_lib=1; done
lib_ok=1
if [ $need_lib -eq 1 ] && ! build_libdapi; then
    lib_ok=0
fi
for d in "${drivers[@]}"; do
    if [ "${LIBS[$d]}" = LIBDAPI ] && [ $lib_ok -eq 0 ]; then
        BUILT[$d]=0
    elif build_driver "$d"; then
        BUILT[$d]=1
    else
        BUILT[$d]=0
    fi
done

run_driver() {
    local d=$1 work log=$OUT/logs/$1.log art=$OUT/artifacts/$1/ dict=()
    work=$(mktemp -d "${TMPDIR:-/tmp}/dapi-fuzz-$d.XXXXXX")
    mkdir -p "$work/corpus" "$art"
    [ -d "tests/fuzz/corpus/$d" ] && cp -R "tests/fuzz/corpus/$d/." "$work/corpus/"
    [ -f "tests/fuzz/dict/$d.dict" ] && dict=("-dict=tests/fuzz/dict/$d.dict")
    # shellcheck disable=SC2086
    "$OUT/$d" -max_total_time="$secs" -max_len=65536 -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="$art" "${dict[@]}" ${FUZZ_ARGS:-} \
        "$work/corpus" >"$log" 2>&1
    echo $? >"$work/rc"
    cp "$work/rc" "$OUT/logs/$d.rc"
    rm -rf "$work"
}

summary() {
    local d=$1 log=$OUT/logs/$1.log rc execs t art
    if [ "${BUILT[$d]}" != 1 ]; then
        echo "FAIL $d: build failed (see $OUT/logs/$d.build.log)"
        tail -n 20 "$OUT/logs/$d.build.log" 2>/dev/null | sed 's/^/    /'
        return 1
    fi
    rc=$(cat "$OUT/logs/$d.rc" 2>/dev/null || echo 99)
    execs=$(grep -oE 'stat::number_of_executed_units: [0-9]+' "$log" | grep -oE '[0-9]+$' | tail -n 1)
    [ -n "$execs" ] || execs=$(grep -oE '^#[0-9]+' "$log" | tail -n 1 | tr -d '#')
    t=$(grep -oE 'Done [0-9]+ runs in [0-9]+ second' "$log" | grep -oE 'in [0-9]+' | grep -oE '[0-9]+')
    [ -n "$t" ] || t="?"
    if [ "$rc" = 0 ]; then
        printf 'PASS %-14s %12s execs in %s s (%s/s)\n' "$d" "${execs:-?}" "$t" \
            "$([ "$t" != "?" ] && [ "$t" -gt 0 ] && echo $((${execs:-0} / t)) || echo '?')"
        return 0
    fi
    art=$(grep -oE "Test unit written to [^ ]+" "$log" | tail -n 1 | sed 's/Test unit written to //')
    printf 'FAIL %-14s exit %s after %s execs: %s\n' "$d" "$rc" "${execs:-?}" \
        "$(grep -m1 -E '^==[0-9]+==ERROR|^==== invariant violated|runtime error|SUMMARY' "$log" | cut -c1-200)"
    [ -n "$art" ] && echo "    input: $art (reproduce: $OUT/$d $art)"
    echo "    log:   $log"
    return 1
}

# Run (FUZZ_JOBS at a time), then report in the drivers' order.
running=0
for d in "${drivers[@]}"; do
    rm -f "$OUT/logs/$d.rc"
    [ "${BUILT[$d]}" = 1 ] || continue
    run_driver "$d" &
    running=$((running + 1))
    if [ $running -ge "$jobs" ]; then
        wait -n 2>/dev/null || true
        running=$((running - 1))
    fi
done
wait

for d in "${drivers[@]}"; do
    if summary "$d"; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
done
echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
