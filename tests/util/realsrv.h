/* SPDX-License-Identifier: MIT */
/*
 * Real servers for the tests and the soak: memcached and redis-server run
 * as child processes on 127.0.0.1.
 *
 * Ports come from below the kernel's ephemeral range
 * (net.ipv4.ip_local_port_range), picked at random and checked free by a
 * bind. A port inside the ephemeral range could be taken, while its server
 * is down for a restart, by one of our own outgoing connections (the
 * restart's bind then fails) or even by a connect to that very port (TCP
 * self-connect: the "server" would echo our own request back).
 *
 * A server counts as ready only when a connection to its port answers with
 * the child's own pid (memcached "stats", redis "INFO server"): a server of
 * another process that happens to hold the port is never mistaken for ours.
 * That wait is a connect loop with a deadline: polling for an observable
 * state, not a sleep.
 *
 * Children are stopped by pid (kill + wait for the exit). None is left
 * behind on any exit path: each child has PR_SET_PDEATHSIG(SIGKILL) (it
 * dies with the thread that started it, so start servers from a thread that
 * outlives them), and every running child is killed by an atexit handler
 * and by realsrv_kill_all(), which is async-signal-safe.
 */
#ifndef CPOOL_TESTS_REALSRV_H
#define CPOOL_TESTS_REALSRV_H

#include <stdbool.h>
#include <sys/types.h>

enum realsrv_kind {
	REALSRV_MEMCACHED,
	REALSRV_REDIS,
};

struct realsrv {
	enum realsrv_kind kind;
	int port;
	pid_t pid;		/* -1 while stopped */
	char address[32];	/* "127.0.0.1:port", for the pool */
};

/* "memcached" or "redis-server". */
const char *realsrv_name(enum realsrv_kind kind);

/* Whether the server's binary is found in PATH. */
bool realsrv_available(enum realsrv_kind kind);

/*
 * Starts a server of @kind on a free port and waits (up to 10 s) until it
 * answers with its pid; retries on other ports if it cannot bind.
 * Returns 0 or -errno (-ENOENT: no binary).
 */
int realsrv_start(struct realsrv *s, enum realsrv_kind kind);

/*
 * Sends @sig (SIGTERM or SIGKILL) and waits for the exit (SIGKILL after
 * 10 s). When it returns, the process is gone: every connection it had was
 * closed by the kernel (FIN or RST already sent). Returns 0 or -errno.
 */
int realsrv_stop(struct realsrv *s, int sig);

/*
 * Starts the stopped server again on the same port and waits until it
 * answers. Returns 0 or -errno.
 */
int realsrv_start_again(struct realsrv *s);

/* realsrv_stop(@sig), then realsrv_start_again(). */
int realsrv_restart(struct realsrv *s, int sig);

/* SIGKILLs every child still running and reaps it. Async-signal-safe. */
void realsrv_kill_all(void);

#endif /* CPOOL_TESTS_REALSRV_H */
