/* SPDX-License-Identifier: MIT */
/*
 * The pool everyone writes once: a LIFO stack of connected fds under one
 * mutex, a condvar for waiters, no liveness check. A peer in the benches,
 * written the obvious way on purpose.
 */
#ifndef CPOOL_BENCH_MUTEX_POOL_H
#define CPOOL_BENCH_MUTEX_POOL_H

#include <netinet/in.h>
#include <pthread.h>

struct mutex_pool {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct sockaddr_in sin;
	unsigned timeout_ms;
	unsigned n; /* idle fds on the stack */
	unsigned cap;
	int *fds;
};

int mutex_pool_create(const struct sockaddr_in *sin, unsigned conns,
		      unsigned timeout_ms, struct mutex_pool **out);
void mutex_pool_destroy(struct mutex_pool *mp);
int mutex_pool_acquire(struct mutex_pool *mp);
void mutex_pool_release(struct mutex_pool *mp, int fd, int broken);

#endif /* CPOOL_BENCH_MUTEX_POOL_H */
