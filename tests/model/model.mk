# tests/model/model.mk - the spin model of the admission protocol
# (tests/model/admit.pml, whose top comment says what it models and
# checks); included by the top Makefile.
#
#   make model        each configuration of MODEL_RUNS: spin -a, gcc, an
#                     exhaustive search; fails on any error spin reports
#   make model-bugs   each variant of MODEL_BUGS: the same search with the
#                     bug switched on; fails unless spin finds a violation
#                     of the property the bug breaks
#   make model-clean  remove $(BUILD)/model/
#
# Each run works in $(BUILD)/model/<run>/: pan.c, pan, pan.out (pan's
# report), and for a bug trail.txt (the counterexample, spin -t -p -g)
# and steps.txt (its writes of shared state, one line per stretch of one
# actor's steps: "2:holder" is the process of _pid 2). Every run takes
# seconds; the largest state space here is ~9M states, ~1.1 GB.
# Needs spin (Debian package spin): installed when missing and root.

MODEL_DIR ?= $(abspath $(BUILD))/model
MODEL_SRC := $(CURDIR)/tests/model/admit.pml
SPIN ?= spin
MODEL_CC ?= gcc
# -O0: gcc -O2 spends ~12 s per pan.c here, more than -O0 costs the search
MODEL_CFLAGS ?= -O0 -w
# -m: search depth (runs reach ~460); -i: for bugs, the shortest trail
PAN_FLAGS ?= -m1000000

# Configurations: spin -D flags (admit.pml's CONFIGURATION).
# Defaults: MAX 2 (2 holders), NL 2, NWAIT 2, BARGER 1, TIMEOUTS 1.
MODEL_RUNS := base cancel served three rebarge close close-barger \
	close-served term term-close
MODEL_base :=
MODEL_cancel := -DNCANCEL=2
MODEL_served := -DTIMEOUTS=0 -DNCANCEL=1
MODEL_three := -DNWAIT=3 -DBARGER=0 -DNCANCEL=1
MODEL_rebarge := -DREBARGE=1 -DBARGER=0 -DNCANCEL=1
MODEL_close := -DCLOSER=1 -DBARGER=0 -DNCANCEL=1
MODEL_close-barger := -DCLOSER=1 -DNWAIT=1 -DNCANCEL=1
MODEL_close-served := -DCLOSER=1 -DBARGER=0 -DTIMEOUTS=0 -DNCANCEL=1
# term*: no cycle at all (pan -DNP -l with no progress label: any cycle
# is a non-progress cycle), so every run of the model ends: no livelock.
MODEL_term := -DNCANCEL=1
MODEL_term-close := -DCLOSER=1 -DBARGER=0 -DNCANCEL=1
MODEL_PAN_CFLAGS = $(if $(filter term%,$(1)),-DNP,-DSAFETY)
MODEL_PAN_RUN = $(if $(filter term%,$(1)),-l)

# Bug variants: spin -D flags, and the property (P1..P4 in admit.pml)
# whose assertion spin must report.
MODEL_BUGS := OLD_KICK OLD_LOOK NO_PASS_ON NO_PASS_ON-timeout SLOT_FIRST \
	NO_CLOSE_CHECK NO_CHAIN
MODEL_BUG_OLD_KICK := -DOLD_KICK -DTIMEOUTS=0
MODEL_PROP_OLD_KICK := P1
MODEL_BUG_OLD_LOOK := -DOLD_LOOK -DTIMEOUTS=0
MODEL_PROP_OLD_LOOK := P1
MODEL_BUG_NO_PASS_ON := -DNO_PASS_ON -DTIMEOUTS=0 -DNCANCEL=1
MODEL_PROP_NO_PASS_ON := P1
MODEL_BUG_NO_PASS_ON-timeout := -DNO_PASS_ON
MODEL_PROP_NO_PASS_ON-timeout := P2
MODEL_BUG_SLOT_FIRST := -DSLOT_FIRST -DTIMEOUTS=0
MODEL_PROP_SLOT_FIRST := P1
MODEL_BUG_NO_CLOSE_CHECK := -DNO_CLOSE_CHECK -DCLOSER=1 -DBARGER=0 -DNCANCEL=1
MODEL_PROP_NO_CLOSE_CHECK := P4
MODEL_BUG_NO_CHAIN := -DNO_CHAIN -DTIMEOUTS=0
MODEL_PROP_NO_CHAIN := P1

# pan.out -> one line: states, memory, time
MODEL_SUMMARY = awk -v n='$(1)' \
	'/^State-vector/ { v = $$2 } /states, stored/ { s = $$1 } \
	 /states, matched/ { m = $$1 } /total actual memory usage/ { mem = $$1 } \
	 /elapsed time/ { t = $$4 } \
	 END { printf "%-20s %9s stored %9s matched  vector %3s B  %8s MB  %6s s\n", \
	       n, s, m, v, mem, t }' pan.out

.PHONY: model model-bugs model-deps model-clean \
	$(MODEL_RUNS:%=model-run-%) $(MODEL_BUGS:%=model-bug-%)

model: model-deps
	@$(MAKE) --no-print-directory $(MODEL_RUNS:%=model-run-%)

model-bugs: model-deps
	@$(MAKE) --no-print-directory $(MODEL_BUGS:%=model-bug-%)

model-deps:
	@command -v $(SPIN) >/dev/null && exit 0; \
	if [ "$$(id -u)" != 0 ]; then \
		echo "make model needs spin. Run as root:"; \
		echo "  apt-get update && apt-get install -y spin"; exit 1; \
	fi; \
	echo "installing: spin"; \
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq spin

$(MODEL_RUNS:%=model-run-%): model-run-%:
	@d=$(MODEL_DIR)/$*; rm -rf $$d && mkdir -p $$d && cd $$d && \
	$(SPIN) -a $(MODEL_$*) $(MODEL_SRC) > spin.out && \
	$(MODEL_CC) $(MODEL_CFLAGS) $(call MODEL_PAN_CFLAGS,$*) -o pan pan.c && \
	./pan $(PAN_FLAGS) $(call MODEL_PAN_RUN,$*) > pan.out 2>&1; \
	cd $$d 2>/dev/null || exit 1; \
	if ! grep -q 'errors: 0$$' pan.out || grep -q 'search depth too small' pan.out; then \
		echo "model $*: FAILED ($(MODEL_$*)): $$d/pan.out"; \
		grep -E 'violated|cycle|invalid end|error' pan.out | head -5; exit 1; \
	fi; \
	$(call MODEL_SUMMARY,model $*)

$(MODEL_BUGS:%=model-bug-%): model-bug-%:
	@d=$(MODEL_DIR)/bug-$*; rm -rf $$d && mkdir -p $$d && cd $$d && \
	$(SPIN) -a $(MODEL_BUG_$*) $(MODEL_SRC) > spin.out && \
	$(MODEL_CC) $(MODEL_CFLAGS) -DSAFETY -o pan pan.c && \
	./pan $(PAN_FLAGS) -i > pan.out 2>&1; \
	cd $$d 2>/dev/null || exit 1; \
	if grep -q 'errors: 0$$' pan.out || [ ! -f admit.pml.trail ]; then \
		echo "model bug $*: NOT FOUND ($(MODEL_BUG_$*)): $$d/pan.out"; exit 1; \
	fi; \
	$(SPIN) -t -p -g -k admit.pml.trail $(MODEL_BUG_$*) $(MODEL_SRC) > trail.txt 2>&1; \
	line=$$(sed -n 's/.*admit\.pml:\([0-9]*\), Error: assertion violated.*/\1/p' trail.txt | head -1); \
	if [ -z "$$line" ] || ! sed -n "$${line}p" $(MODEL_SRC) | grep -q '$(MODEL_PROP_$*)'; then \
		echo "model bug $*: spin found a violation, but not of $(MODEL_PROP_$*): $$d/trail.txt"; \
		grep -m1 'Error' trail.txt; exit 1; \
	fi; \
	awk '/^ *[0-9]+:[ \t]+proc +[0-9]+ \(/ && /\]$$/ && !/monitor|:init:/ { \
		match($$0, /proc +[0-9]+ \([a-z]+/); who = substr($$0, RSTART, RLENGTH); \
		sub(/proc +/, "", who); sub(/ \(/, ":", who); \
		match($$0, /\[.*\]$$/); st = substr($$0, RSTART + 1, RLENGTH - 2); \
		if (who == last) { buf = buf "; " st } \
		else { flush(); buf = st; last = who } } \
		function flush(  n, k, a, out) { n = split(buf, a, "; "); out = ""; \
			for (k = 1; k <= n; k++) if (a[k] ~ /^(st\[|L\[.*\]\.n =|slots =|gate =|w?kicked(\[.*\])? =|qlen =|tmo = 1|cnl = 1|r = [A-MO-Z]|drained =|\(\(gate==0\)\))|L\[i\]\.n==0/) \
				out = out (out == "" ? "" : "; ") a[k]; \
			if (out != "") printf "%-9s %s\n", last, out } \
		END { flush() }' trail.txt > steps.txt; \
	printf 'model bug %-20s found: %s violated (admit.pml:%s) after %s steps; %s\n' \
		'$*' '$(MODEL_PROP_$*)' "$$line" \
		"$$(sed -n 's/.*trail ends after \([0-9]*\) steps.*/\1/p' trail.txt)" \
		"$$d/steps.txt"

model-clean:
	rm -rf $(MODEL_DIR)
