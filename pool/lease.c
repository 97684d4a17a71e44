/* SPDX-License-Identifier: MIT */
/*
 * The lease holder's calls: the fd, whether it was reused, and send/recv
 * helpers that never raise SIGPIPE (MSG_NOSIGNAL; recv cannot raise it) and
 * mark the connection broken on any error but a nonblocking EAGAIN, so that
 * a desynchronised stream is never pooled again.
 *
 * These run on the lease holder's thread, on a connection in CONN_LEASED
 * (conn.c); they never change its state, only its broken flag, which
 * cpool_release() reads.
 */
#include "lease.h"

#include <errno.h>
#include <sys/socket.h>

#include "log.h"

int
cpool_conn_fd(const struct cpool_conn *c)
{
	return c ? c->fd : -EINVAL;
}

bool
cpool_conn_reused(const struct cpool_conn *c)
{
	return c && c->reused;
}

void *
cpool_conn_ctx(const struct cpool_conn *c)
{
	return c ? c->ctx : NULL;
}

void
cpool_conn_set_ctx(struct cpool_conn *c, void *ctx)
{
	if (c)
		c->ctx = ctx;
}

const char *
cpool_conn_address(const struct cpool_conn *c)
{
	return c ? c->ep->key : NULL;
}

static bool
conn_check_lease(struct cpool_conn *c, const char *fn)
{
	if (likely(LOAD_RLX(&c->state) == CONN_LEASED))
		return true;
	cpool__log(&c->ep->pool->cfg, CPOOL_LOG_ERROR,
		   "%s on a connection that is not leased", fn);
	return false;
}

/* Whether err is a nonblocking "try again" that leaves the stream intact. */
static bool
conn_soft_eagain(const struct cpool_conn *c, int err)
{
	return (err == EAGAIN || err == EWOULDBLOCK) && c->nonblock;
}

ssize_t
cpool_send(struct cpool_conn *c, const void *buf, size_t len)
{
	const char *p = buf;
	size_t off = 0;
	ssize_t n;

	if (!c || (!buf && len) || !conn_check_lease(c, "cpool_send"))
		return -EINVAL;
	while (off < len) {
		n = send(c->fd, p + off, len - off, MSG_NOSIGNAL);
		if (n >= 0) {
			off += (size_t)n;
			continue;
		}
		if (errno == EINTR)
			continue;
		if (conn_soft_eagain(c, errno))
			return off ? (ssize_t)off : -EAGAIN;
		c->broken = true;
		return -errno;
	}
	return (ssize_t)off;
}

ssize_t
cpool_recv(struct cpool_conn *c, void *buf, size_t len)
{
	ssize_t n;

	if (!c || (!buf && len) || !conn_check_lease(c, "cpool_recv"))
		return -EINVAL;
	if (len == 0)
		return 0;
	do {
		n = recv(c->fd, buf, len, 0);
	} while (n == -1 && errno == EINTR);
	if (n > 0)
		return n;
	if (n == 0) {
		c->broken = true;
		return 0;
	}
	if (conn_soft_eagain(c, errno))
		return -EAGAIN;
	c->broken = true;
	return -errno;
}
