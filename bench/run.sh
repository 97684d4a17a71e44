#!/bin/sh
# bench/run.sh BINDIR [OUTDIR [bench options...]] - the body of make bench.
#
# Runs every workload with its defaults (5 interleaved repetitions), tees
# everything to OUTDIR/bench.txt, writes OUTDIR/*.csv, plots PNGs when
# gnuplot is installed, and ends with the goals table and the wall time.
set -u
bindir=${1:-build/bench}
out=${2:-bench/results}
[ $# -ge 2 ] && shift 2 || shift $#
start=$(date +%s)
mkdir -p "$out"
rm -f "$out"/*.csv "$out"/*.png
log=$out/bench.txt
status=0

{
	echo "cpool bench, $(date -u '+%Y-%m-%d %H:%M UTC') on $(uname -n): $(nproc) CPUs," \
		"$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)," \
		"Linux $(uname -r)"
	[ -x /usr/bin/memcached ] && echo "memcached: $(/usr/bin/memcached -V 2>/dev/null)"
} | tee "$log"

for b in acquire_release request scarce pool_size detect idle_cpu upstream redis tls pq; do
	[ -x "$bindir/bench_$b" ] || continue # an adapter not built here
	echo | tee -a "$log"
	echo "######## bench_$b" | tee -a "$log"
	t0=$(date +%s)
	{ "$bindir/bench_$b" -o "$out" "$@"; echo $? > "$out/.rc"; } | tee -a "$log"
	rc=$(cat "$out/.rc" 2>/dev/null || echo 1)
	rm -f "$out/.rc"
	if [ $rc -ne 0 ]; then
		echo "bench_$b failed (exit $rc)" | tee -a "$log"
		status=1
		[ $rc -eq 2 ] && exit 2 # refused (sanitizer build) or usage
	fi
	echo "(bench_$b: $(( $(date +%s) - t0 )) s)" | tee -a "$log"
done

# Path length, when valgrind is there (BENCH_CALLGRIND=0 skips it).
if [ "${BENCH_CALLGRIND:-1}" != 0 ] && command -v valgrind >/dev/null 2>&1; then
	echo | tee -a "$log"
	echo "######## bench-callgrind" | tee -a "$log"
	t0=$(date +%s)
	BENCH_RESULTS=$out sh bench/callgrind.sh "$bindir" | tee -a "$log"
	echo "(bench-callgrind: $(( $(date +%s) - t0 )) s)" | tee -a "$log"
fi

# Plots: throughput against threads, client CPU per op per pool.
if command -v gnuplot >/dev/null 2>&1 && [ -s "$out/acquire_release.csv" ]; then
	tmp=$(mktemp -d /tmp/cpool-plot.XXXXXX)
	pools=$(awk -F, 'NR > 1 && $2 != "dedicated" && $2 != "recv_peek" && !s[$2]++ { printf "%s ", $2 }' \
		"$out/acquire_release.csv")
	for p in $pools; do
		awk -F, -v p="$p" 'NR > 1 && $2 == p { print $3, $4 }' \
			"$out/acquire_release.csv" > "$tmp/ar_$p.dat"
	done
	req=$(ls "$out"/request_*.csv 2>/dev/null | grep -v _reps | head -1)
	[ -n "$req" ] && awk -F, 'NR > 1 && $3 == 1 { print $2, $5 }' "$req" > "$tmp/req.dat"
	cat > "$tmp/plot.gp" <<-EOF
		set terminal pngcairo size 900,560 noenhanced
		set output "$out/acquire_release_threads.png"
		set title "acquire + release: aggregate ops/s against threads ($(nproc) CPUs)"
		set xlabel "threads"
		set ylabel "ops/s (log)"
		set logscale y
		set logscale x 2
		set key outside right
		set grid
		plot for [p in "$pools"] sprintf("$tmp/ar_%s.dat", p) using 1:2 with linespoints lw 2 title p
	EOF
	if [ -s "$tmp/req.dat" ]; then
		cat >> "$tmp/plot.gp" <<-EOF
			set output "$out/request_cpu_per_op.png"
			set title "acquire + get miss + release: client CPU per op (client and server pinned to one CPU, 1 thread)"
			unset logscale
			set xlabel ""
			set ylabel "client CPU ns per op"
			set style fill solid 0.6
			set boxwidth 0.6
			set yrange [0:*]
			set xtics rotate by -30
			unset key
			plot "$tmp/req.dat" using 0:2:xtic(1) with boxes, "" using 0:2:(sprintf("%.0f", \$2)) with labels offset 0,1
		EOF
	fi
	gnuplot "$tmp/plot.gp" 2>&1 | tee -a "$log"
	rm -rf "$tmp"
	echo "plots: $(ls "$out"/*.png 2>/dev/null | tr '\n' ' ')" | tee -a "$log"
else
	echo "plots: skipped (gnuplot not installed)" | tee -a "$log"
fi

{
	echo
	echo "######## goals (measured on this machine, peers in the same run)"
	printf '%-44s %10s %10s  %s\n' goal value target met
	grep '^GOAL ' "$log" | sed 's/^GOAL //' | awk '{
		for (i = 1; i <= 4; i++) { split($i, kv, "="); f[kv[1]] = substr($i, length(kv[1]) + 2) }
		printf "%-44s %10s %10s  %s\n", f["name"], f["value"], f["target"], f["met"]
	}'
	echo "results: $out/*.csv, full log $log"
	echo "make bench wall time: $(( $(date +%s) - start )) s"
} | tee -a "$log.goals"
cat "$log.goals" >> "$log"
rm -f "$log.goals"
exit $status
