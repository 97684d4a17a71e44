/* SPDX-License-Identifier: MIT */
/*
 * A throwaway DNS server for the tests and the bench: dnsmasq on
 * 127.0.0.1 and a free port, with no system configuration at all:
 *
 *   dnsmasq -k --no-resolv --no-hosts --conf-file=/dev/null --local=/#/
 *           --hostsdir=DIR --local-ttl=TTL --port=P
 *           --listen-address=127.0.0.1 --bind-interfaces
 *
 * (--local=/#/: it answers NXDOMAIN or an empty answer itself for what it
 * does not hold, never REFUSED). A name's records live in a file of DIR of
 * their own, rewritten whole by dnssrv_set() (written aside, then renamed
 * in: dnsmasq's inotify re-reads it). Ready means a query for a probe name
 * dnssrv_start() wrote is answered: no other server can be mistaken for
 * ours. Stopped by pid (SIGTERM and SIGCONT, waitpid; SIGKILL after 5 s);
 * each server dies with the thread that started it (PR_SET_PDEATHSIG) and
 * an atexit handler kills what is left and removes the directories.
 *
 * One thread starts, changes and stops a given struct dnssrv.
 */
#ifndef CPOOL_TESTS_DNSSRV_H
#define CPOOL_TESTS_DNSSRV_H

#include <stdbool.h>
#include <sys/types.h>

struct dnssrv {
	pid_t pid;		/* -1 while stopped */
	int port;
	unsigned ttl_s;		/* --local-ttl */
	char dir[96];		/* the hostsdir */
	char servers[32];	/* "127.0.0.1:port", for cfg.dns_servers */
};

/* Whether dnsmasq is found (PATH, /usr/sbin); @why gets the reason if not. */
bool dnssrv_available(const char **why);

/*
 * Starts a server answering with TTL @ttl_s and waits up to 10 s for it to
 * answer. Returns 0 or -errno.
 */
int dnssrv_start(struct dnssrv *d, unsigned ttl_s);

/*
 * Makes @name resolve to exactly @ips[0..@n) (IPv4 and IPv6 literals, in
 * that order); n == 0 removes the name (NXDOMAIN). Returns once dnsmasq
 * answers a query for @name with that set, up to 5 s: 0 or -ETIMEDOUT.
 */
int dnssrv_set(struct dnssrv *d, const char *name, const char *const *ips,
	       unsigned n);

/* Stops the server (by pid). The port and directory are kept. */
void dnssrv_stop(struct dnssrv *d);

/*
 * Freezes the server (SIGSTOP; returns once it is stopped) and lets it go
 * on (SIGCONT). A frozen server keeps its port: queries wait unanswered
 * in its socket, none is refused, so a resolver's socket stays open
 * through each try's timeout. A stopped server is dead instead: each query
 * is refused by ICMP, and c-ares closes its socket at every refusal.
 */
void dnssrv_pause(struct dnssrv *d);
void dnssrv_resume(struct dnssrv *d);

/* Starts it again on the same port with the same records. 0 or -errno. */
int dnssrv_restart(struct dnssrv *d);

/* Stops it if running and removes the directory. */
void dnssrv_free(struct dnssrv *d);

#endif /* CPOOL_TESTS_DNSSRV_H */
