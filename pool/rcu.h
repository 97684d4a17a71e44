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
