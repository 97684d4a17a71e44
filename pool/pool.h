/* SPDX-License-Identifier: MIT */
/*
 * The public entry points (pool.c): the top of the layering. Nothing
 * includes this header but its own source.
 */
#ifndef CPOOL_POOL_H
#define CPOOL_POOL_H

#include "lease.h"
#include "stats.h"

#endif /* CPOOL_POOL_H */
