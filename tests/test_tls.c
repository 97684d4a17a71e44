/* SPDX-License-Identifier: MIT */
/*
 * The TLS adapter (include/cpool_tls.h) against a real redis-server
 * speaking TLS only (tests/util/tlssrv.h): every lease carries a PING/PONG
 * through SSL_write/SSL_read.
 *
 * What is held exactly: prewarmed connections survive the TLS 1.3 tickets
 * the server sends after the handshake (check consumes them), while the
 * raw TCP probe alone closes them as unexpected_data; a CLIENT KILL is seen
 * in the background as peer_closed, with one quiet close each; a restart
 * under 8 threads leaves no stale connection once it is done; a fork
 * child's destroy sends nothing (the parent's sessions keep working, the
 * child counts only quiet closes); a wrong name fails with -EPERM; a
 * second connection resumes. Every test ends with handshakes == closes
 * (close ran exactly once per session; under ASan a second SSL_free would
 * also be a use after free).
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <openssl/err.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cpool_tls.h"
#include "util/check.h"
#include "util/tlssrv.h"
#include "util/waitfor.h"
#include "util/leakcheck.h"

TestSuite(tls, .timeout = 60, .fini = leak_fini);

struct fix {
	struct tlssrv srv;
	SSL_CTX *ctx;
	struct cpool_tls *tls;
	struct cpool *pool;
	struct cpool_config cfg;
};

static void
fix_start(struct fix *f, const char *server_name, bool resume)
{
	struct cpool_tls_config tc;
	int err;

	memset(f, 0, sizeof(*f));
	if (!tlssrv_available())
		cr_skip_test("redis-server or openssl not installed");
	err = tlssrv_start(&f->srv, NULL);
	cr_assert_eq(err, 0, "tlssrv_start: %s", strerror(-err));
	f->ctx = tlssrv_client_ctx(&f->srv);
	cr_assert_not_null(f->ctx);
	cpool_tls_config_init(&tc);
	tc.ctx = f->ctx;
	tc.server_name = server_name;
	tc.resume = resume;
	assert_ret(cpool_tls_new(&tc, &f->tls), 0);
	cpool_config_init(&f->cfg);
	f->cfg.flags = CPOOL_NO_PIN;
	f->cfg.workers = 1;
	f->cfg.max_conns_per_endpoint = 16;
	f->cfg.connect_timeout_ms = 2000;
	cpool_tls_install(f->tls, &f->cfg);
}

/* The pool of @f->cfg with the server's endpoint added. */
static void
fix_pool(struct fix *f)
{
	f->pool = pool_new(&f->cfg);
	assert_ret(cpool_endpoint_add(f->pool, f->srv.address), 0);
}

static struct cpool_tls_stats
tls_stats(const struct cpool_tls *tls)
{
	struct cpool_tls_stats st = { .size = sizeof(st) };

	assert_ret(cpool_tls_stats_get(tls, &st), 0);
	return st;
}

/*
 * Waits until the adapter's counters satisfy @cond (reading @ts). The pool
 * counts closed[] before it runs the close op (pool/endpoint.c,
 * cpool__ep_conn_close), so a close seen in cpool_stats may not have
 * reached the adapter yet.
 */
#define tls_stats_wait(tls, ts, cond, ms)                                  \
	({                                                                 \
		int64_t d_ = now_ms() + (ms);                              \
		bool held_;                                                \
		while (!(held_ = ((ts) = tls_stats(tls), (cond))) &&       \
		       now_ms() < d_)                                      \
			pause_1ms();                                       \
		held_;                                                     \
	})

/* Destroys the pool; then every session made was closed exactly once. */
static void
fix_stop(struct fix *f)
{
	struct cpool_tls_stats ts;

	cpool_destroy(f->pool);
	f->pool = NULL;
	ts = tls_stats(f->tls);
	cr_expect_eq(ts.handshakes, ts.close_notifies + ts.quiet_closes,
		     "handshakes %llu != closes %llu + %llu",
		     (unsigned long long)ts.handshakes,
		     (unsigned long long)ts.close_notifies,
		     (unsigned long long)ts.quiet_closes);
	cpool_tls_free(f->tls);
	SSL_CTX_free(f->ctx);
	tlssrv_stop(&f->srv);
}

/* One PING/PONG through the lease's TLS session. */
static bool
ping(struct cpool_conn *c)
{
	char buf[64];
	SSL *ssl = cpool_tls_ssl(c);

	if (!ssl)
		return false;
	return tlssrv_cmd(ssl, "PING\r\n", buf, sizeof(buf)) == 7 &&
	       !strcmp(buf, "+PONG\r\n");
}

static struct cpool_conn *
tls_lease(struct fix *f)
{
	struct cpool_conn *c = NULL;

	assert_ret(cpool_acquire(f->pool, f->srv.address, &c), 0);
	return c;
}

/* An admin command over a TLS connection of its own; the reply in @out. */
static void
admin(struct fix *f, const char *req, char *out, size_t len)
{
	struct tlssrv_client cl;
	int n;

	assert_ret(tlssrv_client_open(&f->srv, f->ctx, &cl), 0);
	n = tlssrv_cmd(cl.ssl, req, out, len);
	tlssrv_client_close(&cl);
	cr_assert_gt(n, 0, "%s: %d", req, n);
}

static long
info_field(struct fix *f, const char *section, const char *key)
{
	char req[64], buf[8192], *p;

	snprintf(req, sizeof(req), "INFO %s\r\n", section);
	admin(f, req, buf, sizeof(buf));
	p = strstr(buf, key);
	cr_assert_not_null(p, "INFO %s has no %s", section, key);
	return strtol(p + strlen(key), NULL, 10);
}

/* All 4 prewarmed leased at once, 3 rounds, each with a PING. */
static void
lease_rounds(struct fix *f, int n, int rounds)
{
	struct cpool_conn *c[8];

	for (int r = 0; r < rounds; r++) {
		for (int i = 0; i < n; i++)
			c[i] = tls_lease(f);
		for (int i = 0; i < n; i++) {
			cr_assert(ping(c[i]), "round %d lease %d: no PONG", r, i);
			cpool_release(c[i], 0);
		}
	}
}

Test(tls, prewarmed_survive_tickets)
{
	struct cpool_stats st;
	struct cpool_tls_stats ts;
	struct fix f;

	fix_start(&f, NULL, true);
	f.cfg.min_idle_per_endpoint = 4;
	/* The cap too: with all 4 leased the worker would prewarm more. */
	f.cfg.max_conns_per_endpoint = 4;
	fix_pool(&f);
	assert_stats_wait(f.pool, f.srv.address, st,
			  st.idle == 4 && st.prewarms == 4, WORKER_WAIT_MS);
	/* The tickets reach the idle sockets; the worker's check eats them. */
	cr_assert(tls_stats_wait(f.tls, ts, ts.records_consumed >= 4,
				 WORKER_WAIT_MS),
		  "records_consumed %llu < 4",
		  (unsigned long long)ts.records_consumed);
	lease_rounds(&f, 4, 3);
	st = stats_of(f.pool, f.srv.address);
	ts = tls_stats(f.tls);
	printf("tls prewarm: records_consumed %llu, handshakes %llu\n",
	       (unsigned long long)ts.records_consumed,
	       (unsigned long long)ts.handshakes);
	assert_stat(st, connects, 4);
	assert_stat(st, acquires, 12);
	assert_stat(st, reuses, 12);
	assert_stat(st, closed[CPOOL_CLOSE_UNEXPECTED_DATA], 0);
	assert_stat(ts, handshakes, 4);
	fix_stop(&f);
}

/* How many bytes wait at a raw socket right after SSL_connect returns. */
static int
bytes_after_handshake(struct fix *f)
{
	struct tlssrv_client cl;
	struct pollfd p;
	int n = 0;

	assert_ret(tlssrv_client_open(&f->srv, f->ctx, &cl), 0);
	p.fd = cl.fd;
	p.events = POLLIN;
	if (poll(&p, 1, 1000) == 1)
		cr_assert_eq(ioctl(cl.fd, FIONREAD, &n), 0);
	tlssrv_client_close(&cl);
	return n;
}

Test(tls, raw_probe_calls_tickets_unexpected_data)
{
	struct cpool_conn_ops raw = *cpool_tls_ops();
	struct cpool_stats st;
	struct fix f;
	int bytes;

	fix_start(&f, NULL, true);
	bytes = bytes_after_handshake(&f);
	printf("tls: %d bytes wait at the raw socket after the handshake\n",
	       bytes);
	cr_assert_gt(bytes, 0, "no post-handshake records: not TLS 1.3?");
	raw.check = NULL;
	f.cfg.conn_ops = &raw;
	f.cfg.min_idle_per_endpoint = 4;
	fix_pool(&f);
	/* Without check, each prewarmed connection's tickets close it. */
	assert_stats_wait(f.pool, f.srv.address, st,
			  st.closed[CPOOL_CLOSE_UNEXPECTED_DATA] >= 4 &&
				  st.connects >= 8,
			  WORKER_WAIT_MS);
	printf("tls raw probe: closed[unexpected_data] %llu, connects %llu\n",
	       (unsigned long long)st.closed[CPOOL_CLOSE_UNEXPECTED_DATA],
	       (unsigned long long)st.connects);
	fix_stop(&f);
}

Test(tls, client_kill_evicted_in_background)
{
	struct cpool_conn *c[3];
	struct cpool_stats st;
	struct cpool_tls_stats ts;
	char buf[64];
	struct fix f;

	fix_start(&f, NULL, true);
	fix_pool(&f);
	for (int i = 0; i < 3; i++)
		c[i] = tls_lease(&f);
	for (int i = 0; i < 3; i++) {
		cr_assert(ping(c[i]));
		cpool_release(c[i], 0);
	}
	assert_stats_wait(f.pool, f.srv.address, st, st.idle == 3,
			  WORKER_WAIT_MS);
	admin(&f, "CLIENT KILL TYPE normal\r\n", buf, sizeof(buf));
	cr_assert_str_eq(buf, ":3\r\n");
	assert_stats_wait(f.pool, f.srv.address, st,
			  st.closed[CPOOL_CLOSE_PEER_CLOSED] == 3 &&
				  st.open == 0,
			  WORKER_WAIT_MS);
	cr_assert(tls_stats_wait(f.tls, ts, ts.quiet_closes == 3,
				 WORKER_WAIT_MS),
		  "quiet_closes %llu", (unsigned long long)ts.quiet_closes);
	assert_stat(st, acquires, 3);
	assert_stat(ts, quiet_closes, 3);
	assert_stat(ts, close_notifies, 0);
	assert_stat(ts, handshakes, 3);
	fix_stop(&f);
}

#define RESTART_THREADS 8
#define SETTLE_MS 200

struct rs {
	struct fix *f;
	atomic_int stop;
	atomic_llong done_ms;	/* when the restart completed; 0 before */
	atomic_int ok, fail_early, stale, acq_fail_late, ok_late;
};

static void *
restart_worker(void *arg)
{
	struct rs *r = arg;
	char buf[64];

	while (!atomic_load(&r->stop)) {
		struct cpool_conn *c = NULL;
		long long done = atomic_load(&r->done_ms);
		bool late = done && now_ms() > done + SETTLE_MS;
		int err = cpool_acquire(r->f->pool, r->f->srv.address, &c);
		bool good;

		if (err) {
			atomic_fetch_add(late ? &r->acq_fail_late
					      : &r->fail_early, 1);
			pause_1ms();
			continue;
		}
		good = tlssrv_cmd(cpool_tls_ssl(c), "PING\r\n", buf,
				  sizeof(buf)) == 7 &&
		       !strcmp(buf, "+PONG\r\n");
		cpool_release(c, good ? 0 : CPOOL_RELEASE_CLOSE);
		if (good) {
			atomic_fetch_add(late ? &r->ok_late : &r->ok, 1);
		} else {
			ERR_clear_error();
			atomic_fetch_add(late ? &r->stale : &r->fail_early, 1);
		}
	}
	ERR_clear_error();
	return NULL;
}

Test(tls, restart_under_load_no_stale)
{
	pthread_t th[RESTART_THREADS];
	struct rs r = { 0 };
	struct fix f;
	int64_t end;

	fix_start(&f, NULL, true);
	fix_pool(&f);
	r.f = &f;
	for (int i = 0; i < RESTART_THREADS; i++)
		cr_assert_eq(pthread_create(&th[i], NULL, restart_worker, &r), 0);
	end = now_ms() + 10000;
	while (atomic_load(&r.ok) < 200 && now_ms() < end)
		pause_1ms();
	cr_assert_geq(atomic_load(&r.ok), 200, "no traffic before restart");
	assert_ret(tlssrv_restart(&f.srv, SIGTERM), 0);
	atomic_store(&r.done_ms, now_ms());
	end = now_ms() + 10000;
	while (atomic_load(&r.ok_late) < 500 && now_ms() < end)
		pause_1ms();
	atomic_store(&r.stop, 1);
	for (int i = 0; i < RESTART_THREADS; i++)
		pthread_join(th[i], NULL);
	printf("tls restart: ok %d, early failures %d, after settle: ok %d "
	       "stale %d acquire failures %d\n",
	       atomic_load(&r.ok), atomic_load(&r.fail_early),
	       atomic_load(&r.ok_late), atomic_load(&r.stale),
	       atomic_load(&r.acq_fail_late));
	cr_assert_geq(atomic_load(&r.ok_late), 500);
	cr_assert_eq(atomic_load(&r.stale), 0);
	cr_assert_eq(atomic_load(&r.acq_fail_late), 0);
	fix_stop(&f);
}

Test(tls, fork_child_destroy_sends_nothing)
{
	struct cpool_conn *c[3];
	struct cpool_stats st;
	long clients;
	int status;
	struct fix f;
	pid_t pid;

	fix_start(&f, NULL, true);
	fix_pool(&f);
	for (int i = 0; i < 3; i++)
		c[i] = tls_lease(&f);
	for (int i = 0; i < 3; i++) {
		cr_assert(ping(c[i]));
		cpool_release(c[i], 0);
	}
	assert_stats_wait(f.pool, f.srv.address, st, st.idle == 3,
			  WORKER_WAIT_MS);
	clients = info_field(&f, "clients", "connected_clients:");
	cr_assert_eq(clients, 4, "connected_clients %ld (3 + admin)", clients);
	pid = fork();
	cr_assert_neq(pid, -1);
	if (pid == 0) {
		struct cpool_tls_stats ts = { .size = sizeof(ts) };

		/* Quiet closes only: exit 0 iff 3 quiet, 0 close_notify. */
		cpool_destroy(f.pool);
		cpool_tls_stats_get(f.tls, &ts);
		_exit(ts.quiet_closes == 3 && ts.close_notifies == 0 ? 0 : 1);
	}
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		  "child: status %#x (closes not quiet)", status);
	/* A close_notify from the child would precede these PINGs. */
	for (int i = 0; i < 3; i++)
		c[i] = tls_lease(&f);
	for (int i = 0; i < 3; i++) {
		cr_assert(ping(c[i]), "lease %d broken after the fork", i);
		cpool_release(c[i], 0);
	}
	st = stats_of(f.pool, f.srv.address);
	assert_stat(st, connects, 3);
	assert_stat(st, reuses, 3);
	assert_stat(st, closed[CPOOL_CLOSE_PEER_CLOSED], 0);
	clients = info_field(&f, "clients", "connected_clients:");
	cr_assert_eq(clients, 4, "connected_clients %ld after the child",
		     clients);
	fix_stop(&f);
}

Test(tls, wrong_name_fails_eperm)
{
	struct cpool_conn *c = NULL;
	struct cpool_tls_stats ts;
	struct fix f;

	fix_start(&f, "wrong.example", true);
	fix_pool(&f);
	assert_ret(cpool_acquire(f.pool, f.srv.address, &c), -EPERM);
	ts = tls_stats(f.tls);
	assert_stat(ts, handshake_failures, 1);
	assert_stat(ts, handshakes, 0);
	fix_stop(&f);
}

Test(tls, dns_name_verifies)
{
	struct cpool_conn *c;
	struct fix f;

	fix_start(&f, "localhost", true);
	fix_pool(&f);
	c = tls_lease(&f);
	cr_assert(ping(c));
	cpool_release(c, 0);
	fix_stop(&f);
}

static void
resume_case(bool resume, bool want)
{
	struct cpool_conn *a, *b;
	struct cpool_tls_stats ts;
	struct fix f;

	fix_start(&f, NULL, resume);
	fix_pool(&f);
	a = tls_lease(&f);
	cr_assert(ping(a)); /* reads the tickets */
	cpool_release(a, 0); /* stores the ticketed session */
	a = tls_lease(&f);
	b = tls_lease(&f); /* a new connection: offers it */
	cr_assert(ping(a));
	cr_assert(ping(b));
	cpool_release(a, 0);
	cpool_release(b, 0);
	ts = tls_stats(&*f.tls);
	assert_stat(ts, handshakes, 2);
	assert_stat(ts, resumed, want ? 1 : 0);
	fix_stop(&f);
}

Test(tls, second_connection_resumes)
{
	resume_case(true, true);
}

Test(tls, no_resume_when_off)
{
	resume_case(false, false);
}

Test(tls, close_notify_on_loud_close)
{
	struct cpool_conn *c;
	struct cpool_tls_stats ts;
	struct fix f;

	fix_start(&f, NULL, true);
	fix_pool(&f);
	c = tls_lease(&f);
	cr_assert(ping(c));
	cpool_release(c, CPOOL_RELEASE_CLOSE);
	ts = tls_stats(f.tls);
	assert_stat(ts, close_notifies, 1);
	assert_stat(ts, quiet_closes, 0);
	fix_stop(&f);
}

/* Bytes OpenSSL buffered but nobody read: release refuses reuse. */
Test(tls, release_refuses_buffered_bytes)
{
	struct cpool_conn *c;
	struct cpool_stats st;
	char b;
	struct fix f;

	fix_start(&f, NULL, true);
	fix_pool(&f);
	c = tls_lease(&f);
	cr_assert_eq(SSL_write(cpool_tls_ssl(c), "PING\r\n", 6), 6);
	cr_assert_eq(SSL_read(cpool_tls_ssl(c), &b, 1), 1); /* "+" of 7 */
	cr_assert_gt(SSL_pending(cpool_tls_ssl(c)), 0);
	cpool_release(c, 0);
	st = stats_of(f.pool, f.srv.address);
	assert_stat(st, closed[CPOOL_CLOSE_BY_CALLER], 1);
	assert_stat(st, open, 0);
	fix_stop(&f);
}

/* Application bytes on an idle connection (a PUBLISH to a subscriber that
 * was released): check reads them through TLS and says unexpected_data. */
Test(tls, app_data_on_idle_is_unexpected)
{
	struct cpool_conn *c;
	struct cpool_stats st;
	struct cpool_tls_stats ts;
	char buf[256];
	struct fix f;

	fix_start(&f, NULL, true);
	fix_pool(&f);
	c = tls_lease(&f);
	/* *3 $9 subscribe $7 cpoolch :1 = 36 bytes */
	cr_assert_eq(SSL_write(cpool_tls_ssl(c),
			       "SUBSCRIBE cpoolch\r\n", 19), 19);
	{
		int got = 0, n;

		while (got < 36) {
			n = SSL_read(cpool_tls_ssl(c), buf + got,
				     (int)sizeof(buf) - got);
			cr_assert_gt(n, 0);
			got += n;
		}
		cr_assert_eq(got, 36, "subscribe reply %d bytes", got);
	}
	cpool_release(c, 0);
	assert_stats_wait(f.pool, f.srv.address, st, st.idle == 1,
			  WORKER_WAIT_MS);
	admin(&f, "PUBLISH cpoolch hello\r\n", buf, sizeof(buf));
	cr_assert_str_eq(buf, ":1\r\n");
	assert_stats_wait(f.pool, f.srv.address, st,
			  st.closed[CPOOL_CLOSE_UNEXPECTED_DATA] == 1 &&
				  st.open == 0,
			  WORKER_WAIT_MS);
	cr_assert(tls_stats_wait(f.tls, ts, ts.close_notifies >= 1,
				 WORKER_WAIT_MS));
	assert_stat(ts, close_notifies, 1); /* unexpected_data is loud */
	fix_stop(&f);
}

/* A listener that completes TCP but never speaks TLS: the handshake is
 * bounded by connect_timeout_ms on the pool's blocking fd (-ETIMEDOUT). */
Test(tls, silent_server_handshake_times_out)
{
	struct sockaddr_in sin = { .sin_family = AF_INET };
	socklen_t len = sizeof(sin);
	struct cpool_conn *c = NULL;
	struct cpool_tls_stats ts;
	char addr[32];
	struct fix f;
	int64_t t0, ms;
	int lfd;

	fix_start(&f, NULL, true);
	lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	cr_assert_neq(lfd, -1);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	cr_assert_eq(bind(lfd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	cr_assert_eq(listen(lfd, 8), 0); /* the kernel accepts; we never do */
	cr_assert_eq(getsockname(lfd, (struct sockaddr *)&sin, &len), 0);
	snprintf(addr, sizeof(addr), "127.0.0.1:%d", ntohs(sin.sin_port));
	f.cfg.connect_timeout_ms = 300;
	f.pool = pool_new(&f.cfg);
	assert_ret(cpool_endpoint_add(f.pool, addr), 0);
	t0 = now_ms();
	assert_ret(cpool_acquire(f.pool, addr, &c), -ETIMEDOUT);
	ms = now_ms() - t0;
	cr_assert(ms >= 250 && ms < 2000, "handshake gave up after %lld ms",
		  (long long)ms);
	ts = tls_stats(f.tls);
	assert_stat(ts, handshake_failures, 1);
	assert_stat(ts, handshakes, 0);
	close(lfd);
	fix_stop(&f);
}
