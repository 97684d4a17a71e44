/* SPDX-License-Identifier: MIT */
/*
 * cpool_tls: an OpenSSL session per pooled connection (include/cpool_tls.h).
 *
 * open handshakes once, on the fd made nonblocking for the call and polled
 * against the open's deadline, so a server that accepts and then says
 * nothing cannot hold the acquire past connect_timeout_ms whatever the
 * handout mode. check reads *through* TLS (SSL_peek on the nonblocking fd
 * the pool gives it): TLS 1.3 NewSessionTicket and KeyUpdate records are
 * consumed and the connection is kept; close_notify or an EOF is
 * peer_closed; application bytes are unexpected_data.
 *
 * Bytes OpenSSL already took off the socket are invisible to the pool's
 * MSG_PEEK probe, which would call such a connection alive. They can only
 * get there while a caller reads (SSL_read pulled a record it did not
 * consume) or while check reads part of a record, so release refuses
 * reuse when SSL_has_pending() is true and check calls a partial record
 * unexpected_data: no stray byte ever reaches the next lease, and no
 * check_idle_ms is needed for this (a caller may still set it for an
 * application-level ping).
 *
 * Resumption keeps the last resumable SSL_SESSION per endpoint address in a
 * small list under a mutex; a handshake takes it out (one use per session,
 * see sess_take()). TLS 1.3 tickets arrive after the handshake, so
 * the stored session is refreshed whenever one may have become available:
 * after open, after a check consumed records, at release and at a close in
 * the creating process. The caller's SSL_CTX is never changed (no session
 * callback, no cache mode).
 *
 * No SIGPIPE, like the rest of cpool (cpool.h): the SSL object writes
 * through a socket BIO of ours whose write is send(MSG_NOSIGNAL), so
 * neither the adapter's close_notify nor a caller's SSL_write to a peer
 * that is gone can kill the process; they fail with EPIPE instead.
 *
 * Failures of open, as -errno: -ETIMEDOUT the deadline passed; -EPERM the
 * chain or the name did not verify; -ECONNRESET / -ECONNABORTED the peer
 * reset or closed during the handshake; -EPROTO any other TLS error;
 * -ENOMEM.
 */
#include "cpool_tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

struct tls_sess {
	struct tls_sess *next;
	SSL_SESSION *sess;
	char address[];
};

struct cpool_tls {
	SSL_CTX *ctx;
	char *server_name;
	bool verify, resume;
	pid_t pid;		/* the creator: a fork child stores nothing */
	pthread_mutex_t mu;	/* guards sessions */
	struct tls_sess *sessions;
	atomic_uint_fast64_t handshakes, resumed, handshake_failures;
	atomic_uint_fast64_t records_consumed, close_notifies, quiet_closes;
};

static const struct cpool_conn_ops tls_ops;

static BIO_METHOD *nosig_method;
static pthread_once_t nosig_once = PTHREAD_ONCE_INIT;

/* BIO_s_socket()'s write, but send(MSG_NOSIGNAL): EPIPE, never SIGPIPE. */
static int
nosig_write(BIO *b, const char *buf, int len)
{
	int fd = (int)BIO_get_fd(b, NULL);
	ssize_t n;

	errno = 0;
	n = send(fd, buf, (size_t)len, MSG_NOSIGNAL);
	BIO_clear_retry_flags(b);
	if (n == -1 && BIO_sock_should_retry(-1))
		BIO_set_retry_write(b);
	return (int)n;
}

/* BIO_s_socket() with our write; everything else is OpenSSL's own. */
static void
nosig_init(void)
{
	const BIO_METHOD *sock = BIO_s_socket();
	BIO_METHOD *m;

	m = BIO_meth_new(BIO_TYPE_SOCKET, "cpool socket");
	if (!m)
		return;
	if (!BIO_meth_set_write(m, nosig_write) ||
	    !BIO_meth_set_read(m, BIO_meth_get_read(sock)) ||
	    !BIO_meth_set_puts(m, BIO_meth_get_puts(sock)) ||
	    !BIO_meth_set_ctrl(m, BIO_meth_get_ctrl(sock)) ||
	    !BIO_meth_set_create(m, BIO_meth_get_create(sock)) ||
	    !BIO_meth_set_destroy(m, BIO_meth_get_destroy(sock))) {
		BIO_meth_free(m);
		return;
	}
	nosig_method = m; /* lives as long as the process */
}

/* A BIO on @fd that does not close it (the pool owns the fd). */
static BIO *
nosig_bio(int fd)
{
	BIO *b;

	pthread_once(&nosig_once, nosig_init);
	if (!nosig_method)
		return NULL;
	b = BIO_new(nosig_method);
	if (b)
		BIO_set_fd(b, fd, BIO_NOCLOSE);
	return b;
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

/*
 * Fills the extension caches of the trusted certificates now, on one
 * thread. OpenSSL 3.0 fills them lazily at the first verification
 * (ossl_x509v3_cache_extensions) and tests its "done" flag outside the
 * lock, so the first handshakes of a pool, running on several threads at
 * once against one X509_STORE, race on the CA certificate (TSan saw it in
 * tls/restart_under_load_no_stale). Certificates a by-directory lookup
 * loads later are not covered.
 */
static void
prime_store(SSL_CTX *ctx)
{
	X509_STORE *store = SSL_CTX_get_cert_store(ctx);
	STACK_OF(X509_OBJECT) *objs;

	if (!store || !X509_STORE_lock(store))
		return;
	objs = X509_STORE_get0_objects(store);
	for (int i = 0; objs && i < sk_X509_OBJECT_num(objs); i++) {
		X509 *x = X509_OBJECT_get0_X509(sk_X509_OBJECT_value(objs, i));

		if (x)
			X509_check_purpose(x, -1, 0);
	}
	X509_STORE_unlock(store);
}

int
cpool_tls_new(const struct cpool_tls_config *cfg, struct cpool_tls **out)
{
	struct cpool_tls *tls;

	if (!cfg || !out || !cfg->ctx || cfg->size != sizeof(*cfg))
		return -EINVAL;
	tls = calloc(1, sizeof(*tls));
	if (!tls)
		return -ENOMEM;
	if (cfg->server_name) {
		tls->server_name = strdup(cfg->server_name);
		if (!tls->server_name) {
			free(tls);
			return -ENOMEM;
		}
	}
	if (pthread_mutex_init(&tls->mu, NULL)) {
		free(tls->server_name);
		free(tls);
		return -ENOMEM;
	}
	SSL_CTX_up_ref(cfg->ctx);
	tls->ctx = cfg->ctx;
	prime_store(cfg->ctx);
	tls->verify = cfg->verify;
	tls->resume = cfg->resume;
	tls->pid = getpid();
	*out = tls;
	return 0;
}

void
cpool_tls_free(struct cpool_tls *tls)
{
	struct tls_sess *s, *next;

	if (!tls)
		return;
	for (s = tls->sessions; s; s = next) {
		next = s->next;
		SSL_SESSION_free(s->sess);
		free(s);
	}
	pthread_mutex_destroy(&tls->mu);
	SSL_CTX_free(tls->ctx);
	free(tls->server_name);
	free(tls);
}

void
cpool_tls_install(struct cpool_tls *tls, struct cpool_config *cfg)
{
	cfg->conn_ops = &tls_ops;
	cfg->conn_ops_arg = tls;
}

const struct cpool_conn_ops *
cpool_tls_ops(void)
{
	return &tls_ops;
}

SSL *
cpool_tls_ssl(const struct cpool_conn *c)
{
	return c ? cpool_conn_ctx(c) : NULL;
}

int
cpool_tls_stats_get(const struct cpool_tls *tls, struct cpool_tls_stats *out)
{
	struct cpool_tls_stats st;
	size_t n;

	if (!tls || !out || out->size < sizeof(size_t))
		return -EINVAL;
	memset(&st, 0, sizeof(st));
	st.handshakes = atomic_load(&tls->handshakes);
	st.resumed = atomic_load(&tls->resumed);
	st.handshake_failures = atomic_load(&tls->handshake_failures);
	st.records_consumed = atomic_load(&tls->records_consumed);
	st.close_notifies = atomic_load(&tls->close_notifies);
	st.quiet_closes = atomic_load(&tls->quiet_closes);
	n = out->size < sizeof(st) ? out->size : sizeof(st);
	st.size = out->size;
	memcpy(out, &st, n);
	return 0;
}

/*
 * Takes the stored session of @address out of the store (the caller owns
 * the reference), or NULL. A session is offered by one handshake only: a
 * TLS 1.3 ticket should be used once (RFC 8446, C.4), and two handshakes
 * resuming one SSL_SESSION at once race inside OpenSSL 3.0 on the shared
 * peer certificate (TSan saw it in tls/restart_under_load_no_stale). The
 * new connection stores its own session once its tickets arrive.
 */
static SSL_SESSION *
sess_take(struct cpool_tls *tls, const char *address)
{
	SSL_SESSION *sess = NULL;
	struct tls_sess **pp, *s;

	pthread_mutex_lock(&tls->mu);
	for (pp = &tls->sessions; (s = *pp); pp = &s->next)
		if (!strcmp(s->address, address)) {
			sess = s->sess;
			*pp = s->next;
			free(s);
			break;
		}
	pthread_mutex_unlock(&tls->mu);
	return sess;
}

/*
 * Keeps @ssl's session for its endpoint when it can be resumed and is not
 * the one stored already. Never in a fork child: the mutex may have been
 * held by a parent's thread at the fork, and the child's copy dies anyway.
 */
static int stored_idx = -1; /* SSL ex_data: the session last stored */
static pthread_once_t stored_once = PTHREAD_ONCE_INIT;

static void
stored_init(void)
{
	stored_idx = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
}

static void
sess_put(struct cpool_tls *tls, struct cpool_conn *c, SSL *ssl)
{
	const char *address = cpool_conn_address(c);
	SSL_SESSION *sess = SSL_get0_session(ssl);
	struct tls_sess *s;
	size_t len;

	/*
	 * Each session once: release runs this on every lease, and a session
	 * this connection stored already needs no lock and no getpid().
	 */
	if (!tls->resume || !sess || stored_idx < 0 ||
	    SSL_get_ex_data(ssl, stored_idx) == sess ||
	    !SSL_SESSION_is_resumable(sess) || getpid() != tls->pid ||
	    !address)
		return;
	SSL_set_ex_data(ssl, stored_idx, sess); /* a mark, no reference */
	pthread_mutex_lock(&tls->mu);
	for (s = tls->sessions; s; s = s->next)
		if (!strcmp(s->address, address))
			break;
	if (s && s->sess != sess) {
		SSL_SESSION_free(s->sess);
		SSL_SESSION_up_ref(sess);
		s->sess = sess;
	} else if (!s) {
		len = strlen(address) + 1;
		s = malloc(sizeof(*s) + len);
		if (s) {
			memcpy(s->address, address, len);
			SSL_SESSION_up_ref(sess);
			s->sess = sess;
			s->next = tls->sessions;
			tls->sessions = s;
		}
	}
	pthread_mutex_unlock(&tls->mu);
}

/* The host part of "host:port" or "[v6]:port" into @buf. */
static int
host_of(const char *address, char *buf, size_t len)
{
	const char *end;
	size_t n;

	if (!address)
		return -EINVAL;
	if (address[0] == '[') {
		end = strchr(address, ']');
		if (!end)
			return -EINVAL;
		address++;
	} else {
		end = strrchr(address, ':');
		if (!end)
			end = address + strlen(address);
	}
	n = (size_t)(end - address);
	if (n == 0 || n >= len)
		return -EINVAL;
	memcpy(buf, address, n);
	buf[n] = '\0';
	return 0;
}

static bool
is_ip_literal(const char *host)
{
	unsigned char b[16];

	return inet_pton(AF_INET, host, b) == 1 ||
	       inet_pton(AF_INET6, host, b) == 1;
}

/* SNI and the name to verify: a DNS name gets both, an IP literal neither
 * SNI (RFC 6066 forbids it) but an IP check. */
static int
set_names(struct cpool_tls *tls, struct cpool_conn *c, SSL *ssl)
{
	char host[256];
	const char *name = tls->server_name;
	int err;

	if (!name) {
		err = host_of(cpool_conn_address(c), host, sizeof(host));
		if (err)
			return err;
		name = host;
	}
	if (is_ip_literal(name)) {
		if (tls->verify &&
		    !X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), name))
			return -EINVAL;
		return 0;
	}
	if (!SSL_set_tlsext_host_name(ssl, name))
		return -EINVAL;
	if (tls->verify && !SSL_set1_host(ssl, name))
		return -ENOMEM;
	return 0;
}

static int64_t
mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Maps a failed SSL_connect to -errno; @ret its return value. */
static int
handshake_err(SSL *ssl, int ret, int saved_errno)
{
	unsigned long e;

	switch (SSL_get_error(ssl, ret)) {
	case SSL_ERROR_SYSCALL:
		if (saved_errno == ECONNRESET || saved_errno == EPIPE)
			return -ECONNRESET;
		return -ECONNABORTED;
	case SSL_ERROR_ZERO_RETURN:
		return -ECONNABORTED;
	case SSL_ERROR_SSL:
		if (SSL_get_verify_result(ssl) != X509_V_OK)
			return -EPERM;
		e = ERR_peek_last_error();
		if (ERR_GET_REASON(e) == SSL_R_UNEXPECTED_EOF_WHILE_READING)
			return -ECONNABORTED;
		if (ERR_GET_REASON(e) == SSL_R_CERTIFICATE_VERIFY_FAILED)
			return -EPERM;
		return -EPROTO;
	default:
		return -EPROTO;
	}
}

/*
 * SSL_connect on @fd made nonblocking, poll()ing for what it wants until
 * @timeout_ms from now. Returns 0 or -errno.
 */
static int
handshake(SSL *ssl, int fd, unsigned timeout_ms)
{
	int64_t deadline = mono_ms() + timeout_ms;
	struct pollfd pfd = { .fd = fd };
	int ret, err;

	for (;;) {
		ERR_clear_error();
		errno = 0;
		ret = SSL_connect(ssl);
		if (ret == 1)
			return 0;
		err = SSL_get_error(ssl, ret);
		if (err == SSL_ERROR_WANT_READ)
			pfd.events = POLLIN;
		else if (err == SSL_ERROR_WANT_WRITE)
			pfd.events = POLLOUT;
		else
			return handshake_err(ssl, ret, errno);
		for (;;) {
			int64_t left = deadline - mono_ms();

			if (left <= 0)
				return -ETIMEDOUT;
			ret = poll(&pfd, 1, (int)left);
			if (ret > 0)
				break;
			if (ret == -1 && errno != EINTR)
				return -errno;
		}
	}
}

static int
tls_open(struct cpool_conn *c, unsigned timeout_ms, void *arg)
{
	struct cpool_tls *tls = arg;
	int fd = cpool_conn_fd(c);
	SSL_SESSION *sess = NULL;
	SSL *ssl;
	BIO *bio;
	int err, fl;

	pthread_once(&stored_once, stored_init);
	ssl = SSL_new(tls->ctx);
	if (!ssl) {
		err = -ENOMEM;
		goto fail;
	}
	bio = nosig_bio(fd);
	if (!bio) {
		err = -ENOMEM;
		goto fail;
	}
	SSL_set_bio(ssl, bio, bio); /* the SSL owns it now */
	/* Keep the caller's verify callback: only the mode is ours. */
	SSL_set_verify(ssl, tls->verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE,
		       SSL_get_verify_callback(ssl));
	err = set_names(tls, c, ssl);
	if (err)
		goto fail;
	if (tls->resume) {
		sess = sess_take(tls, cpool_conn_address(c));
		if (sess && !SSL_set_session(ssl, sess)) {
			err = -EPROTO;
			goto fail;
		}
	}
	fl = fcntl(fd, F_GETFL);
	if (fl == -1) {
		err = -errno;
		goto fail;
	}
	if (!(fl & O_NONBLOCK) && fcntl(fd, F_SETFL, fl | O_NONBLOCK) == -1) {
		err = -errno;
		goto fail;
	}
	err = handshake(ssl, fd, timeout_ms);
	if (!(fl & O_NONBLOCK) && fcntl(fd, F_SETFL, fl) == -1 && !err)
		err = -errno;
	if (err)
		goto fail;
	SSL_SESSION_free(sess);
	atomic_fetch_add(&tls->handshakes, 1);
	if (SSL_session_reused(ssl))
		atomic_fetch_add(&tls->resumed, 1);
	sess_put(tls, c, ssl); /* TLS 1.2: resumable already */
	cpool_conn_set_ctx(c, ssl);
	return 0;
fail:
	atomic_fetch_add(&tls->handshake_failures, 1);
	ERR_clear_error();
	SSL_SESSION_free(sess);
	SSL_free(ssl);
	return err;
}

/*
 * Reads through TLS without blocking (the pool made the fd nonblocking).
 * SSL_peek processes every complete record waiting (tickets, KeyUpdate) and
 * stops at the first application byte, which stays for nobody: the
 * connection is then closed as unexpected_data anyway.
 */
static enum cpool_verdict
tls_check(struct cpool_conn *c, enum cpool_verdict tcp, void *arg)
{
	struct cpool_tls *tls = arg;
	SSL *ssl = cpool_conn_ctx(c);
	unsigned long e;
	char b;
	int ret;

	if (!ssl)
		return CPOOL_SOCKET_ERROR;
	if (SSL_pending(ssl) > 0)
		return CPOOL_UNEXPECTED_DATA;
	if (SSL_get_shutdown(ssl) & SSL_RECEIVED_SHUTDOWN)
		return CPOOL_PEER_CLOSED;
	ERR_clear_error();
	errno = 0;
	ret = SSL_peek(ssl, &b, 1);
	if (ret > 0)
		return CPOOL_UNEXPECTED_DATA;
	switch (SSL_get_error(ssl, ret)) {
	case SSL_ERROR_WANT_READ:
	case SSL_ERROR_WANT_WRITE: /* a KeyUpdate reply waits to go out */
		/*
		 * Every complete record was processed, so what OpenSSL still
		 * holds is part of one record. The socket is empty now, the
		 * probe would call the connection alive, and if that record
		 * is application data its bytes would reach the next lease:
		 * close it. (A post-handshake record split across segments
		 * costs a reconnect; a stray byte to a caller costs more.)
		 */
		if (SSL_has_pending(ssl))
			return CPOOL_UNEXPECTED_DATA;
		if (tcp == CPOOL_UNEXPECTED_DATA)
			atomic_fetch_add(&tls->records_consumed, 1);
		sess_put(tls, c, ssl); /* a ticket may have come */
		return CPOOL_ALIVE;
	case SSL_ERROR_ZERO_RETURN:
		return CPOOL_PEER_CLOSED;
	case SSL_ERROR_SYSCALL:
		if (errno == ECONNRESET || errno == EPIPE)
			return CPOOL_PEER_RESET;
		if (errno == 0)
			return CPOOL_PEER_CLOSED; /* EOF without close_notify */
		return CPOOL_SOCKET_ERROR;
	case SSL_ERROR_SSL:
		e = ERR_peek_last_error();
		ERR_clear_error();
		if (ERR_GET_REASON(e) == SSL_R_UNEXPECTED_EOF_WHILE_READING)
			return CPOOL_PEER_CLOSED;
		return CPOOL_SOCKET_ERROR;
	default:
		ERR_clear_error();
		return CPOOL_SOCKET_ERROR;
	}
}

/*
 * Refuses reuse when OpenSSL holds bytes the socket no longer shows (the
 * probe could not see them), or the session is shut down or unfinished.
 */
static int
tls_release(struct cpool_conn *c, void *arg)
{
	SSL *ssl = cpool_conn_ctx(c);

	if (!ssl || SSL_has_pending(ssl) || SSL_pending(ssl) > 0 ||
	    SSL_get_shutdown(ssl) || !SSL_is_init_finished(ssl))
		return 1;
	sess_put(arg, c, ssl);
	return 0;
}

/*
 * A loud close sends close_notify once, on the fd made nonblocking (the
 * pool closes it right after: its mode no longer matters), and never waits
 * for the reply. A quiet one does no I/O: SSL_free alone writes nothing.
 */
static int
tls_close(struct cpool_conn *c, enum cpool_close_reason reason, unsigned flags,
	  void *arg)
{
	struct cpool_tls *tls = arg;
	SSL *ssl = cpool_conn_ctx(c);
	int fd = cpool_conn_fd(c), fl;

	if (!ssl)
		return 0;
	if (flags & CPOOL_CLOSE_QUIET) {
		atomic_fetch_add(&tls->quiet_closes, 1);
	} else {
		fl = fcntl(fd, F_GETFL);
		if (fl != -1 && !(fl & O_NONBLOCK))
			fcntl(fd, F_SETFL, fl | O_NONBLOCK);
		sess_put(tls, c, ssl);
		ERR_clear_error();
		SSL_shutdown(ssl);
		atomic_fetch_add(&tls->close_notifies, 1);
	}
	ERR_clear_error();
	SSL_free(ssl);
	cpool_conn_set_ctx(c, NULL);
	return 0;
}

static const struct cpool_conn_ops tls_ops = {
	.size = sizeof(struct cpool_conn_ops),
	.open = tls_open,
	.check = tls_check,
	.release = tls_release,
	.close = tls_close,
};
