/* SPDX-License-Identifier: MIT */
/*
 * Half-dead peers (SOCKETS.md S7, S8, S9, S11): peers that send no FIN
 * and no RST, so that only keepalive, TCP_USER_TIMEOUT or a deadline can
 * tell.
 *
 * A vanished host (S8, S9) is a server in its own network namespace
 * behind a veth pair whose server end the test takes down: root only,
 * skipped with a message otherwise (tests/util/netns.h). The test thread
 * moves itself into the client namespace before it creates the pool, so
 * every connect (acquires run on this thread; no prewarm here) and the
 * workers live there. A stalled process (S7) and a full accept queue (S11)
 * need no namespace: they run on loopback.
 *
 * Namespaces and child processes are removed by the suite's teardown and
 * by atexit(), whichever runs; the children also die with the test process
 * (PR_SET_PDEATHSIG).
 */
#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "util/check.h"
#include "util/netns.h"
#include "util/waitfor.h"
#include "util/leakcheck.h"

static void
teardown(void)
{
	netns_cleanup();
	leak_fini();
}

TestSuite(netns, .timeout = 60, .fini = teardown);

#define PEER_PORT 7000
#define PEER_ADDR NETNS_SERVER_IP ":7000"
/* SOCKETS.md: 2.85 s (S8, KA 1/1/2) and 2.43-2.97 s (S9, UT 2000). */
#define HALF_DEAD_BOUND_MS 8000

/* Loops until a plain connect from this thread reaches the peer. */
static void
wait_reachable(void)
{
	struct sockaddr_in sin = { .sin_family = AF_INET,
				   .sin_port = htons(PEER_PORT) };
	int64_t deadline = now_ms() + WAIT_MS;
	int fd, rc;

	inet_pton(AF_INET, NETNS_SERVER_IP, &sin.sin_addr);
	for (;;) {
		fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		cr_assert_geq(fd, 0);
		rc = connect(fd, (struct sockaddr *)&sin, sizeof(sin));
		close(fd);
		if (rc == 0)
			return;
		cr_assert_lt(now_ms(), deadline, "%s unreachable: %s",
			     PEER_ADDR, strerror(errno));
		pause_1ms();
	}
}

/*
 * Skips unless namespaces work here; makes them, starts the peer in the
 * server namespace and moves this thread into the client one.
 */
static pid_t
netns_begin(enum peer_mode mode)
{
	const char *why = netns_unavailable();
	char err[768];
	pid_t pid;
	int rc, port = 0;

	if (why)
		cr_skip_test("%s", why);
	atexit(netns_cleanup);
	rc = netns_setup(err, sizeof(err));
	if (rc == -EPERM)
		cr_skip_test("cannot make network namespaces here: %s", err);
	cr_assert_eq(rc, 0, "namespace setup failed: %s", err);
	pid = peer_start(true, NETNS_SERVER_IP, PEER_PORT, mode, &port);
	cr_assert_gt(pid, 0, "peer_start: %d (%s)", (int)pid,
		     strerror((int)-pid));
	rc = netns_enter_client();
	cr_assert_eq(rc, 0, "setns into the client namespace: %s",
		     strerror(-rc));
	wait_reachable();
	return pid;
}

static void
server_link_down(void)
{
	char err[768];
	int rc = netns_server_link(false, err, sizeof(err));

	cr_assert_eq(rc, 0, "link down: %s", err);
}

Test(netns, an_idle_connection_to_a_vanished_host_is_evicted_as_timed_out)
{
	pid_t peer = netns_begin(PEER_ECHO);
	struct cpool_config cfg = config_one_shard();
	unsigned long long closed[CPOOL_CLOSE_REASON_COUNT] = { 0 };
	struct cpool_conn *c;
	struct cpool_stats st;
	struct cpool *pool;
	int64_t t0, took;

	cfg.keepalive_idle_s = 1;
	cfg.keepalive_interval_s = 1;
	cfg.keepalive_count = 2; /* user_timeout_ms derived: 3000 */
	pool = pool_new(&cfg);
	pool_add(pool, PEER_ADDR);
	c = lease(pool, PEER_ADDR);
	assert_echo(c, "last words");
	cpool_release(c, 0);

	t0 = now_ms();
	server_link_down();
	/* No FIN, no RST will come: keepalive must find out, no acquire. */
	cr_assert(stats_wait(pool, PEER_ADDR, st,
			     st.closed[CPOOL_CLOSE_TIMED_OUT] == 1,
			     HALF_DEAD_BOUND_MS),
		  "not evicted within %d ms of the link going down "
		  "(open %u idle %u)",
		  HALF_DEAD_BOUND_MS, st.open, st.idle);
	took = now_ms() - t0;
	cr_log_info("netns: idle connection to a vanished host evicted "
		    "%lld ms after link down",
		    (long long)took);
	closed[CPOOL_CLOSE_TIMED_OUT] = 1;
	assert_closed_only(&st, closed);
	assert_stat(st, open, 0);
	assert_stat(st, idle, 0);
	assert_stat(st, acquires, 1);
	cpool_destroy(pool);
	peer_stop(peer);
}

/* Blocks for the answer to a request, as a caller would. */
static int
await_answer(struct cpool_conn *c, int64_t t0, int64_t *took)
{
	char buf[64];
	int rev = wait_fd(cpool_conn_fd(c), POLLIN, HALF_DEAD_BOUND_MS);

	cr_assert_gt(rev, 0, "no error within %d ms: the request hangs",
		     HALF_DEAD_BOUND_MS);
	int err = (int)cpool_recv(c, buf, sizeof(buf));

	*took = now_ms() - t0;
	return err;
}

Test(netns, a_request_in_flight_to_a_vanished_host_fails_within_user_timeout)
{
	pid_t peer = netns_begin(PEER_SINK);
	struct cpool_config cfg = config_one_shard();
	unsigned long long closed[CPOOL_CLOSE_REASON_COUNT] = { 0 };
	struct cpool_conn *acked, *unacked;
	int64_t t0, took_acked, took_unacked;
	struct cpool_stats st;
	struct cpool *pool;
	int err, err2;

	cfg.keepalive_idle_s = 1;
	cfg.keepalive_interval_s = 1;
	cfg.keepalive_count = 2;
	cfg.user_timeout_ms = 2000;
	pool = pool_new(&cfg);
	pool_add(pool, PEER_ADDR);
	acked = lease(pool, PEER_ADDR);
	unacked = lease(pool, PEER_ADDR);

	/* A request the server got (ACKed) but will never answer... */
	assert_ret(cpool_send(acked, "GET /slow\r\n", 11), 11);
	assert_ret(wait_acked(cpool_conn_fd(acked), WAIT_MS), 0); /* bytes unACKed */
	t0 = now_ms();
	server_link_down();
	/* ...and one that never arrives: retransmitted until UT expires. */
	assert_ret(cpool_send(unacked, "GET /lost\r\n", 11), 11);

	err = await_answer(acked, t0, &took_acked);
	cr_assert(err == -ETIMEDOUT || err == -EHOSTUNREACH,
		  "acked request: recv %d (%s), want -ETIMEDOUT or "
		  "-EHOSTUNREACH",
		  err, strerror(-err));
	err2 = await_answer(unacked, t0, &took_unacked);
	cr_assert(err2 == -ETIMEDOUT || err2 == -EHOSTUNREACH,
		  "unacked request: recv %d (%s), want -ETIMEDOUT or "
		  "-EHOSTUNREACH",
		  err2, strerror(-err2));
	cr_log_info("netns: request in flight failed after %lld ms (acked, "
		    "awaiting the answer: %s) and %lld ms (unacked: %s) after "
		    "link down",
		    (long long)took_acked, strerror(-err),
		    (long long)took_unacked, strerror(-err2));
	cr_assert_lt(took_acked, HALF_DEAD_BOUND_MS);
	cr_assert_lt(took_unacked, HALF_DEAD_BOUND_MS);

	/* Both saw the error: broken, closed by their release. */
	cpool_release(acked, 0);
	cpool_release(unacked, 0);
	st = stats_of(pool, PEER_ADDR);
	closed[CPOOL_CLOSE_BY_CALLER] = 2;
	assert_closed_only(&st, closed);
	assert_stat(st, open, 0);
	cpool_destroy(pool);
	peer_stop(peer);
}

/* ---- on loopback ------------------------------------------------------ */

Test(netns, a_stalled_peer_passes_the_probe_and_its_answer_waits_for_sigcont)
{
	struct cpool_config cfg = config_one_shard();
	unsigned long long closed[CPOOL_CLOSE_REASON_COUNT] = { 0 };
	struct cpool_conn *c;
	struct cpool_stats st;
	struct cpool *pool;
	char addr[64], buf[8];
	int port = 0, status, fd, outq = -1;
	int64_t deadline;
	pid_t peer;

	/* fork before the pool makes its threads */
	peer = peer_start(false, "127.0.0.1", 0, PEER_ECHO, &port);
	cr_assert_gt(peer, 0, "peer_start: %s", strerror((int)-peer));
	snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
	pool = pool_new(&cfg);
	pool_add(pool, addr);
	c = lease(pool, addr);
	assert_echo(c, "before");
	cpool_release(c, 0);

	cr_assert_eq(kill(peer, SIGSTOP), 0);
	cr_assert_eq(waitpid(peer, &status, WUNTRACED), peer);
	cr_assert(WIFSTOPPED(status), "peer not stopped: status 0x%x", status);

	/* Its kernel still answers: the probe says alive, it is reused. */
	c = lease(pool, addr);
	cr_assert(cpool_conn_reused(c), "the stalled peer's connection was "
		  "not handed out");
	fd = cpool_conn_fd(c);
	assert_ret(cpool_probe(fd), CPOOL_ALIVE);
	assert_ret(cpool_send(c, "stalled", 7), 7);
	/* the request is ACKed by the peer's kernel... */
	deadline = now_ms() + WAIT_MS;
	while (ioctl(fd, SIOCOUTQ, &outq) == 0 && outq > 0 &&
	       now_ms() < deadline)
		pause_1ms();
	cr_assert_eq(outq, 0);
	/* ...and nobody answers: only a deadline of the caller's tells. */
	assert_ret(wait_fd(fd, POLLIN, 300), 0);

	cr_assert_eq(kill(peer, SIGCONT), 0);
	cr_assert_eq(waitpid(peer, &status, WCONTINUED), peer);
	cr_assert(wait_fd(fd, POLLIN, WAIT_MS) & POLLIN,
		  "no answer after SIGCONT");
	assert_ret(recv(fd, buf, 7, MSG_WAITALL), 7);
	cr_assert_eq(memcmp(buf, "stalled", 7), 0);
	cpool_release(c, 0);

	st = stats_of(pool, addr);
	assert_closed_only(&st, closed);
	assert_stat(st, reuses, 1);
	assert_stat(st, open, 1);
	cpool_destroy(pool);
	peer_stop(peer);
}

Test(netns, a_connect_beyond_a_full_accept_queue_times_out_after_connect_timeout)
{
	struct sockaddr_in sin = { .sin_family = AF_INET,
				   .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t slen = sizeof(sin);
	struct cpool_config cfg = config_one_shard();
	struct cpool_conn *queued, *none = NULL;
	struct cpool_stats st;
	struct cpool *pool;
	int64_t t0, took;
	char addr[64];
	int lfd, fds, err;

	/* backlog 0: the queue holds one connection; nobody accepts */
	lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	cr_assert_geq(lfd, 0);
	cr_assert_eq(bind(lfd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	cr_assert_eq(listen(lfd, 0), 0);
	cr_assert_eq(getsockname(lfd, (struct sockaddr *)&sin, &slen), 0);
	snprintf(addr, sizeof(addr), "127.0.0.1:%d", ntohs(sin.sin_port));

	cfg.connect_timeout_ms = 500;
	pool = pool_new(&cfg);
	pool_add(pool, addr);
	queued = lease(pool, addr);
	/* in the queue, never accepted: alive by every probe */
	assert_ret(cpool_probe(cpool_conn_fd(queued)), CPOOL_ALIVE);

	fds = count_open_fds();
	t0 = now_ms();
	err = cpool_acquire(pool, addr, &none);
	took = now_ms() - t0;
	cr_log_info("netns: connect beyond the full queue failed after %lld "
		    "ms",
		    (long long)took);
	assert_ret(err, -ETIMEDOUT);
	cr_assert_null(none);
	cr_assert_geq(took, 500 - 1, "gave up after %lld ms, before 500",
		      (long long)took);
	cr_assert_lt(took, WAIT_MS);
	/* the socket stuck in SYN_SENT was closed */
	cr_assert_eq(count_open_fds(), fds, "fds: %d, want %d",
		     count_open_fds(), fds);

	st = stats_of(pool, addr);
	assert_stat(st, acquires, 1);
	assert_stat(st, connects, 1);
	assert_stat(st, connect_failures, 1);
	assert_stat(st, backoffs, 1);
	assert_stat(st, open, 1);
	assert_stat(st, leased, 1);
	/* cpool.h: timeouts counts "acquires that returned -ETIMEDOUT" */
	assert_stat(st, timeouts, 1);
	cpool_release(queued, 0);
	cpool_destroy(pool);
	close(lfd);
}
