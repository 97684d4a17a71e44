/* SPDX-License-Identifier: MIT */
/*
 * dnsmasq for the tests and the bench (see dnssrv.h). Queries for the
 * readiness and set checks are built and parsed here (a UDP question for
 * A or AAAA, the answer's address records), so nothing depends on a
 * resolver library's caching or on the host's configuration.
 */
#include "dnssrv.h"

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
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define REG_MAX 64
#define PROBE_NAME "probe.dnssrv"
#define PROBE_IP "127.0.0.9"

static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static pid_t registry[REG_MAX];
static char dirs[REG_MAX][96];
static pthread_once_t atexit_once = PTHREAD_ONCE_INIT;

static int64_t
ms_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void
rm_dir(const char *dir)
{
	char cmd[160];

	if (!dir[0] || strncmp(dir, "/tmp/cpool-dnssrv.", 18))
		return;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		return;
}

static void
kill_all(void)
{
	for (int i = 0; i < REG_MAX; i++) {
		if (registry[i] > 0) {
			kill(registry[i], SIGKILL);
			waitpid(registry[i], NULL, 0);
		}
		if (dirs[i][0])
			rm_dir(dirs[i]);
	}
}

static void
register_atexit(void)
{
	atexit(kill_all);
}

static void
reg_set(pid_t old, pid_t pid, const char *dir)
{
	pthread_once(&atexit_once, register_atexit);
	pthread_mutex_lock(&reg_lock);
	for (int i = 0; i < REG_MAX; i++) {
		if (registry[i] == old && (old || !dirs[i][0] ||
					   !strcmp(dirs[i], dir))) {
			registry[i] = pid;
			if (dir)
				snprintf(dirs[i], sizeof(dirs[i]), "%s", dir);
			break;
		}
	}
	pthread_mutex_unlock(&reg_lock);
}

static void
reg_forget_dir(const char *dir)
{
	pthread_mutex_lock(&reg_lock);
	for (int i = 0; i < REG_MAX; i++)
		if (!strcmp(dirs[i], dir)) {
			dirs[i][0] = '\0';
			registry[i] = 0;
		}
	pthread_mutex_unlock(&reg_lock);
}

static const char *
binary(void)
{
	static const char *const paths[] = { "/usr/sbin/dnsmasq",
					     "/usr/bin/dnsmasq",
					     "/sbin/dnsmasq" };

	for (size_t i = 0; i < sizeof(paths) / sizeof(*paths); i++)
		if (access(paths[i], X_OK) == 0)
			return paths[i];
	return NULL;
}

bool
dnssrv_available(const char **why)
{
	if (binary())
		return true;
	if (why)
		*why = "dnsmasq not found (Debian package dnsmasq-base; make deps)";
	return false;
}

/* A port free for both UDP and TCP on 127.0.0.1, below the ephemeral range. */
static int
pick_port(void)
{
	struct sockaddr_in sin = { .sin_family = AF_INET,
				   .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int lo = 32768, hi = 60999, base, port, u, t, ok;
	FILE *f = fopen("/proc/sys/net/ipv4/ip_local_port_range", "re");
	struct timespec ts;

	if (f) {
		if (fscanf(f, "%d %d", &lo, &hi) != 2)
			lo = 32768;
		fclose(f);
	}
	if (lo <= 2048)
		lo = 32768;
	base = lo - 15000 > 1024 ? lo - 15000 : 1024;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	srand((unsigned)(ts.tv_nsec ^ getpid()));
	for (int i = 0; i < 1000; i++) {
		port = base + rand() % (lo - base);
		sin.sin_port = htons((uint16_t)port);
		u = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
		t = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		setsockopt(t, SOL_SOCKET, SO_REUSEADDR, &(int){ 1 },
			   sizeof(int));
		ok = u >= 0 && t >= 0 &&
		     bind(u, (struct sockaddr *)&sin, sizeof(sin)) == 0 &&
		     bind(t, (struct sockaddr *)&sin, sizeof(sin)) == 0;
		if (u >= 0)
			close(u);
		if (t >= 0)
			close(t);
		if (ok)
			return port;
	}
	return -EADDRINUSE;
}

static pid_t
spawn(struct dnssrv *d)
{
	char port[32], ttl[32], hostsdir[160];
	const char *bin = binary();
	pid_t parent = getpid(), pid;

	if (!bin)
		return -ENOENT;
	snprintf(port, sizeof(port), "--port=%d", d->port);
	snprintf(ttl, sizeof(ttl), "--local-ttl=%u", d->ttl_s);
	snprintf(hostsdir, sizeof(hostsdir), "--hostsdir=%s", d->dir);
	pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		int null = open("/dev/null", O_RDWR);

		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(127);
		if (null >= 0) {
			dup2(null, 0);
			dup2(null, 1);
			dup2(null, 2);
		}
		syscall(SYS_close_range, 3, ~0u, 0);
		execl(bin, "dnsmasq", "-k", "--no-resolv", "--no-hosts",
		      "--conf-file=/dev/null", "--local=/#/", hostsdir, ttl,
		      port, "--listen-address=127.0.0.1", "--bind-interfaces",
		      "--user=root", "--group=root", "--pid-file=",
		      "--cache-size=0", (char *)NULL);
		_exit(127);
	}
	return pid;
}

/* Appends the QNAME of @name to @p; returns the new end or NULL. */
static unsigned char *
put_name(unsigned char *p, const unsigned char *end, const char *name)
{
	const char *dot;
	size_t len;

	while (*name) {
		dot = strchr(name, '.');
		len = dot ? (size_t)(dot - name) : strlen(name);
		if (len == 0 || len > 63 || p + len + 1 >= end)
			return NULL;
		*p++ = (unsigned char)len;
		memcpy(p, name, len);
		p += len;
		name += len + (dot ? 1 : 0);
	}
	*p++ = 0;
	return p;
}

/* Skips a (possibly compressed) name; NULL past @end. */
static const unsigned char *
skip_name(const unsigned char *p, const unsigned char *end)
{
	while (p < end) {
		if ((*p & 0xc0) == 0xc0)
			return p + 2 <= end ? p + 2 : NULL;
		if (*p == 0)
			return p + 1;
		p += *p + 1;
	}
	return NULL;
}

/*
 * Asks the server for @type (1 A, 28 AAAA) records of @name; writes the
 * text of each address into @out (up to @max). Returns their number, or
 * -errno (-ETIMEDOUT: no answer in @ms; -ENOENT: NXDOMAIN).
 */
static int
query(int port, const char *name, int type, char out[][INET6_ADDRSTRLEN],
      int max, int ms)
{
	unsigned char q[512], r[4096], *p;
	const unsigned char *rp, *rend;
	struct sockaddr_in sin = { .sin_family = AF_INET,
				   .sin_port = htons((uint16_t)port),
				   .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	uint16_t id = (uint16_t)(rand() & 0xffff);
	struct pollfd pfd;
	int fd, n = 0, an, rc, qd, rtype, rdlen;
	ssize_t len;

	memset(q, 0, 12);
	q[0] = (unsigned char)(id >> 8);
	q[1] = (unsigned char)id;
	q[2] = 0x01; /* RD */
	q[5] = 1;    /* QDCOUNT */
	p = put_name(q + 12, q + sizeof(q) - 4, name);
	if (!p)
		return -EINVAL;
	*p++ = 0;
	*p++ = (unsigned char)type;
	*p++ = 0;
	*p++ = 1; /* IN */
	/* EDNS0 (OPT, 4096-byte UDP): big record sets are not truncated */
	q[11] = 1; /* ARCOUNT */
	if (p + 11 > q + sizeof(q))
		return -EINVAL;
	memcpy(p, "\0\0\x29\x10\0\0\0\0\0\0\0", 11);
	p += 11;
	fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (sendto(fd, q, (size_t)(p - q), 0, (struct sockaddr *)&sin,
		   sizeof(sin)) < 0) {
		rc = -errno;
		close(fd);
		return rc;
	}
	pfd.fd = fd;
	pfd.events = POLLIN;
	for (;;) {
		if (poll(&pfd, 1, ms) <= 0) {
			close(fd);
			return -ETIMEDOUT;
		}
		len = recv(fd, r, sizeof(r), 0);
		if (len < 0) {
			rc = -errno;
			close(fd);
			return rc == -ECONNREFUSED ? -ECONNREFUSED : rc;
		}
		if (len >= 12 && r[0] == q[0] && r[1] == q[1])
			break;
	}
	close(fd);
	if ((r[3] & 0x0f) == 3)
		return -ENOENT;
	if ((r[3] & 0x0f) != 0)
		return -EIO;
	qd = (r[4] << 8) | r[5];
	an = (r[6] << 8) | r[7];
	rp = r + 12;
	rend = r + len;
	while (qd-- > 0 && rp) {
		rp = skip_name(rp, rend);
		rp = rp && rp + 4 <= rend ? rp + 4 : NULL;
	}
	while (an-- > 0 && rp) {
		rp = skip_name(rp, rend);
		if (!rp || rp + 10 > rend)
			break;
		rtype = (rp[0] << 8) | rp[1];
		rdlen = (rp[8] << 8) | rp[9];
		rp += 10;
		if (rp + rdlen > rend)
			break;
		if (n < max && rtype == type &&
		    rdlen == (type == 1 ? 4 : 16))
			inet_ntop(type == 1 ? AF_INET : AF_INET6, rp, out[n++],
				  INET6_ADDRSTRLEN);
		rp += rdlen;
	}
	return n;
}

/* Whether the server answers @name with exactly @ips (in any order). */
static bool
answers(const struct dnssrv *d, const char *name, const char *const *ips,
	unsigned n)
{
	char got[2 * 128][INET6_ADDRSTRLEN], canon[INET6_ADDRSTRLEN];
	unsigned char bin[16];
	int a, aaaa, k;
	unsigned i;

	a = query(d->port, name, 1, got, 128, 200);
	if (a == -ENOENT)
		a = 0;
	if (a < 0)
		return false;
	aaaa = query(d->port, name, 28, got + a, 128, 200);
	if (aaaa == -ENOENT)
		aaaa = 0;
	if (aaaa < 0 || (unsigned)(a + aaaa) != n)
		return false;
	for (i = 0; i < n; i++) {
		int fam = strchr(ips[i], ':') ? AF_INET6 : AF_INET;

		if (inet_pton(fam, ips[i], bin) != 1)
			return false;
		inet_ntop(fam, bin, canon, sizeof(canon));
		for (k = 0; k < a + aaaa; k++)
			if (!strcmp(got[k], canon))
				break;
		if (k == a + aaaa)
			return false;
	}
	return true;
}

/* Writes DIR/<name> whole: aside, then renamed in (one inotify event). */
static int
write_records(const struct dnssrv *d, const char *name,
	      const char *const *ips, unsigned n)
{
	char tmp[256], path[256];
	FILE *f;
	unsigned i;

	snprintf(tmp, sizeof(tmp), "%s/.%s.tmp", d->dir, name);
	snprintf(path, sizeof(path), "%s/%s", d->dir, name);
	f = fopen(tmp, "we");
	if (!f)
		return -errno;
	for (i = 0; i < n; i++)
		fprintf(f, "%s %s\n", ips[i], name);
	if (fclose(f) != 0)
		return -EIO;
	return rename(tmp, path) == 0 ? 0 : -errno;
}

static int
wait_answers(const struct dnssrv *d, const char *name, const char *const *ips,
	     unsigned n, int ms)
{
	int64_t deadline = ms_now() + ms;

	while (!answers(d, name, ips, n)) {
		if (ms_now() > deadline)
			return -ETIMEDOUT;
		/* dnsmasq reads the file on its own: poll for it */
		poll(NULL, 0, 5);
	}
	return 0;
}

static int
launch(struct dnssrv *d)
{
	static const char *const probe[] = { PROBE_IP };
	pid_t pid = spawn(d);
	int err;

	if (pid < 0)
		return (int)pid;
	d->pid = pid;
	reg_set(0, pid, d->dir);
	err = wait_answers(d, PROBE_NAME, probe, 1, 10000);
	if (err)
		dnssrv_stop(d);
	return err;
}

int
dnssrv_start(struct dnssrv *d, unsigned ttl_s)
{
	static const char *const probe[] = { PROBE_IP };
	char tmpl[] = "/tmp/cpool-dnssrv.XXXXXX";
	int err;

	memset(d, 0, sizeof(*d));
	d->pid = -1;
	d->ttl_s = ttl_s;
	if (!binary())
		return -ENOENT;
	if (!mkdtemp(tmpl))
		return -errno;
	snprintf(d->dir, sizeof(d->dir), "%s", tmpl);
	err = write_records(d, PROBE_NAME, probe, 1);
	for (int tries = 0; !err && tries < 5; tries++) {
		d->port = pick_port();
		if (d->port < 0)
			return d->port;
		snprintf(d->servers, sizeof(d->servers), "127.0.0.1:%d",
			 d->port);
		err = launch(d);
		if (!err)
			return 0;
		err = 0; /* the port was taken meanwhile: another one */
	}
	rm_dir(d->dir);
	return err ? err : -EADDRINUSE;
}

int
dnssrv_set(struct dnssrv *d, const char *name, const char *const *ips,
	   unsigned n)
{
	int err = write_records(d, name, ips, n);

	if (err)
		return err;
	return d->pid > 0 ? wait_answers(d, name, ips, n, 5000) : 0;
}

void
dnssrv_stop(struct dnssrv *d)
{
	int64_t deadline;
	pid_t pid = d->pid;

	if (pid <= 0)
		return;
	kill(pid, SIGTERM);
	kill(pid, SIGCONT); /* a frozen one takes its SIGTERM now */
	deadline = ms_now() + 5000;
	while (waitpid(pid, NULL, WNOHANG) == 0) {
		if (ms_now() > deadline) {
			kill(pid, SIGKILL);
			waitpid(pid, NULL, 0);
			break;
		}
		poll(NULL, 0, 2);
	}
	reg_set(pid, 0, NULL);
	d->pid = -1;
}

void
dnssrv_pause(struct dnssrv *d)
{
	int status;

	if (d->pid <= 0 || kill(d->pid, SIGSTOP) != 0)
		return;
	while (waitpid(d->pid, &status, WUNTRACED) < 0 && errno == EINTR)
		;
}

void
dnssrv_resume(struct dnssrv *d)
{
	if (d->pid > 0)
		kill(d->pid, SIGCONT);
}

int
dnssrv_restart(struct dnssrv *d)
{
	dnssrv_stop(d);
	return launch(d);
}

void
dnssrv_free(struct dnssrv *d)
{
	dnssrv_stop(d);
	rm_dir(d->dir);
	reg_forget_dir(d->dir);
	d->dir[0] = '\0';
}
