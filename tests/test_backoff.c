/* SPDX-License-Identifier: MIT */
/*
 * Connect backoff against a refused port: the first failure starts an
 * exponential backoff (10 ms .. 5 s, up to 25 % less); during it acquires
 * fail fast with the last connect error and count fail_fasts without
 * dialing; one trial connect at a time decides recovery. Workers wait the
 * backoff out before prewarming.
 *
 * The "dead" endpoint is a socket bound to a loopback port without
 * listen(): connects to it are refused, nobody else can take the port, and
 * listen() on the same socket brings the endpoint back.
 */
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

#include "util/check.h"
#include "util/waitfor.h"
#include "util/leakcheck.h"

TestSuite(backoff, .timeout = 60, .fini = leak_fini);

/* A bound, not listening 127.0.0.1 socket; its "127.0.0.1:port" in @addr. */
static int
dead_port(char *addr, size_t len)
{
	struct sockaddr_in sin = { .sin_family = AF_INET,
				   .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t slen = sizeof(sin);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	cr_assert_geq(fd, 0, "socket: %s", strerror(errno));
	cr_assert_eq(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0,
		     "bind: %s", strerror(errno));
	cr_assert_eq(getsockname(fd, (struct sockaddr *)&sin, &slen), 0);
	snprintf(addr, len, "127.0.0.1:%d", ntohs(sin.sin_port));
	return fd;
}

static void
revive(int lfd)
{
	cr_assert_eq(listen(lfd, 128), 0, "listen: %s", strerror(errno));
}

/* Every acquire against the dead port must fail with exactly this. */
#define assert_refused(pool, addr)                                         \
	do {                                                               \
		struct cpool_conn *c_ = NULL;                              \
		assert_ret(cpool_acquire((pool), (addr), &c_),             \
			   -ECONNREFUSED);                                 \
		cr_assert_null(c_, "out was written on failure");          \
	} while (0)

Test(backoff, a_refused_connect_starts_backoff_and_later_acquires_fail_fast)
{
	struct cpool_config cfg = config_one_shard();
	struct cpool *pool = pool_new(&cfg);
	struct cpool_stats st;
	int64_t t1, t7 = 0, t_call;
	uint64_t calls = 0;
	char addr[64];
	int lfd = dead_port(addr, sizeof(addr));

	pool_add(pool, addr);
	t1 = now_ms();
	assert_refused(pool, addr);
	calls++;
	st = stats_of(pool, addr);
	assert_stat(st, connect_failures, 1);
	assert_stat(st, backoffs, 1);
	assert_stat(st, fail_fasts, 0);
	assert_stat(st, acquires, 0);
	assert_stat(st, connects, 0);
	assert_stat(st, open, 0);

	/*
	 * Keep asking: each call is either refused at once (fail_fasts) or
	 * the one trial the ended backoff lets through (connect_failures).
	 * The first six failures open windows of at least 0.75 x (10 + 20 +
	 * 40 + 80 + 160 + 320) ms: the seventh cannot come sooner.
	 */
	while (st.connect_failures < 7 && now_ms() - t1 < 10000) {
		pause_1ms();
		t_call = now_ms();
		assert_refused(pool, addr);
		calls++;
		st = stats_of(pool, addr);
		if (st.connect_failures == 7)
			t7 = t_call;
		assert_stat(st, backoffs, st.connect_failures);
		assert_stat(st, fail_fasts + st.connect_failures, calls);
	}
	assert_stat(st, connect_failures, 7);
	cr_assert_geq(now_ms() - t1, 472,
		      "7 connect failures within %lld ms: the backoff did not "
		      "double from 10 ms",
		      (long long)(now_ms() - t1));
	cr_log_info("backoff: 7th trial %lld ms after the first failure, "
		    "%llu fail-fasts meanwhile",
		    (long long)(t7 - t1), (unsigned long long)st.fail_fasts);

	/* The seventh opened a window of at least 480 ms: no dialing now. */
	uint64_t ff = st.fail_fasts;

	for (int i = 0; i < 100; i++)
		assert_refused(pool, addr);
	st = stats_of(pool, addr);
	if (now_ms() - t7 < 470) {
		assert_stat(st, connect_failures, 7);
		assert_stat(st, fail_fasts, ff + 100);
	} else {
		/* the machine stalled for half a second: still no storm */
		cr_assert_leq(st.connect_failures, 8);
	}
	assert_stat(st, backoffs, st.connect_failures);
	assert_stat(st, acquires, 0);
	assert_stat(st, open, 0);
	cpool_destroy(pool);
	close(lfd);
}

#define HAMMERS 8

struct hammer {
	pthread_t tid;
	struct cpool *pool;
	const char *addr;
	int64_t end;
	uint64_t calls;
	uint64_t bad;
	int bad_err;
};

static void *
hammer_main(void *arg)
{
	struct hammer *h = arg;
	struct cpool_conn *c;

	while (now_ms() < h->end) {
		int err = cpool_acquire(h->pool, h->addr, &c);

		h->calls++;
		if (err != -ECONNREFUSED) {
			h->bad++;
			h->bad_err = err;
			if (!err)
				cpool_release(c, CPOOL_RELEASE_CLOSE);
		}
	}
	return NULL;
}

Test(backoff, eight_threads_on_a_dead_endpoint_dial_rarely_and_recover_once_it_listens)
{
	struct cpool_config cfg = config_one_shard();
	struct hammer h[HAMMERS];
	struct cpool_conn *c[4];
	struct cpool_stats st, before;
	struct cpool *pool;
	uint64_t total = 0;
	int64_t t_listen, t_ok = -1;
	char addr[64], buf[8];
	int lfd = dead_port(addr, sizeof(addr)), err, afd;

	cfg.workers = 2;
	pool = pool_new(&cfg);
	pool_add(pool, addr);
	for (int i = 0; i < HAMMERS; i++) {
		h[i] = (struct hammer){ .pool = pool, .addr = addr,
					.end = now_ms() + 500 };
		cr_assert_eq(pthread_create(&h[i].tid, NULL, hammer_main,
					    &h[i]),
			     0);
	}
	for (int i = 0; i < HAMMERS; i++) {
		pthread_join(h[i].tid, NULL);
		cr_assert_eq(h[i].bad, 0,
			     "thread %d: %llu acquires did not return "
			     "-ECONNREFUSED (last %d %s)",
			     i, (unsigned long long)h[i].bad, h[i].bad_err,
			     strerror(-h[i].bad_err));
		total += h[i].calls;
	}
	st = stats_of(pool, addr);
	cr_log_info("backoff: %llu acquires by %d threads in 500 ms: %llu "
		    "connect failures, %llu fail-fasts",
		    (unsigned long long)total, HAMMERS,
		    (unsigned long long)st.connect_failures,
		    (unsigned long long)st.fail_fasts);
	assert_stat(st, fail_fasts + st.connect_failures, total);
	assert_stat(st, backoffs, st.connect_failures);
	cr_assert_lt(st.connect_failures, 30,
		     "%llu connect attempts in 500 ms: no backoff",
		     (unsigned long long)st.connect_failures);
	cr_assert_gt(st.fail_fasts, 10 * st.connect_failures,
		     "fail_fasts %llu, connect_failures %llu",
		     (unsigned long long)st.fail_fasts,
		     (unsigned long long)st.connect_failures);
	assert_stat(st, acquires, 0);
	assert_stat(st, open, 0);

	/* The port comes back: within the longest backoff, one trial wins. */
	before = st;
	revive(lfd);
	t_listen = now_ms();
	while (now_ms() - t_listen < 5000 + 2000) {
		err = cpool_acquire(pool, addr, &c[0]);
		if (!err) {
			t_ok = now_ms();
			break;
		}
		assert_ret(err, -ECONNREFUSED);
		pause_1ms();
	}
	cr_assert_geq(t_ok, 0, "no acquire succeeded within 7 s of listen()");
	cr_log_info("backoff: recovered %lld ms after listen()",
		    (long long)(t_ok - t_listen));
	st = stats_of(pool, addr);
	assert_stat(st, connect_failures, before.connect_failures);
	assert_stat(st, backoffs, before.backoffs);
	assert_stat(st, connects, 1);
	assert_stat(st, acquires, 1);

	/* It is a real connection... */
	afd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	cr_assert_geq(afd, 0, "accept: %s", strerror(errno));
	assert_ret(cpool_send(c[0], "ping", 4), 4);
	assert_ret(recv(afd, buf, 4, MSG_WAITALL), 4);
	cr_assert_eq(memcmp(buf, "ping", 4), 0);

	/* ...and the next ones connect at once, without failing fast. */
	before = stats_of(pool, addr);
	for (int i = 1; i < 4; i++)
		c[i] = lease(pool, addr);
	st = stats_of(pool, addr);
	assert_stat(st, connects, 4);
	assert_stat(st, fail_fasts, before.fail_fasts);
	assert_stat(st, connect_failures, before.connect_failures);
	for (int i = 0; i < 4; i++)
		cpool_release(c[i], 0);
	close(afd);
	cpool_destroy(pool);
	close(lfd);
}

Test(backoff, prewarm_waits_out_the_backoff_and_fills_up_once_the_port_listens)
{
	struct cpool_config cfg;
	struct cpool_stats st;
	struct cpool *pool;
	char addr[64];
	int lfd = dead_port(addr, sizeof(addr));
	int64_t t0;

	cpool_config_init(&cfg);
	cfg.workers = 2;
	cfg.min_idle_per_endpoint = 2;
	pool = pool_new(&cfg);
	t0 = now_ms();
	pool_add(pool, addr);

	/*
	 * Failures come at the backoff's pace, not at every 5 ms tick of two
	 * workers: in 300 ms the windows allow about 7 (10 + 20 + ... + 160
	 * ms, less 25 %), where two workers without backoff would dial 120
	 * times.
	 */
	assert_stats_wait(pool, addr, st, st.connect_failures >= 4, 5000);
	while (now_ms() - t0 < 300)
		pause_1ms();
	st = stats_of(pool, addr);
	cr_assert_lt(st.connect_failures, 12,
		     "%llu connect attempts in %lld ms: no backoff",
		     (unsigned long long)st.connect_failures,
		     (long long)(now_ms() - t0));
	assert_stat(st, backoffs, st.connect_failures);
	assert_stat(st, fail_fasts, 0); /* workers never count fail-fasts */
	assert_stat(st, prewarms, 0);
	assert_stat(st, open, 0);

	revive(lfd);
	assert_stats_wait(pool, addr, st,
			  st.open == 2 && st.idle == 2 && st.prewarms == 2,
			  5000 + 2000);
	assert_stat(st, connects, 2);
	assert_stat(st, acquires, 0);
	assert_stat(st, fail_fasts, 0);
	cpool_destroy(pool);
	close(lfd);
}
