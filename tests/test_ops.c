/* SPDX-License-Identifier: MIT */
/*
 * The connection-ops contracts (cpool.h, struct cpool_conn_ops), against
 * the project's fault server: open once per connect and close once per
 * close, on every path that closes (worker, release, removal, destroy,
 * release after destroy, fork child, EMFILE); check only on an idle
 * connection its caller owns, never during a lease or on two threads, with
 * the fd nonblocking; check_idle_ms pings only idle-enough connections; a
 * dead verdict closes with its reason; stuck bytes close after two looks;
 * release can refuse reuse; quiet closes see /dev/null, loud ones the
 * socket; dial replaces the pool's connect and keeps its mode.
 *
 * Every hook counts into a struct rec; each connection's context is a
 * struct cctx allocated by open (or dial) and freed by close, so a second
 * close would be a use after free (ASan) as well as a count mismatch.
 */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "util/check.h"
#include "util/waitfor.h"
#include "util/leakcheck.h"

TestSuite(ops, .timeout = 60, .fini = leak_fini);

#define CCTX_MAGIC 0x636f6e6eu

struct cctx {
	unsigned magic;
	atomic_int leased;	/* the test's own mark, set while it holds it */
	atomic_int in_check;
	int closes;
	bool dirty;		/* "a reply left unread": release refuses */
};

struct rec {
	atomic_int opens, closes, checks, releases, dials, on_connects;
	atomic_int quiet_closes, loud_closes;
	atomic_int closes_seen_null; /* quiet closes whose fd was /dev/null */
	atomic_int closes_seen_sock; /* loud closes whose fd was a socket */
	atomic_int violations;	     /* a contract broken: see bad[] */
	char bad[160];
	atomic_int check_ping;	     /* checks with tcp == CPOOL_ALIVE */
	atomic_int check_data;	     /* ... with tcp == CPOOL_UNEXPECTED_DATA */
	atomic_int check_nonblock;   /* checks that found O_NONBLOCK set */
	bool want_on_connect;	/* open must find on_connect ran first */
	int reused_fd;		/* close_closes_fd: the number, taken again */
	atomic_int closed_reason[CPOOL_CLOSE_REASON_COUNT];
	/* behaviour */
	int open_err;		/* open returns this */
	enum cpool_verdict check_says; /* when bytes wait */
	bool check_drains;	/* check reads the bytes away */
	bool refuse_release;	/* release refuses when the ctx is marked */
	bool close_writes;	/* close writes a goodbye to the fd */
	bool dial_nonblock;
	bool close_closes_fd;	/* close returns 1 after closing the fd */
	const char *address;
};

static void
violation(struct rec *r, const char *what)
{
	if (atomic_fetch_add(&r->violations, 1) == 0)
		snprintf(r->bad, sizeof(r->bad), "%s", what);
}

static int
op_dial(const char *address, const struct sockaddr *sa, socklen_t salen,
	unsigned timeout_ms, void **ctx, void *arg)
{
	struct rec *r = arg;
	struct cctx *x;
	int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd == -1)
		return -errno;
	if (timeout_ms == 0 || strcmp(address, r->address))
		violation(r, "dial: bad timeout or address");
	if (connect(fd, sa, salen) == -1) {
		int err = -errno;

		close(fd);
		return err;
	}
	if (r->dial_nonblock)
		fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	x = calloc(1, sizeof(*x));
	x->magic = CCTX_MAGIC;
	*ctx = x;
	atomic_fetch_add(&r->dials, 1);
	return fd;
}

static int
op_on_connect(int fd, const char *address, void *user_data)
{
	struct rec *r = user_data;

	atomic_fetch_add(&r->on_connects, 1);
	return 0;
}

static int
op_open(struct cpool_conn *c, unsigned timeout_ms, void *arg)
{
	struct rec *r = arg;
	struct cctx *x;

	if (r->want_on_connect &&
	    atomic_load(&r->on_connects) <= atomic_load(&r->opens))
		violation(r, "open: before on_connect");
	if (timeout_ms == 0 || strcmp(cpool_conn_address(c), r->address) ||
	    cpool_conn_reused(c))
		violation(r, "open: bad timeout, address or reused");
	if (r->open_err)
		return r->open_err;
	if (!cpool_conn_ctx(c)) { /* dial made one already */
		x = calloc(1, sizeof(*x));
		x->magic = CCTX_MAGIC;
		cpool_conn_set_ctx(c, x);
	}
	atomic_fetch_add(&r->opens, 1);
	return 0;
}

static enum cpool_verdict
op_check(struct cpool_conn *c, enum cpool_verdict tcp, void *arg)
{
	struct rec *r = arg;
	struct cctx *x = cpool_conn_ctx(c);
	int fd = cpool_conn_fd(c), fl = fcntl(fd, F_GETFL);
	enum cpool_verdict v = CPOOL_ALIVE;
	char buf[4096];

	atomic_fetch_add(&r->checks, 1);
	if (!x || x->magic != CCTX_MAGIC)
		violation(r, "check: no context");
	else if (atomic_load(&x->leased))
		violation(r, "check: during a lease");
	else if (atomic_fetch_add(&x->in_check, 1))
		violation(r, "check: on two threads");
	if (fl & O_NONBLOCK)
		atomic_fetch_add(&r->check_nonblock, 1);
	if (tcp == CPOOL_ALIVE) {
		atomic_fetch_add(&r->check_ping, 1);
	} else if (tcp == CPOOL_UNEXPECTED_DATA) {
		atomic_fetch_add(&r->check_data, 1);
		if (r->check_drains)
			while (recv(fd, buf, sizeof(buf), MSG_DONTWAIT) > 0)
				;
		v = r->check_says;
	} else {
		violation(r, "check: tcp verdict neither alive nor data");
	}
	if (x)
		atomic_fetch_sub(&x->in_check, 1);
	return v;
}

static int
op_release(struct cpool_conn *c, void *arg)
{
	struct rec *r = arg;
	struct cctx *x = cpool_conn_ctx(c);

	atomic_fetch_add(&r->releases, 1);
	return r->refuse_release && x && x->dirty;
}

static int
op_close(struct cpool_conn *c, enum cpool_close_reason reason, unsigned flags,
	 void *arg)
{
	struct rec *r = arg;
	struct cctx *x = cpool_conn_ctx(c);
	int fd = cpool_conn_fd(c);
	struct stat st;

	atomic_fetch_add(&r->closes, 1);
	if ((unsigned)reason < CPOOL_CLOSE_REASON_COUNT)
		atomic_fetch_add(&r->closed_reason[reason], 1);
	if (!x || x->magic != CCTX_MAGIC)
		violation(r, "close: no context");
	else if (x->closes++ > 0)
		violation(r, "close: twice");
	else if (atomic_load(&x->leased) || atomic_load(&x->in_check))
		violation(r, "close: during a lease or a check");
	if (fstat(fd, &st) == -1) {
		violation(r, "close: fd not valid");
	} else if (flags & CPOOL_CLOSE_QUIET) {
		atomic_fetch_add(&r->quiet_closes, 1);
		if (S_ISCHR(st.st_mode))
			atomic_fetch_add(&r->closes_seen_null, 1);
	} else {
		atomic_fetch_add(&r->loud_closes, 1);
		if (S_ISSOCK(st.st_mode))
			atomic_fetch_add(&r->closes_seen_sock, 1);
	}
	if (r->close_writes) /* a goodbye: to nobody when quiet */
		(void)!send(fd, "BYE\n", 4, MSG_NOSIGNAL | MSG_DONTWAIT);
	if (x)
		x->magic = 0;
	free(x);
	cpool_conn_set_ctx(c, NULL);
	if (r->close_closes_fd) {
		/* It closes the socket, and the number is taken again at
		 * once (as by another thread of the host): dup2 does both. */
		int n = open("/dev/null", O_RDONLY | O_CLOEXEC);

		dup2(n, fd);
		close(n);
		r->reused_fd = fd;
		return 1;
	}
	return 0;
}

static const struct cpool_conn_ops full_ops = {
	.size = sizeof(struct cpool_conn_ops),
	.open = op_open,
	.check = op_check,
	.release = op_release,
	.close = op_close,
};

static struct cpool *
ops_pool(struct cpool_config *cfg, const struct cpool_conn_ops *ops,
	 struct rec *r, struct fault_server *fs)
{
	struct cpool *pool;

	r->address = fs_address(fs);
	cfg->conn_ops = ops;
	cfg->conn_ops_arg = r;
	pool = pool_new(cfg);
	assert_ret(cpool_endpoint_add(pool, fs_address(fs)), 0);
	return pool;
}

static void
cfg_init(struct cpool_config *cfg)
{
	cpool_config_init(cfg);
	cfg->workers = 2;
}

/*
 * Waits for a hook counter: the pool counts a close in its stats before it
 * runs the close op, so a stats wait alone does not see the op done.
 */
static int
wait_count(atomic_int *n, int want)
{
	for (int64_t end = now_ms() + WAIT_MS;
	     atomic_load(n) < want && now_ms() < end;)
		pause_ms(1);
	return atomic_load(n);
}

static void
assert_clean(struct rec *r)
{
	cr_assert_eq(atomic_load(&r->violations), 0, "contract broken %d times, first: %s",
		     atomic_load(&r->violations), r->bad);
}

static struct cpool_conn *
lease_marked(struct cpool *pool, const char *address)
{
	struct cpool_conn *c = lease(pool, address);
	struct cctx *x = cpool_conn_ctx(c);

	cr_assert_not_null(x, "a lease without the context open set");
	cr_assert_eq(x->magic, CCTX_MAGIC);
	atomic_store(&x->leased, 1);
	return c;
}

static void
release_marked(struct cpool_conn *c, unsigned flags)
{
	atomic_store(&((struct cctx *)cpool_conn_ctx(c))->leased, 0);
	cpool_release(c, flags);
}

Test(ops, config_rejects_bad_ops_and_copies_them)
{
	struct cpool_conn_ops ops = full_ops;
	struct cpool_config cfg;
	struct cpool *pool = NULL;
	struct {
		struct cpool_conn_ops o;
		char extra[8];
	} big;

	cfg_init(&cfg);
	cfg.conn_ops = &ops;
	ops.size = sizeof(size_t);
	assert_ret(cpool_create(&cfg, &pool), -EINVAL);
	memset(&big, 0, sizeof(big));
	big.o = full_ops;
	big.o.size = sizeof(big);
	big.extra[3] = 1;
	cfg.conn_ops = &big.o;
	assert_ret(cpool_create(&cfg, &pool), -EINVAL);
	big.extra[3] = 0;
	pool = pool_new(&cfg); /* zero bytes past the struct: fine */
	cpool_destroy(pool);
	pool = NULL;
	ops = full_ops;
	ops.check = NULL;
	cfg.conn_ops = &ops;
	cfg.check_idle_ms = 10;
	assert_ret(cpool_create(&cfg, &pool), -EINVAL);
	cfg.conn_ops = NULL;
	assert_ret(cpool_create(&cfg, &pool), -EINVAL);
	cr_assert_null(pool);
}

Test(ops, ops_are_copied_at_create)
{
	struct fault_server *fs = fs_start(FS_INET);
	struct cpool_conn_ops ops = full_ops;
	struct cpool_config cfg;
	struct rec r = { 0 };
	struct cpool *pool;
	struct cpool_conn *c;

	cfg_init(&cfg);
	pool = ops_pool(&cfg, &ops, &r, fs);
	memset(&ops, 0, sizeof(ops)); /* the pool has its own copy */
	c = lease_marked(pool, fs_address(fs));
	release_marked(c, 0);
	cpool_destroy(pool);
	cr_assert_eq(atomic_load(&r.opens), 1);
	cr_assert_eq(atomic_load(&r.releases), 1);
	cr_assert_eq(atomic_load(&r.closes), 1);
	assert_clean(&r);
	fs_stop(fs);
}

Test(ops, open_after_on_connect_once_per_connect_close_once_per_close)
{
	struct fault_server *fs = fs_start(FS_INET);
	struct cpool_conn *c[8];
	struct cpool_config cfg;
	struct cpool_stats st;
	struct rec r = { 0 };
	struct cpool *pool;
	unsigned long long closed = 0;

	cfg_init(&cfg);
	cfg.on_connect = op_on_connect;
	cfg.user_data = &r;
	cfg.max_uses = 3;
	r.want_on_connect = true;
	pool = ops_pool(&cfg, &full_ops, &r, fs);
	for (int round = 0; round < 4; round++) {
		for (int i = 0; i < 8; i++)
			c[i] = lease_marked(pool, fs_address(fs));
		for (int i = 0; i < 8; i++) {
			assert_echo(c[i], "ping");
			release_marked(c[i], 0);
		}
	}
	st = stats_of(pool, fs_address(fs));
	cr_assert_eq(atomic_load(&r.opens), (int)st.connects,
		     "opens %d connects %llu", atomic_load(&r.opens),
		     (unsigned long long)st.connects);
	cr_assert_eq(atomic_load(&r.on_connects), (int)st.connects);
	/* 32 leases, max_uses 3: 8 closed at the third lease (max_uses) */
	assert_stat(st, connects, 16);
	assert_stat(st, closed[CPOOL_CLOSE_MAX_USES], 8);
	cr_assert_eq(atomic_load(&r.closes), 8);
	cr_assert_eq(atomic_load(&r.releases), 24, "release op at the 24 "
		     "releases that would pool; got %d", atomic_load(&r.releases));
	cpool_destroy(pool);
	for (int i = 0; i < CPOOL_CLOSE_REASON_COUNT; i++)
		closed += (unsigned long long)atomic_load(&r.closed_reason[i]);
	cr_assert_eq(atomic_load(&r.closes), 16, "closes %d want 16",
		     atomic_load(&r.closes));
	cr_assert_eq(atomic_load(&r.closed_reason[CPOOL_CLOSE_SHUTDOWN]), 8);
	cr_assert_eq(atomic_load(&r.loud_closes), 16);
	cr_assert_eq(atomic_load(&r.closes_seen_sock), 16);
	assert_clean(&r);
	fs_stop(fs);
}

/* Threads lease, exchange and release while the server keeps sending
 * stray bytes: checks run at checkout and in the workers, never in a lease,
 * never on two threads at once. */
struct churn {
	struct cpool *pool;
	const char *addr;
	atomic_int stop;
	atomic_int errors;
};

static void *
churn_main(void *arg)
{
	struct churn *ch = arg;
	struct cpool_conn *c;
	char buf[64];

	while (!atomic_load(&ch->stop)) {
		if (cpool_acquire(ch->pool, ch->addr, &c)) {
			atomic_fetch_add(&ch->errors, 1);
			continue;
		}
		atomic_store(&((struct cctx *)cpool_conn_ctx(c))->leased, 1);
		/* Bytes sent during the lease are the lease's: drain them. */
		while (recv(cpool_conn_fd(c), buf, sizeof(buf), MSG_DONTWAIT) > 0)
			;
		sched_yield();
		release_marked(c, 0);
	}
	return NULL;
}

Test(ops, check_only_on_an_owned_idle_connection_never_in_a_lease)
{
	struct fault_server *fs = fs_start(FS_INET);
	struct churn ch = { 0 };
	struct cpool_config cfg;
	struct cpool_stats st;
	struct rec r = { 0 };
	pthread_t t[4];
	int sends = 0;

	cfg_init(&cfg);
	cfg.max_conns_per_endpoint = 6;
	r.check_drains = true;
	r.check_says = CPOOL_ALIVE;
	ch.pool = ops_pool(&cfg, &full_ops, &r, fs);
	ch.addr = fs_address(fs);
	for (int i = 0; i < 4; i++)
		cr_assert_eq(pthread_create(&t[i], NULL, churn_main, &ch), 0);
	/* Until both paths ran a check a few times (workers and checkout). */
	for (int64_t end = now_ms() + WAIT_MS;
	     now_ms() < end && atomic_load(&r.check_data) < 200;) {
		sends += fs_send_all(fs, "stray", 5);
		pause_ms(1);
	}
	atomic_store(&ch.stop, 1);
	for (int i = 0; i < 4; i++)
		pthread_join(t[i], NULL);
	cr_assert_geq(atomic_load(&r.check_data), 200,
		      "only %d checks for %d sends", atomic_load(&r.check_data),
		      sends);
	cr_assert_eq(atomic_load(&ch.errors), 0, "%d acquires failed",
		     atomic_load(&ch.errors));
	cr_assert_eq(atomic_load(&r.check_nonblock), atomic_load(&r.checks),
		     "%d of %d checks ran on a blocking fd",
		     atomic_load(&r.checks) - atomic_load(&r.check_nonblock),
		     atomic_load(&r.checks));
	st = stats_of(ch.pool, ch.addr);
	assert_stat(st, closed[CPOOL_CLOSE_UNEXPECTED_DATA], 0);
	cpool_destroy(ch.pool);
	cr_assert_eq(atomic_load(&r.closes), atomic_load(&r.opens));
	assert_clean(&r);
	fs_stop(fs);
}

Test(ops, lease_fd_is_blocking_again_after_a_check)
{
	struct fault_server *fs = fs_start(FS_INET);
	struct cpool_config cfg;
	struct rec r = { 0 };
	struct cpool *pool;
	struct cpool_conn *c;
	struct cpool_stats st;

	cfg_init(&cfg);
	r.check_drains = true;
	r.check_says = CPOOL_ALIVE;
	pool = ops_pool(&cfg, &full_ops, &r, fs);
	c = lease_marked(pool, fs_address(fs));
	release_marked(c, 0);
	cr_assert_eq(fs_send_all(fs, "x", 1), 1);
	/* Until a check took the byte (worker or the checkout below). */
	for (int64_t end = now_ms() + WAIT_MS;
	     atomic_load(&r.check_data) == 0 && now_ms() < end;)
		pause_ms(1);
	c = lease_marked(pool, fs_address(fs));
	cr_assert_eq(atomic_load(&r.check_data), 1);
	cr_assert_eq(atomic_load(&r.check_nonblock), 1);
	cr_assert_eq(fcntl(cpool_conn_fd(c), F_GETFL) & O_NONBLOCK, 0,
		     "the lease's fd was left nonblocking");
	assert_echo(c, "after");
	release_marked(c, 0);
	st = stats_of(pool, fs_address(fs));
	assert_stat(st, connects, 1);
	cpool_destroy(pool);
	assert_clean(&r);
	fs_stop(fs);
}

Test(ops, check_idle_ms_pings_only_connections_idle_that_long)
{
	struct fault_server *fs = fs_start(FS_INET);
	struct cpool_config cfg;
	struct rec r = { 0 };
	struct cpool *pool;
	struct cpool_conn *c;
	int64_t released;

	cfg_init(&cfg);
	cfg.check_idle_ms = 300;
	pool = ops_pool(&cfg, &full_ops, &r, fs);
	for (int i = 0; i < 20; i++) { /* back to back: never idle 300 ms */
		c = lease_marked(pool, fs_address(fs));
		release_marked(c, 0);
	}
	cr_assert_eq(atomic_load(&r.checks), 0, "%d pings of a hot connection",
		     atomic_load(&r.checks));
	released = now_ms();
	while (now_ms() - released < 400) /* age it past check_idle_ms */
		pause_ms(10);
	c = lease_marked(pool, fs_address(fs));
	cr_assert_eq(atomic_load(&r.check_ping), 1);
	cr_assert_eq(atomic_load(&r.checks), 1);
	release_marked(c, 0);
	c = lease_marked(pool, fs_address(fs)); /* fresh again: no ping */
	cr_assert_eq(atomic_load(&r.checks), 1);
	release_marked(c, 0);
	cpool_destroy(pool);
	assert_clean(&r);
	fs_stop(fs);
}

Test(ops, a_dead_verdict_closes_with_its_reason)
{
	struct fault_server *fs = fs_start(FS_INET);
	struct cpool_config cfg;
	struct cpool_stats st;
	struct rec r = { 0 };
	struct cpool *pool;
	struct cpool_conn *c;

	cfg_init(&cfg);
	r.check_says = CPOOL_PEER_RESET; /* "the protocol's goodbye" */
	pool = ops_pool(&cfg, &full_ops, &r, fs);
	c = lease_marked(pool, fs_address(fs));
	release_marked(c, 0);
	cr_assert_eq(fs_send_all(fs, "FATAL", 5), 1);
	assert_stats_wait(pool, fs_address(fs), st,
			  st.closed[CPOOL_CLOSE_PEER_RESET] == 1, WAIT_MS);
	unsigned long long want[CPOOL_CLOSE_REASON_COUNT] = { 0 };
	want[CPOOL_CLOSE_PEER_RESET] = 1;
	assert_closed_only(&st, want);
	cr_assert_eq(atomic_load(&r.check_data), 1);
	cr_assert_eq(wait_count(&r.closes, 1), 1);
	cr_assert_eq(atomic_load(&r.quiet_closes), 1, "peer_reset is quiet");
	cr_assert_eq(atomic_load(&r.closes_seen_null), 1,
		     "a quiet close saw the socket, not /dev/null");
	c = lease_marked(pool, fs_address(fs)); /* a fresh one */
	cr_assert_not(cpool_conn_reused(c));
	release_marked(c, 0);
	cpool_destroy(pool);
	assert_clean(&r);
	fs_stop(fs);
}

Test(ops, bytes_an_alive_check_leaves_close_after_two_looks)
{
	struct fault_server *fs = fs_start(FS_INET);
	struct cpool_config cfg;
	struct cpool_stats st;
	struct rec r = { 0 };
	struct cpool *pool;
	struct cpool_conn *c;

	cfg_init(&cfg);
	r.check_says = CPOOL_ALIVE; /* and leaves the bytes where they are */
	pool = ops_pool(&cfg, &full_ops, &r, fs);
	c = lease_marked(pool, fs_address(fs));
	release_marked(c, 0);
	cr_assert_eq(fs_send_all(fs, "stuck", 5), 1);
	assert_stats_wait(pool, fs_address(fs), st,
			  st.closed[CPOOL_CLOSE_UNEXPECTED_DATA] == 1, WAIT_MS);
	cr_assert_eq(atomic_load(&r.check_data), 2,
		     "checks of the stuck bytes: got %d want 2",
		     atomic_load(&r.check_data));
	cr_assert_eq(wait_count(&r.closes, 1), 1);
	cr_assert_eq(atomic_load(&r.loud_closes), 1, "unexpected_data is not quiet");
	cpool_destroy(pool);
	assert_clean(&r);
	fs_stop(fs);
}

Test(ops, release_can_refuse_reuse)
{
	struct fault_server *fs = fs_start(FS_INET);
	struct cpool_config cfg;
	struct cpool_stats st;
	struct rec r = { 0 };
	struct cpool *pool;
	struct cpool_conn *c;

	cfg_init(&cfg);
	r.refuse_release = true;
	pool = ops_pool(&cfg, &full_ops, &r, fs);
	c = lease_marked(pool, fs_address(fs));
	release_marked(c, 0); /* clean: pooled */
	c = lease_marked(pool, fs_address(fs));
	cr_assert(cpool_conn_reused(c));
	((struct cctx *)cpool_conn_ctx(c))->dirty = true;
	atomic_store(&((struct cctx *)cpool_conn_ctx(c))->leased, 0);
	cpool_release(c, 0);
	st = stats_of(pool, fs_address(fs));
	assert_stat(st, closed[CPOOL_CLOSE_BY_CALLER], 1);
	assert_stat(st, idle, 0);
	cr_assert_eq(atomic_load(&r.releases), 2);
	cr_assert_eq(atomic_load(&r.closes), 1);
	c = lease_marked(pool, fs_address(fs));
	release_marked(c, CPOOL_RELEASE_CLOSE); /* no release op: closing */
	cr_assert_eq(atomic_load(&r.releases), 2);
	cpool_destroy(pool);
	cr_assert_eq(atomic_load(&r.closes), 2);
	assert_clean(&r);
	fs_stop(fs);
}

Test(ops, close_once_across_peer_close_removal_destroy_and_late_release)
{
	struct fault_server *fs = fs_start(FS_INET);
	struct cpool_conn *c[4], *late;
	struct cpool_config cfg;
	struct cpool_stats st;
	struct rec r = { 0 };
	struct cpool *pool;

	cfg_init(&cfg);
	r.close_writes = true;
	pool = ops_pool(&cfg, &full_ops, &r, fs);
	/* the peer closes idle ones: worker, quiet */
	for (int i = 0; i < 4; i++)
		c[i] = lease_marked(pool, fs_address(fs));
	for (int i = 0; i < 4; i++)
		release_marked(c[i], 0);
	cr_assert_eq(fs_close_all(fs), 4);
	assert_stats_wait(pool, fs_address(fs), st,
			  st.closed[CPOOL_CLOSE_PEER_CLOSED] == 4, WAIT_MS);
	cr_assert_eq(wait_count(&r.closes, 4), 4);
	cr_assert_eq(atomic_load(&r.closes_seen_null), 4);
	/* removal with one leased: idle ones now, the lease at release */
	for (int i = 0; i < 3; i++)
		c[i] = lease_marked(pool, fs_address(fs));
	release_marked(c[0], 0);
	release_marked(c[1], 0);
	assert_ret(cpool_endpoint_remove(pool, fs_address(fs)), 0);
	cr_assert_eq(atomic_load(&r.closes), 6);
	release_marked(c[2], 0);
	cr_assert_eq(atomic_load(&r.closes), 7);
	/* destroy with a lease out; its release after destroy */
	assert_ret(cpool_endpoint_add(pool, fs_address(fs)), 0);
	c[0] = lease_marked(pool, fs_address(fs));
	late = lease_marked(pool, fs_address(fs));
	release_marked(c[0], 0);
	cpool_destroy(pool);
	cr_assert_eq(atomic_load(&r.closes), 8);
	release_marked(late, 0);
	cr_assert_eq(atomic_load(&r.closes), 9);
	cr_assert_eq(atomic_load(&r.opens), 9);
	cr_assert_eq(atomic_load(&r.loud_closes), 5);
	cr_assert_eq(atomic_load(&r.closes_seen_sock), 5);
	assert_clean(&r);
	fs_stop(fs);
}

Test(ops, a_close_that_closes_the_fd_itself_is_not_closed_again)
{
	struct fault_server *fs = fs_start(FS_INET);
	struct cpool_config cfg;
	struct rec r = { 0 };
	struct cpool *pool;
	struct cpool_conn *c;
	int fds0 = count_open_fds(), fd;

	cfg_init(&cfg);
	r.close_closes_fd = true;
	pool = ops_pool(&cfg, &full_ops, &r, fs);
	c = lease_marked(pool, fs_address(fs));
	fd = cpool_conn_fd(c);
	release_marked(c, CPOOL_RELEASE_CLOSE);
	/* The hook closed it and the number was taken again at once (as by
	 * another thread of the host): the pool must not close it. */
	cr_assert_eq(r.reused_fd, fd);
	cr_assert_neq(fcntl(r.reused_fd, F_GETFD), -1,
		      "the pool closed the fd its close op had closed");
	close(r.reused_fd);
	cpool_destroy(pool);
	cr_assert_eq(atomic_load(&r.closes), 1);
	cr_assert_eq(fs_wait_open(fs, 0, WAIT_MS), 0);
	cr_assert_eq(count_open_fds(), fds0);
	assert_clean(&r);
	fs_stop(fs);
}

Test(ops, failing_open_fails_the_acquire_and_owes_no_close)
{
	struct fault_server *fs = fs_start(FS_INET);
	struct cpool_config cfg;
	struct cpool_stats st;
	struct rec r = { 0 };
	struct cpool *pool;
	struct cpool_conn *c = NULL;
	int fds0 = count_open_fds();

	cfg_init(&cfg);
	r.open_err = -EACCES;
	pool = ops_pool(&cfg, &full_ops, &r, fs);
	assert_ret(cpool_acquire(pool, fs_address(fs), &c), -EACCES);
	cr_assert_null(c);
	st = stats_of(pool, fs_address(fs));
	assert_stat(st, connects, 0);
	assert_stat(st, connect_failures, 1);
	assert_stat(st, open, 0);
	cr_assert_eq(atomic_load(&r.closes), 0);
	cpool_destroy(pool);
	cr_assert_eq(fs_wait_open(fs, 0, WAIT_MS), 0);
	cr_assert_eq(count_open_fds(), fds0);
	assert_clean(&r);
	fs_stop(fs);
}

Test(ops, dial_replaces_the_connect_keeps_its_mode_gets_tcp_options)
{
	struct fault_server *fs = fs_start(FS_INET);
	struct cpool_conn_ops ops = full_ops;
	struct cpool_config cfg;
	struct cpool_stats st;
	struct rec r = { 0 };
	struct cpool *pool;
	struct cpool_conn *c;
	socklen_t len = sizeof(int);
	int on = 0, nodelay = 0, fd;
	char buf[8];

	ops.dial = op_dial;
	ops.open = NULL;
	cfg_init(&cfg);
	r.dial_nonblock = true;
	pool = ops_pool(&cfg, &ops, &r, fs);
	c = lease_marked(pool, fs_address(fs));
	fd = cpool_conn_fd(c);
	cr_assert_eq(atomic_load(&r.dials), 1);
	cr_assert_eq(getsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, &len), 0);
	cr_assert_eq(getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &nodelay, &len), 0);
	cr_assert(on && nodelay, "keepalive %d nodelay %d on a dialed fd", on,
		  nodelay);
	cr_assert_neq(fcntl(fd, F_GETFL) & O_NONBLOCK, 0,
		      "dial's nonblocking mode was changed");
	/* Nothing to read on a nonblocking dialed fd: not broken. */
	assert_ret(cpool_recv(c, buf, sizeof(buf)), -EAGAIN);
	release_marked(c, 0);
	st = stats_of(pool, fs_address(fs));
	assert_stat(st, idle, 1);
	c = lease_marked(pool, fs_address(fs));
	cr_assert(cpool_conn_reused(c));
	assert_ret(cpool_send(c, "dialed", 6), 6);
	cr_assert(wait_fd(cpool_conn_fd(c), POLLIN, WAIT_MS) & POLLIN);
	assert_ret(cpool_recv(c, buf, sizeof(buf)), 6);
	release_marked(c, 0);
	cpool_destroy(pool);
	cr_assert_eq(atomic_load(&r.closes), 1);
	assert_clean(&r);
	fs_stop(fs);
}

static int
op_open_fails(struct cpool_conn *c, unsigned timeout_ms, void *arg)
{
	return -EPROTO;
}

Test(ops, a_failing_open_after_dial_closes_quietly_once)
{
	struct fault_server *fs = fs_start(FS_INET);
	struct cpool_conn_ops ops = full_ops;
	struct cpool_config cfg;
	struct rec r = { 0 };
	struct cpool *pool;
	struct cpool_conn *c = NULL;
	int fds0 = count_open_fds();

	ops.dial = op_dial;
	ops.open = op_open_fails;
	cfg_init(&cfg);
	pool = ops_pool(&cfg, &ops, &r, fs);
	assert_ret(cpool_acquire(pool, fs_address(fs), &c), -EPROTO);
	cr_assert_eq(atomic_load(&r.dials), 1);
	cr_assert_eq(atomic_load(&r.closes), 1);
	cr_assert_eq(atomic_load(&r.closed_reason[CPOOL_CLOSE_SOCKET_ERROR]), 1);
	cr_assert_eq(atomic_load(&r.quiet_closes), 1);
	cpool_destroy(pool);
	cr_assert_eq(fs_wait_open(fs, 0, WAIT_MS), 0);
	cr_assert_eq(count_open_fds(), fds0);
	assert_clean(&r);
	fs_stop(fs);
}

static int
max_open_fd(void)
{
	int max = -1;

	for (int fd = 0; fd < 4096; fd++)
		if (fcntl(fd, F_GETFD) != -1)
			max = fd;
	return max;
}

/* Real exhaustion: every fd number below the limit in use. */
Test(ops, quiet_closes_work_at_emfile)
{
	struct fault_server *fs = fs_start(FS_INET);
	struct cpool_conn *c[2], *x = NULL;
	struct cpool_config cfg;
	struct cpool_stats st;
	struct rec r = { 0 };
	struct rlimit old, low;
	struct cpool *pool;
	int fill[64], nfill = 0, fd0;
	bool taken = false;

	cfg_init(&cfg);
	r.close_writes = true;
	pool = ops_pool(&cfg, &full_ops, &r, fs);
	c[0] = lease_marked(pool, fs_address(fs));
	c[1] = lease_marked(pool, fs_address(fs));
	fd0 = cpool_conn_fd(c[0]);
	release_marked(c[0], 0);
	/* The peer resets both (one idle, one leased) ... */
	cr_assert_eq(fs_reset_all(fs), 2);
	cr_assert(wait_fd(cpool_conn_fd(c[1]), POLLERR, WAIT_MS) & POLLERR);
	/* ... and the process cannot open one more fd. */
	cr_assert_eq(getrlimit(RLIMIT_NOFILE, &old), 0);
	low = old;
	low.rlim_cur = (rlim_t)max_open_fd() + 1;
	cr_assert_eq(setrlimit(RLIMIT_NOFILE, &low), 0);
	while (nfill < 63 && (fill[nfill] = open("/dev/null", O_RDONLY)) >= 0)
		nfill++; /* every number below the limit taken */
	cr_assert_eq(errno, EMFILE);
	/*
	 * The worker watching the idle one closes it, quiet: before the fill
	 * or after it, at EMFILE. The number it frees, once the pool's
	 * close(2) ran after the close op, is taken again when the fill did
	 * not get it: the connect below would have it (it did, once in CI).
	 */
	cr_assert_eq(wait_count(&r.closes, 1), 1);
	for (int i = 0; i < nfill; i++)
		taken |= fill[i] == fd0;
	if (!taken) {
		for (int64_t end = now_ms() + WAIT_MS;
		     fcntl(fd0, F_GETFD) != -1 && now_ms() < end;)
			pause_ms(1);
		fill[nfill] = open("/dev/null", O_RDONLY);
		cr_assert_eq(fill[nfill], fd0,
			     "took fd %d: want the closed one's %d", fill[nfill],
			     fd0);
		nfill++;
	}
	cr_assert_eq(open("/dev/null", O_RDONLY), -1);
	cr_assert_eq(errno, EMFILE);
	/* Checkout: nothing idle; the connect fails with EMFILE. */
	assert_ret(cpool_acquire(pool, fs_address(fs), &x), -EMFILE);
	cr_assert_eq(atomic_load(&r.closes), 1);
	/* The lease goes back, the worker finds the RST: quiet again. */
	atomic_store(&((struct cctx *)cpool_conn_ctx(c[1]))->leased, 0);
	cpool_release(c[1], 0);
	assert_stats_wait(pool, fs_address(fs), st,
			  st.closed[CPOOL_CLOSE_PEER_RESET] == 2, WAIT_MS);
	wait_count(&r.closes, 2);
	while (nfill)
		close(fill[--nfill]);
	setrlimit(RLIMIT_NOFILE, &old);
	cr_assert_eq(atomic_load(&r.closes), 2);
	cr_assert_eq(atomic_load(&r.quiet_closes), 2);
	cr_assert_eq(atomic_load(&r.closes_seen_null), 2,
		     "at EMFILE %d of 2 quiet closes saw /dev/null",
		     atomic_load(&r.closes_seen_null));
	cpool_destroy(pool);
	cr_assert_eq(atomic_load(&r.opens), 2);
	cr_assert_eq(atomic_load(&r.closes), 2);
	assert_clean(&r);
	fs_stop(fs);
}

Test(ops, a_fork_child_closes_its_copies_quietly_and_the_parent_keeps_them)
{
	struct fault_server *fs = fs_start(FS_INET);
	struct cpool_conn *c[3];
	struct cpool_config cfg;
	struct rec r = { 0 };
	struct cpool *pool;
	int pfd[2], status, got[3] = { 0 };
	pid_t pid;

	stay_on_this_cpu(); /* the re-leases below reuse, not steal */
	cfg_init(&cfg);
	r.close_writes = true; /* a child's goodbye would reach the server */
	pool = ops_pool(&cfg, &full_ops, &r, fs);
	for (int i = 0; i < 3; i++)
		c[i] = lease_marked(pool, fs_address(fs));
	for (int i = 0; i < 3; i++)
		release_marked(c[i], 0);
	cr_assert_eq(pipe(pfd), 0);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		int res[3];

		cpool_destroy(pool);
		res[0] = atomic_load(&r.closes);
		res[1] = atomic_load(&r.quiet_closes);
		res[2] = atomic_load(&r.closes_seen_null);
		_exit(write(pfd[1], res, sizeof(res)) == sizeof(res) ? 0 : 1);
	}
	close(pfd[1]);
	cr_assert_eq(read(pfd[0], got, sizeof(got)), (ssize_t)sizeof(got));
	close(pfd[0]);
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	cr_assert_eq(got[0], 3, "child closes %d want 3", got[0]);
	cr_assert_eq(got[1], 3, "child quiet closes %d want 3", got[1]);
	cr_assert_eq(got[2], 3, "child closes on /dev/null %d want 3", got[2]);
	/* The parent's connections: intact, no goodbye in their streams. */
	for (int i = 0; i < 3; i++)
		c[i] = lease_marked(pool, fs_address(fs));
	for (int i = 0; i < 3; i++) {
		cr_assert(cpool_conn_reused(c[i]));
		assert_echo(c[i], "parent");
		release_marked(c[i], 0);
	}
	cr_assert_eq(atomic_load(&r.closes), 0);
	cpool_destroy(pool);
	cr_assert_eq(atomic_load(&r.closes), 3);
	assert_clean(&r);
	fs_stop(fs);
}
