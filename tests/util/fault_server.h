/* SPDX-License-Identifier: MIT */
/*
 * The project's own fault server: a thread in the test process that accepts
 * connections on 127.0.0.1, ::1 or a unix socket (port 0 / a fresh path) and,
 * per connection or on command, echoes, closes (FIN), resets (RST), sends
 * bytes nobody asked for, stalls or refuses.
 *
 * Every command is synchronous: it runs in the server thread and returns only
 * after the action is done (e.g. close() returned for every connection it
 * targets), so tests need no sleeps. Whether the *client* has seen the FIN or
 * RST yet is a separate question: wait for it on the client fd with
 * wait_fd() (tests/util/net.h).
 */
#ifndef CPOOL_TESTS_FAULT_SERVER_H
#define CPOOL_TESTS_FAULT_SERVER_H

#include <stddef.h>

enum fs_family {
	FS_INET,	/* 127.0.0.1 */
	FS_INET6,	/* ::1 */
	FS_UNIX,	/* unix socket under a fresh /tmp directory */
};

/* What the server does with connections, set with fs_set_mode(). */
enum fs_mode {
	FS_MODE_ECHO = 0,	  /* read every byte, send it back (default) */
	FS_MODE_STALL,		  /* accept, then never read nor answer */
	FS_MODE_CLOSE_ON_ACCEPT,  /* close() each new connection at once: FIN */
	FS_MODE_RESET_ON_ACCEPT,  /* SO_LINGER {1,0} + close() at once: RST */
};

/* One-shot actions on open server-side connections (fs_act()). */
enum fs_action {
	FS_ACT_CLOSE,		/* close(): FIN */
	FS_ACT_RESET,		/* SO_LINGER {1,0}, close(): RST */
	FS_ACT_SEND,		/* send bytes nobody asked for, keep open */
	FS_ACT_SEND_CLOSE,	/* send bytes, then close(): data + FIN */
	FS_ACT_SEND_RESET,	/* send bytes, linger-0 close: data + RST */
};

struct fault_server;

/*
 * Starts a server listening on the loopback address of @family with an
 * ephemeral port (FS_UNIX: a socket in a fresh mkdtemp() directory).
 * Returns NULL with errno set when the family is unusable here (e.g. no ::1).
 */
struct fault_server *fs_start(enum fs_family family);

/*
 * As fs_start(), on a given loopback address ("127.0.0.2", "::1"; every
 * 127/8 address is this host's) and @port (0: an ephemeral one): the
 * members of a name's set share one port. NULL with errno set on failure.
 */
struct fault_server *fs_start_at(const char *ip, int port);

/* Closes every connection and the listener, joins the thread, frees. */
void fs_stop(struct fault_server *fs);

/* "127.0.0.1:port", "[::1]:port" or "unix:/tmp/.../sock": for the pool. */
const char *fs_address(const struct fault_server *fs);

/* The listening port (0 for FS_UNIX). */
int fs_port(const struct fault_server *fs);

/* Sets the mode for current and future connections; synchronous. */
void fs_set_mode(struct fault_server *fs, enum fs_mode mode);

/*
 * Applies @act to the open server-side connection whose peer (the client)
 * has local port @client_port, or to every open connection when
 * @client_port is 0. @buf/@len are the bytes for the SEND actions. Returns
 * the number of connections acted on, after the action completed.
 */
int fs_act(struct fault_server *fs, enum fs_action act, int client_port,
	   const void *buf, size_t len);

/*
 * After fs_refuse(): listens again on the same address and port. Returns
 * 0, or -1 when the bind fails.
 */
int fs_listen_again(struct fault_server *fs);

/* Shorthands for fs_act(..., 0, ...): act on every open connection. */
int fs_close_all(struct fault_server *fs);
int fs_reset_all(struct fault_server *fs);
int fs_send_all(struct fault_server *fs, const void *buf, size_t len);

/*
 * Closes the listening socket; the port number stays known, so connects to
 * fs_address() are refused from now on. Open connections are kept.
 */
void fs_refuse(struct fault_server *fs);

/* Connections accepted since start (including closed ones). */
unsigned fs_accepted(struct fault_server *fs);

/* Server-side connections open now. */
unsigned fs_open(struct fault_server *fs);

/* Waits until fs_accepted() >= @n. Returns 0, or -ETIMEDOUT. */
int fs_wait_accepted(struct fault_server *fs, unsigned n, int timeout_ms);

/*
 * Waits until fs_open() == @n (the server noticed the clients' closes).
 * Returns 0, or -ETIMEDOUT.
 */
int fs_wait_open(struct fault_server *fs, unsigned n, int timeout_ms);

#endif /* CPOOL_TESTS_FAULT_SERVER_H */
