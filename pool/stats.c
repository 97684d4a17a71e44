/* SPDX-License-Identifier: MIT */
/*
 * Statistics without a global lock on the hot path.
 *
 * The fast paths count under the idle-list lock they already hold
 * (pops, count, leased per (endpoint, shard)); the slow paths count with
 * relaxed atomics on the endpoint (connects, closes by reason, steals,
 * waits, handoffs, rejects). The published figures are derived:
 *   reuses   = pops + handoffs - rejects
 *   acquires = reuses + new_leases
 *   idle     = sum of list counts
 *   leased   = sum of per-list leased + leases counted outside lists
 * and open is its own counter, so open == idle + leased at rest is a real
 * cross-check of three independently kept numbers.
 */
#include "stats.h"

#include <errno.h>
#include <string.h>

#include "endpoint.h"
#include "pool.h"

static void
counters_add(struct cpool_ep_counters *dst, const struct cpool_ep_counters *src)
{
	unsigned i;

	dst->handoffs += LOAD(&src->handoffs);
	dst->rejects += LOAD(&src->rejects);
	dst->new_leases += LOAD(&src->new_leases);
	dst->connects += LOAD(&src->connects);
	dst->connect_failures += LOAD(&src->connect_failures);
	dst->steals += LOAD(&src->steals);
	dst->waits += LOAD(&src->waits);
	dst->timeouts += LOAD(&src->timeouts);
	for (i = 0; i < CPOOL_CLOSE_REASON_COUNT; i++)
		dst->closed[i] += LOAD(&src->closed[i]);
}

static uint64_t
ep_pops(const struct cpool_endpoint *ep)
{
	uint64_t pops = 0;
	unsigned i;

	for (i = 0; i < ep->pool->nshards; i++)
		pops += LOAD(&ep->idle[i].pops);
	return pops;
}

void
cpool__stats_retire_locked(struct cpool *pool, struct cpool_endpoint *ep)
{
	struct cpool_ep_counters sum = pool->retired;

	counters_add(&sum, &ep->ctr);
	STORE(&pool->retired_pops, pool->retired_pops + ep_pops(ep));
	/* Field by field, so concurrent readers see whole values. */
	STORE(&pool->retired.handoffs, sum.handoffs);
	STORE(&pool->retired.rejects, sum.rejects);
	STORE(&pool->retired.new_leases, sum.new_leases);
	STORE(&pool->retired.connects, sum.connects);
	STORE(&pool->retired.connect_failures, sum.connect_failures);
	STORE(&pool->retired.steals, sum.steals);
	STORE(&pool->retired.waits, sum.waits);
	STORE(&pool->retired.timeouts, sum.timeouts);
	for (unsigned i = 0; i < CPOOL_CLOSE_REASON_COUNT; i++)
		STORE(&pool->retired.closed[i], sum.closed[i]);
}

struct stats_acc {
	struct cpool_ep_counters ctr;
	uint64_t pops;
	int64_t open, idle, leased;
};

static void
ep_collect(const struct cpool_endpoint *ep, struct stats_acc *a)
{
	unsigned i;

	counters_add(&a->ctr, &ep->ctr);
	for (i = 0; i < ep->pool->nshards; i++) {
		a->pops += LOAD(&ep->idle[i].pops);
		a->idle += LOAD(&ep->idle[i].count);
		a->leased += LOAD(&ep->idle[i].leased);
	}
	a->leased += LOAD(&ep->leased_adj);
	a->open += LOAD(&ep->open);
}

static uint32_t
gauge(int64_t v)
{
	return v < 0 ? 0 : v > UINT32_MAX ? UINT32_MAX : (uint32_t)v;
}

static void
acc_publish(const struct stats_acc *a, struct cpool_stats *s)
{
	unsigned i;

	s->reuses = a->pops + a->ctr.handoffs - a->ctr.rejects;
	s->acquires = s->reuses + a->ctr.new_leases;
	s->connects = a->ctr.connects;
	s->connect_failures = a->ctr.connect_failures;
	s->steals = a->ctr.steals;
	s->waits = a->ctr.waits;
	s->timeouts = a->ctr.timeouts;
	for (i = 0; i < CPOOL_CLOSE_REASON_COUNT; i++)
		s->closed[i] = a->ctr.closed[i];
	s->open = gauge(a->open);
	s->idle = gauge(a->idle);
	s->leased = gauge(a->leased);
}

#define CPOOL_STATS_SIZE_V1                                                    \
	(offsetof(struct cpool_stats, leased) + sizeof(uint32_t))

int
cpool_stats_get(struct cpool *pool, const char *address,
		struct cpool_stats *out)
{
	struct stats_acc a;
	struct cpool_stats s;
	struct cpool_endpoint *ep;
	struct cds_list_head *pos;
	size_t size;

	if (!pool || !out || out->size < CPOOL_STATS_SIZE_V1)
		return -EINVAL;
	memset(&a, 0, sizeof(a));
	if (address) {
		cpool__rcu_ensure();
		urcu_memb_read_lock();
		ep = LOAD(&pool->shutdown) ? NULL
					   : cpool__ep_lookup(pool, address);
		if (ep)
			ep_collect(ep, &a);
		urcu_memb_read_unlock();
		if (!ep)
			return -ENOENT;
	} else {
		pthread_mutex_lock(&pool->ep_lock);
		cds_list_for_each(pos, &pool->endpoints)
			ep_collect(cds_list_entry(pos, struct cpool_endpoint,
						  all),
				   &a);
		counters_add(&a.ctr, &pool->retired);
		a.pops += LOAD(&pool->retired_pops);
		pthread_mutex_unlock(&pool->ep_lock);
	}
	memset(&s, 0, sizeof(s));
	acc_publish(&a, &s);
	size = out->size < sizeof(s) ? out->size : sizeof(s);
	s.size = out->size;
	memcpy(out, &s, size);
	return 0;
}
