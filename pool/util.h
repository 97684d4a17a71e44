/* SPDX-License-Identifier: MIT */
/*
 * Small helpers every module uses: branch hints, atomics with their memory
 * order in the name, clocks, the invariant check, a lock-free stack, the
 * test-only pause points. Header only; the leaf of the layering.
 */
#ifndef CPOOL_UTIL_H
#define CPOOL_UTIL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)

#define CPOOL_CACHELINE 64
#define CPOOL_ALIGNED __attribute__((aligned(CPOOL_CACHELINE)))

/*
 * Atomics, named by the ordering they carry:
 *  - LOAD_RLX/STORE_RLX: a shared field read outside its writer's lock
 *    (counters, gauges, hints re-checked under a lock). No ordering.
 *  - LOAD_ACQ/STORE_REL: publication. A reader that acts on a flag or a
 *    pointer another thread wrote after preparing what it points to
 *    (an endpoint's closing error, a connection's home list) loads it with
 *    acquire; the writer stores it with release.
 *  - ADD_LOCKED: a counter changed only under one lock and read anywhere
 *    (a plain load and store, no lock prefix).
 *  - ADD_RLX: a counter changed on slow paths without a lock.
 *  - Dekker pairs (a waiter registers then looks; a releaser publishes
 *    then checks for waiters) use __ATOMIC_SEQ_CST explicitly at the call
 *    site, with a comment naming the other half.
 */
#define LOAD_RLX(p) __atomic_load_n((p), __ATOMIC_RELAXED)
#define STORE_RLX(p, v) __atomic_store_n((p), (v), __ATOMIC_RELAXED)
#define LOAD_ACQ(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define STORE_REL(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)
#define ADD_LOCKED(p, v) STORE_RLX((p), LOAD_RLX(p) + (v))
#define ADD_RLX(p, v) __atomic_add_fetch((p), (v), __ATOMIC_RELAXED)

/*
 * CPOOL_DEBUG: debug builds (make debug, and the sanitizer builds) check
 * invariants and compile the test-only pause points in.
 */
#ifdef CPOOL_DEBUG
static const bool cpool__debug = true;
#else
static const bool cpool__debug = false;
#endif
#ifdef CPOOL_SANITIZE
static const bool cpool__sanitize = true;
#else
static const bool cpool__sanitize = false;
#endif

/* Invariants: live in debug builds only; the library never aborts otherwise. */
#define CPOOL_BUG_ON(cond)                                                     \
	do {                                                                   \
		if (cpool__debug && (cond))                                    \
			__builtin_trap();                                      \
	} while (0)

/*
 * Test-only pause points: in debug builds a test may install a hook that
 * runs at named points of the concurrency protocols (tests/test_interleave.c
 * forces interleavings with it); at a fault point its nonzero return is the
 * -errno the library acts on. Compiled out of release builds.
 */
enum cpool_pause_point {		/* (what the hook's obj points to) */
	CPOOL_PP_RELEASE_GATE_READ = 1, /* release: gate read 0, not pushed
					 * yet, list lock held (admission) */
	CPOOL_PP_WAIT_ENTER,		/* waiter: lock taken, not registered */
	CPOOL_PP_WAIT_LOOK,		/* waiter registered, about to look */
	CPOOL_PP_WAIT_BEFORE_SLEEP,	/* waiter: looked, about to sleep */
	CPOOL_PP_WAIT_WOKEN,		/* waiter: woken, lock re-taken */
	CPOOL_PP_WORKER_EVENTS,		/* worker: events collected (index) */
	CPOOL_PP_WORKER_CLOCK,		/* worker: clock read, unused (index) */
	CPOOL_PP_DRAIN_DONE,		/* removal: lists drained, not closed */
	CPOOL_PP_FAULT_EPOLL_ADD,	/* conn: nonzero fails the ADD with it */
	CPOOL_PP_RELEASE_CHECKED,	/* release: its address was in the set,
					 * no lock held, not pushed (conn) */
	CPOOL_PP_WORKER_ARM,		/* worker: a watch counted in arming,
					 * its EPOLL_CTL_MOD not made (conn) */
};

#ifdef CPOOL_DEBUG
extern int (*cpool_debug_pause_hook)(int point, const void *obj);
static inline int
cpool__fault(int point, const void *obj)
{
	int (*hook)(int, const void *) =
		__atomic_load_n(&cpool_debug_pause_hook, __ATOMIC_ACQUIRE);

	return hook ? hook(point, obj) : 0;
}
#define CPOOL_FAULT(pt, obj) cpool__fault((pt), (obj))
#else
#define CPOOL_FAULT(pt, obj) ((void)(obj), 0)
#endif
/* A pause point: the hook's return value is ignored. */
#define CPOOL_PAUSE(pt, obj) ((void)CPOOL_FAULT(pt, obj))

static inline uint64_t
cpool__now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Millisecond-grade clock for idle ages and lifetimes: a vDSO read. */
static inline uint64_t
cpool__coarse_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/*
 * The time from @stamp to @now, 0 if @stamp is the later one: stamps come
 * from the workers' shared tick, which one worker may have advanced past
 * another's fresh reading. Every age in the library goes through here.
 */
static inline uint64_t
cpool__age_ns(uint64_t now, uint64_t stamp)
{
	return now > stamp ? now - stamp : 0;
}

static inline void
cpool__ns_to_timespec(uint64_t ns, struct timespec *ts)
{
	ts->tv_sec = (time_t)(ns / 1000000000u);
	ts->tv_nsec = (long)(ns % 1000000000u);
}

/* A per-thread splitmix64 stream: jitter and rotating cursors only. */
uint64_t cpool__random(void);

/*
 * Cancellation: the library's blocking calls (close, poll, connect, the
 * hooks) run with cancellation disabled, so a pthread_cancel() can never
 * unwind a thread halfway through a state change; only the wait at the
 * cap is a cancellation point (with a cleanup handler, admit.c).
 */
static inline int
cpool__nocancel_begin(void)
{
	int old = PTHREAD_CANCEL_DISABLE;

	pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &old);
	return old;
}

static inline void
cpool__nocancel_end(int old)
{
	if (old != PTHREAD_CANCEL_DISABLE)
		pthread_setcancelstate(old, NULL);
}

/*
 * A lock-free stack of intrusive nodes for handing objects to one thread
 * (a worker): any thread pushes, the owner takes everything at once, so
 * there is no ABA. The owner may close it, taking everything for good: a
 * later push fails and the pusher handles the node itself.
 */
struct cpool_snode {
	struct cpool_snode *next;
};

struct cpool_stack {
	struct cpool_snode *head; /* CPOOL_STACK_CLOSED once closed */
};

#define CPOOL_STACK_CLOSED ((struct cpool_snode *)1)

/* Returns false if the stack is closed (the node was not pushed). */
static inline bool
cpool__stack_push(struct cpool_stack *s, struct cpool_snode *n)
{
	struct cpool_snode *h = LOAD_RLX(&s->head);

	do {
		if (h == CPOOL_STACK_CLOSED)
			return false;
		n->next = h;
	} while (!__atomic_compare_exchange_n(&s->head, &h, n, true,
					      __ATOMIC_RELEASE,
					      __ATOMIC_RELAXED));
	return true;
}

/* Takes every node pushed so far (most recent first); NULL if none. */
static inline struct cpool_snode *
cpool__stack_take(struct cpool_stack *s)
{
	struct cpool_snode *h = LOAD_ACQ(&s->head);

	while (h && h != CPOOL_STACK_CLOSED)
		if (__atomic_compare_exchange_n(&s->head, &h, NULL, true,
						__ATOMIC_ACQUIRE,
						__ATOMIC_ACQUIRE))
			return h;
	return NULL;
}

/* Takes every node and closes the stack; idempotent. */
static inline struct cpool_snode *
cpool__stack_close(struct cpool_stack *s)
{
	struct cpool_snode *h = __atomic_exchange_n(&s->head, CPOOL_STACK_CLOSED,
						    __ATOMIC_ACQ_REL);

	return h == CPOOL_STACK_CLOSED ? NULL : h;
}

#endif /* CPOOL_UTIL_H */
