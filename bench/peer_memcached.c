/* SPDX-License-Identifier: MIT */
/*
 * Peer: libmemcached's memcached_pool (libmemcachedutil), @conns handles.
 * Its handles connect lazily, so create() warms every one with a version
 * request. libmemcached has no fd accessor: the handle's socket is found
 * from its source port and kept as the handle's user data, so the request
 * workload sends the same bytes on it as every other pool, in blocking
 * mode like every other pool's.
 */
#include "bench.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <libmemcached/memcached.h>
#include <libmemcachedutil-1.0/pool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

struct pmc {
	memcached_st *proto;
	memcached_pool_st *pool;
	struct timespec wait;
};

static inline int
peer_acquire(void *inst, void *tls, struct bench_lease *l)
{
	struct pmc *p = inst;
	memcached_return_t rc;
	memcached_st *mc;

	mc = memcached_pool_fetch(p->pool, &p->wait, &rc);
	if (!mc)
		return -ETIMEDOUT;
	l->h = mc;
	return 0;
}

static inline int
peer_fd(void *inst, void *tls, struct bench_lease *l)
{
	return (int)(intptr_t)memcached_get_user_data(l->h);
}

static inline void
peer_release(void *inst, void *tls, struct bench_lease *l, bool close)
{
	struct pmc *p = inst;

	/* No liveness or reconnect API for a raw fd: errors just count. */
	memcached_pool_release(p->pool, l->h);
}

#define PEER_NO_THREAD_STATE
#include "bench_loop.h"

static void
pmc_destroy(void *inst)
{
	struct pmc *p = inst;

	if (p->pool)
		memcached_pool_destroy(p->pool);
	if (p->proto)
		memcached_free(p->proto);
	free(p);
}

static int
pmc_create(const struct bench_env *env, unsigned conns, void **out)
{
	struct timespec nowait = { 1, 0 };
	memcached_return_t rc;
	memcached_st **h;
	struct pmc *p;
	unsigned i, n = 0;
	uint16_t lport, rport = ntohs(env->sin.sin_port);
	int fd, err = 0;

	p = calloc(1, sizeof(*p));
	h = calloc(conns, sizeof(*h));
	if (!p || !h) {
		free(p);
		free(h);
		return -ENOMEM;
	}
	/*
	 * libmemcached's deadline is time(NULL) + tv_sec: whole seconds,
	 * rounded down. One more second makes it wait at least as long as
	 * every other pool.
	 */
	p->wait.tv_sec = (env->acquire_timeout_ms + 999) / 1000 + 1;
	p->proto = memcached_create(NULL);
	if (!p->proto ||
	    memcached_server_add(p->proto, "127.0.0.1", rport) !=
		    MEMCACHED_SUCCESS ||
	    memcached_behavior_set(p->proto, MEMCACHED_BEHAVIOR_TCP_NODELAY,
				   1) != MEMCACHED_SUCCESS) {
		err = -ENOMEM;
		goto out;
	}
	p->pool = memcached_pool_create(p->proto, conns, conns);
	if (!p->pool) {
		err = -ENOMEM;
		goto out;
	}
	for (n = 0; n < conns; n++) {
		h[n] = memcached_pool_fetch(p->pool, &nowait, &rc);
		if (!h[n]) {
			err = -ETIMEDOUT;
			goto out;
		}
		rc = memcached_version(h[n]);
		lport = memcached_server_srcport(
			memcached_server_instance_by_position(h[n], 0));
		fd = lport ? bench_fd_for_local_port(lport, rport) : -ENOENT;
		if (rc != MEMCACHED_SUCCESS || fd < 0) {
			fprintf(stderr, "bench: memcached_pool warm: %s\n",
				memcached_strerror(h[n], rc));
			err = -ECONNREFUSED;
			n++;
			goto out;
		}
		/*
		 * libmemcached's sockets are nonblocking; every other pool's
		 * are blocking, and the request loop is the same for all.
		 */
		fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
		memcached_set_user_data(h[n], (void *)(intptr_t)fd);
	}
out:
	for (i = 0; i < n; i++)
		if (h[i])
			memcached_pool_release(p->pool, h[i]);
	free(h);
	if (err) {
		pmc_destroy(p);
		return err;
	}
	*out = p;
	return 0;
}

const struct peer_ops peer_memcached =
	PEER_OPS("memcached_pool", pmc_create, pmc_destroy);
