/* SPDX-License-Identifier: MIT */
/*
 * Endpoints and the RCU endpoint table.
 *
 * The table is liburcu's cds_lfht keyed by the address string exactly as
 * given to cpool_endpoint_add(): acquire looks it up under the RCU read
 * lock on every call and never blocks. Adds and removes are rare writes,
 * serialized by pool->ep_lock. A removed endpoint is unlinked at once (new
 * acquires get -ENOENT), and the table's reference is dropped by call_rcu
 * after a grace period; connections still open keep it alive through their
 * slots until the last one closes.
 */
#include "endpoint.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdlib.h>
#include <sys/un.h>

#include "alloc.h"
#include "conn.h"
#include "log.h"
#include "pool.h"
#include "shard.h"
#include "stats.h"
#include "wait.h"

uint64_t cpool__ep_gen;
__thread struct cpool_ep_cache cpool__ep_cache[CPOOL_EP_CACHE]
	__attribute__((tls_model("initial-exec")));

static int
parse_port(const char *p, unsigned short *port)
{
	unsigned long v = 0;
	size_t i;

	for (i = 0; p[i]; i++) {
		if (p[i] < '0' || p[i] > '9' || i >= 5)
			return -EINVAL;
		v = v * 10 + (unsigned long)(p[i] - '0');
	}
	if (i == 0 || v == 0 || v > 65535)
		return -EINVAL;
	*port = (unsigned short)v;
	return 0;
}

static int
gai_to_errno(int rc, int saved_errno)
{
	switch (rc) {
	case EAI_AGAIN:
		return -EAGAIN;
	case EAI_MEMORY:
		return -ENOMEM;
	case EAI_SYSTEM:
		return saved_errno ? -saved_errno : -EHOSTUNREACH;
	default: /* EAI_NONAME, EAI_NODATA, EAI_FAIL, EAI_ADDRFAMILY, ... */
		return -EHOSTUNREACH;
	}
}

static int
resolve(const char *host, int flags, int family, unsigned short port,
	struct cpool_addr *out)
{
	struct addrinfo hints = { 0 }, *res;
	int rc;

#ifdef CPOOL_FUZZ
	/* Fuzzing must not hit the resolver: names do not resolve there. */
	if (!(flags & AI_NUMERICHOST) && inet_pton(AF_INET6, host, &hints) != 1)
		return -EHOSTUNREACH;
#endif
	hints.ai_family = family;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = flags;
	rc = getaddrinfo(host, NULL, &hints, &res);
	if (rc)
		return (flags & AI_NUMERICHOST) ? -EINVAL
						 : gai_to_errno(rc, errno);
	if (res->ai_addrlen > sizeof(out->ss)) {
		freeaddrinfo(res);
		return -EINVAL;
	}
	out->family = res->ai_family;
	out->len = res->ai_addrlen;
	memcpy(&out->ss, res->ai_addr, res->ai_addrlen);
	freeaddrinfo(res);
	if (out->family == AF_INET)
		((struct sockaddr_in *)&out->ss)->sin_port = htons(port);
	else if (out->family == AF_INET6)
		((struct sockaddr_in6 *)&out->ss)->sin6_port = htons(port);
	else
		return -EINVAL;
	return 0;
}

static int
parse_unix(const char *path, struct cpool_addr *out)
{
	struct sockaddr_un *sun = (struct sockaddr_un *)&out->ss;
	size_t len = strlen(path);

	if (len == 0 || len >= sizeof(sun->sun_path))
		return -EINVAL;
	memset(sun, 0, sizeof(*sun));
	sun->sun_family = AF_UNIX;
	out->family = AF_UNIX;
	if (path[0] == '@') { /* abstract namespace: no terminating NUL */
		if (len == 1)
			return -EINVAL;
		memcpy(sun->sun_path + 1, path + 1, len - 1);
		out->len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) +
				       len);
	} else {
		memcpy(sun->sun_path, path, len);
		out->len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) +
				       len + 1);
	}
	return 0;
}

int
cpool__addr_parse(const char *address, struct cpool_addr *out)
{
	char host[CPOOL_ADDRESS_MAX + 1];
	const char *colon, *end;
	unsigned short port;
	struct in_addr v4;
	size_t len = strnlen(address, CPOOL_ADDRESS_MAX + 1), hlen;
	int err;

	if (len == 0 || len > CPOOL_ADDRESS_MAX)
		return -EINVAL;
	memset(out, 0, sizeof(*out));
	if (strncmp(address, "unix:", 5) == 0)
		return parse_unix(address + 5, out);

	if (address[0] == '[') {
		end = strchr(address, ']');
		if (!end || end[1] != ':')
			return -EINVAL;
		hlen = (size_t)(end - address - 1);
		if (hlen == 0)
			return -EINVAL;
		err = parse_port(end + 2, &port);
		if (err)
			return err;
		memcpy(host, address + 1, hlen);
		host[hlen] = '\0';
		return resolve(host, AI_NUMERICHOST, AF_INET6, port, out);
	}

	colon = strrchr(address, ':');
	if (!colon || colon == address)
		return -EINVAL;
	hlen = (size_t)(colon - address);
	if (memchr(address, ':', hlen)) /* IPv6 needs brackets */
		return -EINVAL;
	err = parse_port(colon + 1, &port);
	if (err)
		return err;
	memcpy(host, address, hlen);
	host[hlen] = '\0';
	if (inet_pton(AF_INET, host, &v4) == 1) {
		struct sockaddr_in *sin = (struct sockaddr_in *)&out->ss;

		sin->sin_family = AF_INET;
		sin->sin_addr = v4;
		sin->sin_port = htons(port);
		out->family = AF_INET;
		out->len = sizeof(*sin);
		return 0;
	}
	return resolve(host, 0, AF_UNSPEC, port, out);
}

int
cpool__ep_match(struct cds_lfht_node *node, const void *key)
{
	const struct cpool_endpoint *ep =
		caa_container_of(node, struct cpool_endpoint, node);
	const struct cpool_ep_key *k = key;

	return ep->keylen == k->len && memcmp(ep->key, k->s, k->len) == 0;
}

static size_t
idle_array_size(const struct cpool *pool)
{
	return sizeof(struct cpool_idle) * pool->nshards;
}

static void
ep_free_rcu(struct rcu_head *head)
{
	struct cpool_endpoint *ep =
		caa_container_of(head, struct cpool_endpoint, rcu);
	struct cpool *pool = ep->pool;

	CPOOL_RCU_GP_DONE();
	pthread_mutex_lock(&pool->ep_lock);
	cds_list_del(&ep->all);
	cpool__stats_retire_locked(pool, ep);
	pthread_mutex_unlock(&pool->ep_lock);
	pthread_mutex_destroy(&ep->wait_lock);
	cpool__free(ep->idle, idle_array_size(pool));
	cpool__free(ep, ep->alloc_size);
	cpool__pool_put(pool);
}

/*
 * The last reference frees the endpoint only after a grace period: a worker
 * handling an event of one of its connections may still read its lists
 * (c->home) inside its read-side section. The rcu_head is free to reuse:
 * the table's callback, its only other user, ran before the count hit 0.
 */
void
cpool__ep_put(struct cpool_endpoint *ep)
{
	if (__atomic_sub_fetch(&ep->refs, 1, __ATOMIC_ACQ_REL))
		return;
	if (__atomic_load_n(&ep->pool->settled, __ATOMIC_ACQUIRE)) {
		ep_free_rcu(&ep->rcu); /* nobody can reach it any more */
		return;
	}
	cpool__rcu_ensure();
	cpool__call_rcu(&ep->rcu, ep_free_rcu);
}

#define BACKOFF_MIN_NS 10000000ull   /* 10 ms */
#define BACKOFF_MAX_NS 5000000000ull /* 5 s */

/* Failures of this host, not of the endpoint: no backoff for them. */
static bool
local_error(int err)
{
	return err == -EMFILE || err == -ENFILE || err == -ENOMEM ||
	       err == -ENOBUFS;
}

int
cpool__ep_connect_gate(struct cpool_endpoint *ep, bool *trial, bool count)
{
	int zero = 0;

	*trial = false;
	if (likely(!LOAD(&ep->fail_streak)))
		return 0;
	if (cpool__now_ns() >= LOAD(&ep->backoff_until_ns) &&
	    __atomic_compare_exchange_n(&ep->trial, &zero, 1, false,
					__ATOMIC_ACQ_REL, __ATOMIC_RELAXED)) {
		*trial = true;
		return 0;
	}
	if (count)
		ATOMIC_ADD(&ep->ctr.fail_fasts, 1);
	return LOAD(&ep->last_err) ? LOAD(&ep->last_err) : -ECONNREFUSED;
}

void
cpool__ep_connect_done(struct cpool_endpoint *ep, int err, bool trial)
{
	uint64_t delay;
	unsigned streak;

	if (!err) {
		if (LOAD(&ep->fail_streak))
			STORE(&ep->fail_streak, 0);
	} else if (!local_error(err) && err != -EAGAIN) {
		streak = ATOMIC_ADD(&ep->fail_streak, 1);
		delay = streak >= 10 ? BACKOFF_MAX_NS
				     : BACKOFF_MIN_NS << (streak - 1);
		if (delay > BACKOFF_MAX_NS)
			delay = BACKOFF_MAX_NS;
		/* Up to 25 % less, so callers do not retry in lockstep. */
		delay -= cpool__random() % (delay / 4 + 1);
		STORE(&ep->last_err, err);
		STORE(&ep->backoff_until_ns, cpool__now_ns() + delay);
		ATOMIC_ADD(&ep->ctr.backoffs, 1);
	}
	if (trial)
		__atomic_store_n(&ep->trial, 0, __ATOMIC_RELEASE);
}

void
cpool__ep_table_put_rcu(struct rcu_head *head)
{
	CPOOL_RCU_GP_DONE();
	cpool__ep_put(caa_container_of(head, struct cpool_endpoint, rcu));
}

void
cpool__ep_slot_put(struct cpool_endpoint *ep)
{
	__atomic_sub_fetch(&ep->slots, 1, __ATOMIC_SEQ_CST);
	/*
	 * Pairs with the waiter's increment of nwaiters before its own slot
	 * attempt: one of the two sees the other.
	 */
	if (__atomic_load_n(&ep->nwaiters, __ATOMIC_SEQ_CST))
		cpool__wait_wake_slot(ep);
	cpool__ep_put(ep);
}

void
cpool__ep_close(struct cpool_endpoint *ep, int err)
{
	struct cds_list_head idle, *pos, *tmp;

	STORE(&ep->close_err, err);
	/* Set before draining: a release that locks a list after the drain
	 * sees it and closes instead of pooling. */
	__atomic_store_n(&ep->closing, 1, __ATOMIC_SEQ_CST);
	CDS_INIT_LIST_HEAD(&idle);
	cpool__shard_drain(ep, &idle);
	cds_list_for_each_safe(pos, tmp, &idle) {
		cpool__conn_close(cds_list_entry(pos, struct cpool_conn, link),
				  CPOOL_CLOSE_SHUTDOWN, false);
	}
	cpool__wait_fail_all(ep, err);
}

static struct cpool_endpoint *
ep_new(struct cpool *pool, const char *address, const struct cpool_addr *a)
{
	size_t keylen = strlen(address);
	size_t size = sizeof(struct cpool_endpoint) + keylen + 1;
	struct cpool_endpoint *ep;
	unsigned i;

	ep = cpool__alloc(size, CPOOL_CACHELINE, 0);
	if (!ep)
		return NULL;
	ep->idle = cpool__alloc(idle_array_size(pool), CPOOL_CACHELINE, 0);
	if (!ep->idle) {
		cpool__free(ep, size);
		return NULL;
	}
	for (i = 0; i < pool->nshards; i++)
		CDS_INIT_LIST_HEAD(&ep->idle[i].head);
	ep->alloc_size = size;
	ep->pool = pool;
	ep->refs = 1; /* the table's */
	ep->key = (char *)(ep + 1);
	memcpy(ep + 1, address, keylen + 1);
	ep->keylen = keylen;
	ep->family = a->family;
	ep->salen = a->len;
	memcpy(&ep->sa, &a->ss, sizeof(a->ss));
	pthread_mutex_init(&ep->wait_lock, NULL);
	CDS_INIT_LIST_HEAD(&ep->waiters);
	cds_lfht_node_init(&ep->node);
	return ep;
}

int
cpool_endpoint_add(struct cpool *pool, const char *address)
{
	struct cpool_endpoint *ep;
	struct cds_lfht_node *node;
	struct cpool_addr a;
	int err;

	if (!pool || !address)
		return -EINVAL;
	if (LOAD(&pool->shutdown))
		return -ESHUTDOWN;
	err = cpool__addr_parse(address, &a);
	if (err) {
		cpool__log(&pool->cfg, CPOOL_LOG_ERROR,
			   "cpool_endpoint_add: \"%.64s\": %s", address,
			   cpool_strerror(err));
		return err;
	}
	ep = ep_new(pool, address, &a);
	if (!ep)
		return -ENOMEM;
	cpool__rcu_ensure();
	pthread_mutex_lock(&pool->ep_lock);
	if (LOAD(&pool->shutdown)) {
		err = -ESHUTDOWN;
		goto fail;
	}
	CPOOL_TSAN_RELEASE(ep); /* published: finders acquire it */
	urcu_memb_read_lock();
	node = cds_lfht_add_unique(pool->table,
				   (unsigned long)cpool__hash(ep->key,
							      ep->keylen,
							      pool->hash_seed),
				   cpool__ep_match,
				   &(struct cpool_ep_key){ ep->key, ep->keylen },
				   &ep->node);
	cpool__rcu_read_unlock();
	if (node != &ep->node) {
		err = -EEXIST;
		goto fail;
	}
	cds_list_add_tail(&ep->all, &pool->endpoints);
	cpool__pool_get(pool);
	pthread_mutex_unlock(&pool->ep_lock);
	return 0;
fail:
	pthread_mutex_unlock(&pool->ep_lock);
	pthread_mutex_destroy(&ep->wait_lock);
	cpool__free(ep->idle, idle_array_size(pool));
	cpool__free(ep, ep->alloc_size);
	return err;
}

int
cpool_endpoint_remove(struct cpool *pool, const char *address)
{
	struct cpool_endpoint *ep;

	if (!pool || !address)
		return -EINVAL;
	if (LOAD(&pool->shutdown))
		return -ESHUTDOWN;
	cpool__rcu_ensure();
	pthread_mutex_lock(&pool->ep_lock);
	if (LOAD(&pool->shutdown)) { /* its table may be gone */
		pthread_mutex_unlock(&pool->ep_lock);
		return -ESHUTDOWN;
	}
	urcu_memb_read_lock();
	ep = cpool__ep_lookup(pool, address);
	if (!ep || cds_lfht_del(pool->table, &ep->node)) {
		cpool__rcu_read_unlock();
		pthread_mutex_unlock(&pool->ep_lock);
		return -ENOENT;
	}
	cpool__ep_get(ep);
	cpool__rcu_read_unlock();
	cpool__ep_gen_bump(); /* after the unlink, before the grace period */
	cpool__call_rcu(&ep->rcu, cpool__ep_table_put_rcu);
	pthread_mutex_unlock(&pool->ep_lock);

	cpool__ep_close(ep, -ENOENT);
	cpool__ep_put(ep);
	return 0;
}
