/* SPDX-License-Identifier: MIT */
/*
 * Stats exactness: counters and gauges per endpoint and for the whole pool,
 * every close reason the pool can reach without background workers
 * (by_caller, max_uses, idle_timeout, lifetime, shutdown), stealing between
 * shards, and counters that outlive a removed endpoint.
 */
#include <criterion/criterion.h>
#include <poll.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/rseq.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "util/check.h"
#include "util/leakcheck.h"

TestSuite(stats, .timeout = 60, .fini = leak_fini);

/*
 * Lets @ms of wall time pass. Used only where elapsed time is itself what
 * is tested (idle timeout, lifetime), and only as a lower bound.
 */
static void
let_time_pass(int ms)
{
	pause_ms(ms);
}

Test(stats, count_exactly_per_endpoint_and_for_the_whole_pool)
{
	struct fault_server *fa = server_new(FS_INET);
	struct fault_server *fb = server_new(FS_INET);
	const char *a = fs_address(fa), *b = fs_address(fb);
	struct cpool_config cfg = config_one_shard();
	struct cpool *pool = pool_new(&cfg);
	unsigned long long closed[CPOOL_CLOSE_REASON_COUNT] = { 0 };
	struct cpool_conn *c, *d;
	struct cpool_stats sa, sb, all;

	pool_add(pool, a);
	pool_add(pool, b);
	sa = stats_of(pool, a);
	assert_stat(sa, acquires, 0);
	assert_stat(sa, open, 0);

	/* a: one connection used three times */
	for (int i = 0; i < 3; i++) {
		c = lease(pool, a);
		assert_echo(c, "a");
		cpool_release(c, 0);
	}
	/* b: two at once, one closed by the caller, one kept leased */
	c = lease(pool, b);
	d = lease(pool, b);
	cpool_release(c, CPOOL_RELEASE_CLOSE);

	sa = stats_of(pool, a);
	assert_stat(sa, acquires, 3);
	assert_stat(sa, reuses, 2);
	assert_stat(sa, connects, 1);
	assert_stat(sa, open, 1);
	assert_stat(sa, idle, 1);
	assert_stat(sa, leased, 0);
	assert_closed_only(&sa, closed);
	assert_balanced(&sa);

	sb = stats_of(pool, b);
	assert_stat(sb, acquires, 2);
	assert_stat(sb, reuses, 0);
	assert_stat(sb, connects, 2);
	assert_stat(sb, open, 1);
	assert_stat(sb, idle, 0);
	assert_stat(sb, leased, 1);
	closed[CPOOL_CLOSE_BY_CALLER] = 1;
	assert_closed_only(&sb, closed);
	assert_balanced(&sb);

	all = stats_of(pool, NULL);
	assert_stat(all, acquires, 5);
	assert_stat(all, reuses, 2);
	assert_stat(all, connects, 3);
	assert_stat(all, open, 2);
	assert_stat(all, idle, 1);
	assert_stat(all, leased, 1);
	assert_stat(all, waits, 0);
	assert_stat(all, timeouts, 0);
	assert_stat(all, steals, 0);
	assert_closed_only(&all, closed);
	assert_balanced(&all);

	cpool_release(d, 0);
	cpool_destroy(pool);
	fs_stop(fa);
	fs_stop(fb);
}

Test(stats, whole_pool_counters_keep_an_endpoint_that_was_removed)
{
	struct fault_server *fa = server_new(FS_INET);
	struct fault_server *fb = server_new(FS_INET);
	const char *a = fs_address(fa), *b = fs_address(fb);
	struct cpool_config cfg = config_one_shard();
	struct cpool *pool = pool_new(&cfg);
	unsigned long long closed[CPOOL_CLOSE_REASON_COUNT] = { 0 };
	struct cpool_conn *idle, *leased, *c;
	struct cpool_stats all, st = { .size = sizeof(st) };

	pool_add(pool, a);
	pool_add(pool, b);
	idle = lease(pool, a);
	leased = lease(pool, a);
	cpool_release(idle, 0);
	c = lease(pool, b);
	cpool_release(c, 0);

	assert_ret(cpool_endpoint_remove(pool, a), 0);
	assert_ret(cpool_stats_get(pool, a, &st), -ENOENT);
	/* the idle one was closed at once */
	cr_assert_eq(fs_wait_open(fa, 1, WAIT_MS), 0,
		     "server a holds %u connections want 1", fs_open(fa));
	all = stats_of(pool, NULL);
	assert_stat(all, acquires, 3);
	assert_stat(all, connects, 3);
	assert_stat(all, open, 2);
	assert_stat(all, idle, 1);
	assert_stat(all, leased, 1);
	closed[CPOOL_CLOSE_SHUTDOWN] = 1;
	assert_closed_only(&all, closed);

	/* the lease still works; its release closes it */
	assert_echo(leased, "after removal");
	cpool_release(leased, 0);
	cr_assert_eq(fs_wait_open(fa, 0, WAIT_MS), 0);
	all = stats_of(pool, NULL);
	assert_stat(all, acquires, 3);
	assert_stat(all, connects, 3);
	assert_stat(all, open, 1);
	assert_stat(all, idle, 1);
	assert_stat(all, leased, 0);
	closed[CPOOL_CLOSE_SHUTDOWN] = 2;
	assert_closed_only(&all, closed);
	assert_balanced(&all);

	/* re-added: a fresh per-endpoint view, the whole pool keeps counting */
	pool_add(pool, a);
	st = stats_of(pool, a);
	assert_stat(st, acquires, 0);
	assert_stat(st, connects, 0);
	c = lease(pool, a);
	cpool_release(c, 0);
	all = stats_of(pool, NULL);
	assert_stat(all, acquires, 4);
	assert_stat(all, connects, 4);
	assert_stat(all, open, 2);
	assert_balanced(&all);
	cpool_destroy(pool);
	fs_stop(fa);
	fs_stop(fb);
}

Test(stats, max_uses_closes_a_connection_after_its_nth_lease)
{
	struct fault_server *fs = server_new(FS_INET);
	const char *addr = fs_address(fs);
	struct cpool_config cfg = config_one_shard();
	struct cpool *pool;
	struct cpool_conn *c;
	struct cpool_stats st;

	cfg.max_uses = 3;
	pool = pool_new(&cfg);
	pool_add(pool, addr);
	for (int i = 0; i < 7; i++) {
		c = lease(pool, addr);
		cr_assert_eq(cpool_conn_reused(c), i % 3 != 0,
			     "lease %d: reused %d", i, cpool_conn_reused(c));
		assert_echo(c, "use");
		cpool_release(c, 0);
	}
	st = stats_of(pool, addr);
	assert_stat(st, acquires, 7);
	assert_stat(st, connects, 3);
	assert_stat(st, reuses, 4);
	assert_stat(st, closed[CPOOL_CLOSE_MAX_USES], 2);
	assert_stat(st, open, 1);
	assert_balanced(&st);
	cpool_destroy(pool);
	fs_stop(fs);
}

/*
 * One lease, released, then 250 ms (5x the 50 ms limit @cfg sets) before
 * the next: the checkout must close the old connection for @reason and
 * open a new one. The new lease is closed by its caller, so nothing else
 * can expire meanwhile.
 */
static void
checkout_closes_an_expired_connection(struct cpool_config cfg,
				      enum cpool_close_reason reason)
{
	struct fault_server *fs = server_new(FS_INET);
	const char *addr = fs_address(fs);
	unsigned long long closed[CPOOL_CLOSE_REASON_COUNT] = { 0 };
	struct cpool *pool;
	struct cpool_conn *c;
	struct cpool_stats st;

	pool = pool_new(&cfg);
	pool_add(pool, addr);
	c = lease(pool, addr);
	cpool_release(c, 0);
	let_time_pass(250);
	c = lease(pool, addr);
	cr_assert_not(cpool_conn_reused(c),
		      "a connection 5x past its %s was reused",
		      cpool_close_reason_name(reason));
	assert_echo(c, "fresh");
	cpool_release(c, CPOOL_RELEASE_CLOSE);
	st = stats_of(pool, addr);
	closed[reason] = 1;
	closed[CPOOL_CLOSE_BY_CALLER] = 1;
	assert_closed_only(&st, closed);
	assert_stat(st, connects, 2);
	assert_stat(st, open, 0);
	assert_balanced(&st);
	cpool_destroy(pool);
	fs_stop(fs);
}

Test(stats, an_idle_timeout_closes_the_connection_at_checkout)
{
	struct cpool_config cfg = config_one_shard();

	cfg.idle_timeout_ms = 50;
	checkout_closes_an_expired_connection(cfg, CPOOL_CLOSE_IDLE_TIMEOUT);
}

Test(stats, a_lifetime_closes_an_idle_connection_at_checkout)
{
	struct cpool_config cfg = config_one_shard();

	cfg.max_lifetime_ms = 50;
	checkout_closes_an_expired_connection(cfg, CPOOL_CLOSE_LIFETIME);
}

Test(stats, a_lifetime_that_ends_during_a_lease_closes_it_at_release)
{
	struct fault_server *fs = server_new(FS_INET);
	const char *addr = fs_address(fs);
	struct cpool_config cfg = config_one_shard();
	struct cpool *pool;
	struct cpool_conn *c;
	struct cpool_stats st;

	cfg.max_lifetime_ms = 50;
	pool = pool_new(&cfg);
	pool_add(pool, addr);
	c = lease(pool, addr);
	let_time_pass(250);
	assert_echo(c, "still usable while leased");
	cpool_release(c, 0);
	st = stats_of(pool, addr);
	assert_stat(st, closed[CPOOL_CLOSE_LIFETIME], 1);
	assert_stat(st, open, 0);
	assert_stat(st, idle, 0);
	assert_balanced(&st);
	cpool_destroy(pool);
	fs_stop(fs);
}

/*
 * The shard is the CPU's: a lease released on CPU 0 sits in shard 0, and a
 * thread on CPU 1 steals it rather than connect. Each side is a thread whose
 * first calls are these, so the test holds with or without rseq (without it
 * a thread reuses its CPU number for 64 calls; see the next test).
 */
Test(stats, an_idle_connection_of_another_shard_is_stolen_before_connecting)
{
	struct fault_server *fs = server_new(FS_INET);
	const char *addr = fs_address(fs);
	struct cpool_config cfg;
	struct cpool *pool;
	struct cpool_conn *c;
	struct cpool_stats st;
	struct cpu_lease t;
	int fd;

	if (!pin_to(0) || !pin_to(1) || !pin_to(0))
		cr_skip_test("needs CPUs 0 and 1");
	if (getenv("CPOOL_TEST_NO_RSEQ"))
		cr_assert_eq(__rseq_size, 0, "rseq is registered: "
			     "GLIBC_TUNABLES did not switch it off");
	cpool_config_init(&cfg);
	cfg.workers = 2;
	pool = pool_new(&cfg);
	pool_add(pool, addr);

	c = lease(pool, addr);
	fd = cpool_conn_fd(c);
	cpool_release(c, 0); /* idle in shard 0 */
	t = lease_on_cpu(pool, addr, 1);
	cr_assert(t.pinned, "cannot pin a thread to CPU 1");
	cr_assert_eq(t.err, 0, "acquire on CPU 1: %d (%s)", t.err,
		     strerror(-t.err));
	cr_assert_eq(t.fd, fd, "shard 1 opened fd %d instead of stealing %d",
		     t.fd, fd);
	cr_assert(t.reused, "a stolen connection is reused");
	cr_assert_eq(t.echo, 0, "echo over the stolen connection: %d (%s)",
		     t.echo, strerror(-t.echo));
	st = stats_of(pool, addr);
	assert_stat(st, steals, 1);
	assert_stat(st, connects, 1);
	assert_stat(st, acquires, 2);
	assert_stat(st, open, 1);
	cpool_destroy(pool);
	fs_stop(fs);
}

/*
 * Where glibc has no rseq area (old kernel, glibc.pthread.rseq=0, valgrind)
 * the shard comes from sched_getcpu() reused for 64 calls. The test above,
 * run again in a fresh process with rseq switched off, proves that path.
 */
Test(stats, shards_follow_the_cpu_without_rseq_too)
{
	extern char **environ;
	char *argv[] = {
		"cpool_tests",
		"--filter=stats/"
		"an_idle_connection_of_another_shard_is_stolen_before_connecting",
		"--jobs=1", NULL
	};
	char *envp[256], report[4096];
	char path[] = "/tmp/cpool-norseq.XXXXXX";
	posix_spawn_file_actions_t fa;
	size_t n = 0;
	ssize_t len;
	pid_t pid;
	int status, out;

	if (!pin_to(0) || !pin_to(1))
		cr_skip_test("needs CPUs 0 and 1");
	/* Not BXFI_MAP: the child is a runner, not this test's sandbox. */
	for (char **e = environ; *e && n < 253; e++)
		if (strncmp(*e, "GLIBC_TUNABLES=", 15) != 0 &&
		    strncmp(*e, "BXFI_", 5) != 0)
			envp[n++] = *e;
	envp[n++] = "GLIBC_TUNABLES=glibc.pthread.rseq=0";
	envp[n++] = "CPOOL_TEST_NO_RSEQ=1";
	envp[n] = NULL;
	/* The child's report goes to a file, shown only if it failed. */
	cr_assert_geq(out = mkstemp(path), 0);
	cr_assert_eq(posix_spawn_file_actions_init(&fa), 0);
	posix_spawn_file_actions_adddup2(&fa, out, 1);
	posix_spawn_file_actions_adddup2(&fa, out, 2);
	cr_assert_eq(posix_spawn(&pid, "/proc/self/exe", &fa, NULL, argv,
				 envp),
		     0);
	posix_spawn_file_actions_destroy(&fa);
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	len = pread(out, report, sizeof(report) - 1, 0);
	report[len > 0 ? len : 0] = '\0';
	close(out);
	unlink(path);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		  "the steal test without rseq failed (status 0x%x):\n%s",
		  status, report);
}

Test(stats, gauges_follow_every_lease_and_release)
{
	struct fault_server *fs = server_new(FS_INET);
	const char *addr = fs_address(fs);
	struct cpool_config cfg = config_one_shard();
	struct cpool *pool = pool_new(&cfg);
	struct cpool_conn *c[5];
	struct cpool_stats st;

	pool_add(pool, addr);
	for (int i = 0; i < 5; i++) {
		c[i] = lease(pool, addr);
		st = stats_of(pool, addr);
		assert_stat(st, open, i + 1);
		assert_stat(st, leased, i + 1);
		assert_stat(st, idle, 0);
	}
	for (int i = 0; i < 5; i++) {
		cpool_release(c[i], i == 4 ? CPOOL_RELEASE_CLOSE : 0);
		st = stats_of(pool, addr);
		assert_stat(st, leased, 4 - i);
		assert_stat(st, idle, i == 4 ? 4 : i + 1);
		assert_stat(st, open, i == 4 ? 4 : 5);
		assert_balanced(&st);
	}
	cpool_destroy(pool);
	fs_stop(fs);
}

/*
 * A snapshot is consistent across its gauge and its counters: once it shows
 * no connection open, every close is counted in it, and once it counts a
 * close, open is without it. Regression: open was its own counter, read
 * after the close counters; a TSan run saw "open 0" with one of four closes
 * not yet counted. Both shards' workers evict 32 connections per round
 * while this thread reads without pausing.
 */
#define SNAP_CONNS 32
#define SNAP_ROUNDS 20

Test(stats, a_snapshot_with_nothing_open_counts_every_close)
{
	struct fault_server *fs = server_new(FS_INET);
	const char *addr = fs_address(fs);
	struct cpool_conn *c[SNAP_CONNS];
	struct cpool_config cfg;
	struct cpool_stats st;
	struct cpool *pool;
	unsigned long long closes = 0;
	uint64_t reads = 0;
	int64_t deadline;

	cpool_config_init(&cfg);
	cfg.workers = 2;
	pool = pool_new(&cfg);
	pool_add(pool, addr);
	for (int round = 0; round < SNAP_ROUNDS; round++) {
		for (int i = 0; i < SNAP_CONNS; i++)
			c[i] = lease(pool, addr);
		for (int i = 0; i < SNAP_CONNS; i++)
			cpool_release(c[i], 0);
		cr_assert_eq(fs_wait_open(fs, SNAP_CONNS, WAIT_MS), 0);
		cr_assert_eq(fs_close_all(fs), SNAP_CONNS);
		closes += SNAP_CONNS;
		deadline = now_ms() + WAIT_MS;
		do {
			st = stats_of(pool, addr);
			reads++;
			/* every close counted is a peer close of this round */
			cr_assert_eq(st.closed[CPOOL_CLOSE_PEER_CLOSED] +
					     st.closed[CPOOL_CLOSE_PEER_RESET] +
					     st.open,
				     closes,
				     "round %d: %u open + %llu closed, want "
				     "%llu: a snapshot mixed two moments",
				     round, st.open,
				     (unsigned long long)
				     (st.closed[CPOOL_CLOSE_PEER_CLOSED] +
				      st.closed[CPOOL_CLOSE_PEER_RESET]),
				     closes);
		} while (st.open && now_ms() < deadline);
		assert_stat(st, open, 0);
		assert_stat(st, idle, 0);
	}
	cr_log_info("snapshot: %llu stats reads over %d rounds",
		    (unsigned long long)reads, SNAP_ROUNDS);
	assert_stat(st, connects, SNAP_CONNS * SNAP_ROUNDS);
	cpool_destroy(pool);
	fs_stop(fs);
}
