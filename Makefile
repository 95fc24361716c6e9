# dapi — build, run, test, bench.  `make run` and `make test` set everything up on a fresh
# Debian machine (scripts/deps.sh installs what is missing and fetches DuckDB).
CC      ?= cc
DUCKDB  := third_party/duckdb
PKGS    := libmicrohttpd libcurl jansson openssl
CSTD    := -std=c17 -D_GNU_SOURCE
WARN    := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wno-unused-parameter
OPT     ?= -O2 -g
CFLAGS  += $(CSTD) $(WARN) $(OPT) -fPIC -pthread -I. -Iinclude -Isrc -isystem $(DUCKDB)/include \
           -DDUCKDB_API_NO_DEPRECATED -MMD -MP
LDFLAGS += -pthread -L$(DUCKDB)/lib -Wl,-rpath,'$$ORIGIN/lib'
LDLIBS  += -lduckdb -lm

PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   = $(shell pkg-config --libs $(PKGS) 2>/dev/null)

LIB_SRC  := $(sort $(wildcard src/*/*.c cli/*.c))
LIB_SRC  := $(filter-out src/app/main.c,$(LIB_SRC))
LIB_OBJ  := $(LIB_SRC:%.c=build/obj/%.o)
UNIT_SRC := $(sort $(wildcard tests/unit/test_*.c))
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=build/tests/%)
# deps.sh (Debian packages + DuckDB) runs once per change of the script; it is idempotent.
DEPS_OK  := build/.deps-ok

.PHONY: all deps run test unit integration bench fuzz clean distclean format
all: build/dapi

$(DEPS_OK): scripts/deps.sh
	scripts/deps.sh
	@mkdir -p $(@D) && touch $@

$(DUCKDB)/lib/libduckdb.so $(DUCKDB)/include/duckdb.h: | $(DEPS_OK)
	@test -f $@ || scripts/deps.sh

deps:
	scripts/deps.sh

build/lib/libduckdb.so: $(DUCKDB)/lib/libduckdb.so
	@mkdir -p $(@D)
	cp $< $@

build/obj/%.o: %.c | $(DEPS_OK)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(PKG_CFLAGS) -c $< -o $@

build/libdapi.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

build/dapi: build/obj/src/app/main.o build/libdapi.a build/lib/libduckdb.so
	$(CC) $(LDFLAGS) -o $@ build/obj/src/app/main.o build/libdapi.a $(PKG_LIBS) $(LDLIBS)

# Unit test binaries live in build/tests/ and find libduckdb through ../lib.
build/tests/%: tests/unit/%.c tests/unit/t.h build/libdapi.a build/lib/libduckdb.so
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(PKG_CFLAGS) -Itests/unit $(LDFLAGS) -Wl,-rpath,'$$ORIGIN/../lib' \
	    -o $@ $< build/libdapi.a $(PKG_LIBS) $(LDLIBS)

DAPI_PORT ?= 5001
run: build/dapi
	scripts/run.sh

unit: $(UNIT_BIN)
	scripts/test.sh --unit-only

integration: build/dapi
	scripts/test.sh --integration-only

test: build/dapi $(UNIT_BIN)
	scripts/test.sh

bench:
	scripts/deps.sh --bench
	$(MAKE) build/dapi
	bench/run.sh
	bench/nekt.sh

# libFuzzer drivers for every parser of hostile input (not part of `make test`).
FUZZ_SECONDS ?= 30
fuzz: build/dapi
	tests/fuzz/run.sh $(FUZZ_SECONDS)

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf build

distclean: clean
	rm -rf third_party

-include $(LIB_OBJ:.o=.d) build/obj/src/app/main.d
