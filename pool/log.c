/* SPDX-License-Identifier: MIT */
/*
 * Messages: the library's only output goes to cfg.log_fn, one formatted
 * line at a time (256 bytes at most, truncated), with errno preserved.
 * Never called with a lock held that the callback could need: log_fn may
 * run on any thread, a worker's included.
 */
#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>

void
cpool__log(const struct cpool_config *cfg, int level, const char *fmt, ...)
{
	char msg[256];
	va_list ap;
	int saved = errno;

	if (!cfg || !cfg->log_fn)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	cfg->log_fn(cfg->user_data, level, msg);
	errno = saved;
}
