/* SPDX-License-Identifier: MIT */
/*
 * Lets Criterion start under ThreadSanitizer (make tsan).
 *
 * Criterion's runner maps its "inheritable arena" at a random 16 MiB-aligned
 * address in [0x2000_0000_0000, 0x6000_0000_0000): base = 0x2000_0000_0000 +
 * (rand_r() & 0x3fffff) * 16 MiB, checked free with mincore(), a few tries.
 * Under TSan almost all of that window is TSan's own reserved shadow and
 * meta memory; only [0x5500_0000_0000, 0x5680_0000_0000) is application
 * memory, so the runner usually gives up with "Could not initialize
 * inheritable arena" (Criterion issue #274). In TSan builds only, this
 * rand_r() keeps its picks inside that application range. Nothing else in
 * the process calls rand_r(): cpool does not, the tests do not.
 */
#include <stdlib.h>

#if defined(__SANITIZE_THREAD__)
/* Default visibility: the build hides symbols, and libcriterion must see it. */
__attribute__((visibility("default"))) int
rand_r(unsigned *seed)
{
	/* r in [0x350000, 0x368000) puts the base in 0x5500..0x5680 */
	*seed = *seed * 1103515245u + 12345u;
	return (int)(0x350000u + (*seed >> 8) % 0x18000u);
}
#else
/* Nothing to fix outside TSan builds. */
typedef int cpool_tests_tsan_criterion_unused;
#endif
