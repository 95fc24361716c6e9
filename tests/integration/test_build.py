"""The build's own promises: a tampered DuckDB download stops scripts/deps.sh with a clear
message and installs nothing; the documented settings table matches `dapi serve`'s own;
the docs' links and the docs named in the code lead somewhere."""

import os
import re
import shutil
import subprocess
import sys

import harness as h
from harness import check, eq

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@h.timeout(240)
def test_deps_refuses_a_tampered_download():
    if shutil.which("npm") is None:
        raise h.Skip("npm is not installed")
    # A copy of the repository's scripts/ in a scratch "repo", with the library package's
    # pinned integrity changed by one character: the download must be refused.
    repo = h.tmpdir("deps-repo")
    os.makedirs(os.path.join(repo, "scripts"))
    src = open(os.path.join(ROOT, "scripts", "deps.sh")).read()
    m = re.search(r"LIB_PKG_INTEGRITY='sha512-([A-Za-z0-9+/])", src)
    check(m is not None, "deps.sh pins LIB_PKG_INTEGRITY")
    bad = "A" if m.group(1) != "A" else "B"
    tampered = src[:m.start(1)] + bad + src[m.end(1):]
    path = os.path.join(repo, "scripts", "deps.sh")
    with open(path, "w") as f:
        f.write(tampered)
    os.chmod(path, 0o755)
    p = subprocess.run([path], cwd=repo, capture_output=True, text=True, timeout=200)
    if "could not download" in p.stderr:
        raise h.Skip("the npm registry is not reachable: " + p.stderr.strip()[-200:])
    check(p.returncode != 0, "deps.sh accepted a tampered package (exit 0)")
    check("integrity mismatch" in p.stderr, "no clear message: %r" % p.stderr[-400:])
    check(not os.path.exists(os.path.join(repo, "third_party", "duckdb", "lib", "libduckdb.so")),
          "the refused library was installed")


def test_documented_settings_match_the_binary():
    out = subprocess.run([h.BIN, "help", "serve"], capture_output=True, text=True, timeout=10).stdout
    flags = re.findall(r"^  (--[a-z-]+)\s", out, re.M)
    envs = re.findall(r"\s(DAPI_[A-Z_]+)\s", out)
    check(len(flags) > 20, "help lists the settings: %r" % out[:200])
    doc = open(os.path.join(ROOT, "docs", "configuration.md")).read()
    for f in flags:
        check("`%s`" % f in doc, "%s is missing from docs/configuration.md (run scripts/gen-config-doc.py)" % f)
    for e in envs:
        check("`%s`" % e in doc, "%s is missing from docs/configuration.md" % e)
    documented = set(re.findall(r"^\| `(--[a-z-]+)`", doc, re.M))
    eq(sorted(documented - set(flags)), [], "flags documented but unknown to dapi serve")


def test_documented_sql_allow_list_matches_the_source():
    """docs/sql.md lists exactly the functions src/engine/allowlist.c allows and refuses."""
    p = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "gen-sql-doc.py"), "--check"],
                       cwd=ROOT, capture_output=True, text=True, timeout=30)
    check(p.returncode == 0, "docs/sql.md is out of date: run scripts/gen-sql-doc.py\n" + p.stderr[-2000:])


# Directories that are not the repository's own text (fetched, built, generated, fuzz inputs).
NOT_OURS = {".git", "third_party", "build", "build-asan", "out", "corpus", "node_modules", "state", "data"}


def _our_files(exts):
    for dirpath, dirs, files in os.walk(ROOT):
        dirs[:] = sorted(d for d in dirs if d not in NOT_OURS and not d.startswith("."))
        for f in sorted(files):
            if f.endswith(exts):
                yield os.path.join(dirpath, f)


def _markdown_text(path):
    """The file's text with fenced code blocks and inline code spans blanked out (a link
    inside code is an example, not a link)."""
    out, fenced = [], False
    for line in open(path, encoding="utf-8").read().split("\n"):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            out.append("")
            continue
        out.append("" if fenced else re.sub(r"`[^`]*`", "``", line))
    return "\n".join(out)


def _anchors(path):
    """GitHub's anchors for the headings of a Markdown file: lower case, punctuation other
    than '-' and '_' dropped, spaces to '-', repeats numbered -1, -2…"""
    seen, anchors, fenced = {}, set(), False
    for line in open(path, encoding="utf-8"):
        if line.lstrip().startswith("```"):
            fenced = not fenced
        m = None if fenced else re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        a = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
        n = seen.get(a, 0)
        seen[a] = n + 1
        anchors.add(a if n == 0 else "%s-%d" % (a, n))
    return anchors


def test_markdown_links_resolve():
    """Every relative link in the repository's Markdown (README.md, docs/, bench/, tests/)
    names a file that exists, and a #fragment names a heading of that file."""
    bad, count = [], 0
    for md in _our_files((".md",)):
        rel = os.path.relpath(md, ROOT)
        for target in re.findall(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", _markdown_text(md)):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):
                continue  # http:, https:, mailto:
            count += 1
            path, _, frag = target.partition("#")
            dest = os.path.normpath(os.path.join(os.path.dirname(md), path)) if path else md
            if not dest.startswith(ROOT + os.sep) or not os.path.exists(dest):
                bad.append("%s: (%s) names a missing file" % (rel, target))
            elif frag and (not dest.endswith(".md") or frag not in _anchors(dest)):
                bad.append("%s: (%s) names no heading of %s" % (rel, target, os.path.relpath(dest, ROOT)))
    check(count > 20, "found the docs' links: %d" % count)
    check(not bad, "%d broken link(s):\n  %s" % (len(bad), "\n  ".join(bad)))


def test_docs_named_in_the_sources_exist():
    """A `docs/….md` named anywhere (code comments, --help texts, scripts, tests, docs)
    exists: the repository stands on its own."""
    bad, count = [], 0
    for f in _our_files((".c", ".h", ".py", ".sh", ".md", "Makefile")):
        for name in sorted(set(re.findall(r"(?<![\w./-])(docs/[\w.-]+\.md)", open(f, encoding="utf-8").read()))):
            count += 1
            if not os.path.isfile(os.path.join(ROOT, name)):
                bad.append("%s names %s" % (os.path.relpath(f, ROOT), name))
    check(count > 10, "found the references to docs/: %d" % count)
    check(not bad, "missing docs:\n  " + "\n  ".join(bad))


@h.timeout(240)
def test_sources_compile_warning_free_with_clang():
    """The build uses gcc; the code must also be warning-free under clang (-Werror)."""
    clang = shutil.which("clang")
    if clang is None:
        raise h.Skip("clang is not installed")
    sources = []
    for top in ("src", "cli", "tests/unit"):
        for dirpath, _, files in os.walk(os.path.join(ROOT, top)):
            sources += [os.path.join(dirpath, f) for f in files if f.endswith(".c")]
    check(len(sources) > 30, "found the sources: %d" % len(sources))
    pkg = subprocess.run(["pkg-config", "--cflags", "libmicrohttpd", "libcurl", "jansson", "openssl"],
                         capture_output=True, text=True).stdout.split()
    cmd = [clang, "-fsyntax-only", "-std=c17", "-D_GNU_SOURCE", "-Wall", "-Wextra", "-Werror",
           "-Wshadow", "-Wstrict-prototypes", "-Wno-unused-parameter", "-I.", "-Iinclude", "-Isrc",
           "-Itests/unit", "-isystem", "third_party/duckdb/include", "-DDUCKDB_API_NO_DEPRECATED"]
    p = subprocess.run(cmd + pkg + sources, cwd=ROOT, capture_output=True, text=True, timeout=220)
    check(p.returncode == 0, "clang reports:\n" + p.stderr[-3000:])


# Which modules each layer may include (docs/design.md, "Modules and layers"). "dapi" is
# include/dapi/ (the public headers). A module always may include its own headers.
LAYERS = {
    "base": {"dapi"},
    "config": {"dapi", "base"},
    "auth": {"dapi", "base"},
    "http": {"dapi", "base", "auth"},  # auth: random request ids
    "upstream": {"dapi", "base"},
    "engine": {"dapi", "base"},
    "pool": {"dapi", "base", "engine"},
    "store": {"dapi", "base", "auth", "engine"},
    "backend": {"dapi", "base", "config", "auth", "engine", "pool", "store", "upstream"},
    "client": {"dapi", "base", "upstream"},
    "api": {"dapi", "base", "config", "auth", "http", "store", "backend", "app", "pool",
            "endpoints"},
    "emu": {"dapi", "base", "config", "auth", "http", "engine", "pool", "store", "backend",
            "api", "app"},
    # engine: only the DuckDB version of --version; auth: `dapi keys` reads and writes the key
    # store (auth/keystore.h) with the same code the server reads it with
    "cli": {"dapi", "base", "client", "engine", "auth"},
    # the definitions of --endpoints-file, checked with the engine (docs/endpoints.md)
    "endpoints": {"dapi", "base", "engine"},
    "app": None,  # the top: builds everything
}
# Each third-party library is behind one module (or file).
LIBRARIES = {
    "duckdb.h": "src/engine/",
    "microhttpd.h": "src/http/",
    "curl/": "src/upstream/",
    "openssl/": "src/auth/",
    "jansson.h": "src/base/jsonin.c",
    "systemd/": "src/app/notify.c",
    "zstd.h": "src/store/codec.c",
    "zlib.h": "src/store/gzip.c",
    "yaml.h": "src/base/yamlin.c",
}


def test_layers_include_only_what_their_rule_allows():
    """Every source file includes only the modules its layer may use — a backend never
    reaches the HTTP server or the API, the base layer nothing — and each third-party header
    only where its one wrapper lives."""
    bad = []
    files = []
    for top in ("src", "cli"):
        for dirpath, _, names in os.walk(os.path.join(ROOT, top)):
            files += [os.path.join(dirpath, n) for n in names if n.endswith((".c", ".h"))]
    check(len(files) > 50, "found the sources (%d files)" % len(files))
    for path in sorted(files):
        rel = os.path.relpath(path, ROOT)
        module = "cli" if rel.startswith("cli/") else rel.split("/")[1]
        check(module in LAYERS, "%s: module %s has a rule in LAYERS" % (rel, module))
        allowed = LAYERS[module]
        with open(path) as f:
            text = f.read()
        for quoted in re.findall(r'^\s*#\s*include\s+"([^"]+)"', text, re.M):
            dep = quoted.split("/")[0] if "/" in quoted else module
            if allowed is not None and dep != module and dep not in allowed:
                bad.append("%s includes %s (layer %s may use %s)"
                           % (rel, quoted, module, ", ".join(sorted(allowed))))
        for sys_inc in re.findall(r'^\s*#\s*include\s+<([^>]+)>', text, re.M):
            for lib, home in LIBRARIES.items():
                if sys_inc.startswith(lib) and not rel.startswith(home):
                    bad.append("%s includes <%s>, which only %s may" % (rel, sys_inc, home))
    check(not bad, "layer rule broken:\n  " + "\n  ".join(bad))
