/* SPDX-License-Identifier: MIT */
/*
 * A leak check after every test, for make asan. A leak LeakSanitizer finds
 * when a test's worker process exits does not fail that test (criterion
 * has reported it by then), so every TestSuite names leak_fini as its
 * .fini: LSan is asked in the worker, after the test and its teardown, and
 * a leak crashes the worker, which criterion reports as a crash. Nothing outside ASan builds.
 */
#ifndef CPOOL_TESTS_LEAKCHECK_H
#define CPOOL_TESTS_LEAKCHECK_H

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>

#ifdef __SANITIZE_ADDRESS__
#include <sanitizer/lsan_interface.h>
#endif

static inline void
leak_fini(void)
{
#ifdef __SANITIZE_ADDRESS__
	/* An assertion failing in a .fini does not fail the test in
	 * criterion 2.4: crash the worker instead, which it reports. */
	if (__lsan_do_recoverable_leak_check()) {
		fprintf(stderr, "LeakSanitizer found leaks after the test "
				"(report above)\n");
		abort();
	}
#endif
}

#endif /* CPOOL_TESTS_LEAKCHECK_H */
