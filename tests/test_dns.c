/* SPDX-License-Identifier: MIT */
/*
 * The resolver layer (pool/dns.h) against a real dnsmasq (tests/util/
 * dnssrv.h): every A and AAAA record with the query's port and the
 * answer's TTL, NXDOMAIN as -EHOSTUNREACH, a stopped server as -ETIMEDOUT
 * or -EAGAIN within the deadline, record changes seen by the next resolve;
 * the asynchronous resolver driven by a small epoll loop like a worker's,
 * and its destruction with a query pending; the dns_servers syntax.
 */
#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#include "dns.h"
#include "util/dnssrv.h"
#include "util/leakcheck.h"

#ifndef CPOOL_ALLOC_LIBC
/*
 * The shipped library makes every cpool__ symbol local (see the Makefile),
 * so against it the module under test is compiled in here, over libc's
 * allocator; sanitizer builds keep those symbols global and link to them.
 */
#include "../pool/dns.c"

void *
cpool__alloc(size_t size, size_t align, unsigned slot)
{
	return calloc(1, size);
}

void
cpool__free(void *p, size_t size)
{
	free(p);
}
#endif

TestSuite(dns, .timeout = 60, .fini = leak_fini);

static uint64_t
now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void
need_dnsmasq(void)
{
	const char *why = "";

	if (!dnssrv_available(&why))
		cr_skip_test("%s", why);
}

static void
start(struct dnssrv *srv, unsigned ttl_s)
{
	int err;

	need_dnsmasq();
	err = dnssrv_start(srv, ttl_s);
	cr_assert_eq(err, 0, "dnssrv_start: %d (%s)", err, strerror(-err));
}

/* The text of addr[i] and its port. */
static unsigned short
addr_text(const struct cpool_dns_addr *a, char *buf, size_t len)
{
	if (a->family == AF_INET) {
		const struct sockaddr_in *sin = (const void *)&a->ss;

		inet_ntop(AF_INET, &sin->sin_addr, buf, (socklen_t)len);
		return ntohs(sin->sin_port);
	}
	const struct sockaddr_in6 *sin6 = (const void *)&a->ss;

	inet_ntop(AF_INET6, &sin6->sin6_addr, buf, (socklen_t)len);
	return ntohs(sin6->sin6_port);
}

/* Whether @res holds @ip (text) with @port. */
static bool
has_addr(const struct cpool_dns_result *res, const char *ip,
	 unsigned short port)
{
	char buf[INET6_ADDRSTRLEN];

	for (unsigned i = 0; i < res->n; i++)
		if (addr_text(&res->addr[i], buf, sizeof(buf)) == port &&
		    !strcmp(buf, ip))
			return true;
	return false;
}

static void
assert_set(const struct cpool_dns_result *res, const char *const *ips,
	   unsigned n, unsigned short port, uint32_t ttl_s)
{
	cr_assert_eq(res->err, 0, "err %d (%s)", res->err,
		     strerror(-res->err));
	cr_assert_eq(res->n, n, "n %u, want %u", res->n, n);
	cr_assert_eq(res->ttl_s, ttl_s, "ttl_s %u, want %u", res->ttl_s,
		     ttl_s);
	for (unsigned i = 0; i < n; i++) {
		cr_assert(has_addr(res, ips[i], port), "%s:%u missing", ips[i],
			  port);
		cr_assert_eq(res->addr[i].family,
			     res->addr[i].len == sizeof(struct sockaddr_in)
				     ? AF_INET
				     : AF_INET6);
	}
}

static const char *const three[] = { "127.0.0.11", "127.0.0.12",
				      "127.0.0.13" };
static const char *const dual[] = { "127.0.0.1", "::1" };

Test(dns, resolves_every_a_record_with_port_and_ttl)
{
	struct cpool_dns_result res;
	struct dnssrv srv;

	start(&srv, 7);
	cr_assert_eq(dnssrv_set(&srv, "three.cpool.test", three, 3), 0);
	cr_assert_eq(cpool__dns_resolve(srv.servers, "three.cpool.test", 6379,
					2000, &res),
		     0);
	assert_set(&res, three, 3, 6379, 7);
	dnssrv_free(&srv);
}

Test(dns, keeps_at_most_max_addrs_of_a_large_answer)
{
	static char ips[70][16];
	const char *list[70];
	struct cpool_dns_result res;
	struct dnssrv srv;

	/* 70 A records: more than 512 bytes, so c-ares may go to TCP */
	for (int i = 0; i < 70; i++) {
		snprintf(ips[i], sizeof(ips[i]), "127.0.1.%d", i + 1);
		list[i] = ips[i];
	}
	start(&srv, 7);
	cr_assert_eq(dnssrv_set(&srv, "many.cpool.test", list, 70), 0);
	cr_assert_eq(cpool__dns_resolve(srv.servers, "many.cpool.test", 80,
					3000, &res),
		     0);
	cr_assert_eq(res.n, CPOOL_DNS_MAX_ADDRS, "n %u", res.n);
	cr_assert_eq(res.ttl_s, 7);
	for (unsigned i = 0; i < res.n; i++) {
		char buf[INET6_ADDRSTRLEN];

		cr_assert_eq(addr_text(&res.addr[i], buf, sizeof(buf)), 80);
		cr_assert_eq(strncmp(buf, "127.0.1.", 8), 0, "%s", buf);
		for (unsigned j = 0; j < i; j++)
			cr_assert_neq(memcmp(&res.addr[i].ss, &res.addr[j].ss,
					     res.addr[i].len),
				      0, "duplicate");
	}
	dnssrv_free(&srv);
}

Test(dns, resolves_both_families)
{
	struct cpool_dns_result res;
	struct dnssrv srv;
	bool v4 = false, v6 = false;

	start(&srv, 30);
	cr_assert_eq(dnssrv_set(&srv, "dual.cpool.test", dual, 2), 0);
	cr_assert_eq(cpool__dns_resolve(srv.servers, "dual.cpool.test", 11211,
					2000, &res),
		     0);
	assert_set(&res, dual, 2, 11211, 30);
	for (unsigned i = 0; i < res.n; i++) {
		v4 |= res.addr[i].family == AF_INET;
		v6 |= res.addr[i].family == AF_INET6;
	}
	cr_assert(v4 && v6);
	dnssrv_free(&srv);
}

Test(dns, reports_a_missing_name_as_host_unreachable_at_once)
{
	struct cpool_dns_result res;
	struct dnssrv srv;
	uint64_t t0;
	int err;

	start(&srv, 7);
	t0 = now_ns();
	err = cpool__dns_resolve(srv.servers, "nope.cpool.test", 80, 2000,
				 &res);
	cr_assert_eq(err, -EHOSTUNREACH, "err %d", err);
	cr_assert_eq(res.err, -EHOSTUNREACH);
	cr_assert_eq(res.n, 0);
	cr_assert_lt(now_ns() - t0, 500000000u, "took %llu ms",
		     (unsigned long long)(now_ns() - t0) / 1000000);
	dnssrv_free(&srv);
}

Test(dns, gives_up_on_a_stopped_server_within_the_timeout)
{
	struct cpool_dns_result res;
	struct dnssrv srv;
	uint64_t t0, ms;
	int err;

	start(&srv, 7);
	cr_assert_eq(dnssrv_set(&srv, "three.cpool.test", three, 3), 0);
	dnssrv_stop(&srv);
	t0 = now_ns();
	err = cpool__dns_resolve(srv.servers, "three.cpool.test", 80, 1000,
				 &res);
	ms = (now_ns() - t0) / 1000000;
	cr_log_info("stopped server: %d (%s) after %llu ms", err,
		    strerror(-err), (unsigned long long)ms);
	cr_assert(err == -ETIMEDOUT || err == -EAGAIN, "err %d (%s)", err,
		  strerror(-err));
	cr_assert_eq(res.err, err);
	cr_assert_eq(res.n, 0);
	cr_assert_lt(ms, 1000 + 1500, "took %llu ms", (unsigned long long)ms);
	dnssrv_free(&srv);
}

Test(dns, sees_record_changes_on_the_next_resolve)
{
	static const char *const one[] = { "127.0.0.21" };
	struct cpool_dns_result res;
	struct dnssrv srv;

	start(&srv, 7);
	cr_assert_eq(dnssrv_set(&srv, "moving.cpool.test", three, 3), 0);
	cr_assert_eq(cpool__dns_resolve(srv.servers, "moving.cpool.test", 80,
					2000, &res),
		     0);
	assert_set(&res, three, 3, 80, 7);
	cr_assert_eq(dnssrv_set(&srv, "moving.cpool.test", one, 1), 0);
	cr_assert_eq(cpool__dns_resolve(srv.servers, "moving.cpool.test", 80,
					2000, &res),
		     0);
	assert_set(&res, one, 1, 80, 7);
	cr_assert_eq(dnssrv_set(&srv, "moving.cpool.test", NULL, 0), 0);
	cr_assert_eq(cpool__dns_resolve(srv.servers, "moving.cpool.test", 80,
					2000, &res),
		     -EHOSTUNREACH);
	dnssrv_free(&srv);
}

/* Callbacks run in this test (each test is a process of its own). */
static int total_calls;

/* An answer the async resolver delivered. */
struct got {
	int calls;
	struct cpool_dns_result res;
};

static void
got_cb(void *arg, const struct cpool_dns_result *res)
{
	struct got *g = arg;

	g->calls++;
	total_calls++;
	g->res = *res;
}

/*
 * A worker's loop in small: epoll_wait up to the resolver's next timer,
 * tagged events to cpool__dns_event(), then cpool__dns_timeouts(). Runs
 * until *@calls reaches @want or @ms pass; returns the events seen.
 */
static int
drive(struct cpool_dns *d, int epfd, const int *calls, int want, int ms)
{
	uint64_t deadline = now_ns() + (uint64_t)ms * 1000000u, next, now;
	struct epoll_event ev[8];
	int n, wait_ms, events = 0;

	next = cpool__dns_timeouts(d, now_ns());
	while (*calls < want && (now = now_ns()) < deadline) {
		if (next == UINT64_MAX || next > deadline)
			next = deadline;
		wait_ms = next > now ? (int)((next - now + 999999) / 1000000)
				     : 0;
		n = epoll_wait(epfd, ev, 8, wait_ms);
		for (int i = 0; i < n; i++) {
			cr_assert(ev[i].data.u64 & CPOOL_DNS_EV_TAG);
			cpool__dns_event(d, ev[i].data.u64, ev[i].events);
			events++;
		}
		next = cpool__dns_timeouts(d, now_ns());
	}
	return events;
}

Test(dns, async_resolver_answers_from_a_worker_loop)
{
	struct got a = { 0 }, b = { 0 }, c = { 0 };
	struct cpool_dns *d = NULL;
	struct dnssrv srv;
	int epfd;

	start(&srv, 7);
	cr_assert_eq(dnssrv_set(&srv, "three.cpool.test", three, 3), 0);
	cr_assert_eq(dnssrv_set(&srv, "dual.cpool.test", dual, 2), 0);
	epfd = epoll_create1(EPOLL_CLOEXEC);
	cr_assert_neq(epfd, -1);
	cr_assert_eq(cpool__dns_new(srv.servers, epfd, &d), 0);
	cr_assert_eq(cpool__dns_timeouts(d, now_ns()), UINT64_MAX);
	cr_assert_eq(cpool__dns_query(d, "three.cpool.test", 6379, got_cb, &a),
		     0);
	cr_assert_eq(cpool__dns_query(d, "dual.cpool.test", 11211, got_cb, &b),
		     0);
	cr_assert_eq(cpool__dns_query(d, "nope.cpool.test", 80, got_cb, &c),
		     0);
	cr_assert_eq(a.calls + b.calls + c.calls, 0); /* never inside */
	cr_assert_gt(drive(d, epfd, &total_calls, 3, 5000), 0,
		     "the answers came through the epoll");
	cr_assert_eq(a.calls, 1);
	cr_assert_eq(b.calls, 1);
	cr_assert_eq(c.calls, 1);
	assert_set(&a.res, three, 3, 6379, 7);
	assert_set(&b.res, dual, 2, 11211, 7);
	cr_assert_eq(c.res.err, -EHOSTUNREACH);
	cr_assert_eq(c.res.n, 0);
	cr_assert_eq(cpool__dns_timeouts(d, now_ns()), UINT64_MAX);
	cpool__dns_free(d);
	close(epfd);
	dnssrv_free(&srv);
}

Test(dns, async_resolver_cancels_pending_queries_when_freed)
{
	struct got a = { 0 };
	struct cpool_dns *d = NULL;
	struct dnssrv srv;
	uint64_t next;
	int epfd;

	start(&srv, 7);
	dnssrv_stop(&srv);
	epfd = epoll_create1(EPOLL_CLOEXEC);
	cr_assert_neq(epfd, -1);
	cr_assert_eq(cpool__dns_new(srv.servers, epfd, &d), 0);
	cr_assert_eq(cpool__dns_query(d, "three.cpool.test", 80, got_cb, &a),
		     0);
	next = cpool__dns_timeouts(d, now_ns());
	cr_assert_neq(next, UINT64_MAX, "a query is pending");
	cr_assert_eq(a.calls, 0);
	cpool__dns_free(d);
	cr_assert_eq(a.calls, 1);
	cr_assert_eq(a.res.err, -ECANCELED, "err %d", a.res.err);
	cr_assert_eq(a.res.n, 0);
	close(epfd);
	dnssrv_free(&srv);
}

Test(dns, async_resolver_fails_on_a_stopped_server)
{
	struct got a = { 0 };
	struct cpool_dns *d = NULL;
	struct dnssrv srv;
	uint64_t t0;
	int epfd;

	start(&srv, 7);
	dnssrv_stop(&srv);
	epfd = epoll_create1(EPOLL_CLOEXEC);
	cr_assert_neq(epfd, -1);
	cr_assert_eq(cpool__dns_new(srv.servers, epfd, &d), 0);
	cr_assert_eq(cpool__dns_query(d, "three.cpool.test", 80, got_cb, &a),
		     0);
	t0 = now_ns();
	drive(d, epfd, &a.calls, 1, 10000);
	cr_log_info("stopped server, async: %d (%s) after %llu ms", a.res.err,
		    strerror(-a.res.err),
		    (unsigned long long)(now_ns() - t0) / 1000000);
	cr_assert_eq(a.calls, 1);
	cr_assert(a.res.err == -ETIMEDOUT || a.res.err == -EAGAIN,
		  "err %d (%s)", a.res.err, strerror(-a.res.err));
	cr_assert_eq(a.res.n, 0);
	cpool__dns_free(d);
	cr_assert_eq(a.calls, 1);
	close(epfd);
	dnssrv_free(&srv);
}

Test(dns, async_resolver_defers_an_immediate_answer_to_its_timers)
{
	struct got a = { 0 };
	struct cpool_dns *d = NULL;
	int epfd = epoll_create1(EPOLL_CLOEXEC);

	/* c-ares 1.18 refuses .onion names inside ares_getaddrinfo() */
	cr_assert_neq(epfd, -1);
	cr_assert_eq(cpool__dns_new("127.0.0.1:1", epfd, &d), 0);
	cr_assert_eq(cpool__dns_query(d, "hidden.onion", 80, got_cb, &a), 0);
	cr_assert_eq(a.calls, 0, "the callback ran inside cpool__dns_query");
	cr_assert_eq(cpool__dns_timeouts(d, now_ns()), UINT64_MAX);
	cr_assert_eq(a.calls, 1);
	cr_assert_eq(a.res.err, -EHOSTUNREACH, "err %d", a.res.err);
	cr_assert_eq(a.res.n, 0);
	cpool__dns_free(d);
	cr_assert_eq(a.calls, 1);
	close(epfd);
}

Test(dns, new_refuses_bad_servers)
{
	struct cpool_dns *d = (struct cpool_dns *)&d;

	cr_assert_eq(cpool__dns_new("not an address", -1, &d), -EINVAL);
	cr_assert_eq(cpool__dns_new("127.0.0.1:0", -1, &d), -EINVAL);
	cr_assert_eq(d, (struct cpool_dns *)&d); /* untouched */
}

Test(dns, checks_the_servers_syntax)
{
	static const struct {
		const char *s;
		int want;
	} cases[] = {
		{ "127.0.0.1", 0 },
		{ "127.0.0.1:53", 0 },
		{ "127.0.0.1:65535", 0 },
		{ "10.0.0.1,10.0.0.2:5353", 0 },
		{ "::1", 0 },
		{ "[::1]:53", 0 },
		{ "[::1]", 0 },
		{ "[fe80::1]:5353,127.0.0.1", 0 },
		{ "", -EINVAL },
		{ ",", -EINVAL },
		{ "127.0.0.1,", -EINVAL },
		{ ",127.0.0.1", -EINVAL },
		{ "127.0.0.1:", -EINVAL },
		{ "127.0.0.1:0", -EINVAL },
		{ "127.0.0.1:65536", -EINVAL },
		{ "127.0.0.1:53x", -EINVAL },
		{ "127.0.0.1:-1", -EINVAL },
		{ "127.0.0.1:000053", -EINVAL },
		{ "localhost", -EINVAL },
		{ "localhost:53", -EINVAL },
		{ "1.2.3", -EINVAL },
		{ "256.0.0.1", -EINVAL },
		{ "::1:53x", -EINVAL },
		{ "[::1", -EINVAL },
		{ "[::1]53", -EINVAL },
		{ "[::1]:", -EINVAL },
		{ "[127.0.0.1]:53", -EINVAL },
		{ "[::1]:70000", -EINVAL },
		{ " 127.0.0.1", -EINVAL },
		{ "127.0.0.1 ", -EINVAL },
	};

	cr_assert_eq(cpool__dns_servers_check(NULL), -EINVAL);
	for (size_t i = 0; i < sizeof(cases) / sizeof(*cases); i++) {
		int got = cpool__dns_servers_check(cases[i].s);

		cr_expect_eq(got, cases[i].want, "\"%s\": %d, want %d",
			     cases[i].s, got, cases[i].want);
	}
}
