/* SPDX-License-Identifier: MIT */
/*
 * Names: the endpoints that follow DNS, and their background refresh,
 * driven by worker 0 through its epoll (c-ares: pool/dns.h). A caller's
 * thread never resolves after cpool_endpoint_add().
 */
#ifndef CPOOL_NAMES_H
#define CPOOL_NAMES_H

#include "endpoint.h"

/* How long cpool_endpoint_add() waits for a name's first answer. */
#define CPOOL_DNS_FIRST_MS 5000

void cpool__names_init(struct cpool *pool);

/*
 * Lists @ep (named, just added; the caller holds a reference) for refresh
 * @ttl_s from now (clamped). Does nothing once the endpoint is stopped.
 */
void cpool__names_add(struct cpool *pool, struct cpool_endpoint *ep,
		      uint32_t ttl_s);

/* Unlists @ep (stopped: removal, shutdown). */
void cpool__names_forget(struct cpool *pool, struct cpool_endpoint *ep);

/*
 * Worker 0, each loop: starts the refreshes due at @now and runs the
 * resolver's timers. Cheap when nothing is due.
 */
void cpool__names_work(struct cpool *pool, int epfd, uint64_t now);

/* Worker 0: an epoll event on a resolver socket. */
void cpool__names_event(struct cpool *pool, uint64_t data, uint32_t events);

/* Worker 0, stopping: pending refreshes end (their references drop). */
void cpool__names_stop(struct cpool *pool);

/* A fork child's destroy: the inherited resolver's sockets closed. */
void cpool__names_fork_stop(struct cpool *pool);

#endif /* CPOOL_NAMES_H */
