/* SPDX-License-Identifier: MIT */
/*
 * Real clients over pooled fds: hiredis driving a real redis-server on the
 * pool's socket (redisConnectFd(), then redisFreeKeepFd() before the
 * release), and the memcached text protocol against a real memcached.
 *
 * Each server test runs batches of requests from several threads and
 * restarts the server between batches on the same port (kill by pid, start
 * again, wait until it answers with its new pid). Before the next batch the
 * restart *settles* on an observable condition, never a sleep: either
 * every pooled socket has seen the old server's close (poll on the fds the
 * batch used: the checkout probe or the worker must then reject them), or
 * the pool's open count fell to 0 (the workers evicted every connection
 * with nobody calling the pool). The next batch must then have zero
 * failures, and the data must come from the new instance (counters restart
 * at 1, keys from before are gone): the pool never hands out a connection
 * to the dead server.
 */
#include <criterion/criterion.h>
#include <hiredis/hiredis.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "util/check.h"
#include "util/realsrv.h"
#include "util/leakcheck.h"

TestSuite(realclients, .timeout = 120, .fini = leak_fini);

#define THREADS 4
#define OPS 150	/* per thread and batch */
#define MAX_FDS 64

enum settle {
	SETTLE_CLOSE_SEEN,	/* every pooled fd saw the close */
	SETTLE_EVICTED,		/* the workers closed every connection */
};

struct batch {
	struct cpool *pool;
	const char *addr;
	enum realsrv_kind kind;
	unsigned round;		/* batch number */
	bool fresh_server;	/* first batch on a new server instance */

	pthread_mutex_t lock;
	int failures;
	char first[256];
	int fds[MAX_FDS];	/* fds leased in this batch */
	int nfds;
};

struct worker {
	struct batch *b;
	unsigned idx;
	long long incr;		/* redis: last INCR value, per thread */
};

static void
batch_fail(struct batch *b, const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&b->lock);
	if (!b->failures++) {
		va_start(ap, fmt);
		vsnprintf(b->first, sizeof(b->first), fmt, ap);
		va_end(ap);
	}
	pthread_mutex_unlock(&b->lock);
}

static void
batch_note_fd(struct batch *b, int fd)
{
	pthread_mutex_lock(&b->lock);
	for (int i = 0; i < b->nfds; i++)
		if (b->fds[i] == fd)
			goto out;
	if (b->nfds < MAX_FDS)
		b->fds[b->nfds++] = fd;
out:
	pthread_mutex_unlock(&b->lock);
}

/* ---- redis through hiredis ---------------------------------------------- */

/* A reply of @type, or NULL with the failure recorded. */
static redisReply *
redis_expect(struct batch *b, redisContext *ctx, int type, const char *what,
	     const char *fmt, ...)
{
	redisReply *r;
	va_list ap;

	va_start(ap, fmt);
	r = redisvCommand(ctx, fmt, ap);
	va_end(ap);
	if (!r) {
		batch_fail(b, "round %u: %s: hiredis error %d \"%s\"",
			   b->round, what, ctx->err, ctx->errstr);
		return NULL;
	}
	if (r->type != type) {
		batch_fail(b, "round %u: %s: reply type %d (\"%s\") want %d",
			   b->round, what, r->type, r->str ? r->str : "",
			   type);
		freeReplyObject(r);
		return NULL;
	}
	return r;
}

/*
 * One lease, the README recipe: wrap the pooled fd, run commands, unwrap
 * with redisFreeKeepFd() (the fd is the pool's), release with 0 only when
 * every reply came back.
 */
static bool
redis_op(struct worker *w, unsigned op)
{
	struct batch *b = w->b;
	struct timeval tv = { .tv_sec = 5 };
	struct cpool_conn *c;
	redisContext *ctx;
	redisReply *r;
	char val[64];
	bool ok = false;
	int err = cpool_acquire(b->pool, b->addr, &c);

	if (err) {
		batch_fail(b, "round %u: cpool_acquire: %s", b->round,
			   strerror(-err));
		return false;
	}
	batch_note_fd(b, cpool_conn_fd(c));
	ctx = redisConnectFd(cpool_conn_fd(c));
	if (!ctx || ctx->err) {
		batch_fail(b, "redisConnectFd failed");
		goto out;
	}
	redisSetTimeout(ctx, tv); /* SO_RCVTIMEO/SO_SNDTIMEO on the fd */
	snprintf(val, sizeof(val), "v-%u-%u-%u", b->round, w->idx, op);
	r = redis_expect(b, ctx, REDIS_REPLY_STATUS, "SET",
			 "SET rc:%u:%u %s", w->idx, op % 8, val);
	if (!r)
		goto out;
	freeReplyObject(r);
	r = redis_expect(b, ctx, REDIS_REPLY_STRING, "GET", "GET rc:%u:%u",
			 w->idx, op % 8);
	if (!r)
		goto out;
	if (strcmp(r->str, val)) {
		batch_fail(b, "round %u: GET \"%s\" want \"%s\"", b->round,
			   r->str, val);
		freeReplyObject(r);
		goto out;
	}
	freeReplyObject(r);
	/* the key of the previous round is gone only after a restart */
	if (op == 0 && b->round > 0) {
		r = redisCommand(ctx, "EXISTS rc:round:%u:%u", b->round - 1,
				 w->idx);
		if (!r || r->type != REDIS_REPLY_INTEGER ||
		    r->integer != (b->fresh_server ? 0 : 1)) {
			batch_fail(b, "round %u: EXISTS of the last round's "
				   "key: %lld, want %d", b->round,
				   r ? r->integer : -1LL,
				   b->fresh_server ? 0 : 1);
			if (r)
				freeReplyObject(r);
			goto out;
		}
		freeReplyObject(r);
	}
	if (op == 0) {
		r = redis_expect(b, ctx, REDIS_REPLY_STATUS, "SET round",
				 "SET rc:round:%u:%u 1", b->round, w->idx);
		if (!r)
			goto out;
		freeReplyObject(r);
	}
	r = redis_expect(b, ctx, REDIS_REPLY_INTEGER, "INCR",
			 "INCR rc:ctr:%u", w->idx);
	if (!r)
		goto out;
	/* a new instance starts counting at 1 */
	if (r->integer != (op == 0 && b->fresh_server ? 1 : w->incr + 1)) {
		batch_fail(b, "round %u op %u: INCR gave %lld after %lld%s",
			   b->round, op, r->integer, w->incr,
			   b->fresh_server ? " (fresh server)" : "");
		freeReplyObject(r);
		goto out;
	}
	w->incr = r->integer;
	freeReplyObject(r);
	ok = true;
out:
	if (ctx)
		redisFreeKeepFd(ctx);
	cpool_release(c, ok ? 0 : CPOOL_RELEASE_CLOSE);
	return ok;
}

/* ---- memcached text protocol -------------------------------------------- */

/* Reads exactly strlen(@want) bytes and compares; false on any failure. */
static bool
mc_expect(struct batch *b, struct cpool_conn *c, const char *want,
	  const char *what)
{
	size_t len = strlen(want), got = 0;
	char buf[256];

	while (got < len) {
		ssize_t n = cpool_recv(c, buf + got, len - got);

		if (n <= 0) {
			batch_fail(b, "round %u: %s: recv %zd (%s)", b->round,
				   what, n, n ? strerror((int)-n) : "EOF");
			return false;
		}
		got += (size_t)n;
	}
	if (memcmp(buf, want, len)) {
		batch_fail(b, "round %u: %s: got \"%.*s\" want \"%s\"",
			   b->round, what, (int)len, buf, want);
		return false;
	}
	return true;
}

static bool
mc_send(struct batch *b, struct cpool_conn *c, const char *cmd)
{
	ssize_t n = cpool_send(c, cmd, strlen(cmd));

	if (n != (ssize_t)strlen(cmd)) {
		batch_fail(b, "round %u: send \"%.20s\": %zd (%s)", b->round,
			   cmd, n, n < 0 ? strerror((int)-n) : "short");
		return false;
	}
	return true;
}

static bool
mc_exchange(struct batch *b, struct cpool_conn *c, const char *cmd,
	    const char *want)
{
	return mc_send(b, c, cmd) && mc_expect(b, c, want, cmd);
}

/* set / get / delete / get-miss on one lease; the last round's key. */
static bool
memcached_op(struct worker *w, unsigned op)
{
	struct batch *b = w->b;
	struct timeval tv = { .tv_sec = 5 };
	char cmd[160], want[160], val[64];
	struct cpool_conn *c;
	bool ok = false;
	int err = cpool_acquire(b->pool, b->addr, &c), fd, n;

	if (err) {
		batch_fail(b, "round %u: cpool_acquire: %s", b->round,
			   strerror(-err));
		return false;
	}
	fd = cpool_conn_fd(c);
	batch_note_fd(b, fd);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	n = snprintf(val, sizeof(val), "v-%u-%u-%u", b->round, w->idx, op);
	snprintf(cmd, sizeof(cmd), "set rc:%u 0 0 %d\r\n%s\r\n", w->idx, n,
		 val);
	if (!mc_exchange(b, c, cmd, "STORED\r\n"))
		goto out;
	snprintf(cmd, sizeof(cmd), "get rc:%u\r\n", w->idx);
	snprintf(want, sizeof(want), "VALUE rc:%u 0 %d\r\n%s\r\nEND\r\n",
		 w->idx, n, val);
	if (!mc_exchange(b, c, cmd, want))
		goto out;
	snprintf(cmd, sizeof(cmd), "delete rc:%u\r\n", w->idx);
	if (!mc_exchange(b, c, cmd, "DELETED\r\n"))
		goto out;
	snprintf(cmd, sizeof(cmd), "get rc:%u\r\n", w->idx);
	if (!mc_exchange(b, c, cmd, "END\r\n"))
		goto out;
	if (op == 0 && b->round > 0) {
		/* the last round's key survives unless the server restarted */
		snprintf(cmd, sizeof(cmd), "get rc:round:%u:%u\r\n",
			 b->round - 1, w->idx);
		snprintf(want, sizeof(want),
			 b->fresh_server ? "END\r\n"
					 : "VALUE rc:round:%u:%u 0 1\r\nx\r\nEND\r\n",
			 b->round - 1, w->idx);
		if (!mc_exchange(b, c, cmd, want))
			goto out;
	}
	if (op == 0) {
		snprintf(cmd, sizeof(cmd), "set rc:round:%u:%u 0 0 1\r\nx\r\n",
			 b->round, w->idx);
		if (!mc_exchange(b, c, cmd, "STORED\r\n"))
			goto out;
	}
	ok = true;
out:
	cpool_release(c, ok ? 0 : CPOOL_RELEASE_CLOSE);
	return ok;
}

/* ---- batches, restarts ---------------------------------------------------- */

static void *
batch_thread(void *arg)
{
	struct worker *w = arg;

	for (unsigned op = 0; op < OPS; op++) {
		bool ok = w->b->kind == REALSRV_REDIS ? redis_op(w, op)
						      : memcached_op(w, op);
		if (!ok)
			break;
	}
	return NULL;
}

/* Runs one batch from THREADS threads; asserts it had no failure. */
static void
run_batch(struct batch *b, struct worker *w)
{
	pthread_t tid[THREADS];

	b->failures = 0;
	b->nfds = 0;
	for (unsigned i = 0; i < THREADS; i++)
		cr_assert_eq(pthread_create(&tid[i], NULL, batch_thread, &w[i]),
			     0);
	for (unsigned i = 0; i < THREADS; i++)
		pthread_join(tid[i], NULL);
	cr_assert_eq(b->failures, 0,
		     "%s batch %u: %d failures; the first: %s",
		     realsrv_name(b->kind), b->round, b->failures, b->first);
	b->round++;
	b->fresh_server = false;
}

static unsigned long long
peer_closes(const struct cpool_stats *st)
{
	return st->closed[CPOOL_CLOSE_PEER_CLOSED] +
	       st->closed[CPOOL_CLOSE_PEER_RESET];
}

/* "reason +n, ..." for every close reason counted between @a and @b. */
static const char *
closes_since(const struct cpool_stats *a, const struct cpool_stats *b)
{
	static __thread char buf[256];
	size_t len = 0;

	buf[0] = '\0';
	for (int r = 1; r < CPOOL_CLOSE_REASON_COUNT; r++)
		if (b->closed[r] != a->closed[r] && len < sizeof(buf))
			len += (size_t)snprintf(buf + len, sizeof(buf) - len,
					"%s%s +%llu", len ? ", " : "",
					cpool_close_reason_name(
						(enum cpool_close_reason)r),
					(unsigned long long)(b->closed[r] -
							     a->closed[r]));
	return buf;
}

/* Waits until @pool's counters for @addr satisfy @done, or fails. */
static struct cpool_stats
wait_stats(struct cpool *pool, const char *addr,
	   bool (*done)(const struct cpool_stats *, unsigned long long),
	   unsigned long long arg, const char *what)
{
	int64_t deadline = now_ms() + WAIT_MS;
	struct cpool_stats st = stats_of(pool, addr);

	while (!done(&st, arg) && now_ms() < deadline) {
		poll(NULL, 0, 1); /* polling counters, with a deadline */
		st = stats_of(pool, addr);
	}
	cr_assert(done(&st, arg),
		  "%s: open %u idle %u peer closes %llu after %d ms", what,
		  st.open, st.idle, peer_closes(&st), WAIT_MS);
	return st;
}

static bool
none_open(const struct cpool_stats *st, unsigned long long unused)
{
	return st->open == 0;
}

static bool
peer_closes_reach(const struct cpool_stats *st, unsigned long long n)
{
	return peer_closes(st) >= n;
}

/*
 * Restarts the server between batches and settles as @how says. Returns
 * the counters from before the restart, for settle_check().
 */
static struct cpool_stats
restart_and_settle(struct realsrv *srv, struct batch *b, int sig,
		   enum settle how)
{
	struct cpool_stats st0 = stats_of(b->pool, b->addr), st;
	pid_t old = srv->pid;

	cr_assert_eq(st0.leased, 0);
	cr_assert_gt(st0.open, 0, "no pooled connection to kill");
	cr_assert_eq(realsrv_stop(srv, sig), 0);
	if (how == SETTLE_CLOSE_SEEN) {
		/*
		 * The old process is gone, so the kernel has sent its FINs.
		 * Wait until each socket the batch used shows it (POLLNVAL:
		 * a worker closed it already; nothing else opens fds now).
		 */
		for (int i = 0; i < b->nfds; i++) {
			int rev = wait_fd(b->fds[i], POLLRDHUP, WAIT_MS);

			cr_assert(rev > 0 && (rev & (POLLRDHUP | POLLHUP |
						     POLLERR | POLLNVAL)),
				  "fd %d never saw the close: revents 0x%x",
				  b->fds[i], rev);
		}
	} else {
		/* nobody calls the pool: the workers must evict them all */
		st = wait_stats(b->pool, b->addr, none_open, 0,
				"worker eviction");
		cr_assert_eq(peer_closes(&st) - peer_closes(&st0),
			     (unsigned long long)st0.open,
			     "evicted %llu connections for a peer reason, "
			     "want %u (%s)", peer_closes(&st) - peer_closes(&st0),
			     st0.open, closes_since(&st0, &st));
	}
	cr_assert_eq(realsrv_start_again(srv), 0);
	cr_assert_neq(srv->pid, old);
	b->fresh_server = true;
	return st0;
}

/*
 * After the batch that followed a restart: every connection open before
 * it was closed for a peer reason (by the probe or a worker), none by the
 * caller (a failed request would have released with CLOSE).
 */
static void
settle_check(struct batch *b, const struct cpool_stats *st0)
{
	struct cpool_stats st;

	st = wait_stats(b->pool, b->addr, peer_closes_reach,
			peer_closes(st0) + st0->open, "old connections closed");
	cr_assert_eq(peer_closes(&st) - peer_closes(st0),
		     (unsigned long long)st0->open,
		     "peer closes %llu, want the %u old connections (%s)",
		     peer_closes(&st) - peer_closes(st0), st0->open,
		     closes_since(st0, &st));
	cr_assert_eq(st.closed[CPOOL_CLOSE_BY_CALLER],
		     st0->closed[CPOOL_CLOSE_BY_CALLER],
		     "a request failed after the restart: %llu closed by the "
		     "caller", (unsigned long long)
		     (st.closed[CPOOL_CLOSE_BY_CALLER] -
		      st0->closed[CPOOL_CLOSE_BY_CALLER]));
	cr_assert_eq(st.connect_failures, st0->connect_failures);
	cr_assert_eq(st.fail_fasts, st0->fail_fasts);
	assert_balanced(&st);
}

static struct cpool *
pool_for(const char *addr)
{
	struct cpool_config cfg;
	struct cpool *pool;

	cpool_config_init(&cfg);
	cfg.max_conns_per_endpoint = 2 * THREADS;
	pool = pool_new(&cfg);
	pool_add(pool, addr);
	return pool;
}

static void
need(enum realsrv_kind kind)
{
	if (!realsrv_available(kind))
		cr_skip_test("%s is not installed", realsrv_name(kind));
}

static struct realsrv
server(enum realsrv_kind kind)
{
	struct realsrv srv;
	int err = realsrv_start(&srv, kind);

	cr_assert_eq(err, 0, "starting %s: %s", realsrv_name(kind),
		     strerror(-err));
	return srv;
}

/*
 * Five batches, four restarts: SIGTERM and SIGKILL, each settled once by
 * "the sockets saw the close" and once by "the workers evicted them".
 */
static void
restarts_between_batches(enum realsrv_kind kind)
{
	static const struct {
		int sig;
		enum settle how;
	} plan[] = {
		{ SIGTERM, SETTLE_CLOSE_SEEN },
		{ SIGKILL, SETTLE_EVICTED },
		{ SIGKILL, SETTLE_CLOSE_SEEN },
		{ SIGTERM, SETTLE_EVICTED },
	};
	struct realsrv srv;
	struct batch b;
	struct worker w[THREADS];
	struct cpool_stats st0;
	int fd0;

	need(kind);
	fd0 = count_open_fds();
	srv = server(kind);
	memset(&b, 0, sizeof(b));
	pthread_mutex_init(&b.lock, NULL);
	b.kind = kind;
	b.addr = srv.address;
	b.pool = pool_for(b.addr);
	b.fresh_server = true;
	for (unsigned i = 0; i < THREADS; i++)
		w[i] = (struct worker){ .b = &b, .idx = i };

	run_batch(&b, w);
	run_batch(&b, w); /* same instance: data carried over */
	for (size_t i = 0; i < sizeof(plan) / sizeof(plan[0]); i++) {
		st0 = restart_and_settle(&srv, &b, plan[i].sig, plan[i].how);
		run_batch(&b, w);
		settle_check(&b, &st0);
	}

	cpool_destroy(b.pool);
	cr_assert_eq(realsrv_stop(&srv, SIGTERM), 0);
	cr_assert_eq(count_open_fds(), fd0, "fds: %d at the end, %d before",
		     count_open_fds(), fd0);
	pthread_mutex_destroy(&b.lock);
}

Test(realclients, hiredis_on_pooled_fds_sees_no_stale_connection_across_redis_restarts)
{
	restarts_between_batches(REALSRV_REDIS);
}

Test(realclients, memcached_text_protocol_sees_no_stale_connection_across_restarts)
{
	restarts_between_batches(REALSRV_MEMCACHED);
}

/*
 * The recipe itself: redisFreeKeepFd() hands the fd back open and clean,
 * so the pool reuses the same connection; an error reply is a complete
 * exchange (release with 0); an I/O error means CPOOL_RELEASE_CLOSE.
 */
Test(realclients, hiredis_recipe_hands_the_connection_back_reusable)
{
	struct realsrv srv;
	struct cpool *pool;
	struct cpool_conn *c;
	struct cpool_stats st;
	redisContext *ctx;
	redisReply *r;
	int fd;

	need(REALSRV_REDIS);
	srv = server(REALSRV_REDIS);
	pool = pool_for(srv.address);

	c = lease(pool, srv.address);
	fd = cpool_conn_fd(c);
	ctx = redisConnectFd(fd);
	cr_assert(ctx && !ctx->err);
	r = redisCommand(ctx, "SET recipe 1");
	cr_assert(r && r->type == REDIS_REPLY_STATUS);
	freeReplyObject(r);
	cr_assert_eq(redisFreeKeepFd(ctx), fd, "redisFreeKeepFd: other fd");
	cr_assert_eq(cpool_probe(fd), CPOOL_ALIVE, "fd not clean: %s",
		     cpool_verdict_name(cpool_probe(fd)));
	cpool_release(c, 0);

	/* the same connection again; an error reply is a full exchange */
	c = lease(pool, srv.address);
	cr_assert(cpool_conn_reused(c));
	cr_assert_eq(cpool_conn_fd(c), fd);
	ctx = redisConnectFd(cpool_conn_fd(c));
	r = redisCommand(ctx, "HGET recipe field"); /* WRONGTYPE */
	cr_assert(r && r->type == REDIS_REPLY_ERROR, "want an error reply");
	freeReplyObject(r);
	redisFreeKeepFd(ctx);
	cpool_release(c, 0);

	c = lease(pool, srv.address);
	cr_assert(cpool_conn_reused(c));
	ctx = redisConnectFd(cpool_conn_fd(c));
	r = redisCommand(ctx, "INCR recipe");
	cr_assert(r && r->type == REDIS_REPLY_INTEGER && r->integer == 2);
	freeReplyObject(r);

	/* the server dies under the lease: hiredis fails, the caller closes */
	cr_assert_eq(realsrv_stop(&srv, SIGKILL), 0);
	r = redisCommand(ctx, "INCR recipe");
	cr_assert_null(r, "a reply from a dead server");
	cr_assert(ctx->err == REDIS_ERR_EOF || ctx->err == REDIS_ERR_IO,
		  "hiredis err %d (%s)", ctx->err, ctx->errstr);
	redisFreeKeepFd(ctx);
	cpool_release(c, CPOOL_RELEASE_CLOSE);
	st = stats_of(pool, srv.address);
	assert_stat(st, closed[CPOOL_CLOSE_BY_CALLER], 1);
	assert_stat(st, open, 0);

	cr_assert_eq(realsrv_start_again(&srv), 0);
	c = lease(pool, srv.address);
	cr_assert_not(cpool_conn_reused(c));
	ctx = redisConnectFd(cpool_conn_fd(c));
	r = redisCommand(ctx, "INCR recipe");
	cr_assert(r && r->type == REDIS_REPLY_INTEGER && r->integer == 1,
		  "not the new instance");
	freeReplyObject(r);
	redisFreeKeepFd(ctx);
	cpool_release(c, 0);

	cpool_destroy(pool);
	realsrv_stop(&srv, SIGTERM);
}
