/* SPDX-License-Identifier: MIT */
/*
 * Socket level: open a socket with the pool's options, connect it within a
 * deadline, switch its blocking mode, bound its I/O. No pool state.
 */
#ifndef CPOOL_SOCK_H
#define CPOOL_SOCK_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "cpool.h"

/*
 * Opens a nonblocking, close-on-exec stream socket of @family with
 * TCP_NODELAY, keepalive and TCP_USER_TIMEOUT as @cfg says (TCP only).
 * Returns the fd or -errno, with nothing leaked.
 */
int cpool__sock_open(int family, const struct cpool_config *cfg);

/* Sets the pool's TCP options on a TCP socket made elsewhere (a dial). */
int cpool__sock_set_tcp_options(int fd, const struct cpool_config *cfg);

/*
 * Connects the nonblocking @fd to @sa without blocking past @deadline_ns
 * (CLOCK_MONOTONIC), then checks SO_ERROR: only a completed connect may
 * enter the pool (SOCKETS.md S10b). Returns 0 or -errno (-ETIMEDOUT at the
 * deadline). Leaves the fd open either way.
 */
int cpool__sock_connect(int fd, const struct sockaddr *sa, socklen_t salen,
			uint64_t deadline_ns);

/*
 * Starts connecting the nonblocking @fd to @sa: 0 connected at once, 1 in
 * progress (cpool__sock_connect_poll()), or -errno.
 */
int cpool__sock_connect_start(int fd, const struct sockaddr *sa,
			      socklen_t salen);

/*
 * Waits until one of the connects in progress on @fds[0..n) (n <= 2; -1
 * skips an entry) completes, or @until_ns passes. Returns its index with
 * *@err its result (0 or -errno, from SO_ERROR), or -ETIMEDOUT at
 * @until_ns, or another -errno of poll().
 */
int cpool__sock_connect_poll(const int *fds, unsigned n, uint64_t until_ns,
			     int *err);

/* Sets or clears O_NONBLOCK. Returns 0 or -errno. */
int cpool__sock_set_nonblock(int fd, bool nonblock);

/*
 * Bounds blocking I/O on @fd to @ms milliseconds (SO_RCVTIMEO and
 * SO_SNDTIMEO); 0 clears the bound.
 */
int cpool__sock_set_io_timeout(int fd, uint64_t ms);

#endif /* CPOOL_SOCK_H */
