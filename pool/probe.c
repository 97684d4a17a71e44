/* SPDX-License-Identifier: MIT */
/*
 * The liveness probe.
 *
 * recv(MSG_PEEK | MSG_DONTWAIT) of one byte is the only syscall on the
 * healthy path (SOCKETS.md section 4: 330 ns here): -1 EAGAIN is alive; a
 * byte is unexpected data (never reuse: the next caller would read someone
 * else's answer); -1 with an error classifies the error. Only a return of 0
 * (a FIN, or an error an earlier read consumed) needs SO_ERROR, which tells a
 * FIN+RST (EPIPE) from a clean FIN. SO_ERROR is never read first or alone: it
 * misses data and FIN, and reading it clears the error.
 *
 * Not a cancellation point (the recv is a direct system call).
 *
 * errno is read only right after a call that returned -1. A stale errno left
 * by an earlier successful call (the seed article's mistake, SOCKETS.md
 * section 5) therefore cannot change a verdict. The caller's errno is
 * restored.
 */
#include "probe.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

enum cpool_verdict
cpool__verdict_of_errno(int err)
{
	switch (err) {
	case 0:
	case EAGAIN:
#if EWOULDBLOCK != EAGAIN
	case EWOULDBLOCK:
#endif
		return CPOOL_ALIVE;
	case ECONNRESET:
	case EPIPE:
		return CPOOL_PEER_RESET;
	case ETIMEDOUT:
	case EHOSTUNREACH:
	case ENETUNREACH:
	case EHOSTDOWN:
	case ENETDOWN:
		return CPOOL_TIMED_OUT;
	default:
		return CPOOL_SOCKET_ERROR;
	}
}

enum cpool_verdict
cpool_probe(int fd)
{
	int saved = errno, so_err = 0;
	socklen_t len = sizeof(so_err);
	enum cpool_verdict v;
	ssize_t n;
	char b;

	/*
	 * recv() itself, made directly: glibc's wrapper is a cancellation
	 * point, and a probe must never unwind a thread that holds a
	 * connection out of every list (it also saves the wrapper's two
	 * atomic operations in a threaded process).
	 */
	do {
		n = syscall(SYS_recvfrom, fd, &b, 1, MSG_PEEK | MSG_DONTWAIT,
			    NULL, NULL);
	} while (n == -1 && errno == EINTR);

	if (n > 0)
		v = CPOOL_UNEXPECTED_DATA;
	else if (n == -1)
		v = cpool__verdict_of_errno(errno);
	else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &so_err, &len) == -1)
		v = CPOOL_SOCKET_ERROR;
	else if (so_err)
		v = cpool__verdict_of_errno(so_err);
	else
		v = CPOOL_PEER_CLOSED;
	/* A pending soft error that maps to "alive" is still not a FIN. */
	if (n == 0 && v == CPOOL_ALIVE)
		v = CPOOL_PEER_CLOSED;
	errno = saved;
	return v;
}

const char *
cpool_verdict_name(enum cpool_verdict v)
{
	switch (v) {
	case CPOOL_ALIVE:
		return "alive";
	case CPOOL_PEER_CLOSED:
		return "peer_closed";
	case CPOOL_PEER_RESET:
		return "peer_reset";
	case CPOOL_TIMED_OUT:
		return "timed_out";
	case CPOOL_UNEXPECTED_DATA:
		return "unexpected_data";
	case CPOOL_SOCKET_ERROR:
		return "socket_error";
	}
	return "unknown";
}

const char *
cpool_close_reason_name(enum cpool_close_reason r)
{
	switch (r) {
	case CPOOL_CLOSE_IDLE_TIMEOUT:
		return "idle_timeout";
	case CPOOL_CLOSE_LIFETIME:
		return "lifetime";
	case CPOOL_CLOSE_MAX_USES:
		return "max_uses";
	case CPOOL_CLOSE_BY_CALLER:
		return "by_caller";
	case CPOOL_CLOSE_SHUTDOWN:
		return "shutdown";
	case CPOOL_CLOSE_DRAINED:
		return "drained";
	case CPOOL_CLOSE_REASON_END:
		break;
	default:
		if ((int)r > CPOOL_ALIVE && (int)r <= CPOOL_SOCKET_ERROR)
			return cpool_verdict_name((enum cpool_verdict)r);
	}
	return "unknown";
}

const char *
cpool_strerror(int err)
{
	const char *s;

	if (err < 0)
		err = -err;
	s = err ? strerrordesc_np(err) : "Success";
	return s ? s : "Unknown error";
}
