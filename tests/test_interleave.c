/* SPDX-License-Identifier: MIT */
/*
 * Forced interleavings: debug builds of the library (CPOOL_DEBUG: make test
 * runs this suite against build-debug/, make asan/tsan run it too) call a
 * hook at named pause points of their concurrency protocols
 * (pool/util.h). Each test arms one point, holds the thread that reaches it
 * until the scenario it guards is set up around it, and checks the outcome.
 * Against a release build these tests skip: the points are compiled out.
 *
 *  - a release preempted between reading "nobody waits" and pushing, while
 *    a waiter makes its last look: the waiter must get the connection (the
 *    look takes every list lock), not sleep next to it;
 *  - a worker that read its clock and is preempted while another worker
 *    advances the tick and a release stamps with it: no idle-timeout close
 *    from a wrapped age;
 *  - worker events on connections a removal has already drained: closed
 *    once each, never twice;
 *  - a host-local connect failure (EPOLL_CTL_ADD says ENOSPC): no backoff,
 *    no fail-fast, the next acquire works;
 *  - a release preempted between its "address still in the set" check and
 *    its push while DNS drops the address and the drain runs: the
 *    connection it then pools is closed as drained (by the worker, or by
 *    a checkout that meets it first), never leased again;
 *  - a worker between counting itself in a watch's arming and its
 *    EPOLL_CTL_MOD while a caller leases that connection: the lease waits,
 *    because its holder's library may close the fd (make soak-tsan saw
 *    libpq's close race the worker's MOD);
 *  - a release the peer closed, leased again inside probe_bypass_ms while
 *    the worker has not armed its watch: handed out unprobed, as
 *    configured (the worker is held: once loaded, it armed the watch and
 *    closed the connection before the lease).
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <fcntl.h>
#include <poll.h>
#include <stdatomic.h>
#include <unistd.h>

#include "util.h" /* the pause points */
#include "util/check.h"
#include "util/waitfor.h"
#include "util/leakcheck.h"
#include "util/dnssrv.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

TestSuite(interleave, .timeout = 60, .fini = leak_fini);

extern int (*cpool_debug_pause_hook)(int point, const void *obj)
	__attribute__((weak));

/* Armed pause points: the first thread to reach a holding one stays there. */
#define PP_MAX 16
static pthread_mutex_t pp_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t pp_cond = PTHREAD_COND_INITIALIZER;
static struct {
	bool armed;
	bool hold;	   /* hold the first thread that matches */
	unsigned index;	   /* worker points: only this worker (-1u: any) */
	int hits;	   /* matches since armed */
	bool held, go;
	unsigned gen;	   /* arms so far: a new arm releases the held too */
	int fault;	   /* what a fault point returns */
} pp[PP_MAX];

static int
pp_hook(int point, const void *obj)
{
	int ret = 0;
	unsigned gen;

	pthread_mutex_lock(&pp_lock);
	if (pp[point].armed &&
	    (pp[point].index == -1u || *(const unsigned *)obj == pp[point].index)) {
		pp[point].hits++;
		ret = pp[point].fault;
		if (pp[point].hold && pp[point].hits == 1) {
			gen = pp[point].gen;
			pp[point].held = true;
			pthread_cond_broadcast(&pp_cond);
			while (!pp[point].go && pp[point].gen == gen)
				pthread_cond_wait(&pp_cond, &pp_lock);
		}
		pthread_cond_broadcast(&pp_cond);
	}
	pthread_mutex_unlock(&pp_lock);
	return ret;
}

/* Arms @point; @index: the worker it applies to (worker points), or -1u. */
static void
pp_arm(int point, bool hold, unsigned index, int fault)
{
	if (!&cpool_debug_pause_hook)
		cr_skip_test("pause points need a debug build of the library "
			     "(make test runs this suite in build-debug/)");
	pthread_mutex_lock(&pp_lock);
	pp[point].hold = hold;
	pp[point].index = index;
	pp[point].hits = 0;
	pp[point].held = pp[point].go = false;
	pp[point].fault = fault;
	pp[point].gen++;
	pp[point].armed = true;
	pthread_cond_broadcast(&pp_cond);
	pthread_mutex_unlock(&pp_lock);
	__atomic_store_n(&cpool_debug_pause_hook, pp_hook, __ATOMIC_RELEASE);
}

/*
 * Waits until a thread is held at @point (@n 0) or it was hit @n times;
 * false on timeout.
 */
static bool
pp_wait(int point, int n, int timeout_ms)
{
	struct timespec ts;
	bool ok;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += timeout_ms / 1000;
	ts.tv_nsec += (timeout_ms % 1000) * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&pp_lock);
	while (!(n ? pp[point].hits >= n : pp[point].held) &&
	       pthread_cond_timedwait(&pp_cond, &pp_lock, &ts) == 0)
		;
	ok = n ? pp[point].hits >= n : pp[point].held;
	pthread_mutex_unlock(&pp_lock);
	return ok;
}

/* Lets the thread held at @point go and disarms it. */
static void
pp_release(int point)
{
	pthread_mutex_lock(&pp_lock);
	pp[point].go = true;
	pp[point].armed = false;
	pthread_cond_broadcast(&pp_cond);
	pthread_mutex_unlock(&pp_lock);
}

static void
pp_disarm(void)
{
	for (int i = 0; i < PP_MAX; i++)
		pp_release(i);
	__atomic_store_n(&cpool_debug_pause_hook, NULL, __ATOMIC_RELEASE);
}

struct call {
	struct cpool *pool;
	const char *addr;
	struct cpool_conn *c;
	pthread_t t;
	pid_t tid;
	int cpu;		/* pin to it first, or -1 */
	int err;
	int64_t elapsed_ms;
	atomic_bool done;
};

static void *
acquire_main(void *arg)
{
	struct call *x = arg;
	int64_t t0;

	x->tid = gettid();
	if (x->cpu >= 0)
		pin_to(x->cpu);
	t0 = now_ms();
	x->err = cpool_acquire(x->pool, x->addr, &x->c);
	x->elapsed_ms = now_ms() - t0;
	atomic_store(&x->done, true);
	return NULL;
}

static void *
release_main(void *arg)
{
	struct call *x = arg;

	if (x->cpu >= 0)
		pin_to(x->cpu);
	cpool_release(x->c, 0);
	atomic_store(&x->done, true);
	return NULL;
}

static void
call_start(struct call *x, void *(*fn)(void *))
{
	cr_assert_eq(pthread_create(&x->t, NULL, fn, x), 0);
}

/* Joins @x, failing (not hanging) if it does not end in @ms. */
static void
call_join(struct call *x, int ms)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += ms / 1000 + 1;
	cr_assert_eq(pthread_timedjoin_np(x->t, NULL, &ts), 0,
		     "the call did not return within %d ms", ms);
}

Test(interleave, a_waiters_last_look_waits_for_a_release_between_gate_and_push)
{
	struct fault_server *fs = server_new(FS_INET);
	const char *addr = fs_address(fs);
	struct cpool_config cfg = config_one_shard();
	struct call r = { .cpu = -1 }, w = { .cpu = -1 };
	struct cpool_stats st;
	struct cpool *pool;
	int fd;

	cfg.max_conns_per_endpoint = 1;
	cfg.acquire_timeout_ms = 3000;
	pool = pool_new(&cfg);
	pool_add(pool, addr);
	r.pool = w.pool = pool;
	r.addr = w.addr = addr;
	r.c = lease(pool, addr);
	fd = cpool_conn_fd(r.c);

	/* The waiter found nothing on its fast path; it is not registered. */
	pp_arm(CPOOL_PP_WAIT_ENTER, true, -1u, 0);
	call_start(&w, acquire_main);
	cr_assert(pp_wait(CPOOL_PP_WAIT_ENTER, 0, WAIT_MS),
		  "the acquire never came to wait");
	/* The release reads "nobody waits" and stops, list lock held. */
	pp_arm(CPOOL_PP_RELEASE_GATE_READ, true, -1u, 0);
	call_start(&r, release_main);
	cr_assert(pp_wait(CPOOL_PP_RELEASE_GATE_READ, 0, WAIT_MS),
		  "the release never reached the point");
	/*
	 * The waiter registers and makes its last look, which needs the list
	 * lock the release holds. A look that skipped the list unlocked
	 * would go to sleep: give it the chance (it sleeps within
	 * microseconds), then let the release push. A correct look is still
	 * waiting for the lock here.
	 */
	pp_release(CPOOL_PP_WAIT_ENTER);
	wait_thread_sleeping(w.tid, 100);
	pp_disarm();
	call_join(&r, WAIT_MS);
	call_join(&w, 5000);
	assert_ret(w.err, 0);
	cr_assert_lt(w.elapsed_ms, 1000,
		     "the waiter slept next to the released connection for "
		     "%lld ms", (long long)w.elapsed_ms);
	cr_assert_eq(cpool_conn_fd(w.c), fd, "not the released connection");
	cpool_release(w.c, 0);
	st = stats_of(pool, addr);
	assert_stat(st, timeouts, 0);
	assert_stat(st, connects, 1);
	cpool_destroy(pool);
	fs_stop(fs);
}

Test(interleave, a_worker_preempted_after_its_clock_read_never_wraps_an_age)
{
	struct fault_server *fs = server_new(FS_INET);
	const char *addr = fs_address(fs);
	struct cpool_config cfg;
	struct call rel[8];
	struct cpool_conn *c[8];
	struct cpool_stats st;
	struct cpool *pool;
	int i;

	if (sysconf(_SC_NPROCESSORS_ONLN) < 2)
		cr_skip_test("needs 2 CPUs: one worker runs while the other "
			     "is held");
	cpool_config_init(&cfg);
	cfg.workers = 2;
	cfg.idle_timeout_ms = 60000;
	pool = pool_new(&cfg);
	pool_add(pool, addr);
	for (i = 0; i < 8; i++)
		c[i] = lease(pool, addr);

	/* Worker 0 read its clock; worker 1 keeps advancing the tick. */
	pp_arm(CPOOL_PP_WORKER_CLOCK, true, 0, 0);
	cr_assert(pp_wait(CPOOL_PP_WORKER_CLOCK, 0, WAIT_MS), "worker 0 never reached the point");
	pause_ms(10); /* the tick moves past worker 0's reading */
	/* Released on CPU 0, stamped with the later tick, handed to worker 0. */
	for (i = 0; i < 8; i++) {
		rel[i] = (struct call){ .c = c[i], .cpu = 0 };
		call_start(&rel[i], release_main);
		call_join(&rel[i], WAIT_MS);
	}
	pp_disarm();
	/* Worker 0 looks at them with its early reading, a few times. */
	pp_arm(CPOOL_PP_WORKER_CLOCK, false, 0, 0);
	cr_assert(pp_wait(CPOOL_PP_WORKER_CLOCK, 5, WAIT_MS), "worker 0 stopped");
	pp_disarm();
	st = stats_of(pool, addr);
	assert_stat(st, closed[CPOOL_CLOSE_IDLE_TIMEOUT], 0);
	assert_stat(st, idle, 8);
	cpool_destroy(pool);
	fs_stop(fs);
}

static void *
remove_main(void *arg)
{
	struct call *x = arg;

	x->err = cpool_endpoint_remove(x->pool, x->addr);
	atomic_store(&x->done, true);
	return NULL;
}

Test(interleave, worker_events_on_drained_connections_never_close_them_twice)
{
	struct fault_server *fs = server_new(FS_INET);
	const char *addr = fs_address(fs);
	struct cpool_config cfg = config_one_shard();
	struct call rm = { .cpu = -1 };
	struct cpool_conn *c[64];
	int i, fd[64], pipes[4][2];
	unsigned long long closed = 0;
	struct cpool_stats st;
	struct cpool *pool;
	char b;

	pool = pool_new(&cfg);
	pool_add(pool, addr);
	for (i = 0; i < 64; i++) {
		c[i] = lease(pool, addr);
		fd[i] = cpool_conn_fd(c[i]);
	}
	for (i = 0; i < 64; i++)
		cpool_release(c[i], 0);
	/* Idle for a few ticks: the workers arm every one of them. */
	pause_ms(30);

	/* The removal stops with the lists drained, its closes not done. */
	pp_arm(CPOOL_PP_DRAIN_DONE, true, -1u, 0);
	rm.pool = pool;
	rm.addr = addr;
	call_start(&rm, remove_main);
	cr_assert(pp_wait(CPOOL_PP_DRAIN_DONE, 0, WAIT_MS), "the removal never drained");
	/* Now every one of them gets a FIN, and the worker its events. */
	cr_assert_eq(fs_close_all(fs), 64);
	for (i = 0; i < 64; i++)
		cr_assert_gt(wait_fd(fd[i], POLLRDHUP, WAIT_MS), 0,
			     "no FIN seen on fd %d", fd[i]);
	pause_ms(20); /* ticks for the worker to handle its events */
	/* fd numbers a double close would hit */
	for (i = 0; i < 4; i++)
		cr_assert_eq(pipe2(pipes[i], O_CLOEXEC), 0);
	pp_disarm();
	call_join(&rm, WAIT_MS);
	assert_ret(rm.err, 0);

	st = stats_of(pool, NULL);
	for (i = 0; i < CPOOL_CLOSE_REASON_COUNT; i++)
		closed += st.closed[i];
	assert_stat(st, connects, 64);
	cr_assert_eq(closed, 64, "closed %llu connections, opened 64", closed);
	assert_stat(st, closed[CPOOL_CLOSE_SHUTDOWN], 64);
	assert_stat(st, open, 0);
	for (i = 0; i < 4; i++) {
		cr_assert_eq(write(pipes[i][1], "x", 1), 1,
			     "pipe %d's write end was closed under the test", i);
		cr_assert_eq(read(pipes[i][0], &b, 1), 1,
			     "pipe %d's read end was closed under the test", i);
		close(pipes[i][0]);
		close(pipes[i][1]);
	}
	cpool_destroy(pool);
	fs_stop(fs);
}

Test(interleave, an_epoll_limit_of_this_host_starts_no_backoff_for_the_endpoint)
{
	struct fault_server *fs = server_new(FS_INET);
	const char *addr = fs_address(fs);
	struct cpool_config cfg = config_one_shard();
	struct cpool_conn *c = NULL;
	struct cpool_stats st;
	struct cpool *pool;
	int i;

	pool = pool_new(&cfg);
	pool_add(pool, addr);
	/* fs.epoll.max_user_watches reached: EPOLL_CTL_ADD says ENOSPC. */
	pp_arm(CPOOL_PP_FAULT_EPOLL_ADD, false, -1u, -ENOSPC);
	for (i = 0; i < 3; i++)
		assert_ret(cpool_acquire(pool, addr, &c), -ENOSPC);
	pp_disarm();
	st = stats_of(pool, addr);
	assert_stat(st, backoffs, 0);
	assert_stat(st, fail_fasts, 0);
	assert_stat(st, connect_failures, 3);
	assert_stat(st, open, 0);
	/* The limit lifted: the very next acquire connects. */
	c = lease(pool, addr);
	assert_echo(c, "after enospc");
	cpool_release(c, 0);
	cpool_destroy(pool);
	cr_assert_eq(fs_accepted(fs), 4, "server saw %u connects, want 4",
		     fs_accepted(fs));
	fs_stop(fs);
}

/* A listener on @ip:@port (0: any) that never accepts; its port. */
static int
listen_on(const char *ip, int port, int *fd)
{
	struct sockaddr_in sin = { .sin_family = AF_INET,
				   .sin_port = htons((uint16_t)port) };
	socklen_t len = sizeof(sin);
	int one = 1;

	cr_assert_eq(inet_pton(AF_INET, ip, &sin.sin_addr), 1);
	*fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	cr_assert_geq(*fd, 0);
	setsockopt(*fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	cr_assert_eq(bind(*fd, (struct sockaddr *)&sin, sizeof(sin)), 0,
		     "bind %s:%d: %s", ip, port, strerror(errno));
	/* Connections complete in the accept queue (SOCKETS.md S11). */
	cr_assert_eq(listen(*fd, 64), 0);
	cr_assert_eq(getsockname(*fd, (struct sockaddr *)&sin, &len), 0);
	return ntohs(sin.sin_port);
}

/* The peer address of a lease, as "a.b.c.d". */
static void
peer_ip(struct cpool_conn *c, char *buf, size_t len)
{
	struct sockaddr_in sin;
	socklen_t slen = sizeof(sin);

	cr_assert_eq(getpeername(cpool_conn_fd(c), (struct sockaddr *)&sin,
				 &slen),
		     0);
	inet_ntop(AF_INET, &sin.sin_addr, buf, (socklen_t)len);
}

/* State of the address @text of @addr's set, or -1 when it is gone. */
static int
address_state(struct cpool *pool, const char *addr, const char *text)
{
	struct cpool_addr_stats as[8];
	unsigned n = 0, i;

	as[0].size = sizeof(as[0]);
	assert_ret(cpool_stats_addresses(pool, addr, as, 8, &n), 0);
	for (i = 0; i < n && i < 8; i++)
		if (!strcmp(as[i].address, text))
			return (int)as[i].state;
	return -1;
}

Test(interleave, a_release_racing_a_drain_never_pools_a_gone_address)
{
	const char *why = NULL, *two[] = { "127.0.0.2" },
		   *three[] = { "127.0.0.3" };
	struct cpool_config cfg = config_one_shard();
	struct call rel = { .cpu = -1 };
	char addr[64], gone[64], ip[32];
	struct cpool_stats st;
	struct dnssrv d;
	struct cpool *pool;
	struct cpool_conn *c;
	int l2, l3, port;
	int64_t t0;

	if (!dnssrv_available(&why))
		cr_skip_test("no dnsmasq: %s", why);
	pp_arm(CPOOL_PP_RELEASE_CHECKED, false, -1u, 0); /* skips if release */
	pp_disarm();
	port = listen_on("127.0.0.2", 0, &l2);
	listen_on("127.0.0.3", port, &l3);
	assert_ret(dnssrv_start(&d, 1), 0);
	assert_ret(dnssrv_set(&d, "race.test", two, 1), 0);
	cfg.dns_servers = d.servers;
	cfg.dns_min_ttl_ms = 50;
	cfg.dns_max_ttl_ms = 100;
	cfg.probe_bypass_ms = 0;
	pool = pool_new(&cfg);
	snprintf(addr, sizeof(addr), "race.test:%d", port);
	snprintf(gone, sizeof(gone), "127.0.0.2:%d", port);
	pool_add(pool, addr);
	c = lease(pool, addr);
	peer_ip(c, ip, sizeof(ip));
	cr_assert_str_eq(ip, "127.0.0.2");

	/* The release passed its check and stops before the push. */
	pp_arm(CPOOL_PP_RELEASE_CHECKED, true, -1u, 0);
	rel.c = c;
	call_start(&rel, release_main);
	cr_assert(pp_wait(CPOOL_PP_RELEASE_CHECKED, 0, WAIT_MS),
		  "the release never reached its push");
	/* DNS drops .2: the refresh drains it while the lease is out. */
	assert_ret(dnssrv_set(&d, "race.test", three, 1), 0);
	t0 = now_ms();
	while (address_state(pool, addr, gone) != CPOOL_ADDR_DRAINING &&
	       now_ms() - t0 < 5000)
		pause_ms(5);
	cr_assert_eq(address_state(pool, addr, gone), CPOOL_ADDR_DRAINING,
		     "%s not draining 5 s after the change", gone);
	st = stats_of(pool, addr);
	assert_stat(st, open, 1);
	cr_assert_eq(cpool_stats_closed(&st, CPOOL_CLOSE_DRAINED), 0);

	/* Now it pools the connection to the gone address. */
	pp_disarm();
	call_join(&rel, WAIT_MS);
	/* Closed as drained: by the worker's look at the list it joined. */
	assert_stats_wait(pool, addr, st,
			  cpool_stats_closed(&st, CPOOL_CLOSE_DRAINED) == 1,
			  WORKER_WAIT_MS);
	assert_stat(st, open, 0);
	assert_stat(st, idle, 0);
	/* The close is counted before its address learns of it (the same
	 * worker's next steps): unlisted within a worker's wait. */
	t0 = now_ms();
	while (address_state(pool, addr, gone) != -1 &&
	       now_ms() - t0 < WORKER_WAIT_MS)
		pause_ms(1);
	cr_assert_eq(address_state(pool, addr, gone), -1,
		     "%s still listed %d ms after its last connection closed",
		     gone, WORKER_WAIT_MS);
	/* The next lease is a new connection to .3. */
	c = lease(pool, addr);
	peer_ip(c, ip, sizeof(ip));
	cr_assert_str_eq(ip, "127.0.0.3");
	cr_assert(!cpool_conn_reused(c));
	cpool_release(c, 0);
	cpool_destroy(pool);
	dnssrv_free(&d);
	close(l2);
	close(l3);
}

Test(interleave, a_lease_waits_for_a_worker_arming_its_watch)
{
	struct fault_server *fs = server_new(FS_INET);
	const char *addr = fs_address(fs);
	struct cpool_config cfg = config_one_shard();
	struct call acq = { .cpu = -1 };
	struct cpool *pool;
	struct cpool_conn *c;
	int64_t t0;

	pp_arm(CPOOL_PP_WORKER_ARM, false, -1u, 0); /* skips if release */
	pp_disarm();
	pool = pool_new(&cfg);
	pool_add(pool, addr);
	c = lease(pool, addr);
	/* The worker arms the idle connection a tick on: hold it there. */
	pp_arm(CPOOL_PP_WORKER_ARM, true, -1u, 0);
	cpool_release(c, 0);
	cr_assert(pp_wait(CPOOL_PP_WORKER_ARM, 0, WAIT_MS),
		  "the worker never armed the idle connection");
	/*
	 * A caller leases it now: it must not get the fd while the worker's
	 * EPOLL_CTL_MOD on it is still to come (the holder's library may
	 * close it, and the number be reused under the MOD).
	 */
	acq.pool = pool;
	acq.addr = addr;
	call_start(&acq, acquire_main);
	t0 = now_ms();
	while (now_ms() - t0 < 300 && !atomic_load(&acq.done))
		pause_ms(1);
	cr_assert(!atomic_load(&acq.done),
		  "the lease came out while the worker was arming its watch "
		  "(err %d after %lld ms)",
		  acq.err, (long long)acq.elapsed_ms);
	pp_disarm();
	call_join(&acq, WAIT_MS);
	assert_ret(acq.err, 0);
	cr_assert_eq(acq.c, c, "not the idle connection");
	cpool_release(acq.c, 0);
	cpool_destroy(pool);
	fs_stop(fs);
}

/*
 * probe_bypass_ms: a connection released less than that ago is handed out
 * without the probe, dead or not; the caller finds out. The worker would
 * arm its watch two ticks after the release and close it at the peer's
 * FIN: it is held meanwhile (in make tsan under load it got there first).
 */
Test(interleave, probe_bypass_hands_out_a_recent_release_without_probing)
{
	struct fault_server *fs = server_new(FS_INET);
	const char *addr = fs_address(fs);
	struct cpool_config cfg = config_one_shard();
	struct cpool *pool;
	struct cpool_conn *c;
	struct cpool_stats st;
	int fd;
	char b;

	cfg.probe_bypass_ms = 600000; /* opt-in: no probe for 10 minutes */
	pool = pool_new(&cfg);
	pool_add(pool, addr);
	c = lease(pool, addr);
	fd = cpool_conn_fd(c);
	pp_arm(CPOOL_PP_WORKER_CLOCK, true, 0, 0);
	cr_assert(pp_wait(CPOOL_PP_WORKER_CLOCK, 0, WAIT_MS),
		  "worker 0 never reached the point");
	cpool_release(c, 0);
	cr_assert_eq(fs_close_all(fs), 1);
	cr_assert(wait_fd(fd, POLLRDHUP, WAIT_MS) & POLLRDHUP);

	/* not probed: the dead connection is handed out, as configured */
	c = lease(pool, addr);
	cr_assert_eq(cpool_conn_fd(c), fd);
	cr_assert(cpool_conn_reused(c));
	/* the caller finds out and the helpers mark it broken */
	cr_assert_eq(cpool_recv(c, &b, 1), 0);
	cpool_release(c, 0);
	pp_disarm();
	st = stats_of(pool, addr);
	assert_stat(st, closed[CPOOL_CLOSE_PEER_CLOSED], 0);
	assert_stat(st, closed[CPOOL_CLOSE_BY_CALLER], 1);
	assert_stat(st, open, 0);
	assert_balanced(&st);
	cpool_destroy(pool);
	fs_stop(fs);
}
