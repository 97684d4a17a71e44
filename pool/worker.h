/* SPDX-License-Identifier: MIT */
/*
 * Worker threads, one per shard: background close detection, timers,
 * prewarm. Started by cpool_create(), stopped and joined by cpool_destroy().
 */
#ifndef CPOOL_WORKER_H
#define CPOOL_WORKER_H

#include "pool-t.h"

/* Period of a worker's scan: arming, timers, prewarm. */
#define CPOOL_TICK_MS 3
/* Period of the idle-timeout and lifetime sweep. */
#define CPOOL_SWEEP_MS 50

/*
 * Creates each shard's epoll and eventfd and starts the threads (pinned to
 * their CPU when there is one per CPU, unless CPOOL_NO_PIN), with every
 * signal blocked. Returns 0 or -errno with everything undone.
 */
int cpool__workers_start(struct cpool *pool);

/* Stops and joins the threads. Safe on a partly started pool. */
void cpool__workers_stop(struct cpool *pool);

/* Closes the epoll and event fds: when the pool is freed. */
void cpool__workers_free(struct cpool *pool);

/*
 * Registers a new connection's fd with shard @sh's epoll, disarmed (a
 * oneshot with no events): a worker arms it once it has been idle a scan.
 */
int cpool__worker_watch(struct cpool *pool, unsigned sh, struct cpool_conn *c);

#endif /* CPOOL_WORKER_H */
