/* SPDX-License-Identifier: MIT */
/*
 * The worker threads keep the pool healthy while nobody calls it: idle
 * connections whose peer sent FIN, RST or stray bytes are evicted in the
 * background with the probe's reason (and leave nothing in CLOSE_WAIT),
 * a connection leased at the moment of a fault stays its caller's, idle
 * timeout and lifetime (with jitter) are enforced by the 50 ms sweep,
 * max_uses at release, and prewarm keeps min_idle_per_endpoint open,
 * replacing what dies, never above the cap.
 *
 * No acquire runs while a test waits for the workers: each waits for the
 * stats to show the expected change (tests/util/waitfor.h).
 */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/check.h"
#include "util/waitfor.h"
#include "util/leakcheck.h"

TestSuite(worker, .timeout = 60, .fini = leak_fini);

/* TCP state 08 in /proc/net/tcp{,6} (include/net/tcp_states.h). */
#define TCP_CLOSE_WAIT 0x08

/*
 * Sockets of this network namespace, IPv4 and IPv6, whose remote port is
 * @rem_port and whose state is @state, read from /proc/net/tcp and
 * /proc/net/tcp6.
 */
static int
count_tcp_state(int rem_port, unsigned state)
{
	static const char *const files[] = { "/proc/net/tcp",
					     "/proc/net/tcp6" };
	char line[512];
	int n = 0;

	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		FILE *f = fopen(files[i], "re");

		if (!f)
			continue; /* no IPv6 here */
		/* header: "  sl  local_address rem_address   st ..." */
		if (!fgets(line, sizeof(line), f)) {
			fclose(f);
			continue;
		}
		while (fgets(line, sizeof(line), f)) {
			unsigned lport, rport, st;

			if (sscanf(line,
				   " %*d: %*[0-9A-Fa-f]:%x %*[0-9A-Fa-f]:%x %x",
				   &lport, &rport, &st) != 3)
				continue;
			if ((int)rport == rem_port && st == state)
				n++;
		}
		fclose(f);
	}
	return n;
}

Test(worker, the_close_wait_scanner_sees_a_socket_in_close_wait)
{
	int sv[2], port;

	cr_assert_eq(tcp_pair(AF_INET, sv), 0);
	port = local_port(sv[1]);
	cr_assert_gt(port, 0);
	cr_assert_eq(count_tcp_state(port, TCP_CLOSE_WAIT), 0);
	close(sv[1]); /* FIN: the client side goes to CLOSE_WAIT */
	cr_assert(wait_fd(sv[0], POLLRDHUP, WAIT_MS) & POLLRDHUP);
	cr_assert_eq(count_tcp_state(port, TCP_CLOSE_WAIT), 1,
		     "CLOSE_WAIT entries for remote port %d: got %d want 1",
		     port, count_tcp_state(port, TCP_CLOSE_WAIT));
	close(sv[0]);
	cr_assert_eq(count_tcp_state(port, TCP_CLOSE_WAIT), 0);
}

/* ---- background eviction -------------------------------------------- */

static const char junk[] = "HTTP/1.1 408 Request Timeout\r\n\r\n";

/*
 * Three idle connections, a fault on the server side of all of them, and
 * no acquire: the workers must evict all three with @reason within a
 * generous bound, leaving nothing open and nothing in CLOSE_WAIT.
 */
static void
check_background_eviction(enum fs_family family, enum fs_action act,
			  enum cpool_close_reason reason, unsigned workers)
{
	struct fault_server *fs = server_new(family);
	const char *addr = fs_address(fs);
	struct cpool_config cfg = config_one_shard();
	unsigned long long closed[CPOOL_CLOSE_REASON_COUNT] = { 0 };
	struct cpool_conn *c[3];
	struct cpool_stats st;
	struct cpool *pool;
	int64_t t0;
	int n;

	cfg.workers = workers;
	pool = pool_new(&cfg);
	pool_add(pool, addr);
	for (int i = 0; i < 3; i++)
		c[i] = lease(pool, addr);
	for (int i = 0; i < 3; i++) {
		assert_echo(c[i], "before the fault");
		cpool_release(c[i], 0);
	}
	cr_assert_eq(fs_wait_open(fs, 3, WAIT_MS), 0);
	st = stats_of(pool, addr);
	assert_stat(st, idle, 3);

	n = fs_act(fs, act, 0, junk, sizeof(junk) - 1);
	cr_assert_eq(n, 3, "fault hit %d server connections, want 3", n);
	t0 = now_ms();
	cr_assert(stats_wait(pool, addr, st, st.closed[reason] >= 3,
			     WORKER_WAIT_MS),
		  "closed[%s] = %llu %lld ms after the fault, want 3",
		  cpool_close_reason_name(reason),
		  (unsigned long long)st.closed[reason],
		  (long long)(now_ms() - t0));

	/* Exactly the three, with the probe's reason, and nothing else. */
	closed[reason] = 3;
	assert_closed_only(&st, closed);
	assert_stat(st, open, 0);
	assert_stat(st, idle, 0);
	assert_stat(st, leased, 0);
	assert_stat(st, acquires, 3);
	assert_stat(st, connects, 3);
	assert_balanced(&st);
	if (family != FS_UNIX) {
		n = count_tcp_state(fs_port(fs), TCP_CLOSE_WAIT);
		cr_assert_eq(n, 0,
			     "sockets in CLOSE_WAIT towards port %d after "
			     "eviction: got %d want 0",
			     fs_port(fs), n);
	}
	cpool_destroy(pool);
	fs_stop(fs);
}

Test(worker, evicts_idle_connections_after_a_peer_fin_without_any_acquire)
{
	check_background_eviction(FS_INET, FS_ACT_CLOSE,
				  CPOOL_CLOSE_PEER_CLOSED, 1);
}

Test(worker, evicts_idle_connections_after_a_peer_rst_without_any_acquire)
{
	check_background_eviction(FS_INET, FS_ACT_RESET, CPOOL_CLOSE_PEER_RESET,
				  1);
}

Test(worker, evicts_idle_connections_with_stray_bytes_without_any_acquire)
{
	check_background_eviction(FS_INET, FS_ACT_SEND,
				  CPOOL_CLOSE_UNEXPECTED_DATA, 1);
}

Test(worker, evicts_idle_connections_with_bytes_then_fin_as_unexpected_data)
{
	check_background_eviction(FS_INET, FS_ACT_SEND_CLOSE,
				  CPOOL_CLOSE_UNEXPECTED_DATA, 1);
}

Test(worker, evicts_idle_connections_with_bytes_then_rst_as_unexpected_data)
{
	check_background_eviction(FS_INET, FS_ACT_SEND_RESET,
				  CPOOL_CLOSE_UNEXPECTED_DATA, 1);
}

Test(worker, evicts_idle_connections_of_every_shard_after_a_peer_fin)
{
	/* Two workers: the connections sit in whichever shard released them. */
	check_background_eviction(FS_INET, FS_ACT_CLOSE,
				  CPOOL_CLOSE_PEER_CLOSED, 2);
}

Test(worker, evicts_idle_connections_over_ipv6_after_a_peer_fin_or_rst)
{
	if (!ipv6_loopback_works())
		cr_skip_test("no ::1 on this host");
	check_background_eviction(FS_INET6, FS_ACT_CLOSE,
				  CPOOL_CLOSE_PEER_CLOSED, 1);
	check_background_eviction(FS_INET6, FS_ACT_RESET,
				  CPOOL_CLOSE_PEER_RESET, 1);
}

Test(worker, evicts_idle_unix_socket_connections_after_a_close_or_stray_bytes)
{
	check_background_eviction(FS_UNIX, FS_ACT_CLOSE,
				  CPOOL_CLOSE_PEER_CLOSED, 1);
	check_background_eviction(FS_UNIX, FS_ACT_SEND,
				  CPOOL_CLOSE_UNEXPECTED_DATA, 1);
}

/* ---- a lease is never closed under its caller ----------------------- */

/* Server-side FIN on the connection whose client port is @port. */
static void
fin_on(struct fault_server *fs, int port)
{
	int n = fs_act(fs, FS_ACT_CLOSE, port, NULL, 0);

	cr_assert_eq(n, 1, "FIN for client port %d hit %d connections", port,
		     n);
}

/*
 * Leases a connection that the worker has armed (watched by its epoll):
 * releases @a then @b, so that @a sits behind @b in the one shard's list.
 * A scan arms from the most recent end, so once @b is evicted for its
 * FIN (which needs @b armed), @a was armed too, in the same scan or an
 * earlier one. The next lease is then @a again. Counts the eviction in
 * *@fins.
 */
static struct cpool_conn *
lease_armed(struct cpool *pool, struct fault_server *fs, unsigned *fins)
{
	const char *addr = fs_address(fs);
	struct cpool_conn *a = lease(pool, addr), *b = lease(pool, addr), *c;
	int fd = cpool_conn_fd(a), bport = local_port(cpool_conn_fd(b));
	struct cpool_stats st;

	assert_echo(a, "a");
	assert_echo(b, "b");
	cpool_release(a, 0);
	cpool_release(b, 0);
	fin_on(fs, bport);
	++*fins;
	assert_stats_wait(pool, addr, st,
			  st.closed[CPOOL_CLOSE_PEER_CLOSED] == *fins,
			  WORKER_WAIT_MS);
	c = lease(pool, addr);
	cr_assert(cpool_conn_reused(c), "the armed connection was not reused");
	cr_assert_eq(cpool_conn_fd(c), fd, "leased fd %d, want the armed %d",
		     cpool_conn_fd(c), fd);
	return c;
}

/*
 * Lets the worker run for at least @ms, and proves it ran: rounds of a
 * fresh idle connection killed by FIN, each waited for until the worker
 * evicted it, at least two rounds and until @ms have passed.
 */
static unsigned
prove_worker_ran(struct cpool *pool, struct fault_server *fs, unsigned *fins,
		 int ms)
{
	const char *addr = fs_address(fs);
	int64_t t0 = now_ms();
	struct cpool_stats st;
	unsigned rounds = 0;

	while (rounds < 2 || now_ms() - t0 < ms) {
		struct cpool_conn *c = lease(pool, addr);
		int port = local_port(cpool_conn_fd(c));

		cr_assert_not(cpool_conn_reused(c));
		assert_echo(c, "round");
		cpool_release(c, 0);
		fin_on(fs, port);
		++*fins;
		assert_stats_wait(pool, addr, st,
				  st.closed[CPOOL_CLOSE_PEER_CLOSED] == *fins,
				  WORKER_WAIT_MS);
		rounds++;
	}
	return rounds;
}

Test(worker, never_closes_a_connection_leased_when_its_peer_closes)
{
	struct fault_server *fs = server_new(FS_INET);
	const char *addr = fs_address(fs);
	struct cpool_config cfg = config_one_shard();
	struct cpool *pool = pool_new(&cfg);
	unsigned long long closed[CPOOL_CLOSE_REASON_COUNT] = { 0 };
	struct cpool_conn *c;
	struct cpool_stats st;
	struct stat before, after;
	unsigned fins = 0;
	int fd, port, rev;

	pool_add(pool, addr);
	c = lease_armed(pool, fs, &fins);
	fd = cpool_conn_fd(c);
	port = local_port(fd);
	cr_assert_eq(fstat(fd, &before), 0);

	/*
	 * Its epoll registration is still armed: the FIN wakes the worker,
	 * which must leave a leased connection alone. Once the client saw
	 * the FIN, the event is queued ahead of every later connection's.
	 */
	fin_on(fs, port);
	rev = wait_fd(fd, POLLRDHUP, WAIT_MS);
	cr_assert_not(rev & POLLNVAL, "the leased fd %d was closed under its "
		      "caller", fd);
	cr_assert(rev & POLLRDHUP, "the lease never saw the FIN: 0x%x", rev);
	prove_worker_ran(pool, fs, &fins, 100);

	cr_assert_neq(fcntl(fd, F_GETFD), -1, "the leased fd %d was closed",
		      fd);
	cr_assert_eq(fstat(fd, &after), 0);
	cr_assert(before.st_dev == after.st_dev &&
		  before.st_ino == after.st_ino,
		  "fd %d is another socket now (inode %lu, was %lu)", fd,
		  (unsigned long)after.st_ino, (unsigned long)before.st_ino);
	cr_assert_eq(local_port(fd), port);
	cr_assert_eq(cpool_conn_fd(c), fd);
	st = stats_of(pool, addr);
	assert_stat(st, open, 1);
	assert_stat(st, leased, 1);
	assert_stat(st, idle, 0);
	closed[CPOOL_CLOSE_PEER_CLOSED] = fins;
	assert_closed_only(&st, closed);

	/*
	 * The caller saw no error, so release pools it; then the worker
	 * finds the FIN and counts it like any idle connection's.
	 */
	cpool_release(c, 0);
	closed[CPOOL_CLOSE_PEER_CLOSED] = fins + 1;
	assert_stats_wait(pool, addr, st,
			  st.closed[CPOOL_CLOSE_PEER_CLOSED] == fins + 1,
			  WORKER_WAIT_MS);
	assert_closed_only(&st, closed);
	assert_stat(st, open, 0);
	assert_stat(st, idle, 0);
	assert_balanced(&st);
	cpool_destroy(pool);
	fs_stop(fs);
}

Test(worker, a_lease_whose_peer_closed_is_closed_by_its_caller_after_the_error)
{
	struct fault_server *fs = server_new(FS_INET);
	const char *addr = fs_address(fs);
	struct cpool_config cfg = config_one_shard();
	struct cpool *pool = pool_new(&cfg);
	unsigned long long closed[CPOOL_CLOSE_REASON_COUNT] = { 0 };
	struct cpool_conn *c;
	struct cpool_stats st;
	unsigned fins = 0;
	char b;
	int fd;

	pool_add(pool, addr);
	c = lease_armed(pool, fs, &fins);
	fd = cpool_conn_fd(c);
	fin_on(fs, local_port(fd));
	cr_assert(wait_fd(fd, POLLRDHUP, WAIT_MS) & POLLRDHUP);
	prove_worker_ran(pool, fs, &fins, 20);

	/* The caller reads the FIN: the connection is broken from now on. */
	assert_ret(cpool_recv(c, &b, 1), 0);
	cpool_release(c, 0);
	st = stats_of(pool, addr);
	closed[CPOOL_CLOSE_PEER_CLOSED] = fins;
	closed[CPOOL_CLOSE_BY_CALLER] = 1;
	assert_closed_only(&st, closed);
	assert_stat(st, open, 0);
	assert_balanced(&st);
	cpool_destroy(pool);
	fs_stop(fs);
}

/* ---- idle timeout ----------------------------------------------------- */

/* CLOCK_MONOTONIC_COARSE lags by up to a tick (4 ms here; 10 ms at HZ=100). */
#define COARSE_SLACK_MS 10

Test(worker, idle_timeout_closes_every_idle_connection_in_the_background)
{
	struct fault_server *fs = server_new(FS_INET);
	const char *addr = fs_address(fs);
	struct cpool_config cfg = config_one_shard();
	unsigned long long closed[CPOOL_CLOSE_REASON_COUNT] = { 0 };
	struct cpool_conn *c[4];
	struct cpool_stats st;
	struct cpool *pool;
	int64_t t_rel, waited;

	cfg.idle_timeout_ms = 100;
	pool = pool_new(&cfg);
	pool_add(pool, addr);
	for (int i = 0; i < 4; i++)
		c[i] = lease(pool, addr);
	t_rel = now_ms();
	for (int i = 0; i < 4; i++)
		cpool_release(c[i], 0);

	assert_stats_wait(pool, addr, st,
			  st.closed[CPOOL_CLOSE_IDLE_TIMEOUT] == 4, 5000);
	waited = now_ms() - t_rel;
	cr_assert_geq(waited, 100 - COARSE_SLACK_MS,
		      "closed %lld ms after release, before the 100 ms timeout",
		      (long long)waited);
	closed[CPOOL_CLOSE_IDLE_TIMEOUT] = 4;
	assert_closed_only(&st, closed);
	assert_stat(st, open, 0);
	assert_stat(st, idle, 0);
	assert_stat(st, acquires, 4);
	cr_assert_eq(fs_wait_open(fs, 0, WAIT_MS), 0,
		     "the server still holds %u connections", fs_open(fs));
	cpool_destroy(pool);
	fs_stop(fs);
}

Test(worker, idle_timeout_closes_idle_connections_down_to_min_idle)
{
	struct fault_server *fx = server_new(FS_INET);
	struct fault_server *fy = server_new(FS_INET);
	const char *x = fs_address(fx), *y = fs_address(fy);
	struct cpool_config cfg = config_one_shard();
	struct cpool_conn *c[4];
	struct cpool_stats st, sy;
	struct cpool *pool;
	int64_t t_rel, waited;
	uint32_t least = UINT32_MAX;

	cfg.idle_timeout_ms = 100;
	cfg.min_idle_per_endpoint = 1;
	pool = pool_new(&cfg);
	pool_add(pool, x);
	pool_add(pool, y);
	assert_stats_wait(pool, x, st, st.idle == 1 && st.prewarms == 1,
			  WORKER_WAIT_MS);
	assert_stats_wait(pool, y, sy, sy.idle == 1 && sy.prewarms == 1,
			  WORKER_WAIT_MS);

	/* Four leases out: the worker refills the empty idle list. */
	for (int i = 0; i < 4; i++)
		c[i] = lease(pool, x);
	assert_stats_wait(pool, x, st, st.idle == 1, WORKER_WAIT_MS);
	t_rel = now_ms();
	for (int i = 0; i < 4; i++)
		cpool_release(c[i], 0);

	/* All five are idle now; four go, the most recent one stays. */
	cr_assert(stats_wait(pool, x, st,
			     (least = st.open < least ? st.open : least,
			      st.closed[CPOOL_CLOSE_IDLE_TIMEOUT] >=
				      st.connects - 1),
			     5000),
		  "closed[idle_timeout] %llu, connects %llu: not down to one",
		  (unsigned long long)st.closed[CPOOL_CLOSE_IDLE_TIMEOUT],
		  (unsigned long long)st.connects);
	waited = now_ms() - t_rel;
	cr_assert_geq(waited, 100 - COARSE_SLACK_MS,
		      "closed %lld ms after release, before the 100 ms timeout",
		      (long long)waited);
	cr_assert_geq(least, 1, "x went down to %u open, below min_idle 1",
		      least);
	assert_stat(st, open, 1);
	assert_stat(st, idle, 1);
	assert_stat(st, acquires, 4);
	/* every connection was a prewarm or a new lease */
	assert_stat(st, connects, st.prewarms + (st.acquires - st.reuses));
	assert_stat(st, closed[CPOOL_CLOSE_IDLE_TIMEOUT], st.connects - 1);
	assert_balanced(&st);

	/*
	 * x's survivor is past its idle timeout, and later sweeps must keep
	 * it. y's own idle timeout, which the same worker enforces in the
	 * same sweep as x's list, proves more sweeps ran.
	 */
	struct cpool_stats sx = st;

	c[0] = lease(pool, y);
	c[1] = lease(pool, y);
	cpool_release(c[0], 0);
	cpool_release(c[1], 0);
	assert_stats_wait(pool, y, sy,
			  sy.closed[CPOOL_CLOSE_IDLE_TIMEOUT] >= 1 &&
				  sy.open == 1,
			  5000);
	st = stats_of(pool, x);
	assert_same_stats(&sx, &st, "x while y timed out");
	cpool_destroy(pool);
	fs_stop(fx);
	fs_stop(fy);
}

/* ---- lifetime --------------------------------------------------------- */

#define BURST 40

/*
 * A burst of connections opened together would expire together without
 * the 0-2.5 % jitter. With max_lifetime_ms = 20000 the jitter spreads the
 * expiries over up to 500 ms, ten sweeps of 50 ms: the 40 closes must not
 * come before 97.5 % of the lifetime (provable: no connection expires
 * earlier) and must span at least two sweep periods (statistical: the range
 * of 40 uniform draws over 500 ms is below 300 ms with probability < 1e-7).
 * The first close shows at most one sweep (50 ms) after its expiry, the last
 * never before its own, so the observed span is at least 250 ms less however
 * late the worker or this thread ran: 100 ms leaves 150 ms for a loaded
 * machine. (A 10 s lifetime left 5 ms, and a TSan run on a busy CI machine
 * saw 87 ms.)
 */
Test(worker, lifetimes_of_a_burst_end_spread_over_several_sweeps)
{
	struct fault_server *fs = server_new(FS_INET);
	const char *addr = fs_address(fs);
	struct cpool_config cfg = config_one_shard();
	unsigned long long closed[CPOOL_CLOSE_REASON_COUNT] = { 0 };
	struct cpool_conn *c[BURST];
	int64_t t_start, t_first = -1, t_last = -1, deadline;
	unsigned batches = 0;
	uint64_t seen = 0;
	struct cpool_stats st;
	struct cpool *pool;

	cfg.max_lifetime_ms = 20000;
	cfg.idle_timeout_ms = 0;
	pool = pool_new(&cfg);
	pool_add(pool, addr);
	t_start = now_ms();
	for (int i = 0; i < BURST; i++)
		c[i] = lease(pool, addr);
	for (int i = 0; i < BURST; i++)
		cpool_release(c[i], 0);
	st = stats_of(pool, addr);
	assert_stat(st, idle, BURST);
	assert_stat(st, closed[CPOOL_CLOSE_LIFETIME], 0);

	/* Every change of the counter, at 1 ms resolution. */
	deadline = t_start + 20000 + 5000;
	while (seen < BURST && now_ms() < deadline) {
		st = stats_of(pool, addr);
		if (st.closed[CPOOL_CLOSE_LIFETIME] != seen) {
			t_last = now_ms();
			if (t_first < 0)
				t_first = t_last;
			seen = st.closed[CPOOL_CLOSE_LIFETIME];
			batches++;
		}
		pause_1ms();
	}
	cr_assert_eq(seen, BURST,
		     "closed[lifetime] = %llu after %lld ms, want %d",
		     (unsigned long long)seen, (long long)(now_ms() - t_start),
		     BURST);
	cr_log_info("lifetime: first close %lld ms, last %lld ms after the "
		    "burst, %u batches",
		    (long long)(t_first - t_start),
		    (long long)(t_last - t_start), batches);
	cr_assert_geq(t_first - t_start, 19500 - COARSE_SLACK_MS,
		      "first close %lld ms after the burst, before 97.5 %% "
		      "of the 20000 ms lifetime",
		      (long long)(t_first - t_start));
	cr_assert_geq(batches, 2, "all %d closes in %u batch", BURST, batches);
	cr_assert_geq(t_last - t_first, 100,
		      "closes spread over %lld ms, want >= 2 sweeps (100 ms)",
		      (long long)(t_last - t_first));
	closed[CPOOL_CLOSE_LIFETIME] = BURST;
	assert_closed_only(&st, closed);
	assert_stat(st, open, 0);
	assert_stat(st, idle, 0);
	assert_stat(st, acquires, BURST);
	assert_stat(st, connects, BURST);
	cpool_destroy(pool);
	fs_stop(fs);
}

Test(worker, a_lease_past_its_lifetime_is_closed_at_release_not_before)
{
	struct fault_server *fs = server_new(FS_INET);
	const char *addr = fs_address(fs);
	struct cpool_config cfg = config_one_shard();
	unsigned long long closed[CPOOL_CLOSE_REASON_COUNT] = { 0 };
	struct cpool_conn *a, *b;
	struct cpool_stats st;
	struct cpool *pool;
	int64_t t0;

	cfg.max_lifetime_ms = 300;
	pool = pool_new(&cfg);
	pool_add(pool, addr);
	t0 = now_ms();
	a = lease(pool, addr);
	b = lease(pool, addr);
	cpool_release(b, 0);

	/* b, idle, goes in the background: the sweeps are running. */
	assert_stats_wait(pool, addr, st,
			  st.closed[CPOOL_CLOSE_LIFETIME] == 1, 5000);
	/* a's lifetime ends at the latest 300 ms after t0 (coarse clock). */
	while (now_ms() < t0 + 300 + COARSE_SLACK_MS)
		pause_1ms();
	st = stats_of(pool, addr);
	assert_stat(st, open, 1);
	assert_stat(st, leased, 1);
	assert_stat(st, closed[CPOOL_CLOSE_LIFETIME], 1);
	assert_echo(a, "still mine past my lifetime");

	cpool_release(a, 0);
	st = stats_of(pool, addr);
	closed[CPOOL_CLOSE_LIFETIME] = 2;
	assert_closed_only(&st, closed);
	assert_stat(st, open, 0);
	assert_stat(st, idle, 0);
	cpool_destroy(pool);
	fs_stop(fs);
}

/* ---- max_uses --------------------------------------------------------- */

Test(worker, max_uses_closes_a_connection_at_the_release_of_its_nth_lease)
{
	struct fault_server *fs = server_new(FS_INET);
	const char *addr = fs_address(fs);
	struct cpool_config cfg = config_one_shard();
	unsigned long long closed[CPOOL_CLOSE_REASON_COUNT] = { 0 };
	struct cpool_conn *c;
	struct cpool_stats st;
	struct cpool *pool;
	int fd = -1;

	cfg.max_uses = 3;
	pool = pool_new(&cfg);
	pool_add(pool, addr);
	for (int i = 0; i < 3; i++) {
		c = lease(pool, addr);
		if (i == 0)
			fd = cpool_conn_fd(c);
		cr_assert_eq(cpool_conn_fd(c), fd, "lease %d: fd %d want %d",
			     i + 1, cpool_conn_fd(c), fd);
		cr_assert_eq(cpool_conn_reused(c), i > 0);
		assert_echo(c, "use");
		cpool_release(c, 0);
		st = stats_of(pool, addr);
		assert_stat(st, closed[CPOOL_CLOSE_MAX_USES], i == 2);
		assert_stat(st, open, i < 2);
	}
	c = lease(pool, addr);
	cr_assert_not(cpool_conn_reused(c));
	cpool_release(c, 0);
	st = stats_of(pool, addr);
	closed[CPOOL_CLOSE_MAX_USES] = 1;
	assert_closed_only(&st, closed);
	assert_stat(st, acquires, 4);
	assert_stat(st, reuses, 2);
	assert_stat(st, connects, 2);
	assert_stat(st, open, 1);
	cr_assert_eq(fs_wait_open(fs, 1, WAIT_MS), 0);
	cpool_destroy(pool);
	fs_stop(fs);
}

Test(worker, a_prewarmed_connection_counts_uses_from_its_first_lease)
{
	struct fault_server *fs = server_new(FS_INET);
	const char *addr = fs_address(fs);
	struct cpool_config cfg = config_one_shard();
	struct cpool_conn *c;
	struct cpool_stats st;
	struct cpool *pool;
	int fd;

	cfg.max_uses = 2;
	cfg.min_idle_per_endpoint = 1;
	pool = pool_new(&cfg);
	pool_add(pool, addr);
	assert_stats_wait(pool, addr, st, st.idle == 1, WORKER_WAIT_MS);
	assert_stat(st, prewarms, 1);

	c = lease(pool, addr);
	cr_assert(cpool_conn_reused(c), "the prewarmed one was not handed out");
	fd = cpool_conn_fd(c);
	cpool_release(c, 0);
	c = lease(pool, addr); /* the most recent release: the same one */
	cr_assert_eq(cpool_conn_fd(c), fd);
	cpool_release(c, 0);
	st = stats_of(pool, addr);
	assert_stat(st, closed[CPOOL_CLOSE_MAX_USES], 1);

	/* and the worker replaces it */
	assert_stats_wait(pool, addr, st, st.idle == 1 && st.open == 1,
			  WORKER_WAIT_MS);
	cr_assert_geq(st.prewarms, 2);
	assert_balanced(&st);
	cpool_destroy(pool);
	fs_stop(fs);
}

/* ---- prewarm ---------------------------------------------------------- */

Test(worker, prewarm_fills_min_idle_without_any_acquire_and_replaces_the_dead)
{
	struct fault_server *fs = server_new(FS_INET);
	const char *addr = fs_address(fs);
	struct cpool_config cfg;
	unsigned long long closed[CPOOL_CLOSE_REASON_COUNT] = { 0 };
	struct cpool_stats st;
	struct cpool *pool;
	uint32_t most = 0;
	int n;

	cpool_config_init(&cfg);
	cfg.workers = 2;
	cfg.min_idle_per_endpoint = 4;
	cfg.max_conns_per_endpoint = 8;
	pool = pool_new(&cfg);
	pool_add(pool, addr);
	assert_stats_wait(pool, addr, st,
			  (most = st.open > most ? st.open : most,
			   st.open == 4 && st.idle == 4 && st.prewarms == 4),
			  5000);
	cr_assert_eq(most, 4, "open went up to %u, min_idle is 4", most);
	assert_stat(st, connects, 4);
	assert_stat(st, acquires, 0);
	cr_assert_eq(fs_wait_open(fs, 4, WAIT_MS), 0,
		     "server holds %u connections, want 4", fs_open(fs));

	/* All four die on the server side: evicted, then replaced. */
	n = fs_close_all(fs);
	cr_assert_eq(n, 4, "closed %d server connections, want 4", n);
	assert_stats_wait(pool, addr, st,
			  (most = st.open > most ? st.open : most,
			   st.closed[CPOOL_CLOSE_PEER_CLOSED] == 4 &&
				   st.prewarms == 8 && st.open == 4 &&
				   st.idle == 4),
			  5000);
	cr_assert_leq(most, 4, "open went up to %u, min_idle is 4", most);
	closed[CPOOL_CLOSE_PEER_CLOSED] = 4;
	assert_closed_only(&st, closed);
	assert_stat(st, connects, 8);
	assert_stat(st, acquires, 0);
	assert_balanced(&st);
	cr_assert_eq(fs_wait_open(fs, 4, WAIT_MS), 0,
		     "server holds %u connections, want the 4 new ones",
		     fs_open(fs));
	cpool_destroy(pool);
	fs_stop(fs);
}

Test(worker, prewarm_never_goes_above_the_cap_when_min_idle_equals_it)
{
	struct fault_server *fx = server_new(FS_INET);
	struct fault_server *fz = server_new(FS_INET);
	const char *x = fs_address(fx), *z = fs_address(fz);
	struct cpool_config cfg;
	struct cpool_conn *c[3], *extra = NULL;
	struct cpool_stats st, sz;
	struct cpool *pool = NULL;
	uint32_t most = 0;

	cpool_config_init(&cfg);
	cfg.workers = 2;
	cfg.max_conns_per_endpoint = 3;
	cfg.min_idle_per_endpoint = 4;
	assert_ret(cpool_create(&cfg, &pool), -EINVAL);
	cr_assert_null(pool);
	cfg.min_idle_per_endpoint = 3;
	cfg.acquire_timeout_ms = 0;
	pool = pool_new(&cfg);
	pool_add(pool, x);
	assert_stats_wait(pool, x, st,
			  (most = st.open > most ? st.open : most,
			   st.open == 3 && st.idle == 3),
			  5000);
	cr_assert_eq(most, 3, "open went up to %u, the cap is 3", most);
	assert_stat(st, prewarms, 3);

	/* Every slot leased: the workers want idle ones but may not open. */
	for (int i = 0; i < 3; i++) {
		c[i] = lease(pool, x);
		cr_assert(cpool_conn_reused(c[i]));
	}
	assert_ret(cpool_acquire(pool, x, &extra), -ETIMEDOUT);
	cr_assert_null(extra);
	/* Both workers prewarming z proves they scanned x meanwhile. */
	pool_add(pool, z);
	assert_stats_wait(pool, z, sz, sz.open == 3 && sz.idle == 3, 5000);
	st = stats_of(pool, x);
	assert_stat(st, open, 3);
	assert_stat(st, leased, 3);
	assert_stat(st, connects, 3);
	assert_stat(st, prewarms, 3);
	assert_stat(st, timeouts, 1);

	for (int i = 0; i < 3; i++)
		cpool_release(c[i], 0);
	cr_assert_eq(fs_wait_open(fx, 3, WAIT_MS), 0);
	cr_assert_eq(fs_close_all(fx), 3);
	assert_stats_wait(pool, x, st,
			  (most = st.open > most ? st.open : most,
			   st.closed[CPOOL_CLOSE_PEER_CLOSED] == 3 &&
				   st.prewarms == 6 && st.open == 3 &&
				   st.idle == 3),
			  5000);
	cr_assert_leq(most, 3, "open went up to %u, the cap is 3", most);
	assert_stat(st, connects, 6);
	assert_balanced(&st);
	cpool_destroy(pool);
	fs_stop(fx);
	fs_stop(fz);
}
