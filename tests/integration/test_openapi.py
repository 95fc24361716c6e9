"""GET /api/openapi.json: the OpenAPI 3.1 document of dapi's endpoints (docs/openapi.json,
embedded in the binary at build time).

- The served document is the repository's file, byte for byte, with no key, and its
  info.version is the binary's version.
- A real validator from the npm registry (@seriousme/openapi-schema-validator, pinned with its
  integrity in tests/openapi/package-lock.json, installed with `npm ci` into build/npm-openapi)
  accepts it, and refuses a broken copy (so it does check).
- Every route of every route table in src/ is described, with exactly its methods, and every
  described path and method exists in the running binary. The tables are read as C reads
  them (comments stripped around string literals, initializers mapped to struct dapi_route's
  fields, designated ones too); a prefix route (DAPI_ROUTE_ANY) is documented at its `name`
  pattern, and a route shape the parser cannot map fails with "teach this test". The Nekt emulator's table
  (src/emu/emu.c, only with --emulate-nekt: a test tool imitating Nekt, not dapi's API) is
  the one deliberate exception, and must stay undescribed. A route added without describing
  it fails here.
- Every named example is sent to a live server over the sample lake: a request example named
  N (request body and parameters) must get the status of the response that has an example
  named N, a body valid against that response's schema (a strict checker of the JSON Schema
  subset the document uses: an unknown keyword is an error, never ignored), the example's key
  order and its messages (a text/plain answer: the example is an excerpt of it; an export's
  csv, tsv or ndjson text and a JSON array: the example is all of it, byte for byte; a file of
  the web console: an excerpt of it), and a
  documented text header it carries must match its schema (Server-Timing). A path parameter filled by a documented link (the slug of
  `POST /api/queries`, or of a results page) comes from running the linking operation's example
  of the same name. A request example with no response example of its name gets the one 2xx
  documented without a body (DELETE's 204), and its answer must have none. DELETE examples run
  last: they delete what they name, which the HEAD repeats of GET examples still read.
- Route entries: a slug route's suffix "" (the slug ends the path), and the methods of its
  Allow list: GET, HEAD and POST each by its handler or `other`, any other (DELETE) by `other`.
"""

import json
import os
import re
import subprocess
import urllib.parse

import harness as h
from harness import Server, check, eq, expect_error, expect_status, jparse

ROOT = h.REPO_ROOT
DOC_PATH = os.path.join(ROOT, "docs", "openapi.json")
NPM_DIR = os.path.join(ROOT, "tests", "openapi")
KEY = "it-openapi-key-7d2f"
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
# Route tables that are deliberately not described: file -> table name, and why.
UNDESCRIBED = {("src/emu/emu.c", "emu_routes"): "the Nekt emulator (--emulate-nekt), a test tool"}


def _doc():
    with open(DOC_PATH, encoding="utf-8") as f:
        return json.load(f)


def _resolve(doc, node):
    """node with its $ref (a local one, #/...) followed, repeatedly."""
    seen = 0
    while isinstance(node, dict) and "$ref" in node:
        ref = node["$ref"]
        check(ref.startswith("#/"), "only local $refs are used: %r" % ref)
        node = doc
        for part in ref[2:].split("/"):
            part = part.replace("~1", "/").replace("~0", "~")
            check(isinstance(node, dict) and part in node, "dangling $ref %r" % ref)
            node = node[part]
        seen += 1
        check(seen < 20, "a $ref loop at %r" % ref)
    return node


# --------------------------------------------------------------------------- JSON Schema


class SchemaError(AssertionError):
    pass


# Keywords that only annotate: they constrain nothing the checker must enforce.
ANNOTATIONS = {"description", "title", "default", "examples", "example", "format", "$comment"}
TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def validate(doc, schema, value, where="$"):
    """Raises SchemaError unless value is valid against schema (the subset of JSON Schema
    2020-12 below; any other keyword is refused, so nothing is silently unchecked)."""
    if "$ref" in schema:
        extra = set(schema) - {"$ref", "description", "summary"}
        if extra:
            raise SchemaError("%s: keywords beside $ref (%s) are not supported" % (where, sorted(extra)))
        return validate(doc, _resolve(doc, schema), value, where)
    for kw, arg in schema.items():
        if kw in ANNOTATIONS or kw in ("additionalProperties", "minimum"):
            continue
        if kw == "type":
            names = arg if isinstance(arg, list) else [arg]
            if not any(TYPES[n](value) for n in names):
                raise SchemaError("%s: %r is not of type %s" % (where, value, arg))
        elif kw == "properties":
            if isinstance(value, dict):
                for k, sub in arg.items():
                    if k in value:
                        validate(doc, sub, value[k], "%s.%s" % (where, k))
                ap = schema.get("additionalProperties", True)
                for k in value:
                    if k not in arg:
                        if ap is False:
                            raise SchemaError("%s: property %r is not allowed" % (where, k))
                        if isinstance(ap, dict):
                            validate(doc, ap, value[k], "%s.%s" % (where, k))
        elif kw == "required":
            if isinstance(value, dict):
                missing = [k for k in arg if k not in value]
                if missing:
                    raise SchemaError("%s: missing %s in %r" % (where, missing, value))
        elif kw == "items":
            if isinstance(value, list):
                for i, v in enumerate(value):
                    validate(doc, arg, v, "%s[%d]" % (where, i))
        elif kw == "maxItems":
            if isinstance(value, list) and len(value) > arg:
                raise SchemaError("%s: %d items, at most %d" % (where, len(value), arg))
        elif kw == "minLength":
            if isinstance(value, str) and len(value) < arg:
                raise SchemaError("%s: %r is shorter than %d" % (where, value, arg))
        elif kw == "pattern":
            if isinstance(value, str) and not re.search(arg, value):
                raise SchemaError("%s: %r does not match %r" % (where, value, arg))
        elif kw == "const":
            if value != arg or type(value) is not type(arg):
                raise SchemaError("%s: %r is not %r" % (where, value, arg))
        elif kw == "enum":
            if value not in arg:
                raise SchemaError("%s: %r is not one of %r" % (where, value, arg))
        elif kw == "oneOf":
            ok = []
            for i, sub in enumerate(arg):
                try:
                    validate(doc, sub, value, where)
                    ok.append(i)
                except SchemaError:
                    pass
            if len(ok) != 1:
                raise SchemaError("%s: %r matches %d of the oneOf schemas (must be exactly 1)" % (where, value, len(ok)))
        else:
            raise SchemaError("%s: the checker does not know the keyword %r: teach it, do not skip it" % (where, kw))
    if "minimum" in schema and TYPES["number"](value) and value < schema["minimum"]:
        raise SchemaError("%s: %r is below %r" % (where, value, schema["minimum"]))
    ap = schema.get("additionalProperties", True)
    if "properties" not in schema and ap is not True and isinstance(value, dict) and value:
        if ap is False:
            raise SchemaError("%s: no property is allowed: %r" % (where, value))
        for k, v in value.items():
            validate(doc, ap, v, "%s.%s" % (where, k))


def test_schema_checker_is_strict():
    """The checker the tests below rely on refuses what it should (it is the test's own code)."""
    doc = _doc()
    err = {"$ref": "#/components/schemas/Error"}
    validate(doc, err, {"error": "x"})
    validate(doc, err, {"details": "d", "error": "x"})
    for bad in ({}, {"error": 1}, {"error": ""}, {"error": "x", "extra": 1}, ["error"]):
        try:
            validate(doc, err, bad)
        except SchemaError:
            continue
        h.fail("the checker accepted %r as an Error" % (bad,))
    try:
        validate(doc, {"type": "string", "maxLength": 3}, "abcd")
        h.fail("an unknown keyword was ignored")
    except SchemaError as e:
        check("does not know" in str(e), str(e))


def test_response_examples_match_their_schemas():
    doc = _doc()
    n = 0
    for path, item in doc["paths"].items():
        for method, op in item.items():
            for status, r in op["responses"].items():
                r = _resolve(doc, r)
                for ctype, c in r.get("content", {}).items():
                    for name, ex in c.get("examples", {}).items():
                        try:
                            validate(doc, c["schema"], ex["value"])
                        except SchemaError as e:
                            h.fail("%s %s %s example %r: %s" % (method.upper(), path, status, name, e))
                        n += 1
    for name, r in doc["components"]["responses"].items():
        for c in r.get("content", {}).values():
            for ex_name, ex in c.get("examples", {}).items():
                validate(doc, c["schema"], ex["value"], "components.responses.%s.%s" % (name, ex_name))
                n += 1
    check(n >= 20, "only %d response examples" % n)


# --------------------------------------------------------------------------- served document


def test_served_document_is_the_repository_file_without_a_key():
    with open(DOC_PATH, "rb") as f:
        want = f.read()
    with Server(keys=[KEY], name="openapi-doc") as s:
        # No key needed. A key sent is checked as on every route (it selects the endpoints of
        # --endpoints-file the document describes: test_endpoints), so a wrong one gets 401.
        expect_error(s.request("GET", "/api/openapi.json", headers={"x-api-key": "not-a-key"}), 401,
                     "Invalid API key", "a wrong key")
        for key in (None, KEY):  # without an endpoints file, the same document either way
            r = s.request("GET", "/api/openapi.json", headers={"x-api-key": key})
            expect_status(r, 200, "GET /api/openapi.json with key %r" % key)
            eq(r.headers.get("content-type"), "application/json", "Content-Type")
            check(r.body == want, "the served document differs from docs/openapi.json (%d vs %d bytes)" % (len(r.body), len(want)))
            check(r.headers.get("x-request-id"), "X-Request-Id on the answer")
        doc = jparse(r)
        r = s.request("HEAD", "/api/openapi.json")
        expect_status(r, 200, "HEAD /api/openapi.json")
        eq(r.headers.get("content-length"), str(len(want)), "HEAD Content-Length")
        r = s.request("POST", "/api/openapi.json", body={})
        h.expect_error(r, 405, "Method not allowed", "POST /api/openapi.json")
        eq(r.headers.get("allow"), "GET, HEAD", "Allow")
    out = subprocess.run([h.BIN, "--version"], capture_output=True, text=True, timeout=10).stdout
    m = re.match(r"dapi (\S+)", out)
    check(m, "dapi --version: %r" % out)
    eq(doc["info"]["version"], m.group(1), "info.version of the served document (the binary's version)")
    eq(doc["openapi"][:4], "3.1.", "openapi version")


def test_build_refuses_a_document_of_another_version():
    """scripts/embed-openapi.py (run by make) stops on an info.version other than
    DAPI_VERSION, and on a document that is not JSON: a stale document cannot be built in."""
    d = h.tmpdir("embed")
    doc = _doc()
    doc["info"]["version"] = "0.0.0-stale"
    bad = os.path.join(d, "stale.json")
    h.write_file(bad, json.dumps(doc))
    out = os.path.join(d, "out.c")
    script = os.path.join(ROOT, "scripts", "embed-openapi.py")
    version_h = os.path.join(ROOT, "include", "dapi", "version.h")
    p = subprocess.run(["python3", script, bad, version_h, out], capture_output=True, text=True, timeout=30)
    check(p.returncode != 0 and "info.version" in p.stderr, "a stale version was embedded: %r" % p.stderr)
    check(not os.path.exists(out), "output written for a refused document")
    h.write_file(bad, "{not json")
    p = subprocess.run(["python3", script, bad, version_h, out], capture_output=True, text=True, timeout=30)
    check(p.returncode != 0 and "not valid" in p.stderr, "a broken document was embedded: %r" % p.stderr)
    p = subprocess.run(["python3", script, DOC_PATH, version_h, out], capture_output=True, text=True, timeout=30)
    eq(p.returncode, 0, "embedding the repository's document (%s)" % p.stderr)


# --------------------------------------------------------------------------- the npm validator


def _validator():
    """Directory with the pinned validator installed (npm ci from the committed lock, again
    only when the lock changed). Returns the directory of validate.mjs."""
    return h.npm_ci(NPM_DIR, "npm-openapi", ["validate.mjs"])


def _run_validator(d, path):
    p = subprocess.run(["node", os.path.join(d, "validate.mjs"), path], capture_output=True, text=True, timeout=60)
    check(p.returncode in (0, 1), "validate.mjs failed (%d): %s" % (p.returncode, p.stderr[-1000:]))
    return json.loads(p.stdout.strip().splitlines()[-1])


@h.timeout(300)
def test_document_is_valid_openapi_3_1():
    d = _validator()
    with Server(keys=[KEY], name="openapi-valid") as s:
        r = s.request("GET", "/api/openapi.json")
        expect_status(r, 200, "GET /api/openapi.json")
    served = os.path.join(h.tmpdir("openapi"), "served.json")
    h.write_file(served, r.body)
    res = _run_validator(d, served)
    check(res["valid"] is True, "the validator refuses the served document:\n%s" % json.dumps(res["errors"], indent=1)[:4000])
    eq(res["version"], "3.1", "the OpenAPI version the validator checked against")
    # The validator does check: a response without its (required) description is refused.
    doc = json.loads(r.body)
    del doc["paths"]["/api/queries"]["post"]["responses"]["200"]["description"]
    broken = os.path.join(h.tmpdir("openapi"), "broken.json")
    h.write_file(broken, json.dumps(doc))
    eq(_run_validator(d, broken)["valid"], False, "the validator's verdict on a broken document")


# --------------------------------------------------------------------------- routes


def _split_top(text, sep=","):
    """text split at sep outside braces, parentheses and string or character literals."""
    out, depth, cur, i = [], 0, "", 0
    while i < len(text):
        c = text[i]
        if c in "\"'":
            j = _literal_end(text, i)
            cur += text[i:j]
            i = j
            continue
        if c in "{(":
            depth += 1
        elif c in "})":
            depth -= 1
        if c == sep and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += c
        i += 1
    if cur.strip():
        out.append(cur.strip())
    return out


def _literal_end(text, i):
    """The index just past the string or character literal that starts at text[i]."""
    q, j = text[i], i + 1
    while j < len(text) and text[j] != q:
        check(text[j] != "\n", "an unterminated literal at %r" % text[i : i + 60])
        j += 2 if text[j] == "\\" else 1
    check(j < len(text), "an unterminated literal at %r" % text[i : i + 60])
    return j + 1


def _strip_comments(text):
    """C source without its comments (each replaced by a space); string and character
    literals kept whole, so "/emu-files/*" is not the start of a comment."""
    out, i = [], 0
    while i < len(text):
        c = text[i]
        if c in "\"'":
            j = _literal_end(text, i)
            out.append(text[i:j])
            i = j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            check(j >= 0, "an unterminated comment")
            out.append(" ")
            i = j + 2
        elif text.startswith("//", i):
            j = text.find("\n", i)
            i = len(text) if j < 0 else j
        else:
            out.append(c)
            i += 1
    return "".join(out)


# The fields of struct dapi_route (src/api/api.h), in order.
ROUTE_FIELDS = ("prefix", "suffix", "also", "auth", "allow", "get", "head", "post", "other", "name")


def _route_fields(entry, where):
    """{field: initializer text} of one `{...}` entry: positional and designated
    (`.name = ...`) initializers, as C reads them; a field not given is absent."""
    check(entry.startswith("{") and entry.endswith("}"), "%s: cannot read the entry %r" % (where, entry))
    out, pos = {}, 0
    for init in _split_top(entry[1:-1]):
        m = re.match(r"^\.\s*(\w+)\s*=\s*(.*)$", init, re.S)
        if m:
            check(m.group(1) in ROUTE_FIELDS, "%s: %r names no field of struct dapi_route: teach this test" % (where, init))
            pos = ROUTE_FIELDS.index(m.group(1))
            init = m.group(2).strip()
        check(pos < len(ROUTE_FIELDS), "%s: more initializers than struct dapi_route has fields in %r: teach this test" % (where, entry))
        out[ROUTE_FIELDS[pos]] = init
        pos += 1
    return out


def _c_string(init, where, field):
    """The value of a string-literal initializer (adjacent literals joined), None for NULL."""
    if init is None or init == "NULL":
        return None
    parts = re.findall(r'"(?:[^"\\]|\\.)*"', init)
    check(parts and re.fullmatch(r'(\s*"(?:[^"\\]|\\.)*")+\s*', init), "%s: the %s field %r is not a string literal: teach this test" % (where, field, init))
    return "".join(json.loads(p) for p in parts)


def route_template(f, where):
    """(template, methods) of one route's fields: template is the path with "{}" for each
    parameter segment (the slug; for a DAPI_ROUTE_ANY route, the segments of its `name`
    pattern), or ending in "*" for a prefix route that has no such pattern."""
    prefix = _c_string(f.get("prefix"), where, "prefix")
    check(isinstance(prefix, str) and prefix.startswith("/"), "%s: unexpected route prefix %r: teach this test" % (where, f.get("prefix")))
    allow = _c_string(f.get("allow", "NULL"), where, "allow")
    check(isinstance(allow, str) and re.match(r"^([A-Z]+(, [A-Z]+)*)?$", allow), "%s: the allow field of %s is not an Allow list" % (where, prefix))
    name = _c_string(f.get("name", "NULL"), where, "name")
    methods = set(allow.lower().split(", ")) - {""}
    # The methods the route serves are its Allow list: GET, HEAD and POST by their handler
    # (or `other`), any other method (DELETE…) only by `other`, which the handler tells
    # apart by the request's method; a handler for a method not in the list is a mismatch.
    other = f.get("other", "NULL") != "NULL"
    for m in sorted(methods):
        handler = f.get(m, "NULL") != "NULL" if m in ("get", "head", "post") else False
        check(handler or other, "%s: %s lists %s in its Allow, but no handler serves it (neither `%s` nor `other`)" % (where, prefix, m.upper(), m))
    for m in ("get", "head", "post"):
        check(f.get(m, "NULL") == "NULL" or m in methods, "%s: %s has a %s handler, but its Allow %r does not list it" % (where, prefix, m.upper(), allow))
    suffix = f.get("suffix", "NULL")
    if suffix == "NULL":
        template = prefix
    elif suffix == "DAPI_ROUTE_ANY":
        # the handler parses the rest of the path; its metrics name says what it accepts
        if name and "*" not in name:
            check(name.startswith(prefix), "%s: the name %r of the prefix route %s does not start with the prefix" % (where, name, prefix))
            template = _template(name)
        else:
            template = prefix + "*"
    else:
        # "" = the slug is the path's last segment (/api/queries/{slug}); else what follows it
        template = prefix + "{}" + _c_string(suffix, where, "suffix")
        check(prefix.endswith("/"), "%s: the slug route %s: its prefix does not end with /: teach this test" % (where, prefix))
    if name and suffix != "DAPI_ROUTE_ANY":
        eq(_template(name), template, "%s: the metrics name of %s vs its path" % (where, prefix))
    return template, methods


def parse_route_tables(text, rel):
    """{table: [(template, methods)]} of every `struct dapi_route NAME[] = {...}` in the C
    source text (see route_template)."""
    tables = {}
    text = _strip_comments(text)
    for m in re.finditer(r"struct\s+dapi_route\s+(\w+)\s*\[\s*\]\s*=\s*\{", text):
        depth, i = 1, m.end()
        while depth:
            check(i < len(text), "%s %s: the table does not end" % (rel, m.group(1)))
            if text[i] in "\"'":
                i = _literal_end(text, i)
                continue
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        where = "%s %s" % (rel, m.group(1))
        tables[m.group(1)] = [route_template(_route_fields(e, where), where) for e in _split_top(text[m.end() : i - 1])]
    return tables


def route_tables():
    """{(file, table): [(template, methods)]} of every route table in src/."""
    tables = {}
    for dirpath, _, files in os.walk(os.path.join(ROOT, "src")):
        for fn in sorted(files):
            if not fn.endswith(".c"):
                continue
            path = os.path.join(dirpath, fn)
            rel = os.path.relpath(path, ROOT)
            for name, routes in parse_route_tables(open(path, encoding="utf-8").read(), rel).items():
                tables[(rel, name)] = routes
    return tables


def _template(openapi_path):
    return re.sub(r"\{[^}]+\}", "{}", openapi_path)


def test_every_route_is_described_and_every_described_route_exists():
    doc = _doc()
    described = {}
    for p, item in doc["paths"].items():
        ops = {m for m in item if m in METHODS}
        check(ops, "%s describes no operation" % p)
        described[_template(p)] = (p, ops)
    tables = route_tables()
    check(("src/api/api.c", "routes") in tables, "dapi's route table (src/api/api.c) was not found: %r" % list(tables))
    for (rel, name), why in UNDESCRIBED.items():
        check((rel, name) in tables, "the route table %s %s (%s) is gone: update UNDESCRIBED" % (rel, name, why))
    served = {}
    for (rel, name), routes in tables.items():
        for template, methods in routes:
            if (rel, name) in UNDESCRIBED:
                # ("/", the console's page, is an exact path: every path starts with it)
                hit = [d for d in described if d.startswith(template.rstrip("*")) or (d != "/" and template.rstrip("*").startswith(d))]
                check(not hit, "%s (%s) is described in docs/openapi.json, but %s is deliberately not" % (template, rel, UNDESCRIBED[(rel, name)]))
                continue
            check("*" not in template, "%s %s: a prefix route (%s) cannot be described: teach this test" % (rel, name, template))
            check(template in described, "the route %s (%s in %s) is not described in docs/openapi.json" % (template.replace("{}", "{slug}"), ", ".join(sorted(methods)).upper(), rel))
            eq(described[template][1], methods, "methods of %s in docs/openapi.json vs the route table (%s)" % (template, rel))
            served[template] = methods
    extra = sorted(set(described) - set(served))
    eq(extra, [], "paths described in docs/openapi.json that no route table serves")

    # The binary agrees: every described path and method is routed (no route-miss "Not found",
    # no 405), and any other method gets 405 with an Allow header listing exactly the others.
    with Server(keys=[KEY], name="openapi-routes") as s:
        r = s.api("GET", "/api/no-such-route")
        h.expect_error(r, 404, "Not found", "an unknown path (the route-miss answer)")
        for template, (p, ops) in sorted(described.items()):
            url = template.replace("{}", "dapi-query-000000000000000000000x")
            for m in sorted(ops):
                body = {"sql_query": "SELECT 1"} if m == "post" else None
                r = s.api(m.upper(), url, body=body)
                check(r.status != 405, "%s %s: 405 from the binary (%s)" % (m.upper(), p, r.short()))
                if r.status == 404 and m != "head":
                    check(jparse(r).get("error") != "Not found", "%s %s: the binary has no such route (%s)" % (m.upper(), p, r.short()))
            for m in ("PUT", "DELETE", "PATCH", "POST", "GET"):
                if m.lower() in ops:
                    continue
                r = s.api(m, url, body={} if m in ("PUT", "POST", "PATCH") else None)
                h.expect_error(r, 405, "Method not allowed", "%s %s (not described)" % (m, p))
                eq(set(r.headers.get("allow", "").lower().split(", ")), ops, "Allow of %s vs the described methods" % p)


def test_route_parser_sees_a_new_route():
    """The parser above reads the route tables as C does, and would notice an undescribed
    route: a table with more entries, written as api.c writes them, yields them."""
    # its field list is struct dapi_route's
    api_h = _strip_comments(open(os.path.join(ROOT, "src", "api", "api.h"), encoding="utf-8").read())
    m = re.search(r"struct\s+dapi_route\s*\{(.*?)\};", api_h, re.S)
    check(m, "struct dapi_route is not in src/api/api.h")
    names = []
    for decl in m.group(1).split(";"):
        decl = re.sub(r"\(\s*\*\s*(\w+)\s*\)\s*\(.*\)", r"\1", decl.strip(), flags=re.S)  # function pointers
        names += [n.strip().lstrip("*").strip() for n in re.sub(r"^(const\s+)?(struct\s+)?\w+\s*", "", decl).split(",") if n.strip()]
    eq(tuple(names), ROUTE_FIELDS, "the fields of struct dapi_route (src/api/api.h) vs ROUTE_FIELDS")

    t = route_tables()[("src/api/api.c", "routes")]
    check(len(t) >= 3 and ("/api/queries/{}/results", {"get", "head"}) in t, "parsed %r" % t)
    check(("/api/layers/{}/tables/{}", {"get", "head"}) in t, "the discovery route (by its name): parsed %r" % t)
    src = """
    /* a comment with a route in it: {"/api/c", NULL, NULL, 1, "GET", f, NULL, NULL, NULL, NULL}, */
    static const struct dapi_route routes[] = {
        {"/api/x", NULL, NULL, 1, "GET", f, NULL, NULL, NULL, "/api/x"}, // a line comment {
        {"/api/y/", "/z", NULL, 1, "POST, GET, HEAD", a, b, c,
         NULL, "/api/y/{slug}/z"},
        {"/api/files/", DAPI_ROUTE_ANY, NULL, 0, "GET", g, NULL, NULL, NULL, "/api/files/*"},
        {"/api/t/", DAPI_ROUTE_ANY, NULL, 1, "GET, HEAD", d, d, NULL, NULL, "/api/t/{a}/b/{c}"},
        {"/api/old", NULL, NULL, 1, "PUT", NULL, NULL, NULL, p},
        {.prefix = "/api/d", .allow = "DELETE", .other = del, .name = "/api/d"},
        {"/api/q/", "", NULL, 1, "GET, HEAD, DELETE", s, s, NULL, del, "/api/q/{slug}"},
        {"/api/r/", "", NULL, 1, "POST", NULL, NULL, NULL, any, "/api/r/{slug}"},
    };"""
    eq(parse_route_tables(src, "x.c"), {"routes": [
        ("/api/x", {"get"}),
        ("/api/y/{}/z", {"post", "get", "head"}),
        ("/api/files/*", {"get"}),  # refused by the test above: a prefix route without a pattern
        ("/api/t/{}/b/{}", {"get", "head"}),
        ("/api/old", {"put"}),  # the name is optional
        ("/api/d", {"delete"}),
        ("/api/q/{}", {"get", "head", "delete"}),  # suffix "": the slug ends the path
        ("/api/r/{}", {"post"}),  # `other` may serve a method of the three too
    ]}, "routes parsed")
    t = dict(t)
    eq(t.get("/api/queries/{}"), {"get", "head", "delete"}, "the status route (suffix \"\", DELETE through `other`)")
    for bad, why in (
        ('{"/api/x", NULL, NULL, 1, "GET", f, NULL, NULL, NULL, "/api/x", extra}', "more initializers"),
        ('{"/api/x", NULL, NULL, 1, "GET", f, NULL, NULL, NULL, "/api/other"}', "metrics name"),
        ('{"/api/t/", DAPI_ROUTE_ANY, NULL, 1, "GET", d, NULL, NULL, NULL, "/elsewhere/{a}"}', "does not start with the prefix"),
        ('{PREFIX, NULL, NULL, 1, "GET", f, NULL, NULL, NULL, NULL}', "teach this test"),
        ('{.path = "/api/x"}', "teach this test"),
        ('{"/api/q/", "", NULL, 1, "GET, DELETE", s, NULL, NULL, NULL, "/api/q/{slug}"}', "no handler serves it"),
        ('{"/api/q/", "", NULL, 1, "GET", s, s, NULL, NULL, "/api/q/{slug}"}', "does not list it"),
        ('{"/api/q/", "", NULL, 1, "GET", s, NULL, NULL, NULL, "/api/q/{a}/b"}', "metrics name"),
    ):
        try:
            parse_route_tables("static const struct dapi_route r[] = {%s};" % bad, "x.c")
        except AssertionError as e:
            check(why in str(e), "%s: %s" % (bad, e))
            continue
        h.fail("the parser accepted %s" % bad)


# --------------------------------------------------------------------------- examples


def check_text_example(what, body, example):
    """A text example is an excerpt of the Prometheus text answer: each of its comment lines
    (`# HELP`, `# TYPE`) is a line of the answer, in the same order, and each of its samples
    is a series of the answer (name and labels; the value may differ, but is a number)."""
    lines = body.split("\n")
    series = {}
    for line in lines:
        if line and not line.startswith("#"):
            s, _, v = line.rpartition(" ")
            series[s] = v
    at = 0
    for line in example.rstrip("\n").split("\n"):
        if line.startswith("#"):
            check(line in lines[at:], "%s: the example's line %r is not in the answer (after line %d)" % (what, line, at))
            at = lines.index(line, at) + 1
        else:
            s, _, v = line.rpartition(" ")
            float(v)  # the example's value is a number
            check(s in series, "%s: the example's series %r is not in the answer" % (what, s))
            float(series[s])


# Text answers that are data, not messages (an export's csv, tsv, ndjson): the example is
# the whole answer, byte for byte (the sample lake's rows are the same on every machine).
EXACT_TEXT = ("text/csv; charset=utf-8", "text/tab-separated-values; charset=utf-8", "application/x-ndjson")

# The web console's files (GET /, GET /console/{file}): an example is an excerpt of the file
# (tests/integration/test_console.py compares the whole files with console/).
CONSOLE_TEXT = ("text/html; charset=utf-8", "text/css; charset=utf-8", "text/javascript; charset=utf-8")


def check_exact_example(what, body, example):
    check(body == example, "%s: the answer %r is not the example %r" % (what, body[:400], example[:400]))


def check_exact_array(what, text, example):
    """A JSON array example is the whole answer: the same values (numbers by their text),
    each object's keys in the same order (as the pages write them)."""
    def load(t):  # numbers by their text: 1.0 is not 1
        num = lambda n: ("number", n)  # noqa: E731
        return json.loads(t, object_pairs_hook=lambda kv: kv, parse_int=num, parse_float=num)

    body, want = load(text), load(json.dumps(example))
    check(body == want, "%s: the answer %r is not the example %r" % (what, text[:400], example))


def test_exact_example_checks_refuse_a_difference():
    """The export examples' checks (above) are strict: a byte, a value or a key order differs."""
    check_exact_example("same", "n\r\n1\r\n", "n\r\n1\r\n")
    check_exact_array("same", '[{"n":0,"s":"a"}]\n', [{"n": 0, "s": "a"}])
    for f, body, example in (
        (check_exact_example, "n\n1\n", "n\r\n1\r\n"),  # LF for CRLF
        (check_exact_example, "n\r\n1\r\n2\r\n", "n\r\n1\r\n"),  # a row more
        (check_exact_array, '[{"s":"a","n":0}]', [{"n": 0, "s": "a"}]),  # key order
        (check_exact_array, '[{"n":0,"s":"a"},{"n":1,"s":"b"}]', [{"n": 0, "s": "a"}]),  # a row more
        (check_exact_array, '[{"n":0,"s":"b"}]', [{"n": 0, "s": "a"}]),  # a value
        (check_exact_array, '[{"n":0.0,"s":"a"}]', [{"n": 0, "s": "a"}]),  # a number's text
    ):
        try:
            f("x", body, example)
        except AssertionError:
            continue
        h.fail("%s accepted %r as %r" % (f.__name__, body, example))


class Runner:
    """Sends the document's named examples to a live server."""

    def __init__(self, doc, srv):
        self.doc, self.s = doc, srv
        self.ops = {}  # operationId -> (path, method, op)
        for p, item in doc["paths"].items():
            for m, op in item.items():
                if m in METHODS:
                    self.ops[op["operationId"]] = (p, m, op)
        self.cache = {}
        self.headers_seen = set()  # documented text headers that answers carried

    def params(self, op):
        return [_resolve(self.doc, p) for p in op.get("parameters", [])]

    def names(self, op):
        names = set()
        for p in self.params(op):
            names |= set(p.get("examples", {}))
        body = op.get("requestBody", {}).get("content", {}).get("application/json", {})
        names |= set(body.get("examples", {}))
        return sorted(names)

    def expected(self, op, name):
        """(status, response, example value) of the response documenting example name."""
        found = []
        for status, r in op["responses"].items():
            r = _resolve(self.doc, r)
            for c in r.get("content", {}).values():
                if name in c.get("examples", {}):
                    found.append((status, r, c["examples"][name]["value"]))
        if not found:  # an answer without a body (204) has no example: the one such 2xx
            found = [(st, _resolve(self.doc, r), None) for st, r in op["responses"].items() if st.startswith("2") and "content" not in _resolve(self.doc, r)]
        eq(len(found), 1, "responses with an example named %r in %s" % (name, op["operationId"]))
        return found[0]

    def linked(self, op_id, name):
        """{param: value} for op_id's parameters that a link fills, by running the linking
        operation's example `name` (when it has one)."""
        out = {}
        for src_id, (p, m, src) in self.ops.items():
            for status, r in src["responses"].items():
                for link in _resolve(self.doc, r).get("links", {}).values():
                    if link.get("operationId") != op_id or name not in self.names(src):
                        continue
                    resp, body = self.run(src_id, name)
                    eq(resp.status, int(status), "%s example %r (followed by a link)" % (src_id, name))
                    for param, expr in link["parameters"].items():
                        m2 = re.match(r"^\$response\.body#(/.*)$", expr)
                        check(m2, "link expression %r: teach this test" % expr)
                        v = body
                        for part in m2.group(1)[1:].split("/"):
                            v = v[part]
                        out[param] = v
        return out

    def request(self, op_id, name, method=None):
        p, m, op = self.ops[op_id]
        path, query, headers, body = p, [], {}, None
        fill = self.linked(op_id, name) if name else {}
        for prm in self.params(op):
            exs = prm.get("examples", {})
            if prm["in"] == "path":
                v = fill.get(prm["name"], exs.get(name, {}).get("value"))
                check(v is not None, "%s: no value for the path parameter %s in example %r" % (op_id, prm["name"], name))
                path = path.replace("{%s}" % prm["name"], urllib.parse.quote(str(v), safe=""))
            elif name in exs:
                v = exs[name]["value"]
                if prm["in"] == "query":
                    query.append((prm["name"], str(v)))
                elif prm["in"] == "header":
                    headers[prm["name"]] = str(v)
        if query:
            path += "?" + urllib.parse.urlencode(query)
        rb = op.get("requestBody", {}).get("content", {}).get("application/json", {})
        if name in rb.get("examples", {}):
            body = json.dumps(rb["examples"][name]["value"]).encode()
            headers["Content-Type"] = "application/json"
        elif op.get("requestBody", {}).get("required"):
            h.fail("%s example %r has no request body" % (op_id, name))
        if op.get("security", self.doc.get("security")):
            headers["x-api-key"] = KEY
        return self.s.request(method or m.upper(), path, body=body, headers=headers)

    def run(self, op_id, name):
        """Runs example name of op_id once (cached: a link may need it again)."""
        if (op_id, name) not in self.cache:
            r = self.request(op_id, name)
            json_body = r.body and r.headers.get("content-type") == "application/json"
            self.cache[(op_id, name)] = (r, jparse(r) if json_body else None)  # (an export's text: None)
        return self.cache[(op_id, name)]

    def check_response(self, op_id, name, r, status, resp, example):
        what = "%s example %r" % (op_id, name)
        expect_status(r, int(status), what)
        for hname, hdef in resp.get("headers", {}).items():
            hdef = _resolve(self.doc, hdef)
            if hdef.get("required"):
                check(r.headers.get(hname.lower()), "%s: no %s header" % (what, hname))
            if r.headers.get(hname.lower()) is not None and hdef["schema"].get("type") == "string":
                try:  # a text header present is as documented (Server-Timing's pattern…)
                    validate(self.doc, hdef["schema"], r.headers[hname.lower()])
                except SchemaError as e:
                    h.fail("%s: the %s header is not as documented: %s" % (what, hname, e))
                self.headers_seen.add(hname)
        if "content" not in resp:  # documented without a body (204)
            eq(r.body, b"", "%s: the body of a %s" % (what, status))
            return
        ctype = r.headers.get("content-type", "")
        check(ctype in resp["content"], "%s: Content-Type %r is not one of the documented %s" % (what, ctype, sorted(resp["content"])))
        schema = resp["content"][ctype]["schema"]
        if ctype == "application/json":
            body = jparse(r)
        else:
            check(ctype.startswith("text/plain") or ctype in EXACT_TEXT or ctype in CONSOLE_TEXT, "%s: %s answers: teach this test" % (what, ctype))
            body = r.body.decode("utf-8")
        try:
            validate(self.doc, schema, body)
        except SchemaError as e:
            h.fail("%s: the answer does not match the documented schema: %s\n  %s" % (what, e, r.short()))
        if isinstance(example, str) and ctype in CONSOLE_TEXT:
            check(example in body, "%s: the example %r is not in the answer" % (what, example))
        elif isinstance(example, str) and ctype in EXACT_TEXT:
            check_exact_example(what, body, example)
        elif isinstance(example, str):
            check_text_example(what, body, example)
        elif isinstance(example, list):  # a JSON array (an export): all of it, keys in order
            check_exact_array(what, r.body.decode("utf-8"), example)
        elif isinstance(example, dict):
            eq([k for k, _ in h.raw_loads(r.body.decode())], list(example), "%s: keys and their order" % what)
            for k in ("details", "error", "message", "status", "sql_query", "page", "page_number"):
                if k in example:
                    eq(body[k], example[k], "%s: %s" % (what, k))
            if "data" in example:  # the example shows the first rows of the answer
                eq(body["data"][: len(example["data"])], example["data"], "%s: the first rows" % what)
            for k in ("checks", "columns", "layer", "name", "row_count", "row_count_exact"):
                if k in example:  # the sample lake's: the same on every machine
                    eq(body[k], example[k], "%s: %s" % (what, k))


@h.timeout(300)
def test_examples_run_against_a_live_server():
    doc = _doc()
    with Server(keys=[KEY], data_dir=h.sample_lake(), name="openapi-examples") as s:
        run = Runner(doc, s)
        ran = 0
        heads = {p: item.get("head") for p, item in doc["paths"].items()}
        # a DELETE example deletes what its link made: it runs after every other example
        # (a GET example's HEAD repeat would not find it any more)
        for op_id, (p, m, op) in sorted(run.ops.items(), key=lambda kv: (kv[1][1] == "delete", kv[0])):
            if m == "head":
                continue  # sent below, with each GET example
            names = run.names(op)
            if not names:  # no input: one request, answered with the first 2xx documented
                status = min(st for st in op["responses"] if st.startswith("2"))
                resp = _resolve(doc, op["responses"][status])
                r = run.request(op_id, None)
                # the response's example, when it has exactly one, is what this answer shows
                exs = [ex["value"] for c in resp.get("content", {}).values() for ex in c.get("examples", {}).values()]
                run.check_response(op_id, "(no input)", r, status, resp, exs[0] if len(exs) == 1 else None)
                cases = [(None, status)]
            else:
                cases = []
                for name in names:
                    status, resp, example = run.expected(op, name)
                    r, _ = run.run(op_id, name)
                    run.check_response(op_id, name, r, status, resp, example)
                    cases.append((name, status))
            ran += len(cases)
            if m == "get" and heads.get(p):
                for name, status in cases:
                    r = run.request(op_id, name, method="HEAD")
                    eq(r.status, int(status), "HEAD %s for example %r" % (p, name))
                    check(status in heads[p]["responses"], "HEAD %s: %s is not documented" % (p, status))
                    eq(r.body, b"", "HEAD body")
        check(ran >= 15, "only %d examples ran" % ran)
        check("Server-Timing" in run.headers_seen, "no example's answer had a Server-Timing header")
