/* SPDX-License-Identifier: MIT */
/*
 * Name resolution with c-ares (1.18): ares_getaddrinfo() gives every A and
 * AAAA record with its TTL, sorted per RFC 6724, and runs on sockets the
 * caller drives, which getaddrinfo() does neither.
 *
 * Two uses, two kinds of channel (a c-ares 1.18 channel is one thread's):
 *  - cpool__dns_resolve(): the first answer for cpool_endpoint_add(), on
 *    the caller's thread, with a channel of its own driven by poll() up to
 *    a deadline;
 *  - struct cpool_dns: the pool's resolver for the refreshes, driven by
 *    worker 0 only. Its sockets are registered with the worker's epoll
 *    from c-ares' socket-state callback, tagged in epoll_event.data so the
 *    worker tells them from connections; a callback c-ares runs inside
 *    ares_getaddrinfo() itself (an answer from /etc/hosts, a refusal) is
 *    deferred to the next cpool__dns_timeouts(), so no caller of
 *    cpool__dns_query() ever sees its callback run under its locks.
 *
 * Every c-ares socket is opened close-on-exec and sent on with MSG_NOSIGNAL
 * through socket functions of ours (c-ares 1.18's own TCP path is a plain
 * writev()): nothing here raises SIGPIPE or leaks an fd into an exec'd
 * child.
 */
#include "dns.h"

#include <ares.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/uio.h>
#include <unistd.h>

#include "alloc.h"
#include "util.h"

/*
 * Per-try timeout and tries: a dead server ends in -ETIMEDOUT (or -EAGAIN
 * when every try is refused) in about 1.5 to 2 s; the blocking resolve
 * stops at its own deadline first when that is shorter.
 */
#define DNS_TRY_MS 700
#define DNS_TRIES 3

static pthread_once_t lib_once = PTHREAD_ONCE_INIT;
static int lib_status = ARES_ENOTINITIALIZED;

static void
lib_init(void)
{
	lib_status = ares_library_init(ARES_LIB_INIT_ALL);
}

static int
ares_to_errno(int status)
{
	switch (status) {
	case ARES_SUCCESS:
		return 0;
	case ARES_ENOTFOUND:
	case ARES_ENODATA:
	case ARES_ENONAME:
	case ARES_EBADNAME:
	case ARES_EBADFAMILY:
		return -EHOSTUNREACH;
	case ARES_ETIMEOUT:
		return -ETIMEDOUT;
	case ARES_ENOMEM:
		return -ENOMEM;
	case ARES_ECANCELLED:
	case ARES_EDESTRUCTION:
		return -ECANCELED;
	default: /* ECONNREFUSED, ESERVFAIL, EREFUSED, EFORMERR, ... */
		return -EAGAIN;
	}
}

/*
 * "ip" or "ip:port" (port 1..65535); a v6 address takes a port only
 * bracketed ("[v6]:port"). Returns 0 or -EINVAL.
 */
static int
server_check(const char *s, size_t len)
{
	char buf[INET6_ADDRSTRLEN + 8], addr[16];
	const char *host = buf, *port = NULL, *end;
	unsigned long p = 0;
	size_t i;

	if (len == 0 || len >= sizeof(buf))
		return -EINVAL;
	memcpy(buf, s, len);
	buf[len] = '\0';
	if (buf[0] == '[') {
		end = strchr(buf, ']');
		if (!end || (end[1] && end[1] != ':') || (end[1] && !end[2]))
			return -EINVAL;
		buf[end - buf] = '\0';
		host = buf + 1;
		if (end[1])
			port = end + 2;
		if (inet_pton(AF_INET6, host, addr) != 1)
			return -EINVAL;
	} else if (inet_pton(AF_INET6, buf, addr) == 1) {
		return 0; /* bare v6, no port */
	} else {
		char *colon = strchr(buf, ':');

		if (colon) {
			*colon = '\0';
			port = colon + 1;
		}
		if (inet_pton(AF_INET, buf, addr) != 1)
			return -EINVAL;
	}
	if (!port)
		return 0;
	for (i = 0; port[i]; i++) {
		if (port[i] < '0' || port[i] > '9' || i >= 5)
			return -EINVAL;
		p = p * 10 + (unsigned long)(port[i] - '0');
	}
	return i && p && p <= 65535 ? 0 : -EINVAL;
}

int
cpool__dns_servers_check(const char *servers)
{
	const char *p = servers, *comma;
	int err;

	if (!servers || !*servers)
		return -EINVAL;
	for (;;) {
		comma = strchr(p, ',');
		err = server_check(p, comma ? (size_t)(comma - p) : strlen(p));
		if (err)
			return err;
		if (!comma)
			return 0;
		p = comma + 1;
	}
}

/*
 * The asynchronous resolver's sockets, known by number, so that a fork
 * child can close its copies without asking c-ares, whose state a worker
 * may have been changing at the fork (cpool__dns_fork_free()). Written by
 * the driving worker only. c-ares 1.18 keeps one UDP socket per server
 * (and a TCP one for a truncated answer): more than DNS_SOCKS at once go
 * untracked, and only a fork child would notice.
 */
#define DNS_SOCKS 16
struct dns_socks {
	int fd[DNS_SOCKS]; /* -1: free */
};

/*
 * c-ares 1.18 sends on UDP with send(MSG_NOSIGNAL) but on TCP (truncated
 * answers) with plain writev(), which raises SIGPIPE when the server has
 * reset the connection. Its socket functions are all replaced so that every
 * send is a sendmsg(MSG_NOSIGNAL) and every socket is close-on-exec from
 * its creation (and nonblocking, as c-ares makes them anyway).
 */
static ares_socket_t
sock_open(int af, int type, int protocol, void *arg)
{
	struct dns_socks *t = arg;
	int fd = socket(af, type | SOCK_CLOEXEC | SOCK_NONBLOCK, protocol);

	for (unsigned i = 0; t && fd >= 0 && i < DNS_SOCKS; i++)
		if (t->fd[i] < 0) {
			t->fd[i] = fd;
			break;
		}
	return fd;
}

static int
sock_close(ares_socket_t fd, void *arg)
{
	struct dns_socks *t = arg;

	for (unsigned i = 0; t && i < DNS_SOCKS; i++)
		if (t->fd[i] == fd)
			t->fd[i] = -1;
	return close(fd);
}

static int
sock_connect(ares_socket_t fd, const struct sockaddr *sa, ares_socklen_t len,
	     void *arg)
{
	return connect(fd, sa, len);
}

static ares_ssize_t
sock_recvfrom(ares_socket_t fd, void *buf, size_t len, int flags,
	      struct sockaddr *from, ares_socklen_t *from_len, void *arg)
{
	return recvfrom(fd, buf, len, flags, from, from_len);
}

static ares_ssize_t
sock_sendv(ares_socket_t fd, const struct iovec *iov, int n, void *arg)
{
	struct msghdr m = { .msg_iov = (struct iovec *)iov,
			    .msg_iovlen = (size_t)n };

	return sendmsg(fd, &m, MSG_NOSIGNAL);
}

static const struct ares_socket_functions sock_funcs = {
	.asocket = sock_open,
	.aclose = sock_close,
	.aconnect = sock_connect,
	.arecvfrom = sock_recvfrom,
	.asendv = sock_sendv,
};

/* Copies an answer into @out (deduplicated, ports set). */
static void
result_fill(struct cpool_dns_result *out, int status,
	    const struct ares_addrinfo *ai, unsigned short port)
{
	const struct ares_addrinfo_node *n;
	struct cpool_dns_addr *a;
	uint32_t ttl = UINT32_MAX;
	unsigned i;

	out->err = ares_to_errno(status);
	out->n = 0;
	out->ttl_s = 0;
	if (out->err || !ai)
		goto done;
	for (n = ai->nodes; n && out->n < CPOOL_DNS_MAX_ADDRS; n = n->ai_next) {
		if ((n->ai_family != AF_INET && n->ai_family != AF_INET6) ||
		    n->ai_addrlen > sizeof(a->ss))
			continue;
		a = &out->addr[out->n];
		memset(a, 0, sizeof(*a));
		a->family = n->ai_family;
		a->len = (socklen_t)n->ai_addrlen;
		memcpy(&a->ss, n->ai_addr, n->ai_addrlen);
		if (a->family == AF_INET)
			((struct sockaddr_in *)&a->ss)->sin_port = htons(port);
		else
			((struct sockaddr_in6 *)&a->ss)->sin6_port = htons(port);
		for (i = 0; i < out->n; i++)
			if (out->addr[i].len == a->len &&
			    !memcmp(&out->addr[i].ss, &a->ss, a->len))
				break;
		if (i < out->n)
			continue; /* a duplicate */
		if (n->ai_ttl >= 0 && (uint32_t)n->ai_ttl < ttl)
			ttl = (uint32_t)n->ai_ttl;
		out->n++;
	}
	if (!out->n)
		out->err = -EHOSTUNREACH;
	out->ttl_s = ttl == UINT32_MAX ? 0 : ttl;
done:
	if (out->err)
		out->n = 0;
}

static int
channel_new(const char *servers, ares_channel *ch, ares_sock_state_cb cb,
	    void *cb_arg, struct dns_socks *socks)
{
	struct ares_options o;
	int mask = ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES, status;

	/* c-ares' own parser takes more than cfg.dns_servers allows */
	if (servers && cpool__dns_servers_check(servers))
		return -EINVAL;
	pthread_once(&lib_once, lib_init);
	if (lib_status != ARES_SUCCESS)
		return -ENOMEM;
	memset(&o, 0, sizeof(o));
	o.timeout = DNS_TRY_MS;
	o.tries = DNS_TRIES;
	if (cb) {
		o.sock_state_cb = cb;
		o.sock_state_cb_data = cb_arg;
		mask |= ARES_OPT_SOCK_STATE_CB;
	}
	status = ares_init_options(ch, &o, mask);
	if (status != ARES_SUCCESS)
		return status == ARES_ENOMEM ? -ENOMEM : -EAGAIN;
	ares_set_socket_functions(*ch, &sock_funcs, socks);
	if (servers &&
	    ares_set_servers_ports_csv(*ch, servers) != ARES_SUCCESS) {
		ares_destroy(*ch);
		return -EINVAL;
	}
	return 0;
}

static const struct ares_addrinfo_hints any_stream = {
	.ai_family = AF_UNSPEC,
	.ai_socktype = SOCK_STREAM,
};

/* The blocking resolve's state. */
struct sync_query {
	struct cpool_dns_result *out;
	unsigned short port;
	bool done;
};

static void
sync_answer(void *arg, int status, int timeouts,
	    struct ares_addrinfo *res)
{
	struct sync_query *q = arg;

	if (!q->done) {
		result_fill(q->out, status, res, q->port);
		q->done = true;
	}
	if (res)
		ares_freeaddrinfo(res);
}

int
cpool__dns_resolve(const char *servers, const char *host, unsigned short port,
		   unsigned timeout_ms, struct cpool_dns_result *out)
{
	struct sync_query q = { out, port, false };
	ares_socket_t socks[ARES_GETSOCK_MAXNUM];
	struct pollfd pfd[ARES_GETSOCK_MAXNUM];
	struct timeval max, tv, *tvp;
	uint64_t deadline, now;
	ares_channel ch;
	unsigned bits;
	int n, i, err, ms;

	memset(out, 0, sizeof(*out));
	err = channel_new(servers, &ch, NULL, NULL, NULL);
	if (err) {
		out->err = err;
		return err;
	}
	deadline = cpool__now_ns() + (uint64_t)timeout_ms * 1000000u;
	ares_getaddrinfo(ch, host, NULL, &any_stream, sync_answer, &q);
	while (!q.done) {
		now = cpool__now_ns();
		if (now >= deadline)
			break;
		/* ares_getsock()'s bitmask, read unsigned: its macros shift
		 * a signed 1 into the sign bit for the 16th socket. */
		bits = (unsigned)ares_getsock(ch, socks, ARES_GETSOCK_MAXNUM);
		for (i = n = 0; i < ARES_GETSOCK_MAXNUM; i++) {
			short ev = (bits & 1u << i ? POLLIN : 0) |
				   (bits & 1u << (i + ARES_GETSOCK_MAXNUM)
					    ? POLLOUT
					    : 0);

			if (!ev)
				continue;
			pfd[n].fd = socks[i];
			pfd[n].events = ev;
			pfd[n++].revents = 0;
		}
		max.tv_sec = (time_t)((deadline - now) / 1000000000u);
		max.tv_usec = (suseconds_t)((deadline - now) % 1000000000u /
					    1000u);
		tvp = ares_timeout(ch, &max, &tv);
		ms = (int)(tvp->tv_sec * 1000 + (tvp->tv_usec + 999) / 1000);
		if (poll(pfd, (nfds_t)n, ms) < 0 && errno != EINTR)
			break;
		for (i = 0; i < n; i++)
			if (pfd[i].revents)
				ares_process_fd(
					ch,
					pfd[i].revents & (POLLIN | POLLERR |
							  POLLHUP)
						? pfd[i].fd
						: ARES_SOCKET_BAD,
					pfd[i].revents & POLLOUT
						? pfd[i].fd
						: ARES_SOCKET_BAD);
		/* Timeouts (and a quiet poll): c-ares checks its clocks. */
		ares_process_fd(ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
	}
	if (!q.done) {
		q.done = true; /* the destruction's callback changes nothing */
		out->err = -ETIMEDOUT;
		out->n = 0;
	}
	ares_destroy(ch);
	return out->err;
}

/* The worker's resolver. */
struct dns_query {
	struct dns_query *next; /* in d->deferred */
	struct cpool_dns *d;
	cpool_dns_cb *cb;
	void *arg;
	unsigned short port;
	struct cpool_dns_result res;
};

struct cpool_dns {
	ares_channel ch;
	int epfd;
	unsigned pending;	     /* queries whose callback has not run */
	bool in_query;		     /* inside ares_getaddrinfo() */
	bool destroying;
	struct dns_query *deferred;  /* answered inside ares_getaddrinfo() */
	struct dns_socks socks;	     /* the channel's open sockets */
};

static void
sock_state(void *data, ares_socket_t fd, int readable, int writable)
{
	struct cpool_dns *d = data;
	struct epoll_event ev = {
		.events = (readable ? EPOLLIN : 0u) | (writable ? EPOLLOUT : 0u),
		.data.u64 = ((uint64_t)(unsigned)fd << 1) | CPOOL_DNS_EV_TAG,
	};

	if (!readable && !writable) {
		epoll_ctl(d->epfd, EPOLL_CTL_DEL, fd, NULL);
		return;
	}
	if (epoll_ctl(d->epfd, EPOLL_CTL_MOD, fd, &ev) == -1 &&
	    errno == ENOENT)
		epoll_ctl(d->epfd, EPOLL_CTL_ADD, fd, &ev);
}

int
cpool__dns_new(const char *servers, int epfd, struct cpool_dns **out)
{
	struct cpool_dns *d = cpool__alloc(sizeof(*d), 0, 0);
	int err;

	if (!d)
		return -ENOMEM;
	memset(d, 0, sizeof(*d));
	d->epfd = epfd;
	for (unsigned i = 0; i < DNS_SOCKS; i++)
		d->socks.fd[i] = -1;
	err = channel_new(servers, &d->ch, sock_state, d, &d->socks);
	if (err) {
		cpool__free(d, sizeof(*d));
		return err;
	}
	*out = d;
	return 0;
}

static void
query_deliver(struct dns_query *q)
{
	q->d->pending--;
	q->cb(q->arg, &q->res);
	cpool__free(q, sizeof(*q));
}

static void
query_answer(void *arg, int status, int timeouts, struct ares_addrinfo *res)
{
	struct dns_query *q = arg;
	struct cpool_dns *d = q->d;

	result_fill(&q->res, status, res, q->port);
	if (res)
		ares_freeaddrinfo(res);
	if (d->destroying)
		q->res.err = -ECANCELED, q->res.n = 0;
	if (d->in_query) { /* never inside cpool__dns_query() */
		q->next = d->deferred;
		d->deferred = q;
		return;
	}
	query_deliver(q);
}

int
cpool__dns_query(struct cpool_dns *d, const char *host, unsigned short port,
		 cpool_dns_cb *cb, void *arg)
{
	struct dns_query *q = cpool__alloc(sizeof(*q), 0, 0);

	if (!q)
		return -ENOMEM;
	q->d = d;
	q->cb = cb;
	q->arg = arg;
	q->port = port;
	q->next = NULL;
	d->pending++;
	d->in_query = true;
	ares_getaddrinfo(d->ch, host, NULL, &any_stream, query_answer, q);
	d->in_query = false;
	return 0;
}

void
cpool__dns_event(struct cpool_dns *d, uint64_t data, uint32_t events)
{
	ares_socket_t fd = (ares_socket_t)(data >> 1);
	ares_socket_t rfd = ARES_SOCKET_BAD, wfd = ARES_SOCKET_BAD;

	/* an error or hangup is read, so that c-ares sees it */
	if (events & (EPOLLIN | EPOLLERR | EPOLLHUP))
		rfd = fd;
	if (events & EPOLLOUT)
		wfd = fd;
	ares_process_fd(d->ch, rfd, wfd);
}

uint64_t
cpool__dns_timeouts(struct cpool_dns *d, uint64_t now_ns)
{
	struct dns_query *q;
	struct timeval tv, *tvp;

	while ((q = d->deferred) != NULL) {
		d->deferred = q->next;
		query_deliver(q);
	}
	if (!d->pending)
		return UINT64_MAX;
	ares_process_fd(d->ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
	while ((q = d->deferred) != NULL) { /* retries that failed at once */
		d->deferred = q->next;
		query_deliver(q);
	}
	if (!d->pending)
		return UINT64_MAX;
	tvp = ares_timeout(d->ch, NULL, &tv);
	if (!tvp)
		return UINT64_MAX;
	return now_ns + (uint64_t)tvp->tv_sec * 1000000000u +
	       (uint64_t)tvp->tv_usec * 1000u;
}

void
cpool__dns_free(struct cpool_dns *d)
{
	struct dns_query *q;

	d->destroying = true;
	ares_destroy(d->ch); /* every pending callback: -ECANCELED */
	while ((q = d->deferred) != NULL) {
		d->deferred = q->next;
		q->res.err = -ECANCELED;
		q->res.n = 0;
		query_deliver(q);
	}
	cpool__free(d, sizeof(*d));
}

void
cpool__dns_fork_free(struct cpool_dns *d)
{
	for (unsigned i = 0; i < DNS_SOCKS; i++)
		if (d->socks.fd[i] >= 0)
			close(d->socks.fd[i]);
	cpool__free(d, sizeof(*d)); /* the channel's memory stays: see above */
}
