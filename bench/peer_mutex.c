/* SPDX-License-Identifier: MIT */
/* Peer: the mutex + condvar LIFO pool (mutex_pool.c). */
#include "bench.h"
#include "mutex_pool.h"

#include <errno.h>

static inline int
peer_acquire(void *inst, void *tls, struct bench_lease *l)
{
	int fd = mutex_pool_acquire(inst);

	if (fd < 0)
		return fd;
	l->fd = fd;
	return 0;
}

static inline void
peer_release(void *inst, void *tls, struct bench_lease *l, bool close)
{
	mutex_pool_release(inst, l->fd, close);
}

#define PEER_NO_THREAD_STATE
#define PEER_LEASE_FD
#include "bench_loop.h"

static int
pmutex_create(const struct bench_env *env, unsigned conns, void **out)
{
	struct mutex_pool *mp;
	int err;

	err = mutex_pool_create(&env->sin, conns, env->acquire_timeout_ms, &mp);
	if (err)
		return err;
	*out = mp;
	return 0;
}

static void
pmutex_destroy(void *inst)
{
	mutex_pool_destroy(inst);
}

const struct peer_ops peer_mutex =
	PEER_OPS("mutex", pmutex_create, pmutex_destroy);
