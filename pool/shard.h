/* SPDX-License-Identifier: MIT */
/*
 * Shards: per-(endpoint, shard) idle lists, the caller's shard, stealing.
 * The fast paths are inlines; everything here only moves list links under a
 * spinlock: no syscall, no allocation, no close under a lock.
 */
#ifndef CPOOL_SHARD_H
#define CPOOL_SHARD_H

#include <sched.h>
#include <urcu/arch.h>

#include "pool-t.h"

void cpool__spin_lock_slow(struct cpool_spin *l);

static inline void
cpool__spin_lock(struct cpool_spin *l)
{
	if (likely(!__atomic_exchange_n(&l->locked, 1, __ATOMIC_ACQUIRE)))
		return;
	cpool__spin_lock_slow(l);
}

static inline bool
cpool__spin_trylock(struct cpool_spin *l)
{
	return !LOAD(&l->locked) &&
	       !__atomic_exchange_n(&l->locked, 1, __ATOMIC_ACQUIRE);
}

static inline void
cpool__spin_unlock(struct cpool_spin *l)
{
	__atomic_store_n(&l->locked, 0, __ATOMIC_RELEASE);
}

/*
 * The CPU the caller runs on. glibc (2.35+) registers an rseq area for every
 * thread, where the kernel keeps cpu_id current: reading it is a TLS load,
 * what sched_getcpu() itself does, without the call. Where rseq is not
 * registered (an older kernel, glibc.pthread.rseq=0, valgrind) the fallback
 * is sched_getcpu() through the vDSO or a syscall, so each thread reuses its
 * answer for CPOOL_CPU_REUSE calls: after a migration a thread keeps using
 * its old shard for a few calls, which costs nothing but a shared lock.
 */
#define CPOOL_CPU_REUSE 64

struct cpool_cpu_cache {
	const uint32_t *rseq_cpu; /* this thread's rseq cpu_id, or NULL */
	unsigned left;		  /* without rseq: reuses of @cpu left */
	int cpu;
};

extern __thread struct cpool_cpu_cache cpool__cpu_cache
	__attribute__((tls_model("initial-exec")));

int cpool__cpu_slow(void);

static inline int
cpool__cpu(void)
{
	struct cpool_cpu_cache *cc = &cpool__cpu_cache;

	if (likely(cc->rseq_cpu)) {
		int cpu = (int)__atomic_load_n(cc->rseq_cpu, __ATOMIC_RELAXED);

		if (likely(cpu >= 0))
			return cpu;
	} else if (likely(cc->left)) {
		cc->left--;
		return cc->cpu;
	}
	return cpool__cpu_slow();
}

/* The shard of the CPU the caller runs on. */
static inline unsigned
cpool__shard_cur(const struct cpool *pool)
{
	int cpu = cpool__cpu();

	if (likely((unsigned)cpu < pool->nshards))
		return (unsigned)cpu;
	return cpu < 0 ? 0 : (unsigned)cpu % pool->nshards;
}

/*
 * Takes the most recently released connection, which becomes the caller's
 * lease. Call with idle->lock held.
 */
static inline struct cpool_conn *
cpool__idle_pop_locked(struct cpool_idle *idle)
{
	struct cpool_conn *c;

	if (cds_list_empty(&idle->head))
		return NULL;
	c = cds_list_entry(idle->head.next, struct cpool_conn, link);
	cds_list_del(&c->link);
	STORE(&idle->count, idle->count - 1);
	ADD_LOCKED(&idle->leased, 1);
	STORE(&c->state, CONN_LEASED);
	return c;
}

/* Returns a lease to the list, most recent first. Call with the lock held. */
static inline void
cpool__idle_push_locked(struct cpool_idle *idle, struct cpool_conn *c)
{
	cds_list_add(&c->link, &idle->head);
	STORE(&idle->count, idle->count + 1);
	ADD_LOCKED(&idle->leased, -1);
	STORE(&c->home, idle);
	c->armed = false; /* a worker arms it if it stays idle a tick */
	STORE(&c->state, CONN_IDLE);
}

/* Adds a connection no caller ever leased (prewarm). Lock held. */
static inline void
cpool__idle_add_new_locked(struct cpool_idle *idle, struct cpool_conn *c)
{
	cds_list_add(&c->link, &idle->head);
	STORE(&idle->count, idle->count + 1);
	STORE(&c->home, idle);
	c->armed = false;
	STORE(&c->state, CONN_IDLE);
}

/* Locks, pops, unlocks. */
static inline struct cpool_conn *
cpool__idle_pop(struct cpool_idle *idle)
{
	struct cpool_conn *c;

	cpool__spin_lock(&idle->lock);
	c = cpool__idle_pop_locked(idle);
	cpool__spin_unlock(&idle->lock);
	return c;
}

/*
 * Takes an idle connection of @ep from a shard other than @sh: try-lock
 * only, starting from a rotating cursor, skipping empty lists without
 * touching their lock. Returns NULL when every other shard is empty or busy.
 */
struct cpool_conn *cpool__shard_steal(struct cpool_endpoint *ep, unsigned sh);

/*
 * Takes an idle connection from any shard, blocking on each lock: for a
 * waiter's last look before it sleeps.
 */
struct cpool_conn *cpool__shard_take_any(struct cpool_endpoint *ep);

/*
 * Moves every idle connection of @ep to @out (a local list head), leaving
 * the lists empty. The connections are still CONN_IDLE; the caller closes
 * them outside the locks. Returns how many.
 */
unsigned cpool__shard_drain(struct cpool_endpoint *ep,
			    struct cds_list_head *out);

#endif /* CPOOL_SHARD_H */
