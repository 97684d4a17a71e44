/* SPDX-License-Identifier: MIT */
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
