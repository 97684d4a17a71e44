/* SPDX-License-Identifier: MIT */
/* The liveness classifier of DESIGN.md section 2. */
#ifndef CPOOL_PROBE_H
#define CPOOL_PROBE_H

#include "cpool.h"

/* Maps a socket errno to the verdict it stands for. */
enum cpool_verdict cpool__verdict_of_errno(int err);

#endif /* CPOOL_PROBE_H */
