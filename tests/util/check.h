/* SPDX-License-Identifier: MIT */
/*
 * Criterion-side helpers for the cpool tests: create a pool, read its
 * stats, run one request/response over a lease, assert counters exactly.
 * Static inline so that each test file takes only what it uses.
 */
#ifndef CPOOL_TESTS_CHECK_H
#define CPOOL_TESTS_CHECK_H

#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <string.h>
#include <sys/types.h>

#include "cpool.h"
#include "fault_server.h"
#include "net.h"

/* Asserts one stats field equals @want, printing both. */
#define assert_stat(st, field, want)                                       \
	cr_assert_eq((unsigned long long)(st).field,                       \
		     (unsigned long long)(want),                           \
		     "stats." #field ": got %llu want %llu",               \
		     (unsigned long long)(st).field,                       \
		     (unsigned long long)(want))

/* Asserts an int-returning call gave exactly @want, printing both. */
#define assert_ret(expr, want)                                             \
	do {                                                               \
		long long got_ = (long long)(expr);                        \
		long long want_ = (long long)(want);                       \
		cr_assert_eq(got_, want_, "%s: got %lld (%s) want %lld (%s)", \
			     #expr, got_, strerror((int)-got_), want_,     \
			     strerror((int)-want_));                       \
	} while (0)

static inline struct cpool *
pool_new(const struct cpool_config *cfg)
{
	struct cpool *pool = NULL;
	int err = cpool_create(cfg, &pool);

	cr_assert_eq(err, 0, "cpool_create: got %d (%s) want 0", err,
		     strerror(-err));
	cr_assert_not_null(pool);
	return pool;
}

static inline struct cpool_stats
stats_of(struct cpool *pool, const char *address)
{
	struct cpool_stats st;
	int err;

	memset(&st, 0, sizeof(st));
	st.size = sizeof(st);
	err = cpool_stats_get(pool, address, &st);
	cr_assert_eq(err, 0, "cpool_stats_get(%s): got %d (%s) want 0",
		     address ? address : "NULL", err, strerror(-err));
	return st;
}

/* Asserts the closed[] counters are all zero except the ones listed. */
static inline void
assert_closed_only(const struct cpool_stats *st, const unsigned long long *want)
{
	for (int r = 0; r < CPOOL_CLOSE_REASON_COUNT; r++)
		cr_assert_eq((unsigned long long)st->closed[r], want[r],
			     "stats.closed[%s]: got %llu want %llu",
			     cpool_close_reason_name(
				     (enum cpool_close_reason)r),
			     (unsigned long long)st->closed[r], want[r]);
}

/*
 * At rest every connection opened is open or was closed once:
 * open == connects - sum(closed), and open == idle + leased.
 */
static inline void
assert_balanced(const struct cpool_stats *st)
{
	unsigned long long closed = 0;

	for (int r = 0; r < CPOOL_CLOSE_REASON_COUNT; r++)
		closed += st->closed[r];
	cr_assert_eq((unsigned long long)st->open,
		     (unsigned long long)st->connects - closed,
		     "open %u != connects %llu - closed %llu", st->open,
		     (unsigned long long)st->connects, closed);
	cr_assert_eq(st->open, st->idle + st->leased,
		     "open %u != idle %u + leased %u", st->open, st->idle,
		     st->leased);
}

/* Asserts two stats reads are field for field equal. */
static inline void
assert_same_stats(const struct cpool_stats *a, const struct cpool_stats *b,
		  const char *when)
{
#define SAME(f)                                                            \
	cr_assert_eq((unsigned long long)a->f, (unsigned long long)b->f,   \
		     "%s: stats." #f " changed from %llu to %llu", when,   \
		     (unsigned long long)a->f, (unsigned long long)b->f)
	SAME(acquires);
	SAME(reuses);
	SAME(connects);
	SAME(connect_failures);
	SAME(steals);
	SAME(waits);
	SAME(timeouts);
	SAME(open);
	SAME(idle);
	SAME(leased);
	for (int r = 0; r < CPOOL_CLOSE_REASON_COUNT; r++)
		SAME(closed[r]);
#undef SAME
}

static inline struct cpool_conn *
lease(struct cpool *pool, const char *address)
{
	struct cpool_conn *c = NULL;
	int err = cpool_acquire(pool, address, &c);

	cr_assert_eq(err, 0, "cpool_acquire(%s): got %d (%s) want 0",
		     address, err, strerror(-err));
	cr_assert_not_null(c);
	cr_assert_geq(cpool_conn_fd(c), 0, "cpool_conn_fd: got %d",
		      cpool_conn_fd(c));
	return c;
}

/*
 * One request/response over a lease through cpool_send()/cpool_recv()
 * against the fault server's echo. Returns 0 when the echo equals @msg,
 * else the first error (-EPROTO for a mismatch, -ECONNRESET for EOF).
 */
static inline int
conn_echo(struct cpool_conn *c, const char *msg)
{
	size_t len = strlen(msg), got = 0;
	char buf[512];
	ssize_t n;

	if (len > sizeof(buf))
		return -EMSGSIZE;
	n = cpool_send(c, msg, len);
	if (n < 0)
		return (int)n;
	if ((size_t)n != len)
		return -EIO;
	while (got < len) {
		n = cpool_recv(c, buf + got, len - got);
		if (n < 0)
			return (int)n;
		if (n == 0)
			return -ECONNRESET;
		got += (size_t)n;
	}
	return memcmp(buf, msg, len) ? -EPROTO : 0;
}

#define assert_echo(c, msg)                                                \
	do {                                                               \
		int e_ = conn_echo((c), (msg));                            \
		cr_assert_eq(e_, 0, "echo \"%s\": got %d (%s) want 0",     \
			     (msg), e_, strerror(-e_));                    \
	} while (0)

static inline struct fault_server *
server_new(enum fs_family family)
{
	struct fault_server *fs = fs_start(family);

	cr_assert_not_null(fs, "fs_start(%d): %s", (int)family,
			   strerror(errno));
	return fs;
}

/* A default config with one shard (a single MRU idle stack). */
static inline struct cpool_config
config_one_shard(void)
{
	struct cpool_config cfg;

	cpool_config_init(&cfg);
	cfg.workers = 1;
	return cfg;
}

static inline void
pool_add(struct cpool *pool, const char *address)
{
	int err = cpool_endpoint_add(pool, address);

	cr_assert_eq(err, 0, "cpool_endpoint_add(%s): got %d (%s) want 0",
		     address, err, strerror(-err));
}

/* Pins the calling thread to @cpu; false if that CPU is not allowed. */
static inline bool
pin_to(int cpu)
{
	cpu_set_t set;

	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	return sched_setaffinity(0, sizeof(set), &set) == 0;
}

/*
 * Keeps the calling test thread on the CPU it runs on, so that its
 * acquires all use one shard. A test that asserts a reuse after a wait
 * (a fork's child, a stats wait) needs it with more than one worker:
 * woken on another CPU, the acquire would have to steal, and a steal
 * skips a list whose lock a worker holds (DESIGN: never block on a busy
 * shard) and connects instead.
 */
static inline void
stay_on_this_cpu(void)
{
	int cpu = sched_getcpu();

	cr_assert(cpu >= 0 && pin_to(cpu), "cannot pin the test to CPU %d: %s",
		  cpu, strerror(errno));
}

/*
 * One lease taken by a fresh thread pinned to a CPU: its first cpool call
 * is that acquire, so its shard is the CPU's whether or not rseq is there.
 */
struct cpu_lease {
	struct cpool *pool;
	const char *addr;
	int cpu;
	bool pinned; /* results, read after lease_on_cpu() */
	int err;     /* cpool_acquire()'s */
	int fd;
	bool reused;
	int echo; /* conn_echo()'s */
};

static inline void *
cpu_lease_main(void *arg)
{
	struct cpu_lease *l = arg;
	struct cpool_conn *c;

	l->pinned = pin_to(l->cpu);
	l->err = cpool_acquire(l->pool, l->addr, &c);
	if (l->err)
		return NULL;
	l->fd = cpool_conn_fd(c);
	l->reused = cpool_conn_reused(c);
	l->echo = conn_echo(c, "lease on a cpu");
	cpool_release(c, 0);
	return NULL;
}

/* Leases, echoes and releases once from a new thread on @cpu; joins it. */
static inline struct cpu_lease
lease_on_cpu(struct cpool *pool, const char *addr, int cpu)
{
	struct cpu_lease l = { .pool = pool, .addr = addr, .cpu = cpu,
			       .fd = -1 };
	pthread_t t;

	cr_assert_eq(pthread_create(&t, NULL, cpu_lease_main, &l), 0);
	pthread_join(t, NULL);
	return l;
}

#endif /* CPOOL_TESTS_CHECK_H */
