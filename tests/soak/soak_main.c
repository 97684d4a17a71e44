/* SPDX-License-Identifier: MIT */
/*
 * make soak / soak-asan / soak-tsan: the chaos soak of tests/util/soak.h as
 * a program. Usage: cpool_soak [seconds] (default: $SOAK_SECONDS, else 60).
 * Exit status 0 when every check passed, 1 when one failed, 2 when the
 * soak could not set up (no memcached or redis-server, ...). A missing
 * PostgreSQL only turns its target off (the report says why).
 *
 * SIGPIPE is left at its default disposition on purpose: the soak checks
 * that nothing raises it. SIGINT, SIGTERM and SIGHUP stop the servers
 * before the process dies; other deaths are covered by the servers'
 * PR_SET_PDEATHSIG.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../util/realsrv.h"
#include "../util/soak.h"

static void
on_signal(int sig)
{
	realsrv_kill_all();
	signal(sig, SIG_DFL);
	raise(sig);
}

static unsigned
seconds_from(const char *arg)
{
	char *end;
	unsigned long v;

	if (!arg || !*arg)
		return 0;
	errno = 0;
	v = strtoul(arg, &end, 10);
	if (errno || *end || v == 0 || v > 86400) {
		fprintf(stderr, "cpool_soak: bad duration \"%s\"\n", arg);
		exit(2);
	}
	return (unsigned)v;
}

int
main(int argc, char **argv)
{
	struct soak_opts opts = { .out = stdout };
	char why[256] = "";
	int rc;

	opts.seconds = seconds_from(argc > 1 ? argv[1] : NULL);
	if (!opts.seconds)
		opts.seconds = seconds_from(getenv("SOAK_SECONDS"));
	if (!opts.seconds)
		opts.seconds = 60;
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	signal(SIGHUP, on_signal);
	setvbuf(stdout, NULL, _IOLBF, 0);
	printf("cpool_soak: %u s of chaos against memcached, redis-server, "
	       "PostgreSQL (as root) and the fault server\n", opts.seconds);
	rc = soak_run(&opts, why, sizeof(why));
	if (rc < 0) {
		fprintf(stderr, "cpool_soak: setup failed: %s\n", why);
		return 2;
	}
	if (rc > 0)
		fprintf(stderr, "cpool_soak: FAILED: %s\n", why);
	return rc ? 1 : 0;
}
