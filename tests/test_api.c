/* SPDX-License-Identifier: MIT */
/*
 * Every bad input of DESIGN.md section 4 gets its documented error and no
 * crash; out-parameters stay untouched on failure; fds and memory are
 * accounted for across create/destroy; the host's malloc stays libc's.
 */
#include <criterion/criterion.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "util/check.h"
#include "util/dnssrv.h"
#include "util/leakcheck.h"

TestSuite(api, .timeout = 60, .fini = leak_fini);

/* A recognisable pointer that no call may write into an out-parameter. */
#define SENTINEL_POOL ((struct cpool *)(uintptr_t)0x5e57)
#define SENTINEL_CONN ((struct cpool_conn *)(uintptr_t)0x5e58)

Test(api, config_init_writes_the_documented_defaults)
{
	struct cpool_config cfg;

	memset(&cfg, 0xa5, sizeof(cfg));
	cpool_config_init(&cfg);
	assert_stat(cfg, size, sizeof(cfg));
	assert_stat(cfg, workers, 0);
	assert_stat(cfg, max_conns_per_endpoint, 64);
	assert_stat(cfg, min_idle_per_endpoint, 0);
	assert_stat(cfg, connect_timeout_ms, 1000);
	assert_stat(cfg, acquire_timeout_ms, 1000);
	assert_stat(cfg, idle_timeout_ms, 60000);
	assert_stat(cfg, max_lifetime_ms, 0);
	assert_stat(cfg, max_uses, 0);
	assert_stat(cfg, probe_bypass_ms, 0);
	assert_stat(cfg, keepalive_idle_s, 30);
	assert_stat(cfg, keepalive_interval_s, 5);
	assert_stat(cfg, keepalive_count, 3);
	assert_stat(cfg, user_timeout_ms, 0);
	assert_stat(cfg, flags, 0);
	cr_assert_null(cfg.on_connect);
	cr_assert_null(cfg.log_fn);
	cr_assert_null(cfg.user_data);
	cr_assert_null(cfg.conn_ops);
	cr_assert_null(cfg.dns_servers);
	assert_stat(cfg, dns_min_ttl_ms, 1000);
	assert_stat(cfg, dns_max_ttl_ms, 30000);
	assert_stat(cfg, happy_eyeballs_ms, 250);
	assert_stat(cfg, eject_after_failures, 5);
	assert_stat(cfg, max_ejection_percent, 50);
}

Test(api, create_rejects_a_null_out_pointer)
{
	struct cpool_config cfg;

	cpool_config_init(&cfg);
	assert_ret(cpool_create(&cfg, NULL), -EINVAL);
	assert_ret(cpool_create(NULL, NULL), -EINVAL);
}

Test(api, create_with_a_null_config_takes_the_defaults)
{
	struct cpool *pool = SENTINEL_POOL;

	assert_ret(cpool_create(NULL, &pool), 0);
	cr_assert(pool && pool != SENTINEL_POOL);
	cpool_destroy(pool);
}

Test(api, destroy_and_release_of_null_are_harmless)
{
	cpool_destroy(NULL);
	cpool_release(NULL, 0);
	cpool_release(NULL, CPOOL_RELEASE_CLOSE);
}

Test(api, create_rejects_a_config_size_of_zero_or_below_the_struct)
{
	/* The first published struct ended after user_data. */
	const size_t sizes[] = { 0, 1, offsetof(struct cpool_config, user_data),
				 offsetof(struct cpool_config, user_data) +
					 sizeof(void *) - 1 };

	for (size_t i = 0; i < sizeof(sizes) / sizeof(*sizes); i++) {
		struct cpool_config cfg;
		struct cpool *pool = SENTINEL_POOL;

		cpool_config_init(&cfg);
		cfg.size = sizes[i];
		assert_ret(cpool_create(&cfg, &pool), -EINVAL);
		cr_assert_eq(pool, SENTINEL_POOL,
			     "size %zu: out changed on failure", sizes[i]);
	}
}

struct bad_field {
	const char *field;
	void (*spoil)(struct cpool_config *cfg);
};

static void
spoil_workers(struct cpool_config *cfg)
{
	cfg->workers = 1025;
}

static void
spoil_max_conns(struct cpool_config *cfg)
{
	cfg->max_conns_per_endpoint = 0;
}

static void
spoil_min_idle(struct cpool_config *cfg)
{
	cfg->max_conns_per_endpoint = 8;
	cfg->min_idle_per_endpoint = 9;
}

static void
spoil_connect_timeout(struct cpool_config *cfg)
{
	cfg->connect_timeout_ms = 0;
}

static void
spoil_keepalive_interval(struct cpool_config *cfg)
{
	cfg->keepalive_idle_s = 10;
	cfg->keepalive_interval_s = 0;
}

static void
spoil_keepalive_count(struct cpool_config *cfg)
{
	cfg->keepalive_idle_s = 10;
	cfg->keepalive_count = 0;
}

static void
spoil_flags_high(struct cpool_config *cfg)
{
	cfg->flags = 1u << 31;
}

static void
spoil_flags_next(struct cpool_config *cfg)
{
	cfg->flags = CPOOL_NONBLOCK | (CPOOL_NO_PIN << 1);
}

static void
spoil_dns_min(struct cpool_config *cfg)
{
	cfg->dns_min_ttl_ms = 0;
}

static void
spoil_dns_max(struct cpool_config *cfg)
{
	cfg->dns_min_ttl_ms = 2000;
	cfg->dns_max_ttl_ms = 1999;
}

static void
spoil_dns_max_day(struct cpool_config *cfg)
{
	cfg->dns_max_ttl_ms = 86400001;
}

static void
spoil_ejection_percent(struct cpool_config *cfg)
{
	cfg->max_ejection_percent = 101;
}

static void
spoil_happy_eyeballs(struct cpool_config *cfg)
{
	cfg->happy_eyeballs_ms = 1u << 31;
}

static void
spoil_dns_servers_empty(struct cpool_config *cfg)
{
	cfg->dns_servers = "";
}

static void
spoil_dns_servers_name(struct cpool_config *cfg)
{
	cfg->dns_servers = "ns.example:53";
}

static void
spoil_dns_servers_port(struct cpool_config *cfg)
{
	cfg->dns_servers = "127.0.0.1:53,127.0.0.2:65536";
}

static void
spoil_dns_servers_v6(struct cpool_config *cfg)
{
	cfg->dns_servers = "[::1]:"; /* a bracket, then no port */
}

Test(api, create_rejects_each_invalid_field_and_names_it_in_the_log)
{
	static const struct bad_field bad[] = {
		{ "workers", spoil_workers },
		{ "max_conns_per_endpoint", spoil_max_conns },
		{ "min_idle_per_endpoint", spoil_min_idle },
		{ "connect_timeout_ms", spoil_connect_timeout },
		{ "keepalive_interval_s", spoil_keepalive_interval },
		{ "keepalive_count", spoil_keepalive_count },
		{ "flags", spoil_flags_high },
		{ "flags", spoil_flags_next },
		{ "dns_min_ttl_ms", spoil_dns_min },
		{ "dns_max_ttl_ms", spoil_dns_max },
		{ "dns_max_ttl_ms", spoil_dns_max_day },
		{ "max_ejection_percent", spoil_ejection_percent },
		{ "happy_eyeballs_ms", spoil_happy_eyeballs },
		{ "dns_servers", spoil_dns_servers_empty },
		{ "dns_servers", spoil_dns_servers_name },
		{ "dns_servers", spoil_dns_servers_port },
		{ "dns_servers", spoil_dns_servers_v6 },
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
		struct log_capture lc;
		struct cpool_config cfg;
		struct cpool *pool = SENTINEL_POOL;
		int err;

		log_capture_init(&lc);
		cpool_config_init(&cfg);
		cfg.log_fn = log_capture_fn;
		cfg.user_data = &lc;
		bad[i].spoil(&cfg);
		err = cpool_create(&cfg, &pool);
		cr_assert_eq(err, -EINVAL, "%s: got %d (%s) want -EINVAL",
			     bad[i].field, err, strerror(-err));
		cr_assert_eq(pool, SENTINEL_POOL, "%s: out changed on failure",
			     bad[i].field);
		cr_assert_geq(log_capture_count(&lc, bad[i].field), 1,
			      "no log message names \"%s\": %s", bad[i].field,
			      log_capture_dump(&lc));
	}
}

Test(api, create_accepts_the_edges_of_the_valid_ranges)
{
	struct cpool_config cfg;

	/* min_idle == max, keepalive off with interval and count 0 */
	cpool_config_init(&cfg);
	cfg.workers = 1;
	cfg.max_conns_per_endpoint = 1;
	cfg.min_idle_per_endpoint = 1;
	cfg.keepalive_idle_s = 0;
	cfg.keepalive_interval_s = 0;
	cfg.keepalive_count = 0;
	cfg.acquire_timeout_ms = 0;
	cfg.idle_timeout_ms = 0;
	cfg.flags = CPOOL_NONBLOCK | CPOOL_NO_PIN;
	cpool_destroy(pool_new(&cfg));

	/* the 0.2 fields: min == max, no Happy Eyeballs, no ejection, 100 %,
	 * servers of both families with and without ports */
	cpool_config_init(&cfg);
	cfg.workers = 1;
	cfg.dns_min_ttl_ms = 1;
	cfg.dns_max_ttl_ms = 1;
	cfg.happy_eyeballs_ms = 0;
	cfg.eject_after_failures = 0;
	cfg.max_ejection_percent = 100;
	cfg.dns_servers = "127.0.0.1,127.0.0.2:5353,[::1]:53,::1";
	cpool_destroy(pool_new(&cfg));
	cfg.dns_max_ttl_ms = 86400000;
	cfg.happy_eyeballs_ms = 5000; /* past connect_timeout_ms: legal */
	cpool_destroy(pool_new(&cfg));
}

Test(api, dns_servers_is_copied_at_create)
{
	char servers[] = "127.0.0.1:9";
	struct cpool_config cfg;
	struct cpool *pool;

	cpool_config_init(&cfg);
	cfg.workers = 1;
	cfg.dns_servers = servers;
	pool = pool_new(&cfg);
	memset(servers, 'x', sizeof(servers) - 1); /* now invalid */
	/* a numeric address never reaches the resolver */
	assert_ret(cpool_endpoint_add(pool, "127.0.0.1:1"), 0);
	cpool_destroy(pool);
}

Test(api, handles_check_their_arguments_and_refuse_unknown_endpoints)
{
	struct fault_server *fs = server_new(FS_INET);
	const char *addr = fs_address(fs);
	struct cpool *pool = pool_new(NULL);
	struct cpool_endpoint *ep = (struct cpool_endpoint *)SENTINEL_CONN;
	struct cpool_conn *c = SENTINEL_CONN;

	pool_add(pool, addr);
	assert_ret(cpool_endpoint_get(NULL, addr, &ep), -EINVAL);
	assert_ret(cpool_endpoint_get(pool, NULL, &ep), -EINVAL);
	assert_ret(cpool_endpoint_get(pool, addr, NULL), -EINVAL);
	assert_ret(cpool_endpoint_get(pool, "127.0.0.1:1", &ep), -ENOENT);
	cr_assert_eq(ep, (struct cpool_endpoint *)SENTINEL_CONN,
		     "out changed on failure");
	assert_ret(cpool_acquire_ep(NULL, &c), -EINVAL);
	cpool_endpoint_put(NULL);

	assert_ret(cpool_endpoint_get(pool, addr, &ep), 0);
	assert_ret(cpool_acquire_ep(ep, NULL), -EINVAL);
	assert_ret(cpool_acquire_ep(ep, &c), 0);
	assert_echo(c, "by handle");
	cpool_release(c, 0);
	/* the handle's lease and the name's are the same pool's */
	c = lease(pool, addr);
	cr_assert(cpool_conn_reused(c), "by name after by handle: not reused");
	cpool_release(c, 0);
	assert_stat(stats_of(pool, addr), acquires, 2);
	assert_stat(stats_of(pool, addr), connects, 1);

	/* removed: -ENOENT for good, also once the address is back */
	assert_ret(cpool_endpoint_remove(pool, addr), 0);
	assert_ret(cpool_acquire_ep(ep, &c), -ENOENT);
	pool_add(pool, addr);
	assert_ret(cpool_acquire_ep(ep, &c), -ENOENT);
	cpool_endpoint_put(ep);
	assert_ret(cpool_endpoint_get(pool, addr, &ep), 0);
	assert_ret(cpool_acquire_ep(ep, &c), 0);
	cpool_release(c, 0);

	/* a handle may outlive its pool: -ESHUTDOWN, then put frees it all */
	cpool_destroy(pool);
	assert_ret(cpool_acquire_ep(ep, &c), -ESHUTDOWN);
	cpool_endpoint_put(ep);
	fs_stop(fs);
}

Test(api, stats_closed_reads_old_and_appended_reasons_within_the_size)
{
	struct cpool_stats st;

	memset(&st, 0, sizeof(st));
	st.size = sizeof(st);
	st.closed[CPOOL_CLOSE_SHUTDOWN] = 7;
	st.closed_more[CPOOL_CLOSE_DRAINED - CPOOL_CLOSE_REASON_COUNT] = 9;
	cr_assert_eq(cpool_stats_closed(&st, CPOOL_CLOSE_SHUTDOWN), 7);
	cr_assert_eq(cpool_stats_closed(&st, CPOOL_CLOSE_DRAINED), 9);
	cr_assert_eq(cpool_stats_closed(&st, CPOOL_CLOSE_REASON_END), 0);
	cr_assert_eq(cpool_stats_closed(&st, (enum cpool_close_reason)-1), 0);
	cr_assert_eq(cpool_stats_closed(NULL, CPOOL_CLOSE_SHUTDOWN), 0);
	/* a caller built before closed_more[]: its size ends before it */
	st.size = offsetof(struct cpool_stats, closed_more);
	cr_assert_eq(cpool_stats_closed(&st, CPOOL_CLOSE_DRAINED), 0);
	cr_assert_eq(cpool_stats_closed(&st, CPOOL_CLOSE_SHUTDOWN), 7);
	/* the v0.1 fields did not move */
	cr_assert_eq(offsetof(struct cpool_stats, closed), 8 + 7 * 8);
	cr_assert_eq(offsetof(struct cpool_stats, open),
		     8 + 7 * 8 + CPOOL_CLOSE_REASON_COUNT * 8);
	cr_assert_eq(CPOOL_CLOSE_REASON_COUNT, 11);
}

Test(api, stats_addresses_of_a_numeric_endpoint_is_its_one_address)
{
	struct fault_server *fs = server_new(FS_INET);
	const char *addr = fs_address(fs);
	struct cpool *pool = pool_new(NULL);
	struct cpool_addr_stats as[2];
	struct cpool_conn *c;
	unsigned n = 99;

	pool_add(pool, addr);
	assert_ret(cpool_stats_addresses(NULL, addr, as, 2, &n), -EINVAL);
	assert_ret(cpool_stats_addresses(pool, NULL, as, 2, &n), -EINVAL);
	assert_ret(cpool_stats_addresses(pool, addr, as, 2, NULL), -EINVAL);
	assert_ret(cpool_stats_addresses(pool, addr, NULL, 2, &n), -EINVAL);
	as[0].size = 8;
	assert_ret(cpool_stats_addresses(pool, addr, as, 2, &n), -EINVAL);
	assert_ret(cpool_stats_addresses(pool, "127.0.0.1:1", NULL, 0, &n),
		   -ENOENT);
	assert_ret(cpool_stats_addresses(pool, addr, NULL, 0, &n), 0);
	cr_assert_eq(n, 1);

	c = lease(pool, addr);
	cpool_release(lease(pool, addr), 0);
	as[0].size = sizeof(as[0]);
	assert_ret(cpool_stats_addresses(pool, addr, as, 2, &n), 0);
	cr_assert_eq(n, 1);
	cr_assert_str_eq(as[0].address, addr);
	cr_assert_eq(as[0].state, 0);
	cr_assert_eq(as[0].open, 2);
	cr_assert_eq(as[0].leased, 1);
	cr_assert_eq(as[0].connects, 2);
	cr_assert_eq(as[0].connect_failures, 0);
	cr_assert_eq(as[0].ejections, 0);
	assert_stat(stats_of(pool, addr), addresses, 1);
	assert_stat(stats_of(pool, NULL), addresses, 1);
	cpool_release(c, 0);
	cpool_destroy(pool);
	fs_stop(fs);
}

Test(api, create_accepts_a_larger_struct_whose_tail_is_zero)
{
	unsigned char buf[sizeof(struct cpool_config) + 64];
	struct cpool_config *cfg = (struct cpool_config *)buf;
	struct cpool *pool = NULL;

	memset(buf, 0, sizeof(buf));
	cpool_config_init(cfg);
	cfg->size = sizeof(buf);
	assert_ret(cpool_create(cfg, &pool), 0);
	cpool_destroy(pool);
}

Test(api, create_rejects_a_larger_struct_with_a_non_zero_tail)
{
	unsigned char buf[sizeof(struct cpool_config) + 64];
	struct cpool_config *cfg = (struct cpool_config *)buf;

	for (size_t at = sizeof(struct cpool_config); at < sizeof(buf);
	     at += 21) {
		struct cpool *pool = SENTINEL_POOL;

		memset(buf, 0, sizeof(buf));
		cpool_config_init(cfg);
		cfg->size = sizeof(buf);
		buf[at] = 1;
		assert_ret(cpool_create(cfg, &pool), -EINVAL);
		cr_assert_eq(pool, SENTINEL_POOL, "out changed on failure");
	}
}

Test(api, null_arguments_return_einval)
{
	struct fault_server *fs = server_new(FS_INET);
	const char *addr = fs_address(fs);
	struct cpool *pool = pool_new(NULL);
	struct cpool_conn *c = SENTINEL_CONN;
	struct cpool_stats st = { .size = sizeof(st) };

	pool_add(pool, addr);
	assert_ret(cpool_acquire(NULL, addr, &c), -EINVAL);
	assert_ret(cpool_acquire(pool, NULL, &c), -EINVAL);
	assert_ret(cpool_acquire(pool, addr, NULL), -EINVAL);
	cr_assert_eq(c, SENTINEL_CONN, "out changed on failure");
	assert_ret(cpool_endpoint_add(NULL, addr), -EINVAL);
	assert_ret(cpool_endpoint_add(pool, NULL), -EINVAL);
	assert_ret(cpool_endpoint_remove(NULL, addr), -EINVAL);
	assert_ret(cpool_endpoint_remove(pool, NULL), -EINVAL);
	assert_ret(cpool_stats_get(NULL, addr, &st), -EINVAL);
	assert_ret(cpool_stats_get(NULL, NULL, &st), -EINVAL);
	assert_ret(cpool_stats_get(pool, addr, NULL), -EINVAL);
	assert_ret(cpool_stats_get(pool, NULL, NULL), -EINVAL);
	assert_ret(cpool_memory_get(NULL), -EINVAL);
	assert_ret(cpool_conn_fd(NULL), -EINVAL);
	assert_ret(cpool_send(NULL, "x", 1), -EINVAL);
	assert_ret(cpool_recv(NULL, &(char){ 0 }, 1), -EINVAL);

	/* the endpoint is still there and works */
	c = lease(pool, addr);
	assert_ret(cpool_send(c, NULL, 1), -EINVAL);
	assert_ret(cpool_recv(c, NULL, 1), -EINVAL);
	assert_echo(c, "after the bad calls");
	cpool_release(c, 0);
	st = stats_of(pool, addr);
	assert_stat(st, open, 1);
	assert_stat(st, idle, 1);
	assert_stat(st, closed[CPOOL_CLOSE_BY_CALLER], 0);
	cpool_destroy(pool);
	fs_stop(fs);
}

Test(api, malformed_addresses_are_rejected_with_einval)
{
	char long_path[160], max_path[160];
	const char *bad[] = {
		"127.0.0.1:0",	"[::1]:0",	 ":80",
		"127.0.0.1:65536", "127.0.0.1:99999999999", "127.0.0.1:",
		"127.0.0.1",	"[::1]",	 "[::1]:",
		"::1:80",	"unix:",	 "",
		"127.0.0.1:80x", "127.0.0.1:-1",	 "[::1:80",
		long_path,
	};
	struct cpool *pool = pool_new(NULL);
	struct cpool_stats st;

	/* sun_path holds 107 characters and the NUL: 108 is too long */
	snprintf(long_path, sizeof(long_path), "unix:/%0107d", 0);
	cr_assert_eq(strlen(long_path), 5 + 108);
	for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
		int err = cpool_endpoint_add(pool, bad[i]);

		cr_assert_eq(err, -EINVAL, "\"%s\": got %d (%s) want -EINVAL",
			     bad[i], err, strerror(-err));
	}
	snprintf(max_path, sizeof(max_path), "unix:/%0106d", 0);
	cr_assert_eq(strlen(max_path), 5 + 107);
	assert_ret(cpool_endpoint_add(pool, max_path), 0);
	st = stats_of(pool, NULL);
	assert_stat(st, open, 0);
	cpool_destroy(pool);
}

Test(api, well_formed_addresses_are_accepted_without_connecting)
{
	const char *good[] = {
		"127.0.0.1:1", "127.0.0.1:65535", "[::1]:80", "localhost:1",
		"unix:/tmp/cpool-no-such-socket", "unix:@cpool-abstract",
	};
	struct cpool *pool = pool_new(NULL);

	for (size_t i = 0; i < sizeof(good) / sizeof(*good); i++) {
		int err = cpool_endpoint_add(pool, good[i]);

		cr_assert_eq(err, 0, "\"%s\": got %d (%s) want 0", good[i],
			     err, strerror(-err));
	}
	assert_stat(stats_of(pool, NULL), connects, 0);
	assert_stat(stats_of(pool, "localhost:1"), open, 0);
	cpool_destroy(pool);
}

Test(api, a_name_that_does_not_resolve_gives_the_resolvers_mapped_code)
{
	const char *why = NULL;
	struct cpool_config cfg;
	struct dnssrv d;
	struct cpool *pool;
	int64_t t0;
	int err;

	if (!dnssrv_available(&why))
		cr_skip_test("%s", why);
	assert_ret(dnssrv_start(&d, 1), 0);
	cpool_config_init(&cfg);
	cfg.workers = 1;
	cfg.dns_servers = d.servers;
	pool = pool_new(&cfg);
	/* NXDOMAIN: the server says so at once */
	t0 = now_ms();
	assert_ret(cpool_endpoint_add(pool, "no-such-host.test:80"),
		   -EHOSTUNREACH);
	cr_assert_lt(now_ms() - t0, 2000, "NXDOMAIN took %lld ms",
		     (long long)(now_ms() - t0));
	/* nothing was added */
	assert_ret(cpool_endpoint_remove(pool, "no-such-host.test:80"),
		   -ENOENT);
	cpool_destroy(pool);

	/* No server: -EAGAIN (refused) or -ETIMEDOUT, within the 5 s bound */
	dnssrv_stop(&d);
	pool = pool_new(&cfg);
	t0 = now_ms();
	err = cpool_endpoint_add(pool, "no-such-host.test:80");
	cr_assert(err == -EAGAIN || err == -ETIMEDOUT,
		  "got %d (%s) want -EAGAIN or -ETIMEDOUT", err,
		  strerror(-err));
	cr_assert_lt(now_ms() - t0, 5000 + 1500, "took %lld ms",
		     (long long)(now_ms() - t0));
	assert_ret(cpool_endpoint_remove(pool, "no-such-host.test:80"),
		   -ENOENT);
	cpool_destroy(pool);
	dnssrv_free(&d);
}

Test(api, endpoints_are_unique_and_acquire_needs_a_known_one)
{
	struct fault_server *fs = server_new(FS_INET);
	const char *addr = fs_address(fs);
	struct cpool *pool = pool_new(NULL);
	struct cpool_conn *c = SENTINEL_CONN;
	struct cpool_stats st = { .size = sizeof(st) };

	assert_ret(cpool_acquire(pool, addr, &c), -ENOENT);
	cr_assert_eq(c, SENTINEL_CONN, "out changed on failure");
	assert_ret(cpool_endpoint_remove(pool, addr), -ENOENT);
	assert_ret(cpool_stats_get(pool, addr, &st), -ENOENT);
	pool_add(pool, addr);
	assert_ret(cpool_endpoint_add(pool, addr), -EEXIST);
	c = lease(pool, addr);
	assert_echo(c, "one");
	cpool_release(c, 0);

	assert_ret(cpool_endpoint_remove(pool, addr), 0);
	c = SENTINEL_CONN;
	assert_ret(cpool_acquire(pool, addr, &c), -ENOENT);
	cr_assert_eq(c, SENTINEL_CONN, "out changed on failure");
	assert_ret(cpool_endpoint_remove(pool, addr), -ENOENT);

	/* the same address may be added again at once, and works */
	pool_add(pool, addr);
	c = lease(pool, addr);
	cr_assert_not(cpool_conn_reused(c),
		      "a re-added endpoint reused a connection of the old one");
	assert_echo(c, "two");
	cpool_release(c, 0);
	st = stats_of(pool, addr);
	assert_stat(st, acquires, 1);
	assert_stat(st, open, 1);
	cpool_destroy(pool);
	fs_stop(fs);
}

Test(api, acquire_on_a_refused_port_returns_econnrefused_and_counts_it)
{
	struct fault_server *fs = server_new(FS_INET);
	const char *addr = fs_address(fs);
	struct cpool_config cfg = config_one_shard();
	struct cpool *pool = pool_new(&cfg);
	struct cpool_conn *c = SENTINEL_CONN;
	struct cpool_stats st;
	char closed_addr[64];
	int port = closed_port(AF_INET);

	cr_assert_gt(port, 0);
	snprintf(closed_addr, sizeof(closed_addr), "127.0.0.1:%d", port);
	pool_add(pool, closed_addr);
	assert_ret(cpool_acquire(pool, closed_addr, &c), -ECONNREFUSED);
	cr_assert_eq(c, SENTINEL_CONN, "out changed on failure");
	st = stats_of(pool, closed_addr);
	assert_stat(st, connect_failures, 1);
	assert_stat(st, connects, 0);
	assert_stat(st, acquires, 0);
	assert_stat(st, open, 0);

	/* a server that stops listening: refused too */
	pool_add(pool, addr);
	c = lease(pool, addr);
	cpool_release(c, CPOOL_RELEASE_CLOSE);
	fs_refuse(fs);
	c = SENTINEL_CONN;
	assert_ret(cpool_acquire(pool, addr, &c), -ECONNREFUSED);
	cr_assert_eq(c, SENTINEL_CONN, "out changed on failure");
	st = stats_of(pool, addr);
	assert_stat(st, connect_failures, 1);
	assert_stat(st, connects, 1);
	assert_stat(st, acquires, 1);
	assert_stat(st, open, 0);
	st = stats_of(pool, NULL);
	assert_stat(st, connect_failures, 2);
	cpool_destroy(pool);
	fs_stop(fs);
}

Test(api, at_the_fd_limit_acquire_returns_emfile_and_recovers)
{
	struct fault_server *fs = server_new(FS_INET);
	const char *addr = fs_address(fs);
	struct cpool_config cfg = config_one_shard();
	struct cpool *pool = pool_new(&cfg);
	struct cpool_conn *a, *b = SENTINEL_CONN;
	struct rlimit rl;
	int dups[512], ndup = 0, base, err, fd;

	pool_add(pool, addr);
	a = lease(pool, addr);
	fd = cpool_conn_fd(a);
	assert_echo(a, "accepted"); /* the server side exists now */
	cpool_release(a, 0);	     /* one idle connection */

	/* each Criterion test is its own process: lower its limit */
	cr_assert_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
	rl.rlim_cur = (rlim_t)count_open_fds() + 64;
	cr_assert_eq(setrlimit(RLIMIT_NOFILE, &rl), 0, "setrlimit: %s",
		     strerror(errno));
	base = open("/dev/null", O_RDONLY | O_CLOEXEC);
	cr_assert_geq(base, 0);
	for (;;) {
		int d = fcntl(base, F_DUPFD_CLOEXEC, 0);

		if (d == -1) {
			cr_assert_eq(errno, EMFILE, "dup: %s", strerror(errno));
			break;
		}
		cr_assert_lt(ndup, 512, "the fd limit never hit");
		dups[ndup++] = d;
	}

	/* the idle connection needs no fd: still handed out */
	a = lease(pool, addr);
	cr_assert_eq(cpool_conn_fd(a), fd);
	cr_assert(cpool_conn_reused(a));
	/* a new one does */
	err = cpool_acquire(pool, addr, &b);
	cr_assert_eq(err, -EMFILE, "got %d (%s) want -EMFILE", err,
		     strerror(-err));
	cr_assert_eq(b, SENTINEL_CONN, "out changed on failure");
	assert_echo(a, "still works");

	for (int i = 0; i < ndup; i++)
		close(dups[i]);
	close(base);

	b = lease(pool, addr);
	cr_assert_not(cpool_conn_reused(b));
	assert_echo(b, "recovered");
	cpool_release(a, 0);
	cpool_release(b, 0);
	assert_stat(stats_of(pool, addr), open, 2);
	assert_stat(stats_of(pool, addr), leased, 0);
	cpool_destroy(pool);
	fs_stop(fs);
}

Test(api, destroy_leaves_no_fd_open)
{
	struct fault_server *fs = server_new(FS_INET);
	const char *addr = fs_address(fs);
	struct cpool_config cfg = config_one_shard();
	struct cpool *pool;
	struct cpool_conn *c[3];
	int before, after;

	before = count_open_fds();
	pool = pool_new(&cfg);
	pool_add(pool, addr);
	for (int i = 0; i < 3; i++)
		c[i] = lease(pool, addr);
	for (int i = 0; i < 3; i++)
		assert_echo(c[i], "x");
	cpool_release(c[0], 0);
	cpool_release(c[1], 0);
	cpool_release(c[2], CPOOL_RELEASE_CLOSE);
	c[0] = lease(pool, addr);
	cpool_release(c[0], 0);
	assert_stat(stats_of(pool, addr), idle, 2);
	cpool_destroy(pool);

	cr_assert_eq(fs_wait_open(fs, 0, WAIT_MS), 0,
		     "the server still holds %u connections", fs_open(fs));
	after = count_open_fds();
	cr_assert_eq(after, before, "open fds: %d before create, %d after "
		     "destroy", before, after);
	fs_stop(fs);
}

Test(api, a_lease_outlives_destroy_and_its_release_frees_everything)
{
	struct fault_server *fs = server_new(FS_INET);
	const char *addr = fs_address(fs);
	struct cpool_config cfg = config_one_shard();
	struct cpool *pool;
	struct cpool_conn *c, *idle;
	int before, after, fd;

	before = count_open_fds();
	pool = pool_new(&cfg);
	pool_add(pool, addr);
	c = lease(pool, addr);
	idle = lease(pool, addr);
	cpool_release(idle, 0);
	cr_assert_eq(fs_wait_accepted(fs, 2, WAIT_MS), 0);
	cpool_destroy(pool);

	cr_assert_eq(fs_wait_open(fs, 1, WAIT_MS), 0,
		     "destroy should close the idle one only: server holds %u",
		     fs_open(fs));
	fd = cpool_conn_fd(c);
	cr_assert_geq(fd, 0);
	cr_assert_eq(echo_roundtrip_fd(fd, "raw fd after destroy"), 0);
	assert_echo(c, "helpers after destroy");
	cpool_release(c, 0);

	cr_assert_eq(fs_wait_open(fs, 0, WAIT_MS), 0,
		     "the release did not close it: server holds %u",
		     fs_open(fs));
	after = count_open_fds();
	cr_assert_eq(after, before, "open fds: %d before, %d after", before,
		     after);
	fs_stop(fs);
}

Test(api, a_double_release_is_logged_and_ignored)
{
	struct fault_server *fs = server_new(FS_INET);
	const char *addr = fs_address(fs);
	struct cpool_config cfg = config_one_shard();
	struct log_capture lc;
	struct cpool *pool;
	struct cpool_conn *c;
	struct cpool_stats st1, st2;
	int fd;

	log_capture_init(&lc);
	cfg.log_fn = log_capture_fn;
	cfg.user_data = &lc;
	pool = pool_new(&cfg);
	pool_add(pool, addr);
	c = lease(pool, addr);
	fd = cpool_conn_fd(c);
	cpool_release(c, 0);
	st1 = stats_of(pool, addr);
	cr_assert_eq(log_capture_count(&lc, "release"), 0,
		     "a good release was logged: %s", log_capture_dump(&lc));

	cpool_release(c, 0);
	cpool_release(c, CPOOL_RELEASE_CLOSE);
	st2 = stats_of(pool, addr);
	assert_same_stats(&st1, &st2, "double release");
	cr_assert_geq(log_capture_count(&lc, "release"), 2,
		      "want a message naming release per double release: %s",
		      log_capture_dump(&lc));

	/* the connection is pooled once, intact */
	c = lease(pool, addr);
	cr_assert(cpool_conn_reused(c));
	cr_assert_eq(cpool_conn_fd(c), fd);
	assert_echo(c, "intact");
	cpool_release(c, 0);
	st2 = stats_of(pool, addr);
	assert_stat(st2, open, 1);
	assert_stat(st2, idle, 1);
	assert_stat(st2, connects, 1);
	cr_assert_eq(fs_accepted(fs), 1);
	cpool_destroy(pool);
	fs_stop(fs);
}

Test(api, io_on_a_connection_that_is_not_leased_returns_einval)
{
	struct fault_server *fs = server_new(FS_INET);
	const char *addr = fs_address(fs);
	struct cpool_config cfg = config_one_shard();
	struct cpool *pool = pool_new(&cfg);
	struct cpool_conn *c;
	char b;

	pool_add(pool, addr);
	c = lease(pool, addr);
	cpool_release(c, 0); /* idle in the pool: the object is still valid */
	assert_ret(cpool_send(c, "x", 1), -EINVAL);
	assert_ret(cpool_recv(c, &b, 1), -EINVAL);
	/* and that did not break the pooled connection */
	c = lease(pool, addr);
	cr_assert(cpool_conn_reused(c));
	assert_echo(c, "fine");
	cpool_release(c, 0);
	assert_stat(stats_of(pool, addr), closed[CPOOL_CLOSE_BY_CALLER], 0);
	cpool_destroy(pool);
	fs_stop(fs);
}

Test(api, stats_get_checks_the_callers_size_and_writes_no_more)
{
	struct fault_server *fs = server_new(FS_INET);
	const char *addr = fs_address(fs);
	struct cpool *pool = pool_new(NULL);
	unsigned char buf[sizeof(struct cpool_stats) + 32];
	struct cpool_stats *st = (struct cpool_stats *)buf;
	/* too small: anything that cuts the last field, leased */
	const size_t sizes[] = { 0, 1, offsetof(struct cpool_stats, open),
				 offsetof(struct cpool_stats, leased) +
					 sizeof(uint32_t) - 1 };

	pool_add(pool, addr);
	for (size_t i = 0; i < sizeof(sizes) / sizeof(*sizes); i++) {
		memset(buf, 0xab, sizeof(buf));
		st->size = sizes[i];
		assert_ret(cpool_stats_get(pool, addr, st), -EINVAL);
		assert_ret(cpool_stats_get(pool, NULL, st), -EINVAL);
		for (size_t j = sizeof(size_t); j < sizeof(buf); j++)
			cr_assert_eq(buf[j], 0xab,
				     "size %zu: byte %zu written on failure",
				     sizes[i], j);
	}
	/* out untouched on -ENOENT */
	memset(buf, 0xab, sizeof(buf));
	st->size = sizeof(struct cpool_stats);
	assert_ret(cpool_stats_get(pool, "127.0.0.1:1", st), -ENOENT);
	for (size_t j = sizeof(size_t); j < sizeof(buf); j++)
		cr_assert_eq(buf[j], 0xab, "byte %zu written on -ENOENT", j);

	/* a newer caller's bigger struct: nothing past ours is written */
	memset(buf, 0xab, sizeof(buf));
	st->size = sizeof(buf);
	assert_ret(cpool_stats_get(pool, addr, st), 0);
	for (size_t j = sizeof(struct cpool_stats); j < sizeof(buf); j++)
		cr_assert_eq(buf[j], 0xab, "byte %zu past the struct written",
			     j);
	assert_stat(*st, acquires, 0);
	assert_stat(*st, open, 0);
	cpool_destroy(pool);
	fs_stop(fs);
}

Test(api, memory_get_counts_the_librarys_own_allocations)
{
	struct fault_server *fs = server_new(FS_INET);
	const char *addr = fs_address(fs);
	struct cpool_config cfg = config_one_shard();
	struct cpool *pool = pool_new(&cfg);
	struct cpool_conn *c[16];
	size_t before = (size_t)-1, after = (size_t)-1;

	pool_add(pool, addr);
	assert_ret(cpool_memory_get(&before), 0);
	cr_assert_neq(before, (size_t)-1);
	for (int i = 0; i < 16; i++)
		c[i] = lease(pool, addr);
	assert_ret(cpool_memory_get(&after), 0);
	cr_assert_gt(after, before,
		     "16 connections opened: %zu bytes before, %zu after",
		     before, after);
	for (int i = 0; i < 16; i++)
		cpool_release(c[i], 0);
	cpool_destroy(pool);
	fs_stop(fs);
}

Test(api, the_host_malloc_is_not_replaced)
{
	Dl_info info;
	void *sym = dlsym(RTLD_DEFAULT, "malloc");

	cr_assert_not_null(sym, "dlsym(malloc): %s", dlerror());
	cr_assert_neq(dladdr(sym, &info), 0, "dladdr(malloc) failed");
	cr_assert_not_null(info.dli_fname);
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
	/* a sanitizer runtime legitimately interposes malloc */
	cr_assert(strstr(info.dli_fname, "libc.so") ||
			  strstr(info.dli_fname, "libasan") ||
			  strstr(info.dli_fname, "libtsan"),
		  "malloc comes from %s", info.dli_fname);
#else
	cr_assert(strstr(info.dli_fname, "libc.so"),
		  "malloc comes from %s, not libc", info.dli_fname);
	cr_assert(dladdr((void *)malloc, &info) != 0 &&
			  strstr(info.dli_fname, "libc.so"),
		  "&malloc resolves into %s", info.dli_fname);
#endif
	/* and jemalloc's own entry points are not exported by the binary */
	cr_assert_null(dlsym(RTLD_DEFAULT, "mallocx"),
		       "mallocx is visible: jemalloc leaked out of libcpool");
	cr_assert_null(dlsym(RTLD_DEFAULT, "je_malloc"));
}

Test(api, a_unix_socket_endpoint_works_end_to_end)
{
	struct fault_server *fs = server_new(FS_UNIX);
	const char *addr = fs_address(fs);
	struct cpool_config cfg = config_one_shard();
	struct cpool *pool = pool_new(&cfg);
	struct cpool_conn *c;
	struct cpool_stats st;
	int fd;

	cr_assert_eq(strncmp(addr, "unix:/", 6), 0, "address %s", addr);
	pool_add(pool, addr);
	c = lease(pool, addr);
	fd = cpool_conn_fd(c);
	cr_assert_not(cpool_conn_reused(c));
	assert_echo(c, "over a unix socket");
	cpool_release(c, 0);
	c = lease(pool, addr);
	cr_assert(cpool_conn_reused(c));
	cr_assert_eq(cpool_conn_fd(c), fd);
	assert_echo(c, "again");
	cpool_release(c, 0);
	st = stats_of(pool, addr);
	assert_stat(st, acquires, 2);
	assert_stat(st, reuses, 1);
	assert_stat(st, connects, 1);
	assert_stat(st, open, 1);
	cpool_destroy(pool);
	cr_assert_eq(fs_wait_open(fs, 0, WAIT_MS), 0);
	fs_stop(fs);
}

Test(api, a_unix_socket_nobody_listens_on_is_refused)
{
	struct fault_server *fs = server_new(FS_UNIX);
	const char *addr = fs_address(fs);
	struct cpool *pool = pool_new(NULL);
	struct cpool_conn *c = SENTINEL_CONN;

	fs_refuse(fs);
	pool_add(pool, addr);
	assert_ret(cpool_acquire(pool, addr, &c), -ECONNREFUSED);
	cr_assert_eq(c, SENTINEL_CONN);
	assert_stat(stats_of(pool, addr), connect_failures, 1);
	cpool_destroy(pool);
	fs_stop(fs);
}
