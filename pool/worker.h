/* SPDX-License-Identifier: MIT */
/*
 * Worker threads, one per shard: background close detection, timers,
 * prewarm, freeing closed connections. Started by cpool_create(), stopped
 * and joined by cpool_shutdown().
 */
#ifndef CPOOL_WORKER_H
#define CPOOL_WORKER_H

#include "names.h"

struct cpool_worker {
	struct cpool *pool;
	struct cpool_shard_env *env; /* &pool->shards[index] */
	unsigned index;		 /* its shard */
	bool started;
	pthread_t thread;
	/* the worker's own */
	struct cpool_idle **heap; /* lists it holds, by deadline_ns */
	unsigned nheap, heap_cap;
} CPOOL_ALIGNED;

/*
 * Creates each shard's epoll and eventfd and starts the threads (pinned to
 * their CPU when there is one per CPU, unless CPOOL_NO_PIN), with every
 * signal blocked. Returns 0 or -errno with everything undone.
 */
int cpool__workers_start(struct cpool *pool);

/*
 * Stops and joins the threads; each lets go of the lists it held and frees
 * the connections its reaper had, and its inbox and reaper are closed, so
 * that later closes free at once. Safe on a partly started pool.
 */
void cpool__workers_stop(struct cpool *pool);

/* Closes the epoll and event fds: when the pool is freed. */
void cpool__workers_free(struct cpool *pool);

/* In a fork child: forgets the threads (they do not exist here). */
void cpool__workers_fork_child(struct cpool *pool);

#endif /* CPOOL_WORKER_H */
