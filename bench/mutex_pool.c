/* SPDX-License-Identifier: MIT */
/*
 * The mutex + condvar LIFO pool (see mutex_pool.h).
 */
#include "mutex_pool.h"
#include "bench.h"

#include <errno.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

/* Opens @conns connections to @sin up front. */
int
mutex_pool_create(const struct sockaddr_in *sin, unsigned conns,
		  unsigned timeout_ms, struct mutex_pool **out)
{
	struct mutex_pool *mp;
	pthread_condattr_t ca;
	int fd;

	mp = calloc(1, sizeof(*mp));
	if (!mp)
		return -ENOMEM;
	mp->fds = calloc(conns, sizeof(int));
	if (!mp->fds) {
		free(mp);
		return -ENOMEM;
	}
	mp->sin = *sin;
	mp->cap = conns;
	mp->timeout_ms = timeout_ms;
	pthread_mutex_init(&mp->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&mp->cond, &ca);
	pthread_condattr_destroy(&ca);
	while (mp->n < conns) {
		fd = bench_connect(sin);
		if (fd < 0) {
			mutex_pool_destroy(mp);
			return fd;
		}
		mp->fds[mp->n++] = fd;
	}
	*out = mp;
	return 0;
}

void
mutex_pool_destroy(struct mutex_pool *mp)
{
	while (mp->n)
		close(mp->fds[--mp->n]);
	pthread_mutex_destroy(&mp->lock);
	pthread_cond_destroy(&mp->cond);
	free(mp->fds);
	free(mp);
}

/* The most recently released fd, waiting up to timeout_ms for one. */
int
mutex_pool_acquire(struct mutex_pool *mp)
{
	struct timespec ts;
	int fd;

	pthread_mutex_lock(&mp->lock);
	if (!mp->n) {
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_sec += mp->timeout_ms / 1000;
		ts.tv_nsec += (long)(mp->timeout_ms % 1000) * 1000000;
		if (ts.tv_nsec >= 1000000000) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000;
		}
		while (!mp->n) {
			if (pthread_cond_timedwait(&mp->cond, &mp->lock, &ts) ==
				    ETIMEDOUT &&
			    !mp->n) {
				pthread_mutex_unlock(&mp->lock);
				return -ETIMEDOUT;
			}
		}
	}
	fd = mp->fds[--mp->n];
	pthread_mutex_unlock(&mp->lock);
	return fd;
}

/* Pushes @fd back (a broken one is replaced by a new connection). */
void
mutex_pool_release(struct mutex_pool *mp, int fd, int broken)
{
	if (broken) {
		close(fd);
		fd = bench_connect(&mp->sin);
		if (fd < 0)
			return; /* the pool shrinks; the bench counts errors */
	}
	pthread_mutex_lock(&mp->lock);
	mp->fds[mp->n++] = fd;
	pthread_cond_signal(&mp->cond);
	pthread_mutex_unlock(&mp->lock);
}
