/* SPDX-License-Identifier: MIT */
/* Configuration: defaults, the extensible-struct copy, validation. */
#ifndef CPOOL_CONFIG_H
#define CPOOL_CONFIG_H

#include <stddef.h>

#include "cpool.h"

/* The first published struct: the smallest size a caller may pass. */
#define CPOOL_CONFIG_SIZE_V1                                                   \
	(offsetof(struct cpool_config, user_data) + sizeof(void *))

#define CPOOL_MAX_WORKERS 1024u

/*
 * Copies the caller's @user (or the defaults when NULL) into @cfg, filling
 * fields the caller's struct is too small to have with defaults, validates
 * every field (naming the first bad one through user->log_fn) and derives
 * user_timeout_ms and workers. Copies cfg->conn_ops into @ops (all NULL
 * without) and points cfg->conn_ops at it. Returns 0 or -EINVAL.
 */
int cpool__config_load(const struct cpool_config *user,
		       struct cpool_config *cfg, struct cpool_conn_ops *ops);

/* The first published struct cpool_conn_ops: size must be at least this. */
#define CPOOL_CONN_OPS_SIZE_V1                                                 \
	(offsetof(struct cpool_conn_ops, close) + sizeof(void *))

#endif /* CPOOL_CONFIG_H */
