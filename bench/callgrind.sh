#!/bin/sh
# bench/callgrind.sh BINDIR - make bench-callgrind.
#
# Instructions per single-threaded acquire+release, counted by callgrind
# with --toggle-collect on the measured function (bench_callgrind.c), and
# syscalls per operation on the calling thread, counted by strace -c
# (N operations minus 0, so setup cancels out). Prints a table, a SUMMARY
# line per variant, the goal line, and cpool's hottest functions.
set -u
bindir=${1:-build/bench}
bin=$bindir/bench_callgrind
n=${CALLGRIND_OPS:-100000}
nsys=${STRACE_OPS:-20000}
out=${BENCH_RESULTS:-bench/results}
tmp=$(mktemp -d /tmp/cpool-callgrind.XXXXXX)
trap 'rm -rf "$tmp"' EXIT INT TERM

command -v valgrind >/dev/null 2>&1 || { echo "valgrind is not installed (make deps)"; exit 1; }
mkdir -p "$out"
"$bin" empty 1 >/dev/null || exit 1  # refuses sanitizer builds itself

instr() { # variant -> instructions per op
	valgrind --tool=callgrind --collect-atstart=no --toggle-collect="op_$1" \
		--callgrind-out-file="$tmp/cg.$1" "$bin" "$1" "$n" \
		>/dev/null 2>"$tmp/vg.$1" || { echo nan; return; }
	awk -v n="$n" '/^totals:/ { printf "%.1f", $2 / n; f = 1 }
		END { if (!f) print "nan" }' "$tmp/cg.$1"
}

syscalls() { # variant -> "total name=x,..." per op on the calling thread
	command -v strace >/dev/null 2>&1 || { echo "n/a (no strace)"; return; }
	strace -qq -c -o "$tmp/st0.$1" "$bin" "$1" 0 >/dev/null 2>&1
	strace -qq -c -o "$tmp/st1.$1" "$bin" "$1" "$nsys" >/dev/null 2>&1
	awk -v n="$nsys" '
		$NF == "total" || /^[-%]/ || NF < 4 { next }
		FNR == NR { base[$NF] = $4; next }
		{ d = ($4 - base[$NF]) / n; if (d >= 0.01) { t += d; s = s sprintf("%s%s=%.2f", s ? "," : "", $NF, d) } }
		END { printf "%.2f %s", t, s ? s : "-" }' "$tmp/st0.$1" "$tmp/st1.$1"
}

echo "== bench-callgrind: one thread, $n acquire+release per variant, instructions per op (callgrind, user space) =="
printf '%-16s %12s  %s\n' variant "instr/op" "syscalls/op (strace, calling thread)"
: > "$tmp/rows"
for v in empty cpool_bypass cpool_handle cpool mutex apr_reslist memcached_pool recv_peek; do
	[ -t 2 ] && printf '\r[bench] callgrind %s\033[K' "$v" >&2
	i=$(instr "$v")
	s=$(syscalls "$v")
	[ -t 2 ] && printf '\r\033[K' >&2
	printf '%-16s %12s  %s\n' "$v" "$i" "$s"
	echo "$v $i" >> "$tmp/rows"
	echo "SUMMARY bench=callgrind pool=$v threads=1 instructions_per_op=$i syscalls_per_op=${s%% *}" >> "$tmp/summary"
done
echo "(empty = the measured call itself; apr_reslist and memcached_pool go"
echo " through the bench's peer wrappers, a few instructions more; recv_peek"
echo " counts the libc wrapper only: the kernel's work is invisible here, see"
echo " the timed probe cost in bench_acquire_release)"
cat "$tmp/summary"
echo "bench,pool,threads,instructions_per_op" > "$out/callgrind.csv"
awk '{ printf "callgrind,%s,1,%s\n", $1, $2 }' "$tmp/rows" >> "$out/callgrind.csv"

awk '
	{ v[$1] = $2 }
	END {
		c = v["cpool_bypass"]; m = v["mutex"];
		if (c == "nan" || m == "nan" || m == 0) {
			print "GOAL name=path_length_vs_mutex value=n/a target=- met=NO what=\"callgrind failed\""
			exit
		}
		printf "GOAL name=path_length_vs_mutex value=%.3f target=<=1.00 met=%s what=\"instructions per acquire+release, cpool_bypass %s over mutex %s\"\n",
			c / m, c <= m ? "yes" : "NO", c, m
		h = v["cpool_handle"]
		if (h == "nan")
			print "GOAL name=handle_path_vs_mutex value=n/a target=- met=NO what=\"callgrind failed\""
		else
			printf "GOAL name=handle_path_vs_mutex value=%.3f target=<=1.00 met=%s what=\"instructions per acquire+release by handle (net of the harness), cpool_handle %s - empty %s over mutex %s - empty\"\n",
				(h - v["empty"]) / (m - v["empty"]), h <= m ? "yes" : "NO", h, v["empty"], m
		printf "(by name %s, by handle %s: the lookup costs %.1f)\n", c, h, c - h
		printf "(probe on adds %.1f user-space instructions per op: cpool %s - cpool_bypass %s)\n",
			v["cpool"] - c, v["cpool"], c
	}' "$tmp/rows"

if command -v callgrind_annotate >/dev/null 2>&1 && [ -s "$tmp/cg.cpool_bypass" ]; then
	echo
	echo "== cpool_bypass: instructions per op by function (self cost, top 15) =="
	callgrind_annotate --inclusive=no "$tmp/cg.cpool_bypass" 2>/dev/null |
		awk -v n="$n" '
			/^-+$/ { sep++; next }
			sep >= 4 && $1 ~ /^[0-9,]+$/ && NF >= 3 {
				x = $1; gsub(",", "", x)
				fn = $0; sub(/^ *[0-9,]+ +\([ 0-9.%]+\) +/, "", fn)
				printf "%8.1f  %s\n", x / n, fn
				if (++k == 15) exit
			}'
	echo "(valgrind has no rseq: cpool's CPU lookup (shard.h) takes its fallback,"
	echo " one sched_getcpu() reused for 64 calls; natively it reads rseq's cpu_id)"
fi
