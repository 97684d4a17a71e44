/* SPDX-License-Identifier: MIT */
/*
 * A real redis-server speaking TLS only (--port 0 --tls-port P), for the
 * TLS adapter's tests, its bench and the soak.
 *
 * tlssrv_start() makes a CA and a server certificate (SAN IP:127.0.0.1 and
 * DNS:localhost) with the openssl command in a directory, then runs the
 * server on a free port below the ephemeral range (see realsrv.h for why)
 * and waits until a TLS connection to it answers INFO with the child's own
 * pid: polling an observable state with a deadline, never a sleep. The
 * server is stopped by pid; children die with the thread that started them
 * (PR_SET_PDEATHSIG) and at exit.
 *
 * Self-contained (libssl, libcrypto, libc): the bench links it as it is.
 */
#ifndef CPOOL_TESTS_TLSSRV_H
#define CPOOL_TESTS_TLSSRV_H

#include <openssl/ssl.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct tlssrv {
	pid_t pid;		/* -1 while stopped */
	int port;		/* the TLS port */
	char dir[256];		/* certificates, keys, the server's cwd */
	char ca_file[300];	/* dir/ca.crt: what clients trust */
	char address[32];	/* "127.0.0.1:port", for the pool */
	bool own_dir;		/* made by tlssrv_start(): removed by stop */
};

/* A blocking TLS client connection (admin, readiness, the bench's limit). */
struct tlssrv_client {
	int fd;
	SSL *ssl;
};

/* Whether redis-server and openssl are in PATH. */
bool tlssrv_available(void);

/*
 * Makes the certificates in @dir (NULL: a new mkdtemp directory under
 * /tmp, removed by tlssrv_stop()), starts the server and waits (10 s) until
 * it answers. Returns 0 or -errno (-ENOENT: no binary); on failure nothing
 * runs.
 */
int tlssrv_start(struct tlssrv *s, const char *dir);

/* Sends @sig, waits for the exit (SIGKILL after 10 s); the server's
 * connections are closed by the kernel when it returns. Keeps the
 * directory. Returns 0 or -errno. */
int tlssrv_kill(struct tlssrv *s, int sig);

/* Starts the stopped server again on the same port, same certificates. */
int tlssrv_start_again(struct tlssrv *s);

/* tlssrv_kill(@sig), then tlssrv_start_again(). */
int tlssrv_restart(struct tlssrv *s, int sig);

/* SIGTERM and wait, then removes the directory if tlssrv_start made it. */
void tlssrv_stop(struct tlssrv *s);

/* A client SSL_CTX that trusts s->ca_file and verifies the peer; NULL on
 * failure. The caller frees it (SSL_CTX_free). */
SSL_CTX *tlssrv_client_ctx(const struct tlssrv *s);

/* Connects a blocking TLS client (verified as 127.0.0.1) with 2 s socket
 * timeouts. Returns 0 or -errno. */
int tlssrv_client_open(const struct tlssrv *s, SSL_CTX *ctx,
		       struct tlssrv_client *cl);
void tlssrv_client_close(struct tlssrv_client *cl);

/*
 * Writes @req (a complete RESP or inline command) on @ssl and reads one
 * reply into @out (NUL-terminated): a simple string, error or integer
 * line with its CRLF, or a bulk string's payload. Returns the reply's
 * length, or -errno (-EPROTO: TLS error or malformed reply).
 */
int tlssrv_cmd(SSL *ssl, const char *req, char *out, size_t len);

#endif /* CPOOL_TESTS_TLSSRV_H */
