/* SPDX-License-Identifier: MIT */
/*
 * Peer: no pool at all, one connection per thread, opened before the
 * measured window. The limit every pool is compared with.
 */
#include "bench.h"

#include <errno.h>
#include <stdint.h>

static inline int
peer_acquire(void *inst, void *tls, struct bench_lease *l)
{
	l->fd = (int)(intptr_t)tls;
	return 0;
}

static inline void
peer_release(void *inst, void *tls, struct bench_lease *l, bool close)
{
	/* A broken dedicated connection stays broken: the errors show. */
}

#define PEER_THREAD_CONN
#define PEER_LEASE_FD
#include "bench_loop.h"

const struct peer_ops peer_dedicated =
	PEER_OPS("dedicated", bench_addr_create, bench_addr_destroy);
