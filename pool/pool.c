/* SPDX-License-Identifier: MIT */
/*
 * The public entry points: create/destroy, acquire/release.
 *
 * Acquire's fast path, in order: RCU read lock (a compiler barrier with
 * urcu-memb), the endpoint looked up by name in the cds_lfht, the caller's
 * shard from sched_getcpu(), one spinlocked pop of the most recently
 * released connection, the checkout checks (lifetime, idle age, then the
 * MSG_PEEK probe unless probe_bypass_ms says it was released just now).
 * No allocation, no atomic read-modify-write besides the list lock, one
 * syscall (the probe).
 *
 * Release's fast path: the reuse decision (flags, broken, max_uses,
 * lifetime), then one spinlocked push onto the caller's shard, unless a
 * waiter is queued (then the connection goes to that one waiter) or the
 * endpoint is closing (then it is closed).
 *
 * Everything slow (closing dead connections, stealing, connecting, waiting)
 * happens outside every lock, holding a reference on the endpoint instead.
 */
#include "pool.h"

#include <errno.h>
#include <string.h>

#include "alloc.h"
#include "config.h"
#include "conn.h"
#include "endpoint.h"
#include "log.h"
#include "probe.h"
#include "shard.h"
#include "wait.h"
#include "worker.h"

void
cpool__pool_put(struct cpool *pool)
{
	if (__atomic_sub_fetch(&pool->refs, 1, __ATOMIC_ACQ_REL))
		return;
	cpool__workers_free(pool);
	cpool__free(pool->workers, sizeof(*pool->workers) * pool->nshards);
	pthread_mutex_destroy(&pool->ep_lock);
	cpool__free(pool, sizeof(*pool));
}

int
cpool_create(const struct cpool_config *cfg, struct cpool **out)
{
	struct cpool_config c;
	struct cpool *pool;
	int err;

	if (!out)
		return -EINVAL;
	err = cpool__config_load(cfg, &c);
	if (err)
		return err;
	pool = cpool__alloc(sizeof(*pool), CPOOL_CACHELINE, 0);
	if (!pool)
		return -ENOMEM;
	pool->cfg = c;
	pool->nshards = c.workers;
	pool->probe_bypass_ns = (uint64_t)c.probe_bypass_ms * 1000000u;
	pool->idle_timeout_ns = (uint64_t)c.idle_timeout_ms * 1000000u;
	pool->lifetime_ns = (uint64_t)c.max_lifetime_ms * 1000000u;
	pool->need_clock = pool->probe_bypass_ns || pool->idle_timeout_ns ||
			   pool->lifetime_ns;
	pool->hash_seed = cpool__random();
	pool->tick_ns = cpool__coarse_ns();
	pool->workers = cpool__alloc(sizeof(*pool->workers) * pool->nshards,
				     CPOOL_CACHELINE, 0);
	pool->table = cds_lfht_new_flavor(16, 16, 0,
					  CDS_LFHT_AUTO_RESIZE |
						  CDS_LFHT_ACCOUNTING,
					  &urcu_memb_flavor, NULL);
	if (!pool->workers || !pool->table) {
		err = -ENOMEM;
		goto fail;
	}
	pthread_mutex_init(&pool->ep_lock, NULL);
	CDS_INIT_LIST_HEAD(&pool->endpoints);
	pool->refs = 1;
	err = cpool__workers_start(pool);
	if (err) {
		pthread_mutex_destroy(&pool->ep_lock);
		goto fail;
	}
	*out = pool;
	return 0;
fail:
	if (pool->table)
		cds_lfht_destroy(pool->table, NULL);
	cpool__free(pool->workers, sizeof(*pool->workers) * pool->nshards);
	cpool__free(pool, sizeof(*pool));
	return err;
}

/*
 * Stops the pool for good but keeps the object: the first step of destroy,
 * callable on its own so that threads still calling acquire get -ESHUTDOWN
 * from a valid object until they are joined.
 */
void
cpool_shutdown(struct cpool *pool)
{
	struct cpool_endpoint *ep;
	struct cds_list_head to_close, *pos, *next;
	struct cds_lfht_node *node;
	struct cds_lfht_iter it;

	if (!pool || __atomic_exchange_n(&pool->shutdown, 1, __ATOMIC_SEQ_CST))
		return;
	cpool__rcu_ensure();
	/*
	 * Workers first: from here on only this thread closes idle ones. Their
	 * epoll fds stay open until the pool is freed: an acquire connecting
	 * right now still registers with them, and leases out still
	 * unregister at close.
	 */
	cpool__workers_stop(pool);
	CDS_INIT_LIST_HEAD(&to_close);
	pthread_mutex_lock(&pool->ep_lock);
	urcu_memb_read_lock();
	/* No _for_each_entry: its last step forms a pointer from NULL. */
	for (cds_lfht_first(pool->table, &it);
	     (node = cds_lfht_iter_get_node(&it)) != NULL;
	     cds_lfht_next(pool->table, &it)) {
		ep = caa_container_of(node, struct cpool_endpoint, node);
		CPOOL_TSAN_ACQUIRE(ep);
		if (cds_lfht_del(pool->table, node) == 0) {
			cpool__ep_get(ep);
			cds_list_add_tail(&ep->close_link, &to_close);
		}
	}
	cpool__rcu_read_unlock();
	pthread_mutex_unlock(&pool->ep_lock);
	cpool__ep_gen_bump(); /* after the unlinks, before the grace periods */

	cds_list_for_each_safe(pos, next, &to_close) {
		ep = cds_list_entry(pos, struct cpool_endpoint, close_link);
		cpool__call_rcu(&ep->rcu, cpool__ep_table_put_rcu);
		cpool__ep_close(ep, -ESHUTDOWN);
		cpool__ep_put(ep);
	}
	/*
	 * Every reader that could still be walking the table started before
	 * the shutdown flag was set: wait for them, and for the table's
	 * references, before the table goes. Twice: the table's callbacks
	 * queue the endpoints' own frees.
	 */
	urcu_memb_synchronize_rcu();
	urcu_memb_barrier();
	urcu_memb_barrier();
	CPOOL_RCU_GP_DONE();
	cds_lfht_destroy(pool->table, NULL);
	pool->table = NULL;
	/*
	 * No worker runs and no reader can reach an endpoint any more: from
	 * now on the last reference frees at once, so the last release of a
	 * lease closes every fd of the pool before it returns.
	 */
	__atomic_store_n(&pool->settled, true, __ATOMIC_RELEASE);
}

void
cpool_destroy(struct cpool *pool)
{
	if (!pool)
		return;
	if (__atomic_exchange_n(&pool->destroyed, 1, __ATOMIC_SEQ_CST)) {
		cpool__log(&pool->cfg, CPOOL_LOG_ERROR,
			   "cpool_destroy called twice");
		return;
	}
	cpool_shutdown(pool);
	cpool__pool_put(pool);
}

/*
 * Whether a connection taken from the idle set may be handed out: 0, or the
 * reason to close it. Lifetime and idle age first (no syscall), then the
 * probe, skipped only inside the bypass window.
 */
static inline int
checkout_reason(const struct cpool *pool, const struct cpool_conn *c)
{
	uint64_t now;

	if (pool->need_clock) {
		now = LOAD(&pool->tick_ns);
		if (c->expires_ns && now >= c->expires_ns)
			return CPOOL_CLOSE_LIFETIME;
		if (pool->idle_timeout_ns &&
		    now - c->released_ns >= pool->idle_timeout_ns)
			return CPOOL_CLOSE_IDLE_TIMEOUT;
		/*
		 * The real clock here: released_ns is a tick stamp, never later
		 * than the release, so the window can only be shorter.
		 */
		if (pool->probe_bypass_ns &&
		    cpool__coarse_ns() - c->released_ns < pool->probe_bypass_ns)
			return 0;
	}
	return (int)cpool_probe(c->fd);
}

/*
 * Opens a connection for a caller holding a slot of @ep. Returns 0 with
 * the new lease, or -errno with the slot given back.
 */
static int
acquire_new(struct cpool_endpoint *ep, unsigned sh, struct cpool_conn **out)
{
	struct cpool_conn *c;
	bool trial;
	int err;

	/* During backoff: fail fast instead of every caller dialing. */
	err = cpool__ep_connect_gate(ep, &trial, true);
	if (!err)
		err = cpool__conn_open(ep, sh, &c, trial);
	if (err) {
		cpool__ep_slot_put(ep);
		return err;
	}
	ATOMIC_ADD(&ep->leased_adj, 1);
	if (unlikely(LOAD(&ep->closing))) {
		err = LOAD(&ep->close_err);
		cpool__conn_close(c, CPOOL_CLOSE_SHUTDOWN, true);
		return err;
	}
	ATOMIC_ADD(&ep->ctr.new_leases, 1);
	c->uses = 1;
	c->reused = false;
	*out = c;
	return 0;
}

/*
 * Everything after the first pop: close the rejected candidate @c (if any,
 * with @reason), pop again, steal, connect under the cap, or wait for a
 * handoff. The caller holds a reference on @ep and no lock.
 */
static int
acquire_slow(struct cpool_endpoint *ep, unsigned sh, struct cpool_conn *c,
	     int reason, struct cpool_conn **out)
{
	struct cpool *pool = ep->pool;
	uint64_t deadline = 0;
	bool waited = false;
	int got;

	for (;;) {
		if (c) {
			cpool__conn_close(c, (enum cpool_close_reason)reason,
					  true);
			c = NULL;
		}
		if (unlikely(LOAD(&ep->closing)))
			return LOAD(&ep->close_err);
		c = cpool__idle_pop(&ep->idle[sh]);
		if (!c)
			c = cpool__shard_steal(ep, sh);
		if (!c && cpool__ep_slot_get(ep))
			return acquire_new(ep, sh, out);
		if (!c) {
			if (pool->cfg.acquire_timeout_ms == 0)
				break;
			if (!deadline)
				deadline = cpool__now_ns() +
					   (uint64_t)pool->cfg
							   .acquire_timeout_ms *
						   1000000u;
			if (!waited) {
				waited = true;
				ATOMIC_ADD(&ep->ctr.waits, 1);
			}
			got = cpool__wait(ep, deadline, &c);
			if (got == CPOOL_WAIT_SLOT)
				return acquire_new(ep, sh, out);
			if (got == -ETIMEDOUT)
				break;
			if (got < 0)
				return got;
		}
		reason = checkout_reason(pool, c);
		if (!reason) {
			ATOMIC_ADD(&ep->ctr.reuses, 1);
			c->uses++;
			c->reused = true;
			*out = c;
			return 0;
		}
	}
	return -ETIMEDOUT;
}

int
cpool_acquire(struct cpool *pool, const char *address, struct cpool_conn **out)
{
	struct cpool_endpoint *ep;
	struct cpool_conn *c;
	unsigned sh;
	int reason = 0, err;

	if (unlikely(!pool || !address || !out))
		return -EINVAL;
	cpool__rcu_ensure();
	urcu_memb_read_lock();
	if (unlikely(LOAD(&pool->shutdown))) {
		cpool__rcu_read_unlock();
		return -ESHUTDOWN;
	}
	ep = cpool__ep_find(pool, address);
	if (unlikely(!ep)) {
		/* Shutdown may have unlinked it after our check. */
		err = LOAD(&pool->shutdown) ? -ESHUTDOWN : -ENOENT;
		cpool__rcu_read_unlock();
		return err;
	}
	sh = cpool__shard_cur(pool);
	c = cpool__idle_pop(&ep->idle[sh]);
	if (likely(c)) {
		reason = checkout_reason(pool, c);
		if (likely(!reason)) {
			cpool__rcu_read_unlock();
			/* Counted once checked: counters never go back. */
			ATOMIC_ADD(&ep->idle[sh].reuses, 1);
			c->uses++;
			c->reused = true;
			*out = c;
			return 0;
		}
	}
	/* Slow path: keep the endpoint with a reference, not the read lock. */
	cpool__ep_get(ep);
	cpool__rcu_read_unlock();
	err = acquire_slow(ep, sh, c, reason, out);
	if (err == -ETIMEDOUT) /* no slot in time, or the connect timed out */
		ATOMIC_ADD(&ep->ctr.timeouts, 1);
	cpool__ep_put(ep);
	return err;
}

/* Release when a waiter is queued or the endpoint is closing. */
static void
release_slow(struct cpool_endpoint *ep, struct cpool_conn *c,
	     struct cpool_idle *idle)
{
	for (;;) {
		if (LOAD(&ep->closing)) {
			cpool__conn_close(c, CPOOL_CLOSE_SHUTDOWN, true);
			return;
		}
		if (cpool__wait_release(ep, c, idle))
			return;
		/* The waiter left (timed out) before we got there. */
		cpool__spin_lock(&idle->lock);
		if (!LOAD(&ep->closing) && !LOAD(&ep->nwaiters)) {
			cpool__idle_push_locked(idle, c);
			cpool__spin_unlock(&idle->lock);
			return;
		}
		cpool__spin_unlock(&idle->lock);
	}
}

void
cpool_release(struct cpool_conn *c, unsigned flags)
{
	struct cpool_endpoint *ep;
	struct cpool *pool;
	struct cpool_idle *idle;
	int reason = 0;
	uint64_t now;

	if (unlikely(!c))
		return;
	ep = c->ep;
	pool = ep->pool;
	if (unlikely(LOAD(&c->state) != CONN_LEASED)) {
		cpool__log(&pool->cfg, CPOOL_LOG_ERROR,
			   "cpool_release: connection to %s is not leased "
			   "(double release?): ignored",
			   ep->key);
		CPOOL_BUG_ON(true);
		return;
	}
	if (unlikely(flags || c->broken)) {
		if (flags & ~CPOOL_RELEASE_CLOSE)
			cpool__log(&pool->cfg, CPOOL_LOG_WARN,
				   "cpool_release: unknown flags 0x%x: closing",
				   flags);
		reason = CPOOL_CLOSE_BY_CALLER;
	} else if (pool->cfg.max_uses && c->uses >= pool->cfg.max_uses) {
		reason = CPOOL_CLOSE_MAX_USES;
	} else if (pool->need_clock) {
		/* The workers' tick clock: no clock read on the fast path. */
		now = LOAD(&pool->tick_ns);
		if (c->expires_ns && now >= c->expires_ns)
			reason = CPOOL_CLOSE_LIFETIME;
		c->released_ns = now;
	}
	if (unlikely(reason)) {
		cpool__conn_close(c, (enum cpool_close_reason)reason, true);
		return;
	}
	idle = &ep->idle[cpool__shard_cur(pool)];
	cpool__spin_lock(&idle->lock);
	if (likely(!(LOAD(&ep->closing) | LOAD(&ep->nwaiters)))) {
		cpool__idle_push_locked(idle, c);
		cpool__spin_unlock(&idle->lock);
		return;
	}
	cpool__spin_unlock(&idle->lock);
	release_slow(ep, c, idle);
}
