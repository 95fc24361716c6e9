#!/usr/bin/env bash
# Runs the whole suite: unit test binaries (each its own process) and the integration tests
# (which start build/dapi on 127.0.0.1). Ends with one line "N passed, N failed" and exits
# non-zero on any failure.
set -uo pipefail
cd "$(dirname "$0")/.."

mode=${1:-all}
passed=0 failed=0 skipped=0

if [ "$mode" != "--integration-only" ]; then
    echo "== unit tests"
    for t in build/tests/test_*; do
        [ -x "$t" ] || continue
        out=$(timeout 300 "$t" 2>&1); rc=$?
        line=$(printf '%s\n' "$out" | grep -E '[0-9]+ passed, [0-9]+ failed' | tail -n 1)
        p=$(printf '%s' "$line" | sed -E 's/.* ([0-9]+) passed.*/\1/'); p=${p:-0}
        f=$(printf '%s' "$line" | sed -E 's/.* ([0-9]+) failed.*/\1/'); f=${f:-0}
        if [ $rc -ne 0 ] && [ "$f" -eq 0 ]; then
            f=1  # crashed, timed out or failed without saying so
            echo "FAIL $t exited with status $rc"
        fi
        [ "$f" -gt 0 ] && printf '%s\n' "$out" | grep -E '^FAIL' | head -n 50
        echo "$t: $p passed, $f failed"
        passed=$((passed + p)); failed=$((failed + f))
    done
fi

if [ "$mode" != "--unit-only" ]; then
    echo "== integration tests"
    out_file=$(mktemp)
    python3 tests/integration/run.py --bin build/dapi 2>&1 | tee "$out_file"
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
    passed=$((passed + p)); failed=$((failed + f)); skipped=$((skipped + s))
fi

if [ "$skipped" -gt 0 ]; then
    echo "$passed passed, $failed failed, $skipped skipped"
else
    echo "$passed passed, $failed failed"
fi
[ "$failed" -eq 0 ]
