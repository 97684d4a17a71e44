/* SPDX-License-Identifier: MIT */
/*
 * bench_detect: how soon a dead upstream connection leaves the pool.
 *
 * FIN: the bench's own listener accepts the pool's one connection, then
 * closes its end while the connection sits idle in the pool.
 *  - background: with nobody acquiring, poll cpool_stats_get() (closed by
 *    peer_closed/peer_reset, or the open gauge) until the connection is
 *    gone, at most 2 s; without worker threads nothing evicts it, and the
 *    bench says so instead of printing a number;
 *  - checkout: the next cpool_acquire() must not hand it out: its time (the
 *    probe that finds the FIN, the close, the new connect) is reported.
 * cpool_bypass within its window, the mutex pool and apr_reslist are shown
 * for contrast: they hand the dead connection out (cpool_probe() on the
 * fd they return says what it is).
 *
 * Half-dead (root only): the upstream sits in a network namespace the bench
 * creates behind a veth pair; the link is taken down, so no FIN ever comes;
 * keepalive (1 s idle, 1 s interval, 2 probes) must find it. Background and
 * periodic-acquire (every 50 ms) eviction times are reported. The namespace
 * and link are deleted on every exit path.
 */
#include "bench.h"

#include <arpa/inet.h>
#include <cpool.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define BG_WAIT_MS 2000

static int
accept_one(int lfd, int timeout_ms)
{
	struct pollfd p = { .fd = lfd, .events = POLLIN };

	if (poll(&p, 1, timeout_ms) != 1)
		return -ETIMEDOUT;
	return accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
}

static void
sleep_us(unsigned us)
{
	struct timespec ts = { us / 1000000, (long)(us % 1000000) * 1000 };

	nanosleep(&ts, NULL);
}

static uint64_t
dead_closed(struct cpool *pool, const char *addr, uint32_t *open)
{
	struct cpool_stats st = { .size = sizeof(st) };

	if (cpool_stats_get(pool, addr, &st))
		return 0;
	if (open)
		*open = st.open;
	return st.closed[CPOOL_CLOSE_PEER_CLOSED] +
	       st.closed[CPOOL_CLOSE_PEER_RESET] +
	       st.closed[CPOOL_CLOSE_TIMED_OUT] +
	       st.closed[CPOOL_CLOSE_SOCKET_ERROR];
}

/*
 * Polls, with nobody acquiring, until a dead-connection close is counted
 * or the open gauge drops; the time since @t0 in ms, or NAN after @max_ms.
 */
static double
wait_background(struct cpool *pool, const char *addr, uint64_t before,
		uint64_t t0, unsigned max_ms)
{
	uint32_t open = 1;
	uint64_t now;

	for (;;) {
		now = bench_now_ns();
		if (dead_closed(pool, addr, &open) > before || open == 0)
			return (double)(now - t0) / 1e6;
		if (now - t0 > (uint64_t)max_ms * 1000000)
			return NAN;
		sleep_us(100);
	}
}

struct fin_result {
	double bg_ms[BENCH_MAX_REPS];
	unsigned nbg, bg_tried;
	double checkout_us[BENCH_MAX_REPS];
	unsigned ncheckout;
	unsigned handed_dead;
	unsigned trials;
	enum cpool_verdict dead_verdict;
};

/* cpool (probe on, or bypass when @bypass): FIN trials. */
static void
fin_cpool(const struct bench_env *env, int lfd, bool bypass,
	  const struct bench_opts *o, struct fin_result *fr)
{
	struct cpool_config cfg;
	struct cpool *pool;
	struct cpool_conn *c;
	uint64_t before, t0;
	bool bg = !bypass;
	unsigned r;
	int sfd = -1, err;
	double ms;

	memset(fr, 0, sizeof(*fr));
	cpool_config_init(&cfg);
	cfg.max_conns_per_endpoint = 1;
	cfg.idle_timeout_ms = 0;
	cfg.probe_bypass_ms = bypass ? BENCH_BYPASS_MS : 0;
	if (cpool_create(&cfg, &pool) || cpool_endpoint_add(pool, env->addr))
		bench_die("cpool setup failed");
	for (r = 0; r < o->reps; r++) {
		bench_progress(o, "detect FIN %s trial %u/%u",
			       bypass ? "cpool_bypass" : "cpool", r + 1,
			       o->reps);
		/* One idle connection in the pool, its server end in sfd. */
		err = cpool_acquire(pool, env->addr, &c);
		if (err)
			bench_die("acquire: %s", cpool_strerror(err));
		if (!cpool_conn_reused(c) || sfd < 0) {
			if (sfd >= 0)
				close(sfd);
			sfd = accept_one(lfd, 1000);
			if (sfd < 0)
				bench_die("accept: %s", strerror(-sfd));
		}
		cpool_release(c, 0);
		if (!bypass)
			sleep_us(1000); /* idle a moment, like a real one */
		before = dead_closed(pool, env->addr, NULL);
		t0 = bench_now_ns();
		close(sfd); /* FIN: the server has read nothing it owes */
		sfd = -1;
		if (bg) {
			fr->bg_tried++;
			ms = wait_background(pool, env->addr, before, t0,
					     BG_WAIT_MS);
			if (isnan(ms))
				bg = false; /* no worker: do not wait again */
			else
				fr->bg_ms[fr->nbg++] = ms;
		}
		t0 = bench_now_ns();
		err = cpool_acquire(pool, env->addr, &c);
		if (err)
			bench_die("acquire: %s", cpool_strerror(err));
		if (cpool_conn_reused(c)) {
			/* The dead one came back. */
			fr->handed_dead++;
			fr->dead_verdict = cpool_probe(cpool_conn_fd(c));
			cpool_release(c, CPOOL_RELEASE_CLOSE);
		} else {
			fr->checkout_us[fr->ncheckout++] =
				(double)(bench_now_ns() - t0) / 1e3;
			sfd = accept_one(lfd, 1000);
			cpool_release(c, 0);
		}
		fr->trials++;
	}
	if (sfd >= 0)
		close(sfd);
	cpool_destroy(pool);
}

/* A peer without liveness checks: does it hand the dead one out? */
static void
fin_peer(const struct peer_ops *ops, const struct bench_env *env, int lfd,
	 const struct bench_opts *o, struct fin_result *fr)
{
	struct bench_lease l;
	void *inst;
	unsigned r;
	int sfd;

	memset(fr, 0, sizeof(*fr));
	for (r = 0; r < o->reps; r++) {
		bench_progress(o, "detect FIN %s trial %u/%u", ops->name, r + 1,
			       o->reps);
		if (ops->create(env, 1, &inst))
			bench_die("%s setup failed", ops->name);
		sfd = accept_one(lfd, 1000);
		close(sfd);
		sleep_us(1000);
		if (ops->acquire(inst, &l) == 0) {
			fr->dead_verdict = cpool_probe(l.fd);
			if (fr->dead_verdict != CPOOL_ALIVE)
				fr->handed_dead++;
			ops->release(inst, &l, false);
		}
		ops->destroy(inst);
		fr->trials++;
	}
}

static void
report_fin(const char *name, const struct fin_result *fr, bool has_probe)
{
	char bg[96], co[160];
	double v[BENCH_MAX_REPS];
	double bgm = NAN, com = NAN;

	if (!has_probe) {
		snprintf(bg, sizeof(bg), "never (no liveness check)");
	} else if (!fr->bg_tried) {
		snprintf(bg, sizeof(bg), "not measured (bypass)");
	} else if (fr->nbg) {
		memcpy(v, fr->bg_ms, sizeof(double) * fr->nbg);
		bgm = bench_median(v, fr->nbg);
		snprintf(bg, sizeof(bg), "%.2f ms median (%u/%u)", bgm, fr->nbg,
			 fr->bg_tried);
	} else {
		snprintf(bg, sizeof(bg),
			 "not evicted within %d ms (no worker yet)",
			 BG_WAIT_MS);
	}
	if (fr->handed_dead) {
		snprintf(co, sizeof(co), "handed out dead (%s) %u/%u",
			 cpool_verdict_name(fr->dead_verdict), fr->handed_dead,
			 fr->trials);
	} else if (fr->ncheckout) {
		memcpy(v, fr->checkout_us, sizeof(double) * fr->ncheckout);
		com = bench_median(v, fr->ncheckout);
		snprintf(co, sizeof(co),
			 "never handed out; acquire %.1f us median "
			 "(probe + close + connect) %u/%u",
			 com, fr->ncheckout, fr->trials);
	} else {
		snprintf(co, sizeof(co), "-");
	}
	printf("%-14s %-44s %s\n", name, bg, co);
	printf("SUMMARY bench=detect_fin pool=%s threads=1 "
	       "background_evict_ms=%s checkout_acquire_us=%.1f "
	       "handed_out_dead=%u trials=%u\n",
	       name, isnan(bgm) ? "none" : bg, com, fr->handed_dead,
	       fr->trials);
}

/* ---- half-dead: a namespace behind a veth pair whose link goes down ---- */

static char ns_name[32], veth_host[16], veth_ns[16];
static bool ns_made;

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int
sh(const char *fmt, ...)
{
	char cmd[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	return system(cmd);
}

static void
ns_cleanup(void)
{
	if (!ns_made)
		return;
	ns_made = false;
	sh("ip link del %s >/dev/null 2>&1", veth_host);
	sh("ip netns del %s >/dev/null 2>&1", ns_name);
}

static void
ns_on_signal(int sig)
{
	ns_cleanup();
	signal(sig, SIG_DFL);
	raise(sig);
}

/* Creates the namespace; returns a listening fd inside it, or -errno. */
static int
ns_setup(struct bench_env *env, int *lfd_out)
{
	char path[64];
	int self, ns, lfd, err;
	uint16_t port = 0;
	unsigned pid = (unsigned)getpid() % 60000;

	snprintf(ns_name, sizeof(ns_name), "cpoolb%u", pid);
	snprintf(veth_host, sizeof(veth_host), "cpbh%u", pid);
	snprintf(veth_ns, sizeof(veth_ns), "cpbn%u", pid);
	ns_made = true;
	atexit(ns_cleanup);
	signal(SIGINT, ns_on_signal);
	signal(SIGTERM, ns_on_signal);
	if (sh("ip netns add %s", ns_name) ||
	    sh("ip link add %s type veth peer name %s", veth_host, veth_ns) ||
	    sh("ip link set %s netns %s", veth_ns, ns_name) ||
	    sh("ip addr add 10.213.77.1/30 dev %s", veth_host) ||
	    sh("ip link set %s up", veth_host) ||
	    sh("ip -n %s addr add 10.213.77.2/30 dev %s", ns_name, veth_ns) ||
	    sh("ip -n %s link set %s up", ns_name, veth_ns) ||
	    sh("ip -n %s link set lo up", ns_name))
		return -EIO;
	snprintf(path, sizeof(path), "/var/run/netns/%s", ns_name);
	self = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
	ns = open(path, O_RDONLY | O_CLOEXEC);
	if (self < 0 || ns < 0 || setns(ns, CLONE_NEWNET) == -1) {
		err = -errno;
		goto out;
	}
	lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	memset(&env->sin, 0, sizeof(env->sin));
	env->sin.sin_family = AF_INET;
	inet_pton(AF_INET, "10.213.77.2", &env->sin.sin_addr);
	err = 0;
	if (lfd < 0 ||
	    bind(lfd, (struct sockaddr *)&env->sin, sizeof(env->sin)) == -1 ||
	    listen(lfd, 16) == -1)
		err = -errno;
	if (setns(self, CLONE_NEWNET) == -1)
		bench_die("cannot return to the bench's namespace");
	if (!err) {
		socklen_t len = sizeof(env->sin);

		getsockname(lfd, (struct sockaddr *)&env->sin, &len);
		port = ntohs(env->sin.sin_port);
		snprintf(env->addr, sizeof(env->addr), "10.213.77.2:%u", port);
		*lfd_out = lfd;
	} else if (lfd >= 0) {
		close(lfd);
	}
out:
	if (self >= 0)
		close(self);
	if (ns >= 0)
		close(ns);
	return err;
}

/*
 * Two pools, one connection each into the namespace: pool 0 is left alone
 * (background eviction), pool 1 is acquired every 50 ms (checkout-probe
 * eviction). The link goes down at t0; both are watched for up to 6 s.
 */
static void
half_dead(const struct bench_opts *o)
{
	struct cpool_config cfg;
	struct bench_env env;
	struct cpool *pool[2] = { NULL, NULL };
	struct cpool_conn *c;
	uint64_t before[2], t0, next_acq;
	double ms[2] = { NAN, NAN };
	int lfd = -1, sfd[2] = { -1, -1 }, err, i;

	printf("\n== detection: half-dead upstream (veth link down, no FIN), "
	       "keepalive 1 s idle + 2 x 1 s ==\n");
	if (geteuid() != 0) {
		printf("skipped: needs root (network namespaces)\n");
		printf("SUMMARY bench=detect_half_dead pool=cpool threads=1 "
		       "skipped=not_root\n");
		return;
	}
	memset(&env, 0, sizeof(env));
	err = ns_setup(&env, &lfd);
	if (err) {
		printf("skipped: cannot create the namespace and veth pair "
		       "(%s)\n",
		       strerror(-err));
		printf("SUMMARY bench=detect_half_dead pool=cpool threads=1 "
		       "skipped=no_netns\n");
		ns_cleanup();
		return;
	}
	cpool_config_init(&cfg);
	cfg.max_conns_per_endpoint = 1;
	cfg.idle_timeout_ms = 0;
	cfg.keepalive_idle_s = 1;
	cfg.keepalive_interval_s = 1;
	cfg.keepalive_count = 2;
	cfg.connect_timeout_ms = 200;
	cfg.acquire_timeout_ms = 200;
	for (i = 0; i < 2; i++) {
		if (cpool_create(&cfg, &pool[i]) ||
		    cpool_endpoint_add(pool[i], env.addr))
			bench_die("cpool setup failed");
		err = cpool_acquire(pool[i], env.addr, &c);
		if (err) {
			printf("skipped: cannot connect into the namespace "
			       "(%s)\n",
			       cpool_strerror(err));
			goto out;
		}
		sfd[i] = accept_one(lfd, 1000);
		cpool_release(c, 0);
		before[i] = dead_closed(pool[i], env.addr, NULL);
	}
	t0 = bench_now_ns();
	next_acq = t0;
	sh("ip -n %s link set %s down", ns_name, veth_ns);
	bench_progress(o, "detect half-dead: watching for up to 6 s");
	while (bench_now_ns() - t0 < 6000000000ull &&
	       (isnan(ms[0]) || isnan(ms[1]))) {
		if (isnan(ms[1]) && bench_now_ns() >= next_acq) {
			next_acq += 50000000;
			if (!cpool_acquire(pool[1], env.addr, &c))
				cpool_release(c, 0);
		}
		for (i = 0; i < 2; i++)
			if (isnan(ms[i]) &&
			    dead_closed(pool[i], env.addr, NULL) > before[i])
				ms[i] = (double)(bench_now_ns() - t0) / 1e6;
		sleep_us(200);
	}
	bench_progress_end(o);
	if (isnan(ms[0]))
		printf("cpool, nobody acquiring:    not evicted within 6000 ms "
		       "(no worker yet)\n");
	else
		printf("cpool, nobody acquiring:    evicted after %.0f ms\n",
		       ms[0]);
	if (isnan(ms[1]))
		printf("cpool, acquire every 50 ms: not evicted within 6000 "
		       "ms\n");
	else
		printf("cpool, acquire every 50 ms: found dead by the checkout "
		       "probe after %.0f ms\n",
		       ms[1]);
	printf("(keepalive budget: 1 s idle + 2 probes x 1 s = 3000 ms; "
	       "TCP_USER_TIMEOUT derived from it)\n");
	printf("SUMMARY bench=detect_half_dead pool=cpool threads=1 "
	       "background_evict_ms=%.0f checkout_evict_ms=%.0f\n",
	       ms[0], ms[1]);
out:
	for (i = 0; i < 2; i++) {
		if (sfd[i] >= 0)
			close(sfd[i]);
		if (pool[i])
			cpool_destroy(pool[i]);
	}
	close(lfd);
	ns_cleanup();
}

int
main(int argc, char **argv)
{
	struct fin_result fr[4];
	struct bench_server fake = { 0 };
	struct bench_env env;
	struct bench_opts o;
	double v[BENCH_MAX_REPS];
	int lfd;

	bench_opts_default(&o);
	bench_init(argc, argv, &o, NULL);
	lfd = bench_listen(&fake.port);
	if (lfd < 0)
		bench_die("listen: %s", strerror(-lfd));
	bench_env_init(&env, &fake, BENCH_ACQUIRE_RELEASE);
	printf("bench_detect: the upstream is the bench's own listener on %s; "
	       "%u trials\n",
	       env.addr, o.reps);
	fin_cpool(&env, lfd, false, &o, &fr[0]);
	fin_cpool(&env, lfd, true, &o, &fr[1]);
	fin_peer(&peer_mutex, &env, lfd, &o, &fr[2]);
	fin_peer(&peer_apr, &env, lfd, &o, &fr[3]);
	bench_progress_end(&o);
	printf("\n== detection: the peer's FIN on an idle pooled connection "
	       "==\n");
	printf("%-14s %-44s %s\n", "pool", "background (nobody acquiring)",
	       "next acquire");
	report_fin("cpool", &fr[0], true);
	report_fin("cpool_bypass", &fr[1], true);
	report_fin("mutex", &fr[2], false);
	report_fin("apr_reslist", &fr[3], false);
	printf("(memcached_pool has no liveness check either, like mutex; "
	       "cpool_bypass skips the probe within %d ms of a release, by "
	       "design)\n",
	       BENCH_BYPASS_MS);
	close(lfd);
	half_dead(&o);
	printf("\n");
	if (fr[0].nbg) {
		memcpy(v, fr[0].bg_ms, sizeof(double) * fr[0].nbg);
		bench_goal("fin_evicted_background_ms",
			   fr[0].nbg == fr[0].bg_tried
				   ? bench_median(v, fr[0].nbg)
				   : NAN,
			   "<=", 10,
			   "median ms from a peer's FIN to eviction, nobody "
			   "acquiring");
	} else {
		bench_goal_na("fin_evicted_background_ms",
			      "not evicted in background (no worker yet)",
			      "median ms from a peer's FIN to eviction, nobody "
			      "acquiring");
	}
	return 0;
}
