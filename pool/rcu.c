/* SPDX-License-Identifier: MIT */
/*
 * Lazy RCU registration. The first library call on a thread registers it
 * with urcu-memb and sets a pthread key whose destructor unregisters it when
 * the thread exits, so a thread that used the pool once and exited never
 * holds up a grace period.
 */
#include "rcu.h"

#include <pthread.h>

char cpool__tsan_rcu;

static pthread_key_t rcu_key;
static pthread_once_t rcu_once = PTHREAD_ONCE_INIT;
static int rcu_key_err;

static void
rcu_thread_exit(void *arg)
{
	(void)arg;
	if (URCU_TLS(urcu_memb_reader).registered)
		urcu_memb_unregister_thread();
}

static void
rcu_make_key(void)
{
	rcu_key_err = pthread_key_create(&rcu_key, rcu_thread_exit);
}

void
cpool__rcu_register_slow(void)
{
	pthread_once(&rcu_once, rcu_make_key);
	urcu_memb_register_thread();
	/*
	 * Without a key (only when the process ran out of keys) the thread
	 * stays registered until it exits; liburcu then keeps a dead entry.
	 */
	if (!rcu_key_err)
		pthread_setspecific(rcu_key, (void *)1);
}
