/* SPDX-License-Identifier: MIT */
/*
 * RCU for the library: liburcu's urcu-bp flavor, the one made for
 * libraries. A thread registers itself on its first read-side lock and is
 * forgotten when it exits, and bp's reader registry is its own: a host that
 * uses urcu-memb, urcu-qsbr or urcu-mb (or registers with urcu-bp itself,
 * which is then a no-op) neither sees cpool's readers in its grace periods
 * nor trips over a registration cpool made. With sys_membarrier (Linux 4.14+)
 * a read-side lock costs a few loads and stores, as urcu-memb's does.
 *
 * What RCU protects here is the endpoint table only: readers look an
 * endpoint up by name and either use it inside their section or take a
 * reference. Writers unlink, wait with cpool__rcu_synchronize() and then
 * drop the table's reference. Nothing uses call_rcu: no liburcu thread
 * exists on cpool's behalf, which keeps destroy fast and fork simple.
 *
 * Any file that enters a read-side section includes this header first: it
 * defines _LGPL_SOURCE so the read lock is inlined. Not in sanitizer
 * builds: liburcu-bp 0.13 places its readers in an arena with less than
 * the alignment their type declares, which UBSan would report in every
 * inlined read lock; the library's own functions do the same unobserved.
 */
#ifndef CPOOL_RCU_H
#define CPOOL_RCU_H

#ifndef CPOOL_SANITIZE
#define _LGPL_SOURCE
#endif
#include <urcu/urcu-bp.h>

#include "util.h"

/*
 * ThreadSanitizer cannot see liburcu's grace periods (membarrier, futexes)
 * nor its lock-free publication (inline-asm atomics), so TSan builds model
 * them: every read-side unlock releases one global sync object that every
 * grace-period wait acquires afterwards (a grace period orders all earlier
 * read-side sections before what follows it), and an endpoint published in
 * the table is released by its writer and acquired by whoever finds it.
 * No-ops in other builds.
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

/* Enters a read-side section; registers the thread on first use. */
static inline void
cpool__rcu_read_lock(void)
{
	urcu_bp_read_lock();
}

static inline void
cpool__rcu_read_unlock(void)
{
	CPOOL_TSAN_RELEASE(&cpool__tsan_rcu);
	urcu_bp_read_unlock();
}

/*
 * Waits until every read-side section that began before the call has
 * ended. Never call it inside a read-side section or with a list lock held.
 */
void cpool__rcu_synchronize(void);

/*
 * liburcu-bp's own fork handlers (its registry and grace-period locks),
 * called from the library's pthread_atfork handlers (pool.c) so that a
 * child can use RCU: the child's registry forgets the parent's other
 * threads, which would otherwise hold up every grace period for ever.
 */
void cpool__rcu_before_fork(void);
void cpool__rcu_after_fork_parent(void);
void cpool__rcu_after_fork_child(void);

#endif /* CPOOL_RCU_H */
