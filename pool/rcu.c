/* SPDX-License-Identifier: MIT */
/*
 * RCU: grace periods and fork hooks over liburcu-bp (see rcu.h).
 */
#include "rcu.h"

char cpool__tsan_rcu;

void
cpool__rcu_synchronize(void)
{
	urcu_bp_synchronize_rcu();
	CPOOL_TSAN_ACQUIRE(&cpool__tsan_rcu);
}

void
cpool__rcu_before_fork(void)
{
	urcu_bp_before_fork();
}

void
cpool__rcu_after_fork_parent(void)
{
	urcu_bp_after_fork_parent();
}

void
cpool__rcu_after_fork_child(void)
{
	urcu_bp_after_fork_child();
}
