/* SPDX-License-Identifier: MIT */
#include "tlssrv.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <poll.h>
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

#define READY_MS 10000
#define EXIT_MS 10000
#define START_TRIES 20

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
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000 };

	while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
		;
}

static bool
in_path(const char *name)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "command -v %s >/dev/null 2>&1", name);
	return system(cmd) == 0;
}

bool
tlssrv_available(void)
{
	return in_path("redis-server") && in_path("openssl");
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

/* A random free port below the ephemeral range (realsrv.h says why). */
static int
pick_port(void)
{
	int lo = 32768, hi = 60999;
	FILE *f = fopen("/proc/sys/net/ipv4/ip_local_port_range", "re");
	unsigned seed = (unsigned)(mono_ms() ^ getpid() ^ (intptr_t)&lo);

	if (f) {
		if (fscanf(f, "%d %d", &lo, &hi) != 2)
			lo = 32768;
		fclose(f);
	}
	if (lo <= 2048)
		lo = 32768;
	for (int i = 0; i < 1000; i++) {
		int base = lo - 15000 > 1024 ? lo - 15000 : 1024;
		int port = base + (int)(rand_r(&seed) % (lo - base));
		struct sockaddr_in sin = loopback(port);
		int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), ok;

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

/* CA + server certificate with the openssl command, quietly. */
static int
make_certs(const char *dir)
{
	char cmd[2048];
	FILE *f;

	snprintf(cmd, sizeof(cmd), "%s/ext.cnf", dir);
	f = fopen(cmd, "we");
	if (!f)
		return -errno;
	fprintf(f, "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
		   "basicConstraints=CA:FALSE\n");
	fclose(f);
	snprintf(cmd, sizeof(cmd),
		 "( cd '%s' && "
		 "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1"
		 " -nodes -keyout ca.key -out ca.crt -days 2 -subj /CN=cpool-test-ca"
		 " -addext basicConstraints=critical,CA:TRUE"
		 " -addext keyUsage=critical,keyCertSign,cRLSign && "
		 "openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1"
		 " -nodes -keyout srv.key -out srv.csr -subj /CN=localhost && "
		 "openssl x509 -req -in srv.csr -CA ca.crt -CAkey ca.key"
		 " -CAcreateserial -out srv.crt -days 2 -extfile ext.cnf )",
		 dir);
	strncat(cmd, " >/dev/null 2>&1", sizeof(cmd) - strlen(cmd) - 1);
	return system(cmd) == 0 ? 0 : -EIO;
}

static pid_t
spawn(struct tlssrv *s)
{
	char port[16], cert[300], key[300];
	pid_t parent = getpid(), pid;

	snprintf(port, sizeof(port), "%d", s->port);
	snprintf(cert, sizeof(cert), "%s/srv.crt", s->dir);
	snprintf(key, sizeof(key), "%s/srv.key", s->dir);
	pid = fork();
	if (pid == -1)
		return -errno;
	if (pid == 0) {
		sigset_t none;
		int devnull;

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
		/* No pooled socket of ours may live on in the server. */
		syscall(SYS_close_range, 3u, ~0u, 0u);
		execlp("redis-server", "redis-server", "--port", "0",
		       "--tls-port", port, "--bind", "127.0.0.1",
		       "--tls-cert-file", cert, "--tls-key-file", key,
		       "--tls-ca-cert-file", s->ca_file, "--tls-auth-clients",
		       "no", "--save", "", "--appendonly", "no", "--daemonize",
		       "no", "--loglevel", "warning", "--dir", s->dir,
		       (char *)NULL);
		_exit(127);
	}
	return pid;
}

/* The pid the server reports over TLS, or -errno. */
static long
ask_pid(const struct tlssrv *s, SSL_CTX *ctx)
{
	struct tlssrv_client cl;
	char buf[8192], *p;
	long pid = 0;
	int n;

	n = tlssrv_client_open(s, ctx, &cl);
	if (n)
		return n;
	n = tlssrv_cmd(cl.ssl, "INFO server\r\n", buf, sizeof(buf));
	if (n > 0 && (p = strstr(buf, "process_id:")))
		pid = strtol(p + strlen("process_id:"), NULL, 10);
	tlssrv_client_close(&cl);
	return n < 0 ? n : pid;
}

static int
launch(struct tlssrv *s)
{
	SSL_CTX *ctx = tlssrv_client_ctx(s);
	int64_t deadline = mono_ms() + READY_MS;
	pid_t pid;
	int err = 0;

	if (!ctx)
		return -ENOMEM;
	pid = spawn(s);
	if (pid < 0) {
		SSL_CTX_free(ctx);
		return (int)pid;
	}
	s->pid = pid;
	for (;;) {
		if (waitpid(pid, NULL, WNOHANG) == pid) {
			s->pid = -1;
			err = -EADDRINUSE; /* could not bind */
			break;
		}
		if (ask_pid(s, ctx) == (long)pid)
			break;
		if (mono_ms() >= deadline) {
			tlssrv_kill(s, SIGKILL);
			err = -ETIMEDOUT;
			break;
		}
		nap_ms(2); /* polling for the listener, with a deadline */
	}
	SSL_CTX_free(ctx);
	return err;
}

int
tlssrv_start(struct tlssrv *s, const char *dir)
{
	int err = -EADDRINUSE;

	memset(s, 0, sizeof(*s));
	s->pid = -1;
	if (!tlssrv_available())
		return -ENOENT;
	if (dir) {
		snprintf(s->dir, sizeof(s->dir), "%s", dir);
	} else {
		snprintf(s->dir, sizeof(s->dir), "/tmp/cpool-tls.XXXXXX");
		if (!mkdtemp(s->dir))
			return -errno;
		s->own_dir = true;
	}
	snprintf(s->ca_file, sizeof(s->ca_file), "%s/ca.crt", s->dir);
	err = make_certs(s->dir);
	if (err)
		goto fail;
	err = -EADDRINUSE;
	for (int i = 0; i < START_TRIES && err == -EADDRINUSE; i++) {
		s->port = pick_port();
		if (s->port < 0) {
			err = s->port;
			goto fail;
		}
		err = launch(s);
	}
	if (err)
		goto fail;
	snprintf(s->address, sizeof(s->address), "127.0.0.1:%d", s->port);
	return 0;
fail:
	tlssrv_stop(s);
	return err;
}

int
tlssrv_kill(struct tlssrv *s, int sig)
{
	pid_t pid = s->pid;
	int64_t deadline = mono_ms() + EXIT_MS;

	if (pid <= 0)
		return 0;
	if (kill(pid, sig) == -1 && errno != ESRCH)
		return -errno;
	for (;;) {
		pid_t r = waitpid(pid, NULL, WNOHANG);

		if (r == pid || (r == -1 && errno == ECHILD))
			break;
		if (mono_ms() >= deadline) {
			kill(pid, SIGKILL);
			while (waitpid(pid, NULL, 0) == -1 && errno == EINTR)
				;
			break;
		}
		nap_ms(1); /* waiting for the exit, with a deadline */
	}
	s->pid = -1;
	return 0;
}

int
tlssrv_start_again(struct tlssrv *s)
{
	int err = -EADDRINUSE;

	if (s->pid > 0)
		return -EBUSY;
	for (int i = 0; i < START_TRIES && err == -EADDRINUSE; i++)
		err = launch(s);
	return err;
}

int
tlssrv_restart(struct tlssrv *s, int sig)
{
	int err = tlssrv_kill(s, sig);

	return err ? err : tlssrv_start_again(s);
}

void
tlssrv_stop(struct tlssrv *s)
{
	char cmd[400];

	tlssrv_kill(s, SIGTERM);
	if (s->own_dir && s->dir[0]) {
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", s->dir);
		if (system(cmd) != 0)
			fprintf(stderr, "tlssrv: cannot remove %s\n", s->dir);
		s->own_dir = false;
	}
}

SSL_CTX *
tlssrv_client_ctx(const struct tlssrv *s)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());

	if (!ctx)
		return NULL;
	if (!SSL_CTX_load_verify_locations(ctx, s->ca_file, NULL)) {
		SSL_CTX_free(ctx);
		return NULL;
	}
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	return ctx;
}

int
tlssrv_client_open(const struct tlssrv *s, SSL_CTX *ctx,
		   struct tlssrv_client *cl)
{
	struct sockaddr_in sin = loopback(s->port);
	struct timeval tv = { .tv_sec = 2 };
	int err;

	cl->ssl = NULL;
	cl->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (cl->fd == -1)
		return -errno;
	setsockopt(cl->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(cl->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (connect(cl->fd, (struct sockaddr *)&sin, sizeof(sin)) == -1) {
		err = -errno;
		goto fail;
	}
	cl->ssl = SSL_new(ctx);
	if (!cl->ssl || !SSL_set_fd(cl->ssl, cl->fd) ||
	    !SSL_set1_host(cl->ssl, "127.0.0.1")) {
		err = -ENOMEM;
		goto fail;
	}
	if (SSL_connect(cl->ssl) != 1) {
		err = -EPROTO;
		goto fail;
	}
	return 0;
fail:
	ERR_clear_error();
	SSL_free(cl->ssl);
	cl->ssl = NULL;
	close(cl->fd);
	cl->fd = -1;
	return err;
}

void
tlssrv_client_close(struct tlssrv_client *cl)
{
	if (cl->ssl) {
		SSL_shutdown(cl->ssl);
		SSL_free(cl->ssl);
	}
	if (cl->fd >= 0)
		close(cl->fd);
	cl->ssl = NULL;
	cl->fd = -1;
}

/* Reads up to and including CRLF into @buf; returns its length or -errno. */
static int
read_line(SSL *ssl, char *buf, size_t len)
{
	size_t got = 0;

	while (got + 1 < len) {
		int n = SSL_read(ssl, buf + got, 1);

		if (n <= 0)
			return -EPROTO;
		got++;
		if (got >= 2 && buf[got - 2] == '\r' && buf[got - 1] == '\n') {
			buf[got] = '\0';
			return (int)got;
		}
	}
	return -EPROTO;
}

int
tlssrv_cmd(SSL *ssl, const char *req, char *out, size_t len)
{
	char line[64];
	long blen;
	int n, got = 0;

	ERR_clear_error();
	n = (int)strlen(req);
	if (SSL_write(ssl, req, n) != n)
		return -EPROTO;
	n = read_line(ssl, out, len);
	if (n < 0 || out[0] != '$')
		return n;
	blen = strtol(out + 1, NULL, 10);
	if (blen < 0 || (size_t)blen + 1 > len)
		return -EPROTO;
	while (got < blen) {
		n = SSL_read(ssl, out + got, (int)(blen - got));
		if (n <= 0)
			return -EPROTO;
		got += n;
	}
	out[got] = '\0';
	if (read_line(ssl, line, sizeof(line)) != 2)
		return -EPROTO;
	return got;
}
