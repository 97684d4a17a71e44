/* SPDX-License-Identifier: MIT */
/*
 * The socket options really set on handed-out fds, read back with
 * getsockopt()/fcntl(), and the on_connect handshake's contract.
 */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "util/check.h"
#include "util/leakcheck.h"

TestSuite(sockopts, .timeout = 60, .fini = leak_fini);

static int
sockopt(int fd, int level, int name)
{
	int v = -1;
	socklen_t len = sizeof(v);

	cr_assert_eq(getsockopt(fd, level, name, &v, &len), 0,
		     "getsockopt(%d, %d): %s", level, name, strerror(errno));
	return v;
}

#define assert_opt(fd, level, name, want)                                  \
	do {                                                               \
		int got_ = sockopt((fd), (level), (name));                 \
		cr_assert_eq(got_, (want), #name ": got %d want %d", got_, \
			     (int)(want));                                 \
	} while (0)

struct opened {
	struct fault_server *fs;
	struct cpool *pool;
	struct cpool_conn *c;
	int fd;
};

static struct opened
open_with(struct cpool_config *cfg)
{
	struct opened o;

	o.fs = server_new(FS_INET);
	o.pool = pool_new(cfg);
	pool_add(o.pool, fs_address(o.fs));
	o.c = lease(o.pool, fs_address(o.fs));
	o.fd = cpool_conn_fd(o.c);
	return o;
}

static void
close_opened(struct opened *o)
{
	cpool_release(o->c, 0);
	cpool_destroy(o->pool);
	fs_stop(o->fs);
}

Test(sockopts, keepalive_and_user_timeout_take_the_configured_values)
{
	struct cpool_config cfg = config_one_shard();
	struct opened o;

	cfg.keepalive_idle_s = 7;
	cfg.keepalive_interval_s = 3;
	cfg.keepalive_count = 4;
	cfg.user_timeout_ms = 12345;
	o = open_with(&cfg);
	assert_opt(o.fd, SOL_SOCKET, SO_KEEPALIVE, 1);
	assert_opt(o.fd, IPPROTO_TCP, TCP_KEEPIDLE, 7);
	assert_opt(o.fd, IPPROTO_TCP, TCP_KEEPINTVL, 3);
	assert_opt(o.fd, IPPROTO_TCP, TCP_KEEPCNT, 4);
	assert_opt(o.fd, IPPROTO_TCP, TCP_USER_TIMEOUT, 12345);
	close_opened(&o);
}

Test(sockopts, user_timeout_is_derived_from_keepalive_when_zero)
{
	struct cpool_config cfg = config_one_shard();
	struct opened o;

	cfg.keepalive_idle_s = 7;
	cfg.keepalive_interval_s = 3;
	cfg.keepalive_count = 4;
	cfg.user_timeout_ms = 0;
	o = open_with(&cfg);
	assert_opt(o.fd, SOL_SOCKET, SO_KEEPALIVE, 1);
	assert_opt(o.fd, IPPROTO_TCP, TCP_USER_TIMEOUT, (7 + 3 * 4) * 1000);
	close_opened(&o);
}

Test(sockopts, the_defaults_give_keepalive_30_5_3_and_user_timeout_45s)
{
	struct cpool_config cfg = config_one_shard();
	struct opened o = open_with(&cfg);

	assert_opt(o.fd, SOL_SOCKET, SO_KEEPALIVE, 1);
	assert_opt(o.fd, IPPROTO_TCP, TCP_KEEPIDLE, 30);
	assert_opt(o.fd, IPPROTO_TCP, TCP_KEEPINTVL, 5);
	assert_opt(o.fd, IPPROTO_TCP, TCP_KEEPCNT, 3);
	assert_opt(o.fd, IPPROTO_TCP, TCP_USER_TIMEOUT, (30 + 5 * 3) * 1000);
	close_opened(&o);
}

Test(sockopts, keepalive_idle_0_turns_keepalive_and_user_timeout_off)
{
	struct cpool_config cfg = config_one_shard();
	struct opened o;

	cfg.keepalive_idle_s = 0;
	cfg.user_timeout_ms = 0;
	o = open_with(&cfg);
	assert_opt(o.fd, SOL_SOCKET, SO_KEEPALIVE, 0);
	assert_opt(o.fd, IPPROTO_TCP, TCP_USER_TIMEOUT, 0);
	close_opened(&o);
}

Test(sockopts, an_explicit_user_timeout_stands_with_keepalive_off)
{
	struct cpool_config cfg = config_one_shard();
	struct opened o;

	cfg.keepalive_idle_s = 0;
	cfg.user_timeout_ms = 2000;
	o = open_with(&cfg);
	assert_opt(o.fd, SOL_SOCKET, SO_KEEPALIVE, 0);
	assert_opt(o.fd, IPPROTO_TCP, TCP_USER_TIMEOUT, 2000);
	close_opened(&o);
}

Test(sockopts, nodelay_and_cloexec_are_set_and_the_fd_blocks_by_default)
{
	struct cpool_config cfg = config_one_shard();
	struct opened o = open_with(&cfg);
	int fdfl = fcntl(o.fd, F_GETFD), fl = fcntl(o.fd, F_GETFL);

	assert_opt(o.fd, IPPROTO_TCP, TCP_NODELAY, 1);
	cr_assert(fdfl != -1 && (fdfl & FD_CLOEXEC), "FD_CLOEXEC clear: 0x%x",
		  fdfl);
	cr_assert(fl != -1 && !(fl & O_NONBLOCK), "O_NONBLOCK set: 0x%x", fl);
	/* and the idle reuse keeps the mode */
	cpool_release(o.c, 0);
	o.c = lease(o.pool, fs_address(o.fs));
	cr_assert(cpool_conn_reused(o.c));
	fl = fcntl(cpool_conn_fd(o.c), F_GETFL);
	cr_assert(fl != -1 && !(fl & O_NONBLOCK),
		  "O_NONBLOCK set after reuse: 0x%x", fl);
	close_opened(&o);
}

Test(sockopts, cpool_nonblock_hands_out_nonblocking_fds)
{
	struct cpool_config cfg = config_one_shard();
	struct opened o;
	int fl, fdfl;

	cfg.flags = CPOOL_NONBLOCK;
	o = open_with(&cfg);
	fl = fcntl(o.fd, F_GETFL);
	fdfl = fcntl(o.fd, F_GETFD);
	cr_assert(fl != -1 && (fl & O_NONBLOCK), "O_NONBLOCK clear: 0x%x", fl);
	cr_assert(fdfl != -1 && (fdfl & FD_CLOEXEC));
	cpool_release(o.c, 0);
	o.c = lease(o.pool, fs_address(o.fs));
	fl = fcntl(cpool_conn_fd(o.c), F_GETFL);
	cr_assert(fl != -1 && (fl & O_NONBLOCK),
		  "O_NONBLOCK clear after reuse: 0x%x", fl);
	close_opened(&o);
}

Test(sockopts, blocking_fds_carry_no_leftover_io_timeouts)
{
	struct cpool_config cfg = config_one_shard();
	struct opened o = open_with(&cfg);
	struct timeval tv;
	socklen_t len = sizeof(tv);

	cr_assert_eq(getsockopt(o.fd, SOL_SOCKET, SO_RCVTIMEO, &tv, &len), 0);
	cr_assert(tv.tv_sec == 0 && tv.tv_usec == 0,
		  "SO_RCVTIMEO left at %lds %ldus", (long)tv.tv_sec,
		  (long)tv.tv_usec);
	len = sizeof(tv);
	cr_assert_eq(getsockopt(o.fd, SOL_SOCKET, SO_SNDTIMEO, &tv, &len), 0);
	cr_assert(tv.tv_sec == 0 && tv.tv_usec == 0,
		  "SO_SNDTIMEO left at %lds %ldus", (long)tv.tv_sec,
		  (long)tv.tv_usec);
	close_opened(&o);
}

/* What on_connect saw, call by call. */
struct hs {
	int calls;
	int ret;		/* what to return */
	bool do_echo;		/* run a request/response inside */
	int echo_err;
	int fd[8];
	int fl[8];
	long rcvtimeo_ms[8];
	char address[8][160];
};

static int
handshake(int fd, const char *address, void *user_data)
{
	struct hs *h = user_data;
	struct timeval tv = { 0 };
	socklen_t len = sizeof(tv);
	int i = h->calls++;

	if (i < 8) {
		h->fd[i] = fd;
		h->fl[i] = fcntl(fd, F_GETFL);
		getsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, &len);
		h->rcvtimeo_ms[i] = tv.tv_sec * 1000 + tv.tv_usec / 1000;
		snprintf(h->address[i], sizeof(h->address[i]), "%s",
			 address ? address : "(null)");
	}
	if (h->do_echo)
		h->echo_err = echo_roundtrip_fd(fd, "AUTH secret");
	return h->ret;
}

Test(sockopts, on_connect_runs_once_per_new_connection_on_a_blocking_fd)
{
	struct fault_server *fs = server_new(FS_INET);
	const char *addr = fs_address(fs);
	struct cpool_config cfg = config_one_shard();
	struct hs h = { .do_echo = true };
	struct cpool *pool;
	struct cpool_conn *a, *b;

	cfg.connect_timeout_ms = 5000;
	cfg.on_connect = handshake;
	cfg.user_data = &h;
	pool = pool_new(&cfg);
	pool_add(pool, addr);

	a = lease(pool, addr);
	cr_assert_eq(h.calls, 1, "on_connect calls: got %d want 1", h.calls);
	cr_assert_eq(h.fd[0], cpool_conn_fd(a), "on_connect fd %d, lease fd %d",
		     h.fd[0], cpool_conn_fd(a));
	cr_assert_str_eq(h.address[0], addr);
	cr_assert(h.fl[0] != -1 && !(h.fl[0] & O_NONBLOCK),
		  "on_connect got fd flags 0x%x, want blocking", h.fl[0]);
	/* its I/O is bounded by what is left of connect_timeout_ms */
	cr_assert(h.rcvtimeo_ms[0] > 0 && h.rcvtimeo_ms[0] <= 5000,
		  "SO_RCVTIMEO during on_connect: %ld ms want 1..5000",
		  h.rcvtimeo_ms[0]);
	/* a handshake may talk over the fd */
	cr_assert_eq(h.echo_err, 0, "echo inside on_connect: %s",
		     strerror(-h.echo_err));
	assert_echo(a, "after handshake");
	cpool_release(a, 0);

	a = lease(pool, addr); /* reuse: no handshake */
	cr_assert(cpool_conn_reused(a));
	cr_assert_eq(h.calls, 1, "on_connect ran on reuse: %d calls", h.calls);
	b = lease(pool, addr); /* a second new connection */
	cr_assert_eq(h.calls, 2, "on_connect calls: got %d want 2", h.calls);
	cr_assert_eq(h.fd[1], cpool_conn_fd(b));
	cr_assert_str_eq(h.address[1], addr);
	cpool_release(a, 0);
	cpool_release(b, 0);
	assert_stat(stats_of(pool, addr), connects, 2);
	cpool_destroy(pool);
	fs_stop(fs);
}

Test(sockopts, on_connect_runs_once_per_new_connection_on_a_nonblocking_fd)
{
	struct fault_server *fs = server_new(FS_INET);
	const char *addr = fs_address(fs);
	struct cpool_config cfg = config_one_shard();
	struct hs h = { .do_echo = false };
	struct cpool *pool;
	struct cpool_conn *a;

	cfg.flags = CPOOL_NONBLOCK;
	cfg.on_connect = handshake;
	cfg.user_data = &h;
	pool = pool_new(&cfg);
	pool_add(pool, addr);
	a = lease(pool, addr);
	cr_assert_eq(h.calls, 1);
	cr_assert_eq(h.fd[0], cpool_conn_fd(a));
	cr_assert(h.fl[0] != -1 && (h.fl[0] & O_NONBLOCK),
		  "on_connect got a blocking fd with CPOOL_NONBLOCK: 0x%x",
		  h.fl[0]);
	cr_assert_str_eq(h.address[0], addr);
	cpool_release(a, 0);
	a = lease(pool, addr);
	cr_assert_eq(h.calls, 1, "on_connect ran on reuse");
	cpool_release(a, 0);
	cpool_destroy(pool);
	fs_stop(fs);
}

static void
check_on_connect_failure(int ret, int want)
{
	struct fault_server *fs = server_new(FS_INET);
	const char *addr = fs_address(fs);
	struct cpool_config cfg = config_one_shard();
	struct hs h = { .ret = ret };
	struct cpool *pool;
	struct cpool_conn *c = (struct cpool_conn *)&h;
	struct cpool_stats st;
	unsigned long long closed[CPOOL_CLOSE_REASON_COUNT] = { 0 };

	cfg.on_connect = handshake;
	cfg.user_data = &h;
	pool = pool_new(&cfg);
	pool_add(pool, addr);
	assert_ret(cpool_acquire(pool, addr, &c), want);
	cr_assert_eq(c, (struct cpool_conn *)&h, "out changed on failure");
	cr_assert_eq(h.calls, 1);
	st = stats_of(pool, addr);
	assert_stat(st, open, 0);
	assert_stat(st, idle, 0);
	assert_stat(st, leased, 0);
	assert_stat(st, connects, 0);
	assert_stat(st, acquires, 0);
	assert_stat(st, connect_failures, 1);
	/* never a lease: not counted as a close of an opened connection */
	assert_closed_only(&st, closed);
	/* the socket was closed: the server sees the close */
	cr_assert_eq(fs_wait_accepted(fs, 1, WAIT_MS), 0);
	cr_assert_eq(fs_wait_open(fs, 0, WAIT_MS), 0,
		     "the refused connection is still open on the server");
	cpool_destroy(pool);
	fs_stop(fs);
}

Test(sockopts, an_on_connect_error_fails_the_acquire_with_that_error)
{
	check_on_connect_failure(-EACCES, -EACCES);
}

Test(sockopts, a_positive_on_connect_return_fails_the_acquire_with_econnaborted)
{
	check_on_connect_failure(5, -ECONNABORTED);
}
