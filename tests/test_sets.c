/* SPDX-License-Identifier: MIT */
/*
 * Upstream sets against a real DNS server: dnsmasq started by the test on
 * a free loopback port (tests/util/dnssrv.h), the set's members fault
 * servers on 127.0.0.2, .3, .4, .5 sharing one port. The pool is pointed
 * at dnsmasq with cfg.dns_servers; the test rewrites the name's records
 * and watches the pool follow: spread, change, failover, a member's death
 * and return, all members dead (panic), DNS down, Happy Eyeballs, handles.
 *
 * Bounds: dnsmasq answers with TTL 1 s, clamped by dns_min_ttl_ms and
 * dns_max_ttl_ms, so a change is seen within dns_max_ttl_ms plus a query;
 * the tests allow that plus generous slack for a loaded machine, and poll
 * observable state (stats, per-address stats) to their deadlines.
 */
#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <dirent.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "util/check.h"
#include "util/dnssrv.h"
#include "util/fault_server.h"
#include "util/leakcheck.h"
#include "util/net.h"
#include "util/proc.h"
#include "util/waitfor.h"

TestSuite(sets, .timeout = 120, .fini = leak_fini);

#define NAME "set.test"
#define MAXM 4 /* members on 127.0.0.2 .. .5 */
/* A change is seen within dns_max_ttl_ms plus a query: this, and slack. */
#define FOLLOW_MS 6000

struct env {
	struct dnssrv d;
	struct fault_server *m[MAXM];
	int port;
	struct cpool *pool;
	char addr[64];
};

static const char *const ip_of[MAXM] = { "127.0.0.2", "127.0.0.3",
					 "127.0.0.4", "127.0.0.5" };

/* dnsmasq and the members; the pool comes from env_pool(). */
static void
env_start(struct env *e, unsigned members)
{
	const char *why = NULL;
	unsigned i;

	memset(e, 0, sizeof(*e));
	if (!dnssrv_available(&why))
		cr_skip_test("%s", why);
	assert_ret(dnssrv_start(&e->d, 1), 0);
	for (i = 0; i < members; i++) {
		e->m[i] = fs_start_at(ip_of[i], e->port);
		cr_assert_not_null(e->m[i], "member %s: %s", ip_of[i],
				   strerror(errno));
		e->port = fs_port(e->m[i]);
	}
	snprintf(e->addr, sizeof(e->addr), NAME ":%d", e->port);
}

static void
env_names(struct env *e, const char *const *ips, unsigned n)
{
	assert_ret(dnssrv_set(&e->d, NAME, ips, n), 0);
}

static struct cpool_config
env_config(const struct env *e)
{
	struct cpool_config cfg;

	cpool_config_init(&cfg);
	cfg.workers = 2;
	cfg.dns_servers = e->d.servers;
	cfg.dns_min_ttl_ms = 200;
	cfg.dns_max_ttl_ms = 400;
	cfg.acquire_timeout_ms = 5000;
	return cfg;
}

static void
env_pool(struct env *e, const struct cpool_config *cfg)
{
	e->pool = pool_new(cfg);
	pool_add(e->pool, e->addr);
}

static void
env_stop(struct env *e)
{
	if (e->pool)
		cpool_destroy(e->pool);
	for (unsigned i = 0; i < MAXM; i++)
		if (e->m[i])
			fs_stop(e->m[i]);
	dnssrv_free(&e->d);
}

/* The per-address stats of @ip in the set; state -1 when it is not there. */
static struct cpool_addr_stats
addr_of(const struct env *e, const char *ip)
{
	struct cpool_addr_stats as[16], none;
	char want[80];
	unsigned n = 0, i;

	snprintf(want, sizeof(want), strchr(ip, ':') ? "[%s]:%d" : "%s:%d", ip,
		 e->port);
	as[0].size = sizeof(as[0]);
	assert_ret(cpool_stats_addresses(e->pool, e->addr, as, 16, &n), 0);
	for (i = 0; i < n && i < 16; i++)
		if (!strcmp(as[i].address, want))
			return as[i];
	memset(&none, 0, sizeof(none));
	none.state = (unsigned)-1;
	return none;
}

/* Polls until @cond (an expression over struct cpool_addr_stats a) holds. */
#define wait_addr(e, ip, a, cond, ms)                                          \
	({                                                                     \
		int64_t dl_ = now_ms() + (ms);                                 \
		bool ok_;                                                      \
		for (;;) {                                                     \
			(a) = addr_of((e), (ip));                              \
			if ((ok_ = (cond)) || now_ms() > dl_)                  \
				break;                                         \
			pause_ms(2);                                           \
		}                                                              \
		ok_;                                                           \
	})

/* cpool_stats_format()'s whole text (free it). */
static char *
format_all(struct cpool *pool)
{
	char *buf = malloc(256 * 1024);
	int n;

	cr_assert_not_null(buf);
	n = cpool_stats_format(pool, buf, 256 * 1024);
	cr_assert_gt(n, 0, "cpool_stats_format: %d", n);
	return buf;
}

/* The peer address of a lease ("127.0.0.3", "::1"). */
static void
peer_of(struct cpool_conn *c, char *buf, size_t len)
{
	struct sockaddr_storage ss;
	socklen_t slen = sizeof(ss);

	cr_assert_eq(getpeername(cpool_conn_fd(c), (struct sockaddr *)&ss,
				 &slen),
		     0);
	if (ss.ss_family == AF_INET)
		inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, buf,
			  (socklen_t)len);
	else
		inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr,
			  buf, (socklen_t)len);
}

/* One request: acquire, echo, release. Returns 0 or the acquire's error. */
static int
request(struct cpool *pool, const char *addr)
{
	struct cpool_conn *c;
	char b[8];
	int err = cpool_acquire(pool, addr, &c);

	if (err)
		return err;
	if (cpool_send(c, "ping", 4) != 4 || cpool_recv(c, b, 4) != 4 ||
	    memcmp(b, "ping", 4)) {
		cpool_release(c, CPOOL_RELEASE_CLOSE);
		return -EPROTO;
	}
	cpool_release(c, 0);
	return 0;
}

/* Load threads: requests until told to stop, errors counted by kind. */
struct load {
	struct env *e;
	pthread_t t;
	unsigned hold; /* leases held at once per round */
	atomic_bool stop;
	atomic_uint ok, refused, other;
	atomic_int last_other;
};

static void *
load_main(void *arg)
{
	struct load *l = arg;
	struct cpool_conn *c[8];
	unsigned i, n;
	int err;
	char b[8];

	while (!atomic_load(&l->stop)) {
		for (n = 0; n < l->hold; n++) {
			err = cpool_acquire(l->e->pool, l->e->addr, &c[n]);
			if (err) {
				if (err == -ECONNREFUSED) {
					atomic_fetch_add(&l->refused, 1);
				} else {
					atomic_fetch_add(&l->other, 1);
					atomic_store(&l->last_other, err);
				}
				break;
			}
		}
		for (i = 0; i < n; i++) {
			if (cpool_send(c[i], "ping", 4) == 4 &&
			    cpool_recv(c[i], b, 4) == 4 && !memcmp(b, "ping", 4)) {
				atomic_fetch_add(&l->ok, 1);
				cpool_release(c[i], 0);
			} else {
				atomic_fetch_add(&l->other, 1);
				atomic_store(&l->last_other, -EPROTO);
				cpool_release(c[i], CPOOL_RELEASE_CLOSE);
			}
		}
	}
	return NULL;
}

static void
load_start(struct load *l, unsigned n, struct env *e, unsigned hold)
{
	for (unsigned i = 0; i < n; i++) {
		memset(&l[i], 0, sizeof(l[i]));
		l[i].e = e;
		l[i].hold = hold;
		cr_assert_eq(pthread_create(&l[i].t, NULL, load_main, &l[i]),
			     0);
	}
}

/* Stops and joins; returns the totals in @sum. */
static void
load_stop(struct load *l, unsigned n, struct load *sum)
{
	memset(sum, 0, sizeof(*sum));
	for (unsigned i = 0; i < n; i++)
		atomic_store(&l[i].stop, true);
	for (unsigned i = 0; i < n; i++) {
		cr_assert_eq(join_with_deadline(l[i].t, 20000), 0,
			     "a load thread is stuck");
		sum->ok += l[i].ok;
		sum->refused += l[i].refused;
		sum->other += l[i].other;
		if (l[i].other)
			sum->last_other = l[i].last_other;
	}
}

Test(sets, a_name_is_every_address_and_new_connections_spread_over_them)
{
	const char *ips[] = { ip_of[0], ip_of[1], ip_of[2] };
	struct cpool_config cfg;
	struct cpool_addr_stats a[3];
	struct load l[4], sum;
	struct cpool_stats st;
	struct env e;
	uint64_t total = 0;
	unsigned maxopen = 0, i;
	int64_t t0;

	env_start(&e, 3);
	env_names(&e, ips, 3);
	cfg = env_config(&e);
	cfg.max_conns_per_endpoint = 9;
	cfg.max_uses = 3; /* churn: a new connection every third lease */
	env_pool(&e, &cfg);
	assert_stat(stats_of(e.pool, e.addr), addresses, 3);

	load_start(l, 4, &e, 3);
	t0 = now_ms();
	while (now_ms() - t0 < 1500) {
		st = stats_of(e.pool, e.addr);
		if (st.open > maxopen)
			maxopen = st.open;
		pause_ms(1);
	}
	load_stop(l, 4, &sum);
	cr_assert_eq(sum.other + sum.refused, 0,
		     "%u failed requests (last %d)", sum.other + sum.refused,
		     sum.last_other);
	cr_assert_gt(sum.ok, 300, "only %u requests", sum.ok);
	cr_assert_leq(maxopen, 9, "open %u above the set's cap", maxopen);
	st = stats_of(e.pool, e.addr);
	for (i = 0; i < 3; i++) {
		a[i] = addr_of(&e, ips[i]);
		cr_assert_eq(a[i].state, 0, "%s state %u", ips[i], a[i].state);
		total += a[i].connects;
	}
	cr_assert_eq(total, st.connects, "per-address connects %llu, "
		     "endpoint %llu", (unsigned long long)total,
		     (unsigned long long)st.connects);
	for (i = 0; i < 3; i++)
		cr_assert_geq(a[i].connects * 5, total,
			      "%s got %llu of %llu new connections (< 20 %%)",
			      ips[i], (unsigned long long)a[i].connects,
			      (unsigned long long)total);
	env_stop(&e);
}

Test(sets, a_changed_record_drains_the_address_that_left_and_fails_nothing)
{
	const char *before[] = { ip_of[0], ip_of[1], ip_of[2] };
	const char *after[] = { ip_of[1], ip_of[2], ip_of[3] };
	struct cpool_conn *c[6], *held = NULL;
	struct cpool_addr_stats a2, a5;
	struct cpool_config cfg;
	struct cpool_stats st;
	struct load l[2], sum;
	uint64_t connects2, drained;
	unsigned idle2, i;
	char ip[64];
	struct env e;

	env_start(&e, 4);
	env_names(&e, before, 3);
	cfg = env_config(&e);
	cfg.max_uses = 5;
	env_pool(&e, &cfg);
	/* Six connections, then all idle but one on .2, which stays out. */
	for (i = 0; i < 6; i++)
		c[i] = lease(e.pool, e.addr);
	for (i = 0; i < 6; i++) {
		peer_of(c[i], ip, sizeof(ip));
		if (!held && !strcmp(ip, ip_of[0]))
			held = c[i];
		else
			cpool_release(c[i], 0);
	}
	cr_assert_not_null(held, "no connection of six went to %s", ip_of[0]);
	a2 = addr_of(&e, ip_of[0]);
	idle2 = a2.open - a2.leased;
	cr_assert_eq(a2.leased, 1);

	env_names(&e, after, 3);
	cr_assert(wait_addr(&e, ip_of[0], a2,
			    a2.state == CPOOL_ADDR_DRAINING, FOLLOW_MS),
		  "%s not draining %d ms after the change (state %d)",
		  ip_of[0], FOLLOW_MS, (int)a2.state);
	/* Its idle ones closed at once: only the lease is left. */
	cr_assert(wait_addr(&e, ip_of[0], a2, a2.open == 1, WORKER_WAIT_MS),
		  "%s: %u open", ip_of[0], a2.open);
	st = stats_of(e.pool, e.addr);
	drained = cpool_stats_closed(&st, CPOOL_CLOSE_DRAINED);
	cr_assert_eq(drained, idle2, "drained %llu, %u were idle on %s",
		     (unsigned long long)drained, idle2, ip_of[0]);
	assert_stat(st, addresses, 3);
	connects2 = a2.connects;

	/* Load with churn (max_uses): new connections, none to .2 */
	load_start(l, 2, &e, 2);
	cr_assert(wait_addr(&e, ip_of[3], a5, a5.connects > 0, FOLLOW_MS),
		  "%s got no connection", ip_of[3]);
	pause_ms(300); /* load runs on: nothing may dial .2 now */
	load_stop(l, 2, &sum);
	cr_assert_eq(sum.other + sum.refused, 0,
		     "%u failed requests (last %d)", sum.other + sum.refused,
		     sum.last_other);
	a2 = addr_of(&e, ip_of[0]);
	cr_assert_eq(a2.connects, connects2, "%s dialled after the change",
		     ip_of[0]);
	st = stats_of(e.pool, e.addr);
	cr_assert_eq(cpool_stats_closed(&st, CPOOL_CLOSE_DRAINED), idle2);

	/* The lease out during the change closes at its release. */
	assert_echo(held, "the lease on the drained address still works");
	cpool_release(held, 0);
	st = stats_of(e.pool, e.addr);
	cr_assert_eq(cpool_stats_closed(&st, CPOOL_CLOSE_DRAINED), idle2 + 1);
	cr_assert(wait_addr(&e, ip_of[0], a2, a2.state == (unsigned)-1,
			    WORKER_WAIT_MS),
		  "%s still listed with no connection", ip_of[0]);
	/* Its series are gone; its counts live on in the endpoint's. */
	{
		char series[160], *text = format_all(e.pool);
		struct cpool_addr_stats as[8];
		uint64_t total = 0;
		unsigned n = 0;

		snprintf(series, sizeof(series), "address=\"%s:%d\"",
			 ip_of[0], e.port);
		cr_assert_null(strstr(text, series), "%s still labelled:\n%s",
			       series, text);
		free(text);
		as[0].size = sizeof(as[0]);
		assert_ret(cpool_stats_addresses(e.pool, e.addr, as, 8, &n), 0);
		cr_assert_eq(n, 3);
		for (i = 0; i < n; i++)
			total += as[i].connects;
		st = stats_of(e.pool, e.addr);
		cr_assert_eq(st.connects, total + connects2,
			     "endpoint connects %llu, addresses %llu + gone %llu",
			     (unsigned long long)st.connects,
			     (unsigned long long)total,
			     (unsigned long long)connects2);
	}
	env_stop(&e);
}

Test(sets, a_single_address_name_that_moves_is_followed_within_the_bound)
{
	const char *old[] = { ip_of[0] }, *moved[] = { ip_of[1] };
	struct cpool_addr_stats a;
	struct cpool_config cfg;
	struct cpool_conn *c;
	unsigned accepted;
	int64_t t0, took;
	char ip[64];
	struct env e;

	env_start(&e, 2);
	env_names(&e, old, 1);
	cfg = env_config(&e);
	env_pool(&e, &cfg);
	c = lease(e.pool, e.addr);
	peer_of(c, ip, sizeof(ip));
	cr_assert_str_eq(ip, ip_of[0]);
	cpool_release(c, 0);

	/* The old member keeps accepting: only DNS says it is not the one. */
	env_names(&e, moved, 1);
	t0 = now_ms();
	cr_assert(wait_addr(&e, ip_of[1], a, a.state == 0, FOLLOW_MS),
		  "%s not in the set %d ms after the move", ip_of[1],
		  FOLLOW_MS);
	took = now_ms() - t0;
	cr_assert_leq(took, 400 + 2000, "the move took %lld ms",
		      (long long)took);
	cr_assert(wait_addr(&e, ip_of[0], a, a.state == (unsigned)-1,
			    WORKER_WAIT_MS),
		  "the old address's idle connection was not drained");
	accepted = fs_accepted(e.m[0]);
	for (int i = 0; i < 20; i++) {
		c = lease(e.pool, e.addr);
		peer_of(c, ip, sizeof(ip));
		cr_assert_str_eq(ip, ip_of[1], "lease %d went to %s", i, ip);
		assert_echo(c, "after the move");
		cpool_release(c, i % 2 ? CPOOL_RELEASE_CLOSE : 0);
	}
	cr_assert_eq(fs_accepted(e.m[0]), accepted,
		     "the old member got connections after the move");
	env_stop(&e);
}

Test(sets, a_dead_member_is_ejected_the_others_serve_and_it_comes_back)
{
	const char *ips[] = { ip_of[0], ip_of[1], ip_of[2] };
	struct cpool_addr_stats a;
	struct cpool_config cfg;
	struct cpool_stats st;
	unsigned refused = 0, ok = 0;
	uint64_t connects;
	int64_t t0;
	struct env e;
	int err;

	env_start(&e, 3);
	env_names(&e, ips, 3);
	cfg = env_config(&e);
	cfg.workers = 1;
	cfg.max_uses = 1; /* every request opens a connection */
	cfg.eject_after_failures = 3;
	env_pool(&e, &cfg);

	fs_refuse(e.m[0]);
	fs_close_all(e.m[0]);
	/* One caller: every failure is seen, in order. */
	t0 = now_ms();
	for (;;) {
		err = request(e.pool, e.addr);
		if (err == -ECONNREFUSED)
			refused++;
		else
			assert_ret(err, 0);
		ok += !err;
		a = addr_of(&e, ip_of[0]);
		if (a.state & CPOOL_ADDR_EJECTED)
			break;
		cr_assert_lt(now_ms() - t0, 10000, "%s never ejected (%u "
			     "failures)", ip_of[0], a.failures);
	}
	cr_assert_eq(refused, 3, "callers saw %u refusals before ejection",
		     refused);
	cr_assert_eq(a.connect_failures, 3);
	cr_assert_eq(a.ejections, 1);
	cr_assert_gt(a.ejected_ms, 0);
	st = stats_of(e.pool, e.addr);
	assert_stat(st, ejections, 1);
	/* Ejected: the others serve every request. */
	for (int i = 0; i < 50; i++)
		assert_ret(request(e.pool, e.addr), 0);
	cr_assert_eq(addr_of(&e, ip_of[0]).connect_failures, 3);

	/* It comes back: after its ejection one trial connect, then used. */
	cr_assert_eq(fs_listen_again(e.m[0]), 0);
	connects = addr_of(&e, ip_of[0]).connects;
	t0 = now_ms();
	while (addr_of(&e, ip_of[0]).connects < connects + 3) {
		assert_ret(request(e.pool, e.addr), 0);
		cr_assert_lt(now_ms() - t0, 1000 + 5000,
			     "%s not used again after it came back", ip_of[0]);
	}
	a = addr_of(&e, ip_of[0]);
	cr_assert_eq(a.state, 0);
	cr_assert_eq(a.failures, 0);
	assert_stat(stats_of(e.pool, e.addr), fail_fasts, 0);
	env_stop(&e);
}

Test(sets, with_every_member_dead_every_address_is_tried_panic_mode)
{
	const char *ips[] = { ip_of[0], ip_of[1], ip_of[2] };
	struct cpool_addr_stats a[3];
	struct cpool_config cfg;
	struct cpool_stats st0, st;
	struct env e;
	unsigned i;

	env_start(&e, 3);
	env_names(&e, ips, 3);
	cfg = env_config(&e);
	cfg.workers = 1;
	cfg.eject_after_failures = 2;
	env_pool(&e, &cfg);
	for (i = 0; i < 3; i++)
		fs_refuse(e.m[i]);
	st0 = stats_of(e.pool, e.addr);
	for (i = 0; i < 60; i++)
		assert_ret(request(e.pool, e.addr), -ECONNREFUSED);
	st = stats_of(e.pool, e.addr);
	/* Connect errors, not fail-fasts: every acquire dialled. */
	cr_assert_eq(st.connect_failures - st0.connect_failures, 60);
	assert_stat(st, fail_fasts, 0);
	/* One of three may be ejected (50 %), the others are in backoff. */
	assert_stat(st, ejections, 1);
	for (i = 0; i < 3; i++) {
		a[i] = addr_of(&e, ips[i]);
		cr_assert_gt(a[i].connect_failures, 2,
			     "%s tried %llu times of 60", ips[i],
			     (unsigned long long)a[i].connect_failures);
	}
	/* One comes back: it serves. */
	cr_assert_eq(fs_listen_again(e.m[1]), 0);
	for (i = 0; i < 200 && request(e.pool, e.addr) != 0; i++)
		;
	cr_assert_lt(i, 200, "the member that came back never served");
	env_stop(&e);
}

Test(sets, with_dns_down_the_last_good_set_serves_and_changes_follow_after)
{
	const char *ips[] = { ip_of[0], ip_of[1], ip_of[2] };
	const char *two[] = { ip_of[1], ip_of[2] };
	struct cpool_addr_stats a;
	struct cpool_config cfg;
	struct cpool_stats st;
	struct load l[2], sum;
	int64_t t0;
	struct env e;

	env_start(&e, 3);
	env_names(&e, ips, 3);
	cfg = env_config(&e);
	cfg.max_uses = 4;
	env_pool(&e, &cfg);
	load_start(l, 2, &e, 2);
	dnssrv_stop(&e.d);
	/*
	 * Refreshes fail (min_ttl, doubling): the set stays. A query to a dead
	 * server takes c-ares its tries with doubling timeouts (700 + 1400 +
	 * 2800 ms at most): two failures in 30 s on a loaded machine.
	 */
	assert_stats_wait(e.pool, e.addr, st, st.dns_failures >= 2, 30000);
	assert_stat(st, addresses, 3);
	load_stop(l, 2, &sum);
	cr_assert_eq(sum.other + sum.refused, 0,
		     "%u failed requests with DNS down (last %d)",
		     sum.other + sum.refused, sum.last_other);
	cr_assert_gt(sum.ok, 0);

	/* Back, and changed: followed again within the (capped) retry. */
	assert_ret(dnssrv_restart(&e.d), 0);
	env_names(&e, two, 2);
	t0 = now_ms();
	/* A failing query may still be in flight: its next try answers. */
	cr_assert(wait_addr(&e, ip_of[0], a, a.state == (unsigned)-1 ||
						      a.state ==
							      CPOOL_ADDR_DRAINING,
			    2 * FOLLOW_MS),
		  "the change after DNS came back was not followed");
	cr_assert_lt(now_ms() - t0, 2 * FOLLOW_MS);
	assert_stat(stats_of(e.pool, e.addr), addresses, 2);
	env_stop(&e);
}

/* A ::1 listener whose accept queue is full: SYNs dropped (S11). */
static int
blackhole_v6(int port, int *filler)
{
	struct sockaddr_in6 sin6 = { .sin6_family = AF_INET6,
				     .sin6_addr = IN6ADDR_LOOPBACK_INIT,
				     .sin6_port = htons((uint16_t)port) };
	socklen_t len = sizeof(sin6);
	int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;

	cr_assert_geq(fd, 0);
	setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&sin6, sizeof(sin6)) == -1) {
		close(fd);
		return -1;
	}
	cr_assert_eq(listen(fd, 0), 0);
	cr_assert_eq(getsockname(fd, (struct sockaddr *)&sin6, &len), 0);
	/* backlog 0 holds one: fill it */
	*filler = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
	cr_assert_eq(connect(*filler, (struct sockaddr *)&sin6, sizeof(sin6)),
		     0);
	return fd;
}

Test(sets, a_family_whose_syns_are_dropped_loses_the_race_in_a_quarter_second)
{
	const char *ips[] = { "::1", "127.0.0.1" };
	struct fault_server *v4 = NULL;
	struct cpool_config cfg;
	struct cpool_conn *c;
	const char *why = NULL;
	int lfd = -1, filler = -1, err;
	int64_t t0, took;
	char ip[64];
	struct env e;

	memset(&e, 0, sizeof(e));
	if (!dnssrv_available(&why))
		cr_skip_test("%s", why);
	for (int tries = 0; tries < 20 && lfd < 0; tries++) {
		v4 = fs_start_at("127.0.0.1", 0);
		cr_assert_not_null(v4);
		lfd = blackhole_v6(fs_port(v4), &filler);
		if (lfd < 0)
			fs_stop(v4);
	}
	cr_assert_geq(lfd, 0, "no port free on both 127.0.0.1 and ::1");
	e.port = fs_port(v4);
	assert_ret(dnssrv_start(&e.d, 1), 0);
	snprintf(e.addr, sizeof(e.addr), NAME ":%d", e.port);
	env_names(&e, ips, 2);
	cfg = env_config(&e);
	cfg.connect_timeout_ms = 3000;
	cfg.happy_eyeballs_ms = 250;
	/* An answer every 1.5 s: each one puts v6 first again. */
	cfg.dns_min_ttl_ms = cfg.dns_max_ttl_ms = 1500;
	env_pool(&e, &cfg);
	cr_assert_eq(addr_of(&e, "::1").state, 0, "::1 is not in the set");

	for (int round = 0; round < 2; round++) {
		struct cpool_stats st = stats_of(e.pool, e.addr);
		uint64_t r = st.dns_refreshes;

		/* Just after an answer: 1.5 s before the next. */
		assert_stats_wait(e.pool, e.addr, st, st.dns_refreshes > r,
				  10000);
		for (int i = 0; i < 3; i++) {
			t0 = now_ms();
			err = cpool_acquire(e.pool, e.addr, &c);
			took = now_ms() - t0;
			assert_ret(err, 0);
			peer_of(c, ip, sizeof(ip));
			cr_assert_str_eq(ip, "127.0.0.1");
			if (i == 0) {
				/* v6 first (the answer's order), v4 after
				 * 250 ms: not after 3 s */
				cr_assert_geq(took, 240,
					      "round %d: took %lld ms: was v6 "
					      "tried first?",
					      round, (long long)took);
				cr_assert_lt(took, 250 + 1000,
					     "round %d: took %lld ms", round,
					     (long long)took);
			} else {
				/* v4 won: tried first until the next answer */
				cr_assert_lt(took, 240,
					     "round %d, connect %d took %lld "
					     "ms: v6 tried first again after "
					     "it lost the race", round, i,
					     (long long)took);
			}
			cpool_release(c, CPOOL_RELEASE_CLOSE); /* a new one */
		}
	}
	/* The loser was abandoned, not failed: ::1 is not in backoff. */
	cr_assert_eq(addr_of(&e, "::1").connect_failures, 0);
	cpool_destroy(e.pool);

	/* happy_eyeballs_ms 0: one address at a time, the timeout first. */
	cfg.happy_eyeballs_ms = 0;
	cfg.connect_timeout_ms = 600;
	env_pool(&e, &cfg);
	t0 = now_ms();
	err = cpool_acquire(e.pool, e.addr, &c);
	took = now_ms() - t0;
	assert_ret(err, -ETIMEDOUT);
	cr_assert_geq(took, 590, "took %lld ms", (long long)took);
	/* ::1 backs off now: the next connect goes to v4 */
	c = lease(e.pool, e.addr);
	peer_of(c, ip, sizeof(ip));
	cr_assert_str_eq(ip, "127.0.0.1");
	cpool_release(c, 0);
	cpool_destroy(e.pool);
	e.pool = NULL;
	close(filler);
	close(lfd);
	fs_stop(v4);
	dnssrv_free(&e.d);
}

Test(sets, a_handle_follows_its_set_and_is_enoent_for_good_once_removed)
{
	const char *before[] = { ip_of[0] }, *after[] = { ip_of[1] };
	struct cpool_endpoint *ep, *ep2;
	struct cpool_addr_stats a;
	struct cpool_config cfg;
	struct cpool_conn *c;
	char ip[64];
	struct env e;

	env_start(&e, 2);
	env_names(&e, before, 1);
	cfg = env_config(&e);
	env_pool(&e, &cfg);
	assert_ret(cpool_endpoint_get(e.pool, e.addr, &ep), 0);
	assert_ret(cpool_acquire_ep(ep, &c), 0);
	peer_of(c, ip, sizeof(ip));
	cr_assert_str_eq(ip, ip_of[0]);
	cpool_release(c, 0);

	env_names(&e, after, 1);
	cr_assert(wait_addr(&e, ip_of[0], a, a.state == (unsigned)-1,
			    FOLLOW_MS),
		  "%s still in the set", ip_of[0]);
	assert_ret(cpool_acquire_ep(ep, &c), 0);
	peer_of(c, ip, sizeof(ip));
	cr_assert_str_eq(ip, ip_of[1], "the handle's lease went to %s", ip);
	cpool_release(c, 0);

	assert_ret(cpool_endpoint_remove(e.pool, e.addr), 0);
	assert_ret(cpool_acquire_ep(ep, &c), -ENOENT);
	pool_add(e.pool, e.addr);
	assert_ret(cpool_acquire_ep(ep, &c), -ENOENT);
	assert_ret(cpool_endpoint_get(e.pool, e.addr, &ep2), 0);
	cr_assert_neq(ep, ep2);
	assert_ret(cpool_acquire_ep(ep2, &c), 0);
	cpool_release(c, 0);
	cpool_endpoint_put(ep);
	/* Many gets and puts: nothing is kept (leak_fini checks it). */
	for (int i = 0; i < 10000; i++) {
		assert_ret(cpool_endpoint_get(e.pool, e.addr, &ep), 0);
		cpool_endpoint_put(ep);
	}
	cpool_endpoint_put(ep2);
	env_stop(&e);
}

Test(sets, a_numeric_address_never_asks_the_resolver)
{
	struct cpool_config cfg;
	struct cpool *pool;
	struct dnssrv d;
	const char *why = NULL;
	int64_t t0;

	if (!dnssrv_available(&why))
		cr_skip_test("%s", why);
	assert_ret(dnssrv_start(&d, 1), 0);
	dnssrv_pause(&d); /* a server that answers nothing: a query waits */
	cpool_config_init(&cfg);
	cfg.workers = 1;
	cfg.dns_servers = d.servers;
	pool = pool_new(&cfg);
	t0 = now_ms();
	assert_ret(cpool_endpoint_add(pool, "127.0.0.2:9"), 0);
	assert_ret(cpool_endpoint_add(pool, "[::1]:9"), 0);
	cr_assert_lt(now_ms() - t0, 100, "numeric adds took %lld ms",
		     (long long)(now_ms() - t0));
	assert_stat(stats_of(pool, NULL), addresses, 2);
	assert_stat(stats_of(pool, NULL), dns_refreshes, 0);
	cpool_destroy(pool);
	dnssrv_free(&d);
}

/* Whether every thread of this process is traced now. */
static bool
all_traced(void)
{
	char path[320], line[256];
	bool all = true;
	struct dirent *d;
	DIR *dir = opendir("/proc/self/task");
	FILE *f;

	if (!dir)
		return false;
	while ((d = readdir(dir)) != NULL && all) {
		if (d->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/proc/self/task/%s/status",
			 d->d_name);
		f = fopen(path, "re");
		if (!f)
			continue;
		while (fgets(line, sizeof(line), f))
			if (!strncmp(line, "TracerPid:", 10))
				all = atoi(line + 10) != 0;
		fclose(f);
	}
	closedir(dir);
	return all;
}

struct tid_load {
	struct load l;
	atomic_int tid;
};

static void *
tid_load_main(void *arg)
{
	struct tid_load *t = arg;

	atomic_store(&t->tid, (int)gettid());
	return load_main(&t->l);
}

Test(sets, no_caller_thread_sends_or_receives_dns_while_the_set_changes)
{
	const char *a[] = { ip_of[0], ip_of[1], ip_of[2] };
	const char *b[] = { ip_of[1], ip_of[2] };
	char out[] = "/tmp/cpool-strace-XXXXXX", pidarg[16], port[32];
	char line[4096];
	struct tid_load t[2];
	struct cpool_config cfg;
	struct cpool_stats st;
	unsigned caller_dns = 0, other_dns = 0, i;
	int64_t t0;
	struct env e;
	pid_t tracer;
	FILE *f;
	int fd;

	if (access("/usr/bin/strace", X_OK))
		cr_skip_test("strace is not installed");
	env_start(&e, 3);
	env_names(&e, a, 3);
	cfg = env_config(&e);
	cfg.max_uses = 4;
	env_pool(&e, &cfg);
	for (i = 0; i < 2; i++) {
		memset(&t[i], 0, sizeof(t[i]));
		t[i].l.e = &e;
		t[i].l.hold = 2;
		cr_assert_eq(pthread_create(&t[i].l.t, NULL, tid_load_main,
					    &t[i]),
			     0);
	}
	fd = mkstemp(out);
	cr_assert_geq(fd, 0);
	close(fd);
	snprintf(pidarg, sizeof(pidarg), "%d", (int)getpid());
	tracer = fork();
	cr_assert_geq(tracer, 0);
	if (tracer == 0) {
		execl("/usr/bin/strace", "strace", "-f", "-qq", "-o", out,
		      "-e", "trace=sendto,sendmsg,sendmmsg,recvfrom,recvmsg,"
			    "connect",
		      "-p", pidarg, (char *)NULL);
		_exit(127);
	}
	t0 = now_ms();
	while (!all_traced()) {
		cr_assert_lt(now_ms() - t0, 10000, "strace never attached");
		pause_ms(5);
	}
	/* The set changes twice under load, with strace watching. */
	st = stats_of(e.pool, e.addr);
	env_names(&e, b, 2);
	assert_stats_wait(e.pool, e.addr, st, st.addresses == 2, FOLLOW_MS);
	env_names(&e, a, 3);
	assert_stats_wait(e.pool, e.addr, st, st.addresses == 3, FOLLOW_MS);
	kill(tracer, SIGINT);
	cr_assert_eq(waitpid(tracer, NULL, 0), tracer);
	for (i = 0; i < 2; i++)
		atomic_store(&t[i].l.stop, true);
	for (i = 0; i < 2; i++)
		cr_assert_eq(join_with_deadline(t[i].l.t, 20000), 0);
	cr_assert_eq(t[0].l.other + t[1].l.other + t[0].l.refused +
			     t[1].l.refused,
		     0, "failed requests under the changes");

	/* DNS traffic is any syscall naming the server's port. */
	snprintf(port, sizeof(port), "sin_port=htons(%d)", e.d.port);
	f = fopen(out, "re");
	cr_assert_not_null(f);
	while (fgets(line, sizeof(line), f)) {
		int tid = atoi(line);

		if (!strstr(line, port))
			continue;
		if (tid == atomic_load(&t[0].tid) ||
		    tid == atomic_load(&t[1].tid)) {
			caller_dns++;
			cr_log_error("caller thread %d: %s", tid, line);
		} else if (tid != (int)gettid()) { /* (dnssrv_set's checks) */
			other_dns++;
		}
	}
	fclose(f);
	unlink(out);
	cr_assert_eq(caller_dns, 0, "%u DNS syscalls on caller threads",
		     caller_dns);
	cr_assert_gt(other_dns, 0, "strace saw no DNS traffic at all");
	env_stop(&e);
}

/* The fd numbers open now, as a bitmap of the first 1024. */
struct fdset {
	unsigned char open[1024];
};

static void
fds_now(struct fdset *s)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *de;

	memset(s, 0, sizeof(*s));
	if (!d)
		return;
	while ((de = readdir(d))) {
		int fd = atoi(de->d_name);

		if (de->d_name[0] != '.' && fd != dirfd(d) && fd >= 0 &&
		    fd < 1024)
			s->open[fd] = 1;
	}
	closedir(d);
}

/*
 * The fds open now that @before does not hold, but @skip: each said on
 * @wfd as "@say fd N (target)" when @wfd >= 0. Returns how many, and in
 * *@sockets how many of them are sockets.
 */
static int
new_fds(const struct fdset *before, int skip, int wfd, const char *say,
	int *sockets)
{
	struct fdset now;
	char path[64], target[256];
	int n = 0;

	*sockets = 0;
	fds_now(&now);
	for (int fd = 0; fd < 1024; fd++) {
		ssize_t len;

		if (!now.open[fd] || before->open[fd] || fd == skip)
			continue;
		snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
		len = readlink(path, target, sizeof(target) - 1);
		target[len > 0 ? len : 0] = '\0';
		*sockets += !strncmp(target, "socket:", 7);
		if (wfd >= 0)
			child_say(wfd, "%s fd %d (%s)", say, fd, target);
		n++;
	}
	return n;
}

/* Whether a socket not in @before is open now (the resolver's). */
static bool
new_socket(const struct fdset *before)
{
	int sockets;

	new_fds(before, -1, -1, NULL, &sockets);
	return sockets > 0;
}

struct fork_names {
	struct env *e;
	struct fdset before; /* open before the pool was created */
};

/* The child's exit when no socket of the resolver came with the fork. */
#define CHILD_NOTHING_TO_CHECK 2

/* Child: destroy the inherited pool; every fd it had must be gone. */
static int
child_destroy_names(void *arg, int wfd)
{
	struct fork_names *x = arg;
	int sockets;

	/* The pool's, inherited: say which. */
	new_fds(&x->before, wfd, wfd, "step: inherited", &sockets);
	if (!sockets) { /* its query ended between the parent's look and the fork */
		child_say(wfd, "no socket of the pool's resolver came with the "
			  "fork: nothing to check");
		return CHILD_NOTHING_TO_CHECK;
	}
	cpool_destroy(x->e->pool);
	return new_fds(&x->before, wfd, wfd,
		       "FAILED: still open after the inherited pool's destroy:",
		       &sockets)
		       ? 1
		       : 0;
}

/*
 * A fork child's destroy of an inherited pool that follows a name closes
 * the child's copies of the resolver's sockets too, as it does those of
 * the workers and connections: the child is left with no fd of the pool.
 * (The resolver was not freed in a child before: its UDP socket stayed.)
 */
Test(sets, a_fork_childs_destroy_of_the_pool_leaves_no_resolver_socket)
{
	const char *ips[] = { ip_of[0] };
	struct cpool_config cfg;
	struct cpool_stats st;
	struct fork_names x;
	struct child ch;
	struct env e;

	env_start(&e, 1);
	env_names(&e, ips, 1);
	x.e = &e;
	fds_now(&x.before);
	cfg = env_config(&e);
	env_pool(&e, &cfg);
	assert_stats_wait(e.pool, e.addr, st, st.dns_refreshes >= 1, 10000);
	/*
	 * c-ares closes its socket once nothing is pending, and at each
	 * refusal: a stopped server's port may refuse by ICMP, and the
	 * socket then lives a millisecond. A frozen server refuses nothing:
	 * a refresh keeps the socket through its tries (pool/dns.c: 3, from
	 * 700 ms each). Fork while it is open (no connection is open: the
	 * pool's only socket); when the query ended between the look and the
	 * fork, the child has nothing to check and says so, and the next
	 * refresh's socket is taken.
	 */
	dnssrv_pause(&e.d);
	for (int tries = 0;; tries++) {
		int64_t deadline = now_ms() + 10000;
		bool open;

		while (!(open = new_socket(&x.before)) && now_ms() < deadline)
			pause_1ms();
		cr_assert(open, "no resolver socket open within 10 s of DNS "
			  "frozen");
		assert_ret(child_start(&ch, child_destroy_names, &x), 0);
		child_wait(&ch, 10000);
		if (tries < 4 && WIFEXITED(ch.status) &&
		    WEXITSTATUS(ch.status) == CHILD_NOTHING_TO_CHECK)
			continue;
		cr_assert(child_ok(&ch), "the child %s; it said:\n%s",
			  child_how(&ch), ch.said);
		break;
	}
	dnssrv_resume(&e.d);
	/* The parent's resolver goes on. */
	{
		uint64_t r = st.dns_refreshes;

		assert_stats_wait(e.pool, e.addr, st, st.dns_refreshes > r,
				  10000);
	}
	env_stop(&e);
}
