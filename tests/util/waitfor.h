/* SPDX-License-Identifier: MIT */
/*
 * Waiting for the pool's background work: the worker threads act on their
 * own clock, so a test that checks what they did re-reads the stats until
 * the expected change shows or a generous deadline passes. That is waiting
 * for an observable condition (1 ms between reads), never sleeping in the
 * hope that something happened.
 */
#ifndef CPOOL_TESTS_WAITFOR_H
#define CPOOL_TESTS_WAITFOR_H

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "check.h"
#include "net.h"

/* Deadline for anything a worker does within a few 5 ms ticks. */
#define WORKER_WAIT_MS 2000

/* One millisecond between two reads of a condition. */
static inline void
pause_1ms(void)
{
	pause_ms(1);
}

/*
 * Re-reads the stats of @addr (NULL: the whole pool) into @st until the
 * expression @cond (which reads @st) holds or @ms milliseconds pass.
 * Evaluates to whether @cond held; @st keeps the last read either way.
 */
#define stats_wait(pool, addr, st, cond, ms)                               \
	({                                                                 \
		int64_t deadline_ = now_ms() + (ms);                       \
		bool held_;                                                \
		for (;;) {                                                 \
			(st) = stats_of((pool), (addr));                   \
			if ((held_ = (cond)))                              \
				break;                                     \
			if (now_ms() > deadline_)                          \
				break;                                     \
			pause_1ms();                                       \
		}                                                          \
		held_;                                                     \
	})

/* Asserts stats_wait(), printing the condition and the gauges it saw. */
#define assert_stats_wait(pool, addr, st, cond, ms)                        \
	cr_assert(stats_wait(pool, addr, st, cond, ms),                    \
		  "not within %d ms: %s (open %u idle %u leased %u "       \
		  "connects %llu prewarms %llu)",                          \
		  (int)(ms), #cond, (st).open, (st).idle, (st).leased,     \
		  (unsigned long long)(st).connects,                       \
		  (unsigned long long)(st).prewarms)

#endif /* CPOOL_TESTS_WAITFOR_H */
