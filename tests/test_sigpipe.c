/* SPDX-License-Identifier: MIT */
/*
 * With SIGPIPE at its default disposition (which kills the process), the
 * library's own I/O helpers must survive a dead peer, report the error,
 * and mark the connection broken so that cpool_release(c, 0) closes it.
 * The disposition itself is never changed, by the test or by the library.
 */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>

#include "util/check.h"
#include "util/leakcheck.h"

TestSuite(sigpipe, .timeout = 60, .fini = leak_fini);

static void
assert_sigpipe_default(const char *when)
{
	struct sigaction sa;
	sigset_t blocked;

	cr_assert_eq(sigaction(SIGPIPE, NULL, &sa), 0);
	cr_assert(sa.sa_handler == SIG_DFL,
		  "%s: SIGPIPE handler is %p, want SIG_DFL", when,
		  (void *)sa.sa_handler);
	cr_assert_eq(pthread_sigmask(SIG_BLOCK, NULL, &blocked), 0);
	cr_assert_not(sigismember(&blocked, SIGPIPE),
		      "%s: SIGPIPE is blocked in this thread", when);
}

struct setup {
	struct fault_server *fs;
	struct cpool *pool;
	const char *addr;
};

static struct setup
setup_pool(unsigned flags)
{
	struct setup s;
	struct cpool_config cfg = config_one_shard();

	assert_sigpipe_default("test start");
	cfg.flags = flags;
	s.fs = server_new(FS_INET);
	s.addr = fs_address(s.fs);
	s.pool = pool_new(&cfg);
	pool_add(s.pool, s.addr);
	return s;
}

static void
teardown(struct setup *s)
{
	cpool_destroy(s->pool);
	fs_stop(s->fs);
	assert_sigpipe_default("test end");
}

/* Asserts the broken lease released with 0 was closed by_caller. */
static void
assert_closed_by_caller_and_next_is_fresh(struct setup *s,
					  unsigned long long acquires)
{
	unsigned long long closed[CPOOL_CLOSE_REASON_COUNT] = { 0 };
	struct cpool_stats st = stats_of(s->pool, s->addr);
	struct cpool_conn *c;

	closed[CPOOL_CLOSE_BY_CALLER] = 1;
	assert_closed_only(&st, closed);
	assert_stat(st, open, 0);
	assert_stat(st, idle, 0);
	assert_stat(st, leased, 0);
	assert_stat(st, acquires, acquires);

	c = lease(s->pool, s->addr);
	cr_assert_not(cpool_conn_reused(c),
		      "after a broken connection the next lease must be fresh");
	assert_echo(c, "fresh");
	cpool_release(c, 0);
	st = stats_of(s->pool, s->addr);
	assert_stat(st, connects, 2);
	assert_stat(st, open, 1);
	assert_stat(st, idle, 1);
}

/* Waits until the leased connection's fd shows @bit (FIN or RST). */
static void
lease_sees(struct cpool_conn *c, short bit, const char *what)
{
	int rev = wait_fd(cpool_conn_fd(c), bit, WAIT_MS);

	cr_assert(rev > 0 && (rev & bit), "never saw %s: revents 0x%x", what,
		  rev);
}

Test(sigpipe, send_into_a_closed_peer_returns_epipe_and_the_process_lives)
{
	struct setup s = setup_pool(0);
	struct cpool_conn *c = lease(s.pool, s.addr);
	char req[16] = "0123456789abcdef";
	ssize_t n;

	assert_echo(c, "hello");
	cr_assert_eq(fs_close_all(s.fs), 1);
	lease_sees(c, POLLRDHUP, "the FIN");

	/* send #1 succeeds into the closed peer, which answers RST */
	n = cpool_send(c, req, sizeof(req));
	cr_assert_eq(n, (ssize_t)sizeof(req), "send #1 after FIN: got %zd (%s)",
		     n, strerror((int)-n));
	lease_sees(c, POLLHUP, "the RST answering send #1");

	/* send #2 hits the dead socket: an error, and no SIGPIPE */
	n = cpool_send(c, req, sizeof(req));
	cr_assert(n == -EPIPE || n == -ECONNRESET,
		  "send #2: got %zd (%s) want -EPIPE or -ECONNRESET", n,
		  strerror((int)-n));
	n = cpool_send(c, req, sizeof(req));
	cr_assert(n == -EPIPE || n == -ECONNRESET,
		  "send #3: got %zd (%s) want -EPIPE or -ECONNRESET", n,
		  strerror((int)-n));
	assert_sigpipe_default("after the failed sends");

	cpool_release(c, 0); /* broken: closed, not pooled */
	assert_closed_by_caller_and_next_is_fresh(&s, 1);
	teardown(&s);
}

Test(sigpipe, send_into_a_reset_peer_returns_econnreset_and_marks_it_broken)
{
	struct setup s = setup_pool(0);
	struct cpool_conn *c = lease(s.pool, s.addr);
	ssize_t n;

	assert_echo(c, "hello");
	cr_assert_eq(fs_reset_all(s.fs), 1);
	lease_sees(c, POLLHUP, "the RST");
	/* SOCKETS.md S5: the first send gets the reset itself */
	n = cpool_send(c, "x", 1);
	cr_assert_eq(n, -ECONNRESET, "send after RST: got %zd (%s)", n,
		     strerror((int)-n));
	/* and the second the EPIPE that raises SIGPIPE without NOSIGNAL */
	n = cpool_send(c, "x", 1);
	cr_assert_eq(n, -EPIPE, "second send after RST: got %zd (%s)", n,
		     strerror((int)-n));
	cpool_release(c, 0);
	assert_closed_by_caller_and_next_is_fresh(&s, 1);
	teardown(&s);
}

Test(sigpipe, recv_of_a_peer_close_returns_0_and_marks_it_broken)
{
	struct setup s = setup_pool(0);
	struct cpool_conn *c = lease(s.pool, s.addr);
	char buf[8];
	ssize_t n;

	assert_echo(c, "hello");
	cr_assert_eq(fs_close_all(s.fs), 1);
	n = cpool_recv(c, buf, sizeof(buf));
	cr_assert_eq(n, 0, "recv after FIN: got %zd (%s)", n,
		     strerror((int)-n));
	cpool_release(c, 0);
	assert_closed_by_caller_and_next_is_fresh(&s, 1);
	teardown(&s);
}

Test(sigpipe, recv_of_a_reset_returns_econnreset_and_marks_it_broken)
{
	struct setup s = setup_pool(0);
	struct cpool_conn *c = lease(s.pool, s.addr);
	char buf[8];
	ssize_t n;

	assert_echo(c, "hello");
	cr_assert_eq(fs_reset_all(s.fs), 1);
	lease_sees(c, POLLHUP, "the RST");
	n = cpool_recv(c, buf, sizeof(buf));
	cr_assert_eq(n, -ECONNRESET, "recv after RST: got %zd (%s)", n,
		     strerror((int)-n));
	cpool_release(c, 0);
	assert_closed_by_caller_and_next_is_fresh(&s, 1);
	teardown(&s);
}

Test(sigpipe, release_with_close_flag_closes_a_healthy_connection)
{
	struct setup s = setup_pool(0);
	struct cpool_conn *c = lease(s.pool, s.addr);

	assert_echo(c, "hello");
	cpool_release(c, CPOOL_RELEASE_CLOSE);
	cr_assert_eq(fs_wait_open(s.fs, 0, WAIT_MS), 0,
		     "the server still holds %u connections", fs_open(s.fs));
	assert_closed_by_caller_and_next_is_fresh(&s, 1);
	teardown(&s);
}

Test(sigpipe, recv_of_zero_bytes_does_not_mark_the_connection_broken)
{
	struct setup s = setup_pool(0);
	struct cpool_conn *c = lease(s.pool, s.addr);
	char buf[1];
	ssize_t n;
	struct cpool_stats st;

	n = cpool_recv(c, buf, 0);
	cr_assert_eq(n, 0, "recv of len 0: got %zd", n);
	cpool_release(c, 0);
	st = stats_of(s.pool, s.addr);
	assert_stat(st, open, 1);
	assert_stat(st, idle, 1);
	assert_stat(st, closed[CPOOL_CLOSE_BY_CALLER], 0);
	c = lease(s.pool, s.addr);
	cr_assert(cpool_conn_reused(c), "a len-0 recv made it unreusable");
	cpool_release(c, 0);
	teardown(&s);
}

Test(sigpipe, eagain_on_a_nonblocking_connection_does_not_mark_it_broken)
{
	struct setup s = setup_pool(CPOOL_NONBLOCK);
	struct cpool_conn *c = lease(s.pool, s.addr);
	char buf[8];
	ssize_t n;
	struct cpool_stats st;

	n = cpool_recv(c, buf, sizeof(buf));
	cr_assert_eq(n, -EAGAIN, "recv with nothing to read: got %zd (%s)", n,
		     strerror((int)-n));
	cpool_release(c, 0);
	st = stats_of(s.pool, s.addr);
	assert_stat(st, open, 1);
	assert_stat(st, idle, 1);
	assert_stat(st, closed[CPOOL_CLOSE_BY_CALLER], 0);
	c = lease(s.pool, s.addr);
	cr_assert(cpool_conn_reused(c), "-EAGAIN made the connection unusable");
	cpool_release(c, 0);
	teardown(&s);
}

Test(sigpipe, nonblocking_send_into_a_full_buffer_gives_a_partial_count)
{
	struct setup s = setup_pool(CPOOL_NONBLOCK);
	struct cpool_conn *c;
	size_t len = 64u << 20;
	char *big = calloc(1, len);
	ssize_t n;
	struct cpool_stats st;

	cr_assert_not_null(big);
	fs_set_mode(s.fs, FS_MODE_STALL); /* the server stops reading */
	c = lease(s.pool, s.addr);
	n = cpool_send(c, big, len);
	cr_assert(n > 0 && (size_t)n < len,
		  "send of %zu bytes to a stalled peer: got %zd (%s), want a "
		  "partial count", len, n, n < 0 ? strerror((int)-n) : "");
	n = cpool_send(c, big, len);
	cr_assert_eq(n, -EAGAIN, "send into the full buffer: got %zd (%s)", n,
		     strerror((int)-n));
	/* bytes are in flight: the caller must close, and it does */
	cpool_release(c, CPOOL_RELEASE_CLOSE);
	st = stats_of(s.pool, s.addr);
	assert_stat(st, closed[CPOOL_CLOSE_BY_CALLER], 1);
	assert_stat(st, open, 0);
	free(big);
	teardown(&s);
}

static int
noop_connect(int fd, const char *address, void *user_data)
{
	return 0;
}

Test(sigpipe, the_library_never_changes_the_sigpipe_disposition)
{
	struct cpool_config cfg;
	struct fault_server *fs;
	struct cpool *pool;
	struct cpool_conn *c;
	const char *addr;
	ssize_t n;

	assert_sigpipe_default("test start");
	fs = server_new(FS_INET);
	addr = fs_address(fs);
	cpool_config_init(&cfg);
	assert_sigpipe_default("after cpool_config_init");
	cfg.on_connect = noop_connect;
	pool = pool_new(&cfg);
	assert_sigpipe_default("after cpool_create");
	pool_add(pool, addr);
	assert_sigpipe_default("after cpool_endpoint_add");
	c = lease(pool, addr);
	assert_sigpipe_default("after cpool_acquire");
	assert_echo(c, "hi");
	assert_sigpipe_default("after cpool_send/cpool_recv");

	cr_assert_eq(fs_close_all(fs), 1);
	cr_assert(wait_fd(cpool_conn_fd(c), POLLRDHUP, WAIT_MS) & POLLRDHUP);
	n = cpool_send(c, "x", 1);
	cr_assert_eq(n, 1, "send #1 after FIN: got %zd", n);
	cr_assert(wait_fd(cpool_conn_fd(c), POLLHUP, WAIT_MS) & POLLHUP);
	n = cpool_send(c, "x", 1);
	cr_assert(n < 0, "send #2 after FIN+RST: got %zd", n);
	assert_sigpipe_default("after a failed cpool_send");
	cpool_release(c, 0);
	assert_sigpipe_default("after cpool_release");
	cpool_destroy(pool);
	assert_sigpipe_default("after cpool_destroy");
	fs_stop(fs);
}
