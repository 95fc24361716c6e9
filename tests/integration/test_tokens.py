"""Signed tokens and rate limits (docs/auth.md): `Authorization: Bearer <JWT>` verified
against --jwks-file (RS256, ES256, EdDSA; keys made at test time with the openssl command,
tokens signed with it), each refusal a 401 with its reason; a token's subject owns its slugs;
the JWKS is read again on SIGHUP; per-principal token buckets answer 429 with Retry-After and
the RateLimit headers, two keys (or two subjects) independent, /api/health never limited.

Rate tests use limits per minute, so the bucket refills one request per 20 s or more: counts
are asserted (with the refill the elapsed time allows), never timings."""

import base64
import json
import math
import os
import re
import signal
import subprocess
import time

import harness as h
from harness import Server, check, eq, expect_error, expect_status

ISS = "https://idp.it.example"
AUD = "dapi-it"
KEY_A = "it-tok-key-A-5e1f"
KEY_B = "it-tok-key-B-90ac"
INVALID = "Invalid token"
RATE = "Rate limit exceeded"

_keys = {}


def _openssl(*args, data=None):
    p = subprocess.run(["openssl"] + list(args), input=data, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    if p.returncode != 0:
        raise h.SetupError("openssl %s: %s" % (" ".join(args), p.stderr.decode()[-300:]))
    return p.stdout


def _b64(data):
    if isinstance(data, str):
        data = data.encode()
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _key(name):
    """A private key file (made once per run) and its public JWK (without kid)."""
    if name in _keys:
        return _keys[name]
    d = h.tmpdir("tok-keys")
    pem = os.path.join(d, name + ".pem")
    if name.startswith("rsa"):
        _openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", pem)
        mod = _openssl("rsa", "-in", pem, "-noout", "-modulus").decode().strip().split("=", 1)[1]
        jwk = {"kty": "RSA", "n": _b64(bytes.fromhex(mod)), "e": "AQAB"}
    elif name.startswith("ec"):
        _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", pem)
        pt = _openssl("pkey", "-in", pem, "-pubout", "-outform", "DER")[-65:]
        jwk = {"kty": "EC", "crv": "P-256", "x": _b64(pt[1:33]), "y": _b64(pt[33:])}
    else:
        _openssl("genpkey", "-algorithm", "ed25519", "-out", pem)
        raw = _openssl("pkey", "-in", pem, "-pubout", "-outform", "DER")[-32:]
        jwk = {"kty": "OKP", "crv": "Ed25519", "x": _b64(raw)}
    _keys[name] = (pem, jwk)
    return _keys[name]


def _der_to_rs(der):
    """An ECDSA DER signature (SEQUENCE of two INTEGERs) as JOSE r || s."""
    i = 2 if der[1] < 0x80 else 3
    out = b""
    for _ in range(2):
        check(der[i] == 0x02, "DER INTEGER")
        n = der[i + 1]
        v = der[i + 2:i + 2 + n].lstrip(b"\0")
        out += v.rjust(32, b"\0")
        i += 2 + n
    return out


def token(key="rsa1", kid="r1", alg=None, claims=None, header=None, **over):
    """A JWT signed by key ("rsa…", "ec…", "ed…"); claims default to valid ones for alice."""
    pem, _ = _key(key)
    alg = alg or ("RS256" if key.startswith("rsa") else "ES256" if key.startswith("ec") else "EdDSA")
    c = {"iss": ISS, "aud": AUD, "sub": "alice", "exp": int(time.time()) + 600}
    c.update(claims or {})
    for k, v in over.items():
        if v is None:
            c.pop(k, None)
        else:
            c[k] = v
    hd = {"alg": alg, "typ": "JWT"}
    if kid is not None:
        hd["kid"] = kid
    hd.update(header or {})
    signing = _b64(json.dumps(hd)) + "." + _b64(json.dumps(c))
    if alg == "none":
        return signing + "."
    if alg == "HS256":  # the public key as the HMAC secret: key confusion
        import hmac, hashlib

        secret = json.dumps(_key(key)[1]).encode()
        return signing + "." + _b64(hmac.new(secret, signing.encode(), hashlib.sha256).digest())
    if key.startswith("ed"):
        f = os.path.join(h.tmpdir("tok-sign"), "in")
        h.write_file(f, signing)
        sig = _openssl("pkeyutl", "-sign", "-inkey", pem, "-rawin", "-in", f)
    else:
        sig = _openssl("dgst", "-sha256", "-sign", pem, data=signing.encode())
        if key.startswith("ec"):
            sig = _der_to_rs(sig)
    return signing + "." + _b64(sig)


def _jwks(path, *entries):
    """Writes a JWKS of (key name, kid) entries to path."""
    keys = []
    for name, kid in entries:
        jwk = dict(_key(name)[1])
        jwk["kid"] = kid
        keys.append(jwk)
    h.write_file(path, json.dumps({"keys": keys}))
    return path


def _server(name, *extra, keys=(KEY_A,)):
    d = h.tmpdir("tok-jwks")
    path = _jwks(os.path.join(d, "jwks.json"), ("rsa1", "r1"), ("ec1", "e1"), ("ed1", "d1"))
    args = ["--jwks-file", path, "--jwt-audience", AUD, "--jwt-issuer", ISS] + list(extra)
    s = Server(keys=keys, args=args, name=name)
    s.jwks_path = path
    return s


def _bearer(tok):
    return {"Authorization": "Bearer " + tok}


def _create(s, tok, sql="SELECT 42 AS x"):
    return s.request("POST", "/api/queries", body={"sql_query": sql}, headers=_bearer(tok))


def test_tokens_valid_for_each_algorithm_and_subject_owns_slugs():
    with _server("tok-valid") as s:
        for key, kid in (("rsa1", "r1"), ("ec1", "e1"), ("ed1", "d1")):
            r = _create(s, token(key, kid))
            expect_status(r, 200, "POST with a %s token" % key)
        slug = r.json()["query_slug"]
        r = s.request("GET", "/api/queries/%s/results?page_number=1" % slug, headers=_bearer(token("rsa1", "r1")))
        expect_status(r, 200, "alice reads her result with another of her tokens")
        eq(r.json()["data"], [{"x": 42}], "rows")
        r = s.request("GET", "/api/queries/%s/results?page_number=1" % slug, headers=_bearer(token("ed1", "d1", sub="bob")))
        expect_error(r, 404, "Query not found", "bob cannot read alice's result")
        r = s.api("GET", "/api/queries/%s/results?page_number=1" % slug)
        expect_error(r, 404, "Query not found", "an API key cannot read a token's result")
        # x-api-key still works beside tokens; "bearer" in any case
        expect_status(s.api("POST", "/api/queries", body={"sql_query": "SELECT 1"}), 200, "x-api-key")
        r = s.request("POST", "/api/queries", body={"sql_query": "SELECT 1"}, headers={"Authorization": "bearer  " + token()})
        expect_status(r, 200, "lower-case scheme, two spaces")
        # aud as an array, nbf in the past, exp within the clock skew
        now = int(time.time())
        expect_status(_create(s, token(aud=["x", AUD], nbf=now - 5)), 200, "aud array, nbf past")
        expect_status(_create(s, token(exp=now - 20)), 200, "expired 20 s ago: within the 60 s skew")


def test_token_refusals_are_401_with_their_reason():
    now = int(time.time())
    cases = [
        ("expired", token(exp=now - 3600), "token expired"),
        ("nbf in the future", token(nbf=now + 3600), "token not valid yet"),
        ("wrong audience", token(aud="someone-else"), "audience (aud) does not include"),
        ("wrong issuer", token(iss="https://evil.example"), "issuer (iss) is not the one"),
        ("no sub", token(sub=None), "no usable sub"),
        ("no exp", token(exp=None), "no exp claim"),
        ("bad signature", token("rsa2", "r1"), "bad token signature"),
        ("alg none", token(alg="none"), "alg none"),
        ("HS256 with the public key", token("rsa1", "r1", alg="HS256"), "HMAC tokens"),
        ("RS256 header on an EC key", token("ec1", "e1", alg="RS256"), "does not match the key's type (EC P-256)"),
        ("unknown kid", token("rsa1", "r9"), "unknown kid"),
        ("no kid with several keys", token("rsa1", None), "no kid"),
        ("malformed", "not-a-jwt", "not a signed JWT"),
        ("bad base64", "e*J.e30.AAAA", "header is not base64url"),
        ("oversized", "a" * 9000 + ".b.c", "longer than 8192"),
    ]
    with _server("tok-refusals") as s:
        for what, tok, reason in cases:
            r = _create(s, tok)
            body = expect_error(r, 401, INVALID, what)
            check(reason in body.get("details", ""), "%s: details %r hold %r" % (what, body.get("details"), reason))
            check(r.headers.get("www-authenticate", "").startswith("Bearer"), "%s: WWW-Authenticate %r" % (what, r.headers.get("www-authenticate")))
        r = s.request("GET", "/api/queries/dapi-query-x/results", headers=_bearer(token(exp=now - 3600)))
        expect_error(r, 401, INVALID, "results with an expired token")
        text = s.stderr_text()
        check(token("rsa2", "r1")[:40] not in text, "no token in the logs")


def test_bearer_without_jwks_file_is_refused():
    with Server(keys=(KEY_A,), name="tok-nojwks") as s:
        r = _create(s, token())
        body = expect_error(r, 401, "Bearer tokens are not accepted by this server", "no --jwks-file")
        check("--jwks-file" in body.get("details", ""), "details say why: %r" % body)
        r = s.request("POST", "/api/queries", body={"sql_query": "SELECT 1"}, headers=dict(_bearer(token()), **{"x-api-key": KEY_A}))
        expect_status(r, 200, "an Authorization header beside x-api-key is left alone without --jwks-file")


def test_token_settings_checked_at_start():
    d = h.tmpdir("tok-cfg")
    path = _jwks(os.path.join(d, "jwks.json"), ("ed1", "d1"))
    base = [h.BIN, "serve", "--port", "0", "--data-dir", h.tmpdir("tok-cfg-data"), "--state-dir", h.tmpdir("tok-cfg-state")]
    env = h.base_env()
    env["DAPI_API_KEYS"] = KEY_A
    for extra, msg in (
        (["--jwks-file", path], "--jwks-file needs --jwt-audience and --jwt-issuer"),
        (["--jwks-file", path + ".missing", "--jwt-audience", AUD, "--jwt-issuer", ISS], "cannot read --jwks-file"),
        (["--rate-limit", "fast"], "invalid value for --rate-limit"),
        (["--rate-limit", "10/s", "--rate-burst", "-1"], "invalid value for --rate-burst"),
        (["--jwks-file", path, "--jwt-audience", AUD, "--jwt-issuer", ISS, "--jwt-default-layers", "a/b"], "--jwt-default-layers"),
    ):
        h.write_file(os.path.join(d, "bad.json"), "{")
        p = subprocess.run(base + extra, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, timeout=40)
        eq(p.returncode, 2, "exit status of %s" % extra)
        check(msg in p.stderr.decode(), "stderr of %s holds %r: %r" % (extra, msg, p.stderr.decode()[-300:]))
    p = subprocess.run(base + ["--jwks-file", os.path.join(d, "bad.json"), "--jwt-audience", AUD, "--jwt-issuer", ISS], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, timeout=40)
    eq(p.returncode, 2, "a broken JWKS stops the start")
    check("JWKS is not JSON" in p.stderr.decode(), "says why: %r" % p.stderr.decode()[-300:])


def test_sighup_reloads_jwks_keeping_old_keys_when_bad():
    with _server("tok-hup") as s:
        expect_status(_create(s, token("ed1", "d1")), 200, "before")
        h.write_file(s.jwks_path, '{"keys":[')
        os.kill(s.proc.pid, signal.SIGHUP)
        text = s.wait_stderr(lambda t: "JWKS not reloaded" in t)
        check("JWKS not reloaded" in text and "3 key(s) in use are kept" in text, "logged:\n%s" % h.tail_text(text, 4))
        expect_status(_create(s, token("ed1", "d1")), 200, "old keys kept")
        _jwks(s.jwks_path, ("ed2", "d2"))
        os.kill(s.proc.pid, signal.SIGHUP)
        s.wait_stderr(lambda t: "JWKS reloaded" in t)
        expect_status(_create(s, token("ed2", "d2")), 200, "the new key")
        body = expect_error(_create(s, token("ed1", "d1")), 401, INVALID, "the rotated-out key")
        check("unknown kid" in body["details"], "details: %r" % body)


def _burst(s, n, headers, path="/api/queries/dapi-query-none/results?page_number=1"):
    """n requests as fast as they go; returns (answers, seconds taken)."""
    t0 = time.monotonic()
    out = [s.request("GET", path, headers=headers) for _ in range(n)]
    return out, time.monotonic() - t0


def _limited(answers):
    return [r for r in answers if r.status == 429]


def test_rate_limit_per_key_independent_with_headers():
    # 3/min, burst 3: one request back every 20 s, so 8 quick requests get 3 (+ the refill)
    with Server(keys=(KEY_A, KEY_B), args=["--rate-limit", "3/min"], name="tok-rate") as s:
        a, ta = _burst(s, 8, {"x-api-key": KEY_A})
        passed = [r for r in a if r.status == 404]  # authenticated and counted: no such slug
        eq(len(passed) + len(_limited(a)), 8, "every answer is 404 or 429: %s" % [r.status for r in a])
        check(3 <= len(passed) <= 3 + math.ceil(ta / 20), "key A: %d of 8 in %.1f s" % (len(passed), ta))
        first = a[0]
        eq(first.headers.get("ratelimit-policy"), "3;w=60", "RateLimit-Policy")
        check(re.match(r"^limit=3, remaining=2, reset=\d+$", first.headers.get("ratelimit", "")), "RateLimit %r" % first.headers.get("ratelimit"))
        r = _limited(a)[0]
        body = expect_error(r, 429, RATE, "over the limit")
        check(body["details"].startswith("at most 3 requests per minute with bursts of 3 for this key; retry in "), "details: %r" % body)
        ra = int(r.headers.get("retry-after", "0"))
        check(1 <= ra <= 20, "Retry-After %r" % r.headers.get("retry-after"))
        check(re.match(r"^limit=3, remaining=0, reset=\d+$", r.headers.get("ratelimit", "")), "RateLimit on 429: %r" % r.headers.get("ratelimit"))
        eq(r.headers.get("ratelimit-policy"), "3;w=60", "RateLimit-Policy on 429")
        # key B has its own bucket
        b, tb = _burst(s, 5, {"x-api-key": KEY_B})
        passed_b = [x for x in b if x.status == 404]
        check(3 <= len(passed_b) <= 3 + math.ceil(tb / 20), "key B unaffected by A: %d of 5" % len(passed_b))
        # a refused key is refused before rate limiting; health is never limited
        expect_error(s.api("GET", "/api/queries/x/results", key="wrong-key"), 401, "Invalid API key")
        for _ in range(10):
            r = s.request("GET", "/api/health")
            expect_status(r, 200, "health")
            check("ratelimit" not in r.headers, "health has no RateLimit header")


def test_rate_limit_from_token_claims_and_explicit_burst():
    with _server("tok-rate-claims", "--rate-limit", "1/min", "--rate-burst", "4") as s:
        # the server default for a token without claims: burst 4
        a, ta = _burst(s, 6, _bearer(token(sub="carol")))
        n = len([r for r in a if r.status == 404])
        check(4 <= n <= 4 + math.ceil(ta / 60), "default burst 4: %d of 6" % n)
        eq(a[0].headers.get("ratelimit-policy"), "4;w=240", "policy of 1/min burst 4")
        # claims: 2/min, burst 2, for another subject
        tok = token(sub="dave", dapi_rate="2/min", dapi_burst=2)
        b, tb = _burst(s, 5, _bearer(tok))
        n = len([r for r in b if r.status == 404])
        check(2 <= n <= 2 + math.ceil(tb / 30), "claims burst 2: %d of 5" % n)
        body = expect_error(_limited(b)[0], 429, RATE, "token over its limit")
        check("token's subject" in body["details"], "details: %r" % body)
        eq(b[0].headers.get("ratelimit-policy"), "2;w=60", "policy from the claims")
        # without --rate-limit nothing is limited and no header is sent
    with Server(keys=(KEY_A,), name="tok-unlimited") as s:
        a, _ = _burst(s, 12, {"x-api-key": KEY_A})
        eq([r.status for r in a], [404] * 12, "no limit by default")
        check("ratelimit" not in a[0].headers, "no RateLimit header without a limit")


def test_token_claims_scope_what_it_reads():
    """dapi_layers is enforced like a store key's layers: a token reads only its layers, and
    one without the claim reads none (no --jwt-default-layers)."""
    lake = os.path.join(h.tmpdir("tok-lake"), "lake")
    h.write_file(os.path.join(lake, "pub", "t.csv"), "a\n1\n")
    h.write_file(os.path.join(lake, "secret", "t.csv"), "a\ntoken-secret-5d1\n")
    d = h.tmpdir("tok-jwks-scope")
    path = _jwks(os.path.join(d, "jwks.json"), ("rsa1", "r1"))
    args = ["--jwks-file", path, "--jwt-audience", AUD, "--jwt-issuer", ISS]
    with Server(keys=(KEY_A,), args=args, data_dir=lake, name="tok-scope") as s:
        pub = token(claims={"dapi_layers": ["pub"]})
        r = _create(s, pub, 'SELECT a FROM "pub"."t"')
        expect_status(r, 200, "its own layer")
        r = s.request("GET", "/api/queries/%s/results?page_number=1" % r.json()["query_slug"],
                      headers=_bearer(pub))
        eq(r.json()["data"], [{"a": 1}], "rows of its layer")
        for sql in ('SELECT a FROM "secret"."t"',
                    "SELECT a FROM read_csv('%s/secret/t.csv')" % lake,
                    'SELECT * FROM "pub"."t" JOIN "secret"."t" USING (a)'):
            r = _create(s, pub, sql)
            body = expect_error(r, 403)
            eq(body.get("details"), "this API key may not read layer 'secret'", "refusal of %r" % sql)
            check("token-secret-5d1" not in r.body.decode(), "no secret in the answer")
        r = _create(s, token(), 'SELECT a FROM "pub"."t"')
        eq(expect_error(r, 403).get("details"), "this API key may not read layer 'pub'",
           "a token without dapi_layers reads no layer")
        expect_status(_create(s, token(), "SELECT 1 AS one"), 200, "no table: fine")
