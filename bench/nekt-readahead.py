#!/usr/bin/env python3
"""v1 read-ahead benchmark: a client reads a v1 query's pages in order through
`dapi serve --backend nekt --nekt-api v1` in front of the Nekt emulator, whose upstream
executions take --latency-ms each (a fault rule), once per --nekt-read-ahead value. Prints the
time and the emulator's execution count for each. Loopback only; the processes it starts are
stopped by PID on exit. How to read it: bench/nekt.md.

    bench/nekt-readahead.py --pages 100 --latency-ms 1000 --read-ahead 0,4
"""

import argparse
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

KEY = "nektkey1"
EXECS = re.compile(r'access POST "/api/v1/explorer/queries/[^"]+/execution/" 201')


def start(binary, args, env, tmp, name):
    """Starts `dapi serve` with args; returns (process, port, stderr path)."""
    err = os.path.join(tmp, name + ".log")
    state = os.path.join(tmp, name + "-state")
    os.makedirs(state)
    cmd = [binary, "serve", "--host", "127.0.0.1", "--port", "0", "--state-dir", state] + args
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=open(err, "wb"), env=env, text=True)
    line = p.stdout.readline()  # "dapi listening on http://127.0.0.1:PORT"
    m = re.search(r":(\d+)\s*$", line)
    if not m:
        p.kill()
        sys.exit("bench/nekt-readahead: %s did not start (see %s)" % (name, err))
    return p, int(m.group(1)), err


def stop(p):
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def call(conn, method, path, body=None):
    hdrs = {"x-api-key": KEY}
    if body is not None:
        hdrs["content-type"] = "application/json"
    conn.request(method, path, body=body, headers=hdrs)
    r = conn.getresponse()
    data = r.read()
    if r.status != 200:
        sys.exit("bench/nekt-readahead: %s %s: HTTP %d %s" % (method, path, r.status, data[:300]))
    return json.loads(data)


def executions(path):
    time.sleep(0.6)  # access lines are flushed every 250 ms
    with open(path, errors="replace") as f:
        return len(EXECS.findall(f.read()))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "build", "dapi"))
    ap.add_argument("--pages", type=int, default=100, help="pages read in order (100 rows each)")
    ap.add_argument("--latency-ms", type=int, default=1000, help="time of one upstream execution")
    ap.add_argument("--read-ahead", default="0,4", help="--nekt-read-ahead values, comma-separated")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (servers' logs)")
    opts = ap.parse_args()
    rows = opts.pages * 100 - 50  # the last page has 50 rows
    sql = "SELECT i, i * 2 AS j, 'row ' || i AS s FROM range(%d) t(i) ORDER BY i" % rows
    tmp = tempfile.mkdtemp(prefix="dapi-bench-readahead.")
    procs = []
    try:
        lake = os.path.join(tmp, "lake")
        os.makedirs(lake)
        env = dict(os.environ, DAPI_API_KEYS="nektkey1,nektkey2")
        faults = "path=/api/v1/explorer/queries/,method=POST,latency_ms=%d" % opts.latency_ms
        emu, eport, elog = start(opts.bin, ["--data-dir", lake, "--emulate-nekt", "--workers", "8", "--emulate-faults", faults], env, tmp, "emu")
        procs.append(emu)
        fenv = {k: v for k, v in os.environ.items() if k not in ("DAPI_API_KEYS", "DAPI_NEKT_API_KEY")}
        print("pages=%d latency=%d ms per execution (emulator fault latency_ms)" % (opts.pages, opts.latency_ms))
        for k in [int(x) for x in opts.read_ahead.split(",")]:
            args = ["--backend", "nekt", "--nekt-api", "v1", "--nekt-url", "http://127.0.0.1:%d" % eport, "--nekt-read-ahead", str(k)]
            fwd, fport, _ = start(opts.bin, args, fenv, tmp, "fwd-ra%d" % k)
            procs.append(fwd)
            conn = http.client.HTTPConnection("127.0.0.1", fport, timeout=300)
            slug = call(conn, "POST", "/api/queries", json.dumps({"sql_query": sql}))["query_slug"]
            before = executions(elog)
            t0 = time.monotonic()
            got = 0
            for n in range(1, opts.pages + 1):
                got += len(call(conn, "GET", "/api/queries/%s/results?page_number=%d" % (slug, n))["data"])
            took = time.monotonic() - t0
            conn.close()
            if got != rows:
                sys.exit("bench/nekt-readahead: read %d rows, expected %d" % (got, rows))
            print("read-ahead %2d: %7.2f s for %d pages (%.3f s/page), %d upstream executions" % (k, took, opts.pages, took / opts.pages, executions(elog) - before))
            stop(fwd)
    finally:
        for p in reversed(procs):
            stop(p)
        if opts.keep:
            print("logs in %s" % tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
