/* SPDX-License-Identifier: MIT */
/*
 * Peer: cpool itself, twice: with the checkout probe on every acquire
 * (the default), and with probe_bypass_ms = BENCH_BYPASS_MS so that a
 * connection released less than that ago is handed out unprobed. The
 * endpoint is named by its address string on every acquire, as users do
 * (peer_cpool_handle.c acquires through a handle instead).
 */
#include "bench.h"

#include <cpool.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct pcpool {
	struct cpool *pool;
	char addr[64];
};

static inline int
peer_acquire(void *inst, void *tls, struct bench_lease *l)
{
	struct pcpool *p = inst;
	struct cpool_conn *c;
	int err;

	err = cpool_acquire(p->pool, p->addr, &c);
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

static void
pcpool_log(void *user_data, int level, const char *msg)
{
	if (level <= CPOOL_LOG_WARN)
		fprintf(stderr, "cpool: %s\n", msg);
}

/*
 * A pool of @conns connections to the bench's upstream, all opened (by
 * leasing them all at once) and idle when it returns. With @bytes_per_conn,
 * also the growth of cpool_memory_get() from the empty endpoint to the
 * @conns idle connections, per connection.
 */
int
bench_cpool_create(const struct bench_env *env, unsigned conns,
		   unsigned bypass_ms, double *bytes_per_conn, void **out)
{
	size_t mem0 = 0, mem1 = 0;
	struct cpool_config cfg;
	struct cpool_conn **c;
	struct pcpool *p;
	unsigned i, n = 0;
	int err;

	p = calloc(1, sizeof(*p));
	c = calloc(conns, sizeof(*c));
	if (!p || !c) {
		free(p);
		free(c);
		return -ENOMEM;
	}
	snprintf(p->addr, sizeof(p->addr), "%s", env->addr);
	cpool_config_init(&cfg);
	cfg.max_conns_per_endpoint = conns;
	cfg.probe_bypass_ms = bypass_ms;
	cfg.acquire_timeout_ms = env->acquire_timeout_ms;
	/*
	 * Opening 10 000 connections back to back can overflow the server's
	 * accept queue; a SYN retransmit takes 1 s. Not what is measured.
	 */
	cfg.connect_timeout_ms = 5000;
	cfg.idle_timeout_ms = 0;
	cfg.flags |= env->cpool_flags;
	cfg.dns_servers = env->dns_servers;
	cfg.log_fn = pcpool_log;
	err = cpool_create(&cfg, &p->pool);
	if (err)
		goto fail;
	err = cpool_endpoint_add(p->pool, p->addr);
	if (err)
		goto fail;
	if (bytes_per_conn && cpool_memory_get(&mem0))
		bytes_per_conn = NULL;
	for (n = 0; n < conns; n++) {
		err = cpool_acquire(p->pool, p->addr, &c[n]);
		if (err)
			goto fail;
	}
	for (i = 0; i < n; i++)
		cpool_release(c[i], 0);
	if (bytes_per_conn) {
		*bytes_per_conn = -1;
		if (!cpool_memory_get(&mem1))
			*bytes_per_conn = ((double)mem1 - (double)mem0) / conns;
	}
	free(c);
	*out = p;
	return 0;
fail:
	fprintf(stderr, "bench: cpool setup (%u conns): %s\n", conns,
		cpool_strerror(err));
	for (i = 0; i < n; i++)
		cpool_release(c[i], 0);
	if (p->pool)
		cpool_destroy(p->pool);
	free(c);
	free(p);
	return err;
}

static int
pcpool_create(const struct bench_env *env, unsigned conns, void **out)
{
	return bench_cpool_create(env, conns, 0, NULL, out);
}

static int
pcpool_create_bypass(const struct bench_env *env, unsigned conns, void **out)
{
	return bench_cpool_create(env, conns, BENCH_BYPASS_MS, NULL, out);
}

static void
pcpool_destroy(void *inst)
{
	struct pcpool *p = inst;

	cpool_destroy(p->pool);
	free(p);
}

const struct peer_ops peer_cpool =
	PEER_OPS("cpool", pcpool_create, pcpool_destroy);

const struct peer_ops peer_cpool_bypass =
	PEER_OPS("cpool_bypass", pcpool_create_bypass, pcpool_destroy);

/* The pool behind an instance, for workloads that read its stats. */
struct cpool *
bench_cpool_of(void *inst)
{
	return ((struct pcpool *)inst)->pool;
}
