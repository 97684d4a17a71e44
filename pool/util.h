/* SPDX-License-Identifier: MIT */
/*
 * Small helpers every module uses: branch hints, relaxed atomics, clocks,
 * the invariant check. Header only.
 */
#ifndef CPOOL_UTIL_H
#define CPOOL_UTIL_H

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)

#define CPOOL_CACHELINE 64
#define CPOOL_ALIGNED __attribute__((aligned(CPOOL_CACHELINE)))

/*
 * Shared fields are read with relaxed atomics so that readers outside the
 * writer's lock (stats, flag checks) are data-race free; counters that only
 * change under a lock use ADD_LOCKED (a plain load and store, no lock
 * prefix); counters changed on slow paths without a lock use ATOMIC_ADD.
 */
#define LOAD(p) __atomic_load_n((p), __ATOMIC_RELAXED)
#define STORE(p, v) __atomic_store_n((p), (v), __ATOMIC_RELAXED)
#define ADD_LOCKED(p, v) STORE((p), LOAD(p) + (v))
#define ATOMIC_ADD(p, v) __atomic_add_fetch((p), (v), __ATOMIC_RELAXED)

#ifdef CPOOL_DEBUG
static const bool cpool__debug = true;
#else
static const bool cpool__debug = false;
#endif

/* Invariants: live in debug builds only; the library never aborts otherwise. */
#define CPOOL_BUG_ON(cond)                                                     \
	do {                                                                   \
		if (cpool__debug && (cond))                                    \
			__builtin_trap();                                      \
	} while (0)

static inline uint64_t
cpool__now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Millisecond-grade clock for idle ages and lifetimes: a vDSO read. */
static inline uint64_t
cpool__coarse_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline void
cpool__ns_to_timespec(uint64_t ns, struct timespec *ts)
{
	ts->tv_sec = (time_t)(ns / 1000000000u);
	ts->tv_nsec = (long)(ns % 1000000000u);
}

/* A per-thread splitmix64 stream: jitter and rotating cursors only. */
uint64_t cpool__random(void);

#endif /* CPOOL_UTIL_H */
