/* SPDX-License-Identifier: MIT */
/*
 * Peer: apr-util's apr_reslist, its resources one connected fd each, all
 * created up front (min = smax = hmax = conns), no TTL, the same acquire
 * timeout as every pool.
 */
#include "bench.h"

#include <apr_general.h>
#include <apr_pools.h>
#include <apr_reslist.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

struct papr {
	apr_pool_t *pool;
	apr_reslist_t *rl;
};

struct papr_res {
	int fd;
};

static inline int
peer_acquire(void *inst, void *tls, struct bench_lease *l)
{
	struct papr *p = inst;
	void *res;

	if (apr_reslist_acquire(p->rl, &res) != APR_SUCCESS)
		return -ETIMEDOUT;
	l->h = res;
	return 0;
}

static inline int
peer_fd(void *inst, void *tls, struct bench_lease *l)
{
	return ((struct papr_res *)l->h)->fd;
}

static inline void
peer_release(void *inst, void *tls, struct bench_lease *l, bool close)
{
	struct papr *p = inst;

	if (close)
		apr_reslist_invalidate(p->rl, l->h);
	else
		apr_reslist_release(p->rl, l->h);
}

#define PEER_NO_THREAD_STATE
#include "bench_loop.h"

static apr_status_t
papr_construct(void **resource, void *params, apr_pool_t *pool)
{
	struct papr_res *r;
	int fd;

	fd = bench_connect(params);
	if (fd < 0)
		return APR_FROM_OS_ERROR(-fd);
	r = malloc(sizeof(*r));
	if (!r) {
		close(fd);
		return APR_ENOMEM;
	}
	r->fd = fd;
	*resource = r;
	return APR_SUCCESS;
}

static apr_status_t
papr_destruct(void *resource, void *params, apr_pool_t *pool)
{
	struct papr_res *r = resource;

	close(r->fd);
	free(r);
	return APR_SUCCESS;
}

static pthread_once_t apr_once = PTHREAD_ONCE_INIT;

static void
papr_init_once(void)
{
	apr_initialize();
}

static int
papr_create(const struct bench_env *env, unsigned conns, void **out)
{
	struct papr *p;
	apr_status_t st;

	pthread_once(&apr_once, papr_init_once);
	p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	if (apr_pool_create(&p->pool, NULL) != APR_SUCCESS) {
		free(p);
		return -ENOMEM;
	}
	st = apr_reslist_create(&p->rl, (int)conns, (int)conns, (int)conns, 0,
				papr_construct, papr_destruct,
				(void *)&env->sin, p->pool);
	if (st != APR_SUCCESS) {
		apr_pool_destroy(p->pool);
		free(p);
		return -ECONNREFUSED;
	}
	apr_reslist_timeout_set(
		p->rl, (apr_interval_time_t)env->acquire_timeout_ms * 1000);
	*out = p;
	return 0;
}

static void
papr_destroy(void *inst)
{
	struct papr *p = inst;

	apr_reslist_destroy(p->rl);
	apr_pool_destroy(p->pool);
	free(p);
}

const struct peer_ops peer_apr =
	PEER_OPS("apr_reslist", papr_create, papr_destroy);
