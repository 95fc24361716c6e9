#!/usr/bin/env python3
"""dapi integration test runner (Python 3 standard library only).

    tests/integration/run.py [--bin PATH] [-k SUBSTR] [--timeout S] [--jobs N] [--list]

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

--jobs N (default: $DAPI_IT_JOBS, else 1) runs N files at once, each file in a runner process
of its own (its tests one after the other, as always: a file's shared servers and fixtures
stay within it). The longest files start first (FILE_SECONDS); a file's output is printed
whole when it ends. Tests marked @harness.alone (they assert a time bound that a busy machine
would break) are left out of that part and run afterwards, one at a time, with nothing else
running; then come the totals of all of them. Each runner gets sanitizer log paths of its
own (<log_path dir>/<name>/<tool>), so a report is still charged to the test during which it
was written. Files that run `make` in the tree (MAKE_FILES) share one runner.
Set DAPI_IT_KEEP=1 to keep the temp dirs (server logs, lakes, state) for inspection.
"""

import argparse
import importlib
import os
import re
import signal
import subprocess
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

# --jobs: how long each file took in a --jobs 3 run (normal build, 2 vCPUs, 2026-12-05), only
# to start the longest first; a file not listed counts as 10 s.
FILE_SECONDS = {
    "test_nekt": 136, "test_fairness": 112, "test_export": 56, "test_persistence": 37,
    "test_cli": 32, "test_lifecycle": 31, "test_build": 6, "test_install": 17, "test_limits": 19,
    "test_console": 16, "test_endpoints": 16, "test_keys": 12, "test_concurrency": 12,
    "test_health": 12, "test_connections": 9, "test_compression": 9, "test_ops": 9,
    "test_api": 8, "test_discovery": 7, "test_progressive": 7, "test_reuse": 6,
    "test_openapi": 6, "test_sandbox": 5, "test_metrics": 5, "test_sql": 4, "test_params": 3,
    "test_tokens": 3, "test_scopes": 2, "test_types": 1, "test_shutdown": 28,
}
# Files that run `make` in the source tree: never two makes at once, so one runner for them.
MAKE_FILES = ("test_build", "test_install")
SUMMARY_RE = re.compile(r"^(\d+) passed, (\d+) failed(?:, (\d+) skipped)?$")


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


def _child_env(unit):
    """The environment of unit's runner: sanitizer reports go to a directory of its own."""
    env = dict(os.environ)
    for var in ("ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS"):
        opts = env.get(var)
        if not opts:
            continue
        out = []
        for opt in opts.split(":"):
            if opt.startswith("log_path=") and len(opt) > len("log_path="):
                path = opt[len("log_path=") :]
                d = os.path.join(os.path.dirname(path), unit)
                os.makedirs(d, exist_ok=True)
                opt = "log_path=" + os.path.join(d, os.path.basename(path))
            out.append(opt)
        env[var] = ":".join(out)
    return env


def print_totals(t_start, passed, failed, skipped):
    """The run's last lines, "(T s)" then "N passed, N failed[, N skipped]"; its exit status."""
    print("(%.1f s)" % (time.monotonic() - t_start))
    summary = "%d passed, %d failed" % (passed, failed)
    if skipped:
        summary += ", %d skipped" % skipped
    print(summary)
    sys.stdout.flush()
    return 1 if failed else 0


def stop_runners(running):
    """Interrupts runners (SIGINT: each stops the servers it started, as at Ctrl-C), then kills
    those still there after 20 s."""
    for r in running:
        if r[1].poll() is None:
            r[1].send_signal(signal.SIGINT)
    deadline = time.monotonic() + 20
    for r in running:
        try:
            r[1].wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            r[1].kill()


def run_parallel(opts, tests, jobs):
    """--jobs: runs the files of tests in up to jobs runner processes at once; returns the
    exit status. Prints each file's output whole, then the totals."""
    mods = []
    for mod, _, _ in tests:
        if mod not in mods:
            mods.append(mod)
    units = [[m] for m in mods if m not in MAKE_FILES]
    together = [m for m in mods if m in MAKE_FILES]
    if together:
        units.append(together)
    units.sort(key=lambda u: -sum(FILE_SECONDS.get(m, 10.0) for m in u))
    units = [(u, "lanes") for u in units]
    alone_mods = []
    for mod, _, fn in tests:
        if getattr(fn, "_alone", False) and mod not in alone_mods:
            alone_mods.append(mod)
    t_start = time.monotonic()
    passed = failed = skipped = 0
    running = []  # (unit name, Popen, output list, reader thread, t0)

    def start(job):
        unit, part = job
        name = "+".join(unit) if part == "lanes" else "alone"
        cmd = [sys.executable, os.path.abspath(__file__), "--bin", opts.bin, "--jobs", "1",
               "--files", ",".join(unit), "--part", part]
        if opts.pattern:
            cmd += ["-k", opts.pattern]
        if opts.timeout:
            cmd += ["--timeout", str(opts.timeout)]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                errors="replace", env=_child_env(name))
        out = []
        reader = threading.Thread(target=lambda: out.extend(proc.stdout), daemon=True)
        reader.start()
        running.append((name, proc, out, reader, time.monotonic()))

    def finish(name, proc, out, reader, t0):
        nonlocal passed, failed, skipped
        reader.join()
        rc = proc.wait()
        summary = None
        for line in out:
            m = SUMMARY_RE.match(line.strip())
            if m:
                summary = m
                continue
            if re.match(r"^\(\d+\.\d+ s\)$", line.strip()):
                continue
            sys.stdout.write(line)
        if summary:
            p, f, sk = int(summary.group(1)), int(summary.group(2)), int(summary.group(3) or 0)
        else:
            p, f, sk = 0, 1, 0
            print("FAIL %s: its runner exited with status %s without a summary" % (name, rc))
        if rc != 0 and f == 0:
            f = 1
            print("FAIL %s: its runner exited with status %s" % (name, rc))
        print("== %s: %d passed, %d failed in %.1f s" % (name, p, f, time.monotonic() - t0))
        sys.stdout.flush()
        passed, failed, skipped = passed + p, failed + f, skipped + sk

    pending = list(units)
    try:
        while pending or running or alone_mods:
            while pending and len(running) < jobs:
                start(pending.pop(0))
            if not pending and not running and alone_mods:
                start((alone_mods, "alone"))  # the lanes are done: nothing runs beside it
                alone_mods = []
            time.sleep(0.1)
            for r in [r for r in running if r[1].poll() is not None]:
                running.remove(r)
                finish(*r)
            if time.monotonic() - t_start > SUITE_BUDGET + 120:
                for name, proc, out, reader, t0 in running:
                    print("FAIL %s: stopped: suite time budget of %.0f s exhausted" % (name, SUITE_BUDGET))
                    failed += 1
                stop_runners(running)
                running = []
                for unit, _ in pending:
                    print("FAIL %s: not run: suite time budget of %.0f s exhausted" % ("+".join(unit), SUITE_BUDGET))
                    failed += 1
                if alone_mods:
                    print("FAIL alone: not run: suite time budget of %.0f s exhausted" % SUITE_BUDGET)
                    failed += 1
                pending, alone_mods = [], []
    finally:
        stop_runners(running)
    return print_totals(t_start, passed, failed, skipped)


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
    ap.add_argument("--jobs", type=int, default=int(os.environ.get("DAPI_IT_JOBS") or 1),
                    help="files run at once, each in a runner of its own (default $DAPI_IT_JOBS or 1)")
    ap.add_argument("--files", default=None, help=argparse.SUPPRESS)  # a --jobs runner's files
    # ... and which of their tests: "lanes" (not @alone), "alone" (only those), "all"
    ap.add_argument("--part", default="all", choices=("all", "lanes", "alone"), help=argparse.SUPPRESS)
    opts = ap.parse_args()

    harness.BIN = os.path.abspath(opts.bin)
    opts.bin = harness.BIN
    tests = discover(opts.pattern)
    if opts.files is not None:
        order = opts.files.split(",")
        tests = sorted([t for t in tests if t[0] in order], key=lambda t: order.index(t[0]))
    if opts.part != "all":
        tests = [t for t in tests if bool(getattr(t[2], "_alone", False)) == (opts.part == "alone")]
    if opts.list:
        for _, full, _ in tests:
            print(full)
        return 0

    if not (os.path.isfile(harness.BIN) and os.access(harness.BIN, os.X_OK)):
        print("FAIL setup: server binary %s not found or not executable (run `make build/dapi`)" % harness.BIN)
        print("0 passed, 1 failed")
        return 1

    if opts.jobs > 1 and opts.files is None:
        return run_parallel(opts, tests, opts.jobs)

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

    return print_totals(t_start, passed, failed, skipped)


if __name__ == "__main__":
    rc = main()
    sys.stdout.flush()
    os._exit(rc)  # do not wait for threads of timed-out tests
