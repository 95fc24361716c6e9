#!/usr/bin/env python3
"""Regenerates the function lists of docs/sql.md from src/engine/allowlist.c (the one
allow-list the server enforces). Run after changing the allow-list;
tests/unit/engine/test_sandbox.c keeps allowlist.c in step with DuckDB, and
tests/integration/test_build.py fails when the doc and allowlist.c disagree."""
import re
import sys

SRC = "src/engine/allowlist.c"
DOC = "docs/sql.md"
BEGIN, END = "<!-- functions:begin -->", "<!-- functions:end -->"


def lists(src):
    text = open(src).read()

    def names(var):
        m = re.search(r"const char \*const %s\[\] = \{(.*?)\};" % var, text, re.S)
        return re.findall(r'"((?:[^"\\]|\\.)*)"', m.group(1))

    def refusals(var):
        m = re.search(r"const struct dapi_refusal %s\[\] = \{(.*?)\n\};" % var, text, re.S)
        found = re.findall(r'\{\s*"((?:[^"\\]|\\.)*)",\s*"((?:[^"\\]|\\.)*)"\s*\}', m.group(1))
        # every entry must be read, however the line is wrapped: a dropped one would vanish
        # from the documentation while the code still refuses it
        if len(found) != len(re.findall(r'\{\s*"', m.group(1))):
            sys.exit("gen-sql-doc: %s: read %d of %d entries" % (var, len(found), len(re.findall(r'\{\s*"', m.group(1)))))
        return found

    return (names("dapi_allow_lake_table"), names("dapi_allow_pure_table"),
            names("dapi_allow_scalar"), refusals("dapi_refuse_table"),
            refusals("dapi_refuse_scalar"))


def render(src=SRC):
    lake, pure, scalar, rtable, rscalar = lists(src)
    code = lambda ns: ", ".join("`%s`" % n for n in ns)
    out = ["### Table functions that read the lake (literal paths inside the lake only)", "",
           code(lake), "",
           "### Table functions that compute rows", "", code(pure), "",
           "### Refused table functions", "", "| function | refused because it |", "|---|---|"]
    out += ["| `%s` | %s |" % (n, why) for n, why in rtable]
    out += ["", "### Refused scalar and aggregate functions", "",
            "| function | refused because it |", "|---|---|"]
    out += ["| `%s` | %s |" % (n.replace("|", "\\|"), why) for n, why in rscalar]
    out += ["", "### Allowed scalar, aggregate and window functions (%d)" % len(scalar), "",
            code(n.replace("|", "\\|") for n in scalar)]
    return "\n".join(out)


def main():
    doc = open(DOC).read()
    a, b = doc.index(BEGIN) + len(BEGIN), doc.index(END)
    new = doc[:a] + "\n" + render() + "\n" + doc[b:]
    if "--check" in sys.argv:
        sys.exit(0 if new == doc else 1)
    open(DOC, "w").write(new)
    print("%s updated" % DOC)


if __name__ == "__main__":
    main()
