/* SPDX-License-Identifier: MIT */
/*
 * Endpoints: address parsing and resolution, the RCU table keyed by the
 * address string, references and teardown, connect backoff, and opening
 * and closing an endpoint's connections (with their accounting).
 */
#ifndef CPOOL_ENDPOINT_H
#define CPOOL_ENDPOINT_H

#include "core.h"

#include <stdint.h>
#include <string.h>
#include <sys/socket.h>

#include "addrset.h"
#include "admit.h"
#include "conn.h"
#include "shard.h"

/* Longest address string accepted. */
#define CPOOL_ADDRESS_MAX 1024

/*
 * Splits "host:port", "[v6]:port", "unix:/path" or "unix:@abstract":
 * returns 0 with @out filled for a numeric address or a unix path,
 * CPOOL_ADDR_NAME with the name in @host (CPOOL_ADDRESS_MAX + 1 bytes) and
 * *@port for a host name, or -EINVAL for a malformed address.
 */
#define CPOOL_ADDR_NAME 1
int cpool__addr_split(const char *address, struct cpool_addr *out, char *host,
		      unsigned short *port);

/*
 * cpool__addr_split(), and a name resolved to its first address (the
 * resolver's error: -EHOSTUNREACH, -EAGAIN, -ETIMEDOUT, -ENOMEM). Names
 * never reach the resolver in fuzzing builds (-EHOSTUNREACH).
 */
int cpool__addr_parse(const char *address, struct cpool_addr *out);

/*
 * An endpoint. References: the table's (from add until the grace period
 * after its removal), one per open connection (from its socket until its
 * memory is freed), one per list handed to a worker, and short-lived ones
 * taken by a caller that keeps it outside a read-side section. The last
 * one frees it (cpool__ep_put()), never inside a read-side section's
 * reach: the table's reference goes only after a grace period.
 */
struct cpool_endpoint {
	/* read-mostly: the acquire/release fast paths */
	struct cds_lfht_node node;
	struct cpool *pool;
	struct cpool_idle *idle; /* [pool->nshards] */
	size_t keylen;
	const char *key;	 /* the address string, as added */
	unsigned ndraining;	 /* gone addresses with connections open */
	int dead;		 /* removed or shut down: the handle's -errno */

	struct cpool_admit admit; /* its own line: gate, slots, waiters */

	/* slow paths */
	unsigned refs CPOOL_ALIGNED;
	int64_t leased_adj;	 /* leases not counted in an idle list */
	struct cpool_ep_counters ctr;
	struct cpool_aset set;	 /* where its connections go (addrset.h) */
	struct cpool_conn_set conns;
	struct cds_list_head all; /* pool->endpoints, under pool->ep_lock */
	struct cds_list_head close_link; /* a remover's or shutdown's list */
	size_t alloc_size;
	/* a name's refresh (names.c; names_lock unless said otherwise) */
	struct cds_list_head name_link;	 /* pool->names, while named */
	char *host;		 /* the name, or NULL: a set of one */
	unsigned short port;
	bool dns_listed;	 /* in pool->names */
	bool dns_inflight;	 /* a query runs (worker 0's) */
	uint64_t dns_next_ns;	 /* next refresh due */
	unsigned dns_retry_ms;	 /* after a failure: min_ttl, doubling */
};

static inline uint64_t
cpool__hash(const char *s, size_t len, uint64_t seed)
{
	uint64_t h = seed ^ (len * 0x9e3779b97f4a7c15ull), w = 0;
	size_t n = len;

	for (; n >= 8; s += 8, n -= 8) {
		memcpy(&w, s, 8);
		h = (h ^ w) * 0xff51afd7ed558ccdull;
		h ^= h >> 32;
	}
	if (n && len >= 8) { /* the last 8 bytes, overlapping */
		memcpy(&w, s + n - 8, 8);
	} else {
		for (w = 0; n; n--)
			w = (w << 8) | (unsigned char)s[n - 1];
	}
	h = (h ^ w) * 0xc4ceb9fe1a85ec53ull;
	return h ^ (h >> 29);
}

struct cpool_ep_key {
	const char *s;
	size_t len;
};

int cpool__ep_match(struct cds_lfht_node *node, const void *key);

/*
 * Finds an endpoint by its address string. Call under the RCU read lock;
 * the result is valid until the read-side section ends (take a reference
 * to keep it longer).
 */
static inline struct cpool_endpoint *
cpool__ep_lookup(struct cpool *pool, const char *address)
{
	struct cpool_ep_key k = { address, strlen(address) };
	struct cds_lfht_iter it;
	struct cds_lfht_node *node;

	cds_lfht_lookup(pool->table,
			(unsigned long)cpool__hash(k.s, k.len, pool->hash_seed),
			cpool__ep_match, &k, &it);
	node = cds_lfht_iter_get_node(&it);
	if (!node)
		return NULL;
	CPOOL_TSAN_ACQUIRE(caa_container_of(node, struct cpool_endpoint, node));
	return caa_container_of(node, struct cpool_endpoint, node);
}

/*
 * A per-thread cache of lookups, so the acquire fast path pays a strcmp
 * instead of hash + table walk. cpool__ep_gen is bumped after every unlink
 * from any pool's table (removal, shutdown), before the grace period that
 * precedes the table reference's drop, so an entry whose generation still
 * matches names an endpoint whose memory the caller's read-side section
 * keeps alive.
 */
#define CPOOL_EP_CACHE 4

struct cpool_ep_cache {
	const struct cpool *pool;
	uint64_t gen;
	struct cpool_endpoint *ep;
};

extern uint64_t cpool__ep_gen;
extern __thread struct cpool_ep_cache cpool__ep_cache[CPOOL_EP_CACHE]
	__attribute__((tls_model("initial-exec")));

/* cpool__ep_lookup() through the cache. Call under the RCU read lock. */
static inline struct cpool_endpoint *
cpool__ep_find(struct cpool *pool, const char *address)
{
	struct cpool_ep_cache *e =
		&cpool__ep_cache[((uintptr_t)address >> 4) % CPOOL_EP_CACHE];
	uint64_t gen = LOAD_ACQ(&cpool__ep_gen);
	struct cpool_endpoint *ep;

	if (likely(e->pool == pool && e->gen == gen &&
		   strcmp(e->ep->key, address) == 0)) {
		CPOOL_TSAN_ACQUIRE(e->ep);
		return e->ep;
	}
	ep = cpool__ep_lookup(pool, address);
	if (ep) {
		e->pool = pool;
		e->gen = gen;
		e->ep = ep;
	}
	return ep;
}

static inline void
cpool__ep_get(struct cpool_endpoint *ep)
{
	ADD_RLX(&ep->refs, 1);
}

/* Drops a reference; the last one frees the endpoint. No lock held. */
void cpool__ep_put(struct cpool_endpoint *ep);

/*
 * Creates an endpoint for @address dialling @a[0..n) (@host: the name it
 * follows, else NULL) and links it in the table (under pool->ep_lock).
 * Returns 0 with a reference on it in *@out (NULL: none), -EEXIST or
 * -ENOMEM.
 */
int cpool__ep_add(struct cpool *pool, const char *address,
		  const struct cpool_addr *a, unsigned n, const char *host,
		  unsigned short port, struct cpool_endpoint **out);

/*
 * A name's new answer: makes @a[0..n) the endpoint's set and drains the
 * addresses that left it (their idle connections close now, with
 * CPOOL_CLOSE_DRAINED; leased ones at release). Returns 0 or -ENOMEM.
 */
int cpool__ep_set_update(struct cpool_endpoint *ep, const struct cpool_addr *a,
			 unsigned n);

/*
 * Worker: closes the connections of gone addresses that a release put in
 * @idle after the drain (it read the set before the change).
 */
void cpool__ep_drain_list(struct cpool_endpoint *ep, struct cpool_idle *idle);

/*
 * Connections to @u idle in @ep's lists now: each non-empty list is walked
 * under its lock (balancing, per-address stats; never a fast path).
 */
unsigned cpool__ep_addr_idle(const struct cpool_endpoint *ep,
			     const struct cpool_uaddr *u);

/* Whether @c's address left its set: it must not be leased again. */
static inline bool
cpool__ep_conn_gone(const struct cpool_endpoint *ep,
		    const struct cpool_conn *c)
{
	return unlikely(LOAD_RLX(&ep->ndraining)) && LOAD_ACQ(&c->ua->gone);
}

/*
 * Unlinks the endpoint named @address (NULL: every endpoint) from the
 * table into @out (linked through close_link, each with the table's
 * reference, which the caller drops with cpool__ep_put() after
 * cpool__rcu_synchronize()). Returns how many. Takes pool->ep_lock.
 */
unsigned cpool__ep_unlink(struct cpool *pool, const char *address,
			  struct cds_list_head *out);

/*
 * Stops the endpoint: waiters wake with @err and every later acquire gets
 * it, releases close instead of pooling, and every idle connection moves
 * to @out (linked through c->link, BUSY) for the caller to close. The
 * workers are told to let go of its lists. The caller holds a reference.
 */
void cpool__ep_close(struct cpool_endpoint *ep, int err,
		     struct cds_list_head *out);

/*
 * Opens a connection to @ep for a caller that holds one of its slots: the
 * connection owns the slot from then on, and a reference on @ep. Picks the
 * address (cpool__aset_pick(): health, balance; a race of both families
 * when the set has them), registers it with shard @sh. @leased: a caller's
 * new lease (LEASED, counted in the gauge; a refusal during backoff counts
 * in fail_fasts), else a worker's prewarm (BUSY). Counts connects and
 * failures and feeds the address's health. On failure the slot stays the
 * caller's. Returns 0 or -errno. No lock held: blocks up to
 * connect_timeout_ms.
 */
int cpool__ep_conn_open(struct cpool_endpoint *ep, unsigned sh, bool leased,
			struct cpool_conn **out);

/*
 * Closes @c (BUSY, the caller's) with @reason: un-watches and closes its
 * fd, counts the close (@leased: it was counted in the leased gauge, as
 * every connection popped from a list or opened for a caller is, until it
 * is pushed back), gives its slot back (to a waiter, if one sleeps) and
 * hands the memory to its reaper. No lock held.
 */
void cpool__ep_conn_close(struct cpool_conn *c, enum cpool_close_reason reason,
			  bool leased);

/*
 * Runs ops->check on @c (idle, owned by the caller: BUSY) with its fd set
 * O_NONBLOCK for the call and cancellation disabled. Returns the verdict,
 * CPOOL_SOCKET_ERROR for a value out of range or a mode that could not be
 * set or restored.
 */
enum cpool_verdict cpool__ep_conn_check(struct cpool_conn *c,
					enum cpool_verdict tcp);

/*
 * Releases @c's fd, which is in @ep's connection set: through ops->close
 * when that is owed (c->hooked), quiet (the fd pointed at /dev/null first)
 * when @quiet, else by close(). Used by every close path.
 */
void cpool__ep_conn_release_fd(struct cpool_endpoint *ep, struct cpool_conn *c,
			       enum cpool_close_reason reason, bool quiet);

/*
 * Frees a closed connection's memory and drops its endpoint reference:
 * the reaper's job, once no epoll_wait can name it any more.
 */
void cpool__ep_conn_free(struct cpool_conn *c);

/*
 * In a fork child (single-threaded, inside the atfork handler): stops
 * the endpoint with -ECHILD and points every connection fd it has at
 * /dev/null, so that nothing the child does can reach a peer the parent
 * is talking to, and the parent's closes really close.
 */
void cpool__ep_fork_child(struct cpool_endpoint *ep);

#endif /* CPOOL_ENDPOINT_H */
