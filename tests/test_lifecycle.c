/* SPDX-License-Identifier: MIT */
/*
 * Endings with work in flight: an endpoint removed while its connections
 * are leased, a pool destroyed with leases out (while its workers prewarm),
 * acquires racing cpool_shutdown() on 8 threads, waiters at the cap woken
 * by cpool_destroy(). Leases always stay usable until their release, which
 * closes them; nothing leaks (fd counts, ASan).
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <unistd.h>

#include "util/check.h"
#include "util/waitfor.h"
#include "util/leakcheck.h"

TestSuite(lifecycle, .timeout = 60, .fini = leak_fini);

Test(lifecycle, removal_with_leases_out_refuses_new_acquires_and_closes_at_release)
{
	struct fault_server *fs = server_new(FS_INET);
	const char *addr = fs_address(fs);
	struct cpool_config cfg = config_one_shard();
	struct cpool_conn *a, *b, *c, *d, *none = NULL;
	struct cpool_stats st, all;
	struct cpool *pool;

	/* At the cap with a long wait: a removed endpoint must not block. */
	cfg.max_conns_per_endpoint = 3;
	cfg.acquire_timeout_ms = 60000;
	pool = pool_new(&cfg);
	pool_add(pool, addr);
	a = lease(pool, addr);
	b = lease(pool, addr);
	c = lease(pool, addr);
	assert_echo(b, "b");
	cpool_release(b, 0);
	cr_assert_eq(fs_wait_open(fs, 3, WAIT_MS), 0);

	assert_ret(cpool_endpoint_remove(pool, addr), 0);
	assert_ret(cpool_acquire(pool, addr, &none), -ENOENT);
	cr_assert_null(none);
	assert_ret(cpool_endpoint_remove(pool, addr), -ENOENT);
	st.size = sizeof(st);
	assert_ret(cpool_stats_get(pool, addr, &st), -ENOENT);
	/* The idle one is closed by the time remove returns. */
	all = stats_of(pool, NULL);
	assert_stat(all, closed[CPOOL_CLOSE_SHUTDOWN], 1);
	assert_stat(all, open, 2);
	assert_stat(all, leased, 2);
	assert_stat(all, idle, 0);
	assert_stat(all, acquires, 3);
	cr_assert_eq(fs_wait_open(fs, 2, WAIT_MS), 0,
		     "server holds %u connections, want the 2 leased",
		     fs_open(fs));

	/* The leases still work. */
	assert_echo(a, "a after removal");
	assert_echo(c, "c after removal");

	/* The same address is back at once, with its own connections. */
	pool_add(pool, addr);
	d = lease(pool, addr);
	cr_assert_not(cpool_conn_reused(d));
	assert_echo(d, "d");
	st = stats_of(pool, addr);
	assert_stat(st, acquires, 1);
	assert_stat(st, connects, 1);
	assert_stat(st, open, 1);

	/* Releases of the old endpoint's leases close them. */
	cpool_release(a, 0);
	cpool_release(c, 0);
	cpool_release(d, 0);
	all = stats_of(pool, NULL);
	assert_stat(all, closed[CPOOL_CLOSE_SHUTDOWN], 3);
	assert_stat(all, acquires, 4);
	assert_stat(all, connects, 4);
	assert_stat(all, open, 1);
	assert_stat(all, idle, 1);
	assert_stat(all, leased, 0);
	assert_balanced(&all);
	st = stats_of(pool, addr);
	assert_stat(st, acquires, 1);
	assert_stat(st, idle, 1);
	cr_assert_eq(fs_wait_open(fs, 1, WAIT_MS), 0,
		     "server holds %u connections, want only d", fs_open(fs));

	/*
	 * The old endpoint is freed after its last connection and a grace
	 * period; the whole pool keeps its counters across that.
	 */
	cpool_release(lease(pool, addr), 0);
	all = stats_of(pool, NULL);
	assert_stat(all, acquires, 5);
	assert_stat(all, closed[CPOOL_CLOSE_SHUTDOWN], 3);
	cpool_destroy(pool);
	fs_stop(fs);
}

Test(lifecycle, destroy_with_leases_out_keeps_them_working_and_their_release_frees_all)
{
	struct fault_server *fs = server_new(FS_INET);
	const char *addr = fs_address(fs);
	struct cpool_config cfg;
	struct cpool_conn *c[2];
	struct cpool_stats st;
	struct cpool *pool;
	int base, n;

	cpool_config_init(&cfg);
	cfg.workers = 2;
	cfg.min_idle_per_endpoint = 2;
	base = count_open_fds();
	pool = pool_new(&cfg);
	pool_add(pool, addr);
	c[0] = lease(pool, addr);
	c[1] = lease(pool, addr);
	/* two leased, and the workers refill the idle set to 2 */
	assert_stats_wait(pool, addr, st, st.idle == 2 && st.open == 4, 5000);
	cr_assert_eq(fs_wait_open(fs, 4, WAIT_MS), 0);

	cpool_destroy(pool);
	cr_assert_eq(fs_wait_open(fs, 2, WAIT_MS), 0,
		     "server holds %u connections, want the 2 leased",
		     fs_open(fs));
	/*
	 * Only the two leases' fds remain (and the fault server's ends of
	 * them, in this process too), plus each stopped worker's epoll and
	 * eventfd and the pool's /dev/null: the pool object, which owns
	 * them, is freed with the last lease (a connect racing shutdown may
	 * still register with them). Workers and idle connections are gone.
	 */
	n = count_open_fds();
	cr_assert_eq(n, base + 2 * 2 + 2 * 2 + 1,
		     "fds after destroy: %d, want %d + 2 leases x 2 ends + "
		     "2 workers x (epoll + eventfd) + /dev/null", n, base);
	assert_echo(c[0], "request after destroy");
	assert_echo(c[1], "another after destroy");
	cpool_release(c[0], 0);
	cpool_release(c[1], CPOOL_RELEASE_CLOSE);
	cr_assert_eq(fs_wait_open(fs, 0, WAIT_MS), 0);
	n = count_open_fds();
	cr_assert_eq(n, base, "fds after the releases: %d, want %d", n, base);
	fs_stop(fs);
}

/* ---- acquire racing cpool_shutdown() -------------------------------- */

#define RACERS 8

struct racer {
	pthread_t tid;
	struct cpool *pool;
	const char *addr;
	atomic_uint *laps;
	uint64_t acquired;
	int end_err;	/* what the final acquire returned */
	int echo_err;	/* first failed request, 0 if none */
};

static void *
racer_main(void *arg)
{
	struct racer *r = arg;
	struct cpool_conn *c;
	int err;

	for (;;) {
		err = cpool_acquire(r->pool, r->addr, &c);
		if (err) {
			r->end_err = err;
			return NULL;
		}
		r->acquired++;
		err = conn_echo(c, "racing");
		if (err && !r->echo_err)
			r->echo_err = err;
		/* every other lease closed: acquires keep connecting too */
		cpool_release(c, err || r->acquired % 2 ? CPOOL_RELEASE_CLOSE
							: 0);
		atomic_fetch_add(r->laps, 1);
	}
}

Test(lifecycle, acquires_racing_shutdown_on_8_threads_all_end_with_eshutdown)
{
	struct fault_server *fs = server_new(FS_INET);
	const char *addr = fs_address(fs);
	struct cpool_config cfg;
	struct racer r[RACERS];
	struct cpool_stats st;
	struct cpool *pool;
	struct cpool_conn *c = NULL;
	atomic_uint laps = 0;
	uint64_t acquired = 0;
	int base, n;

	cpool_config_init(&cfg);
	cfg.workers = 2;
	base = count_open_fds();
	pool = pool_new(&cfg);
	pool_add(pool, addr);
	for (int i = 0; i < RACERS; i++) {
		r[i] = (struct racer){ .pool = pool, .addr = addr,
				       .laps = &laps };
		cr_assert_eq(pthread_create(&r[i].tid, NULL, racer_main, &r[i]),
			     0);
	}
	/* Mid-run: every thread going round. */
	while (atomic_load(&laps) < 2000)
		pause_1ms();
	cpool_shutdown(pool);
	for (int i = 0; i < RACERS; i++)
		pthread_join(r[i].tid, NULL);
	for (int i = 0; i < RACERS; i++) {
		cr_assert_eq(r[i].end_err, -ESHUTDOWN,
			     "thread %d ended with %d (%s), want -ESHUTDOWN",
			     i, r[i].end_err, strerror(-r[i].end_err));
		cr_assert_eq(r[i].echo_err, 0,
			     "thread %d: a request failed with %d (%s)", i,
			     r[i].echo_err, strerror(-r[i].echo_err));
		acquired += r[i].acquired;
	}

	/* Shut down: every call fails, the whole pool's stats stay. */
	assert_ret(cpool_acquire(pool, addr, &c), -ESHUTDOWN);
	assert_ret(cpool_endpoint_add(pool, "127.0.0.1:1"), -ESHUTDOWN);
	assert_ret(cpool_endpoint_remove(pool, addr), -ESHUTDOWN);
	st = stats_of(pool, NULL);
	assert_stat(st, acquires, acquired);
	assert_stat(st, open, 0);
	assert_stat(st, leased, 0);
	assert_stat(st, idle, 0);
	assert_balanced(&st);
	cr_log_info("shutdown race: %llu acquires, %llu closed by shutdown",
		    (unsigned long long)acquired,
		    (unsigned long long)st.closed[CPOOL_CLOSE_SHUTDOWN]);
	cpool_destroy(pool);
	cr_assert_eq(fs_wait_open(fs, 0, WAIT_MS), 0,
		     "server holds %u connections", fs_open(fs));
	n = count_open_fds();
	cr_assert_eq(n, base, "fds after destroy: %d, want %d", n, base);
	fs_stop(fs);
}

/*
 * An acquire that is opening a connection when cpool_shutdown() runs: held
 * inside on_connect (after the TCP connect, before the connection is
 * registered with a worker) until shutdown has returned. Destroy's and
 * shutdown's contract: acquires already running return -ESHUTDOWN or the
 * lease they got, nothing else.
 */
struct gate {
	int entered;	/* posted by the handshake once it runs */
	int go;		/* posted by the test to let it finish */
};

static int
held_handshake(int fd, const char *address, void *user_data)
{
	struct gate *g = user_data;

	sig_post(g->entered);
	return sig_wait(g->go, 6 * WAIT_MS) ? -ETIMEDOUT : 0;
}

struct connecting {
	pthread_t tid;
	struct cpool *pool;
	const char *addr;
	int err;
	struct cpool_conn *c;
};

static void *
connecting_main(void *arg)
{
	struct connecting *t = arg;

	t->err = cpool_acquire(t->pool, t->addr, &t->c);
	return NULL;
}

Test(lifecycle, an_acquire_connecting_while_shutdown_runs_gets_eshutdown_or_a_lease)
{
	struct fault_server *fs = server_new(FS_INET);
	const char *addr = fs_address(fs);
	struct cpool_config cfg = config_one_shard();
	struct gate g = { sig_new(), sig_new() };
	struct connecting t = { .err = 1 };
	struct cpool_stats st;
	struct cpool *pool;
	int base, n;

	cr_assert(g.entered >= 0 && g.go >= 0);
	cfg.on_connect = held_handshake;
	cfg.user_data = &g;
	cfg.connect_timeout_ms = 6 * WAIT_MS;
	base = count_open_fds();
	pool = pool_new(&cfg);
	pool_add(pool, addr);
	t.pool = pool;
	t.addr = addr;
	cr_assert_eq(pthread_create(&t.tid, NULL, connecting_main, &t), 0);
	cr_assert_eq(sig_wait(g.entered, WAIT_MS), 0, "on_connect never ran");

	cpool_shutdown(pool); /* does not wait for the acquire */
	sig_post(g.go);
	pthread_join(t.tid, NULL);
	cr_assert(t.err == -ESHUTDOWN || (t.err == 0 && t.c),
		  "an acquire running across shutdown returned %d (%s), "
		  "want -ESHUTDOWN or a lease",
		  t.err, strerror(-t.err));
	if (t.err == 0) {
		assert_echo(t.c, "lease across shutdown");
		cpool_release(t.c, 0);
	}
	st = stats_of(pool, NULL);
	assert_stat(st, open, 0);
	assert_balanced(&st);
	cpool_destroy(pool);
	/* on_connect ran: the connection was made, and the server thread
	 * may accept it only now, after the pool closed its end. */
	cr_assert_eq(fs_wait_accepted(fs, 1, WAIT_MS), 0);
	cr_assert_eq(fs_wait_open(fs, 0, WAIT_MS), 0);
	n = count_open_fds();
	cr_assert_eq(n, base, "fds after destroy: %d, want %d", n, base);
	close(g.entered);
	close(g.go);
	fs_stop(fs);
}

/* ---- waiters woken by destroy ---------------------------------------- */

#define WAITERS 8

struct blocked {
	pthread_t tid;
	struct cpool *pool;
	const char *addr;
	int ready;	/* eventfd: posted with the thread's tid known */
	pid_t kernel_tid;
	int err;
	struct cpool_conn *c;
};

static void *
blocked_main(void *arg)
{
	struct blocked *b = arg;

	b->kernel_tid = gettid();
	sig_post(b->ready);
	b->err = cpool_acquire(b->pool, b->addr, &b->c);
	return NULL;
}

Test(lifecycle, destroy_wakes_8_waiters_at_the_cap_with_eshutdown)
{
	struct fault_server *fs = server_new(FS_INET);
	const char *addr = fs_address(fs);
	struct cpool_config cfg = config_one_shard();
	struct blocked w[WAITERS];
	struct cpool_conn *mine;
	struct cpool_stats st;
	struct cpool *pool;
	int base, n;

	cfg.max_conns_per_endpoint = 1;
	cfg.acquire_timeout_ms = 60000;
	base = count_open_fds();
	pool = pool_new(&cfg);
	pool_add(pool, addr);
	mine = lease(pool, addr);
	for (int i = 0; i < WAITERS; i++) {
		w[i] = (struct blocked){ .pool = pool, .addr = addr,
					 .ready = sig_new(), .err = 1 };
		cr_assert_geq(w[i].ready, 0);
		cr_assert_eq(pthread_create(&w[i].tid, NULL, blocked_main,
					    &w[i]),
			     0);
	}
	for (int i = 0; i < WAITERS; i++)
		cr_assert_eq(sig_wait(w[i].ready, WAIT_MS), 0);
	assert_stats_wait(pool, addr, st, st.waits == WAITERS, WAIT_MS);
	for (int i = 0; i < WAITERS; i++)
		cr_assert_eq(wait_thread_sleeping(w[i].kernel_tid, WAIT_MS), 0,
			     "waiter %d is not blocked", i);
	assert_stat(st, acquires, 1);
	assert_stat(st, timeouts, 0);

	cpool_destroy(pool);
	for (int i = 0; i < WAITERS; i++) {
		pthread_join(w[i].tid, NULL);
		cr_assert_eq(w[i].err, -ESHUTDOWN,
			     "waiter %d: got %d (%s), want -ESHUTDOWN", i,
			     w[i].err, strerror(-w[i].err));
		cr_assert_null(w[i].c);
		close(w[i].ready);
	}
	/* The lease outlived its pool; its release frees the rest. */
	assert_echo(mine, "after destroy");
	cpool_release(mine, 0);
	cr_assert_eq(fs_wait_open(fs, 0, WAIT_MS), 0);
	n = count_open_fds();
	cr_assert_eq(n, base, "fds after the release: %d, want %d", n, base);
	fs_stop(fs);
}
