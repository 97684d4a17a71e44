/* SPDX-License-Identifier: MIT */
/* The lease holder's calls (cpool_conn_*, cpool_send, cpool_recv). */
#ifndef CPOOL_LEASE_H
#define CPOOL_LEASE_H

#include "endpoint.h"

#endif /* CPOOL_LEASE_H */
