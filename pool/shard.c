/* SPDX-License-Identifier: MIT */
/*
 * Shards. Each (endpoint, shard) pair has its own idle list and lock, so
 * callers on different CPUs never touch the same cache line on the fast
 * path. When the caller's list is empty it steals from another shard
 * (HAProxy's takeover) before any connect: try-lock only, a random start,
 * never blocking on a busy shard.
 *
 * Invariants (lock held):
 *  - every member is CONN_IDLE with home == this list, newest first by
 *    released_ns;
 *  - @watched is &head or a member; members from it to the tail have been
 *    armed since they were last pushed, members before it have not;
 *  - count is the number of members; min_expiry_ns <= the expires_ns of
 *    each member from @watched on;
 *  - queued is IDLE_INBOX iff the list's node is in its worker's inbox,
 *    IDLE_SOON or IDLE_LATER iff the worker holds it (in its timer heap),
 *    and only the worker moves it from any of those, under the lock.
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
		while (LOAD_RLX(&l->locked)) {
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

void
cpool__idle_init(struct cpool_idle *idle, struct cpool_endpoint *ep,
		 unsigned *refs, unsigned shard, unsigned want,
		 struct cpool_stack *inbox)
{
	CDS_INIT_LIST_HEAD(&idle->head);
	CDS_INIT_LIST_HEAD(&idle->active);
	idle->watched = &idle->head;
	idle->min_expiry_ns = UINT64_MAX;
	idle->ep = ep;
	idle->refs = refs;
	idle->shard = shard;
	idle->want = want;
	idle->inbox = inbox;
	idle->heap_idx = -1;
	idle->deadline_ns = UINT64_MAX;
}

struct cpool_conn *
cpool__idle_steal(struct cpool_idle *idle, unsigned n, unsigned sh)
{
	unsigned start, i, j;
	struct cpool_conn *c;
	bool hand = false;

	if (n == 1)
		return NULL;
	start = (unsigned)cpool__random();
	for (i = 0; i < n; i++) {
		j = (start + i) % n;
		if (j == sh || !LOAD_RLX(&idle[j].count) ||
		    !cpool__spin_trylock(&idle[j].lock))
			continue;
		c = cpool__idle_pop_locked(&idle[j], &hand);
		cpool__spin_unlock(&idle[j].lock);
		if (hand)
			cpool__idle_hand_over(&idle[j]);
		if (c)
			return c;
	}
	return NULL;
}

struct cpool_conn *
cpool__idle_take_any(struct cpool_idle *idle, unsigned n)
{
	struct cpool_conn *c;
	unsigned i;

	for (i = 0; i < n; i++) {
		c = cpool__idle_pop(&idle[i]);
		if (c)
			return c;
	}
	return NULL;
}

unsigned
cpool__idle_drain(struct cpool_idle *idle, unsigned n,
		  struct cds_list_head *out)
{
	struct cpool_conn *c;
	unsigned i, total = 0;

	for (i = 0; i < n; i++) {
		cpool__spin_lock(&idle[i].lock);
		while (!cds_list_empty(&idle[i].head)) {
			c = cds_list_entry(idle[i].head.next, struct cpool_conn,
					   link);
			cpool__idle_unlink_locked(&idle[i], c);
			cpool__conn_move(c, CONN_IDLE, CONN_BUSY);
			cds_list_add_tail(&c->link, out);
			total++;
		}
		cpool__spin_unlock(&idle[i].lock);
	}
	return total;
}

unsigned
cpool__idle_drain_if(struct cpool_idle *idle, unsigned n,
		     bool (*pred)(const struct cpool_conn *c), bool refill,
		     struct cds_list_head *out)
{
	struct cds_list_head *pos, *tmp;
	struct cpool_conn *c;
	unsigned i, total = 0;
	bool hand;

	for (i = 0; i < n; i++) {
		hand = false;
		cpool__spin_lock(&idle[i].lock);
		cds_list_for_each_safe(pos, tmp, &idle[i].head) {
			c = cds_list_entry(pos, struct cpool_conn, link);
			if (!pred(c))
				continue;
			cpool__idle_unlink_locked(&idle[i], c);
			cpool__conn_move(c, CONN_IDLE, CONN_BUSY);
			cds_list_add_tail(&c->link, out);
			total++;
		}
		/* Below its prewarm share now: the worker tops it up. */
		if (refill && idle[i].count < idle[i].want)
			hand = cpool__idle_need_locked(&idle[i]);
		cpool__spin_unlock(&idle[i].lock);
		if (hand)
			cpool__idle_hand_over(&idle[i]);
	}
	return total;
}

bool
cpool__idle_collect_arm_locked(struct cpool_idle *idle, uint64_t armable_ns,
			       struct cpool_batch *b)
{
	struct cpool_conn *c;

	while (idle->watched->prev != &idle->head) {
		c = cds_list_entry(idle->watched->prev, struct cpool_conn,
				   link);
		if (c->released_ns > armable_ns)
			return false; /* the rest is younger still */
		if (b->n == CPOOL_BATCH)
			return true;
		idle->watched = &c->link;
		if (c->expires_ns < idle->min_expiry_ns)
			idle->min_expiry_ns = c->expires_ns;
		/* A count: the close of a connection leased meanwhile waits
		 * for this worker's EPOLL_CTL_MOD (cpool__conn_unwatch()). */
		ADD_RLX(&c->arming, 1);
		b->c[b->n++] = c;
	}
	return false;
}

/* Takes @c out for closing with @why. Lock held. */
static void
collect(struct cpool_idle *idle, struct cpool_conn *c,
	enum cpool_close_reason why, struct cpool_batch *b)
{
	cpool__idle_unlink_locked(idle, c);
	cpool__conn_move(c, CONN_IDLE, CONN_BUSY);
	b->why[b->n] = why;
	b->c[b->n++] = c;
}

bool
cpool__idle_collect_expired_locked(struct cpool_idle *idle, uint64_t now,
				   uint64_t idle_timeout_ns, unsigned keep,
				   struct cpool_batch *b)
{
	struct cds_list_head *pos, *prev;
	struct cpool_conn *c;
	uint64_t min = UINT64_MAX;

	/* Oldest first: stop at the first one still young enough. */
	while (idle_timeout_ns && idle->count > keep &&
	       !cds_list_empty(&idle->head)) {
		c = cds_list_entry(idle->head.prev, struct cpool_conn, link);
		if (cpool__age_ns(now, c->released_ns) < idle_timeout_ns)
			break;
		if (b->n == CPOOL_BATCH)
			return true;
		collect(idle, c, c->expires_ns <= now ? CPOOL_CLOSE_LIFETIME
						      : CPOOL_CLOSE_IDLE_TIMEOUT,
			b);
	}
	if (idle->min_expiry_ns > now)
		return false;
	/* A lifetime is due: walk the whole list, and learn the next one. */
	for (pos = idle->head.prev; pos != idle->watched->prev; pos = prev) {
		prev = pos->prev;
		c = cds_list_entry(pos, struct cpool_conn, link);
		if (c->expires_ns > now) {
			if (c->expires_ns < min)
				min = c->expires_ns;
			continue;
		}
		if (b->n == CPOOL_BATCH)
			return true;
		collect(idle, c, CPOOL_CLOSE_LIFETIME, b);
	}
	idle->min_expiry_ns = min;
	return false;
}

uint64_t
cpool__idle_next_expiry_locked(const struct cpool_idle *idle,
			       uint64_t idle_timeout_ns, unsigned keep)
{
	uint64_t t = idle->min_expiry_ns;
	const struct cpool_conn *c;

	if (idle_timeout_ns && idle->count > keep) {
		c = cds_list_entry(idle->head.prev, struct cpool_conn, link);
		if (c->released_ns + idle_timeout_ns < t)
			t = c->released_ns + idle_timeout_ns;
	}
	return t;
}
