/* SPDX-License-Identifier: MIT */
/*
 * Waiters. Each waiter sleeps on its own condition variable, queued FIFO
 * under ep->wait_lock; nwaiters changes only under that lock and equals the
 * queue length whenever the lock is free. Lock order: wait_lock, then an
 * idle list's spinlock; releasers drop their list lock before taking
 * wait_lock.
 *
 * Handoff with bounded barging: a release that finds waiters pools its
 * connection and wakes the oldest waiter to compete for it, so a thread
 * already running (typically the releaser itself, acquiring again) may take
 * it first and nobody pays a context switch per lease. A waiter that has
 * waited CPOOL_BARGE_NS gets the next release handed to it directly instead,
 * so barging never starves anyone into a timeout. Either way one waiter is
 * woken per release: no herd.
 *
 * Why no release is lost: a waiter increments nwaiters before its last look
 * at the idle lists (under each list's lock); a releaser reads nwaiters
 * under the list lock it pushes under. Whichever takes that list lock
 * second sees the other. Slots pair the same way with sequentially
 * consistent atomics (cpool__ep_slot_put()).
 */
#include "wait.h"

#include <errno.h>

#include "endpoint.h"
#include "shard.h"

/* How long a waiter lets running threads take connections before it. */
#define CPOOL_BARGE_NS 10000000ull

struct cpool_waiter {
	struct cds_list_head link;
	pthread_cond_t cond;
	struct cpool_conn *conn;
	int got;	  /* 0 = nothing yet, CPOOL_WAIT_*, or -errno */
	bool kicked;	  /* a release pooled a connection and woke us */
	uint64_t since_ns; /* when it started waiting */
};

static void
waiter_unlink_locked(struct cpool_endpoint *ep, struct cpool_waiter *w)
{
	cds_list_del(&w->link);
	__atomic_sub_fetch(&ep->nwaiters, 1, __ATOMIC_SEQ_CST);
}

int
cpool__wait(struct cpool_endpoint *ep, uint64_t deadline_ns,
	    struct cpool_conn **out)
{
	struct cpool_waiter w = { .got = 0 };
	pthread_condattr_t attr;
	struct timespec ts;
	int got, rc;

	pthread_mutex_lock(&ep->wait_lock);
	if (LOAD(&ep->closing)) {
		got = LOAD(&ep->close_err);
		pthread_mutex_unlock(&ep->wait_lock);
		return got;
	}
	__atomic_add_fetch(&ep->nwaiters, 1, __ATOMIC_SEQ_CST);
	if (cpool__ep_slot_get(ep)) {
		got = CPOOL_WAIT_SLOT;
		goto undo;
	}
	*out = cpool__shard_take_any(ep);
	if (*out) {
		got = CPOOL_WAIT_CONN;
		goto undo;
	}

	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_cond_init(&w.cond, &attr);
	pthread_condattr_destroy(&attr);
	w.since_ns = cpool__now_ns();
	cds_list_add_tail(&w.link, &ep->waiters);
	cpool__ns_to_timespec(deadline_ns, &ts);
	while (!w.got) {
		rc = pthread_cond_timedwait(&w.cond, &ep->wait_lock, &ts);
		if (!w.got && w.kicked) {
			/* A release pooled one for us; a running thread may
			 * have taken it first. */
			w.kicked = false;
			*out = cpool__shard_take_any(ep);
			if (*out) {
				waiter_unlink_locked(ep, &w);
				w.got = CPOOL_WAIT_CONN;
				w.conn = *out;
				break;
			}
		}
		if (rc == ETIMEDOUT && !w.got) {
			waiter_unlink_locked(ep, &w);
			w.got = -ETIMEDOUT;
		}
	}
	got = w.got;
	if (got == CPOOL_WAIT_CONN)
		*out = w.conn;
	pthread_mutex_unlock(&ep->wait_lock);
	pthread_cond_destroy(&w.cond);
	return got;
undo:
	__atomic_sub_fetch(&ep->nwaiters, 1, __ATOMIC_SEQ_CST);
	pthread_mutex_unlock(&ep->wait_lock);
	return got;
}

static struct cpool_waiter *
first_waiter_locked(struct cpool_endpoint *ep)
{
	if (cds_list_empty(&ep->waiters))
		return NULL;
	return cds_list_entry(ep->waiters.next, struct cpool_waiter, link);
}

bool
cpool__wait_release(struct cpool_endpoint *ep, struct cpool_conn *c,
		    struct cpool_idle *idle)
{
	struct cpool_waiter *w;
	bool done = false;

	pthread_mutex_lock(&ep->wait_lock);
	w = first_waiter_locked(ep);
	if (w && cpool__now_ns() - w->since_ns < CPOOL_BARGE_NS) {
		cpool__spin_lock(&idle->lock);
		if (!LOAD(&ep->closing)) {
			cpool__idle_push_locked(idle, c);
			done = true;
		}
		cpool__spin_unlock(&idle->lock);
		if (done && !w->kicked) {
			w->kicked = true;
			pthread_cond_signal(&w->cond);
		}
	} else if (w) {
		waiter_unlink_locked(ep, w);
		w->conn = c;
		w->got = CPOOL_WAIT_CONN;
		pthread_cond_signal(&w->cond);
		done = true;
	}
	pthread_mutex_unlock(&ep->wait_lock);
	return done;
}

void
cpool__wait_wake_slot(struct cpool_endpoint *ep)
{
	struct cpool_waiter *w;

	pthread_mutex_lock(&ep->wait_lock);
	w = first_waiter_locked(ep);
	if (w && cpool__ep_slot_get(ep)) {
		waiter_unlink_locked(ep, w);
		w->got = CPOOL_WAIT_SLOT;
		pthread_cond_signal(&w->cond);
	}
	pthread_mutex_unlock(&ep->wait_lock);
}

void
cpool__wait_fail_all(struct cpool_endpoint *ep, int err)
{
	struct cpool_waiter *w;

	pthread_mutex_lock(&ep->wait_lock);
	while ((w = first_waiter_locked(ep))) {
		waiter_unlink_locked(ep, w);
		w->got = err;
		pthread_cond_signal(&w->cond);
	}
	pthread_mutex_unlock(&ep->wait_lock);
}
