/* SPDX-License-Identifier: MIT */
/*
 * The memory funnel (see alloc.h). Arenas are created lazily, one per shard
 * index, under a mutex taken only when an index is first used.
 */
#include "alloc.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpool.h"
#include "util.h"

#define CPOOL_MAX_ARENAS 1024

#ifdef CPOOL_ALLOC_LIBC

static size_t allocated_bytes;

void *
cpool__alloc(size_t size, size_t align, unsigned slot)
{
	void *p;

	(void)slot;
	if (align < sizeof(void *))
		align = sizeof(void *);
	if (posix_memalign(&p, align, size))
		return NULL;
	memset(p, 0, size);
	ADD_RLX(&allocated_bytes, size);
	return p;
}

void
cpool__free(void *p, size_t size)
{
	if (!p)
		return;
	ADD_RLX(&allocated_bytes, -size);
	free(p);
}

int
cpool_memory_get(size_t *bytes)
{
	if (!bytes)
		return -EINVAL;
	*bytes = LOAD_RLX(&allocated_bytes);
	return 0;
}

#else /* jemalloc */

#include <jemalloc/jemalloc.h>

static pthread_mutex_t arena_lock = PTHREAD_MUTEX_INITIALIZER;
/* arena_ind[slot] + 1, 0 = not created yet; read without the lock. */
static unsigned arena_plus1[CPOOL_MAX_ARENAS];

/* The arena of a shard index, created on first use; -1 if jemalloc refuses. */
static int
arena_of(unsigned slot)
{
	unsigned a, ind;
	size_t sz = sizeof(ind);

	slot %= CPOOL_MAX_ARENAS;
	a = __atomic_load_n(&arena_plus1[slot], __ATOMIC_ACQUIRE);
	if (likely(a))
		return (int)(a - 1);
	pthread_mutex_lock(&arena_lock);
	a = arena_plus1[slot];
	if (!a && mallctl("arenas.create", &ind, &sz, NULL, 0) == 0) {
		a = ind + 1;
		__atomic_store_n(&arena_plus1[slot], a, __ATOMIC_RELEASE);
	}
	pthread_mutex_unlock(&arena_lock);
	return a ? (int)(a - 1) : -1;
}

void *
cpool__alloc(size_t size, size_t align, unsigned slot)
{
	int flags = MALLOCX_ZERO | MALLOCX_TCACHE_NONE;
	int arena = arena_of(slot);

	if (arena >= 0)
		flags |= MALLOCX_ARENA((unsigned)arena);
	if (align > 1)
		flags |= MALLOCX_ALIGN(align);
	return mallocx(size, flags);
}

void
cpool__free(void *p, size_t size)
{
	if (p)
		sdallocx(p, size, MALLOCX_TCACHE_NONE);
}

int
cpool_memory_get(size_t *bytes)
{
	uint64_t epoch = 1;
	size_t total = 0, v, sz = sizeof(epoch);
	char name[64];
	unsigned slot, a;

	if (!bytes)
		return -EINVAL;
	if (mallctl("epoch", &epoch, &sz, &epoch, sz))
		return -EIO;
	for (slot = 0; slot < CPOOL_MAX_ARENAS; slot++) {
		a = __atomic_load_n(&arena_plus1[slot], __ATOMIC_ACQUIRE);
		if (!a)
			continue;
		sz = sizeof(v);
		snprintf(name, sizeof(name), "stats.arenas.%u.small.allocated",
			 a - 1);
		if (mallctl(name, &v, &sz, NULL, 0))
			return -EIO;
		total += v;
		snprintf(name, sizeof(name), "stats.arenas.%u.large.allocated",
			 a - 1);
		if (mallctl(name, &v, &sz, NULL, 0))
			return -EIO;
		total += v;
	}
	*bytes = total;
	return 0;
}

#endif

uint64_t
cpool__random(void)
{
	static __thread uint64_t state;
	uint64_t z;

	if (unlikely(!state))
		state = cpool__now_ns() ^ (uintptr_t)&state;
	z = (state += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

#ifdef CPOOL_DEBUG
int (*cpool_debug_pause_hook)(int point, const void *obj);
#endif
