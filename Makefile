# dapi — build, run, test, bench.  `make run` and `make test` set everything up on a fresh
# Debian machine (scripts/deps.sh installs what is missing and fetches DuckDB).
# One build job per CPU, unless make was given -j itself (-j1: one at a time). Only the
# top-level make sets it: the make that `make asan` runs shares its jobs.
ifeq ($(MAKELEVEL)$(filter -j%,$(MAKEFLAGS)),0)
MAKEFLAGS += -j$(shell nproc 2>/dev/null || echo 1)
endif
CC      ?= cc
DUCKDB  := third_party/duckdb
PKGS    := libmicrohttpd libcurl jansson openssl libsystemd libzstd yaml-0.1 zlib
CSTD    := -std=c17 -D_GNU_SOURCE
WARN    := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wno-unused-parameter
OPT     ?= -O2 -g
# SAN: sanitizer flags for compiling and linking (set by `make asan`; empty otherwise).
SAN     ?=
CFLAGS  += $(CSTD) $(WARN) $(OPT) $(SAN) -fPIC -pthread -I. -Iinclude -Isrc -isystem $(DUCKDB)/include \
           -DDUCKDB_API_NO_DEPRECATED -MMD -MP
# RUNPATH: build/lib next to build/dapi, or the private lib/dapi of an installed tree.
LDFLAGS += $(SAN) -pthread -L$(DUCKDB)/lib -Wl,-rpath,'$$ORIGIN/lib:$$ORIGIN/../lib/dapi'
LDLIBS  += -lduckdb -lm

PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   = $(shell pkg-config --libs $(PKGS) 2>/dev/null)

# Every build product lives under $(B): build/ normally, build-asan/ for `make asan` (which
# runs this Makefile again with B=build-asan and the sanitizer flags), so the two builds never
# share an object file and neither rebuilds the other.
B        ?= build
LIB_SRC  := $(sort $(wildcard src/*/*.c cli/*.c))
LIB_SRC  := $(filter-out src/app/main.c,$(LIB_SRC))
LIB_OBJ  := $(LIB_SRC:%.c=$(B)/obj/%.o)
# docs/openapi.json, embedded (GET /api/openapi.json), and the web console's files (console/,
# served at GET / and /console/{file}): C files generated under $(B)/gen.
GEN_OBJ  := $(B)/obj/gen/openapi.o $(B)/obj/gen/console.o
CONSOLE  := $(sort $(wildcard console/*.html console/*.css console/*.js))
# Unit tests mirror src/ by path: tests/unit/<module>/test_X.c is built into
# $(B)/tests/<module>/test_X, linked with the shared helpers (tests/unit/t.c).
UNIT_SRC := $(sort $(wildcard tests/unit/*/test_*.c))
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(B)/tests/%)
UNIT_OBJ := $(B)/obj/tests/unit/t.o
# deps.sh (Debian packages + DuckDB) runs once per change of the script; it is idempotent.
DEPS_OK  := build/.deps-ok

.PHONY: all deps run test unit integration asan bench fuzz clean distclean format format-check
all: $(B)/dapi

$(DEPS_OK): scripts/deps.sh
	scripts/deps.sh
	@mkdir -p $(@D) && touch $@

$(DUCKDB)/lib/libduckdb.so $(DUCKDB)/include/duckdb.h: | $(DEPS_OK)
	@test -f $@ || scripts/deps.sh

deps:
	scripts/deps.sh

$(B)/lib/libduckdb.so: $(DUCKDB)/lib/libduckdb.so
	@mkdir -p $(@D)
	cp $< $@

$(B)/obj/%.o: %.c | $(DEPS_OK)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(PKG_CFLAGS) -c $< -o $@

# The generator refuses a document that is not JSON or whose info.version is not DAPI_VERSION.
$(B)/gen/openapi.c: docs/openapi.json include/dapi/version.h scripts/embed-openapi.py scripts/embedc.py | $(DEPS_OK)
	@mkdir -p $(@D)
	python3 scripts/embed-openapi.py docs/openapi.json include/dapi/version.h $@

$(B)/gen/console.c: $(CONSOLE) scripts/embed-console.py scripts/embedc.py | $(DEPS_OK)
	@mkdir -p $(@D)
	python3 scripts/embed-console.py $@ $(CONSOLE)

$(B)/obj/gen/%.o: $(B)/gen/%.c
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -c $< -o $@

$(B)/libdapi.a: $(LIB_OBJ) $(GEN_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(B)/dapi: $(B)/obj/src/app/main.o $(B)/libdapi.a $(B)/lib/libduckdb.so
	$(CC) $(LDFLAGS) -o $@ $(B)/obj/src/app/main.o $(B)/libdapi.a $(PKG_LIBS) $(LDLIBS)

# Named in a rule, so that make keeps it (an object only a pattern rule needs is deleted).
$(UNIT_OBJ): tests/unit/t.c tests/unit/t.h

# Unit test binaries live in $(B)/tests/<module>/ and find libduckdb through ../../lib.
$(B)/tests/%: tests/unit/%.c tests/unit/t.h $(UNIT_OBJ) $(B)/libdapi.a $(B)/lib/libduckdb.so
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(PKG_CFLAGS) -Itests/unit $(LDFLAGS) -Wl,-rpath,'$$ORIGIN/../../lib' \
	    -o $@ $< $(UNIT_OBJ) $(B)/libdapi.a $(PKG_LIBS) $(LDLIBS)

DAPI_PORT ?= 5001
run: build/dapi
	scripts/run.sh

unit: $(UNIT_BIN)
	scripts/test.sh --unit-only --build $(B)

integration: $(B)/dapi
	scripts/test.sh --integration-only --build $(B)

test: $(B)/dapi $(UNIT_BIN)
	scripts/test.sh --build $(B)

# The whole suite (unit + integration, not fuzz) against a second build of dapi and its unit
# tests with AddressSanitizer and UndefinedBehaviorSanitizer, in build-asan/ so that `make`
# and `make asan` never rebuild each other's objects. Every sanitizer report fails the run
# (scripts/test.sh --sanitizers sets the options and collects the reports). DuckDB itself is
# not instrumented: its allocations still go through ASan's malloc, its internals unchecked.
ASAN_FLAGS = -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
# GCC's shared libubsan ignores UBSAN_OPTIONS=log_path when ASan is loaded too (its reports
# would only reach stderr); linked statically it honours it. Clang has one runtime for both.
# (Deferred: `cc --version` runs only when `make asan` expands it.)
ASAN_FLAGS += $(if $(findstring clang,$(shell $(CC) --version 2>/dev/null)),,-static-libubsan)
asan: | $(DEPS_OK)
	$(MAKE) B=build-asan OPT='-O1 -g' SAN='$(ASAN_FLAGS)' \
	    build-asan/dapi $(UNIT_SRC:tests/unit/%.c=build-asan/tests/%)
	scripts/test.sh --build build-asan --sanitizers

# The small-queries load generator (bench/run.sh part i): plain C, no library.
$(B)/bench/smallq: bench/smallq.c
	@mkdir -p $(@D)
	$(CC) $(CSTD) $(WARN) $(OPT) -pthread -o $@ $<

# bench part j's reference: DuckDB alone running a query and COPYing it to JSON
$(B)/bench/duckdb-copy: bench/duckdb-copy.c $(B)/libdapi.a $(B)/lib/libduckdb.so
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(LDFLAGS) -Wl,-rpath,'$$ORIGIN/../lib' -o $@ $< $(B)/libdapi.a \
	    $(PKG_LIBS) $(LDLIBS)

bench:
	scripts/deps.sh --bench
	$(MAKE) build/dapi build/bench/smallq build/bench/duckdb-copy
	bench/run.sh
	bench/nekt.sh

# libFuzzer drivers for every parser of hostile input (not part of `make test`).
FUZZ_SECONDS ?= 30
fuzz: build/dapi
	tests/fuzz/run.sh $(FUZZ_SECONDS)

# Layout of the C sources (.clang-format, clang-format 14): `format` rewrites them,
# `format-check` lists those that differ and fails if any does.
CLANG_FORMAT ?= clang-format
FORMAT_SRC    = $(shell git ls-files '*.c' '*.h' 2>/dev/null || find src cli include tests -name '*.[ch]' | sort)
format:
	$(CLANG_FORMAT) -i $(FORMAT_SRC)

format-check: | $(DEPS_OK)
	@command -v $(CLANG_FORMAT) >/dev/null || { echo "format-check: $(CLANG_FORMAT) not found" >&2; exit 2; }
	@n=0; for f in $(FORMAT_SRC); do \
	    $(CLANG_FORMAT) --dry-run --Werror "$$f" >/dev/null 2>&1 || { echo "$$f"; n=$$((n + 1)); }; \
	done; \
	if [ $$n -ne 0 ]; then echo "format-check: $$n file(s) above differ from .clang-format (make format rewrites them)" >&2; exit 1; fi

clean:
	rm -rf build build-asan

distclean: clean
	rm -rf third_party

# install, uninstall, the client library (client) and the man pages (man)
include packaging/install.mk

-include $(LIB_OBJ:.o=.d) $(GEN_OBJ:.o=.d) $(B)/obj/src/app/main.d $(UNIT_OBJ:.o=.d) $(UNIT_BIN:=.d)
