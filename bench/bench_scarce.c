/* SPDX-License-Identifier: MIT */
/*
 * bench_scarce: a scarce pool, 2 connections (-n) shared by 8 threads (-t),
 * in two modes: acquire + release only, and acquire + one get miss +
 * release (client and memcached unpinned). Acquires often find the pool
 * empty and wait, so this measures how a pool hands a released connection
 * to a waiter: one waiter woken per release (cpool, the mutex pool) or
 * every waiter at once (memcached_pool's broadcast).
 */
#include "bench.h"

#include <stdio.h>
#include <string.h>

static const struct peer_ops *const pools[] = {
	&peer_cpool,	 &peer_cpool_bypass, &peer_apr,
	&peer_memcached, &peer_mutex,
};
#define NPOOLS (sizeof(pools) / sizeof(pools[0]))

static struct bench_entry res[NPOOLS];

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

static void
goals(const char *bench, unsigned n)
{
	const struct bench_entry *cp, *by, *mx, *mc;

	cp = bench_find(res, n, "cpool");
	by = bench_find(res, n, "cpool_bypass");
	mx = bench_find(res, n, "mutex");
	mc = bench_find(res, n, "memcached_pool");
	printf("\n");
	goal_ops(bench, "vs_mutex", cp, mx, 1.0);
	goal_ops(bench, "bypass_vs_mutex", by, mx, 1.0);
	goal_ops(bench, "vs_memcached_pool", cp, mc, 1.5);
	goal_ops(bench, "bypass_vs_memcached_pool", by, mc, 1.5);
}

int
main(int argc, char **argv)
{
	static const char *const names[] = { "scarce", "scarce_request" };
	static const char *const titles[] = {
		"scarce pool, acquire+release",
		"scarce pool, acquire + get miss + release",
	};
	struct bench_server srv;
	struct bench_opts o;
	struct bench_env env[2];
	void *inst[NPOOLS];
	const struct peer_ops *ops[NPOOLS];
	unsigned i, m, n, conns, threads;
	int err;

	bench_opts_default(&o);
	o.threads[0] = 8;
	o.sizes[0] = 2;
	o.nsizes = 1;
	bench_init(argc, argv, &o, " [-n connections]");
	conns = o.sizes[0];
	threads = o.threads[0];
	err = bench_server_start(&srv, o.server, o.cpu, 1024);
	if (err)
		bench_die("cannot start the upstream: %s", strerror(-err));
	bench_env_init(&env[0], &srv, BENCH_ACQUIRE_RELEASE);
	bench_env_init(&env[1], &srv, BENCH_REQUEST_RESPONSE);
	printf("bench_scarce: %u connections per pool to %s on %s, shared by "
	       "%u threads; %u reps x %.2f s\n",
	       conns, srv.memcached ? "memcached" : "the echo server",
	       env[0].addr, threads, o.reps, o.secs);
	n = bench_create_all(pools, NPOOLS, &env[0], conns, ops, inst);
	bench_warm_up("scarce", ops, inst, n, &env[1], threads, &o);
	for (m = 0; m < 2; m++) {
		for (i = 0; i < n; i++)
			bench_entry_init(&res[i], ops[i], inst[i], NULL);
		bench_interleave(names[m], res, n, &env[m], threads, &o);
		bench_report(names[m], titles[m], res, n, threads, &o);
		goals(names[m], n);
	}
	for (i = 0; i < n; i++)
		ops[i]->destroy(inst[i]);
	bench_server_stop(&srv);
	return 0;
}
