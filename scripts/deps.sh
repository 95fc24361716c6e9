#!/usr/bin/env bash
# Installs what dapi needs to build, test and benchmark, and fetches DuckDB.
# Idempotent: does nothing when everything is present, and then needs no privileges (a
# normal user can build); root (or sudo) only when a package has to be installed.
#
#   scripts/deps.sh            build + test dependencies (wrk too: an integration test
#                              bursts connections with it; man-db and systemd for the
#                              checks of the man pages and of the systemd unit; the zstd
#                              command decodes compressed answers in the integration tests;
#                              npm and node for the OpenAPI validator; promtool checks
#                              GET /metrics; chromium for the web console's browser test,
#                              tests/integration/test_console.py)
#   scripts/deps.sh --bench    also nginx (for `make bench`)
set -euo pipefail

cd "$(dirname "$0")/.."
VENDOR=third_party/duckdb          # ignored by git; never committed
DUCKDB_VERSION=1.4.4
BINDINGS_VERSION=1.4.4-r.4
# sha512 integrity values published by the npm registry for exactly these tarballs.
HEADER_PKG_INTEGRITY='sha512-hEJJ5hyVF0VLj3dmOLpsWrQR0b3d4Ykqtygm6iUXjHJDDnSqg/USKxcb5qvNrOhFYPgktayU6dXCtgPqcmmpog=='
LIB_PKG_INTEGRITY='sha512-jBTL/WvfwxLToFa/pVHfT6elMtltJGnc3wSuxZD9OfMltit9YUdVFS37vBFQzXMT1Z8OWjtSjMh+zPKxOwHLHA=='

die() { echo "deps.sh: $*" >&2; exit 1; }

have_duckdb() {
    [ -f "$VENDOR/lib/libduckdb.so" ] && [ -f "$VENDOR/include/duckdb.h" ] \
        && [ "$(cat "$VENDOR/VERSION" 2>/dev/null)" = "$BINDINGS_VERSION" ]
}

# npm (with node) fetches DuckDB, and the OpenAPI validator and the browser driver of the
# integration tests (tests/openapi/ and tests/browser/package-lock.json, installed by
# test_openapi.py and test_console.py; playwright-core drives Debian's chromium).
debs=(build-essential pkg-config libmicrohttpd-dev libcurl4-openssl-dev libjansson-dev
      libssl-dev libsystemd-dev libzstd-dev zlib1g-dev libyaml-dev zstd python3 curl ca-certificates wrk
      man-db systemd clang-format npm prometheus chromium)
[ "${1:-}" = "--bench" ] && debs+=(nginx-light)

missing=()
for p in "${debs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
# npm may come from elsewhere (e.g. a Node.js install); don't force the Debian one then.
if command -v npm >/dev/null; then
    missing=("${missing[@]/npm}")
fi
missing=($(printf '%s\n' "${missing[@]}" | sed '/^$/d'))
if [ "${#missing[@]}" -gt 0 ]; then
    SUDO=
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null \
            || die "not root and no sudo: install ${missing[*]} by hand (apt-get install)"
        SUDO=sudo
    fi
    echo "deps.sh: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq || die "apt-get update failed"
    # Only promtool of Debian's prometheus package is used (tests check GET /metrics with
    # it): its server must neither start now (policy-rc.d refuses it during the install)
    # nor at boot.
    policy=
    if printf '%s\n' "${missing[@]}" | grep -qx prometheus && [ ! -e /usr/sbin/policy-rc.d ]; then
        policy=/usr/sbin/policy-rc.d
        printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null && $SUDO chmod 755 "$policy"
    fi
    rc=0
    $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || rc=$?
    [ -n "$policy" ] && $SUDO rm -f "$policy"
    [ "$rc" -eq 0 ] || die "apt-get install ${missing[*]} failed"
    if printf '%s\n' "${missing[@]}" | grep -qx prometheus && [ -d /run/systemd/system ]; then
        $SUDO systemctl disable --now prometheus >/dev/null 2>&1 || true
    fi
fi

# --- DuckDB from the npm registry, verified against the pinned integrity ---------------
have_duckdb && exit 0

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

fetch() { # fetch SPEC INTEGRITY -> prints path of the verified tarball
    local spec=$1 want=$2 tgz got
    (cd "$tmp" && npm pack --silent "$spec" >/dev/null 2>"$tmp/npm.err") \
        || die "could not download $spec from the npm registry: $(tail -n 3 "$tmp/npm.err")"
    tgz=$(ls -t "$tmp"/*.tgz | head -n 1)
    got="sha512-$(openssl dgst -sha512 -binary "$tgz" | base64 -w0)"
    [ "$got" = "$want" ] || die "integrity mismatch for $spec: expected $want, got $got (tampered or wrong download; refusing to use it)"
    mv "$tgz" "$tmp/$(echo "$spec" | tr '/@' '__').verified"
    echo "$tmp/$(echo "$spec" | tr '/@' '__').verified"
}

echo "deps.sh: fetching DuckDB $DUCKDB_VERSION from the npm registry"
hdr_tgz=$(fetch "duckdb@$DUCKDB_VERSION" "$HEADER_PKG_INTEGRITY")
lib_tgz=$(fetch "@duckdb/node-bindings-linux-x64@$BINDINGS_VERSION" "$LIB_PKG_INTEGRITY")

mkdir -p "$tmp/h" "$tmp/l"
tar -xzf "$hdr_tgz" -C "$tmp/h" package/src/duckdb/src/include/duckdb.h || die "duckdb.h not in the duckdb package"
tar -xzf "$lib_tgz" -C "$tmp/l" package/libduckdb.so || die "libduckdb.so not in the bindings package"

rm -rf "$VENDOR.new"
mkdir -p "$VENDOR.new/include" "$VENDOR.new/lib"
cp "$tmp/h/package/src/duckdb/src/include/duckdb.h" "$VENDOR.new/include/"
cp "$tmp/l/package/libduckdb.so" "$VENDOR.new/lib/"
echo "$BINDINGS_VERSION" > "$VENDOR.new/VERSION"
rm -rf "$VENDOR"
mv "$VENDOR.new" "$VENDOR"
echo "deps.sh: DuckDB ready in $VENDOR"
