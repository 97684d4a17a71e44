/* SPDX-License-Identifier: MIT */
/*
 * bench_upstream: upstream sets and acquire by handle.
 *
 *  1. acquire+release (probe bypassed, no I/O) on a three-address name
 *     (dnsmasq started here: set.bench -> 127.0.0.2, .3, .4, each a
 *     listener on one port) against the single numeric address
 *     127.0.0.2:port, by handle (cpool_acquire_ep) and the mutex stack,
 *     at 1 and 2 threads, interleaved repetitions, medians;
 *  2. the time from a DNS change (one address dropped from the record,
 *     dnsmasq answering the new set) to the last connection to the
 *     vanished address being closed, over trials, against the bound the
 *     configuration gives: dns_max_ttl_ms (the refresh period) plus a
 *     worker tick and a query's round trip.
 *
 * The listeners never accept: a connection completes into the accept
 * queue (SOCKETS.md S11), which is all acquire+release needs.
 */
#include "bench.h"

#include <arpa/inet.h>
#include <cpool.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "../tests/util/dnssrv.h"

#define NAME "set.bench"
#define TRIALS 7
#define REFRESH_MS 1000
/* The bound: the refresh period, a worker tick, a query's round trip. */
#define BOUND_MS (REFRESH_MS + 3 + 100)

/* The handle peer: cpool_acquire_ep() on a handle taken at create. */
struct phandle {
	void *inner; /* a peer_cpool_bypass instance */
	struct cpool_endpoint *ep;
};

static inline int
peer_acquire(void *inst, void *tls, struct bench_lease *l)
{
	struct phandle *p = inst;
	struct cpool_conn *c;
	int err = cpool_acquire_ep(p->ep, &c);

	if (err)
		return err;
	l->h = c;
	return 0;
}

static inline int
peer_fd(void *inst, void *tls, struct bench_lease *l)
{
	return cpool_conn_fd(l->h);
}

static inline void
peer_release(void *inst, void *tls, struct bench_lease *l, bool close)
{
	cpool_release(l->h, close ? CPOOL_RELEASE_CLOSE : 0);
}

#define PEER_NO_THREAD_STATE
#include "bench_loop.h"

static int
phandle_create(const struct bench_env *env, unsigned conns, void **out)
{
	struct phandle *p = calloc(1, sizeof(*p));
	int err;

	if (!p)
		return -ENOMEM;
	err = bench_cpool_create(env, conns, BENCH_BYPASS_MS, NULL, &p->inner);
	if (!err)
		err = cpool_endpoint_get(bench_cpool_of(p->inner), env->addr,
					 &p->ep);
	if (err) {
		if (p->inner)
			peer_cpool_bypass.destroy(p->inner);
		free(p);
		return err;
	}
	*out = p;
	return 0;
}

static void
phandle_destroy(void *inst)
{
	struct phandle *p = inst;

	cpool_endpoint_put(p->ep);
	peer_cpool_bypass.destroy(p->inner);
	free(p);
}

static const struct peer_ops peer_handle =
	PEER_OPS("cpool_handle", phandle_create, phandle_destroy);

/* A listener on @ip:@port (0: any) that never accepts; its fd. */
static int
listener(const char *ip, int *port)
{
	struct sockaddr_in sin = { .sin_family = AF_INET,
				   .sin_port = htons((uint16_t)*port) };
	socklen_t len = sizeof(sin);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;

	if (fd < 0 || inet_pton(AF_INET, ip, &sin.sin_addr) != 1)
		bench_die("listener %s: %s", ip, strerror(errno));
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&sin, sizeof(sin)) ||
	    listen(fd, 4096) ||
	    getsockname(fd, (struct sockaddr *)&sin, &len))
		bench_die("listener %s:%d: %s", ip, *port, strerror(errno));
	*port = ntohs(sin.sin_port);
	return fd;
}

static uint64_t
ms_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void
nap_ms(unsigned ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000 };

	nanosleep(&ts, NULL);
}

/* Open connections to @ip:@port in @addr's set; -1 when it is not there. */
static int
open_to(struct cpool *pool, const char *addr, const char *ip, int port)
{
	struct cpool_addr_stats as[8];
	char want[64];
	unsigned n = 0, i;

	snprintf(want, sizeof(want), "%s:%d", ip, port);
	as[0].size = sizeof(as[0]);
	if (cpool_stats_addresses(pool, addr, as, 8, &n))
		return -1;
	for (i = 0; i < n && i < 8; i++)
		if (!strcmp(as[i].address, want))
			return (int)as[i].open;
	return -1;
}

static int
cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* Workload 2: DNS change to the vanished address's last close. */
static void
drain_time(struct dnssrv *d, int port, const struct bench_opts *o)
{
	static const char *const all[] = { "127.0.0.2", "127.0.0.3",
					   "127.0.0.4" };
	const char *some[2];
	struct cpool_config cfg;
	struct cpool_conn *c[12];
	struct cpool *pool;
	uint64_t ms[TRIALS], t0, t;
	char addr[64];
	unsigned k, i, j;
	int err;

	cpool_config_init(&cfg);
	cfg.dns_servers = d->servers;
	cfg.dns_min_ttl_ms = REFRESH_MS;
	cfg.dns_max_ttl_ms = REFRESH_MS;
	cfg.idle_timeout_ms = 0;
	if ((err = cpool_create(&cfg, &pool)))
		bench_die("cpool_create: %s", cpool_strerror(err));
	snprintf(addr, sizeof(addr), NAME ":%d", port);
	if ((err = cpool_endpoint_add(pool, addr)))
		bench_die("add %s: %s", addr, cpool_strerror(err));
	printf("\n== dns_change_to_drained: %s refreshed every %d ms "
	       "(dns_min_ttl_ms = dns_max_ttl_ms), 12 connections over its "
	       "addresses, one address dropped per trial ==\n",
	       addr, REFRESH_MS);
	for (k = 0; k < TRIALS; k++) {
		const char *gone = all[k % 3];

		/* Twelve connections, spread by the balancer, then idle. */
		for (i = 0; i < 12; i++)
			if ((err = cpool_acquire(pool, addr, &c[i])))
				bench_die("acquire: %s", cpool_strerror(err));
		for (i = 0; i < 12; i++)
			cpool_release(c[i], 0);
		if (open_to(pool, addr, gone, port) <= 0)
			bench_die("trial %u: no connection to %s", k, gone);
		for (i = j = 0; i < 3; i++)
			if (all[i] != gone)
				some[j++] = all[i];
		if ((err = dnssrv_set(d, NAME, some, 2)))
			bench_die("dnssrv_set: %s", strerror(-err));
		t0 = ms_now();
		while (open_to(pool, addr, gone, port) > 0) {
			if (ms_now() - t0 > 20000)
				bench_die("trial %u: %s never drained", k, gone);
			nap_ms(1);
		}
		ms[k] = ms_now() - t0;
		printf("trial %u: %s drained %llu ms after dnsmasq answered "
		       "without it\n",
		       k, gone, (unsigned long long)ms[k]);
		bench_csv_row(o, "upstream_drain.csv", "trial,address,ms",
			      "%u,%s,%llu", k, gone, (unsigned long long)ms[k]);
		/* Back to three, seen by the pool, before the next trial. */
		if ((err = dnssrv_set(d, NAME, all, 3)))
			bench_die("dnssrv_set: %s", strerror(-err));
		t = ms_now();
		while (open_to(pool, addr, gone, port) < 0) {
			if (ms_now() - t > 20000)
				bench_die("trial %u: %s never came back", k,
					  gone);
			nap_ms(1);
		}
	}
	cpool_destroy(pool);
	qsort(ms, TRIALS, sizeof(ms[0]), cmp_u64);
	printf("median %llu ms, max %llu ms, bound %d ms (refresh %d + tick "
	       "3 + query 100)\n",
	       (unsigned long long)ms[TRIALS / 2],
	       (unsigned long long)ms[TRIALS - 1], BOUND_MS, REFRESH_MS);
	printf("SUMMARY bench=upstream workload=dns_change_to_drained "
	       "median_ms=%llu max_ms=%llu bound_ms=%d\n",
	       (unsigned long long)ms[TRIALS / 2],
	       (unsigned long long)ms[TRIALS - 1], BOUND_MS);
	bench_goal("dns_change_to_drained", (double)ms[TRIALS / 2], "<=",
		   BOUND_MS,
		   "ms from a DNS change to the vanished address's last "
		   "connection closed, median of trials");
}

int
main(int argc, char **argv)
{
	static const char *const three[] = { "127.0.0.2", "127.0.0.3",
					     "127.0.0.4" };
	struct bench_entry res[2][4];
	struct bench_env env1, env3;
	struct bench_opts o;
	struct dnssrv d;
	const char *why = NULL;
	void *inst[4];
	int port = 0, lfd[3], err;
	unsigned k, i;

	bench_opts_default(&o);
	o.nthreads = 2;
	o.threads[0] = 1;
	o.threads[1] = 2;
	bench_init(argc, argv, &o, NULL);
	if (!dnssrv_available(&why)) {
		printf("bench_upstream: skipped: %s\n", why);
		return 0;
	}
	for (i = 0; i < 3; i++)
		lfd[i] = listener(three[i], &port);
	if ((err = dnssrv_start(&d, 1)))
		bench_die("dnsmasq: %s", strerror(-err));
	if ((err = dnssrv_set(&d, NAME, three, 3)))
		bench_die("dnssrv_set: %s", strerror(-err));

	memset(&env1, 0, sizeof(env1));
	env1.sin.sin_family = AF_INET;
	env1.sin.sin_port = htons((uint16_t)port);
	inet_pton(AF_INET, "127.0.0.2", &env1.sin.sin_addr);
	snprintf(env1.addr, sizeof(env1.addr), "127.0.0.2:%d", port);
	env1.mode = BENCH_ACQUIRE_RELEASE;
	env1.acquire_timeout_ms = 1000;
	env3 = env1;
	snprintf(env3.addr, sizeof(env3.addr), NAME ":%d", port);
	env3.dns_servers = d.servers;

	printf("bench_upstream: %s -> 127.0.0.2, .3, .4 (dnsmasq %s) "
	       "against %s; probe bypassed; %u reps x %.2f s\n",
	       env3.addr, d.servers, env1.addr, o.reps, o.secs);
	if ((err = peer_cpool_bypass.create(&env1, 2, &inst[0])) ||
	    (err = peer_cpool_bypass.create(&env3, 2, &inst[1])) ||
	    (err = peer_handle.create(&env1, 2, &inst[2])) ||
	    (err = peer_mutex.create(&env1, 2, &inst[3])))
		bench_die("setup: %s", strerror(-err));
	for (k = 0; k < o.nthreads; k++) {
		bench_entry_init(&res[k][0], &peer_cpool_bypass, inst[0],
				 "single_address");
		bench_entry_init(&res[k][1], &peer_cpool_bypass, inst[1],
				 "three_address_name");
		bench_entry_init(&res[k][2], &peer_handle, inst[2],
				 "cpool_handle");
		bench_entry_init(&res[k][3], &peer_mutex, inst[3], "mutex");
		bench_interleave("upstream", res[k], 4, &env1, o.threads[k],
				 &o);
		bench_report("upstream", "acquire+release, probe bypassed",
			     res[k], 4, o.threads[k], &o);
		printf("ns/op at %u thread%s: three-address name / single "
		       "address %.3f; handle / by name %.3f; handle / mutex "
		       "%.3f\n",
		       o.threads[k], o.threads[k] > 1 ? "s" : "",
		       bench_ratio(&res[k][1], &res[k][0], BENCH_F_NS_PER_OP),
		       bench_ratio(&res[k][2], &res[k][0], BENCH_F_NS_PER_OP),
		       bench_ratio(&res[k][2], &res[k][3], BENCH_F_NS_PER_OP));
	}
	for (k = 0; k < o.nthreads; k++) {
		char name[64];

		snprintf(name, sizeof(name), "three_address_name_vs_single_%ut",
			 o.threads[k]);
		bench_goal(name,
			   bench_ratio(&res[k][1], &res[k][0],
				       BENCH_F_NS_PER_OP),
			   "<=", 1.10,
			   "ns/op acquire+release, probe bypassed, median of "
			   "per-rep ratios");
	}
	peer_cpool_bypass.destroy(inst[0]);
	peer_cpool_bypass.destroy(inst[1]);
	peer_handle.destroy(inst[2]);
	peer_mutex.destroy(inst[3]);

	drain_time(&d, port, &o);
	dnssrv_free(&d);
	for (i = 0; i < 3; i++)
		close(lfd[i]);
	return 0;
}
