/* SPDX-License-Identifier: MIT */
/*
 * Counters and gauges: collected from the shards without stopping them
 * (cpool_stats_get(), cpool_stats_format()). The counting itself happens
 * where the events do (shard.h, endpoint.c, pool.c); this module reads.
 */
#ifndef CPOOL_STATS_H
#define CPOOL_STATS_H

#include "endpoint.h"

#endif /* CPOOL_STATS_H */
