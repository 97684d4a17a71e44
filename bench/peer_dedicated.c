/* SPDX-License-Identifier: MIT */
/*
 * Peer: no pool at all, one connection per thread, opened before the
 * measured window. The limit every pool is compared with.
 */
#include "bench.h"

#include <errno.h>
#include <stdint.h>
#include <unistd.h>

static inline int
peer_thread_init(void *inst, void **tls)
{
	int fd = bench_connect(inst);

	if (fd < 0)
		return fd;
	*tls = (void *)(intptr_t)fd;
	return 0;
}

static inline void
peer_thread_fini(void *inst, void *tls)
{
	close((int)(intptr_t)tls);
}

static inline int
peer_acquire(void *inst, void *tls, struct bench_lease *l)
{
	l->fd = (int)(intptr_t)tls;
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
	/* A broken dedicated connection stays broken: the errors show. */
}

#include "bench_loop.h"

static int
pded_create(const struct bench_env *env, unsigned conns, void **out)
{
	*out = (void *)&env->sin;
	return 0;
}

static void
pded_destroy(void *inst)
{
}

const struct peer_ops peer_dedicated = {
	.name = "dedicated",
	.create = pded_create,
	.destroy = pded_destroy,
	.thread_fn = peer_thread,
};
