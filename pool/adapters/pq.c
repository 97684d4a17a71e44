/* SPDX-License-Identifier: MIT */
/*
 * libcpool_pq: PostgreSQL connections (libpq) as cpool connection ops.
 *
 * libpq opens its own socket, so the adapter dials (ops->dial): the
 * caller's keywords plus host/hostaddr/port from the endpoint go to
 * PQconnectStartParams(), and PQconnectPoll() is driven with poll() on
 * PQsocket() until CONNECTION_OK or the deadline. The fd handed to the pool
 * is a duplicate of PQsocket() (the same socket, always O_NONBLOCK at the
 * OS level; libpq makes it so): libpq closes its own number when it loses
 * the connection and in PQfinish(), and the pool closes its duplicate.
 *
 * Per connection the adapter keeps a small struct pq_conn (the cpool ctx):
 * the PGconn and a flag its notice receiver sets when the server sends an
 * ERROR with severity FATAL or PANIC while the connection is idle. libpq
 * hands such a message (pg_terminate_backend's "terminating connection due
 * to administrator command", an idle_session_timeout, a shutdown) to the
 * notice receiver, not to PQgetResult(), and the FIN behind it may arrive a
 * moment later: the flag lets check declare the connection dead at once.
 * The adapter owns the notice receiver of its connections (libpq's default
 * prints to stderr, and the library never prints): notices are dropped. A
 * caller may install its own during a lease; the next check puts the
 * adapter's back.
 *
 * release refuses (the pool closes the connection, by_caller) anything but
 * CONNECTION_OK + PQTRANS_IDLE. It does not ROLLBACK: a bounded ROLLBACK
 * needs a nonblocking send, a wait for the reply with a deadline and a
 * cancel path for a query still running, and every failure of that path
 * ends in a close anyway; the close's Terminate makes the server roll the
 * transaction back. Refusing is the safe choice and costs one reconnect.
 */
#include "cpool_pq.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

struct cpool_pq {
	char **keywords; /* NULL-ended copies; n entries */
	char **values;
	size_t n;
	cpool_pq_notify_fn *notify;
	void *notify_arg;
	/* counters, atomics (relaxed) */
	uint64_t connects;
	uint64_t connect_failures;
	uint64_t finishes;
	uint64_t quiet_finishes;
	uint64_t refused;
	uint64_t notifies;
};

/* The cpool ctx of a connection. */
struct pq_conn {
	PGconn *conn;
	int fatal; /* set by the notice receiver: FATAL/PANIC seen */
};

#define ADD(p, v) __atomic_fetch_add((p), (v), __ATOMIC_RELAXED)
#define LOAD(p) __atomic_load_n((p), __ATOMIC_RELAXED)

void
cpool_pq_config_init(struct cpool_pq_config *cfg)
{
	if (!cfg)
		return;
	memset(cfg, 0, sizeof(*cfg));
	cfg->size = sizeof(*cfg);
}

void
cpool_pq_free(struct cpool_pq *pq)
{
	if (!pq)
		return;
	for (size_t i = 0; i < pq->n; i++) {
		free(pq->keywords[i]);
		free(pq->values[i]);
	}
	free(pq->keywords);
	free(pq->values);
	free(pq);
}

/* Keywords the endpoint sets: the caller may not. */
static bool
reserved_keyword(const char *kw)
{
	return !strcmp(kw, "host") || !strcmp(kw, "hostaddr") ||
	       !strcmp(kw, "port");
}

int
cpool_pq_new(const struct cpool_pq_config *cfg, struct cpool_pq **out)
{
	struct cpool_pq *pq;
	size_t n = 0;

	if (!cfg || !out || cfg->size < sizeof(*cfg))
		return -EINVAL;
	if (cfg->keywords && !cfg->values)
		return -EINVAL;
	if (cfg->keywords) {
		for (; cfg->keywords[n]; n++)
			if (!cfg->values[n] || reserved_keyword(cfg->keywords[n]))
				return -EINVAL;
	}
	pq = calloc(1, sizeof(*pq));
	if (!pq)
		return -ENOMEM;
	pq->keywords = calloc(n + 1, sizeof(char *));
	pq->values = calloc(n + 1, sizeof(char *));
	if (!pq->keywords || !pq->values)
		goto fail;
	for (; pq->n < n; pq->n++) {
		pq->keywords[pq->n] = strdup(cfg->keywords[pq->n]);
		pq->values[pq->n] = strdup(cfg->values[pq->n]);
		if (!pq->keywords[pq->n] || !pq->values[pq->n]) {
			pq->n++; /* free this pair too */
			goto fail;
		}
	}
	pq->notify = cfg->notify;
	pq->notify_arg = cfg->notify_arg;
	*out = pq;
	return 0;
fail:
	cpool_pq_free(pq);
	return -ENOMEM;
}

static uint64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/*
 * Notice receiver of every adapter connection: remembers a FATAL or PANIC
 * (the server's goodbye while idle), drops everything else.
 */
static void
pq_notice(void *arg, const PGresult *res)
{
	struct pq_conn *pc = arg;
	const char *sev = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);

	if (!sev)
		sev = PQresultErrorField(res, PG_DIAG_SEVERITY);
	if (sev && (!strcmp(sev, "FATAL") || !strcmp(sev, "PANIC")))
		__atomic_store_n(&pc->fatal, 1, __ATOMIC_RELAXED);
}

/*
 * Fills @host and @port from the endpoint's address: "name:port",
 * "[v6]:port", or "unix:/dir/.s.PGSQL.<port>" (host = /dir). Returns 0 or
 * -EINVAL.
 */
static int
split_address(const char *address, char *host, size_t hostlen, char *port,
	      size_t portlen)
{
	const char *colon, *slash, *name, *end;
	size_t n;

	if (!strncmp(address, "unix:", 5)) {
		const char *path = address + 5;

		slash = strrchr(path, '/');
		if (!slash || strncmp(slash + 1, ".s.PGSQL.", 9))
			return -EINVAL;
		n = slash == path ? 1 : (size_t)(slash - path);
		if (n >= hostlen || strlen(slash + 10) >= portlen ||
		    !slash[10])
			return -EINVAL;
		memcpy(host, path, n);
		host[n] = '\0';
		strcpy(port, slash + 10);
		return 0;
	}
	colon = strrchr(address, ':');
	if (!colon || !colon[1] || strlen(colon + 1) >= portlen)
		return -EINVAL;
	name = address;
	end = colon;
	if (*name == '[' && end > name && end[-1] == ']') {
		name++;
		end--;
	}
	n = (size_t)(end - name);
	if (n == 0 || n >= hostlen)
		return -EINVAL;
	memcpy(host, name, n);
	host[n] = '\0';
	strcpy(port, colon + 1);
	return 0;
}

/*
 * The errno of a failed connection attempt, from what libpq says: an
 * authentication failure (-EACCES), a refused connect or a missing unix
 * socket file (-ECONNREFUSED: nobody listens), anything else -EPROTO.
 */
static int
dial_error(PGconn *conn)
{
	const char *msg = PQerrorMessage(conn);

	if (PQconnectionNeedsPassword(conn) ||
	    strstr(msg, "authentication failed") ||
	    strstr(msg, "pg_hba.conf") || strstr(msg, "password"))
		return -EACCES;
	if (strstr(msg, "Connection refused") ||
	    strstr(msg, strerror(ECONNREFUSED)) ||
	    strstr(msg, "No such file or directory") ||
	    strstr(msg, strerror(ENOENT)))
		return -ECONNREFUSED;
	return -EPROTO;
}

/* PQconnectPoll() to the end, with poll() bounded by @deadline. */
static int
pq_poll_connect(PGconn *conn, uint64_t deadline)
{
	PostgresPollingStatusType st = PGRES_POLLING_WRITING;

	for (;;) {
		struct pollfd pfd;
		uint64_t now;
		int r;

		if (st == PGRES_POLLING_OK)
			return 0;
		if (st == PGRES_POLLING_FAILED)
			return dial_error(conn);
		pfd.fd = PQsocket(conn);
		if (pfd.fd < 0)
			return -EPROTO;
		pfd.events = st == PGRES_POLLING_READING ? POLLIN : POLLOUT;
		pfd.revents = 0;
		now = now_ms();
		if (now >= deadline)
			return -ETIMEDOUT;
		r = poll(&pfd, 1, (int)(deadline - now));
		if (r == -1 && errno != EINTR)
			return -errno;
		if (r == 0)
			return -ETIMEDOUT;
		if (r > 0)
			st = PQconnectPoll(conn);
	}
}

/*
 * ops->dial: the caller's keywords + host, hostaddr (TCP) and port, then
 * PQconnectStartParams() and PQconnectPoll() until CONNECTION_OK, never
 * past @timeout_ms. Returns PQsocket() (*@ctx holds the connection) or
 * -ETIMEDOUT, -ECONNREFUSED, -EACCES (authentication), -ENOMEM, -EINVAL
 * (an address the adapter cannot split), -EPROTO (anything else).
 */
static int
pq_dial(const char *address, const struct sockaddr *sa, socklen_t salen,
	unsigned timeout_ms, void **ctx, void *arg)
{
	struct cpool_pq *pq = arg;
	uint64_t deadline = now_ms() + timeout_ms;
	char host[sizeof(((struct sockaddr_un *)0)->sun_path)], port[16];
	char numeric[INET6_ADDRSTRLEN];
	const char **kw = NULL, **val = NULL;
	struct pq_conn *pc = NULL;
	size_t i;
	int err, fd;

	err = split_address(address, host, sizeof(host), port, sizeof(port));
	if (err)
		goto fail;
	if (sa->sa_family == AF_INET)
		inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr,
			  numeric, sizeof(numeric));
	else if (sa->sa_family == AF_INET6)
		inet_ntop(AF_INET6,
			  &((const struct sockaddr_in6 *)sa)->sin6_addr,
			  numeric, sizeof(numeric));
	else
		numeric[0] = '\0';
	kw = calloc(pq->n + 4, sizeof(*kw));
	val = calloc(pq->n + 4, sizeof(*val));
	pc = calloc(1, sizeof(*pc));
	err = -ENOMEM;
	if (!kw || !val || !pc)
		goto fail;
	for (i = 0; i < pq->n; i++) {
		kw[i] = pq->keywords[i];
		val[i] = pq->values[i];
	}
	kw[i] = "host";
	val[i++] = host;
	kw[i] = "port";
	val[i++] = port;
	if (numeric[0]) {
		kw[i] = "hostaddr";
		val[i++] = numeric;
	}
	pc->conn = PQconnectStartParams(kw, val, 0);
	if (!pc->conn)
		goto fail;
	PQsetNoticeReceiver(pc->conn, pq_notice, pc);
	if (PQstatus(pc->conn) == CONNECTION_BAD)
		err = dial_error(pc->conn);
	else
		err = pq_poll_connect(pc->conn, deadline);
	if (!err && PQstatus(pc->conn) != CONNECTION_OK)
		err = -EPROTO;
	if (err)
		goto fail;
	/*
	 * The pool gets a duplicate of libpq's socket: libpq closes its own
	 * number by itself when it loses the connection in the middle of a
	 * request, and the pool's number (watched by a worker's epoll,
	 * un-watched at close) must not be freed, and reused, under it.
	 */
	fd = fcntl(PQsocket(pc->conn), F_DUPFD_CLOEXEC, 0);
	if (fd < 0) {
		err = -errno;
		goto fail;
	}
	free(kw);
	free(val);
	ADD(&pq->connects, 1);
	*ctx = pc;
	return fd;
fail:
	if (pc && pc->conn)
		PQfinish(pc->conn);
	free(pc);
	free(kw);
	free(val);
	ADD(&pq->connect_failures, 1);
	return err;
}

/*
 * ops->check: reads what waits (the fd is nonblocking), then: dead on a
 * broken connection or a FATAL the server sent; NOTIFYs to the callback
 * (or unexpected_data without one); dead if the socket shows a FIN behind
 * what libpq read; alive otherwise.
 */
static enum cpool_verdict
pq_check(struct cpool_conn *c, enum cpool_verdict tcp, void *arg)
{
	struct cpool_pq *pq = arg;
	struct pq_conn *pc = cpool_conn_ctx(c);
	enum cpool_verdict v = CPOOL_ALIVE, sock;
	PGnotify *n;

	if (!pc || !pc->conn)
		return CPOOL_SOCKET_ERROR;
	PQsetNoticeReceiver(pc->conn, pq_notice, pc);
	/*
	 * PQconsumeInput() only reads; PQisBusy() parses what it read, and
	 * that hands an ErrorResponse of an idle session to the notice
	 * receiver (and queues NOTIFYs).
	 */
	if (!PQconsumeInput(pc->conn))
		return CPOOL_PEER_CLOSED;
	PQisBusy(pc->conn);
	if (PQstatus(pc->conn) != CONNECTION_OK ||
	    __atomic_load_n(&pc->fatal, __ATOMIC_RELAXED))
		return CPOOL_PEER_CLOSED;
	while ((n = PQnotifies(pc->conn))) {
		if (pq->notify) {
			pq->notify(n, cpool_conn_address(c), pq->notify_arg);
			ADD(&pq->notifies, 1);
		} else {
			v = CPOOL_UNEXPECTED_DATA;
		}
		PQfreemem(n);
	}
	sock = cpool_probe(PQsocket(pc->conn));
	if (sock != CPOOL_ALIVE && sock != CPOOL_UNEXPECTED_DATA)
		return sock;
	return v;
}

/* ops->release: only an idle, healthy session goes back to the pool. */
static int
pq_release(struct cpool_conn *c, void *arg)
{
	struct cpool_pq *pq = arg;
	struct pq_conn *pc = cpool_conn_ctx(c);

	if (pc && pc->conn && PQstatus(pc->conn) == CONNECTION_OK &&
	    PQtransactionStatus(pc->conn) == PQTRANS_IDLE)
		return 0;
	ADD(&pq->refused, 1);
	return 1;
}

/*
 * ops->close: PQfinish(), which closes libpq's own socket; the pool closes
 * its duplicate (return 0). Quiet, libpq's number is first pointed at the
 * pool's, which the pool pointed at /dev/null: the Terminate goes nowhere.
 */
static int
pq_close(struct cpool_conn *c, enum cpool_close_reason reason, unsigned flags,
	 void *arg)
{
	struct cpool_pq *pq = arg;
	struct pq_conn *pc = cpool_conn_ctx(c);

	if (!pc)
		return 0;
	cpool_conn_set_ctx(c, NULL);
	if ((flags & CPOOL_CLOSE_QUIET) && PQsocket(pc->conn) >= 0 &&
	    cpool_conn_fd(c) >= 0)
		dup3(cpool_conn_fd(c), PQsocket(pc->conn), O_CLOEXEC);
	PQfinish(pc->conn);
	free(pc);
	ADD(&pq->finishes, 1);
	if (flags & CPOOL_CLOSE_QUIET)
		ADD(&pq->quiet_finishes, 1);
	return 0;
}

static const struct cpool_conn_ops pq_ops = {
	.size = sizeof(struct cpool_conn_ops),
	.dial = pq_dial,
	.check = pq_check,
	.release = pq_release,
	.close = pq_close,
};

const struct cpool_conn_ops *
cpool_pq_ops(void)
{
	return &pq_ops;
}

void
cpool_pq_install(struct cpool_pq *pq, struct cpool_config *cfg)
{
	if (!pq || !cfg)
		return;
	cfg->conn_ops = &pq_ops;
	cfg->conn_ops_arg = pq;
}

PGconn *
cpool_pq_conn(const struct cpool_conn *c)
{
	struct pq_conn *pc = cpool_conn_ctx(c);

	return pc ? pc->conn : NULL;
}

int
cpool_pq_stats_get(const struct cpool_pq *pq, struct cpool_pq_stats *out)
{
	struct cpool_pq_stats st;
	size_t n;

	if (!pq || !out || out->size < sizeof(size_t))
		return -EINVAL;
	memset(&st, 0, sizeof(st));
	st.size = out->size;
	st.connects = LOAD(&pq->connects);
	st.connect_failures = LOAD(&pq->connect_failures);
	st.finishes = LOAD(&pq->finishes);
	st.quiet_finishes = LOAD(&pq->quiet_finishes);
	st.refused = LOAD(&pq->refused);
	st.notifies = LOAD(&pq->notifies);
	n = out->size < sizeof(st) ? out->size : sizeof(st);
	memcpy(out, &st, n);
	return 0;
}
