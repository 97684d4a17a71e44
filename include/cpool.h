/* SPDX-License-Identifier: MIT */
/*
 * cpool - a multithreaded pool of persistent client connections.
 *
 * A service asks the pool for a connection to an upstream endpoint, speaks
 * its own protocol over the file descriptor and gives the connection back.
 * Every connection handed out has just passed the liveness probe (unless the
 * caller opted into probe_bypass_ms): no FIN, no RST, no pending error and no
 * stray bytes from an earlier exchange.
 *
 * Conventions, for every call below:
 *  - functions returning int return 0 (or a non-negative value where stated)
 *    or a negative errno; out-parameters are untouched on failure;
 *  - the library never prints, never aborts on runtime errors, never raises
 *    SIGPIPE and never changes signal dispositions; text goes to
 *    cfg.log_fn;
 *  - no call requires the caller to register its thread anywhere.
 *
 * Which calls may run concurrently:
 *  - everything taking a struct cpool * is MT-safe, except cpool_destroy(),
 *    which must be the last call on the pool (cpool_release() of leases
 *    still out excepted: those stay valid after destroy);
 *  - a struct cpool_conn * belongs to one thread at a time, from
 *    cpool_acquire() until cpool_release(): the calls taking it are not
 *    MT-safe on the same connection;
 *  - cpool_probe(), cpool_verdict_name(), cpool_close_reason_name(),
 *    cpool_strerror() and cpool_config_init() touch no shared state.
 *
 * Signals: no call is async-signal-safe; never call the library from a
 * signal handler. Its worker threads block every signal, so the host's
 * handlers never run on them.
 *
 * Cancellation (pthread_cancel): the only cancellation point in the library
 * is the wait of cpool_acquire() at max_conns_per_endpoint. A waiter
 * cancelled there leaves the endpoint as it found it: a cleanup handler
 * takes it out of the queue and passes on whatever a release had handed it
 * (the connection or the slot goes to the next waiter), so later releases
 * and acquires work. Everything else the library does (connects, closes,
 * probes, hooks) runs with cancellation disabled and the caller's state is
 * restored on return, so a pending cancellation is acted on at the
 * caller's next cancellation point, with the library's state whole.
 * cpool_send() and cpool_recv() are cancellation points like send(2) and
 * recv(2): cancelled there, the lease is still the caller's to release
 * (with CPOOL_RELEASE_CLOSE) from its own cleanup handler. Asynchronous
 * cancellation is not supported.
 *
 * fork(): a pool belongs to the process that created it. In a child of
 * that process every call on an inherited pool fails with -ECHILD, except
 * cpool_release() of a lease the forking thread held (it closes the
 * child's copy of the fd) and cpool_destroy() (it closes the child's copies
 * and frees the memory without waiting). The child never reads, writes,
 * shuts down or un-watches a socket of the parent's: at the fork each of
 * the child's copies is pointed at /dev/null, so the parent's connections
 * keep serving the parent and really close when the parent closes them.
 * A pool created in the child is an ordinary pool. (The library installs
 * pthread_atfork() handlers to make this so, and calls liburcu-bp's fork
 * handlers from them: a host that uses urcu-bp must not call
 * urcu_bp_before_fork() and friends itself.)
 *
 * liburcu: the library's RCU readers use the urcu-bp flavor, registered
 * and forgotten automatically, with a registry of their own. A host may
 * use liburcu itself (urcu-memb, -mb, -qsbr, -signal, or -bp) and
 * register and unregister its threads before, between and after cpool
 * calls; its grace periods never wait for the library's threads, whose
 * workers never hold a read-side section at all.
 */
#ifndef CPOOL_H
#define CPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CPOOL_VERSION_MAJOR 0
#define CPOOL_VERSION_MINOR 1
#define CPOOL_VERSION_PATCH 0

#if defined(__GNUC__)
#define CPOOL_API __attribute__((visibility("default")))
#else
#define CPOOL_API
#endif

/* Opaque handles. */
struct cpool;
struct cpool_conn;
struct cpool_endpoint; /* a referenced endpoint: cpool_endpoint_get() */

/*
 * The liveness classifier's answer (cpool_probe()). Only CPOOL_ALIVE means
 * "safe to reuse"; every other verdict is also the close reason of the
 * connection it was given for.
 */
enum cpool_verdict {
	CPOOL_ALIVE = 0,	/* recv-peek: -1 EAGAIN */
	CPOOL_PEER_CLOSED,	/* FIN received (recv-peek 0, SO_ERROR 0) */
	CPOOL_PEER_RESET,	/* ECONNRESET or EPIPE */
	CPOOL_TIMED_OUT,	/* ETIMEDOUT, EHOSTUNREACH, ENETUNREACH, ... */
	CPOOL_UNEXPECTED_DATA,	/* bytes nobody asked for are waiting */
	CPOOL_SOCKET_ERROR,	/* any other error (EBADF, ENOTCONN, ...) */
};

/* Why a connection was closed: the index into cpool_stats.closed[]. */
enum cpool_close_reason {
	CPOOL_CLOSE_PEER_CLOSED = CPOOL_PEER_CLOSED,
	CPOOL_CLOSE_PEER_RESET = CPOOL_PEER_RESET,
	CPOOL_CLOSE_TIMED_OUT = CPOOL_TIMED_OUT,
	CPOOL_CLOSE_UNEXPECTED_DATA = CPOOL_UNEXPECTED_DATA,
	CPOOL_CLOSE_SOCKET_ERROR = CPOOL_SOCKET_ERROR,
	CPOOL_CLOSE_IDLE_TIMEOUT,	/* idle longer than idle_timeout_ms */
	CPOOL_CLOSE_LIFETIME,		/* older than max_lifetime_ms */
	CPOOL_CLOSE_MAX_USES,		/* leased max_uses times */
	CPOOL_CLOSE_BY_CALLER,		/* CPOOL_RELEASE_CLOSE or broken */
	CPOOL_CLOSE_SHUTDOWN,		/* cpool_destroy() or endpoint removal */
	/*
	 * The size of cpool_stats.closed[], frozen with the v0.1 reasons so
	 * that no field of struct cpool_stats ever moves. Reasons added since
	 * are numbered from here on and counted in cpool_stats.closed_more[]
	 * at [reason - CPOOL_CLOSE_REASON_COUNT]; cpool_stats_closed() reads
	 * either. A later reason takes the next number and the next slot of
	 * closed_more[] (CPOOL_CLOSE_MORE_SLOTS reserved); a caller built
	 * before it reads 0 for it and sees every other field where it was.
	 */
	CPOOL_CLOSE_REASON_COUNT,
	/* appended in 0.2 */
	CPOOL_CLOSE_DRAINED = CPOOL_CLOSE_REASON_COUNT, /* its address left
							 * the name's set */
	CPOOL_CLOSE_REASON_END		/* every reason is below this */
};

/* Slots of cpool_stats.closed_more[]: reasons past the v0.1 ones. */
#define CPOOL_CLOSE_MORE_SLOTS 6

/* cpool_config.flags */
#define CPOOL_NONBLOCK (1u << 0) /* hand out O_NONBLOCK fds */
#define CPOOL_NO_PIN (1u << 1)	 /* do not pin worker threads to CPUs */

/* cpool_release() flags */
#define CPOOL_RELEASE_CLOSE (1u << 0) /* close instead of pooling */

/* Levels passed to cpool_config.log_fn. */
enum cpool_log_level {
	CPOOL_LOG_ERROR = 0,
	CPOOL_LOG_WARN,
	CPOOL_LOG_INFO,
	CPOOL_LOG_DEBUG,
};

/*
 * Handshake run on every new connection (never on reuse), after the TCP
 * connect and before the first lease, with @fd in the mode it will be handed
 * out in. Return 0 to accept the connection; a negative errno fails the
 * acquire with that error, a positive value with -ECONNABORTED; either way the
 * connection is closed. On a blocking fd, SO_RCVTIMEO/SO_SNDTIMEO bound its
 * I/O by what is left of connect_timeout_ms, and are cleared afterwards.
 */
typedef int cpool_connect_fn(int fd, const char *address, void *user_data);

/* Receives every message the library has; @msg is one line, no newline. */
typedef void cpool_log_fn(void *user_data, int level, const char *msg);

/* ops->close flags: do no I/O on the fd (see struct cpool_conn_ops). */
#define CPOOL_CLOSE_QUIET (1u << 0)

/*
 * Connection ops: the state a client library keeps for a connection (a TLS
 * session, a redisContext, a PGconn) lives as long as the pooled connection
 * and has a say in its liveness. Installed pool-wide with cfg.conn_ops; any
 * op may be NULL; every op gets cfg.conn_ops_arg as @arg. The struct is
 * copied at cpool_create() (like the config), and extensible like it: set
 * size to sizeof(struct cpool_conn_ops); ops past a smaller size are NULL.
 *
 * Inside any op a hook may call cpool_conn_fd(), cpool_conn_ctx(),
 * cpool_conn_set_ctx(), cpool_conn_address(), cpool_conn_reused() and
 * cpool_probe() on its connection, and nothing that takes the pool
 * (acquire, release, endpoint add or remove, shutdown, destroy). No pool
 * lock is held while an op runs; ops run with cancellation disabled.
 *
 * dial:    instead of the pool's own socket + connect, for libraries that
 *          open their own socket (libpq). Returns a connected fd or -errno
 *          within @timeout_ms (what is left of connect_timeout_ms);
 *          @address is the endpoint's string, @sa the address the pool
 *          resolved; *@ctx is the connection's context slot
 *          (cpool_conn_ctx() afterwards). The pool sets its TCP options
 *          (keepalive, user timeout, no-delay) on a TCP fd and leaves its
 *          O_NONBLOCK mode as dial made it; on a nonblocking one, -EAGAIN
 *          from cpool_send()/cpool_recv() does not mark it broken.
 * open:    once per new connection, after connect (or dial) and
 *          on_connect, before the first lease: a handshake, AUTH.
 *          @timeout_ms is what is left of connect_timeout_ms; on a
 *          blocking fd SO_RCVTIMEO/SO_SNDTIMEO bound its I/O by it (and
 *          are cleared afterwards). May cpool_conn_set_ctx(). Returns 0,
 *          or -errno: the acquire fails with it (a positive value with
 *          -ECONNABORTED) and the connection is closed; a failing open
 *          frees what it made itself. Its failures count as connect
 *          failures (backoff included).
 * check:   the protocol layer's verdict on an idle connection, with the
 *          connection owned exclusively (never during a lease, never on
 *          two threads) and its fd set O_NONBLOCK for the call (the pool
 *          restores the handout mode). Called when bytes wait on an idle
 *          connection, at checkout (the probe said so) and in the worker
 *          (its watch fired), with @tcp CPOOL_UNEXPECTED_DATA; and at
 *          checkout on a connection idle at least cfg.check_idle_ms, with
 *          @tcp CPOOL_ALIVE (an application ping). Must not block. Its
 *          verdict stands: anything but CPOOL_ALIVE closes the connection
 *          with that reason (a value out of range counts as
 *          CPOOL_SOCKET_ERROR). An alive verdict while the same number of
 *          bytes still waits at the socket two worker looks in a row
 *          closes it as unexpected_data: no spinning on bytes nobody takes.
 * release: at cpool_release(c, 0) of a connection that would otherwise be
 *          pooled (not broken, below max_uses and max_lifetime_ms, its
 *          endpoint not closing), on the releasing thread. May do bounded
 *          cleanup I/O (a ROLLBACK). Nonzero refuses reuse: the connection
 *          is closed, counted by_caller.
 * close:   balances the op that made the state, exactly once per
 *          connection in each process that holds it: once dial succeeded
 *          (with a dial), or else once open succeeded (with an open), or
 *          else once the connect succeeded. Runs before the fd is closed,
 *          on whichever thread closes the connection (a worker, a
 *          releasing caller, a remover, destroy), never concurrently with
 *          a lease or a check. The fd number stays valid until it returns.
 *          @flags CPOOL_CLOSE_QUIET (in a fork child, and whenever the peer
 *          is known gone: peer_closed, peer_reset, timed_out,
 *          socket_error) means no byte may reach the peer and no call may
 *          block on it: the pool has pointed the fd number at /dev/null
 *          already, so a library that insists on a goodbye (SSL_shutdown,
 *          PQfinish) sends it to nobody. Returns 1 if it closed the fd
 *          itself, 0 for the pool to close it. A connection whose open
 *          fails after a successful dial is closed with
 *          CPOOL_CLOSE_SOCKET_ERROR, quiet.
 *
 * fork: a fork() while a dial or a non-quiet close runs may leave the child
 * a copy of that one socket that was not pointed at /dev/null; the child
 * never uses it, and it closes at the child's exit or exec (O_CLOEXEC).
 * In a fork child, cpool_destroy() runs close (quiet) on the idle
 * connections it inherited; connections that other threads of the parent
 * held leased, or were in the middle of opening or checking, are closed
 * without it.
 */
struct cpool_conn_ops {
	size_t size; /* sizeof(struct cpool_conn_ops) */
	int (*dial)(const char *address, const struct sockaddr *sa,
		    socklen_t salen, unsigned timeout_ms, void **ctx, void *arg);
	int (*open)(struct cpool_conn *c, unsigned timeout_ms, void *arg);
	enum cpool_verdict (*check)(struct cpool_conn *c,
				    enum cpool_verdict tcp, void *arg);
	int (*release)(struct cpool_conn *c, void *arg);
	int (*close)(struct cpool_conn *c, enum cpool_close_reason reason,
		     unsigned flags, void *arg);
};

/*
 * Pool configuration. Fill it with cpool_config_init(), then change fields.
 * Values are taken literally; the comment gives unit, default and what 0
 * means. A caller compiled against an older, smaller struct keeps working:
 * fields past its size take their defaults (cfg->size says how much the
 * caller knows). Bytes past the library's own struct must be zero.
 */
struct cpool_config {
	size_t size;			/* sizeof(struct cpool_config) */
	unsigned workers;		/* shards; 0 = online CPUs; max 1024 */
	unsigned max_conns_per_endpoint; /* process-wide cap; 64; 0 invalid */
	unsigned min_idle_per_endpoint;	/* kept open idle; 0; <= max */
	unsigned connect_timeout_ms;	/* connect + on_connect; 1000; 0 invalid */
	unsigned acquire_timeout_ms;	/* wait for a slot; 1000; 0 = no wait */
	unsigned idle_timeout_ms;	/* close idle longer; 60000; 0 = never */
	unsigned max_lifetime_ms;	/* close older, -0..2.5 %; 0 = never */
	unsigned max_uses;		/* close after N leases; 0 = unlimited */
	unsigned probe_bypass_ms;	/* skip probe if released < this ago; 0 */
	unsigned keepalive_idle_s;	/* TCP_KEEPIDLE; 30; 0 = keepalive off */
	unsigned keepalive_interval_s;	/* TCP_KEEPINTVL; 5 */
	unsigned keepalive_count;	/* TCP_KEEPCNT; 3 */
	unsigned user_timeout_ms;	/* TCP_USER_TIMEOUT; 0 = derived */
	unsigned flags;			/* CPOOL_NONBLOCK | CPOOL_NO_PIN */
	cpool_connect_fn *on_connect;	/* NULL = none */
	cpool_log_fn *log_fn;		/* NULL = silent */
	void *user_data;		/* passed to the callbacks */
	/* appended after v0.1 (0.2): stateful connections */
	const struct cpool_conn_ops *conn_ops; /* NULL = plain sockets; copied */
	void *conn_ops_arg;		/* passed as @arg to every op */
	unsigned check_idle_ms;		/* ops->check at checkout when idle
					 * this long; 0 = only when bytes
					 * wait; needs ops->check */
	/* appended in 0.2: upstream sets (see cpool_endpoint_add()) */
	const char *dns_servers;	/* "ip[:port],[v6][:port],..."; NULL =
					 * the system's; copied at create */
	unsigned dns_min_ttl_ms;	/* floor on refresh (and for TTL 0);
					 * 1000; 0 invalid */
	unsigned dns_max_ttl_ms;	/* ceiling on refresh; 30000; >= min */
	unsigned happy_eyeballs_ms;	/* delay before the other family; 250;
					 * 0 = one address at a time */
	unsigned eject_after_failures;	/* consecutive connect failures that
					 * eject an address; 5; 0 = never */
	unsigned max_ejection_percent;	/* most of a set ejected at once; 50;
					 * <= 100 */
};

/*
 * Counters (monotonic) and gauges of the whole pool or of one endpoint.
 * open == idle + leased whenever the pool is quiet.
 */
struct cpool_stats {
	size_t size;		 /* set by the caller: sizeof(struct cpool_stats) */
	uint64_t acquires;	 /* successful cpool_acquire() calls */
	uint64_t reuses;	 /* ... served from the idle set */
	uint64_t connects;	 /* connections opened (connect + on_connect ok) */
	uint64_t connect_failures; /* connect or on_connect failures */
	uint64_t steals;	 /* idle connections taken from another shard */
	uint64_t waits;		 /* acquires that blocked at least once */
	uint64_t timeouts;	 /* acquires that returned -ETIMEDOUT */
	uint64_t closed[CPOOL_CLOSE_REASON_COUNT]; /* by reason; [0] unused */
	uint32_t open;		 /* connections open now */
	uint32_t idle;		 /* ... of which idle in the pool */
	uint32_t leased;	 /* ... of which leased to callers */
	/* appended after v0.1 (append-only; callers set size) */
	uint64_t fail_fasts;	 /* acquires refused at once during backoff */
	uint64_t backoffs;	 /* connect failures that started backoff */
	uint64_t prewarms;	 /* connections opened by the workers */
	/* appended in 0.2 */
	uint64_t closed_more[CPOOL_CLOSE_MORE_SLOTS]; /* reasons from
				  * CPOOL_CLOSE_REASON_COUNT on: cpool_stats_closed() */
	uint64_t ejections;	 /* addresses ejected after failing */
	uint64_t dns_refreshes;	 /* answers that refreshed a name's set */
	uint64_t dns_failures;	 /* refreshes that failed (set kept) */
	uint32_t addresses;	 /* addresses in the endpoints' sets now */
	uint32_t connecting;	 /* connects in flight now */
};

/* Per-address state bits (cpool_addr_stats.state). */
#define CPOOL_ADDR_BACKOFF (1u << 0)  /* a connect failed: no new ones yet */
#define CPOOL_ADDR_EJECTED (1u << 1)  /* out of the set for a while */
#define CPOOL_ADDR_DRAINING (1u << 2) /* gone from DNS, connections open */

/*
 * One address of an endpoint's set (cpool_stats_addresses()). Counters
 * start when the address enters the set; when it leaves and its last
 * connection closes, it is gone from here and lives on in the endpoint's
 * totals only. Extensible like struct cpool_stats: callers set size.
 */
struct cpool_addr_stats {
	size_t size;		 /* set by the caller */
	char address[64];	 /* "10.0.0.5:6379", "[::1]:6379", "unix:..." */
	unsigned state;		 /* CPOOL_ADDR_* */
	uint32_t open;		 /* connections open now */
	uint32_t leased;	 /* ... of which leased */
	uint32_t connecting;	 /* connects in flight */
	uint32_t failures;	 /* consecutive connect failures now */
	uint64_t connects;
	uint64_t connect_failures;
	uint64_t ejections;	 /* times ejected */
	uint64_t ejected_ms;	 /* ejected: how much longer; else 0 */
};

/**
 * cpool_config_init() - Fill a configuration with the defaults.
 * @cfg: caller's struct; every field is written, cfg->size included
 *
 * Context: any thread; never blocks.
 */
CPOOL_API void cpool_config_init(struct cpool_config *cfg);

/**
 * cpool_create() - Create a pool.
 * @cfg: configuration, or NULL for the defaults; copied, not kept
 * @out: the pool on success; untouched on failure
 *
 * Validates @cfg (an invalid field is named through cfg->log_fn), derives
 * user_timeout_ms when it is 0 and keepalive is on, and sets up one shard
 * per worker. The pool starts with no endpoint.
 *
 * Context: any thread; does not block on the network.
 * Return: 0; -EINVAL NULL @out, cfg->size too small, a field out of range,
 *         unknown bits past the struct, conn_ops->size too small or unknown
 *         bits past it, check_idle_ms without conn_ops->check; -ENOMEM;
 *         -EMFILE/-ENFILE (the pool's epoll, eventfd and /dev/null fds).
 */
CPOOL_API int cpool_create(const struct cpool_config *cfg, struct cpool **out);

/**
 * cpool_destroy() - Shut a pool down and give it up.
 * @pool: pool from cpool_create(); NULL is ignored
 *
 * Runs cpool_shutdown() if it has not run yet, then drops the caller's hold
 * on the pool. Connections still leased stay valid: their cpool_release()
 * closes them, and the last one frees the pool. Acquires already running
 * when destroy starts return -ESHUTDOWN (or the lease they got); no call
 * other than cpool_release() of an outstanding lease may start after it.
 *
 * In a fork child, on a pool inherited from the parent (see fork() above):
 * closes the child's copies of the pool's fds (they point at /dev/null),
 * frees the memory, and returns without waiting for anything; leases the
 * child still holds stay valid until their cpool_release().
 *
 * Context: call once, not from a cpool callback; blocks for the workers to
 *          stop, an RCU grace period and the closes.
 */
CPOOL_API void cpool_destroy(struct cpool *pool);

/**
 * cpool_shutdown() - Stop a pool, keeping the object valid.
 * @pool: pool from cpool_create(); NULL is ignored
 *
 * Stops and joins the workers, closes every idle connection (reason
 * CPOOL_CLOSE_SHUTDOWN), removes every endpoint and wakes waiting acquires
 * with -ESHUTDOWN. From then on every call that takes @pool fails with
 * -ESHUTDOWN (stats stay readable for the whole pool); leases still out are
 * closed at release. Use it when other threads may still call the pool:
 * shut down, join them, then cpool_destroy(). Idempotent. Does nothing on
 * a pool inherited across fork() (cpool_destroy() it).
 *
 * Context: MT-safe, not from a cpool callback; blocks like cpool_destroy().
 */
CPOOL_API void cpool_shutdown(struct cpool *pool);

/**
 * cpool_endpoint_add() - Register an upstream endpoint.
 * @pool:    pool
 * @address: "host:port", "[v6addr]:port", "unix:/path" or "unix:@abstract"
 *
 * A host name is an upstream set: every A and AAAA record it resolves to
 * (c-ares, cfg.dns_servers), kept current by the workers, which resolve it
 * again at its TTL clamped to [dns_min_ttl_ms, dns_max_ttl_ms]; a failed
 * refresh keeps the last good set and retries after dns_min_ttl_ms,
 * doubling up to dns_max_ttl_ms. An address that appears gets new
 * connections; one that disappears gets no new lease, its idle connections
 * close at once and its leased ones at release (CPOOL_CLOSE_DRAINED).
 * New connections go to the less loaded of two random healthy addresses
 * (leased plus connecting); idle ones are reused whatever their address.
 * After eject_after_failures consecutive connect failures an address is
 * ejected for 1 s times its consecutive ejections (at most 30 s), never
 * more than max_ejection_percent of the set; when no address is healthy
 * every one is tried. With both families in the set, connects race them
 * (Happy Eyeballs: the family of the first address first, the other after
 * happy_eyeballs_ms), within connect_timeout_ms. max_conns_per_endpoint
 * bounds the whole set. A numeric address or unix path is a set of one
 * and never touches the resolver. cpool_acquire() names the endpoint by
 * the same string, byte for byte.
 *
 * Context: MT-safe; blocks up to 5 s for the first answer when @address
 *          has a name (on the caller's thread; later ones never are).
 * Return: 0; -EINVAL NULL argument, malformed address, port 0 or > 65535,
 *         unix path too long; -EEXIST already added; -EHOSTUNREACH the name
 *         does not exist or has no address; -EAGAIN or -ETIMEDOUT no
 *         resolver answered; -ESHUTDOWN pool being destroyed; -ECHILD in a
 *         fork child; -ENOMEM.
 */
CPOOL_API int cpool_endpoint_add(struct cpool *pool, const char *address);

/**
 * cpool_endpoint_remove() - Stop using an endpoint.
 * @pool:    pool
 * @address: as given to cpool_endpoint_add()
 *
 * New acquires fail with -ENOENT at once; idle connections are closed now
 * and leased ones at release (reason CPOOL_CLOSE_SHUTDOWN); waiting acquires
 * wake with -ENOENT. The endpoint's memory is freed after an RCU grace period
 * and its last connection. The same address may be added again at once.
 *
 * Context: MT-safe; blocks for the closes and an RCU grace period.
 * Return: 0; -EINVAL NULL argument; -ENOENT unknown address; -ESHUTDOWN;
 *         -ECHILD in a fork child.
 */
CPOOL_API int cpool_endpoint_remove(struct cpool *pool, const char *address);

/**
 * cpool_endpoint_get() - A referenced handle on an endpoint.
 * @pool:    pool
 * @address: as given to cpool_endpoint_add()
 * @out:     the handle on success; untouched on failure
 *
 * For callers that acquire the same endpoint very often: cpool_acquire_ep()
 * does no lookup. The handle keeps the endpoint's memory (not the endpoint)
 * alive until cpool_endpoint_put(); after a removal or shutdown it is a
 * valid object that refuses acquires.
 *
 * Context: MT-safe; never blocks.
 * Return: 0; -EINVAL NULL argument; -ENOENT unknown address; -ESHUTDOWN;
 *         -ECHILD in a fork child.
 */
CPOOL_API int cpool_endpoint_get(struct cpool *pool, const char *address,
				 struct cpool_endpoint **out);

/**
 * cpool_endpoint_put() - Drop a handle from cpool_endpoint_get().
 * @ep: handle; NULL is ignored
 *
 * Leases acquired through it stay valid. The last reference frees the
 * endpoint's memory; a handle may outlive cpool_destroy() of its pool.
 *
 * Context: MT-safe; never blocks.
 */
CPOOL_API void cpool_endpoint_put(struct cpool_endpoint *ep);

/**
 * cpool_acquire_ep() - cpool_acquire() through a handle.
 * @ep:  handle from cpool_endpoint_get()
 * @out: the lease on success; untouched on failure
 *
 * As cpool_acquire() without the lookup. A handle of a removed endpoint
 * returns -ENOENT for good, also after the same address is added again
 * (that is a new endpoint, with handles of its own).
 *
 * Context: as cpool_acquire().
 * Return: as cpool_acquire(); -ENOENT the endpoint was removed.
 */
CPOOL_API int cpool_acquire_ep(struct cpool_endpoint *ep,
			       struct cpool_conn **out);

/**
 * cpool_acquire() - Lease a live connection to an endpoint.
 * @pool:    pool from cpool_create()
 * @address: an address given to cpool_endpoint_add()
 * @out:     the lease on success; untouched on failure
 *
 * Reuses the most recently released idle connection of the caller's shard
 * after it passes the liveness probe (cpool_probe(); skipped when released
 * less than probe_bypass_ms ago); dead, dirty, idle-expired or too old ones
 * are closed with their reason and the next one is tried. Otherwise steals an
 * idle connection from another shard, or opens a new one if the endpoint is
 * below max_conns_per_endpoint, or waits up to acquire_timeout_ms for a
 * release to hand it a connection or a slot. A waiter never times out while
 * a connection it could have had sits idle: it looks once more at its
 * deadline. Every lease ends in exactly one cpool_release().
 *
 * Failures of this host rather than of the endpoint (-EMFILE, -ENFILE,
 * -ENOMEM, -ENOBUFS, and -ENOSPC when fs.epoll.max_user_watches is
 * reached) are returned as they are and never start the endpoint's
 * connect backoff: the next acquire tries again.
 *
 * Context: MT-safe. Blocks for at most acquire_timeout_ms waiting for a slot,
 *          plus connect_timeout_ms when it opens a connection. The wait for
 *          a slot is a cancellation point (see Cancellation above).
 * Return: 0; -EINVAL NULL argument; -ENOENT unknown or removed endpoint;
 *         -ETIMEDOUT no slot in time (or the connect timed out);
 *         -ESHUTDOWN pool being destroyed; -ECHILD the pool was inherited
 *         across fork(); -EMFILE/-ENFILE no fd; -ENOSPC no epoll watch
 *         left; -ENOMEM; the connect error (-ECONNREFUSED, -EHOSTUNREACH,
 *         ...); the on_connect error (-ECONNABORTED for a positive return).
 */
CPOOL_API int cpool_acquire(struct cpool *pool, const char *address,
			    struct cpool_conn **out);

/**
 * cpool_release() - End a lease.
 * @c:     a connection from cpool_acquire(); NULL is ignored
 * @flags: 0 when the exchange completed and the connection is clean;
 *         CPOOL_RELEASE_CLOSE to close it (after an error, a timeout, a
 *         cancelled request: anything that may leave bytes in flight)
 *
 * Pools the connection again only when @flags is 0, no cpool_send() or
 * cpool_recv() error marked it broken, and it is below max_uses and
 * max_lifetime_ms; closes it otherwise, with the reason counted. Hands it
 * (or its slot) to one waiting acquire, if any. After cpool_destroy() or
 * the endpoint's removal it closes the connection. Releasing a connection
 * that is not leased (a double release noticed while the object is still
 * valid) is logged and ignored. @c is invalid afterwards.
 *
 * Context: MT-safe (any thread may release); never blocks on the network;
 *          may block on close().
 */
CPOOL_API void cpool_release(struct cpool_conn *c, unsigned flags);

/**
 * cpool_conn_fd() - The socket of a leased connection.
 * @c: leased connection
 *
 * Blocking unless the pool has CPOOL_NONBLOCK. Do not close it, change its
 * O_NONBLOCK flag or keep it past cpool_release().
 *
 * Context: the lease holder.
 * Return: the fd; -EINVAL @c is NULL.
 */
CPOOL_API int cpool_conn_fd(const struct cpool_conn *c);

/**
 * cpool_conn_reused() - Whether a lease came from the idle set.
 * @c: leased connection
 *
 * A request that failed on its first write over a reused connection may be
 * retried once on a fresh one, if it is idempotent: the peer may have closed
 * just after the probe.
 *
 * Context: the lease holder.
 * Return: true if reused; false if freshly connected or @c is NULL.
 */
CPOOL_API bool cpool_conn_reused(const struct cpool_conn *c);

/**
 * cpool_conn_ctx() - The connection's context (a client library's state).
 * @c: leased connection, or the connection an op was called for
 *
 * Context: the lease holder, or inside an op on @c.
 * Return: what cpool_conn_set_ctx() or ops->dial stored; NULL until then,
 *         or if @c is NULL.
 */
CPOOL_API void *cpool_conn_ctx(const struct cpool_conn *c);

/**
 * cpool_conn_set_ctx() - Store the connection's context.
 * @c:   leased connection, or the connection an op was called for
 * @ctx: any pointer; the pool never dereferences it (ops->close frees it)
 *
 * Context: the lease holder, or inside an op on @c. NULL @c is ignored.
 */
CPOOL_API void cpool_conn_set_ctx(struct cpool_conn *c, void *ctx);

/**
 * cpool_conn_address() - The endpoint's address string.
 * @c: leased connection, or the connection an op was called for
 *
 * Context: the lease holder, or inside an op on @c.
 * Return: the string given to cpool_endpoint_add(), valid while @c is;
 *         NULL if @c is NULL.
 */
CPOOL_API const char *cpool_conn_address(const struct cpool_conn *c);

/**
 * cpool_send() - Send a whole buffer.
 * @c:   leased connection
 * @buf: bytes
 * @len: their count
 *
 * Loops over partial sends and EINTR, always with MSG_NOSIGNAL. Any error
 * marks the connection broken, so that cpool_release() closes it; -EAGAIN
 * on a CPOOL_NONBLOCK connection does not. On a CPOOL_NONBLOCK connection
 * whose send buffer fills after some bytes went out, returns that count.
 *
 * Context: the lease holder; blocks like send() in the fd's mode.
 * Return: @len (or the partial count above); -EINVAL bad argument or not
 *         leased; -EPIPE, -ECONNRESET, -ETIMEDOUT, ... (never SIGPIPE);
 *         -EAGAIN.
 */
CPOOL_API ssize_t cpool_send(struct cpool_conn *c, const void *buf,
			     size_t len);

/**
 * cpool_recv() - Receive like recv(2).
 * @c:   leased connection
 * @buf: destination
 * @len: its size
 *
 * One recv() call, retried on EINTR. A return of 0 with @len > 0 (peer
 * closed) or an error marks the connection broken; -EAGAIN on a
 * CPOOL_NONBLOCK connection does not.
 *
 * Context: the lease holder; blocks like recv() in the fd's mode.
 * Return: bytes received; 0 peer closed (or @len 0); -EINVAL bad argument
 *         or not leased; -ECONNRESET, -ETIMEDOUT, ...; -EAGAIN.
 */
CPOOL_API ssize_t cpool_recv(struct cpool_conn *c, void *buf, size_t len);

/**
 * cpool_probe() - Classify an idle socket: alive, or dead and why.
 * @fd: any connected stream socket
 *
 * One recv(MSG_PEEK | MSG_DONTWAIT) of one byte, retried on EINTR; only
 * when it returns 0 (FIN, or an error an earlier read consumed), one
 * getsockopt(SO_ERROR). errno is read only after a call that returned -1,
 * so a stale errno never changes the verdict; errno is preserved. Consumes
 * no data, but reads (and so clears) a pending socket error.
 *
 * Context: any thread; never blocks; not a cancellation point.
 * Return: the verdict.
 */
CPOOL_API enum cpool_verdict cpool_probe(int fd);

/**
 * cpool_verdict_name() - "alive", "peer_closed", "peer_reset", "timed_out",
 * "unexpected_data", "socket_error"; "unknown" for anything else.
 * @v: verdict
 */
CPOOL_API const char *cpool_verdict_name(enum cpool_verdict v);

/**
 * cpool_close_reason_name() - The verdict names for the first five reasons,
 * then "idle_timeout", "lifetime", "max_uses", "by_caller", "shutdown",
 * "drained"; "unknown" for anything else.
 * @r: reason
 */
CPOOL_API const char *cpool_close_reason_name(enum cpool_close_reason r);

/**
 * cpool_stats_get() - Read counters and gauges.
 * @pool:    pool
 * @address: an endpoint's address, or NULL for the whole pool (endpoints
 *           removed since creation included in the counters)
 * @out:     caller sets out->size; at most that many bytes are written
 *
 * Counters are read without stopping the pool: each is exact, the set is
 * not a snapshot of one instant while calls run, except that open, connects
 * and closed[] of an endpoint agree (open = connects - closes of one
 * moment): a read that shows nothing open counts every close.
 *
 * Context: MT-safe; never blocks on the network.
 * Return: 0; -EINVAL NULL argument or out->size too small; -ENOENT unknown
 *         address; -ECHILD in a fork child.
 */
CPOOL_API int cpool_stats_get(struct cpool *pool, const char *address,
			      struct cpool_stats *out);

/**
 * cpool_stats_format() - Counters and gauges as Prometheus text.
 * @pool: pool
 * @buf:  destination, NUL-terminated on success
 * @len:  its size
 *
 * Writes the text exposition format (0.0.4): metric families cpool_*_total
 * (counters) and cpool_{open,idle,leased}_connections (gauges), each once
 * for the whole pool (no label) and once per endpoint (endpoint="address"),
 * and cpool_closed_total with a reason="..." label (cpool_close_reason_name()).
 * Each address of an endpoint's set has cpool_address_* series labelled
 * endpoint="...",address="..." (open, leased and connecting connections,
 * connects, connect failures, ejections, consecutive failures, and state
 * 0 healthy, 1 backoff, 2 ejected, 4 draining as a bit set); an address
 * gone from the set leaves them with its last connection (its counts stay
 * in the endpoint's totals), so their number follows the sets.
 *
 * Context: MT-safe; never blocks on the network.
 * Return: the length written, without the NUL; -EINVAL NULL @pool, or NULL
 *         @buf with @len > 0; -ENOSPC @buf too small; -ECHILD in a fork
 *         child; -ENOMEM.
 */
CPOOL_API int cpool_stats_format(struct cpool *pool, char *buf, size_t len);

/**
 * cpool_stats_closed() - Closes of one reason from a cpool_stats_get() read.
 * @s: stats read with s->size as the caller set it
 * @r: any reason, old or appended
 *
 * Return: closed[r], closed_more[r - CPOOL_CLOSE_REASON_COUNT], or 0 for a
 *         reason past what @s->size holds or unknown.
 */
CPOOL_API uint64_t cpool_stats_closed(const struct cpool_stats *s,
				      enum cpool_close_reason r);

/**
 * cpool_stats_addresses() - Per-address state and counters of an endpoint.
 * @pool:    pool
 * @address: an endpoint's address
 * @out:     array of @n entries, each with size set by the caller (the
 *           first entry's size is used for all)
 * @n:       entries in @out (0 to count only)
 * @count:   the number of addresses the endpoint has now (also those
 *           draining), which may exceed @n
 *
 * The endpoint's cpool_stats_get() is the sum of these plus what addresses
 * gone since have left in its totals.
 *
 * Context: MT-safe; never blocks on the network.
 * Return: 0; -EINVAL NULL @pool, @address or @count, NULL @out with @n > 0,
 *         size too small; -ENOENT unknown address; -ECHILD in a fork child.
 */
CPOOL_API int cpool_stats_addresses(struct cpool *pool, const char *address,
				    struct cpool_addr_stats *out, unsigned n,
				    unsigned *count);

/**
 * cpool_strerror() - Text for an error code.
 * @err: a negative errno as the calls above return it (a positive errno
 *       works too)
 *
 * Context: any thread.
 * Return: a static string; "Unknown error" for codes it does not know.
 */
CPOOL_API const char *cpool_strerror(int err);

/**
 * cpool_memory_get() - Bytes the library holds from its allocator.
 * @bytes: the count on success
 *
 * All pools of the process together: jemalloc's own statistics
 * (stats.arenas.<i>.small.allocated + large.allocated, after an epoch
 * refresh) for the arenas cpool created, one per shard index. In sanitizer
 * builds, where the funnel uses libc, the funnel's own count.
 *
 * Context: MT-safe; never blocks on the network.
 * Return: 0; -EINVAL @bytes is NULL; -EIO jemalloc refused the query.
 */
CPOOL_API int cpool_memory_get(size_t *bytes);

#ifdef __cplusplus
}
#endif

#endif /* CPOOL_H */
