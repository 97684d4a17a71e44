/* SPDX-License-Identifier: MIT */
/*
 * libcpool_pq against a real PostgreSQL (tests/util/pgsrv.h starts one per
 * test): correct answers from many threads within the cap, background
 * eviction of backends the server terminated, a fast restart under load
 * with no stale failure after it, a release inside a transaction never
 * reused (and its row never seen), NOTIFY to a callback or closed as
 * unexpected data, a fork child whose destroy leaves the parent's sessions
 * alone, dial errors mapped as documented and bounded by the timeout, unix
 * endpoints. Every test ends with close once per connection (PQfinish
 * count == connect count) and the fds back to their baseline.
 *
 * Skipped (with the reason) when not root or PostgreSQL is not installed.
 */
#include <criterion/criterion.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#ifdef __SANITIZE_ADDRESS__
#include <sanitizer/lsan_interface.h>
#endif

#include "cpool_pq.h"
#include "util/check.h"
#include "util/pgsrv.h"
#include "util/waitfor.h"
#include "util/leakcheck.h"

TestSuite(pq, .timeout = 90, .fini = leak_fini);

#define PG_WAIT_MS 10000

static struct pgsrv srv;

static void
srv_up(void)
{
	char why[128];
	int err;

	if (!pgsrv_available(why, sizeof(why)))
		cr_skip_test("PostgreSQL tests skipped: %s", why);
	err = pgsrv_start(&srv, NULL);
	cr_assert_eq(err, 0, "pgsrv_start: %s", strerror(-err));
}

static void
srv_down(void)
{
	pgsrv_destroy(&srv);
}

static const char *const kw_app[] = { "user", "dbname", NULL };
static const char *const val_app[] = { PGSRV_USER, PGSRV_DB, NULL };

static struct cpool_pq *
pq_new(const char *const *kw, const char *const *val, cpool_pq_notify_fn *fn,
       void *arg)
{
	struct cpool_pq_config pc;
	struct cpool_pq *pq = NULL;

	cpool_pq_config_init(&pc);
	pc.keywords = kw;
	pc.values = val;
	pc.notify = fn;
	pc.notify_arg = arg;
	assert_ret(cpool_pq_new(&pc, &pq), 0);
	return pq;
}

static struct cpool *
pq_pool(struct cpool_pq *pq, unsigned cap, const char *address)
{
	struct cpool_config cfg;
	struct cpool *pool;

	cpool_config_init(&cfg);
	cfg.max_conns_per_endpoint = cap;
	cfg.connect_timeout_ms = 5000;
	cfg.acquire_timeout_ms = 5000;
	cpool_pq_install(pq, &cfg);
	pool = pool_new(&cfg);
	if (address)
		assert_ret(cpool_endpoint_add(pool, address), 0);
	return pool;
}

static struct cpool_pq_stats
pq_stats(const struct cpool_pq *pq)
{
	struct cpool_pq_stats st;

	memset(&st, 0, sizeof(st));
	st.size = sizeof(st);
	cr_assert_eq(cpool_pq_stats_get(pq, &st), 0);
	return st;
}

/* SELECT 1 over the lease: 0 when the answer is exactly "1". */
static int
select1(struct cpool_conn *c)
{
	PGresult *res = PQexec(cpool_pq_conn(c), "SELECT 1");
	int ok = PQresultStatus(res) == PGRES_TUPLES_OK &&
		 PQntuples(res) == 1 && !strcmp(PQgetvalue(res, 0, 0), "1");

	PQclear(res);
	return ok ? 0 : -EIO;
}

/* The first value of @sql over the lease, or LLONG_MIN. */
static long long
query_ll(struct cpool_conn *c, const char *sql)
{
	PGresult *res = PQexec(cpool_pq_conn(c), sql);
	long long v = LLONG_MIN;

	if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1)
		v = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
	PQclear(res);
	return v;
}

static void
exec_ok(struct cpool_conn *c, const char *sql)
{
	PGresult *res = PQexec(cpool_pq_conn(c), sql);

	cr_assert(PQresultStatus(res) == PGRES_COMMAND_OK ||
			  PQresultStatus(res) == PGRES_TUPLES_OK,
		  "%s: %s", sql, PQerrorMessage(cpool_pq_conn(c)));
	PQclear(res);
}

/* closed[@reason] == @n and every other reason 0 (@reason 0: none). */
static void
closed_only(const struct cpool_stats *st, int reason, unsigned long long n)
{
	unsigned long long want[CPOOL_CLOSE_REASON_COUNT] = { 0 };

	if (reason)
		want[reason] = n;
	assert_closed_only(st, want);
}

/*
 * Waits until the adapter's @field reaches @want: the pool counts a close
 * before it runs ops->close, so a stats read that shows the close may come
 * before the PQfinish.
 */
#define pq_wait(pq, field, want)                                           \
	do {                                                               \
		int64_t dl_ = now_ms() + PG_WAIT_MS;                       \
		while (pq_stats(pq).field < (want) && now_ms() < dl_)      \
			pause_1ms();                                       \
		assert_stat(pq_stats(pq), field, want);                    \
	} while (0)

static struct cpool_conn *
pq_lease(struct cpool *pool, const char *address)
{
	struct cpool_conn *c = NULL;

	assert_ret(cpool_acquire(pool, address, &c), 0);
	return c;
}

/*
 * Destroys the pool; asserts that the adapter finished every connection
 * it made, exactly once, that the fds are back at @fds0 (-1: another
 * pool still runs, the last pool_end() checks) and, under ASan, that
 * nothing leaked.
 */
static void
pool_end(struct cpool *pool, struct cpool_pq *pq, int fds0)
{
	struct cpool_pq_stats ps;

	cpool_destroy(pool);
	ps = pq_stats(pq);
	cr_assert_eq(ps.finishes, ps.connects,
		     "finishes %llu != connects %llu",
		     (unsigned long long)ps.finishes,
		     (unsigned long long)ps.connects);
	cpool_pq_free(pq);
	if (fds0 >= 0)
		cr_assert_eq(count_open_fds(), fds0, "fds: %d, baseline %d",
			     count_open_fds(), fds0);
#ifdef __SANITIZE_ADDRESS__
	/* Criterion's workers exit without LeakSanitizer's own check. */
	if (fds0 >= 0)
		cr_assert_eq(__lsan_do_recoverable_leak_check(), 0,
			     "LeakSanitizer found leaks (report on stderr)");
#endif
}

/* ---- SELECT 1 from 8 threads ---------------------------------------- */

#define T_THREADS 8
#define T_ITERS 250
#define T_CAP 4

struct load {
	struct cpool *pool;
	const char *address;
	atomic_int ok, bad, acq_err;
};

static void *
select_loop(void *arg)
{
	struct load *l = arg;

	for (int i = 0; i < T_ITERS; i++) {
		struct cpool_conn *c;
		int err = cpool_acquire(l->pool, l->address, &c);

		if (err) {
			atomic_fetch_add(&l->acq_err, 1);
			continue;
		}
		if (select1(c)) {
			atomic_fetch_add(&l->bad, 1);
			cpool_release(c, CPOOL_RELEASE_CLOSE);
		} else {
			atomic_fetch_add(&l->ok, 1);
			cpool_release(c, 0);
		}
	}
	return NULL;
}

Test(pq, select1_threads, .init = srv_up, .fini = srv_down)
{
	int fds0 = count_open_fds();
	struct cpool_pq *pq = pq_new(kw_app, val_app, NULL, NULL);
	struct cpool *pool = pq_pool(pq, T_CAP, srv.address);
	struct load l = { .pool = pool, .address = srv.address };
	pthread_t th[T_THREADS];
	struct cpool_stats st;
	struct cpool_pq_stats ps;

	for (int i = 0; i < T_THREADS; i++)
		cr_assert_eq(pthread_create(&th[i], NULL, select_loop, &l), 0);
	for (int i = 0; i < T_THREADS; i++)
		pthread_join(th[i], NULL);
	cr_assert_eq(atomic_load(&l.ok), T_THREADS * T_ITERS,
		     "ok %d bad %d acquire errors %d", atomic_load(&l.ok),
		     atomic_load(&l.bad), atomic_load(&l.acq_err));
	st = stats_of(pool, NULL);
	ps = pq_stats(pq);
	cr_assert_leq(st.connects, T_CAP, "connects %llu > cap",
		      (unsigned long long)st.connects);
	cr_assert_gt(st.reuses, 0);
	assert_stat(st, acquires, T_THREADS * T_ITERS);
	assert_stat(ps, connects, st.connects);
	assert_stat(ps, connect_failures, 0);
	assert_stat(ps, refused, 0);
	assert_stat(st, connect_failures, 0);
	pool_end(pool, pq, fds0);
}

/* ---- pg_terminate_backend of idle backends --------------------------- */

Test(pq, terminated_backends_evicted_in_background, .init = srv_up,
     .fini = srv_down)
{
	enum { N = 3 };
	int fds0 = count_open_fds();
	struct cpool_pq *pq = pq_new(kw_app, val_app, NULL, NULL);
	struct cpool *pool = pq_pool(pq, N, srv.address);
	struct cpool_conn *c[N];
	struct cpool_stats st;
	struct cpool_pq_stats ps;
	uint64_t acquires;

	for (int i = 0; i < N; i++) {
		c[i] = pq_lease(pool, srv.address);
		cr_assert_eq(select1(c[i]), 0);
	}
	for (int i = 0; i < N; i++)
		cpool_release(c[i], 0);
	assert_stats_wait(pool, NULL, st, st.idle == N, WORKER_WAIT_MS);
	acquires = st.acquires;
	cr_assert_eq(pgsrv_sql_ll(&srv, "postgres",
				  "SELECT count(pg_terminate_backend(pid)) "
				  "FROM pg_stat_activity WHERE usename = '"
				  PGSRV_USER "'"),
		     N);
	/* No acquire runs here: the workers must notice on their own. */
	assert_stats_wait(pool, NULL, st,
			  st.closed[CPOOL_CLOSE_PEER_CLOSED] == N && st.open == 0,
			  PG_WAIT_MS);
	assert_stat(st, acquires, acquires);
	closed_only(&st, CPOOL_CLOSE_PEER_CLOSED, N);
	pq_wait(pq, finishes, N);
	ps = pq_stats(pq);
	assert_stat(ps, quiet_finishes, N);
	/* And the next lease is a fresh, working session. */
	c[0] = pq_lease(pool, srv.address);
	cr_assert(!cpool_conn_reused(c[0]));
	cr_assert_eq(select1(c[0]), 0);
	cpool_release(c[0], 0);
	pool_end(pool, pq, fds0);
}

/* ---- fast restart under load ----------------------------------------- */

#define R_THREADS 4
#define R_SETTLE_MS 200

struct rload {
	struct cpool *pool;
	const char *address;
	atomic_bool stop;
	atomic_int ok, wrong;
	atomic_int query_fail, acq_fail;
	atomic_llong last_query_fail_ms, last_acq_fail_ms;
	atomic_int ok_after; /* successes after t_ready */
	atomic_llong t_ready;
};

static void *
restart_loop(void *arg)
{
	struct rload *l = arg;

	while (!atomic_load(&l->stop)) {
		struct cpool_conn *c;
		int err = cpool_acquire(l->pool, l->address, &c);
		PGresult *res;

		if (err) {
			atomic_fetch_add(&l->acq_fail, 1);
			atomic_store(&l->last_acq_fail_ms, now_ms());
			pause_1ms(); /* no busy loop on fail-fasts */
			continue;
		}
		res = PQexec(cpool_pq_conn(c), "SELECT 1");
		if (PQresultStatus(res) != PGRES_TUPLES_OK) {
			atomic_fetch_add(&l->query_fail, 1);
			atomic_store(&l->last_query_fail_ms, now_ms());
			cpool_release(c, CPOOL_RELEASE_CLOSE);
		} else {
			if (PQntuples(res) != 1 ||
			    strcmp(PQgetvalue(res, 0, 0), "1"))
				atomic_fetch_add(&l->wrong, 1);
			else
				atomic_fetch_add(&l->ok, 1);
			if (atomic_load(&l->t_ready) &&
			    now_ms() > atomic_load(&l->t_ready))
				atomic_fetch_add(&l->ok_after, 1);
			cpool_release(c, 0);
		}
		PQclear(res);
	}
	return NULL;
}

Test(pq, fast_restart_under_load, .init = srv_up, .fini = srv_down)
{
	int fds0 = count_open_fds();
	struct cpool_pq *pq = pq_new(kw_app, val_app, NULL, NULL);
	struct cpool *pool = pq_pool(pq, R_THREADS, srv.address);
	struct rload l = { .pool = pool, .address = srv.address };
	pthread_t th[R_THREADS];
	int64_t deadline, t_ready, t_down;
	long long lq, la;

	for (int i = 0; i < R_THREADS; i++)
		cr_assert_eq(pthread_create(&th[i], NULL, restart_loop, &l), 0);
	deadline = now_ms() + PG_WAIT_MS;
	while (atomic_load(&l.ok) < 200 && now_ms() < deadline)
		pause_1ms(); /* waiting for load, with a deadline */
	cr_assert_geq(atomic_load(&l.ok), 200);
	t_down = now_ms();
	assert_ret(pgsrv_restart(&srv, true), 0);
	t_ready = now_ms();
	atomic_store(&l.t_ready, t_ready);
	/* Load for 3 s after the server accepts again. */
	while (now_ms() < t_ready + 3000)
		pause_ms(10);
	atomic_store(&l.stop, true);
	for (int i = 0; i < R_THREADS; i++)
		pthread_join(th[i], NULL);
	lq = atomic_load(&l.last_query_fail_ms);
	la = atomic_load(&l.last_acq_fail_ms);
	cr_log_info("restart: down %lld ms; %d ok, %d query failures (last "
		    "%+lld ms after ready), %d acquire failures (last %+lld "
		    "ms after ready), %d ok after ready",
		    (long long)(t_ready - t_down), atomic_load(&l.ok),
		    atomic_load(&l.query_fail), lq ? lq - t_ready : 0,
		    atomic_load(&l.acq_fail), la ? la - t_ready : 0,
		    atomic_load(&l.ok_after));
	cr_assert_eq(atomic_load(&l.wrong), 0);
	/* A query on a leased connection fails only while the server is
	 * going down or just back: no stale connection after the settle. */
	cr_assert(!lq || lq <= t_ready + R_SETTLE_MS,
		  "query failure %lld ms after the server was ready",
		  lq - t_ready);
	/* Acquires fail only until the endpoint's connect backoff ends: its
	 * step grows 10 ms << streak, so the last trial after the server
	 * is back is at most one step (<= the downtime) late. */
	cr_assert(!la || la <= t_ready + R_SETTLE_MS + (t_ready - t_down) + 100,
		  "acquire failure %lld ms after the server was ready "
		  "(down %lld ms)",
		  la - t_ready, (long long)(t_ready - t_down));
	cr_assert_gt(atomic_load(&l.ok_after), 100);
	pool_end(pool, pq, fds0);
}

/* ---- release inside a transaction ------------------------------------ */

Test(pq, release_in_transaction_never_reused, .init = srv_up,
     .fini = srv_down)
{
	int fds0 = count_open_fds();
	struct cpool_pq *pq = pq_new(kw_app, val_app, NULL, NULL);
	struct cpool *pool = pq_pool(pq, 1, srv.address);
	struct cpool_conn *c;
	struct cpool_stats st;
	struct cpool_pq_stats ps;
	int pid1;

	c = pq_lease(pool, srv.address);
	exec_ok(c, "CREATE TABLE t (x int)");
	cpool_release(c, 0);

	c = pq_lease(pool, srv.address);
	cr_assert(cpool_conn_reused(c));
	pid1 = PQbackendPID(cpool_pq_conn(c));
	exec_ok(c, "BEGIN");
	exec_ok(c, "INSERT INTO t VALUES (1)");
	cr_assert_eq(PQtransactionStatus(cpool_pq_conn(c)), PQTRANS_INTRANS);
	cpool_release(c, 0);
	st = stats_of(pool, NULL);
	assert_stat(st, closed[CPOOL_CLOSE_BY_CALLER], 1);
	closed_only(&st, CPOOL_CLOSE_BY_CALLER, 1);
	assert_stat(st, open, 0);
	ps = pq_stats(pq);
	assert_stat(ps, refused, 1);
	assert_stat(ps, finishes, 1);
	assert_stat(ps, quiet_finishes, 0);

	c = pq_lease(pool, srv.address);
	cr_assert(!cpool_conn_reused(c));
	cr_assert_neq(PQbackendPID(cpool_pq_conn(c)), pid1);
	cr_assert_eq(PQtransactionStatus(cpool_pq_conn(c)), PQTRANS_IDLE);
	cr_assert_eq(query_ll(c, "SELECT count(*) FROM t"), 0);
	cpool_release(c, 0);
	cr_assert_eq(pgsrv_sql_ll(&srv, NULL, "SELECT count(*) FROM t"), 0);
	pool_end(pool, pq, fds0);
}

/* ---- NOTIFY on an idle, listening connection ------------------------- */

struct notes {
	pthread_mutex_t lock;
	int n;
	char channel[64], payload[64], address[64];
};

static void
on_notify(const PGnotify *n, const char *address, void *arg)
{
	struct notes *no = arg;

	pthread_mutex_lock(&no->lock);
	no->n++;
	snprintf(no->channel, sizeof(no->channel), "%s", n->relname);
	snprintf(no->payload, sizeof(no->payload), "%s", n->extra);
	snprintf(no->address, sizeof(no->address), "%s", address);
	pthread_mutex_unlock(&no->lock);
}

static void
listen_idle(struct cpool *pool)
{
	struct cpool_conn *c = pq_lease(pool, srv.address);
	struct cpool_stats st;

	exec_ok(c, "LISTEN ch");
	cpool_release(c, 0);
	assert_stats_wait(pool, NULL, st, st.idle == 1, WORKER_WAIT_MS);
	assert_ret(pgsrv_sql(&srv, NULL, "NOTIFY ch, 'hello'", NULL, 0), 0);
}

Test(pq, notify_to_callback_keeps_connection, .init = srv_up,
     .fini = srv_down)
{
	int fds0 = count_open_fds();
	struct notes no = { .lock = PTHREAD_MUTEX_INITIALIZER };
	struct cpool_pq *pq = pq_new(kw_app, val_app, on_notify, &no);
	struct cpool *pool = pq_pool(pq, 1, srv.address);
	struct cpool_pq_stats ps;
	struct cpool_stats st;
	struct cpool_conn *c;
	int64_t deadline = now_ms() + PG_WAIT_MS;

	listen_idle(pool);
	while (pq_stats(pq).notifies < 1 && now_ms() < deadline)
		pause_1ms(); /* the worker's watch fires, with a deadline */
	ps = pq_stats(pq);
	assert_stat(ps, notifies, 1);
	pthread_mutex_lock(&no.lock);
	cr_assert_eq(no.n, 1);
	cr_assert_str_eq(no.channel, "ch");
	cr_assert_str_eq(no.payload, "hello");
	cr_assert_str_eq(no.address, srv.address);
	pthread_mutex_unlock(&no.lock);
	st = stats_of(pool, NULL);
	closed_only(&st, 0, 0);
	assert_stat(st, open, 1);
	c = pq_lease(pool, srv.address);
	cr_assert(cpool_conn_reused(c));
	cr_assert_eq(select1(c), 0);
	cpool_release(c, 0);
	assert_stat(pq_stats(pq), connects, 1);
	pool_end(pool, pq, fds0);
}

Test(pq, notify_without_callback_is_unexpected_data, .init = srv_up,
     .fini = srv_down)
{
	int fds0 = count_open_fds();
	struct cpool_pq *pq = pq_new(kw_app, val_app, NULL, NULL);
	struct cpool *pool = pq_pool(pq, 1, srv.address);
	struct cpool_pq_stats ps;
	struct cpool_stats st;

	listen_idle(pool);
	assert_stats_wait(pool, NULL, st,
			  st.closed[CPOOL_CLOSE_UNEXPECTED_DATA] == 1 &&
				  st.open == 0,
			  PG_WAIT_MS);
	closed_only(&st, CPOOL_CLOSE_UNEXPECTED_DATA, 1);
	pq_wait(pq, finishes, 1);
	ps = pq_stats(pq);
	assert_stat(ps, notifies, 0);
	assert_stat(ps, quiet_finishes, 0);
	pool_end(pool, pq, fds0);
}

/* ---- fork ------------------------------------------------------------ */

Test(pq, fork_child_destroy_keeps_parent_sessions, .init = srv_up,
     .fini = srv_down)
{
	enum { N = 2 };
	int fds0 = count_open_fds();
	struct cpool_pq *pq = pq_new(kw_app, val_app, NULL, NULL);
	struct cpool *pool = pq_pool(pq, N, srv.address);
	struct cpool_conn *c[N];
	struct cpool_stats st;
	char sql[160];
	int pids[N], status;
	pid_t child;

	stay_on_this_cpu(); /* the re-leases after the fork reuse, not steal */
	for (int i = 0; i < N; i++) {
		c[i] = pq_lease(pool, srv.address);
		pids[i] = PQbackendPID(cpool_pq_conn(c[i]));
	}
	for (int i = 0; i < N; i++)
		cpool_release(c[i], 0);
	assert_stats_wait(pool, NULL, st, st.idle == N, WORKER_WAIT_MS);
	child = fork();
	cr_assert_neq(child, -1);
	if (child == 0) {
		struct cpool_pq_stats ps = { .size = sizeof(ps) };

		cpool_destroy(pool);
		cpool_pq_stats_get(pq, &ps);
		_exit(ps.finishes == N && ps.quiet_finishes == N ? 0 : 3);
	}
	cr_assert_eq(waitpid(child, &status, 0), child);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		  "child: status %#x (3: its closes were not quiet)", status);
	/* The sessions answer: had the child sent Terminate on the shared
	 * socket, the server would have read it before these queries. */
	for (int i = 0; i < N; i++) {
		c[i] = pq_lease(pool, srv.address);
		cr_assert(cpool_conn_reused(c[i]));
		cr_assert_eq(select1(c[i]), 0);
	}
	cr_assert((PQbackendPID(cpool_pq_conn(c[0])) == pids[0] &&
		   PQbackendPID(cpool_pq_conn(c[1])) == pids[1]) ||
		  (PQbackendPID(cpool_pq_conn(c[0])) == pids[1] &&
		   PQbackendPID(cpool_pq_conn(c[1])) == pids[0]));
	snprintf(sql, sizeof(sql),
		 "SELECT count(*) FROM pg_stat_activity WHERE pid IN (%d, %d)",
		 pids[0], pids[1]);
	cr_assert_eq(pgsrv_sql_ll(&srv, "postgres", sql), N);
	for (int i = 0; i < N; i++)
		cpool_release(c[i], 0);
	st = stats_of(pool, NULL);
	assert_stat(st, connects, N);
	closed_only(&st, 0, 0);
	pool_end(pool, pq, fds0);
}

/* ---- dial errors and unix endpoints ---------------------------------- */

Test(pq, dial_errors_mapped_and_bounded, .init = srv_up, .fini = srv_down)
{
	static const char *const kw_pw[] = { "user", "dbname", NULL };
	static const char *const val_pw[] = { PGSRV_PW_USER, PGSRV_DB, NULL };
	struct sockaddr_in sin = { .sin_family = AF_INET };
	socklen_t len = sizeof(sin);
	struct cpool_config cfg;
	struct cpool_pq *pq, *pqpw;
	struct cpool *pool, *poolpw;
	struct cpool_conn *c;
	char refused[32], silent[32];
	int lfd, fds0, err;
	int64_t t0, took;

	/* A listener that never accepts: the startup packet goes unanswered. */
	lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	cr_assert_eq(bind(lfd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	cr_assert_eq(listen(lfd, 16), 0);
	getsockname(lfd, (struct sockaddr *)&sin, &len);
	snprintf(silent, sizeof(silent), "127.0.0.1:%d", ntohs(sin.sin_port));
	snprintf(refused, sizeof(refused), "127.0.0.1:%d",
		 closed_port(AF_INET));
	fds0 = count_open_fds();

	pq = pq_new(kw_app, val_app, NULL, NULL);
	cpool_config_init(&cfg);
	cfg.connect_timeout_ms = 300;
	cpool_pq_install(pq, &cfg);
	pool = pool_new(&cfg);
	assert_ret(cpool_endpoint_add(pool, refused), 0);
	assert_ret(cpool_endpoint_add(pool, silent), 0);
	assert_ret(cpool_acquire(pool, refused, &c), -ECONNREFUSED);
	t0 = now_ms();
	err = cpool_acquire(pool, silent, &c);
	took = now_ms() - t0;
	assert_ret(err, -ETIMEDOUT);
	cr_assert(took >= 250 && took <= 300 + 250,
		  "timed out after %lld ms, connect_timeout_ms 300",
		  (long long)took);

	pqpw = pq_new(kw_pw, val_pw, NULL, NULL);
	cpool_pq_install(pqpw, &cfg);
	poolpw = pool_new(&cfg);
	assert_ret(cpool_endpoint_add(poolpw, srv.address), 0);
	assert_ret(cpool_acquire(poolpw, srv.address, &c), -EACCES);

	assert_stat(pq_stats(pq), connect_failures, 2);
	assert_stat(pq_stats(pq), connects, 0);
	assert_stat(pq_stats(pqpw), connect_failures, 1);
	assert_stat(stats_of(pool, NULL), connect_failures, 2);
	pool_end(poolpw, pqpw, -1);
	pool_end(pool, pq, fds0);
	close(lfd);
}

Test(pq, unix_endpoint, .init = srv_up, .fini = srv_down)
{
	int fds0 = count_open_fds();
	struct cpool_pq *pq = pq_new(kw_app, val_app, NULL, NULL);
	struct cpool *pool = pq_pool(pq, 2, srv.unix_address);
	struct cpool_conn *c;

	c = pq_lease(pool, srv.unix_address);
	cr_assert_eq(select1(c), 0);
	cr_assert_eq(pgsrv_sql_ll(&srv, "postgres",
				  "SELECT count(*) FROM pg_stat_activity "
				  "WHERE usename = '" PGSRV_USER
				  "' AND client_addr IS NULL"),
		     1);
	cpool_release(c, 0);
	c = pq_lease(pool, srv.unix_address);
	cr_assert(cpool_conn_reused(c));
	cr_assert_eq(select1(c), 0);
	cpool_release(c, 0);
	pool_end(pool, pq, fds0);
}

Test(pq, config_validation)
{
	static const char *const kw_host[] = { "user", "host", NULL };
	static const char *const val_host[] = { "a", "b", NULL };
	static const char *const kw_nov[] = { "user", "dbname", NULL };
	static const char *const val_nov[] = { "a", NULL };
	struct cpool_pq_config pc;
	struct cpool_pq *pq = NULL;

	cpool_pq_config_init(&pc);
	assert_ret(cpool_pq_new(NULL, &pq), -EINVAL);
	assert_ret(cpool_pq_new(&pc, NULL), -EINVAL);
	pc.keywords = kw_host;
	pc.values = val_host;
	assert_ret(cpool_pq_new(&pc, &pq), -EINVAL);
	pc.keywords = kw_nov;
	pc.values = val_nov;
	assert_ret(cpool_pq_new(&pc, &pq), -EINVAL);
	pc.keywords = kw_app;
	pc.values = NULL;
	assert_ret(cpool_pq_new(&pc, &pq), -EINVAL);
	pc.size = 8;
	pc.values = val_app;
	assert_ret(cpool_pq_new(&pc, &pq), -EINVAL);
	cr_assert_null(pq);
	pc.size = sizeof(pc);
	assert_ret(cpool_pq_new(&pc, &pq), 0);
	cr_assert_not_null(pq);
	cr_assert_eq(cpool_pq_conn(NULL), NULL);
	cpool_pq_free(pq);
}

/* ---- a FATAL that arrives without a FIN -------------------------------- */

/*
 * A fake server speaking just enough of the protocol (trust: AuthenticationOk,
 * ReadyForQuery) for libpq to reach CONNECTION_OK, then, when told, an
 * ErrorResponse with severity FATAL, keeping its socket open: only the
 * adapter's notice receiver can tell that the session is over. Afterwards it
 * records what reached it (a quiet close must send no Terminate).
 */
struct fake {
	int lfd, go, port;
	int after_bytes;	/* bytes received after the FATAL */
	bool eof;		/* the client closed */
	bool ready;		/* handshake done */
};

static bool
read_full(int fd, void *buf, size_t len)
{
	size_t got = 0;

	while (got < len) {
		ssize_t n = recv(fd, (char *)buf + got, len - got, 0);

		if (n <= 0)
			return false;
		got += (size_t)n;
	}
	return true;
}

static void *
fake_server(void *arg)
{
	static const char err[] = "SFATAL\0VFATAL\0C57P01\0"
				  "Mterminating connection due to "
				  "administrator command\0";
	struct fake *f = arg;
	unsigned char hdr[8], body[512], msg[600];
	uint32_t len, code, n;
	int fd = accept(f->lfd, NULL, NULL);

	if (fd == -1)
		return NULL;
	for (;;) { /* SSLRequest / GSSENCRequest: 'N'; then the startup */
		if (!read_full(fd, hdr, 8))
			goto out;
		memcpy(&len, hdr, 4);
		memcpy(&code, hdr + 4, 4);
		len = ntohl(len);
		code = ntohl(code);
		if (len < 8 || len - 8 > sizeof(body) ||
		    !read_full(fd, body, len - 8))
			goto out;
		if (code == 80877103 || code == 80877104) {
			send(fd, "N", 1, MSG_NOSIGNAL);
			continue;
		}
		break;
	}
	/* AuthenticationOk, ReadyForQuery(idle) */
	send(fd, "R\0\0\0\x08\0\0\0\0Z\0\0\0\x05I", 15, MSG_NOSIGNAL);
	__atomic_store_n(&f->ready, true, __ATOMIC_RELEASE);
	if (sig_wait(f->go, PG_WAIT_MS))
		goto out;
	/* The literal's own NUL is the terminating empty field. */
	msg[0] = 'E';
	n = htonl((uint32_t)sizeof(err) + 4);
	memcpy(msg + 1, &n, 4);
	memcpy(msg + 5, err, sizeof(err));
	send(fd, msg, 5 + sizeof(err), MSG_NOSIGNAL);
	for (;;) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		ssize_t r;

		if (poll(&p, 1, PG_WAIT_MS) != 1)
			break;
		r = recv(fd, body, sizeof(body), 0);
		if (r <= 0) {
			f->eof = r == 0;
			break;
		}
		f->after_bytes += (int)r;
	}
out:
	close(fd);
	return NULL;
}

Test(pq, fatal_without_fin_is_dead_and_closed_quietly)
{
	static const char *const kw_fake[] = { "user", "dbname", "sslmode",
					       "gssencmode", NULL };
	static const char *const val_fake[] = { "u", "d", "disable",
						"disable", NULL };
	struct sockaddr_in sin = { .sin_family = AF_INET };
	socklen_t slen = sizeof(sin);
	struct fake f = { .after_bytes = 0 };
	struct cpool_pq *pq;
	struct cpool *pool;
	struct cpool_conn *c;
	struct cpool_stats st;
	char address[32];
	pthread_t th;
	int fds0;

	f.lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	cr_assert_eq(bind(f.lfd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	cr_assert_eq(listen(f.lfd, 4), 0);
	getsockname(f.lfd, (struct sockaddr *)&sin, &slen);
	snprintf(address, sizeof(address), "127.0.0.1:%d",
		 ntohs(sin.sin_port));
	f.go = sig_new();
	cr_assert_eq(pthread_create(&th, NULL, fake_server, &f), 0);
	fds0 = count_open_fds();
	pq = pq_new(kw_fake, val_fake, NULL, NULL);
	pool = pq_pool(pq, 1, address);
	c = pq_lease(pool, address);
	cr_assert_eq(PQstatus(cpool_pq_conn(c)), CONNECTION_OK);
	cpool_release(c, 0);
	assert_stats_wait(pool, NULL, st, st.idle == 1, WORKER_WAIT_MS);
	sig_post(f.go);
	/* No acquire: the worker's watch fires on the ErrorResponse. */
	assert_stats_wait(pool, NULL, st,
			  st.closed[CPOOL_CLOSE_PEER_CLOSED] == 1 && st.open == 0,
			  PG_WAIT_MS);
	closed_only(&st, CPOOL_CLOSE_PEER_CLOSED, 1);
	pq_wait(pq, quiet_finishes, 1);
	pthread_join(th, NULL);
	cr_assert(f.eof, "the fake server saw no close");
	cr_assert_eq(f.after_bytes, 0, "%d bytes (a Terminate?) after the FATAL",
		     f.after_bytes);
	pool_end(pool, pq, fds0);
	close(f.go);
	close(f.lfd);
}
