/* SPDX-License-Identifier: MIT */
/*
 * Half-dead peers for the tests: a pair of network namespaces joined by a
 * veth pair, and peer servers in forked child processes (which a test can
 * SIGSTOP, or cut off by taking the server's link down).
 *
 * Topology (netns_setup()):
 *
 *   client ns "cpt<pid>c"            server ns "cpt<pid>s"
 *   cpc0 10.213.0.1/30 ── veth ── cps0 10.213.0.2/30
 *
 * Both namespaces are new and private to the test process, so the fixed
 * interface names and addresses cannot meet anything else on the host; the
 * pid in the namespace names keeps concurrent runs apart. Everything made
 * here is recorded in a process-wide registry that netns_cleanup() undoes
 * (kill the children by PID, delete the namespaces); it is idempotent, so a
 * test registers it both with atexit() and as its fixture's teardown. A
 * run that was SIGKILLed (a Criterion timeout) leaves namespaces named
 * after a dead pid: netns_setup() deletes those first.
 */
#ifndef CPOOL_TESTS_NETNS_H
#define CPOOL_TESTS_NETNS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#define NETNS_CLIENT_IP "10.213.0.1"
#define NETNS_SERVER_IP "10.213.0.2"

/*
 * Why namespaces cannot be used here (not root, no `ip netns`), as a
 * message for cr_skip_test(); NULL when they can.
 */
const char *netns_unavailable(void);

/*
 * Creates the two namespaces, the veth pair and the addresses, with every
 * link up. Returns 0; -EPERM when the namespaces cannot be made here (a
 * reason to skip); -EIO when a later step failed. @err (of @errlen bytes)
 * then holds the failing command and its output; whatever was made is
 * left for netns_cleanup(). Once per process.
 */
int netns_setup(char *err, size_t errlen);

/*
 * Moves the calling thread (only it: a network namespace is per thread)
 * into the client namespace, so that the sockets it creates from then on
 * live there; threads it creates afterwards start there too. Returns 0 or
 * -errno.
 */
int netns_enter_client(void);

/* Sets the server side's veth down or up (ip -n <server> link set). */
int netns_server_link(bool up, char *err, size_t errlen);

/* Kills every peer started, deletes the namespaces. Idempotent. */
void netns_cleanup(void);

/* What a peer server does with the bytes it gets. */
enum peer_mode {
	PEER_ECHO,	/* sends every byte back */
	PEER_SINK,	/* reads (so the kernel ACKs) and never answers */
};

/*
 * Forks a peer server: a child process (killed when the test process dies)
 * that enters the server namespace when @in_server_ns, listens on @ip:@port
 * (0 = ephemeral) with a backlog of 128 and serves every connection in
 * @mode. Returns the child's pid with *@port_out set once it listens, or
 * -errno. Fork it before the test makes threads of its own.
 */
pid_t peer_start(bool in_server_ns, const char *ip, int port,
		 enum peer_mode mode, int *port_out);

/*
 * Kills the peer (SIGKILL, even when stopped) and reaps it; a pid that is
 * not a running peer of peer_start() is ignored.
 */
void peer_stop(pid_t pid);

#endif /* CPOOL_TESTS_NETNS_H */
