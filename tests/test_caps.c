/* SPDX-License-Identifier: MIT */
/*
 * max_conns_per_endpoint is a process-wide cap; at the cap an acquire fails
 * at once (acquire_timeout_ms 0) or waits for a release to hand it the
 * connection or its slot, one waiter per release. A waiter is known to be
 * blocked when it announced the call (eventfd) and its thread is then seen
 * asleep in /proc; it is known to have returned by its own eventfd.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <sys/rseq.h>
#include <time.h>
#include <unistd.h>

#include "util/check.h"
#include "util/leakcheck.h"

TestSuite(caps, .timeout = 120, .fini = leak_fini);

static int64_t
now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

struct waiter {
	struct cpool *pool;
	const char *addr;
	pthread_t thread;
	pid_t tid;
	int started;	/* posted just before cpool_acquire() */
	int done;	/* posted after it returned */
	int any_done;	/* shared by a group of waiters, or -1 */
	int err;
	int fd;
	bool reused;
	struct cpool_conn *c;
	int64_t elapsed_ns;
};

static void *
waiter_main(void *arg)
{
	struct waiter *w = arg;
	int64_t t0;

	w->tid = gettid();
	sig_post(w->started);
	t0 = now_ns();
	w->err = cpool_acquire(w->pool, w->addr, &w->c);
	w->elapsed_ns = now_ns() - t0;
	if (w->err == 0) {
		w->fd = cpool_conn_fd(w->c);
		w->reused = cpool_conn_reused(w->c);
	}
	sig_post(w->done);
	if (w->any_done != -1)
		sig_post(w->any_done);
	return NULL;
}

/* Starts a waiter and returns once it is blocked inside cpool_acquire(). */
static void
waiter_start(struct waiter *w, struct cpool *pool, const char *addr,
	     int any_done)
{
	int err;

	memset(w, 0, sizeof(*w));
	w->pool = pool;
	w->addr = addr;
	w->fd = -1;
	w->any_done = any_done;
	w->started = sig_new();
	w->done = sig_new();
	cr_assert_geq(w->started, 0);
	cr_assert_geq(w->done, 0);
	err = pthread_create(&w->thread, NULL, waiter_main, w);
	cr_assert_eq(err, 0, "pthread_create: %s", strerror(err));
	cr_assert_eq(sig_wait(w->started, WAIT_MS), 0,
		     "the waiter thread never started");
	cr_assert_eq(wait_thread_sleeping(w->tid, WAIT_MS), 0,
		     "the waiter never blocked in cpool_acquire");
	cr_assert_not(sig_pending(w->done),
		      "cpool_acquire returned at the cap instead of waiting: "
		      "%d (%s)", w->err, strerror(-w->err));
}

/* Waits for the waiter's return and joins it. */
static void
waiter_join(struct waiter *w)
{
	cr_assert_eq(sig_wait(w->done, 60000), 0,
		     "the waiter never returned from cpool_acquire");
	pthread_join(w->thread, NULL);
	close(w->started);
	close(w->done);
}

static struct cpool *
capped_pool(unsigned cap, unsigned acquire_timeout_ms)
{
	struct cpool_config cfg = config_one_shard();

	cfg.max_conns_per_endpoint = cap;
	cfg.acquire_timeout_ms = acquire_timeout_ms;
	return pool_new(&cfg);
}

Test(caps, at_the_cap_an_acquire_with_no_wait_returns_etimedout_at_once)
{
	struct fault_server *fs = server_new(FS_INET);
	const char *addr = fs_address(fs);
	struct cpool *pool = capped_pool(2, 0);
	struct cpool_conn *a, *b, *c = (struct cpool_conn *)&fs;
	struct cpool_stats st;

	pool_add(pool, addr);
	a = lease(pool, addr);
	b = lease(pool, addr);
	assert_ret(cpool_acquire(pool, addr, &c), -ETIMEDOUT);
	cr_assert_eq(c, (struct cpool_conn *)&fs, "out changed on failure");
	st = stats_of(pool, addr);
	assert_stat(st, acquires, 2);
	assert_stat(st, timeouts, 1);
	assert_stat(st, waits, 0);
	assert_stat(st, connects, 2);
	assert_stat(st, open, 2);
	assert_stat(st, leased, 2);
	cr_assert_eq(fs_wait_accepted(fs, 2, WAIT_MS), 0);
	cr_assert_eq(fs_accepted(fs), 2, "server accepted %u want 2",
		     fs_accepted(fs));

	cpool_release(a, 0);
	a = lease(pool, addr);
	cr_assert(cpool_conn_reused(a), "the released one should be reused");
	cpool_release(a, 0);
	cpool_release(b, 0);
	st = stats_of(pool, addr);
	assert_stat(st, acquires, 3);
	assert_stat(st, timeouts, 1);
	assert_stat(st, open, 2);
	cpool_destroy(pool);
	fs_stop(fs);
}

Test(caps, a_waiting_acquire_gets_the_very_connection_a_release_hands_it)
{
	struct fault_server *fs = server_new(FS_INET);
	const char *addr = fs_address(fs);
	struct cpool *pool = capped_pool(1, 60000);
	struct cpool_conn *c;
	struct waiter w;
	struct cpool_stats st;
	int fd;

	pool_add(pool, addr);
	c = lease(pool, addr);
	fd = cpool_conn_fd(c);
	assert_echo(c, "mine");
	waiter_start(&w, pool, addr, -1);

	cpool_release(c, 0);
	waiter_join(&w);
	cr_assert_eq(w.err, 0, "waiter: got %d (%s) want 0", w.err,
		     strerror(-w.err));
	cr_assert_eq(w.fd, fd, "waiter got fd %d want the released %d", w.fd,
		     fd);
	assert_echo(w.c, "yours");
	st = stats_of(pool, addr);
	assert_stat(st, acquires, 2);
	assert_stat(st, waits, 1);
	assert_stat(st, timeouts, 0);
	assert_stat(st, connects, 1);
	assert_stat(st, open, 1);
	assert_stat(st, leased, 1);
	assert_stat(st, idle, 0);
	cpool_release(w.c, 0);
	st = stats_of(pool, addr);
	assert_stat(st, open, 1);
	assert_stat(st, idle, 1);
	assert_stat(st, leased, 0);
	cpool_destroy(pool);
	fs_stop(fs);
}

Test(caps, a_waiter_that_gets_nothing_times_out_no_earlier_than_its_timeout)
{
	struct fault_server *fs = server_new(FS_INET);
	const char *addr = fs_address(fs);
	const unsigned timeout_ms = 300;
	struct cpool *pool = capped_pool(1, timeout_ms);
	struct cpool_conn *c, *w = (struct cpool_conn *)&fs;
	struct cpool_stats st;
	int64_t t0, ms;
	int err;

	pool_add(pool, addr);
	c = lease(pool, addr);
	t0 = now_ns();
	err = cpool_acquire(pool, addr, &w);
	ms = (now_ns() - t0) / 1000000;
	cr_assert_eq(err, -ETIMEDOUT, "got %d (%s) want -ETIMEDOUT", err,
		     strerror(-err));
	cr_assert_eq(w, (struct cpool_conn *)&fs, "out changed on failure");
	cr_assert_geq(ms, timeout_ms,
		      "returned after %lld ms, before the %u ms timeout",
		      (long long)ms, timeout_ms);
	/* a generous margin: this is no speed test */
	cr_assert_lt(ms, timeout_ms + 30000, "returned after %lld ms",
		     (long long)ms);
	st = stats_of(pool, addr);
	assert_stat(st, timeouts, 1);
	assert_stat(st, waits, 1);
	assert_stat(st, acquires, 1);
	assert_stat(st, open, 1);
	cpool_release(c, 0);
	cpool_destroy(pool);
	fs_stop(fs);
}

Test(caps, a_release_with_close_hands_its_freed_slot_to_a_waiter)
{
	struct fault_server *fs = server_new(FS_INET);
	const char *addr = fs_address(fs);
	struct cpool *pool = capped_pool(1, 60000);
	struct cpool_conn *c;
	struct waiter w;
	struct cpool_stats st;

	pool_add(pool, addr);
	c = lease(pool, addr);
	waiter_start(&w, pool, addr, -1);
	cpool_release(c, CPOOL_RELEASE_CLOSE);
	waiter_join(&w);
	cr_assert_eq(w.err, 0, "waiter: got %d (%s) want 0", w.err,
		     strerror(-w.err));
	cr_assert_not(w.reused, "the waiter must get a new connection");
	assert_echo(w.c, "new");
	st = stats_of(pool, addr);
	assert_stat(st, acquires, 2);
	assert_stat(st, connects, 2);
	assert_stat(st, waits, 1);
	assert_stat(st, closed[CPOOL_CLOSE_BY_CALLER], 1);
	assert_stat(st, open, 1);
	assert_stat(st, leased, 1);
	cpool_release(w.c, 0);
	cpool_destroy(pool);
	fs_stop(fs);
}

Test(caps, a_release_of_a_broken_connection_hands_its_slot_to_a_waiter)
{
	struct fault_server *fs = server_new(FS_INET);
	const char *addr = fs_address(fs);
	struct cpool *pool = capped_pool(1, 60000);
	struct cpool_conn *c;
	struct waiter w;
	struct cpool_stats st;
	char b;

	pool_add(pool, addr);
	c = lease(pool, addr);
	cr_assert_eq(fs_close_all(fs), 1);
	cr_assert_eq(cpool_recv(c, &b, 1), 0); /* FIN: broken */
	waiter_start(&w, pool, addr, -1);
	cpool_release(c, 0);
	waiter_join(&w);
	cr_assert_eq(w.err, 0, "waiter: got %d (%s) want 0", w.err,
		     strerror(-w.err));
	cr_assert_not(w.reused, "the waiter must get a new connection");
	assert_echo(w.c, "new");
	st = stats_of(pool, addr);
	assert_stat(st, connects, 2);
	assert_stat(st, closed[CPOOL_CLOSE_BY_CALLER], 1);
	cpool_release(w.c, 0);
	cpool_destroy(pool);
	fs_stop(fs);
}

/* Returns the index of the only waiter that returned, asserting one did. */
static int
only_returned(struct waiter *w, int n, const bool *gone)
{
	int who = -1;

	for (int i = 0; i < n; i++) {
		if (gone[i] || !sig_pending(w[i].done))
			continue;
		cr_assert_eq(who, -1, "waiters %d and %d both returned for one "
			     "release", who, i);
		who = i;
	}
	cr_assert_neq(who, -1, "no waiter returned");
	return who;
}

Test(caps, one_release_wakes_exactly_one_of_three_waiters)
{
	struct fault_server *fs = server_new(FS_INET);
	const char *addr = fs_address(fs);
	struct cpool *pool = capped_pool(1, 60000);
	struct waiter w[3];
	bool gone[3] = { false, false, false };
	struct cpool_conn *c;
	struct cpool_stats st;
	int any = sig_new(), fd;

	cr_assert_geq(any, 0);
	pool_add(pool, addr);
	c = lease(pool, addr);
	fd = cpool_conn_fd(c);
	for (int i = 0; i < 3; i++)
		waiter_start(&w[i], pool, addr, any);

	for (int round = 0; round < 3; round++) {
		int who;

		cpool_release(c, 0);
		cr_assert_eq(sig_wait(any, WAIT_MS), 0,
			     "round %d: no waiter returned", round);
		who = only_returned(w, 3, gone);
		/* the others are asleep again and still have not returned */
		for (int i = 0; i < 3; i++) {
			if (gone[i] || i == who)
				continue;
			cr_assert_eq(wait_thread_sleeping(w[i].tid, WAIT_MS), 0,
				     "round %d: waiter %d is not blocked",
				     round, i);
		}
		cr_assert_not(sig_pending(any),
			      "round %d: a second waiter returned", round);
		cr_assert_eq(only_returned(w, 3, gone), who);
		waiter_join(&w[who]);
		gone[who] = true;
		cr_assert_eq(w[who].err, 0, "waiter %d: got %d (%s)", who,
			     w[who].err, strerror(-w[who].err));
		cr_assert_eq(w[who].fd, fd, "waiter %d got fd %d want %d", who,
			     w[who].fd, fd);
		c = w[who].c;
	}
	cpool_release(c, 0);
	st = stats_of(pool, addr);
	assert_stat(st, acquires, 4);
	assert_stat(st, waits, 3);
	assert_stat(st, timeouts, 0);
	assert_stat(st, connects, 1);
	assert_stat(st, open, 1);
	assert_stat(st, idle, 1);
	close(any);
	cpool_destroy(pool);
	fs_stop(fs);
}

Test(caps, removing_the_endpoint_wakes_its_waiters_with_enoent)
{
	struct fault_server *fs = server_new(FS_INET);
	const char *addr = fs_address(fs);
	struct cpool *pool = capped_pool(1, 60000);
	struct cpool_conn *c;
	struct waiter w;
	struct cpool_stats st;

	pool_add(pool, addr);
	c = lease(pool, addr);
	waiter_start(&w, pool, addr, -1);
	assert_ret(cpool_endpoint_remove(pool, addr), 0);
	waiter_join(&w);
	cr_assert_eq(w.err, -ENOENT, "waiter: got %d (%s) want -ENOENT", w.err,
		     strerror(-w.err));
	/* the lease still works, and its release closes it */
	assert_echo(c, "still mine");
	cpool_release(c, 0);
	st = stats_of(pool, NULL);
	assert_stat(st, closed[CPOOL_CLOSE_SHUTDOWN], 1);
	assert_stat(st, open, 0);
	assert_stat(st, acquires, 1);
	cr_assert_eq(fs_wait_open(fs, 0, WAIT_MS), 0);
	cpool_destroy(pool);
	fs_stop(fs);
}

Test(caps, destroy_wakes_waiters_with_eshutdown_and_leases_stay_valid)
{
	struct fault_server *fs = server_new(FS_INET);
	const char *addr = fs_address(fs);
	struct cpool *pool = capped_pool(1, 60000);
	struct cpool_conn *c;
	struct waiter w;

	pool_add(pool, addr);
	c = lease(pool, addr);
	waiter_start(&w, pool, addr, -1);
	cpool_destroy(pool);
	waiter_join(&w);
	cr_assert_eq(w.err, -ESHUTDOWN, "waiter: got %d (%s) want -ESHUTDOWN",
		     w.err, strerror(-w.err));
	assert_echo(c, "after destroy");
	cpool_release(c, 0);
	cr_assert_eq(fs_wait_open(fs, 0, WAIT_MS), 0,
		     "the released lease was not closed: server holds %u",
		     fs_open(fs));
	fs_stop(fs);
}

Test(caps, the_cap_counts_connections_of_every_shard)
{
	struct fault_server *fs = server_new(FS_INET);
	const char *addr = fs_address(fs);
	struct cpool_config cfg;
	struct cpool *pool;
	struct cpool_conn *a, *b;
	struct cpu_lease p;

	cpool_config_init(&cfg);
	cfg.workers = 2;
	cfg.max_conns_per_endpoint = 2;
	cfg.acquire_timeout_ms = 0;
	pool = pool_new(&cfg);
	pool_add(pool, addr);
	if (!pin_to(0))
		cr_log_warn("cannot pin to CPU 0: shards not forced");
	a = lease(pool, addr);
	b = lease(pool, addr);
	p = lease_on_cpu(pool, addr, 1);
	if (!p.pinned)
		cr_log_warn("cannot pin to CPU 1: shards not forced");
	cr_assert_eq(p.err, -ETIMEDOUT,
		     "a third connection from another CPU: got %d (%s) want "
		     "-ETIMEDOUT", p.err, strerror(-p.err));
	cpool_release(a, 0);
	cpool_release(b, 0);
	assert_stat(stats_of(pool, addr), open, 2);
	cpool_destroy(pool);
	fs_stop(fs);
}

/*
 * A lease goes back to the list of the shard it was acquired on, not to
 * the shard of the CPU its release runs on: the release makes no CPU
 * lookup. Acquired on CPU 0 and released on CPU 1, the connection is
 * found again on CPU 0 without a steal; stolen by CPU 1 and released on
 * CPU 0, it is CPU 1's from then on. (The old release, by the releasing
 * CPU, made both later acquires steal.) Needs rseq, which keeps the CPU
 * the pool reads current after a migration.
 */
struct migrate {
	struct cpool *pool;
	const char *addr;
	bool pinned;
	int err[4];
	/* the endpoint's steals and waits after each acquire */
	unsigned long long steals[4], waits[4];
};

/* Acquire @i on CPU @cpu; its counters noted. */
static int
migrate_acquire(struct migrate *m, int i, int cpu, struct cpool_conn **c)
{
	struct cpool_stats st = { .size = sizeof(st) };

	m->pinned &= pin_to(cpu);
	m->err[i] = cpool_acquire(m->pool, m->addr, c);
	if (cpool_stats_get(m->pool, m->addr, &st) == 0) {
		m->steals[i] = st.steals;
		m->waits[i] = st.waits;
	}
	return m->err[i];
}

static void *
migrate_main(void *arg)
{
	struct migrate *m = arg;
	struct cpool_conn *c;

	m->pinned = true;
	if (migrate_acquire(m, 0, 0, &c))
		return NULL; /* a new connection, leased on shard 0 */
	m->pinned &= pin_to(1);
	cpool_release(c, 0);
	if (migrate_acquire(m, 1, 0, &c))
		return NULL; /* shard 0's own: no steal */
	cpool_release(c, 0);
	if (migrate_acquire(m, 2, 1, &c))
		return NULL; /* taken from shard 0 */
	m->pinned &= pin_to(0);
	cpool_release(c, 0);
	if (!migrate_acquire(m, 3, 1, &c)) /* shard 1's now */
		cpool_release(c, 0);
	return NULL;
}

Test(caps, a_lease_goes_back_to_the_shard_it_was_acquired_on)
{
	struct fault_server *fs = server_new(FS_INET);
	const char *addr = fs_address(fs);
	struct migrate m = { 0 };
	struct cpool_config cfg;
	struct cpool_stats st;
	struct cpool *pool;
	pthread_t t;

	if (__rseq_size == 0) {
		fs_stop(fs);
		cr_skip_test("rseq is not registered: the pool's CPU lags a "
			     "migration by design, shards cannot be forced");
	}
	cpool_config_init(&cfg);
	cfg.workers = 2;
	cfg.max_conns_per_endpoint = 1;
	cfg.probe_bypass_ms = 0;
	pool = pool_new(&cfg);
	pool_add(pool, addr);
	m.pool = pool;
	m.addr = addr;
	cr_assert_eq(pthread_create(&t, NULL, migrate_main, &m), 0);
	pthread_join(t, NULL);
	if (!m.pinned) {
		cpool_destroy(pool);
		fs_stop(fs);
		cr_skip_test("cannot pin to CPUs 0 and 1: shards not forced");
	}
	for (int i = 0; i < 4; i++)
		cr_assert_eq(m.err[i], 0, "acquire %d: got %d (%s)", i,
			     m.err[i], strerror(-m.err[i]));
	st = stats_of(pool, addr);
	assert_stat(st, acquires, 4);
	assert_stat(st, connects, 1);
	assert_stat(st, reuses, 3);
	/* Neither the second acquire nor the fourth takes the connection
	 * from another shard: it went back to the one it was acquired on. */
	cr_assert_eq(m.steals[1], 0, "acquire 1 on CPU 0 stole: the release "
		     "on CPU 1 put it on shard 1's list");
	cr_assert_eq(m.steals[3] - m.steals[2], 0, "acquire 3 on CPU 1 stole: "
		     "the release on CPU 0 put it on shard 0's list");
	/* Only the third, from CPU 1 with the one connection on shard 0's
	 * list, takes it from there: by a steal, or, when a worker held that
	 * list's lock at the steal's try-lock, by the wait at the cap of 1. */
	cr_assert_eq(m.steals[2] + m.waits[2], 1, "acquire 2: steals %llu "
		     "waits %llu, want one of them", m.steals[2], m.waits[2]);
	assert_stat(st, steals, m.steals[2]);
	cpool_destroy(pool);
	fs_stop(fs);
}

/* 8 threads hammering one endpoint under a cap of 4. */
#define HAMMER_THREADS 8
#define HAMMER_ITERS 400
#define HAMMER_CAP 4

struct hammer {
	struct cpool *pool;
	const char *addr;
	int id;
	int failures;
	char first_failure[160];
};

static void *
hammer_main(void *arg)
{
	struct hammer *h = arg;
	char msg[64];

	for (int i = 0; i < HAMMER_ITERS; i++) {
		struct cpool_conn *c;
		int err = cpool_acquire(h->pool, h->addr, &c);

		if (err == 0) {
			snprintf(msg, sizeof(msg), "thread %d iter %d", h->id,
				 i);
			err = conn_echo(c, msg);
			cpool_release(c, err ? CPOOL_RELEASE_CLOSE : 0);
		}
		if (err && h->failures++ == 0)
			snprintf(h->first_failure, sizeof(h->first_failure),
				 "thread %d iter %d: %d (%s)", h->id, i, err,
				 strerror(-err));
	}
	return NULL;
}

struct sampler {
	struct cpool *pool;
	const char *addr;
	atomic_bool stop;
	unsigned long samples;
	unsigned max_open;
	int bad;
	char first_bad[160];
};

static void *
sampler_main(void *arg)
{
	struct sampler *s = arg;

	while (!atomic_load(&s->stop)) {
		struct cpool_stats st = { .size = sizeof(st) };
		int err = cpool_stats_get(s->pool, s->addr, &st);

		s->samples++;
		if (err == 0 && st.open > s->max_open)
			s->max_open = st.open;
		if ((err || st.open > HAMMER_CAP || st.idle > HAMMER_CAP ||
		     st.leased > HAMMER_CAP) && s->bad++ == 0)
			snprintf(s->first_bad, sizeof(s->first_bad),
				 "err %d open %u idle %u leased %u", err,
				 st.open, st.idle, st.leased);
		sched_yield();
	}
	return NULL;
}

Test(caps, the_cap_holds_under_8_threads_hammering_one_endpoint)
{
	struct fault_server *fs = server_new(FS_INET);
	const char *addr = fs_address(fs);
	struct cpool_config cfg;
	struct cpool *pool;
	struct hammer h[HAMMER_THREADS];
	pthread_t t[HAMMER_THREADS], ts;
	struct sampler s;
	struct cpool_stats st;
	unsigned long long closed[CPOOL_CLOSE_REASON_COUNT] = { 0 };

	cpool_config_init(&cfg); /* one shard per CPU: stealing included */
	cfg.max_conns_per_endpoint = HAMMER_CAP;
	cfg.acquire_timeout_ms = 120000;
	pool = pool_new(&cfg);
	pool_add(pool, addr);

	memset(&s, 0, sizeof(s));
	s.pool = pool;
	s.addr = addr;
	atomic_init(&s.stop, false);
	cr_assert_eq(pthread_create(&ts, NULL, sampler_main, &s), 0);
	for (int i = 0; i < HAMMER_THREADS; i++) {
		h[i] = (struct hammer){ .pool = pool, .addr = addr, .id = i };
		cr_assert_eq(pthread_create(&t[i], NULL, hammer_main, &h[i]),
			     0);
	}
	for (int i = 0; i < HAMMER_THREADS; i++)
		pthread_join(t[i], NULL);
	atomic_store(&s.stop, true);
	pthread_join(ts, NULL);

	for (int i = 0; i < HAMMER_THREADS; i++)
		cr_assert_eq(h[i].failures, 0, "%d failures, first: %s",
			     h[i].failures, h[i].first_failure);
	cr_assert_eq(s.bad, 0, "%d of %lu samples broke the cap, first: %s",
		     s.bad, s.samples, s.first_bad);
	cr_assert_gt(s.samples, 0);

	st = stats_of(pool, addr);
	assert_stat(st, acquires, HAMMER_THREADS * HAMMER_ITERS);
	assert_stat(st, leased, 0);
	cr_assert_eq(st.open, st.idle + st.leased,
		     "at rest open %u != idle %u + leased %u", st.open, st.idle,
		     st.leased);
	cr_assert_leq(st.open, HAMMER_CAP, "open %u over the cap", st.open);
	cr_assert_geq(st.open, 1);
	/* nothing was ever closed, so every connection opened is open */
	assert_closed_only(&st, closed);
	assert_stat(st, connects, st.open);
	assert_stat(st, connect_failures, 0);
	assert_stat(st, timeouts, 0);
	cr_assert_eq(fs_accepted(fs), st.connects,
		     "server accepted %u, pool connected %llu",
		     fs_accepted(fs), (unsigned long long)st.connects);
	cpool_destroy(pool);
	fs_stop(fs);
}
