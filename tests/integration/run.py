#!/usr/bin/env python3
"""dapi integration test runner (Python 3 standard library only).

    tests/integration/run.py [--bin PATH] [-k SUBSTR] [--timeout S] [--list]

Discovers functions named test_* in tests/integration/test_*.py (in file order), runs each
in its own thread with a per-test timeout (default 60 s, or the @harness.timeout value), within
a budget for the whole suite (SUITE_BUDGET: a test not started by then fails as "not run"), and
prints one line per test:

    PASS test_api.test_health
    FAIL test_api.test_x: reason          (details and the server's stderr tail follow, indented)
    SKIP test_api.test_y: why

and finally exactly one line `N passed, N failed` (plus `, N skipped` if any). Exits 1 if
any test failed. A sanitizer report (ASAN_OPTIONS/UBSAN_OPTIONS/LSAN_OPTIONS log_path, set by
`make asan`) written during a test fails that test; one written when a file's shared server
stops fails "<file>.<shared server shutdown>".
-k keeps tests whose "file.function" name contains SUBSTR.
Set DAPI_IT_KEEP=1 to keep the temp dirs (server logs, lakes, state) for inspection.
"""

import argparse
import importlib
import os
import sys
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import harness  # noqa: E402

DEFAULT_TIMEOUT = 60.0
# seconds; tests not started by then fail as "not run". The whole suite takes about 530 s
# with the normal build and 650 s with the ASan build on a 2-vCPU machine: the budget stops a
# suite that is going wrong, not a slow machine (two runs of it stay far inside CI's 90 min).
SUITE_BUDGET = 1500.0


def discover(pattern):
    tests = []
    for fname in sorted(os.listdir(HERE)):
        if not (fname.startswith("test_") and fname.endswith(".py")):
            continue
        modname = fname[:-3]
        mod = importlib.import_module(modname)
        for name, obj in list(vars(mod).items()):
            if name.startswith("test_") and callable(obj) and getattr(obj, "__module__", modname) == modname:
                full = "%s.%s" % (modname, name)
                if pattern and pattern not in full:
                    continue
                tests.append((modname, full, obj))
    return tests


def one_line(text):
    return text.strip().splitlines()[0] if text.strip() else "(no message)"


def indent(text):
    return "\n".join("    " + l for l in text.rstrip().splitlines())


def run_test(full, fn, limit):
    """Returns (outcome, message) with outcome in PASS/FAIL/SKIP."""
    harness.CURRENT_TEST = full
    box = {}

    def target():
        try:
            fn()
            box["ok"] = True
        except harness.Skip as e:
            box["skip"] = str(e) or "skipped"
        except AssertionError as e:
            box["fail"] = str(e) or "assertion failed"
            tb = traceback.extract_tb(e.__traceback__)
            frames = [f for f in tb if os.path.basename(f.filename).startswith("test_")]
            if frames:
                box["where"] = "%s:%d" % (os.path.basename(frames[-1].filename), frames[-1].lineno)
        except BaseException as e:  # noqa: B902
            box["fail"] = "%s: %s" % (type(e).__name__, e)
            box["where"] = traceback.format_exc()

    t = threading.Thread(target=target, name=full, daemon=True)
    t.start()
    t.join(limit)
    extra = []
    if t.is_alive():
        outcome, msg = "FAIL", "timed out after %.0f s (a hang)" % limit
        extra += harness.unhealthy_shared(full)
        harness.reap_owned(full, force=True)
    elif "ok" in box:
        outcome, msg = "PASS", ""
    elif "skip" in box:
        outcome, msg = "SKIP", box["skip"]
    else:
        outcome, msg = "FAIL", box["fail"]
        if box.get("where"):
            extra.append("at " + box["where"].rstrip())
    extra += harness.reap_owned(full)
    damage = harness.sample_lake_damage()
    if damage:
        extra.append(damage)
        if outcome == "PASS":
            outcome, msg = "FAIL", damage
    crashes = harness.check_crashes()
    if crashes:
        if outcome != "FAIL":
            outcome, msg = "FAIL", one_line(crashes[0])
        extra += crashes
    reports = harness.sanitizer_reports()
    if reports:
        if outcome != "FAIL":
            outcome, msg = "FAIL", one_line(reports[0])
        extra += reports
    if extra and outcome == "PASS":
        outcome, msg = "FAIL", one_line(extra[0])
    if outcome == "FAIL":
        details = msg.strip().splitlines()[1:] if msg.strip() else []
        if details:
            extra.insert(0, "\n".join(details))
        # Server stderr tails for diagnosis (unless already included).
        for s in harness.servers_touched_by(full):
            diag = s.diagnostics(12)
            if not any(diag in x for x in extra):
                extra.append(diag)
        msg = one_line(msg)
    return outcome, msg, extra


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=os.path.join(harness.REPO_ROOT, "build", "dapi"))
    ap.add_argument("-k", dest="pattern", default=None)
    ap.add_argument("--timeout", type=float, default=None, help="override every per-test timeout")
    ap.add_argument("--list", action="store_true")
    opts = ap.parse_args()

    harness.BIN = os.path.abspath(opts.bin)
    tests = discover(opts.pattern)
    if opts.list:
        for _, full, _ in tests:
            print(full)
        return 0

    if not (os.path.isfile(harness.BIN) and os.access(harness.BIN, os.X_OK)):
        print("FAIL setup: server binary %s not found or not executable (run `make build/dapi`)" % harness.BIN)
        print("0 passed, 1 failed")
        return 1

    t_start = time.monotonic()
    passed = failed = skipped = 0
    current_mod = None

    def finish_module(mod):
        nonlocal failed
        # Shared servers stop here: LeakSanitizer reports at their exit belong to the file.
        for err in harness.teardown_module(mod) + harness.sanitizer_reports():
            failed += 1
            print("FAIL %s.<shared server shutdown>: %s" % (mod, one_line(err)))
            rest = err.strip().splitlines()[1:]
            if rest:
                print(indent("\n".join(rest)))
            sys.stdout.flush()

    try:
        for mod, full, fn in tests:
            if mod != current_mod:
                if current_mod is not None:
                    finish_module(current_mod)
                current_mod = mod
            if time.monotonic() - t_start > SUITE_BUDGET:
                failed += 1
                print("FAIL %s: not run: suite time budget of %.0f s exhausted" % (full, SUITE_BUDGET))
                continue
            limit = opts.timeout or getattr(fn, "_timeout", DEFAULT_TIMEOUT)
            t0 = time.monotonic()
            outcome, msg, extra = run_test(full, fn, limit)
            dt = time.monotonic() - t0
            if outcome == "PASS":
                passed += 1
                print("PASS %s" % full + ("  (%.1fs)" % dt if dt >= 5 else ""))
            elif outcome == "SKIP":
                skipped += 1
                print("SKIP %s: %s" % (full, msg))
            else:
                failed += 1
                print("FAIL %s: %s" % (full, msg))
                for e in extra:
                    print(indent(e))
            sys.stdout.flush()
        if current_mod is not None:
            finish_module(current_mod)
    finally:
        harness.kill_all()
        if os.environ.get("DAPI_IT_KEEP") and harness._root:
            print("(logs and temp dirs kept in %s)" % harness._root)
        harness.cleanup_root()

    print("(%.1f s)" % (time.monotonic() - t_start))
    summary = "%d passed, %d failed" % (passed, failed)
    if skipped:
        summary += ", %d skipped" % skipped
    print(summary)
    sys.stdout.flush()
    return 1 if failed else 0


if __name__ == "__main__":
    rc = main()
    sys.stdout.flush()
    os._exit(rc)  # do not wait for threads of timed-out tests
