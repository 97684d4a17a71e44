/* SPDX-License-Identifier: MIT */
/*
 * The bench driver shared by every bench binary.
 *
 * A measurement runs one pool ("peer") with N threads for D seconds: every
 * thread runs the same loop (bench_loop.h) of acquire [+ one request] +
 * release, counts operations, times one operation in BENCH_BATCH with
 * clock_gettime (the clock's own cost subtracted), and the process's
 * getrusage(RUSAGE_SELF) user+sys time over the window gives client CPU per
 * operation. Servers run in other processes, so their CPU is not counted.
 *
 * Repetitions interleave the pools (rep r starts at pool r % n), and the
 * report gives medians plus the median of per-repetition ratios, which is
 * what survives a noisy 2-core VM.
 */
#ifndef CPOOL_BENCH_H
#define CPOOL_BENCH_H

#include <netinet/in.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Sanitizer builds measure the sanitizer: refuse to report. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__) ||           \
	defined(CPOOL_SANITIZE)
#define BENCH_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) ||     \
	__has_feature(memory_sanitizer)
#define BENCH_SANITIZED 1
#endif
#endif
#ifndef BENCH_SANITIZED
#define BENCH_SANITIZED 0
#endif

#define BENCH_MAX_THREADS 64
#define BENCH_MAX_REPS 32
#define BENCH_MAX_LIST 16
#define BENCH_BATCH 64 /* operations per stop-flag check and per sample */

/* The request every pool sends: a memcached get miss, same bytes for all. */
#define BENCH_REQUEST "get cpool_bench_missing_key\r\n"
#define BENCH_REPLY "END\r\n"

enum bench_mode {
	BENCH_ACQUIRE_RELEASE = 0, /* acquire + release only */
	BENCH_REQUEST_RESPONSE,	   /* acquire + one get miss + release */
};

/* What every peer connects to. */
struct bench_env {
	char addr[64];		/* "127.0.0.1:port", cpool's form */
	struct sockaddr_in sin; /* the same, for the peers */
	enum bench_mode mode;
	unsigned cpool_flags;	     /* extra cpool_config.flags */
	unsigned acquire_timeout_ms; /* for every pool that has one */
	bool time_acquire;	     /* time every acquire: bench_thread.wait */
	const char *dns_servers;     /* cpool's cfg.dns_servers; NULL: none */
};

/* One lease of any pool. */
struct bench_lease {
	void *h; /* the peer's handle */
	int fd;
};

/*
 * A pool under test. create() opens @conns connections (warmed: connected
 * and idle) and returns the instance; thread_fn is the measured loop from
 * bench_loop.h, and thread_timed_fn the same loop timing every acquire
 * (env->time_acquire); acquire()/release() are the same calls for
 * single-threaded workloads (NULL when the peer is no pool, e.g.
 * dedicated).
 */
struct peer_ops {
	const char *name;
	int (*create)(const struct bench_env *env, unsigned conns, void **out);
	void (*destroy)(void *inst);
	void *(*thread_fn)(void *arg);
	void *(*thread_timed_fn)(void *arg);
	int (*acquire)(void *inst, struct bench_lease *l);
	void (*release)(void *inst, struct bench_lease *l, bool close);
};

extern const struct peer_ops peer_cpool;	/* probe always on */
extern const struct peer_ops peer_cpool_bypass; /* probe_bypass_ms set */
extern const struct peer_ops peer_cpool_handle; /* bypass, by handle */
extern const struct peer_ops peer_apr;		/* apr_reslist */
extern const struct peer_ops peer_memcached;	/* memcached_pool */
extern const struct peer_ops peer_mutex;	/* mutex + condvar LIFO */
extern const struct peer_ops peer_fifo;		/* strict FIFO handoff */
extern const struct peer_ops peer_dedicated;	/* one conn per thread */
extern const struct peer_ops peer_connect;	/* connect per request */
extern const struct peer_ops peer_recv_peek;	/* bare recv(MSG_PEEK) */

#define BENCH_BYPASS_MS 1000 /* cpool_bypass's probe_bypass_ms */

struct cpool;
/* The pool behind a peer_cpool or peer_cpool_bypass instance. */
struct cpool *bench_cpool_of(void *inst);
/* A peer_cpool instance with @conns idle connections; see peer_cpool.c. */
int bench_cpool_create(const struct bench_env *env, unsigned conns,
		       unsigned bypass_ms, double *bytes_per_conn, void **out);

/* Shared state of one measurement; the threads see it. */
struct bench_run {
	const struct peer_ops *ops;
	void *inst;
	const struct bench_env *env;
	pthread_barrier_t ready, go, done, fini;
	int stop;
};

/*
 * A log-linear histogram of nanoseconds: values below BENCH_HIST_SUB
 * exactly, above that BENCH_HIST_SUB buckets per power of two (at most
 * 1/32 = 3 % wide), plus the exact count and maximum. Adding is a few
 * instructions on the thread's own memory: no lock, no shared line.
 */
#define BENCH_HIST_SUB_BITS 5
#define BENCH_HIST_SUB (1u << BENCH_HIST_SUB_BITS)
#define BENCH_HIST_BUCKETS ((64 - BENCH_HIST_SUB_BITS + 1) * BENCH_HIST_SUB)

struct bench_hist {
	uint64_t n;
	uint64_t max;
	uint64_t count[BENCH_HIST_BUCKETS];
};

static inline unsigned
bench_hist_bucket(uint64_t v)
{
	unsigned shift;

	if (v < BENCH_HIST_SUB)
		return (unsigned)v;
	shift = 63 - (unsigned)__builtin_clzll(v) - BENCH_HIST_SUB_BITS;
	return (shift + 1) * BENCH_HIST_SUB +
	       (unsigned)((v >> shift) & (BENCH_HIST_SUB - 1));
}

static inline void
bench_hist_add(struct bench_hist *h, uint64_t v)
{
	h->count[bench_hist_bucket(v)]++;
	h->n++;
	if (v > h->max)
		h->max = v;
}

struct bench_thread {
	struct bench_run *run;
	unsigned idx;
	int init_err;
	uint64_t ops;
	uint64_t errors;
	int last_err;
	uint64_t end_ns;
	uint32_t *samples; /* latency samples, ns */
	size_t nsamples;
	size_t cap;
	unsigned every; /* sample one batch in this many */
	unsigned skip;
	struct bench_hist *wait; /* each acquire timed (env->time_acquire) */
} __attribute__((aligned(64)));

/* One measurement's numbers. */
struct bench_result {
	double ops_s;
	double cpu_ns; /* client CPU (user+sys) per op */
	double p50_ns;
	double p99_ns;
	double cpus; /* CPU time over wall time: CPUs it got */
	/* each acquire's own time (env->time_acquire), clock cost subtracted */
	double wait_p50_ns;
	double wait_p99_ns;
	double wait_max_ns;
	uint64_t errors;
	int last_err;
};

enum bench_field {
	BENCH_F_OPS,
	BENCH_F_CPU,
	BENCH_F_P50,
	BENCH_F_P99,
	BENCH_F_NS_PER_OP, /* 1e9 / ops_s */
	BENCH_F_CPUS,
	BENCH_F_WAIT_P50,
	BENCH_F_WAIT_P99,
	BENCH_F_WAIT_MAX,
};

/* One pool in an interleaved set, with its per-repetition results. */
struct bench_entry {
	const struct peer_ops *ops;
	void *inst;
	char label[32]; /* the table's row name; defaults to ops->name */
	unsigned nrep;
	struct bench_result rep[BENCH_MAX_REPS];
	double free_cpus;  /* fewest CPUs free at a repetition's start */
	double waited_s;   /* time waited for other load to pass */
	unsigned due_cpus; /* min(threads, online CPUs) */
};

struct bench_opts {
	unsigned threads[BENCH_MAX_LIST];
	unsigned nthreads;
	unsigned sizes[BENCH_MAX_LIST]; /* -n, pool_size only */
	unsigned nsizes;
	double secs;
	unsigned reps;
	const char *outdir;
	const char *server; /* -s memcached | echo; NULL = auto */
	int cpu;	    /* -p: pin client and server here; -1 none */
	bool quiet;
	bool cpu_note; /* warn when threads got fewer CPUs than due */
};

/* bench.c */
void bench_opts_default(struct bench_opts *o);
void bench_init(int argc, char **argv, struct bench_opts *o,
		const char *usage_extra);
uint64_t bench_now_ns(void);
uint64_t bench_clock_cost_ns(void);
void bench_hist_merge(struct bench_hist *into, const struct bench_hist *h);
double bench_hist_quantile(const struct bench_hist *h, double q);
int bench_run_once(const struct peer_ops *ops, void *inst,
		   const struct bench_env *env, unsigned threads, double secs,
		   struct bench_result *res);
unsigned bench_create_all(const struct peer_ops *const *pools, unsigned npools,
			  const struct bench_env *env, unsigned conns,
			  const struct peer_ops **ops, void **inst);
void bench_warm_up(const char *bench, const struct peer_ops *const *ops,
		   void *const *inst, unsigned n, const struct bench_env *env,
		   unsigned threads, const struct bench_opts *o);
void bench_interleave(const char *bench, struct bench_entry *e, unsigned n,
		      const struct bench_env *env, unsigned threads,
		      const struct bench_opts *o);
void bench_report(const char *bench, const char *title,
		  const struct bench_entry *e, unsigned n, unsigned threads,
		  const struct bench_opts *o);
void bench_entry_init(struct bench_entry *e, const struct peer_ops *ops,
		      void *inst, const char *label);
double bench_field(const struct bench_result *r, enum bench_field f);
double bench_median_of(const struct bench_entry *e, enum bench_field f);
double bench_ratio(const struct bench_entry *a, const struct bench_entry *b,
		   enum bench_field f);
const struct bench_entry *bench_find(const struct bench_entry *e, unsigned n,
				     const char *label);
void bench_goal(const char *name, double value, const char *cmp, double target,
		const char *what);
void bench_goal_na(const char *name, const char *why, const char *what);
void bench_progress(const struct bench_opts *o, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
void bench_progress_end(const struct bench_opts *o);
void bench_csv_row(const struct bench_opts *o, const char *file,
		   const char *header, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
int bench_raise_nofile(unsigned need);
int bench_pin_self(int cpu);
double bench_median(double *v, unsigned n);
void bench_die(const char *fmt, ...) __attribute__((format(printf, 1, 2)))
__attribute__((noreturn));

/* Called by bench_loop.h. */
void bench_thread_ready(struct bench_thread *t, int init_err);
void bench_thread_done(struct bench_thread *t);
void bench_sample(struct bench_thread *t, uint64_t ns);
int bench_request(int fd);

static inline int
bench_stopped(struct bench_run *run)
{
	return __atomic_load_n(&run->stop, __ATOMIC_RELAXED);
}

/* net.c */
int bench_connect(const struct sockaddr_in *sin);
int bench_addr_create(const struct bench_env *env, unsigned conns, void **out);
void bench_addr_destroy(void *inst);
int bench_free_port(uint16_t *port);
int bench_listen(uint16_t *port);
int bench_listen_loopback_any(uint16_t *port);
int bench_fd_for_local_port(uint16_t lport, uint16_t rport);

/* server.c: memcached or the echo server, in a child process */
struct bench_server {
	pid_t pid;
	uint16_t port;
	bool memcached;
};

int bench_server_start(struct bench_server *s, const char *kind, int cpu,
		       unsigned maxconns);
int bench_echo_start(struct bench_server *s, int lfd, uint16_t port, int cpu);
void bench_server_stop(struct bench_server *s);
void bench_env_init(struct bench_env *env, const struct bench_server *s,
		    enum bench_mode mode);

/* echo_server.c */
void bench_echo_serve(int lfd) __attribute__((noreturn));

#endif /* CPOOL_BENCH_H */
