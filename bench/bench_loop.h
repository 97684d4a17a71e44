/* SPDX-License-Identifier: MIT */
/*
 * The measured loop, one copy per peer.
 *
 * Included once by each peer_*.c after it defines, as static inline:
 *
 *   int  peer_thread_init(void *inst, void **tls);
 *   void peer_thread_fini(void *inst, void *tls);
 *   int  peer_acquire(void *inst, void *tls, struct bench_lease *l);
 *   int  peer_fd(void *inst, void *tls, struct bench_lease *l);
 *   void peer_release(void *inst, void *tls, struct bench_lease *l,
 *                     bool close);
 *
 * except those that one of these, defined before the include, stands for:
 *
 *   PEER_NO_THREAD_STATE  peer_thread_init() and peer_thread_fini(): no
 *                         per-thread state
 *   PEER_THREAD_CONN      peer_thread_init() and peer_thread_fini(): one
 *                         connection per thread to the instance (a struct
 *                         sockaddr_in), its fd kept as the tls
 *   PEER_LEASE_FD         peer_fd(): peer_acquire() sets l->fd
 *
 * Every peer runs this same source; the compiler inlines the peer's calls
 * into it, so no peer pays an indirect call the others do not. The stop
 * flag is read once per BENCH_BATCH operations and the first operation of
 * a batch is timed. The loop comes twice: peer_thread(), and
 * peer_thread_timed(), which also times every acquire on its own into the
 * thread's histogram (two clock reads per operation, the same for every
 * peer; the untimed loop has not even a branch for it).
 *
 * The peer's struct peer_ops is PEER_OPS(name, create, destroy): thread_fn,
 * thread_timed_fn, acquire and release are peer_thread(),
 * peer_thread_timed(), peer_ops_acquire() and peer_ops_release() below; a
 * PEER_THREAD_CONN peer's acquire needs the thread's connection, so it has
 * no acquire and release.
 */
#ifndef CPOOL_BENCH_LOOP_H
#define CPOOL_BENCH_LOOP_H

#include "bench.h"

#include <stdint.h>
#include <unistd.h>

#if defined(PEER_NO_THREAD_STATE)
static inline int
peer_thread_init(void *inst, void **tls)
{
	return 0;
}

static inline void
peer_thread_fini(void *inst, void *tls)
{
}
#elif defined(PEER_THREAD_CONN)
static inline int
peer_thread_init(void *inst, void **tls)
{
	int fd = bench_connect(inst);

	if (fd < 0)
		return fd;
	*tls = (void *)(intptr_t)fd;
	return 0;
}

static inline void
peer_thread_fini(void *inst, void *tls)
{
	close((int)(intptr_t)tls);
}
#endif

#ifdef PEER_LEASE_FD
static inline int
peer_fd(void *inst, void *tls, struct bench_lease *l)
{
	return l->fd;
}
#endif

/*
 * One operation; when @timed (a constant), the acquire's own time goes
 * into @wait. The timed copy's lease starts cleared: the clock call between
 * acquire and its check hides from the compiler that a failed acquire
 * never reaches the fd.
 */
static inline __attribute__((always_inline)) int
peer_op(void *inst, void *tls, enum bench_mode mode, bool timed,
	struct bench_hist *wait)
{
	struct bench_lease l;
	uint64_t t0 = 0;
	int err;

	if (timed) {
		l = (struct bench_lease){ .fd = -1 };
		t0 = bench_now_ns();
	}
	err = peer_acquire(inst, tls, &l);
	if (timed)
		bench_hist_add(wait, bench_now_ns() - t0);
	if (err)
		return err;
	if (mode == BENCH_REQUEST_RESPONSE)
		err = bench_request(peer_fd(inst, tls, &l));
	peer_release(inst, tls, &l, err != 0);
	return err;
}

/* The loop; @timed is a constant in each of the two copies below. */
static inline __attribute__((always_inline)) void *
peer_loop(struct bench_thread *t, bool timed)
{
	struct bench_run *run = t->run;
	enum bench_mode mode = run->env->mode;
	struct bench_hist *wait = t->wait;
	void *inst = run->inst;
	void *tls = NULL;
	uint64_t t0;
	unsigned i;
	int err;

	err = peer_thread_init(inst, &tls);
	bench_thread_ready(t, err);
	if (!err) {
		while (!bench_stopped(run)) {
			t0 = bench_now_ns();
			err = peer_op(inst, tls, mode, timed, wait);
			bench_sample(t, bench_now_ns() - t0);
			if (err) {
				t->errors++;
				t->last_err = err;
			}
			for (i = 1; i < BENCH_BATCH; i++) {
				err = peer_op(inst, tls, mode, timed, wait);
				if (err) {
					t->errors++;
					t->last_err = err;
				}
			}
			t->ops += BENCH_BATCH;
		}
	}
	t->end_ns = bench_now_ns();
	bench_thread_done(t);
	if (!t->init_err)
		peer_thread_fini(inst, tls);
	return NULL;
}

static void *
peer_thread(void *arg)
{
	return peer_loop(arg, false);
}

/* The same loop, every acquire timed into t->wait (never NULL here). */
static void *
peer_thread_timed(void *arg)
{
	return peer_loop(arg, true);
}

#ifdef PEER_THREAD_CONN
#define PEER_OPS(name_, create_, destroy_)                                     \
	{                                                                      \
		.name = (name_), .create = (create_), .destroy = (destroy_),   \
		.thread_fn = peer_thread,                                      \
		.thread_timed_fn = peer_thread_timed,                          \
	}
#else
/* One acquire, l->fd set, for single-threaded workloads: the ops' acquire. */
static inline int
peer_ops_acquire(void *inst, struct bench_lease *l)
{
	int err = peer_acquire(inst, NULL, l);

	if (!err)
		l->fd = peer_fd(inst, NULL, l);
	return err;
}

/* The ops' release. */
static inline void
peer_ops_release(void *inst, struct bench_lease *l, bool close)
{
	peer_release(inst, NULL, l, close);
}

#define PEER_OPS(name_, create_, destroy_)                                     \
	{                                                                      \
		.name = (name_), .create = (create_), .destroy = (destroy_),   \
		.thread_fn = peer_thread,                                      \
		.thread_timed_fn = peer_thread_timed,                          \
		.acquire = peer_ops_acquire, .release = peer_ops_release,      \
	}
#endif

#endif /* CPOOL_BENCH_LOOP_H */
