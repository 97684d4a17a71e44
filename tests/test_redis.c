/* SPDX-License-Identifier: MIT */
/*
 * The hiredis adapter (libcpool_redis) against a real redis-server started
 * by each test (tests/util/realsrv.h): one persistent redisContext per
 * pooled connection, AUTH and SELECT at open, restarts of the server
 * between batches, and the release op refusing a context with a pipelined
 * reply nobody read or output nobody sent.
 *
 * A connection is identified by the server's CLIENT ID (unique per server
 * connection), never by a pointer or an fd number, which may be reused
 * after a close.
 */
#include <criterion/criterion.h>
#include <hiredis/hiredis.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpool_redis.h"
#include "util/check.h"
#include "util/realsrv.h"
#include "util/waitfor.h"
#include "util/leakcheck.h"

TestSuite(redis, .timeout = 120, .fini = leak_fini);

#define THREADS 4
#define OPS 200 /* leases per thread and batch */
#define MAX_IDS 256
#define MAX_FDS 64
#define REDIS_WAIT_MS 5000

static void
need_redis(void)
{
	if (!realsrv_available(REALSRV_REDIS))
		cr_skip_test("redis-server is not installed");
}

static struct realsrv
redis_server(void)
{
	struct realsrv srv;
	int err = realsrv_start(&srv, REALSRV_REDIS);

	cr_assert_eq(err, 0, "starting redis-server: %s", strerror(-err));
	return srv;
}

static struct cpool_redis *
adapter_new(const char *username, const char *password, int db)
{
	struct cpool_redis_config rc;
	struct cpool_redis *r = NULL;

	cpool_redis_config_init(&rc);
	rc.username = username;
	rc.password = password;
	rc.db = db;
	assert_ret(cpool_redis_new(&rc, &r), 0);
	cr_assert_not_null(r);
	return r;
}

static struct cpool *
pool_with(struct cpool_redis *r, const char *addr, unsigned flags)
{
	struct cpool_config cfg;
	struct cpool *pool;

	cpool_config_init(&cfg);
	cfg.max_conns_per_endpoint = 2 * THREADS;
	cfg.flags |= flags;
	cpool_redis_install(r, &cfg);
	pool = pool_new(&cfg);
	pool_add(pool, addr);
	return pool;
}

static struct cpool_redis_stats
rstats(const struct cpool_redis *r)
{
	struct cpool_redis_stats st;

	memset(&st, 0, sizeof(st));
	st.size = sizeof(st);
	assert_ret(cpool_redis_stats_get(r, &st), 0);
	return st;
}

static unsigned long long
closes(const struct cpool_stats *st)
{
	unsigned long long n = 0;

	for (int i = 0; i < CPOOL_CLOSE_REASON_COUNT; i++)
		n += st->closed[i];
	return n;
}

/* A plain hiredis connection to @srv, outside any pool. */
static redisContext *
plain(const struct realsrv *srv)
{
	redisContext *ctx = redisConnect("127.0.0.1", srv->port);

	cr_assert(ctx && !ctx->err, "redisConnect: %s",
		  ctx ? ctx->errstr : "no memory");
	return ctx;
}

/* Runs a command expecting a reply of @type; returns it (caller frees). */
static redisReply *
expect(redisContext *ctx, int type, const char *cmd)
{
	redisReply *rep = redisCommand(ctx, cmd);

	cr_assert_not_null(rep, "%s: hiredis error %d (%s)", cmd, ctx->err,
			   ctx->errstr);
	cr_assert_eq(rep->type, type, "%s: reply type %d want %d (%s)", cmd,
		     rep->type, type,
		     rep->type == REDIS_REPLY_ERROR ? rep->str : "");
	return rep;
}

static long long
client_id(redisContext *ctx)
{
	redisReply *rep = expect(ctx, REDIS_REPLY_INTEGER, "CLIENT ID");
	long long id = rep->integer;

	freeReplyObject(rep);
	return id;
}

/* ---- one context per connection, persistent ---------------------------- */

struct idmap {
	pthread_mutex_t lock;
	long long id[MAX_IDS];
	redisContext *ctx[MAX_IDS];
	int n;
	int mismatches; /* a known connection with another context */
	int failures;	/* a request that went wrong */
	char first[256];
	int fds[MAX_FDS]; /* fds leased (for the restart settle) */
	int nfds;
};

struct batch {
	struct cpool *pool;
	const char *addr;
	struct idmap *map;
	unsigned idx;
};

static void
map_fail(struct idmap *m, const char *what, int err)
{
	pthread_mutex_lock(&m->lock);
	if (!m->failures++)
		snprintf(m->first, sizeof(m->first), "%s: %d (%s)", what,
			 err, strerror(err < 0 ? -err : err));
	pthread_mutex_unlock(&m->lock);
}

static void
map_note(struct idmap *m, long long id, redisContext *ctx, int fd)
{
	int i;

	pthread_mutex_lock(&m->lock);
	for (i = 0; i < m->n && m->id[i] != id; i++)
		;
	if (i < m->n) {
		if (m->ctx[i] != ctx)
			m->mismatches++;
	} else if (m->n < MAX_IDS) {
		m->id[m->n] = id;
		m->ctx[m->n++] = ctx;
	}
	for (i = 0; i < m->nfds && m->fds[i] != fd; i++)
		;
	if (i == m->nfds && m->nfds < MAX_FDS)
		m->fds[m->nfds++] = fd;
	pthread_mutex_unlock(&m->lock);
}

/* One lease: CLIENT ID, SET and GET of the thread's own key. */
static void
one_lease(struct batch *b, unsigned op)
{
	struct cpool_conn *c;
	redisContext *ctx;
	redisReply *rep;
	long long id;
	char val[32];
	int err = cpool_acquire(b->pool, b->addr, &c);

	if (err) {
		map_fail(b->map, "cpool_acquire", err);
		return;
	}
	ctx = cpool_redis_ctx(c);
	snprintf(val, sizeof(val), "%u:%u", b->idx, op);
	rep = ctx ? redisCommand(ctx, "CLIENT ID") : NULL;
	if (!rep || rep->type != REDIS_REPLY_INTEGER)
		goto fail;
	id = rep->integer;
	freeReplyObject(rep);
	rep = redisCommand(ctx, "SET k:%u %s", b->idx, val);
	if (!rep || rep->type != REDIS_REPLY_STATUS)
		goto fail;
	freeReplyObject(rep);
	rep = redisCommand(ctx, "GET k:%u", b->idx);
	if (!rep || rep->type != REDIS_REPLY_STRING || strcmp(rep->str, val))
		goto fail;
	freeReplyObject(rep);
	map_note(b->map, id, ctx, cpool_conn_fd(c));
	cpool_release(c, 0);
	return;
fail:
	map_fail(b->map, ctx && ctx->err ? ctx->errstr : "bad reply",
		 ctx ? -ctx->err : 0);
	if (rep)
		freeReplyObject(rep);
	cpool_release(c, CPOOL_RELEASE_CLOSE);
}

static void *
batch_thread(void *arg)
{
	struct batch *b = arg;

	for (unsigned op = 0; op < OPS; op++)
		one_lease(b, op);
	return NULL;
}

static void
run_batch(struct cpool *pool, const char *addr, struct idmap *m)
{
	pthread_t tid[THREADS];
	struct batch b[THREADS];

	for (unsigned i = 0; i < THREADS; i++) {
		b[i] = (struct batch){ .pool = pool, .addr = addr, .map = m,
				       .idx = i };
		cr_assert_eq(pthread_create(&tid[i], NULL, batch_thread,
					    &b[i]), 0);
	}
	for (unsigned i = 0; i < THREADS; i++)
		pthread_join(tid[i], NULL);
}

Test(redis, one_persistent_context_per_connection_for_its_whole_life)
{
	struct idmap m = { .lock = PTHREAD_MUTEX_INITIALIZER };
	struct cpool_redis_stats rs;
	struct cpool_stats st;
	struct cpool_conn *c;
	redisContext *first;
	struct cpool_redis *r;
	struct cpool *pool;
	struct realsrv srv;
	int fd0;

	need_redis();
	fd0 = count_open_fds();
	srv = redis_server();
	r = adapter_new(NULL, NULL, 0);
	pool = pool_with(r, srv.address, 0);

	/* the same connection leased twice: the same context */
	c = lease(pool, srv.address);
	first = cpool_redis_ctx(c);
	cr_assert_not_null(first);
	cr_assert_eq(first, cpool_conn_ctx(c));
	cr_assert_eq(first->fd, cpool_conn_fd(c));
	cpool_release(c, 0);
	c = lease(pool, srv.address);
	cr_assert(cpool_conn_reused(c), "second lease not reused");
	cr_assert_eq(cpool_redis_ctx(c), first,
		     "context %p on the reuse, %p before",
		     (void *)cpool_redis_ctx(c), (void *)first);
	cpool_release(c, 0);

	run_batch(pool, srv.address, &m);
	run_batch(pool, srv.address, &m);
	cr_assert_eq(m.failures, 0, "%d failures, first: %s", m.failures,
		     m.first);
	cr_assert_eq(m.mismatches, 0,
		     "%d leases saw another context on a known connection",
		     m.mismatches);
	st = stats_of(pool, NULL);
	rs = rstats(r);
	cr_assert_gt(st.reuses, st.connects, "reuses %llu connects %llu",
		     (unsigned long long)st.reuses,
		     (unsigned long long)st.connects);
	cr_assert_eq(rs.contexts, st.connects, "contexts %llu connects %llu",
		     (unsigned long long)rs.contexts,
		     (unsigned long long)st.connects);
	cr_assert_eq((unsigned long long)m.n, st.connects,
		     "%d server connections seen, pool connects %llu", m.n,
		     (unsigned long long)st.connects);
	cr_assert_eq(rs.refused, 0);
	cr_assert_eq(rs.open_failures, 0);

	cpool_shutdown(pool);
	st = stats_of(pool, NULL);
	rs = rstats(r);
	assert_stat(st, open, 0);
	cr_assert_eq(rs.frees, closes(&st), "frees %llu closes %llu",
		     (unsigned long long)rs.frees, closes(&st));
	cr_assert_eq(rs.frees, rs.contexts, "frees %llu contexts %llu",
		     (unsigned long long)rs.frees,
		     (unsigned long long)rs.contexts);
	cpool_destroy(pool);
	cpool_redis_free(r);
	cr_assert_eq(realsrv_stop(&srv, SIGTERM), 0);
	cr_assert_eq(count_open_fds(), fd0, "fds: %d at the end, %d before",
		     count_open_fds(), fd0);
}

/* ---- AUTH and SELECT at open ------------------------------------------- */

static void
plain_cmd(redisContext *ctx, int type, const char *cmd)
{
	freeReplyObject(expect(ctx, type, cmd));
}

Test(redis, auth_and_select_at_open_put_a_pooled_set_in_db_3)
{
	struct cpool_redis_stats rs;
	struct cpool_conn *c;
	struct cpool_redis *r;
	struct cpool *pool;
	struct realsrv srv;
	redisContext *adm;
	redisReply *rep;

	need_redis();
	srv = redis_server();
	adm = plain(&srv);
	plain_cmd(adm, REDIS_REPLY_STATUS, "CONFIG SET requirepass s3cret");
	plain_cmd(adm, REDIS_REPLY_STATUS, "AUTH s3cret");

	r = adapter_new(NULL, "s3cret", 3);
	pool = pool_with(r, srv.address, 0);
	c = lease(pool, srv.address);
	rep = expect(cpool_redis_ctx(c), REDIS_REPLY_STATUS,
		     "SET authsel here");
	freeReplyObject(rep);
	cpool_release(c, 0);

	/* the key is in db 3, not in db 0 */
	rep = expect(adm, REDIS_REPLY_NIL, "GET authsel");
	freeReplyObject(rep);
	plain_cmd(adm, REDIS_REPLY_STATUS, "SELECT 3");
	rep = expect(adm, REDIS_REPLY_STRING, "GET authsel");
	cr_assert_str_eq(rep->str, "here");
	freeReplyObject(rep);

	rs = rstats(r);
	cr_assert_eq(rs.contexts, 1);
	cr_assert_eq(rs.open_failures, 0);
	cpool_destroy(pool);
	cr_assert_eq(rstats(r).frees, 1);
	cpool_redis_free(r);
	redisFree(adm);
	cr_assert_eq(realsrv_stop(&srv, SIGTERM), 0);
}

Test(redis, acl_username_and_password_at_open)
{
	struct cpool_conn *c;
	struct cpool_redis *r;
	struct cpool *pool;
	struct realsrv srv;
	redisContext *adm;
	redisReply *rep;

	need_redis();
	srv = redis_server();
	adm = plain(&srv);
	plain_cmd(adm, REDIS_REPLY_STATUS,
		  "ACL SETUSER alice on >alicepw ~* &* +@all");
	plain_cmd(adm, REDIS_REPLY_STATUS, "ACL SETUSER default off");

	r = adapter_new("alice", "alicepw", 0);
	pool = pool_with(r, srv.address, 0);
	c = lease(pool, srv.address);
	rep = expect(cpool_redis_ctx(c), REDIS_REPLY_STRING, "ACL WHOAMI");
	cr_assert_str_eq(rep->str, "alice");
	freeReplyObject(rep);
	cpool_release(c, 0);
	cpool_destroy(pool);
	cpool_redis_free(r);
	redisFree(adm);
	cr_assert_eq(realsrv_stop(&srv, SIGTERM), 0);
}

Test(redis, wrong_password_fails_the_acquire_with_eacces_and_leaks_nothing)
{
	struct cpool_redis_stats rs;
	struct cpool_stats st;
	struct cpool_conn *c = NULL;
	struct cpool_redis *r;
	struct cpool *pool;
	struct realsrv srv;
	redisContext *adm;
	int fd0;

	need_redis();
	srv = redis_server();
	adm = plain(&srv);
	plain_cmd(adm, REDIS_REPLY_STATUS, "CONFIG SET requirepass s3cret");

	fd0 = count_open_fds();
	r = adapter_new(NULL, "wrong", 0);
	pool = pool_with(r, srv.address, 0);
	assert_ret(cpool_acquire(pool, srv.address, &c), -EACCES);
	cr_assert_null(c);
	st = stats_of(pool, srv.address);
	assert_stat(st, connect_failures, 1);
	assert_stat(st, connects, 0);
	assert_stat(st, open, 0);
	rs = rstats(r);
	cr_assert_eq(rs.open_failures, 1);
	cr_assert_eq(rs.contexts, 0);
	cr_assert_eq(rs.frees, 0); /* the failing open freed its own */
	cpool_destroy(pool);
	cpool_redis_free(r);
	cr_assert_eq(count_open_fds(), fd0, "fds: %d at the end, %d before",
		     count_open_fds(), fd0);
	redisFree(adm);
	cr_assert_eq(realsrv_stop(&srv, SIGTERM), 0);
}

Test(redis, select_out_of_range_fails_the_acquire_with_einval)
{
	struct cpool_conn *c = NULL;
	struct cpool_redis *r;
	struct cpool *pool;
	struct realsrv srv;

	need_redis();
	srv = redis_server();
	r = adapter_new(NULL, NULL, 100000);
	pool = pool_with(r, srv.address, 0);
	assert_ret(cpool_acquire(pool, srv.address, &c), -EINVAL);
	cr_assert_eq(rstats(r).open_failures, 1);
	cpool_destroy(pool);
	cpool_redis_free(r);
	cr_assert_eq(realsrv_stop(&srv, SIGTERM), 0);
}

/* ---- restarts ------------------------------------------------------------ */

static bool
none_open(struct cpool *pool, const char *addr)
{
	struct cpool_stats st;

	return stats_wait(pool, addr, st, st.open == 0, REDIS_WAIT_MS);
}

Test(redis, restart_between_batches_gives_zero_failures_in_the_next_batch)
{
	static const int sigs[] = { SIGTERM, SIGKILL, SIGKILL, SIGTERM };
	struct idmap m = { .lock = PTHREAD_MUTEX_INITIALIZER };
	struct cpool_redis_stats rs;
	struct cpool_stats st;
	struct cpool_redis *r;
	struct cpool *pool;
	struct realsrv srv;
	int fd0;

	need_redis();
	fd0 = count_open_fds();
	srv = redis_server();
	r = adapter_new(NULL, NULL, 2);
	pool = pool_with(r, srv.address, 0);
	run_batch(pool, srv.address, &m);
	cr_assert_eq(m.failures, 0, "%d failures, first: %s", m.failures,
		     m.first);

	for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++) {
		st = stats_of(pool, srv.address);
		cr_assert_gt(st.open, 0, "no pooled connection to kill");
		cr_assert_eq(realsrv_stop(&srv, sigs[i]), 0);
		if (i % 2 == 0) {
			/* settle: every pooled socket shows the close */
			for (int k = 0; k < m.nfds; k++) {
				int rev = wait_fd(m.fds[k], POLLRDHUP,
						  REDIS_WAIT_MS);

				cr_assert(rev > 0,
					  "fd %d never saw the close: %d",
					  m.fds[k], rev);
			}
		} else {
			/* settle: nobody calls; the workers evict them all */
			cr_assert(none_open(pool, srv.address),
				  "workers did not evict the connections");
		}
		cr_assert_eq(realsrv_start_again(&srv), 0);
		m.nfds = 0;
		run_batch(pool, srv.address, &m);
		cr_assert_eq(m.failures, 0,
			     "after restart %zu (signal %d): %d failures, "
			     "first: %s",
			     i, sigs[i], m.failures, m.first);
	}
	st = stats_of(pool, srv.address);
	assert_stat(st, closed[CPOOL_CLOSE_BY_CALLER], 0);
	cpool_shutdown(pool);
	st = stats_of(pool, NULL);
	rs = rstats(r);
	cr_assert_eq(rs.contexts, st.connects);
	cr_assert_eq(rs.frees, closes(&st), "frees %llu closes %llu",
		     (unsigned long long)rs.frees, closes(&st));
	cr_assert_eq(rs.refused, 0);
	cpool_destroy(pool);
	cpool_redis_free(r);
	cr_assert_eq(realsrv_stop(&srv, SIGTERM), 0);
	cr_assert_eq(count_open_fds(), fd0, "fds: %d at the end, %d before",
		     count_open_fds(), fd0);
}

/* ---- release refuses leftovers ----------------------------------------- */

/*
 * After a refused release: the connection was closed by_caller, the next
 * lease is a fresh connection (another CLIENT ID), and its ECHO reads its
 * own reply.
 */
static void
next_lease_is_fresh(struct cpool *pool, struct cpool_redis *r,
		    const char *addr, long long old_id)
{
	struct cpool_redis_stats rs = rstats(r);
	struct cpool_stats st = stats_of(pool, addr);
	struct cpool_conn *c;
	redisReply *rep;

	assert_stat(st, closed[CPOOL_CLOSE_BY_CALLER], 1);
	assert_stat(st, open, 0);
	cr_assert_eq(rs.refused, 1);
	cr_assert_eq(rs.frees, 1);

	c = lease(pool, addr);
	cr_assert_not(cpool_conn_reused(c), "the refused one came back");
	cr_assert_neq(client_id(cpool_redis_ctx(c)), old_id);
	rep = expect(cpool_redis_ctx(c), REDIS_REPLY_STRING, "ECHO fresh");
	cr_assert_str_eq(rep->str, "fresh", "read \"%s\"", rep->str);
	freeReplyObject(rep);
	rep = expect(cpool_redis_ctx(c), REDIS_REPLY_STRING, "GET pk");
	cr_assert_str_eq(rep->str, "own", "read \"%s\"", rep->str);
	freeReplyObject(rep);
	cpool_release(c, 0);
	st = stats_of(pool, addr);
	assert_stat(st, connects, 2);
	assert_stat(st, closed[CPOOL_CLOSE_BY_CALLER], 1);
	cr_assert_eq(rstats(r).refused, 1);
}

Test(redis, release_with_an_unread_pipelined_reply_is_not_reused)
{
	struct cpool_conn *c;
	struct cpool_redis *r;
	struct cpool *pool;
	struct realsrv srv;
	redisContext *ctx;
	redisReply *rep;
	long long id;

	need_redis();
	srv = redis_server();
	r = adapter_new(NULL, NULL, 0);
	pool = pool_with(r, srv.address, 0);

	c = lease(pool, srv.address);
	ctx = cpool_redis_ctx(c);
	id = client_id(ctx);
	freeReplyObject(expect(ctx, REDIS_REPLY_STATUS, "SET pk own"));
	cr_assert_eq(redisAppendCommand(ctx, "ECHO stale1"), REDIS_OK);
	cr_assert_eq(redisAppendCommand(ctx, "ECHO stale2"), REDIS_OK);
	cr_assert_eq(redisGetReply(ctx, (void **)&rep), REDIS_OK);
	cr_assert_str_eq(rep->str, "stale1");
	freeReplyObject(rep);
	/* the second reply is in the reader or at the socket: wait for it */
	if (ctx->reader->len == ctx->reader->pos)
		cr_assert_gt(wait_fd(ctx->fd, POLLIN, REDIS_WAIT_MS), 0,
			     "the second reply never arrived");
	cpool_release(c, 0);
	next_lease_is_fresh(pool, r, srv.address, id);

	cpool_destroy(pool);
	cpool_redis_free(r);
	cr_assert_eq(realsrv_stop(&srv, SIGTERM), 0);
}

Test(redis, release_with_unsent_output_is_not_reused)
{
	struct cpool_conn *c;
	struct cpool_redis *r;
	struct cpool *pool;
	struct realsrv srv;
	redisContext *ctx;
	long long id;

	need_redis();
	srv = redis_server();
	r = adapter_new(NULL, NULL, 0);
	pool = pool_with(r, srv.address, 0);

	c = lease(pool, srv.address);
	ctx = cpool_redis_ctx(c);
	id = client_id(ctx);
	freeReplyObject(expect(ctx, REDIS_REPLY_STATUS, "SET pk own"));
	/* appended, never flushed: the server never saw it */
	cr_assert_eq(redisAppendCommand(ctx, "SET pk unsent"), REDIS_OK);
	cpool_release(c, 0);
	next_lease_is_fresh(pool, r, srv.address, id);

	cpool_destroy(pool);
	cpool_redis_free(r);
	cr_assert_eq(realsrv_stop(&srv, SIGTERM), 0);
}

/* ---- CPOOL_NONBLOCK ------------------------------------------------------ */

Test(redis, nonblock_pool_gets_a_nonblocking_context_after_a_bounded_auth)
{
	struct cpool_conn *c;
	struct cpool_redis *r;
	struct cpool *pool;
	struct realsrv srv;
	redisContext *ctx, *adm;
	redisReply *rep = NULL;
	int done = 0;

	need_redis();
	srv = redis_server();
	adm = plain(&srv);
	plain_cmd(adm, REDIS_REPLY_STATUS, "CONFIG SET requirepass nb");

	r = adapter_new(NULL, "nb", 1);
	pool = pool_with(r, srv.address, CPOOL_NONBLOCK);
	c = lease(pool, srv.address);
	ctx = cpool_redis_ctx(c);
	cr_assert_eq(ctx->flags & REDIS_BLOCK, 0);
	cr_assert_eq(redisAppendCommand(ctx, "ECHO nb"), REDIS_OK);
	while (!done)
		cr_assert_eq(redisBufferWrite(ctx, &done), REDIS_OK);
	for (;;) {
		cr_assert_eq(redisGetReply(ctx, (void **)&rep), REDIS_OK);
		if (rep)
			break;
		cr_assert_gt(wait_fd(ctx->fd, POLLIN, REDIS_WAIT_MS), 0);
		cr_assert_eq(redisBufferRead(ctx), REDIS_OK);
	}
	cr_assert_eq(rep->type, REDIS_REPLY_STRING);
	cr_assert_str_eq(rep->str, "nb");
	freeReplyObject(rep);
	cpool_release(c, 0);
	c = lease(pool, srv.address);
	cr_assert(cpool_conn_reused(c));
	cr_assert_eq(cpool_redis_ctx(c), ctx);
	cpool_release(c, 0);
	cpool_destroy(pool);
	cpool_redis_free(r);
	redisFree(adm);
	cr_assert_eq(realsrv_stop(&srv, SIGTERM), 0);
}

/* ---- API edges ----------------------------------------------------------- */

Test(redis, api_rejects_bad_arguments)
{
	struct cpool_redis_config rc;
	struct cpool_redis_stats rs = { .size = 4 };
	struct cpool_redis *r = (struct cpool_redis *)0x1;

	assert_ret(cpool_redis_new(NULL, &r), -EINVAL);
	cpool_redis_config_init(&rc);
	assert_ret(cpool_redis_new(&rc, NULL), -EINVAL);
	rc.db = -1;
	assert_ret(cpool_redis_new(&rc, &r), -EINVAL);
	rc.db = 0;
	rc.username = "u"; /* a username needs a password */
	assert_ret(cpool_redis_new(&rc, &r), -EINVAL);
	cr_assert_eq(r, (struct cpool_redis *)0x1, "out touched on failure");
	rc.username = NULL;
	assert_ret(cpool_redis_new(&rc, &r), 0);
	assert_ret(cpool_redis_stats_get(r, &rs), -EINVAL);
	assert_ret(cpool_redis_stats_get(NULL, &rs), -EINVAL);
	cr_assert_null(cpool_redis_ctx(NULL));
	cr_assert_not_null(cpool_redis_ops());
	cpool_redis_free(r);
	cpool_redis_free(NULL);
}

/* ---- errors -------------------------------------------------------------- */

Test(redis, release_after_an_io_error_is_refused_even_with_flags_0)
{
	struct cpool_conn *c;
	struct cpool_redis *r;
	struct cpool *pool;
	struct realsrv srv;
	redisContext *ctx;
	redisReply *rep;

	need_redis();
	srv = redis_server();
	r = adapter_new(NULL, NULL, 0);
	pool = pool_with(r, srv.address, 0);
	c = lease(pool, srv.address);
	ctx = cpool_redis_ctx(c);
	freeReplyObject(expect(ctx, REDIS_REPLY_STATUS, "PING"));
	/* the server dies under the lease: hiredis fails, ctx->err is set */
	cr_assert_eq(realsrv_stop(&srv, SIGKILL), 0);
	rep = redisCommand(ctx, "PING");
	cr_assert_null(rep);
	cr_assert_neq(ctx->err, 0);
	cpool_release(c, 0); /* a careless caller */
	assert_stat(stats_of(pool, srv.address), closed[CPOOL_CLOSE_BY_CALLER],
		    1);
	cr_assert_eq(rstats(r).refused, 1);
	cr_assert_eq(rstats(r).frees, 1);
	cpool_destroy(pool);
	cpool_redis_free(r);
}
