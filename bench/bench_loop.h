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
 * Every peer runs this same source; the compiler inlines the peer's calls
 * into it, so no peer pays an indirect call the others do not. The stop
 * flag is read once per BENCH_BATCH operations and the first operation of
 * a batch is timed.
 */
#ifndef CPOOL_BENCH_LOOP_H
#define CPOOL_BENCH_LOOP_H

#include "bench.h"

static inline int
peer_op(void *inst, void *tls, enum bench_mode mode)
{
	struct bench_lease l;
	int err;

	err = peer_acquire(inst, tls, &l);
	if (err)
		return err;
	if (mode == BENCH_REQUEST_RESPONSE)
		err = bench_request(peer_fd(inst, tls, &l));
	peer_release(inst, tls, &l, err != 0);
	return err;
}

static void *
peer_thread(void *arg)
{
	struct bench_thread *t = arg;
	struct bench_run *run = t->run;
	enum bench_mode mode = run->env->mode;
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
			err = peer_op(inst, tls, mode);
			bench_sample(t, bench_now_ns() - t0);
			if (err) {
				t->errors++;
				t->last_err = err;
			}
			for (i = 1; i < BENCH_BATCH; i++) {
				err = peer_op(inst, tls, mode);
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

#endif /* CPOOL_BENCH_LOOP_H */
