/* SPDX-License-Identifier: MIT */
/* Peer: the mutex + condvar LIFO pool (mutex_pool.c). */
#include "bench.h"
#include "mutex_pool.h"

#include <errno.h>

static inline int
peer_thread_init(void *inst, void **tls)
{
	return 0;
}

static inline void
peer_thread_fini(void *inst, void *tls)
{
}

static inline int
peer_acquire(void *inst, void *tls, struct bench_lease *l)
{
	int fd = mutex_pool_acquire(inst);

	if (fd < 0)
		return fd;
	l->fd = fd;
	return 0;
}

static inline int
peer_fd(void *inst, void *tls, struct bench_lease *l)
{
	return l->fd;
}

static inline void
peer_release(void *inst, void *tls, struct bench_lease *l, bool close)
{
	mutex_pool_release(inst, l->fd, close);
}

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

static int
pmutex_acquire(void *inst, struct bench_lease *l)
{
	return peer_acquire(inst, NULL, l);
}

static void
pmutex_release(void *inst, struct bench_lease *l, bool close)
{
	peer_release(inst, NULL, l, close);
}

const struct peer_ops peer_mutex = {
	.name = "mutex",
	.create = pmutex_create,
	.destroy = pmutex_destroy,
	.thread_fn = peer_thread,
	.acquire = pmutex_acquire,
	.release = pmutex_release,
};
