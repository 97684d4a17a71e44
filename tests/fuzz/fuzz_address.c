/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer harness: endpoint address parsing.
 *
 * The input, cut at FUZZ_INPUT_MAX bytes and NUL-terminated (an embedded
 * NUL ends the string early, as it would for a caller), is given to
 * cpool__addr_parse() and then to the public cpool_endpoint_add() of one
 * pool created at start-up. Built with -DCPOOL_FUZZ, names never reach the
 * resolver (they answer -EHOSTUNREACH), and endpoint_add never connects:
 * no input causes network traffic.
 *
 * What it checks, beyond ASan/UBSan/CPOOL_BUG_ON being quiet:
 *  - cpool__addr_parse() returns 0, -EINVAL or -EHOSTUNREACH, nothing else;
 *  - on 0: the family is AF_INET, AF_INET6 or AF_UNIX and agrees with
 *    ss_family; len fits sockaddr_storage and is exactly the family's size
 *    (AF_INET, AF_INET6) or offsetof(sun_path) + the path, NUL included
 *    unless abstract (AF_UNIX); the port is non-zero and equals the decimal
 *    number after the last ':'; an IPv4 host prints back to the same text;
 *    a unix path (or abstract name, after its leading '@') is byte for byte
 *    what followed "unix:";
 *  - strings longer than CPOOL_ADDRESS_MAX or without a port are -EINVAL;
 *  - cpool_endpoint_add() returns exactly what the parser returned (or
 *    -ENOMEM); after a successful add, a second add is -EEXIST, the
 *    endpoint's stats are all zero, and cpool_endpoint_remove() succeeds
 *    once, then is -ENOENT, and the stats are -ENOENT too;
 *  - every log line is NUL-terminated, shorter than 256 bytes, at a known
 *    level, and comes with the pool's user_data.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <netinet/in.h>

#include "cpool.h"
#include "endpoint.h"
#include "fuzz.h"

#define FUZZ_INPUT_MAX 2048

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct cpool *pool;
static int log_cookie;

static void
check_log(void *user_data, int level, const char *msg)
{
	fuzz_check_log(user_data, &log_cookie, level, msg);
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	struct cpool_config cfg;
	int err;

	cpool_config_init(&cfg);
	cfg.log_fn = check_log;
	cfg.user_data = &log_cookie;
	err = cpool_create(&cfg, &pool);
	CHECK(err == 0, "cpool_create: %d", err);
	return 0;
}

/* The port the string names: the decimal digits after its last ':'. */
static unsigned long
expected_port(const char *s)
{
	const char *colon = strrchr(s, ':');

	CHECK(colon, "parsed without a ':'");
	return strtoul(colon + 1, NULL, 10);
}

static void
check_inet(const char *s, const struct cpool_addr *a)
{
	const struct sockaddr_in *sin = (const struct sockaddr_in *)&a->ss;
	const char *colon = strrchr(s, ':');
	char text[INET_ADDRSTRLEN];
	size_t hlen = (size_t)(colon - s);

	CHECK(a->len == sizeof(*sin), "AF_INET len %u", (unsigned)a->len);
	CHECK(sin->sin_port != 0, "AF_INET port 0");
	CHECK(ntohs(sin->sin_port) == expected_port(s), "port %u for \"%s\"",
	      ntohs(sin->sin_port), s);
	/* A dotted quad prints back to itself; a name never lands here. */
	CHECK(inet_ntop(AF_INET, &sin->sin_addr, text, sizeof(text)),
	      "inet_ntop");
	CHECK(strlen(text) == hlen && memcmp(text, s, hlen) == 0,
	      "\"%s\" parsed as %s", s, text);
}

static void
check_inet6(const char *s, const struct cpool_addr *a)
{
	const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)&a->ss;

	CHECK(s[0] == '[', "AF_INET6 without brackets: \"%s\"", s);
	CHECK(a->len == sizeof(*sin6), "AF_INET6 len %u", (unsigned)a->len);
	CHECK(sin6->sin6_port != 0, "AF_INET6 port 0");
	CHECK(ntohs(sin6->sin6_port) == expected_port(s),
	      "port %u for \"%s\"", ntohs(sin6->sin6_port), s);
}

static void
check_unix(const char *s, const struct cpool_addr *a)
{
	const struct sockaddr_un *sun = (const struct sockaddr_un *)&a->ss;
	size_t off = offsetof(struct sockaddr_un, sun_path);
	const char *path = s + 5;
	size_t plen = strlen(path);

	CHECK(strncmp(s, "unix:", 5) == 0, "AF_UNIX from \"%s\"", s);
	CHECK(a->len > off && a->len <= sizeof(*sun), "AF_UNIX len %u",
	      (unsigned)a->len);
	CHECK(plen > 0 && plen < sizeof(sun->sun_path), "path length %zu",
	      plen);
	if (path[0] == '@') {
		/* Abstract: a leading NUL, the name, no terminator counted. */
		CHECK(plen > 1, "empty abstract name accepted");
		CHECK(a->len == off + plen, "abstract len %u for %zu",
		      (unsigned)a->len, plen);
		CHECK(sun->sun_path[0] == '\0', "abstract without NUL");
		CHECK(memcmp(sun->sun_path + 1, path + 1, plen - 1) == 0,
		      "abstract name differs");
	} else {
		CHECK(a->len == off + plen + 1, "path len %u for %zu",
		      (unsigned)a->len, plen);
		CHECK(memcmp(sun->sun_path, path, plen) == 0 &&
			      sun->sun_path[plen] == '\0',
		      "path differs");
	}
}

static void
check_parse(const char *s, size_t len)
{
	struct cpool_addr a;
	int err;

	memset(&a, 0xa5, sizeof(a));
	err = cpool__addr_parse(s, &a);
	CHECK(err == 0 || err == -EINVAL || err == -EHOSTUNREACH,
	      "cpool__addr_parse: %d", err);
	if (len == 0 || len > CPOOL_ADDRESS_MAX)
		CHECK(err == -EINVAL, "length %zu: %d", len, err);
	if (err)
		return;
	CHECK(a.len <= sizeof(a.ss), "len %u", (unsigned)a.len);
	CHECK(a.ss.ss_family == a.family, "ss_family %d, family %d",
	      a.ss.ss_family, a.family);
	switch (a.family) {
	case AF_INET:
		check_inet(s, &a);
		break;
	case AF_INET6:
		check_inet6(s, &a);
		break;
	case AF_UNIX:
		check_unix(s, &a);
		break;
	default:
		CHECK(0, "family %d", a.family);
	}
}

/* The public path: add, look at it, remove. */
static void
check_endpoint(const char *s)
{
	struct cpool_addr a;
	struct cpool_stats st;
	int parsed, err;

	parsed = cpool__addr_parse(s, &a);
	err = cpool_endpoint_add(pool, s);
	if (err == -ENOMEM)
		return;
	CHECK(err == parsed, "cpool_endpoint_add %d, parse %d", err, parsed);
	if (err)
		return;
	err = cpool_endpoint_add(pool, s);
	CHECK(err == -EEXIST, "second cpool_endpoint_add: %d", err);

	memset(&st, 0xa5, sizeof(st));
	st.size = sizeof(st);
	err = cpool_stats_get(pool, s, &st);
	CHECK(err == 0, "cpool_stats_get: %d", err);
	CHECK(st.size == sizeof(st) && st.acquires == 0 && st.connects == 0 &&
		      st.open == 0 && st.idle == 0 && st.leased == 0,
	      "fresh endpoint has non-zero stats");

	err = cpool_endpoint_remove(pool, s);
	CHECK(err == 0, "cpool_endpoint_remove: %d", err);
	err = cpool_endpoint_remove(pool, s);
	CHECK(err == -ENOENT, "second cpool_endpoint_remove: %d", err);
	err = cpool_stats_get(pool, s, &st);
	CHECK(err == -ENOENT, "cpool_stats_get after remove: %d", err);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char buf[FUZZ_INPUT_MAX + 1];
	size_t n = size < FUZZ_INPUT_MAX ? size : FUZZ_INPUT_MAX;

	memcpy(buf, data, n);
	buf[n] = '\0';
	check_parse(buf, strlen(buf));
	check_endpoint(buf);
	return 0;
}
