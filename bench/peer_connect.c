/* SPDX-License-Identifier: MIT */
/* Peer: connect per request, close after it. No pool at all. */
#include "bench.h"

#include <errno.h>
#include <unistd.h>

static inline int
peer_acquire(void *inst, void *tls, struct bench_lease *l)
{
	int fd = bench_connect(inst);

	if (fd < 0)
		return fd;
	l->fd = fd;
	return 0;
}

static inline void
peer_release(void *inst, void *tls, struct bench_lease *l, bool close_it)
{
	close(l->fd);
}

#define PEER_NO_THREAD_STATE
#define PEER_LEASE_FD
#include "bench_loop.h"

const struct peer_ops peer_connect =
	PEER_OPS("connect", bench_addr_create, bench_addr_destroy);
