/* SPDX-License-Identifier: MIT */
/*
 * The bench's own upstream for machines without memcached: a one-thread
 * epoll echo server that speaks just enough of memcached's text protocol to
 * stand in for it. Per complete line: "get ..." is answered "END\r\n" (a
 * miss, byte for byte what memcached sends), "version" is answered
 * "VERSION 1.6.18\r\n" (libmemcached warms its handles with it), and any
 * other line is echoed back. Runs in a child process (server.c) and never
 * returns.
 */
#include "bench.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define LINE_MAX_BYTES 512

struct echo_conn {
	size_t len;
	char buf[LINE_MAX_BYTES];
};

static struct echo_conn **conns;
static size_t nconns;

static struct echo_conn *
conn_get(int fd)
{
	size_t n;

	if ((size_t)fd >= nconns) {
		n = (size_t)fd * 2 + 64;
		conns = realloc(conns, n * sizeof(*conns));
		if (!conns)
			_exit(1);
		memset(conns + nconns, 0, (n - nconns) * sizeof(*conns));
		nconns = n;
	}
	if (!conns[fd]) {
		conns[fd] = calloc(1, sizeof(struct echo_conn));
		if (!conns[fd])
			_exit(1);
	}
	return conns[fd];
}

static void
conn_drop(int fd)
{
	if ((size_t)fd < nconns) {
		free(conns[fd]);
		conns[fd] = NULL;
	}
	close(fd);
}

static int
write_all(int fd, const char *p, size_t len)
{
	ssize_t n;

	while (len) {
		n = send(fd, p, len, MSG_NOSIGNAL);
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Answers every complete line in @c; keeps a partial one for later. */
static int
conn_serve(int fd, struct echo_conn *c)
{
	static const char miss[] = "END\r\n";
	static const char version[] = "VERSION 1.6.18\r\n";
	size_t start = 0, i, len;
	const char *line;
	int err = 0;

	for (i = 0; i < c->len && !err; i++) {
		if (c->buf[i] != '\n')
			continue;
		line = c->buf + start;
		len = i + 1 - start;
		if (len >= 4 && !memcmp(line, "get ", 4))
			err = write_all(fd, miss, sizeof(miss) - 1);
		else if (len >= 7 && !memcmp(line, "version", 7))
			err = write_all(fd, version, sizeof(version) - 1);
		else
			err = write_all(fd, line, len);
		start = i + 1;
	}
	if (start == 0 && c->len == sizeof(c->buf)) {
		/* No newline in a full buffer: echo it raw. */
		err = write_all(fd, c->buf, c->len);
		start = c->len;
	}
	memmove(c->buf, c->buf + start, c->len - start);
	c->len -= start;
	return err;
}

void
bench_echo_serve(int lfd)
{
	struct epoll_event ev, evs[64];
	struct echo_conn *c;
	int ep, n, i, fd;
	ssize_t r;

	fcntl(lfd, F_SETFL, fcntl(lfd, F_GETFL) | O_NONBLOCK);
	ep = epoll_create1(0);
	if (ep == -1)
		_exit(1);
	ev.events = EPOLLIN;
	ev.data.fd = lfd;
	epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
	for (;;) {
		n = epoll_wait(ep, evs, 64, -1);
		for (i = 0; i < n; i++) {
			fd = evs[i].data.fd;
			if (fd == lfd) {
				while ((fd = accept4(lfd, NULL, NULL,
						     SOCK_NONBLOCK)) >= 0) {
					ev.events = EPOLLIN;
					ev.data.fd = fd;
					epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
				}
				continue;
			}
			c = conn_get(fd);
			r = recv(fd, c->buf + c->len, sizeof(c->buf) - c->len,
				 0);
			if (r == -1 && (errno == EAGAIN || errno == EINTR))
				continue;
			if (r <= 0) {
				conn_drop(fd);
				continue;
			}
			c->len += (size_t)r;
			if (conn_serve(fd, c))
				conn_drop(fd);
		}
	}
}
