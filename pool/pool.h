/* SPDX-License-Identifier: MIT */
/* The pool object's lifetime. */
#ifndef CPOOL_POOL_H
#define CPOOL_POOL_H

#include "pool-t.h"

static inline void
cpool__pool_get(struct cpool *pool)
{
	ATOMIC_ADD(&pool->refs, 1);
}

/* Drops a reference; the last one (owner's or an endpoint's) frees it. */
void cpool__pool_put(struct cpool *pool);

#endif /* CPOOL_POOL_H */
