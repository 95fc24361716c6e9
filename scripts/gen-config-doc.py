#!/usr/bin/env python3
"""Regenerates the settings table of docs/configuration.md from `build/dapi help serve`
(which prints the one settings table in src/config/config.c). Run after changing a setting;
tests/integration/test_docs.py fails when the two disagree."""
import re
import subprocess
import sys

DOC = "docs/configuration.md"
BEGIN, END = "<!-- settings:begin -->", "<!-- settings:end -->"


def table(binary="build/dapi"):
    out = subprocess.run([binary, "help", "serve"], capture_output=True, text=True,
                         check=True).stdout
    rows = ["| flag | environment | default | meaning |", "|---|---|---|---|"]
    for line in out.splitlines():
        m = re.match(r"  (\S+(?: only\))?)\s+(DAPI_\S+)\s+(.*)$", line)
        if not m:
            continue
        flag, env, rest = m.groups()
        d = re.search(r" \[default: (.*)\]$", rest)
        default = d.group(1) if d else "unset"
        if d:
            rest = rest[:d.start()]
        flag = "—" if flag.startswith("(") else f"`{flag}`"
        rows.append(f"| {flag} | `{env}` | `{default}` | {rest.replace('|', '&#124;')} |")
    return "\n".join(rows)


def main():
    text = open(DOC).read()
    a, b = text.index(BEGIN) + len(BEGIN), text.index(END)
    new = text[:a] + "\n" + table(*sys.argv[1:2]) + "\n" + text[b:]
    if new != text:
        open(DOC, "w").write(new)
        print(f"{DOC} updated")


if __name__ == "__main__":
    main()
