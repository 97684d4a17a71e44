/* SPDX-License-Identifier: MIT */
/*
 * The chaos soak: see soak.h for what it checks and the definitions.
 *
 * Bookkeeping that makes "stale" decidable. Every target (memcached, redis,
 * the fault server, postgres, TLS redis) has two counters: kills, bumped when a restart (or a
 * FIN/RST injection) begins, and gen, bumped with up_ms when it has
 * finished and the server answers again. kills == gen means "up, nothing in
 * progress". A connection is labelled with gen + 1 when it is leased fresh
 * and no restart overlapped its acquire (0 = unknown); the label is kept by
 * fd number, which is the connection's identity while it is open. A reused
 * connection whose label is older than the target's gen at the start of
 * the request belongs to a server instance that is gone.
 *
 * Time is CLOCK_MONOTONIC milliseconds (now_ms()). The chaos thread paces
 * itself with timed waits (that is its job); nothing here sleeps to wait
 * for another thread: servers are waited for by connecting, threads by
 * joining, the pool's rest by reading its counters until they stop moving.
 */
#include "soak.h"

#include <dirent.h>
#include <errno.h>
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <openssl/err.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "cpool.h"
#include "cpool_pq.h"
#include "cpool_tls.h"
#include "fault_server.h"
#include "net.h"
#include "pgsrv.h"
#include "realsrv.h"
#include "tlssrv.h"

#define CAP 4			/* max_conns_per_endpoint */
#define ACQUIRE_TIMEOUT_MS 1000
#define CONNECT_TIMEOUT_MS 1000
#define LIFETIME_MS 4000	/* some churn from the workers' timers too */
#define REQUEST_DEADLINE_MS 1000
#ifdef CPOOL_SANITIZE
#define SLACK_MS 1500		/* scheduling noise on 2 cores, sanitized */
#else
#define SLACK_MS 500
#endif
/* An iteration (acquire + request + release) must end within this. */
#define ITER_BOUND_MS (ACQUIRE_TIMEOUT_MS + REQUEST_DEADLINE_MS + SLACK_MS)
/* Past the bound by this much, a thread is hung: report and give up. */
#define HANG_MS 15000
/* Refused this long after the server came back: backoff never recovered. */
#define RECOVER_BUG_MS 6500
#define SAMPLE_MS 10
#define FD_LABELS 65536
#define MAX_NOTES 12
#define STRAY "!STRAY-BYTES!\r\n"
#define RLOG_MAX 4096		/* restarts remembered per server */
#define DOUBT_MAX 8		/* in-doubt writes remembered per thread */
#define FREEZE_MAX 256		/* process stalls remembered */
#define FREEZE_MS 100		/* a sampler gap this long is a stall */

#define LOAD(p) __atomic_load_n((p), __ATOMIC_SEQ_CST)
#define STORE(p, v) __atomic_store_n((p), (v), __ATOMIC_SEQ_CST)
#define ADD(p, v) __atomic_add_fetch((p), (v), __ATOMIC_SEQ_CST)

enum tgt { T_MC, T_REDIS, T_FS, T_PG, T_TLS, T_COUNT };

static const char *const tgt_name[T_COUNT] = { "memcached", "redis",
					       "fault", "postgres",
					       "tls-redis" };

enum cls {
	C_OK,
	C_ACQ_REFUSED,	/* server down, or fail-fast during backoff */
	C_ACQ_TIMEDOUT,	/* no slot within acquire_timeout_ms */
	C_ACQ_RESET,	/* connect reset (dying server, injected RST) */
	C_ACQ_PROTO,	/* postgres: starting up / shutting down (EPROTO) */
	C_ACQ_DIALTO,	/* postgres: ETIMEDOUT while its dials failed */
	C_ACQ_OTHER,	/* unclassified: fails the soak */
	C_RESET,	/* ECONNRESET */
	C_PIPE,		/* EPIPE */
	C_EOF,		/* peer closed */
	C_TIMEOUT_STALL, /* deadline passed during a fault-server stall */
	C_TIMEOUT,	/* deadline passed, no stall */
	C_STRAY,	/* stray bytes injected while leased */
	C_LATE,		/* the answer of an earlier write that timed out */
	C_OTHER,	/* unclassified: fails the soak */
	C_WRONG,	/* wrong answer: fails the soak */
	C_COUNT
};

static const char *const cls_name[C_COUNT] = {
	"ok",
	"acquire ECONNREFUSED (down / fail-fast)",
	"acquire ETIMEDOUT (no slot in time)",
	"acquire ECONNRESET/ABORTED (+fail-fast)",
	"acquire EPROTO (starting/stopping)",
	"acquire ETIMEDOUT, a dial timed out",
	"acquire, unclassified",
	"request ECONNRESET",
	"request EPIPE",
	"request peer closed (EOF)",
	"request ETIMEDOUT during a stall",
	"request ETIMEDOUT, no stall",
	"request read injected stray bytes",
	"request saw an earlier in-doubt write",
	"request, unclassified",
	"request WRONG ANSWER",
};

enum fault {
	F_FIN_ALL,
	F_FIN_ONE,
	F_RST_ALL,
	F_RST_ONE,
	F_STRAY_ALL,
	F_STRAY_ONE,
	F_STALL,
	F_COUNT
};

static const char *const fault_name[F_COUNT] = {
	"FIN all", "FIN one", "RST all", "RST one",
	"stray all", "stray one", "stall",
};

/* Relative frequencies; stalls are rare because each lasts. */
static const unsigned fault_weight[F_COUNT] = { 3, 4, 3, 4, 2, 3, 1 };

/* One restart of memcached or redis, for the report. */
struct rlog {
	int sig;
	int64_t kill_ms;	/* kill() sent */
	int64_t dead_ms;	/* exit reaped */
	int64_t up_ms;		/* new instance answering */
	int64_t first_ok_ms;	/* atomic: first request ok after up_ms */
	bool quiet;		/* in a quiet window: no traffic at first */
	uint64_t late_fails;	/* atomic: acquires failed after up_ms */
	int late_err;		/* atomic: the last one's error */
	int64_t late_ms;	/* atomic: the last one, after up_ms */
	uint64_t fail_fasts;	/* endpoint's fail_fasts from kill to up */
	uint64_t connect_failures;
};

struct target {
	char addr[64];
	uint64_t kills;		/* restarts / injections begun */
	uint64_t gen;		/* ... finished (server answering again) */
	int64_t up_ms;		/* when the last one finished */
	int64_t stray_begin_ms;	/* fault server: last stray injection */
	int64_t stray_end_ms;
	int stall_on;		/* fault server: stalling now */
	int64_t stall_end_ms;	/* ... last stall ended */
	int64_t quiet_until;	/* atomic: no new requests before this */
	unsigned quiets;	/* chaos thread: quiet windows so far */
	uint64_t recovered_gen;	/* first success after restart gen seen */
	int64_t max_refused_up_ms; /* refused this long after answering */
	unsigned max_open;	/* sampler thread only */
	/* atomic: cpool_release() calls on it begun, and returned */
	uint64_t rel_begun, rel_done;
	bool on;		/* part of this run (its server could start) */
	bool restartable;	/* a real server the chaos thread restarts */
	struct cpool *pool;	/* its pool (conn ops are pool-wide) */
	const char *sig_name[2]; /* restart signals: [0] gentle, [1] SIGKILL */
	/* chaos thread only */
	unsigned restarts[2];	/* [0 gentle, 1 SIGKILL] */
	struct rlog *rlog;	/* [gen]; restartable targets */
	struct realsrv rs;	/* memcached, redis */
	struct pgsrv pg;	/* postgres */
	struct tlssrv ts;	/* TLS redis */
};

/* The pools: memcached, redis and the fault server share the first. */
#define POOL_MAX 4

struct pooldesc {
	struct cpool *pool;
	const char *name;	/* "pool" for the shared one */
	unsigned ntargets;
};

struct snap {
	uint64_t k, g;
	int64_t up;
};

struct soak;

/* A thread's own redis counter: what its last INCR returned. */
struct incr {
	long long last;
	uint64_t kills;
	bool valid;
	unsigned doubt;		/* INCRs sent whose reply never came */
};

struct worker {
	struct soak *s;
	pthread_t tid;
	unsigned idx;
	uint64_t rng;
	int64_t busy_since;	/* atomic; 0 between iterations */
	int fs_port;		/* atomic; its last fault-server connection */
	uint64_t seq;
	/* INCR continuity: [0] redis, [1] TLS redis */
	struct incr incr[2];
	/*
	 * Writes sent whose reply never came (timeout, reset): the server may
	 * still apply them, even after a later write (a request stuck in a
	 * socket or accept queue of a starved server). A later read may see
	 * them: that is the protocol's in-doubt write, not a wrong answer.
	 */
	char mc_doubt[DOUBT_MAX][200];	/* memcached: the GET answer */
	char rd_doubt[DOUBT_MAX][128];	/* redis: the value */
	char pg_doubt[DOUBT_MAX][128];	/* postgres: the value */
	char tls_doubt[DOUBT_MAX][128];	/* TLS redis: the value */
	unsigned tls_ndoubt;
	unsigned mc_ndoubt, rd_ndoubt, pg_ndoubt; /* ring positions */
	/* postgres: the value of the last UPSERT whose commit was seen */
	char pg_last[128];
	bool pg_has;
	/* results, read after the join */
	uint64_t n[T_COUNT][C_COUNT];
	uint64_t stale[T_COUNT];
	uint64_t dirty;
	uint64_t fresh_fail;
	uint64_t unlabelled_fail;
	uint64_t reused_old_ok;	/* reused from an earlier instance, ok */
	uint64_t unfair_timeouts; /* acquire -ETIMEDOUT a fair pool serves */
	/* SIGPIPEs OpenSSL's socket BIO raised: in the request, the release */
	uint64_t tls_pipes_req, tls_pipes_rel;
	int64_t max_acq_ms, max_req_ms, max_iter_ms;
};

struct soak {
	struct pooldesc pools[POOL_MAX];
	unsigned npools;
	struct target t[T_COUNT];
	char skip[T_COUNT][160]; /* why a target is off, for the report */
	struct fault_server *fs;
	struct cpool_pq *pq;	/* the postgres pool's adapter */
	struct cpool_tls *tls;	/* the TLS redis pool's adapter */
	SSL_CTX *ssl_ctx;	/* ... its context: trusts tlssrv's CA */
	unsigned pg_start_retries; /* chaos thread: postmaster starts redone */
	unsigned tls_pipes_other; /* SIGPIPEs taken at TLS setup / destroy */
	struct worker *w;
	unsigned nthreads;
	uint64_t *fdlabel;	/* atomic per entry */
	int stop;		/* atomic: request threads stop */
	int sampler_stop;	/* atomic */
	FILE *out;

	pthread_mutex_t lock;	/* guards the failure notes */
	int failed;
	int nnotes;
	char notes[MAX_NOTES][240];

	/* chaos thread only */
	uint64_t rng;
	enum tgt bag[T_COUNT];	/* restart order: each target once a round */
	unsigned nbag;
	unsigned faults[F_COUNT];
	unsigned hits[F_COUNT];
	int64_t stall_until;

	/* fd counts: start, before cpool_create, after it, at the end */
	int fd_start, fd_pool, fd_destroy, fd_end;
	bool pipe_ok;		/* SIGPIPE at SIG_DFL at start and end */

	/* process stalls the sampler saw (its own gaps), under lock */
	int64_t freeze[FREEZE_MAX][2];
	unsigned nfreeze;
	int64_t max_freeze_ms;

	/* sampler thread only, read after its join */
	uint64_t samples;
	uint64_t formats;
	int64_t max_busy_ms;
};

static void
fail(struct soak *s, const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&s->lock);
	s->failed++;
	if (s->nnotes < MAX_NOTES) {
		va_start(ap, fmt);
		vsnprintf(s->notes[s->nnotes], sizeof(s->notes[0]), fmt, ap);
		va_end(ap);
		s->nnotes++;
	}
	pthread_mutex_unlock(&s->lock);
}

static uint64_t
rnd_next(uint64_t *x)
{
	*x ^= *x >> 12;
	*x ^= *x << 25;
	*x ^= *x >> 27;
	return *x * 2685821657736338717ull;
}

/* Uniform in [lo, hi]. */
static unsigned
rnd_range(uint64_t *x, unsigned lo, unsigned hi)
{
	return lo + (unsigned)(rnd_next(x) % (uint64_t)(hi - lo + 1));
}

static struct snap
snap_of(struct target *t)
{
	struct snap sn;

	/* gen first: kills == gen then proves up_ms is this gen's */
	sn.g = LOAD(&t->gen);
	sn.up = LOAD(&t->up_ms);
	sn.k = LOAD(&t->kills);
	return sn;
}

/*
 * OpenSSL's own socket BIO writes with write(), not send(MSG_NOSIGNAL): an
 * SSL_write or close_notify to a dead server would raise SIGPIPE, which the
 * soak leaves at SIG_DFL on purpose. libcpool_tls installs a MSG_NOSIGNAL
 * BIO, so there must be none: SIGPIPE is blocked in a thread around TLS
 * work (the TLS pool's own threads are created with it blocked), each one
 * raised there is taken with sigtimedwait(), counted, and fails the soak.
 */
static void
sigpipe_block(sigset_t *old)
{
	sigset_t set;

	sigemptyset(&set);
	sigaddset(&set, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &set, old);
}

/* SIGPIPEs pending for the thread (or process), taken. */
static unsigned
sigpipe_take(void)
{
	struct timespec zero = { 0, 0 };
	sigset_t set;
	unsigned n = 0;

	sigemptyset(&set);
	sigaddset(&set, SIGPIPE);
	while (sigtimedwait(&set, NULL, &zero) == SIGPIPE)
		n++;
	return n;
}

static void
sigpipe_restore(const sigset_t *old)
{
	pthread_sigmask(SIG_SETMASK, old, NULL);
}

static void
max_store(int64_t *p, int64_t v)
{
	int64_t cur = LOAD(p);

	while (v > cur && !__atomic_compare_exchange_n(p, &cur, v, false,
						       __ATOMIC_SEQ_CST,
						       __ATOMIC_SEQ_CST))
		;
}

/* ---- requests ---------------------------------------------------------- */

struct req {
	struct worker *w;
	struct cpool_conn *c;
	int fd;
	int64_t deadline;
	char detail[160];
};

/* Bounds the next blocking call by what is left; false if nothing is. */
static bool
arm_deadline(struct req *r)
{
	int64_t left = r->deadline - now_ms();
	struct timeval tv;

	if (left <= 0)
		return false;
	tv.tv_sec = left / 1000;
	tv.tv_usec = (left % 1000) * 1000;
	setsockopt(r->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(r->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	return true;
}

static enum cls
errno_cls(struct req *r, int e)
{
	switch (e) {
	case ECONNRESET:
		return C_RESET;
	case EPIPE:
		return C_PIPE;
	case EAGAIN:
	case ETIMEDOUT:
		return C_TIMEOUT;
	default:
		snprintf(r->detail, sizeof(r->detail), "errno %d (%s)", e,
			 strerror(e));
		return C_OTHER;
	}
}

/* Printable copy of protocol bytes for a failure note. */
static void
escape(char *dst, size_t dlen, const char *src, size_t slen)
{
	size_t j = 0;

	for (size_t i = 0; i < slen && j + 5 < dlen; i++) {
		unsigned char ch = (unsigned char)src[i];

		if (ch == '\r' || ch == '\n') {
			dst[j++] = '\\';
			dst[j++] = ch == '\r' ? 'r' : 'n';
		} else if (ch < 32 || ch > 126) {
			j += (size_t)snprintf(dst + j, dlen - j, "\\x%02x", ch);
		} else {
			dst[j++] = (char)ch;
		}
	}
	dst[j] = '\0';
}

static enum cls
send_req(struct req *r, const char *buf, size_t len)
{
	ssize_t n;

	if (!arm_deadline(r))
		return C_TIMEOUT;
	n = cpool_send(r->c, buf, len);
	if (n < 0)
		return errno_cls(r, (int)-n);
	return (size_t)n == len ? C_OK : C_TIMEOUT;
}

/*
 * Reads exactly the @len bytes of @want, comparing as they come, so that a
 * wrong or short answer is seen at once instead of at the deadline. With
 * @stray_ok, bytes holding '!' (never in an answer) are injected ones.
 */
/* Whether @buf (@len bytes so far) begins an answer in @alt. */
static bool
matches_doubt(const char *buf, size_t len, char (*alt)[200], unsigned nalt)
{
	for (unsigned i = 0; alt && i < nalt && i < DOUBT_MAX; i++) {
		size_t alen = strlen(alt[i]);

		if (alen && !memcmp(buf, alt[i], len < alen ? len : alen))
			return true;
	}
	return false;
}

static enum cls
expect_or(struct req *r, const char *want, size_t len, bool stray_ok,
	  char (*alt)[200], unsigned nalt)
{
	char buf[1024], a[64], b[64];
	size_t got = 0;
	ssize_t n;

	while (got < len) {
		if (!arm_deadline(r))
			return C_TIMEOUT;
		n = cpool_recv(r->c, buf + got, len - got);
		if (n == 0)
			return C_EOF;
		if (n < 0)
			return errno_cls(r, (int)-n);
		if (memcmp(buf + got, want + got, (size_t)n)) {
			got += (size_t)n;
			if (stray_ok && memchr(buf, '!', got))
				return C_STRAY;
			if (matches_doubt(buf, got, alt, nalt))
				return C_LATE;
			escape(a, sizeof(a), buf, got);
			escape(b, sizeof(b), want, len);
			snprintf(r->detail, sizeof(r->detail),
				 "got \"%s\" want \"%s\"", a, b);
			return C_WRONG;
		}
		got += (size_t)n;
	}
	return C_OK;
}

static enum cls
expect(struct req *r, const char *want, size_t len, bool stray_ok)
{
	return expect_or(r, want, len, stray_ok, NULL, 0);
}

static void
random_text(uint64_t *rng, char *buf, unsigned len)
{
	static const char abc[] = "abcdefghijklmnopqrstuvwxyz0123456789";

	for (unsigned i = 0; i < len; i++)
		buf[i] = abc[rnd_next(rng) % (sizeof(abc) - 1)];
	buf[len] = '\0';
}

/* memcached text protocol: set, then get the same key, on one lease. */
static enum cls
req_memcached(struct req *r)
{
	char val[128], cmd[256], want[256];
	unsigned len = rnd_range(&r->w->rng, 1, 100);
	enum cls k;
	int n;

	struct worker *w = r->w;

	random_text(&w->rng, val, len);
	n = snprintf(want, sizeof(want), "VALUE soak:%u 0 %u\r\n%s\r\nEND\r\n",
		     w->idx, len, val);
	n = snprintf(cmd, sizeof(cmd), "set soak:%u 0 0 %u\r\n%s\r\n", w->idx,
		     len, val);
	k = send_req(r, cmd, (size_t)n);
	if (k == C_OK)
		k = expect(r, "STORED\r\n", 8, false);
	if (k == C_OK) {
		n = snprintf(cmd, sizeof(cmd), "get soak:%u\r\n", w->idx);
		k = send_req(r, cmd, (size_t)n);
	}
	if (k == C_OK)
		k = expect_or(r, want, strlen(want), false, w->mc_doubt,
			      w->mc_ndoubt);
	if (k != C_OK && k != C_WRONG) /* the set may yet be applied */
		snprintf(w->mc_doubt[w->mc_ndoubt++ % DOUBT_MAX],
			 sizeof(w->mc_doubt[0]), "%s", want);
	return k;
}

static enum cls
hiredis_error(struct req *r, redisContext *ctx, int saved_errno)
{
	switch (ctx->err) {
	case REDIS_ERR_IO:
		if (!saved_errno) /* hiredis kept the text only */
			saved_errno = strstr(ctx->errstr, "reset") ? ECONNRESET
				      : strstr(ctx->errstr, "pipe") ? EPIPE
				      : strstr(ctx->errstr, "temporarily")
					      ? EAGAIN
					      : EIO;
		return errno_cls(r, saved_errno);
	case REDIS_ERR_EOF:
		return C_EOF;
	case REDIS_ERR_PROTOCOL:
		snprintf(r->detail, sizeof(r->detail), "hiredis protocol: %s",
			 ctx->errstr);
		return C_WRONG;
	default:
		snprintf(r->detail, sizeof(r->detail), "hiredis err %d: %s",
			 ctx->err, ctx->errstr);
		return C_OTHER;
	}
}

/* One command; the reply (or NULL with the class in *k). */
static redisReply *
redis_cmd(struct req *r, redisContext *ctx, enum cls *k, const char *fmt,
	  ...)
{
	redisReply *rep;
	va_list ap;

	if (!arm_deadline(r)) {
		*k = C_TIMEOUT;
		return NULL;
	}
	errno = 0;
	va_start(ap, fmt);
	rep = redisvCommand(ctx, fmt, ap);
	va_end(ap);
	if (!rep) {
		*k = hiredis_error(r, ctx, errno);
		return NULL;
	}
	if (rep->type == REDIS_REPLY_ERROR) {
		snprintf(r->detail, sizeof(r->detail), "redis error \"%s\"",
			 rep->str);
		*k = C_WRONG;
		freeReplyObject(rep);
		return NULL;
	}
	return rep;
}

/*
 * The reply @v (type @type, for the note) of the thread's INCR of its own
 * counter, which started with the target at @sn0.
 */
static enum cls
judge_incr(struct req *r, struct incr *in, long long v, int type,
	   const struct snap *sn0, struct target *t)
{
	uint64_t kills = LOAD(&t->kills);
	enum cls k = C_OK;
	bool same;

	/*
	 * The server was up with no restart begun from the start of this
	 * request until its reply: the INCR ran on instance sn0->g. If the
	 * last one ran on that instance too, the counter moved by one.
	 */
	same = sn0->k == sn0->g && kills == sn0->k;
	/* in-doubt INCRs may have been applied meanwhile, each once */
	if (v < 1 || (same && in->valid && in->kills == sn0->k &&
		      (v <= in->last || v > in->last + 1 + in->doubt))) {
		snprintf(r->detail, sizeof(r->detail),
			 "INCR: type %d value %lld after %lld", type, v,
			 in->valid ? in->last : 0);
		k = C_WRONG;
	}
	if (same && in->valid && v > in->last + 1 &&
	    v <= in->last + 1 + in->doubt)
		in->doubt -= (unsigned)(v - in->last - 1);
	else if (!same || !in->valid)
		in->doubt = 0;
	in->last = v;
	in->kills = sn0->k;
	in->valid = same;
	return k;
}

/*
 * redis through hiredis on the pooled fd: SET, GET, INCR on one lease.
 * redisFreeKeepFd() before the release, always: the fd is the pool's.
 */
static enum cls
req_redis(struct req *r, const struct snap *sn0, struct target *t)
{
	struct worker *w = r->w;
	redisContext *ctx = redisConnectFd(r->fd);
	redisReply *rep;
	enum cls k = C_OK;
	char val[128];
	unsigned len = rnd_range(&w->rng, 1, 100);
	long long v;
	bool set_sent = false;

	if (!ctx) {
		snprintf(r->detail, sizeof(r->detail), "redisConnectFd: NULL");
		return C_OTHER;
	}
	random_text(&w->rng, val, len);
	set_sent = true;
	rep = redis_cmd(r, ctx, &k, "SET soak:%u %s", w->idx, val);
	if (!rep)
		goto out;
	if (rep->type != REDIS_REPLY_STATUS || strcmp(rep->str, "OK")) {
		snprintf(r->detail, sizeof(r->detail),
			 "SET: reply type %d \"%s\"", rep->type,
			 rep->str ? rep->str : "");
		k = C_WRONG;
	}
	freeReplyObject(rep);
	if (k != C_OK)
		goto out;
	rep = redis_cmd(r, ctx, &k, "GET soak:%u", w->idx);
	if (!rep)
		goto out;
	if (rep->type != REDIS_REPLY_STRING || strcmp(rep->str, val)) {
		k = C_WRONG;
		for (unsigned i = 0; rep->type == REDIS_REPLY_STRING &&
				     i < w->rd_ndoubt && i < DOUBT_MAX; i++)
			if (!strcmp(rep->str, w->rd_doubt[i]))
				k = C_LATE;
		snprintf(r->detail, sizeof(r->detail),
			 "GET: type %d \"%.40s\" want \"%.40s\"", rep->type,
			 rep->str ? rep->str : "", val);
	}
	freeReplyObject(rep);
	if (k != C_OK)
		goto out;
	rep = redis_cmd(r, ctx, &k, "INCR soak:ctr:%u", w->idx);
	if (!rep) {
		w->incr[0].doubt++;
		goto out;
	}
	v = rep->type == REDIS_REPLY_INTEGER ? rep->integer : -1;
	k = judge_incr(r, &w->incr[0], v, rep->type, sn0, t);
	freeReplyObject(rep);
out:
	if (set_sent && k != C_OK && k != C_WRONG)
		snprintf(w->rd_doubt[w->rd_ndoubt++ % DOUBT_MAX],
			 sizeof(w->rd_doubt[0]), "%s", val);
	redisFreeKeepFd(ctx);
	return k;
}

/* A failed libpq call or an error result: what happened to the request. */
static enum cls
pg_error(struct req *r, PGconn *pc, const PGresult *res)
{
	const char *st = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
	const char *msg = res ? PQresultErrorMessage(res) : PQerrorMessage(pc);

	if (!msg)
		msg = "";
	if (strstr(msg, "reset by peer"))
		return C_RESET;
	if (strstr(msg, "Broken pipe"))
		return C_PIPE;
	/* the server went away: closed, terminated, shutting down (57P*) */
	if (PQstatus(pc) == CONNECTION_BAD ||
	    (st && (!strncmp(st, "57P", 3) || !strncmp(st, "08", 2))) ||
	    strstr(msg, "server closed the connection") ||
	    strstr(msg, "terminating connection") ||
	    strstr(msg, "no connection to the server"))
		return C_EOF;
	snprintf(r->detail, sizeof(r->detail), "libpq: %s%s%.120s",
		 st ? st : "", st ? " " : "", msg);
	return C_OTHER;
}

/* Waits for @events on the PGconn's socket until the deadline. */
static enum cls
pg_wait(struct req *r, PGconn *pc, short events)
{
	struct pollfd pfd = { .fd = PQsocket(pc), .events = events };
	int64_t left = r->deadline - now_ms();
	int n;

	if (left <= 0)
		return C_TIMEOUT;
	n = poll(&pfd, 1, (int)left);
	if (n < 0 && errno != EINTR)
		return errno_cls(r, errno);
	return n == 0 ? C_TIMEOUT : C_OK;
}

/*
 * One statement with parameters through libpq's asynchronous calls, never
 * past the request deadline. Returns its result (PGRES_TUPLES_OK) or NULL
 * with the class in *k.
 */
static PGresult *
pg_exec(struct req *r, PGconn *pc, enum cls *k, const char *sql, int nparams,
	const char *const *params)
{
	PGresult *res = NULL, *x;
	int f;

	*k = C_OK;
	if (!PQsendQueryParams(pc, sql, nparams, NULL, params, NULL, NULL, 0)) {
		*k = pg_error(r, pc, NULL);
		return NULL;
	}
	while ((f = PQflush(pc)) == 1)
		if ((*k = pg_wait(r, pc, POLLOUT | POLLIN)) != C_OK ||
		    !PQconsumeInput(pc))
			goto fail;
	if (f < 0)
		goto fail;
	for (;;) {
		while (PQisBusy(pc)) {
			if ((*k = pg_wait(r, pc, POLLIN)) != C_OK)
				goto fail;
			if (!PQconsumeInput(pc))
				goto fail;
		}
		x = PQgetResult(pc);
		if (!x)
			break;
		if (!res)
			res = x;
		else
			PQclear(x);
	}
	if (!res) {
		snprintf(r->detail, sizeof(r->detail), "libpq: no result");
		*k = C_OTHER;
		return NULL;
	}
	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		*k = pg_error(r, pc, res);
		PQclear(res);
		return NULL;
	}
	return res;
fail:
	if (*k == C_OK)
		*k = pg_error(r, pc, NULL);
	PQclear(res);
	return NULL;
}

/* Whether @v is one of the thread's in-doubt postgres writes. */
static bool
pg_in_doubt(const struct worker *w, const char *v)
{
	for (unsigned i = 0; i < w->pg_ndoubt && i < DOUBT_MAX; i++)
		if (!strcmp(v, w->pg_doubt[i]))
			return true;
	return false;
}

/*
 * PostgreSQL through libpq (the pq adapter's PGconn): SELECT the thread's
 * own row, which only this thread writes: it must hold the value of the
 * last UPSERT whose commit came back (or of an in-doubt one), across
 * restarts too, SIGKILL and crash recovery included (the server runs with
 * synchronous_commit=on: a commit's WAL is written before its reply).
 * Then UPSERT a new value, RETURNING it.
 */
static enum cls
req_pg(struct req *r)
{
	static const char sel[] = "SELECT v FROM soak_kv WHERE k = $1";
	static const char ups[] =
		"INSERT INTO soak_kv (k, v) VALUES ($1, $2) ON CONFLICT (k) "
		"DO UPDATE SET v = EXCLUDED.v RETURNING v";
	struct worker *w = r->w;
	PGconn *pc = cpool_pq_conn(r->c);
	char key[16], val[128];
	const char *params[2] = { key, val };
	unsigned len = rnd_range(&w->rng, 1, 100);
	bool set_sent = false;
	PGresult *res;
	enum cls k;

	if (!pc) {
		snprintf(r->detail, sizeof(r->detail), "cpool_pq_conn: NULL");
		return C_OTHER;
	}
	snprintf(key, sizeof(key), "%u", w->idx);
	res = pg_exec(r, pc, &k, sel, 1, params);
	if (!res)
		goto out;
	if (PQntuples(res) == 0) {
		if (w->pg_has) {
			snprintf(r->detail, sizeof(r->detail), "SELECT: no row, "
				 "want \"%.40s\" (a committed write lost)",
				 w->pg_last);
			k = C_WRONG;
		}
	} else {
		const char *v = PQgetvalue(res, 0, 0);

		if (!(w->pg_has && !strcmp(v, w->pg_last))) {
			k = pg_in_doubt(w, v) ? C_LATE : C_WRONG;
			if (k == C_WRONG)
				snprintf(r->detail, sizeof(r->detail),
					 "SELECT: \"%.40s\" want \"%.40s\"", v,
					 w->pg_has ? w->pg_last : "(no row)");
		}
	}
	PQclear(res);
	/* a late in-doubt write is the thread's own value: go on */
	if (k == C_LATE)
		k = C_OK;
	if (k != C_OK)
		goto out;
	random_text(&w->rng, val, len);
	set_sent = true;
	res = pg_exec(r, pc, &k, ups, 2, params);
	if (!res)
		goto out;
	if (PQntuples(res) != 1 || strcmp(PQgetvalue(res, 0, 0), val)) {
		snprintf(r->detail, sizeof(r->detail),
			 "UPSERT RETURNING: %d rows \"%.40s\" want \"%.40s\"",
			 PQntuples(res),
			 PQntuples(res) ? PQgetvalue(res, 0, 0) : "", val);
		k = C_WRONG;
	} else {
		snprintf(w->pg_last, sizeof(w->pg_last), "%s", val);
		w->pg_has = true;
	}
	PQclear(res);
out:
	if (set_sent && k != C_OK && k != C_WRONG)
		snprintf(w->pg_doubt[w->pg_ndoubt++ % DOUBT_MAX],
			 sizeof(w->pg_doubt[0]), "%s", val);
	return k;
}

/* What a failed SSL_read/SSL_write (@ret) means for the request. */
static enum cls
tls_error(struct req *r, SSL *ssl, int ret, int saved_errno)
{
	int e = SSL_get_error(ssl, ret);
	unsigned long ee;

	switch (e) {
	case SSL_ERROR_ZERO_RETURN: /* close_notify */
		return C_EOF;
	case SSL_ERROR_WANT_READ: /* SO_RCVTIMEO/SO_SNDTIMEO: the deadline */
	case SSL_ERROR_WANT_WRITE:
		return C_TIMEOUT;
	case SSL_ERROR_SYSCALL:
		if (!saved_errno)
			return C_EOF;
		return errno_cls(r, saved_errno);
	case SSL_ERROR_SSL:
		ee = ERR_peek_error();
		if (ERR_GET_REASON(ee) == SSL_R_UNEXPECTED_EOF_WHILE_READING)
			return C_EOF;
		if (saved_errno == ECONNRESET || saved_errno == EPIPE)
			return errno_cls(r, saved_errno);
		snprintf(r->detail, sizeof(r->detail), "TLS: %s",
			 ERR_reason_error_string(ee) ? ERR_reason_error_string(ee)
						     : "SSL_ERROR_SSL");
		return C_OTHER;
	default:
		snprintf(r->detail, sizeof(r->detail), "TLS: SSL_get_error %d",
			 e);
		return C_OTHER;
	}
}

/* A RESP command @cmd (complete) over TLS, within the deadline. */
static enum cls
tls_send(struct req *r, SSL *ssl, const char *cmd, size_t len)
{
	while (len) {
		int n;

		if (!arm_deadline(r))
			return C_TIMEOUT;
		ERR_clear_error();
		errno = 0;
		n = SSL_write(ssl, cmd, (int)len);
		if (n <= 0)
			return tls_error(r, ssl, n, errno);
		cmd += n;
		len -= (size_t)n;
	}
	return C_OK;
}

/*
 * One RESP reply line over TLS into @out (CRLF stripped): the first byte
 * is its type. A bulk string's payload follows with tls_read_bulk().
 * Byte at a time: SSL_read serves it from the decrypted record.
 */
static enum cls
tls_line(struct req *r, SSL *ssl, char *out, size_t len)
{
	size_t got = 0;

	for (;;) {
		char ch;
		int n;

		if (!arm_deadline(r))
			return C_TIMEOUT;
		ERR_clear_error();
		errno = 0;
		n = SSL_read(ssl, &ch, 1);
		if (n <= 0)
			return tls_error(r, ssl, n, errno);
		if (ch == '\n' && got && out[got - 1] == '\r') {
			out[got - 1] = '\0';
			return C_OK;
		}
		if (got + 1 >= len) {
			snprintf(r->detail, sizeof(r->detail),
				 "TLS redis: reply line too long");
			return C_WRONG;
		}
		out[got++] = ch;
	}
}

/* A RESP reply: a line, and for a bulk string ($N) its payload in @out. */
static enum cls
tls_reply(struct req *r, SSL *ssl, char *out, size_t len)
{
	char line[160];
	enum cls k = tls_line(r, ssl, line, sizeof(line));
	long n;
	size_t got = 0;

	if (k != C_OK)
		return k;
	if (line[0] != '$') {
		snprintf(out, len, "%s", line);
		return C_OK;
	}
	n = strtol(line + 1, NULL, 10);
	if (n < 0 || (size_t)n + 3 > len) {
		snprintf(out, len, "%s", line); /* $-1: nil */
		return C_OK;
	}
	while (got < (size_t)n + 2) {
		int m;

		if (!arm_deadline(r))
			return C_TIMEOUT;
		ERR_clear_error();
		errno = 0;
		m = SSL_read(ssl, out + got, (int)((size_t)n + 2 - got));
		if (m <= 0)
			return tls_error(r, ssl, m, errno);
		got += (size_t)m;
	}
	out[n] = '\0';
	return C_OK;
}

/*
 * redis over TLS through the TLS adapter (SSL_write/SSL_read of RESP on
 * the pooled connection's session): SET, GET, INCR of the thread's own
 * keys on one lease, judged like the plain redis target (in-doubt SETs,
 * INCR continuity on one instance).
 */
static enum cls
req_tls(struct req *r, const struct snap *sn0, struct target *t)
{
	struct worker *w = r->w;
	SSL *ssl = cpool_tls_ssl(r->c);
	char val[128], cmd[320], rep[160];
	unsigned len = rnd_range(&w->rng, 1, 100);
	bool set_sent = false;
	enum cls k;
	int n;

	if (!ssl) {
		snprintf(r->detail, sizeof(r->detail), "cpool_tls_ssl: NULL");
		return C_OTHER;
	}
	random_text(&w->rng, val, len);
	n = snprintf(cmd, sizeof(cmd),
		     "*3\r\n$3\r\nSET\r\n$%d\r\nsoak:tls:%u\r\n$%u\r\n%s\r\n",
		     snprintf(NULL, 0, "soak:tls:%u", w->idx), w->idx, len, val);
	set_sent = true;
	k = tls_send(r, ssl, cmd, (size_t)n);
	if (k == C_OK)
		k = tls_reply(r, ssl, rep, sizeof(rep));
	if (k == C_OK && strcmp(rep, "+OK")) {
		snprintf(r->detail, sizeof(r->detail), "SET: \"%.60s\"", rep);
		k = C_WRONG;
	}
	if (k != C_OK)
		goto out;
	n = snprintf(cmd, sizeof(cmd), "GET soak:tls:%u\r\n", w->idx);
	k = tls_send(r, ssl, cmd, (size_t)n);
	if (k == C_OK)
		k = tls_reply(r, ssl, rep, sizeof(rep));
	if (k == C_OK && strcmp(rep, val)) {
		k = C_WRONG;
		for (unsigned i = 0; i < w->tls_ndoubt && i < DOUBT_MAX; i++)
			if (!strcmp(rep, w->tls_doubt[i]))
				k = C_LATE;
		snprintf(r->detail, sizeof(r->detail),
			 "GET: \"%.40s\" want \"%.40s\"", rep, val);
	}
	if (k != C_OK)
		goto out;
	n = snprintf(cmd, sizeof(cmd), "INCR soak:tls:ctr:%u\r\n", w->idx);
	k = tls_send(r, ssl, cmd, (size_t)n);
	if (k == C_OK)
		k = tls_reply(r, ssl, rep, sizeof(rep));
	if (k != C_OK) {
		w->incr[1].doubt++;
		goto out;
	}
	k = judge_incr(r, &w->incr[1], rep[0] == ':' ? atoll(rep + 1) : -1,
		       rep[0], sn0, t);
out:
	if (set_sent && k != C_OK && k != C_WRONG)
		snprintf(w->tls_doubt[w->tls_ndoubt++ % DOUBT_MAX],
			 sizeof(w->tls_doubt[0]), "%s", val);
	return k;
}

/* The fault server's echo. */
static enum cls
req_echo(struct req *r)
{
	char msg[256];
	unsigned len = rnd_range(&r->w->rng, 8, 200);
	int n = snprintf(msg, sizeof(msg), "E%u-%" PRIu64 "-", r->w->idx,
			 r->w->seq);
	enum cls k;

	random_text(&r->w->rng, msg + n, len);
	n += (int)len;
	msg[n++] = '\n';
	k = send_req(r, msg, (size_t)n);
	if (k == C_OK)
		k = expect(r, msg, (size_t)n, true);
	if (k == C_OK) {
		int port = local_port(r->fd);

		if (port > 0)
			STORE(&r->w->fs_port, port);
	}
	return k;
}

/* ---- request threads --------------------------------------------------- */

static enum cls
acquire_cls(enum tgt t, int err)
{
	switch (-err) {
	case ECONNREFUSED:
		return t == T_FS ? C_ACQ_OTHER : C_ACQ_REFUSED;
	case EPROTO:
		/*
		 * libpq's dial failed otherwise: "the database system is
		 * starting up / shutting down", a connection closed during the
		 * startup exchange. Only postgres has a dial.
		 */
		return t == T_PG ? C_ACQ_PROTO : C_ACQ_OTHER;
	case ETIMEDOUT:
		return C_ACQ_TIMEDOUT;
	case ECONNRESET:
	case ECONNABORTED:
		/*
		 * The connect completed and a RST followed at once: a server
		 * dying, or an injected RST hitting the new connection. It
		 * starts a backoff, whose fail-fasts return it again.
		 */
		return C_ACQ_RESET;
	default:
		return C_ACQ_OTHER;
	}
}

/* A failed request on a reused connection: stale, dirty, or neither. */
static void
judge_failure(struct worker *w, enum tgt ti, enum cls k, uint64_t label,
	      const struct snap *sn0, int64_t start)
{
	struct soak *s = w->s;
	struct target *t = &s->t[ti];

	if (ti == T_FS && k == C_STRAY) {
		int64_t begin = LOAD(&t->stray_begin_ms);
		int64_t end = LOAD(&t->stray_end_ms);

		if (begin <= end && start > end + SOAK_SETTLE_MS) {
			w->dirty++;
			fail(s, "DIRTY HANDOUT: %s request started %lld ms after "
			     "the last stray injection read stray bytes",
			     tgt_name[ti], (long long)(start - end));
		}
		return;
	}
	if ((ti == T_FS && k == C_TIMEOUT_STALL) || k == C_LATE)
		return;
	if (!label) {
		w->unlabelled_fail++;
		return;
	}
	if (label - 1 < sn0->g && sn0->k == sn0->g &&
	    start > sn0->up + SOAK_SETTLE_MS && LOAD(&t->kills) == sn0->k) {
		w->stale[ti]++;
		fail(s, "STALE: %s request started %lld ms after restart %llu "
		     "failed (%s) on a connection from instance %llu",
		     tgt_name[ti], (long long)(start - sn0->up),
		     (unsigned long long)sn0->g, cls_name[k],
		     (unsigned long long)(label - 1));
	}
}

/* A random target, skipping one in a quiet window. */
static enum tgt
pick_target(struct worker *w)
{
	unsigned first = rnd_range(&w->rng, 0, T_COUNT - 1);
	int64_t now = now_ms();
	enum tgt ti = (enum tgt)first;

	for (unsigned j = 0; j < T_COUNT; j++) {
		ti = (enum tgt)((first + j) % T_COUNT);
		if (w->s->t[ti].on && LOAD(&w->s->t[ti].quiet_until) <= now)
			break;
	}
	/* all quiet or off: the fault server is never off */
	return w->s->t[ti].on ? ti : T_FS;
}

/*
 * Milliseconds of [from, to] during which the whole process was stalled
 * (the machine or a sanitizer runtime stopped it): no bound of the pool's
 * can hold while its threads do not run.
 */
static int64_t
frozen_ms(struct soak *s, int64_t from, int64_t to)
{
	int64_t sum = 0;

	pthread_mutex_lock(&s->lock);
	for (unsigned i = 0; i < s->nfreeze && i < FREEZE_MAX; i++) {
		int64_t a = s->freeze[i][0] > from ? s->freeze[i][0] : from;
		int64_t b = s->freeze[i][1] < to ? s->freeze[i][1] : to;

		if (b > a)
			sum += b - a;
	}
	pthread_mutex_unlock(&s->lock);
	return sum;
}

/*
 * An acquire that returned -ETIMEDOUT after waiting from @start to @end.
 * Legitimate only when the endpoint had nothing to give: every lease held
 * for the whole wait (a stalled or down server). It fails the soak when,
 * right after it, the pool shows an idle connection for the endpoint, or
 * when more releases on the endpoint began and returned inside the wait
 * than there are request threads: at most threads - 1 waiters can be
 * ahead of this one, so a fair pool must have served it. @rel0 is the
 * endpoint's rel_begun read before the acquire; rel_done - rel0 counts
 * only releases wholly inside the wait, and never more.
 */
static void
judge_timeout(struct worker *w, enum tgt ti, int64_t start, int64_t end,
	      uint64_t rel0)
{
	struct soak *s = w->s;
	struct target *t = &s->t[ti];
	struct cpool_stats st;
	int64_t rels;
	int err;

	memset(&st, 0, sizeof(st));
	st.size = sizeof(st);
	err = cpool_stats_get(t->pool, t->addr, &st); /* idle: read first */
	rels = (int64_t)(LOAD(&t->rel_done) - rel0);
	if (rels < 0)
		rels = 0; /* releases begun before the wait still running */
	if (err || (st.idle == 0 && rels <= (int64_t)s->nthreads))
		return;
	w->unfair_timeouts++;
	/* Each one as it happens (the notes below keep only the first few). */
	fprintf(s->out, "unfair timeout: %s (%s), wait %lld ms, idle %u right "
		"after, %lld releases during the wait\n", tgt_name[ti],
		t->addr, (long long)(end - start), st.idle, (long long)rels);
	fail(s, "UNFAIR TIMEOUT: %s acquire -ETIMEDOUT after a %lld ms wait "
	     "with %u idle in the pool right after it and %lld releases on "
	     "the endpoint during it (%u threads)", tgt_name[ti],
	     (long long)(end - start), st.idle, (long long)rels, s->nthreads);
}

static int stats_read(struct cpool *pool, const char *addr,
		      struct cpool_stats *st);

static void
one_iteration(struct worker *w)
{
	struct soak *s = w->s;
	enum tgt ti = pick_target(w);
	struct target *t = &s->t[ti];
	struct req r = { .w = w };
	int64_t start = now_ms(), t1, t2;
	struct snap sn0 = snap_of(t), sn1;
	uint64_t label = 0;
	uint64_t rel0 = LOAD(&t->rel_begun);
	struct cpool_stats ep0;
	sigset_t pipe_old;
	bool reused;
	enum cls k;
	int err;

	STORE(&w->busy_since, start);
	w->seq++;
	if (ti == T_PG) /* its dial's timeouts are -ETIMEDOUT too */
		stats_read(t->pool, t->addr, &ep0);
	if (ti == T_TLS)
		sigpipe_block(&pipe_old);
	err = cpool_acquire(t->pool, t->addr, &r.c);
	t1 = now_ms();
	if (t1 - start > w->max_acq_ms)
		w->max_acq_ms = t1 - start;
	if (err) {
		k = acquire_cls(ti, err);
		if (k == C_ACQ_TIMEDOUT && ti == T_PG) {
			struct cpool_stats ep1;

			/*
			 * libpq's dial is bounded by connect_timeout_ms, and
			 * fail-fasts repeat its -ETIMEDOUT: a connect failure
			 * of the endpoint during the wait makes it one of
			 * those, not a slot wait (judged below).
			 */
			stats_read(t->pool, t->addr, &ep1);
			if (ep1.connect_failures + ep1.fail_fasts !=
			    ep0.connect_failures + ep0.fail_fasts)
				k = C_ACQ_DIALTO;
		}
		w->n[ti][k]++;
		if (k == C_ACQ_OTHER)
			fail(s, "UNCLASSIFIED: %s acquire: %d (%s)",
			     tgt_name[ti], err, strerror(-err));
		if (k == C_ACQ_TIMEDOUT)
			judge_timeout(w, ti, start, t1, rel0);
		sn1 = snap_of(t);
		/* refused although the server answered all along */
		if ((k == C_ACQ_REFUSED || k == C_ACQ_RESET ||
		     k == C_ACQ_PROTO || k == C_ACQ_DIALTO) &&
		    sn0.k == sn0.g && sn1.k == sn0.k) {
			max_store(&t->max_refused_up_ms, start - sn0.up);
			if (t->restartable && sn0.g < RLOG_MAX) {
				struct rlog *rl = &t->rlog[sn0.g];

				ADD(&rl->late_fails, 1);
				STORE(&rl->late_err, err);
				max_store(&rl->late_ms, start - sn0.up);
			}
			if (start > sn0.up + RECOVER_BUG_MS)
				fail(s, "NO RECOVERY: %s acquire failed %lld ms "
				     "after it came back: %s", tgt_name[ti],
				     (long long)(start - sn0.up),
				     strerror(-err));
		}
		goto done;
	}
	r.fd = cpool_conn_fd(r.c);
	reused = cpool_conn_reused(r.c);
	if (!reused) {
		sn1 = snap_of(t);
		label = sn0.k == sn0.g && sn1.k == sn0.k ? sn0.g + 1 : 0;
		if (r.fd >= 0 && r.fd < FD_LABELS)
			__atomic_store_n(&s->fdlabel[r.fd], label,
					 __ATOMIC_RELAXED);
	} else if (r.fd >= 0 && r.fd < FD_LABELS) {
		label = __atomic_load_n(&s->fdlabel[r.fd], __ATOMIC_RELAXED);
	}

	r.deadline = t1 + REQUEST_DEADLINE_MS;
	if (ti == T_MC)
		k = req_memcached(&r);
	else if (ti == T_REDIS)
		k = req_redis(&r, &sn0, t);
	else if (ti == T_PG)
		k = req_pg(&r);
	else if (ti == T_TLS) {
		k = req_tls(&r, &sn0, t);
		w->tls_pipes_req += sigpipe_take();
	}
	else
		k = req_echo(&r);
	t2 = now_ms();
	if (t2 - t1 > w->max_req_ms)
		w->max_req_ms = t2 - t1;
	/* Anything but a complete exchange may leave bytes in flight. */
	ADD(&t->rel_begun, 1);
	cpool_release(r.c, k == C_OK ? 0 : CPOOL_RELEASE_CLOSE);
	ADD(&t->rel_done, 1);
	if (ti == T_TLS)
		w->tls_pipes_rel += sigpipe_take();

	if (k == C_TIMEOUT && ti == T_FS &&
	    (LOAD(&t->stall_on) || LOAD(&t->stall_end_ms) >= start))
		k = C_TIMEOUT_STALL;
	w->n[ti][k]++;
	if (k == C_OK) {
		uint64_t seen = LOAD(&t->recovered_gen);

		/* a dead instance cannot answer: mislabelled, or a bug */
		if (t->restartable && reused && label && label - 1 < sn0.g)
			w->reused_old_ok++;
		/* the first success after a restart: how long it took */
		if (t->restartable && sn0.k == sn0.g && sn0.g > seen &&
		    __atomic_compare_exchange_n(&t->recovered_gen, &seen,
						sn0.g, false, __ATOMIC_SEQ_CST,
						__ATOMIC_SEQ_CST)) {
			if (sn0.g < RLOG_MAX)
				STORE(&t->rlog[sn0.g].first_ok_ms, t2);
		}
	} else if (k == C_WRONG) {
		fail(s, "WRONG ANSWER from %s: %s", tgt_name[ti], r.detail);
	} else if (k == C_OTHER) {
		fail(s, "UNCLASSIFIED: %s request: %s", tgt_name[ti],
		     r.detail);
	} else if (reused) {
		judge_failure(w, ti, k, label, &sn0, start);
	} else {
		w->fresh_fail++;
	}
done:
	if (ti == T_TLS) {
		w->tls_pipes_rel += sigpipe_take();
		sigpipe_restore(&pipe_old);
	}
	t2 = now_ms();
	if (t2 - start > w->max_iter_ms)
		w->max_iter_ms = t2 - start;
	if (t2 - start > ITER_BOUND_MS &&
	    t2 - start - frozen_ms(s, start, t2) > ITER_BOUND_MS)
		fail(s, "STUCK: thread %u spent %lld ms on one %s request "
		     "(acquire %lld ms: %s; bound %d ms; %lld ms of it the "
		     "process was stalled)", w->idx, (long long)(t2 - start),
		     tgt_name[ti], (long long)(t1 - start),
		     err ? strerror(-err) : r.c ? "ok" : "?", ITER_BOUND_MS,
		     (long long)frozen_ms(s, start, t2));
	STORE(&w->busy_since, 0);
}

static void *
worker_main(void *arg)
{
	struct worker *w = arg;

	while (!LOAD(&w->s->stop))
		one_iteration(w);
	return NULL;
}

/* ---- sampler ----------------------------------------------------------- */

static int
stats_read(struct cpool *pool, const char *addr, struct cpool_stats *st)
{
	memset(st, 0, sizeof(*st));
	st->size = sizeof(*st);
	return cpool_stats_get(pool, addr, st);
}

static void *
sampler_main(void *arg)
{
	struct soak *s = arg;
	size_t plen = 1 << 16;
	char *prom = malloc(plen);
	struct cpool_stats st;
	int64_t last = now_ms();

	while (!LOAD(&s->sampler_stop)) {
		int64_t now = now_ms();
		int err;

		if (now - last > FREEZE_MS) {
			pthread_mutex_lock(&s->lock);
			s->freeze[s->nfreeze % FREEZE_MAX][0] = last;
			s->freeze[s->nfreeze % FREEZE_MAX][1] = now;
			s->nfreeze++;
			if (now - last > s->max_freeze_ms)
				s->max_freeze_ms = now - last;
			pthread_mutex_unlock(&s->lock);
		}
		last = now;

		for (int i = 0; i < T_COUNT; i++) {
			if (!s->t[i].on)
				continue;
			err = stats_read(s->t[i].pool, s->t[i].addr, &st);
			if (err) {
				fail(s, "cpool_stats_get(%s): %d", tgt_name[i],
				     err);
				continue;
			}
			if (st.open > s->t[i].max_open)
				s->t[i].max_open = st.open;
			if (st.open > CAP)
				fail(s, "CAP: %s open %u > max %u", tgt_name[i],
				     st.open, CAP);
		}
		for (unsigned p = 0; p < s->npools; p++) {
			struct pooldesc *pd = &s->pools[p];

			if (stats_read(pd->pool, NULL, &st) == 0 &&
			    st.open > pd->ntargets * CAP)
				fail(s, "CAP: %s open %u > %u", pd->name,
				     st.open, pd->ntargets * CAP);
			if (prom && s->samples % 10 == 0) {
				err = cpool_stats_format(pd->pool, prom, plen);
				if (err <= 0)
					fail(s, "cpool_stats_format(%s): %d",
					     pd->name, err);
				s->formats++;
			}
		}
		for (unsigned i = 0; i < s->nthreads; i++) {
			int64_t b = LOAD(&s->w[i].busy_since);

			if (!b)
				continue;
			if (now - b > s->max_busy_ms)
				s->max_busy_ms = now - b;
			if (now - b > ITER_BOUND_MS + HANG_MS) {
				fprintf(s->out, "soak: HANG: thread %u busy for "
					"%lld ms; giving up\n", i,
					(long long)(now - b));
				fflush(s->out);
				realsrv_kill_all();
				_exit(3);
			}
		}
		s->samples++;
		poll(NULL, 0, SAMPLE_MS); /* the sampling period */
	}
	free(prom);
	return NULL;
}

/* ---- chaos ------------------------------------------------------------- */

/* A random worker's last fault-server port, or 0 if none yet. */
static int
some_fs_port(struct soak *s)
{
	unsigned i = rnd_range(&s->rng, 0, s->nthreads - 1);

	return LOAD(&s->w[i].fs_port);
}

static void
stall_end(struct soak *s)
{
	struct target *t = &s->t[T_FS];

	fs_set_mode(s->fs, FS_MODE_ECHO);
	STORE(&t->stall_end_ms, now_ms());
	STORE(&t->stall_on, 0);
}

/*
 * Quiet windows. Under full load every pooled connection is reused within
 * microseconds, so a dead one fails during the downtime itself and no
 * connection ever sits idle across a restart: the stale check would have
 * nothing to see. So half the restarts and a quarter of the FIN/RST/stray
 * injections happen in a quiet window of their target: no new request
 * starts from just before the action until 150-400 ms after it, i.e.
 * after it settled. The idle connections it killed must then be evicted
 * by the workers or rejected by the checkout probe; any handed out is a
 * stale failure (or a dirty handout). No two servers are ever quiet
 * together, so traffic never stops.
 */
static bool
quiet_begin(struct soak *s, enum tgt ti)
{
	int64_t now = now_ms();

	for (int j = 0; s->t[ti].restartable && j < T_COUNT; j++)
		if (j != (int)ti && s->t[j].restartable &&
		    LOAD(&s->t[j].quiet_until) > now)
			return false;
	STORE(&s->t[ti].quiet_until, INT64_MAX);
	s->t[ti].quiets++;
	return true;
}

static void
quiet_end(struct soak *s, enum tgt ti)
{
	STORE(&s->t[ti].quiet_until,
	      now_ms() + rnd_range(&s->rng, SOAK_SETTLE_MS + 50, 400));
}

static void
inject(struct soak *s, enum fault f)
{
	static const char stray[] = STRAY;
	struct target *t = &s->t[T_FS];
	bool one = f == F_FIN_ONE || f == F_RST_ONE || f == F_STRAY_ONE;
	int port = one ? some_fs_port(s) : 0;
	bool quiet;
	int hit = 0;

	if (f == F_STALL) {
		STORE(&t->stall_on, 1);
		fs_set_mode(s->fs, FS_MODE_STALL);
		s->stall_until = now_ms() + rnd_range(&s->rng, 150, 1200);
		s->faults[f]++;
		return;
	}
	if (one && !port)
		return; /* no connection known yet */
	quiet = rnd_range(&s->rng, 0, 3) == 0 && quiet_begin(s, T_FS);
	if (f == F_STRAY_ALL || f == F_STRAY_ONE) {
		STORE(&t->stray_begin_ms, now_ms());
		hit = fs_act(s->fs, FS_ACT_SEND, port, stray,
			     sizeof(stray) - 1);
		STORE(&t->stray_end_ms, now_ms());
	} else {
		ADD(&t->kills, 1);
		hit = fs_act(s->fs,
			     f == F_FIN_ALL || f == F_FIN_ONE ? FS_ACT_CLOSE
							     : FS_ACT_RESET,
			     port, NULL, 0);
		STORE(&t->up_ms, now_ms());
		ADD(&t->gen, 1);
	}
	if (quiet)
		quiet_end(s, T_FS);
	s->faults[f]++;
	s->hits[f] += (unsigned)hit;
}

static enum fault
pick_fault(struct soak *s)
{
	unsigned total = 0, r;
	int f;

	for (f = 0; f < F_COUNT; f++)
		total += fault_weight[f];
	r = rnd_range(&s->rng, 0, total - 1);
	for (f = 0; r >= fault_weight[f]; f++)
		r -= fault_weight[f];
	if (f == F_STALL && LOAD(&s->t[T_FS].stall_on))
		f = F_FIN_ONE;
	return (enum fault)f;
}

/*
 * SIGKILL of a whole PostgreSQL server, like a crash: the postmaster is
 * stopped first (it forks no new backend then), every process whose parent
 * it is gets SIGKILL, then the postmaster itself (pgsrv_stop reaps it).
 * The next start runs crash recovery.
 */
/* A process's state letter from /proc/PID/stat, its parent in *ppid; 0 if
 * it is gone. */
static char
proc_state(const char *pid, int *ppid)
{
	char path[300], buf[512], *p, st = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%s/stat", pid);
	f = fopen(path, "re");
	if (!f)
		return 0;
	if (fgets(buf, sizeof(buf), f) && (p = strrchr(buf, ')')))
		sscanf(p + 1, " %c %d", &st, ppid);
	fclose(f);
	return st;
}

static int
pg_kill9(struct pgsrv *pg)
{
	int pids[256];
	unsigned n = 0;
	int64_t deadline;
	DIR *d;
	struct dirent *de;

	if (pg->pid <= 0)
		return 0;
	kill(pg->pid, SIGSTOP);
	d = opendir("/proc");
	while (d && (de = readdir(d))) {
		int ppid = 0;

		if (de->d_name[0] < '0' || de->d_name[0] > '9')
			continue;
		if (proc_state(de->d_name, &ppid) && ppid == pg->pid &&
		    n < 256) {
			pids[n] = atoi(de->d_name);
			kill(pids[n++], SIGKILL);
		}
	}
	if (d)
		closedir(d);
	/*
	 * Until every backend has exited (a zombie of the stopped postmaster,
	 * or gone): one still exiting holds the shared memory, and the next
	 * postmaster refuses to start ("pre-existing shared memory block is
	 * still in use").
	 */
	deadline = now_ms() + 5000;
	for (unsigned i = 0; i < n && now_ms() < deadline;) {
		char name[16];
		int ppid = 0;
		char st;

		snprintf(name, sizeof(name), "%d", pids[i]);
		st = proc_state(name, &ppid);

		if (!st || st == 'Z' || ppid != pg->pid)
			i++;
		else
			poll(NULL, 0, 1); /* watching an exit, with a deadline */
	}
	return pgsrv_stop(pg, SIGKILL);
}

/* The end of a PostgreSQL server's log, into the report. */
static void
pg_log_tail(struct soak *s, const struct pgsrv *pg)
{
	char path[200], buf[2048];
	FILE *f;
	size_t n;

	snprintf(path, sizeof(path), "%s/server.log", pg->dir);
	f = fopen(path, "re");
	if (!f)
		return;
	if (fseek(f, -(long)(sizeof(buf) - 1), SEEK_END))
		rewind(f);
	n = fread(buf, 1, sizeof(buf) - 1, f);
	buf[n] = '\0';
	fclose(f);
	fprintf(s->out, "--- end of %s ---\n%s\n---\n", path, buf);
}

/* Stops a restartable target's server: SIGKILL, or its gentle signal. */
static int
srv_stop(struct soak *s, enum tgt ti, bool kill9)
{
	struct target *t = &s->t[ti];

	if (ti == T_PG) /* SIGINT: fast shutdown */
		return kill9 ? pg_kill9(&t->pg) : pgsrv_stop(&t->pg, SIGINT);
	if (ti == T_TLS)
		return tlssrv_kill(&t->ts, kill9 ? SIGKILL : SIGTERM);
	return realsrv_stop(&t->rs, kill9 ? SIGKILL : SIGTERM);
}

static int
srv_start_again(struct soak *s, enum tgt ti)
{
	int err;

	if (ti == T_TLS)
		return tlssrv_start_again(&s->t[ti].ts);
	if (ti != T_PG)
		return realsrv_start_again(&s->t[ti].rs);
	/*
	 * A new postmaster sometimes exits at once (pgsrv: -EADDRINUSE)
	 * right after the old one's exit; its log goes into the report and
	 * it is started again, up to three times: the server's start, not
	 * the pool.
	 */
	for (int i = 0;; i++) {
		err = pgsrv_start_again(&s->t[ti].pg);
		if (!err || err != -EADDRINUSE || i == 3)
			return err;
		s->pg_start_retries++;
		fprintf(s->out, "postgres: the new postmaster exited at once "
			"(%s); starting it again\n", strerror(-err));
		pg_log_tail(s, &s->t[ti].pg);
		poll(NULL, 0, 50); /* chaos pacing: the old one's leftovers */
	}
}

/* Restarts a server on its port; false if it did not come back. */
static bool
restart(struct soak *s, enum tgt ti)
{
	struct target *t = &s->t[ti];
	bool kill9 = rnd_next(&s->rng) & 1;
	int sig = kill9 ? SIGKILL : SIGTERM;
	uint64_t g = LOAD(&t->gen) + 1;
	struct rlog *rl = g < RLOG_MAX ? &t->rlog[g] : NULL;
	struct cpool_stats st0, st1;
	bool quiet = rnd_next(&s->rng) & 2 && quiet_begin(s, ti);
	int err;

	stats_read(t->pool, t->addr, &st0);
	ADD(&t->kills, 1);
	if (rl) {
		rl->sig = sig;
		rl->quiet = quiet;
		rl->kill_ms = now_ms();
	}
	err = srv_stop(s, ti, kill9);
	if (rl)
		rl->dead_ms = now_ms();
	if (!err)
		err = srv_start_again(s, ti);
	if (err) {
		fail(s, "RESTART: %s did not come back on %s: %d (%s)",
		     tgt_name[ti], t->addr, err, strerror(-err));
		if (ti == T_PG)
			pg_log_tail(s, &t->pg);
		return false;
	}
	stats_read(t->pool, t->addr, &st1);
	if (rl) {
		rl->up_ms = now_ms();
		rl->fail_fasts = st1.fail_fasts - st0.fail_fasts;
		rl->connect_failures =
			st1.connect_failures - st0.connect_failures;
	}
	STORE(&t->up_ms, rl ? rl->up_ms : now_ms());
	ADD(&t->gen, 1);
	if (quiet)
		quiet_end(s, ti);
	t->restarts[kill9]++;
	return true;
}

/*
 * The next server to restart: each restartable target once per round, in
 * a random order, so every one of them is restarted about as often.
 */
static enum tgt
pick_restart(struct soak *s)
{
	if (!s->nbag) {
		for (int i = 0; i < T_COUNT; i++)
			if (s->t[i].on && s->t[i].restartable)
				s->bag[s->nbag++] = (enum tgt)i;
		for (unsigned i = s->nbag; i > 1; i--) {
			unsigned j = rnd_range(&s->rng, 0, i - 1);
			enum tgt x = s->bag[i - 1];

			s->bag[i - 1] = s->bag[j];
			s->bag[j] = x;
		}
	}
	return s->bag[--s->nbag];
}

/*
 * Every 100-500 ms a chaos tick injects three faults; a restart of
 * memcached or redis comes due every 0.4-1.2 s. Both run on schedules of
 * their own, so a slow restart (memcached may take a second to obey
 * SIGTERM) does not thin out the faults: ticks that came due meanwhile
 * run right after it, back to back.
 */
static void
chaos(struct soak *s, unsigned seconds)
{
	int64_t now = now_ms(), end = now + (int64_t)seconds * 1000;
	int64_t next_fault = now + rnd_range(&s->rng, 100, 500);
	int64_t next_restart = now + rnd_range(&s->rng, 400, 1200);
	bool ok = true;

	while (ok && now < end) {
		int64_t wake = next_fault < next_restart ? next_fault
							 : next_restart;

		if (LOAD(&s->t[T_FS].stall_on) && s->stall_until < wake)
			wake = s->stall_until;
		if (wake > end)
			wake = end;
		if (wake > now)
			poll(NULL, 0, (int)(wake - now)); /* chaos pacing */
		now = now_ms();
		if (LOAD(&s->t[T_FS].stall_on) && now >= s->stall_until)
			stall_end(s);
		if (now >= next_fault) {
			for (int i = 0; i < 3; i++)
				inject(s, pick_fault(s));
			next_fault += rnd_range(&s->rng, 100, 500);
		} else if (now >= next_restart) {
			ok = restart(s, pick_restart(s));
			next_restart += rnd_range(&s->rng, 400, 1200);
		}
		now = now_ms();
	}
	if (LOAD(&s->t[T_FS].stall_on))
		stall_end(s);
}

/* ---- at rest, report ----------------------------------------------------- */

static bool
same_stats(const struct cpool_stats *a, const struct cpool_stats *b)
{
	return !memcmp(a, b, sizeof(*a));
}

static unsigned long long
closed_sum(const struct cpool_stats *st)
{
	unsigned long long n = 0;

	for (int r = 0; r < CPOOL_CLOSE_REASON_COUNT; r++)
		n += st->closed[r];
	return n;
}

/*
 * Waits (up to 10 s) until the counters of every pool stop moving (the
 * workers may still be evicting what the last faults hit), then checks
 * each pool is at rest: leased == 0, open == idle + leased, open ==
 * connects - closed; for the pool and for each of its endpoints.
 */
static void
check_rest(struct soak *s, struct cpool_stats *whole)
{
	int64_t deadline = now_ms() + 10000;
	struct cpool_stats a, b;

	for (unsigned p = 0; p < s->npools; p++) {
		struct cpool *pool = s->pools[p].pool;

		for (;;) {
			stats_read(pool, NULL, &a);
			poll(NULL, 0, 50); /* the window in which nothing may move */
			stats_read(pool, NULL, &b);
			if ((same_stats(&a, &b) && b.leased == 0 &&
			     b.open == b.idle + b.leased) ||
			    now_ms() > deadline)
				break;
		}
		whole[p] = b;
	}
	for (int i = -(int)s->npools; i < T_COUNT; i++) {
		const char *name = i < 0 ? s->pools[-i - 1].name : tgt_name[i];

		if (i >= 0 && !s->t[i].on)
			continue;
		if (i >= 0)
			stats_read(s->t[i].pool, s->t[i].addr, &b);
		else
			b = whole[-i - 1];
		if (b.leased != 0)
			fail(s, "AT REST: %s leased %u, want 0", name,
			     b.leased);
		if (b.open != b.idle + b.leased)
			fail(s, "AT REST: %s open %u != idle %u + leased %u",
			     name, b.open, b.idle, b.leased);
		if (b.open != b.connects - closed_sum(&b))
			fail(s, "AT REST: %s open %u != connects %llu - "
			     "closed %llu", name, b.open,
			     (unsigned long long)b.connects, closed_sum(&b));
	}
}

static bool
sigpipe_default(void)
{
	struct sigaction sa;

	return sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL;
}

static int
cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return x < y ? -1 : x > y;
}

/*
 * Per server: how long restarts kept it away (kill to answering) and how
 * long the pool took to serve again once it answered (the connect backoff
 * decides that). SOAK_VERBOSE=1 lists every restart.
 */
static void
report_restarts(struct soak *s)
{
	bool verbose = getenv("SOAK_VERBOSE") && *getenv("SOAK_VERBOSE");
	int64_t down[RLOG_MAX], rec[RLOG_MAX];

	for (int ti = 0; ti < T_COUNT; ti++) {
		uint64_t gens = LOAD(&s->t[ti].gen), ff = 0;
		size_t n = 0, nr = 0;

		if (!s->t[ti].on || !s->t[ti].restartable)
			continue;
		for (uint64_t g = 1; g <= gens && g < RLOG_MAX; g++) {
			struct rlog *rl = &s->t[ti].rlog[g];
			int64_t ok = LOAD(&rl->first_ok_ms);

			down[n++] = rl->up_ms - rl->kill_ms;
			ff += rl->fail_fasts;
			if (ok && !rl->quiet)
				rec[nr++] = ok - rl->up_ms;
			if (verbose)
				fprintf(s->out, "  %s restart %" PRIu64 ": %s, "
					"dead after %lld ms, answering after "
					"%lld ms, first ok %lld ms later%s; "
					"during it %" PRIu64 " connect "
					"failures, %" PRIu64 " fail-fasts; "
					"after it %" PRIu64 " failed acquires "
					"(last %d, %lld ms after)\n",
					tgt_name[ti], g,
					s->t[ti].sig_name[rl->sig == SIGKILL],
					(long long)(rl->dead_ms - rl->kill_ms),
					(long long)(rl->up_ms - rl->kill_ms),
					ok ? (long long)(ok - rl->up_ms) : -1LL,
					rl->quiet ? " (quiet)" : "",
					rl->connect_failures, rl->fail_fasts,
					LOAD(&rl->late_fails),
					LOAD(&rl->late_err),
					(long long)LOAD(&rl->late_ms));
		}
		if (!n)
			continue;
		qsort(down, n, sizeof(down[0]), cmp_i64);
		qsort(rec, nr, sizeof(rec[0]), cmp_i64);
		fprintf(s->out, "%s restarts: away (kill to answering) median "
			"%lld ms, max %lld ms; first ok after answering (not "
			"quiet) median %lld ms, max %lld ms; acquires still "
			"failing up to %lld ms after answering\n", tgt_name[ti],
			(long long)down[n / 2], (long long)down[n - 1],
			nr ? (long long)rec[nr / 2] : -1LL,
			nr ? (long long)rec[nr - 1] : -1LL,
			(long long)LOAD(&s->t[ti].max_refused_up_ms));
	}
}

/* The request threads' results, summed. */
struct totals {
	uint64_t n[T_COUNT][C_COUNT];
	uint64_t ok, bad, stale, dirty, fresh, unlabelled, reused_old;
	uint64_t unfair;
	uint64_t tls_pipes_req, tls_pipes_rel;
	int64_t acq, req, iter;
};

static void
sum_workers(const struct soak *s, struct totals *tot)
{
	memset(tot, 0, sizeof(*tot));
	for (unsigned i = 0; i < s->nthreads; i++) {
		const struct worker *w = &s->w[i];

		for (int t = 0; t < T_COUNT; t++) {
			for (int c = 0; c < C_COUNT; c++) {
				tot->n[t][c] += w->n[t][c];
				if (c == C_OK)
					tot->ok += w->n[t][c];
				else
					tot->bad += w->n[t][c];
			}
			tot->stale += w->stale[t];
		}
		tot->dirty += w->dirty;
		tot->fresh += w->fresh_fail;
		tot->unlabelled += w->unlabelled_fail;
		tot->reused_old += w->reused_old_ok;
		tot->unfair += w->unfair_timeouts;
		tot->tls_pipes_req += w->tls_pipes_req;
		tot->tls_pipes_rel += w->tls_pipes_rel;
		tot->acq = w->max_acq_ms > tot->acq ? w->max_acq_ms : tot->acq;
		tot->req = w->max_req_ms > tot->req ? w->max_req_ms : tot->req;
		if (w->max_iter_ms > tot->iter)
			tot->iter = w->max_iter_ms;
	}
}

/* "name N, name N" over the targets that are on, into @buf. */
static const char *
per_target(const struct soak *s, char *buf, size_t len, const unsigned *v)
{
	size_t n = 0;

	buf[0] = '\0';
	for (int t = 0; t < T_COUNT && n < len; t++)
		if (s->t[t].on)
			n += (size_t)snprintf(buf + n, len - n, "%s%s %u",
					      n ? ", " : "", tgt_name[t], v[t]);
	return buf;
}

/* Requests by class, chaos, the stale verdict, stalls, the cap. */
static void
report_requests(struct soak *s, unsigned seconds, const struct totals *tot)
{
	FILE *o = s->out;
	unsigned faults = 0, hits = 0, restarts = 0, v[T_COUNT];
	uint64_t timeouts = 0, unclassified = 0, late = 0;
	char buf[512];
	size_t n = 0;

	for (int f = 0; f < F_COUNT; f++) {
		faults += s->faults[f];
		hits += s->hits[f];
	}
	for (int t = 0; t < T_COUNT; t++) {
		unclassified += tot->n[t][C_OTHER] + tot->n[t][C_ACQ_OTHER];
		late += tot->n[t][C_LATE];
	}
	fprintf(o, "\n== cpool chaos soak: %u s, %u threads, cap %u per "
		"endpoint, acquire_timeout %d ms, request deadline %d ms ==\n",
		seconds, s->nthreads, CAP, ACQUIRE_TIMEOUT_MS,
		REQUEST_DEADLINE_MS);
	fprintf(o, "servers:");
	for (int t = 0; t < T_COUNT; t++)
		if (s->t[t].on)
			fprintf(o, "%s %s %s", n++ ? "," : "",
				t == T_FS ? "fault server" : tgt_name[t],
				s->t[t].addr);
	fprintf(o, "\n");
	for (int t = 0; t < T_COUNT; t++)
		if (s->skip[t][0])
			fprintf(o, "skipped: %s target: %s\n", tgt_name[t],
				s->skip[t]);
	fprintf(o, "%-42s", "requests");
	for (int t = 0; t < T_COUNT; t++)
		if (s->t[t].on)
			fprintf(o, " %12s", tgt_name[t]);
	fprintf(o, "\n");
	for (int c = 0; c < C_COUNT; c++) {
		bool any = c == C_OK;

		for (int t = 0; t < T_COUNT; t++)
			any |= s->t[t].on && tot->n[t][c];
		if (!any)
			continue;
		fprintf(o, "  %-40s", cls_name[c]);
		for (int t = 0; t < T_COUNT; t++)
			if (s->t[t].on)
				fprintf(o, " %12" PRIu64, tot->n[t][c]);
		fprintf(o, "\n");
	}
	fprintf(o, "  total: %" PRIu64 " ok, %" PRIu64 " failed (all "
		"classified unless listed below)\n", tot->ok, tot->bad);
	n = 0;
	for (int t = 0; t < T_COUNT; t++) {
		const struct target *tg = &s->t[t];

		if (!tg->on || !tg->restartable)
			continue;
		restarts += tg->restarts[0] + tg->restarts[1];
		n += (size_t)snprintf(buf + n, sizeof(buf) - n, "%s%s %s %u "
				      "%s %u", n ? "; " : "", tgt_name[t],
				      tg->sig_name[0], tg->restarts[0],
				      tg->sig_name[1], tg->restarts[1]);
	}
	fprintf(o, "restarts: %u (%s)\n", restarts, buf);
	if (s->t[T_PG].on)
		fprintf(o, "postgres starts redone (postmaster exited at "
			"once): %u\n", s->pg_start_retries);
	fprintf(o, "faults injected: %u (", faults);
	for (int f = 0; f < F_COUNT; f++)
		fprintf(o, "%s%s %u", f ? ", " : "", fault_name[f],
			s->faults[f]);
	fprintf(o, "); server connections hit: %u\n", hits);
	for (int t = 0; t < T_COUNT; t++)
		v[t] = s->t[t].quiets;
	fprintf(o, "quiet windows (action with no traffic until settled): "
		"%s\n", per_target(s, buf, sizeof(buf), v));
	fprintf(o, "stale failures after settle (%d ms): %" PRIu64
		"; dirty handouts: %" PRIu64 "; failures on fresh connections "
		"%" PRIu64 ", on unlabelled ones %" PRIu64 "\n",
		SOAK_SETTLE_MS, tot->stale, tot->dirty, tot->fresh,
		tot->unlabelled);
	for (int t = 0; t < T_COUNT; t++)
		v[t] = (unsigned)tot->n[t][C_WRONG];
	fprintf(o, "wrong answers: %s; unclassified: %" PRIu64 "; in-doubt "
		"writes seen late: %" PRIu64 "\n",
		per_target(s, buf, sizeof(buf), v), unclassified, late);
	for (int t = 0; t < T_COUNT; t++)
		timeouts += tot->n[t][C_ACQ_TIMEDOUT] + tot->n[t][C_ACQ_DIALTO];
	fprintf(o, "acquire timeouts: %" PRIu64 ", of which a fair pool "
		"would have served %" PRIu64 " (an idle connection right "
		"after it, or more than %u releases during the wait)\n",
		timeouts, tot->unfair, s->nthreads);
	fprintf(o, "max acquire stall %lld ms, max request %lld ms, max "
		"iteration %lld ms (bound %d = acquire %d + request %d + "
		"slack %d), max busy seen by the sampler %lld ms\n",
		(long long)tot->acq, (long long)tot->req,
		(long long)tot->iter, ITER_BOUND_MS, ACQUIRE_TIMEOUT_MS,
		REQUEST_DEADLINE_MS, SLACK_MS, (long long)s->max_busy_ms);
	for (int t = 0; t < T_COUNT; t++)
		v[t] = s->t[t].max_open;
	fprintf(o, "cap: max open %s (cap %u) over %" PRIu64 " samples; "
		"cpool_stats_format under load: %" PRIu64 " calls\n",
		per_target(s, buf, sizeof(buf), v), CAP, s->samples,
		s->formats);
	fprintf(o, "process stalls seen by the %d ms sampler (gaps > %d ms): "
		"%u, longest %lld ms\n", SAMPLE_MS, FREEZE_MS, s->nfreeze,
		(long long)s->max_freeze_ms);
}

/* The pools' counters at rest, fds, SIGPIPE, failures, the verdict. */
static void
report_pool(struct soak *s, const struct cpool_stats *whole,
	    const struct cpool_stats *ep, const struct totals *tot)
{
	FILE *o = s->out;

	for (unsigned p = 0; p < s->npools; p++) {
		const struct cpool_stats *pool = &whole[p];
		const char *name = s->pools[p].name;

		fprintf(o, "%s: acquires %llu reuses %llu connects %llu "
			"connect_failures %llu fail_fasts %llu backoffs %llu "
			"waits %llu timeouts %llu steals %llu\n", name,
			(unsigned long long)pool->acquires,
			(unsigned long long)pool->reuses,
			(unsigned long long)pool->connects,
			(unsigned long long)pool->connect_failures,
			(unsigned long long)pool->fail_fasts,
			(unsigned long long)pool->backoffs,
			(unsigned long long)pool->waits,
			(unsigned long long)pool->timeouts,
			(unsigned long long)pool->steals);
		if (p)
			fprintf(o, "closed (%s):", name);
		else
			fprintf(o, "closed:");
		for (int r = 1; r < CPOOL_CLOSE_REASON_COUNT; r++)
			fprintf(o, " %s %llu",
				cpool_close_reason_name(
					(enum cpool_close_reason)r),
				(unsigned long long)pool->closed[r]);
		fprintf(o, "\n");
	}
	for (int t = 0; t < T_COUNT; t++)
		if (s->t[t].on)
			fprintf(o, "%s: connect_failures %llu + fail_fasts "
				"%llu; acquires failed on connect %" PRIu64
				"\n", tgt_name[t],
				(unsigned long long)ep[t].connect_failures,
				(unsigned long long)ep[t].fail_fasts,
				tot->n[t][C_ACQ_REFUSED] +
					tot->n[t][C_ACQ_RESET] +
					tot->n[t][C_ACQ_PROTO] +
					tot->n[t][C_ACQ_DIALTO]);
	for (unsigned p = 0; p < s->npools; p++) {
		if (p)
			fprintf(o, "at rest (%s):", s->pools[p].name);
		else
			fprintf(o, "at rest:");
		fprintf(o, " open %u idle %u leased %u\n", whole[p].open,
			whole[p].idle, whole[p].leased);
	}
	fprintf(o, "fds: %d before the servers, %d before cpool_create, %d "
		"after cpool_destroy, %d at the end\n", s->fd_start,
		s->fd_pool, s->fd_destroy, s->fd_end);
	fprintf(o, "SIGPIPE: %s at start and end; the process is alive\n",
		s->pipe_ok ? "SIG_DFL" : "NOT SIG_DFL");
	if (s->t[T_TLS].on) {
		fprintf(o, "SIGPIPE in TLS work (blocked around it, taken): "
			"%" PRIu64 " in SSL_write of requests, %" PRIu64 " in "
			"releases (close_notify), %u at setup/destroy\n",
			tot->tls_pipes_req, tot->tls_pipes_rel,
			s->tls_pipes_other);
		/* libcpool_tls writes with MSG_NOSIGNAL: there must be none. */
		if (tot->tls_pipes_req || tot->tls_pipes_rel ||
		    s->tls_pipes_other)
			fail(s, "SIGPIPE raised in TLS work: %" PRIu64
				" + %" PRIu64 " + %u",
			     tot->tls_pipes_req, tot->tls_pipes_rel,
			     s->tls_pipes_other);
	}
	if (tot->reused_old)
		fprintf(o, "note: %" PRIu64 " requests succeeded on reused "
			"connections labelled with an earlier instance\n",
			tot->reused_old);
	report_restarts(s);
	for (int i = 0; i < s->nnotes; i++)
		fprintf(o, "FAIL: %s\n", s->notes[i]);
	if (s->failed > s->nnotes)
		fprintf(o, "FAIL: ... %d more\n", s->failed - s->nnotes);
	fprintf(o, "result: %s (%d failed checks)\n",
		s->failed ? "FAIL" : "PASS", s->failed);
	fflush(o);
}

/* ---- the run ------------------------------------------------------------ */

static int
setup_pool(struct soak *s, const struct cpool_conn_ops *ops, void *arg,
	   const char *name, struct cpool **out)
{
	struct cpool_config cfg;
	struct pooldesc *pd = &s->pools[s->npools];
	int err;

	cpool_config_init(&cfg);
	cfg.max_conns_per_endpoint = CAP;
	cfg.acquire_timeout_ms = ACQUIRE_TIMEOUT_MS;
	cfg.connect_timeout_ms = CONNECT_TIMEOUT_MS;
	cfg.max_lifetime_ms = LIFETIME_MS;
	cfg.conn_ops = ops;
	cfg.conn_ops_arg = arg;
	err = cpool_create(&cfg, out);
	if (err)
		return err;
	pd->pool = *out;
	pd->name = name;
	s->npools++;
	return 0;
}

/* Adds target @ti's endpoint to @pool. */
static int
attach(struct soak *s, enum tgt ti, unsigned p)
{
	struct target *t = &s->t[ti];

	t->pool = s->pools[p].pool;
	s->pools[p].ntargets++;
	return cpool_endpoint_add(t->pool, t->addr);
}

/* The adapters (after every pool is gone). */
static void
adapters_free(struct soak *s)
{
	cpool_pq_free(s->pq);
	s->pq = NULL;
	cpool_tls_free(s->tls);
	s->tls = NULL;
	if (s->ssl_ctx)
		SSL_CTX_free(s->ssl_ctx);
	s->ssl_ctx = NULL;
}

/* The servers that are not realsrv ones. */
static void
servers_stop_more(struct soak *s)
{
	if (s->t[T_PG].pg.dir[0])
		pgsrv_destroy(&s->t[T_PG].pg);
	if (s->t[T_TLS].ts.dir[0])
		tlssrv_stop(&s->t[T_TLS].ts);
	s->t[T_TLS].ts.dir[0] = '\0';
}

/*
 * The TLS redis target: redis-server --tls-port with its own CA (tlssrv),
 * and a pool of its own through the TLS adapter, verifying the server as
 * 127.0.0.1. Off, with the reason in s->skip[T_TLS], when the server
 * cannot run here (no redis-server or openssl, no TLS in redis-server).
 */
static void
setup_tls_server(struct soak *s)
{
	struct target *t = &s->t[T_TLS];
	int err;

	if (getenv("SOAK_NO_TLS") && *getenv("SOAK_NO_TLS")) {
		snprintf(s->skip[T_TLS], sizeof(s->skip[0]),
			 "SOAK_NO_TLS is set");
		return;
	}
	if (!tlssrv_available()) {
		snprintf(s->skip[T_TLS], sizeof(s->skip[0]),
			 "redis-server or openssl is not installed");
		return;
	}
	err = tlssrv_start(&t->ts, NULL);
	if (err) {
		snprintf(s->skip[T_TLS], sizeof(s->skip[0]),
			 "redis-server with TLS did not start (no TLS "
			 "support?): %s", strerror(-err));
		t->ts.dir[0] = '\0';
		return;
	}
	snprintf(t->addr, sizeof(t->addr), "%s", t->ts.address);
	t->on = t->restartable = true;
	t->sig_name[0] = "SIGTERM";
	t->sig_name[1] = "SIGKILL";
}

static int
setup_tls_pool(struct soak *s)
{
	struct cpool_tls_config tc;
	struct cpool *pool;
	sigset_t old;
	int err;

	if (!s->t[T_TLS].on)
		return 0;
	s->ssl_ctx = tlssrv_client_ctx(&s->t[T_TLS].ts);
	if (!s->ssl_ctx)
		return -ENOMEM;
	cpool_tls_config_init(&tc);
	tc.ctx = s->ssl_ctx;
	err = cpool_tls_new(&tc, &s->tls);
	if (err)
		return err;
	sigpipe_block(&old); /* the pool's threads inherit the mask */
	err = setup_pool(s, cpool_tls_ops(), s->tls, "pool tls-redis", &pool);
	s->tls_pipes_other += sigpipe_take();
	sigpipe_restore(&old);
	return err ? err : attach(s, T_TLS, s->npools - 1);
}

/*
 * The postgres target: a throwaway server (pgsrv: root only) with the
 * table soak_kv, and a pool of its own through the pq adapter. When the
 * server cannot run here the target is off, with the reason in
 * s->skip[T_PG] (reported, not a failure). Returns 0 or -errno (a setup
 * error of the pool or adapter: the soak cannot run).
 */
static const char *const pg_conf[] = {
	"synchronous_commit=on", /* a commit's reply after its WAL write */
	NULL,
};

static int
setup_pg_server(struct soak *s)
{
	struct target *t = &s->t[T_PG];
	struct pgsrv_opts po = { .conf = pg_conf };
	char why[160] = "", out[160] = "";
	int err;

	if (getenv("SOAK_NO_PG") && *getenv("SOAK_NO_PG")) {
		snprintf(s->skip[T_PG], sizeof(s->skip[0]), "SOAK_NO_PG is set");
		return 0;
	}
	if (!pgsrv_available(why, sizeof(why))) {
		snprintf(s->skip[T_PG], sizeof(s->skip[0]),
			 "PostgreSQL cannot run here: %s", why);
		return 0;
	}
	err = pgsrv_start(&t->pg, &po);
	if (err) {
		snprintf(s->skip[T_PG], sizeof(s->skip[0]),
			 "PostgreSQL did not start: %s", strerror(-err));
		t->pg.dir[0] = '\0';
		return 0;
	}
	err = pgsrv_sql(&t->pg, NULL,
			"CREATE TABLE soak_kv (k int PRIMARY KEY, v text NOT "
			"NULL); GRANT ALL ON soak_kv TO " PGSRV_USER, out,
			sizeof(out));
	if (err) {
		snprintf(s->skip[T_PG], sizeof(s->skip[0]),
			 "PostgreSQL: CREATE TABLE failed: %s", out);
		pgsrv_destroy(&t->pg);
		return 0;
	}
	snprintf(t->addr, sizeof(t->addr), "%s", t->pg.address);
	t->on = t->restartable = true;
	t->sig_name[0] = "SIGINT";
	t->sig_name[1] = "SIGKILL";
	return 0;
}

static int
setup_pg_pool(struct soak *s)
{
	static const char *const kw[] = { "dbname", "user",
					  "application_name", NULL };
	static const char *const val[] = { PGSRV_DB, PGSRV_USER, "cpool_soak",
					   NULL };
	struct cpool_pq_config pc;
	struct cpool *pool;
	int err;

	if (!s->t[T_PG].on)
		return 0;
	cpool_pq_config_init(&pc);
	pc.keywords = kw;
	pc.values = val;
	err = cpool_pq_new(&pc, &s->pq);
	if (err)
		return err;
	err = setup_pool(s, cpool_pq_ops(), s->pq, "pool postgres", &pool);
	return err ? err : attach(s, T_PG, s->npools - 1);
}

static void
soak_free(struct soak *s)
{
	free(s->fdlabel);
	free(s->w);
	for (int i = 0; i < T_COUNT; i++)
		free(s->t[i].rlog);
	pthread_mutex_destroy(&s->lock);
	free(s);
}

/* Servers, fault server, pools. Returns 0, or -errno with @why filled. */
static int
soak_setup(struct soak *s, char *why, size_t why_len)
{
	struct cpool *plain;
	int err;

	for (int i = 0; i < 2; i++) {
		enum realsrv_kind kind = i == T_MC ? REALSRV_MEMCACHED
						   : REALSRV_REDIS;
		struct target *t = &s->t[i];

		err = realsrv_start(&t->rs, kind);
		if (err) {
			snprintf(why, why_len, "cannot start %s: %s",
				 realsrv_name(kind), strerror(-err));
			return err;
		}
		snprintf(t->addr, sizeof(t->addr), "%s", t->rs.address);
		t->on = t->restartable = true;
		t->sig_name[0] = "SIGTERM";
		t->sig_name[1] = "SIGKILL";
	}
	s->fs = fs_start(FS_INET);
	if (!s->fs) {
		err = -errno;
		snprintf(why, why_len, "fs_start: %s", strerror(errno));
		return err;
	}
	snprintf(s->t[T_FS].addr, sizeof(s->t[T_FS].addr), "%s",
		 fs_address(s->fs));
	s->t[T_FS].on = true;
	err = setup_pg_server(s);
	if (err)
		return err;
	setup_tls_server(s);
	s->fdlabel = calloc(FD_LABELS, sizeof(*s->fdlabel));
	s->w = calloc(s->nthreads, sizeof(*s->w));
	if (!s->fdlabel || !s->w) {
		snprintf(why, why_len, "out of memory");
		return -ENOMEM;
	}
	for (int i = 0; i < T_COUNT; i++) {
		if (!s->t[i].restartable)
			continue;
		s->t[i].rlog = calloc(RLOG_MAX, sizeof(struct rlog));
		if (!s->t[i].rlog) {
			snprintf(why, why_len, "out of memory");
			return -ENOMEM;
		}
	}
	s->fd_pool = count_open_fds();
	err = setup_pool(s, NULL, NULL, "pool", &plain);
	for (int i = 0; !err && i < T_COUNT; i++)
		if (i == T_MC || i == T_REDIS || i == T_FS)
			err = attach(s, (enum tgt)i, 0);
	if (!err)
		err = setup_pg_pool(s);
	if (!err)
		err = setup_tls_pool(s);
	if (err)
		snprintf(why, why_len, "pool setup: %s", strerror(-err));
	return err;
}

/* Request threads and sampler run while the calling thread plays chaos. */
static void
soak_load(struct soak *s, unsigned seconds)
{
	pthread_t sampler;

	for (unsigned i = 0; i < s->nthreads; i++) {
		s->w[i].s = s;
		s->w[i].idx = i;
		s->w[i].rng = rnd_next(&s->rng) | 1;
		pthread_create(&s->w[i].tid, NULL, worker_main, &s->w[i]);
	}
	pthread_create(&sampler, NULL, sampler_main, s);
	chaos(s, seconds);
	STORE(&s->stop, 1);
	for (unsigned i = 0; i < s->nthreads; i++)
		pthread_join(s->w[i].tid, NULL);
	STORE(&s->sampler_stop, 1);
	pthread_join(sampler, NULL);
}

/*
 * Every failed acquire of an endpoint was either a connect failure or a
 * fail-fast in backoff, one each: the counters and the callers agree.
 */
static void
check_counters(struct soak *s, struct cpool_stats *ep)
{
	for (int i = 0; i < T_COUNT; i++) {
		uint64_t seen = 0, to = 0, cf;

		if (!s->t[i].on)
			continue;
		stats_read(s->t[i].pool, s->t[i].addr, &ep[i]);
		for (unsigned j = 0; j < s->nthreads; j++) {
			seen += s->w[j].n[i][C_ACQ_REFUSED] +
				s->w[j].n[i][C_ACQ_RESET] +
				s->w[j].n[i][C_ACQ_PROTO];
			to += s->w[j].n[i][C_ACQ_DIALTO] +
			      s->w[j].n[i][C_ACQ_TIMEDOUT];
		}
		cf = ep[i].connect_failures + ep[i].fail_fasts;
		/*
		 * postgres: a connect failure may be a dial timeout, which
		 * the caller sees as -ETIMEDOUT like a slot wait: each is one
		 * of the timeouts, which of them is not exact.
		 */
		if (i == T_PG && cf >= seen && cf <= seen + to)
			continue;
		if (seen != cf)
			fail(s, "STATS: %s acquires failed on connect %llu != "
			     "connect_failures %llu + fail_fasts %llu",
			     tgt_name[i], (unsigned long long)seen,
			     (unsigned long long)ep[i].connect_failures,
			     (unsigned long long)ep[i].fail_fasts);
	}
}

/* Destroys every pool (then the adapters); NULL-safe. */
static void
pools_destroy(struct soak *s)
{
	sigset_t old;

	sigpipe_block(&old); /* the TLS pool's close_notify (see above) */
	for (unsigned p = 0; p < s->npools; p++) {
		if (s->pools[p].pool)
			cpool_destroy(s->pools[p].pool);
		s->pools[p].pool = NULL; /* the report keeps the names */
	}
	s->tls_pipes_other += sigpipe_take();
	sigpipe_restore(&old);
	adapters_free(s);
}

/* Stops every server (SIGTERM, or @sig when it is SIGKILL). */
static void
servers_stop(struct soak *s, int sig)
{
	for (int i = 0; i < T_COUNT; i++)
		if (i == T_MC || i == T_REDIS)
			realsrv_stop(&s->t[i].rs, sig);
	servers_stop_more(s);
}

/* cpool_destroy(), then every fd back, servers stopped. */
static void
soak_teardown(struct soak *s)
{
	pools_destroy(s);
	/* the fault server's side of our connections: its fds, not ours */
	if (fs_wait_open(s->fs, 0, 10000))
		fail(s, "fault server still has %u connections 10 s after "
		     "cpool_destroy", fs_open(s->fs));
	s->fd_destroy = count_open_fds();
	if (s->fd_destroy != s->fd_pool)
		fail(s, "FDS: %d after cpool_destroy, %d before cpool_create",
		     s->fd_destroy, s->fd_pool);
	fs_stop(s->fs);
	s->fs = NULL;
	servers_stop(s, SIGTERM);
	s->fd_end = count_open_fds();
	if (s->fd_end != s->fd_start)
		fail(s, "FDS: %d at the end, %d at the start", s->fd_end,
		     s->fd_start);
}

/*
 * The run must have been chaotic enough to mean something: restarts (one
 * per 2 s, and every server restarted at least once per 8 s: they take
 * turns), faults, and successes on every target.
 */
static void
check_chaos(struct soak *s, unsigned seconds)
{
	unsigned restarts = 0, faults = 0;

	for (int i = 0; i < T_COUNT; i++) {
		const struct target *t = &s->t[i];
		unsigned n = t->restarts[0] + t->restarts[1];
		unsigned want = seconds / 8 ? seconds / 8 : 1;

		if (!t->on || !t->restartable)
			continue;
		restarts += n;
		if (n < want)
			fail(s, "CHAOS: %s restarted %u times in %u s, want "
			     ">= %u", tgt_name[i], n, seconds, want);
	}
	for (int f = 0; f < F_COUNT; f++)
		faults += s->faults[f];
	if (restarts < seconds / 2)
		fail(s, "CHAOS: %u restarts in %u s, want >= %u", restarts,
		     seconds, seconds / 2);
	if (faults < seconds * 5)
		fail(s, "CHAOS: %u faults in %u s, want >= %u", faults,
		     seconds, seconds * 5);
	for (int t = 0; t < T_COUNT; t++) {
		uint64_t ok = 0;

		if (!s->t[t].on)
			continue;
		for (unsigned j = 0; j < s->nthreads; j++)
			ok += s->w[j].n[t][C_OK];
		if (!ok)
			fail(s, "no request to %s ever succeeded", tgt_name[t]);
	}
}

int
soak_run(const struct soak_opts *opts, char *why, size_t why_len)
{
	struct soak *s = calloc(1, sizeof(*s));
	struct cpool_stats whole[POOL_MAX], ep[T_COUNT];
	struct totals tot;
	int err;

	if (!s)
		return -ENOMEM;
	s->out = opts->out ? opts->out : stdout;
	s->nthreads = opts->threads ? opts->threads : SOAK_THREADS;
	s->rng = ((uint64_t)now_ms() * 0x9E3779B97F4A7C15ull ^
		  (uint64_t)getpid()) | 1;
	pthread_mutex_init(&s->lock, NULL);
	s->pipe_ok = sigpipe_default();
	if (!s->pipe_ok)
		fail(s, "SIGPIPE is not at its default disposition at start");
	s->fd_start = count_open_fds();

	err = soak_setup(s, why, why_len);
	if (err) {
		pools_destroy(s);
		if (s->fs)
			fs_stop(s->fs);
		servers_stop(s, SIGKILL);
		soak_free(s);
		return err;
	}
	memset(ep, 0, sizeof(ep));
	soak_load(s, opts->seconds);
	check_rest(s, whole);
	check_counters(s, ep);
	soak_teardown(s);
	if (!sigpipe_default()) {
		s->pipe_ok = false;
		fail(s, "SIGPIPE is not at its default disposition at the end");
	}
	check_chaos(s, opts->seconds);

	sum_workers(s, &tot);
	report_requests(s, opts->seconds, &tot);
	report_pool(s, whole, ep, &tot);
	if (s->failed && why_len)
		snprintf(why, why_len, "%s", s->notes[0]);
	err = s->failed;
	soak_free(s);
	return err;
}
