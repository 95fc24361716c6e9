"""`dapi query` and `dapi health` as black boxes against a real server.

Every output format is compared byte for byte with output built here from a known lake
(values with commas, quotes, newlines, tabs, backslashes, control characters, unicode,
empty strings and NULLs); exit codes for each failure class; retries through a small
loopback proxy that fails transiently before forwarding to the real server; `| head`; a
result of many pages read with several parallel fetches; progress only on a terminal."""

import http.client
import http.server
import json
import os
import pty
import re
import select
import subprocess
import threading
import time
import tty as ttymod
import unicodedata

import harness as h
from harness import Server, Shared, check, eq

KEY = "it-cli-key-SECRET-3b9d72e1"
WRONG_KEY = "it-cli-wrong-SECRET-77aa01"

# The known lake: lk/tricky.ndjson. num is DOUBLE, so the server writes it as Python's repr.
TRICKY = [
    (1, "plain", 1.5, True),
    (2, "comma, here", -2.25, False),
    (3, 'quote " inside', None, None),
    (4, "line\nbreak\r\nCRLF", 0.5, True),
    (5, "unicode 日本 é 😀 ñ", 100.25, False),
    (6, "", 3.75, True),
    (7, None, None, None),
    (8, "tab\there back\\slash", -0.125, False),
    (9, "esc \x1b[31m bell\x07 del\x7f", 2.0, True),
    (10, "x" * 45 + ",long", 1e-05, False),
]
TRICKY_SQL = (
    'SELECT id, txt, num, flag AS "flag, ok", [id, id * 10] AS arr, {\'t\': txt, \'n\': id} AS obj, '
    'CAST(id AS UBIGINT) * 1000000000000000003 AS big FROM "lk"."tricky" ORDER BY id'
)
BIG_ROWS = 12345  # lk/big.csv: 124 pages


def _tricky_rows():
    """The rows TRICKY_SQL returns, as ordered (column, value) lists."""
    out = []
    for i, txt, num, flag in TRICKY:
        out.append(
            [
                ("id", i),
                ("txt", txt),
                ("num", num),
                ("flag, ok", flag),
                ("arr", [i, i * 10]),
                ("obj", {"t": txt, "n": i}),
                ("big", i * 1000000000000000003),
            ]
        )
    return out


def _big_rows():
    return [[("n", n), ("s", "v%d" % n)] for n in range(BIG_ROWS)]


def _make_lake():
    d = h.tmpdir("cli-lake")
    nd = "".join(
        json.dumps({"id": i, "txt": t, "num": n, "flag": f}, ensure_ascii=False) + "\n" for i, t, n, f in TRICKY
    )
    h.write_file(os.path.join(d, "lk", "tricky.ndjson"), nd)
    h.write_file(os.path.join(d, "lk", "big.csv"), "n,s\n" + "".join("%d,v%d\n" % (n, n) for n in range(BIG_ROWS)))
    return d


SRV = Shared(lambda: Server(keys=[KEY], data_dir=_make_lake(), name="cli"))


def _srv():
    return SRV.get()


# ----------------------------------------------------------------------------- expected output


def _jtext(v):
    return json.dumps(v, ensure_ascii=False, separators=(",", ":"))


def _text(v):
    """A value as csv/tsv/table show it (None handled by callers)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return v
    return _jtext(v)


def _csv_field(s, is_str):
    if (is_str and s == "") or any(c in s for c in ',"\r\n'):
        return '"' + s.replace('"', '""') + '"'
    return s


def exp_csv(rows):
    if not rows:
        return b""
    lines = [",".join(_csv_field(k, True) for k, _ in rows[0])]
    for r in rows:
        lines.append(",".join("" if v is None else _csv_field(_text(v), isinstance(v, str)) for _, v in r))
    return "".join(l + "\r\n" for l in lines).encode("utf-8")


def _tsv_field(s):
    return s.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def exp_tsv(rows):
    if not rows:
        return b""
    lines = ["\t".join(_tsv_field(k) for k, _ in rows[0])]
    for r in rows:
        lines.append("\t".join("" if v is None else _tsv_field(_text(v)) for _, v in r))
    return "".join(l + "\n" for l in lines).encode("utf-8")


def _obj_text(r):
    return "{" + ",".join(_jtext(k) + ":" + _jtext(v) for k, v in r) + "}"


def exp_ndjson(rows):
    return "".join(_obj_text(r) + "\n" for r in rows).encode("utf-8")


def exp_json(rows):
    if not rows:
        return b"[]\n"
    return ("[\n" + ",\n".join(_obj_text(r) for r in rows) + "\n]\n").encode("utf-8")


def _width(ch):
    if unicodedata.combining(ch):
        return 0
    return 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1


def _shown(s, maxw=40):
    """A cell as the table shows it: escapes, U+FFFD for controls, cut at 40 columns."""
    parts = []
    for ch in s:
        if ch in "\t\n\r":
            parts.append(("\\" + {"\t": "t", "\n": "n", "\r": "r"}[ch], 2))
        elif ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F:
            parts.append(("\ufffd", 1))
        else:
            parts.append((ch, _width(ch)))
    if sum(w for _, w in parts) <= maxw:
        return "".join(p for p, _ in parts)
    out, w = "", 0
    for p, pw in parts:
        if w + pw > maxw - 1:
            break
        out += p
        w += pw
    return out + "\u2026"


def exp_table(rows):
    if not rows:
        return b"(0 rows)\n"
    cols = [k for k, _ in rows[0]]
    cells = [["NULL" if v is None else _shown(_text(v)) for _, v in r] for r in rows]
    heads = [_shown(k) for k in cols]
    dw = lambda s: sum(_width(c) if c != "\u2026" else 1 for c in s)  # noqa: E731
    width = [max([dw(heads[i])] + [dw(c[i]) for c in cells]) for i in range(len(cols))]
    numeric = [
        all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in [r[i][1] for r in rows])
        for i in range(len(cols))
    ]

    def line(vals):
        out = []
        for i, s in enumerate(vals):
            gap = " " * (width[i] - dw(s))
            if numeric[i]:
                out.append(gap + s)
            else:
                out.append(s + (gap if i + 1 < len(vals) else ""))
        return " | ".join(out) + "\n"

    text = line(heads) + "-+-".join("-" * w for w in width) + "\n"
    text += "".join(line(c) for c in cells)
    text += "(%d row%s)\n" % (len(rows), "" if len(rows) == 1 else "s")
    return text.encode("utf-8")


# ----------------------------------------------------------------------------- running the CLI


def cli(args, url=None, key=KEY, env=None, stdin=None, timeout=60):
    """Runs `dapi ARGS`; returns (rc, stdout bytes, stderr text)."""
    e = h.base_env()
    if url is not False:
        e["DAPI_URL"] = url or "http://127.0.0.1:%d" % _srv().port
        _srv().touched.add(h.CURRENT_TEST)
    if key is not None:
        e["DAPI_API_KEY"] = key
    e.update(env or {})
    p = subprocess.run(
        [h.BIN] + list(args),
        input=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        timeout=timeout,
        env=e,
        cwd=h.root_dir(),
    )
    return p.returncode, p.stdout, p.stderr.decode("utf-8", "replace")


def ok(args, **kw):
    rc, out, err = cli(args, **kw)
    if rc != 0:
        raise AssertionError("dapi %s: exit %d, stderr: %s" % (" ".join(args)[:200], rc, err.strip()))
    return out, err


def eq_bytes(got, want, what):
    if got != want:
        n = next((i for i in range(min(len(got), len(want))) if got[i] != want[i]), min(len(got), len(want)))
        raise AssertionError(
            "%s differs at byte %d (got %d bytes, want %d)\n  got:  %r\n  want: %r"
            % (what, n, len(got), len(want), got[max(0, n - 60) : n + 60], want[max(0, n - 60) : n + 60])
        )


def fails(args, code, what, **kw):
    rc, out, err = cli(args, **kw)
    if rc != code:
        raise AssertionError("%s: expected exit %d, got %d; stderr: %s" % (what, code, rc, err.strip()))
    # one message: a single line, or — when the server's details show DuckDB's query line and
    # caret ("LINE n: …") — that message with those lines under it
    msg = err.strip()
    check(msg.startswith("dapi ") and msg.count("\ndapi ") == 0 and ("\n" not in msg or "\nLINE " in msg),
          "%s: expected one error message on stderr, got %r" % (what, err))
    return err


# ----------------------------------------------------------------------------- formats


def test_csv_exact():
    out, err = ok(["query", "--sql", TRICKY_SQL, "--format", "csv"])
    eq_bytes(out, exp_csv(_tricky_rows()), "csv")
    eq(err, "", "stderr (not a terminal, so no progress line)")


def test_tsv_exact():
    out, _ = ok(["query", "--sql", TRICKY_SQL, "--format=tsv"])
    eq_bytes(out, exp_tsv(_tricky_rows()), "tsv")


def test_json_exact():
    out, _ = ok(["query", "--sql", TRICKY_SQL, "-f", "json"])
    eq_bytes(out, exp_json(_tricky_rows()), "json")
    rows = json.loads(out.decode("utf-8"))
    eq(rows[6], {"id": 7, "txt": None, "num": None, "flag, ok": None, "arr": [7, 70], "obj": {"t": None, "n": 7},
                 "big": 7000000000000000021}, "row 7 read back")


def test_ndjson_exact():
    out, _ = ok(["query", "--sql", TRICKY_SQL, "-f", "ndjson"])
    eq_bytes(out, exp_ndjson(_tricky_rows()), "ndjson")


def test_table_exact():
    out, _ = ok(["query", "--sql", TRICKY_SQL, "-f", "table"])
    eq_bytes(out, exp_table(_tricky_rows()), "table")
    check(b"\x1b" not in out and b"\x07" not in out, "the table must not pass control characters to a terminal")


def test_default_format_is_csv_when_not_a_terminal():
    out, _ = ok(["query", "--sql", TRICKY_SQL])
    eq_bytes(out, exp_csv(_tricky_rows()), "csv by default")


def test_empty_result_each_format():
    sql = 'SELECT * FROM "lk"."tricky" WHERE id < 0'
    for fmt, want in (("csv", b""), ("tsv", b""), ("json", b"[]\n"), ("ndjson", b""), ("table", b"(0 rows)\n")):
        out, _ = ok(["query", "--sql", sql, "-f", fmt])
        eq_bytes(out, want, "empty result as " + fmt)


def test_layer_table_limit():
    out, _ = ok(["query", "--layer", "lk", "--table", "tricky", "--limit", "2", "-f", "ndjson"])
    want = "".join(_jtext({"id": i, "txt": t, "num": n, "flag": f}) + "\n" for i, t, n, f in TRICKY[:2])
    eq_bytes(out, want.encode("utf-8"), "--layer/--table/--limit")


def test_sql_file_and_stdin():
    path = os.path.join(h.tmpdir("cli-sql"), "q.sql")
    h.write_file(path, TRICKY_SQL + "\n")
    out, _ = ok(["query", "--sql-file", path, "-f", "csv"])
    eq_bytes(out, exp_csv(_tricky_rows()), "--sql-file")
    out, _ = ok(["query", "--sql-file", "-", "-f", "csv"], stdin=TRICKY_SQL.encode("utf-8"))
    eq_bytes(out, exp_csv(_tricky_rows()), "--sql-file -")


def test_output_file_replaced_only_when_complete():
    d = h.tmpdir("cli-out")
    path = os.path.join(d, "out.csv")
    out, _ = ok(["query", "--sql", TRICKY_SQL, "--output", path])
    eq(out, b"", "stdout with --output")
    with open(path, "rb") as f:
        eq_bytes(f.read(), exp_csv(_tricky_rows()), "--output file")
    # a failing query leaves the previous file as it was and no temp file behind
    rc, _, _ = cli(["query", "--sql", "SELECT * FROM lk.no_such_table", "-o", path])
    eq(rc, 4, "exit code of a refused query")
    with open(path, "rb") as f:
        eq_bytes(f.read(), exp_csv(_tricky_rows()), "--output file after a failed run")
    eq(sorted(os.listdir(d)), ["out.csv"], "files in the output dir")


# ----------------------------------------------------------------------------- many pages


def _big_sql():
    return 'SELECT n, s FROM "lk"."big" ORDER BY n'


@h.timeout(120)
def test_many_pages_in_order_any_parallelism():
    want = exp_csv(_big_rows())
    for p in ("1", "4", "16"):
        out, _ = ok(["query", "--sql", _big_sql(), "--parallel", p], timeout=100)
        eq_bytes(out, want, "csv of %d rows with --parallel %s" % (BIG_ROWS, p))
    out, _ = ok(["query", "--sql", _big_sql(), "-f", "ndjson", "-p", "8"], timeout=100)
    eq_bytes(out, exp_ndjson(_big_rows()), "ndjson of many pages")


def test_exact_multiple_of_page_size():
    # 300 rows: pages 1-3 are full, page 4 is empty and ends the result
    out, _ = ok(["query", "--sql", "SELECT range AS n FROM range(300)", "-f", "tsv", "-p", "3"])
    eq_bytes(out, ("n\n" + "".join("%d\n" % i for i in range(300))).encode(), "300 rows")


def test_closed_pipe_is_quiet_success():
    sql = "SELECT range AS n, repeat('x', 50) AS pad FROM range(300000)"
    env = dict(h.base_env(), DAPI_URL="http://127.0.0.1:%d" % _srv().port, DAPI_API_KEY=KEY)
    p = subprocess.run(
        ["bash", "-c", 'set -o pipefail; "$0" query --sql "$1" | head -n 3', h.BIN, sql],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        timeout=60,
        cwd=h.root_dir(),
    )
    eq(p.stdout, b"n,pad\r\n0," + b"x" * 50 + b"\r\n1," + b"x" * 50 + b"\r\n", "first lines through head")
    eq(p.stderr.decode("utf-8", "replace"), "", "stderr")
    eq(p.returncode, 0, "pipeline exit status (pipefail)")


# ----------------------------------------------------------------------------- exit codes


def test_usage_errors_exit_2():
    for args, what in (
        (["query"], "no query"),
        (["query", "--sql", "SELECT 1", "--layer", "lk", "--table", "t"], "two query modes"),
        (["query", "--layer", "lk"], "--layer without --table"),
        (["query", "--sql", "SELECT 1", "--limit", "3"], "--limit with --sql"),
        (["query", "--layer", "lk", "--table", "t", "--limit", "0"], "--limit 0"),
        (["query", "--sql", "SELECT 1", "--format", "xml"], "unknown format"),
        (["query", "--sql", "SELECT 1", "--parallel", "0"], "--parallel 0"),
        (["query", "--sql", "SELECT 1", "--parallel", "4x"], "--parallel junk"),
        (["query", "--sql", "SELECT 1", "--no-such-flag"], "unknown flag"),
        (["query", "--sql"], "flag without value"),
        (["query", "SELECT 1", "SELECT 2"], "two SQL arguments"),
        (["health", "x"], "argument to health"),
        (["query", "--sql-file", "/nonexistent/q.sql"], "unreadable --sql-file"),
        (["query", "--sql", "SELECT 1", "--url", "ftp://x"], "bad URL"),
        (["health", "--timeout", "0"], "health --timeout 0"),
    ):
        fails(args, 2, what)


def test_auth_errors_exit_3_and_key_never_echoed():
    err = fails(["query", "--sql", "SELECT 1"], 3, "no key", key=None)
    check("DAPI_API_KEY" in err, "the message should say how to give a key: %r" % err)
    err = fails(["query", "--sql", "SELECT 1"], 3, "wrong key", key=WRONG_KEY)
    check("Invalid API key" in err, "the server's error should be shown: %r" % err)
    rc, out, err = cli(["query", "--sql", "SELECT 1", "--api-key", WRONG_KEY], key=None)
    eq(rc, 3, "exit code with a wrong --api-key")
    check(WRONG_KEY not in err and WRONG_KEY.encode() not in out, "the key was echoed: %r" % err)


def test_query_errors_exit_4_with_server_message():
    err = fails(["query", "--sql", "SELECT * FROM lk.no_such_table_q"], 4, "unknown table")
    check("Invalid SQL query" in err and "no_such_table_q" in err, "error and details on one line: %r" % err)
    err = fails(["query", "--sql", "SELECT 1 +"], 4, "syntax error")
    check("syntax error" in err.lower(), "details carry DuckDB's message: %r" % err)
    # DuckDB's position block keeps its lines: the caret stands under the error
    err = fails(["query", "--sql", "SELECT 1 +\nFROM x"], 4, "syntax error on line 2")
    check("(HTTP 400): Parser Error at line 2, column 1:" in err, "status before the details: %r" % err)
    check("\nLINE 2: FROM x\n        ^" in err, "the LINE block and its caret, on their own lines: %r" % err)
    # fails only when it runs: the error comes with the first page
    err = fails(["query", "--sql", 'SELECT CAST(txt AS INTEGER) FROM "lk"."tricky"'], 4, "run-time failure")
    check("Query execution failed" in err, "execution failure shown: %r" % err)
    err = fails(["query", "--layer", "lk", "--table", "bad name!"], 4, "invalid table name")
    check("Invalid table name" in err, "server message shown: %r" % err)


def test_network_errors_exit_5():
    port = _closed_port()
    err = fails(["query", "--sql", "SELECT 1", "--retries", "1", "-q"], 5, "nothing listening",
                url="http://127.0.0.1:%d" % port)
    check("127.0.0.1" in err, "the failure should name the address: %r" % err)


def _closed_port():
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# ----------------------------------------------------------------------------- retries (proxy)


class Proxy:
    """A loopback HTTP proxy in front of the real server. plan maps a request class
    ("POST", "page1", "page2", …, "health") to a list of canned answers served, one per
    request, before requests of that class are forwarded: an int status (JSON error body,
    Retry-After: 0 for 429/503) or a (status, body bytes) tuple.

    export=False: the export route answers 404, as a server from before it does, so the
    CLI reads page by page (the paths planned here). export=True: the export is forwarded,
    classified "page1" (it replaces the page requests: its canned answers are page 1's)."""

    def __init__(self, upstream_port, plan, export=False):
        self.upstream = upstream_port
        self.export = export
        self.plan = {k: list(v) for k, v in plan.items()}
        self.seen = {}
        self.lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _handle(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                kind = proxy.classify(self.command, self.path)
                if "/export" in self.path.split("?")[0]:
                    if not proxy.export:
                        with proxy.lock:
                            proxy.seen["export"] = proxy.seen.get("export", 0) + 1
                        data = b'{"error":"Not found"}'
                        self.send_response(404)
                        self.send_header("Content-Type", "application/json")
                        self.send_header("Content-Length", str(len(data)))
                        self.end_headers()
                        self.wfile.write(data)
                        return
                    kind = "page1"
                with proxy.lock:
                    proxy.seen[kind] = proxy.seen.get(kind, 0) + 1
                    canned = proxy.plan.get(kind, []).pop(0) if proxy.plan.get(kind) else None
                if canned is not None:
                    if isinstance(canned, int):
                        status, data = canned, json.dumps({"error": "canned %d" % canned}).encode()
                    else:
                        status, data = canned
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    if status in (429, 503):
                        self.send_header("Retry-After", "0")
                    self.end_headers()
                    self.wfile.write(data)
                    return
                c = http.client.HTTPConnection("127.0.0.1", proxy.upstream, timeout=60)
                hdrs = {k: v for k, v in self.headers.items() if k.lower() in ("x-api-key", "content-type")}
                c.request(self.command, self.path, body=body or None, headers=hdrs)
                r = c.getresponse()
                data = r.read()
                c.close()
                self.send_response(r.status)
                self.send_header("Content-Type", r.getheader("Content-Type") or "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = _handle
            do_POST = _handle

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = "http://127.0.0.1:%d" % self.port
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @staticmethod
    def classify(method, path):
        if method == "POST":
            return "POST"
        if path.startswith("/api/health"):
            return "health"
        if "page_number=" in path:
            return "page" + path.split("page_number=")[1].split("&")[0]
        return "other"

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.httpd.shutdown()
        self.httpd.server_close()


def _proxy(plan, export=False):
    return Proxy(_srv().port, plan, export=export)


@h.timeout(90)
def test_retries_transient_failures_and_keeps_output_exact():
    plan = {"POST": [503, 429], "page1": [503], "page2": [502, 503], "page3": [429], "page5": [504], "page9": [502]}
    with _proxy(plan) as px:
        rc, out, err = cli(["query", "--sql", _big_sql(), "-p", "4"], url=px.url, timeout=80)
        eq(rc, 0, "exit code after transient failures (stderr: %s)" % err.strip())
        eq_bytes(out, exp_csv(_big_rows()), "csv through a failing proxy")
        eq({k: px.plan[k] for k in plan}, {k: [] for k in plan}, "canned failures left unserved")
        eq(px.seen["POST"], 3, "POST attempts (two transient refusals, then success)")
        eq(px.seen["page2"], 3, "page 2 attempts")
        check("retry" in err and "page 2" in err, "retry notices on stderr: %r" % err)
    with _proxy({"POST": [503], "page1": [503]}) as px:
        rc, out, err = cli(["query", "--sql", TRICKY_SQL, "-q"], url=px.url)
        eq(rc, 0, "exit code with --quiet")
        eq(err, "", "--quiet stderr")


def test_gives_up_after_retries_exit_5():
    with _proxy({"page1": [503] * 10}) as px:
        err = fails(["query", "--sql", "SELECT 1", "--retries", "2", "-q"], 5, "503 forever", url=px.url)
        eq(px.seen.get("page1"), 3, "attempts with --retries 2")
        check("canned 503" in err and "HTTP 503" in err, "last error shown: %r" % err)


def test_create_not_repeated_when_it_may_have_run():
    # a 502 could come after the query was created: repeating the POST could create two
    with _proxy({"POST": [502, 502, 502]}) as px:
        fails(["query", "--sql", "SELECT 1", "-q"], 5, "POST answered 502", url=px.url)
        eq(px.seen.get("POST"), 1, "POST attempts")


def test_execution_failure_504_is_final():
    body = json.dumps({"details": "ran past --query-timeout", "error": "Query execution failed",
                       "page_number": 1, "query_slug": "x"}).encode()
    with _proxy({"page1": [(504, body)] * 5}) as px:
        err = fails(["query", "--sql", "SELECT 1", "-q"], 4, "504 execution failure", url=px.url)
        eq(px.seen.get("page1"), 1, "attempts at a final 504")
        check("ran past --query-timeout" in err, "details shown: %r" % err)


def test_malformed_page_exit_1():
    for body in (b"<html>oops</html>", b'{"query_slug":"x","page":1,"data":[{"a":1,}]}', b'{"data":[1]}'):
        with _proxy({"page1": [(200, body)]}) as px:
            err = fails(["query", "--sql", "SELECT 1", "-q"], 1, "malformed page %r" % body, url=px.url)
            check("malformed" in err, "reason shown: %r" % err)


def test_export_path_retries_and_exit_codes():
    # the same classification of answers when the CLI reads through the export
    with _proxy({"page1": [503, 429]}, export=True) as px:
        rc, out, err = cli(["query", "--sql", _big_sql()], url=px.url, timeout=80)
        eq(rc, 0, "exit code after transient failures (stderr: %s)" % err.strip())
        eq_bytes(out, exp_csv(_big_rows()), "csv through the export of a failing proxy")
        eq(px.seen.get("page1"), 3, "export attempts")
        check("retry" in err, "retry notices on stderr: %r" % err)
        check(not any(k.startswith("page") and k != "page1" for k in px.seen), "pages read too: %r" % px.seen)
    with _proxy({"page1": [503] * 10}, export=True) as px:
        fails(["query", "--sql", "SELECT 1", "--retries", "2", "-q"], 5, "503 forever", url=px.url)
        eq(px.seen.get("page1"), 3, "attempts with --retries 2")
    body = json.dumps({"details": "ran past --query-timeout", "error": "Query execution failed",
                       "page_number": 1, "query_slug": "x"}).encode()
    with _proxy({"page1": [(504, body)] * 5}, export=True) as px:
        err = fails(["query", "--sql", "SELECT 1", "-q"], 4, "504 execution failure", url=px.url)
        eq(px.seen.get("page1"), 1, "attempts at a final 504")
    for bad in (b"<html>oops</html>", b'{"a":1}\n{"a":2', b"oops\n"):
        with _proxy({"page1": [(200, bad)]}, export=True) as px:
            err = fails(["query", "--sql", "SELECT 1", "-q"], 1, "malformed export %r" % bad, url=px.url)
            check("malformed" in err, "reason shown: %r" % err)


# ----------------------------------------------------------------------------- progress


def _run_on_terminal(args, stdout_tty=False, stdin_tty=False, url=None, key=KEY, timeout=60):
    """Runs `dapi ARGS` with stderr (and stdout / stdin if asked) on one pseudo-terminal in
    raw mode (bytes arrive exactly as written); returns (rc, stdout bytes or None, terminal
    bytes). The terminal is read while the command runs, so large output cannot block it."""
    master, slave = pty.openpty()
    ttymod.setraw(slave)
    env = dict(h.base_env(), DAPI_URL=url or "http://127.0.0.1:%d" % _srv().port)
    if key is not None:
        env["DAPI_API_KEY"] = key
    p = subprocess.Popen([h.BIN] + args, stdout=slave if stdout_tty else subprocess.PIPE, stderr=slave,
                         stdin=slave if stdin_tty else subprocess.DEVNULL, env=env, cwd=h.root_dir())
    os.close(slave)
    box = {}
    if not stdout_tty:
        reader = threading.Thread(target=lambda: box.setdefault("out", p.stdout.read()), daemon=True)
        reader.start()
    tty, deadline = b"", time.monotonic() + timeout
    while time.monotonic() < deadline:
        r, _, _ = select.select([master], [], [], 0.5)
        if not r:
            if p.poll() is not None:
                break
            continue
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: every copy of the terminal's other end is closed
            break
        if not chunk:
            break
        tty += chunk
    os.close(master)
    p.wait(max(1, deadline - time.monotonic()))
    if not stdout_tty:
        reader.join(10)
    return p.returncode, box.get("out"), tty


def _run_with_tty_stderr(args):
    rc, out, tty = _run_on_terminal(args)
    return rc, out, tty.decode("utf-8", "replace")


def test_progress_line_only_on_a_terminal():
    rc, out, tty = _run_with_tty_stderr(["query", "--sql", _big_sql(), "-f", "ndjson"])
    eq(rc, 0, "exit code")
    eq_bytes(out, exp_ndjson(_big_rows()), "stdout with a terminal on stderr")
    check("%d rows, 124 pages" % BIG_ROWS in tty and "rows/s" in tty, "final progress line: %r" % tty[-300:])
    rc, _, tty = _run_with_tty_stderr(["query", "--sql", _big_sql(), "-q"])
    eq((rc, tty), (0, ""), "--quiet on a terminal")


# ----------------------------------------------------------------------------- help, health


def test_help_lists_every_option():
    out, _ = ok(["query", "--help"], url=False)
    text = out.decode()
    for opt in ("--url", "--api-key", "--sql", "--sql-file", "--layer", "--table", "--limit", "--format",
                "--output", "--parallel", "--timeout", "--retries", "--retry-max-time", "--quiet", "--help",
                "DAPI_URL", "DAPI_API_KEY", "csv", "tsv", "ndjson", "table"):
        check(opt in text, "%s missing from dapi query --help:\n%s" % (opt, text))
    for code in ("0 ok", "2 usage", "3 auth", "4 query", "5 server"):
        check(code in " ".join(text.split()), "exit code %r missing from --help" % code)
    out, _ = ok(["health", "--help"], url=False)
    check("--url" in out.decode() and "--timeout" in out.decode(), "dapi health --help")
    out, _ = ok(["help", "query"], url=False)
    check(b"--parallel" in out, "dapi help query")
    # dapi call takes dapi query's options but its SQL sources, which it refuses: its help
    # lists the ones it takes, only
    out, _ = ok(["call", "--help"], url=False)
    text = out.decode()
    for opt in ("--url", "--api-key", "--format", "--output", "--parallel", "--timeout", "--quiet"):
        check(opt in text, "%s missing from dapi call --help:\n%s" % (opt, text))
    for opt in ("--sql", "--sql-file", "--layer", "--table", "--limit"):
        check(opt not in text, "%s listed by dapi call --help, which refuses it:\n%s" % (opt, text))


def test_health():
    rc, out, err = cli(["health"], key=None)
    eq((rc, out, err), (0, b"ok\n", ""), "healthy server")
    rc, out, err = cli(["health", "--url", "http://127.0.0.1:%d" % _srv().port, "-q"], url=False, key=None)
    eq((rc, out, err), (0, b"", ""), "--url and --quiet")
    rc, out, err = cli(["health", "--timeout", "2"], url="http://127.0.0.1:%d" % _closed_port(), key=None)
    eq(rc, 1, "exit code when nothing listens")
    check("unreachable" in err, "reason: %r" % err)
    with _proxy({"health": [503]}) as px:
        rc, out, err = cli(["health"], url=px.url, key=None)
        eq(rc, 1, "exit code on 503")
        check("503" in err, "status shown: %r" % err)
    with _proxy({"health": [(200, b'{"status":"degraded"}')]}) as px:
        rc, out, err = cli(["health"], url=px.url, key=None)
        eq((rc, out), (1, b"degraded\n"), "another status")


# ----------------------------------------------------------------------------- progress and output on one terminal

PROGRESS_RE = re.compile(rb"\r(\d+ rows?, \d+ pages?, \d+ rows/s, [\d.]+ s)\x1b\[K(?=(.?))", re.S)


def _strip_progress(tty):
    """The terminal's bytes without progress draws and clears; fails if a draw was followed by
    anything but another draw or a clear (that is, if output was written next to it)."""
    for m in PROGRESS_RE.finditer(tty):
        check(m.group(2) == b"\r", "a progress line was not cleared before %r: ...%r" % (m.group(2), tty[max(0, m.start() - 80) : m.end() + 80]))
    return PROGRESS_RE.sub(b"", tty).replace(b"\r\x1b[K", b"")


@h.timeout(90)
def test_progress_line_is_cleared_before_output_on_the_same_terminal():
    # a small result: the terminal shows exactly the table, nothing glued to it, nothing after it
    rc, _, tty = _run_on_terminal(["query", TRICKY_SQL], stdout_tty=True)
    eq(rc, 0, "exit code (terminal: %r)" % tty[-300:])
    eq_bytes(_strip_progress(tty), exp_table(_tricky_rows()), "the terminal's text (table by default)")
    # many pages: the progress line runs while the query is created, then gives way for good
    rc, _, tty = _run_on_terminal(["query", _big_sql(), "-p", "2"], stdout_tty=True, timeout=80)
    eq(rc, 0, "exit code")
    text = _strip_progress(tty)
    check(text.startswith(b" n | s\n---+----\n 0 | v0\n"), "the header starts the terminal's text: %r" % text[:80])
    check(text.endswith(b"\n(%d rows)\n" % BIG_ROWS), "the footer ends it, nothing after: %r" % text[-120:])
    # csv to the terminal, empty result: no output at all, and no progress line left either
    rc, _, tty = _run_on_terminal(["query", "-f", "csv", 'SELECT * FROM "lk"."tricky" WHERE id < 0'], stdout_tty=True)
    eq((rc, _strip_progress(tty)), (0, b""), "an empty csv result on a terminal")


def test_progress_line_counts_and_failures():
    # stdout elsewhere: the final state stays on its own line, singular for one row and page
    rc, out, tty = _run_on_terminal(["query", "SELECT 1 AS one"])
    eq((rc, out), (0, b"one\r\n1\r\n"), "exit code and stdout")
    finals = PROGRESS_RE.findall(tty)
    check(finals and finals[-1][0].startswith(b"1 row, 1 page, ") and finals[-1][1] == b"\n" and tty.endswith(b"\n"),
          "final progress line: %r" % tty[-200:])
    # a failure: the progress line is cleared and the error takes its place
    rc, out, tty = _run_on_terminal(["query", "SELECT * FROM lk.no_such_table_p"])
    eq(rc, 4, "exit code of a refused query")
    text = _strip_progress(tty).decode("utf-8", "replace")
    check(text.startswith("dapi query: Invalid SQL query") and text.count("dapi query:") == 1
          and "LINE 1: SELECT * FROM lk.no_such_table_p" in text and text.endswith("^\n"),
          "only the error is left: %r" % text)


# ----------------------------------------------------------------------------- options and where the SQL comes from


def test_short_option_clusters_and_sql_sources():
    out, _ = ok(["query", "-qfjson", TRICKY_SQL])
    eq_bytes(out, exp_json(_tricky_rows()), "-qfjson SQL")
    out, _ = ok(["query", "-qf", "ndjson", "-c", TRICKY_SQL])
    eq_bytes(out, exp_ndjson(_tricky_rows()), "-qf ndjson -c SQL")
    # after --, an argument that starts with '-' is the SQL (here a comment line)
    out, _ = ok(["query", "-p2", "-ftsv", "--", "-- the tricky rows\n" + TRICKY_SQL])
    eq_bytes(out, exp_tsv(_tricky_rows()), "-- then SQL starting with a comment")
    # piped SQL with no other source, and '-' as the SQL argument
    out, _ = ok(["query", "-f", "csv"], stdin=(TRICKY_SQL + "\n").encode())
    eq_bytes(out, exp_csv(_tricky_rows()), "SQL piped on stdin")
    out, _ = ok(["query", "-fcsv", "-"], stdin=TRICKY_SQL.encode())
    eq_bytes(out, exp_csv(_tricky_rows()), "'-' as the SQL argument")


def test_sql_source_usage_errors():
    for args, stdin, code, what, says in (
        (["query", "SELECT 1", "-c", "SELECT 2"], None, 2, "argument and -c", "twice"),
        (["query", "SELECT 1", "--layer", "lk", "--table", "tricky"], None, 2, "argument and --layer", "one query"),
        (["query", "--sql-file", "-", "-"], b"SELECT 1", 2, "--sql-file and '-'", "one query"),
        (["query"], b"", 2, "nothing on stdin", "no query: stdin is empty"),
        (["query", "-"], b" \n", 2, "blank SQL on stdin", "stdin: the SQL is empty"),
        (["query", "-c", " \n\t"], None, 2, "blank SQL", "empty"),
        (["query", "-qx", "SELECT 1"], None, 2, "unknown letter in a cluster", "'-x'"),
        (["query", "-qf"], None, 2, "cluster ending in an option without its value", "-f needs a value"),
        (["query", "--no-header", "-f", "json", "SELECT 1"], None, 2, "--no-header with json", "--no-header"),
    ):
        err = fails(args, code, what, stdin=stdin)
        check(says in err, "%s: the message should say %r: %r" % (what, says, err))
    # nothing given and stdin is a terminal: say how to give the SQL instead of waiting for it
    rc, _, tty = _run_on_terminal(["query"], stdin_tty=True)
    check(rc == 2 and b"no query" in tty and b"-c" in tty, "no SQL with a terminal on stdin: %r %r" % (rc, tty))


def test_no_header_csv_tsv():
    out, _ = ok(["query", "--no-header", "-f", "csv", TRICKY_SQL])
    eq_bytes(out, exp_csv(_tricky_rows()).split(b"\r\n", 1)[1], "csv without its header row")
    out, _ = ok(["query", "--no-header", "-ftsv", TRICKY_SQL])
    eq_bytes(out, exp_tsv(_tricky_rows()).split(b"\n", 1)[1], "tsv without its header row")


def test_version_on_every_command():
    want, _ = ok(["--version"], url=False, key=None)
    check(re.match(rb"^dapi \d+\.\d+\.\d+ \(DuckDB v?[\d.]+\)\n$", want), "dapi --version: %r" % want)
    for args in (["-V"], ["query", "--version"], ["query", "-V"], ["query", "-qV"], ["health", "--version"],
                 ["health", "-V"], ["serve", "--version"], ["serve", "-V"], ["sample-data", "--version"],
                 ["help", "--version"]):
        rc, out, err = cli(args, url=False, key=None)
        eq((rc, out, err), (0, want, ""), "dapi %s" % " ".join(args))


def test_401_says_where_a_key_comes_from():
    err = fails(["query", "SELECT 1"], 3, "wrong key from the environment", key=WRONG_KEY)
    for part in ("Invalid API key", "HTTP 401", "given by DAPI_API_KEY", "--api-keys-file", "<state-dir>/dev-key"):
        check(part in err, "%r missing from the 401 message: %r" % (part, err))
    err = fails(["query", "--api-key", WRONG_KEY, "SELECT 1"], 3, "wrong key from the flag", key=None)
    check("given by --api-key" in err and WRONG_KEY not in err, "the flag named, the key not shown: %r" % err)
    err = fails(["query", "SELECT 1"], 3, "no key", key=None)
    for part in ("DAPI_API_KEY", "--api-key", "<state-dir>/dev-key"):
        check(part in err, "%r missing from the no-key message: %r" % (part, err))


# ----------------------------------------------------------------------------- still running, exit codes by status and shape


def _still_running_body(secs=1):
    # exactly what the server answers when its --result-wait expires (src/backend/local.c)
    return json.dumps({"details": "the query is still running after %d s (--result-wait)" % secs,
                       "error": "Query execution failed", "page_number": 1, "query_slug": "x"}).encode()


def test_result_wait_expiry_is_asked_again():
    with _proxy({"page1": [(504, _still_running_body())] * 2}) as px:
        t0 = time.monotonic()
        rc, out, err = cli(["query", TRICKY_SQL], url=px.url)
        eq(rc, 0, "exit code after two still-running answers (stderr: %s)" % err.strip())
        eq_bytes(out, exp_csv(_tricky_rows()), "the result once the query is done")
        eq(px.seen.get("page1"), 3, "page 1 requests")
        check(time.monotonic() - t0 >= 1.9, "asked again at most once a second")
        check(err.count("still running after 1 s (--result-wait)") == 2, "a notice per new request: %r" % err)


@h.alone
def test_result_wait_gives_up_at_the_client_timeout():
    with _proxy({"page1": [(504, _still_running_body())] * 100}) as px:
        t0 = time.monotonic()
        err = fails(["query", "SELECT 1", "--timeout", "3", "-q"], 5, "still running past --timeout", url=px.url)
        took = time.monotonic() - t0
        check(2.5 < took < 8, "gave up after about --timeout: %.1f s" % took)
        check(3 <= px.seen.get("page1") <= 4, "about one request a second: %r" % px.seen.get("page1"))
        check("still running after 3 s (--timeout)" in err and "HTTP 504" in err, "message: %r" % err)


def test_exit_codes_by_status_and_body_shape():
    def exec_body(status):
        return json.dumps({"details": "canned %d" % status, "error": "Query execution failed", "page_number": 1,
                           "query_slug": "x"}).encode()

    plain = lambda msg: json.dumps({"error": msg}).encode()  # noqa: E731
    # (status, body, exit code, page 1 requests with --retries 1)
    for status, body, code, asked in (
        (502, exec_body(502), 5, 2),  # the upstream failed: unavailable, not a failed query
        (503, exec_body(503), 5, 2),
        (502, b"<html>bad gateway</html>", 5, 2),
        (504, plain("Gateway Timeout"), 5, 2),
        (504, exec_body(504), 4, 1),  # the query ran out of time (--query-timeout)
        (500, exec_body(500), 4, 1),  # the query failed (the server stopped twice running it)
        (500, plain("Internal error"), 5, 1),
        (400, exec_body(400), 4, 1),
        (413, plain("Result too large"), 4, 1),
        (404, plain("Query not found"), 4, 1),
        (404, b"<html>not found</html>", 1, 1),
        (405, plain("Method not allowed"), 1, 1),
        (401, plain("Invalid API key"), 3, 1),
        (403, plain("Forbidden"), 3, 1),
    ):
        with _proxy({"page1": [(status, body)] * 3}) as px:
            fails(["query", "SELECT 1", "-q", "--retries", "1"], code, "page 1 answered %d %r" % (status, body[:40]),
                  url=px.url)
            eq(px.seen.get("page1"), asked, "page 1 requests for %d %r" % (status, body[:40]))


@h.timeout(90)
def test_sql_of_exactly_the_size_limit_is_read():
    limit = 16 << 20
    answer = (400, json.dumps({"error": "Invalid SQL query", "details": "canned"}).encode())
    with _proxy({"POST": [answer]}) as px:
        sql = b"SELECT 1" + b" " * (limit - 8)
        err = fails(["query", "-q"], 4, "SQL of exactly 16 MiB on stdin", url=px.url, stdin=sql)
        check("canned" in err, "the server's answer, so the SQL was sent: %r" % err)
        eq(px.seen.get("POST"), 1, "POST requests")
    err = fails(["query", "-q"], 2, "SQL of 16 MiB + 1 byte", stdin=sql + b" ")
    check("larger than %d bytes" % limit in err, "message: %r" % err)
