/* SPDX-License-Identifier: MIT */
/*
 * bench_redis: one redis GET of an existing key per operation, 1 thread
 * by default, against a redis-server the bench starts on a free loopback
 * port. Client and server are pinned to one CPU (-p, default 0), as in
 * bench_request: the figure is client CPU per request (getrusage), the
 * repetitions interleave the peers and the report gives medians.
 *
 * Peers, same GET on the wire for all:
 *   adapter    cpool + libcpool_redis: acquire, redisCommand on the
 *              connection's persistent context, release
 *   adapter_bypass  the same with probe_bypass_ms = BENCH_BYPASS_MS (no
 *              checkout probe on a connection released < 1 s ago; the
 *              release op's peek stays): what the checkout probe costs
 *   perlease   cpool without ops: redisConnectFd() on the pooled fd per
 *              lease, redisFreeKeepFd() before the release (the README's
 *              recipe before the adapter)
 *   dedicated  one redisContext per thread, no pool: the limit
 *   connect    redisConnect + GET + redisFree per request
 *
 * The peers have their own thread loop (redis_loop() below, the same
 * protocol as bench_loop.h: ready, batches of BENCH_BATCH with the first
 * timed, done) because bench_loop.h's request is memcached's.
 */
#include "bench.h"

#include <cpool.h>
#include <cpool_redis.h>
#include <errno.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define KEY "cpool_bench_key"
#define VAL "cpool_bench_value"

static pid_t redis_pid = -1;
static uint16_t redis_port;

/* ---- the server ---------------------------------------------------------- */

static void
redis_kill(void)
{
	if (redis_pid > 0) {
		kill(redis_pid, SIGKILL);
		waitpid(redis_pid, NULL, 0);
		redis_pid = -1;
	}
}

/* Starts redis-server pinned to @cpu and waits until it answers PING. */
static int
redis_start(int cpu)
{
	char port_s[16];
	pid_t parent = getpid();
	struct timespec ts = { 0, 5 * 1000 * 1000 };
	int err, fd;

	err = bench_free_port(&redis_port);
	if (err)
		return err;
	snprintf(port_s, sizeof(port_s), "%u", redis_port);
	fflush(NULL);
	redis_pid = fork();
	if (redis_pid == -1)
		return -errno;
	if (redis_pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(1);
		if (cpu >= 0)
			bench_pin_self(cpu);
		fd = open("/dev/null", O_WRONLY);
		if (fd >= 0) {
			dup2(fd, STDOUT_FILENO);
			close(fd);
		}
		execlp("redis-server", "redis-server", "--port", port_s,
		       "--bind", "127.0.0.1", "--save", "", "--appendonly",
		       "no", "--daemonize", "no", "--loglevel", "warning",
		       "--dir", "/tmp", "--maxclients", "4000", (char *)NULL);
		_exit(127);
	}
	atexit(redis_kill);
	for (int i = 0; i < 2000; i++) {
		redisContext *ctx = redisConnect("127.0.0.1", redis_port);
		redisReply *r = ctx && !ctx->err
					? redisCommand(ctx, "SET " KEY " " VAL)
					: NULL;
		bool ok = r && r->type == REDIS_REPLY_STATUS;

		if (r)
			freeReplyObject(r);
		if (ctx)
			redisFree(ctx);
		if (ok)
			return 0;
		if (waitpid(redis_pid, NULL, WNOHANG) == redis_pid) {
			redis_pid = -1;
			return -ECHILD;
		}
		nanosleep(&ts, NULL);
	}
	return -ETIMEDOUT;
}

/* ---- one GET ------------------------------------------------------------- */

/* GET KEY on @ctx; 0 when the value came back, else -errno. */
static inline int
redis_get(redisContext *ctx)
{
	redisReply *r = redisCommand(ctx, "GET " KEY);
	int err;

	if (!r)
		return ctx->err == REDIS_ERR_EOF ? -ECONNRESET : -EIO;
	err = r->type == REDIS_REPLY_STRING && r->len == sizeof(VAL) - 1
		      ? 0
		      : -EPROTO;
	freeReplyObject(r);
	return err;
}

/* ---- peers --------------------------------------------------------------- */

struct rpool {
	struct cpool *pool;
	struct cpool_redis *r; /* adapter peer only */
	char addr[64];
	int port;
};

static int
rpool_create(const struct bench_env *env, unsigned conns, bool adapter,
	     unsigned bypass_ms, void **out)
{
	struct cpool_redis_config rc;
	struct cpool_config cfg;
	struct cpool_conn **c;
	struct rpool *p;
	unsigned i, n = 0;
	int err = -ENOMEM;

	p = calloc(1, sizeof(*p));
	c = calloc(conns, sizeof(*c));
	if (!p || !c)
		goto fail;
	snprintf(p->addr, sizeof(p->addr), "%s", env->addr);
	cpool_config_init(&cfg);
	cfg.max_conns_per_endpoint = conns;
	cfg.idle_timeout_ms = 0;
	cfg.probe_bypass_ms = bypass_ms;
	cfg.flags |= env->cpool_flags;
	if (adapter) {
		cpool_redis_config_init(&rc);
		err = cpool_redis_new(&rc, &p->r);
		if (err)
			goto fail;
		cpool_redis_install(p->r, &cfg);
	}
	err = cpool_create(&cfg, &p->pool);
	if (err)
		goto fail;
	err = cpool_endpoint_add(p->pool, p->addr);
	if (err)
		goto fail;
	for (n = 0; n < conns; n++) {
		err = cpool_acquire(p->pool, p->addr, &c[n]);
		if (err)
			goto fail;
	}
	for (i = 0; i < n; i++)
		cpool_release(c[i], 0);
	free(c);
	*out = p;
	return 0;
fail:
	for (i = 0; i < n; i++)
		cpool_release(c[i], 0);
	if (p && p->pool)
		cpool_destroy(p->pool);
	if (p)
		cpool_redis_free(p->r);
	free(p);
	free(c);
	return err;
}

static int
adapter_create(const struct bench_env *env, unsigned conns, void **out)
{
	return rpool_create(env, conns, true, 0, out);
}

static int
adapter_bypass_create(const struct bench_env *env, unsigned conns, void **out)
{
	return rpool_create(env, conns, true, BENCH_BYPASS_MS, out);
}

static int
perlease_create(const struct bench_env *env, unsigned conns, void **out)
{
	return rpool_create(env, conns, false, 0, out);
}

static void
rpool_destroy(void *inst)
{
	struct rpool *p = inst;

	cpool_destroy(p->pool);
	cpool_redis_free(p->r);
	free(p);
}

static int
addr_create(const struct bench_env *env, unsigned conns, void **out)
{
	struct rpool *p = calloc(1, sizeof(*p));

	if (!p)
		return -ENOMEM;
	p->port = ntohs(env->sin.sin_port);
	*out = p;
	return 0;
}

static void
addr_destroy(void *inst)
{
	free(inst);
}

static inline int
op_adapter(struct rpool *p, redisContext **tls)
{
	struct cpool_conn *c;
	int err = cpool_acquire(p->pool, p->addr, &c);

	if (err)
		return err;
	err = redis_get(cpool_redis_ctx(c));
	cpool_release(c, err ? CPOOL_RELEASE_CLOSE : 0);
	return err;
}

static inline int
op_perlease(struct rpool *p, redisContext **tls)
{
	struct cpool_conn *c;
	redisContext *ctx;
	int err = cpool_acquire(p->pool, p->addr, &c);

	if (err)
		return err;
	ctx = redisConnectFd(cpool_conn_fd(c));
	err = ctx ? redis_get(ctx) : -ENOMEM;
	if (ctx)
		redisFreeKeepFd(ctx);
	cpool_release(c, err ? CPOOL_RELEASE_CLOSE : 0);
	return err;
}

static inline int
op_dedicated(struct rpool *p, redisContext **tls)
{
	if (!*tls) {
		*tls = redisConnect("127.0.0.1", p->port);
		if (!*tls || (*tls)->err)
			return -ECONNREFUSED;
	}
	return redis_get(*tls);
}

static inline int
op_connect(struct rpool *p, redisContext **tls)
{
	redisContext *ctx = redisConnect("127.0.0.1", p->port);
	int err;

	if (!ctx)
		return -ENOMEM;
	err = ctx->err ? -ECONNREFUSED : redis_get(ctx);
	redisFree(ctx);
	return err;
}

/*
 * The measured loop, bench_loop.h's protocol with @op inlined. The
 * dedicated peer connects in its init (before the ready barrier), so its
 * connect is outside the window.
 */
#define REDIS_LOOP(name_, op_, init_conn_)                                     \
	static void *name_(void *arg)                                          \
	{                                                                      \
		struct bench_thread *t = arg;                                  \
		struct bench_run *run = t->run;                                \
		struct rpool *p = run->inst;                                   \
		redisContext *tls = NULL;                                      \
		uint64_t t0;                                                   \
		int err = 0;                                                   \
                                                                               \
		if (init_conn_)                                                \
			err = op_(p, &tls);                                    \
		bench_thread_ready(t, err);                                    \
		if (!err) {                                                    \
			while (!bench_stopped(run)) {                          \
				t0 = bench_now_ns();                           \
				err = op_(p, &tls);                            \
				bench_sample(t, bench_now_ns() - t0);          \
				if (err) {                                     \
					t->errors++;                           \
					t->last_err = err;                     \
				}                                              \
				for (unsigned i = 1; i < BENCH_BATCH; i++) {   \
					err = op_(p, &tls);                    \
					if (err) {                             \
						t->errors++;                   \
						t->last_err = err;             \
					}                                      \
				}                                              \
				t->ops += BENCH_BATCH;                         \
			}                                                      \
		}                                                              \
		t->end_ns = bench_now_ns();                                    \
		bench_thread_done(t);                                          \
		if (tls)                                                       \
			redisFree(tls);                                        \
		return NULL;                                                   \
	}

REDIS_LOOP(loop_adapter, op_adapter, false)
REDIS_LOOP(loop_perlease, op_perlease, false)
REDIS_LOOP(loop_dedicated, op_dedicated, true)
REDIS_LOOP(loop_connect, op_connect, false)

static const struct peer_ops peer_adapter = {
	.name = "adapter", .create = adapter_create, .destroy = rpool_destroy,
	.thread_fn = loop_adapter, .thread_timed_fn = loop_adapter,
};
static const struct peer_ops peer_adapter_bypass = {
	.name = "adapter_bypass", .create = adapter_bypass_create,
	.destroy = rpool_destroy, .thread_fn = loop_adapter,
	.thread_timed_fn = loop_adapter,
};
static const struct peer_ops peer_perlease = {
	.name = "perlease", .create = perlease_create,
	.destroy = rpool_destroy, .thread_fn = loop_perlease,
	.thread_timed_fn = loop_perlease,
};
static const struct peer_ops peer_rdedicated = {
	.name = "dedicated", .create = addr_create, .destroy = addr_destroy,
	.thread_fn = loop_dedicated, .thread_timed_fn = loop_dedicated,
};
static const struct peer_ops peer_rconnect = {
	.name = "connect", .create = addr_create, .destroy = addr_destroy,
	.thread_fn = loop_connect, .thread_timed_fn = loop_connect,
};

static const struct peer_ops *const pools[] = {
	&peer_adapter,
	&peer_adapter_bypass,
	&peer_perlease,
	&peer_rdedicated,
	&peer_rconnect,
};
#define NPOOLS (sizeof(pools) / sizeof(pools[0]))

static struct bench_entry res[BENCH_MAX_LIST][NPOOLS];

static void
info_ratio(const char *name, const struct bench_entry *a,
	   const struct bench_entry *b, const char *what)
{
	if (a && b)
		printf("INFO name=%s value=%.3f what=\"%s\"\n", name,
		       bench_ratio(a, b, BENCH_F_CPU), what);
}

int
main(int argc, char **argv)
{
	const struct bench_entry *ded, *ad, *ab, *pl, *cn;
	struct bench_opts o;
	struct bench_env env;
	void *inst[NPOOLS];
	const struct peer_ops *ops[NPOOLS];
	unsigned i, k, n, maxt = 0;
	int err;

	bench_opts_default(&o);
	o.cpu = 0;
	o.secs = 1.0;
	o.threads[0] = 1;
	o.nthreads = 1;
	bench_init(argc, argv, &o, NULL);
	for (k = 0; k < o.nthreads; k++)
		if (o.threads[k] > maxt)
			maxt = o.threads[k];
	err = bench_pin_self(o.cpu);
	if (err)
		bench_die("cannot pin to CPU %d: %s", o.cpu, strerror(-err));
	err = redis_start(o.cpu);
	if (err)
		bench_die("cannot start redis-server: %s", strerror(-err));
	memset(&env, 0, sizeof(env));
	snprintf(env.addr, sizeof(env.addr), "127.0.0.1:%u", redis_port);
	env.sin.sin_family = AF_INET;
	env.sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	env.sin.sin_port = htons(redis_port);
	env.mode = BENCH_REQUEST_RESPONSE;
	env.cpool_flags = CPOOL_NO_PIN; /* workers on the client's CPU */
	env.acquire_timeout_ms = 1000;
	printf("bench_redis: GET of an existing key against redis-server on "
	       "%s, client and server pinned to CPU %d; %u reps x %.2f s\n",
	       env.addr, o.cpu, o.reps, o.secs);
	n = bench_create_all(pools, NPOOLS, &env, maxt, ops, inst);
	bench_warm_up("redis_get", ops, inst, n, &env, maxt, &o);
	for (k = 0; k < o.nthreads; k++) {
		for (i = 0; i < n; i++)
			bench_entry_init(&res[k][i], ops[i], inst[i], NULL);
		bench_interleave("redis_get", res[k], n, &env, o.threads[k],
				 &o);
		bench_report("redis_get", "acquire + redis GET + release",
			     res[k], n, o.threads[k], &o);
	}
	printf("\n");
	ded = bench_find(res[0], n, "dedicated");
	ad = bench_find(res[0], n, "adapter");
	ab = bench_find(res[0], n, "adapter_bypass");
	pl = bench_find(res[0], n, "perlease");
	cn = bench_find(res[0], n, "connect");
	if (ded && ad)
		bench_goal("redis_get_adapter_vs_dedicated",
			   bench_ratio(ad, ded, BENCH_F_CPU), "<=", 1.05,
			   "redis GET client CPU/op, cpool + libcpool_redis "
			   "over a dedicated redisContext per thread");
	else
		bench_goal_na("redis_get_adapter_vs_dedicated", "a peer failed",
			      "redis GET client CPU/op");
	info_ratio("redis_get_adapter_bypass_vs_dedicated", ab, ded,
		   "adapter with probe_bypass_ms (no checkout probe) over "
		   "dedicated");
	info_ratio("redis_get_perlease_vs_dedicated", pl, ded,
		   "redisConnectFd+redisFreeKeepFd per lease over dedicated");
	info_ratio("redis_get_adapter_vs_perlease", ad, pl,
		   "adapter over the per-lease recipe");
	info_ratio("redis_get_connect_vs_dedicated", cn, ded,
		   "connect per request over dedicated");
	for (i = 0; i < n; i++)
		ops[i]->destroy(inst[i]);
	redis_kill();
	return 0;
}
