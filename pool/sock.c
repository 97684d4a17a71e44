/* SPDX-License-Identifier: MIT */
/*
 * Connecting. Only a connection whose connect completed (POLLOUT, then
 * SO_ERROR 0) may enter the pool: a socket still in SYN_SENT answers the
 * probe with EAGAIN, like a healthy one (SOCKETS.md S10b).
 *
 * Options, on every TCP connection (SOCKETS.md section 4):
 *  - keepalive (SO_KEEPALIVE, TCP_KEEPIDLE/INTVL/CNT), so an idle
 *    connection to a vanished peer ends in ETIMEDOUT (S8);
 *  - TCP_USER_TIMEOUT, so a request in flight to a vanished peer fails in
 *    seconds instead of 15 minutes (S9); it also bounds the connect (S10e);
 *  - TCP_NODELAY: request/response traffic.
 */
#include "sock.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/time.h>
#include <unistd.h>

#include "util.h"

static int
setopt(int fd, int level, int name, int v)
{
	if (setsockopt(fd, level, name, &v, sizeof(v)) == -1)
		return -errno;
	return 0;
}

int
cpool__sock_set_tcp_options(int fd, const struct cpool_config *cfg)
{
	int err;

	err = setopt(fd, IPPROTO_TCP, TCP_NODELAY, 1);
	if (!err && cfg->keepalive_idle_s) {
		err = setopt(fd, SOL_SOCKET, SO_KEEPALIVE, 1);
		if (!err)
			err = setopt(fd, IPPROTO_TCP, TCP_KEEPIDLE,
				     (int)cfg->keepalive_idle_s);
		if (!err)
			err = setopt(fd, IPPROTO_TCP, TCP_KEEPINTVL,
				     (int)cfg->keepalive_interval_s);
		if (!err)
			err = setopt(fd, IPPROTO_TCP, TCP_KEEPCNT,
				     (int)cfg->keepalive_count);
	}
	if (!err && cfg->user_timeout_ms)
		err = setopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT,
			     (int)cfg->user_timeout_ms);
	return err;
}

/* Waits for the nonblocking connect to finish; 0 or -errno. */
static int
sock_wait_connected(int fd, uint64_t deadline_ns)
{
	struct pollfd pfd = { .fd = fd, .events = POLLOUT };
	socklen_t len = sizeof(int);
	uint64_t now;
	int n, so_err = 0;

	for (;;) {
		now = cpool__now_ns();
		if (now >= deadline_ns)
			return -ETIMEDOUT;
		n = poll(&pfd, 1,
			 (int)((deadline_ns - now + 999999) / 1000000));
		if (n == -1 && errno != EINTR)
			return -errno;
		if (n > 0)
			break;
	}
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &so_err, &len) == -1)
		return -errno;
	return so_err ? -so_err : 0;
}

int
cpool__sock_open(int family, const struct cpool_config *cfg)
{
	int fd, err;

	fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1)
		return -errno;
	if (family != AF_UNIX) {
		err = cpool__sock_set_tcp_options(fd, cfg);
		if (err) {
			close(fd); /* may clobber errno: err was saved first */
			return err;
		}
	}
	return fd;
}

int
cpool__sock_connect(int fd, const struct sockaddr *sa, socklen_t salen,
		    uint64_t deadline_ns)
{
	if (connect(fd, sa, salen) == 0)
		return 0;
	if (errno != EINPROGRESS && errno != EINTR)
		return -errno;
	return sock_wait_connected(fd, deadline_ns);
}

int
cpool__sock_connect_start(int fd, const struct sockaddr *sa, socklen_t salen)
{
	if (connect(fd, sa, salen) == 0)
		return 0;
	/* EINTR: the connect goes on asynchronously, as with EINPROGRESS. */
	if (errno == EINPROGRESS || errno == EINTR)
		return 1;
	return -errno;
}

int
cpool__sock_connect_poll(const int *fds, unsigned n, uint64_t until_ns,
			 int *err)
{
	struct pollfd pfd[2];
	socklen_t len = sizeof(int);
	unsigned i, map[2], k;
	uint64_t now;
	int r, so_err = 0;

	for (i = k = 0; i < n && i < 2; i++) {
		if (fds[i] < 0)
			continue;
		pfd[k].fd = fds[i];
		pfd[k].events = POLLOUT;
		pfd[k].revents = 0;
		map[k++] = i;
	}
	for (;;) {
		now = cpool__now_ns();
		if (now >= until_ns)
			return -ETIMEDOUT;
		r = poll(pfd, k, (int)((until_ns - now + 999999) / 1000000));
		if (r == -1 && errno != EINTR)
			return -errno;
		if (r > 0)
			break;
	}
	for (i = 0; i < k; i++) {
		if (!pfd[i].revents)
			continue;
		if (getsockopt(pfd[i].fd, SOL_SOCKET, SO_ERROR, &so_err,
			       &len) == -1)
			*err = -errno;
		else
			*err = so_err ? -so_err : 0;
		return (int)map[i];
	}
	return -ETIMEDOUT; /* not reached: poll said one was ready */
}

int
cpool__sock_set_nonblock(int fd, bool nonblock)
{
	int fl = fcntl(fd, F_GETFL);

	if (fl == -1)
		return -errno;
	if (!!(fl & O_NONBLOCK) == nonblock)
		return 0;
	fl = nonblock ? fl | O_NONBLOCK : fl & ~O_NONBLOCK;
	return fcntl(fd, F_SETFL, fl) == -1 ? -errno : 0;
}

int
cpool__sock_set_io_timeout(int fd, uint64_t ms)
{
	struct timeval tv = { .tv_sec = (time_t)(ms / 1000),
			      .tv_usec = (suseconds_t)(ms % 1000) * 1000 };

	if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) == -1 ||
	    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) == -1)
		return -errno;
	return 0;
}
