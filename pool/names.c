/* SPDX-License-Identifier: MIT */
/*
 * Names that follow DNS.
 *
 * A named endpoint is listed in pool->names with a reference and the time
 * its refresh is due: the answer's TTL clamped to [dns_min_ttl_ms,
 * dns_max_ttl_ms] after a good answer; after a failed one (no answer,
 * SERVFAIL, refused, and also NXDOMAIN or no address: a set is never
 * emptied by DNS) dns_min_ttl_ms, doubling up to dns_max_ttl_ms, with
 * the last good set kept. Worker 0 owns the resolver (a c-ares channel is
 * one thread's): each loop it compares the earliest due time with its
 * clock, and only when one is due takes names_lock and starts queries.
 * Answers arrive on its epoll; applying one (cpool__ep_set_update()) may
 * close idle connections of addresses that left, on the worker.
 *
 * References: the list's (from cpool__names_add() to _forget()), and a
 * query's (from its start to its callback, which always runs: an answer,
 * an error, or -ECANCELED when the worker stops).
 */
#include "names.h"

#include <errno.h>
#include <string.h>

#include "alloc.h"
#include "dns.h"

void
cpool__names_init(struct cpool *pool)
{
	pthread_mutex_init(&pool->names_lock, NULL);
	CDS_INIT_LIST_HEAD(&pool->names);
	pool->names_due_ns = UINT64_MAX;
}

static uint64_t
clamp_ms(const struct cpool *pool, uint64_t ms)
{
	if (ms < pool->cfg.dns_min_ttl_ms)
		ms = pool->cfg.dns_min_ttl_ms;
	if (ms > pool->cfg.dns_max_ttl_ms)
		ms = pool->cfg.dns_max_ttl_ms;
	return ms;
}

/* Lowers the earliest due time to @t. names_lock held. */
static void
due_locked(struct cpool *pool, uint64_t t)
{
	if (t < LOAD_RLX(&pool->names_due_ns))
		STORE_RLX(&pool->names_due_ns, t);
}

void
cpool__names_add(struct cpool *pool, struct cpool_endpoint *ep,
		 uint32_t ttl_s)
{
	pthread_mutex_lock(&pool->names_lock);
	if (!LOAD_ACQ(&ep->dead) && !ep->dns_listed) {
		cpool__ep_get(ep);
		ep->dns_listed = true;
		ep->dns_next_ns = cpool__now_ns() +
				  clamp_ms(pool, (uint64_t)ttl_s * 1000u) *
					  1000000u;
		cds_list_add_tail(&ep->name_link, &pool->names);
		due_locked(pool, ep->dns_next_ns);
	}
	pthread_mutex_unlock(&pool->names_lock);
}

void
cpool__names_forget(struct cpool *pool, struct cpool_endpoint *ep)
{
	bool listed;

	if (!ep->host)
		return;
	pthread_mutex_lock(&pool->names_lock);
	listed = ep->dns_listed;
	if (listed) {
		cds_list_del(&ep->name_link);
		ep->dns_listed = false;
	}
	pthread_mutex_unlock(&pool->names_lock);
	if (listed)
		cpool__ep_put(ep); /* never the last: the caller holds one */
}

/* A query's end, on worker 0. */
static void
answered(void *arg, const struct cpool_dns_result *res)
{
	struct cpool_endpoint *ep = arg;
	struct cpool *pool = ep->pool;
	struct cpool_addr *a = NULL;
	uint64_t now = cpool__now_ns(), next;
	unsigned i, n = 0;
	bool apply = false;

	if (LOAD_RLX(&pool->forked))
		return; /* a fork child's destroy: nothing here is ours */
	if (!res->err && res->n) {
		a = cpool__alloc(sizeof(*a) * res->n, 0, 0);
		for (i = 0; a && i < res->n; i++) {
			a[i].family = res->addr[i].family;
			a[i].len = res->addr[i].len;
			memcpy(&a[i].ss, &res->addr[i].ss, sizeof(a[i].ss));
		}
		n = a ? res->n : 0;
	}
	pthread_mutex_lock(&pool->names_lock);
	ep->dns_inflight = false;
	if (ep->dns_listed && res->err != -ECANCELED) {
		if (n) {
			ep->dns_retry_ms = 0;
			next = clamp_ms(pool, (uint64_t)res->ttl_s * 1000u);
			apply = true;
		} else {
			ep->dns_retry_ms =
				ep->dns_retry_ms
					? (unsigned)clamp_ms(
						  pool,
						  2ull * ep->dns_retry_ms)
					: pool->cfg.dns_min_ttl_ms;
			next = ep->dns_retry_ms;
			ADD_RLX(&ep->ctr.dns_failures, 1);
		}
		ep->dns_next_ns = now + next * 1000000u;
		due_locked(pool, ep->dns_next_ns);
	}
	pthread_mutex_unlock(&pool->names_lock);
	if (apply) {
		if (cpool__ep_set_update(ep, a, n) == 0)
			ADD_RLX(&ep->ctr.dns_refreshes, 1);
		else
			ADD_RLX(&ep->ctr.dns_failures, 1);
	}
	cpool__free(a, sizeof(*a) * res->n);
	cpool__ep_put(ep); /* the query's */
}

void
cpool__names_work(struct cpool *pool, int epfd, uint64_t now)
{
	struct cds_list_head *pos;
	struct cpool_endpoint *ep;
	uint64_t due = UINT64_MAX;

	if (pool->dns)
		cpool__dns_timeouts(pool->dns, cpool__now_ns());
	if (likely(now < LOAD_RLX(&pool->names_due_ns)))
		return;
	if (!pool->dns && cpool__dns_new(pool->dns_servers, epfd, &pool->dns))
		pool->dns = NULL; /* no memory now: the next loop tries again */
	pthread_mutex_lock(&pool->names_lock);
	cds_list_for_each(pos, &pool->names) {
		ep = cds_list_entry(pos, struct cpool_endpoint, name_link);
		if (ep->dns_inflight)
			continue;
		if (ep->dns_next_ns > now || !pool->dns) {
			if (ep->dns_next_ns < due)
				due = ep->dns_next_ns;
			continue;
		}
		cpool__ep_get(ep);
		if (cpool__dns_query(pool->dns, ep->host, ep->port, answered,
				     ep)) {
			cpool__ep_put(ep); /* never the last: listed */
			ep->dns_next_ns = now + pool->cfg.dns_min_ttl_ms *
							1000000ull;
			if (ep->dns_next_ns < due)
				due = ep->dns_next_ns;
			continue;
		}
		ep->dns_inflight = true;
	}
	if (!pool->dns && due == UINT64_MAX)
		due = now + CPOOL_TICK_NS;
	STORE_RLX(&pool->names_due_ns, due);
	pthread_mutex_unlock(&pool->names_lock);
}

void
cpool__names_event(struct cpool *pool, uint64_t data, uint32_t events)
{
	if (pool->dns)
		cpool__dns_event(pool->dns, data, events);
}

void
cpool__names_stop(struct cpool *pool)
{
	struct cpool_dns *d = pool->dns;

	pool->dns = NULL;
	if (d)
		cpool__dns_free(d); /* -ECANCELED: every query's reference */
}

void
cpool__names_fork_stop(struct cpool *pool)
{
	struct cpool_dns *d = pool->dns;

	pool->dns = NULL;
	if (d)
		cpool__dns_fork_free(d);
}
