/* SPDX-License-Identifier: MIT */
/*
 * bench_acquire_release: acquire + release only, no I/O, at 1, 2, 4 and 8
 * threads (-t). Every pool holds as many connections as the most threads,
 * all open and idle, so nobody waits for a connection: this is the cost of
 * the pool itself. At 1 thread a bare recv(MSG_PEEK) runs alongside, the
 * yardstick for the checkout probe's cost.
 */
#include "bench.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* recv_peek runs at 1 thread only. */
static const struct peer_ops *const pools[] = {
	&peer_cpool, &peer_cpool_bypass, &peer_apr,	  &peer_memcached,
	&peer_mutex, &peer_dedicated,	 &peer_recv_peek,
};
#define NPOOLS (sizeof(pools) / sizeof(pools[0]))

static struct bench_entry res[BENCH_MAX_LIST][NPOOLS];
static unsigned nres[BENCH_MAX_LIST];

/* Index of @threads in the -t list, or -1. */
static int
tindex(const struct bench_opts *o, unsigned threads)
{
	unsigned i;

	for (i = 0; i < o->nthreads; i++)
		if (o->threads[i] == threads)
			return (int)i;
	return -1;
}

static const struct bench_entry *
entry(const struct bench_opts *o, unsigned threads, const char *label)
{
	int ti = tindex(o, threads);

	return ti < 0 ? NULL : bench_find(res[ti], nres[ti], label);
}

static double
ratio_of_medians(const struct bench_entry *a, const struct bench_entry *b)
{
	if (!a || !b)
		return NAN;
	return bench_median_of(a, BENCH_F_OPS) /
	       bench_median_of(b, BENCH_F_OPS);
}

static void
print_scaling(const struct bench_opts *o)
{
	const struct bench_entry *base, *x;
	unsigned i, k;

	printf("\n== acquire+release: aggregate ops/s at N threads over the "
	       "same pool's 1-thread rate (medians) ==\n%-16s",
	       "pool");
	for (k = 0; k < o->nthreads; k++)
		printf(" %7s%-2u", "t=", o->threads[k]);
	printf("\n");
	for (i = 0; i < nres[0]; i++) {
		base = &res[0][i];
		if (!strcmp(base->label, "recv_peek"))
			continue;
		printf("%-16s", base->label);
		for (k = 0; k < o->nthreads; k++) {
			x = bench_find(res[k], nres[k], base->label);
			printf(" %9.2f", ratio_of_medians(x, base));
		}
		printf("\n");
	}
}

/* The probe's extra time per op over one bare recv(MSG_PEEK), per rep. */
static double
probe_cost_ratio(const struct bench_entry *cp, const struct bench_entry *by,
		 const struct bench_entry *pk)
{
	double v[BENCH_MAX_REPS], a, b, c;
	unsigned r, n = 0;

	for (r = 0; r < cp->nrep && r < by->nrep && r < pk->nrep; r++) {
		a = bench_field(&cp->rep[r], BENCH_F_NS_PER_OP);
		b = bench_field(&by->rep[r], BENCH_F_NS_PER_OP);
		c = bench_field(&pk->rep[r], BENCH_F_NS_PER_OP);
		if (!isnan(a) && !isnan(b) && c > 0)
			v[n++] = (a - b) / c;
	}
	printf("\nprobe cost at 1 thread: cpool %.1f ns/op - cpool_bypass "
	       "%.1f ns/op = %.1f ns; bare recv(MSG_PEEK) %.1f ns\n",
	       bench_median_of(cp, BENCH_F_NS_PER_OP),
	       bench_median_of(by, BENCH_F_NS_PER_OP),
	       bench_median_of(cp, BENCH_F_NS_PER_OP) -
		       bench_median_of(by, BENCH_F_NS_PER_OP),
	       bench_median_of(pk, BENCH_F_NS_PER_OP));
	return bench_median(v, n);
}

static void
goals(const struct bench_opts *o)
{
	const struct bench_entry *by2 = entry(o, 2, "cpool_bypass");
	const struct bench_entry *cp2 = entry(o, 2, "cpool");
	const struct bench_entry *x;

	printf("\n");
	x = entry(o, 2, "apr_reslist");
	if (by2 && x)
		bench_goal(
			"ar_2t_vs_apr_reslist",
			bench_ratio(by2, x, BENCH_F_OPS), ">=", 5,
			"acquire+release 2 threads, cpool_bypass/apr_reslist "
			"ops/s");
	if (cp2 && x)
		printf("(info: probe on, cpool/apr_reslist = %.2f)\n",
		       bench_ratio(cp2, x, BENCH_F_OPS));
	x = entry(o, 2, "mutex");
	if (by2 && x)
		bench_goal("ar_2t_vs_mutex", bench_ratio(by2, x, BENCH_F_OPS),
			   ">=", 3,
			   "acquire+release 2 threads, cpool_bypass/mutex "
			   "ops/s");
	if (cp2 && x)
		printf("(info: probe on, cpool/mutex = %.2f)\n",
		       bench_ratio(cp2, x, BENCH_F_OPS));
	if (by2)
		bench_goal("ar_2t_over_1t",
			   ratio_of_medians(by2, entry(o, 1, "cpool_bypass")),
			   ">=", 1.6,
			   "cpool_bypass aggregate ops/s, 2 threads over 1");
	if (cp2)
		printf("(info: probe on, cpool 2 threads over 1 = %.2f)\n",
		       ratio_of_medians(cp2, entry(o, 1, "cpool")));
	if (entry(o, 1, "cpool") && entry(o, 1, "cpool_bypass") &&
	    entry(o, 1, "recv_peek"))
		bench_goal("probe_cost_vs_recv_peek",
			   probe_cost_ratio(entry(o, 1, "cpool"),
					    entry(o, 1, "cpool_bypass"),
					    entry(o, 1, "recv_peek")),
			   "<=", 1.1,
			   "(cpool - cpool_bypass) ns/op over one bare "
			   "recv(MSG_PEEK), 1 thread");
}

int
main(int argc, char **argv)
{
	struct bench_server srv;
	struct bench_opts o;
	struct bench_env env;
	void *inst[NPOOLS];
	const struct peer_ops *ops[NPOOLS];
	unsigned i, k, n, maxt = 0;
	int err;

	bench_opts_default(&o);
	o.nthreads = 4;
	o.threads[0] = 1;
	o.threads[1] = 2;
	o.threads[2] = 4;
	o.threads[3] = 8;
	o.cpu_note = true;
	bench_init(argc, argv, &o, NULL);
	for (k = 0; k < o.nthreads; k++)
		if (o.threads[k] > maxt)
			maxt = o.threads[k];
	err = bench_server_start(&srv, o.server, o.cpu, 1024);
	if (err)
		bench_die("cannot start the upstream: %s", strerror(-err));
	bench_env_init(&env, &srv, BENCH_ACQUIRE_RELEASE);
	printf("bench_acquire_release: upstream %s on %s, every pool %u "
	       "connections, all idle; %u reps x %.2f s\n",
	       srv.memcached ? "memcached" : "echo server", env.addr, maxt,
	       o.reps, o.secs);
	n = bench_create_all(pools, NPOOLS, &env, maxt, ops, inst);
	bench_warm_up("acquire_release", ops, inst, n, &env, maxt, &o);
	for (k = 0; k < o.nthreads; k++) {
		nres[k] = 0;
		for (i = 0; i < n; i++) {
			if (ops[i] == &peer_recv_peek && o.threads[k] != 1)
				continue;
			bench_entry_init(&res[k][nres[k]++], ops[i], inst[i],
					 NULL);
		}
		bench_interleave("acquire_release", res[k], nres[k], &env,
				 o.threads[k], &o);
		bench_report("acquire_release", "acquire+release only", res[k],
			     nres[k], o.threads[k], &o);
	}
	print_scaling(&o);
	goals(&o);
	for (i = 0; i < n; i++)
		ops[i]->destroy(inst[i]);
	bench_server_stop(&srv);
	return 0;
}
