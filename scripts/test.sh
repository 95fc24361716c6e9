#!/usr/bin/env bash
# Runs the whole suite: unit test binaries (every <build>/tests/<module>/test_*, each its own
# process) and the integration tests (which start <build>/dapi on 127.0.0.1). Ends with one
# line "N passed, N failed" and exits non-zero on any failure.
#
#   scripts/test.sh [--unit-only | --integration-only] [--build DIR] [--sanitizers]
#
# --build DIR    the build to test (default build/; `make asan` uses build-asan/).
# --sanitizers   DIR holds an ASan + UBSan build: run it with options that make every report
#                fatal and write it to DIR/sanitizer/<tool>.<pid>. A report fails the test
#                during which it was written (run.py checks after each test) or the unit
#                binary that wrote it, whatever the process's exit status was: a CLI run
#                that is expected to fail cannot hide a report behind its expected status.
set -uo pipefail
cd "$(dirname "$0")/.."

mode=all build=build sanitizers=0
while [ $# -gt 0 ]; do
    case $1 in
        --unit-only | --integration-only) mode=$1 ;;
        --build) build=${2:?--build needs a directory}; shift ;;
        --sanitizers) sanitizers=1 ;;
        *) echo "usage: scripts/test.sh [--unit-only|--integration-only] [--build DIR] [--sanitizers]" >&2
           exit 2 ;;
    esac
    shift
done
passed=0 failed=0 skipped=0

if [ $sanitizers -eq 1 ]; then
    san_dir=$PWD/$build/sanitizer
    rm -rf "$san_dir" && mkdir -p "$san_dir"
    # halt_on_error: the first report ends the process (ASan does that anyway; UBSan is also
    # compiled with -fno-sanitize-recover). detect_leaks=1: LeakSanitizer runs at every exit,
    # DuckDB included, and the suite is leak-free without suppressions (checked: DuckDB
    # 1.4.4 frees what dapi's connections and results allocate once they are destroyed), so
    # a forgotten duckdb_destroy_* or free() is a failure. Reports go to files, not stderr,
    # so that no caller that captures or ignores stderr can lose one; the runners print them.
    # jemalloc inside libduckdb is built with the duckdb_je_ prefix and does not replace
    # malloc, so it coexists with ASan's allocator (DuckDB's buffer memory is simply not
    # tracked).
    export ASAN_OPTIONS="halt_on_error=1:detect_leaks=1:abort_on_error=0:log_path=$san_dir/asan"
    export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:log_path=$san_dir/ubsan"
    export LSAN_OPTIONS="log_path=$san_dir/lsan"
    echo "== sanitizer build $build (reports in $san_dir)"
fi

# Prints the sanitizer reports that appeared since the last call (marker file) and returns 1
# if there were any.
san_new_reports() {
    [ $sanitizers -eq 1 ] || return 0
    local found=0 f
    # (at any depth: each integration runner of --jobs has a directory of its own)
    while IFS= read -r f; do
        found=1
        echo "  sanitizer report $f:"
        head -n 40 "$f" | sed 's/^/    /'
        mv "$f" "$f.seen"
    done < <(find "$san_dir" -type f -name '*.*' ! -name '*.seen' 2>/dev/null | LC_ALL=C sort)
    [ $found -eq 0 ]
}

if [ "$mode" != "--integration-only" ]; then
    echo "== unit tests"
    # Every test binary under <build>/tests/, at any depth (they mirror src/ by path:
    # tests/<module>/test_X), in path order. The list comes in on fd 3, which the tests do not
    # inherit, so a test's stdin is the script's own.
    while IFS= read -r t <&3; do
        [ -x "$t" ] || continue
        # A binary whose source is gone (a test renamed, moved or deleted since that build)
        # would run old code: it is left out, and said so.
        src=tests/unit/${t#"$build"/tests/}.c
        if [ ! -f "$src" ]; then
            echo "skipping $t: no $src (a stale binary of an older build)"
            continue
        fi
        out=$(timeout 300 "$t" 2>&1 3<&-); rc=$?
        line=$(printf '%s\n' "$out" | grep -E '[0-9]+ passed, [0-9]+ failed' | tail -n 1)
        p=$(printf '%s' "$line" | sed -E 's/.* ([0-9]+) passed.*/\1/'); p=${p:-0}
        f=$(printf '%s' "$line" | sed -E 's/.* ([0-9]+) failed.*/\1/'); f=${f:-0}
        if [ $rc -ne 0 ] && [ "$f" -eq 0 ]; then
            f=1  # crashed, timed out or failed without saying so
            echo "FAIL $t exited with status $rc"
        fi
        [ "$f" -gt 0 ] && printf '%s\n' "$out" | grep -E '^FAIL' | head -n 50
        if ! san_new_reports; then
            echo "FAIL $t: sanitizer report (above)"
            [ "$f" -eq 0 ] && f=1  # its exit status usually counted it already
        fi
        echo "$t: $p passed, $f failed"
        passed=$((passed + p)); failed=$((failed + f))
    done 3< <(find "$build/tests" -type f -name 'test_*' ! -name '*.d' 2>/dev/null | LC_ALL=C sort)
fi

if [ "$mode" != "--unit-only" ]; then
    echo "== integration tests"
    out_file=$(mktemp)
    # DAPI_IT_JOBS test files at once (run.py --jobs; default 3: the suite mostly waits on
    # servers, timeouts and emulated latency, about 0.7 of one CPU when run alone)
    python3 tests/integration/run.py --bin "$build/dapi" --jobs "${DAPI_IT_JOBS:-3}" 2>&1 |
        tee "$out_file"
    rc=${PIPESTATUS[0]}
    line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$out_file" | tail -n 1)
    rm -f "$out_file"
    p=$(printf '%s' "$line" | sed -E 's/^([0-9]+) passed.*/\1/'); p=${p:-0}
    f=$(printf '%s' "$line" | sed -E 's/.* ([0-9]+) failed.*/\1/'); f=${f:-0}
    s=$(printf '%s' "$line" | grep -oE '[0-9]+ skipped' | grep -oE '[0-9]+'); s=${s:-0}
    if [ $rc -ne 0 ] && [ "$f" -eq 0 ]; then
        f=1
        echo "FAIL integration runner exited with status $rc"
    fi
    # run.py attributes reports to tests and marks them seen; anything left was written after
    # its last check (a process still exiting when the runner finished).
    if ! san_new_reports; then
        echo "FAIL integration: sanitizer report after the last test (above)"
        f=$((f + 1))
    fi
    passed=$((passed + p)); failed=$((failed + f)); skipped=$((skipped + s))
fi

if [ "$skipped" -gt 0 ]; then
    echo "$passed passed, $failed failed, $skipped skipped"
else
    echo "$passed passed, $failed failed"
fi
[ "$failed" -eq 0 ]
