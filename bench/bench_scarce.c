/* SPDX-License-Identifier: MIT */
/*
 * bench_scarce: a scarce pool, 2 connections (-n) shared by 8 and by 32
 * threads (-t), in two modes: acquire + release only, and acquire + one get
 * miss + release (client and memcached unpinned). Acquires often find the
 * pool empty and wait, so this measures how a pool hands a released
 * connection to a waiter: one waiter woken per release (cpool, the mutex
 * pool), every waiter at once (memcached_pool's broadcast), or strictly the
 * oldest waiter with no barging (fifo_handoff).
 *
 * Every acquire is also timed on its own (bench_loop.h's timed loop), into
 * a per-thread histogram, so beside each pool's throughput stand the p50,
 * p99 and maximum of its acquire waits: what a barging pool gains in
 * throughput it may pay in its tail. The two clock reads cost about 50 ns
 * per operation in every pool: as much as a whole uncontended acquire +
 * release of the fastest peers, so the acquire+release mode measures its
 * throughput (table, goals) in untimed runs and its waits in timed runs
 * after them; with a request (some 25 us) the timed runs give both.
 */
#include "bench.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#define P99_WAIT_GOAL_MS 5.0 /* cpool's p99 acquire wait: a few ms */

static const struct peer_ops *const pools[] = {
	&peer_cpool,	 &peer_cpool_bypass, &peer_apr,
	&peer_memcached, &peer_mutex,	     &peer_fifo,
};
#define NPOOLS (sizeof(pools) / sizeof(pools[0]))

static struct bench_entry res[NPOOLS];	/* timed runs */
static struct bench_entry tput[NPOOLS]; /* untimed runs, acquire+release */

/* GOAL <bench>_<goal>: @a's ops/s over @b's at least @target, if both ran. */
static void
goal_ops(const char *bench, const char *goal, const struct bench_entry *a,
	 const struct bench_entry *b, double target)
{
	char name[96], what[128];

	if (!a || !b)
		return;
	snprintf(name, sizeof(name), "%s_%s", bench, goal);
	snprintf(what, sizeof(what), "%s, %s/%s ops/s", bench, a->label,
		 b->label);
	bench_goal(name, bench_ratio(a, b, BENCH_F_OPS), ">=", target, what);
}

/*
 * The goals of one mode at @threads: throughput against the mutex pool and
 * memcached_pool, and cpool's p99 acquire wait. At 8 threads they keep
 * their names of before the 32-thread run; other counts add _t<threads>.
 */
static void
goals(const char *mode, const struct bench_entry *t, unsigned n,
      unsigned threads, unsigned conns)
{
	const struct bench_entry *cp, *by, *mx, *mc;
	char bench[64], name[96], what[128];

	if (threads == 8)
		snprintf(bench, sizeof(bench), "%s", mode);
	else
		snprintf(bench, sizeof(bench), "%s_t%u", mode, threads);
	cp = bench_find(t, n, "cpool");
	by = bench_find(t, n, "cpool_bypass");
	mx = bench_find(t, n, "mutex");
	mc = bench_find(t, n, "memcached_pool");
	printf("\n");
	goal_ops(bench, "vs_mutex", cp, mx, 1.0);
	goal_ops(bench, "bypass_vs_mutex", by, mx, 1.0);
	goal_ops(bench, "vs_memcached_pool", cp, mc, 1.5);
	goal_ops(bench, "bypass_vs_memcached_pool", by, mc, 1.5);
	cp = bench_find(res, n, "cpool");
	if (!cp)
		return;
	snprintf(name, sizeof(name), "%s_p99_wait_ms", bench);
	snprintf(what, sizeof(what),
		 "%s, cpool p99 acquire wait, ms, %u threads on %u conns", mode,
		 threads, conns);
	bench_goal(name, bench_median_of(cp, BENCH_F_WAIT_P99) / 1e6,
		   "<=", P99_WAIT_GOAL_MS, what);
}

/* The worst acquire wait of any repetition. */
static double
wait_max(const struct bench_entry *e)
{
	double m = NAN, v;
	unsigned r;

	for (r = 0; r < e->nrep; r++) {
		v = e->rep[r].wait_max_ns;
		if (!isnan(v) && (isnan(m) || v > m))
			m = v;
	}
	return m;
}

/*
 * The acquire-wait table of one mode at @threads: median ops/s of the
 * throughput runs @t (and of the timed runs, when @t is not them), medians
 * over repetitions of each pool's p50 and p99 wait, and the worst wait of
 * all; one SUMMARY line and one CSV row per pool.
 */
static void
report_wait(const char *mode, const char *what, const struct bench_entry *t,
	    unsigned n, unsigned threads, unsigned conns,
	    const struct bench_opts *o)
{
	static const char header[] = "bench,pool,threads,conns,ops_per_s,"
				     "timed_ops_per_s,p50_ns,p99_ns,max_ns";
	double ops[NPOOLS], tops[NPOOLS], p50[NPOOLS], p99[NPOOLS];
	double max[NPOOLS];
	char bench[64];
	unsigned i;

	snprintf(bench, sizeof(bench), "%s_wait", mode);
	for (i = 0; i < n; i++) {
		ops[i] = bench_median_of(&t[i], BENCH_F_OPS);
		tops[i] = bench_median_of(&res[i], BENCH_F_OPS);
		p50[i] = bench_median_of(&res[i], BENCH_F_WAIT_P50);
		p99[i] = bench_median_of(&res[i], BENCH_F_WAIT_P99);
		max[i] = wait_max(&res[i]);
	}
	printf("\n== scarce pool, %u threads on %u connections: ops/s, "
	       "p50/p99/max acquire wait (%s) ==\n",
	       threads, conns, what);
	printf("%-16s %12s", "pool", "ops/s");
	if (t != res)
		printf(" %12s", "timed ops/s");
	printf(" %11s %11s %11s\n", "p50 us", "p99 us", "max us");
	for (i = 0; i < n; i++) {
		printf("%-16s %12.0f", res[i].label, ops[i]);
		if (t != res)
			printf(" %12.0f", tops[i]);
		printf(" %11.2f %11.2f %11.1f\n", p50[i] / 1e3, p99[i] / 1e3,
		       max[i] / 1e3);
	}
	printf("(%seach acquire timed on its own, the clock's %llu ns "
	       "taken off; p50, p99: medians over %u reps; max: the worst of "
	       "all reps; buckets 3 %% wide)\n",
	       t != res ? "ops/s: untimed runs; timed ops/s and waits: timed "
			  "runs, "
			: "",
	       (unsigned long long)bench_clock_cost_ns(), res[0].nrep);
	for (i = 0; i < n; i++) {
		printf("SUMMARY bench=%s pool=%s threads=%u conns=%u "
		       "ops_per_s=%.0f timed_ops_per_s=%.0f p50_ns=%.0f "
		       "p99_ns=%.0f max_ns=%.0f\n",
		       bench, res[i].label, threads, conns, ops[i], tops[i],
		       p50[i], p99[i], max[i]);
		bench_csv_row(o, "scarce_wait.csv", header,
			      "%s,%s,%u,%u,%.0f,%.0f,%.0f,%.0f,%.0f", bench,
			      res[i].label, threads, conns, ops[i], tops[i],
			      p50[i], p99[i], max[i]);
	}
}

int
main(int argc, char **argv)
{
	static const char *const names[] = { "scarce", "scarce_request" };
	static const char *const titles[] = {
		"scarce pool, acquire+release",
		"scarce pool, acquire + get miss + release",
	};
	static const char *const whats[] = {
		"acquire+release",
		"acquire + get miss + release",
	};
	struct bench_server srv;
	struct bench_opts o;
	struct bench_env env[2], untimed;
	const struct bench_entry *t;
	void *inst[NPOOLS];
	const struct peer_ops *ops[NPOOLS];
	unsigned i, m, k, n, conns, threads;
	char list[128];
	size_t len = 0;
	int err;

	bench_opts_default(&o);
	o.threads[0] = 8;
	o.threads[1] = 32;
	o.nthreads = 2;
	o.sizes[0] = 2;
	o.nsizes = 1;
	bench_init(argc, argv, &o, " [-n connections]");
	conns = o.sizes[0];
	for (k = 0; k < o.nthreads && len < sizeof(list); k++)
		len += (size_t)snprintf(list + len, sizeof(list) - len, "%s%u",
					k ? " and " : "", o.threads[k]);
	err = bench_server_start(&srv, o.server, o.cpu, 1024);
	if (err)
		bench_die("cannot start the upstream: %s", strerror(-err));
	bench_env_init(&env[0], &srv, BENCH_ACQUIRE_RELEASE);
	bench_env_init(&env[1], &srv, BENCH_REQUEST_RESPONSE);
	untimed = env[0];
	env[0].time_acquire = env[1].time_acquire = true;
	printf("bench_scarce: %u connections per pool to %s on %s, shared by "
	       "%s threads; %u reps x %.2f s; acquire+release: untimed runs, "
	       "then timed; with a request: timed runs\n",
	       conns, srv.memcached ? "memcached" : "the echo server",
	       env[0].addr, list, o.reps, o.secs);
	n = bench_create_all(pools, NPOOLS, &env[0], conns, ops, inst);
	bench_warm_up("scarce", ops, inst, n, &env[1], o.threads[0], &o);
	for (m = 0; m < 2; m++) {
		for (k = 0; k < o.nthreads; k++) {
			threads = o.threads[k];
			t = res;
			if (m == 0) {
				for (i = 0; i < n; i++)
					bench_entry_init(&tput[i], ops[i],
							 inst[i], NULL);
				bench_interleave(names[m], tput, n, &untimed,
						 threads, &o);
				t = tput;
			}
			for (i = 0; i < n; i++)
				bench_entry_init(&res[i], ops[i], inst[i],
						 NULL);
			bench_interleave(names[m], res, n, &env[m], threads,
					 &o);
			bench_report(names[m], titles[m], t, n, threads, &o);
			report_wait(names[m], whats[m], t, n, threads, conns,
				    &o);
			goals(names[m], t, n, threads, conns);
		}
	}
	for (i = 0; i < n; i++)
		ops[i]->destroy(inst[i]);
	bench_server_stop(&srv);
	return 0;
}
