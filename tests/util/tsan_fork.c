/* SPDX-License-Identifier: MIT */
/*
 * Lets the fork tests run under ThreadSanitizer (make tsan).
 *
 * tests/test_trust_fork.c and tests/test_trust_rcu.c fork a child that
 * starts threads of its own (a fresh pool's workers, a fault server). By
 * default TSan kills such a child ("starting new threads after
 * multi-threaded fork is not supported", exit 66) whatever the library
 * does, so TSan builds default to die_after_fork=0: TSan takes its own
 * locks around fork(), and the children run only the code under test.
 * TSAN_OPTIONS from the environment still override this.
 */
#if defined(__SANITIZE_THREAD__)
const char *__tsan_default_options(void);

/* Default visibility: the build hides symbols, and the runtime looks it up. */
__attribute__((visibility("default"))) const char *
__tsan_default_options(void)
{
	return "die_after_fork=0";
}
#else
/* Nothing to set outside TSan builds. */
typedef int cpool_tests_tsan_fork_unused;
#endif
