/* SPDX-License-Identifier: MIT */
/*
 * pgsrv: throwaway PostgreSQL servers (see pgsrv.h). Self-contained (libc
 * and libpq only) so that the bench can build it in too.
 */
#include "pgsrv.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <glob.h>
#include <grp.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <time.h>
#include <unistd.h>

#define READY_MS 20000	/* a server must answer this soon after exec */
#define EXIT_MS 10000	/* ... and exit this soon after the signal */
#define START_TRIES 10	/* ports tried before giving up */
#define REG_MAX 16
#define PW_SECRET "cpool-pgsrv-nobody-knows-this"

/* Servers of this process, for the atexit cleanup. */
static struct {
	pid_t pid;	/* 0: none running */
	char dir[128];	/* "": slot free */
} reg[REG_MAX];
static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t atexit_once = PTHREAD_ONCE_INIT;

static int64_t
mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void
nap_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
		;
}

static int
rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)ftw;
	if (flag == FTW_DP)
		rmdir(path);
	else
		unlink(path);
	return 0;
}

static void
rm_rf(const char *dir)
{
	if (dir[0])
		nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static void
reap(pid_t pid)
{
	while (waitpid(pid, NULL, 0) == -1 && errno == EINTR)
		;
}

static void
cleanup_all(void)
{
	for (int i = 0; i < REG_MAX; i++) {
		if (reg[i].pid > 0) {
			kill(reg[i].pid, SIGKILL);
			reap(reg[i].pid);
			reg[i].pid = 0;
		}
		if (reg[i].dir[0]) {
			rm_rf(reg[i].dir);
			reg[i].dir[0] = '\0';
		}
	}
}

static void
register_atexit(void)
{
	atexit(cleanup_all);
}

/* The registry slot of @dir (taken if new), or -1 when full. */
static int
reg_slot(const char *dir, pid_t pid)
{
	int i, free_slot = -1;

	pthread_once(&atexit_once, register_atexit);
	pthread_mutex_lock(&reg_lock);
	for (i = 0; i < REG_MAX; i++) {
		if (!strcmp(reg[i].dir, dir))
			break;
		if (!reg[i].dir[0] && free_slot < 0)
			free_slot = i;
	}
	if (i == REG_MAX)
		i = free_slot;
	if (i >= 0) {
		snprintf(reg[i].dir, sizeof(reg[i].dir), "%s", dir);
		reg[i].pid = pid;
	}
	pthread_mutex_unlock(&reg_lock);
	return i;
}

static void
reg_forget(const char *dir)
{
	pthread_mutex_lock(&reg_lock);
	for (int i = 0; i < REG_MAX; i++)
		if (!strcmp(reg[i].dir, dir)) {
			reg[i].dir[0] = '\0';
			reg[i].pid = 0;
		}
	pthread_mutex_unlock(&reg_lock);
}

/* /usr/lib/postgresql/<major>/bin of the newest installed major. */
static bool
find_bindir(char *buf, size_t len, int *major)
{
	glob_t g;
	bool ok = false;

	if (glob("/usr/lib/postgresql/*/bin/postgres", 0, NULL, &g))
		return false;
	for (size_t i = 0; i < g.gl_pathc; i++) {
		int m = atoi(g.gl_pathv[i] + strlen("/usr/lib/postgresql/"));
		char *slash;

		if (ok && m <= *major)
			continue;
		if (access(g.gl_pathv[i], X_OK))
			continue;
		*major = m;
		snprintf(buf, len, "%s", g.gl_pathv[i]);
		slash = strrchr(buf, '/');
		*slash = '\0';
		ok = true;
	}
	globfree(&g);
	return ok;
}

bool
pgsrv_available(char *why, size_t len)
{
	char bin[256];
	int major;
	const char *reason = NULL;

	if (geteuid() != 0)
		reason = "not root: PostgreSQL is started as the postgres user";
	else if (!find_bindir(bin, sizeof(bin), &major))
		reason = "no /usr/lib/postgresql/*/bin/postgres";
	else if (!getpwnam("postgres"))
		reason = "no postgres user";
	if (reason && why)
		snprintf(why, len, "%s", reason);
	return !reason;
}

/*
 * Runs @argv as the postgres user, stdio to @log (or /dev/null), cwd /.
 * With @wait, waits and returns 0 for exit 0 or -EIO; else returns the pid.
 */
static pid_t
run_as_postgres(const char *const *argv, const char *log, bool wait)
{
	struct passwd *pw = getpwnam("postgres");
	pid_t parent = getpid(), pid;
	int status;

	if (!pw)
		return -ENOENT;
	pid = fork();
	if (pid == -1)
		return -errno;
	if (pid == 0) {
		sigset_t none;
		int fd;

		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(127);
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		if (setgroups(0, NULL) || setgid(pw->pw_gid) ||
		    setuid(pw->pw_uid) || chdir("/"))
			_exit(126);
		fd = open(log ? log : "/dev/null",
			  log ? O_WRONLY | O_CREAT | O_APPEND : O_RDWR, 0600);
		if (fd != -1) {
			int nul = open("/dev/null", O_RDONLY);

			if (nul != -1)
				dup2(nul, 0);
			dup2(fd, 1);
			dup2(fd, 2);
		}
		syscall(SYS_close_range, 3u, ~0u, 0u);
		execv(argv[0], (char *const *)argv);
		_exit(127);
	}
	if (!wait)
		return pid;
	while (waitpid(pid, &status, 0) == -1)
		if (errno != EINTR)
			return -errno;
	return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -EIO;
}

static int
chown_postgres(const char *path)
{
	struct passwd *pw = getpwnam("postgres");

	if (!pw)
		return -ENOENT;
	return chown(path, pw->pw_uid, pw->pw_gid) ? -errno : 0;
}

/* libpq ping over the unix socket in @dir: whether the server answers. */
static PGPing
ping(const char *dir, int port)
{
	char portstr[16];
	const char *kw[] = { "host", "port", "dbname", "user",
			     "connect_timeout", NULL };
	const char *val[] = { dir, portstr, "postgres", "postgres", "2",
			      NULL };

	snprintf(portstr, sizeof(portstr), "%d", port);
	return PQpingParams(kw, val, 0);
}

static void
drop_notice(void *arg, const char *msg)
{
	(void)arg;
	(void)msg;
}

static int
sql_at(const char *dir, int port, const char *db, const char *sql,
       char *out, size_t outlen)
{
	char portstr[16];
	const char *kw[] = { "host", "port", "dbname", "user",
			     "connect_timeout", NULL };
	const char *val[] = { dir, portstr, db, "postgres", "5", NULL };
	PGconn *conn;
	PGresult *res;
	int err = 0;

	snprintf(portstr, sizeof(portstr), "%d", port);
	conn = PQconnectdbParams(kw, val, 0);
	if (!conn)
		return -ENOMEM;
	PQsetNoticeProcessor(conn, drop_notice, NULL);
	if (PQstatus(conn) != CONNECTION_OK) {
		if (out)
			snprintf(out, outlen, "%s", PQerrorMessage(conn));
		PQfinish(conn);
		return -ECONNREFUSED;
	}
	res = PQexec(conn, sql);
	if (PQresultStatus(res) != PGRES_TUPLES_OK &&
	    PQresultStatus(res) != PGRES_COMMAND_OK) {
		err = -EIO;
		if (out)
			snprintf(out, outlen, "%s", PQerrorMessage(conn));
	} else if (out) {
		snprintf(out, outlen, "%s",
			 PQntuples(res) > 0 && PQnfields(res) > 0
				 ? PQgetvalue(res, 0, 0)
				 : "");
	}
	PQclear(res);
	PQfinish(conn);
	return err;
}

/* Waits for the postmaster @pid to answer; -EADDRINUSE if it exited. */
static int
wait_ready(const char *dir, int port, pid_t pid, int64_t ms)
{
	int64_t deadline = mono_ms() + ms;

	for (;;) {
		if (waitpid(pid, NULL, WNOHANG) == pid)
			return -EADDRINUSE;
		if (ping(dir, port) == PQPING_OK)
			return 0;
		if (mono_ms() >= deadline)
			return -ETIMEDOUT;
		nap_ms(5); /* polling for the listener, with a deadline */
	}
}

static int
stop_pid(pid_t pid, int sig)
{
	int64_t deadline = mono_ms() + EXIT_MS;

	if (kill(pid, sig) == -1)
		return -errno;
	for (;;) {
		pid_t r = waitpid(pid, NULL, WNOHANG);

		if (r == pid || (r == -1 && errno == ECHILD))
			return 0;
		if (mono_ms() >= deadline) {
			kill(pid, SIGKILL);
			reap(pid);
			return -ETIMEDOUT;
		}
		nap_ms(2); /* waiting for the exit, with a deadline */
	}
}

static pid_t
spawn_postmaster(const char *bindir, const char *datadir, const char *sockdir,
		 int port, bool tcp, const char *const *conf)
{
	char bin[300], portstr[16], log[300];
	const char *argv[64];
	int n = 0;

	snprintf(bin, sizeof(bin), "%s/postgres", bindir);
	snprintf(portstr, sizeof(portstr), "%d", port);
	snprintf(log, sizeof(log), "%s/server.log", sockdir);
	argv[n++] = bin;
	argv[n++] = "-D";
	argv[n++] = datadir;
	argv[n++] = "-p";
	argv[n++] = portstr;
	argv[n++] = "-k";
	argv[n++] = sockdir;
	argv[n++] = "-c";
	argv[n++] = tcp ? "listen_addresses=127.0.0.1" : "listen_addresses=";
	argv[n++] = "-c";
	argv[n++] = "fsync=off";
	argv[n++] = "-c";
	argv[n++] = "synchronous_commit=off";
	argv[n++] = "-c";
	argv[n++] = "full_page_writes=off";
	argv[n++] = "-c";
	argv[n++] = "shared_buffers=16MB";
	for (size_t i = 0; conf && conf[i] && n < 60; i++) {
		argv[n++] = "-c";
		argv[n++] = conf[i];
	}
	argv[n] = NULL;
	return run_as_postgres(argv, log, false);
}

/*
 * The template cluster: initdb, the roles and the database, hba with a
 * password for PGSRV_PW_USER. Built in a temporary directory and renamed
 * into place, so concurrent builders never see half of one.
 */
static int
make_template(const char *bindir, const char *tmpl)
{
	char dir[] = "/tmp/cpool-pgsrv-build.XXXXXX";
	char data[64], initdb[300], hba[128], buf[8192];
	const char *argv[16];
	struct stat st;
	FILE *f;
	size_t got;
	pid_t pid;
	int err;

	snprintf(buf, sizeof(buf), "%s/PG_VERSION", tmpl);
	if (stat(buf, &st) == 0)
		return 0;
	if (!mkdtemp(dir))
		return -errno;
	err = chown_postgres(dir);
	if (err)
		goto out;
	snprintf(data, sizeof(data), "%s/data", dir);
	snprintf(initdb, sizeof(initdb), "%s/initdb", bindir);
	argv[0] = initdb;
	argv[1] = "-D";
	argv[2] = data;
	argv[3] = "-U";
	argv[4] = "postgres";
	argv[5] = "-A";
	argv[6] = "trust";
	argv[7] = "-E";
	argv[8] = "UTF8";
	argv[9] = "--locale=C";
	argv[10] = "--no-sync";
	argv[11] = NULL;
	err = (int)run_as_postgres(argv, NULL, true);
	if (err)
		goto out;
	/* The password role first: hba takes the first matching line. */
	snprintf(hba, sizeof(hba), "%s/pg_hba.conf", data);
	f = fopen(hba, "re");
	if (!f) {
		err = -errno;
		goto out;
	}
	got = fread(buf, 1, sizeof(buf) - 1, f);
	buf[got] = '\0';
	fclose(f);
	f = fopen(hba, "we");
	if (!f) {
		err = -errno;
		goto out;
	}
	fprintf(f, "local all " PGSRV_PW_USER " scram-sha-256\n"
		   "host all " PGSRV_PW_USER " 127.0.0.1/32 scram-sha-256\n%s",
		buf);
	fclose(f);
	pid = spawn_postmaster(bindir, data, dir, 5432, false, NULL);
	if (pid < 0) {
		err = (int)pid;
		goto out;
	}
	err = wait_ready(dir, 5432, pid, READY_MS);
	if (!err)
		err = sql_at(dir, 5432, "postgres",
			     "CREATE ROLE " PGSRV_USER " LOGIN;"
			     "CREATE ROLE " PGSRV_PW_USER
			     " LOGIN PASSWORD '" PW_SECRET "'",
			     NULL, 0);
	if (!err)
		err = sql_at(dir, 5432, "postgres",
			     "CREATE DATABASE " PGSRV_DB " OWNER " PGSRV_USER,
			     NULL, 0);
	stop_pid(pid, SIGINT);
	if (err)
		goto out;
	snprintf(buf, sizeof(buf), "%s/server.log", dir);
	unlink(buf);
	if (rename(data, tmpl) == 0)
		data[0] = '\0';
	else if (errno != EEXIST && errno != ENOTEMPTY)
		err = -errno; /* else another process made it first */
out:
	rm_rf(dir);
	return err;
}

/* A random port below the ephemeral range that 127.0.0.1 can bind now. */
static int
pick_port(void)
{
	int lo = 32768, hi = 60999;
	FILE *f = fopen("/proc/sys/net/ipv4/ip_local_port_range", "re");
	struct timespec ts;
	uint64_t s;

	if (f) {
		if (fscanf(f, "%d %d", &lo, &hi) != 2)
			lo = 32768;
		fclose(f);
	}
	if (lo <= 2048)
		lo = 32768;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	s = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)getpid() ^
	    (uint64_t)(uintptr_t)&ts;
	for (int i = 0; i < 1000; i++) {
		int base = lo - 15000 > 1024 ? lo - 15000 : 1024;
		int port, fd, ok;
		struct sockaddr_in sin;

		s ^= s << 13;
		s ^= s >> 7;
		s ^= s << 17;
		port = base + (int)(s % (uint64_t)(lo - base));
		memset(&sin, 0, sizeof(sin));
		sin.sin_family = AF_INET;
		sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		sin.sin_port = htons((uint16_t)port);
		fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd == -1)
			return -errno;
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &(int){ 1 },
			   sizeof(int));
		ok = bind(fd, (struct sockaddr *)&sin, sizeof(sin)) == 0;
		close(fd);
		if (ok)
			return port;
	}
	return -EADDRINUSE;
}

static int
launch(struct pgsrv *s)
{
	char bindir[256];
	int major, err;
	pid_t pid;

	if (!find_bindir(bindir, sizeof(bindir), &major))
		return -ENOENT;
	pid = spawn_postmaster(bindir, s->dir, s->dir, s->port, true, s->conf);
	if (pid < 0)
		return (int)pid;
	s->pid = pid;
	reg_slot(s->dir, pid);
	err = wait_ready(s->dir, s->port, pid, READY_MS);
	if (err) {
		if (err != -EADDRINUSE)
			stop_pid(pid, SIGKILL);
		s->pid = -1;
		reg_slot(s->dir, 0);
	}
	return err;
}

int
pgsrv_start(struct pgsrv *s, const struct pgsrv_opts *opts)
{
	char bindir[256], tmpl[64], cmd[512];
	char dir[] = "/tmp/cpool-pg.XXXXXX";
	int major, err = -EADDRINUSE;

	memset(s, 0, sizeof(*s));
	s->pid = -1;
	if (geteuid() != 0)
		return -EPERM;
	if (!find_bindir(bindir, sizeof(bindir), &major))
		return -ENOENT;
	snprintf(tmpl, sizeof(tmpl), "/tmp/cpool-pgsrv-template-%d-v1", major);
	err = make_template(bindir, tmpl);
	if (err)
		return err;
	if (!mkdtemp(dir))
		return -errno;
	snprintf(s->dir, sizeof(s->dir), "%s", dir);
	reg_slot(s->dir, 0);
	s->conf = opts ? opts->conf : NULL;
	/* cp -a keeps the postgres ownership and the 0700 modes. */
	snprintf(cmd, sizeof(cmd), "cp -a %s/. %s/", tmpl, s->dir);
	if (system(cmd) != 0 || chown_postgres(s->dir) ||
	    chmod(s->dir, 0700)) {
		err = -EIO;
		goto fail;
	}
	for (int i = 0; i < START_TRIES; i++) {
		s->port = pick_port();
		if (s->port < 0) {
			err = s->port;
			goto fail;
		}
		err = launch(s);
		if (err != -EADDRINUSE)
			break;
	}
	if (err)
		goto fail;
	snprintf(s->address, sizeof(s->address), "127.0.0.1:%d", s->port);
	snprintf(s->unix_address, sizeof(s->unix_address),
		 "unix:%s/.s.PGSQL.%d", s->dir, s->port);
	return 0;
fail:
	reg_forget(s->dir);
	rm_rf(s->dir);
	s->dir[0] = '\0';
	return err;
}

int
pgsrv_stop(struct pgsrv *s, int sig)
{
	int err;

	if (s->pid <= 0)
		return 0;
	err = stop_pid(s->pid, sig);
	s->pid = -1;
	reg_slot(s->dir, 0);
	return err;
}

int
pgsrv_start_again(struct pgsrv *s)
{
	if (s->pid > 0)
		return -EBUSY;
	return launch(s);
}

int
pgsrv_restart(struct pgsrv *s, bool fast)
{
	int err = pgsrv_stop(s, fast ? SIGINT : SIGTERM);

	return err ? err : pgsrv_start_again(s);
}

void
pgsrv_destroy(struct pgsrv *s)
{
	if (!s->dir[0])
		return;
	pgsrv_stop(s, SIGINT);
	reg_forget(s->dir);
	rm_rf(s->dir);
	s->dir[0] = '\0';
}

int
pgsrv_sql(const struct pgsrv *s, const char *db, const char *sql, char *out,
	  size_t outlen)
{
	return sql_at(s->dir, s->port, db ? db : PGSRV_DB, sql, out, outlen);
}

long long
pgsrv_sql_ll(const struct pgsrv *s, const char *db, const char *sql)
{
	char buf[256], *end;
	long long v;

	if (pgsrv_sql(s, db, sql, buf, sizeof(buf)) || !buf[0])
		return LLONG_MIN;
	v = strtoll(buf, &end, 10);
	return *end ? LLONG_MIN : v;
}
