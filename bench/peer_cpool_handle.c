/* SPDX-License-Identifier: MIT */
/*
 * Peer: cpool with the probe bypassed (as peer_cpool_bypass), acquiring
 * through a handle: cpool_endpoint_get() once at create, then
 * cpool_acquire_ep() on every acquire, so no acquire looks the endpoint up
 * by its address string. Its own file because bench_loop.h is one loop per
 * translation unit.
 */
#include "bench.h"

#include <cpool.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

struct phandle {
	struct cpool_endpoint *ep;
	void *inner; /* the peer_cpool_bypass instance that owns the pool */
};

static inline int
peer_acquire(void *inst, void *tls, struct bench_lease *l)
{
	struct phandle *p = inst;
	struct cpool_conn *c;
	int err;

	err = cpool_acquire_ep(p->ep, &c);
	if (err)
		return err;
	l->h = c;
	return 0;
}

static inline int
peer_fd(void *inst, void *tls, struct bench_lease *l)
{
	return cpool_conn_fd(l->h);
}

static inline void
peer_release(void *inst, void *tls, struct bench_lease *l, bool close)
{
	cpool_release(l->h, close ? CPOOL_RELEASE_CLOSE : 0);
}

#define PEER_NO_THREAD_STATE
#include "bench_loop.h"

static int
phandle_create(const struct bench_env *env, unsigned conns, void **out)
{
	struct phandle *p;
	int err;

	p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	err = bench_cpool_create(env, conns, BENCH_BYPASS_MS, NULL, &p->inner);
	if (err) {
		free(p);
		return err;
	}
	err = cpool_endpoint_get(bench_cpool_of(p->inner), env->addr, &p->ep);
	if (err) {
		fprintf(stderr, "bench: cpool_endpoint_get(%s): %s\n",
			env->addr, cpool_strerror(err));
		peer_cpool_bypass.destroy(p->inner);
		free(p);
		return err;
	}
	*out = p;
	return 0;
}

static void
phandle_destroy(void *inst)
{
	struct phandle *p = inst;

	cpool_endpoint_put(p->ep);
	peer_cpool_bypass.destroy(p->inner);
	free(p);
}

const struct peer_ops peer_cpool_handle =
	PEER_OPS("cpool_handle", phandle_create, phandle_destroy);
