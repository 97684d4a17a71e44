/* SPDX-License-Identifier: MIT */
/*
 * cpool_redis - a persistent hiredis context on each pooled connection:
 * libcpool_redis.
 *
 * The open op builds a redisContext on the pooled fd (redisConnectFd) and,
 * when configured, runs AUTH and SELECT; the context (its reader buffer
 * included) lives as long as the connection. The release op refuses reuse
 * of a context with output not yet sent, reply bytes not yet read (in the
 * reader or waiting at the socket), or an error: such a connection is
 * closed by_caller, so a pipelined reply never reaches the next caller.
 * The close op is redisFreeKeepFd(); the pool closes the fd.
 *
 *	struct cpool_redis_config rc;
 *	struct cpool_redis *r;
 *	cpool_redis_config_init(&rc);
 *	rc.password = "secret";
 *	cpool_redis_new(&rc, &r);
 *	cpool_redis_install(r, &cfg);
 *	cpool_create(&cfg, &pool);
 *	...
 *	cpool_acquire(pool, "127.0.0.1:6379", &c);
 *	redisReply *rep = redisCommand(cpool_redis_ctx(c), "GET %s", key);
 *	// no reply (an I/O error): cpool_release(c, CPOOL_RELEASE_CLOSE)
 *
 * Works with blocking pools (the default); a CPOOL_NONBLOCK pool gets a
 * context in hiredis's nonblocking mode (REDIS_BLOCK cleared: drive it with
 * redisBufferWrite()/redisBufferRead()/redisGetReply() and poll()).
 *
 * open: AUTH and SELECT are bounded by the open's timeout (what is left of
 * connect_timeout_ms) in either mode. An acquire that opens a connection
 * fails with -EACCES when AUTH is refused (wrong password or user),
 * -EINVAL when SELECT is refused (db out of range), -EPROTO for a reply of
 * an unexpected type or a protocol error, -ETIMEDOUT when the server does
 * not answer in time, -ECONNRESET when it closes, -ENOMEM, or the socket
 * error; like every open failure it counts as a connect failure (the
 * endpoint's backoff included), and the context is freed
 * (redisFreeKeepFd()) before the pool closes the fd.
 *
 * release: a connection whose socket is dead is not refused by the op but
 * left to the pool's probe and worker, which close it with its real
 * reason. A reply still on the wire when release looks (not yet at the
 * socket) is caught by the pool: its worker or the checkout probe sees
 * bytes on an idle connection (unexpected_data). The op cannot see server
 * side session state: release with CPOOL_RELEASE_CLOSE after MULTI without
 * EXEC/DISCARD, WATCH without UNWATCH, SUBSCRIBE, CLIENT REPLY OFF, or a
 * SELECT of another db. redisSetTimeout() on the context sets
 * SO_RCVTIMEO/SO_SNDTIMEO on the fd; they stay for the connection's life.
 *
 * No check op: bytes on an idle redis connection are unexpected, so the
 * pool's TCP verdict (unexpected_data) stands.
 */
#ifndef CPOOL_REDIS_H
#define CPOOL_REDIS_H

#include <hiredis/hiredis.h>
#include <stdint.h>

#include "cpool.h"

#ifdef __cplusplus
extern "C" {
#endif

struct cpool_redis;

struct cpool_redis_config {
	size_t size;		/* sizeof(struct cpool_redis_config) */
	const char *username;	/* AUTH username password (Redis 6 ACL); NULL */
	const char *password;	/* AUTH at open; NULL = none */
	int db;			/* SELECT at open when > 0; 0 */
};

struct cpool_redis_stats {
	size_t size;		/* set by the caller */
	uint64_t contexts;	/* redisContexts built (open ok) */
	uint64_t frees;		/* ... freed (close) */
	uint64_t open_failures;	/* AUTH/SELECT refused, or no context */
	uint64_t refused;	/* releases refused: output or reply left */
};

/**
 * cpool_redis_config_init() - Fill a configuration with the defaults.
 * @cfg: caller's struct
 */
CPOOL_API void cpool_redis_config_init(struct cpool_redis_config *cfg);

/**
 * cpool_redis_new() - Create a hiredis adapter.
 * @cfg: configuration, copied (strings too)
 * @out: the adapter; untouched on failure
 *
 * Context: any thread.
 * Return: 0; -EINVAL; -ENOMEM.
 */
CPOOL_API int cpool_redis_new(const struct cpool_redis_config *cfg,
			      struct cpool_redis **out);

/** cpool_redis_free() - Free an adapter no pool uses any more (NULL ok). */
CPOOL_API void cpool_redis_free(struct cpool_redis *r);

/** cpool_redis_install() - Set cfg->conn_ops and cfg->conn_ops_arg. */
CPOOL_API void cpool_redis_install(struct cpool_redis *r,
				   struct cpool_config *cfg);

/** cpool_redis_ops() - The ops (their arg is the struct cpool_redis). */
CPOOL_API const struct cpool_conn_ops *cpool_redis_ops(void);

/**
 * cpool_redis_ctx() - The hiredis context of a leased connection.
 * @c: leased connection of a pool using the adapter
 *
 * Do not free it or change its fd. After an error (ctx->err set, or a
 * NULL reply) release with CPOOL_RELEASE_CLOSE (the release op refuses it
 * anyway).
 *
 * Context: the lease holder.
 * Return: the context; NULL if @c is NULL.
 */
CPOOL_API redisContext *cpool_redis_ctx(const struct cpool_conn *c);

/**
 * cpool_redis_stats_get() - Read the adapter's counters.
 * Return: 0; -EINVAL.
 */
CPOOL_API int cpool_redis_stats_get(const struct cpool_redis *r,
				    struct cpool_redis_stats *out);

#ifdef __cplusplus
}
#endif

#endif /* CPOOL_REDIS_H */
