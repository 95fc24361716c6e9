"""Schema discovery (docs/api.md, "Schema discovery"): GET /api/layers lists the layers and
tables a key may read, GET /api/layers/{layer}/tables/{table} describes one (columns and
types, kind, exact Parquet row counts from the footers, estimates for text files, files,
bytes, modification time). Scoped keys see only their layers (403 naming the layer outside
it, whether or not it exists), names with spaces, quotes and non-ASCII round-trip, and the
CLI's `dapi layers` / `dapi describe` print the same."""

import calendar
import json
import os
import random
import re
import shutil
import time
import urllib.parse

import harness as h
from harness import Server, Shared, check, eq, expect_error, expect_status, jparse

KEY = "it-discovery-all-9d1e"
ODD_LAYER = "odd layer \u00e9"
ODD_TABLE = "ta\"ble 'q' \u00fc"
KEYS = {}


def _store_key(keys_file, name, layers):
    rc, out, err = h.run_cli(["keys", "add", "--name", name, "--layers", layers, "--keys-file", keys_file])
    eq(rc, 0, "dapi keys add --layers %s (stderr %r)" % (layers, err))
    return out.strip()


def _big_csv(path, rows):
    """A CSV far larger than the estimate's 1 MiB sample, rows of varying length."""
    rnd = random.Random(7)
    with open(path, "w") as f:
        f.write("id,word,n\n")
        for i in range(rows):
            f.write("%d,%s,%d\n" % (i, "w" * rnd.randint(1, 30), rnd.randint(0, 10 ** 6)))


def _lake():
    sample = h.sample_lake()
    lake = os.path.join(h.tmpdir("disc"), "lake")
    pub = os.path.join(lake, "pub")
    os.makedirs(pub)
    shutil.copy(os.path.join(sample, "nekt_raw", "customers.parquet"), os.path.join(pub, "cust.parquet"))
    shutil.copytree(os.path.join(sample, "nekt_raw", "order_items"), os.path.join(pub, "items"))
    h.write_file(os.path.join(pub, "small.csv"), 'a,"b c"\n1,"two\nlines"\n2,x\n3,"say ""hi"""\n')
    h.write_file(os.path.join(pub, "tabs.tsv"), "k\tv\n1\ta\n2\tb\n")
    h.write_file(os.path.join(pub, "arr.json"), json.dumps([{"id": i, "tags": ["a", "b"], "s": {"x": i}} for i in range(5)]))
    h.write_file(os.path.join(pub, "lines.ndjson"), "".join(json.dumps({"id": i, "ok": i % 2 == 0, "v": i / 2}) + "\n" for i in range(7)))
    _big_csv(os.path.join(pub, "big.csv"), 120000)
    h.write_file(os.path.join(pub, "corrupt.parquet"), "PAR1 this is not Parquet PAR1")  # no table
    h.write_file(os.path.join(lake, "secret", "t.csv"), "a\nTOPSECRET\n")
    h.write_file(os.path.join(lake, ODD_LAYER, ODD_TABLE + ".csv"), "x y,\u00e9\n1,2\n")
    os.symlink(os.path.join(lake, "secret", "t.csv"), os.path.join(pub, "link.csv"))
    return lake


def _start():
    lake = _lake()
    keys_file = os.path.join(h.tmpdir("keys"), "keys")
    KEYS["pub"] = _store_key(keys_file, "pub", "pub")
    KEYS["none"] = _store_key(keys_file, "none", "no_such_layer_zz")
    return Server(keys=[KEY], data_dir=lake, env={"DAPI_KEYS_FILE": keys_file}, name="discovery")


SRV = Shared(_start)


def _q(name):
    return urllib.parse.quote(name, safe="")


def _describe(srv, layer, table, key=KEY):
    return srv.api("GET", "/api/layers/%s/tables/%s" % (_q(layer), _q(table)), key=key)


def _ok(r):
    expect_status(r, 200)
    eq(r.headers.get("content-type"), "application/json", "Content-Type")
    return jparse(r)


def _count(srv, layer, table):
    slug = srv.create('SELECT count(*) AS n FROM "%s"."%s"' % (layer, table))
    return srv.all_rows(slug)[0]["n"]


def _iso(path):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(os.stat(path).st_mtime)))


def test_list_layers_sorted_with_file_facts():
    srv = SRV.get()
    body = _ok(srv.api("GET", "/api/layers"))
    names = [l["name"] for l in body["layers"]]
    eq(names, sorted([ODD_LAYER, "pub", "secret"]), "layers, sorted")
    pub = [l for l in body["layers"] if l["name"] == "pub"][0]
    tables = [t["name"] for t in pub["tables"]]
    eq(tables, ["arr", "big", "cust", "items", "lines", "link", "small", "tabs"],
       "pub's tables, sorted (a file DuckDB cannot open is none)")
    by = {t["name"]: t for t in pub["tables"]}
    lake = srv.data_dir
    eq(by["cust"], {"bytes": os.path.getsize(os.path.join(lake, "pub", "cust.parquet")), "files": 1, "folder": False,
                    "kind": "parquet", "last_modified": _iso(os.path.join(lake, "pub", "cust.parquet")), "name": "cust"},
       "a Parquet file")
    parts = [os.path.join(d, f) for d, _, fs in os.walk(os.path.join(lake, "pub", "items")) for f in fs]
    eq(by["items"]["files"], len(parts), "a folder's files")
    eq(by["items"]["bytes"], sum(os.path.getsize(p) for p in parts), "a folder's bytes")
    eq(by["items"]["folder"], True, "folder")
    eq(by["items"]["last_modified"], max(_iso(p) for p in parts), "a folder's newest file")
    eq({k: by[k]["kind"] for k in ("arr", "big", "lines", "small", "tabs")},
       {"arr": "json", "big": "csv", "lines": "ndjson", "small": "csv", "tabs": "tsv"}, "kinds")
    check(re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", by["small"]["last_modified"]), "ISO 8601 UTC")
    # keys sorted, like every answer
    raw = srv.api("GET", "/api/layers").body.decode()
    check(raw.startswith('{"layers":[{"name":'), raw[:80])
    check('"bytes":' in raw and raw.index('"bytes"') < raw.index('"files"') < raw.index('"kind"') < raw.index('"last_modified"'), "sorted keys")


def test_describe_parquet_exact_row_counts():
    srv = SRV.get()
    d = _ok(_describe(srv, "pub", "cust"))
    eq((d["layer"], d["name"], d["kind"], d["folder"], d["files"]), ("pub", "cust", "parquet", False, 1), "identity")
    eq(d["row_count_exact"], True, "Parquet: exact")
    eq(d["row_count"], _count(srv, "pub", "cust"), "the footers' row count = count(*)")
    check(d["columns"] and d["columns"][0] == {"json_type": "integer", "name": "customer_id", "type": "BIGINT"}, d["columns"][:1])
    d = _ok(_describe(srv, "pub", "items"))
    eq(d["row_count"], _count(srv, "pub", "items"), "a folder: the sum of its files' footers")
    eq(d["row_count_exact"], True, "folder: exact")
    cols = {c["name"]: c for c in d["columns"]}
    eq(cols["unit_price"]["json_type"], "number", "DECIMAL renders as a number")
    check(cols["unit_price"]["type"].startswith("DECIMAL("), cols["unit_price"])
    check("order_year" in cols, "the hive partition column is a column: %r" % list(cols))


def test_describe_text_kinds_estimated():
    srv = SRV.get()
    d = _ok(_describe(srv, "pub", "small"))
    eq(d["columns"], [{"json_type": "integer", "name": "a", "type": "BIGINT"},
                      {"json_type": "string", "name": "b c", "type": "VARCHAR"}], "CSV columns")
    eq((d["row_count"], d["row_count_exact"]), (3, False), "a small CSV: every record counted (quoted newline), still an estimate")
    d = _ok(_describe(srv, "pub", "tabs"))
    eq([c["name"] for c in d["columns"]], ["k", "v"], "TSV columns")
    eq((d["row_count"], d["row_count_exact"], d["kind"]), (2, False, "tsv"), "TSV")
    d = _ok(_describe(srv, "pub", "arr"))
    eq({c["name"]: c["json_type"] for c in d["columns"]}, {"id": "integer", "tags": "array", "s": "object"}, "JSON types")
    eq([c["type"] for c in d["columns"]][1], "VARCHAR[]", "a list's DuckDB type")
    eq((d["row_count"], d["row_count_exact"]), (5, False), "JSON array")
    d = _ok(_describe(srv, "pub", "lines"))
    eq({c["name"]: c["json_type"] for c in d["columns"]}, {"id": "integer", "ok": "boolean", "v": "number"}, "NDJSON types")
    eq((d["row_count"], d["row_count_exact"]), (7, False), "NDJSON")
    d = _ok(_describe(srv, "pub", "big"))
    eq(d["row_count_exact"], False, "a large CSV: estimated")
    exact = _count(srv, "pub", "big")
    eq(exact, 120000, "count(*)")
    check(abs(d["row_count"] - exact) <= exact * 0.1, "estimate %r within 10%% of %d" % (d["row_count"], exact))


def test_scoped_key_sees_only_its_layers():
    srv = SRV.get()
    body = _ok(srv.api("GET", "/api/layers", key=KEYS["pub"]))
    eq([l["name"] for l in body["layers"]], ["pub"], "a key scoped to pub lists pub only")
    tables = [t["name"] for t in body["layers"][0]["tables"]]
    check("link" not in tables, "pub.link's file is secret's: not listed for pub's key (%r)" % tables)
    eq(_ok(srv.api("GET", "/api/layers", key=KEYS["none"])), {"layers": []}, "a key of no existing layer")
    for layer, table in (("secret", "t"), ("secret", "nope"), ("no_such_layer", "x"), ("Pub", "cust")):
        r = _describe(srv, layer, table, key=KEYS["pub"])
        body = expect_error(r, 403, "Forbidden")
        eq(body.get("details"), "this API key may not read layer '%s'" % layer, "403 for %s.%s, existing or not" % (layer, table))
        check(b"TOPSECRET" not in r.body, "no data in the refusal")
    body = expect_error(_describe(srv, "pub", "link", key=KEYS["pub"]), 403, "Forbidden")
    eq(body.get("details"), "this API key may not read layer 'secret'", "a link to another layer names it")
    expect_error(_describe(srv, "pub", "nope", key=KEYS["pub"]), 404, "Table not found")
    _ok(_describe(srv, "pub", "cust", key=KEYS["pub"]))
    # the unscoped key reads them all
    _ok(_describe(srv, "secret", "t"))
    _ok(_describe(srv, "pub", "link"))


def test_errors_401_404_405():
    srv = SRV.get()
    for path in ("/api/layers", "/api/layers/pub/tables/cust", "/api/layers/nope/tables/nope"):
        expect_error(srv.api("GET", path, key=None), 401, "Missing API key. Please provide 'x-api-key' header")
        expect_error(srv.api("GET", path, key="wrong"), 401, "Invalid API key")
    body = expect_error(_describe(srv, "nope", "t"), 404, "Layer not found")
    eq(body.get("details"), "no layer 'nope'", "details")
    body = expect_error(_describe(srv, "pub", "nope"), 404, "Table not found")
    eq(body.get("details"), "no table 'nope' in layer 'pub'", "details")
    expect_error(_describe(srv, "pub", "CUST"), 404, "Table not found")  # names exactly as listed
    expect_error(_describe(srv, "pub", "corrupt"), 404, "Table not found")  # cannot be queried either
    for path in ("/api/layers/pub", "/api/layers/pub/tables", "/api/layers/pub/tables/", "/api/layers//tables/x",
                 "/api/layers/pub/tables/cust/more", "/api/layers/pub/columns/cust"):
        expect_error(srv.api("GET", path), 404, "Not found")
    r = srv.api("POST", "/api/layers", body={})
    expect_error(r, 405, "Method not allowed")
    eq(r.headers.get("allow"), "GET, HEAD", "Allow")
    expect_status(srv.api("HEAD", "/api/layers"), 200)


def test_odd_names_round_trip():
    srv = SRV.get()
    body = _ok(srv.api("GET", "/api/layers"))
    odd = [l for l in body["layers"] if l["name"] == ODD_LAYER]
    eq(len(odd), 1, "the odd layer is listed with its exact name")
    eq([t["name"] for t in odd[0]["tables"]], [ODD_TABLE], "the odd table, exact")
    d = _ok(_describe(srv, ODD_LAYER, ODD_TABLE))
    eq((d["layer"], d["name"]), (ODD_LAYER, ODD_TABLE), "names round-trip")
    eq([c["name"] for c in d["columns"]], ["x y", "\u00e9"], "column names round-trip")
    eq(d["row_count"], 1, "rows")


def test_new_files_are_seen_without_restart():
    srv = SRV.get()
    path = os.path.join(srv.data_dir, "pub", "fresh.csv")
    h.write_file(path, "a\n1\n")
    try:
        body = _ok(srv.api("GET", "/api/layers"))
        pub = [l for l in body["layers"] if l["name"] == "pub"][0]
        check("fresh" in [t["name"] for t in pub["tables"]], "a new file is a table at once")
        eq(_ok(_describe(srv, "pub", "fresh"))["row_count"], 1, "and can be described")
    finally:
        os.unlink(path)
    body = _ok(srv.api("GET", "/api/layers"))
    pub = [l for l in body["layers"] if l["name"] == "pub"][0]
    check("fresh" not in [t["name"] for t in pub["tables"]], "a removed file is gone")
    expect_error(_describe(srv, "pub", "fresh"), 404, "Table not found")


def test_rate_limit_applies():
    lake = os.path.join(h.tmpdir("disc-rate"), "lake")
    h.write_file(os.path.join(lake, "l", "t.csv"), "a\n1\n")
    with Server(keys=[KEY], data_dir=lake, args=["--rate-limit", "2/min"], name="disc-rate") as srv:
        for _ in range(2):
            r = srv.api("GET", "/api/layers")
            expect_status(r, 200)
            check("ratelimit" in r.headers, "RateLimit headers: %r" % r.headers)
        expect_error(_describe(srv, "l", "t"), 429, "Rate limit exceeded")


def test_nekt_backend_answers_501():
    with Server(keys=[KEY], args=["--backend", "nekt", "--nekt-url", "http://127.0.0.1:9"], name="disc-nekt") as srv:
        for path in ("/api/layers", "/api/layers/a/tables/b"):
            body = expect_error(srv.api("GET", path), 501, "Not implemented")
            check("--backend nekt" in body.get("details", ""), "details name the backend: %r" % body)
        expect_error(srv.api("GET", "/api/layers", key=None), 401)


def _cli(args, key=KEY):
    srv = SRV.get()
    return h.run_cli(args, env={"DAPI_URL": "http://127.0.0.1:%d" % srv.port, "DAPI_API_KEY": key})


def test_cli_layers_and_describe():
    rc, out, err = _cli(["layers", "-f", "json"])
    eq(rc, 0, "dapi layers -f json (stderr %r)" % err)
    eq(json.loads(out), _ok(SRV.get().api("GET", "/api/layers")), "the server's listing")
    rc, out, err = _cli(["layers"])
    eq(rc, 0, "dapi layers (stderr %r)" % err)
    lines = out.splitlines()
    check(lines[0].split() == ["LAYER", "TABLE", "KIND", "FILES", "BYTES", "MODIFIED"], lines[:1])
    check(any(l.split()[:3] == ["pub", "cust", "parquet"] for l in lines), out)
    rc, out, err = _cli(["layers"], key=KEYS["pub"])
    eq(rc, 0, "scoped (stderr %r)" % err)
    check("secret" not in out, "a scoped key's listing: %r" % out)
    rc, out, err = _cli(["describe", "pub.cust"])
    eq(rc, 0, "dapi describe pub.cust (stderr %r)" % err)
    check(re.search(r"^rows:\s+\d+ \(exact\)$", out, re.M), out)
    check(re.search(r"^customer_id\s+BIGINT\s+integer$", out, re.M), out)
    rc, out, err = _cli(["describe", "pub.small"])
    check(re.search(r"^rows:\s+~3 \(estimated\)$", out, re.M), out)
    rc, out, err = _cli(["describe", "-f", "json", '"%s"."%s"' % (ODD_LAYER, ODD_TABLE.replace('"', '""'))])
    eq(rc, 0, "quoted odd names (stderr %r)" % err)
    eq(json.loads(out)["name"], ODD_TABLE, "odd names round-trip through the CLI")
    rc, out, err = _cli(["describe", ODD_LAYER, ODD_TABLE])
    eq(rc, 0, "two arguments (stderr %r)" % err)
    rc, out, err = _cli(["describe", "pub.nope"])
    eq(rc, 4, "unknown table: exit 4 (stderr %r)" % err)
    check("Table not found" in err, err)
    rc, out, err = _cli(["describe", "secret.t"], key=KEYS["pub"])
    eq(rc, 3, "out of scope: exit 3 (stderr %r)" % err)
    check("may not read layer 'secret'" in err, err)
    rc, out, err = _cli(["layers"], key="wrong")
    eq(rc, 3, "bad key: exit 3")
    rc, out, err = _cli(["describe", "nodot"])
    eq(rc, 2, "usage error (stderr %r)" % err)


def test_cli_help_and_version():
    rc, want, _ = h.run_cli(["--version"])
    for cmd in ("layers", "describe"):
        eq(h.run_cli([cmd, "--version"])[:2], (0, want), "dapi %s --version" % cmd)
        eq(h.run_cli([cmd, "-V"])[:2], (0, want), "dapi %s -V" % cmd)
        for args in ([cmd, "--help"], ["help", cmd]):
            rc, out, err = h.run_cli(args)
            eq(rc, 0, "dapi %s" % " ".join(args))
            for opt in ("--url", "--api-key", "--format", "--timeout", "DAPI_URL", "DAPI_API_KEY", "json"):
                check(opt in out, "%s missing from dapi %s:\n%s" % (opt, " ".join(args), out))
    rc, out, err = h.run_cli(["help"])
    check("dapi layers" in out and "dapi describe" in out, "dapi help lists the commands: %r" % out)
    rc, out, err = h.run_cli(["layers", "-f", "xml"], env={"DAPI_API_KEY": KEY})
    eq(rc, 2, "a bad --format is a usage error (stderr %r)" % err)
    rc, out, err = h.run_cli(["layers"], env={"DAPI_API_KEY": ""})
    eq(rc, 3, "no key: exit 3 before any request (stderr %r)" % err)
    check("DAPI_API_KEY" in err, "says how to give one: %r" % err)
