/* SPDX-License-Identifier: MIT */
/* Counters and gauges: collected from the shards without stopping them. */
#ifndef CPOOL_STATS_H
#define CPOOL_STATS_H

#include "pool-t.h"

/*
 * Folds a dying endpoint's counters into the pool's, so whole-pool counters
 * never go backwards. Call with pool->ep_lock held.
 */
void cpool__stats_retire_locked(struct cpool *pool,
				struct cpool_endpoint *ep);

#endif /* CPOOL_STATS_H */
