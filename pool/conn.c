/* SPDX-License-Identifier: MIT */
/*
 * Connections: the one place that says who owns a connection.
 *
 *                 open ok (caller)            checkout ok
 *     NEW ──────────────────────────> LEASED <──────────── BUSY
 *      │ \  open ok (prewarm)            │  ^                ^ │
 *      │  `──────────────> BUSY          │  │ handed over    │ │ give back,
 *      │ open failed                     │  │ to a waiter    │ │ prewarm add
 *      v                                 │  │ (stays BUSY)   │ v
 *    CLOSED <──── BUSY <─────────────────┘  │          pop / claim / drain
 *                  (close)   release to close          │
 *                                   release to pool ─> IDLE
 *
 *  - NEW: the thread opening it (a caller that reserved a slot, or a
 *    worker prewarming) owns it; nobody else can see it yet.
 *  - IDLE: its home list owns it; it changes state only under that list's
 *    spinlock. A caller pops it (IDLE -> BUSY), a worker claims it for an
 *    epoll event or an expiry (compare-and-swap IDLE -> BUSY, lock held),
 *    a remover drains it (IDLE -> BUSY). Whoever moved it owns it.
 *  - BUSY: exactly one thread owns it and it is in no list: a checkout
 *    probing it, a worker probing or closing it, a waiter it was handed
 *    to, a remover closing it. It leaves BUSY to become a lease, to go back
 *    into a list (IDLE, under that list's lock) or to be closed.
 *  - LEASED: the caller holding the lease, until cpool_release(): back to
 *    a list (IDLE), handed to a waiter (BUSY), or closed (BUSY -> CLOSED).
 *  - CLOSED: the fd is closed. The memory stays valid until the worker
 *    whose epoll it was registered with has finished the epoll_wait that
 *    might still name it (its reaper, worker.c); then it is freed.
 *
 * Only cpool__conn_move() and cpool__conn_claim() write the state; the
 * table below is every legal transition.
 *
 * The fd: socket() and close() run under the endpoint's connection-set
 * lock (fork-atomic, see conn.h). A close first waits for workers arming
 * the watch (c->arming), un-watches it explicitly (a copy of the fd in a
 * fork child would otherwise keep the registration alive) and then closes.
 * When a protocol hook closes the fd itself, the connection leaves its set
 * before the hook runs (a fork in between leaves the child one copy to
 * close at exit, and never has it neutralise a number reused meanwhile).
 */
#include "conn.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/epoll.h>
#include <unistd.h>
#include <urcu/arch.h>

#include "sock.h"

#define M(s) (1u << (s))
const uint8_t cpool__conn_moves[CONN_NSTATES] = {
	[CONN_NEW] = M(CONN_LEASED) | M(CONN_BUSY) | M(CONN_CLOSED),
	[CONN_IDLE] = M(CONN_BUSY),
	[CONN_BUSY] = M(CONN_LEASED) | M(CONN_IDLE) | M(CONN_CLOSED),
	[CONN_LEASED] = M(CONN_IDLE) | M(CONN_BUSY),
	[CONN_CLOSED] = 0,
};
#undef M

void
cpool__conn_set_init(struct cpool_conn_set *set)
{
	pthread_mutex_init(&set->lock, NULL);
	CDS_INIT_LIST_HEAD(&set->all);
}

void
cpool__conn_set_destroy(struct cpool_conn_set *set)
{
	CPOOL_BUG_ON(!cds_list_empty(&set->all));
	pthread_mutex_destroy(&set->lock);
}

int
cpool__conn_socket(struct cpool_conn *c, struct cpool_conn_set *set,
		   int family, const struct cpool_config *cfg)
{
	int fd;

	pthread_mutex_lock(&set->lock);
	fd = cpool__sock_open(family, cfg);
	if (fd >= 0) {
		c->fd = fd;
		cds_list_add(&c->all, &set->all);
	}
	pthread_mutex_unlock(&set->lock);
	return fd < 0 ? fd : 0;
}

int
cpool__conn_watch(struct cpool_conn *c, int epfd)
{
	struct epoll_event ev = { .events = EPOLLONESHOT, .data.ptr = c };
	int err = CPOOL_FAULT(CPOOL_PP_FAULT_EPOLL_ADD, c);

	if (err)
		return err;
	if (epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev) == -1)
		return -errno;
	c->epfd = epfd;
	return 0;
}

void
cpool__conn_arm(struct cpool_conn *c)
{
	struct epoll_event ev = {
		.events = EPOLLIN | EPOLLRDHUP | EPOLLONESHOT,
		.data.ptr = c,
	};

	epoll_ctl(c->epfd, EPOLL_CTL_MOD, c->fd, &ev);
	__atomic_sub_fetch(&c->arming, 1, __ATOMIC_RELEASE);
}

void
cpool__conn_unwatch(struct cpool_conn *c, bool forked)
{
	/* A worker arming it right now uses the fd number: let it finish. */
	while (LOAD_ACQ(&c->arming))
		caa_cpu_relax();
	if (!forked && c->epfd >= 0)
		epoll_ctl(c->epfd, EPOLL_CTL_DEL, c->fd, NULL);
	c->epfd = -1;
}

void
cpool__conn_close_fd(struct cpool_conn *c, struct cpool_conn_set *set)
{
	pthread_mutex_lock(&set->lock);
	close(c->fd);
	cds_list_del(&c->all);
	pthread_mutex_unlock(&set->lock);
	c->fd = -1;
}

void
cpool__conn_take_fd(struct cpool_conn *c, struct cpool_conn *from,
		    struct cpool_conn_set *set)
{
	pthread_mutex_lock(&set->lock);
	if (c->fd >= 0)
		close(c->fd);
	else /* its own attempt ended: it left the set */
		cds_list_add(&c->all, &set->all);
	c->fd = from->fd;
	cds_list_del(&from->all);
	pthread_mutex_unlock(&set->lock);
	from->fd = -1;
}

void
cpool__conn_adopt(struct cpool_conn *c, struct cpool_conn_set *set, int fd)
{
	pthread_mutex_lock(&set->lock);
	c->fd = fd;
	cds_list_add(&c->all, &set->all);
	pthread_mutex_unlock(&set->lock);
}

void
cpool__conn_forget(struct cpool_conn *c, struct cpool_conn_set *set,
		   int nullfd)
{
	pthread_mutex_lock(&set->lock);
	if (nullfd >= 0)
		cpool__fd_neutralise(nullfd, c->fd);
	cds_list_del(&c->all);
	pthread_mutex_unlock(&set->lock);
}

int
cpool__fd_neutralise(int nullfd, int fd)
{
	int rc;

	do {
		rc = dup3(nullfd, fd, O_CLOEXEC);
	} while (rc == -1 && (errno == EINTR || errno == EBUSY));
	return rc == -1 ? -errno : 0;
}

int
cpool__null_open(void)
{
	int fd = open("/dev/null", O_RDWR | O_CLOEXEC);

	if (fd == -1) /* no /dev/null (a chroot): a socket nobody connects */
		fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	return fd == -1 ? -errno : fd;
}
