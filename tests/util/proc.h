/* SPDX-License-Identifier: MIT */
/*
 * Helpers for tests whose subject may hang or crash: run a call in a
 * helper thread with a deadline, run a child process with a deadline, and
 * read what the kernel says about our sockets (/proc/net/tcp{,6}) and fd
 * limits. A hang or a crash of the code under test becomes a failed
 * assertion with a message, never a hung suite.
 *
 * Waiting here is for observable state (an eventfd, a pidfd, a child's
 * exit), bounded by the caller's deadline; nothing sleeps to synchronise.
 */
#ifndef CPOOL_TESTS_PROC_H
#define CPOOL_TESTS_PROC_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* TCP states in /proc/net/tcp{,6} (include/net/tcp_states.h). */
#define TCP_STATE_ESTABLISHED 0x01
#define TCP_STATE_CLOSE_WAIT 0x08

/*
 * Sockets of this network namespace, IPv4 and IPv6, in TCP state @state
 * whose *local* port is one of @ports[0..@n).
 */
int tcp_count_local_state(const int *ports, size_t n, unsigned state);

/*
 * Raises the soft RLIMIT_NOFILE to the hard limit. Returns the soft limit
 * now in force, or -errno.
 */
long nofile_raise(void);

/*
 * Runs @fn(@arg) in a new thread and waits up to @timeout_ms for it to
 * return. Returns 0 when it returned (the thread is joined), -ETIMEDOUT
 * when it did not: the thread is detached and left running (blocked,
 * typically), and @arg must stay valid for the rest of the process.
 */
int call_with_deadline(void (*fn)(void *), void *arg, int timeout_ms);

/*
 * Joins @t if it ends within @timeout_ms. Returns 0 or -ETIMEDOUT (then
 * the thread is detached and left running).
 */
int join_with_deadline(pthread_t t, int timeout_ms);

/*
 * Waits until thread @tid of this process is asleep and stays asleep,
 * neither woken nor preempted (its context-switch counts in
 * /proc/self/task/<tid>/status unchanged), for @quiet_ms: a thread blocked
 * in a long wait, not one passing through a contended lock. Checks at 1 ms
 * intervals until @timeout_ms. Returns 0 or -ETIMEDOUT.
 */
int wait_thread_parked(pid_t tid, int quiet_ms, int timeout_ms);

/*
 * Child processes. child_start() forks; in the child it runs @fn(@arg, wfd)
 * and _exit()s with its return value, where @wfd is the write end of a
 * pipe to the parent: the child reports with child_say(). In the parent it
 * returns at once.
 *
 * child_wait() waits for the child's exit up to @timeout_ms; on the
 * deadline it kills the child (SIGKILL) and reaps it. Either way it then
 * collects everything the child said (up to the buffer size).
 */
struct child {
	pid_t pid;
	int rfd;		/* read end of the report pipe */
	int status;		/* waitpid() status, after child_wait() */
	bool timed_out;		/* killed at the deadline */
	int64_t ms;		/* from child_start() to its end */
	int64_t t0;
	char said[4096];	/* everything the child wrote, NUL-terminated */
};

typedef int child_fn(void *arg, int wfd);

/* Returns 0, or -errno when fork() or pipe() failed. */
int child_start(struct child *ch, child_fn *fn, void *arg);

/* Returns 0 when the child exited by itself, -ETIMEDOUT when killed. */
int child_wait(struct child *ch, int timeout_ms);

/* Whether the child exited by itself with status 0. */
bool child_ok(const struct child *ch);

/*
 * "exit 0", "exit 3", "killed by signal 6 (Aborted)", or "hung: killed
 * after N ms" (static buffer: one call per expression).
 */
const char *child_how(const struct child *ch);

/* Child side: printf() to the parent, one line per call (async-safe
 * enough: a single write()). */
void child_say(int wfd, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

#endif /* CPOOL_TESTS_PROC_H */
