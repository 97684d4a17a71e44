/* SPDX-License-Identifier: MIT */
/*
 * Name resolution with c-ares: a blocking resolve for cpool_endpoint_add()
 * (on the caller's thread, its own channel, bounded), and the asynchronous
 * resolver a worker drives through its epoll for the background refreshes.
 * Every A and AAAA record, in the resolver's order (RFC 6724), with the
 * answer's TTL. No pool state: the endpoint layer owns what answers mean.
 */
#ifndef CPOOL_DNS_H
#define CPOOL_DNS_H

#include <stdint.h>
#include <sys/socket.h>

/* Most addresses kept of one answer. */
#define CPOOL_DNS_MAX_ADDRS 64

/*
 * epoll_event.data.u64 of a resolver socket: (fd << 1) | CPOOL_DNS_EV_TAG.
 * Connection pointers are aligned, so the low bit tells them apart.
 */
#define CPOOL_DNS_EV_TAG 1ull

struct cpool_dns_addr {
	int family;		/* AF_INET or AF_INET6 */
	socklen_t len;
	struct sockaddr_storage ss; /* port set to the query's */
};

struct cpool_dns_result {
	int err;	   /* 0; -EHOSTUNREACH no such name or no A/AAAA;
			    * -ETIMEDOUT no answer in time; -EAGAIN refused,
			    * SERVFAIL, unreachable; -ENOMEM; -ECANCELED */
	uint32_t ttl_s;	   /* the smallest TTL of the records kept */
	unsigned n;	   /* addresses (n >= 1 when err == 0) */
	struct cpool_dns_addr addr[CPOOL_DNS_MAX_ADDRS];
};

/*
 * Validates cfg.dns_servers: "ip[:port],[v6]:port,..." with at least one
 * server. Returns 0 or -EINVAL.
 */
int cpool__dns_servers_check(const char *servers);

/*
 * Resolves @host (not numeric) on the caller's thread with a channel of its
 * own (@servers, or the system's configuration when NULL), waiting at most
 * @timeout_ms in all. Fills @out (out->err is also the return value).
 * Cancellation is the caller's to disable.
 */
int cpool__dns_resolve(const char *servers, const char *host,
		       unsigned short port, unsigned timeout_ms,
		       struct cpool_dns_result *out);

/* The asynchronous resolver: one per pool, driven by one worker only. */
struct cpool_dns;

/* Called from cpool__dns_event()/_timeouts()/_free() on the worker. */
typedef void cpool_dns_cb(void *arg, const struct cpool_dns_result *res);

/*
 * Creates the resolver; its sockets are registered with @epfd (data.u64 as
 * above) as c-ares opens them, and removed as it closes them. Returns 0 or
 * -errno (-ENOMEM, -EINVAL bad @servers).
 */
int cpool__dns_new(const char *servers, int epfd, struct cpool_dns **out);

/*
 * Starts a query; @cb runs exactly once, later, on the driving worker
 * (never inside this call). @res is valid for the callback only. Returns
 * 0 or -ENOMEM (then @cb never runs).
 */
int cpool__dns_query(struct cpool_dns *d, const char *host,
		     unsigned short port, cpool_dns_cb *cb, void *arg);

/* An epoll event on a resolver socket (@data: its epoll data.u64). */
void cpool__dns_event(struct cpool_dns *d, uint64_t data, uint32_t events);

/*
 * The resolver's timers: runs what is due at @now_ns (CLOCK_MONOTONIC)
 * and returns when it must be called next (UINT64_MAX: no query pending).
 */
uint64_t cpool__dns_timeouts(struct cpool_dns *d, uint64_t now_ns);

/* Pending queries end with -ECANCELED (their callbacks run), then frees. */
void cpool__dns_free(struct cpool_dns *d);

/*
 * A fork child's end of an inherited resolver: closes the child's copies
 * of its sockets and frees @d, without a call into c-ares (the driving
 * worker may have been inside it at the fork: the channel's memory is
 * left behind in the child, no callback runs, nothing is sent).
 */
void cpool__dns_fork_free(struct cpool_dns *d);

#endif /* CPOOL_DNS_H */
