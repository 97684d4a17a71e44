/* SPDX-License-Identifier: MIT */
/*
 * libcpool_tls against a real redis-server --tls-port (its own CA and
 * server certificate, made at start: tests/util/realsrv.c): prewarmed TLS
 * connections survive the TLS 1.3 tickets that wait on them and are all
 * reused; the raw probe alone would throw them away (why check exists);
 * CLIENT KILL is found in the background; restarts under 8 threads leave no
 * stale failure; a fork child's destroy leaves the parent's sessions whole;
 * every session is closed exactly once; a wrong name fails verification;
 * sessions resume.
 */
#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <unistd.h>

#ifdef __SANITIZE_ADDRESS__
#include <sanitizer/lsan_interface.h>
#endif

#include "cpool_tls.h"
#include "util/check.h"
#include "util/realsrv.h"
#include "util/waitfor.h"

TestSuite(tls, .timeout = 90);

struct env {
	struct realsrv srv;
	SSL_CTX *ctx;
	struct cpool_tls *tls;
	struct cpool *pool;
	const char *addr;
};

static void
env_start(struct env *e, const struct cpool_config *base,
	  const char *server_name, const struct cpool_conn_ops *ops)
{
	struct cpool_tls_config tc;
	struct cpool_config cfg;
	int err;

	if (!realsrv_available(REALSRV_REDIS_TLS))
		cr_skip_test("redis-server is not installed");
	err = realsrv_start(&e->srv, REALSRV_REDIS_TLS);
	cr_assert_eq(err, 0, "redis-server --tls-port: %s", strerror(-err));
	e->ctx = SSL_CTX_new(TLS_client_method());
	cr_assert_not_null(e->ctx);
	cr_assert_eq(SSL_CTX_load_verify_locations(e->ctx, e->srv.ca_file,
						   NULL), 1);
	cpool_tls_config_init(&tc);
	tc.ctx = e->ctx;
	tc.server_name = server_name;
	assert_ret(cpool_tls_new(&tc, &e->tls), 0);
	cfg = *base;
	cpool_tls_install(e->tls, &cfg);
	if (ops)
		cfg.conn_ops = ops;
	e->pool = pool_new(&cfg);
	e->addr = e->srv.tls_address;
	assert_ret(cpool_endpoint_add(e->pool, e->addr), 0);
}

static struct cpool_tls_stats
tls_stats(const struct env *e)
{
	struct cpool_tls_stats st = { .size = sizeof(st) };

	cr_assert_eq(cpool_tls_stats_get(e->tls, &st), 0);
	return st;
}

/* After destroy: every session made was closed once, loud or quiet. */
static void
env_stop(struct env *e)
{
	struct cpool_tls_stats st;

	if (e->pool)
		cpool_destroy(e->pool);
	e->pool = NULL;
	st = tls_stats(e);
	cr_assert_eq(st.handshakes, st.close_notifies + st.quiet_closes,
		     "handshakes %llu, closes %llu + quiet %llu",
		     (unsigned long long)st.handshakes,
		     (unsigned long long)st.close_notifies,
		     (unsigned long long)st.quiet_closes);
	cpool_tls_free(e->tls);
	SSL_CTX_free(e->ctx);
	realsrv_stop(&e->srv, SIGTERM);
	realsrv_cleanup(&e->srv);
#ifdef __SANITIZE_ADDRESS__
	/* Criterion's workers exit without LeakSanitizer's own check. */
	cr_assert_eq(__lsan_do_recoverable_leak_check(), 0,
		     "LeakSanitizer found leaks (report on stderr)");
#endif
}

static void
cfg_base(struct cpool_config *cfg)
{
	cpool_config_init(cfg);
	cfg->workers = 2;
	cfg->connect_timeout_ms = 5000;
}

/* PING over the session: 0, or -errno. */
static int
tls_ping(struct cpool_conn *c)
{
	SSL *ssl = cpool_tls_ssl(c);
	char buf[8];
	int n, got = 0;

	if (!ssl)
		return -EINVAL;
	if (SSL_write(ssl, "PING\r\n", 6) != 6)
		return -EIO;
	while (got < 7) {
		n = SSL_read(ssl, buf + got, 7 - got);
		if (n <= 0)
			return -ECONNRESET;
		got += n;
	}
	return memcmp(buf, "+PONG\r\n", 7) ? -EPROTO : 0;
}

/* One command on the plain admin port: the reply's first line in @out. */
static int
admin(const struct realsrv *s, const char *cmd, char *out, size_t len)
{
	struct sockaddr_in sin = { .sin_family = AF_INET,
				   .sin_port = htons((uint16_t)s->port),
				   .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	ssize_t n;

	if (fd == -1 || connect(fd, (struct sockaddr *)&sin, sizeof(sin)))
		return -errno;
	if (send(fd, cmd, strlen(cmd), MSG_NOSIGNAL) < 0 ||
	    wait_fd(fd, POLLIN, WAIT_MS) <= 0 ||
	    (n = recv(fd, out, len - 1, 0)) <= 0) {
		close(fd);
		return -EIO;
	}
	out[n] = '\0';
	close(fd);
	return 0;
}

Test(tls, prewarmed_connections_survive_their_tickets_and_are_all_reused)
{
	struct cpool_conn *c[4];
	struct cpool_config cfg;
	struct cpool_stats st;
	struct cpool_tls_stats ts;
	struct env e = { 0 };

	cfg_base(&cfg);
	cfg.min_idle_per_endpoint = 4;
	cfg.max_conns_per_endpoint = 4;
	env_start(&e, &cfg, NULL, NULL);
	assert_stats_wait(e.pool, e.addr, st, st.idle == 4, WAIT_MS);
	/* TLS 1.3: the tickets wait on each fresh connection until the
	 * worker's watch fires and the check consumes them. */
	for (int64_t end = now_ms() + WAIT_MS;
	     tls_stats(&e).records_consumed < 4 && now_ms() < end;)
		pause_ms(1);
	ts = tls_stats(&e);
	cr_assert_eq(ts.records_consumed, 4, "records consumed %llu",
		     (unsigned long long)ts.records_consumed);
	st = stats_of(e.pool, e.addr);
	assert_stat(st, idle, 4);
	for (int round = 0; round < 10; round++) {
		for (int i = 0; i < 4; i++)
			c[i] = lease(e.pool, e.addr);
		for (int i = 0; i < 4; i++) {
			cr_assert(cpool_conn_reused(c[i]),
				  "round %d: lease %d was not a reuse", round, i);
			assert_ret(tls_ping(c[i]), 0);
			cpool_release(c[i], 0);
		}
	}
	st = stats_of(e.pool, e.addr);
	assert_stat(st, connects, 4);
	assert_stat(st, prewarms, 4);
	assert_stat(st, reuses, 40);
	assert_stat(st, closed[CPOOL_CLOSE_UNEXPECTED_DATA], 0);
	ts = tls_stats(&e);
	cr_assert_eq(ts.handshakes, 4);
	env_stop(&e);
}

Test(tls, the_raw_probe_alone_calls_fresh_tls_connections_unexpected_data)
{
	struct cpool_conn_ops raw = *cpool_tls_ops();
	struct cpool_config cfg;
	struct cpool_stats st;
	struct env e = { 0 };
	int sv, n = 0;
	SSL *ssl;

	raw.check = NULL; /* only the TCP probe's verdict */
	cfg_base(&cfg);
	cfg.min_idle_per_endpoint = 4;
	cfg.max_conns_per_endpoint = 4;
	env_start(&e, &cfg, NULL, &raw);
	/* The workers see the tickets and close every prewarmed one. */
	assert_stats_wait(e.pool, e.addr, st,
			  st.closed[CPOOL_CLOSE_UNEXPECTED_DATA] >= 4, WAIT_MS);
	cr_log_info("raw probe: %llu prewarmed TLS connections closed as "
		    "unexpected_data",
		    (unsigned long long)st.closed[CPOOL_CLOSE_UNEXPECTED_DATA]);
	/* What waits on the raw socket right after a handshake. */
	sv = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in sin = { .sin_family = AF_INET,
				   .sin_port = htons((uint16_t)e.srv.tls_port),
				   .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	cr_assert_eq(connect(sv, (struct sockaddr *)&sin, sizeof(sin)), 0);
	ssl = SSL_new(e.ctx);
	SSL_set_fd(ssl, sv);
	cr_assert_eq(SSL_connect(ssl), 1);
	cr_assert_eq(SSL_version(ssl), TLS1_3_VERSION);
	cr_assert(wait_fd(sv, POLLIN, WAIT_MS) & POLLIN);
	for (int64_t end = now_ms() + 200; now_ms() < end;) {
		ioctl(sv, FIONREAD, &n); /* both tickets: until it settles */
		if (n >= 400)
			break;
		pause_ms(1);
	}
	cr_log_info("bytes waiting on the raw socket after the handshake: %d",
		    n);
	cr_assert_gt(n, 0);
	cr_assert_eq(cpool_probe(sv), CPOOL_UNEXPECTED_DATA);
	SSL_free(ssl);
	close(sv);
	env_stop(&e);
}

Test(tls, client_kill_of_idle_clients_is_found_in_the_background)
{
	struct cpool_conn *c[3];
	struct cpool_config cfg;
	struct cpool_stats st;
	struct cpool_tls_stats ts;
	struct env e = { 0 };
	char reply[64];

	cfg_base(&cfg);
	env_start(&e, &cfg, NULL, NULL);
	for (int i = 0; i < 3; i++)
		c[i] = lease(e.pool, e.addr);
	for (int i = 0; i < 3; i++) {
		assert_ret(tls_ping(c[i]), 0);
		cpool_release(c[i], 0);
	}
	cr_assert_eq(admin(&e.srv, "CLIENT KILL TYPE normal SKIPME yes\r\n",
			   reply, sizeof(reply)), 0);
	cr_assert_eq(strncmp(reply, ":3", 2), 0, "CLIENT KILL said %s", reply);
	assert_stats_wait(e.pool, e.addr, st,
			  st.closed[CPOOL_CLOSE_PEER_CLOSED] == 3, WAIT_MS);
	assert_stat(st, idle, 0);
	assert_stat(st, acquires, 3);
	ts = tls_stats(&e);
	cr_assert_eq(ts.quiet_closes, 3, "quiet closes %llu",
		     (unsigned long long)ts.quiet_closes);
	cr_assert_eq(ts.close_notifies, 0);
	env_stop(&e);
}

struct load {
	struct env *e;
	atomic_int stop;
	atomic_llong settled_ms; /* failures before this are the restart's */
	atomic_int restarted;	 /* set when a restart completed */
	atomic_long ok, early_fail, stale, wrong;
};

static void *
load_main(void *arg)
{
	struct load *l = arg;
	struct cpool_conn *c;
	int64_t start;
	int err;

	while (!atomic_load(&l->stop)) {
		start = now_ms();
		err = cpool_acquire(l->e->pool, l->e->addr, &c);
		if (!err) {
			err = tls_ping(c);
			cpool_release(c, err ? CPOOL_RELEASE_CLOSE : 0);
		}
		if (!err) {
			atomic_fetch_add(&l->ok, 1);
			/* The first success after a restart: settle from here
			 * (the backoff the downtime started is over). */
			if (atomic_exchange(&l->restarted, 0))
				atomic_store(&l->settled_ms, now_ms() + 100);
		} else if (err == -EPROTO)
			atomic_fetch_add(&l->wrong, 1);
		else if (start < atomic_load(&l->settled_ms))
			atomic_fetch_add(&l->early_fail, 1);
		else
			atomic_fetch_add(&l->stale, 1);
	}
	return NULL;
}

Test(tls, restarts_under_eight_threads_leave_no_stale_failure)
{
	static const int sigs[] = { SIGTERM, SIGKILL, SIGTERM };
	struct load l = { 0 };
	struct cpool_config cfg;
	struct env e = { 0 };
	pthread_t t[8];
	long before;

	cfg_base(&cfg);
	cfg.max_conns_per_endpoint = 8;
	env_start(&e, &cfg, NULL, NULL);
	l.e = &e;
	for (int i = 0; i < 8; i++)
		cr_assert_eq(pthread_create(&t[i], NULL, load_main, &l), 0);
	for (size_t r = 0; r < sizeof(sigs) / sizeof(sigs[0]); r++) {
		before = atomic_load(&l.ok);
		while (atomic_load(&l.ok) < before + 200)
			pause_ms(1); /* traffic on the old instance */
		atomic_store(&l.settled_ms, INT64_MAX);
		cr_assert_eq(realsrv_restart(&e.srv, sigs[r]), 0);
		atomic_store(&l.restarted, 1); /* settle after the next ok */
		before = atomic_load(&l.ok);
		for (int64_t end = now_ms() + WAIT_MS;
		     atomic_load(&l.ok) < before + 500 && now_ms() < end;)
			pause_ms(1);
		cr_assert_geq(atomic_load(&l.ok), before + 500,
			      "restart %zu: no traffic afterwards", r);
	}
	atomic_store(&l.stop, 1);
	for (int i = 0; i < 8; i++)
		pthread_join(t[i], NULL);
	cr_log_info("restarts: ok %ld, failures during restarts %ld",
		    atomic_load(&l.ok), atomic_load(&l.early_fail));
	cr_assert_eq(atomic_load(&l.stale), 0, "%ld stale failures after settle",
		     atomic_load(&l.stale));
	cr_assert_eq(atomic_load(&l.wrong), 0, "%ld wrong answers",
		     atomic_load(&l.wrong));
	env_stop(&e);
}

Test(tls, a_fork_childs_destroy_leaves_the_parents_sessions_whole)
{
	struct cpool_conn *c[3];
	struct cpool_config cfg;
	struct cpool_tls_stats ts;
	struct env e = { 0 };
	int pfd[2], status;
	uint64_t got[2] = { 0 };
	pid_t pid;

	cfg_base(&cfg);
	env_start(&e, &cfg, NULL, NULL);
	for (int i = 0; i < 3; i++)
		c[i] = lease(e.pool, e.addr);
	for (int i = 0; i < 3; i++) {
		assert_ret(tls_ping(c[i]), 0);
		cpool_release(c[i], 0);
	}
	cr_assert_eq(pipe(pfd), 0);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		struct cpool_tls_stats cs = { .size = sizeof(cs) };
		uint64_t res[2];

		cpool_destroy(e.pool);
		cpool_tls_stats_get(e.tls, &cs);
		res[0] = cs.quiet_closes;
		res[1] = cs.close_notifies;
		_exit(write(pfd[1], res, sizeof(res)) == sizeof(res) ? 0 : 1);
	}
	close(pfd[1]);
	cr_assert_eq(read(pfd[0], got, sizeof(got)), (ssize_t)sizeof(got));
	close(pfd[0]);
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	cr_assert_eq(got[0], 3, "child's quiet closes %llu want 3",
		     (unsigned long long)got[0]);
	cr_assert_eq(got[1], 0, "the child sent %llu close_notify",
		     (unsigned long long)got[1]);
	/* No close_notify, no record of the child's: the streams are whole. */
	for (int round = 0; round < 3; round++) {
		for (int i = 0; i < 3; i++)
			c[i] = lease(e.pool, e.addr);
		for (int i = 0; i < 3; i++) {
			cr_assert(cpool_conn_reused(c[i]));
			assert_ret(tls_ping(c[i]), 0);
			cpool_release(c[i], 0);
		}
	}
	cr_assert_eq(ERR_peek_error(), 0);
	ts = tls_stats(&e);
	cr_assert_eq(ts.handshakes, 3);
	cr_assert_eq(ts.quiet_closes + ts.close_notifies, 0);
	env_stop(&e);
}

Test(tls, a_wrong_name_fails_verification_and_sessions_resume)
{
	struct cpool_config cfg;
	struct cpool_conn *c, *d;
	struct cpool_stats st;
	struct cpool_tls_stats ts;
	struct env e = { 0 };

	cfg_base(&cfg);
	env_start(&e, &cfg, "not-the-server.example", NULL);
	assert_ret(cpool_acquire(e.pool, e.addr, &c), -EPERM);
	st = stats_of(e.pool, e.addr);
	assert_stat(st, connect_failures, 1);
	assert_stat(st, open, 0);
	ts = tls_stats(&e);
	cr_assert_eq(ts.handshake_failures, 1);
	env_stop(&e);

	memset(&e, 0, sizeof(e));
	env_start(&e, &cfg, "localhost", NULL); /* the DNS SAN */
	c = lease(e.pool, e.addr);
	assert_ret(tls_ping(c), 0); /* the tickets arrive with the reply */
	cpool_release(c, CPOOL_RELEASE_CLOSE); /* stores the session */
	d = lease(e.pool, e.addr);
	assert_ret(tls_ping(d), 0);
	ts = tls_stats(&e);
	cr_assert_eq(ts.handshakes, 2);
	cr_assert_eq(ts.resumed, 1, "the second handshake did not resume");
	cpool_release(d, 0);
	env_stop(&e);
}
