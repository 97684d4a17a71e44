/* SPDX-License-Identifier: MIT */
#include "realsrv.h"
#include "net.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define READY_MS 10000	/* a server must answer this soon after exec */
#define EXIT_MS 10000	/* ... and exit this soon after SIGTERM */
#define START_TRIES 20	/* ports tried before giving up */
#define REG_MAX 32

/* Children running now, for realsrv_kill_all(); 0 = free slot. */
static pid_t registry[REG_MAX];
static pthread_once_t atexit_once = PTHREAD_ONCE_INIT;

void
realsrv_kill_all(void)
{
	for (int i = 0; i < REG_MAX; i++) {
		pid_t pid = __atomic_exchange_n(&registry[i], 0,
						__ATOMIC_SEQ_CST);

		if (pid > 0) {
			kill(pid, SIGKILL);
			while (waitpid(pid, NULL, 0) == -1 && errno == EINTR)
				;
		}
	}
}

static void
register_atexit(void)
{
	atexit(realsrv_kill_all);
}

static void
reg_add(pid_t pid)
{
	pthread_once(&atexit_once, register_atexit);
	for (int i = 0; i < REG_MAX; i++) {
		pid_t zero = 0;

		if (__atomic_compare_exchange_n(&registry[i], &zero, pid, false,
						__ATOMIC_SEQ_CST,
						__ATOMIC_SEQ_CST))
			return;
	}
}

static void
reg_del(pid_t pid)
{
	for (int i = 0; i < REG_MAX; i++) {
		pid_t want = pid;

		if (__atomic_compare_exchange_n(&registry[i], &want, 0, false,
						__ATOMIC_SEQ_CST,
						__ATOMIC_SEQ_CST))
			return;
	}
}

const char *
realsrv_name(enum realsrv_kind kind)
{
	return kind == REALSRV_REDIS ? "redis-server" : "memcached";
}

/* The binary's full path in @buf, or false if PATH has none. */
static bool
find_binary(enum realsrv_kind kind, char *buf, size_t len)
{
	const char *path = getenv("PATH");
	const char *p;

	if (!path || !*path)
		path = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin";
	for (p = path; *p;) {
		size_t n = strcspn(p, ":");

		if (n > 0 && snprintf(buf, len, "%.*s/%s", (int)n, p,
				      realsrv_name(kind)) < (int)len &&
		    access(buf, X_OK) == 0)
			return true;
		p += n;
		if (*p == ':')
			p++;
	}
	return false;
}

bool
realsrv_available(enum realsrv_kind kind)
{
	char buf[512];

	return find_binary(kind, buf, sizeof(buf));
}

/* xorshift64*, seeded per thread from the clock and the thread's stack. */
static uint64_t
rnd(void)
{
	static __thread uint64_t s;
	struct timespec ts;

	if (!s) {
		clock_gettime(CLOCK_MONOTONIC, &ts);
		s = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)getpid() ^
		    (uint64_t)(uintptr_t)&ts;
		s |= 1;
	}
	s ^= s >> 12;
	s ^= s << 25;
	s ^= s >> 27;
	return s * 2685821657736338717ull;
}

static struct sockaddr_in
loopback(int port)
{
	struct sockaddr_in sin;

	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	sin.sin_port = htons((uint16_t)port);
	return sin;
}

/* A random port below the ephemeral range that 127.0.0.1 can bind now. */
static int
pick_port(void)
{
	int lo = 32768, hi = 60999;
	FILE *f = fopen("/proc/sys/net/ipv4/ip_local_port_range", "re");

	if (f) {
		if (fscanf(f, "%d %d", &lo, &hi) != 2)
			lo = 32768;
		fclose(f);
	}
	if (lo <= 2048)
		lo = 32768; /* odd setup: fall back to a fixed window */
	for (int i = 0; i < 1000; i++) {
		int base = lo - 15000 > 1024 ? lo - 15000 : 1024;
		int port = base + (int)(rnd() % (uint64_t)(lo - base));
		struct sockaddr_in sin = loopback(port);
		int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		int ok;

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

/*
 * Forks and execs the server on @port. The child keeps no fd of ours
 * (close_range: a pooled socket inherited by a server would never see its
 * FIN) and dies with the thread that forked it.
 */
static pid_t
spawn(enum realsrv_kind kind, int port)
{
	char bin[512], portstr[16];
	const char *argv[24];
	pid_t parent = getpid(), pid;
	int n = 0;

	if (!find_binary(kind, bin, sizeof(bin)))
		return -ENOENT;
	snprintf(portstr, sizeof(portstr), "%d", port);
	argv[n++] = realsrv_name(kind);
	if (kind == REALSRV_REDIS) {
		const char *args[] = { "--port", portstr, "--bind", "127.0.0.1",
				       "--save", "", "--appendonly", "no",
				       "--daemonize", "no", "--loglevel",
				       "warning", "--dir", "/tmp" };

		for (size_t i = 0; i < sizeof(args) / sizeof(args[0]); i++)
			argv[n++] = args[i];
	} else {
		const char *args[] = { "-l", "127.0.0.1", "-p", portstr,
				       "-U", "0", "-t", "2" };

		for (size_t i = 0; i < sizeof(args) / sizeof(args[0]); i++)
			argv[n++] = args[i];
		if (geteuid() == 0) {
			argv[n++] = "-u";
			argv[n++] = "root";
		}
	}
	argv[n] = NULL;

	pid = fork();
	if (pid == -1)
		return -errno;
	if (pid == 0) {
		int devnull;
		sigset_t none;

		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(127);
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		devnull = open("/dev/null", O_RDWR);
		if (devnull != -1) {
			dup2(devnull, 0);
			dup2(devnull, 1);
			dup2(devnull, 2);
		}
		syscall(SYS_close_range, 3u, ~0u, 0u);
		execv(bin, (char *const *)argv);
		_exit(127);
	}
	reg_add(pid);
	return pid;
}

/*
 * Asks whatever listens on @port for its pid. Returns the pid, 0 if it
 * answered without one, -errno if nothing answered.
 */
static long
ask_pid(enum realsrv_kind kind, int port)
{
	const char *cmd = kind == REALSRV_REDIS ? "INFO server\r\n"
						: "stats\r\n";
	const char *key = kind == REALSRV_REDIS ? "process_id:" : "STAT pid ";
	struct sockaddr_in sin = loopback(port);
	struct timeval tv = { .tv_sec = 1 };
	char buf[8192];
	size_t got = 0;
	long pid = 0;
	int fd, err = 0;

	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd == -1)
		return -errno;
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (connect(fd, (struct sockaddr *)&sin, sizeof(sin)) == -1 ||
	    send(fd, cmd, strlen(cmd), MSG_NOSIGNAL) != (ssize_t)strlen(cmd)) {
		err = -errno;
		goto out;
	}
	while (got < sizeof(buf) - 1) {
		ssize_t n = recv(fd, buf + got, sizeof(buf) - 1 - got, 0);
		char *p, *end;

		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0) {
			err = n ? -errno : -ECONNRESET;
			break;
		}
		got += (size_t)n;
		buf[got] = '\0';
		p = strstr(buf, key);
		if (p && strstr(p, "\r\n")) {
			pid = strtol(p + strlen(key), &end, 10);
			break;
		}
	}
out:
	close(fd);
	return pid ? pid : err;
}

/*
 * Waits until the server answers with @s->pid. -EADDRINUSE if the child
 * exited first (it could not bind), -ETIMEDOUT after READY_MS.
 */
static int
wait_ready(struct realsrv *s)
{
	int64_t deadline = now_ms() + READY_MS;

	for (;;) {
		pid_t r = waitpid(s->pid, NULL, WNOHANG);

		if (r == s->pid) {
			reg_del(s->pid);
			s->pid = -1;
			return -EADDRINUSE;
		}
		if (ask_pid(s->kind, s->port) == (long)s->pid)
			return 0;
		if (now_ms() >= deadline)
			return -ETIMEDOUT;
		pause_ms(2); /* polling for the listener, with a deadline */
	}
}

/* Execs on s->port and waits for it; on failure nothing is left running. */
static int
launch(struct realsrv *s)
{
	pid_t pid = spawn(s->kind, s->port);
	int err;

	if (pid < 0)
		return (int)pid;
	s->pid = pid;
	err = wait_ready(s);
	if (err && s->pid > 0)
		realsrv_stop(s, SIGKILL);
	return err;
}

int
realsrv_start(struct realsrv *s, enum realsrv_kind kind)
{
	int err = -EADDRINUSE;

	memset(s, 0, sizeof(*s));
	s->kind = kind;
	s->pid = -1;
	if (!realsrv_available(kind))
		return -ENOENT;
	for (int i = 0; i < START_TRIES && err == -EADDRINUSE; i++) {
		s->port = pick_port();
		if (s->port < 0)
			return s->port;
		err = launch(s);
	}
	if (err)
		return err;
	snprintf(s->address, sizeof(s->address), "127.0.0.1:%d", s->port);
	return 0;
}

/* Waits up to @ms for the child to exit; true if it did (not reaped). */
static bool
wait_exit(pid_t pid, int ms)
{
	int pfd = (int)syscall(SYS_pidfd_open, pid, 0);
	int64_t deadline = now_ms() + ms;
	siginfo_t si;

	if (pfd >= 0) {
		struct pollfd p = { .fd = pfd, .events = POLLIN };
		int n;

		while ((n = poll(&p, 1, ms)) == -1 && errno == EINTR)
			;
		close(pfd);
		return n == 1;
	}
	for (;;) { /* no pidfd: poll the child's state */
		memset(&si, 0, sizeof(si));
		if (waitid(P_PID, (id_t)pid, &si,
			   WEXITED | WNOHANG | WNOWAIT) == 0 && si.si_pid == pid)
			return true;
		if (now_ms() >= deadline)
			return false;
		pause_ms(1);
	}
}

int
realsrv_stop(struct realsrv *s, int sig)
{
	pid_t pid = s->pid;

	if (pid <= 0)
		return 0;
	if (kill(pid, sig) == -1 && errno != ESRCH)
		return -errno;
	if (!wait_exit(pid, EXIT_MS))
		kill(pid, SIGKILL);
	while (waitpid(pid, NULL, 0) == -1 && errno == EINTR)
		;
	reg_del(pid);
	s->pid = -1;
	return 0;
}

int
realsrv_start_again(struct realsrv *s)
{
	int err = -EADDRINUSE;

	if (s->pid > 0)
		return -EBUSY;
	/* The port is ours and outside the ephemeral range: retry on it. */
	for (int i = 0; i < START_TRIES && err == -EADDRINUSE; i++)
		err = launch(s);
	return err;
}

int
realsrv_restart(struct realsrv *s, int sig)
{
	int err = realsrv_stop(s, sig);

	return err ? err : realsrv_start_again(s);
}
