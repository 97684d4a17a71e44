# tests/soak/soak.mk - the chaos soak (issue 5); included by the top Makefile.
#
#   make soak          SOAK_SECONDS of chaos (default 60), build/
#   make soak-asan     the same under ASan+UBSan, build-asan/ (default 20 s)
#   make soak-tsan     the same under TSan, build-tsan/ (default 20 s)
#
# SOAK_SECONDS=N on the command line or in the environment sets all three.
# The soak starts its own memcached, redis-server and (as root) PostgreSQL
# on free loopback ports and stops them by pid; it needs the packages
# `make deps` installs. Without PostgreSQL (not root, no binaries, or
# SOAK_NO_PG=1) the postgres target is skipped and the report says why.

ifeq ($(origin SOAK_SECONDS),undefined)
SOAK_SECONDS := 60
SOAK_SAN_SECONDS := 20
else
SOAK_SAN_SECONDS := $(SOAK_SECONDS)
endif

SOAK_BIN := $(BUILD)/tests/soak/cpool_soak
SOAK_OBJS := $(BUILD)/tests/soak/soak_main.o $(BUILD)/tests/util/soak.o \
	$(BUILD)/tests/util/realsrv.o $(BUILD)/tests/util/fault_server.o \
	$(BUILD)/tests/util/net.o $(BUILD)/tests/util/pgsrv.o \
	$(BUILD)/tests/util/tlssrv.o
SOAK_LIBS := -lhiredis

.PHONY: soak soak-asan soak-tsan

# Linked like the test binary: the shipped static libraries, the adapters'
# (pq for the postgres target, tls for TLS redis) before libcpool's.
$(SOAK_BIN): $(SOAK_OBJS) $(ADAPTER_ARCHIVES) $(BUILD)/libcpool.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(SAN_LDFLAGS) $(LDFLAGS) -o $@ $(SOAK_OBJS) \
		$(ADAPTER_ARCHIVES) $(BUILD)/libcpool.a $(ADAPTER_LIBS) \
		$(SOAK_LIBS) $(URCU_LIBS) $(SYS_LIBS)

soak: deps
	@$(MAKE) --no-print-directory $(SOAK_BIN)
	$(SOAK_BIN) $(SOAK_SECONDS)

soak-asan: deps
	@$(MAKE) --no-print-directory BUILD=build-asan SAN=asan \
		build-asan/tests/soak/cpool_soak
	ASAN_OPTIONS=$(ASAN_OPTIONS_RUN) UBSAN_OPTIONS=$(UBSAN_OPTIONS_RUN) \
		build-asan/tests/soak/cpool_soak $(SOAK_SAN_SECONDS)

soak-tsan: deps
	@$(MAKE) --no-print-directory BUILD=build-tsan SAN=tsan \
		build-tsan/tests/soak/cpool_soak
	TSAN_OPTIONS="$(TSAN_OPTIONS_RUN)" \
		build-tsan/tests/soak/cpool_soak $(SOAK_SAN_SECONDS)
