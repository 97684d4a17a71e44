# cpool - flat Makefile in the hiredis/liburing tradition.
#
#   make                  libcpool.a, libcpool.so, cpool.pc under build/
#   make test             install missing Debian packages, build, run the suite
#   make bench            install missing packages, run every bench workload
#   make asan | tsan      the whole suite under ASan+UBSan / TSan
#   make debug            the whole suite against a CPOOL_DEBUG build
#   make soak | soak-asan | soak-tsan   chaos soak; SOAK_SECONDS (60, or 20
#                         under sanitizers)
#   make fuzz | fuzz-ci   libFuzzer harnesses; FUZZ_SECONDS (60; 30 for CI)
#   make bench-callgrind  instructions per acquire+release
#   make install          PREFIX=/usr/local DESTDIR=
#   make deps             install the Debian packages build, tests, benches need
#
# User CFLAGS/LDFLAGS are respected; the project's warnings are added on top.

VERSION_MAJOR := $(shell sed -n 's/^\#define CPOOL_VERSION_MAJOR \([0-9]*\)/\1/p' include/cpool.h)
VERSION_MINOR := $(shell sed -n 's/^\#define CPOOL_VERSION_MINOR \([0-9]*\)/\1/p' include/cpool.h)
VERSION_PATCH := $(shell sed -n 's/^\#define CPOOL_VERSION_PATCH \([0-9]*\)/\1/p' include/cpool.h)
VERSION := $(VERSION_MAJOR).$(VERSION_MINOR).$(VERSION_PATCH)
SONAME := libcpool.so.$(VERSION_MAJOR)

PREFIX ?= /usr/local
LIBDIR ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig

CC ?= cc
CFLAGS ?= -O2 -g
BUILD ?= build
# SAN=asan|tsan selects a sanitizer build (used by make asan / make tsan).
SAN ?=

PROJECT_CFLAGS := -std=gnu11 -D_GNU_SOURCE -Wall -Wextra -Werror \
	-Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wno-unused-parameter \
	-fvisibility=hidden -fPIC -Iinclude -Ipool
URCU_LIBS := -lurcu-cds -lurcu-bp -lurcu-common
# The tests also play a host that uses urcu-memb itself.
TEST_URCU_LIBS := -lurcu-memb
# c-ares resolves the names of upstream sets (pool/dns.c).
CARES_LIBS := -lcares
SYS_LIBS := $(CARES_LIBS) -lpthread -ldl -lm
JEMALLOC_PIC := $(shell $(CC) -print-file-name=libjemalloc_pic.a)

# Sanitizer builds are debug builds too: invariants checked, pause points in.
ifeq ($(SAN),asan)
PROJECT_CFLAGS += -fsanitize=address,undefined -fno-omit-frame-pointer \
	-fno-sanitize-recover=undefined -DCPOOL_ALLOC_LIBC -DCPOOL_SANITIZE \
	-DCPOOL_DEBUG
SAN_LDFLAGS := -fsanitize=address,undefined
else ifeq ($(SAN),tsan)
PROJECT_CFLAGS += -fsanitize=thread -fno-omit-frame-pointer \
	-DCPOOL_ALLOC_LIBC -DCPOOL_SANITIZE -DCPOOL_DEBUG
SAN_LDFLAGS := -fsanitize=thread
else ifeq ($(SAN),debug)
PROJECT_CFLAGS += -DCPOOL_DEBUG
endif

LIB_SRCS := $(wildcard pool/*.c)
LIB_OBJS := $(LIB_SRCS:%.c=$(BUILD)/%.o)
LIB_HDRS := include/cpool.h $(wildcard pool/*.h)

include pool/adapters/adapters.mk

TEST_SRCS := $(wildcard tests/*.c)
TEST_UTIL_SRCS := $(wildcard tests/util/*.c)
TEST_OBJS := $(TEST_SRCS:%.c=$(BUILD)/%.o) $(TEST_UTIL_SRCS:%.c=$(BUILD)/%.o)
TEST_BIN := $(BUILD)/tests/cpool_tests
CRITERION_FLAGS ?= --jobs=2

DEB_PKGS := gcc make liburcu-dev libjemalloc-dev libcriterion-dev memcached \
	redis-server libhiredis-dev libaprutil1-dev libmemcached-dev pkg-config \
	valgrind iproute2 libssl-dev openssl libpq-dev postgresql libc-ares-dev \
	dnsmasq-base

.PHONY: all lib install uninstall clean deps test debug debug-test asan tsan bench \
	bench-callgrind check-exports check-layers

all: lib adapters

lib: $(BUILD)/libcpool.a $(BUILD)/libcpool.so $(BUILD)/cpool.pc

$(BUILD)/%.o: %.c $(LIB_HDRS) $(wildcard include/*.h tests/util/*.h) Makefile
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(PROJECT_CFLAGS) $(ADAPTER_CFLAGS) -c $< -o $@

# jemalloc is linked in privately: the pool's objects and jemalloc's pic
# archive become one relocatable object in which every global but cpool_* is
# made local, so neither libcpool.a nor libcpool.so can replace the host's
# malloc. Sanitizer builds use libc through the same funnel (pool/alloc.h).
ifeq ($(filter asan tsan,$(SAN)),)
$(BUILD)/cpool.o: $(LIB_OBJS)
	$(LD) -r -o $@.tmp $(LIB_OBJS) $(JEMALLOC_PIC)
	objcopy --wildcard --keep-global-symbol='!cpool__*' \
		--keep-global-symbol='cpool_*' $@.tmp $@
	@rm -f $@.tmp
else
$(BUILD)/cpool.o: $(LIB_OBJS)
	$(LD) -r -o $@ $(LIB_OBJS)
endif

$(BUILD)/libcpool.a: $(BUILD)/cpool.o
	@rm -f $@
	$(AR) rcs $@ $^

$(BUILD)/libcpool.so: $(BUILD)/cpool.o pool/libcpool.map
	$(CC) -shared -Wl,-soname,$(SONAME) -Wl,--version-script=pool/libcpool.map \
		$(if $(filter asan tsan,$(SAN)),,-Wl,-z,defs) $(SAN_LDFLAGS) $(LDFLAGS) \
		-o $(BUILD)/libcpool.so.$(VERSION) $(BUILD)/cpool.o $(URCU_LIBS) $(SYS_LIBS)
	ln -sf libcpool.so.$(VERSION) $(BUILD)/$(SONAME)
	ln -sf $(SONAME) $@

$(BUILD)/cpool.pc: Makefile include/cpool.h
	@mkdir -p $(BUILD)
	printf '%s\n' 'prefix=$(PREFIX)' 'libdir=$(LIBDIR)' 'includedir=$(INCLUDEDIR)' '' \
		'Name: cpool' 'Description: pool of live, clean persistent client connections' \
		'Version: $(VERSION)' 'Requires.private: liburcu-cds liburcu-bp' \
		'Libs: -L$${libdir} -lcpool' 'Libs.private: $(SYS_LIBS)' \
		'Cflags: -I$${includedir}' > $@

# pool/ includes go down the layers only (tests/layers.sh has the order).
check-layers:
	@sh tests/layers.sh

# Only cpool_* may leave the shared object.
check-exports: $(BUILD)/libcpool.so $(ADAPTER_SOS)
	@for so in $(BUILD)/libcpool.so $(ADAPTER_SOS); do \
		bad=$$(nm -D --defined-only $$so | awk '$$2 ~ /[TDBRW]/ {print $$3}' \
			| grep -v '^cpool_' || true); \
		if [ -n "$$bad" ]; then echo "$$so: non-cpool exports: $$bad"; exit 1; fi; \
		echo "exports of $$(basename $$so): only cpool_* ($$(nm -D --defined-only $$so | grep -c ' T cpool_') functions)"; \
	done

install: lib install-adapters
	install -d $(DESTDIR)$(LIBDIR) $(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(PKGCONFIGDIR)
	install -m 644 include/cpool.h $(DESTDIR)$(INCLUDEDIR)/cpool.h
	install -m 644 $(BUILD)/libcpool.a $(DESTDIR)$(LIBDIR)/libcpool.a
	install -m 755 $(BUILD)/libcpool.so.$(VERSION) $(DESTDIR)$(LIBDIR)/libcpool.so.$(VERSION)
	ln -sf libcpool.so.$(VERSION) $(DESTDIR)$(LIBDIR)/$(SONAME)
	ln -sf $(SONAME) $(DESTDIR)$(LIBDIR)/libcpool.so
	install -m 644 $(BUILD)/cpool.pc $(DESTDIR)$(PKGCONFIGDIR)/cpool.pc

uninstall:
	rm -f $(DESTDIR)$(INCLUDEDIR)/cpool.h $(DESTDIR)$(LIBDIR)/libcpool.a \
		$(DESTDIR)$(LIBDIR)/libcpool.so.$(VERSION) $(DESTDIR)$(LIBDIR)/$(SONAME) \
		$(DESTDIR)$(LIBDIR)/libcpool.so $(DESTDIR)$(PKGCONFIGDIR)/cpool.pc
	for a in tls redis pq; do \
		rm -f $(DESTDIR)$(INCLUDEDIR)/cpool_$$a.h $(DESTDIR)$(LIBDIR)/libcpool_$$a.* \
			$(DESTDIR)$(PKGCONFIGDIR)/cpool_$$a.pc; \
	done

# Installs what is missing when run as root; otherwise prints the exact line
# to run and fails. Silent when everything is there.
deps:
	@missing=""; for p in $(DEB_PKGS); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' \
			|| missing="$$missing $$p"; \
	done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ]; then \
		echo "cpool needs these Debian packages. Run as root:"; \
		echo "  apt-get update && apt-get install -y$$missing"; exit 1; \
	fi; \
	echo "installing:$$missing"; \
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq$$missing

# The test binary links the shipped static library: the tests see exactly
# what a user links.
$(TEST_BIN): $(TEST_OBJS) $(ADAPTER_ARCHIVES) $(BUILD)/libcpool.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(SAN_LDFLAGS) $(LDFLAGS) -o $@ $(TEST_OBJS) \
		$(ADAPTER_ARCHIVES) $(BUILD)/libcpool.a $(ADAPTER_LIBS) \
		-lcriterion -lhiredis $(URCU_LIBS) $(TEST_URCU_LIBS) $(SYS_LIBS)

TSAN_OPTIONS_RUN := suppressions=$(CURDIR)/tests/tsan.supp halt_on_error=1 second_deadlock_stack=1
ASAN_OPTIONS_RUN := detect_leaks=1:abort_on_error=0:halt_on_error=1
# The suite's leaks fail each test in the worker (tests/util/leakcheck.h);
# exitcode=0 so that the runner's own leak at its exit (criterion 2.4.1,
# 3 x 48 bytes, tests/lsan.supp) does not fail make asan.
LSAN_OPTIONS_RUN := suppressions=$(CURDIR)/tests/lsan.supp:exitcode=0
UBSAN_OPTIONS_RUN := print_stacktrace=1:halt_on_error=1

# make test: the whole suite against the library a user links, then the
# forced interleavings (pause points, tests/test_interleave.c) against a
# debug build of it.
test: deps
	@$(MAKE) --no-print-directory $(TEST_BIN) check-exports check-layers
	$(TEST_BIN) $(CRITERION_FLAGS)
	@$(MAKE) --no-print-directory debug-test

debug-test:
	@$(MAKE) --no-print-directory BUILD=build-debug SAN=debug build-debug/tests/cpool_tests
	build-debug/tests/cpool_tests $(CRITERION_FLAGS) --filter 'interleave/*'

# The whole suite against the debug build.
debug: deps
	@$(MAKE) --no-print-directory BUILD=build-debug SAN=debug build-debug/tests/cpool_tests
	build-debug/tests/cpool_tests $(CRITERION_FLAGS)

asan: deps
	@$(MAKE) --no-print-directory BUILD=build-asan SAN=asan build-asan/tests/cpool_tests
	ASAN_OPTIONS=$(ASAN_OPTIONS_RUN) LSAN_OPTIONS=$(LSAN_OPTIONS_RUN) \
		UBSAN_OPTIONS=$(UBSAN_OPTIONS_RUN) \
		build-asan/tests/cpool_tests $(CRITERION_FLAGS)

tsan: deps
	@$(MAKE) --no-print-directory BUILD=build-tsan SAN=tsan build-tsan/tests/cpool_tests
	TSAN_OPTIONS="$(TSAN_OPTIONS_RUN)" build-tsan/tests/cpool_tests $(CRITERION_FLAGS)

-include bench/bench.mk
-include tests/fuzz/fuzz.mk
-include tests/soak/soak.mk
-include tests/model/model.mk

clean:
	rm -rf build build-asan build-tsan build-debug bench/results/*.csv
