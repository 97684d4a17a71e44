/* SPDX-License-Identifier: MIT */
/*
 * Worker threads: the pool keeps itself healthy when nobody calls it.
 *
 * Each shard has one worker with its own epoll. Every connection is
 * registered, at connect, with the epoll of the shard that opened it, as a
 * disarmed EPOLLONESHOT. Release never makes a syscall: the worker of the
 * shard whose list a connection sits in arms it (EPOLLIN | EPOLLRDHUP) once
 * a scan has seen it idle twice in a row with the same use count, i.e. idle
 * for at least one tick. Busy connections cycling through the pool are
 * therefore never armed and cost the worker nothing; their liveness is the
 * checkout probe's job. A connection idle longer than a tick is watched: a
 * FIN, RST, error (keepalive or user-timeout expiry) or stray bytes wake
 * the worker, which takes the connection out of its list under the list
 * lock (so a caller leasing it at the same moment either got it first, and
 * the worker leaves it alone, or does not get it at all), probes it for the
 * reason and closes it. No socket sits in CLOSE_WAIT inside the pool.
 *
 * Memory: an event may name a connection another thread is closing. The
 * worker sits in an RCU read-side section from before epoll_wait until it
 * has handled the events, and connections are freed only after a grace
 * period, after EPOLL_CTL_DEL; so every pointer epoll hands back is valid
 * memory, and the list lock plus the state decide who owns it.
 *
 * Timers, every CPOOL_SWEEP_MS: from the least recently used end of each
 * list, connections idle longer than idle_timeout_ms are closed down to the
 * shard's share of min_idle_per_endpoint; connections past their lifetime
 * (with their 0-2.5 % jitter) are closed wherever they are. Prewarm: each
 * shard keeps its share of min_idle_per_endpoint open and idle, replacing
 * evicted ones, never above the cap and not during connect backoff.
 */
#include "worker.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "conn.h"
#include "endpoint.h"
#include "log.h"
#include "shard.h"

#define WORKER_EVENTS 64
#define WORKER_BATCH 64

int
cpool__worker_watch(struct cpool *pool, unsigned sh, struct cpool_conn *c)
{
	struct epoll_event ev = { .events = EPOLLONESHOT, .data.ptr = c };
	int epfd = pool->workers[sh].epfd;

	if (epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev) == -1)
		return -errno;
	c->epfd = epfd;
	return 0;
}

/* Puts a connection the worker took back in its list, for another look. */
static void
worker_give_back(struct cpool_idle *idle, struct cpool_conn *c)
{
	cpool__spin_lock(&idle->lock);
	if (LOAD(&c->ep->closing)) { /* drained meanwhile: do not strand it */
		cpool__spin_unlock(&idle->lock);
		cpool__conn_close(c, CPOOL_CLOSE_SHUTDOWN, false);
		return;
	}
	cds_list_add(&c->link, &idle->head);
	STORE(&idle->count, idle->count + 1);
	c->armed = false;
	STORE(&c->state, CONN_IDLE);
	cpool__spin_unlock(&idle->lock);
}

/* An event on a watched connection: evict it if it is still idle. */
static void
worker_event(struct cpool_conn *c)
{
	struct cpool_idle *idle = LOAD(&c->home);
	enum cpool_verdict v;

	if (!idle)
		return;
	cpool__spin_lock(&idle->lock);
	if (LOAD(&c->state) != CONN_IDLE || LOAD(&c->home) != idle) {
		/* Leased meanwhile: its new owner decides. */
		cpool__spin_unlock(&idle->lock);
		return;
	}
	cds_list_del(&c->link);
	STORE(&idle->count, idle->count - 1);
	STORE(&c->state, CONN_BUSY);
	cpool__spin_unlock(&idle->lock);

	v = cpool_probe(c->fd);
	if (v == CPOOL_ALIVE)
		worker_give_back(idle, c);
	else
		cpool__conn_close(c, (enum cpool_close_reason)v, false);
}

/*
 * The connection may be leased by now (one spurious event at most), but
 * not closed: cpool__conn_close() waits while c->arming counts a MOD in
 * flight, so the fd number cannot be reused under this MOD.
 */
static void
worker_arm(struct cpool_conn *c)
{
	struct epoll_event ev = {
		.events = EPOLLIN | EPOLLRDHUP | EPOLLONESHOT,
		.data.ptr = c,
	};

	epoll_ctl(c->epfd, EPOLL_CTL_MOD, c->fd, &ev);
	__atomic_sub_fetch(&c->arming, 1, __ATOMIC_RELEASE);
}

struct worker_batch {
	unsigned n;
	struct cpool_conn *c[WORKER_BATCH];
	enum cpool_close_reason why[WORKER_BATCH];
};

/*
 * One list: arm connections idle since the last scan; on sweeps, collect
 * the idle-expired and lifetime-expired ones. Call with idle->lock held.
 * Armed connections are CONN_IDLE still; closed ones become CONN_BUSY.
 */
static void
scan_list_locked(struct cpool *pool, struct cpool_idle *idle, unsigned keep,
		 bool sweep, uint64_t now, struct worker_batch *arm,
		 struct worker_batch *dead)
{
	struct cds_list_head *pos, *tmp;
	struct cpool_conn *c;
	unsigned left, budget = 1024;

	cds_list_for_each(pos, &idle->head) {
		c = cds_list_entry(pos, struct cpool_conn, link);
		if (c->armed || arm->n == WORKER_BATCH)
			break;
		if (c->seen == c->uses + 1) {
			c->armed = true;
			/* A count: a worker that saw it in its list before it
			 * moved here may still be arming it too. */
			ATOMIC_ADD(&c->arming, 1);
			arm->c[arm->n++] = c;
		} else {
			c->seen = c->uses + 1;
		}
	}
	if (!sweep)
		return;
	left = idle->count;
	/* Oldest first: stop at the first one still young enough. */
	cds_list_for_each_prev_safe(pos, tmp, &idle->head) {
		c = cds_list_entry(pos, struct cpool_conn, link);
		/* Bounded lock hold: a huge list is swept over several ticks
		 * from its old end; checkout and release check the rest. */
		if (dead->n == WORKER_BATCH || !budget--)
			return;
		if (c->expires_ns && now >= c->expires_ns) {
			dead->why[dead->n] = CPOOL_CLOSE_LIFETIME;
		} else if (pool->idle_timeout_ns && left > keep &&
			   now - c->released_ns >= pool->idle_timeout_ns) {
			dead->why[dead->n] = CPOOL_CLOSE_IDLE_TIMEOUT;
		} else {
			if (!pool->lifetime_ns)
				return;
			continue;
		}
		cds_list_del(&c->link);
		STORE(&idle->count, idle->count - 1);
		STORE(&c->state, CONN_BUSY);
		dead->c[dead->n++] = c;
		left--;
	}
}

/* Shard @k's share of a per-endpoint number spread over @n shards. */
static unsigned
share_of(unsigned total, unsigned n, unsigned k)
{
	return total / n + (k < total % n);
}

/*
 * Opens connections until shard w->index holds its share of
 * min_idle_per_endpoint. Outside any read-side section: connects block.
 */
static void
worker_prewarm(struct cpool_worker *w, struct cpool_endpoint *ep,
	       unsigned want)
{
	struct cpool_idle *idle = &ep->idle[w->index];
	struct cpool_conn *c;
	bool trial;

	while (LOAD(&idle->count) < want && !LOAD(&ep->closing) &&
	       !LOAD(&w->pool->stopping)) {
		/* A worker never fails fast: it just tries again later. */
		if (cpool__ep_connect_gate(ep, &trial, false))
			return;
		if (!cpool__ep_slot_get(ep)) {
			cpool__ep_connect_done(ep, -EAGAIN, trial);
			return;
		}
		if (cpool__conn_open(ep, w->index, &c, trial)) {
			cpool__ep_slot_put(ep);
			return;
		}
		ATOMIC_ADD(&ep->ctr.prewarms, 1);
		c->released_ns = LOAD(&w->pool->tick_ns);
		cpool__spin_lock(&idle->lock);
		if (LOAD(&ep->closing)) {
			cpool__spin_unlock(&idle->lock);
			cpool__conn_close(c, CPOOL_CLOSE_SHUTDOWN, false);
			return;
		}
		cpool__idle_add_new_locked(idle, c);
		cpool__spin_unlock(&idle->lock);
	}
}

/*
 * One scan of every endpoint's list of this shard. Runs inside the
 * worker's read-side section; returns with it held, but leaves it around
 * prewarm connects.
 */
static void
worker_scan(struct cpool_worker *w, uint64_t now)
{
	struct cpool *pool = w->pool;
	struct cpool_endpoint *ep, *warm[WORKER_BATCH];
	unsigned keep, want, nwarm = 0, i;
	struct worker_batch arm, dead;
	struct cds_lfht_iter it;
	struct cds_lfht_node *node;
	struct cpool_idle *idle;
	bool sweep = now >= w->next_sweep_ns;

	if (sweep)
		w->next_sweep_ns = now + CPOOL_SWEEP_MS * 1000000ull;
	for (cds_lfht_first(pool->table, &it);
	     (node = cds_lfht_iter_get_node(&it)) != NULL;
	     cds_lfht_next(pool->table, &it)) {
		ep = caa_container_of(node, struct cpool_endpoint, node);
		CPOOL_TSAN_ACQUIRE(ep);
		if (LOAD(&ep->closing))
			continue;
		idle = &ep->idle[w->index];
		keep = share_of(pool->cfg.min_idle_per_endpoint, pool->nshards,
				w->index);
		arm.n = dead.n = 0;
		if (LOAD(&idle->count)) {
			cpool__spin_lock(&idle->lock);
			scan_list_locked(pool, idle, keep, sweep, now, &arm,
					 &dead);
			cpool__spin_unlock(&idle->lock);
		}
		for (i = 0; i < arm.n; i++)
			worker_arm(arm.c[i]);
		for (i = 0; i < dead.n; i++)
			cpool__conn_close(dead.c[i], dead.why[i], false);
		want = keep;
		if (want && LOAD(&idle->count) < want && nwarm < WORKER_BATCH) {
			cpool__ep_get(ep);
			warm[nwarm++] = ep;
		}
	}
	if (!nwarm)
		return;
	cpool__rcu_read_unlock();
	for (i = 0; i < nwarm; i++) {
		worker_prewarm(w, warm[i],
			       share_of(pool->cfg.min_idle_per_endpoint,
					pool->nshards, w->index));
		cpool__ep_put(warm[i]);
	}
	urcu_memb_read_lock();
}

/*
 * The pool's tick clock: release stamps connections with it instead of
 * reading a clock. Every worker advances it; it never goes back.
 */
static void
tick_advance(struct cpool *pool, uint64_t now)
{
	uint64_t t = LOAD(&pool->tick_ns);

	while (t < now && !__atomic_compare_exchange_n(&pool->tick_ns, &t, now,
						       false, __ATOMIC_RELAXED,
						       __ATOMIC_RELAXED))
		;
}

static void *
worker_main(void *arg)
{
	struct cpool_worker *w = arg;
	struct cpool *pool = w->pool;
	struct epoll_event ev[WORKER_EVENTS];
	uint64_t junk, now;
	int n, i;

	urcu_memb_register_thread();
	urcu_memb_read_lock();
	while (!LOAD(&pool->stopping)) {
		n = epoll_wait(w->epfd, ev, WORKER_EVENTS, CPOOL_TICK_MS);
		for (i = 0; i < n; i++) {
			if (ev[i].data.ptr == w) {
				if (read(w->evfd, &junk, sizeof(junk)) < 0)
					continue;
				continue;
			}
			worker_event(ev[i].data.ptr);
		}
		if (LOAD(&pool->stopping))
			break;
		/* A quiescent state: grace periods never wait a whole tick. */
		cpool__rcu_read_unlock();
		urcu_memb_read_lock();
		now = cpool__coarse_ns();
		tick_advance(pool, now);
		worker_scan(w, now);
	}
	cpool__rcu_read_unlock();
	urcu_memb_unregister_thread();
	return NULL;
}

static int
worker_init(struct cpool *pool, struct cpool_worker *w, unsigned k)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.ptr = w };

	w->pool = pool;
	w->index = k;
	w->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (w->epfd == -1)
		return -errno;
	w->evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (w->evfd == -1)
		return -errno;
	if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, w->evfd, &ev) == -1)
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
		pool->workers[k].epfd = -1;
		pool->workers[k].evfd = -1;
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

	__atomic_store_n(&pool->stopping, 1, __ATOMIC_SEQ_CST);
	for (k = 0; k < pool->nshards; k++) {
		if (!pool->workers[k].started)
			continue;
		if (write(pool->workers[k].evfd, &one, sizeof(one)) < 0) {
			/* Full counter: the worker is awake already. */
		}
	}
	for (k = 0; k < pool->nshards; k++) {
		if (!pool->workers[k].started)
			continue;
		pthread_join(pool->workers[k].thread, NULL);
		pool->workers[k].started = false;
	}
}

void
cpool__workers_free(struct cpool *pool)
{
	unsigned k;

	for (k = 0; k < pool->nshards; k++) {
		if (pool->workers[k].epfd >= 0)
			close(pool->workers[k].epfd);
		if (pool->workers[k].evfd >= 0)
			close(pool->workers[k].evfd);
		pool->workers[k].epfd = pool->workers[k].evfd = -1;
	}
}
