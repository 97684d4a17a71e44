/* SPDX-License-Identifier: MIT */
/*
 * cpool_pq - PostgreSQL connections (libpq) pooled by cpool: libcpool_pq.
 *
 * libpq opens its own socket, so the adapter's dial op runs
 * PQconnectStartParams/PQconnectPoll to the endpoint, bounded by
 * connect_timeout_ms, with hostaddr (and port) from the address the pool
 * resolved and host kept as the endpoint's name, for TLS verification
 * (sslmode=verify-full). The check op runs PQconsumeInput on an idle
 * connection whose socket has bytes: dead (peer_closed) on CONNECTION_BAD
 * or on a FATAL message waiting ("terminating connection due to
 * administrator command"); a NOTIFY goes to the caller's callback, or is
 * unexpected_data without one. The release op refuses a connection whose
 * PQtransactionStatus() is not PQTRANS_IDLE (a transaction left open, a
 * query still running), so it never reaches the next caller. The close op
 * is PQfinish(), which sends Terminate only when the close is not quiet.
 *
 *	const char *kw[] = { "dbname", "user", NULL };
 *	const char *val[] = { "app", "app", NULL };
 *	struct cpool_pq_config pc;
 *	struct cpool_pq *pq;
 *	cpool_pq_config_init(&pc);
 *	pc.keywords = kw;
 *	pc.values = val;
 *	cpool_pq_new(&pc, &pq);
 *	cpool_pq_install(pq, &cfg);
 *	cpool_create(&cfg, &pool);
 *	cpool_endpoint_add(pool, "db.svc:5432");
 *	...
 *	cpool_acquire(pool, "db.svc:5432", &c);
 *	PGresult *res = PQexec(cpool_pq_conn(c), "SELECT 1");
 *
 * Endpoints: "host:port" (TCP), or "unix:/dir/.s.PGSQL.5432" (the server's
 * socket file). The keywords must not name host, hostaddr or port (the
 * endpoint does). PQfinish is never called on a connection by anyone but
 * the pool.
 */
#ifndef CPOOL_PQ_H
#define CPOOL_PQ_H

#include <libpq-fe.h>
#include <stdint.h>

#include "cpool.h"

#ifdef __cplusplus
extern "C" {
#endif

struct cpool_pq;

/*
 * A NOTIFY that arrived on an idle connection, during its check: @n is
 * freed by the adapter after the call. Runs inside an op (see cpool.h).
 */
typedef void cpool_pq_notify_fn(const PGnotify *n, const char *address,
				void *arg);

struct cpool_pq_config {
	size_t size;			/* sizeof(struct cpool_pq_config) */
	const char *const *keywords;	/* PQconnectStartParams(); NULL-ended */
	const char *const *values;	/* ... and their values */
	cpool_pq_notify_fn *notify;	/* NULL = a NOTIFY is unexpected_data */
	void *notify_arg;
};

struct cpool_pq_stats {
	size_t size;		/* set by the caller */
	uint64_t connects;	/* dials that reached CONNECTION_OK */
	uint64_t connect_failures;
	uint64_t finishes;	/* PQfinish calls (close) */
	uint64_t quiet_finishes; /* ... with the fd on /dev/null */
	uint64_t refused;	/* releases refused: not PQTRANS_IDLE */
	uint64_t notifies;	/* NOTIFYs handed to the callback */
};

/** cpool_pq_config_init() - Fill a configuration with the defaults. */
CPOOL_API void cpool_pq_config_init(struct cpool_pq_config *cfg);

/**
 * cpool_pq_new() - Create a libpq adapter.
 * @cfg: configuration; keywords and values are copied
 * @out: the adapter; untouched on failure
 *
 * Context: any thread.
 * Return: 0; -EINVAL (NULL, bad size, host/hostaddr/port in keywords,
 *         keywords without values); -ENOMEM.
 */
CPOOL_API int cpool_pq_new(const struct cpool_pq_config *cfg,
			   struct cpool_pq **out);

/** cpool_pq_free() - Free an adapter no pool uses any more (NULL ok). */
CPOOL_API void cpool_pq_free(struct cpool_pq *pq);

/** cpool_pq_install() - Set cfg->conn_ops and cfg->conn_ops_arg. */
CPOOL_API void cpool_pq_install(struct cpool_pq *pq, struct cpool_config *cfg);

/** cpool_pq_ops() - The ops (their arg is the struct cpool_pq). */
CPOOL_API const struct cpool_conn_ops *cpool_pq_ops(void);

/**
 * cpool_pq_conn() - The PGconn of a leased connection.
 * @c: leased connection of a pool using the adapter
 *
 * Do not PQfinish() or PQreset() it. After a connection error
 * (PQstatus() == CONNECTION_BAD) release with CPOOL_RELEASE_CLOSE.
 *
 * Context: the lease holder.
 * Return: the connection; NULL if @c is NULL.
 */
CPOOL_API PGconn *cpool_pq_conn(const struct cpool_conn *c);

/** cpool_pq_stats_get() - Read the adapter's counters. Return: 0; -EINVAL. */
CPOOL_API int cpool_pq_stats_get(const struct cpool_pq *pq,
				 struct cpool_pq_stats *out);

#ifdef __cplusplus
}
#endif

#endif /* CPOOL_PQ_H */
