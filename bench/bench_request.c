/* SPDX-License-Identifier: MIT */
/*
 * bench_request: acquire + one request/response + release, the path a
 * service runs. The request is a memcached get miss, the same bytes on the
 * wire for every pool, against a real memcached the bench starts on a free
 * loopback port, or against the bench's echo server when memcached is not
 * installed (-s chooses).
 *
 * Client and server are pinned to one CPU (-p, default 0): wall-clock
 * throughput of a loopback round trip across two vCPUs is bimodal, while
 * client CPU per operation (getrusage) is stable. The figure that matters
 * here is therefore cpu ns/op, and the ratio against "dedicated" (one
 * connection per thread, no pool) is the price of pooling.
 */
#include "bench.h"

#include <cpool.h>
#include <stdio.h>
#include <string.h>

static const struct peer_ops *const pools[] = {
	&peer_cpool, &peer_cpool_bypass, &peer_apr,	&peer_memcached,
	&peer_mutex, &peer_dedicated,	 &peer_connect,
};
#define NPOOLS (sizeof(pools) / sizeof(pools[0]))

static struct bench_entry res[BENCH_MAX_LIST][NPOOLS];

int
main(int argc, char **argv)
{
	const struct bench_entry *ded, *x;
	struct bench_server srv;
	struct bench_opts o;
	struct bench_env env;
	void *inst[NPOOLS];
	const struct peer_ops *ops[NPOOLS];
	char bench[64];
	unsigned i, k, n, maxt = 0;
	int err;

	bench_opts_default(&o);
	o.cpu = 0;
	o.secs = 1.0; /* round trips are slow: more of them per repetition */
	bench_init(argc, argv, &o, NULL);
	for (k = 0; k < o.nthreads; k++)
		if (o.threads[k] > maxt)
			maxt = o.threads[k];
	err = bench_pin_self(o.cpu);
	if (err)
		bench_die("cannot pin to CPU %d: %s", o.cpu, strerror(-err));
	err = bench_server_start(&srv, o.server, o.cpu, 1024);
	if (err)
		bench_die("cannot start the upstream: %s", strerror(-err));
	bench_env_init(&env, &srv, BENCH_REQUEST_RESPONSE);
	/* Workers stay on the client's CPU: their CPU is the client's. */
	env.cpool_flags = CPOOL_NO_PIN;
	snprintf(bench, sizeof(bench), "request_%s",
		 srv.memcached ? "memcached" : "echo");
	printf("bench_request: get miss against %s on %s, client and server "
	       "pinned to CPU %d; %u reps x %.2f s\n",
	       srv.memcached ? "memcached" : "the echo server", env.addr, o.cpu,
	       o.reps, o.secs);
	n = bench_create_all(pools, NPOOLS, &env, maxt, ops, inst);
	bench_warm_up(bench, ops, inst, n, &env, maxt, &o);
	for (k = 0; k < o.nthreads; k++) {
		for (i = 0; i < n; i++)
			bench_entry_init(&res[k][i], ops[i], inst[i], NULL);
		bench_interleave(bench, res[k], n, &env, o.threads[k], &o);
		bench_report(bench, "acquire + get miss + release", res[k], n,
			     o.threads[k], &o);
	}
	printf("\n");
	ded = bench_find(res[0], n, "dedicated");
	x = bench_find(res[0], n, "cpool_bypass");
	if (ded && x)
		bench_goal("request_cpu_bypass_vs_dedicated",
			   bench_ratio(x, ded, BENCH_F_CPU), "<=", 1.03,
			   "request path client CPU/op, cpool_bypass over "
			   "dedicated");
	x = bench_find(res[0], n, "cpool");
	if (ded && x)
		bench_goal("request_cpu_probe_vs_dedicated",
			   bench_ratio(x, ded, BENCH_F_CPU), "<=", 1.10,
			   "request path client CPU/op, cpool (probe on) over "
			   "dedicated");
	for (i = 0; i < n; i++)
		ops[i]->destroy(inst[i]);
	bench_server_stop(&srv);
	return 0;
}
