/* SPDX-License-Identifier: MIT */
/*
 * A throwaway PostgreSQL server for the tests, the soak and the bench.
 *
 * PostgreSQL refuses to run as root, so everything the server touches runs
 * as the "postgres" user (fork + setgid/setuid before exec): the process
 * that starts it must be root. The cluster is made once per machine by
 * initdb into a template directory (/tmp/cpool-pgsrv-template-<PG
 * major>-v<N>, with the test roles and database in it; bump N whenever
 * what the template holds changes), and each server copies it (cp -a)
 * into a fresh temporary directory: a start costs a copy and a postmaster
 * start, not an initdb.
 *
 * The server: postgres -D DIR -p PORT -k DIR -c listen_addresses=127.0.0.1
 * -c fsync=off, trust authentication for every local and 127.0.0.1
 * connection, a login role PGSRV_USER owning a database PGSRV_DB, and a
 * role PGSRV_PW_USER that needs a password nobody is told (for the
 * authentication-failure paths). Ports come from below the ephemeral range
 * (see realsrv.h for why). Ready means a libpq ping over the server's own
 * unix socket in DIR answers: no other process's server can be mistaken
 * for ours.
 *
 * Stopping is by pid: a signal (SIGINT fast shutdown, SIGTERM smart,
 * SIGQUIT immediate), then waitpid, SIGKILL after 10 s. Each server dies
 * with the thread that started it (PR_SET_PDEATHSIG), and an atexit
 * handler kills what is still running and removes the directories.
 *
 * Not thread-safe per server: one thread starts, restarts and stops a
 * given struct pgsrv; pgsrv_sql() may run on any thread.
 */
#ifndef CPOOL_TESTS_PGSRV_H
#define CPOOL_TESTS_PGSRV_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#define PGSRV_USER "cpool"
#define PGSRV_DB "cpool"
#define PGSRV_PW_USER "cpool_pw"

struct pgsrv_opts {
	const char *const *conf; /* extra "name=value" settings (-c), NULL-ended */
};

struct pgsrv {
	pid_t pid;		/* postmaster; -1 while stopped */
	int port;
	char dir[128];		/* data directory, also the socket directory */
	char address[32];	/* "127.0.0.1:port", for the pool */
	char unix_address[160];	/* "unix:DIR/.s.PGSQL.port" */
	const char *const *conf;
};

/*
 * Whether servers can be started here; when not, @why (if not NULL) gets
 * the reason, for cr_skip_test(): not root, no postgres binaries, no
 * postgres user.
 */
bool pgsrv_available(char *why, size_t len);

/*
 * Starts a server (template made first if needed) on a free port and waits
 * up to 20 s for it to answer. @opts may be NULL. Returns 0 or -errno
 * (-ENOENT: no binaries; -EPERM: not root).
 */
int pgsrv_start(struct pgsrv *s, const struct pgsrv_opts *opts);

/*
 * Sends @sig (SIGINT: fast shutdown) to the postmaster and waits for it to
 * exit (SIGKILL after 10 s). Every backend has exited when it returns.
 * Returns 0 or -errno.
 */
int pgsrv_stop(struct pgsrv *s, int sig);

/* Starts a stopped server again on the same port and waits for it. */
int pgsrv_start_again(struct pgsrv *s);

/*
 * Restart: fast (SIGINT, like pg_ctl restart -m fast) or smart (SIGTERM,
 * waits for the clients to leave), then start again on the same port.
 */
int pgsrv_restart(struct pgsrv *s, bool fast);

/* Stops the server (if running) and removes its directory. */
void pgsrv_destroy(struct pgsrv *s);

/*
 * Runs @sql as the superuser "postgres" in database @db (NULL: PGSRV_DB)
 * over the server's unix socket. If @out is not NULL, the first column of
 * the first row (or "" without one) is copied there. Returns 0, -EIO when
 * the query fails (its message in @out if given), -ECONNREFUSED when it
 * cannot connect.
 */
int pgsrv_sql(const struct pgsrv *s, const char *db, const char *sql,
	      char *out, size_t outlen);

/* pgsrv_sql() returning the first value as a number, or LLONG_MIN. */
long long pgsrv_sql_ll(const struct pgsrv *s, const char *db,
		       const char *sql);

#endif /* CPOOL_TESTS_PGSRV_H */
