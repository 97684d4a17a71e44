/* SPDX-License-Identifier: MIT */
/*
 * Shards: the idle list of one (endpoint, shard) pair, the caller's shard,
 * stealing. Idle lists only: everything here moves list links and
 * connection states under a spinlock; no syscall, no allocation, no close.
 */
#ifndef CPOOL_SHARD_H
#define CPOOL_SHARD_H

#include <sched.h>
#include <urcu/arch.h>

#include "conn.h"

/* A test-and-test-and-set spinlock: guards list links only. */
struct cpool_spin {
	int locked;
};

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
	return !LOAD_RLX(&l->locked) &&
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

/* The shard of the CPU the caller runs on, of @nshards. */
static inline unsigned
cpool__shard_cur(unsigned nshards)
{
	int cpu = cpool__cpu();

	if (likely((unsigned)cpu < nshards))
		return (unsigned)cpu;
	return cpu < 0 ? 0 : (unsigned)cpu % nshards;
}

/*
 * The idle list of one (endpoint, shard) pair, most recently released
 * first. The part after @watched (every connection older than the first
 * watched one) has its epoll watch armed; the part before it is "fresh":
 * released since the worker last looked. Every insertion is at the head and
 * arming moves @watched one node towards the head, so the fresh part is
 * always a prefix and the worker finds its oldest member at watched->prev:
 * arming costs O(connections armed), whatever the list's length.
 *
 * A list that needs its worker (fresh connections to arm, a timer, fewer
 * than @want connections, a removal) is handed to it through the worker's
 * inbox: @queued says whether it is there, or held by the worker for a look
 * within a tick or later; it changes only under the lock, so a push never
 * misses the worker and a list is never twice in the inbox. Each
 * handing-over takes a reference on the endpoint (*@refs); the worker drops
 * it.
 */
struct cpool_idle {
	/* the fast paths' line: under @lock */
	struct cpool_spin lock;
	unsigned count;		 /* connections in the list */
	unsigned want;		 /* prewarm: this shard's share of min_idle */
	int queued;		 /* IDLE_FREE, _LATER, _SOON or _INBOX */
	int64_t leased;		 /* leases popped here minus pushed back */
	uint64_t reuses;	 /* fast-path leases from this list (atomic) */
	uint64_t min_expiry_ns;	 /* <= every watched member's expires_ns */
	struct cds_list_head head;
	struct cds_list_head *watched; /* first armed node, or &head */
	struct cpool_stack *inbox; /* the worker's */
	unsigned *refs;		 /* the endpoint's reference count */
	struct cpool_endpoint *ep;
	unsigned shard;

	/* the worker's own: only worker @shard reads or writes these */
	struct cpool_snode inode CPOOL_ALIGNED; /* in the worker's inbox */
	struct cds_list_head active; /* in the worker's set of held lists */
	int heap_idx;		 /* in the worker's timer heap, or -1 */
	uint64_t deadline_ns;	 /* when the worker looks at it next */
} CPOOL_ALIGNED;

void cpool__idle_init(struct cpool_idle *idle, struct cpool_endpoint *ep,
		      unsigned *refs, unsigned shard, unsigned want,
		      struct cpool_stack *inbox);

/* Takes @c out of the list. Call with the lock held. */
static inline void
cpool__idle_unlink_locked(struct cpool_idle *idle, struct cpool_conn *c)
{
	if (idle->watched == &c->link)
		idle->watched = c->link.next;
	cds_list_del(&c->link);
	STORE_RLX(&idle->count, idle->count - 1);
}

/* Period of a worker's look at the lists it holds: arming, timers. */
#define CPOOL_TICK_MS 3
#define CPOOL_TICK_NS (CPOOL_TICK_MS * 1000000ull)

/* cpool_idle.queued, in the order cpool__idle_need_locked() relies on */
enum {
	IDLE_FREE = 0,	/* the worker does not hold it */
	IDLE_LATER,	/* held, next looked at after more than a tick */
	IDLE_SOON,	/* held, looked at again within a tick */
	IDLE_INBOX,	/* in the worker's inbox */
};

/*
 * The worker must look at this list within a tick (a new fresh connection
 * to arm, a shortfall below the prewarm share, a removal): marks it unless
 * it is in the inbox already or held for a look that soon. Returns true
 * when the caller must cpool__idle_hand_over() it after unlocking. Lock
 * held.
 */
static inline bool
cpool__idle_need_locked(struct cpool_idle *idle)
{
	if (likely(idle->queued >= IDLE_SOON))
		return false;
	idle->queued = IDLE_INBOX;
	return true;
}

/*
 * Hands a marked list to its worker. The caller holds a connection of the
 * endpoint (or another reference), so the reference taken here is never the
 * last one when a closed inbox (the workers stopped) makes it drop it.
 */
static inline void
cpool__idle_hand_over(struct cpool_idle *idle)
{
	ADD_RLX(idle->refs, 1);
	if (!cpool__stack_push(idle->inbox, &idle->inode))
		ADD_RLX(idle->refs, -1);
}

/*
 * Takes the most recently released connection (IDLE -> BUSY): it is the
 * caller's, to check and lease. Sets *@hand when the list fell below its
 * prewarm share and must be handed to the worker. Lock held.
 */
static inline struct cpool_conn *
cpool__idle_pop_locked(struct cpool_idle *idle, bool *hand)
{
	struct cpool_conn *c;

	if (cds_list_empty(&idle->head))
		return NULL;
	c = cds_list_entry(idle->head.next, struct cpool_conn, link);
	cpool__idle_unlink_locked(idle, c);
	ADD_LOCKED(&idle->leased, 1);
	cpool__conn_move(c, CONN_IDLE, CONN_BUSY);
	if (unlikely(idle->count < idle->want))
		*hand = cpool__idle_need_locked(idle);
	return c;
}

/*
 * Makes @c the list's most recent member: a lease (@from LEASED, counted
 * in the leased gauge) or a connection a worker owned (@from BUSY, never
 * counted). Returns true when the caller must hand the list over after
 * unlocking: it must be armed a tick from now if it stays. Lock held.
 */
static inline bool
cpool__idle_push_locked(struct cpool_idle *idle, struct cpool_conn *c,
			unsigned from)
{
	cds_list_add(&c->link, &idle->head);
	STORE_RLX(&idle->count, idle->count + 1);
	if (from == CONN_LEASED)
		ADD_LOCKED(&idle->leased, -1);
	STORE_REL(&c->home, idle);
	cpool__conn_move(c, from, CONN_IDLE);
	return cpool__idle_need_locked(idle);
}

/* Locks, pops, unlocks, hands over if needed. */
static inline struct cpool_conn *
cpool__idle_pop(struct cpool_idle *idle)
{
	struct cpool_conn *c;
	bool hand = false;

	cpool__spin_lock(&idle->lock);
	c = cpool__idle_pop_locked(idle, &hand);
	cpool__spin_unlock(&idle->lock);
	if (unlikely(hand))
		cpool__idle_hand_over(idle);
	return c;
}

/*
 * Takes an idle connection from a list of @idle[0..n) other than @sh:
 * try-lock only, starting from a random list, skipping empty lists
 * without touching their lock (a hint: the steal is an optimisation, the
 * waiter's last look below is what must not miss anything). Returns NULL
 * when every other list is empty or busy.
 */
struct cpool_conn *cpool__idle_steal(struct cpool_idle *idle, unsigned n,
				     unsigned sh);

/*
 * Takes an idle connection from any list, taking each list's lock, empty
 * or not: a waiter's last look before it sleeps, which a release racing it
 * must not slip past (admit.c).
 */
struct cpool_conn *cpool__idle_take_any(struct cpool_idle *idle, unsigned n);

/*
 * Moves every connection of @idle[0..n) to @out (a local list, linked
 * through c->link), each IDLE -> BUSY: from then on they are the caller's
 * alone, and a worker's event for one of them finds it busy and leaves it.
 * Returns how many.
 */
unsigned cpool__idle_drain(struct cpool_idle *idle, unsigned n,
			   struct cds_list_head *out);

/*
 * As cpool__idle_drain(), only the connections @pred says yes to; with
 * @refill, a list left below its prewarm share is handed to its worker.
 * Returns how many.
 */
unsigned cpool__idle_drain_if(struct cpool_idle *idle, unsigned n,
			      bool (*pred)(const struct cpool_conn *c),
			      bool refill, struct cds_list_head *out);

/* A batch of connections a worker took out of one list, with reasons. */
#define CPOOL_BATCH 64
struct cpool_batch {
	unsigned n;
	struct cpool_conn *c[CPOOL_BATCH];
	enum cpool_close_reason why[CPOOL_BATCH];
};

/*
 * Worker: moves up to a batch of the oldest fresh connections released at
 * or before @armable_ns into the watched part, counting each in c->arming,
 * into @b (the caller arms them after unlocking), and learns their
 * lifetimes. Returns true if fresh connections that old remain. Lock held.
 */
bool cpool__idle_collect_arm_locked(struct cpool_idle *idle,
				    uint64_t armable_ns,
				    struct cpool_batch *b);

/*
 * Worker: takes up to a batch of connections to close now (IDLE -> BUSY)
 * into @b: from the oldest end, idle longer than @idle_timeout_ns while more
 * than @keep remain, then, when the earliest lifetime in the list is due,
 * every member past its lifetime. Returns true if the batch filled (call
 * again). Lock held. (Fresh members' lifetimes are checked at checkout and
 * release; the worker learns them when it arms them, a tick later.)
 */
bool cpool__idle_collect_expired_locked(struct cpool_idle *idle, uint64_t now,
					uint64_t idle_timeout_ns,
					unsigned keep, struct cpool_batch *b);

/*
 * Worker: when the list next needs a look for an expiry (idle timeout of
 * its oldest member beyond @keep, or its earliest lifetime); UINT64_MAX if
 * never. Lock held.
 */
uint64_t cpool__idle_next_expiry_locked(const struct cpool_idle *idle,
					uint64_t idle_timeout_ns,
					unsigned keep);

#endif /* CPOOL_SHARD_H */
