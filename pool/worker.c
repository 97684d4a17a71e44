/* SPDX-License-Identifier: MIT */
/*
 * Worker threads: the pool keeps itself healthy when nobody calls it, and
 * its cost follows the work, not the size of its tables.
 *
 * Each shard has one worker with its own epoll. Every connection is
 * registered, at connect, with the epoll of the shard that opened it, as a
 * disarmed EPOLLONESHOT; release never makes a syscall. An idle list that
 * needs its worker is handed to it through its inbox (shard.h): a push of a
 * fresh connection, a shortfall below the prewarm share, a removal. The
 * worker holds such a list in a timer heap, keyed by when it must look at
 * it next: a tick after its oldest fresh connection was released (to arm
 * it), the idle timeout of its oldest member, its earliest lifetime, or
 * the end of a connect backoff for prewarm. A list with nothing left to
 * wait for is let go. So a worker visits only lists with work due; an idle
 * pool of 10 000 endpoints costs it what one of a single endpoint does: a
 * wake-up per tick to advance the pool's tick clock.
 *
 * Arming: the oldest fresh connections released at least a tick ago are
 * armed (EPOLLIN | EPOLLRDHUP), however many there are, a batch per lock
 * hold; hot connections cycling faster than a tick are never armed. A FIN,
 * RST, error (keepalive or user-timeout expiry) or stray bytes wake the
 * worker, which claims the connection (IDLE -> BUSY under its list's lock:
 * a caller leasing it at the same moment either got it first, and the
 * worker leaves it alone, or never sees it), probes it and closes it, or
 * gives it back if it is alive. No socket sits in CLOSE_WAIT in the pool.
 *
 * Memory: an event may name a connection another thread closed meanwhile.
 * Closed connections go to the reaper of the worker whose epoll they were
 * registered with, and that worker frees them at the top of its loop: by
 * then it has handled every event an earlier epoll_wait returned, and no
 * later one can name them (they were un-watched before the push). Workers
 * never enter an RCU read-side section: they never read the endpoint table.
 *
 * Clocks: the worker advances the pool's tick (a coarse clock read each
 * loop) and works with the later of its reading and the tick, so an age is
 * never computed from a stamp later than the clock it meets.
 */
#include "worker.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "alloc.h"
#include "dns.h"
#include "log.h"
#include "probe.h"

#define WORKER_EVENTS 64
/* How soon a prewarm stopped by the cap tries again. */
#define WORKER_RETRY_NS 50000000ull

/* The timer heap: lists held, earliest deadline_ns first. */
static bool
heap_less(const struct cpool_idle *a, const struct cpool_idle *b)
{
	return a->deadline_ns < b->deadline_ns;
}

static void
heap_swap(struct cpool_worker *w, unsigned i, unsigned j)
{
	struct cpool_idle *t = w->heap[i];

	w->heap[i] = w->heap[j];
	w->heap[j] = t;
	w->heap[i]->heap_idx = (int)i;
	w->heap[j]->heap_idx = (int)j;
}

static void
heap_fix(struct cpool_worker *w, unsigned i)
{
	unsigned l, r, m;

	while (i && heap_less(w->heap[i], w->heap[(i - 1) / 2])) {
		heap_swap(w, i, (i - 1) / 2);
		i = (i - 1) / 2;
	}
	for (;;) {
		l = 2 * i + 1;
		r = l + 1;
		m = i;
		if (l < w->nheap && heap_less(w->heap[l], w->heap[m]))
			m = l;
		if (r < w->nheap && heap_less(w->heap[r], w->heap[m]))
			m = r;
		if (m == i)
			return;
		heap_swap(w, i, m);
		i = m;
	}
}

static bool
heap_add(struct cpool_worker *w, struct cpool_idle *idle)
{
	struct cpool_idle **h;
	unsigned cap;

	if (w->nheap == w->heap_cap) {
		cap = w->heap_cap ? 2 * w->heap_cap : 64;
		h = cpool__alloc(cap * sizeof(*h), 0, w->index);
		if (!h)
			return false;
		if (w->nheap)
			memcpy(h, w->heap, w->nheap * sizeof(*h));
		cpool__free(w->heap, w->heap_cap * sizeof(*h));
		w->heap = h;
		w->heap_cap = cap;
	}
	w->heap[w->nheap] = idle;
	idle->heap_idx = (int)w->nheap++;
	heap_fix(w, (unsigned)idle->heap_idx);
	return true;
}

static void
heap_del(struct cpool_worker *w, struct cpool_idle *idle)
{
	unsigned i = (unsigned)idle->heap_idx;

	idle->heap_idx = -1;
	if (i != --w->nheap) {
		w->heap[i] = w->heap[w->nheap];
		w->heap[i]->heap_idx = (int)i;
		heap_fix(w, i);
	}
}

/*
 * Opens connections until the list holds its prewarm share. Returns when
 * the worker should look again: a tick on (to arm them), at the end of the
 * backoff, or after WORKER_RETRY_NS at the cap or after a failure.
 */
static uint64_t
worker_prewarm(struct cpool_worker *w, struct cpool_idle *idle, uint64_t now)
{
	struct cpool_endpoint *ep = idle->ep;
	struct cpool *pool = w->pool;
	uint64_t next = now + CPOOL_TICK_NS;
	struct cpool_conn *c;

	while (LOAD_RLX(&idle->count) < idle->want && !LOAD_RLX(&pool->state)) {
		if (!cpool__admit_reserve(&ep->admit)) {
			next = now + WORKER_RETRY_NS;
			break;
		}
		/* A worker never fails fast: it just tries again later. */
		if (cpool__ep_conn_open(ep, w->index, false, &c)) {
			cpool__admit_give_back(&ep->admit);
			/* The end of the backoff, or a retry after a failure
			 * that started none. */
			next = cpool__aset_ready_ns(&ep->set);
			if (!next)
				next = now + WORKER_RETRY_NS;
			break;
		}
		ADD_RLX(&ep->ctr.prewarms, 1);
		c->released_ns = LOAD_RLX(&pool->tick_ns);
		if (cpool__admit_put(&ep->admit, idle, c, CONN_BUSY)) {
			cpool__ep_conn_close(c, CPOOL_CLOSE_SHUTDOWN, false);
			break;
		}
	}
	return next > now + CPOOL_TICK_NS ? next : now + CPOOL_TICK_NS;
}

/*
 * Under the list's lock: arms what is due and takes what expired into the
 * batches, and returns when to look next (@now: at once, a batch filled or
 * prewarm is due; UINT64_MAX: nothing to wait for).
 */
static uint64_t
look_locked(struct cpool *pool, struct cpool_idle *idle, uint64_t now,
	    struct cpool_batch *arm, struct cpool_batch *dead, bool *warm)
{
	uint64_t next = UINT64_MAX, t;
	bool more;

	/* Stamps are ticks, up to one old: two ticks ago is idle for one. */
	more = cpool__idle_collect_arm_locked(idle, now - 2 * CPOOL_TICK_NS,
					      arm);
	more |= cpool__idle_collect_expired_locked(
		idle, now, pool->idle_timeout_ns, idle->want, dead);
	if (idle->watched->prev != &idle->head)
		next = cds_list_entry(idle->watched->prev, struct cpool_conn,
				      link)->released_ns +
		       2 * CPOOL_TICK_NS;
	t = cpool__idle_next_expiry_locked(idle, pool->idle_timeout_ns,
					   idle->want);
	if (t < next)
		next = t;
	*warm = !more && idle->count < idle->want;
	return more || *warm ? now : next;
}

/*
 * One look at a list the worker was just handed (@handed) or holds: arm
 * what is due, close what expired, prewarm, and decide when to look again
 * or let go. The list's reference is the worker's while it holds it.
 */
static void
worker_look(struct cpool_worker *w, struct cpool_idle *idle, uint64_t now,
	    bool handed)
{
	struct cpool_endpoint *ep = idle->ep;
	struct cpool_batch arm, dead;
	bool warm = false, let_go = false;
	uint64_t next = UINT64_MAX;
	unsigned i;

	arm.n = dead.n = 0;
	/* Connections of gone addresses released after their drain. */
	if (unlikely(LOAD_RLX(&ep->ndraining)) &&
	    !cpool__admit_closing(&ep->admit))
		cpool__ep_drain_list(ep, idle);
	cpool__spin_lock(&idle->lock);
	CPOOL_BUG_ON(handed != (idle->queued == IDLE_INBOX));
	if (!cpool__admit_closing(&ep->admit))
		next = look_locked(w->pool, idle, now, &arm, &dead, &warm);
	idle->deadline_ns = next;
	/* Poked again since (IDLE_INBOX): the inbox's look decides. */
	if (handed || idle->queued != IDLE_INBOX) {
		idle->queued = next == UINT64_MAX	      ? IDLE_FREE
			       : next <= now + 2 * CPOOL_TICK_NS ? IDLE_SOON
							     : IDLE_LATER;
		let_go = next == UINT64_MAX;
	}
	cpool__spin_unlock(&idle->lock);

	for (i = 0; i < arm.n; i++) {
		CPOOL_PAUSE(CPOOL_PP_WORKER_ARM, arm.c[i]);
		cpool__conn_arm(arm.c[i]);
	}
	for (i = 0; i < dead.n; i++)
		cpool__ep_conn_close(dead.c[i], dead.why[i], false);
	if (warm) {
		next = worker_prewarm(w, idle, now);
		cpool__spin_lock(&idle->lock);
		idle->deadline_ns = next;
		if (idle->queued == IDLE_SOON && next > now + 2 * CPOOL_TICK_NS)
			idle->queued = IDLE_LATER;
		cpool__spin_unlock(&idle->lock);
	}
	if (next == UINT64_MAX) {
		if (idle->heap_idx >= 0)
			heap_del(w, idle);
		else if (!let_go)
			return; /* in the inbox, not held: nothing of ours */
		cpool__ep_put(ep); /* the held reference */
	} else if (idle->heap_idx >= 0) {
		heap_fix(w, (unsigned)idle->heap_idx);
	} else if (!heap_add(w, idle)) {
		cpool__log(&w->pool->cfg, CPOOL_LOG_ERROR,
			   "worker %u: no memory for its timers", w->index);
	}
}

/* Lists handed over since the last loop. */
static void
worker_inbox(struct cpool_worker *w, uint64_t now)
{
	struct cpool_snode *n = cpool__stack_take(&w->env->inbox), *next;
	struct cpool_idle *idle;

	for (; n; n = next) {
		next = n->next;
		idle = caa_container_of(n, struct cpool_idle, inode);
		if (idle->heap_idx >= 0) /* held already: one reference is enough */
			cpool__ep_put(idle->ep);
		worker_look(w, idle, now, true);
	}
}

/*
 * After an alive ops->check: whether the bytes waiting at the socket are
 * the same as at this worker's last look (no lease in between), twice in
 * a row. The check would take them if they were its protocol's: the
 * connection is closed as unexpected_data instead of being looked at
 * again for ever.
 */
static bool
conn_stuck(struct cpool_conn *c)
{
	int n = 0;

	if (ioctl(c->fd, FIONREAD, &n) == -1 || n <= 0) {
		c->stuck_looks = 0;
		return false;
	}
	if (c->stuck_looks && c->stuck_uses == c->uses &&
	    c->stuck_bytes == (unsigned)n)
		return ++c->stuck_looks >= 2;
	c->stuck_looks = 1;
	c->stuck_bytes = (unsigned)n;
	c->stuck_uses = c->uses;
	return false;
}

/* An event on a watched connection: evict it if it is still idle. */
static void
worker_event(struct cpool_worker *w, struct cpool_conn *c)
{
	struct cpool_idle *idle = LOAD_ACQ(&c->home);
	struct cpool_endpoint *ep = c->ep;
	enum cpool_verdict v;
	bool hand = false;

	if (!idle)
		return; /* leased since its connect: its holder decides */
	cpool__spin_lock(&idle->lock);
	if (LOAD_RLX(&c->home) != idle || !cpool__conn_claim(c)) {
		cpool__spin_unlock(&idle->lock);
		return; /* leased meanwhile: its new owner decides */
	}
	cpool__idle_unlink_locked(idle, c);
	if (idle->count < idle->want) /* prewarm replaces it */
		hand = cpool__idle_need_locked(idle);
	cpool__spin_unlock(&idle->lock);
	if (hand)
		cpool__idle_hand_over(idle);

	v = cpool_probe(c->fd);
	if (v == CPOOL_UNEXPECTED_DATA && w->pool->ops.check) {
		v = cpool__ep_conn_check(c, v);
		if (v == CPOOL_ALIVE && conn_stuck(c))
			v = CPOOL_UNEXPECTED_DATA;
	}
	if (v != CPOOL_ALIVE) {
		cpool__ep_conn_close(c, (enum cpool_close_reason)v, false);
		return;
	}
	/* A spurious wake-up (it was re-armed while leased): idle again. */
	c->released_ns = LOAD_RLX(&w->pool->tick_ns);
	if (cpool__admit_put(&ep->admit, idle, c, CONN_BUSY))
		cpool__ep_conn_close(c, CPOOL_CLOSE_SHUTDOWN, false);
}

/* Frees what closed since the last epoll_wait: none can be named now. */
static void
worker_reap(struct cpool_snode *n)
{
	struct cpool_snode *next;

	for (; n; n = next) {
		next = n->next;
		cpool__ep_conn_free(caa_container_of(n, struct cpool_conn,
						     rnode));
	}
}

/*
 * The pool's tick clock: release stamps connections with it instead of
 * reading a clock. Every worker advances it; it never goes back. Returns
 * the later of @now and the tick.
 */
static uint64_t
tick_advance(struct cpool *pool, uint64_t now)
{
	uint64_t t = LOAD_RLX(&pool->tick_ns);

	while (t < now)
		if (__atomic_compare_exchange_n(&pool->tick_ns, &t, now, true,
						__ATOMIC_RELAXED,
						__ATOMIC_RELAXED))
			return now;
	return t;
}

/* Lets go of everything: the worker is stopping. */
static void
worker_exit(struct cpool_worker *w)
{
	struct cpool_snode *n = cpool__stack_close(&w->env->inbox), *next;
	struct cpool_idle *idle;

	for (; n; n = next) {
		next = n->next;
		idle = caa_container_of(n, struct cpool_idle, inode);
		if (idle->heap_idx < 0) {
			cpool__spin_lock(&idle->lock);
			idle->queued = IDLE_FREE;
			cpool__spin_unlock(&idle->lock);
		}
		cpool__ep_put(idle->ep); /* never the last if still held */
	}
	while (w->nheap) {
		idle = w->heap[0];
		heap_del(w, idle);
		cpool__spin_lock(&idle->lock);
		idle->queued = IDLE_FREE;
		cpool__spin_unlock(&idle->lock);
		cpool__ep_put(idle->ep);
	}
	cpool__free(w->heap, w->heap_cap * sizeof(*w->heap));
	w->heap = NULL;
	w->heap_cap = 0;
	worker_reap(cpool__stack_close(&w->env->reaper));
}

static void *
worker_main(void *arg)
{
	struct cpool_worker *w = arg;
	struct cpool *pool = w->pool;
	struct epoll_event ev[WORKER_EVENTS];
	uint64_t junk, now;
	int n, i;

	while (!LOAD_RLX(&pool->state)) {
		worker_reap(cpool__stack_take(&w->env->reaper));
		n = epoll_wait(w->env->epfd, ev, WORKER_EVENTS, CPOOL_TICK_MS);
		CPOOL_PAUSE(CPOOL_PP_WORKER_EVENTS, &w->index);
		for (i = 0; i < n; i++) {
			if (ev[i].data.u64 & CPOOL_DNS_EV_TAG) {
				cpool__names_event(pool, ev[i].data.u64,
						   ev[i].events);
				continue;
			}
			if (ev[i].data.ptr == w) {
				if (read(w->env->evfd, &junk, sizeof(junk)) < 0)
					continue;
				continue;
			}
			worker_event(w, ev[i].data.ptr);
		}
		if (LOAD_RLX(&pool->state))
			break;
		now = cpool__coarse_ns();
		CPOOL_PAUSE(CPOOL_PP_WORKER_CLOCK, &w->index);
		now = tick_advance(pool, now);
		worker_inbox(w, now);
		while (w->nheap && w->heap[0]->deadline_ns <= now)
			worker_look(w, w->heap[0], now, false);
		if (w->index == 0)
			cpool__names_work(pool, w->env->epfd, now);
	}
	if (w->index == 0)
		cpool__names_stop(pool);
	worker_exit(w);
	return NULL;
}

static int
worker_init(struct cpool *pool, struct cpool_worker *w, unsigned k)
{
	struct cpool_shard_env *env = &pool->shards[k];
	struct epoll_event ev = { .events = EPOLLIN, .data.ptr = w };

	w->pool = pool;
	w->index = k;
	w->env = env;
	env->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (env->epfd == -1)
		return -errno;
	env->evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (env->evfd == -1)
		return -errno;
	if (epoll_ctl(env->epfd, EPOLL_CTL_ADD, env->evfd, &ev) == -1)
		return -errno;
	return 0;
}

static void
worker_pin(struct cpool_worker *w)
{
	cpu_set_t set;

	CPU_ZERO(&set);
	CPU_SET(w->index, &set);
	/* Best effort: a CPU outside the process's mask is simply skipped. */
	pthread_setaffinity_np(w->thread, sizeof(set), &set);
}

int
cpool__workers_start(struct cpool *pool)
{
	sigset_t all, old;
	unsigned k;
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	bool pin = !(pool->cfg.flags & CPOOL_NO_PIN) &&
		   (long)pool->nshards == cpus;
	int err = 0;

	for (k = 0; k < pool->nshards; k++) {
		pool->shards[k].epfd = -1;
		pool->shards[k].evfd = -1;
	}
	for (k = 0; k < pool->nshards && !err; k++)
		err = worker_init(pool, &pool->workers[k], k);
	if (err)
		goto fail;
	/* The host's signal handlers never run on our threads. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	for (k = 0; k < pool->nshards; k++) {
		err = -pthread_create(&pool->workers[k].thread, NULL,
				      worker_main, &pool->workers[k]);
		if (err)
			break;
		pool->workers[k].started = true;
		if (pin)
			worker_pin(&pool->workers[k]);
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (!err)
		return 0;
fail:
	cpool__workers_stop(pool);
	cpool__workers_free(pool);
	return err;
}

void
cpool__workers_stop(struct cpool *pool)
{
	uint64_t one = 1;
	unsigned k;

	for (k = 0; k < pool->nshards; k++) {
		if (!pool->workers[k].started)
			continue;
		if (write(pool->shards[k].evfd, &one, sizeof(one)) < 0) {
			/* Full counter: the worker is awake already. */
		}
	}
	for (k = 0; k < pool->nshards; k++) {
		if (pool->workers[k].started) {
			pthread_join(pool->workers[k].thread, NULL);
			pool->workers[k].started = false;
		} else {
			/* Never started: close its stacks for the pushers. */
			cpool__stack_close(&pool->shards[k].inbox);
			worker_reap(cpool__stack_close(&pool->shards[k].reaper));
		}
	}
}

void
cpool__workers_free(struct cpool *pool)
{
	unsigned k;

	for (k = 0; k < pool->nshards; k++) {
		if (pool->shards[k].epfd >= 0)
			close(pool->shards[k].epfd);
		if (pool->shards[k].evfd >= 0)
			close(pool->shards[k].evfd);
		pool->shards[k].epfd = pool->shards[k].evfd = -1;
	}
}

void
cpool__workers_fork_child(struct cpool *pool)
{
	unsigned k;

	for (k = 0; k < pool->nshards; k++) {
		pool->workers[k].started = false;
		pool->workers[k].nheap = 0; /* the parent's; not freed here */
		pool->workers[k].heap = NULL;
		pool->workers[k].heap_cap = 0;
	}
	cpool__workers_free(pool); /* this process's copies of the fds */
}
