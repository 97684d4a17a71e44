/* SPDX-License-Identifier: MIT */
/*
 * fork() and a pool. The contract these tests hold the library to: in a
 * child process, every call on a pool inherited from the parent fails
 * with -ECHILD (cpool_acquire, cpool_endpoint_add/remove,
 * cpool_stats_get), except cpool_release() of a lease the forking thread
 * held (it closes the child's copy of the fd and never pools it) and
 * cpool_destroy(), which returns promptly and closes the child's copies of
 * the pool's fds. The child never reads, writes, shutdown(2)s or
 * un-watches (EPOLL_CTL_DEL) a socket the parent holds, and a pool created
 * in the child works normally.
 *
 *  - a child gets -ECHILD from the inherited pool, a fresh pool of its own
 *    whose connections are not the parent's, and a prompt destroy; the
 *    parent then reuses its idle connections, echo intact;
 *  - after the child destroyed the inherited pool, the parent's workers
 *    still evict the parent's idle connections whose peer closed;
 *  - a lease held by the forking thread, released and destroyed in the
 *    child, is untouched for the parent.
 *
 * Each test forks from a test thread whose only other threads are the
 * pool's workers and the fault server (which the child never calls). The
 * child reports every step and failure on a pipe (tests/util/proc.h) and
 * ends with _exit(): 0 when every check passed. The parent waits for it
 * with a deadline (a hanging child is killed and reported), then runs its
 * own checks and reports the child's words with its own.
 */
#include <criterion/criterion.h>
#include <poll.h>
#include <stdio.h>

#include "util/check.h"
#include "util/proc.h"
#include "util/waitfor.h"

/* TestSuite(trust) is declared once, in test_trust_races.c. */

#if defined(__SANITIZE_THREAD__)
#define UNDER_TSAN true
#else
#define UNDER_TSAN false
#endif

#define NCONN 4
/* The child's whole run; a child still running then has hung. */
#define CHILD_DEADLINE_MS 10000
/* cpool_destroy() of the inherited pool in the child must be prompt. */
#define CHILD_DESTROY_MS 2000
/* Idle long enough to be watched by the workers (elapsed time). */
#define FORK_IDLE_MS 50

#define STEP(wfd, ...) child_say((wfd), "step: " __VA_ARGS__)
/* A soft check in the child: says what failed, counts it, goes on. */
#define CHILD_EXPECT(wfd, fails, cond, ...)                                \
	do {                                                               \
		if (!(cond)) {                                             \
			child_say((wfd), "FAILED: " __VA_ARGS__);          \
			(fails)++;                                         \
		}                                                          \
	} while (0)

struct fork_ctx {
	struct cpool *pool;	/* inherited by the child */
	const char *addr;
	int ports[NCONN];	/* the parent's connections */
	int nports;
	struct cpool_conn *held; /* a lease the forking thread holds */
};

static bool
is_parent_port(const struct fork_ctx *x, int port)
{
	for (int i = 0; i < x->nports; i++)
		if (x->ports[i] == port)
			return true;
	return false;
}

/* Child: cpool_destroy() of the inherited pool, timed. */
static int
child_destroy_inherited(struct fork_ctx *x, int wfd)
{
	int64_t t0, ms;

	STEP(wfd, "cpool_destroy(inherited pool)");
	t0 = now_ms();
	cpool_destroy(x->pool);
	ms = now_ms() - t0;
	STEP(wfd, "cpool_destroy(inherited pool) returned after %lld ms",
	     (long long)ms);
	if (ms > CHILD_DESTROY_MS) {
		child_say(wfd, "FAILED: cpool_destroy(inherited) took %lld ms, "
			  "want <= %d", (long long)ms, CHILD_DESTROY_MS);
		return 1;
	}
	return 0;
}

/* Child: every call on the inherited pool but release/destroy refused. */
static int
child_inherited_refuses(struct fork_ctx *x, int wfd)
{
	struct cpool_stats st = { .size = sizeof(st) };
	struct cpool_conn *c = NULL;
	int fails = 0, err;

	STEP(wfd, "cpool_acquire(inherited pool)");
	err = cpool_acquire(x->pool, x->addr, &c);
	if (err == 0) {
		int port = local_port(cpool_conn_fd(c));

		child_say(wfd, "FAILED: cpool_acquire(inherited) returned 0, "
			  "want -ECHILD: the child leased fd %d, local port "
			  "%d, %s", cpool_conn_fd(c), port,
			  is_parent_port(x, port) ?
				  "one of the parent's idle connections" :
				  "not one of the parent's");
		fails++;
		cpool_release(c, 0); /* no I/O on it: it may be the parent's */
	} else {
		CHILD_EXPECT(wfd, fails, err == -ECHILD,
			     "cpool_acquire(inherited) returned %d (%s), want "
			     "-ECHILD", err, strerror(-err));
	}
	STEP(wfd, "cpool_stats_get(inherited pool)");
	err = cpool_stats_get(x->pool, NULL, &st);
	CHILD_EXPECT(wfd, fails, err == -ECHILD,
		     "cpool_stats_get(inherited) returned %d (%s), want -ECHILD",
		     err, strerror(-err));
	STEP(wfd, "cpool_endpoint_add(inherited pool)");
	err = cpool_endpoint_add(x->pool, "127.0.0.1:9");
	CHILD_EXPECT(wfd, fails, err == -ECHILD,
		     "cpool_endpoint_add(inherited) returned %d (%s), want "
		     "-ECHILD", err, strerror(-err));
	STEP(wfd, "cpool_endpoint_remove(inherited pool)");
	err = cpool_endpoint_remove(x->pool, x->addr);
	CHILD_EXPECT(wfd, fails, err == -ECHILD,
		     "cpool_endpoint_remove(inherited) returned %d (%s), want "
		     "-ECHILD", err, strerror(-err));
	return fails;
}

/* Child: a fresh pool works, with connections of its own. */
static int
child_fresh_pool(struct fork_ctx *x, int wfd)
{
	struct cpool_conn *c[NCONN];
	struct cpool *pool = NULL;
	int fails = 0, n = 0, err;
	int64_t t0;
	char msg[64];

	STEP(wfd, "cpool_create + cpool_endpoint_add (fresh pool)");
	err = cpool_create(NULL, &pool);
	if (err) {
		child_say(wfd, "FAILED: cpool_create in the child: %d (%s)",
			  err, strerror(-err));
		return 1;
	}
	err = cpool_endpoint_add(pool, x->addr);
	CHILD_EXPECT(wfd, fails, err == 0,
		     "cpool_endpoint_add(fresh) returned %d (%s)", err,
		     strerror(-err));
	for (n = 0; n < NCONN; n++) {
		int port;

		STEP(wfd, "fresh pool: lease %d", n);
		err = cpool_acquire(pool, x->addr, &c[n]);
		if (err) {
			child_say(wfd, "FAILED: fresh pool lease %d: %d (%s)", n,
				  err, strerror(-err));
			fails++;
			break;
		}
		port = local_port(cpool_conn_fd(c[n]));
		CHILD_EXPECT(wfd, fails, !is_parent_port(x, port),
			     "fresh pool lease %d has local port %d, one of "
			     "the parent's", n, port);
		snprintf(msg, sizeof(msg), "child lease %d", n);
		err = conn_echo(c[n], msg);
		CHILD_EXPECT(wfd, fails, err == 0,
			     "fresh pool lease %d: echo %d (%s)", n, err,
			     strerror(-err));
	}
	for (int i = 0; i < n; i++)
		cpool_release(c[i], 0);
	STEP(wfd, "cpool_destroy(fresh pool)");
	t0 = now_ms();
	cpool_destroy(pool);
	STEP(wfd, "cpool_destroy(fresh pool) returned after %lld ms",
	     (long long)(now_ms() - t0));
	return fails;
}

static int
child_a(void *arg, int wfd)
{
	struct fork_ctx *x = arg;
	int fails = 0;

	fails += child_inherited_refuses(x, wfd);
	/*
	 * TSan cannot follow threads started after a multi-threaded fork:
	 * the fresh pool's workers reuse the parent's thread ids and TSan
	 * kills the child ("dup thread with used id"), whatever the pool
	 * does. The native and ASan runs check the fresh pool.
	 */
	if (UNDER_TSAN)
		STEP(wfd, "fresh pool: not checked under TSan");
	else
		fails += child_fresh_pool(x, wfd);
	fails += child_destroy_inherited(x, wfd);
	STEP(wfd, "done, %d failed checks", fails);
	return fails ? 1 : 0;
}

/* Forks @fn and waits for it: the child's verdict and words, or a hang. */
static struct child
fork_and_wait(child_fn *fn, struct fork_ctx *x)
{
	struct child ch;
	int err = child_start(&ch, fn, x);

	cr_assert_eq(err, 0, "fork: %s", strerror(-err));
	child_wait(&ch, CHILD_DEADLINE_MS);
	return ch;
}

/* Opens @n connections, echoes, releases them: idle, ports recorded. */
static void
idle_conns(struct fork_ctx *x, int n)
{
	struct cpool_conn *c[NCONN];

	for (int i = 0; i < n; i++) {
		c[i] = lease(x->pool, x->addr);
		x->ports[i] = local_port(cpool_conn_fd(c[i]));
		assert_echo(c[i], "parent, before the fork");
	}
	for (int i = 0; i < n; i++)
		cpool_release(c[i], 0);
	x->nports = n;
}

static struct cpool *
fork_pool(struct fault_server *fs, struct fork_ctx *x)
{
	struct cpool_config cfg = config_one_shard();

	memset(x, 0, sizeof(*x));
	x->pool = pool_new(&cfg);
	x->addr = fs_address(fs);
	pool_add(x->pool, x->addr);
	return x->pool;
}

Test(trust, a_forked_child_gets_echild_from_the_inherited_pool_and_a_pool_of_its_own_works,
     .timeout = 60)
{
	struct fault_server *fs = server_new(FS_INET);
	unsigned long long closed[CPOOL_CLOSE_REASON_COUNT] = { 0 };
	struct cpool_conn *c[NCONN];
	char parent[1024] = "";
	size_t off = 0;
	struct cpool_stats st;
	struct child ch;
	struct fork_ctx x;
	struct cpool *pool = fork_pool(fs, &x);

	idle_conns(&x, NCONN);
	ch = fork_and_wait(child_a, &x);

	/*
	 * The parent's side, whatever the child did: its idle connections
	 * are its own, intact (collected first, asserted with the child's).
	 */
	for (int i = 0; i < NCONN; i++) {
		char msg[64];
		int port, err;

		c[i] = lease(pool, x.addr);
		port = local_port(cpool_conn_fd(c[i]));
		snprintf(msg, sizeof(msg), "parent after the fork, lease %d", i);
		err = conn_echo(c[i], msg);
		if (!cpool_conn_reused(c[i]) || !is_parent_port(&x, port) ||
		    err)
			off += (size_t)snprintf(parent + off,
						sizeof(parent) - off,
						"lease %d: reused %d, port %d "
						"(%s), echo %d (%s); ",
						i, cpool_conn_reused(c[i]),
						port,
						is_parent_port(&x, port) ?
							"the parent's" :
							"new",
						err, strerror(-err));
		if (off >= sizeof(parent))
			off = sizeof(parent) - 1;
	}
	cr_assert(child_ok(&ch) && !parent[0],
		  "the child %s; it said:\n%s\nthe parent after the child: %s",
		  child_how(&ch), ch.said,
		  parent[0] ? parent : "its 4 idle connections intact");
	st = stats_of(pool, x.addr);
	assert_closed_only(&st, closed);
	assert_stat(st, connects, NCONN);
	for (int i = 0; i < NCONN; i++)
		cpool_release(c[i], 0);
	cpool_destroy(pool);
	fs_stop(fs);
}

static int
child_destroy_only(void *arg, int wfd)
{
	return child_destroy_inherited(arg, wfd);
}

Test(trust, after_a_child_destroys_the_inherited_pool_the_parent_still_evicts_dead_idle_connections,
     .timeout = 60)
{
	struct fault_server *fs = server_new(FS_INET);
	struct cpool_stats st;
	struct child ch;
	struct fork_ctx x;
	struct cpool *pool = fork_pool(fs, &x);
	int64_t t_rel, t_fin;
	bool evicted;

	idle_conns(&x, 2);
	t_rel = now_ms();
	/* Elapsed time is what lets the workers watch them. */
	while (now_ms() - t_rel < FORK_IDLE_MS)
		pause_ms(1);
	ch = fork_and_wait(child_destroy_only, &x);

	t_fin = now_ms();
	for (int i = 0; i < 2; i++)
		cr_assert_eq(fs_act(fs, FS_ACT_CLOSE, x.ports[i], NULL, 0), 1);
	evicted = stats_wait(pool, x.addr, st,
			     st.closed[CPOOL_CLOSE_PEER_CLOSED] == 2, 3000);
	cr_assert(evicted && child_ok(&ch),
		  "the parent evicted %llu of 2 idle connections whose peer "
		  "closed, %lld ms after the FIN (want 2); the child %s; it "
		  "said:\n%s",
		  (unsigned long long)st.closed[CPOOL_CLOSE_PEER_CLOSED],
		  (long long)(now_ms() - t_fin), child_how(&ch), ch.said);
	assert_stat(st, acquires, 2);
	assert_stat(st, open, 0);
	cpool_destroy(pool);
	fs_stop(fs);
}

static int
child_release_held(void *arg, int wfd)
{
	struct fork_ctx *x = arg;

	STEP(wfd, "cpool_release(lease held at fork, 0)");
	cpool_release(x->held, 0);
	return child_destroy_inherited(x, wfd);
}

Test(trust, a_lease_held_across_fork_is_untouched_by_the_childs_release_and_destroy,
     .timeout = 60)
{
	struct fault_server *fs = server_new(FS_INET);
	struct cpool_conn *c;
	struct child ch;
	struct fork_ctx x;
	struct cpool *pool = fork_pool(fs, &x);
	enum cpool_verdict v;
	int fd, port, err;

	x.held = lease(pool, x.addr);
	fd = cpool_conn_fd(x.held);
	port = local_port(fd);
	assert_echo(x.held, "parent, before the fork");
	ch = fork_and_wait(child_release_held, &x);

	/*
	 * The parent's copy: nothing arrived from the child's side (the
	 * probe sees no stray bytes and no FIN), the server still holds it,
	 * and an echo comes back exactly.
	 */
	v = cpool_probe(fd);
	err = conn_echo(x.held, "parent, after the child");
	cr_assert(child_ok(&ch) && v == CPOOL_ALIVE && err == 0,
		  "the child %s; it said:\n%s\nthe parent's lease (port %d) "
		  "after the child: probe %s, echo %d (%s), server holds %u",
		  child_how(&ch), ch.said, port, cpool_verdict_name(v), err,
		  strerror(-err), fs_open(fs));
	cr_assert_eq(fs_open(fs), 1, "the server holds %u connections",
		     fs_open(fs));
	cpool_release(x.held, 0);
	c = lease(pool, x.addr);
	cr_assert(cpool_conn_reused(c), "the released lease was not reused");
	cr_assert_eq(local_port(cpool_conn_fd(c)), port);
	assert_echo(c, "parent, reused after the child");
	cpool_release(c, 0);
	assert_stat(stats_of(pool, x.addr), connects, 1);
	cpool_destroy(pool);
	fs_stop(fs);
}
