"""Scopes (docs/auth.md, "Scopes"): a key limited to some layers reads only those layers,
whatever the SQL. Each bypass idea is a query that must fail to read: 403 naming the layer,
before anything runs (or the sandbox's own 400), with no secret in the answer; the same
query by an unscoped key reads the other layer, so the refusal is the scope's.

Scoped keys are real key-store keys, made with `dapi keys add --layers` into the server's
--keys-file; the unscoped one is a plain DAPI_API_KEYS key."""

import json
import os
import re
import time

import harness as h
from harness import Server, check, eq, expect_error, expect_status, jparse

KEY_ALL = "it-scopes-all-51c2"
SECRET = "TOPSECRET-scope-77a1"
KEYS = {}  # name -> key, for the store of the current server


def _store_key(keys_file, name, layers):
    """Adds a store key limited to layers (a layer the lake does not have = none of its
    layers); returns the key, printed once by dapi keys add."""
    rc, out, err = h.run_cli(["keys", "add", "--name", name, "--layers", layers,
                              "--keys-file", keys_file])
    eq(rc, 0, "dapi keys add --name %s --layers %s (stderr %r)" % (name, layers, err))
    key = out.strip()
    check(re.match(r"^dapi_[A-Za-z0-9]{12}_[A-Za-z0-9]{43}$", key), "a store key: %r" % key)
    return key


def KEY_PUB():
    return KEYS["pub"]


def KEY_NONE():
    return KEYS["none"]


def _lake():
    """Layers pub and secret; in pub, a link to secret's file (so also a table pub.link) and
    one to its folder; a layer folder (mirror) that is a link to secret."""
    root = h.tmpdir("scopes")
    lake = os.path.join(root, "lake")
    h.write_file(os.path.join(lake, "pub", "t.csv"), "a\n1\n")
    h.write_file(os.path.join(lake, "pub", "orders.csv"), "id,amount\n1,10\n2,20\n")
    h.write_file(os.path.join(lake, "secret", "t.csv"), "a\n%s\n" % SECRET)
    h.write_file(os.path.join(lake, "secret", "e.ndjson"), '{"a":"%s"}\n' % SECRET)
    os.symlink(os.path.join(lake, "secret", "t.csv"), os.path.join(lake, "pub", "link.csv"))
    os.symlink(os.path.join(lake, "secret"), os.path.join(lake, "pub", "linkdir"))
    os.symlink(os.path.join(lake, "secret"), os.path.join(lake, "mirror"))
    return root, lake


def _server(lake, name, **kw):
    keys_file = os.path.join(h.tmpdir("keys"), "keys")
    KEYS["pub"] = _store_key(keys_file, "pub", "pub")
    KEYS["none"] = _store_key(keys_file, "none", "no_such_layer_zz")
    return Server(keys=[KEY_ALL], data_dir=lake, env={"DAPI_KEYS_FILE": keys_file}, name=name,
                  **kw)


def _forbidden(srv, payload, layer, key=None):
    key = key or KEY_PUB()
    r = srv.create_resp(payload, key=key)
    body = expect_error(r, 403)
    eq(body.get("details"), "this API key may not read layer '%s'" % layer,
       "the refusal of %r" % (payload,))
    check(SECRET not in r.body.decode("utf-8", "replace"), "no secret in %r" % r.short())


def _refused(srv, payload, key=None):
    key = key or KEY_PUB()
    r = srv.create_resp(payload, key=key)
    check(r.status in (400, 403), "%r refused (got %s)" % (payload, r.short()))
    check(SECRET not in r.body.decode("utf-8", "replace"), "no secret in %r" % r.short())


# (SQL with LAKE for the lake's path, the layer the refusal names, readable unscoped)
BYPASSES = [
    ('SELECT * FROM "secret"."t"', "secret", True),
    ("SELECT * FROM secret.t", "secret", True),
    ('SELECT * FROM "SECRET"."T"', "SECRET", True),
    ("SELECT * FROM memory.secret.t", "secret", True),
    ('SELECT * FROM "memory"."secret"."t"', "secret", True),
    ("FROM secret.t", "secret", True),
    ("SELECT * FROM pub.t JOIN secret.t ON true", "secret", True),
    ("SELECT * FROM pub.t, LATERAL (SELECT * FROM secret.t) s", "secret", True),
    ("WITH x AS (SELECT * FROM secret.t) SELECT * FROM x", "secret", True),
    ("WITH t AS (SELECT 1 AS a) SELECT * FROM secret.t", "secret", True),
    ("WITH RECURSIVE r(a) AS (SELECT a FROM secret.t UNION SELECT a FROM r) SELECT * FROM r",
     "secret", True),
    ("SELECT (SELECT max(a) FROM secret.t) AS m", "secret", True),
    ("SELECT 1 AS x WHERE EXISTS (SELECT 1 FROM secret.t)", "secret", True),
    ("SELECT a::VARCHAR AS a FROM pub.t UNION ALL SELECT a FROM secret.t", "secret", True),
    ("SELECT * FROM secret.t PIVOT (count(*) FOR a IN ('%s'))" % SECRET, "secret", True),
    ("SELECT * FROM unnest((SELECT list(a) FROM secret.t))", "secret", True),
    ("SELECT * FROM mirror.t", "mirror", True),
    # a table of pub whose file is secret's through a link
    ("SELECT * FROM pub.link", "secret", True),
    ("SELECT * FROM nosuch.t", "nosuch", False),
    ("SELECT * FROM information_schema.tables", "information_schema", False),
    ("SELECT * FROM read_csv('LAKE/secret/t.csv')", "secret", True),
    ("SELECT * FROM read_csv('LAKE/secret/t.csv', filename = true)", "secret", True),
    ("SELECT * FROM read_csv(['LAKE/pub/t.csv', 'LAKE/secret/t.csv'])", "secret", True),
    ("SELECT * FROM read_csv('LAKE//secret/t.csv')", "secret", True),
    ("SELECT * FROM read_csv('LAKE/*/t.csv')", "*", True),
    ("SELECT * FROM glob('LAKE/*/*')", "*", True),
    ("SELECT * FROM glob('LAKE/secret/*')", "secret", True),
    ("SELECT * FROM read_text('LAKE/secret/t.csv')", "secret", True),
    ("SELECT * FROM read_json_auto('LAKE/secret/e.ndjson')", "secret", True),
    ("SELECT * FROM sniff_csv('LAKE/secret/t.csv')", "secret", True),
    ("SELECT (SELECT count(*) FROM read_csv('LAKE/secret/t.csv')) AS n", "secret", True),
    # links: a file or folder of pub that is secret's; a wildcard matching one
    ("SELECT * FROM read_csv('LAKE/pub/link.csv')", "secret", True),
    ("SELECT * FROM read_csv('LAKE/pub/l*.csv')", "secret", True),
    ("SELECT * FROM read_csv('LAKE/pub/linkdir/t.csv')", "secret", True),
    # … whether or not the file beyond the link exists (it used to be "No files found" when it
    # did not: which files another layer holds, told to a key that may not read it)
    ("SELECT * FROM read_csv('LAKE/pub/linkdir/nothing.csv')", "secret", False),
    ("SELECT * FROM read_csv('LAKE/pub/linkdir/*.parquet')", "secret", False),
    ("SELECT * FROM glob('LAKE/pub/**')", "secret", True),
]

# refused by the sandbox whatever the key (400): not read either
REFUSED = [
    'SELECT * FROM "secret.t"',
    "SELECT * FROM t",
    "SELECT * FROM duckdb_tables()",
    "SELECT * FROM duckdb_views()",
    "SELECT * FROM duckdb_tables",
    "SELECT * FROM system.main.duckdb_tables",
    "SELECT * FROM query_table('secret.t')",
    "SELECT * FROM pragma_table_info('secret.t')",
    "SELECT * FROM duckdb_columns()",
    "SELECT * FROM 'LAKE/secret/t.csv'",
    "FROM 'LAKE/secret/t.csv'",
    "SELECT * FROM read_csv('LAKE/pub/../secret/t.csv')",
    "SELECT * FROM read_csv('secret/t.csv')",
    "SELECT * FROM glob('*')",
    "SELECT * FROM read_csv(concat('LAKE/', 'secret/t.csv'))",
    "DESCRIBE secret.t",
    "PIVOT secret.t ON a USING count(*)",
]


@h.timeout(240)
def test_scoped_key_reads_only_its_layers():
    root, lake = _lake()
    with _server(lake, "scopes") as srv:
        for sql, layer, readable in BYPASSES:
            sql = sql.replace("LAKE", lake)
            _forbidden(srv, {"sql_query": sql}, layer)
            if readable:  # the same query unscoped reads rows: the refusal is the scope's
                rows = srv.query(sql, key=KEY_ALL)
                check(len(rows) > 0, "unscoped, %r reads rows" % sql)
        for sql in REFUSED:
            _refused(srv, {"sql_query": sql.replace("LAKE", lake)})
        # its own layer, in any case, and its own files
        eq(srv.query("SELECT count(*) AS n FROM pub.orders", key=KEY_PUB()), [{"n": 2}], "rows")
        eq(srv.query('SELECT a FROM "PUB"."T"', key=KEY_PUB()), [{"a": 1}], "rows")
        eq(srv.query("SELECT a FROM read_csv('%s/pub/t.csv')" % lake, key=KEY_PUB()), [{"a": 1}],
           "rows of its own file")
        # DuckDB's "Did you mean" would name other layers' tables: not to a scoped key
        r = srv.create_resp({"sql_query": "SELECT * FROM pub.e"}, key=KEY_PUB())
        d = expect_error(r, 400).get("details") or ""
        check("does not exist" in d and "secret" not in d and "mirror" not in d,
              "no other layer's table named: %r" % d)
        # a key scoped to no layer reads none
        _forbidden(srv, {"sql_query": "SELECT * FROM pub.t"}, "pub", key=KEY_NONE())
        eq(srv.query("SELECT 1 AS one", key=KEY_NONE()), [{"one": 1}], "no table: fine")
        check(KEY_PUB() not in srv.stderr_text(), "the key is not logged")


def _emu_v2(srv, sql, key):
    r = srv.api("POST", "/api/v1/sql-query/", {"sql": sql}, key=key)
    eq(r.status, 200, "sql-query %r: %s" % (sql, r.short()))
    return jparse(r)


def _emu_v1(srv, sql, key):
    """The Explorer flow (application, query, execution of page 1) to its end: the
    execution's last status."""
    r = srv.api("POST", "/api/v1/explorer/application/start/", {}, key=key)
    eq(r.status, 200, "start: %s" % r.short())
    deadline = time.monotonic() + 10
    while True:
        r = srv.api("POST", "/api/v1/explorer/queries/", {"sql_query": sql}, key=key)
        if r.status != 409 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    eq(r.status, 201, "explorer query: %s" % r.short())
    slug = jparse(r)["slug"]
    r = srv.api("POST", "/api/v1/explorer/queries/%s/execution/" % slug, {"page_number": 1},
                key=key)
    eq(r.status, 201, "execution: %s" % r.short())
    path = "/api/v1/explorer/queries/%s/execution/%s/" % (slug, jparse(r)["id"])
    while True:
        r = srv.api("GET", path, key=key)
        st = jparse(r)
        if st.get("status") != "running" or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    check(SECRET not in r.body.decode("utf-8", "replace"), "no secret in %r" % r.short())
    return st


@h.timeout(120)
def test_nekt_emulator_holds_store_keys_to_their_scope():
    """--emulate-nekt accepts store keys (its /api/v1/ routes run SQL on the same lake): it
    held them to nothing, so a key scoped to pub read every layer through it, v2 and v1.
    Each bypass now fails there as on dapi's own routes, naming the layer; the unscoped key
    still reads it, and the scoped one its own layer."""
    root, lake = _lake()
    with _server(lake, "scopes-emu", args=["--emulate-nekt"]) as srv:
        for sql, layer, readable in BYPASSES:
            sql = sql.replace("LAKE", lake)
            d = _emu_v2(srv, sql, KEY_PUB())
            eq(d.get("state"), "FAILED", "v2, scoped: %r" % (sql,))
            check("presigned_urls" not in d, "no files for %r" % (sql,))
            check("may not read layer '%s'" % layer in d.get("error", ""),
                  "the refusal names %s: %r" % (layer, d))
            if readable:
                eq(_emu_v2(srv, sql, KEY_ALL).get("state"), "SUCCEEDED", "unscoped: %r" % sql)
        eq(_emu_v2(srv, "SELECT * FROM pub.orders", KEY_PUB()).get("state"), "SUCCEEDED",
           "its own layer")
        st = _emu_v1(srv, "SELECT * FROM secret.t", KEY_PUB())
        eq(st.get("status"), "failed", "v1, scoped: %r" % st)
        check("may not read layer 'secret'" in st.get("error", ""), "names the layer: %r" % st)
        eq(_emu_v1(srv, "SELECT * FROM secret.t", KEY_ALL).get("status"), "complete",
           "v1, unscoped")
        eq(_emu_v1(srv, "SELECT * FROM pub.t", KEY_PUB()).get("status"), "complete",
           "v1, its own layer")


@h.timeout(60)
def test_a_narrowed_key_no_longer_reads_its_earlier_results():
    """A key's layers narrowed (the keys file edited, read again while serving) held its new
    queries to them, but its earlier queries' results and exports were still served for the
    whole retention, secret rows included. A key now reads a query's result only while its
    scope covers the one the query was created under: 403 naming why, for results and every
    export format; other keys' slugs stay 404."""
    root, lake = _lake()
    keys_file = os.path.join(h.tmpdir("keys"), "keys")
    wide = _store_key(keys_file, "wide", "pub,secret")
    KEYS["pub"] = _store_key(keys_file, "pub", "pub")
    with Server(keys=[KEY_ALL], data_dir=lake, env={"DAPI_KEYS_FILE": keys_file},
                name="scopes-narrow") as srv:
        sec = srv.create("SELECT a FROM secret.t", key=wide)
        pub = srv.create("SELECT a FROM pub.t", key=wide)
        eq(srv.page(sec, 1, key=wide), [{"a": SECRET}], "read while the key has both layers")
        other = srv.create("SELECT a FROM pub.t", key=KEY_ALL)
        text = open(keys_file).read()
        check("layers=pub,secret" in text, "the key's line: %r" % text)
        tmp = keys_file + ".edit"
        with open(tmp, "w") as f:
            f.write(text.replace("layers=pub,secret", "layers=pub"))
        os.rename(tmp, keys_file)
        deadline = time.monotonic() + 10
        while srv.create_resp({"sql_query": "SELECT a FROM secret.t"}, key=wide).status != 403:
            check(time.monotonic() < deadline, "the narrowed scope is read again")
            time.sleep(0.1)
        r = srv.results(sec, 1, key=wide)
        body = expect_error(r, 403, "Forbidden", "the earlier result of a layer it lost")
        check("may no longer read layer 'secret'" in body.get("details", ""), "why: %r" % body)
        check(SECRET not in r.body.decode(), "no secret in %r" % r.short())
        for fmt in ("csv", "ndjson", "json", "parquet"):
            r = srv.api("GET", "/api/queries/%s/export?format=%s" % (sec, fmt), key=wide)
            expect_error(r, 403, "Forbidden", "the %s export" % fmt)
            check(SECRET.encode() not in r.body, "no secret in the %s export" % fmt)
        # (a query is held to the key's scope when it was created, not to the layers it read:
        # its earlier query of pub goes too; the same query made again is served)
        expect_error(srv.results(pub, 1, key=wide), 403, "Forbidden", "created under both layers")
        eq(srv.query("SELECT a FROM pub.t", key=wide), [{"a": 1}], "made again under pub alone")
        # not its query: 404 as ever, whatever the scopes
        expect_error(srv.results(other, 1, key=wide), 404, "Query not found", "another key's")
        expect_error(srv.results(sec, 1, key=KEY_PUB()), 404, "Query not found", "another key's")


def test_layer_and_table_form_is_checked_the_same_way():
    root, lake = _lake()
    with _server(lake, "scopes-lt") as srv:
        _forbidden(srv, {"layer": "secret", "table": "t"}, "secret")
        _forbidden(srv, {"layer": "SECRET", "table": "t", "limit": 1}, "SECRET")
        _forbidden(srv, {"layer": "mirror", "table": "t"}, "mirror")
        _forbidden(srv, {"layer": "nosuch", "table": "t"}, "nosuch")
        slug = srv.create(payload={"layer": "pub", "table": "orders"}, key=KEY_PUB())
        eq(len(srv.all_rows(slug, key=KEY_PUB())), 2, "its own layer's rows")
        eq(len(srv.query("SELECT * FROM secret.t", key=KEY_ALL)), 1, "unscoped reads it")


def test_slugs_stay_bound_to_the_creating_key():
    root, lake = _lake()
    with _server(lake, "scopes-slugs") as srv:
        secret = srv.create("SELECT * FROM secret.t", key=KEY_ALL)
        mine = srv.create("SELECT * FROM pub.t", key=KEY_PUB())
        eq(srv.page(secret, 1, key=KEY_ALL), [{"a": SECRET}], "the owner reads it")
        for key in (KEY_PUB(), KEY_NONE()):
            r = srv.results(secret, 1, key=key)
            expect_error(r, 404, "Query not found", "another key's slug")
            check(SECRET not in r.body.decode(), "no secret")
        eq(srv.page(mine, 1, key=KEY_PUB()), [{"a": 1}], "its own")
        expect_error(srv.results(mine, 1, key=KEY_ALL), 404, "Query not found",
                     "an unscoped key does not read a scoped key's slug either")


def test_scope_is_stored_with_the_query_and_kept_across_restart():
    root, lake = _lake()
    with _server(lake, "scopes-restart") as srv:
        slug = srv.create("SELECT count(*) AS n FROM pub.orders", key=KEY_PUB())
        eq(srv.page(slug, 1, key=KEY_PUB()), [{"n": 2}], "rows")
        other = srv.create("SELECT 1 AS one", key=KEY_ALL)
        srv.page(other, 1, key=KEY_ALL)
        # (small results: their record in a pack file holds the same meta.json text)
        eq(h.persisted_meta(srv.state_dir, slug).get("scope"), ["pub"], "the scope in its record")
        check("scope" not in h.persisted_meta(srv.state_dir, other), "an unscoped query stores none")
        srv.restart()
        eq(srv.page(slug, 1, key=KEY_PUB()), [{"n": 2}], "after the restart")
        _forbidden(srv, {"sql_query": "SELECT * FROM secret.t"}, "secret")
