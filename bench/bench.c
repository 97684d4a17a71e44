/* SPDX-License-Identifier: MIT */
/*
 * The bench driver: options, one measurement (threads, barriers, samples,
 * getrusage), interleaved repetitions, medians, tables, SUMMARY lines, CSV
 * rows and goal lines. See bench.h for the method.
 */
#include "bench.h"

#include <dlfcn.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <sched.h>

#define BENCH_SAMPLE_CAP (1u << 16)

static uint64_t clock_cost_ns; /* one clock_gettime pair, subtracted */

void
bench_die(const char *fmt, ...)
{
	va_list ap;

	fflush(stdout);
	fprintf(stderr, "bench: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

uint64_t
bench_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* What one clock_gettime pair costs here: subtract it from a timing. */
uint64_t
bench_clock_cost_ns(void)
{
	return clock_cost_ns;
}

void
bench_hist_merge(struct bench_hist *into, const struct bench_hist *h)
{
	unsigned i;

	for (i = 0; i < BENCH_HIST_BUCKETS; i++)
		into->count[i] += h->count[i];
	into->n += h->n;
	if (h->max > into->max)
		into->max = h->max;
}

/* The middle of bucket @i's range. */
static double
hist_value(unsigned i)
{
	unsigned shift;

	if (i < BENCH_HIST_SUB)
		return i;
	shift = i / BENCH_HIST_SUB - 1;
	return ((double)(BENCH_HIST_SUB + i % BENCH_HIST_SUB) + 0.5) *
	       (double)(1ull << shift);
}

/*
 * The @q quantile (0 < q <= 1) of @h: the value of the bucket holding the
 * ceil(q * n)-th smallest sample, never more than the maximum; NAN when
 * empty.
 */
double
bench_hist_quantile(const struct bench_hist *h, double q)
{
	uint64_t rank, seen = 0;
	unsigned i;
	double v;

	if (!h->n)
		return NAN;
	rank = (uint64_t)ceil(q * (double)h->n);
	if (rank < 1)
		rank = 1;
	for (i = 0; i < BENCH_HIST_BUCKETS; i++) {
		seen += h->count[i];
		if (seen >= rank)
			break;
	}
	v = hist_value(i);
	return v < (double)h->max ? v : (double)h->max;
}

static int
cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

static int
cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

double
bench_median(double *v, unsigned n)
{
	if (!n)
		return NAN;
	qsort(v, n, sizeof(*v), cmp_double);
	if (n & 1)
		return v[n / 2];
	return (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* The median cost of an empty clock_gettime pair, to subtract. */
static void
clock_calibrate(void)
{
	uint32_t v[2001];
	unsigned i;
	uint64_t t0;

	for (i = 0; i < 2001; i++) {
		t0 = bench_now_ns();
		v[i] = (uint32_t)(bench_now_ns() - t0);
	}
	qsort(v, 2001, sizeof(v[0]), cmp_u32);
	clock_cost_ns = v[1000];
}

/*
 * Refuse sanitizer builds twice: at compile time (the macros) and at run
 * time (a sanitizer runtime linked in through the library).
 */
static void
refuse_sanitized(void)
{
	if (BENCH_SANITIZED || dlsym(RTLD_DEFAULT, "__asan_init") ||
	    dlsym(RTLD_DEFAULT, "__tsan_init") ||
	    dlsym(RTLD_DEFAULT, "__ubsan_handle_add_overflow")) {
		fprintf(stderr, "bench: this is a sanitizer build; its numbers "
				"would measure the sanitizer. Refusing to "
				"report: run make bench on a plain build.\n");
		exit(2);
	}
}

static unsigned
parse_list(const char *arg, unsigned *out, unsigned max)
{
	unsigned n = 0;
	char *end;
	unsigned long v;

	while (*arg && n < max) {
		errno = 0;
		v = strtoul(arg, &end, 10);
		if (errno || end == arg || v == 0 || v > 1000000)
			bench_die("bad list '%s'", arg);
		out[n++] = (unsigned)v;
		if (*end == ',')
			end++;
		else if (*end)
			bench_die("bad list '%s'", arg);
		arg = end;
	}
	return n;
}

void
bench_opts_default(struct bench_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->threads[0] = 1;
	o->nthreads = 1;
	o->secs = 0.5;
	o->reps = 5;
	o->outdir = "bench/results";
	o->cpu = -1;
}

static void
usage(const char *prog, const char *extra)
{
	fprintf(stderr,
		"usage: %s [-t threads[,threads...]] [-d seconds] "
		"[-r repetitions]\n"
		"       [-o outdir] [-s memcached|echo] [-p cpu|-1] [-q]%s\n",
		prog, extra ? extra : "");
	exit(2);
}

/*
 * Common start of every bench binary: refuse sanitizer builds, parse the
 * options over the caller's defaults, make stdout line-buffered, measure
 * the clock.
 */
void
bench_init(int argc, char **argv, struct bench_opts *o, const char *extra)
{
	int c;
	char *end;

	refuse_sanitized();
	while ((c = getopt(argc, argv, "t:d:r:o:s:p:n:qh")) != -1) {
		switch (c) {
		case 't':
			o->nthreads =
				parse_list(optarg, o->threads, BENCH_MAX_LIST);
			for (unsigned i = 0; i < o->nthreads; i++)
				if (o->threads[i] > BENCH_MAX_THREADS)
					bench_die("at most %d threads",
						  BENCH_MAX_THREADS);
			break;
		case 'n':
			o->nsizes =
				parse_list(optarg, o->sizes, BENCH_MAX_LIST);
			break;
		case 'd':
			o->secs = strtod(optarg, &end);
			if (*end || !(o->secs > 0) || o->secs > 3600)
				bench_die("bad -d '%s'", optarg);
			break;
		case 'r':
			o->reps = (unsigned)strtoul(optarg, &end, 10);
			if (*end || !o->reps || o->reps > BENCH_MAX_REPS)
				bench_die("-r: 1..%d", BENCH_MAX_REPS);
			break;
		case 'o':
			o->outdir = optarg;
			break;
		case 's':
			if (strcmp(optarg, "memcached") &&
			    strcmp(optarg, "echo"))
				usage(argv[0], extra);
			o->server = optarg;
			break;
		case 'p':
			o->cpu = (int)strtol(optarg, &end, 10);
			if (*end)
				usage(argv[0], extra);
			break;
		case 'q':
			o->quiet = true;
			break;
		default:
			usage(argv[0], extra);
		}
	}
	if (optind != argc)
		usage(argv[0], extra);
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (o->outdir && *o->outdir)
		mkdir(o->outdir, 0755);
	clock_calibrate();
}

/* Raises RLIMIT_NOFILE to at least @need (the hard limit too, as root). */
int
bench_raise_nofile(unsigned need)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == -1)
		return -errno;
	if (rl.rlim_cur >= need)
		return 0;
	if (rl.rlim_max < need) {
		rl.rlim_max = need;
		rl.rlim_cur = need;
		if (setrlimit(RLIMIT_NOFILE, &rl) == 0)
			return 0;
		getrlimit(RLIMIT_NOFILE, &rl);
	}
	rl.rlim_cur = rl.rlim_max < need ? rl.rlim_max : need;
	if (setrlimit(RLIMIT_NOFILE, &rl) == -1)
		return -errno;
	return rl.rlim_cur >= need ? 0 : -EMFILE;
}

int
bench_pin_self(int cpu)
{
	cpu_set_t set;

	if (cpu < 0)
		return 0;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if (sched_setaffinity(0, sizeof(set), &set) == -1)
		return -errno;
	return 0;
}

void
bench_thread_ready(struct bench_thread *t, int init_err)
{
	t->init_err = init_err;
	pthread_barrier_wait(&t->run->ready);
	pthread_barrier_wait(&t->run->go);
}

void
bench_thread_done(struct bench_thread *t)
{
	pthread_barrier_wait(&t->run->done);
	pthread_barrier_wait(&t->run->fini);
}

/*
 * Keeps at most BENCH_SAMPLE_CAP samples spread over the whole run: when
 * the buffer fills, every other sample is dropped and the sampling interval
 * doubles.
 */
void
bench_sample(struct bench_thread *t, uint64_t ns)
{
	size_t i;

	if (t->skip) {
		t->skip--;
		return;
	}
	t->skip = t->every - 1;
	if (t->nsamples == t->cap) {
		for (i = 0; i < t->cap / 2; i++)
			t->samples[i] = t->samples[2 * i];
		t->nsamples = t->cap / 2;
		t->every *= 2;
		t->skip = t->every - 1;
	}
	ns = ns > clock_cost_ns ? ns - clock_cost_ns : 0;
	t->samples[t->nsamples++] = ns > UINT32_MAX ? UINT32_MAX : (uint32_t)ns;
}

/* One memcached get miss on a blocking fd: 0, or -errno / -EPROTO. */
int
bench_request(int fd)
{
	static const char req[] = BENCH_REQUEST;
	char buf[64];
	size_t got = 0;
	ssize_t n;

	n = send(fd, req, sizeof(req) - 1, MSG_NOSIGNAL);
	if (n != (ssize_t)sizeof(req) - 1)
		return n == -1 ? -errno : -EIO;
	while (got < sizeof(BENCH_REPLY) - 1) {
		n = recv(fd, buf + got, sizeof(buf) - got, 0);
		if (n > 0) {
			got += (size_t)n;
		} else if (n == 0) {
			return -ECONNRESET;
		} else if (errno != EINTR) {
			return -errno;
		}
	}
	if (got != sizeof(BENCH_REPLY) - 1 ||
	    memcmp(buf, BENCH_REPLY, got) != 0)
		return -EPROTO;
	return 0;
}

static double
rusage_ns(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e9 +
	       (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1e3;
}

static void
sleep_until(uint64_t deadline_ns)
{
	struct timespec ts;

	ts.tv_sec = (time_t)(deadline_ns / 1000000000ull);
	ts.tv_nsec = (long)(deadline_ns % 1000000000ull);
	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) ==
	       EINTR)
		;
}

/* A timed acquire's own time: the clock pair's cost taken off. */
static double
wait_ns(double v)
{
	return v > (double)clock_cost_ns ? v - (double)clock_cost_ns : 0;
}

/*
 * One measurement: @threads threads run @ops's loop on @inst for @secs.
 * Per-thread setup (a dedicated connection, say) happens before the window
 * and teardown after it, so neither is counted. With env->time_acquire
 * every acquire is timed on its own too: the threads' histograms, merged,
 * give res->wait_p50_ns, wait_p99_ns and wait_max_ns.
 */
int
bench_run_once(const struct peer_ops *ops, void *inst,
	       const struct bench_env *env, unsigned threads, double secs,
	       struct bench_result *res)
{
	struct bench_run run = { .ops = ops, .inst = inst, .env = env };
	void *(*fn)(void *) =
		env->time_acquire ? ops->thread_timed_fn : ops->thread_fn;
	struct bench_hist *wait = NULL;
	struct bench_thread *t;
	pthread_t tid[BENCH_MAX_THREADS];
	uint32_t *all;
	size_t nall = 0;
	uint64_t start, end = 0, ops_total = 0, errors = 0;
	double cpu0, cpu1;
	unsigned i;
	int err = 0, last_err = 0;

	t = aligned_alloc(64, sizeof(*t) * threads);
	if (!t)
		return -ENOMEM;
	memset(t, 0, sizeof(*t) * threads);
	pthread_barrier_init(&run.ready, NULL, threads + 1);
	pthread_barrier_init(&run.go, NULL, threads + 1);
	pthread_barrier_init(&run.done, NULL, threads + 1);
	pthread_barrier_init(&run.fini, NULL, threads + 1);
	for (i = 0; i < threads; i++) {
		t[i].run = &run;
		t[i].idx = i;
		t[i].cap = BENCH_SAMPLE_CAP;
		t[i].every = 1;
		t[i].samples = malloc(sizeof(uint32_t) * t[i].cap);
		if (!t[i].samples)
			bench_die("out of memory");
		if (env->time_acquire) {
			t[i].wait = calloc(1, sizeof(*t[i].wait));
			if (!t[i].wait)
				bench_die("out of memory");
		}
		if (pthread_create(&tid[i], NULL, fn, &t[i]))
			bench_die("pthread_create failed");
	}
	pthread_barrier_wait(&run.ready);
	for (i = 0; i < threads; i++)
		if (t[i].init_err && !err)
			err = t[i].init_err;
	if (err)
		run.stop = 1;
	cpu0 = rusage_ns();
	start = bench_now_ns();
	pthread_barrier_wait(&run.go);
	if (!err) {
		sleep_until(start + (uint64_t)(secs * 1e9));
		__atomic_store_n(&run.stop, 1, __ATOMIC_RELAXED);
	}
	pthread_barrier_wait(&run.done);
	cpu1 = rusage_ns();
	pthread_barrier_wait(&run.fini);
	for (i = 0; i < threads; i++)
		pthread_join(tid[i], NULL);
	for (i = 0; i < threads; i++) {
		ops_total += t[i].ops;
		errors += t[i].errors;
		if (t[i].last_err)
			last_err = t[i].last_err;
		if (t[i].end_ns > end)
			end = t[i].end_ns;
		nall += t[i].nsamples;
	}
	memset(res, 0, sizeof(*res));
	all = malloc(sizeof(uint32_t) * (nall ? nall : 1));
	if (!all)
		bench_die("out of memory");
	nall = 0;
	if (env->time_acquire) {
		wait = calloc(1, sizeof(*wait));
		if (!wait)
			bench_die("out of memory");
	}
	for (i = 0; i < threads; i++) {
		memcpy(all + nall, t[i].samples,
		       t[i].nsamples * sizeof(uint32_t));
		nall += t[i].nsamples;
		free(t[i].samples);
		if (wait)
			bench_hist_merge(wait, t[i].wait);
		free(t[i].wait);
	}
	if (!err && ops_total > errors && end > start) {
		res->ops_s = (double)(ops_total - errors) * 1e9 /
			     (double)(end - start);
		res->cpu_ns = (cpu1 - cpu0) / (double)(ops_total - errors);
		res->cpus = (cpu1 - cpu0) / (double)(end - start);
	} else {
		res->ops_s = NAN;
		res->cpu_ns = NAN;
		res->cpus = NAN;
	}
	if (nall) {
		qsort(all, nall, sizeof(uint32_t), cmp_u32);
		res->p50_ns = all[nall / 2];
		res->p99_ns = all[(size_t)((double)nall * 0.99)];
	} else {
		res->p50_ns = res->p99_ns = NAN;
	}
	res->wait_p50_ns = res->wait_p99_ns = res->wait_max_ns = NAN;
	if (wait && wait->n && !err) {
		res->wait_p50_ns = wait_ns(bench_hist_quantile(wait, 0.50));
		res->wait_p99_ns = wait_ns(bench_hist_quantile(wait, 0.99));
		res->wait_max_ns = wait_ns((double)wait->max);
	}
	free(wait);
	res->errors = errors;
	res->last_err = err ? err : last_err;
	free(all);
	free(t);
	pthread_barrier_destroy(&run.ready);
	pthread_barrier_destroy(&run.go);
	pthread_barrier_destroy(&run.done);
	pthread_barrier_destroy(&run.fini);
	return err;
}

static bool
progress_tty(const struct bench_opts *o)
{
	static int tty = -1;

	if (tty == -1)
		tty = isatty(STDERR_FILENO);
	return !o->quiet && tty;
}

void
bench_progress(const struct bench_opts *o, const char *fmt, ...)
{
	va_list ap;

	if (!progress_tty(o))
		return;
	fputs("\r[bench] ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputs("\033[K", stderr);
	fflush(stderr);
}

void
bench_progress_end(const struct bench_opts *o)
{
	if (progress_tty(o)) {
		fputs("\r\033[K", stderr);
		fflush(stderr);
	}
}

void
bench_entry_init(struct bench_entry *e, const struct peer_ops *ops, void *inst,
		 const char *label)
{
	memset(e, 0, sizeof(*e));
	e->ops = ops;
	e->inst = inst;
	snprintf(e->label, sizeof(e->label), "%s", label ? label : ops->name);
}

struct spin_arg {
	uint64_t wall_ns;
	double frac;
};

static void *
spin(void *arg)
{
	struct spin_arg *a = arg;
	struct timespec c0, c1;
	uint64_t t0 = bench_now_ns();

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c0);
	while (bench_now_ns() - t0 < a->wall_ns)
		;
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c1);
	a->frac = ((double)(c1.tv_sec - c0.tv_sec) * 1e9 +
		   (double)(c1.tv_nsec - c0.tv_nsec)) /
		  (double)(bench_now_ns() - t0);
	return NULL;
}

/* How many of @n CPUs a spinning thread each gets right now (30 ms). */
static double
free_cpus(unsigned n)
{
	struct spin_arg a[BENCH_MAX_THREADS];
	pthread_t tid[BENCH_MAX_THREADS];
	double sum = 0;
	unsigned i;

	for (i = 0; i < n; i++) {
		a[i].wall_ns = 30000000;
		a[i].frac = 0;
		if (pthread_create(&tid[i], NULL, spin, &a[i]))
			return NAN;
	}
	for (i = 0; i < n; i++) {
		pthread_join(tid[i], NULL);
		sum += a[i].frac;
	}
	return sum;
}

/*
 * On a shared machine another process may hold a CPU for many seconds,
 * which no interleaving undoes: before each repetition, wait (up to 10 s,
 * 60 s per process) until @due spinning threads get 90 % of a CPU each.
 * Returns the CPUs found free when the repetition started.
 */
static double
wait_quiet(unsigned due, const struct bench_opts *o, double *waited_s)
{
	static double budget_s = 60;
	double f;
	unsigned tries;

	for (tries = 0;; tries++) {
		f = free_cpus(due);
		if (isnan(f) || f >= 0.9 * due || tries == 40 || budget_s <= 0)
			return f;
		bench_progress(o, "machine busy: %.2f of %u CPUs free, waiting",
			       f, due);
		sleep_until(bench_now_ns() + 250000000ull);
		budget_s -= 0.28;
		*waited_s += 0.28;
	}
}

/*
 * Creates each of the @npools @pools with @conns connections, into @ops and
 * @inst; one whose setup fails is left out, with a line saying so. Returns
 * how many it created.
 */
unsigned
bench_create_all(const struct peer_ops *const *pools, unsigned npools,
		 const struct bench_env *env, unsigned conns,
		 const struct peer_ops **ops, void **inst)
{
	unsigned i, n = 0;
	int err;

	for (i = 0; i < npools; i++) {
		err = pools[i]->create(env, conns, &inst[n]);
		if (err) {
			printf("%s: setup failed (%s), left out\n",
			       pools[i]->name, strerror(-err));
			continue;
		}
		ops[n++] = pools[i];
	}
	return n;
}

/* Runs each pool 0.1 s, not recorded: page faults, lazy binding, caches. */
void
bench_warm_up(const char *bench, const struct peer_ops *const *ops,
	      void *const *inst, unsigned n, const struct bench_env *env,
	      unsigned threads, const struct bench_opts *o)
{
	struct bench_result warm;
	unsigned i;

	for (i = 0; i < n; i++) {
		bench_progress(o, "%s warm-up pool=%s", bench, ops[i]->name);
		bench_run_once(ops[i], inst[i], env, threads, 0.1, &warm);
	}
}

/*
 * Runs @reps repetitions; in each, every pool once, in turn, the starting
 * pool rotating so that no pool always runs first (or right after the
 * same neighbour).
 */
void
bench_interleave(const char *bench, struct bench_entry *e, unsigned n,
		 const struct bench_env *env, unsigned threads,
		 const struct bench_opts *o)
{
	unsigned ncpu = (unsigned)sysconf(_SC_NPROCESSORS_ONLN);
	unsigned due = threads < ncpu ? threads : ncpu;
	double f, free_min = NAN, waited = 0;
	unsigned r, k, i;
	int err;

	for (i = 0; i < n; i++)
		e[i].nrep = 0;
	for (r = 0; r < o->reps; r++) {
		f = wait_quiet(due, o, &waited);
		if (isnan(free_min) || f < free_min)
			free_min = f;
		for (k = 0; k < n; k++) {
			i = (r + k) % n;
			bench_progress(o, "%s t=%u rep %u/%u pool=%s", bench,
				       threads, r + 1, o->reps, e[i].label);
			err = bench_run_once(e[i].ops, e[i].inst, env, threads,
					     o->secs, &e[i].rep[r]);
			if (err)
				fprintf(stderr,
					"\nbench: %s %s t=%u: thread setup "
					"failed: %s\n",
					bench, e[i].label, threads,
					strerror(-err));
			e[i].nrep = r + 1;
		}
	}
	for (i = 0; i < n; i++) {
		e[i].free_cpus = free_min;
		e[i].waited_s = waited;
		e[i].due_cpus = due;
	}
	bench_progress_end(o);
}

double
bench_field(const struct bench_result *r, enum bench_field f)
{
	switch (f) {
	case BENCH_F_OPS:
		return r->ops_s;
	case BENCH_F_CPU:
		return r->cpu_ns;
	case BENCH_F_P50:
		return r->p50_ns;
	case BENCH_F_P99:
		return r->p99_ns;
	case BENCH_F_NS_PER_OP:
		return r->ops_s > 0 ? 1e9 / r->ops_s : NAN;
	case BENCH_F_CPUS:
		return r->cpus;
	case BENCH_F_WAIT_P50:
		return r->wait_p50_ns;
	case BENCH_F_WAIT_P99:
		return r->wait_p99_ns;
	case BENCH_F_WAIT_MAX:
		return r->wait_max_ns;
	}
	return NAN;
}

double
bench_median_of(const struct bench_entry *e, enum bench_field f)
{
	double v[BENCH_MAX_REPS];
	unsigned i, n = 0;

	for (i = 0; i < e->nrep; i++)
		if (!isnan(bench_field(&e->rep[i], f)))
			v[n++] = bench_field(&e->rep[i], f);
	return bench_median(v, n);
}

/* The median over repetitions of a.f / b.f, pairing the same repetition. */
double
bench_ratio(const struct bench_entry *a, const struct bench_entry *b,
	    enum bench_field f)
{
	double v[BENCH_MAX_REPS], x, y;
	unsigned i, n = 0;

	for (i = 0; i < a->nrep && i < b->nrep; i++) {
		x = bench_field(&a->rep[i], f);
		y = bench_field(&b->rep[i], f);
		if (!isnan(x) && !isnan(y) && y > 0)
			v[n++] = x / y;
	}
	return bench_median(v, n);
}

const struct bench_entry *
bench_find(const struct bench_entry *e, unsigned n, const char *label)
{
	unsigned i;

	for (i = 0; i < n; i++)
		if (!strcmp(e[i].label, label))
			return &e[i];
	return NULL;
}

void
bench_csv_row(const struct bench_opts *o, const char *file, const char *header,
	      const char *fmt, ...)
{
	char path[512];
	struct stat st;
	va_list ap;
	FILE *f;
	bool fresh;

	if (!o->outdir || !*o->outdir)
		return;
	snprintf(path, sizeof(path), "%s/%s", o->outdir, file);
	fresh = stat(path, &st) == -1 || st.st_size == 0;
	f = fopen(path, "a");
	if (!f) {
		fprintf(stderr, "bench: %s: %s\n", path, strerror(errno));
		return;
	}
	if (fresh)
		fprintf(f, "%s\n", header);
	va_start(ap, fmt);
	vfprintf(f, fmt, ap);
	va_end(ap);
	fputc('\n', f);
	fclose(f);
}

#define CSV_HEADER                                                             \
	"bench,pool,threads,ops_per_s,cpu_ns_per_op,p50_ns,p99_ns,errors"

static void
print_ratio(const struct bench_entry *ref, const struct bench_entry *row)
{
	if (!ref) {
		printf(" |");
		return;
	}
	printf(" | %7.2f %6.2f", bench_ratio(ref, row, BENCH_F_OPS),
	       bench_ratio(ref, row, BENCH_F_CPU));
}

static uint64_t
entry_errors(const struct bench_entry *e)
{
	uint64_t errors = 0;
	unsigned r;

	for (r = 0; r < e->nrep; r++)
		errors += e->rep[r].errors;
	return errors;
}

/* One row of the human table; true when it got fewer CPUs than due. */
static bool
print_row(const struct bench_entry *e, const struct bench_entry *cp,
	  const struct bench_entry *by, unsigned due_cpus)
{
	uint64_t errors = entry_errors(e);
	double cpus = bench_median_of(e, BENCH_F_CPUS);
	unsigned r;

	printf("%-16s %12.0f %9.1f %8.0f %8.0f %5.2f %6llu", e->label,
	       bench_median_of(e, BENCH_F_OPS), bench_median_of(e, BENCH_F_CPU),
	       bench_median_of(e, BENCH_F_P50), bench_median_of(e, BENCH_F_P99),
	       cpus, (unsigned long long)errors);
	if (cp)
		print_ratio(cp, e);
	if (by)
		print_ratio(by, e);
	for (r = 0; errors && r < e->nrep; r++)
		if (e->rep[r].last_err) {
			printf("  (%s)", strerror(-e->rep[r].last_err));
			break;
		}
	printf("\n");
	return cpus < 0.85 * due_cpus;
}

/* The SUMMARY line and CSV rows of one pool. */
static void
emit_rows(const char *bench, const struct bench_entry *e, unsigned threads,
	  const struct bench_opts *o)
{
	double ops = bench_median_of(e, BENCH_F_OPS);
	double cpu = bench_median_of(e, BENCH_F_CPU);
	double p50 = bench_median_of(e, BENCH_F_P50);
	double p99 = bench_median_of(e, BENCH_F_P99);
	uint64_t errors = entry_errors(e);
	const struct bench_result *x;
	char file[128], rfile[128];
	unsigned r;

	snprintf(file, sizeof(file), "%s.csv", bench);
	snprintf(rfile, sizeof(rfile), "%s_reps.csv", bench);
	printf("SUMMARY bench=%s pool=%s threads=%u ops_per_s=%.0f "
	       "cpu_ns_per_op=%.1f p50_ns=%.0f p99_ns=%.0f",
	       bench, e->label, threads, ops, cpu, p50, p99);
	if (errors)
		printf(" errors=%llu", (unsigned long long)errors);
	printf("\n");
	bench_csv_row(o, file, CSV_HEADER, "%s,%s,%u,%.0f,%.1f,%.0f,%.0f,%llu",
		      bench, e->label, threads, ops, cpu, p50, p99,
		      (unsigned long long)errors);
	for (r = 0; r < e->nrep; r++) {
		x = &e->rep[r];
		bench_csv_row(o, rfile, "rep," CSV_HEADER ",cpus",
			      "%u,%s,%s,%u,%.0f,%.1f,%.0f,%.0f,%llu,%.2f",
			      r + 1, bench, e->label, threads, x->ops_s,
			      x->cpu_ns, x->p50_ns, x->p99_ns,
			      (unsigned long long)x->errors, x->cpus);
	}
}

/*
 * The human table (medians, ratios of cpool and cpool_bypass against every
 * row), then one SUMMARY line and one CSV row per pool, and every
 * repetition in <bench>_reps.csv.
 */
void
bench_report(const char *bench, const char *title, const struct bench_entry *e,
	     unsigned n, unsigned threads, const struct bench_opts *o)
{
	const struct bench_entry *cp = bench_find(e, n, "cpool");
	const struct bench_entry *by = bench_find(e, n, "cpool_bypass");
	unsigned ncpu = (unsigned)sysconf(_SC_NPROCESSORS_ONLN);
	unsigned due = threads < ncpu ? threads : ncpu;
	unsigned i, starved = 0;

	printf("\n== %s, %u thread%s: %u reps x %.2f s, medians ==\n", title,
	       threads, threads == 1 ? "" : "s", e[0].nrep, o->secs);
	printf("%-16s %12s %9s %8s %8s %5s %6s", "pool", "ops/s", "cpu ns/op",
	       "p50 ns", "p99 ns", "cpus", "errors");
	if (cp)
		printf(" | %7s %6s", "cpool/x", "cpu");
	if (by)
		printf(" | %7s %6s", "bypass/x", "cpu");
	printf("\n");
	for (i = 0; i < n; i++)
		starved += print_row(&e[i], cp, by, due);
	if (cp || by)
		printf("(x/y columns: median over reps of cpool's ops/s over "
		       "the row's, and of cpool's CPU per op over the row's; "
		       "cpus: CPU time over wall time)\n");
	printf("(machine: at least %.2f of %u CPUs free when each repetition "
	       "started%s",
	       e[0].free_cpus, e[0].due_cpus,
	       e[0].waited_s > 0 ? "; waited" : ")\n");
	if (e[0].waited_s > 0)
		printf(" %.1f s for other load to pass)\n", e[0].waited_s);
	if (starved && o->cpu_note)
		printf("note: %u pool%s got less than 85%% of the %u CPU%s "
		       "%u thread%s could use: other load on the machine, or "
		       "the pool's threads sleep\n",
		       starved, starved == 1 ? "" : "s", due,
		       due == 1 ? "" : "s", threads, threads == 1 ? "" : "s");
	for (i = 0; i < n; i++)
		emit_rows(bench, &e[i], threads, o);
}

/* One goal line; the run script gathers them into the final table. */
void
bench_goal(const char *name, double value, const char *cmp, double target,
	   const char *what)
{
	bool met;

	if (isnan(value)) {
		bench_goal_na(name, "no measurement", what);
		return;
	}
	met = !strcmp(cmp, "<=") ? value <= target : value >= target;
	printf("GOAL name=%s value=%.3f target=%s%.2f met=%s what=\"%s\"\n",
	       name, value, cmp, target, met ? "yes" : "NO", what);
}

void
bench_goal_na(const char *name, const char *why, const char *what)
{
	printf("GOAL name=%s value=n/a target=- met=NO what=\"%s: %s\"\n", name,
	       what, why);
}
