# bench/bench.mk - the benchmark suite, included by the top Makefile.
#
#   make bench            install missing packages, build the bench binaries
#                         (-O2, linked against $(BUILD)/libcpool.a and the
#                         peers' libraries) and run every workload, ~5 min
#   make bench-callgrind  instructions per acquire+release (valgrind)
#   make bench-build      only build them, into $(BUILD)/bench/
#
# Options for the run: BENCH_ARGS="-r 5 -d 0.5" is passed to every binary.

BENCH_OBJDIR := $(BUILD)/bench
BENCH_NAMES := acquire_release request scarce pool_size detect idle_cpu \
	callgrind upstream
# The adapters' benches (bench/bench_redis.c, ...), when the adapter builds.
BENCH_NAMES += $(foreach a,$(ADAPTERS),$(if $(wildcard bench/bench_$(a).c),$(a)))
BENCH_BINS := $(BENCH_NAMES:%=$(BENCH_OBJDIR)/bench_%)
BENCH_COMMON_SRCS := bench/bench.c bench/net.c bench/server.c \
	bench/echo_server.c bench/mutex_pool.c $(wildcard bench/peer_*.c)
BENCH_COMMON_OBJS := $(BENCH_COMMON_SRCS:bench/%.c=$(BENCH_OBJDIR)/%.o)
BENCH_MAIN_OBJS := $(BENCH_NAMES:%=$(BENCH_OBJDIR)/bench_%.o)
BENCH_HDRS := $(wildcard bench/*.h) include/cpool.h

# Recursive (=) so that pkg-config only runs when a bench is built.
BENCH_PEER_CFLAGS = $(shell pkg-config --cflags apr-1 apr-util-1 2>/dev/null \
	|| echo -I/usr/include/apr-1.0)
BENCH_PEER_LIBS = $(shell pkg-config --libs apr-util-1 apr-1 2>/dev/null \
	|| echo -laprutil-1 -lapr-1) -lmemcachedutil -lmemcached
BENCH_CFLAGS = $(CFLAGS) $(PROJECT_CFLAGS) -O2 $(BENCH_PEER_CFLAGS) \
	$(ADAPTER_CFLAGS)
BENCH_LIBS = $(ADAPTER_ARCHIVES) $(BUILD)/libcpool.a $(ADAPTER_LIBS) -lhiredis \
	$(BENCH_PEER_LIBS) $(URCU_LIBS) $(SYS_LIBS)

.PHONY: bench-build

bench-build: $(BENCH_BINS)

$(BENCH_COMMON_OBJS) $(BENCH_MAIN_OBJS): $(BENCH_OBJDIR)/%.o: bench/%.c \
		$(BENCH_HDRS) bench/bench.mk
	@mkdir -p $(dir $@)
	$(CC) $(BENCH_CFLAGS) -c $< -o $@

# bench_upstream starts its DNS server with the tests' dnssrv (dnsmasq).
$(BENCH_OBJDIR)/bench_upstream: BENCH_EXTRA_OBJS := $(BENCH_OBJDIR)/dnssrv.o
$(BENCH_OBJDIR)/bench_upstream: $(BENCH_OBJDIR)/dnssrv.o
$(BENCH_OBJDIR)/dnssrv.o: tests/util/dnssrv.c tests/util/dnssrv.h bench/bench.mk
	@mkdir -p $(dir $@)
	$(CC) $(BENCH_CFLAGS) -c $< -o $@

# bench_tls starts its server with the tests' tlssrv (self-contained).
$(BENCH_OBJDIR)/bench_tls: BENCH_EXTRA_OBJS := $(BENCH_OBJDIR)/tlssrv.o
$(BENCH_OBJDIR)/bench_tls: $(BENCH_OBJDIR)/tlssrv.o
$(BENCH_OBJDIR)/tlssrv.o: tests/util/tlssrv.c tests/util/tlssrv.h bench/bench.mk
	@mkdir -p $(dir $@)
	$(CC) $(BENCH_CFLAGS) -c $< -o $@

$(BENCH_BINS): $(BENCH_OBJDIR)/bench_%: $(BENCH_OBJDIR)/bench_%.o \
		$(BENCH_COMMON_OBJS) $(ADAPTER_ARCHIVES) $(BUILD)/libcpool.a
	$(CC) $(CFLAGS) $(SAN_LDFLAGS) $(LDFLAGS) -o $@ $< \
		$(BENCH_EXTRA_OBJS) $(BENCH_COMMON_OBJS) $(BENCH_LIBS)

bench: deps
	@$(MAKE) --no-print-directory bench-build
	@sh bench/run.sh $(BENCH_OBJDIR) bench/results $(BENCH_ARGS)

bench-callgrind: deps
	@$(MAKE) --no-print-directory bench-build
	@sh bench/callgrind.sh $(BENCH_OBJDIR)
