/* SPDX-License-Identifier: MIT */
/*
 * RCU for the library: the urcu-memb flavor (readers pay a compiler barrier
 * only; grace periods use membarrier), with lazy per-thread registration so
 * that callers never call an RCU function themselves.
 *
 * Any file that enters a read-side section includes this header first: it
 * defines _LGPL_SOURCE so the read lock is inlined.
 */
#ifndef CPOOL_RCU_H
#define CPOOL_RCU_H

#define _LGPL_SOURCE
#include <urcu/urcu-memb.h>

#include "util.h"

/*
 * ThreadSanitizer cannot see liburcu's grace periods (membarrier, futexes)
 * nor its lock-free publication (inline-asm atomics), so TSan builds model
 * them: every read-side unlock and call_rcu releases one global sync object
 * that every callback and every grace-period wait acquires (a grace period
 * orders all earlier read-side sections before the callback), and an
 * endpoint published in the table is released by its writer and acquired by
 * whoever finds it. No-ops in other builds.
 */
extern char cpool__tsan_rcu;

#if defined(__SANITIZE_THREAD__)
void __tsan_acquire(void *addr);
void __tsan_release(void *addr);
#define CPOOL_TSAN_ACQUIRE(p) __tsan_acquire((void *)(p))
#define CPOOL_TSAN_RELEASE(p) __tsan_release((void *)(p))
#else
#define CPOOL_TSAN_ACQUIRE(p) ((void)(p))
#define CPOOL_TSAN_RELEASE(p) ((void)(p))
#endif

static inline void
cpool__rcu_read_unlock(void)
{
	CPOOL_TSAN_RELEASE(&cpool__tsan_rcu);
	urcu_memb_read_unlock();
}

static inline void
cpool__call_rcu(struct rcu_head *head, void (*fn)(struct rcu_head *))
{
	CPOOL_TSAN_RELEASE(&cpool__tsan_rcu);
	urcu_memb_call_rcu(head, fn);
}

/* At the start of every call_rcu callback and after a grace-period wait. */
#define CPOOL_RCU_GP_DONE() CPOOL_TSAN_ACQUIRE(&cpool__tsan_rcu)

/* Registers the calling thread; unregistered by a pthread key at exit. */
void cpool__rcu_register_slow(void);

/*
 * Makes sure the calling thread is a registered RCU reader. A thread that
 * the host itself registered with urcu-memb is left alone.
 */
static inline void
cpool__rcu_ensure(void)
{
	if (unlikely(!URCU_TLS(urcu_memb_reader).registered))
		cpool__rcu_register_slow();
}

#endif /* CPOOL_RCU_H */
