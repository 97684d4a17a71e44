/* SPDX-License-Identifier: MIT */
/*
 * Connection objects: their one state machine, their fd's life (socket,
 * epoll registration, arming, close) and the lease holder's calls. The
 * states and who may move them are drawn in conn.c's top comment.
 */
#ifndef CPOOL_CONN_H
#define CPOOL_CONN_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <urcu/list.h>

#include "cpool.h"
#include "util.h"

enum cpool_conn_state {
	CONN_NEW = 0,	/* being opened by one thread */
	CONN_IDLE,	/* in an idle list (home); moves only under its lock */
	CONN_BUSY,	/* out of every list, owned by exactly one thread */
	CONN_LEASED,	/* a caller's lease */
	CONN_CLOSED,	/* fd closed; the memory waits for its reaper */
	CONN_NSTATES
};

struct cpool_idle;
struct cpool_endpoint;
struct cpool_uaddr;

struct cpool_conn {
	int fd;
	unsigned state;		 /* enum cpool_conn_state: cpool__conn_move() */
	bool reused;		 /* this lease came from the idle set */
	bool broken;		 /* a send/recv error: close at release */
	unsigned uses;		 /* leases so far */
	struct cpool_endpoint *ep; /* holds a reference on it until freed */
	struct cpool_uaddr *ua;	 /* its address: a reference until freed */
	struct cds_list_head link; /* in its home list while CONN_IDLE */
	uint64_t released_ns;	 /* tick at the last release or give-back */
	uint64_t expires_ns;	 /* end of life with jitter; UINT64_MAX never */
	struct cpool_idle *home; /* its list while CONN_IDLE; leased, the list
				  * its release goes to (store-release) */
	int epfd;		 /* the worker epoll it is registered with */
	unsigned arming;	 /* EPOLL_CTL_MODs in flight (workers) */
	struct cpool_stack *reaper; /* frees it after its worker's next wait */
	struct cpool_snode rnode;   /* in the reaper's stack once closed */
	struct cds_list_head all;   /* in its set from socket() to close() */
	void *ctx;		 /* cpool_conn_set_ctx() */
	bool hooked;		 /* ops->close is owed (cpool_conn_ops) */
	bool nonblock;		 /* the handout mode of its fd */
	uint8_t stuck_looks;	 /* worker looks that found stuck_bytes */
	unsigned stuck_bytes;	 /* waiting after an alive ops->check */
	unsigned stuck_uses;	 /* ... seen at this many leases */
};

/*
 * Every connection of an endpoint with an open fd, under a lock that is
 * held across socket() and close() themselves: a fork() (whose prepare
 * handler takes every set's lock) then always sees exactly the fds the
 * sets list, so the child can neutralise its copies of all of them.
 */
struct cpool_conn_set {
	pthread_mutex_t lock;
	struct cds_list_head all;
};

void cpool__conn_set_init(struct cpool_conn_set *set);
void cpool__conn_set_destroy(struct cpool_conn_set *set);

/*
 * The state machine. Moves @c from @from to @to, which must be a legal
 * transition (conn.c); an illegal one trips CPOOL_BUG_ON in debug builds.
 * Moves to and from CONN_IDLE happen under the home list's lock.
 */
extern const uint8_t cpool__conn_moves[CONN_NSTATES];

static inline void
cpool__conn_move(struct cpool_conn *c, unsigned from, unsigned to)
{
	CPOOL_BUG_ON(LOAD_RLX(&c->state) != from ||
		     !(cpool__conn_moves[from] & (1u << to)));
	STORE_REL(&c->state, to);
}

/*
 * The worker's claim on a connection an epoll event named: IDLE -> BUSY by
 * compare-and-swap, under the home list's lock. Returns false when someone
 * else owns it now (a caller leased it first).
 */
static inline bool
cpool__conn_claim(struct cpool_conn *c)
{
	unsigned idle = CONN_IDLE;

	return __atomic_compare_exchange_n(&c->state, &idle, CONN_BUSY, false,
					   __ATOMIC_ACQ_REL, __ATOMIC_RELAXED);
}

/*
 * Opens @c's socket (cpool__sock_open()) and enters it in @set, both under
 * the set's lock. Returns 0 or -errno (nothing to undo).
 */
int cpool__conn_socket(struct cpool_conn *c, struct cpool_conn_set *set,
		       int family, const struct cpool_config *cfg);

/*
 * Enters @fd, a socket an ops->dial opened, as @c's in @set (under its
 * lock). Never fails.
 */
void cpool__conn_adopt(struct cpool_conn *c, struct cpool_conn_set *set,
		       int fd);

/*
 * Registers @c's fd with the worker epoll @epfd as a disarmed one-shot:
 * the worker arms it once it has been idle a tick. Returns 0 or -errno.
 */
int cpool__conn_watch(struct cpool_conn *c, int epfd);

/*
 * Arms the watch (EPOLLIN | EPOLLRDHUP, one-shot). The caller (a worker)
 * counted itself in c->arming under the home list's lock; this drops the
 * count, and cpool__conn_unwatch() waits for it, so the fd number cannot
 * be closed and reused under the EPOLL_CTL_MOD.
 */
void cpool__conn_arm(struct cpool_conn *c);

/*
 * Waits for any arming in flight, then un-watches the fd explicitly: a
 * copy of it elsewhere would keep the registration alive after close().
 * Not in a fork child (@forked): the epoll is the parent's.
 */
void cpool__conn_unwatch(struct cpool_conn *c, bool forked);

/*
 * @c takes over @from's fd (a race's winner): @c's own fd is closed, and
 * @from leaves @set without closing it. Under the set's lock.
 */
void cpool__conn_take_fd(struct cpool_conn *c, struct cpool_conn *from,
			 struct cpool_conn_set *set);

/* Closes the fd and takes @c out of @set, under the set's lock. */
void cpool__conn_close_fd(struct cpool_conn *c, struct cpool_conn_set *set);

/*
 * Takes @c out of @set without closing its fd (a protocol hook may);
 * with @nullfd >= 0 points the fd at it first (cpool__fd_neutralise()), so
 * the hook's goodbye reaches nobody and the socket itself is released.
 */
void cpool__conn_forget(struct cpool_conn *c, struct cpool_conn_set *set,
			int nullfd);

/*
 * Points @fd at @nullfd's object (the pool's /dev/null, opened at create:
 * cpool__null_open()) so that nothing done with it can reach the peer,
 * keeping the number taken. Needs no new fd (works at EMFILE) and is
 * async-signal-safe (the fork child). Returns 0 or -errno.
 */
int cpool__fd_neutralise(int nullfd, int fd);

/*
 * Opens the harmless object of cpool__fd_neutralise(): /dev/null, or an
 * unconnected socket if /dev/null cannot be opened (a chroot). Returns the
 * fd or -errno.
 */
int cpool__null_open(void);

#endif /* CPOOL_CONN_H */
