/* SPDX-License-Identifier: MIT */
/*
 * The one memory funnel: every object of the library comes from here.
 *
 * Normal builds use jemalloc's explicit API, mallocx()/sdallocx(), with one
 * arena per shard index (created once per process and shared by all pools,
 * so creating pools never leaks arenas) and the thread cache bypassed, so a
 * shard's connections stay in its own arena and the arena statistics are
 * exact. jemalloc is linked privately (see the Makefile): the host's malloc
 * is never replaced. Sanitizer builds (CPOOL_ALLOC_LIBC) use libc instead,
 * so the sanitizers see every allocation.
 */
#ifndef CPOOL_ALLOC_H
#define CPOOL_ALLOC_H

#include <stddef.h>

/*
 * Returns zeroed memory of @size bytes aligned to @align (a power of two, at
 * most a page) from the arena of shard @slot, or NULL.
 */
void *cpool__alloc(size_t size, size_t align, unsigned slot);

/* Frees what cpool__alloc() returned; @size must be the size asked for. */
void cpool__free(void *p, size_t size);

#endif /* CPOOL_ALLOC_H */
