/* SPDX-License-Identifier: MIT */
/*
 * The pool and a host that uses liburcu (urcu-memb) itself.
 *
 *  - An idle pool does not slow the host's grace periods: its workers are
 *    not inside a read-side section while they sleep, so a host thread's
 *    urcu_memb_synchronize_rcu() takes microseconds, not a worker tick.
 *    The timing runs in threads of their own that register with urcu-memb
 *    themselves and never call the pool (see the next item for why).
 *
 *  - A thread may use the pool and urcu-memb in either order: calling the
 *    pool first and then registering with urcu-memb, or registering first,
 *    calling the pool, unregistering and calling it again. A broken pool
 *    makes liburcu abort, so each order runs in a forked child that
 *    starts its own fault server and pool, then runs the order in a fresh
 *    thread (one that has not touched the pool); the child reports each step
 *    on a pipe, and the parent waits for its exit with a deadline and
 *    prints the steps, the failure and the signal, if any.
 */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>
#include <stdlib.h>
#include <urcu/urcu-memb.h>

#include "util/check.h"
#include "util/proc.h"
#include "util/waitfor.h"

/* TestSuite(trust) is declared once, in test_trust_races.c. */

/* ---- grace periods ---------------------------------------------------- */

/*
 * 100 grace periods in 5 batches of 20, each batch from a fresh host
 * thread, 20 ms apart: a sample spread over time, so that one moment of
 * the workers (seen on today's library: a run whose first batch alone
 * was fast) does not decide the median.
 */
#define GP_BATCHES 5
#define GP_PER_BATCH 20
#define GP_CALLS (GP_BATCHES * GP_PER_BATCH)
#define GP_BATCH_GAP_MS 20

struct gp_timing {
	int64_t *ns; /* GP_PER_BATCH entries */
};

static int
cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return (x > y) - (x < y);
}

static int64_t
mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* A host thread: registered with urcu-memb by the host, never by cpool. */
static void *
gp_main(void *arg)
{
	struct gp_timing *t = arg;

	urcu_memb_register_thread();
	for (int i = 0; i < GP_PER_BATCH; i++) {
		int64_t t0 = mono_ns();

		urcu_memb_synchronize_rcu();
		t->ns[i] = mono_ns() - t0;
	}
	urcu_memb_unregister_thread();
	return NULL;
}

Test(trust, an_idle_pool_does_not_slow_the_hosts_grace_periods,
     .timeout = 60)
{
	struct fault_server *fs = server_new(FS_INET);
	const char *addr = fs_address(fs);
	struct cpool_config cfg;
	struct cpool_conn *c[4];
	static int64_t ns[GP_CALLS];
	struct gp_timing t;
	struct cpool_stats st;
	struct cpool *pool;
	pthread_t th;
	int64_t median, max;

	cpool_config_init(&cfg); /* a worker per CPU */
	pool = pool_new(&cfg);
	pool_add(pool, addr);
	for (int i = 0; i < 4; i++)
		c[i] = lease(pool, addr);
	for (int i = 0; i < 4; i++)
		cpool_release(c[i], 0);
	st = stats_of(pool, addr);
	assert_stat(st, idle, 4);

	for (int b = 0; b < GP_BATCHES; b++) {
		if (b)
			pause_ms(GP_BATCH_GAP_MS); /* spread: see GP_BATCHES */
		t.ns = ns + b * GP_PER_BATCH;
		cr_assert_eq(pthread_create(&th, NULL, gp_main, &t), 0);
		cr_assert_eq(join_with_deadline(th, 30000), 0,
			     "%d grace periods took more than 30 s",
			     GP_PER_BATCH);
	}
	qsort(ns, GP_CALLS, sizeof(ns[0]), cmp_i64);
	median = ns[GP_CALLS / 2];
	max = ns[GP_CALLS - 1];
	cr_log_info("urcu_memb_synchronize_rcu with an idle pool: median "
		    "%.1f us, max %.1f us over %d calls",
		    median / 1e3, max / 1e3, GP_CALLS);
	cr_assert_lt(median, 1000000,
		     "urcu_memb_synchronize_rcu() with an idle pool: median "
		     "%.1f us (max %.1f us) over %d calls, want < 1000 us "
		     "(a grace period should not wait for a worker tick)",
		     median / 1e3, max / 1e3, GP_CALLS);
	cpool_destroy(pool);
	fs_stop(fs);
}

/* ---- a host that uses liburcu itself ---------------------------------- */

/*
 * Child side. Every step is announced first, so that a child killed by
 * liburcu's assertion shows where. Returns 0, or 1 after saying why.
 */
#define STEP(wfd, what) child_say((wfd), "step: %s", (what))
#define CHILD_CHECK(wfd, cond, ...)                                        \
	do {                                                               \
		if (!(cond)) {                                             \
			child_say((wfd), "FAILED: " __VA_ARGS__);          \
			return 1;                                          \
		}                                                          \
	} while (0)

/* One lease, an echo, a release; 0 or the first error. */
static int
child_use_pool(struct cpool *pool, const char *addr, const char *msg)
{
	struct cpool_conn *c;
	int err = cpool_acquire(pool, addr, &c);

	if (err)
		return err;
	err = conn_echo(c, msg);
	cpool_release(c, err ? CPOOL_RELEASE_CLOSE : 0);
	return err;
}

struct child_env {
	struct fault_server *fs;
	struct cpool *pool;
};

static int
child_setup(struct child_env *env, int wfd)
{
	int err;

	STEP(wfd, "fault server and pool in the child");
	env->fs = fs_start(FS_INET);
	CHILD_CHECK(wfd, env->fs, "fs_start: %s", strerror(errno));
	err = cpool_create(NULL, &env->pool);
	CHILD_CHECK(wfd, err == 0, "cpool_create: %d (%s)", err,
		    strerror(-err));
	err = cpool_endpoint_add(env->pool, fs_address(env->fs));
	CHILD_CHECK(wfd, err == 0, "cpool_endpoint_add: %d (%s)", err,
		    strerror(-err));
	return 0;
}

static int
seq_pool_then_urcu(struct child_env *e, int wfd)
{
	const char *addr = fs_address(e->fs);
	int err;

	STEP(wfd, "cpool_acquire + echo + cpool_release");
	err = child_use_pool(e->pool, addr, "before the host registers");
	CHILD_CHECK(wfd, err == 0, "first lease: %d (%s)", err, strerror(-err));
	STEP(wfd, "urcu_memb_register_thread()");
	urcu_memb_register_thread();
	STEP(wfd, "urcu_memb_read_lock() / urcu_memb_read_unlock()");
	urcu_memb_read_lock();
	urcu_memb_read_unlock();
	STEP(wfd, "urcu_memb_synchronize_rcu()");
	urcu_memb_synchronize_rcu();
	STEP(wfd, "cpool_acquire + echo + cpool_release, host-registered");
	err = child_use_pool(e->pool, addr, "while the host is registered");
	CHILD_CHECK(wfd, err == 0, "lease while registered: %d (%s)", err,
		    strerror(-err));
	STEP(wfd, "urcu_memb_unregister_thread()");
	urcu_memb_unregister_thread();
	STEP(wfd, "cpool_acquire + echo + cpool_release, after unregister");
	err = child_use_pool(e->pool, addr, "after the host unregistered");
	CHILD_CHECK(wfd, err == 0, "lease after unregister: %d (%s)", err,
		    strerror(-err));
	return 0;
}

static int
seq_urcu_then_pool(struct child_env *e, int wfd)
{
	const char *addr = fs_address(e->fs);
	int err;

	STEP(wfd, "urcu_memb_register_thread()");
	urcu_memb_register_thread();
	STEP(wfd, "cpool_acquire + echo + cpool_release, host-registered");
	err = child_use_pool(e->pool, addr, "registered by the host");
	CHILD_CHECK(wfd, err == 0, "lease while registered: %d (%s)", err,
		    strerror(-err));
	STEP(wfd, "urcu_memb_read_lock() / unlock, urcu_memb_synchronize_rcu()");
	urcu_memb_read_lock();
	urcu_memb_read_unlock();
	urcu_memb_synchronize_rcu();
	STEP(wfd, "urcu_memb_unregister_thread()");
	urcu_memb_unregister_thread();
	STEP(wfd, "cpool_acquire + echo + cpool_release, after unregister");
	err = child_use_pool(e->pool, addr, "after the host unregistered");
	CHILD_CHECK(wfd, err == 0, "lease after unregister: %d (%s)", err,
		    strerror(-err));
	STEP(wfd, "urcu_memb_register_thread() again");
	urcu_memb_register_thread();
	urcu_memb_synchronize_rcu();
	urcu_memb_unregister_thread();
	return 0;
}

typedef int seq_fn(struct child_env *e, int wfd);

struct seq_run {
	seq_fn *fn;
	struct child_env *env;
	int wfd;
	int rc;
};

static void *
seq_main(void *arg)
{
	struct seq_run *r = arg;

	r->rc = r->fn(r->env, r->wfd);
	return NULL;
}

/*
 * Child: sets up (this thread uses cpool, so it is registered already),
 * then runs the sequence in a fresh thread, which has not touched urcu-memb
 * nor the pool yet.
 */
static int
child_main(void *arg, int wfd)
{
	struct seq_run r = { .fn = (seq_fn *)arg, .wfd = wfd };
	struct child_env env;
	pthread_t t;

	if (child_setup(&env, wfd))
		return 1;
	r.env = &env;
	CHILD_CHECK(wfd, pthread_create(&t, NULL, seq_main, &r) == 0,
		    "pthread_create");
	pthread_join(t, NULL);
	if (r.rc)
		return r.rc;
	STEP(wfd, "cpool_destroy");
	cpool_destroy(env.pool);
	fs_stop(env.fs);
	STEP(wfd, "done");
	return 0;
}

/* Runs @fn in a fresh thread of a child; asserts it ran to its end. */
static void
check_child(seq_fn *fn, const char *what)
{
	struct child ch;
	int err;

#if defined(__SANITIZE_THREAD__)
	/*
	 * TSan cannot follow threads started after a multi-threaded fork:
	 * run the sequence in this test's own process (Criterion's), where an
	 * abort still fails only this test.
	 */
	char said[4096];
	int p[2], rc;
	ssize_t n;

	cr_assert_eq(pipe2(p, O_CLOEXEC | O_NONBLOCK), 0);
	rc = child_main((void *)fn, p[1]);
	n = read(p[0], said, sizeof(said) - 1);
	said[n > 0 ? n : 0] = '\0';
	close(p[0]);
	close(p[1]);
	cr_assert_eq(rc, 0, "%s: the sequence ended with %d; it said:\n%s",
		     what, rc, said);
	return;
#endif
	err = child_start(&ch, child_main, (void *)fn);

	cr_assert_eq(err, 0, "fork: %s", strerror(-err));
	child_wait(&ch, 20000);
	cr_assert(child_ok(&ch), "%s: the child %s; it said:\n%s", what,
		  child_how(&ch), ch.said);
}

Test(trust, a_thread_may_register_with_urcu_memb_after_using_the_pool,
     .timeout = 60)
{
	check_child(seq_pool_then_urcu,
		    "cpool first, then urcu_memb_register_thread()");
}

Test(trust, a_thread_registered_with_urcu_memb_may_use_the_pool,
     .timeout = 60)
{
	check_child(seq_urcu_then_pool,
		    "urcu_memb_register_thread() first, then cpool");
}
