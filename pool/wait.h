/* SPDX-License-Identifier: MIT */
/*
 * Waiting at the cap: a FIFO of waiters per endpoint. A release hands its
 * connection, and a close its freed slot, to exactly one waiter: no
 * broadcast, no thundering herd.
 */
#ifndef CPOOL_WAIT_H
#define CPOOL_WAIT_H

#include "pool-t.h"

enum {
	CPOOL_WAIT_CONN = 1, /* *out is a connection, already leased */
	CPOOL_WAIT_SLOT = 2, /* the caller now holds a slot: connect */
};

/*
 * Sleeps until a release hands @ep's connection or slot to the caller, or
 * until @deadline_ns (CLOCK_MONOTONIC). Before sleeping it looks once more,
 * as a registered waiter, for a free slot or an idle connection, so no
 * release can slip between its last look and its sleep. Returns
 * CPOOL_WAIT_CONN, CPOOL_WAIT_SLOT, -ETIMEDOUT, or the endpoint's close
 * error (-ENOENT, -ESHUTDOWN). The caller holds a reference on @ep.
 */
int cpool__wait(struct cpool_endpoint *ep, uint64_t deadline_ns,
		struct cpool_conn **out);

/*
 * A release while acquires wait: hands the leased connection @c to the
 * oldest waiter if it has waited long enough, otherwise pools it in @idle
 * and wakes that waiter to compete for it. Returns false (nothing done)
 * when nobody waits or the endpoint is closing. No idle lock held.
 */
bool cpool__wait_release(struct cpool_endpoint *ep, struct cpool_conn *c,
			 struct cpool_idle *idle);

/* Reserves a free slot for the oldest waiter, if any, and wakes it. */
void cpool__wait_wake_slot(struct cpool_endpoint *ep);

/* Wakes every waiter with @err. */
void cpool__wait_fail_all(struct cpool_endpoint *ep, int err);

#endif /* CPOOL_WAIT_H */
