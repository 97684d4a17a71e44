/* SPDX-License-Identifier: MIT */
/*
 * bench_upstream: upstream sets (issue 10) and acquire by handle.
 *
 * A dnsmasq started here (tests/util/dnssrv.c) answers NAME with 127.0.0.2,
 * .3 and .4; each has a listener on the same port P, whose thread accepts
 * and holds every connection until the end.
 *
 *  1. acquire+release only, probe bypassed (BENCH_BYPASS_MS), at 1 and 2
 *     threads (-t): the three-address name NAME:P against the single
 *     numeric address 127.0.0.2:P, the handle path (cpool_acquire_ep,
 *     peer_cpool_handle) against the by-name path and the mutex stack, all
 *     in one interleaved set; ns/op medians and medians of per-rep ratios.
 *     The name by handle (name_handle) runs too: it tells the set's own
 *     cost from the lookup of the longer name.
 *  2. the time from a DNS change to the last connection to the address
 *     that left being closed: dns_min_ttl_ms = dns_max_ttl_ms = 1000,
 *     dnsmasq --local-ttl 1, idle connections over {.2,.3,.4}, the record
 *     changed to the other two plus 127.0.0.5 (the vanished address
 *     alternates), timed from dnssrv_set()'s return (dnsmasq answers the
 *     new set) until cpool_stats_addresses() shows no connection open to
 *     it, polled every 1 ms. Trial k makes the change k/TRIALS of the
 *     refresh period after a refresh, so the trials sample its phase. The
 *     bound is the refresh period, one worker tick and the query's round
 *     trip: BOUND_MS.
 *
 * When dnsmasq is not installed the bench says so and exits 0.
 */
#include "bench.h"

#include "../tests/util/dnssrv.h"

#include <arpa/inet.h>
#include <cpool.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define NAME "set.bench.test"
#define NLISTEN 4 /* 127.0.0.2 .. 127.0.0.5 */
#define REFRESH_MS 1000
#define TICK_MS 3
#define SLACK_MS 97 /* the query's round trip and scheduling */
#define BOUND_MS (REFRESH_MS + TICK_MS + SLACK_MS) /* 1100 */
#define TRIALS 7
#define LEASES 12
#define MAX_HELD 8192

static const char *const ips[NLISTEN] = { "127.0.0.2", "127.0.0.3",
					  "127.0.0.4", "127.0.0.5" };

/* The listeners and the thread that accepts and holds. */
struct holder {
	int lfd[NLISTEN];
	int stop[2]; /* pipe: written at the end */
	int held[MAX_HELD];
	unsigned nheld;
	uint16_t port;
	pthread_t thr;
};

static int
listen_on(const char *ip, uint16_t *port)
{
	struct sockaddr_in sin = { .sin_family = AF_INET };
	socklen_t len = sizeof(sin);
	int fd, one = 1;

	sin.sin_port = htons(*port);
	if (inet_pton(AF_INET, ip, &sin.sin_addr) != 1)
		return -EINVAL;
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&sin, sizeof(sin)) ||
	    listen(fd, 1024) ||
	    getsockname(fd, (struct sockaddr *)&sin, &len)) {
		int err = -errno;

		close(fd);
		return err;
	}
	*port = ntohs(sin.sin_port);
	return fd;
}

static void *
holder_thread(void *arg)
{
	struct holder *h = arg;
	struct pollfd pfd[NLISTEN + 1];
	unsigned i;
	int fd;

	for (i = 0; i < NLISTEN; i++)
		pfd[i] = (struct pollfd){ .fd = h->lfd[i], .events = POLLIN };
	pfd[NLISTEN] = (struct pollfd){ .fd = h->stop[0], .events = POLLIN };
	for (;;) {
		if (poll(pfd, NLISTEN + 1, -1) < 0) {
			if (errno == EINTR)
				continue;
			bench_die("listener poll: %s", strerror(errno));
		}
		if (pfd[NLISTEN].revents)
			return NULL;
		for (i = 0; i < NLISTEN; i++) {
			if (!pfd[i].revents)
				continue;
			fd = accept4(h->lfd[i], NULL, NULL, SOCK_CLOEXEC);
			if (fd < 0)
				continue;
			if (h->nheld < MAX_HELD)
				h->held[h->nheld++] = fd;
			else
				close(fd); /* more than any workload opens */
		}
	}
}

/* One port P free on all of 127.0.0.2 .. .5; the holder thread started. */
static void
holder_start(struct holder *h)
{
	unsigned attempt, i;
	int fd = 0;

	memset(h, 0, sizeof(*h));
	for (attempt = 0; attempt < 20; attempt++) {
		h->port = 0;
		for (i = 0; i < NLISTEN; i++) {
			fd = listen_on(ips[i], &h->port);
			if (fd < 0)
				break;
			h->lfd[i] = fd;
		}
		if (i == NLISTEN)
			break;
		if (fd != -EADDRINUSE)
			bench_die("listen on %s: %s", ips[i], strerror(-fd));
		while (i-- > 0)
			close(h->lfd[i]); /* P taken on that one: another P */
	}
	if (attempt == 20)
		bench_die("no port free on 127.0.0.2 .. .5");
	if (pipe2(h->stop, O_CLOEXEC))
		bench_die("pipe: %s", strerror(errno));
	if ((errno = pthread_create(&h->thr, NULL, holder_thread, h)))
		bench_die("pthread_create: %s", strerror(errno));
}

static void
holder_stop(struct holder *h)
{
	unsigned i;

	if (write(h->stop[1], "x", 1) != 1)
		bench_die("listener stop: %s", strerror(errno));
	pthread_join(h->thr, NULL);
	for (i = 0; i < h->nheld; i++)
		close(h->held[i]);
	for (i = 0; i < NLISTEN; i++)
		close(h->lfd[i]);
	close(h->stop[0]);
	close(h->stop[1]);
}

/* Median of per-rep ratios of ns/op, a over b. */
static double
ns_ratio(const struct bench_entry *a, const struct bench_entry *b)
{
	return bench_ratio(a, b, BENCH_F_NS_PER_OP);
}

/* Workload 1: ns/op of the four, interleaved, at each -t. */
static double
ns_per_op(const struct bench_opts *o, struct holder *h, struct dnssrv *d)
{
	enum { SINGLE, NAMED, HANDLE, NAMED_HANDLE, MUTEX, N };
	static const char *const labels[N] = {
		"single_address", "three_address_name", "cpool_handle",
		"name_handle",	  "mutex",
	};
	const struct peer_ops *ops[N] = {
		&peer_cpool_bypass, &peer_cpool_bypass, &peer_cpool_handle,
		&peer_cpool_handle, &peer_mutex,
	};
	static struct bench_entry res[BENCH_MAX_LIST][N];
	struct bench_env env1, env3;
	const struct bench_env *env[N];
	void *inst[N];
	double worst = NAN, r;
	unsigned i, k, maxt = 0;
	int err;

	for (k = 0; k < o->nthreads; k++)
		if (o->threads[k] > maxt)
			maxt = o->threads[k];
	memset(&env1, 0, sizeof(env1));
	env1.mode = BENCH_ACQUIRE_RELEASE;
	env1.acquire_timeout_ms = 1000;
	env1.sin.sin_family = AF_INET;
	env1.sin.sin_port = htons(h->port);
	inet_pton(AF_INET, ips[0], &env1.sin.sin_addr);
	snprintf(env1.addr, sizeof(env1.addr), "%s:%u", ips[0], h->port);
	env3 = env1;
	snprintf(env3.addr, sizeof(env3.addr), NAME ":%u", h->port);
	env3.dns_servers = d->servers;
	for (i = 0; i < N; i++)
		env[i] = i == NAMED || i == NAMED_HANDLE ? &env3 : &env1;

	printf("bench_upstream: %s -> %s, %s, %s (dnsmasq on %s) against %s; "
	       "probe bypassed (%u ms); every pool %u connections, all idle; "
	       "%u reps x %.2f s\n",
	       env3.addr, ips[0], ips[1], ips[2], d->servers, env1.addr,
	       BENCH_BYPASS_MS, maxt, o->reps, o->secs);
	for (i = 0; i < N; i++) {
		err = ops[i]->create(env[i], maxt, &inst[i]);
		if (err)
			bench_die("%s setup: %s", labels[i], strerror(-err));
	}
	bench_warm_up("upstream", ops, inst, N, &env1, maxt, o);
	for (k = 0; k < o->nthreads; k++) {
		for (i = 0; i < N; i++)
			bench_entry_init(&res[k][i], ops[i], inst[i],
					 labels[i]);
		bench_interleave("upstream", res[k], N, &env1, o->threads[k],
				 o);
		bench_report("upstream",
			     "acquire+release only, probe bypassed", res[k], N,
			     o->threads[k], o);
		r = ns_ratio(&res[k][NAMED], &res[k][SINGLE]);
		printf("ns/op at %u thread%s (median of per-rep ratios): "
		       "three_address_name/single_address %.3f, "
		       "handle/by_name %.3f, handle/mutex %.3f\n",
		       o->threads[k], o->threads[k] == 1 ? "" : "s", r,
		       ns_ratio(&res[k][HANDLE], &res[k][SINGLE]),
		       ns_ratio(&res[k][HANDLE], &res[k][MUTEX]));
		printf("SUMMARY bench=upstream workload=ratios threads=%u "
		       "name_vs_single=%.3f handle_vs_by_name=%.3f "
		       "handle_vs_mutex=%.3f\n",
		       o->threads[k], r,
		       ns_ratio(&res[k][HANDLE], &res[k][SINGLE]),
		       ns_ratio(&res[k][HANDLE], &res[k][MUTEX]));
		bench_csv_row(o, "upstream_ratios.csv",
			      "threads,name_vs_single,handle_vs_by_name,"
			      "handle_vs_mutex",
			      "%u,%.4f,%.4f,%.4f", o->threads[k], r,
			      ns_ratio(&res[k][HANDLE], &res[k][SINGLE]),
			      ns_ratio(&res[k][HANDLE], &res[k][MUTEX]));
		printf("(info: by handle, three_address_name/single_address "
		       "%.3f: the set's cost without the lookup by name)\n",
		       ns_ratio(&res[k][NAMED_HANDLE], &res[k][HANDLE]));
		if (!isnan(r) && (isnan(worst) || r > worst))
			worst = r;
	}
	for (i = 0; i < N; i++)
		ops[i]->destroy(inst[i]);
	return worst;
}

static uint64_t
now_ms(void)
{
	return bench_now_ns() / 1000000;
}

static void
nap_ms(unsigned ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000 };

	nanosleep(&ts, NULL);
}

/* Connections open to @ip in @addr's set; -1 when @ip is not in it. */
static int
open_to(struct cpool *pool, const char *addr, const char *ip, uint16_t port)
{
	struct cpool_addr_stats as[8];
	char want[64];
	unsigned n = 0, i;

	snprintf(want, sizeof(want), "%s:%u", ip, port);
	as[0].size = sizeof(as[0]);
	if (cpool_stats_addresses(pool, addr, as, 8, &n))
		return -1;
	for (i = 0; i < n && i < 8; i++)
		if (!strcmp(as[i].address, want))
			return (int)as[i].open;
	return -1;
}

static uint64_t
drained(struct cpool *pool)
{
	struct cpool_stats st = { .size = sizeof(st) };

	if (cpool_stats_get(pool, NULL, &st))
		return 0;
	return cpool_stats_closed(&st, CPOOL_CLOSE_DRAINED);
}

static int
cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* Until @ip is in (@want_in) or out of @addr's set, up to 20 s. */
static void
wait_set(struct cpool *pool, const char *addr, const char *ip, uint16_t port,
	 bool want_in)
{
	uint64_t t0 = now_ms();

	while ((open_to(pool, addr, ip, port) >= 0) != want_in) {
		if (now_ms() - t0 > 20000)
			bench_die("%s never %s %s's set", ip,
				  want_in ? "entered" : "left", addr);
		nap_ms(1);
	}
}

/* Workload 2: DNS change to the vanished address's last close. */
static double
drain_time(const struct bench_opts *o, struct holder *h, struct dnssrv *d)
{
	struct cpool_conn *c[LEASES];
	const char *set[3];
	struct cpool_config cfg;
	struct cpool *pool;
	double ms[TRIALS], sorted[TRIALS];
	uint64_t d0, ts;
	double set_ms;
	char addr[64];
	unsigned k, i, n, held;
	const char *gone;
	int err, before;

	cpool_config_init(&cfg);
	cfg.dns_servers = d->servers;
	cfg.dns_min_ttl_ms = REFRESH_MS;
	cfg.dns_max_ttl_ms = REFRESH_MS;
	cfg.idle_timeout_ms = 0;
	cfg.max_conns_per_endpoint = 64;
	cfg.connect_timeout_ms = 5000;
	err = cpool_create(&cfg, &pool);
	if (err)
		bench_die("cpool_create: %s", cpool_strerror(err));
	snprintf(addr, sizeof(addr), NAME ":%u", h->port);
	err = cpool_endpoint_add(pool, addr);
	if (err)
		bench_die("cpool_endpoint_add(%s): %s", addr,
			  cpool_strerror(err));
	printf("\n== dns_change_to_drained: %s refreshed every %u ms "
	       "(dns_min_ttl_ms = dns_max_ttl_ms, dnsmasq --local-ttl %u), "
	       "%u leases at once then idle over {.2,.3,.4}; one of them "
	       "replaced by .5 per trial, timed from dnssrv_set()'s return "
	       "to its last close (polled every 1 ms); bound %u ms = "
	       "refresh %u + worker tick %u + DNS round trip slack %u ==\n",
	       addr, REFRESH_MS, d->ttl_s, LEASES, BOUND_MS, REFRESH_MS,
	       TICK_MS, SLACK_MS);
	for (k = 0; k < TRIALS; k++) {
		gone = ips[k % 3];
		/* {.2,.3,.4} again, and the pool has seen it. */
		err = dnssrv_set(d, NAME, ips, 3);
		if (err)
			bench_die("dnssrv_set: %s", strerror(-err));
		wait_set(pool, addr, gone, h->port, true);
		wait_set(pool, addr, ips[3], h->port, false);
		/* LEASES at once (spread by the balancer), then idle. */
		for (held = 0; held < LEASES; held++) {
			err = cpool_acquire(pool, addr, &c[held]);
			if (err)
				bench_die("acquire: %s", cpool_strerror(err));
		}
		for (i = 0; i < held; i++)
			cpool_release(c[i], 0);
		before = open_to(pool, addr, gone, h->port);
		for (i = n = 0; i < NLISTEN; i++)
			if (ips[i] != gone)
				set[n++] = ips[i];
		/*
		 * The trial started just after a refresh saw the old set
		 * again; offset the change by k/TRIALS of the period so that
		 * the trials sample the refresh phase, not one point of it.
		 */
		nap_ms(k * REFRESH_MS / TRIALS);
		d0 = drained(pool);
		ts = bench_now_ns();
		err = dnssrv_set(d, NAME, set, 3);
		if (err)
			bench_die("dnssrv_set: %s", strerror(-err));
		set_ms = (double)(bench_now_ns() - ts) / 1e6;
		{
			uint64_t t0 = bench_now_ns();

			while (open_to(pool, addr, gone, h->port) > 0) {
				if (bench_now_ns() - t0 > 20000000000ull)
					bench_die("%s never drained", gone);
				nap_ms(1);
			}
			ms[k] = (double)(bench_now_ns() - t0) / 1e6;
		}
		printf("trial %u: %s (%d of %u idle connections) closed "
		       "%.1f ms after dnsmasq answered without it; %llu "
		       "closed DRAINED; change made %u ms after the last "
		       "refresh, dnssrv_set() %.1f ms\n",
		       k, gone, before, LEASES, ms[k],
		       (unsigned long long)(drained(pool) - d0),
		       k * REFRESH_MS / TRIALS, set_ms);
		bench_csv_row(o, "upstream_drain.csv",
			      "trial,address,conns_before,offset_ms,set_ms,ms,"
			      "drained_closes",
			      "%u,%s,%d,%u,%.1f,%.1f,%llu", k, gone, before,
			      k * REFRESH_MS / TRIALS, set_ms, ms[k],
			      (unsigned long long)(drained(pool) - d0));
	}
	cpool_destroy(pool);
	memcpy(sorted, ms, sizeof(ms));
	qsort(sorted, TRIALS, sizeof(sorted[0]), cmp_double);
	printf("dns_change_to_drained over %u trials: median %.1f ms, "
	       "max %.1f ms, bound %u ms\n",
	       TRIALS, sorted[TRIALS / 2], sorted[TRIALS - 1], BOUND_MS);
	printf("SUMMARY bench=upstream workload=dns_change_to_drained "
	       "trials=%u median_ms=%.1f max_ms=%.1f bound_ms=%u\n",
	       TRIALS, sorted[TRIALS / 2], sorted[TRIALS - 1], BOUND_MS);
	return sorted[TRIALS / 2];
}

int
main(int argc, char **argv)
{
	struct bench_opts o;
	struct holder h;
	struct dnssrv d;
	const char *why = NULL;
	double name_ratio, drain_ms;
	int err;

	bench_opts_default(&o);
	o.nthreads = 2;
	o.threads[0] = 1;
	o.threads[1] = 2;
	o.cpu_note = true;
	bench_init(argc, argv, &o, NULL);
	if (!dnssrv_available(&why)) {
		printf("bench_upstream: skipped: dnsmasq not available (%s)\n",
		       why ? why : "not found");
		return 0;
	}
	holder_start(&h);
	err = dnssrv_start(&d, REFRESH_MS / 1000);
	if (err)
		bench_die("dnsmasq: %s", strerror(-err));
	err = dnssrv_set(&d, NAME, ips, 3);
	if (err)
		bench_die("dnssrv_set: %s", strerror(-err));

	name_ratio = ns_per_op(&o, &h, &d);
	drain_ms = drain_time(&o, &h, &d);

	printf("\n");
	bench_goal("three_address_name_vs_single", name_ratio, "<=", 1.10,
		   "acquire+release ns/op, probe bypassed, three-address name "
		   "over one numeric address, the worse of 1 and 2 threads "
		   "(median of per-rep ratios)");
	bench_goal("dns_change_to_drained", drain_ms, "<=", BOUND_MS,
		   "ms from a DNS change (dnsmasq answering) to the vanished "
		   "address's last connection closed, median of 7 trials; "
		   "bound dns_max_ttl_ms 1000 + tick 3 + slack 97");
	dnssrv_free(&d);
	holder_stop(&h);
	return 0;
}
