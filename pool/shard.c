/* SPDX-License-Identifier: MIT */
/*
 * Shards. Each (endpoint, shard) pair has its own idle list and lock, so
 * callers on different CPUs never touch the same cache line on the fast
 * path. When the caller's list is empty it steals from another shard
 * (HAProxy's takeover) before any connect: try-lock only, a rotating start,
 * never blocking on a busy shard.
 */
#include "shard.h"

#include <sched.h>
#if __has_include(<sys/rseq.h>)
#include <sys/rseq.h> /* __rseq_offset, __rseq_size: glibc 2.35+ */
#endif

__thread struct cpool_cpu_cache cpool__cpu_cache
	__attribute__((tls_model("initial-exec")));

/*
 * A thread's first call finds its rseq area (glibc 2.35+ exports where it
 * is); without one, asks the kernel and lets the next CPOOL_CPU_REUSE - 1
 * calls reuse the answer.
 */
int
cpool__cpu_slow(void)
{
	struct cpool_cpu_cache *cc = &cpool__cpu_cache;
	int cpu;

#ifdef RSEQ_SIG
	if (!cc->rseq_cpu && __rseq_size) {
		const struct rseq *rs =
			(const struct rseq *)((char *)__builtin_thread_pointer() +
					      __rseq_offset);

		cpu = (int)__atomic_load_n(&rs->cpu_id, __ATOMIC_RELAXED);
		if (cpu >= 0) {
			cc->rseq_cpu = &rs->cpu_id;
			return cpu;
		}
	}
#endif
	cpu = sched_getcpu();
	if (cpu < 0)
		cpu = 0;
	cc->cpu = cpu;
	cc->left = CPOOL_CPU_REUSE - 1;
	return cpu;
}

void
cpool__spin_lock_slow(struct cpool_spin *l)
{
	unsigned spins = 0;

	for (;;) {
		while (LOAD(&l->locked)) {
			/* The holder may be preempted: give up the CPU. */
			if (++spins > 200) {
				sched_yield();
				spins = 0;
			} else {
				caa_cpu_relax();
			}
		}
		if (!__atomic_exchange_n(&l->locked, 1, __ATOMIC_ACQUIRE))
			return;
	}
}

struct cpool_conn *
cpool__shard_steal(struct cpool_endpoint *ep, unsigned sh)
{
	unsigned n = ep->pool->nshards, start, i, j;
	struct cpool_idle *idle;
	struct cpool_conn *c;

	if (n == 1)
		return NULL;
	start = (unsigned)cpool__random();
	for (i = 0; i < n; i++) {
		j = (start + i) % n;
		if (j == sh)
			continue;
		idle = &ep->idle[j];
		if (!LOAD(&idle->count) || !cpool__spin_trylock(&idle->lock))
			continue;
		c = cpool__idle_pop_locked(idle);
		cpool__spin_unlock(&idle->lock);
		if (c) {
			ATOMIC_ADD(&ep->ctr.steals, 1);
			return c;
		}
	}
	return NULL;
}

struct cpool_conn *
cpool__shard_take_any(struct cpool_endpoint *ep)
{
	unsigned i;
	struct cpool_conn *c;

	for (i = 0; i < ep->pool->nshards; i++) {
		if (!LOAD(&ep->idle[i].count))
			continue;
		c = cpool__idle_pop(&ep->idle[i]);
		if (c)
			return c;
	}
	return NULL;
}

unsigned
cpool__shard_drain(struct cpool_endpoint *ep, struct cds_list_head *out)
{
	struct cpool_idle *idle;
	unsigned i, n = 0;

	for (i = 0; i < ep->pool->nshards; i++) {
		idle = &ep->idle[i];
		cpool__spin_lock(&idle->lock);
		n += idle->count;
		cds_list_splice(&idle->head, out);
		CDS_INIT_LIST_HEAD(&idle->head);
		STORE(&idle->count, 0);
		cpool__spin_unlock(&idle->lock);
	}
	return n;
}
