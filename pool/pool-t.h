/* SPDX-License-Identifier: MIT */
/*
 * The library's types, in one place because the hot-path inlines of several
 * modules need them (HAProxy's -t.h habit). Functions live in the module
 * headers.
 *
 * Ownership and lifetime, in short:
 *  - a connection is owned by exactly one party at a time: an idle list
 *    (state CONN_IDLE, changed only under that list's lock) or one caller
 *    (CONN_LEASED). Whoever unlinks it from a list under the lock owns it.
 *  - a connection holds one slot of its endpoint; a slot holds one
 *    reference on the endpoint; an endpoint holds one on the pool. The last
 *    reference frees the object, so releases after cpool_destroy() or
 *    cpool_endpoint_remove() stay valid.
 *  - endpoints are found in the RCU hash table; the table's reference is
 *    dropped by call_rcu after the node is unlinked, so a reader inside its
 *    read-side section never sees an endpoint freed.
 */
#ifndef CPOOL_POOL_T_H
#define CPOOL_POOL_T_H

#include "rcu.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <urcu/list.h>
#include <urcu/rculfhash.h>

#include "cpool.h"
#include "util.h"

/* A test-and-test-and-set spinlock: guards list links only. */
struct cpool_spin {
	int locked;
};

/*
 * The idle list of one (endpoint, shard) pair, most recently released
 * first, with the counters its fast paths keep under its lock.
 */
struct cpool_idle {
	struct cpool_spin lock;
	unsigned count;		 /* connections in the list */
	int64_t leased;		 /* leases popped here minus returned here */
	uint64_t reuses;	 /* fast-path leases from this list (atomic) */
	struct cds_list_head head;
} CPOOL_ALIGNED;

enum {
	CONN_IDLE = 1,	/* in an idle list */
	CONN_LEASED,	/* a caller's */
	CONN_BUSY,	/* a worker's: being probed, closed or armed */
	CONN_CLOSED,
};

struct cpool_endpoint;

struct cpool_conn {
	int fd;
	unsigned state;		 /* CONN_*: relaxed atomic */
	bool reused;		 /* this lease came from the idle set */
	bool broken;		 /* a send/recv error: close at release */
	unsigned uses;		 /* leases so far */
	struct cpool_endpoint *ep;
	struct cds_list_head link; /* in an idle list while CONN_IDLE */
	uint64_t released_ns;	 /* coarse clock at the last release */
	uint64_t expires_ns;	 /* end of life with jitter; 0 = never */
	struct cpool_idle *home; /* the list it sits in while CONN_IDLE */
	int epfd;		 /* the worker epoll it is registered with */
	bool armed;		 /* watched by epoll since its last release */
	unsigned arming;	 /* workers' EPOLL_CTL_MODs in flight */
	unsigned seen;		 /* uses + 1 when a worker scan last saw it */
	struct rcu_head rcu;	 /* freed after a grace period */
};

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
	uint64_t closed[CPOOL_CLOSE_REASON_COUNT];
};

struct cpool;

struct cpool_endpoint {
	/* read-mostly: the acquire/release fast paths */
	struct cds_lfht_node node;
	struct cpool *pool;
	struct cpool_idle *idle; /* [pool->nshards] */
	int closing;		 /* removed or shutting down: no more pooling */
	unsigned nwaiters;	 /* written under wait_lock; read anywhere */
	size_t keylen;
	const char *key;	 /* the address string, as added */

	/* written on slow paths */
	unsigned refs CPOOL_ALIGNED;
	unsigned slots;		 /* reserved or open connections, <= max */
	int close_err;		 /* what waiters get once closing */
	int64_t leased_adj;	 /* leases not counted in an idle list */
	struct cpool_ep_counters ctr;

	/* connect backoff: exponential 10 ms .. 5 s after consecutive failures */
	unsigned fail_streak;
	int last_err;		 /* the last connect error, for fail-fast */
	int trial;		 /* one trial connect in flight */
	uint64_t backoff_until_ns; /* CLOCK_MONOTONIC */

	pthread_mutex_t wait_lock;
	struct cds_list_head waiters; /* FIFO of struct cpool_waiter */

	struct cds_list_head all; /* pool->endpoints, under pool->ep_lock */
	struct cds_list_head close_link; /* cpool_destroy()'s local list */
	struct rcu_head rcu;
	int family;
	socklen_t salen;
	struct sockaddr_storage sa;
	size_t alloc_size;
};

struct cpool_worker {
	struct cpool *pool;
	unsigned index;		 /* its shard */
	int epfd;		 /* idle connections it watches */
	int evfd;		 /* wakes it to stop */
	bool started;
	pthread_t thread;
	uint64_t next_sweep_ns;
} CPOOL_ALIGNED;

struct cpool {
	struct cpool_config cfg;
	struct cpool_worker *workers; /* [nshards] */
	unsigned nshards;
	uint64_t probe_bypass_ns;
	uint64_t idle_timeout_ns;
	uint64_t lifetime_ns;
	bool need_clock;	 /* any of the three above is set */
	bool settled;		 /* shutdown done: nothing reads via RCU */
	uint64_t tick_ns;	 /* coarse clock, advanced by the workers */
	uint64_t hash_seed;
	struct cds_lfht *table;

	int shutdown CPOOL_ALIGNED;
	int stopping;		 /* workers: leave your loop */
	int destroyed;		 /* cpool_destroy() ran */
	unsigned refs;
	pthread_mutex_t ep_lock;	 /* table writers, endpoints list */
	struct cds_list_head endpoints;	 /* every endpoint not yet freed */
	struct cpool_ep_counters retired; /* counters of freed endpoints */
};

#endif /* CPOOL_POOL_T_H */
