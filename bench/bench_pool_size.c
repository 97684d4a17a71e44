/* SPDX-License-Identifier: MIT */
/*
 * bench_pool_size: the cost of acquire + release against the number of idle
 * connections in the pool (-n, default 10, 1 000 and 10 000), cpool with the
 * probe on and bypassed, one thread (-t); and the pool's memory per idle
 * connection: cpool_memory_get() (jemalloc's statistics for cpool's own
 * arenas) after opening N idle connections minus before, over N.
 *
 * One phase per variant: all its sizes are open at once and interleaved
 * repetition by repetition, so each repetition gives a ratio size N /
 * smallest size on the same machine state. Each phase has a fresh memcached
 * with -c for all of them, and RLIMIT_NOFILE is raised (up to the hard
 * limit: 11 010 connections fit under the usual 20 000 or more).
 */
#include "bench.h"

#include <cpool.h>
#include <stdio.h>
#include <string.h>

#define NVARIANTS 2

static struct bench_entry res[BENCH_MAX_LIST * NVARIANTS];
static double mem[BENCH_MAX_LIST * NVARIANTS];
static unsigned size_of[BENCH_MAX_LIST * NVARIANTS];
static void *inst[BENCH_MAX_LIST * NVARIANTS];

/* Opens every size of variant @v, measures, closes them: one phase. */
static unsigned
run_variant(struct bench_opts *o, unsigned v, unsigned threads, unsigned n)
{
	static const char *const vname[NVARIANTS] = { "cpool", "cpool_bypass" };
	static const unsigned vbypass[NVARIANTS] = { 0, BENCH_BYPASS_MS };
	struct bench_server srv;
	struct bench_env env;
	unsigned s, i, first = n, total = 0;
	int err;

	for (s = 0; s < o->nsizes; s++)
		total += o->sizes[s];
	err = bench_raise_nofile(total + threads + 512);
	if (err)
		printf("warning: RLIMIT_NOFILE < %u (%s); the largest sizes "
		       "may fail\n",
		       total + threads + 512, strerror(-err));
	/* A fresh upstream per phase: no TIME_WAIT left on its port. */
	err = bench_server_start(&srv, o->server, o->cpu, total + 512);
	if (err)
		bench_die("cannot start the upstream: %s", strerror(-err));
	bench_env_init(&env, &srv, BENCH_ACQUIRE_RELEASE);
	if (v == 0)
		printf("bench_pool_size: acquire+release, %u thread%s, pools "
		       "of N idle connections to %s; %u reps x %.2f s; one "
		       "phase per variant, sizes interleaved\n",
		       threads, threads == 1 ? "" : "s",
		       srv.memcached ? "memcached" : "the echo server", o->reps,
		       o->secs);
	for (s = 0; s < o->nsizes; s++) {
		bench_progress(o, "pool_size opening %u connections for %s",
			       o->sizes[s], vname[v]);
		err = bench_cpool_create(&env, o->sizes[s], vbypass[v], &mem[n],
					 &inst[n]);
		if (err) {
			printf("%s with %u connections: setup failed (%s), "
			       "left out\n",
			       vname[v], o->sizes[s], strerror(-err));
			continue;
		}
		bench_entry_init(&res[n], v ? &peer_cpool_bypass : &peer_cpool,
				 inst[n], vname[v]);
		size_of[n++] = o->sizes[s];
	}
	bench_progress_end(o);
	if (n > first)
		bench_interleave("pool_size", &res[first], n - first, &env,
				 threads, o);
	for (i = first; i < n; i++) {
		bench_progress(o, "pool_size closing %u connections",
			       size_of[i]);
		peer_cpool.destroy(inst[i]);
	}
	bench_progress_end(o);
	bench_server_stop(&srv);
	return n;
}

int
main(int argc, char **argv)
{
	struct bench_entry row[NVARIANTS];
	struct bench_opts o;
	unsigned i, s, v, n = 0, cnt, threads;
	char bench[64], what[128], name[64];
	const struct bench_entry *base;
	double r;

	bench_opts_default(&o);
	o.nsizes = 3;
	o.sizes[0] = 10;
	o.sizes[1] = 1000;
	o.sizes[2] = 10000;
	o.cpu_note = true;
	bench_init(argc, argv, &o, " [-n size[,size...]]");
	threads = o.threads[0];
	for (v = 0; v < NVARIANTS; v++)
		n = run_variant(&o, v, threads, n);
	for (s = 0; s < o.nsizes; s++) {
		cnt = 0;
		for (i = 0; i < n; i++)
			if (size_of[i] == o.sizes[s])
				row[cnt++] = res[i];
		if (!cnt)
			continue;
		snprintf(bench, sizeof(bench), "pool_size_%u", o.sizes[s]);
		snprintf(what, sizeof(what),
			 "acquire+release with %u idle connections",
			 o.sizes[s]);
		bench_report(bench, what, row, cnt, threads, &o);
	}
	printf("\n== cost against pool size: ns per acquire+release, %u "
	       "thread%s (medians; ratio = median over reps of ns/op at N "
	       "over ns/op at the smallest size) ==\n",
	       threads, threads == 1 ? "" : "s");
	printf("%-14s %8s %10s %8s\n", "pool", "idle", "ns/op", "ratio");
	for (v = 0; v < NVARIANTS; v++) {
		bool goal = false;

		base = NULL;
		for (i = 0; i < n; i++) {
			if (res[i].ops !=
			    (v ? &peer_cpool_bypass : &peer_cpool))
				continue;
			if (!base)
				base = &res[i];
			r = bench_ratio(&res[i], base, BENCH_F_NS_PER_OP);
			printf("%-14s %8u %10.1f %8.2f\n", res[i].label,
			       size_of[i],
			       bench_median_of(&res[i], BENCH_F_NS_PER_OP), r);
			if (&res[i] == base ||
			    size_of[i] != o.sizes[o.nsizes - 1])
				continue;
			snprintf(name, sizeof(name), "pool_size_%s_%u_vs_%u",
				 res[i].label, size_of[i], size_of[base - res]);
			snprintf(what, sizeof(what),
				 "%s acquire+release ns/op, %u idle over %u",
				 res[i].label, size_of[i], size_of[base - res]);
			bench_goal(name, r, "<=", 1.1, what);
			goal = true;
		}
		if (!goal) {
			snprintf(name, sizeof(name), "pool_size_%s_%u_vs_%u",
				 v ? "cpool_bypass" : "cpool",
				 o.sizes[o.nsizes - 1], o.sizes[0]);
			bench_goal_na(name, "a size could not be set up",
				      "acquire+release ns/op, largest size "
				      "over smallest");
		}
	}
	printf("\n== memory per idle connection: cpool_memory_get() after "
	       "opening N idle connections minus before, over N ==\n");
	printf("%-14s %8s %14s\n", "pool", "idle", "bytes/conn");
	for (i = 0; i < n; i++) {
		printf("%-14s %8u %14.1f\n", res[i].label, size_of[i], mem[i]);
		printf("SUMMARY bench=memory pool=%s conns=%u "
		       "bytes_per_conn=%.1f\n",
		       res[i].label, size_of[i], mem[i]);
		bench_csv_row(
			&o, "memory.csv", "bench,pool,conns,bytes_per_conn",
			"memory,%s,%u,%.1f", res[i].label, size_of[i], mem[i]);
	}
	for (i = n; i-- > 0;) {
		if (res[i].ops == &peer_cpool &&
		    size_of[i] == o.sizes[o.nsizes - 1]) {
			snprintf(what, sizeof(what),
				 "cpool memory per idle connection at %u",
				 size_of[i]);
			bench_goal("memory_per_idle_conn", mem[i], "<=", 256,
				   what);
			break;
		}
	}
	return 0;
}
