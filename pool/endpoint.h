/* SPDX-License-Identifier: MIT */
/*
 * Endpoints: address parsing and resolution, the RCU hash table keyed by the
 * address string, references and the process-wide connection slots.
 */
#ifndef CPOOL_ENDPOINT_H
#define CPOOL_ENDPOINT_H

#include <stdint.h>
#include <string.h>

#include "pool-t.h"

/* Longest address string accepted. */
#define CPOOL_ADDRESS_MAX 1024

struct cpool_addr {
	int family;
	socklen_t len;
	struct sockaddr_storage ss;
};

/*
 * Parses "host:port", "[v6]:port", "unix:/path" or "unix:@abstract" and
 * resolves a host name (first getaddrinfo result). Returns 0, -EINVAL for a
 * malformed address, or the resolver's mapped error (-EHOSTUNREACH, -EAGAIN,
 * -ENOMEM).
 */
int cpool__addr_parse(const char *address, struct cpool_addr *out);

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
 * from any pool's table (removal, shutdown), so an entry whose generation
 * still matches names an endpoint that is still in its table; the caller's
 * read-side section keeps it alive. (A reader that starts after the unlink's
 * grace period began sees the bump: RCU orders writes before call_rcu.)
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

/* Called after an endpoint left a table: voids every thread's cache. */
static inline void
cpool__ep_gen_bump(void)
{
	__atomic_add_fetch(&cpool__ep_gen, 1, __ATOMIC_RELEASE);
}

/* cpool__ep_lookup() through the cache. Call under the RCU read lock. */
static inline struct cpool_endpoint *
cpool__ep_find(struct cpool *pool, const char *address)
{
	struct cpool_ep_cache *e =
		&cpool__ep_cache[((uintptr_t)address >> 4) % CPOOL_EP_CACHE];
	uint64_t gen = __atomic_load_n(&cpool__ep_gen, __ATOMIC_ACQUIRE);
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
	ATOMIC_ADD(&ep->refs, 1);
}

/* Drops a reference; the last one frees the endpoint. No lock held. */
void cpool__ep_put(struct cpool_endpoint *ep);

/*
 * Reserves one of the endpoint's max_conns_per_endpoint slots (process-wide)
 * and a reference that goes with it. Returns false at the cap.
 */
static inline bool
cpool__ep_slot_get(struct cpool_endpoint *ep)
{
	unsigned s = __atomic_load_n(&ep->slots, __ATOMIC_SEQ_CST);
	unsigned max = ep->pool->cfg.max_conns_per_endpoint;

	while (s < max) {
		if (__atomic_compare_exchange_n(&ep->slots, &s, s + 1, false,
						__ATOMIC_SEQ_CST,
						__ATOMIC_SEQ_CST)) {
			cpool__ep_get(ep);
			return true;
		}
	}
	return false;
}

/* Gives a slot back, waking one waiter to take it. No lock held. */
void cpool__ep_slot_put(struct cpool_endpoint *ep);

/*
 * Stops pooling on @ep: every later release closes, waiters wake with
 * @err, idle connections are closed now (reason CPOOL_CLOSE_SHUTDOWN).
 * The caller holds a reference. No lock held.
 */
void cpool__ep_close(struct cpool_endpoint *ep, int err);

/*
 * Connect backoff. Before a connect: returns 0 to go ahead (setting *trial
 * when this connect is the one that decides recovery), or the last connect
 * error while the endpoint backs off or another trial is in flight; a
 * refused caller counts in fail_fasts when @count. After the connect,
 * cpool__ep_connect_done() records the result (0 or -errno).
 */
int cpool__ep_connect_gate(struct cpool_endpoint *ep, bool *trial,
			   bool count);
void cpool__ep_connect_done(struct cpool_endpoint *ep, int err, bool trial);

/* Drops the table's reference after a grace period: for call_rcu. */
void cpool__ep_table_put_rcu(struct rcu_head *head);

#endif /* CPOOL_ENDPOINT_H */
