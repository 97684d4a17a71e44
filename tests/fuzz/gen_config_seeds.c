/* SPDX-License-Identifier: MIT */
/*
 * Writes the config fuzzer's seeds into the directory given as argv[1]:
 * the bytes of struct cpool_config as cpool_config_init() fills it on this
 * ABI, then variations on the edges config validation cares about. A
 * non-zero pointer field tells fuzz_config.c to install its own function
 * there (it never calls the bytes), so "log" seeds set log_fn to 1.
 *
 * Run by make fuzz into the scratch corpus, so the seeds always match the
 * current struct; make fuzz-seeds refreshes the copies in the repository.
 */
#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpool.h"
#include "config.h"

#define TAIL 64

static const char *dir;

static void
put(const char *name, const void *buf, size_t len)
{
	char path[4096];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "wb");
	if (!f || fwrite(buf, 1, len, f) != len || fclose(f)) {
		perror(path);
		exit(1);
	}
}

/* The defaults with log_fn "on", changed by @edit, written as @name. */
#define SEED(name, edit)                                                       \
	do {                                                                   \
		struct cpool_config c;                                         \
		cpool_config_init(&c);                                         \
		c.log_fn = (cpool_log_fn *)1;                                  \
		edit;                                                          \
		put(name, &c, sizeof(c));                                      \
	} while (0)

int
main(int argc, char **argv)
{
	unsigned char big[sizeof(struct cpool_config) + TAIL];
	struct cpool_config c;

	if (argc != 2) {
		fprintf(stderr, "usage: %s DIR\n", argv[0]);
		return 2;
	}
	dir = argv[1];

	cpool_config_init(&c);
	put("default", &c, sizeof(c));
	SEED("default-log", (void)0);
	SEED("connect-fn", c.on_connect = (cpool_connect_fn *)1);

	/* Older callers: too short for v1, and exactly v1. */
	c.size = offsetof(struct cpool_config, flags);
	put("truncated-below-v1", &c, c.size);
	cpool_config_init(&c);
	c.size = CPOOL_CONFIG_SIZE_V1;
	put("exactly-v1", &c, c.size);
	cpool_config_init(&c);
	put("size-only", &c, sizeof(c.size));

	/* Newer callers: a longer struct, zero tail then a non-zero byte. */
	memset(big, 0, sizeof(big));
	cpool_config_init(&c);
	c.size = sizeof(big);
	c.log_fn = (cpool_log_fn *)1;
	memcpy(big, &c, sizeof(c));
	put("bigger-zero-tail", big, sizeof(big));
	big[sizeof(big) - 1] = 1;
	put("bigger-nonzero-tail", big, sizeof(big));

	SEED("workers-1", c.workers = 1);
	SEED("workers-1024", c.workers = 1024);
	SEED("workers-1025", c.workers = 1025);
	SEED("max-conns-0", c.max_conns_per_endpoint = 0);
	SEED("min-idle-eq-max", c.min_idle_per_endpoint = 64);
	SEED("min-idle-above-max", c.min_idle_per_endpoint = 65);
	SEED("connect-timeout-0", c.connect_timeout_ms = 0);
	SEED("connect-timeout-int-max", c.connect_timeout_ms = INT_MAX);
	SEED("connect-timeout-above-int-max",
	     c.connect_timeout_ms = (unsigned)INT_MAX + 1);
	SEED("keepalive-off", c.keepalive_idle_s = 0;
	     c.keepalive_interval_s = 0; c.keepalive_count = 0);
	SEED("keepalive-max", c.keepalive_idle_s = 32767;
	     c.keepalive_interval_s = 32767; c.keepalive_count = 127);
	SEED("keepidle-32768", c.keepalive_idle_s = 32768);
	SEED("keepintvl-0", c.keepalive_interval_s = 0);
	SEED("keepcnt-128", c.keepalive_count = 128);
	SEED("user-timeout-above-int-max",
	     c.user_timeout_ms = (unsigned)INT_MAX + 1);
	SEED("all-timeouts-max", c.acquire_timeout_ms = UINT_MAX;
	     c.idle_timeout_ms = UINT_MAX; c.max_lifetime_ms = UINT_MAX;
	     c.probe_bypass_ms = UINT_MAX; c.max_uses = UINT_MAX);
	SEED("flags-known", c.flags = CPOOL_NONBLOCK | CPOOL_NO_PIN);
	SEED("flags-unknown", c.flags = 1u << 2);

	memset(big, 0xff, sizeof(big));
	put("all-ff", big, sizeof(struct cpool_config));
	return 0;
}
