/* SPDX-License-Identifier: MIT */
/* Connection objects: open (connect + on_connect), checkout checks, close. */
#ifndef CPOOL_CONN_H
#define CPOOL_CONN_H

#include "pool-t.h"

/*
 * Opens a new connection to @ep for a caller that holds one of its slots;
 * the connection is the caller's lease and owns the slot from then on.
 * Counts connects and connect_failures and feeds the endpoint's backoff
 * (@trial: this connect was let through by cpool__ep_connect_gate() as the
 * trial). Registers the fd with shard @sh's worker. On failure the slot
 * stays the caller's. Returns 0 or -errno. No lock held: this blocks up to
 * connect_timeout_ms.
 */
int cpool__conn_open(struct cpool_endpoint *ep, unsigned sh,
		     struct cpool_conn **out, bool trial);

/*
 * Closes @c and frees it after a grace period, counting @reason, and gives
 * its slot back (to a waiter if one waits). @leased says whether @c was a lease (for the
 * gauges). No lock held.
 */
void cpool__conn_close(struct cpool_conn *c, enum cpool_close_reason reason,
		       bool leased);

#endif /* CPOOL_CONN_H */
