/* SPDX-License-Identifier: MIT */
/*
 * Configuration, nginx-style: defaults in one place (cpool_config_init),
 * then validation of the values taken literally. An invalid field is named
 * through log_fn and answered with -EINVAL; nothing is clamped silently.
 */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

/* Kernel limits (include/net/tcp.h): larger values fail setsockopt. */
#define MAX_TCP_KEEPIDLE 32767u
#define MAX_TCP_KEEPINTVL 32767u
#define MAX_TCP_KEEPCNT 127u

#define CPOOL_KNOWN_FLAGS (CPOOL_NONBLOCK | CPOOL_NO_PIN)

void
cpool_config_init(struct cpool_config *cfg)
{
	if (!cfg)
		return;
	memset(cfg, 0, sizeof(*cfg));
	cfg->size = sizeof(*cfg);
	cfg->workers = 0;
	cfg->max_conns_per_endpoint = 64;
	cfg->min_idle_per_endpoint = 0;
	cfg->connect_timeout_ms = 1000;
	cfg->acquire_timeout_ms = 1000;
	cfg->idle_timeout_ms = 60000;
	cfg->max_lifetime_ms = 0;
	cfg->max_uses = 0;
	cfg->probe_bypass_ms = 0;
	cfg->keepalive_idle_s = 30;
	cfg->keepalive_interval_s = 5;
	cfg->keepalive_count = 3;
	cfg->user_timeout_ms = 0;
	cfg->flags = 0;
	cfg->dns_min_ttl_ms = 1000;
	cfg->dns_max_ttl_ms = 30000;
	cfg->happy_eyeballs_ms = 250;
	cfg->eject_after_failures = 5;
	cfg->max_ejection_percent = 50;
}

static int
invalid(const struct cpool_config *cfg, const char *field, unsigned long v,
	const char *why)
{
	cpool__log(cfg, CPOOL_LOG_ERROR,
		   "cpool_create: invalid config: %s = %lu (%s)", field, v, why);
	return -EINVAL;
}

static int
config_validate(const struct cpool_config *c)
{
	if (c->workers > CPOOL_MAX_WORKERS)
		return invalid(c, "workers", c->workers, "at most 1024");
	if (c->max_conns_per_endpoint == 0)
		return invalid(c, "max_conns_per_endpoint", 0, "must be > 0");
	if (c->min_idle_per_endpoint > c->max_conns_per_endpoint)
		return invalid(c, "min_idle_per_endpoint",
			       c->min_idle_per_endpoint,
			       "above max_conns_per_endpoint");
	if (c->connect_timeout_ms == 0)
		return invalid(c, "connect_timeout_ms", 0, "must be > 0");
	if (c->connect_timeout_ms > INT_MAX)
		return invalid(c, "connect_timeout_ms", c->connect_timeout_ms,
			       "at most INT_MAX");
	if (c->keepalive_idle_s > MAX_TCP_KEEPIDLE)
		return invalid(c, "keepalive_idle_s", c->keepalive_idle_s,
			       "at most 32767");
	if (c->keepalive_idle_s) {
		if (c->keepalive_interval_s == 0 ||
		    c->keepalive_interval_s > MAX_TCP_KEEPINTVL)
			return invalid(c, "keepalive_interval_s",
				       c->keepalive_interval_s,
				       "1..32767 with keepalive on");
		if (c->keepalive_count == 0 ||
		    c->keepalive_count > MAX_TCP_KEEPCNT)
			return invalid(c, "keepalive_count", c->keepalive_count,
				       "1..127 with keepalive on");
	}
	if (c->user_timeout_ms > INT_MAX)
		return invalid(c, "user_timeout_ms", c->user_timeout_ms,
			       "at most INT_MAX");
	if (c->flags & ~CPOOL_KNOWN_FLAGS)
		return invalid(c, "flags", c->flags, "unknown bits");
	if (c->check_idle_ms && (!c->conn_ops || !c->conn_ops->check))
		return invalid(c, "check_idle_ms", c->check_idle_ms,
			       "needs conn_ops->check");
	if (c->dns_min_ttl_ms == 0)
		return invalid(c, "dns_min_ttl_ms", 0, "must be > 0");
	if (c->dns_max_ttl_ms < c->dns_min_ttl_ms)
		return invalid(c, "dns_max_ttl_ms", c->dns_max_ttl_ms,
			       "below dns_min_ttl_ms");
	if (c->dns_max_ttl_ms > 86400000u)
		return invalid(c, "dns_max_ttl_ms", c->dns_max_ttl_ms,
			       "at most a day");
	if (c->happy_eyeballs_ms > INT_MAX)
		return invalid(c, "happy_eyeballs_ms", c->happy_eyeballs_ms,
			       "at most INT_MAX");
	if (c->max_ejection_percent > 100)
		return invalid(c, "max_ejection_percent",
			       c->max_ejection_percent, "at most 100");
	return 0;
}

/* The extensible-struct copy of the caller's ops, like the config's. */
static int
ops_load(const struct cpool_config *cfg, struct cpool_conn_ops *ops)
{
	const struct cpool_conn_ops *user = cfg->conn_ops;
	const unsigned char *tail;
	size_t i;

	memset(ops, 0, sizeof(*ops));
	ops->size = sizeof(*ops);
	if (!user)
		return 0;
	if (user->size < CPOOL_CONN_OPS_SIZE_V1)
		return invalid(cfg, "conn_ops->size", user->size,
			       "smaller than the first struct cpool_conn_ops");
	tail = (const unsigned char *)user;
	for (i = sizeof(*ops); i < user->size; i++)
		if (tail[i])
			return invalid(cfg, "conn_ops->size", user->size,
				       "unknown non-zero fields past this "
				       "library's struct");
	memcpy(ops, user, user->size < sizeof(*ops) ? user->size : sizeof(*ops));
	ops->size = sizeof(*ops);
	return 0;
}

int
cpool__config_load(const struct cpool_config *user, struct cpool_config *cfg,
		   struct cpool_conn_ops *ops)
{
	const unsigned char *tail;
	size_t i;
	long cpus;
	uint64_t ut;
	int err;

	cpool_config_init(cfg);
	if (user) {
		/*
		 * Below v1 the struct cannot be trusted to hold log_fn: fail
		 * without a message.
		 */
		if (user->size < CPOOL_CONFIG_SIZE_V1)
			return -EINVAL;
		memcpy(cfg, user,
		       user->size < sizeof(*cfg) ? user->size : sizeof(*cfg));
		cfg->size = sizeof(*cfg);
		/* A newer caller's fields we do not know must be unset. */
		tail = (const unsigned char *)user;
		for (i = sizeof(*cfg); i < user->size; i++)
			if (tail[i])
				return invalid(cfg, "size", user->size,
					       "unknown non-zero fields past "
					       "this library's struct");
	}
	err = config_validate(cfg);
	if (!err)
		err = ops_load(cfg, ops);
	if (err)
		return err;
	cfg->conn_ops = cfg->conn_ops ? ops : NULL;
	if (cfg->workers == 0) {
		cpus = sysconf(_SC_NPROCESSORS_ONLN);
		cfg->workers = cpus < 1 ? 1
			       : cpus > (long)CPOOL_MAX_WORKERS
				       ? CPOOL_MAX_WORKERS
				       : (unsigned)cpus;
	}
	/*
	 * TCP_USER_TIMEOUT bounds a request in flight to a vanished peer
	 * (SOCKETS.md S9: 2.4 s instead of 15.6 min); derived as the
	 * keepalive budget so idle and busy connections die on the same clock.
	 */
	if (cfg->user_timeout_ms == 0 && cfg->keepalive_idle_s) {
		ut = ((uint64_t)cfg->keepalive_idle_s +
		      (uint64_t)cfg->keepalive_interval_s *
			      cfg->keepalive_count) *
		     1000u;
		cfg->user_timeout_ms = ut > INT_MAX ? INT_MAX : (unsigned)ut;
	}
	return 0;
}
