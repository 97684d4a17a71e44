/* SPDX-License-Identifier: MIT */
/*
 * Peer: a strict FIFO handoff pool. The mutex pool's stack of fds
 * (mutex_pool.c) plus a queue of waiters, each with its own condition
 * variable. A release with anyone waiting hands the connection straight to
 * the oldest waiter and wakes only that one; the stack is used only when
 * nobody waits. So no acquire ever barges past a waiter: while the queue is
 * non-empty the stack is empty, and a newcomer queues at the tail.
 *
 * The fair end of the trade-off: every handoff costs a wake-up and a
 * context switch before the connection is used again, where a barging pool
 * lets the releasing thread (already running) take it back.
 */
#include "bench.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

struct fifo_waiter {
	pthread_cond_t cond;
	struct fifo_waiter *next;
	int fd; /* -1 until a release hands one over */
};

struct fifo_pool {
	pthread_mutex_t lock;
	struct fifo_waiter *head; /* oldest waiter */
	struct fifo_waiter **tail;
	struct sockaddr_in sin;
	unsigned timeout_ms;
	unsigned n; /* idle fds on the stack; 0 while anyone waits */
	unsigned cap;
	int *fds;
};

static void
fifo_deadline(struct timespec *ts, unsigned timeout_ms)
{
	clock_gettime(CLOCK_MONOTONIC, ts);
	ts->tv_sec += timeout_ms / 1000;
	ts->tv_nsec += (long)(timeout_ms % 1000) * 1000000;
	if (ts->tv_nsec >= 1000000000) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000;
	}
}

/* Takes @w out of the queue. Call with the lock held. */
static void
fifo_unlink_locked(struct fifo_pool *fp, struct fifo_waiter *w)
{
	struct fifo_waiter **p;

	for (p = &fp->head; *p; p = &(*p)->next) {
		if (*p != w)
			continue;
		*p = w->next;
		if (fp->tail == &w->next)
			fp->tail = p;
		return;
	}
}

/*
 * An fd from the stack when nobody waits, else queues at the tail and
 * sleeps until a release hands it one or timeout_ms pass (-ETIMEDOUT).
 */
static int
fifo_acquire(struct fifo_pool *fp)
{
	struct fifo_waiter w = { .fd = -1 };
	pthread_condattr_t ca;
	struct timespec ts;
	int fd;

	pthread_mutex_lock(&fp->lock);
	if (!fp->head && fp->n) {
		fd = fp->fds[--fp->n];
		pthread_mutex_unlock(&fp->lock);
		return fd;
	}
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&w.cond, &ca);
	pthread_condattr_destroy(&ca);
	*fp->tail = &w;
	fp->tail = &w.next;
	fifo_deadline(&ts, fp->timeout_ms);
	while (w.fd < 0) {
		if (pthread_cond_timedwait(&w.cond, &fp->lock, &ts) ==
			    ETIMEDOUT &&
		    w.fd < 0) {
			fifo_unlink_locked(fp, &w);
			break;
		}
	}
	fd = w.fd;
	pthread_mutex_unlock(&fp->lock);
	pthread_cond_destroy(&w.cond);
	return fd < 0 ? -ETIMEDOUT : fd;
}

/*
 * Hands @fd to the oldest waiter, or pushes it when nobody waits (a broken
 * one is replaced by a new connection first).
 */
static void
fifo_release(struct fifo_pool *fp, int fd, bool broken)
{
	struct fifo_waiter *w;

	if (broken) {
		close(fd);
		fd = bench_connect(&fp->sin);
		if (fd < 0)
			return; /* the pool shrinks; the bench counts errors */
	}
	pthread_mutex_lock(&fp->lock);
	w = fp->head;
	if (w) {
		fp->head = w->next;
		if (!fp->head)
			fp->tail = &fp->head;
		w->fd = fd;
		pthread_cond_signal(&w->cond);
	} else {
		fp->fds[fp->n++] = fd;
	}
	pthread_mutex_unlock(&fp->lock);
}

static inline int
peer_acquire(void *inst, void *tls, struct bench_lease *l)
{
	int fd = fifo_acquire(inst);

	if (fd < 0)
		return fd;
	l->fd = fd;
	return 0;
}

static inline void
peer_release(void *inst, void *tls, struct bench_lease *l, bool close)
{
	fifo_release(inst, l->fd, close);
}

#define PEER_NO_THREAD_STATE
#define PEER_LEASE_FD
#include "bench_loop.h"

static void
fifo_destroy(void *inst)
{
	struct fifo_pool *fp = inst;

	while (fp->n)
		close(fp->fds[--fp->n]);
	pthread_mutex_destroy(&fp->lock);
	free(fp->fds);
	free(fp);
}

/* Opens @conns connections to the upstream up front. */
static int
fifo_create(const struct bench_env *env, unsigned conns, void **out)
{
	struct fifo_pool *fp;
	int fd;

	fp = calloc(1, sizeof(*fp));
	if (!fp)
		return -ENOMEM;
	fp->fds = calloc(conns, sizeof(int));
	if (!fp->fds) {
		free(fp);
		return -ENOMEM;
	}
	fp->sin = env->sin;
	fp->cap = conns;
	fp->timeout_ms = env->acquire_timeout_ms;
	fp->tail = &fp->head;
	pthread_mutex_init(&fp->lock, NULL);
	while (fp->n < conns) {
		fd = bench_connect(&env->sin);
		if (fd < 0) {
			fifo_destroy(fp);
			return fd;
		}
		fp->fds[fp->n++] = fd;
	}
	*out = fp;
	return 0;
}

const struct peer_ops peer_fifo =
	PEER_OPS("fifo_handoff", fifo_create, fifo_destroy);
