/* SPDX-License-Identifier: MIT */
#include "netns.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

#define PEERS_MAX 16
#define PEER_CONNS_MAX 64

/* The registry netns_cleanup() undoes. */
static char ns_client[32], ns_server[32];
static bool ns_made;
static pid_t peers[PEERS_MAX];

/*
 * Runs `ip` with the space-separated words of @fmt (none of our arguments
 * holds a space), its stdout and stderr collected into @err. Returns 0 when
 * it exits 0, else -EIO (or the spawn error) with @err saying what failed.
 */
static int __attribute__((format(printf, 3, 4)))
run_ip(char *err, size_t errlen, const char *fmt, ...)
{
	char line[512], out[512], *argv[32], *save = NULL, *w;
	posix_spawn_file_actions_t fa;
	int argc = 0, pfd[2], rc, status;
	size_t got = 0;
	ssize_t n;
	va_list ap;
	pid_t pid;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	argv[argc++] = (char *)"ip";
	for (w = strtok_r(line, " ", &save); w && argc < 31;
	     w = strtok_r(NULL, " ", &save))
		argv[argc++] = w;
	argv[argc] = NULL;

	if (pipe2(pfd, O_CLOEXEC) == -1)
		return -errno;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, pfd[1], 1);
	posix_spawn_file_actions_adddup2(&fa, pfd[1], 2);
	rc = posix_spawnp(&pid, "ip", &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	close(pfd[1]);
	if (rc) {
		close(pfd[0]);
		if (err)
			snprintf(err, errlen, "spawn ip: %s", strerror(rc));
		return -rc;
	}
	while (got < sizeof(out) - 1) {
		n = read(pfd[0], out + got, sizeof(out) - 1 - got);
		if (n > 0)
			got += (size_t)n;
		else if (n == 0 || errno != EINTR)
			break;
	}
	out[got] = '\0';
	close(pfd[0]);
	while (waitpid(pid, &status, 0) == -1 && errno == EINTR)
		;
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return 0;
	if (err) {
		/* the words were split in place: rebuild the command */
		size_t off = 0;

		for (int i = 0; i < argc && off < errlen; i++)
			off += (size_t)snprintf(err + off, errlen - off, "%s%s",
						i ? " " : "", argv[i]);
		if (off < errlen)
			snprintf(err + off, errlen - off, ": status 0x%x: %s",
				 status, out);
	}
	return -EIO;
}

const char *
netns_unavailable(void)
{
	static char why[640];
	char err[512];

	if (geteuid() != 0)
		return "network namespace tests need root (geteuid() != 0)";
	if (run_ip(err, sizeof(err), "netns list")) {
		snprintf(why, sizeof(why), "`ip netns` is unavailable: %s",
			 err);
		return why;
	}
	return NULL;
}

/* Deletes namespaces a killed run of this suite left behind. */
static void
sweep_stale(void)
{
	DIR *d = opendir("/run/netns");
	struct dirent *de;
	char kind;
	int pid, len;

	if (!d)
		return;
	while ((de = readdir(d))) {
		len = 0;
		if (sscanf(de->d_name, "cpt%d%c%n", &pid, &kind, &len) != 2 ||
		    de->d_name[len] != '\0' || (kind != 'c' && kind != 's') ||
		    pid <= 0)
			continue;
		if (kill(pid, 0) == -1 && errno == ESRCH)
			run_ip(NULL, 0, "netns del %s", de->d_name);
	}
	closedir(d);
}

void
netns_cleanup(void)
{
	for (int i = 0; i < PEERS_MAX; i++)
		if (peers[i] > 0)
			peer_stop(peers[i]);
	if (!ns_made)
		return;
	ns_made = false;
	/* The veth pair goes with the namespaces. */
	run_ip(NULL, 0, "netns del %s", ns_server);
	run_ip(NULL, 0, "netns del %s", ns_client);
}

int
netns_setup(char *err, size_t errlen)
{
	int rc;

	sweep_stale();
	snprintf(ns_client, sizeof(ns_client), "cpt%dc", (int)getpid());
	snprintf(ns_server, sizeof(ns_server), "cpt%ds", (int)getpid());
	/* Leftovers of an earlier test process that had this pid. */
	run_ip(NULL, 0, "netns del %s", ns_client);
	run_ip(NULL, 0, "netns del %s", ns_server);
	ns_made = true;
	rc = run_ip(err, errlen, "netns add %s", ns_client);
	if (!rc)
		rc = run_ip(err, errlen, "netns add %s", ns_server);
	if (rc)
		return -EPERM; /* this host does not let us make namespaces */
	/* Made straight inside the namespaces: the host never sees them. */
	if (!rc)
		rc = run_ip(err, errlen,
			    "link add cpc0 netns %s type veth peer name cps0 "
			    "netns %s",
			    ns_client, ns_server);
	if (!rc)
		rc = run_ip(err, errlen, "-n %s addr add %s/30 dev cpc0",
			    ns_client, NETNS_CLIENT_IP);
	if (!rc)
		rc = run_ip(err, errlen, "-n %s addr add %s/30 dev cps0",
			    ns_server, NETNS_SERVER_IP);
	if (!rc)
		rc = run_ip(err, errlen, "-n %s link set lo up", ns_client);
	if (!rc)
		rc = run_ip(err, errlen, "-n %s link set lo up", ns_server);
	if (!rc)
		rc = run_ip(err, errlen, "-n %s link set cpc0 up", ns_client);
	if (!rc)
		rc = run_ip(err, errlen, "-n %s link set cps0 up", ns_server);
	return rc;
}

static int
ns_fd(const char *name)
{
	char path[64];

	snprintf(path, sizeof(path), "/run/netns/%s", name);
	return open(path, O_RDONLY | O_CLOEXEC);
}

int
netns_enter_client(void)
{
	int fd = ns_fd(ns_client), err = 0;

	if (fd == -1)
		return -errno;
	if (setns(fd, CLONE_NEWNET) == -1)
		err = -errno;
	close(fd);
	return err;
}

int
netns_server_link(bool up, char *err, size_t errlen)
{
	return run_ip(err, errlen, "-n %s link set cps0 %s", ns_server,
		      up ? "up" : "down");
}

/* Child only: async-signal-safe calls from here on. */
static void __attribute__((noreturn))
peer_main(int lfd, enum peer_mode mode)
{
	struct pollfd pfd[PEER_CONNS_MAX + 1];
	char buf[16384];
	nfds_t n = 1;

	pfd[0] = (struct pollfd){ .fd = lfd, .events = POLLIN };
	for (;;) {
		if (poll(pfd, n, -1) == -1) {
			if (errno == EINTR)
				continue;
			_exit(2);
		}
		for (nfds_t i = 1; i < n; i++) {
			ssize_t got;

			if (!pfd[i].revents)
				continue;
			got = recv(pfd[i].fd, buf, sizeof(buf), MSG_DONTWAIT);
			if (got > 0) {
				if (mode == PEER_ECHO)
					send(pfd[i].fd, buf, (size_t)got,
					     MSG_NOSIGNAL);
			} else if (got == 0 ||
				   (errno != EAGAIN && errno != EINTR)) {
				close(pfd[i].fd);
				pfd[i] = pfd[--n];
				i--;
			}
		}
		if (pfd[0].revents & POLLIN) {
			int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);

			if (fd >= 0 && n <= PEER_CONNS_MAX)
				pfd[n++] = (struct pollfd){ .fd = fd,
							    .events = POLLIN };
			else if (fd >= 0)
				close(fd);
		}
	}
}

pid_t
peer_start(bool in_server_ns, const char *ip, int port, enum peer_mode mode,
	   int *port_out)
{
	struct sockaddr_in sin = { .sin_family = AF_INET };
	socklen_t len = sizeof(sin);
	int pfd[2], nsfd = -1, lfd, slot = -1, got_port = -1, status;
	pid_t parent = getpid(), pid;
	ssize_t n;

	for (int i = 0; i < PEERS_MAX && slot < 0; i++)
		if (peers[i] <= 0)
			slot = i;
	if (slot < 0)
		return -ENOSPC;
	if (inet_pton(AF_INET, ip, &sin.sin_addr) != 1)
		return -EINVAL;
	sin.sin_port = htons((uint16_t)port);
	if (in_server_ns) {
		nsfd = ns_fd(ns_server);
		if (nsfd == -1)
			return -errno;
	}
	if (pipe2(pfd, O_CLOEXEC) == -1) {
		int err = -errno;

		if (nsfd >= 0)
			close(nsfd);
		return err;
	}
	pid = fork();
	if (pid == -1) {
		int err = -errno;

		close(pfd[0]);
		close(pfd[1]);
		if (nsfd >= 0)
			close(nsfd);
		return err;
	}
	if (pid == 0) {
		/* Dies with the test process, however that ends. */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(1);
		close(pfd[0]);
		if (nsfd >= 0 && setns(nsfd, CLONE_NEWNET) == -1)
			_exit(1);
		lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (lfd == -1 ||
		    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &(int){ 1 },
			       sizeof(int)) == -1 ||
		    bind(lfd, (struct sockaddr *)&sin, sizeof(sin)) == -1 ||
		    listen(lfd, 128) == -1 ||
		    getsockname(lfd, (struct sockaddr *)&sin, &len) == -1)
			_exit(1);
		got_port = ntohs(sin.sin_port);
		if (write(pfd[1], &got_port, sizeof(got_port)) !=
		    sizeof(got_port))
			_exit(1);
		close(pfd[1]);
		peer_main(lfd, mode);
	}
	peers[slot] = pid;
	close(pfd[1]);
	if (nsfd >= 0)
		close(nsfd);
	do
		n = read(pfd[0], &got_port, sizeof(got_port));
	while (n == -1 && errno == EINTR);
	close(pfd[0]);
	if (n != sizeof(got_port)) {
		/* it failed before listening: reap it, say so */
		while (waitpid(pid, &status, 0) == -1 && errno == EINTR)
			;
		peers[slot] = 0;
		return -EIO;
	}
	if (port_out)
		*port_out = got_port;
	return pid;
}

void
peer_stop(pid_t pid)
{
	bool ours = false;
	int status;

	/* Only a child of ours that is not reaped yet: never a reused pid. */
	for (int i = 0; pid > 0 && i < PEERS_MAX; i++) {
		if (peers[i] == pid) {
			peers[i] = 0;
			ours = true;
		}
	}
	if (!ours)
		return;
	kill(pid, SIGKILL);
	while (waitpid(pid, &status, 0) == -1 && errno == EINTR)
		;
}
