/* SPDX-License-Identifier: MIT */
/*
 * Loopback socket helpers shared by the peers and the servers. Everything
 * here talks to 127.0.0.1 only.
 */
#include "bench.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/tcp.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

/* A blocking, connected TCP socket to @sin with TCP_NODELAY, or -errno. */
int
bench_connect(const struct sockaddr_in *sin)
{
	int fd, err, one = 1;

	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd == -1)
		return -errno;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	while (connect(fd, (const struct sockaddr *)sin, sizeof(*sin)) == -1) {
		if (errno == EINTR)
			continue;
		err = -errno;
		close(fd);
		return err;
	}
	return fd;
}

/*
 * create() and destroy() of a peer that is no pool: its instance is the
 * upstream's address, for bench_connect().
 */
int
bench_addr_create(const struct bench_env *env, unsigned conns, void **out)
{
	*out = (void *)&env->sin;
	return 0;
}

void
bench_addr_destroy(void *inst)
{
}

/* A listening socket on 127.0.0.1:@port (0 = any free one, written back). */
int
bench_listen(uint16_t *port)
{
	struct sockaddr_in sin = { .sin_family = AF_INET };
	socklen_t len = sizeof(sin);
	int fd, err, one = 1;

	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	sin.sin_port = htons(*port);
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd == -1)
		return -errno;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&sin, sizeof(sin)) == -1 ||
	    listen(fd, 4096) == -1 ||
	    getsockname(fd, (struct sockaddr *)&sin, &len) == -1) {
		err = -errno;
		close(fd);
		return err;
	}
	*port = ntohs(sin.sin_port);
	return fd;
}

/*
 * A listening socket on port @port (0 = any free one, written back) of
 * every address, bound to the loopback device: it accepts connects to any
 * 127.x.y.z, and nothing from another interface. Where SO_BINDTODEVICE is
 * refused it fails with that error rather than listen on the network.
 */
int
bench_listen_loopback_any(uint16_t *port)
{
	struct sockaddr_in sin = { .sin_family = AF_INET };
	socklen_t len = sizeof(sin);
	int fd, err, one = 1;

	sin.sin_addr.s_addr = htonl(INADDR_ANY);
	sin.sin_port = htons(*port);
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd == -1)
		return -errno;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (setsockopt(fd, SOL_SOCKET, SO_BINDTODEVICE, "lo", 3) == -1 ||
	    bind(fd, (struct sockaddr *)&sin, sizeof(sin)) == -1 ||
	    listen(fd, 4096) == -1 ||
	    getsockname(fd, (struct sockaddr *)&sin, &len) == -1) {
		err = -errno;
		close(fd);
		return err;
	}
	*port = ntohs(sin.sin_port);
	return fd;
}

/* A port that was free a moment ago: bind port 0, read it, close. */
int
bench_free_port(uint16_t *port)
{
	int fd;

	*port = 0;
	fd = bench_listen(port);
	if (fd < 0)
		return fd;
	close(fd);
	return 0;
}

/*
 * The fd of this process's TCP socket whose local port is @lport and peer
 * port @rport, or -ENOENT. libmemcached has no fd accessor: this finds the
 * socket behind a memcached_st from memcached_server_srcport().
 */
int
bench_fd_for_local_port(uint16_t lport, uint16_t rport)
{
	struct sockaddr_in a, b;
	socklen_t la, lb;
	struct rlimit rl;
	int fd, max;

	getrlimit(RLIMIT_NOFILE, &rl);
	max = rl.rlim_cur > 1 << 20 ? 1 << 20 : (int)rl.rlim_cur;
	for (fd = 0; fd < max; fd++) {
		la = sizeof(a);
		lb = sizeof(b);
		if (getsockname(fd, (struct sockaddr *)&a, &la) == -1)
			continue;
		if (a.sin_family != AF_INET || ntohs(a.sin_port) != lport)
			continue;
		if (getpeername(fd, (struct sockaddr *)&b, &lb) == -1)
			continue;
		if (ntohs(b.sin_port) == rport)
			return fd;
	}
	return -ENOENT;
}
