/* SPDX-License-Identifier: MIT */
/*
 * Pseudo-peer: one bare recv(1, MSG_PEEK | MSG_DONTWAIT) on an idle,
 * healthy connection of the thread's own per "acquire". The yardstick for
 * the cost of cpool's checkout probe.
 */
#include "bench.h"

#include <errno.h>
#include <stdint.h>
#include <sys/socket.h>
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
	char b;

	l->fd = (int)(intptr_t)tls;
	if (recv(l->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT) == -1 &&
	    errno == EAGAIN)
		return 0;
	return -EPROTO;
}

static inline int
peer_fd(void *inst, void *tls, struct bench_lease *l)
{
	return l->fd;
}

static inline void
peer_release(void *inst, void *tls, struct bench_lease *l, bool close)
{
}

#include "bench_loop.h"

static int
ppeek_create(const struct bench_env *env, unsigned conns, void **out)
{
	*out = (void *)&env->sin;
	return 0;
}

static void
ppeek_destroy(void *inst)
{
}

const struct peer_ops peer_recv_peek = {
	.name = "recv_peek",
	.create = ppeek_create,
	.destroy = ppeek_destroy,
	.thread_fn = peer_thread,
};
