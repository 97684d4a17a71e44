/* SPDX-License-Identifier: MIT */
/* Messages to cfg.log_fn: the library's only output. */
#ifndef CPOOL_LOG_H
#define CPOOL_LOG_H

#include "cpool.h"

/* Formats one line and hands it to cfg->log_fn, if there is one. */
void cpool__log(const struct cpool_config *cfg, int level, const char *fmt,
		...) __attribute__((format(printf, 3, 4)));

#endif /* CPOOL_LOG_H */
