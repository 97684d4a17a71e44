/* SPDX-License-Identifier: MIT */
/*
 * What the libFuzzer harnesses share: CHECK(), an invariant that aborts
 * with its place and a message (libFuzzer keeps the input), and the checks
 * every line the library logs must pass.
 */
#ifndef CPOOL_FUZZ_H
#define CPOOL_FUZZ_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpool.h"

#define CHECK(cond, ...)                                                       \
	do {                                                                   \
		if (!(cond)) {                                                 \
			fprintf(stderr, "%s:%d: %s: ", __FILE__, __LINE__,     \
				#cond);                                        \
			fprintf(stderr, __VA_ARGS__);                          \
			fputc('\n', stderr);                                   \
			abort();                                               \
		}                                                              \
	} while (0)

/* A log line: the harness's user_data, a known level, one short line. */
static inline void
fuzz_check_log(void *user_data, void *want, int level, const char *msg)
{
	CHECK(user_data == want, "user_data %p", user_data);
	CHECK(level >= CPOOL_LOG_ERROR && level <= CPOOL_LOG_DEBUG,
	      "level %d", level);
	CHECK(msg && strnlen(msg, 256) < 256, "log line unterminated");
}

#endif /* CPOOL_FUZZ_H */
