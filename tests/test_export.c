/* SPDX-License-Identifier: MIT */
/*
 * cpool_stats_format(): the Prometheus text exposition (0.0.4) of the
 * pool's counters and gauges, per pool and per endpoint, with exact values,
 * escaped labels, its -ENOSPC/-EINVAL contract, and counters that never go
 * backwards while other threads use the pool.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "util/check.h"
#include "util/waitfor.h"
#include "util/leakcheck.h"

TestSuite(export, .timeout = 60, .fini = leak_fini);

#define TEXT_MAX (256 * 1024)

/* The whole text, asserted to fit. */
static char *
format_all(struct cpool *pool)
{
	char *buf = malloc(TEXT_MAX);
	int n;

	cr_assert_not_null(buf);
	n = cpool_stats_format(pool, buf, TEXT_MAX);
	cr_assert_gt(n, 0, "cpool_stats_format: %d (%s)", n, strerror(-n));
	cr_assert_eq(strlen(buf), (size_t)n, "returned %d, strlen %zu", n,
		     strlen(buf));
	return buf;
}

/*
 * The value of the sample line whose name-and-labels part is exactly
 * @series, or -1 if there is none; -2 if there is more than one.
 */
static long long
sample(const char *text, const char *series)
{
	size_t len = strlen(series);
	long long v = -1;
	const char *p = text;

	while (p && *p) {
		const char *eol = strchr(p, '\n');

		if (!strncmp(p, series, len) && p[len] == ' ') {
			if (v != -1)
				return -2;
			v = strtoll(p + len + 1, NULL, 10);
		}
		p = eol ? eol + 1 : NULL;
	}
	return v;
}

/* Lines that start with @prefix. */
static int
count_lines(const char *text, const char *prefix)
{
	size_t len = strlen(prefix);
	const char *p = text;
	int n = 0;

	while (p && *p) {
		if (!strncmp(p, prefix, len))
			n++;
		p = strchr(p, '\n');
		if (p)
			p++;
	}
	return n;
}

#define assert_sample(text, series, want)                                  \
	do {                                                               \
		long long got_ = sample((text), (series));                 \
		cr_assert_eq(got_, (long long)(want),                      \
			     "%s: got %lld want %lld\n%s", (series), got_,  \
			     (long long)(want), (text));                   \
	} while (0)

static const char *const counters[] = {
	"acquires", "reuses", "connects", "connect_failures", "steals",
	"waits", "timeouts", "fail_fasts", "backoffs", "prewarms",
	"ejections", "dns_refreshes", "dns_failures",
};

Test(export, has_help_and_type_for_every_family_and_exact_values)
{
	struct fault_server *fs = server_new(FS_INET);
	const char *addr = fs_address(fs);
	struct cpool_config cfg = config_one_shard();
	struct cpool *pool = pool_new(&cfg);
	struct cpool_conn *c[3];
	struct cpool_stats st;
	char series[256], *text;

	pool_add(pool, addr);
	for (int i = 0; i < 3; i++)
		c[i] = lease(pool, addr);
	for (int i = 0; i < 3; i++)
		cpool_release(c[i], 0);
	cpool_release(lease(pool, addr), 0); /* one reuse */
	c[0] = lease(pool, addr);	    /* one leased */
	cr_assert_eq(fs_wait_open(fs, 3, WAIT_MS), 0);
	/* two idle ones die of a FIN, the workers count them */
	cr_assert_eq(fs_act(fs, FS_ACT_CLOSE, 0, NULL, 0), 3);
	assert_stats_wait(pool, addr, st,
			  st.closed[CPOOL_CLOSE_PEER_CLOSED] == 2,
			  WORKER_WAIT_MS);

	text = format_all(pool);
	for (size_t i = 0; i < sizeof(counters) / sizeof(counters[0]); i++) {
		snprintf(series, sizeof(series),
			 "# TYPE cpool_%s_total counter", counters[i]);
		cr_assert_eq(count_lines(text, series), 1, "%s\n%s", series,
			     text);
		snprintf(series, sizeof(series), "# HELP cpool_%s_total ",
			 counters[i]);
		cr_assert_eq(count_lines(text, series), 1, "%s\n%s", series,
			     text);
	}
	cr_assert_eq(count_lines(text, "# TYPE cpool_open_connections gauge"),
		     1, "%s", text);
	cr_assert_eq(count_lines(text, "# TYPE cpool_idle_connections gauge"),
		     1, "%s", text);
	cr_assert_eq(count_lines(text, "# TYPE cpool_leased_connections gauge"),
		     1, "%s", text);
	cr_assert_eq(count_lines(text, "# TYPE cpool_closed_total counter"), 1,
		     "%s", text);
	cr_assert_eq(count_lines(text, "# TYPE cpool_addresses gauge"), 1,
		     "%s", text);
	cr_assert_eq(count_lines(text, "# TYPE cpool_connecting gauge"), 1,
		     "%s", text);
	/* 19 pool families, 8 per-address ones (the one address's). */
	cr_assert_eq(count_lines(text, "# HELP "), 27, "%s", text);
	cr_assert_eq(count_lines(text, "# TYPE "), 27, "%s", text);

	/* Whole pool (no label) and the endpoint (endpoint="..."). */
	assert_sample(text, "cpool_acquires_total", 5);
	snprintf(series, sizeof(series),
		 "cpool_acquires_total{endpoint=\"%s\"}", addr);
	assert_sample(text, series, 5);
	assert_sample(text, "cpool_reuses_total", 2);
	assert_sample(text, "cpool_connects_total", 3);
	assert_sample(text, "cpool_open_connections", 1);
	assert_sample(text, "cpool_idle_connections", 0);
	assert_sample(text, "cpool_leased_connections", 1);
	snprintf(series, sizeof(series),
		 "cpool_leased_connections{endpoint=\"%s\"}", addr);
	assert_sample(text, series, 1);
	assert_sample(text, "cpool_closed_total{reason=\"peer_closed\"}", 2);
	snprintf(series, sizeof(series),
		 "cpool_closed_total{endpoint=\"%s\",reason=\"peer_closed\"}",
		 addr);
	assert_sample(text, series, 2);
	snprintf(series, sizeof(series),
		 "cpool_closed_total{endpoint=\"%s\",reason=\"shutdown\"}",
		 addr);
	assert_sample(text, series, 0);
	for (int r = CPOOL_CLOSE_PEER_CLOSED; r < CPOOL_CLOSE_REASON_COUNT;
	     r++) {
		snprintf(series, sizeof(series),
			 "cpool_closed_total{reason=\"%s\"}",
			 cpool_close_reason_name((enum cpool_close_reason)r));
		assert_sample(text, series, st.closed[r]);
	}
	assert_sample(text, "cpool_closed_total{reason=\"drained\"}", 0);
	/* The endpoint's one address, labelled under it. */
	snprintf(series, sizeof(series),
		 "cpool_address_open_connections{endpoint=\"%s\",address=\"%s\"}",
		 addr, addr);
	assert_sample(text, series, 1);
	snprintf(series, sizeof(series),
		 "cpool_address_leased_connections{endpoint=\"%s\",address=\"%s\"}",
		 addr, addr);
	assert_sample(text, series, 1);
	snprintf(series, sizeof(series),
		 "cpool_address_connects_total{endpoint=\"%s\",address=\"%s\"}",
		 addr, addr);
	assert_sample(text, series, 3);
	snprintf(series, sizeof(series),
		 "cpool_address_state{endpoint=\"%s\",address=\"%s\"}", addr,
		 addr);
	assert_sample(text, series, 0);
	free(text);
	cpool_release(c[0], CPOOL_RELEASE_CLOSE);
	cpool_destroy(pool);
	fs_stop(fs);
}

Test(export, a_removed_endpoint_stays_in_the_pool_series_only)
{
	struct fault_server *fa = server_new(FS_INET);
	struct fault_server *fb = server_new(FS_INET);
	const char *a = fs_address(fa), *b = fs_address(fb);
	struct cpool_config cfg = config_one_shard();
	struct cpool *pool = pool_new(&cfg);
	char series[256], *text;

	pool_add(pool, a);
	pool_add(pool, b);
	cpool_release(lease(pool, a), 0);
	cpool_release(lease(pool, a), 0);
	cpool_release(lease(pool, b), 0);
	assert_ret(cpool_endpoint_remove(pool, a), 0);

	text = format_all(pool);
	assert_sample(text, "cpool_acquires_total", 3);
	assert_sample(text, "cpool_closed_total{reason=\"shutdown\"}", 1);
	snprintf(series, sizeof(series), "endpoint=\"%s\"", a);
	cr_assert_null(strstr(text, series), "removed %s still labelled:\n%s",
		       a, text);
	snprintf(series, sizeof(series),
		 "cpool_acquires_total{endpoint=\"%s\"}", b);
	assert_sample(text, series, 1);
	free(text);
	cpool_destroy(pool);
	fs_stop(fa);
	fs_stop(fb);
}

Test(export, escapes_quotes_backslashes_and_newlines_in_endpoint_labels)
{
	struct cpool_config cfg = config_one_shard();
	struct cpool *pool = pool_new(&cfg);
	char *text;

	/* unix endpoints are not dialed at add: the paths need not exist */
	pool_add(pool, "unix:/tmp/cpool \"quoted\"");
	pool_add(pool, "unix:/tmp/back\\slash");
	pool_add(pool, "unix:/tmp/new\nline");
	text = format_all(pool);
	assert_sample(text,
		      "cpool_acquires_total{endpoint=\"unix:/tmp/cpool "
		      "\\\"quoted\\\"\"}",
		      0);
	assert_sample(text,
		      "cpool_acquires_total{endpoint=\"unix:/tmp/"
		      "back\\\\slash\"}",
		      0);
	assert_sample(text,
		      "cpool_acquires_total{endpoint=\"unix:/tmp/new\\nline\"}",
		      0);
	assert_sample(text,
		      "cpool_closed_total{endpoint=\"unix:/tmp/back\\\\slash\","
		      "reason=\"by_caller\"}",
		      0);
	/* no raw newline inside a label: every line is a comment or sample */
	for (const char *p = text; *p; p = strchr(p, '\n') + 1)
		cr_assert(!strncmp(p, "# ", 2) || !strncmp(p, "cpool_", 6),
			  "stray line: %.60s", p);
	free(text);
	cpool_destroy(pool);
}

Test(export, returns_enospc_for_every_short_buffer_and_never_writes_past_it)
{
	struct cpool_config cfg = config_one_shard();
	struct cpool *pool = pool_new(&cfg);
	char *full, *buf;
	int n;

	pool_add(pool, "127.0.0.1:1");
	pool_add(pool, "unix:/tmp/cpool-export");
	full = format_all(pool);
	n = (int)strlen(full);
	buf = malloc((size_t)n + 64);
	cr_assert_not_null(buf);
	assert_ret(cpool_stats_format(pool, NULL, 0), -ENOSPC);
	for (int len = 1; len <= n; len++) {
		memset(buf, 0xa5, (size_t)n + 64);
		assert_ret(cpool_stats_format(pool, buf, (size_t)len), -ENOSPC);
		for (int i = len; i < n + 64; i++)
			cr_assert_eq((unsigned char)buf[i], 0xa5,
				     "len %d: byte %d written", len, i);
	}
	/* room for the NUL: the same text */
	memset(buf, 0xa5, (size_t)n + 64);
	assert_ret(cpool_stats_format(pool, buf, (size_t)n + 1), n);
	cr_assert_eq(buf[n], '\0');
	cr_assert_eq(memcmp(buf, full, (size_t)n), 0);
	cr_assert_eq((unsigned char)buf[n + 1], 0xa5);
	free(buf);
	free(full);
	cpool_destroy(pool);
}

Test(export, rejects_a_null_pool_or_a_null_buffer_with_a_length)
{
	struct cpool_config cfg = config_one_shard();
	struct cpool *pool = pool_new(&cfg);
	char buf[64];

	assert_ret(cpool_stats_format(NULL, buf, sizeof(buf)), -EINVAL);
	assert_ret(cpool_stats_format(NULL, NULL, 0), -EINVAL);
	assert_ret(cpool_stats_format(pool, NULL, 1), -EINVAL);
	assert_ret(cpool_stats_format(pool, NULL, sizeof(buf)), -EINVAL);
	cpool_destroy(pool);
}

/* ---- counters under concurrency -------------------------------------- */

#define USERS 8

struct user {
	pthread_t tid;
	struct cpool *pool;
	const char *addr;
	atomic_bool *stop;
	uint64_t acquired;
	int err;
};

static void *
user_main(void *arg)
{
	struct user *u = arg;
	struct cpool_conn *c;

	while (!atomic_load(u->stop)) {
		int err = cpool_acquire(u->pool, u->addr, &c);

		if (err) {
			u->err = err;
			return NULL;
		}
		u->acquired++;
		cpool_release(c, 0);
	}
	return NULL;
}

struct formatter {
	pthread_t tid;
	struct cpool *pool;
	const char *addr;
	char series[256];
	atomic_bool *stop;
	uint64_t rounds;
	int err;
	/* the first decrease seen, if any, and where */
	long long went_from, went_to;
	const char *where;
};

/* Notes the first time a reading @v of @what is below the last one. */
static void
monotonic(struct formatter *f, long long *last, long long v, const char *what)
{
	if (v < *last && !f->where) {
		f->went_from = *last;
		f->went_to = v;
		f->where = what;
	}
	*last = v;
}

/*
 * Formats in a loop, checking the pool's and the endpoint's
 * acquires_total; between two formats, reads the same counters through
 * cpool_stats_get() (the same collection, ten times faster) to sample
 * more instants.
 */
static void *
formatter_main(void *arg)
{
	struct formatter *f = arg;
	long long fmt_pool = 0, fmt_ep = 0, get_pool = 0, get_ep = 0;
	struct cpool_stats st;
	char *buf = malloc(TEXT_MAX);

	if (!buf) {
		f->err = -ENOMEM;
		return NULL;
	}
	while (!atomic_load(f->stop)) {
		int n = cpool_stats_format(f->pool, buf, TEXT_MAX);

		if (n < 0) {
			f->err = n;
			break;
		}
		f->rounds++;
		monotonic(f, &fmt_pool, sample(buf, "cpool_acquires_total"),
			  "formatted pool-wide");
		monotonic(f, &fmt_ep, sample(buf, f->series),
			  "formatted per-endpoint");
		for (int i = 0; i < 10; i++) {
			st.size = sizeof(st);
			n = cpool_stats_get(f->pool, NULL, &st);
			if (!n)
				monotonic(f, &get_pool, (long long)st.acquires,
					  "cpool_stats_get pool-wide");
			st.size = sizeof(st);
			if (!n)
				n = cpool_stats_get(f->pool, f->addr, &st);
			if (!n)
				monotonic(f, &get_ep, (long long)st.acquires,
					  "cpool_stats_get per-endpoint");
			if (n) {
				f->err = n;
				break;
			}
		}
	}
	free(buf);
	return NULL;
}

/*
 * @users threads acquire and release as fast as they can while a thread
 * formats the stats in a loop; with @dead_peers the server closes every
 * connection at accept, so that every other checkout pops a dead
 * connection, rejects it and connects anew (over a unix socket: the churn
 * costs no ports).
 */
static void
check_monotonic(enum fs_family family, int users, bool dead_peers)
{
	struct fault_server *fs = server_new(family);
	const char *addr = fs_address(fs);
	struct cpool_config cfg;
	struct user u[USERS];
	struct formatter f = { 0 };
	struct cpool_stats st;
	struct cpool *pool;
	atomic_bool stop = false;
	uint64_t acquired = 0;
	char *text;

	cpool_config_init(&cfg);
	cfg.workers = 2;
	if (dead_peers)
		fs_set_mode(fs, FS_MODE_CLOSE_ON_ACCEPT);
	pool = pool_new(&cfg);
	pool_add(pool, addr);
	f.pool = pool;
	f.addr = addr;
	f.stop = &stop;
	snprintf(f.series, sizeof(f.series),
		 "cpool_acquires_total{endpoint=\"%s\"}", addr);
	for (int i = 0; i < users; i++) {
		u[i] = (struct user){ .pool = pool, .addr = addr,
				      .stop = &stop };
		cr_assert_eq(pthread_create(&u[i].tid, NULL, user_main, &u[i]),
			     0);
	}
	cr_assert_eq(pthread_create(&f.tid, NULL, formatter_main, &f), 0);
	for (int64_t t0 = now_ms(); now_ms() - t0 < 500;)
		pause_1ms();
	atomic_store(&stop, true);
	for (int i = 0; i < users; i++) {
		pthread_join(u[i].tid, NULL);
		cr_assert_eq(u[i].err, 0, "user %d: acquire %d (%s)", i,
			     u[i].err, strerror(-u[i].err));
		acquired += u[i].acquired;
	}
	pthread_join(f.tid, NULL);
	cr_assert_eq(f.err, 0, "format or stats: %d (%s)", f.err,
		     strerror(-f.err));
	st = stats_of(pool, addr);
	cr_log_info("export: %d users, %llu acquires, %llu formats, %llu "
		    "closed as peer_closed",
		    users, (unsigned long long)acquired,
		    (unsigned long long)f.rounds,
		    (unsigned long long)st.closed[CPOOL_CLOSE_PEER_CLOSED]);
	cr_assert_gt(f.rounds, 10);
	cr_assert_null(f.where, "%s acquires went from %lld down to %lld",
		       f.where, f.went_from, f.went_to);

	/* Quiet now: the text agrees with what the threads counted. */
	text = format_all(pool);
	assert_sample(text, "cpool_acquires_total", acquired);
	assert_sample(text, f.series, acquired);
	assert_sample(text, "cpool_leased_connections", 0);
	free(text);
	assert_stat(st, acquires, acquired);
	/* At rest once the workers evicted what the peer closed meanwhile. */
	stats_wait(pool, addr, st, st.open == st.idle + st.leased, WAIT_MS);
	assert_balanced(&st);
	cpool_destroy(pool);
	fs_stop(fs);
}

Test(export, acquires_total_never_goes_backwards_under_8_threads)
{
	check_monotonic(FS_INET, USERS, false);
}

Test(export, acquires_total_never_goes_backwards_while_checkouts_reject)
{
	check_monotonic(FS_UNIX, 1, true);
}
