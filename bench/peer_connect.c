/* SPDX-License-Identifier: MIT */
/* Peer: connect per request, close after it. No pool at all. */
#include "bench.h"

#include <errno.h>
#include <unistd.h>

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
	int fd = bench_connect(inst);

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
peer_release(void *inst, void *tls, struct bench_lease *l, bool close_it)
{
	close(l->fd);
}

#include "bench_loop.h"

static int
pconn_create(const struct bench_env *env, unsigned conns, void **out)
{
	*out = (void *)&env->sin;
	return 0;
}

static void
pconn_destroy(void *inst)
{
}

static int
pconn_acquire(void *inst, struct bench_lease *l)
{
	return peer_acquire(inst, NULL, l);
}

static void
pconn_release(void *inst, struct bench_lease *l, bool close_it)
{
	peer_release(inst, NULL, l, close_it);
}

const struct peer_ops peer_connect = {
	.name = "connect",
	.create = pconn_create,
	.destroy = pconn_destroy,
	.thread_fn = peer_thread,
	.acquire = pconn_acquire,
	.release = pconn_release,
};
