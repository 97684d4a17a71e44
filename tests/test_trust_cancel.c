/* SPDX-License-Identifier: MIT */
/*
 * pthread_cancel() of a thread blocked in cpool_acquire() at the cap: the
 * thread ends (joins within a second), leaves no lock held and no waiter
 * queued, so the next release returns, and the released connection goes
 * to the next acquire, or to the waiter still queued, at once.
 *
 * A waiter is known to be blocked when it announced its call and its
 * thread is then seen parked in /proc (tests/util/waiter.h). Every call
 * that a broken pool could leave hanging (the release, the acquire after
 * it) runs in a helper thread waited for with a deadline
 * (call_with_deadline()): a hang is reported as a failure, and the hung
 * thread is left behind for the test process's exit.
 */
#include <criterion/criterion.h>
#include <stdio.h>

#include "util/check.h"
#include "util/proc.h"
#include "util/waiter.h"

/* TestSuite(trust) is declared once, in test_trust_races.c. */

/* What must take microseconds, on a loaded machine. */
#define CANCEL_BOUND_MS 1000
#define CANCEL_TIMEOUT_MS 30000

static struct cpool *
cap_one_pool(void)
{
	struct cpool_config cfg = config_one_shard();

	cfg.max_conns_per_endpoint = 1;
	cfg.acquire_timeout_ms = CANCEL_TIMEOUT_MS;
	return pool_new(&cfg);
}

static void
release_call(void *arg)
{
	cpool_release(arg, 0);
}

struct acquire_call {
	struct cpool *pool;
	const char *addr;
	struct cpool_conn *c;
	int err;
};

static void
acquire_call(void *arg)
{
	struct acquire_call *a = arg;

	a->err = cpool_acquire(a->pool, a->addr, &a->c);
}

/* Cancels a blocked waiter and joins it within the bound. */
static void
cancel_waiter(struct waiter *w)
{
	int err;

	cr_assert_eq(pthread_cancel(w->thread), 0);
	err = join_with_deadline(w->thread, CANCEL_BOUND_MS);
	cr_assert_eq(err, 0,
		     "the cancelled thread did not end within %d ms",
		     CANCEL_BOUND_MS);
	cr_assert_not(sig_pending(w->done),
		      "cpool_acquire returned %d instead of being cancelled",
		      w->err);
	close(w->started);
	close(w->done);
}

/* cpool_release() from a helper thread, asserted to return in time. */
static void
release_within_bound(struct cpool_conn *c, const char *when)
{
	int64_t t0 = now_ms();
	int err = call_with_deadline(release_call, c, CANCEL_BOUND_MS);

	cr_assert_eq(err, 0, "cpool_release %s did not return within %d ms "
		     "(still blocked after %lld ms)",
		     when, CANCEL_BOUND_MS, (long long)(now_ms() - t0));
}

Test(trust, cancelling_a_waiting_acquire_leaves_the_pool_usable, .timeout = 60)
{
	struct fault_server *fs = server_new(FS_INET);
	const char *addr = fs_address(fs);
	struct cpool *pool = cap_one_pool();
	struct acquire_call *a = calloc(1, sizeof(*a)); /* may outlive us */
	struct cpool_conn *c;
	struct cpool_stats st;
	struct waiter w;
	int fd, err;

	cr_assert_not_null(a);
	pool_add(pool, addr);
	c = lease(pool, addr);
	fd = cpool_conn_fd(c);
	waiter_start(&w, pool, addr, 0);
	cancel_waiter(&w);

	release_within_bound(c, "after a waiter was cancelled");
	*a = (struct acquire_call){ .pool = pool, .addr = addr };
	err = call_with_deadline(acquire_call, a, CANCEL_BOUND_MS);
	cr_assert_eq(err, 0,
		     "cpool_acquire after the cancel did not return within "
		     "%d ms", CANCEL_BOUND_MS);
	cr_assert_eq(a->err, 0, "cpool_acquire after the cancel: %d (%s)",
		     a->err, strerror(-a->err));
	cr_assert(cpool_conn_reused(a->c), "the pooled connection was not "
		  "handed out");
	cr_assert_eq(cpool_conn_fd(a->c), fd);
	assert_echo(a->c, "after the cancel");
	cpool_release(a->c, 0);
	st = stats_of(pool, addr);
	assert_stat(st, timeouts, 0);
	assert_stat(st, connects, 1);
	assert_stat(st, open, 1);
	assert_stat(st, idle, 1);
	cpool_destroy(pool);
	fs_stop(fs);
	free(a);
}

Test(trust, cancelling_one_of_two_waiters_lets_the_other_get_the_release,
     .timeout = 60)
{
	struct fault_server *fs = server_new(FS_INET);
	const char *addr = fs_address(fs);
	struct cpool *pool = cap_one_pool();
	struct cpool_conn *c;
	struct cpool_stats st;
	struct waiter w[2];
	int fd, err;

	pool_add(pool, addr);
	c = lease(pool, addr);
	fd = cpool_conn_fd(c);
	waiter_start(&w[0], pool, addr, 0); /* queued first */
	waiter_start(&w[1], pool, addr, 0);
	cancel_waiter(&w[0]);
	cr_assert_not(sig_pending(w[1].done),
		      "the other waiter returned %d when the first was "
		      "cancelled", w[1].err);

	release_within_bound(c, "after the first waiter was cancelled");
	err = waiter_wait(&w[1], CANCEL_BOUND_MS);
	cr_assert_eq(err, 0,
		     "the remaining waiter did not get the released connection "
		     "within %d ms", CANCEL_BOUND_MS);
	waiter_join(&w[1]);
	cr_assert_eq(w[1].err, 0, "the remaining waiter: %d (%s)", w[1].err,
		     strerror(-w[1].err));
	cr_assert_eq(cpool_conn_fd(w[1].c), fd);
	assert_echo(w[1].c, "the remaining waiter");
	cpool_release(w[1].c, 0);
	st = stats_of(pool, addr);
	assert_stat(st, timeouts, 0);
	assert_stat(st, connects, 1);
	assert_stat(st, idle, 1);
	cpool_destroy(pool);
	fs_stop(fs);
}
