/* SPDX-License-Identifier: MIT */
/*
 * Connections: opening one (connect, options, on_connect), closing one with
 * its reason, and the lease holder's calls (fd, reused, send, recv).
 *
 * cpool_send() and cpool_recv() never raise SIGPIPE (MSG_NOSIGNAL; recv
 * cannot raise it) and mark the connection broken on any error but a
 * nonblocking EAGAIN, so that a desynchronised stream is never pooled again.
 */
#include "conn.h"

#include <errno.h>
#include <sys/epoll.h>
#include <unistd.h>
#include <urcu/arch.h>

#include "alloc.h"
#include "endpoint.h"
#include "log.h"
#include "sock.h"
#include "worker.h"

static int
run_on_connect(struct cpool_endpoint *ep, int fd, uint64_t deadline_ns)
{
	const struct cpool_config *cfg = &ep->pool->cfg;
	bool bounded = !(cfg->flags & CPOOL_NONBLOCK);
	uint64_t now = cpool__now_ns();
	int rc, err;

	if (now >= deadline_ns)
		return -ETIMEDOUT;
	if (bounded) {
		err = cpool__sock_set_io_timeout(
			fd, (deadline_ns - now + 999999) / 1000000);
		if (err)
			return err;
	}
	rc = cfg->on_connect(fd, ep->key, cfg->user_data);
	if (rc < 0)
		return rc;
	if (rc > 0)
		return -ECONNABORTED;
	return bounded ? cpool__sock_set_io_timeout(fd, 0) : 0;
}

int
cpool__conn_open(struct cpool_endpoint *ep, unsigned sh,
		 struct cpool_conn **out, bool trial)
{
	struct cpool *pool = ep->pool;
	uint64_t deadline, jitter;
	struct cpool_conn *c;
	int fd, err;

	deadline = cpool__now_ns() +
		   (uint64_t)pool->cfg.connect_timeout_ms * 1000000u;
	c = cpool__alloc(sizeof(*c), CPOOL_CACHELINE, sh);
	if (!c) {
		err = -ENOMEM;
		goto fail;
	}
	fd = cpool__sock_connect(ep->family, (struct sockaddr *)&ep->sa,
				 ep->salen, &pool->cfg, deadline);
	if (fd < 0) {
		err = fd;
		goto fail;
	}
	if (pool->cfg.on_connect) {
		err = run_on_connect(ep, fd, deadline);
		if (err) {
			close(fd);
			goto fail;
		}
	}
	c->fd = fd;
	err = cpool__worker_watch(pool, sh, c);
	if (err) {
		close(fd);
		goto fail;
	}
	c->ep = ep;
	c->state = CONN_LEASED;
	if (pool->lifetime_ns) {
		/* 0-2.5 % less, so a burst of connections does not expire in
		 * the same instant (HikariCP). */
		jitter = cpool__random() % (pool->lifetime_ns / 40 + 1);
		c->expires_ns = cpool__coarse_ns() + pool->lifetime_ns - jitter;
	}
	ATOMIC_ADD(&ep->ctr.connects, 1); /* open = connects - closes */
	cpool__ep_connect_done(ep, 0, trial);
	*out = c;
	return 0;
fail:
	cpool__free(c, sizeof(*c));
	ATOMIC_ADD(&ep->ctr.connect_failures, 1);
	cpool__ep_connect_done(ep, err, trial);
	cpool__log(&pool->cfg, CPOOL_LOG_WARN, "connect to %s: %s", ep->key,
		   cpool_strerror(err));
	return err;
}

static void
conn_free_rcu(struct rcu_head *head)
{
	CPOOL_RCU_GP_DONE();
	cpool__free(caa_container_of(head, struct cpool_conn, rcu),
		    sizeof(struct cpool_conn));
}

void
cpool__conn_close(struct cpool_conn *c, enum cpool_close_reason reason,
		  bool leased)
{
	struct cpool_endpoint *ep = c->ep;

	cpool__rcu_ensure();
	/* Workers arming it right now use the fd number: let them finish. */
	while (__atomic_load_n(&c->arming, __ATOMIC_ACQUIRE))
		caa_cpu_relax();
	STORE(&c->state, CONN_CLOSED);
	/* Explicitly: a dup of the fd elsewhere would keep it registered. */
	epoll_ctl(c->epfd, EPOLL_CTL_DEL, c->fd, NULL);
	/*
	 * Counted before the fd goes: whoever sees it closed sees the count.
	 * Release: a stats reader that sees this close sees its connect too
	 * (cpool__stats: open = connects - closes).
	 */
	__atomic_add_fetch(&ep->ctr.closed[reason], 1, __ATOMIC_RELEASE);
	if (leased)
		ATOMIC_ADD(&ep->leased_adj, -1);
	close(c->fd);
	/* A worker may hold it from an epoll event: free after a grace period. */
	cpool__call_rcu(&c->rcu, conn_free_rcu);
	cpool__ep_slot_put(ep);
}

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

static bool
conn_check_lease(struct cpool_conn *c, const char *fn)
{
	if (likely(LOAD(&c->state) == CONN_LEASED))
		return true;
	cpool__log(&c->ep->pool->cfg, CPOOL_LOG_ERROR,
		   "%s on a connection that is not leased", fn);
	return false;
}

/* Whether err is a nonblocking "try again" that leaves the stream intact. */
static bool
conn_soft_eagain(const struct cpool_conn *c, int err)
{
	return (err == EAGAIN || err == EWOULDBLOCK) &&
	       (c->ep->pool->cfg.flags & CPOOL_NONBLOCK);
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
