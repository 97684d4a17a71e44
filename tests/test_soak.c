/* SPDX-License-Identifier: MIT */
/*
 * The chaos soak of issue 5 (tests/util/soak.h), 10 s of it, inside
 * make test and so also inside make asan and make tsan. The long runs are
 * make soak (60 s), make soak-asan and make soak-tsan (20 s each).
 *
 * The report goes to stderr only when a check failed. PostgreSQL (root
 * only) and TLS redis are part of it where they can run; where not, their
 * targets are off (the report says why) and the soak still runs.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>

#include "util/realsrv.h"
#include "util/soak.h"
#include "util/leakcheck.h"

#define SOAK_TEST_SECONDS 10

TestSuite(soak, .timeout = 180, .fini = leak_fini);

Test(soak, ten_seconds_of_restarts_and_faults_leave_no_stale_failure)
{
	struct soak_opts opts = { .seconds = SOAK_TEST_SECONDS };
	char why[256] = "", *text = NULL;
	size_t len = 0;
	int rc;

	if (!realsrv_available(REALSRV_MEMCACHED) ||
	    !realsrv_available(REALSRV_REDIS))
		cr_skip_test("memcached or redis-server is not installed");
	opts.out = open_memstream(&text, &len);
	cr_assert_not_null(opts.out, "open_memstream failed");
	rc = soak_run(&opts, why, sizeof(why));
	fclose(opts.out);
	if (rc)
		fprintf(stderr, "%s", text ? text : "");
	free(text);
	cr_assert_geq(rc, 0, "the soak could not set up: %s", why);
	cr_assert_eq(rc, 0, "%d soak checks failed; the first: %s", rc, why);
}
