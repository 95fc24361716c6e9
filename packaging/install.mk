# `make install` / `make uninstall`, the client library and the man pages (included by the
# Makefile). docs/operations.md describes the installed layout.
#
#   make install [PREFIX=/usr/local] [DESTDIR=] [SYSCONFDIR=…] [LIBDIR=…] [UNITDIR=…]
#
# The server goes to $(PREFIX)/bin/dapi and its DuckDB to the private $(PREFIX)/lib/dapi/,
# which the binary finds through its RUNPATH ($ORIGIN/../lib/dapi), so the installed tree
# works wherever it is unpacked (DESTDIR included). Everything is built in build/ first, as
# a normal user; only the copying needs write access to the target.

PREFIX     ?= /usr/local
DESTDIR    ?=
SYSCONFDIR ?= $(if $(filter /usr,$(PREFIX)),/etc,$(PREFIX)/etc)
LIBDIR     ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
UNITDIR    ?= $(PREFIX)/lib/systemd/system
MANDIR     ?= $(PREFIX)/share/man
DOCDIR     ?= $(PREFIX)/share/doc/dapi
# Fixed relative to each other: the binary's RUNPATH names ../lib/dapi.
BINDIR     := $(PREFIX)/bin
PRIVLIBDIR := $(PREFIX)/lib/dapi

VERSION    := $(shell sed -n 's/^\#define DAPI_VERSION "\(.*\)"/\1/p' include/dapi/version.h)
MAN_PAGES  := dapi dapi-serve dapi-query dapi-keys
DOCS       := $(sort $(wildcard docs/*.md))

# --- libdapi-client: the client without the server, DuckDB, microhttpd or OpenSSL ---------
CLIENT_SRC  := $(sort $(wildcard src/client/*.c)) src/base/buf.c src/base/clock.c \
               src/base/err.c src/base/json.c src/base/jsonin.c src/upstream/httpc.c \
               src/upstream/retry.c
CLIENT_OBJ  := $(CLIENT_SRC:%.c=$(B)/obj/%.o)
CLIENT_LIBS  = $(shell pkg-config --libs libcurl jansson 2>/dev/null) -pthread -lm
CLIENT_SO   := $(B)/libdapi-client.so.$(VERSION)
CLIENT_SYMS := $(shell sed -n '/^[a-z]/p' packaging/dapi-client.sym)

.PHONY: client man install uninstall

# The RUNPATH is a link flag in the Makefile: relink the binary when that changes (an extra
# prerequisite; the rule itself is the Makefile's).
$(B)/dapi: Makefile
client: $(B)/libdapi-client.a $(CLIENT_SO) $(B)/libdapi-client.so.0 $(B)/libdapi-client.so

# Exports only packaging/dapi-client.sym, with a version node.
$(B)/dapi-client.map: packaging/dapi-client.sym
	@mkdir -p $(@D)
	{ echo 'DAPI_CLIENT_0 {'; echo '  global:'; sed -n 's/^\([a-z].*\)/    \1;/p' $<; \
	  echo '  local: *;'; echo '};'; } > $@

$(CLIENT_SO): $(CLIENT_OBJ) $(B)/dapi-client.map
	$(CC) -shared $(SAN) -Wl,-soname,libdapi-client.so.0 -Wl,--version-script,$(B)/dapi-client.map \
	    -Wl,--no-undefined -o $@ $(CLIENT_OBJ) $(CLIENT_LIBS)

$(B)/libdapi-client.so.0: $(CLIENT_SO)
	ln -sf $(<F) $@

$(B)/libdapi-client.so: $(B)/libdapi-client.so.0
	ln -sf $(<F) $@

# The static library is one relocatable object whose internal symbols are made local, so a
# program linking it cannot clash with them (dapi_buf_*, dapi_httpc_*, …).
$(B)/libdapi-client.a: $(CLIENT_OBJ) packaging/dapi-client.sym
	$(LD) -r -o $(B)/obj/dapi-client.o $(CLIENT_OBJ)
	objcopy $(addprefix --keep-global-symbol=,$(CLIENT_SYMS)) $(B)/obj/dapi-client.o
	@rm -f $@
	ar rcs $@ $(B)/obj/dapi-client.o

# --- man pages, from the binary's own option tables -----------------------------------------
man: $(MAN_PAGES:%=$(B)/man/%.1)

$(MAN_PAGES:%=$(B)/man/%.1) &: $(B)/dapi scripts/gen-man.py
	python3 scripts/gen-man.py --bin $(B)/dapi --out $(B)/man

# --- install / uninstall --------------------------------------------------------------------
# Paths filled into the unit, the man pages and the pkg-config file.
SUBST = sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@BINDIR@|$(BINDIR)|g' \
            -e 's|@LIBDIR@|$(LIBDIR)|g' -e 's|@INCLUDEDIR@|$(INCLUDEDIR)|g' \
            -e 's|@SYSCONFDIR@|$(SYSCONFDIR)|g' -e 's|@UNITDIR@|$(UNITDIR)|g' \
            -e 's|@DOCDIR@|$(DOCDIR)|g' -e 's|@VERSION@|$(VERSION)|g'
D = $(DESTDIR)

install: $(B)/dapi $(B)/lib/libduckdb.so client man
	install -d $(D)$(BINDIR) $(D)$(PRIVLIBDIR) $(D)$(LIBDIR)/pkgconfig $(D)$(INCLUDEDIR)/dapi \
	    $(D)$(MANDIR)/man1 $(D)$(DOCDIR)/docs $(D)$(UNITDIR) $(D)$(SYSCONFDIR)/dapi
	install -m 755 $(B)/dapi $(D)$(BINDIR)/dapi
	install -m 644 $(B)/lib/libduckdb.so $(D)$(PRIVLIBDIR)/libduckdb.so
	install -m 644 $(CLIENT_SO) $(B)/libdapi-client.a $(D)$(LIBDIR)/
	ln -sf $(notdir $(CLIENT_SO)) $(D)$(LIBDIR)/libdapi-client.so.0
	ln -sf libdapi-client.so.0 $(D)$(LIBDIR)/libdapi-client.so
	$(SUBST) -e 's#^\(libdir\|includedir\)=$(PREFIX)/#\1=$${prefix}/#' packaging/dapi-client.pc.in \
	    > $(D)$(LIBDIR)/pkgconfig/dapi-client.pc
	install -m 644 include/dapi/client.h include/dapi/err.h include/dapi/version.h \
	    $(D)$(INCLUDEDIR)/dapi/
	for p in $(MAN_PAGES); do \
	    $(SUBST) $(B)/man/$$p.1 > $(D)$(MANDIR)/man1/$$p.1 || exit 1; done
	chmod 644 $(MAN_PAGES:%=$(D)$(MANDIR)/man1/%.1)
	install -m 644 README.md LICENSE CHANGELOG.md $(D)$(DOCDIR)/
	install -m 644 $(DOCS) $(D)$(DOCDIR)/docs/
	$(SUBST) packaging/dapi.service.in > $(D)$(UNITDIR)/dapi.service
	chmod 644 $(D)$(LIBDIR)/pkgconfig/dapi-client.pc $(D)$(UNITDIR)/dapi.service
	@# The environment file is the operator's: never overwritten.
	@if [ -e $(D)$(SYSCONFDIR)/dapi/dapi.env ]; then \
	    echo "kept $(D)$(SYSCONFDIR)/dapi/dapi.env (the shipped one is packaging/dapi.env)"; \
	else install -m 600 packaging/dapi.env $(D)$(SYSCONFDIR)/dapi/dapi.env; fi
	@if [ -z "$(DESTDIR)" ] && [ "$$(id -u)" = 0 ]; then ldconfig; fi

# Removes what install put there; an environment file that was edited (or api-keys, which
# install never writes) stays, and so does its directory.
uninstall:
	rm -f $(D)$(BINDIR)/dapi $(D)$(PRIVLIBDIR)/libduckdb.so \
	    $(D)$(LIBDIR)/libdapi-client.so.$(VERSION) $(D)$(LIBDIR)/libdapi-client.so.0 \
	    $(D)$(LIBDIR)/libdapi-client.so $(D)$(LIBDIR)/libdapi-client.a \
	    $(D)$(LIBDIR)/pkgconfig/dapi-client.pc \
	    $(addprefix $(D)$(INCLUDEDIR)/dapi/,client.h err.h version.h) \
	    $(MAN_PAGES:%=$(D)$(MANDIR)/man1/%.1) \
	    $(addprefix $(D)$(DOCDIR)/,README.md LICENSE CHANGELOG.md) \
	    $(addprefix $(D)$(DOCDIR)/docs/,$(notdir $(DOCS))) \
	    $(D)$(UNITDIR)/dapi.service
	@if cmp -s packaging/dapi.env $(D)$(SYSCONFDIR)/dapi/dapi.env; then \
	    rm -f $(D)$(SYSCONFDIR)/dapi/dapi.env; \
	elif [ -e $(D)$(SYSCONFDIR)/dapi/dapi.env ]; then \
	    echo "kept $(D)$(SYSCONFDIR)/dapi/dapi.env (edited)"; fi
	@for d in $(D)$(PRIVLIBDIR) $(D)$(INCLUDEDIR)/dapi $(D)$(DOCDIR)/docs $(D)$(DOCDIR) \
	    $(D)$(SYSCONFDIR)/dapi; do rmdir "$$d" 2>/dev/null || true; done
	@if [ -z "$(DESTDIR)" ] && [ "$$(id -u)" = 0 ]; then ldconfig; fi
