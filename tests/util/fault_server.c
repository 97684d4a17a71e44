/* SPDX-License-Identifier: MIT */
/*
 * Fault server: one thread, one poll() loop over a control pipe, the
 * listener and the accepted connections. Only that thread touches the
 * connection table and the listener; test threads post one command at a
 * time and sleep on a condvar until the server thread has carried it out,
 * which is what makes every command synchronous.
 */
#include "fault_server.h"
#include "net.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <linux/sockios.h>

enum fs_cmd {
	CMD_NONE,
	CMD_MODE,
	CMD_ACT,
	CMD_REFUSE,
	CMD_LISTEN,
	CMD_STOP,
};

struct fs_conn {
	int fd;
	int peer_port;
	bool dead;
};

struct fault_server {
	enum fs_family family;
	char ip[64];		/* fs_start_at(): the address to bind, or "" */
	int lfd;
	int ctl[2];
	int port;
	pthread_t thread;
	char address[160];
	char dir[64];
	char path[108];

	/* Server thread only. */
	enum fs_mode mode;
	struct fs_conn *conns;
	size_t nconns;
	size_t cap;

	/* One command at a time; held by the posting thread. */
	pthread_mutex_t cmd_lock;

	/* Guards everything below. */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	enum fs_cmd cmd;
	enum fs_mode cmd_mode;
	enum fs_action cmd_act;
	int cmd_port;
	const void *cmd_buf;
	size_t cmd_len;
	int cmd_result;
	bool cmd_done;
	unsigned accepted;
	unsigned open;
};

static void
deadline_after(struct timespec *ts, int timeout_ms)
{
	clock_gettime(CLOCK_MONOTONIC, ts);
	ts->tv_sec += timeout_ms / 1000;
	ts->tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
	if (ts->tv_nsec >= 1000000000L) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000L;
	}
}

static void
reset_close(int fd)
{
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };

	setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	close(fd);
}

/*
 * Sends all of @buf without blocking the server thread forever: a client
 * that stops reading gets what fits, then up to a second of patience.
 */
static void
send_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;

	while (len > 0) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n > 0) {
			p += n;
			len -= (size_t)n;
		} else if (n == -1 && errno == EINTR) {
			continue;
		} else if (n == -1 && errno == EAGAIN) {
			struct pollfd pfd = { .fd = fd, .events = POLLOUT };

			if (poll(&pfd, 1, 1000) != 1)
				return;
		} else {
			return;
		}
	}
}

/* Server thread: drops the connection at index @i from the table. */
static void
conn_forget(struct fault_server *fs, size_t i)
{
	fs->conns[i] = fs->conns[--fs->nconns];
	pthread_mutex_lock(&fs->lock);
	fs->open--;
	pthread_cond_broadcast(&fs->cond);
	pthread_mutex_unlock(&fs->lock);
}

static int
peer_port_of(int fd)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);

	if (getpeername(fd, (struct sockaddr *)&ss, &len) == -1)
		return 0;
	if (ss.ss_family == AF_INET)
		return ntohs(((struct sockaddr_in *)&ss)->sin_port);
	if (ss.ss_family == AF_INET6)
		return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	return 0;
}

/* Returns false when out of fds (a test filling the fd table). */
static bool
accept_pending(struct fault_server *fs)
{
	for (;;) {
		int fd = accept4(fs->lfd, NULL, NULL, SOCK_CLOEXEC);

		if (fd == -1) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			return errno != EMFILE && errno != ENFILE;
		}
		/*
		 * No Nagle: an echo or a stray message leaves at once, not
		 * after the client's delayed ACK of the previous answer.
		 */
		if (fs->family != FS_UNIX)
			setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &(int){ 1 },
				   sizeof(int));
		if (fs->mode == FS_MODE_CLOSE_ON_ACCEPT) {
			close(fd);
		} else if (fs->mode == FS_MODE_RESET_ON_ACCEPT) {
			reset_close(fd);
		} else {
			if (fs->nconns == fs->cap) {
				size_t cap = fs->cap ? fs->cap * 2 : 16;
				void *p = realloc(fs->conns,
						  cap * sizeof(*fs->conns));

				if (!p) {
					close(fd);
					continue;
				}
				fs->conns = p;
				fs->cap = cap;
			}
			fs->conns[fs->nconns].fd = fd;
			fs->conns[fs->nconns].peer_port = peer_port_of(fd);
			fs->conns[fs->nconns].dead = false;
			fs->nconns++;
		}
		pthread_mutex_lock(&fs->lock);
		fs->accepted++;
		if (fs->mode != FS_MODE_CLOSE_ON_ACCEPT &&
		    fs->mode != FS_MODE_RESET_ON_ACCEPT)
			fs->open++;
		pthread_cond_broadcast(&fs->cond);
		pthread_mutex_unlock(&fs->lock);
	}
	return true;
}

/* Server thread: carries out an action on one connection; true if closed. */
static bool
conn_act(struct fs_conn *fc, enum fs_action act, const void *buf, size_t len)
{
	switch (act) {
	case FS_ACT_CLOSE:
		close(fc->fd);
		return true;
	case FS_ACT_RESET:
		reset_close(fc->fd);
		return true;
	case FS_ACT_SEND:
		send_all(fc->fd, buf, len);
		return false;
	case FS_ACT_SEND_CLOSE:
		send_all(fc->fd, buf, len);
		close(fc->fd);
		return true;
	case FS_ACT_SEND_RESET:
		send_all(fc->fd, buf, len);
		/*
		 * Every byte acknowledged, i.e. in the client's receive
		 * queue: a linger-0 close discards what is still in the send
		 * queue, so "bytes then RST" needs this to be deterministic.
		 */
		wait_acked(fc->fd, 10000);
		reset_close(fc->fd);
		return true;
	}
	return false;
}

/* Server thread: runs the posted command. Returns false on CMD_STOP. */
static int listen_on(struct fault_server *fs);

static bool
run_command(struct fault_server *fs)
{
	enum fs_cmd cmd;
	int result = 0;
	char b[64];

	while (read(fs->ctl[0], b, sizeof(b)) == -1 && errno == EINTR)
		;
	pthread_mutex_lock(&fs->lock);
	cmd = fs->cmd;
	pthread_mutex_unlock(&fs->lock);

	switch (cmd) {
	case CMD_NONE:
		break;
	case CMD_MODE:
		fs->mode = fs->cmd_mode;
		break;
	case CMD_ACT:
		for (size_t i = 0; i < fs->nconns;) {
			struct fs_conn *fc = &fs->conns[i];

			if (fs->cmd_port && fc->peer_port != fs->cmd_port) {
				i++;
				continue;
			}
			result++;
			if (conn_act(fc, fs->cmd_act, fs->cmd_buf,
				     fs->cmd_len))
				conn_forget(fs, i);
			else
				i++;
		}
		break;
	case CMD_REFUSE:
		if (fs->lfd != -1)
			close(fs->lfd);
		fs->lfd = -1;
		break;
	case CMD_LISTEN:
		result = fs->lfd == -1 ? listen_on(fs) : 0;
		break;
	case CMD_STOP:
		for (size_t i = 0; i < fs->nconns; i++)
			close(fs->conns[i].fd);
		fs->nconns = 0;
		if (fs->lfd != -1)
			close(fs->lfd);
		fs->lfd = -1;
		break;
	}

	pthread_mutex_lock(&fs->lock);
	if (cmd == CMD_STOP)
		fs->open = 0;
	fs->cmd = CMD_NONE;
	fs->cmd_result = result;
	fs->cmd_done = true;
	pthread_cond_broadcast(&fs->cond);
	pthread_mutex_unlock(&fs->lock);
	return cmd != CMD_STOP;
}

/* Server thread: reads (and echoes) what a readable connection has. */
static void
conn_service(struct fault_server *fs, struct fs_conn *fc, short revents)
{
	char buf[16384];
	ssize_t n;

	if (fs->mode == FS_MODE_STALL) {
		/* Not reading: only a connection dead both ways is dropped. */
		if (revents & (POLLERR | POLLHUP | POLLNVAL)) {
			close(fc->fd);
			fc->dead = true;
		}
		return;
	}
	do
		n = recv(fc->fd, buf, sizeof(buf), MSG_DONTWAIT);
	while (n == -1 && errno == EINTR);
	if (n > 0) {
		send_all(fc->fd, buf, (size_t)n);
	} else if (n == 0 || errno != EAGAIN) {
		close(fc->fd);
		fc->dead = true;
	}
}

static void *
server_main(void *arg)
{
	struct fault_server *fs = arg;
	struct pollfd *pfds = NULL;
	size_t pcap = 0;
	bool no_fds = false;

	for (;;) {
		size_t n = 0, base;

		if (pcap < fs->nconns + 2) {
			pcap = fs->nconns + 18;
			free(pfds);
			pfds = calloc(pcap, sizeof(*pfds));
			if (!pfds)
				abort();
		}
		pfds[n++] = (struct pollfd){ .fd = fs->ctl[0],
					     .events = POLLIN };
		/* out of fds: retry the accept in 5 ms rather than spin */
		pfds[n++] = (struct pollfd){ .fd = no_fds ? -1 : fs->lfd,
					     .events = POLLIN };
		base = n;
		for (size_t i = 0; i < fs->nconns; i++) {
			short ev = fs->mode == FS_MODE_STALL ? 0 : POLLIN;

			pfds[n++] = (struct pollfd){ .fd = fs->conns[i].fd,
						     .events = ev };
		}
		if (poll(pfds, n, no_fds ? 5 : -1) == -1) {
			if (errno == EINTR)
				continue;
			abort();
		}

		for (size_t i = base; i < n; i++)
			if (pfds[i].revents)
				conn_service(fs, &fs->conns[i - base],
					     pfds[i].revents);
		for (size_t i = 0; i < fs->nconns;)
			if (fs->conns[i].dead)
				conn_forget(fs, i);
			else
				i++;

		if (fs->lfd == -1)
			no_fds = false;
		else if (pfds[1].revents || no_fds)
			no_fds = !accept_pending(fs);
		if (pfds[0].revents && !run_command(fs))
			break;
	}
	free(pfds);
	return NULL;
}

static int
listen_on(struct fault_server *fs)
{
	struct sockaddr_storage ss;
	socklen_t len;
	int one = 1;

	memset(&ss, 0, sizeof(ss));
	if (fs->family == FS_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)&ss;

		sin->sin_family = AF_INET;
		sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		if (fs->ip[0] &&
		    inet_pton(AF_INET, fs->ip, &sin->sin_addr) != 1)
			return -1;
		sin->sin_port = htons((uint16_t)fs->port);
		len = sizeof(*sin);
	} else if (fs->family == FS_INET6) {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;

		sin6->sin6_family = AF_INET6;
		sin6->sin6_addr = in6addr_loopback;
		if (fs->ip[0] &&
		    inet_pton(AF_INET6, fs->ip, &sin6->sin6_addr) != 1)
			return -1;
		sin6->sin6_port = htons((uint16_t)fs->port);
		len = sizeof(*sin6);
	} else {
		struct sockaddr_un *sun = (struct sockaddr_un *)&ss;

		strcpy(fs->dir, "/tmp/cpool-fs-XXXXXX");
		if (!mkdtemp(fs->dir))
			return -1;
		snprintf(fs->path, sizeof(fs->path), "%s/sock", fs->dir);
		sun->sun_family = AF_UNIX;
		strcpy(sun->sun_path, fs->path);
		len = sizeof(*sun);
	}

	fs->lfd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK |
			 SOCK_CLOEXEC, 0);
	if (fs->lfd == -1)
		return -1;
	if (fs->family == FS_INET6)
		setsockopt(fs->lfd, IPPROTO_IPV6, IPV6_V6ONLY, &one,
			   sizeof(one));
	/* Listening again on the same port (fs_listen_again()). */
	setsockopt(fs->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fs->lfd, (struct sockaddr *)&ss, len) == -1 ||
	    listen(fs->lfd, 128) == -1)
		return -1;

	if (fs->family == FS_UNIX) {
		snprintf(fs->address, sizeof(fs->address), "unix:%s",
			 fs->path);
		return 0;
	}
	len = sizeof(ss);
	if (getsockname(fs->lfd, (struct sockaddr *)&ss, &len) == -1)
		return -1;
	if (fs->family == FS_INET) {
		fs->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
		snprintf(fs->address, sizeof(fs->address), "%s:%d",
			 fs->ip[0] ? fs->ip : "127.0.0.1", fs->port);
	} else {
		fs->port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
		snprintf(fs->address, sizeof(fs->address), "[%s]:%d",
			 fs->ip[0] ? fs->ip : "::1", fs->port);
	}
	return 0;
}

static void
cleanup_path(struct fault_server *fs)
{
	if (fs->path[0])
		unlink(fs->path);
	if (fs->dir[0])
		rmdir(fs->dir);
}

/*
 * Unix socket directories still on disk, removed at exit too: a failed
 * assertion leaves its test before fs_stop(), and /tmp stays clean anyway.
 */
#define MAX_LIVE_DIRS 16
static pthread_mutex_t live_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t live_once = PTHREAD_ONCE_INIT;
static struct fault_server *live[MAX_LIVE_DIRS];

static void
cleanup_live_at_exit(void)
{
	pthread_mutex_lock(&live_lock);
	for (int i = 0; i < MAX_LIVE_DIRS; i++)
		if (live[i])
			cleanup_path(live[i]);
	pthread_mutex_unlock(&live_lock);
}

static void
register_atexit(void)
{
	atexit(cleanup_live_at_exit);
}

static void
track_live(struct fault_server *fs, bool on)
{
	pthread_once(&live_once, register_atexit);
	pthread_mutex_lock(&live_lock);
	for (int i = 0; i < MAX_LIVE_DIRS; i++) {
		if (on && !live[i]) {
			live[i] = fs;
			break;
		}
		if (!on && live[i] == fs) {
			live[i] = NULL;
			break;
		}
	}
	pthread_mutex_unlock(&live_lock);
}

static struct fault_server *
start(enum fs_family family, const char *ip, int port)
{
	struct fault_server *fs = calloc(1, sizeof(*fs));
	pthread_condattr_t ca;
	int err;

	if (!fs)
		return NULL;
	fs->family = family;
	if (ip)
		snprintf(fs->ip, sizeof(fs->ip), "%s", ip);
	fs->port = port;
	fs->lfd = -1;
	fs->ctl[0] = fs->ctl[1] = -1;
	pthread_mutex_init(&fs->cmd_lock, NULL);
	pthread_mutex_init(&fs->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&fs->cond, &ca);
	pthread_condattr_destroy(&ca);

	if (listen_on(fs) == -1 || pipe2(fs->ctl, O_CLOEXEC) == -1)
		goto fail;
	err = pthread_create(&fs->thread, NULL, server_main, fs);
	if (err) {
		errno = err;
		goto fail;
	}
	if (family == FS_UNIX)
		track_live(fs, true);
	return fs;
fail:
	err = errno;
	if (fs->lfd != -1)
		close(fs->lfd);
	if (fs->ctl[0] != -1)
		close(fs->ctl[0]);
	if (fs->ctl[1] != -1)
		close(fs->ctl[1]);
	cleanup_path(fs);
	free(fs);
	errno = err;
	return NULL;
}

struct fault_server *
fs_start(enum fs_family family)
{
	return start(family, NULL, 0);
}

struct fault_server *
fs_start_at(const char *ip, int port)
{
	return start(strchr(ip, ':') ? FS_INET6 : FS_INET, ip, port);
}

/* Posts a command and sleeps until the server thread has carried it out. */
static int
post(struct fault_server *fs, enum fs_cmd cmd)
{
	int result;

	pthread_mutex_lock(&fs->lock);
	fs->cmd = cmd;
	fs->cmd_done = false;
	pthread_mutex_unlock(&fs->lock);
	while (write(fs->ctl[1], "c", 1) == -1 && errno == EINTR)
		;
	pthread_mutex_lock(&fs->lock);
	while (!fs->cmd_done)
		pthread_cond_wait(&fs->cond, &fs->lock);
	result = fs->cmd_result;
	pthread_mutex_unlock(&fs->lock);
	return result;
}

void
fs_stop(struct fault_server *fs)
{
	if (!fs)
		return;
	pthread_mutex_lock(&fs->cmd_lock);
	post(fs, CMD_STOP);
	pthread_mutex_unlock(&fs->cmd_lock);
	pthread_join(fs->thread, NULL);
	close(fs->ctl[0]);
	close(fs->ctl[1]);
	if (fs->family == FS_UNIX)
		track_live(fs, false);
	cleanup_path(fs);
	free(fs->conns);
	pthread_cond_destroy(&fs->cond);
	pthread_mutex_destroy(&fs->lock);
	pthread_mutex_destroy(&fs->cmd_lock);
	free(fs);
}

const char *
fs_address(const struct fault_server *fs)
{
	return fs->address;
}

int
fs_port(const struct fault_server *fs)
{
	return fs->port;
}

void
fs_set_mode(struct fault_server *fs, enum fs_mode mode)
{
	pthread_mutex_lock(&fs->cmd_lock);
	fs->cmd_mode = mode;
	post(fs, CMD_MODE);
	pthread_mutex_unlock(&fs->cmd_lock);
}

int
fs_act(struct fault_server *fs, enum fs_action act, int client_port,
       const void *buf, size_t len)
{
	int n;

	pthread_mutex_lock(&fs->cmd_lock);
	fs->cmd_act = act;
	fs->cmd_port = client_port;
	fs->cmd_buf = buf;
	fs->cmd_len = len;
	n = post(fs, CMD_ACT);
	pthread_mutex_unlock(&fs->cmd_lock);
	return n;
}

int
fs_close_all(struct fault_server *fs)
{
	return fs_act(fs, FS_ACT_CLOSE, 0, NULL, 0);
}

int
fs_reset_all(struct fault_server *fs)
{
	return fs_act(fs, FS_ACT_RESET, 0, NULL, 0);
}

int
fs_send_all(struct fault_server *fs, const void *buf, size_t len)
{
	return fs_act(fs, FS_ACT_SEND, 0, buf, len);
}

void
fs_refuse(struct fault_server *fs)
{
	pthread_mutex_lock(&fs->cmd_lock);
	post(fs, CMD_REFUSE);
	pthread_mutex_unlock(&fs->cmd_lock);
}

int
fs_listen_again(struct fault_server *fs)
{
	int rc;

	pthread_mutex_lock(&fs->cmd_lock);
	rc = post(fs, CMD_LISTEN);
	pthread_mutex_unlock(&fs->cmd_lock);
	return rc;
}

unsigned
fs_accepted(struct fault_server *fs)
{
	unsigned n;

	pthread_mutex_lock(&fs->lock);
	n = fs->accepted;
	pthread_mutex_unlock(&fs->lock);
	return n;
}

unsigned
fs_open(struct fault_server *fs)
{
	unsigned n;

	pthread_mutex_lock(&fs->lock);
	n = fs->open;
	pthread_mutex_unlock(&fs->lock);
	return n;
}

static int
wait_count(struct fault_server *fs, const unsigned *count, unsigned n,
	   bool at_least, int timeout_ms)
{
	struct timespec deadline;
	int err = 0;

	deadline_after(&deadline, timeout_ms);
	pthread_mutex_lock(&fs->lock);
	while (at_least ? *count < n : *count != n) {
		err = pthread_cond_timedwait(&fs->cond, &fs->lock, &deadline);
		if (err == ETIMEDOUT &&
		    !(at_least ? *count < n : *count != n))
			err = 0;
		if (err)
			break;
	}
	pthread_mutex_unlock(&fs->lock);
	return err ? -ETIMEDOUT : 0;
}

int
fs_wait_accepted(struct fault_server *fs, unsigned n, int timeout_ms)
{
	return wait_count(fs, &fs->accepted, n, true, timeout_ms);
}

int
fs_wait_open(struct fault_server *fs, unsigned n, int timeout_ms)
{
	return wait_count(fs, &fs->open, n, false, timeout_ms);
}
