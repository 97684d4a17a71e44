/* SPDX-License-Identifier: MIT */
/*
 * libcpool_tls: an OpenSSL session per pooled connection (cpool_tls.h).
 *
 * open    SSL_new on the caller's SSL_CTX, SNI and name verification, the
 *         endpoint's last session offered, the handshake on a nonblocking
 *         fd under poll() until the open's deadline (mode restored).
 * check   only ever called with the fd nonblocking: SSL_peek of one byte
 *         processes every record that has arrived. Application bytes are
 *         unexpected_data; a NewSessionTicket or KeyUpdate (or a partial
 *         record) ends in SSL_ERROR_WANT_READ: alive, the records consumed,
 *         so the socket is empty again. close_notify or an EOF is
 *         peer_closed. It never blocks: OpenSSL's AUTO_RETRY loops only
 *         while the socket has bytes.
 * release refuses a session with bytes OpenSSL holds (SSL_has_pending: the
 *         kernel no longer shows them, so the next checkout's probe could
 *         not) or that is shut down: stray bytes never reach the next
 *         caller.
 * I/O     through a socket BIO that writes with MSG_NOSIGNAL: no SIGPIPE,
 *         from the adapter or from a caller's SSL_write.
 * close   SSL_shutdown (one close_notify, never waiting for the reply, fd
 *         nonblocking) unless the close is quiet, then SSL_free; the pool
 *         closes the fd (SSL_set_fd's BIO does not).
 *
 * Sessions: with resume, the endpoint's most recent resumable session is
 * kept (one per address, under a mutex) and offered by the next handshake.
 * TLS 1.3 servers send their tickets after the handshake, so a connection
 * stores its session once it is resumable: after a check consumed records,
 * or at its close.
 */
#include "cpool_tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

struct tls_session {
	struct tls_session *next;
	SSL_SESSION *sess;
	char address[];
};

struct cpool_tls {
	SSL_CTX *ctx;
	char *server_name;
	bool verify;
	bool resume;
	pthread_mutex_t lock; /* sessions */
	struct tls_session *sessions;
	struct cpool_tls_stats st; /* atomics */
};

/* The connection's context: its session and whether it was stored. */
struct tls_conn {
	SSL *ssl;
	bool stored;
};

#define ADD(p) __atomic_add_fetch((p), 1, __ATOMIC_RELAXED)

/*
 * The session's BIO: OpenSSL's socket BIO, but writing with send(2) and
 * MSG_NOSIGNAL, so neither the adapter's close_notify nor a caller's
 * SSL_write on a connection the peer has closed raises SIGPIPE.
 */
static BIO_METHOD *nosig_method;
static pthread_once_t nosig_once = PTHREAD_ONCE_INIT;

static int
nosig_write(BIO *b, const char *buf, int len)
{
	int fd = -1, n;

	BIO_get_fd(b, &fd);
	do {
		n = (int)send(fd, buf, (size_t)len, MSG_NOSIGNAL);
	} while (n == -1 && errno == EINTR);
	BIO_clear_retry_flags(b);
	if (n <= 0 && BIO_sock_should_retry(n))
		BIO_set_retry_write(b);
	return n;
}

static void
nosig_init(void)
{
	const BIO_METHOD *sock = BIO_s_socket();
	BIO_METHOD *m = BIO_meth_new(BIO_TYPE_SOCKET, "cpool socket");

	if (!m)
		return;
	BIO_meth_set_write(m, nosig_write);
	BIO_meth_set_read(m, BIO_meth_get_read(sock));
	BIO_meth_set_puts(m, BIO_meth_get_puts(sock));
	BIO_meth_set_ctrl(m, BIO_meth_get_ctrl(sock));
	BIO_meth_set_create(m, BIO_meth_get_create(sock));
	BIO_meth_set_destroy(m, BIO_meth_get_destroy(sock));
	nosig_method = m;
}

/* SSL_set_fd() with the MSG_NOSIGNAL BIO: 1 or 0. */
static int
set_fd_nosig(SSL *ssl, int fd)
{
	BIO *bio;

	pthread_once(&nosig_once, nosig_init);
	if (!nosig_method || !(bio = BIO_new(nosig_method)))
		return 0;
	BIO_set_fd(bio, fd, BIO_NOCLOSE);
	SSL_set_bio(ssl, bio, bio);
	return 1;
}

void
cpool_tls_config_init(struct cpool_tls_config *cfg)
{
	if (!cfg)
		return;
	memset(cfg, 0, sizeof(*cfg));
	cfg->size = sizeof(*cfg);
	cfg->verify = true;
	cfg->resume = true;
}

int
cpool_tls_new(const struct cpool_tls_config *cfg, struct cpool_tls **out)
{
	struct cpool_tls *t;

	if (!cfg || !out || cfg->size < sizeof(*cfg) || !cfg->ctx)
		return -EINVAL;
	t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	if (cfg->server_name && !(t->server_name = strdup(cfg->server_name))) {
		free(t);
		return -ENOMEM;
	}
	SSL_CTX_up_ref(cfg->ctx);
	t->ctx = cfg->ctx;
	t->verify = cfg->verify;
	t->resume = cfg->resume;
	pthread_mutex_init(&t->lock, NULL);
	*out = t;
	return 0;
}

void
cpool_tls_free(struct cpool_tls *t)
{
	struct tls_session *s, *next;

	if (!t)
		return;
	for (s = t->sessions; s; s = next) {
		next = s->next;
		SSL_SESSION_free(s->sess);
		free(s);
	}
	pthread_mutex_destroy(&t->lock);
	SSL_CTX_free(t->ctx);
	free(t->server_name);
	free(t);
}

/* A copy of the endpoint's session, or NULL. */
static SSL_SESSION *
session_get(struct cpool_tls *t, const char *address)
{
	SSL_SESSION *sess = NULL;
	struct tls_session *s;

	pthread_mutex_lock(&t->lock);
	for (s = t->sessions; s; s = s->next)
		if (!strcmp(s->address, address)) {
			/* A copy: handshakes on two threads at once must not
			 * share one SSL_SESSION (OpenSSL updates it). */
			sess = SSL_SESSION_dup(s->sess);
			break;
		}
	pthread_mutex_unlock(&t->lock);
	return sess;
}

/* Keeps @ssl's session for its endpoint if it can be resumed. */
static void
session_put(struct cpool_tls *t, struct tls_conn *tc, const char *address)
{
	SSL_SESSION *sess;
	struct tls_session *s;

	if (!t->resume || tc->stored)
		return;
	sess = SSL_get1_session(tc->ssl);
	if (!sess)
		return;
	if (!SSL_SESSION_is_resumable(sess)) {
		SSL_SESSION_free(sess);
		return;
	}
	tc->stored = true;
	pthread_mutex_lock(&t->lock);
	for (s = t->sessions; s; s = s->next)
		if (!strcmp(s->address, address))
			break;
	if (!s && (s = calloc(1, sizeof(*s) + strlen(address) + 1))) {
		strcpy(s->address, address);
		s->next = t->sessions;
		t->sessions = s;
	}
	if (s) {
		SSL_SESSION_free(s->sess);
		s->sess = sess;
	} else {
		SSL_SESSION_free(sess);
	}
	pthread_mutex_unlock(&t->lock);
}

/* The host part of "host:port" or "[v6]:port" into @buf; false if none. */
static bool
host_of(const char *address, char *buf, size_t len)
{
	const char *end;
	size_t n;

	if (!strncmp(address, "unix:", 5))
		return false;
	if (address[0] == '[') {
		address++;
		end = strchr(address, ']');
	} else {
		end = strrchr(address, ':');
	}
	if (!end || end == address)
		return false;
	n = (size_t)(end - address);
	if (n >= len)
		return false;
	memcpy(buf, address, n);
	buf[n] = '\0';
	return true;
}

static bool
is_ip(const char *name)
{
	unsigned char b[16];

	return inet_pton(AF_INET, name, b) == 1 ||
	       inet_pton(AF_INET6, name, b) == 1;
}

static int
set_nonblock(int fd, bool on, int *old)
{
	int fl = fcntl(fd, F_GETFL);

	if (fl == -1)
		return -errno;
	*old = fl;
	if (!!(fl & O_NONBLOCK) == on)
		return 0;
	return fcntl(fd, F_SETFL, on ? fl | O_NONBLOCK : fl & ~O_NONBLOCK) == -1
		       ? -errno
		       : 0;
}

static int64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* SSL_connect on a nonblocking fd until done or @deadline: 0 or -errno. */
static int
handshake(SSL *ssl, int fd, int64_t deadline)
{
	struct pollfd pfd = { .fd = fd };
	int rc, err, left;

	for (;;) {
		ERR_clear_error();
		rc = SSL_connect(ssl);
		if (rc == 1)
			return 0;
		err = SSL_get_error(ssl, rc);
		if (err == SSL_ERROR_WANT_READ)
			pfd.events = POLLIN;
		else if (err == SSL_ERROR_WANT_WRITE)
			pfd.events = POLLOUT;
		else if (err == SSL_ERROR_SYSCALL)
			return errno ? -errno : -ECONNRESET;
		else if (SSL_get_verify_result(ssl) != X509_V_OK)
			return -EPERM;
		else
			return -EPROTO;
		left = (int)(deadline - now_ms());
		if (left <= 0)
			return -ETIMEDOUT;
		rc = poll(&pfd, 1, left);
		if (rc == -1 && errno != EINTR)
			return -errno;
	}
}

static int
tls_open(struct cpool_conn *c, unsigned timeout_ms, void *arg)
{
	struct cpool_tls *t = arg;
	const char *address = cpool_conn_address(c);
	int fd = cpool_conn_fd(c), fl, err;
	char host[256];
	const char *name = t->server_name;
	SSL_SESSION *sess;
	struct tls_conn *tc;
	SSL *ssl;

	if (!name && host_of(address, host, sizeof(host)))
		name = host;
	tc = calloc(1, sizeof(*tc));
	ssl = tc ? SSL_new(t->ctx) : NULL;
	if (!ssl) {
		free(tc);
		ADD(&t->st.handshake_failures);
		return -ENOMEM;
	}
	err = -EPROTO;
	if (!set_fd_nosig(ssl, fd))
		goto fail;
	if (name && *name && !is_ip(name) &&
	    !SSL_set_tlsext_host_name(ssl, name))
		goto fail;
	if (t->verify) {
		SSL_set_verify(ssl, SSL_VERIFY_PEER, NULL);
		err = -EINVAL; /* nothing to verify against */
		if (!name || !*name)
			goto fail;
		if (is_ip(name) ? !X509_VERIFY_PARAM_set1_ip_asc(
					  SSL_get0_param(ssl), name)
				: !SSL_set1_host(ssl, name))
			goto fail;
	}
	if (t->resume && (sess = session_get(t, address))) {
		SSL_set_session(ssl, sess);
		SSL_SESSION_free(sess);
	}
	err = set_nonblock(fd, true, &fl);
	if (!err) {
		err = handshake(ssl, fd, now_ms() + (int64_t)timeout_ms);
		if (fcntl(fd, F_SETFL, fl) == -1 && !err)
			err = -errno;
	}
	if (err)
		goto fail;
	tc->ssl = ssl;
	cpool_conn_set_ctx(c, tc);
	ADD(&t->st.handshakes);
	if (SSL_session_reused(ssl))
		ADD(&t->st.resumed);
	session_put(t, tc, address); /* TLS 1.2: resumable already */
	return 0;
fail:
	ADD(&t->st.handshake_failures);
	SSL_free(ssl);
	free(tc);
	return err;
}

static enum cpool_verdict
tls_check(struct cpool_conn *c, enum cpool_verdict tcp, void *arg)
{
	struct tls_conn *tc = cpool_conn_ctx(c);
	struct cpool_tls *t = arg;
	unsigned char b;
	int n, err;

	if (!tc)
		return CPOOL_SOCKET_ERROR;
	if (SSL_get_shutdown(tc->ssl) & SSL_RECEIVED_SHUTDOWN)
		return CPOOL_PEER_CLOSED;
	if (SSL_pending(tc->ssl) > 0)
		return CPOOL_UNEXPECTED_DATA;
	ERR_clear_error();
	errno = 0;
	n = SSL_peek(tc->ssl, &b, 1);
	if (n > 0)
		return CPOOL_UNEXPECTED_DATA;
	err = SSL_get_error(tc->ssl, n);
	switch (err) {
	case SSL_ERROR_WANT_READ:
	case SSL_ERROR_WANT_WRITE:
		/* Only records of TLS itself, or part of one: alive. */
		ADD(&t->st.records_consumed);
		session_put(t, tc, cpool_conn_address(c));
		return CPOOL_ALIVE;
	case SSL_ERROR_ZERO_RETURN:
		return CPOOL_PEER_CLOSED; /* close_notify */
	case SSL_ERROR_SYSCALL:
		if (errno == ECONNRESET || errno == EPIPE)
			return CPOOL_PEER_RESET;
		if (errno == ETIMEDOUT || errno == EHOSTUNREACH ||
		    errno == ENETUNREACH)
			return CPOOL_TIMED_OUT;
		return errno ? CPOOL_SOCKET_ERROR : CPOOL_PEER_CLOSED;
	case SSL_ERROR_SSL:
		/* OpenSSL 3 reports an EOF without close_notify here. */
		if (ERR_GET_REASON(ERR_peek_last_error()) ==
		    SSL_R_UNEXPECTED_EOF_WHILE_READING)
			return CPOOL_PEER_CLOSED;
		return CPOOL_SOCKET_ERROR;
	default:
		return CPOOL_SOCKET_ERROR;
	}
}

static int
tls_release(struct cpool_conn *c, void *arg)
{
	struct tls_conn *tc = cpool_conn_ctx(c);

	return !tc || SSL_has_pending(tc->ssl) || SSL_get_shutdown(tc->ssl);
}

static int
tls_close(struct cpool_conn *c, enum cpool_close_reason reason, unsigned flags,
	  void *arg)
{
	struct tls_conn *tc = cpool_conn_ctx(c);
	struct cpool_tls *t = arg;
	int fl;

	if (!tc)
		return 0;
	if (flags & CPOOL_CLOSE_QUIET) {
		ADD(&t->st.quiet_closes);
	} else {
		session_put(t, tc, cpool_conn_address(c));
		if (!(SSL_get_shutdown(tc->ssl) & SSL_SENT_SHUTDOWN) &&
		    !set_nonblock(cpool_conn_fd(c), true, &fl)) {
			ERR_clear_error();
			SSL_shutdown(tc->ssl); /* one close_notify, no wait */
			ADD(&t->st.close_notifies);
		}
	}
	SSL_free(tc->ssl);
	free(tc);
	cpool_conn_set_ctx(c, NULL);
	ERR_clear_error();
	return 0;
}

static const struct cpool_conn_ops tls_ops = {
	.size = sizeof(struct cpool_conn_ops),
	.open = tls_open,
	.check = tls_check,
	.release = tls_release,
	.close = tls_close,
};

const struct cpool_conn_ops *
cpool_tls_ops(void)
{
	return &tls_ops;
}

void
cpool_tls_install(struct cpool_tls *t, struct cpool_config *cfg)
{
	if (!t || !cfg)
		return;
	cfg->conn_ops = &tls_ops;
	cfg->conn_ops_arg = t;
}

SSL *
cpool_tls_ssl(const struct cpool_conn *c)
{
	struct tls_conn *tc = c ? cpool_conn_ctx(c) : NULL;

	return tc ? tc->ssl : NULL;
}

int
cpool_tls_stats_get(const struct cpool_tls *t, struct cpool_tls_stats *out)
{
	struct cpool_tls_stats st;

	if (!t || !out || out->size < sizeof(size_t))
		return -EINVAL;
	st.size = sizeof(st);
#define L(f) st.f = __atomic_load_n(&t->st.f, __ATOMIC_RELAXED)
	L(handshakes);
	L(resumed);
	L(handshake_failures);
	L(records_consumed);
	L(close_notifies);
	L(quiet_closes);
#undef L
	memcpy((char *)out + sizeof(size_t), (char *)&st + sizeof(size_t),
	       (out->size < sizeof(st) ? out->size : sizeof(st)) -
		       sizeof(size_t));
	return 0;
}
