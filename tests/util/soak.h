/* SPDX-License-Identifier: MIT */
/*
 * The chaos soak (issue 5), as a function: `make soak` runs it from its own
 * binary (tests/soak/soak_main.c), `make test` for 10 s from a Criterion
 * test (tests/test_soak.c).
 *
 * Worker threads run acquire / request / release loops against a real
 * memcached, a real redis-server (hiredis over the pooled fd) and the
 * project's fault server (echo), all through one pool, and, each through
 * a pool of its own (conn ops are pool-wide), a PostgreSQL server (libpq
 * adapter: SELECT of the thread's own row, then an UPSERT of it RETURNING
 * the value) and a redis-server speaking TLS only (TLS adapter: SET, GET,
 * INCR in RESP over SSL_write/SSL_read). The calling thread plays chaos:
 * every 100-500 ms it injects three faults through the fault server (FIN,
 * RST, stray bytes, all connections or one; stalls), and every 0.4-1.2 s
 * it restarts one of the real servers, taking turns (memcached, redis and
 * TLS redis: SIGTERM or SIGKILL; PostgreSQL: SIGINT fast shutdown, or
 * SIGKILL of the postmaster and every backend, then crash recovery; all on
 * the same port); some of these happen in a quiet window of their target
 * (soak.c). A sampler thread checks the caps and that no thread is stuck.
 * At the end every pool must be at rest and balanced, and after
 * cpool_destroy() the fd count must be back at its baseline. The chaos
 * must have been real: at least one restart per 2 s, each server at least
 * once per 8 s, and 5 faults per second of run.
 *
 * PostgreSQL runs only as root (tests/util/pgsrv.h) and TLS redis only with
 * a redis-server built with TLS (tests/util/tlssrv.h): otherwise their
 * target is off and the report says why ("skipped: ..."), which is not a
 * failure. SOAK_NO_PG=1 and SOAK_NO_TLS=1 turn them off.
 *
 * A postgres row and a redis key are written by one thread only, so a
 * read must return its last acknowledged write, or one of its in-doubt
 * writes; for postgres across restarts too (synchronous_commit=on: a
 * commit's reply comes after its WAL write, which a SIGKILL keeps).
 *
 * Definitions the checks use:
 *  - a restart of a server (or a FIN/RST injection on the fault server)
 *    *settles* SOAK_SETTLE_MS after it finished;
 *  - a *stale* failure is a request that failed on a reused connection
 *    opened before the most recent restart of its server, that started
 *    (its acquire began) after that restart settled, with no new restart
 *    begun before it failed. Stalls' timeouts and stray bytes on the fault
 *    server are faults of their own, never stale;
 *  - a *dirty handout* is stray bytes read by a request that started more
 *    than SOAK_SETTLE_MS after the last stray-byte injection;
 *  - an *unfair timeout* is an acquire that returned -ETIMEDOUT although
 *    the pool showed an idle connection for its endpoint right after it,
 *    or although more releases on that endpoint began and ended during
 *    its wait than there are request threads (at most threads - 1
 *    waiters can be ahead of it, so a fair pool serves it); a timeout
 *    while every lease was held all along (a stalled or down server) is
 *    legitimate;
 *  - a *wrong answer* is a well-formed reply that is not the right one,
 *    nor the value of one of the thread's own earlier writes whose reply
 *    never came (an in-doubt write a starved server may apply late);
 *  - no thread may spend longer than acquire_timeout_ms + the request
 *    deadline (+ slack) on one request, not counting the time the whole
 *    process was stalled (gaps of the 10 ms sampler: an overloaded
 *    machine, a sanitizer runtime stopping the world).
 * Stale failures, dirty handouts, unfair timeouts, wrong answers and
 * unclassified errors fail the soak.
 */
#ifndef CPOOL_TESTS_SOAK_H
#define CPOOL_TESTS_SOAK_H

#include <stddef.h>
#include <stdio.h>

#define SOAK_SETTLE_MS 100
#define SOAK_THREADS 8

struct soak_opts {
	unsigned seconds;	/* chaos duration */
	unsigned threads;	/* request threads; 0 = SOAK_THREADS */
	FILE *out;		/* the report; NULL = stdout */
};

/*
 * Runs the soak and prints its report. Returns 0 when every check passed,
 * else the number of failed checks (> 0), or -errno when it could not set
 * up (-ENOENT: memcached or redis-server missing; PostgreSQL or TLS
 * redis missing only turns their target off). @why receives the first
 * failure (or setup error) as one line.
 */
int soak_run(const struct soak_opts *opts, char *why, size_t why_len);

#endif /* CPOOL_TESTS_SOAK_H */
