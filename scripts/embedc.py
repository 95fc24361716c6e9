"""What scripts/embed-openapi.py and scripts/embed-console.py share: a file's bytes as the
initializer of a C array, and writing the generated C file whole or not at all."""

import os


def c_bytes(data, per_line=20):
    """The lines of a C array initializer holding data, then a NUL, and its closing brace."""
    lines = ["    " + ",".join("%d" % b for b in data[i : i + per_line]) + "," for i in range(0, len(data), per_line)]
    return lines + ["    0};"]


def write_c(out, lines):
    """Writes lines to out through a temporary file, so a failed run leaves no half file."""
    tmp = out + ".tmp"
    with open(tmp, "w") as f:
        f.write("\n".join(lines))
    os.replace(tmp, out)
