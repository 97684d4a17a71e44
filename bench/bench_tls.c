/* SPDX-License-Identifier: MIT */
/*
 * bench_tls: one PING over TLS per operation against a redis-server
 * --tls-port the bench starts (its own CA and certificate, made with the
 * openssl command in a temporary directory), client and server pinned to
 * one CPU (-p, default 0) as in bench_request. The figure is the client
 * process's CPU per request (the pool's worker included), medians over
 * interleaved repetitions, ratios the median of per-repetition ratios.
 *
 *   pooled     cpool + libcpool_tls: acquire, SSL_write/SSL_read, release
 *   dedicated  one TLS connection, no pool: the limit
 *   handshake  TCP connect + full TLS handshake + PING + close per request
 *
 * Options: -r reps (7), -d seconds per repetition and variant (0.5), -p cpu.
 */
#include "bench.h"

#include <arpa/inet.h>
#include <cpool.h>
#include <cpool_tls.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum { V_POOLED, V_DEDICATED, V_HANDSHAKE, V_COUNT };
static const char *const vname[V_COUNT] = { "pooled", "dedicated",
					    "handshake" };

static pid_t srv_pid = -1;
static char dir[64];

static void
srv_kill(void)
{
	char cmd[128];

	if (srv_pid > 0) {
		kill(srv_pid, SIGKILL);
		waitpid(srv_pid, NULL, 0);
		srv_pid = -1;
	}
	if (dir[0]) {
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
		if (system(cmd) != 0)
			dir[0] = '\0';
	}
}

static int
certs(void)
{
	char cmd[1024];

	snprintf(dir, sizeof(dir), "/tmp/cpool-bench-tls-XXXXXX");
	if (!mkdtemp(dir))
		return -errno;
	snprintf(cmd, sizeof(cmd),
		 "(cd '%s' && openssl req -x509 -newkey ec -pkeyopt "
		 "ec_paramgen_curve:prime256v1 -nodes -keyout ca.key -out ca.crt "
		 "-days 2 -subj /CN=cpool-bench-ca && openssl req -newkey ec "
		 "-pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout srv.key "
		 "-out srv.csr -subj /CN=localhost && printf "
		 "'subjectAltName=IP:127.0.0.1\\n' > ext && openssl x509 -req "
		 "-in srv.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out "
		 "srv.crt -days 2 -extfile ext) >/dev/null 2>&1",
		 dir);
	return system(cmd) == 0 ? 0 : -EIO;
}

static int
tcp_connect(uint16_t port)
{
	struct sockaddr_in sin = { .sin_family = AF_INET,
				   .sin_port = htons(port),
				   .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd >= 0 && connect(fd, (struct sockaddr *)&sin, sizeof(sin))) {
		close(fd);
		return -1;
	}
	return fd;
}

static int
ping(SSL *ssl)
{
	char buf[8];
	int n, got = 0;

	if (SSL_write(ssl, "PING\r\n", 6) != 6)
		return -EIO;
	while (got < 7) {
		n = SSL_read(ssl, buf + got, 7 - got);
		if (n <= 0)
			return -ECONNRESET;
		got += n;
	}
	return memcmp(buf, "+PONG\r\n", 7) ? -EPROTO : 0;
}

/* A full handshake on a new connection, @ping it, close: 0 or -errno. */
static int
handshake_ping(SSL_CTX *ctx, uint16_t port)
{
	int fd = tcp_connect(port), err = -ECONNREFUSED;
	SSL *ssl;

	if (fd < 0)
		return err;
	ssl = SSL_new(ctx);
	SSL_set_fd(ssl, fd);
	if (SSL_connect(ssl) == 1) {
		err = ping(ssl);
		SSL_shutdown(ssl);
	}
	SSL_free(ssl);
	close(fd);
	return err;
}

static int
srv_start(int cpu, uint16_t *port, SSL_CTX *ctx)
{
	char port_s[16], crt[96], key[96], ca[96];
	pid_t parent = getpid();
	struct timespec ts = { 0, 5000000 };
	int err;

	err = bench_free_port(port);
	if (err)
		return err;
	snprintf(port_s, sizeof(port_s), "%u", *port);
	snprintf(crt, sizeof(crt), "%s/srv.crt", dir);
	snprintf(key, sizeof(key), "%s/srv.key", dir);
	snprintf(ca, sizeof(ca), "%s/ca.crt", dir);
	fflush(NULL);
	srv_pid = fork();
	if (srv_pid == -1)
		return -errno;
	if (srv_pid == 0) {
		int fd = open("/dev/null", O_WRONLY);

		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(1);
		bench_pin_self(cpu);
		if (fd >= 0) {
			dup2(fd, STDOUT_FILENO);
			dup2(fd, STDERR_FILENO);
		}
		execlp("redis-server", "redis-server", "--port", "0",
		       "--tls-port", port_s, "--tls-cert-file", crt,
		       "--tls-key-file", key, "--tls-ca-cert-file", ca,
		       "--tls-auth-clients", "no", "--bind", "127.0.0.1",
		       "--save", "", "--appendonly", "no", "--daemonize", "no",
		       "--dir", "/tmp", (char *)NULL);
		_exit(127);
	}
	for (int i = 0; i < 2000; i++) {
		if (handshake_ping(ctx, *port) == 0)
			return 0;
		if (waitpid(srv_pid, NULL, WNOHANG) == srv_pid) {
			srv_pid = -1;
			return -ECHILD;
		}
		nanosleep(&ts, NULL);
	}
	return -ETIMEDOUT;
}

static uint64_t
cpu_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int
cmp_d(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static double
median(double *v, unsigned n)
{
	qsort(v, n, sizeof(*v), cmp_d);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

int
main(int argc, char **argv)
{
	struct cpool_tls_config tc;
	struct cpool_tls_stats ts = { .size = sizeof(ts) };
	struct cpool_config cfg;
	struct cpool_tls *tls;
	struct cpool *pool;
	struct cpool_conn *c;
	double ns[V_COUNT][BENCH_MAX_REPS], r_ded[BENCH_MAX_REPS],
		r_hs[BENCH_MAX_REPS], med[V_COUNT];
	unsigned reps = 7, cpu = 0;
	double secs = 0.5;
	char addr[32], ca[96];
	uint16_t port;
	SSL_CTX *ctx;
	SSL *ded;
	int fd, opt, err;

	while ((opt = getopt(argc, argv, "r:d:p:o:")) != -1) {
		if (opt == 'r')
			reps = (unsigned)atoi(optarg);
		else if (opt == 'd')
			secs = atof(optarg);
		else if (opt == 'p')
			cpu = (unsigned)atoi(optarg);
	}
	if (BENCH_SANITIZED)
		bench_die("bench_tls: not in a sanitizer build");
	if (reps < 1 || reps > BENCH_MAX_REPS)
		reps = 7;
	signal(SIGPIPE, SIG_IGN); /* the handshake peer's own SSL_shutdown */
	atexit(srv_kill);
	if (certs())
		bench_die("bench_tls: cannot make certificates (openssl)");
	ctx = SSL_CTX_new(TLS_client_method());
	snprintf(ca, sizeof(ca), "%s/ca.crt", dir);
	if (!ctx || SSL_CTX_load_verify_locations(ctx, ca, NULL) != 1)
		bench_die("bench_tls: no SSL_CTX");
	if (bench_pin_self((int)cpu))
		bench_die("bench_tls: cannot pin to CPU %u", cpu);
	err = srv_start((int)cpu, &port, ctx);
	if (err)
		bench_die("bench_tls: redis-server --tls-port: %s",
			  strerror(-err));
	snprintf(addr, sizeof(addr), "127.0.0.1:%u", port);
	printf("bench_tls: PING over TLS 1.3 against redis-server --tls-port "
	       "on %s, client and server pinned to CPU %u; %u reps x %.2f s "
	       "per variant\n",
	       addr, cpu, reps, secs);

	cpool_tls_config_init(&tc);
	tc.ctx = ctx;
	if (cpool_tls_new(&tc, &tls))
		bench_die("bench_tls: cpool_tls_new");
	cpool_config_init(&cfg);
	cfg.workers = 1;
	cfg.flags = CPOOL_NO_PIN; /* the worker stays on the client's CPU */
	cpool_tls_install(tls, &cfg);
	if (cpool_create(&cfg, &pool) || cpool_endpoint_add(pool, addr))
		bench_die("bench_tls: pool");
	fd = tcp_connect(port);
	ded = SSL_new(ctx);
	SSL_set_fd(ded, fd);
	if (fd < 0 || SSL_connect(ded) != 1)
		bench_die("bench_tls: dedicated connection");
	/* warm up: the pool's connection made, tickets consumed */
	for (int i = 0; i < 1000; i++) {
		if (cpool_acquire(pool, addr, &c))
			bench_die("bench_tls: acquire");
		if (ping(cpool_tls_ssl(c)))
			bench_die("bench_tls: pooled ping");
		cpool_release(c, 0);
		if (ping(ded))
			bench_die("bench_tls: dedicated ping");
	}
	for (unsigned r = 0; r < reps; r++) {
		for (int v = 0; v < V_COUNT; v++) {
			uint64_t end = bench_now_ns() + (uint64_t)(secs * 1e9);
			uint64_t c0 = cpu_ns(), n = 0;

			while (bench_now_ns() < end) {
				for (int b = 0; b < (v == V_HANDSHAKE ? 1 : 64);
				     b++, n++) {
					if (v == V_POOLED) {
						if (cpool_acquire(pool, addr, &c))
							bench_die("acquire");
						err = ping(cpool_tls_ssl(c));
						cpool_release(c, err ? CPOOL_RELEASE_CLOSE : 0);
					} else if (v == V_DEDICATED) {
						err = ping(ded);
					} else {
						err = handshake_ping(ctx, port);
					}
					if (err)
						bench_die("bench_tls: %s: %s", vname[v],
							  strerror(-err));
				}
			}
			ns[v][r] = (double)(cpu_ns() - c0) / (double)n;
		}
		r_ded[r] = ns[V_POOLED][r] / ns[V_DEDICATED][r];
		r_hs[r] = ns[V_HANDSHAKE][r] / ns[V_DEDICATED][r];
	}
	printf("== PING over TLS, 1 thread: client CPU ns per request, "
	       "medians of %u reps ==\n", reps);
	printf("%-12s %12s\n", "variant", "cpu ns/op");
	for (int v = 0; v < V_COUNT; v++) {
		double tmp[BENCH_MAX_REPS];

		memcpy(tmp, ns[v], sizeof(double) * reps);
		med[v] = median(tmp, reps);
		printf("%-12s %12.1f\n", vname[v], med[v]);
		printf("SUMMARY bench=tls_ping pool=%s threads=1 cpu_ns_per_op=%.1f\n",
		       vname[v], med[v]);
	}
	cpool_tls_stats_get(tls, &ts);
	printf("(pool: %llu handshakes, %llu resumed, %llu ticket checks)\n",
	       (unsigned long long)ts.handshakes,
	       (unsigned long long)ts.resumed,
	       (unsigned long long)ts.records_consumed);
	printf("a full handshake costs the client %.1f us of CPU over a "
	       "pooled request (%.1f x the dedicated request)\n",
	       (med[V_HANDSHAKE] - med[V_POOLED]) / 1000.0,
	       median(r_hs, reps));
	bench_goal("tls_ping_pooled_vs_dedicated", median(r_ded, reps), "<=",
		   1.10, "TLS PING client CPU/op, cpool + libcpool_tls over a "
			 "dedicated TLS connection");
	SSL_free(ded);
	close(fd);
	cpool_destroy(pool);
	cpool_tls_free(tls);
	SSL_CTX_free(ctx);
	return 0;
}
