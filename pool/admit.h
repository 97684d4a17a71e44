/* SPDX-License-Identifier: MIT */
/*
 * Admission: the process-wide cap on an endpoint's connections (slots),
 * the callers waiting at it, and handing released connections and freed
 * slots to them. The protocol is in admit.c's top comment and modelled in
 * tests/model/admit.pml.
 */
#ifndef CPOOL_ADMIT_H
#define CPOOL_ADMIT_H

#include <pthread.h>

#include "shard.h"

/* gate: registered waiters in the low bits, closing in the top one. */
#define CPOOL_ADMIT_CLOSING (1u << 31)

struct cpool_admit {
	unsigned gate;		/* waiters | CPOOL_ADMIT_CLOSING */
	unsigned slots;		/* reserved or open connections, <= max */
	unsigned max;		/* max_conns_per_endpoint */
	int close_err;		/* what waiters get once closing */
	unsigned kicked;	/* woken to look, not looked yet (@lock) */
	pthread_mutex_t lock;
	struct cds_list_head queue; /* FIFO of sleeping waiters */
	struct cpool_idle *idle; /* the endpoint's lists, for the last look */
	unsigned nidle;
} CPOOL_ALIGNED;

void cpool__admit_init(struct cpool_admit *ad, unsigned max,
		       struct cpool_idle *idle, unsigned nidle);
void cpool__admit_destroy(struct cpool_admit *ad);

/* Reserves a slot. Returns false at the cap. */
static inline bool
cpool__admit_reserve(struct cpool_admit *ad)
{
	unsigned s = __atomic_load_n(&ad->slots, __ATOMIC_SEQ_CST);

	while (s < ad->max)
		if (__atomic_compare_exchange_n(&ad->slots, &s, s + 1, false,
						__ATOMIC_SEQ_CST,
						__ATOMIC_SEQ_CST))
			return true;
	return false;
}

/*
 * Gives a slot back (a connection closed, a connect failed) and hands a
 * slot to the oldest sleeping waiter, if any. No lock held.
 */
void cpool__admit_give_back(struct cpool_admit *ad);

/* Whether the endpoint stopped admitting (removal, shutdown, fork). */
static inline bool
cpool__admit_closing(const struct cpool_admit *ad)
{
	return LOAD_ACQ(&ad->gate) & CPOOL_ADMIT_CLOSING;
}

/* The error waiters get once closing; call after seeing it closing. */
static inline int
cpool__admit_close_err(const struct cpool_admit *ad)
{
	return LOAD_RLX(&ad->close_err);
}

int cpool__admit_offer(struct cpool_admit *ad, struct cpool_idle *idle,
		       struct cpool_conn *c, unsigned from);

/*
 * Makes @c (state @from: LEASED from a release, BUSY from a worker's
 * give-back or prewarm) idle in @idle, or hands it to a waiter. The only
 * way a connection becomes idle. Returns 0, or -1 when the endpoint is
 * closing: @c is then still the caller's, to close. No lock held.
 */
static inline int
cpool__admit_put(struct cpool_admit *ad, struct cpool_idle *idle,
		 struct cpool_conn *c, unsigned from)
{
	bool hand;

	cpool__spin_lock(&idle->lock);
	/*
	 * Relaxed is enough: a waiter registers before it takes this lock for
	 * its last look, so either its look comes after this section and
	 * finds @c, or this load comes after its look and sees it registered.
	 */
	if (likely(!LOAD_RLX(&ad->gate))) {
		CPOOL_PAUSE(CPOOL_PP_RELEASE_GATE_READ, ad);
		hand = cpool__idle_push_locked(idle, c, from);
		cpool__spin_unlock(&idle->lock);
		if (unlikely(hand))
			cpool__idle_hand_over(idle);
		return 0;
	}
	cpool__spin_unlock(&idle->lock);
	return cpool__admit_offer(ad, idle, c, from);
}

/* What cpool__admit_wait() got the caller, besides -errno. */
enum {
	CPOOL_ADMIT_CONN = 1, /* *out: a connection, BUSY, to check and lease */
	CPOOL_ADMIT_SLOT = 2, /* the caller holds a slot: it may connect */
};

/*
 * Waits at the cap until a connection or a slot is the caller's, the
 * endpoint closes, or @deadline_ns (CLOCK_MONOTONIC) passes. Registers,
 * looks under every list's lock, sleeps; after a timeout looks once more.
 * A cancellation point (the caller's cancel state is restored around the
 * sleep only): a cancelled waiter passes on whatever it was given, except a
 * connection handed to it once the endpoint is closing, which it leaves in
 * *@out for the caller's own cleanup handler to close (*@out is NULL
 * otherwise when cancelled).
 * Returns CPOOL_ADMIT_CONN, CPOOL_ADMIT_SLOT, -ETIMEDOUT or the close error.
 */
int cpool__admit_wait(struct cpool_admit *ad, uint64_t deadline_ns,
		      int cancel_state, struct cpool_conn **out);

/*
 * Stops admitting: every later wait and offer fails with @err, sleeping
 * waiters wake with it now. Called before the lists are drained.
 */
void cpool__admit_close(struct cpool_admit *ad, int err);

#endif /* CPOOL_ADMIT_H */
