/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer harness: configuration validation through cpool_create().
 *
 * The input is the raw bytes of a struct cpool_config of any length: a
 * caller compiled against an older (shorter) or newer (longer) struct. Each
 * input is tried twice, in a heap buffer of exactly the bytes the size
 * field claims, so ASan flags any read past what the caller owns:
 *  1. size as the data says, the buffer zero-padded up to it (skipped when
 *     it claims more than FUZZ_SIZE_MAX: no caller owns such a struct);
 *  2. size = the input's length.
 * The pointer fields are never the fuzzer's: on_connect becomes NULL or a
 * function that aborts (cpool_create must never call it), log_fn NULL or a
 * local checker, chosen by whether their bytes in the input are non-zero;
 * user_data and conn_ops_arg always point at the harness's own context,
 * and conn_ops is NULL or ops whose check aborts (create never calls one).
 *
 * What it checks, beyond ASan/UBSan/CPOOL_BUG_ON being quiet:
 *  - cpool_create returns 0, -EINVAL or -ENOMEM; the pool is written only
 *    on 0;
 *  - what the public header documents as invalid is refused: size below
 *    the first published struct, non-zero bytes past this library's
 *    struct, workers > 1024, max_conns_per_endpoint 0, min_idle above
 *    max_conns, connect_timeout_ms 0, unknown flag bits;
 *  - a refusal with size >= v1 and a log_fn names the field through log_fn;
 *    a success logs no error;
 *  - log lines are NUL-terminated, < 256 bytes, at a known level, with the
 *    caller's user_data;
 *  - on success: cpool_stats_get() of the whole pool reports zeros, an
 *    unknown endpoint is -ENOENT, an endpoint can be added, seen and
 *    removed (its per-shard state sized by the derived worker count), and
 *    cpool_destroy() gives back every byte the funnel handed out
 *    (cpool_memory_get() equal before create and after destroy).
 */
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "cpool.h"
#include "config.h"
#include "fuzz.h"

/* The largest struct a fuzzed size field may claim (mode 1). */
#define FUZZ_SIZE_MAX 65536

/*
 * The harness knows every pointer field of the struct. A new field must be
 * added here (and to sanitize() if it is a pointer) before this compiles.
 */
_Static_assert(sizeof(struct cpool_config) ==
		       offsetof(struct cpool_config, max_ejection_percent) +
			       sizeof(unsigned) + 4,
	       "struct cpool_config grew: review fuzz_config.c");

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct fuzz_ctx {
	unsigned nlog;
	unsigned nerror;
};

static struct fuzz_ctx ctx;

static void
check_log(void *user_data, int level, const char *msg)
{
	fuzz_check_log(user_data, &ctx, level, msg);
	ctx.nlog++;
	if (level == CPOOL_LOG_ERROR)
		ctx.nerror++;
}

static int
never_connect(int fd, const char *address, void *user_data)
{
	CHECK(0, "on_connect called (fd %d, %s)", fd, address);
	return 0;
}

/* Whether any of [off, off + len) lies inside the n-byte buffer and is set. */
static bool
field_set(const unsigned char *buf, size_t n, size_t off, size_t len)
{
	size_t i;

	for (i = off; i < off + len && i < n; i++)
		if (buf[i])
			return true;
	return false;
}

/*
 * Replaces the pointer field at @off by @p when the buffer holds all of it,
 * or zeroes the part it holds.
 */
static void
put_ptr(unsigned char *buf, size_t n, size_t off, const void *p)
{
	if (off + sizeof(p) <= n)
		memcpy(buf + off, &p, sizeof(p));
	else if (off < n)
		memset(buf + off, 0, n - off);
}

/* cpool_create never calls an op: each one aborts. */
static enum cpool_verdict
never_check(struct cpool_conn *c, enum cpool_verdict tcp, void *arg)
{
	CHECK(0, "ops->check called at create");
	return CPOOL_ALIVE;
}

static const struct cpool_conn_ops fuzz_ops = {
	.size = sizeof(struct cpool_conn_ops),
	.check = never_check,
};

/* cfg.dns_servers values: the valid ones first. */
static const char *const dns_strings[] = {
	"127.0.0.1", "127.0.0.1:5353,[::1]:53", "::1", "", "127.0.0.1:0",
	"[::1", "1.2.3.4:99999", "localhost", ",",
};
#define NDNS_VALID 3
#define NDNS_STRINGS (sizeof(dns_strings) / sizeof(dns_strings[0]))

static void
sanitize(unsigned char *buf, size_t n)
{
	size_t oo = offsetof(struct cpool_config, conn_ops);
	size_t oa = offsetof(struct cpool_config, conn_ops_arg);
	size_t oc = offsetof(struct cpool_config, on_connect);
	size_t ol = offsetof(struct cpool_config, log_fn);
	size_t ou = offsetof(struct cpool_config, user_data);
	size_t ow = offsetof(struct cpool_config, workers);
	size_t od = offsetof(struct cpool_config, dns_servers);
	bool conn = field_set(buf, n, oc, sizeof(void *));
	unsigned w;
	bool log = field_set(buf, n, ol, sizeof(void *));

	put_ptr(buf, n, oc, conn ? (const void *)never_connect : NULL);
	put_ptr(buf, n, ol, log ? (const void *)check_log : NULL);
	put_ptr(buf, n, ou, &ctx);
	put_ptr(buf, n, oo, field_set(buf, n, oo, sizeof(void *))
				    ? (const void *)&fuzz_ops
				    : NULL);
	put_ptr(buf, n, oa, &ctx);
	/* A set pointer is one of the harness's strings, valid or not. */
	put_ptr(buf, n, od, field_set(buf, n, od, sizeof(void *))
				    ? (const void *)dns_strings[buf[od] %
								 NDNS_STRINGS]
				    : NULL);
	/*
	 * Each worker is a thread started and joined per input: keep accepted
	 * counts small (1..4) so the fuzzer stays fast. Counts above 1024 are
	 * left alone and still reach the validation.
	 */
	if (ow + sizeof(w) <= n) {
		memcpy(&w, buf + ow, sizeof(w));
		if (w > 4 && w <= 1024) {
			w = 1 + w % 4;
			memcpy(buf + ow, &w, sizeof(w));
		}
	}
}

/* Reads field @off of the caller's struct, or 0 if the struct ends before. */
static unsigned
field_u(const unsigned char *buf, size_t size, size_t off)
{
	unsigned v = 0;

	if (off + sizeof(v) <= size)
		memcpy(&v, buf + off, sizeof(v));
	return v;
}

#define FIELD(buf, size, name)                                                 \
	field_u(buf, size, offsetof(struct cpool_config, name))

/*
 * The 0.2 upstream-set fields as the library sees them: the defaults with
 * the caller's bytes over them (a field the size cuts is part theirs).
 */
static bool
upstream_invalid(const unsigned char *buf, size_t size)
{
	struct cpool_config e;

	cpool_config_init(&e);
	memcpy(&e, buf, size < sizeof(e) ? size : sizeof(e));
	return e.dns_min_ttl_ms == 0 || e.dns_max_ttl_ms < e.dns_min_ttl_ms ||
	       e.dns_max_ttl_ms > 86400000u || e.happy_eyeballs_ms > INT_MAX ||
	       e.max_ejection_percent > 100;
}

/* Whether the (sanitized) dns_servers field names an invalid string. */
static bool
dns_invalid(const unsigned char *buf, size_t size)
{
	size_t od = offsetof(struct cpool_config, dns_servers);
	const char *p = NULL;
	size_t i;

	if (od + sizeof(p) > size)
		return false;
	memcpy(&p, buf + od, sizeof(p));
	for (i = 0; p && i < NDNS_STRINGS; i++)
		if (p == dns_strings[i])
			return i >= NDNS_VALID;
	return false;
}

/*
 * What the public header says cpool_create must refuse. Fields past the
 * caller's size take their defaults, which are all valid.
 */
static bool
documented_invalid(const unsigned char *buf, size_t size)
{
	unsigned max;
	size_t i;

	if (size < CPOOL_CONFIG_SIZE_V1)
		return true;
	for (i = sizeof(struct cpool_config); i < size; i++)
		if (buf[i])
			return true;
	max = FIELD(buf, size, max_conns_per_endpoint);
	return FIELD(buf, size, workers) > 1024 || max == 0 ||
	       FIELD(buf, size, min_idle_per_endpoint) > max ||
	       FIELD(buf, size, connect_timeout_ms) == 0 ||
	       (FIELD(buf, size, flags) & ~(CPOOL_NONBLOCK | CPOOL_NO_PIN)) ||
	       (FIELD(buf, size, check_idle_ms) &&
		!field_set(buf, size, offsetof(struct cpool_config, conn_ops),
			   sizeof(void *))) ||
	       upstream_invalid(buf, size) || dns_invalid(buf, size);
}

static void
check_pool(struct cpool *pool)
{
	static const char ep[] = "127.0.0.1:9";
	struct cpool_stats st;
	int err;

	memset(&st, 0xa5, sizeof(st));
	st.size = sizeof(st);
	err = cpool_stats_get(pool, NULL, &st);
	CHECK(err == 0, "cpool_stats_get: %d", err);
	CHECK(st.acquires == 0 && st.reuses == 0 && st.connects == 0 &&
		      st.connect_failures == 0 && st.steals == 0 &&
		      st.waits == 0 && st.timeouts == 0 && st.open == 0 &&
		      st.idle == 0 && st.leased == 0,
	      "new pool has non-zero stats");
	err = cpool_stats_get(pool, ep, &st);
	CHECK(err == -ENOENT, "stats of an unknown endpoint: %d", err);

	err = cpool_endpoint_add(pool, ep);
	if (err == -ENOMEM)
		return;
	CHECK(err == 0, "cpool_endpoint_add: %d", err);
	err = cpool_stats_get(pool, ep, &st);
	CHECK(err == 0 && st.open == 0, "endpoint stats: %d", err);
	err = cpool_endpoint_remove(pool, ep);
	CHECK(err == 0, "cpool_endpoint_remove: %d", err);
}

/* One cpool_create on a @size-byte struct: the first @n bytes of @data. */
static void
try_create(const uint8_t *data, size_t n, size_t size, bool set_size)
{
	size_t alloc = size < sizeof(size_t) ? sizeof(size_t) : size;
	struct cpool *pool = (struct cpool *)&ctx, *sentinel = pool;
	size_t before, after;
	unsigned char *buf;
	bool bad, logs;
	int err;

	buf = calloc(1, alloc);
	if (!buf)
		return;
	memcpy(buf, data, n < alloc ? n : alloc);
	if (set_size)
		memcpy(buf, &size, sizeof(size));
	sanitize(buf, size);
	bad = documented_invalid(buf, size);
	logs = size >= CPOOL_CONFIG_SIZE_V1 &&
	       field_set(buf, size, offsetof(struct cpool_config, log_fn),
			 sizeof(void *));

	memset(&ctx, 0, sizeof(ctx));
	CHECK(cpool_memory_get(&before) == 0, "cpool_memory_get");
	err = cpool_create((const struct cpool_config *)buf, &pool);
	CHECK(err == 0 || err == -EINVAL || err == -ENOMEM,
	      "cpool_create: %d", err);
	if (err) {
		CHECK(pool == sentinel, "pool written on failure");
		if (err == -EINVAL && logs)
			CHECK(ctx.nerror > 0, "-EINVAL (size %zu) not logged",
			      size);
		free(buf);
		return;
	}
	CHECK(!bad, "documented-invalid config accepted (size %zu)", size);
	CHECK(ctx.nerror == 0, "success logged %u errors", ctx.nerror);
	/* The caller's struct is not kept: scribble on it. */
	memset(buf, 0xa5, alloc);
	free(buf);
	check_pool(pool);
	cpool_destroy(pool);
	CHECK(cpool_memory_get(&after) == 0, "cpool_memory_get");
	CHECK(after == before, "funnel holds %zu bytes after destroy, %zu before",
	      after, before);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t claimed = 0;

	/* 1: the size field as given, if a caller could own that much. */
	memcpy(&claimed, data, size < sizeof(claimed) ? size : sizeof(claimed));
	if (size >= sizeof(claimed) && claimed <= FUZZ_SIZE_MAX)
		try_create(data, size < claimed ? size : claimed, claimed,
			   false);
	/* 2: size = the input's length. */
	if (size != claimed || size < sizeof(claimed))
		try_create(data, size, size, true);
	return 0;
}
