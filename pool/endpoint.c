/* SPDX-License-Identifier: MIT */
/*
 * Endpoints and the RCU endpoint table.
 *
 * The table is liburcu's cds_lfht keyed by the address string exactly as
 * given to cpool_endpoint_add(): acquire looks it up under the RCU read
 * lock and never blocks. Adds and removes are rare writes, serialized by
 * pool->ep_lock (which also guards pool->endpoints and the manual resizes:
 * the table has no resize thread of its own). A removed endpoint is
 * unlinked at once (new acquires get -ENOENT); the table's reference is
 * dropped after a grace period, by the remover itself.
 *
 * Lifetimes, explicitly:
 *  - an endpoint lives while it has references (endpoint.h); its last
 *    reference frees it, in ep_free() only;
 *  - a connection holds a reference on its endpoint from its socket() to
 *    the free of its memory (cpool__ep_conn_free(), the reaper's call),
 *    so a worker handling a late epoll event always finds its home list;
 *  - a slot is admission only (admit.c): it holds no reference;
 *  - an endpoint holds a reference on its pool until it is freed.
 *
 * Connect failures that are the host's (no fd, no memory, no epoll watch
 * left) never start the endpoint's backoff: the endpoint did nothing wrong.
 */
#include "endpoint.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stddef.h>
#include <stdlib.h>
#include <sys/un.h>
#include <unistd.h>

#include "alloc.h"
#include "dns.h"
#include "log.h"
#include "sock.h"

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

/* A numeric host (@family AF_INET6: only that) with @port. */
static int
numeric(const char *host, int family, unsigned short port,
	struct cpool_addr *out)
{
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&out->ss;
	struct sockaddr_in *in = (struct sockaddr_in *)&out->ss;

	if (family == AF_INET6) {
		/* getaddrinfo for the scope ids ("fe80::1%eth0"); numeric
		 * only, it never touches the network. */
		struct addrinfo hints = { 0 }, *res;

		hints.ai_family = AF_INET6;
		hints.ai_socktype = SOCK_STREAM;
		hints.ai_flags = AI_NUMERICHOST;
		if (getaddrinfo(host, NULL, &hints, &res))
			return -EINVAL;
		if (res->ai_addrlen != sizeof(*in6)) {
			freeaddrinfo(res);
			return -EINVAL;
		}
		memcpy(in6, res->ai_addr, sizeof(*in6));
		freeaddrinfo(res);
		in6->sin6_port = htons(port);
		out->family = AF_INET6;
		out->len = sizeof(*in6);
		return 0;
	}
	if (inet_pton(AF_INET, host, &in->sin_addr) != 1)
		return CPOOL_ADDR_NAME;
	in->sin_family = AF_INET;
	in->sin_port = htons(port);
	out->family = AF_INET;
	out->len = sizeof(*in);
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
cpool__addr_split(const char *address, struct cpool_addr *out, char *host,
		  unsigned short *port)
{
	const char *colon, *end;
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
		err = parse_port(end + 2, port);
		if (err)
			return err;
		memcpy(host, address + 1, hlen);
		host[hlen] = '\0';
		return numeric(host, AF_INET6, *port, out);
	}

	colon = strrchr(address, ':');
	if (!colon || colon == address)
		return -EINVAL;
	hlen = (size_t)(colon - address);
	if (memchr(address, ':', hlen)) /* IPv6 needs brackets */
		return -EINVAL;
	err = parse_port(colon + 1, port);
	if (err)
		return err;
	memcpy(host, address, hlen);
	host[hlen] = '\0';
	if (memchr(host, '\0', hlen)) /* not reached: strnlen stopped it */
		return -EINVAL;
	return numeric(host, AF_INET, *port, out);
}

int
cpool__addr_parse(const char *address, struct cpool_addr *out)
{
	char host[CPOOL_ADDRESS_MAX + 1];
	struct cpool_dns_result *res;
	unsigned short port;
	int err = cpool__addr_split(address, out, host, &port);

	if (err != CPOOL_ADDR_NAME)
		return err;
#ifdef CPOOL_FUZZ
	/* Fuzzing must not hit the resolver: names do not resolve there. */
	return -EHOSTUNREACH;
#endif
	res = cpool__alloc(sizeof(*res), 0, 0);
	if (!res)
		return -ENOMEM;
	err = cpool__dns_resolve(NULL, host, port, 5000, res);
	if (!err) {
		out->family = res->addr[0].family;
		out->len = res->addr[0].len;
		memcpy(&out->ss, &res->addr[0].ss, sizeof(out->ss));
	}
	cpool__free(res, sizeof(*res));
	return err;
}

int
cpool__ep_match(struct cds_lfht_node *node, const void *key)
{
	const struct cpool_endpoint *ep =
		caa_container_of(node, struct cpool_endpoint, node);
	const struct cpool_ep_key *k = key;

	return ep->keylen == k->len && memcmp(ep->key, k->s, k->len) == 0;
}

/* ep->set's view of the lists, for balancing (addrset.h). */
static unsigned
set_idle_of(void *arg, const struct cpool_uaddr *u)
{
	return cpool__ep_addr_idle(arg, u);
}

static size_t
idle_array_size(const struct cpool *pool)
{
	return sizeof(struct cpool_idle) * pool->nshards;
}

/* Folds a dying endpoint's counters into the pool's. ep_lock held. */
static void
retire_counters_locked(struct cpool *pool, const struct cpool_endpoint *ep)
{
	const uint64_t *src = (const uint64_t *)&ep->ctr;
	uint64_t *dst = (uint64_t *)&pool->retired;
	unsigned i, n = sizeof(ep->ctr) / sizeof(uint64_t);

	/* Field by field, so concurrent readers see whole values. */
	for (i = 0; i < n; i++)
		STORE_RLX(&dst[i], LOAD_RLX(&dst[i]) + LOAD_ACQ(&src[i]));
	for (i = 0; i < pool->nshards; i++)
		STORE_RLX(&pool->retired.reuses,
			  LOAD_RLX(&pool->retired.reuses) +
				  LOAD_RLX(&ep->idle[i].reuses));
}

/* The endpoint's one teardown: its last reference is gone. */
static void
ep_free(struct cpool_endpoint *ep)
{
	struct cpool *pool = ep->pool;
	unsigned i;

	pthread_mutex_lock(&pool->ep_lock);
	cds_list_del(&ep->all);
	retire_counters_locked(pool, ep);
	pthread_mutex_unlock(&pool->ep_lock);
	for (i = 0; i < pool->nshards; i++)
		CPOOL_BUG_ON(ep->idle[i].count);
	cpool__conn_set_destroy(&ep->conns);
	cpool__admit_destroy(&ep->admit);
	cpool__aset_destroy(&ep->set);
	cpool__free(ep->idle, idle_array_size(pool));
	cpool__free(ep, ep->alloc_size);
	cpool__pool_put(pool);
}

void
cpool__ep_put(struct cpool_endpoint *ep)
{
	if (__atomic_sub_fetch(&ep->refs, 1, __ATOMIC_ACQ_REL) == 0)
		ep_free(ep);
}

/* Shard @k's share of a per-endpoint number spread over @n shards. */
static unsigned
share_of(unsigned total, unsigned n, unsigned k)
{
	return total / n + (k < total % n);
}

static struct cpool_endpoint *
ep_new(struct cpool *pool, const char *address, const struct cpool_addr *a,
       unsigned n, const char *host, unsigned short port)
{
	size_t keylen = strlen(address), hostlen = host ? strlen(host) + 1 : 0;
	size_t size = sizeof(struct cpool_endpoint) + keylen + 1 + hostlen;
	struct cpool_endpoint *ep;
	unsigned k;

	ep = cpool__alloc(size, CPOOL_CACHELINE, 0);
	if (!ep)
		return NULL;
	ep->idle = cpool__alloc(idle_array_size(pool), CPOOL_CACHELINE, 0);
	if (!ep->idle) {
		cpool__free(ep, size);
		return NULL;
	}
	for (k = 0; k < pool->nshards; k++)
		cpool__idle_init(&ep->idle[k], ep, &ep->refs, k,
				 share_of(pool->cfg.min_idle_per_endpoint,
					  pool->nshards, k),
				 &pool->shards[k].inbox);
	ep->alloc_size = size;
	ep->pool = pool;
	ep->refs = 1; /* the table's */
	ep->key = (char *)(ep + 1);
	memcpy(ep + 1, address, keylen + 1);
	ep->keylen = keylen;
	if (host) {
		ep->host = (char *)(ep + 1) + keylen + 1;
		memcpy(ep->host, host, hostlen);
		ep->port = port;
	}
	cpool__aset_init(&ep->set, &pool->cfg, host != NULL, &ep->ndraining,
			 &ep->ctr);
	ep->set.idle_of = set_idle_of;
	ep->set.idle_arg = ep;
	if (cpool__aset_update(&ep->set, a, n) < 0) {
		cpool__aset_destroy(&ep->set);
		cpool__free(ep->idle, idle_array_size(pool));
		cpool__free(ep, size);
		return NULL;
	}
	cpool__admit_init(&ep->admit, pool->cfg.max_conns_per_endpoint,
			  ep->idle, pool->nshards);
	cpool__conn_set_init(&ep->conns);
	cds_lfht_node_init(&ep->node);
	return ep;
}

static void
ep_discard(struct cpool_endpoint *ep)
{
	cpool__conn_set_destroy(&ep->conns);
	cpool__admit_destroy(&ep->admit);
	cpool__aset_destroy(&ep->set);
	cpool__free(ep->idle, idle_array_size(ep->pool));
	cpool__free(ep, ep->alloc_size);
}

/*
 * Grows the table when it holds more than two endpoints per bucket: it has
 * no resize thread (no liburcu thread exists on cpool's behalf). Signals
 * are blocked so that the helper threads liburcu starts for a large resize
 * never run the host's handlers. ep_lock held, outside any read-side
 * section.
 */
static void
table_grow_locked(struct cpool *pool)
{
	sigset_t all, old;

	if (pool->nlinked <= 2 * pool->table_size ||
	    pool->table_size >= (1ul << 20))
		return;
	pool->table_size *= 4;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	cds_lfht_resize(pool->table, pool->table_size);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
}

/* Has the list's worker look at it now. */
static void
poke(struct cpool_idle *idle)
{
	bool hand;

	cpool__spin_lock(&idle->lock);
	hand = cpool__idle_need_locked(idle);
	cpool__spin_unlock(&idle->lock);
	if (hand)
		cpool__idle_hand_over(idle);
}

int
cpool__ep_add(struct cpool *pool, const char *address,
	      const struct cpool_addr *a, unsigned n, const char *host,
	      unsigned short port, struct cpool_endpoint **out)
{
	struct cpool_endpoint *ep;
	struct cds_lfht_node *node;
	unsigned k;
	int err = 0;

	ep = ep_new(pool, address, a, n, host, port);
	if (!ep)
		return -ENOMEM;
	pthread_mutex_lock(&pool->ep_lock);
	if (LOAD_RLX(&pool->state)) {
		err = LOAD_RLX(&pool->state);
		goto out;
	}
	CPOOL_TSAN_RELEASE(ep); /* published: finders acquire it */
	cpool__rcu_read_lock();
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
		goto out;
	}
	cds_list_add_tail(&ep->all, &pool->endpoints);
	pool->nlinked++;
	cpool__pool_get(pool);
	cpool__ep_get(ep); /* ours, for the handing over below */
	table_grow_locked(pool);
out:
	pthread_mutex_unlock(&pool->ep_lock);
	if (err) {
		ep_discard(ep);
		return err;
	}
	/* Prewarm starts now: each worker learns of its list. */
	for (k = 0; k < pool->nshards; k++) {
		if (!ep->idle[k].want)
			continue;
		poke(&ep->idle[k]);
	}
	if (out)
		*out = ep;
	else
		cpool__ep_put(ep);
	return 0;
}

unsigned
cpool__ep_unlink(struct cpool *pool, const char *address,
		 struct cds_list_head *out)
{
	struct cpool_endpoint *ep;
	struct cds_lfht_node *node;
	struct cds_lfht_iter it;
	unsigned n = 0;

	pthread_mutex_lock(&pool->ep_lock);
	cpool__rcu_read_lock();
	if (address) {
		ep = cpool__ep_lookup(pool, address);
		if (ep && cds_lfht_del(pool->table, &ep->node) == 0) {
			cds_list_add_tail(&ep->close_link, out);
			n++;
		}
	} else {
		/* No _for_each_entry: its last step forms a pointer from NULL. */
		for (cds_lfht_first(pool->table, &it);
		     (node = cds_lfht_iter_get_node(&it)) != NULL;
		     cds_lfht_next(pool->table, &it)) {
			ep = caa_container_of(node, struct cpool_endpoint,
					      node);
			CPOOL_TSAN_ACQUIRE(ep);
			if (cds_lfht_del(pool->table, node) == 0) {
				cds_list_add_tail(&ep->close_link, out);
				n++;
			}
		}
	}
	cpool__rcu_read_unlock();
	pool->nlinked -= n;
	pthread_mutex_unlock(&pool->ep_lock);
	/* After the unlinks, before the grace period: voids every cache. */
	if (n)
		__atomic_add_fetch(&cpool__ep_gen, 1, __ATOMIC_RELEASE);
	return n;
}

void
cpool__ep_close(struct cpool_endpoint *ep, int err, struct cds_list_head *out)
{
	struct cpool *pool = ep->pool;
	unsigned k;

	/* The handles' answer from now on (cpool_acquire_ep()). */
	STORE_REL(&ep->dead, err);
	/* Waiters first: none of them dials a removed endpoint. */
	cpool__admit_close(&ep->admit, err);
	cpool__idle_drain(ep->idle, pool->nshards, out);
	CPOOL_PAUSE(CPOOL_PP_DRAIN_DONE, ep);
	/* The workers let go of the lists (and their references) now. */
	for (k = 0; k < pool->nshards; k++)
		poke(&ep->idle[k]);
}

/*
 * What is left of @deadline_ns, in ms rounded up, with the I/O timeouts of
 * a blocking fd set to it: the bound of a hook's I/O. -ETIMEDOUT when
 * nothing is left.
 */
static int
hook_begin(const struct cpool_conn *c, uint64_t deadline_ns, unsigned *ms)
{
	uint64_t now = cpool__now_ns();

	if (now >= deadline_ns)
		return -ETIMEDOUT;
	*ms = (unsigned)((deadline_ns - now + 999999) / 1000000);
	return c->nonblock ? 0 : cpool__sock_set_io_timeout(c->fd, *ms);
}

/* A hook's result as an errno, the I/O timeouts cleared again. */
static int
hook_end(const struct cpool_conn *c, int rc)
{
	if (rc < 0)
		return rc;
	if (rc > 0)
		return -ECONNABORTED;
	return c->nonblock ? 0 : cpool__sock_set_io_timeout(c->fd, 0);
}

static int
run_on_connect(struct cpool_endpoint *ep, struct cpool_conn *c,
	       uint64_t deadline_ns)
{
	const struct cpool_config *cfg = &ep->pool->cfg;
	unsigned ms;
	int err = hook_begin(c, deadline_ns, &ms);

	if (err)
		return err;
	return hook_end(c, cfg->on_connect(c->fd, ep->key, cfg->user_data));
}

static int
run_open(struct cpool_endpoint *ep, struct cpool_conn *c, uint64_t deadline_ns)
{
	struct cpool *pool = ep->pool;
	unsigned ms;
	int err = hook_begin(c, deadline_ns, &ms);

	if (err)
		return err;
	return hook_end(c, pool->ops.open(c, ms, pool->cfg.conn_ops_arg));
}

/*
 * One connect of a race: its connection object (the caller's, or a
 * stand-in whose fd the winner may take), its address and its state.
 */
struct attempt {
	struct cpool_conn *c;
	struct cpool_uaddr *ua;
	bool trial;
	int state; /* ATT_IDLE, ATT_RUNNING, ATT_DONE */
};

enum { ATT_IDLE, ATT_RUNNING, ATT_DONE };

/* Starts attempt @t: 0 connected, 1 running, -errno failed (and done). */
static int
attempt_start(struct cpool_endpoint *ep, struct attempt *t)
{
	const struct cpool_config *cfg = &ep->pool->cfg;
	int err;

	err = cpool__conn_socket(t->c, &ep->conns, t->ua->family, cfg);
	if (!err)
		err = cpool__sock_connect_start(t->c->fd,
						(const struct sockaddr *)&t->ua
							->sa,
						t->ua->salen);
	t->state = err == 1 ? ATT_RUNNING : ATT_DONE;
	return err;
}

/* A failed or abandoned attempt's end: its fd, its verdict. */
static void
attempt_end(struct cpool_endpoint *ep, struct attempt *t, int err,
	    bool cancelled)
{
	if (t->c->fd >= 0)
		cpool__conn_close_fd(t->c, &ep->conns);
	t->state = ATT_DONE;
	cpool__aset_done(&ep->set, t->ua, err, t->trial, cancelled, false);
}

/*
 * The pool's own socket and connect: the picked address, and with a
 * second pick of the other family a race (RFC 8305): the second starts
 * happy_eyeballs_ms after the first or when the first fails, whichever
 * is sooner; the first to connect wins and the other is closed; all
 * within @deadline_ns. The winner's socket ends up in @c (in the handout
 * mode); *@win is its pick (its verdict is the caller's to give), or -1
 * when none connected (every verdict given here).
 */
static int
conn_connect(struct cpool_endpoint *ep, struct cpool_conn *c,
	     const struct cpool_pick *p, uint64_t deadline_ns, int *win)
{
	struct cpool *pool = ep->pool;
	struct cpool_conn stand_in;
	struct attempt t[2];
	uint64_t start_next = UINT64_MAX, until;
	int fds[2], err = -ETIMEDOUT, last = -ETIMEDOUT, r, i, n = 1;

	*win = -1;
	memset(&stand_in, 0, sizeof(stand_in));
	stand_in.fd = -1;
	t[0] = (struct attempt){ c, p->a[0], p->trial[0], ATT_IDLE };
	if (p->a[1]) {
		t[1] = (struct attempt){ &stand_in, p->a[1], p->trial[1],
					 ATT_IDLE };
		n = 2;
		start_next = cpool__now_ns() +
			     (uint64_t)pool->cfg.happy_eyeballs_ms * 1000000u;
	}
	r = attempt_start(ep, &t[0]);
	if (r == 0) {
		*win = 0;
		goto won;
	}
	if (r < 0) {
		last = r;
		attempt_end(ep, &t[0], r, false);
		start_next = 0;
	}
	for (;;) {
		if (n == 2 && t[1].state == ATT_IDLE &&
		    cpool__now_ns() >= start_next) {
			r = attempt_start(ep, &t[1]);
			if (r == 0) {
				*win = 1;
				break;
			}
			if (r < 0) {
				last = r;
				attempt_end(ep, &t[1], r, false);
			}
		}
		for (i = 0; i < 2; i++)
			fds[i] = i < n && t[i].state == ATT_RUNNING
					 ? t[i].c->fd
					 : -1;
		if (fds[0] < 0 && fds[1] < 0) {
			if (n == 2 && t[1].state == ATT_IDLE)
				continue; /* the first failed: start it now */
			return last;
		}
		until = n == 2 && t[1].state == ATT_IDLE &&
				start_next < deadline_ns
			? start_next
			: deadline_ns;
		i = cpool__sock_connect_poll(fds, 2, until, &err);
		if (i == -ETIMEDOUT) {
			if (until < deadline_ns)
				continue; /* time to start the other family */
			break;
		}
		if (i < 0) { /* poll() failed: the host's trouble */
			last = i;
			break;
		}
		if (!err) {
			*win = i;
			break;
		}
		last = err;
		attempt_end(ep, &t[i], err, false);
		if (n == 2 && t[1].state == ATT_IDLE)
			start_next = 0;
	}
	/* The others lose: abandoned, no verdict (or timed out: one). */
	for (i = 0; i < n; i++) {
		if (i == *win || t[i].state == ATT_DONE)
			continue;
		if (t[i].state == ATT_RUNNING) {
			attempt_end(ep, &t[i], *win < 0 ? -ETIMEDOUT : 0,
				    *win >= 0);
			continue;
		}
		t[i].state = ATT_DONE; /* never started */
		cpool__aset_done(&ep->set, t[i].ua, 0, t[i].trial, true,
				 false);
	}
	if (*win < 0)
		return last;
	if (*win == 1) {
		cpool__conn_take_fd(c, &stand_in, &ep->conns);
		cpool__aset_prefer(&ep->set, t[1].ua->family);
	}
won:
	if (*win == 0 && n == 2 && t[1].state == ATT_IDLE)
		cpool__aset_done(&ep->set, t[1].ua, 0, t[1].trial, true,
				 false);
	if (!pool->ops.open) /* close owed once connected */
		c->hooked = true;
	return c->nonblock ? 0 : cpool__sock_set_nonblock(c->fd, false);
}

/*
 * ops->dial's socket, entered in the set; the pool's TCP options on it, and
 * its mode as dial left it.
 */
static int
conn_dial(struct cpool_endpoint *ep, struct cpool_conn *c,
	  const struct cpool_uaddr *ua, uint64_t deadline_ns)
{
	struct cpool *pool = ep->pool;
	socklen_t len = sizeof(int);
	int fd, fl, proto = 0;
	uint64_t now = cpool__now_ns();

	if (now >= deadline_ns)
		return -ETIMEDOUT;
	fd = pool->ops.dial(ep->key, (const struct sockaddr *)&ua->sa,
			    ua->salen,
			    (unsigned)((deadline_ns - now + 999999) / 1000000),
			    &c->ctx, pool->cfg.conn_ops_arg);
	if (fd < 0)
		return fd;
	cpool__conn_adopt(c, &ep->conns, fd);
	c->hooked = true;
	fl = fcntl(fd, F_GETFL);
	if (fl == -1)
		return -errno;
	c->nonblock = fl & O_NONBLOCK;
	if (getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &proto, &len) == -1)
		return -errno;
	return proto == IPPROTO_TCP
		       ? cpool__sock_set_tcp_options(fd, &pool->cfg)
		       : 0;
}

int
cpool__ep_conn_open(struct cpool_endpoint *ep, unsigned sh, bool leased,
		    struct cpool_conn **out)
{
	struct cpool *pool = ep->pool;
	uint64_t deadline, jitter;
	struct cpool_pick p;
	struct cpool_conn *c;
	int err, win = -1;

	/* During backoff: fail fast instead of every caller dialing. */
	err = cpool__aset_pick(&ep->set,
			       !pool->ops.dial && pool->cfg.happy_eyeballs_ms,
			       leased, &p);
	if (err)
		return err;
	deadline = cpool__now_ns() +
		   (uint64_t)pool->cfg.connect_timeout_ms * 1000000u;
	c = cpool__alloc(sizeof(*c), CPOOL_CACHELINE, sh);
	if (!c) {
		err = -ENOMEM;
		goto fail;
	}
	c->fd = -1;
	c->epfd = -1;
	c->ep = ep;
	c->expires_ns = UINT64_MAX;
	c->nonblock = pool->cfg.flags & CPOOL_NONBLOCK;
	cpool__ep_get(ep);
	if (pool->ops.dial) {
		win = 0;
		err = conn_dial(ep, c, p.a[0], deadline);
	} else {
		err = conn_connect(ep, c, &p, deadline, &win);
	}
	if (!err && pool->cfg.on_connect)
		err = run_on_connect(ep, c, deadline);
	if (!err && pool->ops.open) {
		err = run_open(ep, c, deadline);
		c->hooked |= !err;
	}
	if (!err)
		err = cpool__conn_watch(c, pool->shards[sh].epfd);
	if (err) {
		if (c->fd >= 0)
			cpool__ep_conn_release_fd(ep, c, CPOOL_CLOSE_SOCKET_ERROR,
						  true);
		goto fail_free;
	}
	c->ua = p.a[win];
	c->reaper = &pool->shards[sh].reaper;
	if (pool->lifetime_ns) {
		/* 0-2.5 % less, so a burst of connections does not expire in
		 * the same instant (HikariCP). */
		jitter = cpool__random() % (pool->lifetime_ns / 40 + 1);
		c->expires_ns = cpool__coarse_ns() + pool->lifetime_ns - jitter;
	}
	ADD_RLX(&ep->ctr.connects, 1); /* open = connects - closes */
	cpool__aset_done(&ep->set, c->ua, 0, p.trial[win], false, true);
	if (leased) {
		ADD_RLX(&ep->leased_adj, 1);
		cpool__conn_move(c, CONN_NEW, CONN_LEASED);
	} else {
		cpool__conn_move(c, CONN_NEW, CONN_BUSY);
	}
	*out = c;
	return 0;
fail_free:
	cpool__free(c, sizeof(*c));
	cpool__ep_put(ep); /* never the last: the caller holds one */
fail:
	ADD_RLX(&ep->ctr.connect_failures, 1);
	if (win >= 0) /* connected, then the handshake or the watch failed */
		cpool__aset_done(&ep->set, p.a[win], err, p.trial[win], false,
				 false);
	else if (!c) /* no memory: nothing was tried */
		for (win = 0; win < 2; win++)
			if (p.a[win])
				cpool__aset_done(&ep->set, p.a[win], err,
						 p.trial[win], true, false);
	cpool__log(&pool->cfg, CPOOL_LOG_WARN, "connect to %s: %s", ep->key,
		   cpool_strerror(err));
	return err;
}

enum cpool_verdict
cpool__ep_conn_check(struct cpool_conn *c, enum cpool_verdict tcp)
{
	struct cpool *pool = c->ep->pool;
	enum cpool_verdict v = CPOOL_SOCKET_ERROR;
	int old = cpool__nocancel_begin();

	if (c->nonblock || !cpool__sock_set_nonblock(c->fd, true)) {
		v = pool->ops.check(c, tcp, pool->cfg.conn_ops_arg);
		if ((unsigned)v > CPOOL_SOCKET_ERROR)
			v = CPOOL_SOCKET_ERROR;
		if (!c->nonblock && cpool__sock_set_nonblock(c->fd, false) &&
		    v == CPOOL_ALIVE)
			v = CPOOL_SOCKET_ERROR;
	}
	cpool__nocancel_end(old);
	return v;
}

void
cpool__ep_conn_release_fd(struct cpool_endpoint *ep, struct cpool_conn *c,
			  enum cpool_close_reason reason, bool quiet)
{
	struct cpool *pool = ep->pool;
	int old;

	if (!c->hooked || !pool->ops.close) {
		cpool__conn_close_fd(c, &ep->conns);
		return;
	}
	c->hooked = false;
	/*
	 * Out of the set first: the hook may close the fd, and a fork child
	 * must never neutralise a number reused since. Quiet: the socket is
	 * released here, and the hook's I/O goes to /dev/null.
	 */
	cpool__conn_forget(c, &ep->conns, quiet ? pool->nullfd : -1);
	old = cpool__nocancel_begin();
	if (!pool->ops.close(c, reason, quiet ? CPOOL_CLOSE_QUIET : 0,
			     pool->cfg.conn_ops_arg))
		close(c->fd);
	cpool__nocancel_end(old);
	c->fd = -1;
}

/* Closes after which no byte may reach the peer: it is gone. */
static bool
quiet_reason(enum cpool_close_reason reason)
{
	return reason == CPOOL_CLOSE_PEER_CLOSED ||
	       reason == CPOOL_CLOSE_PEER_RESET ||
	       reason == CPOOL_CLOSE_TIMED_OUT ||
	       reason == CPOOL_CLOSE_SOCKET_ERROR;
}

void
cpool__ep_conn_close(struct cpool_conn *c, enum cpool_close_reason reason,
		     bool leased)
{
	struct cpool_endpoint *ep = c->ep;
	bool forked = LOAD_RLX(&ep->pool->forked);

	cpool__conn_unwatch(c, forked);
	/*
	 * Counted before the fd goes: whoever sees it closed sees the count.
	 * Release: a stats reader that sees this close sees its connect too
	 * (open = connects - closes).
	 */
	__atomic_add_fetch(&ep->ctr.closed[reason], 1, __ATOMIC_RELEASE);
	if (leased)
		ADD_RLX(&ep->leased_adj, -1);
	cpool__ep_conn_release_fd(ep, c, reason,
				  forked || quiet_reason(reason));
	if (!forked)
		cpool__aset_closed(c->ua);
	cpool__conn_move(c, CONN_BUSY, CONN_CLOSED);
	if (forked) { /* the child's admission is the parent's snapshot */
		cpool__ep_conn_free(c);
		return;
	}
	cpool__admit_give_back(&ep->admit);
	/* Its worker may still hold it from an epoll event: the reaper. */
	if (!cpool__stack_push(c->reaper, &c->rnode))
		cpool__ep_conn_free(c);
}

void
cpool__ep_conn_free(struct cpool_conn *c)
{
	struct cpool_endpoint *ep = c->ep;
	struct cpool_uaddr *ua = c->ua;

	cpool__free(c, sizeof(*c));
	cpool__uaddr_put(ua); /* before the endpoint: its set is there */
	cpool__ep_put(ep);
}

static bool
conn_gone(const struct cpool_conn *c)
{
	return LOAD_ACQ(&c->ua->gone);
}

/* Closes the drained connections of gone addresses. */
static void
close_gone(struct cds_list_head *out)
{
	struct cds_list_head *pos, *tmp;

	cds_list_for_each_safe(pos, tmp, out)
		cpool__ep_conn_close(cds_list_entry(pos, struct cpool_conn,
						    link),
				     CPOOL_CLOSE_DRAINED, false);
}

int
cpool__ep_set_update(struct cpool_endpoint *ep, const struct cpool_addr *a,
		     unsigned n)
{
	struct cds_list_head out;
	int left = cpool__aset_update(&ep->set, a, n);

	if (left <= 0)
		return left < 0 ? left : 0;
	/*
	 * A release that read the set before the change may put a
	 * connection back after this walk: its worker finds it when it
	 * arms it (cpool__ep_drain_list()), and a checkout never leases it.
	 */
	CDS_INIT_LIST_HEAD(&out);
	cpool__idle_drain_if(ep->idle, ep->pool->nshards, conn_gone, true,
			     &out);
	close_gone(&out);
	return 0;
}

unsigned
cpool__ep_addr_idle(const struct cpool_endpoint *ep,
		    const struct cpool_uaddr *u)
{
	struct cpool_idle *idle = ep->idle;
	struct cds_list_head *pos;
	unsigned k, n = 0;

	for (k = 0; k < ep->pool->nshards; k++) {
		if (!LOAD_RLX(&idle[k].count))
			continue;
		cpool__spin_lock(&idle[k].lock);
		cds_list_for_each(pos, &idle[k].head)
			n += cds_list_entry(pos, struct cpool_conn, link)->ua ==
			     u;
		cpool__spin_unlock(&idle[k].lock);
	}
	return n;
}

void
cpool__ep_drain_list(struct cpool_endpoint *ep, struct cpool_idle *idle)
{
	struct cds_list_head out;

	CDS_INIT_LIST_HEAD(&out);
	cpool__idle_drain_if(idle, 1, conn_gone, false, &out);
	close_gone(&out);
}

void
cpool__ep_fork_child(struct cpool_endpoint *ep)
{
	struct cds_list_head *pos;
	unsigned k;

	/* Single-threaded here: no lock is taken (a dead thread may own one). */
	STORE_RLX(&ep->dead, -ECHILD);
	STORE_RLX(&ep->admit.close_err, -ECHILD);
	__atomic_or_fetch(&ep->admit.gate, CPOOL_ADMIT_CLOSING,
			  __ATOMIC_RELEASE);
	cds_list_for_each(pos, &ep->conns.all)
		cpool__fd_neutralise(
			ep->pool->nullfd,
			cds_list_entry(pos, struct cpool_conn, all)->fd);
	/* The prepare handler held it: this process's copy is ours to reset. */
	pthread_mutex_init(&ep->conns.lock, NULL);
	/*
	 * A release in the child takes its list's lock to find the endpoint
	 * closing: a dead thread may have held one. The lists are never
	 * walked or changed here again.
	 */
	for (k = 0; k < ep->pool->nshards; k++)
		ep->idle[k].lock.locked = 0;
}
