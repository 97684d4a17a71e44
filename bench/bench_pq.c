/* SPDX-License-Identifier: MIT */
/*
 * bench_pq: SELECT 1 on one thread, three ways, against a PostgreSQL the
 * bench starts itself (tests/util/pgsrv.c, built in here: it needs only
 * libc and libpq):
 *
 *   pooled     cpool_acquire + PQexec + cpool_release through libcpool_pq
 *   bypass     the same with probe_bypass_ms = 1000 (no checkout probe):
 *              what pooling costs without its recv(MSG_PEEK), as info
 *   dedicated  PQexec on one PGconn the thread keeps (the limit)
 *   connect    PQconnectdbParams + PQexec + PQfinish per request
 *
 * The figure is client CPU per request (getrusage RUSAGE_SELF: the pool's
 * worker threads included, the server excluded), in interleaved
 * repetitions (-r, each -d seconds per variant), medians reported. The
 * goal: pooled within 5 % of dedicated. Needs root (PostgreSQL runs as the
 * postgres user); without it the bench says why and exits 0.
 */
#include "bench.h"

#include <cpool.h>
#include <cpool_pq.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "../tests/util/pgsrv.c"

enum { V_POOLED, V_BYPASS, V_DEDICATED, V_CONNECT, NV };
static const char *const vname[NV] = { "pooled", "bypass", "dedicated",
				       "connect" };

static struct pgsrv srv;
static struct cpool *pool, *pool_bypass;
static PGconn *ded;
static const char *const kw[] = { "user", "dbname", "host", "hostaddr",
				  "port", NULL };
static const char *vals[] = { PGSRV_USER, PGSRV_DB, "127.0.0.1",
			      "127.0.0.1", NULL, NULL };

static double
cpu_ns(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e9 +
	       (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1e3;
}

static int
select1(PGconn *conn)
{
	PGresult *res = PQexec(conn, "SELECT 1");
	int ok = PQresultStatus(res) == PGRES_TUPLES_OK &&
		 !strcmp(PQgetvalue(res, 0, 0), "1");

	PQclear(res);
	return ok ? 0 : -EIO;
}

static int
one_request(int v)
{
	struct cpool_conn *c;
	PGconn *conn;
	int err;

	switch (v) {
	case V_POOLED:
	case V_BYPASS:
		err = cpool_acquire(v == V_POOLED ? pool : pool_bypass,
				    srv.address, &c);
		if (err)
			return err;
		err = select1(cpool_pq_conn(c));
		cpool_release(c, err ? CPOOL_RELEASE_CLOSE : 0);
		return err;
	case V_DEDICATED:
		return select1(ded);
	default:
		conn = PQconnectdbParams(kw, vals, 0);
		err = PQstatus(conn) == CONNECTION_OK ? select1(conn) : -EIO;
		PQfinish(conn);
		return err;
	}
}

/* One timed run: client CPU ns per request; errors counted. */
static double
run(int v, double secs, uint64_t *errors, uint64_t *ops)
{
	uint64_t end = bench_now_ns() + (uint64_t)(secs * 1e9), n = 0;
	double c0 = cpu_ns();

	do {
		for (int i = 0; i < 16; i++, n++)
			if (one_request(v))
				(*errors)++;
	} while (bench_now_ns() < end);
	*ops = n;
	return (cpu_ns() - c0) / (double)n;
}

int
main(int argc, char **argv)
{
	double res[NV][BENCH_MAX_REPS], med[NV];
	uint64_t errors[NV] = { 0 }, ops;
	struct cpool_pq_config pc;
	struct cpool_config cfg;
	struct cpool_pq *pq;
	struct bench_opts o;
	const char *const app_kw[] = { "user", "dbname", NULL };
	const char *const app_val[] = { PGSRV_USER, PGSRV_DB, NULL };
	char why[128], port[16];
	int err;

	bench_opts_default(&o);
	bench_init(argc, argv, &o, NULL);
	if (!pgsrv_available(why, sizeof(why))) {
		printf("bench_pq: skipped: %s\n", why);
		bench_goal_na("pq_select1_pooled_vs_dedicated", why,
			      "SELECT 1 client CPU/op, pooled over dedicated");
		return 0;
	}
	if (o.cpu >= 0 && bench_pin_self(o.cpu))
		bench_die("cannot pin to CPU %d", o.cpu);
	err = pgsrv_start(&srv, NULL);
	if (err)
		bench_die("cannot start PostgreSQL: %s", strerror(-err));
	snprintf(port, sizeof(port), "%d", srv.port);
	vals[4] = port;

	cpool_pq_config_init(&pc);
	pc.keywords = app_kw;
	pc.values = app_val;
	if (cpool_pq_new(&pc, &pq))
		bench_die("cpool_pq_new failed");
	cpool_config_init(&cfg);
	cfg.workers = 1;
	cfg.max_conns_per_endpoint = 1;
	cfg.flags = CPOOL_NO_PIN;
	cpool_pq_install(pq, &cfg);
	if (cpool_create(&cfg, &pool) ||
	    cpool_endpoint_add(pool, srv.address))
		bench_die("cannot create the pool");
	cfg.probe_bypass_ms = 1000; /* the floor: no recv(MSG_PEEK) probe */
	if (cpool_create(&cfg, &pool_bypass) ||
	    cpool_endpoint_add(pool_bypass, srv.address))
		bench_die("cannot create the bypass pool");
	ded = PQconnectdbParams(kw, vals, 0);
	if (PQstatus(ded) != CONNECTION_OK)
		bench_die("dedicated connect: %s", PQerrorMessage(ded));

	printf("bench_pq: SELECT 1 against PostgreSQL (%s), 1 thread, "
	       "%u interleaved reps x %.2f s per variant; client CPU per "
	       "request (process: pool workers included)\n",
	       srv.address, o.reps, o.secs);
	for (int v = 0; v < NV; v++) /* warm up */
		run(v, o.secs / 4, &errors[v], &ops);
	memset(errors, 0, sizeof(errors));
	for (unsigned r = 0; r < o.reps; r++) {
		for (int i = 0; i < NV; i++) {
			int v = (int)((i + r) % NV); /* rotate the order */

			res[v][r] = run(v, o.secs, &errors[v], &ops);
			if (!o.quiet)
				printf("  rep %u %-9s %9.0f ns cpu/req "
				       "(%llu reqs)\n",
				       r, vname[v], res[v][r],
				       (unsigned long long)ops);
		}
	}
	printf("\n%-10s %14s %8s\n", "variant", "cpu ns/req", "errors");
	for (int v = 0; v < NV; v++) {
		med[v] = bench_median(res[v], o.reps);
		printf("%-10s %14.0f %8llu\n", vname[v], med[v],
		       (unsigned long long)errors[v]);
	}
	printf("\n");
	printf("INFO name=pq_select1_connect_vs_dedicated value=%.2f "
	       "what=\"connect per request over dedicated, client CPU\"\n",
	       med[V_CONNECT] / med[V_DEDICATED]);
	printf("INFO name=pq_select1_bypass_vs_dedicated value=%.3f "
	       "what=\"pooled with probe_bypass_ms (no checkout probe) over "
	       "dedicated, client CPU\"\n",
	       med[V_BYPASS] / med[V_DEDICATED]);
	printf("INFO name=pq_select1_connect_vs_pooled value=%.2f "
	       "what=\"connect per request over pooled, client CPU\"\n",
	       med[V_CONNECT] / med[V_POOLED]);
	if (errors[V_POOLED] || errors[V_BYPASS] || errors[V_DEDICATED])
		bench_goal_na("pq_select1_pooled_vs_dedicated",
			      "requests failed",
			      "SELECT 1 client CPU/op, pooled over dedicated");
	else
		bench_goal("pq_select1_pooled_vs_dedicated",
			   med[V_POOLED] / med[V_DEDICATED], "<=", 1.05,
			   "SELECT 1 client CPU/op, pooled over dedicated");
	PQfinish(ded);
	cpool_destroy(pool);
	cpool_destroy(pool_bypass);
	cpool_pq_free(pq);
	pgsrv_destroy(&srv);
	return 0;
}
