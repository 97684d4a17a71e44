/* SPDX-License-Identifier: MIT */
/*
 * A thread blocked in cpool_acquire() at the cap, for tests of the
 * handoff. It is known to be blocked when it announced the call (eventfd)
 * and its thread is then seen asleep in /proc, and staying asleep for
 * WAITER_PARKED_MS without a context switch (wait_thread_parked()): in its
 * wait, not passing through a contended lock on the way there. It is known
 * to have returned by its own eventfd, and it records when.
 * Static inline, like check.h.
 */
#ifndef CPOOL_TESTS_WAITER_H
#define CPOOL_TESTS_WAITER_H

#include <pthread.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "proc.h"

/* Asleep this long without a wake-up: in its wait, not passing a lock. */
#define WAITER_PARKED_MS 2

static inline int64_t
waiter_now_ns(void)
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
	int err;	/* cpool_acquire()'s */
	struct cpool_conn *c;
	bool reused;
	int64_t t_call_ns, t_ret_ns; /* around cpool_acquire() */
	int nice;	/* the thread's nice value; 0: unchanged */
};

static inline void *
waiter_main(void *arg)
{
	struct waiter *w = arg;

	w->tid = gettid();
	if (w->nice)
		setpriority(PRIO_PROCESS, (id_t)w->tid, w->nice);
	sig_post(w->started);
	w->t_call_ns = waiter_now_ns();
	w->err = cpool_acquire(w->pool, w->addr, &w->c);
	w->t_ret_ns = waiter_now_ns();
	if (w->err == 0)
		w->reused = cpool_conn_reused(w->c);
	sig_post(w->done);
	return NULL;
}

/*
 * Starts a waiter thread at nice value @nice (0: unchanged);
 * waiter_blocked() then waits until it blocks.
 */
static inline void
waiter_spawn(struct waiter *w, struct cpool *pool, const char *addr, int nice)
{
	int err;

	memset(w, 0, sizeof(*w));
	w->pool = pool;
	w->addr = addr;
	w->nice = nice;
	w->started = sig_new();
	w->done = sig_new();
	cr_assert_geq(w->started, 0);
	cr_assert_geq(w->done, 0);
	err = pthread_create(&w->thread, NULL, waiter_main, w);
	cr_assert_eq(err, 0, "pthread_create: %s", strerror(err));
}

/* Returns once the waiter is blocked inside cpool_acquire(). */
static inline void
waiter_blocked(struct waiter *w)
{
	cr_assert_eq(sig_wait(w->started, WAIT_MS), 0,
		     "the waiter thread never started");
	cr_assert_eq(wait_thread_parked(w->tid, WAITER_PARKED_MS, WAIT_MS), 0,
		     "the waiter never blocked in cpool_acquire");
	cr_assert_not(sig_pending(w->done),
		      "cpool_acquire returned at the cap instead of waiting: "
		      "%d (%s)", w->err, strerror(-w->err));
}

/*
 * Starts a waiter at nice value @nice (0: unchanged) and returns once it
 * is blocked inside cpool_acquire().
 */
static inline void
waiter_start(struct waiter *w, struct cpool *pool, const char *addr, int nice)
{
	waiter_spawn(w, pool, addr, nice);
	waiter_blocked(w);
}

/* Waits up to @timeout_ms for the waiter's return: 0 or -ETIMEDOUT. */
static inline int
waiter_wait(struct waiter *w, int timeout_ms)
{
	return sig_wait(w->done, timeout_ms);
}

/* After waiter_wait() returned 0: joins the thread, closes its signals. */
static inline void
waiter_join(struct waiter *w)
{
	pthread_join(w->thread, NULL);
	close(w->started);
	close(w->done);
}

#endif /* CPOOL_TESTS_WAITER_H */
