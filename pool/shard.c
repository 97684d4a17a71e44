/* SPDX-License-Identifier: MIT */
/*
 * Shards. Each (endpoint, shard) pair has its own idle list and lock, so
 * callers on different CPUs never touch the same cache line on the fast
 * path. When the caller's list is empty it steals from another shard
 * (HAProxy's takeover) before any connect: try-lock only, a rotating start,
 * never blocking on a busy shard.
 */
#include "shard.h"

#include <sched.h>

void
cpool__spin_lock_slow(struct cpool_spin *l)
{
	unsigned spins = 0;

	for (;;) {
		while (LOAD(&l->locked)) {
			/* The holder may be preempted: give up the CPU. */
			if (++spins > 200) {
				sched_yield();
				spins = 0;
			} else {
				caa_cpu_relax();
			}
		}
		if (!__atomic_exchange_n(&l->locked, 1, __ATOMIC_ACQUIRE))
			return;
	}
}

struct cpool_conn *
cpool__shard_steal(struct cpool_endpoint *ep, unsigned sh)
{
	unsigned n = ep->pool->nshards, start, i, j;
	struct cpool_idle *idle;
	struct cpool_conn *c;

	if (n == 1)
		return NULL;
	start = (unsigned)cpool__random();
	for (i = 0; i < n; i++) {
		j = (start + i) % n;
		if (j == sh)
			continue;
		idle = &ep->idle[j];
		if (!LOAD(&idle->count) || !cpool__spin_trylock(&idle->lock))
			continue;
		c = cpool__idle_pop_locked(idle);
		cpool__spin_unlock(&idle->lock);
		if (c) {
			ATOMIC_ADD(&ep->ctr.steals, 1);
			return c;
		}
	}
	return NULL;
}

struct cpool_conn *
cpool__shard_take_any(struct cpool_endpoint *ep)
{
	unsigned i;
	struct cpool_conn *c;

	for (i = 0; i < ep->pool->nshards; i++) {
		if (!LOAD(&ep->idle[i].count))
			continue;
		c = cpool__idle_pop(&ep->idle[i]);
		if (c)
			return c;
	}
	return NULL;
}

unsigned
cpool__shard_drain(struct cpool_endpoint *ep, struct cds_list_head *out)
{
	struct cpool_idle *idle;
	unsigned i, n = 0;

	for (i = 0; i < ep->pool->nshards; i++) {
		idle = &ep->idle[i];
		cpool__spin_lock(&idle->lock);
		n += idle->count;
		cds_list_splice(&idle->head, out);
		CDS_INIT_LIST_HEAD(&idle->head);
		STORE(&idle->count, 0);
		cpool__spin_unlock(&idle->lock);
	}
	return n;
}
