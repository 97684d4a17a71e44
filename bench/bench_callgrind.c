/* SPDX-License-Identifier: MIT */
/*
 * bench_callgrind VARIANT [N]: N single-threaded acquire+release calls of
 * one pool, each through op_<VARIANT>(), so that
 *
 *   valgrind --tool=callgrind --collect-atstart=no \
 *            --toggle-collect=op_<VARIANT> bench_callgrind VARIANT N
 *
 * counts exactly the instructions of N operations (callgrind.sh divides by
 * N). Warm-up calls go through warm_<VARIANT>(), which is not collected.
 * Variants: cpool_bypass (probe bypassed, endpoint looked up by name),
 * cpool_handle (probe bypassed, acquired by handle: cpool_acquire_ep()),
 * cpool (probe on), mutex, recv_peek (one bare recv(MSG_PEEK): user-space
 * instructions only, the kernel's are invisible to callgrind), apr_reslist
 * and memcached_pool (through the bench's peer wrappers: a few more
 * instructions), empty (the call itself).
 */
#include "bench.h"
#include "mutex_pool.h"

#include <cpool.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

static struct cpool *cp_pool;
static const char *cp_addr;
static struct cpool_endpoint *cp_ep;
static struct mutex_pool *mp;
static int peek_fd;
static const struct peer_ops *peer;
static void *peer_inst;

static inline void
body_cpool(void)
{
	struct cpool_conn *c;

	if (cpool_acquire(cp_pool, cp_addr, &c) == 0)
		cpool_release(c, 0);
}

static inline void
body_handle(void)
{
	struct cpool_conn *c;

	if (cpool_acquire_ep(cp_ep, &c) == 0)
		cpool_release(c, 0);
}

static inline void
body_mutex(void)
{
	int fd = mutex_pool_acquire(mp);

	if (fd >= 0)
		mutex_pool_release(mp, fd, 0);
}

static inline void
body_recv_peek(void)
{
	char b;

	if (recv(peek_fd, &b, 1, MSG_PEEK | MSG_DONTWAIT) != -1)
		abort();
}

static inline void
body_peer(void)
{
	struct bench_lease l;

	if (peer->acquire(peer_inst, &l) == 0)
		peer->release(peer_inst, &l, false);
}

#define OPS(name, body)                                                        \
	static __attribute__((noipa)) void op_##name(void)                     \
	{                                                                      \
		body();                                                        \
	}                                                                      \
	static __attribute__((noipa)) void warm_##name(void)                   \
	{                                                                      \
		body();                                                        \
	}

static inline void
body_empty(void)
{
}

OPS(cpool, body_cpool)
OPS(cpool_bypass, body_cpool)
OPS(cpool_handle, body_handle)
OPS(mutex, body_mutex)
OPS(recv_peek, body_recv_peek)
OPS(apr_reslist, body_peer)
OPS(memcached_pool, body_peer)
OPS(empty, body_empty)

struct variant {
	const char *name;
	void (*op)(void);
	void (*warm)(void);
};

/* clang-format off */
#define V(name) { #name, op_##name, warm_##name }
/* clang-format on */
static const struct variant variants[] = {
	V(cpool),	V(cpool_bypass),   V(cpool_handle), V(mutex),
	V(recv_peek),	V(apr_reslist),	   V(memcached_pool), V(empty),
};

int
main(int argc, char **argv)
{
	const struct variant *v = NULL;
	struct bench_server srv;
	struct bench_opts o;
	struct bench_env env;
	void *inst;
	unsigned long n = 100000, i;
	unsigned k;
	int err;

	bench_opts_default(&o);
	bench_init(1, argv, &o, NULL);
	for (k = 0; argc > 1 && k < sizeof(variants) / sizeof(variants[0]); k++)
		if (!strcmp(argv[1], variants[k].name))
			v = &variants[k];
	if (!v || argc > 3) {
		fprintf(stderr,
			"usage: %s cpool|cpool_bypass|cpool_handle|mutex|recv_peek|"
			"apr_reslist|memcached_pool|empty [N]\n",
			argv[0]);
		return 2;
	}
	if (argc == 3)
		n = strtoul(argv[2], NULL, 10);
	err = bench_server_start(&srv, NULL, -1, 64);
	if (err)
		bench_die("cannot start the upstream: %s", strerror(-err));
	bench_env_init(&env, &srv, BENCH_ACQUIRE_RELEASE);
	if (!strncmp(v->name, "cpool", 5)) {
		err = bench_cpool_create(
			&env, 1, strcmp(v->name, "cpool") ? BENCH_BYPASS_MS : 0,
			NULL, &inst);
		if (err)
			bench_die("cpool: %s", strerror(-err));
		cp_pool = bench_cpool_of(inst);
		cp_addr = env.addr;
		if (!strcmp(v->name, "cpool_handle"))
			err = cpool_endpoint_get(cp_pool, cp_addr, &cp_ep);
	} else if (!strcmp(v->name, "mutex")) {
		err = mutex_pool_create(&env.sin, 1, 1000, &mp);
	} else if (!strcmp(v->name, "recv_peek")) {
		peek_fd = bench_connect(&env.sin);
		err = peek_fd < 0 ? peek_fd : 0;
	} else if (!strcmp(v->name, "apr_reslist")) {
		peer = &peer_apr;
		err = peer->create(&env, 1, &peer_inst);
	} else if (!strcmp(v->name, "memcached_pool")) {
		peer = &peer_memcached;
		err = peer->create(&env, 1, &peer_inst);
	}
	if (err)
		bench_die("%s setup: %s", v->name, strerror(-err));
	for (i = 0; i < 1000; i++)
		v->warm();
	for (i = 0; i < n; i++)
		v->op();
	printf("%s: %lu operations\n", v->name, n);
	bench_server_stop(&srv);
	return 0;
}
