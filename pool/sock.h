/* SPDX-License-Identifier: MIT */
/* Socket level: connect with a deadline and the pool's socket options. */
#ifndef CPOOL_SOCK_H
#define CPOOL_SOCK_H

#include <stdint.h>
#include <sys/socket.h>

#include "cpool.h"

/*
 * Opens a socket to @sa, sets TCP_NODELAY, keepalive and TCP_USER_TIMEOUT
 * as @cfg says (TCP only), connects without blocking past @deadline_ns and
 * checks SO_ERROR, then puts the fd in its handout mode (blocking unless
 * CPOOL_NONBLOCK). Returns the connected fd (close-on-exec) or -errno
 * (-ETIMEDOUT at the deadline), with nothing leaked.
 */
int cpool__sock_connect(int family, const struct sockaddr *sa, socklen_t salen,
			const struct cpool_config *cfg, uint64_t deadline_ns);

/*
 * Bounds blocking I/O on @fd to @ms milliseconds (SO_RCVTIMEO and
 * SO_SNDTIMEO); 0 clears the bound.
 */
int cpool__sock_set_io_timeout(int fd, uint64_t ms);

#endif /* CPOOL_SOCK_H */
