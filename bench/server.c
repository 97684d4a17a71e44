/* SPDX-License-Identifier: MIT */
/*
 * The upstream every pool talks to, in a child process so that its CPU is
 * not the client's: a real memcached on a free loopback port when
 * /usr/bin/memcached (or one on PATH) exists, else the bench's own echo
 * server (echo_server.c), which answers the bench's get with the same miss.
 *
 * Children die with the bench: they are killed by PID at bench_server_stop(),
 * at exit(), on SIGINT/SIGTERM/SIGHUP, and by PR_SET_PDEATHSIG if the bench
 * is killed outright.
 */
#include "bench.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_CHILDREN 8

static volatile pid_t children[MAX_CHILDREN];
static bool cleanup_installed;

static void
kill_children(void)
{
	unsigned i;

	for (i = 0; i < MAX_CHILDREN; i++)
		if (children[i] > 0)
			kill(children[i], SIGKILL);
}

static void
on_signal(int sig)
{
	kill_children();
	signal(sig, SIG_DFL);
	raise(sig);
}

static void
install_cleanup(void)
{
	if (cleanup_installed)
		return;
	cleanup_installed = true;
	atexit(kill_children);
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	signal(SIGHUP, on_signal);
	signal(SIGPIPE, on_signal);
}

static void
remember(pid_t pid)
{
	unsigned i;

	for (i = 0; i < MAX_CHILDREN; i++)
		if (children[i] <= 0) {
			children[i] = pid;
			return;
		}
}

static void
forget(pid_t pid)
{
	unsigned i;

	for (i = 0; i < MAX_CHILDREN; i++)
		if (children[i] == pid)
			children[i] = 0;
}

static const char *
find_memcached(void)
{
	static char path[256];
	const char *p, *env = getenv("PATH");
	size_t len;

	if (access("/usr/bin/memcached", X_OK) == 0)
		return "/usr/bin/memcached";
	for (p = env; p && *p; p += len + (p[len] == ':')) {
		len = strcspn(p, ":");
		snprintf(path, sizeof(path), "%.*s/memcached", (int)len, p);
		if (access(path, X_OK) == 0)
			return path;
		if (!p[len])
			break;
	}
	return NULL;
}

/* In the child: die with the parent, pin, quiet stdout. */
static void
child_setup(pid_t parent, int cpu)
{
	int fd;

	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != parent)
		_exit(1);
	if (cpu >= 0)
		bench_pin_self(cpu);
	fd = open("/dev/null", O_WRONLY);
	if (fd >= 0) {
		dup2(fd, STDOUT_FILENO);
		close(fd);
	}
	signal(SIGINT, SIG_DFL);
	signal(SIGTERM, SIG_DFL);
	signal(SIGHUP, SIG_DFL);
	signal(SIGPIPE, SIG_DFL);
}

/* Waits until 127.0.0.1:@port accepts, or the child dies, or 5 s pass. */
static int
wait_accepting(pid_t pid, uint16_t port)
{
	struct sockaddr_in sin = { .sin_family = AF_INET };
	struct timespec ts = { 0, 5 * 1000 * 1000 };
	int fd, i, status;

	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	sin.sin_port = htons(port);
	for (i = 0; i < 1000; i++) {
		if (waitpid(pid, &status, WNOHANG) == pid) {
			fprintf(stderr,
				"bench: the upstream exited at start "
				"(status %d)\n",
				status);
			return -ECHILD;
		}
		fd = bench_connect(&sin);
		if (fd >= 0) {
			close(fd);
			return 0;
		}
		nanosleep(&ts, NULL);
	}
	return -ETIMEDOUT;
}

/*
 * Starts the upstream. @kind is "memcached", "echo" or NULL (memcached when
 * installed, else echo); @cpu pins it (-1: no pinning); @maxconns is
 * memcached's -c and the file limit both get.
 */
int
bench_server_start(struct bench_server *s, const char *kind, int cpu,
		   unsigned maxconns)
{
	const char *mc = find_memcached();
	pid_t parent = getpid(), pid;
	char port_s[16], conns_s[16];
	uint16_t port = 0;
	struct rlimit rl;
	int err, lfd = -1;

	install_cleanup();
	memset(s, 0, sizeof(*s));
	/* memcached exits if it cannot get the file limit -c needs. */
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 &&
	    rl.rlim_max != RLIM_INFINITY && maxconns + 256 > rl.rlim_max &&
	    !bench_raise_nofile(maxconns + 256))
		getrlimit(RLIMIT_NOFILE, &rl);
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 &&
	    rl.rlim_max != RLIM_INFINITY && maxconns + 256 > rl.rlim_max)
		maxconns =
			rl.rlim_max > 512 ? (unsigned)rl.rlim_max - 256 : 256;
	if (kind && !strcmp(kind, "memcached") && !mc)
		bench_die("-s memcached: memcached is not installed");
	s->memcached = mc && !(kind && !strcmp(kind, "echo"));
	if (s->memcached) {
		err = bench_free_port(&port);
	} else {
		lfd = bench_listen(&port);
		err = lfd < 0 ? lfd : 0;
	}
	if (err)
		return err;
	bench_raise_nofile(maxconns + 256);
	fflush(NULL);
	pid = fork();
	if (pid == -1) {
		err = -errno;
		if (lfd >= 0)
			close(lfd);
		return err;
	}
	if (pid == 0) {
		child_setup(parent, cpu);
		if (!s->memcached)
			bench_echo_serve(lfd);
		rl.rlim_cur = maxconns + 256;
		if (rl.rlim_max < rl.rlim_cur)
			rl.rlim_max = rl.rlim_cur;
		setrlimit(RLIMIT_NOFILE, &rl);
		snprintf(port_s, sizeof(port_s), "%u", port);
		snprintf(conns_s, sizeof(conns_s), "%u", maxconns);
		/*
		 * As root memcached wants -u; any user but ours would change
		 * credentials, which clears PR_SET_PDEATHSIG.
		 */
		if (geteuid() == 0)
			execl(mc, "memcached", "-l", "127.0.0.1", "-p", port_s,
			      "-U", "0", "-t", "1", "-c", conns_s, "-b", "4096",
			      "-u", "root", (char *)NULL);
		else
			execl(mc, "memcached", "-l", "127.0.0.1", "-p", port_s,
			      "-U", "0", "-t", "1", "-c", conns_s, "-b", "4096",
			      (char *)NULL);
		fprintf(stderr, "bench: exec %s: %s\n", mc, strerror(errno));
		_exit(127);
	}
	remember(pid);
	if (lfd >= 0)
		close(lfd);
	s->pid = pid;
	s->port = port;
	err = wait_accepting(pid, port);
	if (err) {
		bench_server_stop(s);
		return err;
	}
	return 0;
}

/*
 * Starts the echo server on the caller's listening socket @lfd (its port
 * @port, reachable at 127.0.0.1), which it takes over: the parent's copy is
 * closed. The child inherits the caller's file limit. @cpu as above.
 */
int
bench_echo_start(struct bench_server *s, int lfd, uint16_t port, int cpu)
{
	pid_t parent = getpid(), pid;
	int err;

	install_cleanup();
	memset(s, 0, sizeof(*s));
	fflush(NULL);
	pid = fork();
	if (pid == -1) {
		err = -errno;
		close(lfd);
		return err;
	}
	if (pid == 0) {
		child_setup(parent, cpu);
		bench_echo_serve(lfd);
	}
	remember(pid);
	close(lfd);
	s->pid = pid;
	s->port = port;
	err = wait_accepting(pid, port);
	if (err) {
		bench_server_stop(s);
		return err;
	}
	return 0;
}

void
bench_server_stop(struct bench_server *s)
{
	if (s->pid <= 0)
		return;
	kill(s->pid, SIGTERM);
	waitpid(s->pid, NULL, 0);
	forget(s->pid);
	s->pid = 0;
}

void
bench_env_init(struct bench_env *env, const struct bench_server *s,
	       enum bench_mode mode)
{
	memset(env, 0, sizeof(*env));
	env->sin.sin_family = AF_INET;
	env->sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	env->sin.sin_port = htons(s->port);
	snprintf(env->addr, sizeof(env->addr), "127.0.0.1:%u", s->port);
	env->mode = mode;
	env->acquire_timeout_ms = 1000;
}
