/* SPDX-License-Identifier: MIT */
/*
 * bench_tls: one PING/PONG through TLS against a real redis-server
 * --tls-port (started here with its own CA, tests/util/tlssrv.c), three
 * ways, in one loop that differs only in where the session comes from:
 *
 *   pooled     cpool_acquire + PING + cpool_release, through cpool_tls
 *   dedicated  PING on one TLS connection held for the run (the limit)
 *   handshake  connect + full TLS handshake + PING + close_notify + close
 *
 * Client and server are pinned to one CPU (-p, default 0) like
 * bench_request; the figure is client CPU per operation (getrusage of the
 * whole process, the pool's worker included). Repetitions interleave the
 * three (rep r starts at mode r % 3); the report gives medians and the
 * median of the per-repetition ratio pooled/dedicated. The handshake cost
 * is handshake minus dedicated: connect + handshake + shutdown + close.
 */
#include "bench.h"
#include "../tests/util/tlssrv.h"

#include <cpool.h>
#include <cpool_tls.h>
#include <errno.h>
#include <math.h>
#include <openssl/err.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>

enum mode { POOLED, DEDICATED, HANDSHAKE, NMODES };
static const char *const mode_name[NMODES] = { "pooled", "dedicated",
					       "handshake" };

struct ctx {
	struct tlssrv srv;
	SSL_CTX *sctx;
	struct cpool *pool;
	struct tlssrv_client ded;
};

/* PING, then the 7-byte reply in one read: the same bytes in every mode. */
static int
ping(SSL *ssl)
{
	char buf[64];
	int n;

	if (SSL_write(ssl, "PING\r\n", 6) != 6)
		return -EPROTO;
	n = SSL_read(ssl, buf, sizeof(buf));
	if (n != 7 || memcmp(buf, "+PONG\r\n", 7))
		return -EPROTO;
	return 0;
}

static int
one_op(struct ctx *x, enum mode m)
{
	struct tlssrv_client cl;
	struct cpool_conn *c;
	int err;

	switch (m) {
	case POOLED:
		err = cpool_acquire(x->pool, x->srv.address, &c);
		if (err)
			return err;
		err = ping(cpool_tls_ssl(c));
		cpool_release(c, err ? CPOOL_RELEASE_CLOSE : 0);
		return err;
	case DEDICATED:
		return ping(x->ded.ssl);
	default:
		err = tlssrv_client_open(&x->srv, x->sctx, &cl);
		if (err)
			return err;
		err = ping(cl.ssl);
		tlssrv_client_close(&cl);
		return err;
	}
}

static double
cpu_s(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec +
	       (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

/* CPU ns per op of @m over @secs of wall time. */
static double
measure(struct ctx *x, enum mode m, double secs)
{
	uint64_t end = bench_now_ns() + (uint64_t)(secs * 1e9), ops = 0;
	double c0 = cpu_s();

	while (bench_now_ns() < end) {
		for (int i = 0; i < 16; i++) {
			if (one_op(x, m))
				bench_die("%s: request failed", mode_name[m]);
			ops++;
		}
	}
	return (cpu_s() - c0) * 1e9 / (double)ops;
}

int
main(int argc, char **argv)
{
	double res[NMODES][BENCH_MAX_REPS], ratio[BENCH_MAX_REPS], med[NMODES];
	struct cpool_tls_config tc;
	struct cpool_tls_stats ts = { .size = sizeof(ts) };
	struct cpool_config cfg;
	struct cpool_tls *tls;
	struct bench_opts o;
	struct ctx x;
	cpu_set_t set;
	int err;

	bench_opts_default(&o);
	o.cpu = 0;
	o.secs = 1.0;
	bench_init(argc, argv, &o, NULL);
	err = bench_pin_self(o.cpu);
	if (err)
		bench_die("cannot pin to CPU %d: %s", o.cpu, strerror(-err));
	memset(&x, 0, sizeof(x));
	err = tlssrv_start(&x.srv, NULL);
	if (err)
		bench_die("cannot start redis-server --tls-port: %s",
			  strerror(-err));
	CPU_ZERO(&set);
	CPU_SET(o.cpu, &set);
	sched_setaffinity(x.srv.pid, sizeof(set), &set);
	x.sctx = tlssrv_client_ctx(&x.srv);
	if (!x.sctx)
		bench_die("SSL_CTX");
	cpool_tls_config_init(&tc);
	tc.ctx = x.sctx;
	if (cpool_tls_new(&tc, &tls))
		bench_die("cpool_tls_new");
	cpool_config_init(&cfg);
	cfg.flags = CPOOL_NO_PIN;
	cfg.workers = 1;
	cfg.max_conns_per_endpoint = 4;
	cpool_tls_install(tls, &cfg);
	if (cpool_create(&cfg, &x.pool) ||
	    cpool_endpoint_add(x.pool, x.srv.address))
		bench_die("cpool_create");
	if (tlssrv_client_open(&x.srv, x.sctx, &x.ded))
		bench_die("dedicated connection");
	printf("bench_tls: TLS PING against redis-server on %s, client and "
	       "server pinned to CPU %d; %u reps x %.2f s, %s\n",
	       x.srv.address, o.cpu, o.reps, o.secs,
	       OpenSSL_version(OPENSSL_VERSION));
	for (int m = 0; m < NMODES; m++) /* warm up: sessions, caches */
		measure(&x, (enum mode)m, 0.1);
	for (unsigned r = 0; r < o.reps; r++) {
		for (int k = 0; k < NMODES; k++) {
			int m = (int)((r + (unsigned)k) % NMODES);

			res[m][r] = measure(&x, (enum mode)m,
					    m == HANDSHAKE ? o.secs / 2 : o.secs);
		}
		ratio[r] = res[POOLED][r] / res[DEDICATED][r];
	}
	printf("%-10s %14s %14s %14s\n", "mode", "cpu ns/op med", "min", "max");
	for (int m = 0; m < NMODES; m++) {
		double lo = INFINITY, hi = 0;

		for (unsigned r = 0; r < o.reps; r++) {
			lo = fmin(lo, res[m][r]);
			hi = fmax(hi, res[m][r]);
		}
		med[m] = bench_median(res[m], o.reps);
		printf("%-10s %14.0f %14.0f %14.0f\n", mode_name[m], med[m], lo,
		       hi);
		bench_csv_row(&o, "tls.csv", "mode,cpu_ns_per_op_median",
			      "%s,%.0f", mode_name[m], med[m]);
	}
	cpool_tls_stats_get(tls, &ts);
	printf("handshake cost: %.1f us CPU per connect + full handshake + "
	       "close (handshake - dedicated, medians); pool handshakes %llu\n",
	       (med[HANDSHAKE] - med[DEDICATED]) / 1e3,
	       (unsigned long long)ts.handshakes);
	printf("pooled/dedicated per-rep ratio median %.3f\n\n",
	       bench_median(ratio, o.reps));
	bench_goal("tls_ping_pooled_vs_dedicated", bench_median(ratio, o.reps),
		   "<=", 1.10,
		   "TLS PING client CPU/op, cpool+cpool_tls over a dedicated "
		   "TLS connection");
	tlssrv_client_close(&x.ded);
	cpool_destroy(x.pool);
	cpool_tls_free(tls);
	SSL_CTX_free(x.sctx);
	tlssrv_stop(&x.srv);
	return 0;
}
