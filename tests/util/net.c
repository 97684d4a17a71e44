/* SPDX-License-Identifier: MIT */
#include "net.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/sockios.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static socklen_t
loopback_addr(int family, struct sockaddr_storage *ss, int port)
{
	memset(ss, 0, sizeof(*ss));
	if (family == AF_INET6) {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;

		sin6->sin6_family = AF_INET6;
		sin6->sin6_addr = in6addr_loopback;
		sin6->sin6_port = htons((uint16_t)port);
		return sizeof(*sin6);
	}
	struct sockaddr_in *sin = (struct sockaddr_in *)ss;

	sin->sin_family = AF_INET;
	sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	sin->sin_port = htons((uint16_t)port);
	return sizeof(*sin);
}

int
tcp_pair(int family, int sv[2])
{
	struct sockaddr_storage ss;
	socklen_t len = loopback_addr(family, &ss, 0);
	int lfd, cfd = -1, afd, err;

	lfd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (lfd == -1)
		return -errno;
	if (bind(lfd, (struct sockaddr *)&ss, len) == -1 ||
	    listen(lfd, 1) == -1 ||
	    getsockname(lfd, (struct sockaddr *)&ss, &len) == -1)
		goto fail;
	cfd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (cfd == -1)
		goto fail;
	if (connect(cfd, (struct sockaddr *)&ss, len) == -1)
		goto fail;
	afd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	if (afd == -1)
		goto fail;
	close(lfd);
	sv[0] = cfd;
	sv[1] = afd;
	return 0;
fail:
	err = -errno;
	if (cfd != -1)
		close(cfd);
	close(lfd);
	return err;
}

int
closed_port(int family)
{
	struct sockaddr_storage ss;
	socklen_t len = loopback_addr(family, &ss, 0);
	int fd, err, port;

	fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd == -1)
		return -errno;
	if (bind(fd, (struct sockaddr *)&ss, len) == -1 ||
	    getsockname(fd, (struct sockaddr *)&ss, &len) == -1) {
		err = -errno;
		close(fd);
		return err;
	}
	if (family == AF_INET6)
		port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	else
		port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
	close(fd);
	return port;
}

bool
ipv6_loopback_works(void)
{
	int sv[2];

	if (tcp_pair(AF_INET6, sv))
		return false;
	close(sv[0]);
	close(sv[1]);
	return true;
}

int
wait_fd(int fd, short events, int timeout_ms)
{
	struct pollfd pfd = { .fd = fd, .events = events };
	int64_t deadline = now_ms() + timeout_ms;

	for (;;) {
		int left = (int)(deadline - now_ms());
		int n = poll(&pfd, 1, left > 0 ? left : 0);

		if (n == 1)
			return pfd.revents;
		if (n == 0)
			return 0;
		if (errno != EINTR)
			return -errno;
	}
}

int
local_port(int fd)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);

	if (getsockname(fd, (struct sockaddr *)&ss, &len) == -1)
		return -errno;
	if (ss.ss_family == AF_INET6)
		return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	if (ss.ss_family == AF_INET)
		return ntohs(((struct sockaddr_in *)&ss)->sin_port);
	return -EAFNOSUPPORT;
}

int
echo_roundtrip_fd(int fd, const char *msg)
{
	size_t len = strlen(msg), got = 0;
	char buf[512];

	if (len > sizeof(buf))
		return -EMSGSIZE;
	ssize_t sent = send(fd, msg, len, MSG_NOSIGNAL);

	if (sent == -1)
		return -errno;
	if (sent != (ssize_t)len)
		return -EIO;
	while (got < len) {
		ssize_t n = recv(fd, buf + got, len - got, 0);

		if (n == 0)
			return -ECONNRESET;
		if (n == -1) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		got += (size_t)n;
	}
	return memcmp(buf, msg, len) ? -EPROTO : 0;
}

int
count_open_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *de;
	int n = 0;

	if (!d)
		return -errno;
	while ((de = readdir(d)))
		if (de->d_name[0] != '.')
			n++;
	closedir(d);
	return n - 1; /* the directory's own fd */
}

int64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void
pause_ms(long ms)
{
	struct timespec ts = { .tv_sec = ms / 1000,
			       .tv_nsec = (ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
		;
}

int
wait_acked(int fd, int timeout_ms)
{
	int64_t deadline = now_ms() + timeout_ms;
	int outq = -1;

	while (ioctl(fd, SIOCOUTQ, &outq) == 0 && outq > 0 &&
	       now_ms() < deadline)
		pause_ms(1);
	return outq;
}

static char
thread_state(pid_t tid)
{
	char path[64], buf[512], *p;
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/self/task/%d/stat", (int)tid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd == -1)
		return '?';
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return '?';
	buf[n] = '\0';
	p = strrchr(buf, ')'); /* the comm field may hold spaces */
	return p && p[1] == ' ' ? p[2] : '?';
}

int
wait_thread_sleeping(pid_t tid, int timeout_ms)
{
	int64_t deadline = now_ms() + timeout_ms;

	for (;;) {
		if (thread_state(tid) == 'S')
			return 0;
		if (now_ms() > deadline)
			return -ETIMEDOUT;
		pause_ms(1);
	}
}

void
log_capture_init(struct log_capture *lc)
{
	memset(lc, 0, sizeof(*lc));
	pthread_mutex_init(&lc->lock, NULL);
}

void
log_capture_fn(void *user_data, int level, const char *msg)
{
	struct log_capture *lc = user_data;

	pthread_mutex_lock(&lc->lock);
	if (lc->n < LOG_CAPTURE_MAX) {
		lc->level[lc->n] = level;
		snprintf(lc->msg[lc->n], sizeof(lc->msg[0]), "%s",
			 msg ? msg : "(null)");
		lc->n++;
	}
	pthread_mutex_unlock(&lc->lock);
}

int
log_capture_count(struct log_capture *lc, const char *needle)
{
	int hits = 0;

	pthread_mutex_lock(&lc->lock);
	for (int i = 0; i < lc->n; i++)
		if (strstr(lc->msg[i], needle))
			hits++;
	pthread_mutex_unlock(&lc->lock);
	return hits;
}

int
log_capture_total(struct log_capture *lc)
{
	int n;

	pthread_mutex_lock(&lc->lock);
	n = lc->n;
	pthread_mutex_unlock(&lc->lock);
	return n;
}

const char *
log_capture_dump(struct log_capture *lc)
{
	static char out[4096];
	size_t off = 0;

	out[0] = '\0';
	pthread_mutex_lock(&lc->lock);
	for (int i = 0; i < lc->n && off < sizeof(out) - 1; i++)
		off += (size_t)snprintf(out + off, sizeof(out) - off, "%s%s",
					i ? " | " : "", lc->msg[i]);
	pthread_mutex_unlock(&lc->lock);
	if (!out[0])
		return "(no log messages)";
	return out;
}

int
sig_new(void)
{
	return eventfd(0, EFD_CLOEXEC | EFD_SEMAPHORE);
}

void
sig_post(int efd)
{
	uint64_t one = 1;

	while (write(efd, &one, sizeof(one)) == -1 && errno == EINTR)
		;
}

int
sig_wait(int efd, int timeout_ms)
{
	uint64_t v;

	if (wait_fd(efd, POLLIN, timeout_ms) <= 0)
		return -ETIMEDOUT;
	while (read(efd, &v, sizeof(v)) == -1)
		if (errno != EINTR)
			return -errno;
	return 0;
}

bool
sig_pending(int efd)
{
	return wait_fd(efd, POLLIN, 0) > 0;
}
