/* SPDX-License-Identifier: MIT */
/*
 * Small helpers shared by the tests: loopback socket pairs, closed ports,
 * deterministic waits on fds and threads, fd counting, log capture.
 * Nothing here sleeps to synchronise: every wait is for an observable
 * condition, bounded by a generous deadline.
 */
#ifndef CPOOL_TESTS_NET_H
#define CPOOL_TESTS_NET_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Generous bound for anything that should take microseconds. */
#define WAIT_MS 10000

/*
 * A connected TCP pair over loopback (@family AF_INET or AF_INET6) made
 * through a listener on port 0: sv[0] the client (connect()ed), sv[1] the
 * accepted server side. Both blocking, CLOEXEC. Returns 0 or -errno.
 */
int tcp_pair(int family, int sv[2]);

/*
 * A loopback port (host order) that was bound and closed without listen():
 * connects to it are refused. Returns the port or -errno.
 */
int closed_port(int family);

/* Whether ::1 can be bound here. */
bool ipv6_loopback_works(void);

/*
 * poll()s @fd for @events (POLLERR and POLLHUP always count) until one is
 * reported or @timeout_ms passes. Consumes nothing. Returns revents, 0 on
 * timeout, -errno on error.
 */
int wait_fd(int fd, short events, int timeout_ms);

/* Local port (host order) of a connected inet socket, or -errno. */
int local_port(int fd);

/* Sends @msg and reads back exactly as many bytes; 0 if they match. */
int echo_roundtrip_fd(int fd, const char *msg);

/* Entries in /proc/self/fd, not counting the directory's own fd. */
int count_open_fds(void);

/* Milliseconds on CLOCK_MONOTONIC. */
int64_t now_ms(void);

/*
 * Lets @ms milliseconds pass (nanosleep, resumed after a signal). Only
 * between two checks of a condition with a deadline, or where elapsed time
 * is itself what is tested.
 */
void pause_ms(long ms);

/*
 * Waits until every byte sent on @fd was acknowledged by the peer (SIOCOUTQ
 * at 1 ms intervals), at most @timeout_ms. Returns the bytes still
 * unacknowledged: 0 once all were, or -1 if the queue cannot be read.
 */
int wait_acked(int fd, int timeout_ms);

/*
 * Waits until thread @tid of this process is asleep (state 'S' in
 * /proc/self/task/<tid>/stat): used to know that a thread which announced
 * it is about to call a blocking function is now blocked inside it. The
 * check repeats at 1 ms intervals until @timeout_ms; that is polling for an
 * observable state, not sleeping in the hope that something happened.
 * Returns 0 or -ETIMEDOUT.
 */
int wait_thread_sleeping(pid_t tid, int timeout_ms);

/* Collects log_fn messages, for assertions on what the library logged. */
#define LOG_CAPTURE_MAX 64
struct log_capture {
	pthread_mutex_t lock;
	int n;
	int level[LOG_CAPTURE_MAX];
	char msg[LOG_CAPTURE_MAX][256];
};

void log_capture_init(struct log_capture *lc);
/* The cpool_log_fn: @user_data is a struct log_capture *. */
void log_capture_fn(void *user_data, int level, const char *msg);
/* Number of captured messages containing @needle (case-sensitive). */
int log_capture_count(struct log_capture *lc, const char *needle);
/* Number of captured messages. */
int log_capture_total(struct log_capture *lc);
/* All messages joined by " | ", for failure output. */
const char *log_capture_dump(struct log_capture *lc);

/*
 * A one-shot, counting signal between threads (an eventfd): post adds 1,
 * wait takes one post or times out.
 */
int sig_new(void);
void sig_post(int efd);
/* Returns 0 or -ETIMEDOUT. */
int sig_wait(int efd, int timeout_ms);
/* Whether a post is pending, without taking it. */
bool sig_pending(int efd);

#endif /* CPOOL_TESTS_NET_H */
