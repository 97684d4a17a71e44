/* SPDX-License-Identifier: MIT */
/*
 * cpool_tls - TLS (OpenSSL 3) on cpool's pooled connections: libcpool_tls.
 *
 * One TLS session per pooled connection, handshaked once at connect (the
 * open op) and kept for the connection's whole life; callers do their own
 * I/O through the SSL object. Liveness stays exact: a TLS-aware check op
 * consumes the records a server sends on its own (TLS 1.3
 * NewSessionTicket, KeyUpdate) and keeps the connection, calls close_notify
 * or an EOF peer_closed, and application bytes nobody asked for
 * unexpected_data; bytes OpenSSL has buffered count too (SSL_has_pending).
 * A close sends close_notify unless it is quiet (peer gone, fork child),
 * then frees the session.
 *
 *	struct cpool_tls_config tc;
 *	struct cpool_tls *tls;
 *	cpool_tls_config_init(&tc);
 *	tc.ctx = ssl_ctx;                  // the caller's SSL_CTX
 *	cpool_tls_new(&tc, &tls);
 *	cpool_tls_install(tls, &cfg);      // sets cfg.conn_ops, conn_ops_arg
 *	cpool_create(&cfg, &pool);
 *	...
 *	cpool_acquire(pool, "redis.svc:6380", &c);
 *	SSL_write(cpool_tls_ssl(c), ...);
 *
 * Threads: a struct cpool_tls is MT-safe; an SSL object belongs to its
 * connection's owner (the lease holder, or the pool between leases).
 * Lifetime: free it after cpool_destroy() and the last cpool_release().
 */
#ifndef CPOOL_TLS_H
#define CPOOL_TLS_H

#include <openssl/ssl.h>
#include <stdint.h>

#include "cpool.h"

#ifdef __cplusplus
extern "C" {
#endif

struct cpool_tls;

/*
 * Extensible like struct cpool_config: fill with cpool_tls_config_init().
 */
struct cpool_tls_config {
	size_t size;		 /* sizeof(struct cpool_tls_config) */
	SSL_CTX *ctx;		 /* the caller's; referenced until free; required */
	const char *server_name; /* SNI and the name verified; NULL = the host
				  * part of the endpoint's address (no SNI for
				  * an IP literal, which is verified as an IP) */
	bool verify;		 /* verify the peer's chain and name; true */
	bool resume;		 /* offer the endpoint's last session; true */
};

/* Counters, for tests and dashboards (monotonic). */
struct cpool_tls_stats {
	size_t size;		 /* set by the caller */
	uint64_t handshakes;	 /* completed (open ok) */
	uint64_t resumed;	 /* ... of which resumed a session */
	uint64_t handshake_failures;
	uint64_t records_consumed; /* checks that consumed non-application
				    * records and kept the connection */
	uint64_t close_notifies; /* SSL_shutdown sent (loud closes) */
	uint64_t quiet_closes;	 /* closes without any I/O */
};

/**
 * cpool_tls_config_init() - Fill a TLS configuration with the defaults.
 * @cfg: caller's struct
 *
 * Context: any thread.
 */
CPOOL_API void cpool_tls_config_init(struct cpool_tls_config *cfg);

/**
 * cpool_tls_new() - Create a TLS adapter.
 * @cfg: configuration; copied (server_name too), ctx referenced
 * @out: the adapter on success; untouched on failure
 *
 * Context: any thread.
 * Return: 0; -EINVAL NULL @cfg/@out/ctx or a bad size; -ENOMEM.
 */
CPOOL_API int cpool_tls_new(const struct cpool_tls_config *cfg,
			    struct cpool_tls **out);

/**
 * cpool_tls_free() - Free an adapter (NULL ignored).
 * @tls: adapter no pool uses any more (after cpool_destroy() and the last
 *       release of its leases)
 *
 * Context: any thread.
 */
CPOOL_API void cpool_tls_free(struct cpool_tls *tls);

/**
 * cpool_tls_install() - Make a pool configuration use the adapter.
 * @tls: adapter
 * @cfg: configuration before cpool_create(): sets conn_ops and conn_ops_arg
 *
 * Context: any thread.
 */
CPOOL_API void cpool_tls_install(struct cpool_tls *tls,
				 struct cpool_config *cfg);

/**
 * cpool_tls_ops() - The connection ops, for a caller that wraps them.
 *
 * Return: the ops; their arg must be the struct cpool_tls.
 */
CPOOL_API const struct cpool_conn_ops *cpool_tls_ops(void);

/**
 * cpool_tls_ssl() - The TLS session of a leased connection.
 * @c: leased connection of a pool using the adapter
 *
 * Do not SSL_free() or SSL_shutdown() it; after an SSL error release with
 * CPOOL_RELEASE_CLOSE. On a blocking fd (no CPOOL_NONBLOCK) SSL_read and
 * SSL_write block like the socket.
 *
 * Context: the lease holder, or inside an op.
 * Return: the SSL object; NULL if @c is NULL or has no session.
 */
CPOOL_API SSL *cpool_tls_ssl(const struct cpool_conn *c);

/**
 * cpool_tls_stats_get() - Read the adapter's counters.
 * @tls: adapter
 * @out: caller's struct with out->size set
 *
 * Context: any thread.
 * Return: 0; -EINVAL.
 */
CPOOL_API int cpool_tls_stats_get(const struct cpool_tls *tls,
				  struct cpool_tls_stats *out);

#ifdef __cplusplus
}
#endif

#endif /* CPOOL_TLS_H */
