# tests/fuzz/fuzz.mk - libFuzzer harnesses, included by the top Makefile.
#
#   make fuzz             install what is missing, build the harnesses into
#                         $(BUILD)/fuzz/ and run each for FUZZ_SECONDS (60)
#   make fuzz-ci          the same, 30 s each
#   make fuzz-regress     replay every committed corpus file once (seconds):
#                         the regression test for anything fuzzing found
#   make fuzz-seeds       rewrite tests/fuzz/corpus/config/ from the current
#                         struct cpool_config (gen_config_seeds.c)
#   make fuzz-clean       remove $(BUILD)/fuzz/
#
# Harnesses: fuzz_address (cpool__addr_parse and cpool_endpoint_add) and
# fuzz_config (cpool_create on arbitrary struct bytes and sizes); the top
# comment of each says what it checks. They compile pool/*.c themselves with
# clang, -DCPOOL_FUZZ (names never reach the resolver), libc allocation
# (-DCPOOL_ALLOC_LIBC) and CPOOL_BUG_ON live (-DCPOOL_DEBUG).
#
# Runs fuzz a scratch copy of the corpus under $(BUILD)/fuzz/corpus/, which
# keeps growing from run to run; the repository is never written. A crash,
# leak, sanitizer report, failed invariant or 10 s hang fails the target;
# the input is left in $(BUILD)/fuzz/artifacts/. To turn one into a
# regression test: copy it into tests/fuzz/corpus/<harness>/ under a name
# that says what it was, fix the bug, and make fuzz-regress passes again.
# Reproduce with: $(BUILD)/fuzz/fuzz_<harness> <file>.

FUZZ_SECONDS ?= 60
FUZZ_CC ?= clang
FUZZ_CFLAGS ?= -g -O1
# Another FUZZ_DIR for other flags: objects do not track flag changes.
FUZZ_DIR ?= $(BUILD)/fuzz
FUZZ_NAMES := address config
FUZZ_BINS := $(FUZZ_NAMES:%=$(FUZZ_DIR)/fuzz_%)
# FUZZ_SAN_EXTRA=-fno-sanitize=alignment (with its own FUZZ_DIR) fuzzes
# past a known alignment report while its fix is pending.
FUZZ_SAN_EXTRA ?=
FUZZ_SAN := -fsanitize=address,undefined -fno-sanitize-recover=all \
	-fno-omit-frame-pointer $(FUZZ_SAN_EXTRA)
FUZZ_DEFS := -std=gnu11 -D_GNU_SOURCE -DCPOOL_FUZZ -DCPOOL_ALLOC_LIBC \
	-DCPOOL_SANITIZE -DCPOOL_DEBUG -Iinclude -Ipool
FUZZ_WARN := -Wall -Wextra -Wno-unused-parameter
FUZZ_LIBS := $(URCU_LIBS) $(CARES_LIBS) -lpthread
FUZZ_LIB_OBJS := $(patsubst pool/%.c,$(FUZZ_DIR)/pool/%.o,$(wildcard pool/*.c))
FUZZ_HDRS := include/cpool.h $(wildcard pool/*.h)
# What clang -fsanitize=fuzzer needs on Debian 12, installed when missing.
FUZZ_DEB_PKGS := clang clang-14 libclang-rt-14-dev

FUZZ_ENV := ASAN_OPTIONS=detect_leaks=1:halt_on_error=1:abort_on_error=0 \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
FUZZ_RUN_FLAGS = -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
	-timeout=10 -rss_limit_mb=2048
FUZZ_address_FLAGS := -dict=tests/fuzz/address.dict -max_len=2048
FUZZ_config_FLAGS := -max_len=512

.PHONY: fuzz fuzz-ci fuzz-deps fuzz-build fuzz-regress fuzz-seeds \
	fuzz-clean $(FUZZ_NAMES:%=fuzz-run-%)

# One after the other: both may run apt-get.
fuzz: deps
	@$(MAKE) --no-print-directory fuzz-deps
	@$(MAKE) --no-print-directory $(FUZZ_NAMES:%=fuzz-run-%)

fuzz-ci:
	@$(MAKE) --no-print-directory fuzz FUZZ_SECONDS=30

fuzz-build: $(FUZZ_BINS) $(FUZZ_DIR)/gen_config_seeds

# Links a trivial fuzzer; when that fails, installs the runtime as root or
# prints the line to run.
fuzz-deps:
	@mkdir -p $(FUZZ_DIR)
	@probe() { printf '%s\n' '#include <stddef.h>' '#include <stdint.h>' \
		'int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n);' \
		'int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)' \
		'{ return 0; }' > $(FUZZ_DIR)/probe.c && \
		$(FUZZ_CC) -fsanitize=fuzzer,address,undefined \
		$(FUZZ_DIR)/probe.c -o $(FUZZ_DIR)/probe >/dev/null 2>&1; }; \
	if probe; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ]; then \
		echo "$(FUZZ_CC) cannot link -fsanitize=fuzzer. Run as root:"; \
		echo "  apt-get update && apt-get install -y $(FUZZ_DEB_PKGS)"; \
		exit 1; \
	fi; \
	echo "installing: $(FUZZ_DEB_PKGS)"; \
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq $(FUZZ_DEB_PKGS) || exit 1; \
	probe || { echo "$(FUZZ_CC) still cannot link -fsanitize=fuzzer"; exit 1; }

$(FUZZ_LIB_OBJS): $(FUZZ_DIR)/pool/%.o: pool/%.c $(FUZZ_HDRS) tests/fuzz/fuzz.mk
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(FUZZ_DEFS) $(FUZZ_WARN) \
		-fsanitize=fuzzer-no-link $(FUZZ_SAN) -c $< -o $@

$(FUZZ_BINS): $(FUZZ_DIR)/fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/fuzz.h $(FUZZ_LIB_OBJS) \
		$(FUZZ_HDRS) tests/fuzz/fuzz.mk
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(FUZZ_DEFS) $(FUZZ_WARN) \
		-fsanitize=fuzzer $(FUZZ_SAN) -o $@ $< $(FUZZ_LIB_OBJS) \
		$(FUZZ_LIBS)

# Plain build: it only calls cpool_config_init().
$(FUZZ_DIR)/gen_config_seeds: tests/fuzz/gen_config_seeds.c pool/config.c \
		pool/log.c $(FUZZ_HDRS) tests/fuzz/fuzz.mk
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(FUZZ_DEFS) $(FUZZ_WARN) -o $@ \
		tests/fuzz/gen_config_seeds.c pool/config.c pool/log.c

# $(1): harness name. Seeds the scratch corpus, fuzzes, prints libFuzzer's
# final stats; on failure the end of the log and where the input is.
define FUZZ_RUN
	@mkdir -p $(FUZZ_DIR)/corpus/$(1) $(FUZZ_DIR)/artifacts
	@cp tests/fuzz/corpus/$(1)/* $(FUZZ_DIR)/corpus/$(1)/
	@echo "fuzz_$(1): $(FUZZ_SECONDS) s, log in $(FUZZ_DIR)/$(1).log"
	@$(FUZZ_ENV) $(FUZZ_DIR)/fuzz_$(1) $(FUZZ_RUN_FLAGS) $(FUZZ_$(1)_FLAGS) \
		-artifact_prefix=$(FUZZ_DIR)/artifacts/$(1)- \
		$(FUZZ_DIR)/corpus/$(1) > $(FUZZ_DIR)/$(1).log 2>&1; \
	rc=$$?; \
	grep '^stat::' $(FUZZ_DIR)/$(1).log | sed 's/^/  fuzz_$(1) /'; \
	if [ $$rc != 0 ]; then \
		tail -n 60 $(FUZZ_DIR)/$(1).log; \
		echo "fuzz_$(1) FAILED (exit $$rc): input in $(FUZZ_DIR)/artifacts/"; \
		exit 1; \
	fi; \
	echo "fuzz_$(1): nothing found"
endef

fuzz-run-address: $(FUZZ_DIR)/fuzz_address
	$(call FUZZ_RUN,address)

fuzz-run-config: $(FUZZ_DIR)/fuzz_config $(FUZZ_DIR)/gen_config_seeds
	@mkdir -p $(FUZZ_DIR)/corpus/config
	@$(FUZZ_DIR)/gen_config_seeds $(FUZZ_DIR)/corpus/config
	$(call FUZZ_RUN,config)

# Every committed input once, files named one by one: nothing is written.
fuzz-regress: deps
	@$(MAKE) --no-print-directory fuzz-deps
	@$(MAKE) --no-print-directory $(FUZZ_BINS)
	@set -e; for n in $(FUZZ_NAMES); do \
		$(FUZZ_ENV) $(FUZZ_DIR)/fuzz_$$n tests/fuzz/corpus/$$n/* \
			> $(FUZZ_DIR)/regress-$$n.log 2>&1 \
			|| { tail -n 60 $(FUZZ_DIR)/regress-$$n.log; \
			     echo "fuzz_$$n: regression FAILED"; exit 1; }; \
		echo "fuzz_$$n: $$(ls tests/fuzz/corpus/$$n | wc -l) corpus inputs pass"; \
	done

fuzz-seeds: $(FUZZ_DIR)/gen_config_seeds
	@mkdir -p tests/fuzz/corpus/config
	$(FUZZ_DIR)/gen_config_seeds tests/fuzz/corpus/config

fuzz-clean:
	rm -rf $(FUZZ_DIR)
