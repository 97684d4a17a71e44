/* SPDX-License-Identifier: MIT */
/*
 * The pool object as the layers below the workers see it: configuration,
 * what each shard offers them (its epoll, reaper and inbox), the tick
 * clock, the endpoint table and its lock, the pool-wide counters. Types
 * and small inlines only; pool.c creates and frees it.
 */
#ifndef CPOOL_CORE_H
#define CPOOL_CORE_H

#include "rcu.h"

#include <pthread.h>
#include <stdint.h>
#include <urcu/list.h>
#include <urcu/rculfhash.h>

#include "cpool.h"
#include "util.h"

/* Counters the slow paths keep with atomics (no lock held). */
struct cpool_ep_counters {
	uint64_t reuses;	 /* slow-path leases from the idle set */
	uint64_t new_leases;	 /* acquires served by a new connection */
	uint64_t connects;
	uint64_t connect_failures;
	uint64_t steals;
	uint64_t waits;
	uint64_t timeouts;
	uint64_t fail_fasts;	 /* acquires refused during backoff */
	uint64_t backoffs;	 /* connect failures that (re)started backoff */
	uint64_t prewarms;	 /* connections opened by a worker */
	uint64_t ejections;	 /* addresses ejected */
	uint64_t dns_refreshes;	 /* answers that refreshed the set */
	uint64_t dns_failures;	 /* refreshes that failed */
	uint64_t closed[CPOOL_CLOSE_REASON_END];
};

/*
 * One shard's offer to the layers below its worker: new connections are
 * registered with @epfd; closed ones are pushed on @reaper and freed by the
 * worker once its epoll_wait can no longer name them; idle lists that need
 * the worker are pushed on @inbox. Both stacks are closed when the worker
 * stops, and their pushers then do the work themselves.
 */
struct cpool_shard_env {
	int epfd;
	int evfd;		 /* wakes the worker */
	struct cpool_stack reaper;
	struct cpool_stack inbox;
} CPOOL_ALIGNED;

struct cpool_worker;
struct cpool_dns;

struct cpool {
	/* read-mostly */
	struct cpool_config cfg;
	unsigned nshards;
	uint64_t probe_bypass_ns;
	uint64_t idle_timeout_ns;
	uint64_t lifetime_ns;
	uint64_t check_idle_ns;		/* cfg.check_idle_ms; 0 without check */
	bool release_policy;		/* max_uses or ops.release: per-lease checks */
	uint64_t hash_seed;
	struct cpool_conn_ops ops;	/* cfg.conn_ops, copied; all NULL if none */
	int nullfd;			/* /dev/null, for quiet closes and fork */
	struct cpool_shard_env *shards; /* [nshards] */
	struct cpool_worker *workers;	/* [nshards], worker.c's */
	struct cds_lfht *table;
	void (*release)(struct cpool *pool); /* frees it: pool.c */

	/* read on every acquire, written once or twice */
	int state CPOOL_ALIGNED; /* 0, -ESHUTDOWN, or -ECHILD in a fork child */
	bool forked;		 /* this process is a fork child of the creator */

	/* written by every worker tick */
	uint64_t tick_ns CPOOL_ALIGNED; /* coarse clock, never goes back */

	/* slow paths */
	unsigned refs CPOOL_ALIGNED;
	int destroyed;
	pthread_mutex_t ep_lock;	 /* table writers, endpoints, counts */
	struct cds_list_head endpoints;	 /* every endpoint not yet freed */
	unsigned long table_size;	 /* buckets asked for (ep_lock) */
	unsigned long nlinked;		 /* endpoints in the table (ep_lock) */
	struct cpool_ep_counters retired; /* counters of freed endpoints */
	struct cds_list_head all;	 /* the process's pools (pool.c) */

	/* names: the resolver and the endpoints that follow DNS (names.c) */
	char *dns_servers;		 /* cfg.dns_servers, copied */
	struct cpool_dns *dns;		 /* worker 0's resolver, or NULL */
	pthread_mutex_t names_lock;
	struct cds_list_head names;	 /* named endpoints (names_lock) */
	uint64_t names_due_ns;		 /* earliest refresh due (relaxed) */
};

static inline void
cpool__pool_get(struct cpool *pool)
{
	ADD_RLX(&pool->refs, 1);
}

/* Drops a reference; the last one (owner's or an endpoint's) frees it. */
static inline void
cpool__pool_put(struct cpool *pool)
{
	if (__atomic_sub_fetch(&pool->refs, 1, __ATOMIC_ACQ_REL) == 0)
		pool->release(pool);
}

#endif /* CPOOL_CORE_H */
