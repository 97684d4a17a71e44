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

static inline void
peer_release(void *inst, void *tls, struct bench_lease *l, bool close)
{
}

#define PEER_THREAD_CONN
#define PEER_LEASE_FD
#include "bench_loop.h"

const struct peer_ops peer_recv_peek =
	PEER_OPS("recv_peek", bench_addr_create, bench_addr_destroy);
