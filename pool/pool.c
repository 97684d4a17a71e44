/* SPDX-License-Identifier: MIT */
/*
 * The public entry points: create/destroy, endpoints, acquire/release, and
 * what a pool does across fork().
 *
 * Acquire's fast path, in order: an RCU read-side section (a few loads
 * and stores with urcu-bp), the endpoint by name through the per-thread
 * cache, the caller's shard from rseq, one spinlocked pop of the most
 * recently released connection (IDLE -> BUSY: it is ours), the end of the
 * section (the connection pins its endpoint), the checkout checks
 * (lifetime, idle age, then the MSG_PEEK probe unless probe_bypass_ms says
 * it was released just now), BUSY -> LEASED. No allocation, no atomic
 * read-modify-write besides the list lock, one syscall (the probe).
 *
 * Release's fast path: the reuse decision (flags, broken, max_uses,
 * lifetime), then cpool__admit_put(): one spinlocked push onto the
 * caller's shard when nobody waits, else the handoff to a waiter.
 *
 * Everything slow (closing dead connections, stealing, connecting,
 * waiting) happens outside every lock, holding a reference on the
 * endpoint, with cancellation disabled but for the sleep at the cap.
 *
 * fork(): a pool belongs to the process that created it. pthread_atfork
 * handlers (registered once, after jemalloc's so that ours run first) take
 * every pool's endpoint lock and every connection-set lock before the
 * fork, so the child inherits consistent lists of every connection fd;
 * the child's handler then marks each inherited pool forked (every call
 * fails with -ECHILD), points every connection fd at /dev/null (the child
 * never reads, writes, shuts down or un-watches a socket the parent uses,
 * and the parent's closes really close) and forgets the workers. The
 * child's cpool_destroy() closes its copies and frees what it can; leases
 * the forking thread held close on release. A pool created in the child
 * is an ordinary pool.
 */
#include "pool.h"

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "alloc.h"
#include "config.h"
#include "dns.h"
#include "log.h"
#include "probe.h"
#include "worker.h"

/* The process's pools, for the fork handlers. */
static pthread_mutex_t pools_lock = PTHREAD_MUTEX_INITIALIZER;
static struct cds_list_head pools = CDS_LIST_HEAD_INIT(pools);
static pthread_once_t fork_once = PTHREAD_ONCE_INIT;

static void
fork_prepare(void)
{
	struct cds_list_head *p, *e;
	struct cpool *pool;

	pthread_mutex_lock(&pools_lock);
	cds_list_for_each(p, &pools) {
		pool = cds_list_entry(p, struct cpool, all);
		pthread_mutex_lock(&pool->ep_lock);
		cds_list_for_each(e, &pool->endpoints)
			pthread_mutex_lock(
				&cds_list_entry(e, struct cpool_endpoint, all)
					 ->conns.lock);
	}
	cpool__rcu_before_fork();
}

static void
fork_parent(void)
{
	struct cds_list_head *p, *e;
	struct cpool *pool;

	cpool__rcu_after_fork_parent();
	cds_list_for_each(p, &pools) {
		pool = cds_list_entry(p, struct cpool, all);
		cds_list_for_each(e, &pool->endpoints)
			pthread_mutex_unlock(
				&cds_list_entry(e, struct cpool_endpoint, all)
					 ->conns.lock);
		pthread_mutex_unlock(&pool->ep_lock);
	}
	pthread_mutex_unlock(&pools_lock);
}

/* Runs in the child, single-threaded: async-signal-safe work only. */
static void
fork_child(void)
{
	struct cds_list_head *p, *e;
	struct cpool *pool;

	cpool__rcu_after_fork_child();
	cds_list_for_each(p, &pools) {
		pool = cds_list_entry(p, struct cpool, all);
		STORE_RLX(&pool->forked, true);
		STORE_RLX(&pool->state, -ECHILD);
		cds_list_for_each(e, &pool->endpoints)
			cpool__ep_fork_child(
				cds_list_entry(e, struct cpool_endpoint, all));
		cpool__workers_fork_child(pool);
		pthread_mutex_init(&pool->ep_lock, NULL);
	}
	pthread_mutex_init(&pools_lock, NULL);
}

static void
fork_register(void)
{
	/* jemalloc registers its handlers on first use: let it go first, so
	 * that ours (run in reverse order) take our locks before its own. */
	cpool__free(cpool__alloc(8, 0, 0), 8);
	pthread_atfork(fork_prepare, fork_parent, fork_child);
}

/* The pool's one teardown: its last reference is gone. */
static void
pool_free(struct cpool *pool)
{
	pthread_mutex_lock(&pools_lock);
	cds_list_del(&pool->all);
	pthread_mutex_unlock(&pools_lock);
	cpool__workers_free(pool);
	if (pool->table)
		cds_lfht_destroy(pool->table, NULL);
	cpool__free(pool->workers, sizeof(*pool->workers) * pool->nshards);
	cpool__free(pool->shards, sizeof(*pool->shards) * pool->nshards);
	pthread_mutex_destroy(&pool->ep_lock);
	pthread_mutex_destroy(&pool->names_lock);
	if (pool->dns_servers)
		cpool__free(pool->dns_servers, strlen(pool->dns_servers) + 1);
	close(pool->nullfd);
	cpool__free(pool, sizeof(*pool));
}

int
cpool_create(const struct cpool_config *cfg, struct cpool **out)
{
	struct cpool_conn_ops ops;
	struct cpool_config c;
	struct cpool *pool;
	int err;

	if (!out)
		return -EINVAL;
	err = cpool__config_load(cfg, &c, &ops);
	if (err)
		return err;
	if (c.dns_servers && cpool__dns_servers_check(c.dns_servers)) {
		cpool__log(&c, CPOOL_LOG_ERROR,
			   "cpool_create: invalid config: dns_servers = "
			   "\"%.64s\" (want \"ip[:port],[v6]:port,...\")",
			   c.dns_servers);
		return -EINVAL;
	}
	pthread_once(&fork_once, fork_register);
	pool = cpool__alloc(sizeof(*pool), CPOOL_CACHELINE, 0);
	if (!pool)
		return -ENOMEM;
	pool->nullfd = cpool__null_open();
	if (pool->nullfd < 0) {
		err = pool->nullfd;
		cpool__free(pool, sizeof(*pool));
		return err;
	}
	pool->cfg = c;
	pool->ops = ops;
	if (c.dns_servers) {
		size_t n = strlen(c.dns_servers) + 1;

		pool->dns_servers = cpool__alloc(n, 0, 0);
		if (!pool->dns_servers) {
			close(pool->nullfd);
			cpool__free(pool, sizeof(*pool));
			return -ENOMEM;
		}
		memcpy(pool->dns_servers, c.dns_servers, n);
		pool->cfg.dns_servers = pool->dns_servers;
	}
	if (c.conn_ops)
		pool->cfg.conn_ops = &pool->ops;
	if (pool->ops.check)
		pool->check_idle_ns = (uint64_t)c.check_idle_ms * 1000000u;
	pool->nshards = c.workers;
	pool->probe_bypass_ns = (uint64_t)c.probe_bypass_ms * 1000000u;
	pool->idle_timeout_ns = (uint64_t)c.idle_timeout_ms * 1000000u;
	pool->lifetime_ns = (uint64_t)c.max_lifetime_ms * 1000000u;
	pool->release_policy = c.max_uses || pool->ops.release;
	pool->hash_seed = cpool__random();
	pool->tick_ns = cpool__coarse_ns();
	pool->release = pool_free;
	pool->table_size = 16;
	pool->workers = cpool__alloc(sizeof(*pool->workers) * pool->nshards,
				     CPOOL_CACHELINE, 0);
	pool->shards = cpool__alloc(sizeof(*pool->shards) * pool->nshards,
				    CPOOL_CACHELINE, 0);
	/* No CDS_LFHT_AUTO_RESIZE: that would start a liburcu thread. */
	pool->table = cds_lfht_new_flavor(pool->table_size, 16, 0, 0,
					  &urcu_bp_flavor, NULL);
	if (!pool->workers || !pool->shards || !pool->table) {
		err = -ENOMEM;
		goto fail;
	}
	pthread_mutex_init(&pool->ep_lock, NULL);
	CDS_INIT_LIST_HEAD(&pool->endpoints);
	cpool__names_init(pool);
	pool->refs = 1;
	err = cpool__workers_start(pool);
	if (err) {
		pthread_mutex_destroy(&pool->ep_lock);
		pthread_mutex_destroy(&pool->names_lock);
		goto fail;
	}
	pthread_mutex_lock(&pools_lock);
	cds_list_add(&pool->all, &pools);
	pthread_mutex_unlock(&pools_lock);
	*out = pool;
	return 0;
fail:
	if (pool->table)
		cds_lfht_destroy(pool->table, NULL);
	cpool__free(pool->workers, sizeof(*pool->workers) * pool->nshards);
	cpool__free(pool->shards, sizeof(*pool->shards) * pool->nshards);
	if (pool->dns_servers)
		cpool__free(pool->dns_servers, strlen(pool->dns_servers) + 1);
	close(pool->nullfd);
	cpool__free(pool, sizeof(*pool));
	return err;
}

/* Closes the BUSY connections of a drained list. */
static void
close_drained(struct cds_list_head *drained)
{
	struct cds_list_head *pos, *tmp;

	cds_list_for_each_safe(pos, tmp, drained)
		cpool__ep_conn_close(cds_list_entry(pos, struct cpool_conn,
						    link),
				     CPOOL_CLOSE_SHUTDOWN, false);
}

/*
 * Stops every endpoint unlinked into @eps with @err, closes their idle
 * connections, waits for a grace period and drops the table's references.
 */
static void
close_unlinked(struct cds_list_head *eps, int err)
{
	struct cds_list_head drained, *pos, *tmp;

	cds_list_for_each(pos, eps) {
		struct cpool_endpoint *ep =
			cds_list_entry(pos, struct cpool_endpoint, close_link);

		CDS_INIT_LIST_HEAD(&drained);
		cpool__ep_close(ep, err, &drained);
		cpool__names_forget(ep->pool, ep);
		close_drained(&drained);
	}
	/* No reader still holds an unlinked endpoint without a reference. */
	cpool__rcu_synchronize();
	cds_list_for_each_safe(pos, tmp, eps)
		cpool__ep_put(cds_list_entry(pos, struct cpool_endpoint,
					     close_link));
}

/*
 * Stops the pool for good but keeps the object: the first step of destroy,
 * callable on its own so that threads still calling acquire get -ESHUTDOWN
 * from a valid object until they are joined.
 */
void
cpool_shutdown(struct cpool *pool)
{
	struct cds_list_head eps;
	int zero = 0, old;

	if (!pool || !__atomic_compare_exchange_n(&pool->state, &zero,
						  -ESHUTDOWN, false,
						  __ATOMIC_SEQ_CST,
						  __ATOMIC_SEQ_CST))
		return; /* shut down already, or a fork child's inherited pool */
	old = cpool__nocancel_begin();
	/*
	 * Workers first: from here on closes free at once. Their epoll fds
	 * stay open until the pool is freed: an acquire connecting right now
	 * still registers with them, and leases out still un-watch at close.
	 */
	cpool__workers_stop(pool);
	CDS_INIT_LIST_HEAD(&eps);
	cpool__ep_unlink(pool, NULL, &eps);
	close_unlinked(&eps, -ESHUTDOWN);
	cpool__nocancel_end(old);
}

/*
 * A fork child's destroy of an inherited pool: no worker exists, no lock a
 * dead thread may hold is taken, nothing touches a socket. Closes the
 * child's copies (pointed at /dev/null already) and frees the memory,
 * keeping only what leases the child still holds need for their release.
 */
static void
destroy_inherited(struct cpool *pool)
{
	struct cds_list_head *pos, *tmp, *p, *q;
	struct cpool_endpoint *ep;
	struct cpool_snode *n, *next;
	struct cpool_conn *c;
	unsigned k, kept, eps = 0;

	cpool__names_fork_stop(pool);
	for (k = 0; k < pool->nshards; k++) {
		cpool__stack_close(&pool->shards[k].inbox);
		for (n = cpool__stack_close(&pool->shards[k].reaper); n;
		     n = next) {
			next = n->next;
			cpool__free(caa_container_of(n, struct cpool_conn,
						     rnode),
				    sizeof(struct cpool_conn));
		}
	}
	cds_list_for_each_safe(pos, tmp, &pool->endpoints) {
		ep = cds_list_entry(pos, struct cpool_endpoint, all);
		kept = 0;
		cds_list_for_each_safe(p, q, &ep->conns.all) {
			c = cds_list_entry(p, struct cpool_conn, all);
			if (c->state == CONN_LEASED) {
				kept++; /* its release closes it */
				continue;
			}
			/*
			 * Idle ones are whole: their close op runs (quiet, the
			 * fd is /dev/null). Others were in a dead thread's
			 * hands, maybe inside an op: the fd only.
			 */
			cds_list_del(&c->all);
			if (!(c->state == CONN_IDLE && c->hooked &&
			      pool->ops.close &&
			      pool->ops.close(c, CPOOL_CLOSE_SHUTDOWN,
					      CPOOL_CLOSE_QUIET,
					      pool->cfg.conn_ops_arg)))
				close(c->fd);
			cpool__free(c, sizeof(*c));
		}
		/* Their members are freed: the lists are never walked again. */
		for (k = 0; k < pool->nshards; k++) {
			CDS_INIT_LIST_HEAD(&ep->idle[k].head);
			ep->idle[k].watched = &ep->idle[k].head;
			ep->idle[k].count = 0;
		}
		cpool__rcu_read_lock();
		cds_lfht_del(pool->table, &ep->node);
		cpool__rcu_read_unlock();
		/* References of the parent's threads do not exist here. */
		STORE_RLX(&ep->refs, kept + 1);
		eps++;
	}
	STORE_RLX(&pool->refs, eps + 1);
	cds_list_for_each_safe(pos, tmp, &pool->endpoints)
		cpool__ep_put(cds_list_entry(pos, struct cpool_endpoint, all));
	cpool__pool_put(pool);
}

void
cpool_destroy(struct cpool *pool)
{
	int old;

	if (!pool)
		return;
	if (__atomic_exchange_n(&pool->destroyed, 1, __ATOMIC_SEQ_CST)) {
		cpool__log(&pool->cfg, CPOOL_LOG_ERROR,
			   "cpool_destroy called twice");
		return;
	}
	old = cpool__nocancel_begin();
	if (LOAD_RLX(&pool->forked)) {
		destroy_inherited(pool);
	} else {
		cpool_shutdown(pool);
		cpool__pool_put(pool);
	}
	cpool__nocancel_end(old);
}

/* A name's first answer, on the caller's thread (up to 5 s), and its add. */
static int
add_name(struct cpool *pool, const char *address, const char *host,
	 unsigned short port)
{
	struct cpool_dns_result *res;
	struct cpool_endpoint *ep;
	struct cpool_addr *a;
	unsigned i;
	int err;

#ifdef CPOOL_FUZZ
	/* Fuzzing must not hit the resolver: names do not resolve there. */
	return -EHOSTUNREACH;
#endif
	res = cpool__alloc(sizeof(*res), 0, 0);
	if (!res)
		return -ENOMEM;
	err = cpool__dns_resolve(pool->dns_servers, host, port,
				 CPOOL_DNS_FIRST_MS, res);
	a = err ? NULL : cpool__alloc(sizeof(*a) * res->n, 0, 0);
	if (!err && !a)
		err = -ENOMEM;
	if (!err) {
		for (i = 0; i < res->n; i++) {
			a[i].family = res->addr[i].family;
			a[i].len = res->addr[i].len;
			memcpy(&a[i].ss, &res->addr[i].ss, sizeof(a[i].ss));
		}
		err = cpool__ep_add(pool, address, a, res->n, host, port, &ep);
		cpool__free(a, sizeof(*a) * res->n);
		if (!err) {
			cpool__names_add(pool, ep, res->ttl_s);
			cpool__ep_put(ep);
		}
	}
	cpool__free(res, sizeof(*res));
	return err;
}

int
cpool_endpoint_add(struct cpool *pool, const char *address)
{
	char host[CPOOL_ADDRESS_MAX + 1];
	unsigned short port = 0;
	struct cpool_addr a;
	int err, old;

	if (!pool || !address)
		return -EINVAL;
	if (LOAD_RLX(&pool->state))
		return LOAD_RLX(&pool->state);
	err = cpool__addr_split(address, &a, host, &port);
	if (err == CPOOL_ADDR_NAME) {
		old = cpool__nocancel_begin(); /* the first answer */
		err = add_name(pool, address, host, port);
		cpool__nocancel_end(old);
	} else if (!err) {
		err = cpool__ep_add(pool, address, &a, 1, NULL, 0, NULL);
	}
	if (err && err != -EEXIST)
		cpool__log(&pool->cfg, CPOOL_LOG_ERROR,
			   "cpool_endpoint_add: \"%.64s\": %s", address,
			   cpool_strerror(err));
	return err;
}

int
cpool_endpoint_remove(struct cpool *pool, const char *address)
{
	struct cds_list_head eps;
	int old;

	if (!pool || !address)
		return -EINVAL;
	if (LOAD_RLX(&pool->state))
		return LOAD_RLX(&pool->state);
	CDS_INIT_LIST_HEAD(&eps);
	if (!cpool__ep_unlink(pool, address, &eps))
		return LOAD_RLX(&pool->state) ? LOAD_RLX(&pool->state)
					       : -ENOENT;
	old = cpool__nocancel_begin();
	close_unlinked(&eps, -ENOENT);
	cpool__nocancel_end(old);
	return 0;
}

/* ops->check at checkout: bytes wait (@tcp), or it was idle long enough. */
static int __attribute__((noinline, cold))
checkout_check(struct cpool_conn *c, enum cpool_verdict tcp)
{
	return (int)cpool__ep_conn_check(c, tcp);
}

/* checkout_reason() past the age checks, for a pool with check_idle_ms. */
static int __attribute__((noinline))
checkout_ping(const struct cpool *pool, struct cpool_conn *c, uint64_t now)
{
	bool ping = now - c->released_ns >= pool->check_idle_ns;
	enum cpool_verdict v;

	if (!ping && pool->probe_bypass_ns &&
	    cpool__coarse_ns() - c->released_ns < pool->probe_bypass_ns)
		return 0;
	v = cpool_probe(c->fd);
	if (v == CPOOL_ALIVE && !ping)
		return 0;
	if (v == CPOOL_ALIVE || v == CPOOL_UNEXPECTED_DATA)
		return checkout_check(c, v);
	return (int)v;
}

/*
 * Whether a connection taken from the idle set may be handed out: 0, or the
 * reason to close it. Lifetime and idle age first (no syscall), then the
 * probe, skipped only inside the bypass window; then, with conn_ops, the
 * protocol's check when bytes wait or check_idle_ms has passed (the healthy
 * path makes no other call than the probe).
 *
 * No subtraction here can wrap: released_ns is a value the tick had, and
 * the tick never goes back, so the tick read now is not below it; the
 * coarse clock read now is not below any value the tick took from it (and
 * if it were, the difference would be huge, which means "probe").
 */
static inline int
checkout_reason(const struct cpool *pool, struct cpool_conn *c)
{
	uint64_t now = LOAD_RLX(&pool->tick_ns);
	enum cpool_verdict v;

	if (cpool__ep_conn_gone(c->ep, c))
		return CPOOL_CLOSE_DRAINED;
	if (now >= c->expires_ns)
		return CPOOL_CLOSE_LIFETIME;
	if (pool->idle_timeout_ns &&
	    now - c->released_ns >= pool->idle_timeout_ns)
		return CPOOL_CLOSE_IDLE_TIMEOUT;
	if (unlikely(pool->check_idle_ns))
		return checkout_ping(pool, c, now);
	if (pool->probe_bypass_ns &&
	    cpool__coarse_ns() - c->released_ns < pool->probe_bypass_ns)
		return 0;
	v = cpool_probe(c->fd);
	if (likely(v == CPOOL_ALIVE))
		return 0;
	if (pool->ops.check && v == CPOOL_UNEXPECTED_DATA)
		return checkout_check(c, v);
	return (int)v;
}

/*
 * A checked connection becomes the caller's lease. A worker may be arming
 * its watch right now (counted in c->arming under the list's lock, the
 * EPOLL_CTL_MOD after it): the lease waits for that, a few instructions at
 * most, because its holder, or a client library under it (libpq drops a
 * lost connection's socket itself), may close the fd and the number be
 * reused under the worker's MOD.
 */
static inline void
lease(struct cpool_conn *c, struct cpool_conn **out)
{
	while (unlikely(LOAD_ACQ(&c->arming)))
		caa_cpu_relax();
	c->uses++;
	c->reused = true;
	cpool__conn_move(c, CONN_BUSY, CONN_LEASED);
	*out = c;
}

/*
 * Opens a connection for a caller holding a slot of @ep. Returns 0 with
 * the new lease, or -errno with the slot given back.
 */
static int
acquire_new(struct cpool_endpoint *ep, unsigned sh, struct cpool_conn **out)
{
	struct cpool_conn *c;
	int err;

	err = cpool__ep_conn_open(ep, sh, true, &c);
	if (err) {
		cpool__admit_give_back(&ep->admit);
		return err;
	}
	if (unlikely(cpool__admit_closing(&ep->admit))) {
		err = cpool__admit_close_err(&ep->admit);
		cpool__conn_move(c, CONN_LEASED, CONN_BUSY);
		cpool__ep_conn_close(c, CPOOL_CLOSE_SHUTDOWN, true);
		return err;
	}
	ADD_RLX(&ep->ctr.new_leases, 1);
	STORE_REL(&c->home, &ep->idle[sh]); /* where its release goes */
	c->uses = 1;
	c->reused = false;
	*out = c;
	return 0;
}

struct acquire_ctx {
	struct cpool_endpoint *ep;
	struct cpool_conn *c; /* a connection the cancelled wait left us */
};

/* Cleanup handler: the caller was cancelled at the cap. */
static void
acquire_cancelled(void *arg)
{
	struct acquire_ctx *x = arg;

	if (x->c) { /* handed over while the endpoint closed: LEASED */
		cpool__conn_move(x->c, CONN_LEASED, CONN_BUSY);
		cpool__ep_conn_close(x->c, CPOOL_CLOSE_SHUTDOWN, true);
	}
	cpool__ep_put(x->ep);
}

/* Waits at the cap: cpool__admit_wait() with the cancellation handler. */
static int
acquire_wait(struct cpool_endpoint *ep, uint64_t deadline, int cancel_state,
	     struct cpool_conn **c)
{
	struct acquire_ctx x = { ep, NULL };
	int got;

	pthread_cleanup_push(acquire_cancelled, &x);
	got = cpool__admit_wait(&ep->admit, deadline, cancel_state, &x.c);
	pthread_cleanup_pop(0);
	*c = x.c;
	return got;
}

/*
 * Everything after the first pop: close the rejected candidate @c (if any,
 * with @reason), pop again, steal, connect under the cap, or wait. The
 * caller holds a reference on @ep and no lock; cancellation is disabled.
 */
static int
acquire_slow(struct cpool_endpoint *ep, unsigned sh, struct cpool_conn *c,
	     int reason, int cancel_state, struct cpool_conn **out)
{
	struct cpool *pool = ep->pool;
	uint64_t deadline = 0;
	bool waited = false;
	int got;

	for (;;) {
		if (c) {
			cpool__ep_conn_close(c, (enum cpool_close_reason)reason,
					     true);
			c = NULL;
		}
		if (unlikely(cpool__admit_closing(&ep->admit)))
			return cpool__admit_close_err(&ep->admit);
		c = cpool__idle_pop(&ep->idle[sh]);
		if (!c) {
			c = cpool__idle_steal(ep->idle, pool->nshards, sh);
			if (c)
				ADD_RLX(&ep->ctr.steals, 1);
		}
		if (!c && cpool__admit_reserve(&ep->admit))
			return acquire_new(ep, sh, out);
		if (!c) {
			if (pool->cfg.acquire_timeout_ms == 0)
				return -ETIMEDOUT;
			if (!deadline)
				deadline = cpool__now_ns() +
					   (uint64_t)pool->cfg
							   .acquire_timeout_ms *
						   1000000u;
			if (!waited) {
				waited = true;
				ADD_RLX(&ep->ctr.waits, 1);
			}
			got = acquire_wait(ep, deadline, cancel_state, &c);
			if (got == CPOOL_ADMIT_SLOT) {
				if (!cpool__admit_closing(&ep->admit))
					return acquire_new(ep, sh, out);
				cpool__admit_give_back(&ep->admit);
				continue;
			}
			if (got < 0)
				return got;
			reason = CPOOL_CLOSE_SHUTDOWN;
			if (unlikely(cpool__admit_closing(&ep->admit)))
				continue; /* closes it, returns the error */
		}
		reason = checkout_reason(pool, c);
		if (!reason) {
			ADD_RLX(&ep->ctr.reuses, 1);
			/* Stolen or handed over: its release comes back here. */
			STORE_REL(&c->home, &ep->idle[sh]);
			lease(c, out);
			return 0;
		}
	}
}

/*
 * The acquire after a first pop that gave nothing (@c NULL) or a
 * connection to close with @reason. The caller holds a reference on @ep,
 * which this drops.
 */
static int __attribute__((noinline))
acquire_more(struct cpool_endpoint *ep, unsigned sh, struct cpool_conn *c,
	     int reason, struct cpool_conn **out)
{
	int err, old = cpool__nocancel_begin();

	err = acquire_slow(ep, sh, c, reason, old, out);
	if (err == -ETIMEDOUT) /* no slot in time, or the connect timed out */
		ADD_RLX(&ep->ctr.timeouts, 1);
	cpool__ep_put(ep);
	cpool__nocancel_end(old);
	return err;
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
	cpool__rcu_read_lock();
	err = LOAD_RLX(&pool->state);
	if (unlikely(err)) {
		cpool__rcu_read_unlock();
		return err;
	}
	ep = cpool__ep_find(pool, address);
	if (unlikely(!ep)) {
		/* Shutdown may have unlinked it after our check. */
		err = LOAD_RLX(&pool->state) ? LOAD_RLX(&pool->state) : -ENOENT;
		cpool__rcu_read_unlock();
		return err;
	}
	sh = cpool__shard_cur(pool->nshards);
	c = cpool__idle_pop(&ep->idle[sh]);
	if (likely(c)) {
		cpool__rcu_read_unlock(); /* @c pins its endpoint */
		reason = checkout_reason(pool, c);
		if (likely(!reason)) {
			/* Counted once checked: counters never go back. */
			ADD_RLX(&ep->idle[sh].reuses, 1);
			lease(c, out);
			return 0;
		}
		cpool__ep_get(ep);
	} else {
		/* Slow path: keep the endpoint with a reference. */
		cpool__ep_get(ep);
		cpool__rcu_read_unlock();
	}
	return acquire_more(ep, sh, c, reason, out);
}

/*
 * checkout_reason()'s healthy path with the coarse clock read already
 * (@coarse): true when @c may be leased as it is (probe bypassed), false
 * when the full checkout must decide.
 */
static inline bool
checkout_quick(const struct cpool *pool, const struct cpool_endpoint *ep,
	       const struct cpool_conn *c, uint64_t coarse)
{
	uint64_t now = LOAD_RLX(&pool->tick_ns);

	return !cpool__ep_conn_gone(ep, c) && now < c->expires_ns &&
	       (!pool->idle_timeout_ns ||
		now - c->released_ns < pool->idle_timeout_ns) &&
	       !pool->check_idle_ns &&
	       coarse - c->released_ns < pool->probe_bypass_ns;
}

/* The handle's acquire past its first look: @c popped (or NULL). */
static int __attribute__((noinline))
acquire_ep_more(struct cpool_endpoint *ep, struct cpool_idle *idle,
		struct cpool_conn *c, bool hand, struct cpool_conn **out)
{
	struct cpool *pool = ep->pool;
	unsigned sh = (unsigned)(idle - ep->idle);
	int reason = 0;

	if (hand)
		cpool__idle_hand_over(idle);
	if (c) {
		reason = checkout_reason(pool, c);
		if (likely(!reason)) {
			ADD_RLX(&idle->reuses, 1);
			lease(c, out);
			return 0;
		}
	}
	cpool__ep_get(ep);
	return acquire_more(ep, sh, c, reason, out);
}

/* The handle's acquire when its list's lock is taken: wait for it. */
static int __attribute__((noinline))
acquire_ep_locked(struct cpool_endpoint *ep, struct cpool_idle *idle,
		  struct cpool_conn **out)
{
	struct cpool_conn *c;
	bool hand = false;

	cpool__spin_lock_slow(&idle->lock);
	c = cpool__idle_pop_locked(idle, &hand);
	cpool__spin_unlock(&idle->lock);
	return acquire_ep_more(ep, idle, c, hand, out);
}

/*
 * The handle's acquire: the handle's reference pins the endpoint, so no
 * read-side section, no lookup; a stopped endpoint says so in ep->dead
 * (set before its lists are drained: a pop that wins the race leases a
 * connection whose release then closes it, as after a by-name lookup
 * that came just before a removal). Its fast path makes no call but the
 * coarse clock's, read first, and every slow case is a tail call, so that
 * nothing has to live across a call: the path a hot caller runs is as
 * short as the pool can make it.
 */
int
cpool_acquire_ep(struct cpool_endpoint *ep, struct cpool_conn **out)
{
	struct cpool_idle *idle;
	struct cpool *pool;
	struct cpool_conn *c;
	uint64_t coarse = 0;
	bool hand = false;
	unsigned sh;
	int err;

	if (unlikely(!ep || !out))
		return -EINVAL;
	err = LOAD_ACQ(&ep->dead);
	if (unlikely(err))
		return err;
	/* The calls first (the CPU's fallback, the clock), few values live. */
	sh = cpool__shard_cur(ep->pool->nshards);
	if (ep->pool->probe_bypass_ns)
		coarse = cpool__coarse_ns();
	pool = ep->pool;
	idle = &ep->idle[sh];
	if (unlikely(__atomic_exchange_n(&idle->lock.locked, 1,
					 __ATOMIC_ACQUIRE)))
		return acquire_ep_locked(ep, idle, out);
	c = cpool__idle_pop_locked(idle, &hand);
	cpool__spin_unlock(&idle->lock);
	if (unlikely(!c || hand || !checkout_quick(pool, ep, c, coarse)))
		return acquire_ep_more(ep, idle, c, hand, out);
	ADD_RLX(&idle->reuses, 1);
	lease(c, out);
	return 0;
}

int
cpool_endpoint_get(struct cpool *pool, const char *address,
		   struct cpool_endpoint **out)
{
	struct cpool_endpoint *ep;
	int err;

	if (!pool || !address || !out)
		return -EINVAL;
	cpool__rcu_read_lock();
	err = LOAD_RLX(&pool->state);
	ep = err ? NULL : cpool__ep_lookup(pool, address);
	/* In the table: the table's reference is not gone before a grace
	 * period, so this one is never taken on a freed endpoint. */
	if (ep && !LOAD_ACQ(&ep->dead))
		cpool__ep_get(ep);
	else if (ep)
		ep = NULL;
	cpool__rcu_read_unlock();
	if (!ep)
		return err ? err : -ENOENT;
	*out = ep;
	return 0;
}

void
cpool_endpoint_put(struct cpool_endpoint *ep)
{
	if (ep)
		cpool__ep_put(ep);
}

/* A lease that is not pooled again: closed with @reason. */
static void
release_close(struct cpool_conn *c, enum cpool_close_reason reason)
{
	int old = cpool__nocancel_begin();

	cpool__conn_move(c, CONN_LEASED, CONN_BUSY);
	cpool__ep_conn_close(c, reason, true);
	cpool__nocancel_end(old);
}

/* ops->release: whether the protocol refuses to pool @c again. */
static bool __attribute__((noinline, cold))
release_refused(struct cpool_conn *c)
{
	struct cpool *pool = c->ep->pool;
	int old = cpool__nocancel_begin(), rc;

	rc = pool->ops.release(c, pool->cfg.conn_ops_arg);
	cpool__nocancel_end(old);
	return rc != 0;
}

/*
 * The whole release: every check, and the put through admission. The fast
 * path below comes here for anything but a clean lease going back to an
 * uncontended list nobody waits at.
 */
static void __attribute__((noinline))
release_full(struct cpool_conn *c, unsigned flags)
{
	struct cpool_endpoint *ep;
	struct cpool *pool;
	int reason = 0;

	if (unlikely(!c))
		return;
	ep = c->ep;
	pool = ep->pool;
	if (unlikely(LOAD_RLX(&c->state) != CONN_LEASED)) {
		cpool__log(&pool->cfg, CPOOL_LOG_ERROR,
			   "cpool_release: connection to %s is not leased "
			   "(double release?): ignored",
			   ep->key);
		CPOOL_BUG_ON(!cpool__sanitize);
		return;
	}
	c->released_ns = LOAD_RLX(&pool->tick_ns);
	if (unlikely(flags || c->broken)) {
		if (flags & ~CPOOL_RELEASE_CLOSE)
			cpool__log(&pool->cfg, CPOOL_LOG_WARN,
				   "cpool_release: unknown flags 0x%x: closing",
				   flags);
		reason = CPOOL_CLOSE_BY_CALLER;
	} else if (pool->cfg.max_uses && c->uses >= pool->cfg.max_uses) {
		reason = CPOOL_CLOSE_MAX_USES;
	} else if (c->released_ns >= c->expires_ns) {
		reason = CPOOL_CLOSE_LIFETIME;
	} else if (cpool__ep_conn_gone(ep, c)) {
		reason = CPOOL_CLOSE_DRAINED;
	} else if (pool->ops.release &&
		   !cpool__admit_closing(&ep->admit) && release_refused(c)) {
		reason = CPOOL_CLOSE_BY_CALLER;
	}
	if (unlikely(reason)) {
		release_close(c, (enum cpool_close_reason)reason);
		return;
	}
	CPOOL_PAUSE(CPOOL_PP_RELEASE_CHECKED, c);
	/* Closing (removed, shut down, or a fork child's copy): close it. */
	if (unlikely(cpool__admit_put(&ep->admit, c->home, c, CONN_LEASED)))
		release_close(c, CPOOL_CLOSE_SHUTDOWN);
}

/* The put of release_full(), for the fast path's contended cases. */
static void __attribute__((noinline))
release_put(struct cpool_conn *c, struct cpool_idle *idle)
{
	c->released_ns = LOAD_RLX(&c->ep->pool->tick_ns);
	if (unlikely(cpool__admit_put(&c->ep->admit, idle, c, CONN_LEASED)))
		release_close(c, CPOOL_CLOSE_SHUTDOWN);
}

static void __attribute__((noinline))
release_hand_over(struct cpool_idle *idle)
{
	cpool__idle_hand_over(idle);
}

/*
 * Release's fast path: a clean lease of a pool without per-lease policy
 * (max_uses, ops->release), no drain under way, back onto an uncontended
 * list nobody waits at: the list of the shard it was acquired on
 * (c->home, set at the lease), so that no CPU lookup is made here.
 * Everything else is a tail call to release_full(), so that nothing lives
 * across a call here.
 */
void
cpool_release(struct cpool_conn *c, unsigned flags)
{
	struct cpool_endpoint *ep;
	struct cpool_idle *idle;
	struct cpool *pool;
	uint64_t now;
	bool hand;

	if (unlikely(!c))
		return;
	ep = c->ep;
	pool = ep->pool;
	now = LOAD_RLX(&pool->tick_ns);
	if (unlikely(flags | c->broken | pool->release_policy |
		     LOAD_RLX(&ep->ndraining) |
		     (LOAD_RLX(&c->state) != CONN_LEASED)) ||
	    unlikely(now >= c->expires_ns)) {
		release_full(c, flags);
		return;
	}
	CPOOL_PAUSE(CPOOL_PP_RELEASE_CHECKED, c);
	idle = c->home;
	if (unlikely(__atomic_exchange_n(&idle->lock.locked, 1,
					 __ATOMIC_ACQUIRE))) {
		release_put(c, idle);
		return;
	}
	/* Under the lock, as in cpool__admit_put(): see admit.h. */
	if (unlikely(LOAD_RLX(&ep->admit.gate))) {
		cpool__spin_unlock(&idle->lock);
		release_put(c, idle);
		return;
	}
	c->released_ns = now;
	CPOOL_PAUSE(CPOOL_PP_RELEASE_GATE_READ, &ep->admit);
	hand = cpool__idle_push_locked(idle, c, CONN_LEASED);
	cpool__spin_unlock(&idle->lock);
	if (unlikely(hand))
		release_hand_over(idle);
}
