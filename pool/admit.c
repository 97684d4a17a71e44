/* SPDX-License-Identifier: MIT */
/*
 * Admission at an endpoint's cap: slots, waiters, handoff.
 *
 * State: @slots counts connections reserved or open (never above @max);
 * @gate counts registered waiters, with CPOOL_ADMIT_CLOSING on top; under
 * @lock, @queue holds the waiters that sleep, oldest first. A waiter is
 * registered from its first look until it returns; while it is, no
 * connection becomes idle without passing through offer(), because every
 * path that makes one idle (cpool__admit_put()) reads @gate under the list
 * lock it pushes under. Lock order: @lock, then a list's spinlock; a
 * releaser drops its list lock before taking @lock.
 *
 * A waiter (wait()): registers (gate++), then looks: every list, taking
 * each one's lock, then a slot (reserve). Nothing -> it queues and sleeps. A
 * release that finds waiters (offer()) takes the oldest sleeping waiter off
 * the queue and either hands it the connection directly (once it has
 * waited CPOOL_BARGE_NS: bounded barging) or pools the connection and
 * "kicks" that waiter to come and compete for it; either way each release
 * wakes a different waiter, and exactly one. A freed slot goes to the
 * oldest sleeping waiter the same way (give_back()). A kicked waiter looks
 * again; if a running thread took the connection first it queues again at
 * the head, keeping its age.
 *
 * Why nothing is stranded (a connection idle, or a slot free, while a
 * waiter sleeps and nobody is coming for it; tests/model/admit.pml checks
 * this over every interleaving):
 *  - a connection pushed to a list before the waiter registered is found
 *    by its look, since the look takes every list lock; one pushed after
 *    went through offer(), which needs @lock: it finds the waiter queued
 *    (and wakes it) or finds it gone;
 *  - a slot freed before the waiter's registration is seen by its
 *    reserve(); after it, give_back() sees the registration (a
 *    sequentially consistent pair: slots-- then read gate, against gate++
 *    then read slots);
 *  - a waiter leaving without using its wake-up (timeout, removal,
 *    shutdown, cancellation) passes it on: a kick to the next sleeper, a
 *    handed connection to the next sleeper or its list, a granted slot to
 *    the next sleeper or back to the count;
 *  - after a timeout it looks once more before returning -ETIMEDOUT, so
 *    it never times out with a connection idle or a slot free.
 *
 * Cancellation: cpool_acquire() runs with cancellation disabled; the sleep
 * here re-enables the caller's state and has a cleanup handler
 * (waiter_cancelled()) that dequeues the waiter, passes on its wake-up and
 * drops @lock, so a cancelled waiter leaves the endpoint as it found it.
 */
#include "admit.h"

#include <errno.h>

/* How long a waiter lets running threads take connections before it. */
#ifndef CPOOL_BARGE_NS
#define CPOOL_BARGE_NS 3000000ull
#endif

enum {
	W_QUEUED = 1,	/* sleeping, in the queue */
	W_KICKED,	/* a connection was pooled for it: look again */
	W_GRANT_CONN,	/* ->conn is its (still LEASED: a release's) */
	W_GRANT_SLOT,	/* it holds a slot */
	W_FAILED,	/* ->err: the endpoint closed */
};

struct cpool_waiter {
	struct cds_list_head link; /* in ad->queue while W_QUEUED */
	pthread_cond_t cond;
	int state;
	int err;
	struct cpool_conn *conn;   /* W_GRANT_CONN */
	struct cpool_idle *home;   /* the list the releaser would have used */
	uint64_t since_ns;	   /* when it started waiting */
};

void
cpool__admit_init(struct cpool_admit *ad, unsigned max,
		  struct cpool_idle *idle, unsigned nidle)
{
	ad->max = max;
	ad->idle = idle;
	ad->nidle = nidle;
	pthread_mutex_init(&ad->lock, NULL);
	CDS_INIT_LIST_HEAD(&ad->queue);
}

void
cpool__admit_destroy(struct cpool_admit *ad)
{
	pthread_mutex_destroy(&ad->lock);
}

static struct cpool_waiter *
first_locked(struct cpool_admit *ad)
{
	struct cpool_waiter *w;

	if (cds_list_empty(&ad->queue))
		return NULL;
	w = cds_list_entry(ad->queue.next, struct cpool_waiter, link);
	cds_list_del(&w->link);
	return w;
}

static void
wake_locked(struct cpool_waiter *w, int state)
{
	w->state = state;
	pthread_cond_signal(&w->cond);
}

/* Pools @c in @idle under @lock: the kicked or later waiters look there. */
static void
push_locked(struct cpool_idle *idle, struct cpool_conn *c, unsigned from)
{
	bool hand;

	cpool__spin_lock(&idle->lock);
	hand = cpool__idle_push_locked(idle, c, from);
	cpool__spin_unlock(&idle->lock);
	if (hand)
		cpool__idle_hand_over(idle);
}

/* The oldest sleeper, still queued; NULL if none. @lock held. */
static struct cpool_waiter *
head_locked(struct cpool_admit *ad)
{
	if (cds_list_empty(&ad->queue))
		return NULL;
	return cds_list_entry(ad->queue.next, struct cpool_waiter, link);
}

/* Wakes the oldest sleeper to look at the lists. @lock held. */
static void
kick_locked(struct cpool_admit *ad)
{
	struct cpool_waiter *w = first_locked(ad);

	if (w) {
		ad->kicked++;
		wake_locked(w, W_KICKED);
	}
}

/*
 * offer() with @lock held and the endpoint not closing. The oldest
 * sleeper gets the connection directly once it has waited CPOOL_BARGE_NS;
 * before that the connection is pooled and one sleeper is kicked, unless
 * one is on its way already: that one looks at every list, and passes the
 * kick on if it leaves a connection behind (wait()), so a burst of
 * releases costs one wake-up, not one each.
 */
static void
offer_locked(struct cpool_admit *ad, struct cpool_idle *idle,
	     struct cpool_conn *c, unsigned from)
{
	struct cpool_waiter *w = head_locked(ad);

	if (w && from == CONN_LEASED &&
	    cpool__now_ns() - w->since_ns >= CPOOL_BARGE_NS) {
		/* Handed over as it is, a lease (counted in the gauge). */
		cds_list_del(&w->link);
		w->conn = c;
		w->home = idle;
		wake_locked(w, W_GRANT_CONN);
		return;
	}
	push_locked(idle, c, from);
	if (!ad->kicked)
		kick_locked(ad);
}

/* Whether a connection sits in any list. Exact under @lock (see wait()). */
static bool
any_idle_locked(const struct cpool_admit *ad)
{
	unsigned i;

	for (i = 0; i < ad->nidle; i++)
		if (LOAD_RLX(&ad->idle[i].count))
			return true;
	return false;
}

int
cpool__admit_offer(struct cpool_admit *ad, struct cpool_idle *idle,
		   struct cpool_conn *c, unsigned from)
{
	/* Before the lock: in a fork child a dead thread may hold it. */
	if (cpool__admit_closing(ad))
		return -1;
	pthread_mutex_lock(&ad->lock);
	if (LOAD_RLX(&ad->gate) & CPOOL_ADMIT_CLOSING) {
		pthread_mutex_unlock(&ad->lock);
		return -1;
	}
	offer_locked(ad, idle, c, from);
	pthread_mutex_unlock(&ad->lock);
	return 0;
}

/* Hands the slot the caller holds to the oldest sleeper. @lock held. */
static bool
pass_slot_locked(struct cpool_admit *ad)
{
	struct cpool_waiter *w;

	if (LOAD_RLX(&ad->gate) & CPOOL_ADMIT_CLOSING)
		return false;
	w = first_locked(ad);
	if (!w)
		return false;
	wake_locked(w, W_GRANT_SLOT);
	return true;
}

void
cpool__admit_give_back(struct cpool_admit *ad)
{
	__atomic_sub_fetch(&ad->slots, 1, __ATOMIC_SEQ_CST);
	/* Pairs with wait()'s gate++ before its reserve(). */
	if (!(__atomic_load_n(&ad->gate, __ATOMIC_SEQ_CST) &
	      ~CPOOL_ADMIT_CLOSING))
		return;
	pthread_mutex_lock(&ad->lock);
	if (!(LOAD_RLX(&ad->gate) & CPOOL_ADMIT_CLOSING) &&
	    !cds_list_empty(&ad->queue) && cpool__admit_reserve(ad))
		if (!pass_slot_locked(ad))
			__atomic_sub_fetch(&ad->slots, 1, __ATOMIC_SEQ_CST);
	pthread_mutex_unlock(&ad->lock);
}

struct wait_ctx {
	struct cpool_admit *ad;
	struct cpool_waiter *w;
	struct cpool_conn **out;
};

/* Deregisters the waiter and drops @lock. */
static void
leave_locked(struct cpool_admit *ad, struct cpool_waiter *w)
{
	__atomic_sub_fetch(&ad->gate, 1, __ATOMIC_SEQ_CST);
	pthread_mutex_unlock(&ad->lock);
	pthread_cond_destroy(&w->cond);
}

/*
 * Cleanup handler: the waiter was cancelled in its sleep (with @lock
 * re-taken). Whatever it was given goes to someone else.
 */
static void
waiter_cancelled(void *arg)
{
	struct wait_ctx *x = arg;
	struct cpool_admit *ad = x->ad;
	struct cpool_waiter *w = x->w;

	switch (w->state) {
	case W_QUEUED:
		cds_list_del(&w->link);
		break;
	case W_KICKED:
		ad->kicked--;
		kick_locked(ad); /* pass it on */
		break;
	case W_GRANT_CONN:
		/* Closing: the caller's own cleanup handler closes it. */
		if (LOAD_RLX(&ad->gate) & CPOOL_ADMIT_CLOSING)
			*x->out = w->conn;
		else
			offer_locked(ad, w->home, w->conn, CONN_LEASED);
		break;
	case W_GRANT_SLOT:
		if (!pass_slot_locked(ad))
			__atomic_sub_fetch(&ad->slots, 1, __ATOMIC_SEQ_CST);
		break;
	}
	leave_locked(ad, w);
}

/* Sleeps until woken or @ts; the only cancellation point of the library. */
static void
sleep_locked(struct cpool_admit *ad, struct cpool_waiter *w,
	     const struct timespec *ts, int cancel_state,
	     struct cpool_conn **out)
{
	struct wait_ctx x = { ad, w, out };
	volatile int rc = 0; /* the cleanup may longjmp across it */

	pthread_cleanup_push(waiter_cancelled, &x);
	if (cancel_state == PTHREAD_CANCEL_ENABLE)
		pthread_setcancelstate(PTHREAD_CANCEL_ENABLE, NULL);
	while (w->state == W_QUEUED && rc != ETIMEDOUT)
		rc = pthread_cond_timedwait(&w->cond, &ad->lock, ts);
	if (cancel_state == PTHREAD_CANCEL_ENABLE)
		pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, NULL);
	pthread_cleanup_pop(0);
}

/*
 * One look: a connection from any list (each one locked), else a slot.
 * Lists first: a kicked waiter must take the connection it was kicked for.
 * Were it to take a slot that a close just freed instead, the close's
 * give_back() would find the next sleeper but no slot, and that sleeper
 * would stay asleep next to the pooled connection (tests/model/admit.pml,
 * SLOT_FIRST, found it).
 */
static int
look_locked(struct cpool_admit *ad, struct cpool_conn **out)
{
	*out = cpool__idle_take_any(ad->idle, ad->nidle);
	if (*out)
		return CPOOL_ADMIT_CONN;
	return cpool__admit_reserve(ad) ? CPOOL_ADMIT_SLOT : 0;
}

int
cpool__admit_wait(struct cpool_admit *ad, uint64_t deadline_ns,
		  int cancel_state, struct cpool_conn **out)
{
	struct cpool_waiter w = { .state = 0 };
	pthread_condattr_t attr;
	struct timespec ts;
	bool first = true;
	int got;

	pthread_mutex_lock(&ad->lock);
	if (LOAD_RLX(&ad->gate) & CPOOL_ADMIT_CLOSING) {
		got = LOAD_RLX(&ad->close_err);
		pthread_mutex_unlock(&ad->lock);
		return got;
	}
	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_cond_init(&w.cond, &attr);
	pthread_condattr_destroy(&attr);
	cpool__ns_to_timespec(deadline_ns, &ts);
	CPOOL_PAUSE(CPOOL_PP_WAIT_ENTER, ad);
	/* Registered: from here no connection becomes idle unseen. */
	__atomic_add_fetch(&ad->gate, 1, __ATOMIC_SEQ_CST);
	w.since_ns = cpool__now_ns();
	for (;;) {
		if (LOAD_RLX(&ad->gate) & CPOOL_ADMIT_CLOSING) {
			got = LOAD_RLX(&ad->close_err);
			break;
		}
		CPOOL_PAUSE(CPOOL_PP_WAIT_LOOK, ad);
		got = look_locked(ad, out);
		/*
		 * Leaving a connection behind for a sleeper with nobody on the
		 * way: kick it. The counts are exact here: with waiters
		 * registered, connections enter lists only under @lock.
		 */
		if (got == CPOOL_ADMIT_CONN && !ad->kicked && head_locked(ad) &&
		    any_idle_locked(ad))
			kick_locked(ad);
		if (got)
			break;
		if (cpool__now_ns() >= deadline_ns) {
			got = -ETIMEDOUT; /* after the look: the last one */
			break;
		}
		/* A kicked waiter that lost the race keeps its place. */
		if (first)
			cds_list_add_tail(&w.link, &ad->queue);
		else
			cds_list_add(&w.link, &ad->queue);
		first = false;
		w.state = W_QUEUED;
		CPOOL_PAUSE(CPOOL_PP_WAIT_BEFORE_SLEEP, ad);
		sleep_locked(ad, &w, &ts, cancel_state, out);
		CPOOL_PAUSE(CPOOL_PP_WAIT_WOKEN, ad);
		if (w.state == W_QUEUED) {
			cds_list_del(&w.link); /* timed out: look once more */
		} else if (w.state == W_KICKED) {
			ad->kicked--; /* looks now */
		} else if (w.state == W_GRANT_CONN) {
			cpool__conn_move(w.conn, CONN_LEASED, CONN_BUSY);
			*out = w.conn;
			got = CPOOL_ADMIT_CONN;
			break;
		} else if (w.state == W_GRANT_SLOT) {
			got = CPOOL_ADMIT_SLOT;
			break;
		} else if (w.state == W_FAILED) {
			got = w.err;
			break;
		}
	}
	leave_locked(ad, &w);
	return got;
}

void
cpool__admit_close(struct cpool_admit *ad, int err)
{
	struct cpool_waiter *w;

	pthread_mutex_lock(&ad->lock);
	STORE_RLX(&ad->close_err, err);
	__atomic_or_fetch(&ad->gate, CPOOL_ADMIT_CLOSING, __ATOMIC_RELEASE);
	while ((w = first_locked(ad))) {
		w->err = err;
		wake_locked(w, W_FAILED);
	}
	pthread_mutex_unlock(&ad->lock);
}
