/* SPDX-License-Identifier: MIT */
/*
 * Every idle connection is watched, however many sit in one idle list:
 * a FIN on any of them, the oldest included, evicts it in the background
 * (closed[peer_closed], no acquire) and leaves no socket in CLOSE_WAIT.
 *
 * One shard (cfg.workers = 1), so all connections share one list, and
 * they are released one by one in a known order (each one's client port
 * recorded). The test then lets them sit idle for WATCH_IDLE_MS: elapsed
 * time is what lets a worker start watching a connection it has seen
 * idle, and no public counter says "watched". The fault server then FINs
 * chosen connections by client port, and the test waits for the stats to
 * show the evictions, with a deadline.
 */
#include <criterion/criterion.h>
#include <stdio.h>

#include "util/check.h"
#include "util/proc.h"
#include "util/waitfor.h"

/* TestSuite(trust) is declared once, in test_trust_races.c (timeout 240 s). */

/* Idle long enough to be watched: dozens of the workers' 3 ms ticks. */
#define WATCH_IDLE_MS 100
/* Background eviction takes milliseconds; this is for a loaded machine. */
#define WATCH_EVICT_MS 3000

/*
 * Opens @n connections through a one-shard pool and releases them in
 * order, so that @port[n - 1] is the most recently released. Returns
 * the pool.
 */
static struct cpool *
idle_in_order(struct fault_server *fs, int n, int *port)
{
	const char *addr = fs_address(fs);
	struct cpool_config cfg = config_one_shard();
	struct cpool_conn **c = calloc((size_t)n, sizeof(*c));
	struct cpool_stats st;
	struct cpool *pool;
	long lim = nofile_raise();

	cr_assert_not_null(c);
	cr_assert_geq(lim, 2 * n + 200,
		      "RLIMIT_NOFILE %ld: too few fds for %d connections", lim,
		      n);
	cfg.max_conns_per_endpoint = (unsigned)n;
	pool = pool_new(&cfg);
	pool_add(pool, addr);
	for (int i = 0; i < n; i++) {
		/* Batches the server accepted: a full accept queue drops SYNs. */
		if (i % 64 == 0)
			cr_assert_eq(fs_wait_accepted(fs, (unsigned)i, WAIT_MS),
				     0, "the server accepted %u of %d",
				     fs_accepted(fs), i);
		c[i] = lease(pool, addr);
		port[i] = local_port(cpool_conn_fd(c[i]));
		cr_assert_gt(port[i], 0);
	}
	for (int i = 0; i < n; i++)
		cpool_release(c[i], 0);
	free(c);
	cr_assert_eq(fs_wait_open(fs, (unsigned)n, WAIT_MS), 0,
		     "the server holds %u, want %d", fs_open(fs), n);
	st = stats_of(pool, addr);
	assert_stat(st, idle, n);
	assert_stat(st, acquires, n);
	return pool;
}

/* FINs the server side of the connection whose client port is @port. */
static void
fin_port(struct fault_server *fs, int port)
{
	int hit = fs_act(fs, FS_ACT_CLOSE, port, NULL, 0);

	cr_assert_eq(hit, 1, "FIN for client port %d hit %d connections", port,
		     hit);
}

/*
 * Waits for @want background evictions (peer_closed) and checks that
 * nothing else changed: no acquire, @n - @want idle, and none of the
 * @nfin FIN'd client ports @fin[] left in CLOSE_WAIT.
 */
static void
check_evicted(struct cpool *pool, const char *addr, int n, int want,
	      const int *fin, int nfin, int64_t t_fin)
{
	struct cpool_stats st;
	bool ok;
	int close_wait;

	ok = stats_wait(pool, addr, st,
			st.closed[CPOOL_CLOSE_PEER_CLOSED] >= (uint64_t)want,
			WATCH_EVICT_MS);
	/* A close is counted just before its fd goes: let those finish. */
	for (int64_t end = now_ms() + WAIT_MS;;) {
		close_wait = tcp_count_local_state(fin, (size_t)nfin,
						   TCP_STATE_CLOSE_WAIT);
		if (!ok || !close_wait || now_ms() > end)
			break;
		pause_ms(1);
	}
	cr_assert(ok,
		  "closed[peer_closed] = %llu %lld ms after FIN on %d of %d "
		  "idle connections, want %d; idle %u; %d of the FIN'd client "
		  "sockets are in CLOSE_WAIT",
		  (unsigned long long)st.closed[CPOOL_CLOSE_PEER_CLOSED],
		  (long long)(now_ms() - t_fin), nfin, n, want, st.idle,
		  close_wait);
	assert_stat(st, closed[CPOOL_CLOSE_PEER_CLOSED], want);
	assert_stat(st, idle, n - want);
	assert_stat(st, open, n - want);
	assert_stat(st, acquires, n); /* the evictions were the workers' */
	cr_assert_eq(close_wait, 0,
		     "%d of the %d FIN'd client sockets are in CLOSE_WAIT",
		     close_wait, nfin);
}

#define MANY 500
#define OLDEST 100

Test(trust, every_idle_connection_is_watched_not_only_the_64_most_recent)
{
	struct fault_server *fs = server_new(FS_INET);
	static int port[MANY], fin[OLDEST + 1];
	struct cpool *pool = idle_in_order(fs, MANY, port);
	int64_t t_rel = now_ms(), t_fin;

	/* Elapsed time is what lets the worker watch them (see the top). */
	while (now_ms() - t_rel < WATCH_IDLE_MS)
		pause_ms(1);
	/* The 100 released first, and the 250th released. */
	for (int i = 0; i < OLDEST; i++)
		fin[i] = port[i];
	fin[OLDEST] = port[249];
	t_fin = now_ms();
	for (int i = 0; i < OLDEST + 1; i++)
		fin_port(fs, fin[i]);
	check_evicted(pool, fs_address(fs), MANY, OLDEST + 1, fin, OLDEST + 1,
		      t_fin);
	cpool_destroy(pool);
	fs_stop(fs);
}

Test(trust, the_oldest_of_65_idle_connections_is_watched)
{
	struct fault_server *fs = server_new(FS_INET);
	int port[65];
	struct cpool *pool = idle_in_order(fs, 65, port);
	int64_t t_rel = now_ms(), t_fin;

	while (now_ms() - t_rel < WATCH_IDLE_MS)
		pause_ms(1);
	t_fin = now_ms();
	fin_port(fs, port[0]);
	check_evicted(pool, fs_address(fs), 65, 1, port, 1, t_fin);
	cpool_destroy(pool);
	fs_stop(fs);
}
