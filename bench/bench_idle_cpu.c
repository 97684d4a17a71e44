/* SPDX-License-Identifier: MIT */
/*
 * bench_idle_cpu: what a pool costs while nobody calls it, against the size
 * of its endpoint table, and how long cpool_destroy() takes.
 *
 * Variants: 1 endpoint with one idle connection; N endpoints (-n, default
 * 10 000) with one idle connection each; N endpoints and no connection.
 * Each repetition of a variant creates its pool (the default configuration:
 * one worker per online CPU), adds the endpoints, leases and releases one
 * connection to each, lets the workers settle (they arm fresh connections
 * a tick after their release), then sleeps D seconds (-d, default 2) between
 * two readings of the process's CPU time (CLOCK_PROCESS_CPUTIME_ID) and
 * context switches (getrusage): the main thread only sleeps, so what is
 * spent is the pool's workers'. Then it times cpool_destroy() of that pool.
 * Repetitions (-r, default 3) interleave the variants, the first rotating;
 * the report gives medians and the median of per-repetition ratios.
 *
 * Last, EMPTY_PAIRS pools with no endpoint are created and destroyed in
 * turn: the median and maximum time of cpool_create() and cpool_destroy().
 *
 * The upstream is the echo server in a child process, listening on one
 * port of every address but bound to the loopback device, so that the N
 * endpoints are N distinct addresses 127.0.x.y:port that all reach it.
 */
#include "bench.h"

#include <cpool.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define MAX_VARIANTS (1 + 2 * BENCH_MAX_LIST)
#define SETTLE_MS 500  /* after setup, before the window */
#define EMPTY_PAIRS 20 /* create/destroy pairs of an empty pool */
#define ADDR_BYTES 32
#define IDLE_RATIO_GOAL 2.0
#define DESTROY_GOAL_MS 1.0
#define IDLE_CSV                                                               \
	"bench,endpoints,conns,cpu_pct,wakeups_per_s,destroy_ms,setup_s"

struct variant {
	unsigned endpoints;
	bool conns; /* one idle connection per endpoint */
	char label[40];
	unsigned nrep;
	double cpu_pct[BENCH_MAX_REPS];	  /* of one CPU, over the window */
	double wakeups_s[BENCH_MAX_REPS]; /* context switches per second */
	double destroy_ms[BENCH_MAX_REPS];
	double setup_s[BENCH_MAX_REPS];
	unsigned idle[BENCH_MAX_REPS]; /* stats idle after the window */
};

static struct variant var[MAX_VARIANTS];
static char *addrs; /* ADDR_BYTES per endpoint */

static const char *
addr_of(unsigned i)
{
	return addrs + (size_t)i * ADDR_BYTES;
}

/* Endpoint i is 127.0.(i / 250).(1 + i % 250): 0 is 127.0.0.1. */
static void
addrs_init(unsigned n, uint16_t port)
{
	unsigned i;

	addrs = malloc((size_t)n * ADDR_BYTES);
	if (!addrs)
		bench_die("out of memory");
	for (i = 0; i < n; i++)
		snprintf(addrs + (size_t)i * ADDR_BYTES, ADDR_BYTES,
			 "127.0.%u.%u:%u", i / 250, 1 + i % 250, port);
}

static double
cpu_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static double
switches(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_nvcsw + (double)ru.ru_nivcsw;
}

static void
sleep_ns(uint64_t ns)
{
	struct timespec ts = { (time_t)(ns / 1000000000ull),
			       (long)(ns % 1000000000ull) };

	while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
		;
}

static void
idle_log(void *user_data, int level, const char *msg)
{
	if (level <= CPOOL_LOG_WARN)
		fprintf(stderr, "cpool: %s\n", msg);
}

/*
 * The pool of variant @v: its endpoints added and, with v->conns, one
 * connection to each opened and released (so idle). 0 or -errno, with the
 * pool destroyed.
 */
static int
pool_setup(const struct variant *v, struct cpool **out)
{
	struct cpool_config cfg;
	struct cpool_conn *c;
	struct cpool *pool;
	unsigned i;
	int err;

	cpool_config_init(&cfg);
	cfg.connect_timeout_ms = 5000;
	cfg.log_fn = idle_log;
	err = cpool_create(&cfg, &pool);
	if (err)
		return err;
	for (i = 0; i < v->endpoints; i++) {
		err = cpool_endpoint_add(pool, addr_of(i));
		if (err)
			goto fail;
		if (!v->conns)
			continue;
		err = cpool_acquire(pool, addr_of(i), &c);
		if (err)
			goto fail;
		cpool_release(c, 0);
	}
	*out = pool;
	return 0;
fail:
	fprintf(stderr, "bench: %s: endpoint %s: %s\n", v->label, addr_of(i),
		cpool_strerror(err));
	cpool_destroy(pool);
	return err;
}

/* One repetition of @v: setup, settle, the idle window, destroy. */
static void
run_variant(struct variant *v, double secs)
{
	struct cpool_stats st = { .size = sizeof(st) };
	double c0, c1, s0, s1;
	uint64_t t0, t1, t2;
	struct cpool *pool;
	unsigned r = v->nrep++;
	int err;

	v->cpu_pct[r] = v->wakeups_s[r] = v->destroy_ms[r] = NAN;
	v->setup_s[r] = NAN;
	v->idle[r] = 0;
	t0 = bench_now_ns();
	err = pool_setup(v, &pool);
	if (err)
		return;
	v->setup_s[r] = (double)(bench_now_ns() - t0) / 1e9;
	sleep_ns(SETTLE_MS * 1000000ull);
	s0 = switches();
	c0 = cpu_ns();
	t0 = bench_now_ns();
	sleep_ns((uint64_t)(secs * 1e9));
	t1 = bench_now_ns();
	c1 = cpu_ns();
	s1 = switches();
	if (!cpool_stats_get(pool, NULL, &st))
		v->idle[r] = st.idle;
	v->cpu_pct[r] = (c1 - c0) / (double)(t1 - t0) * 100;
	v->wakeups_s[r] = (s1 - s0) * 1e9 / (double)(t1 - t0);
	t1 = bench_now_ns();
	cpool_destroy(pool);
	t2 = bench_now_ns();
	v->destroy_ms[r] = (double)(t2 - t1) / 1e6;
}

static double
median_of(const double *x, unsigned n)
{
	double v[BENCH_MAX_REPS];
	unsigned i, k = 0;

	for (i = 0; i < n; i++)
		if (!isnan(x[i]))
			v[k++] = x[i];
	return bench_median(v, k);
}

/* The median over repetitions of a's CPU over b's, the same repetition. */
static double
cpu_ratio(const struct variant *a, const struct variant *b)
{
	double v[BENCH_MAX_REPS];
	unsigned r, k = 0;

	for (r = 0; r < a->nrep && r < b->nrep; r++)
		if (!isnan(a->cpu_pct[r]) && !isnan(b->cpu_pct[r]) &&
		    b->cpu_pct[r] > 0)
			v[k++] = a->cpu_pct[r] / b->cpu_pct[r];
	return bench_median(v, k);
}

static void
report(unsigned nv, double secs, const struct bench_opts *o)
{
	static const char header[] = IDLE_CSV, rheader[] = "rep," IDLE_CSV;
	const struct variant *base = &var[0], *v;
	char name[64], what[128], n_s[16];
	double cpu;
	unsigned i, r;

	printf("\n== idle pool: CPU of its workers over %.2f s with nobody "
	       "calling it, %u reps, medians ==\n",
	       secs, base->nrep);
	printf("%-28s %9s %10s %8s %11s %8s %8s\n", "pool", "cpu %",
	       "wakeups/s", "vs 1 ep", "destroy ms", "setup s", "idle");
	for (i = 0; i < nv; i++) {
		v = &var[i];
		printf("%-28s %9.3f %10.0f %8.2f %11.2f %8.2f %8u\n", v->label,
		       median_of(v->cpu_pct, v->nrep),
		       median_of(v->wakeups_s, v->nrep), cpu_ratio(v, base),
		       median_of(v->destroy_ms, v->nrep),
		       median_of(v->setup_s, v->nrep), v->idle[v->nrep - 1]);
	}
	printf("(cpu %%: process CPU time over wall time, %% of one CPU, the "
	       "main thread asleep; wakeups/s: context switches of all "
	       "threads; vs 1 ep: median over reps of the row's CPU over the "
	       "first row's; idle: idle connections after the window, last "
	       "rep)\n");
	for (i = 0; i < nv; i++) {
		v = &var[i];
		printf("SUMMARY bench=idle_cpu endpoints=%u conns=%u secs=%.2f "
		       "cpu_pct=%.4f wakeups_per_s=%.0f destroy_ms=%.3f "
		       "setup_s=%.3f\n",
		       v->endpoints, v->conns ? v->endpoints : 0, secs,
		       median_of(v->cpu_pct, v->nrep),
		       median_of(v->wakeups_s, v->nrep),
		       median_of(v->destroy_ms, v->nrep),
		       median_of(v->setup_s, v->nrep));
		bench_csv_row(o, "idle_cpu.csv", header,
			      "idle_cpu,%u,%u,%.4f,%.0f,%.3f,%.3f",
			      v->endpoints, v->conns ? v->endpoints : 0,
			      median_of(v->cpu_pct, v->nrep),
			      median_of(v->wakeups_s, v->nrep),
			      median_of(v->destroy_ms, v->nrep),
			      median_of(v->setup_s, v->nrep));
		for (r = 0; r < v->nrep; r++)
			bench_csv_row(o, "idle_cpu_reps.csv", rheader,
				      "%u,idle_cpu,%u,%u,%.4f,%.0f,%.3f,%.3f",
				      r + 1, v->endpoints,
				      v->conns ? v->endpoints : 0,
				      v->cpu_pct[r], v->wakeups_s[r],
				      v->destroy_ms[r], v->setup_s[r]);
	}
	printf("\n");
	for (i = 1; i < nv; i++) {
		v = &var[i];
		if (v->endpoints % 1000)
			snprintf(n_s, sizeof(n_s), "%u", v->endpoints);
		else
			snprintf(n_s, sizeof(n_s), "%uk", v->endpoints / 1000);
		snprintf(name, sizeof(name), "idle_cpu_%s%s_vs_1", n_s,
			 v->conns ? "" : "_noconn");
		snprintf(what, sizeof(what),
			 "idle pool CPU, %u endpoints%s over 1 endpoint with "
			 "1 conn",
			 v->endpoints, v->conns ? " with 1 conn each" : "");
		cpu = cpu_ratio(v, base);
		bench_goal(name, cpu, "<=", IDLE_RATIO_GOAL, what);
	}
}

static int
cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* EMPTY_PAIRS create/destroy pairs of a pool with no endpoint. */
static void
empty_pairs(void)
{
	double cr[EMPTY_PAIRS], de[EMPTY_PAIRS];
	struct cpool_config cfg;
	struct cpool *pool;
	uint64_t t0, t1, t2;
	unsigned i, n = 0;
	int err;

	cpool_config_init(&cfg);
	cfg.log_fn = idle_log;
	for (i = 0; i < EMPTY_PAIRS; i++) {
		t0 = bench_now_ns();
		err = cpool_create(&cfg, &pool);
		t1 = bench_now_ns();
		if (err) {
			printf("cpool_create: %s\n", cpool_strerror(err));
			break;
		}
		cpool_destroy(pool);
		t2 = bench_now_ns();
		cr[n] = (double)(t1 - t0) / 1e6;
		de[n++] = (double)(t2 - t1) / 1e6;
	}
	qsort(cr, n, sizeof(cr[0]), cmp_double);
	qsort(de, n, sizeof(de[0]), cmp_double);
	printf("\n== empty pool (no endpoint): %u create/destroy pairs ==\n",
	       n);
	printf("%-16s %10s %10s\n", "call", "median ms", "max ms");
	printf("%-16s %10.3f %10.3f\n", "cpool_create", bench_median(cr, n),
	       n ? cr[n - 1] : NAN);
	printf("%-16s %10.3f %10.3f\n", "cpool_destroy", bench_median(de, n),
	       n ? de[n - 1] : NAN);
	printf("SUMMARY bench=destroy_empty pairs=%u create_ms=%.3f "
	       "destroy_ms=%.3f destroy_max_ms=%.3f\n",
	       n, bench_median(cr, n), bench_median(de, n),
	       n ? de[n - 1] : NAN);
	printf("\n");
	bench_goal("destroy_empty_ms", bench_median(de, n),
		   "<=", DESTROY_GOAL_MS,
		   "cpool_destroy of a pool with no endpoint, ms (median)");
}

int
main(int argc, char **argv)
{
	struct bench_server srv;
	struct bench_opts o;
	unsigned i, k, r, nv = 0, maxn = 1;
	uint16_t port = 0;
	int lfd, err;

	bench_opts_default(&o);
	o.secs = 2;
	o.reps = 3;
	o.sizes[0] = 10000;
	o.nsizes = 1;
	bench_init(argc, argv, &o, " [-n endpoints[,endpoints...]]");
	var[nv++] = (struct variant){ .endpoints = 1, .conns = true };
	for (i = 0; i < o.nsizes; i++) {
		var[nv++] = (struct variant){ .endpoints = o.sizes[i],
					      .conns = true };
		var[nv++] = (struct variant){ .endpoints = o.sizes[i] };
		if (o.sizes[i] > maxn)
			maxn = o.sizes[i];
	}
	for (i = 0; i < nv; i++)
		snprintf(var[i].label, sizeof(var[i].label),
			 "%u endpoint%s, %s", var[i].endpoints,
			 var[i].endpoints == 1 ? "" : "s",
			 !var[i].conns		 ? "no conn"
			 : var[i].endpoints == 1 ? "1 conn"
						 : "1 conn each");
	if (maxn > 250 * 255)
		bench_die("-n: at most %u endpoints", 250 * 255);
	/* Our connections, the echo server's (it inherits the limit). */
	err = bench_raise_nofile(maxn + 1024);
	if (err)
		printf("warning: RLIMIT_NOFILE < %u (%s); the largest pools "
		       "may fail\n",
		       maxn + 1024, strerror(-err));
	lfd = bench_listen_loopback_any(&port);
	if (lfd < 0)
		bench_die("cannot listen on the loopback device: %s",
			  strerror(-lfd));
	err = bench_echo_start(&srv, lfd, port, o.cpu);
	if (err)
		bench_die("cannot start the echo server: %s", strerror(-err));
	addrs_init(maxn, port);
	printf("bench_idle_cpu: default pools (%ld workers), endpoints "
	       "127.0.x.y:%u of the echo server; %u reps x %.2f s idle after "
	       "%u ms to settle, variants interleaved\n",
	       sysconf(_SC_NPROCESSORS_ONLN), port, o.reps, o.secs, SETTLE_MS);
	for (r = 0; r < o.reps; r++) {
		for (k = 0; k < nv; k++) {
			i = (r + k) % nv;
			bench_progress(&o, "idle_cpu rep %u/%u %s", r + 1,
				       o.reps, var[i].label);
			run_variant(&var[i], o.secs);
		}
	}
	bench_progress_end(&o);
	report(nv, o.secs, &o);
	empty_pairs();
	bench_server_stop(&srv);
	free(addrs);
	return 0;
}
