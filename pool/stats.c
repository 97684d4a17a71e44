/* SPDX-License-Identifier: MIT */
/*
 * Statistics without a global lock on the hot path.
 *
 * The fast paths count in their own (endpoint, shard) list: count and
 * leased under the list lock they already hold, reuses with a relaxed
 * atomic add once the checkout succeeded (so no counter ever goes back,
 * even while a popped connection is being probed and rejected); the slow
 * paths count with relaxed atomics on the endpoint (connects, closes by
 * reason, steals, waits, slow-path reuses, new leases). Derived:
 *   reuses   = list reuses + slow-path reuses
 *   acquires = reuses + new_leases
 *   idle     = sum of list counts
 *   leased   = sum of per-list leased + leases counted outside lists
 *   open     = connects - closes, per endpoint in the table
 * so open == idle + leased at rest is a real cross-check of three
 * independently kept numbers, and open agrees with the close counters of
 * the same snapshot: a reader that waits for open == 0 finds every close
 * counted, and one that waits for a close finds open without it.
 */
#include "stats.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <stddef.h>

#include "alloc.h"
#include "endpoint.h"

/*
 * Adds @src to @dst. The closes are read first, and every load is an
 * acquire (a plain load on x86), so the loads keep their order: a close
 * counted here has its connect counted too (closes are added with release),
 * and ep_read() can sum the closes again after all of them.
 */
static void
counters_add(struct cpool_ep_counters *dst, const struct cpool_ep_counters *src)
{
	unsigned i;

	for (i = 0; i < CPOOL_CLOSE_REASON_END; i++)
		dst->closed[i] += LOAD_ACQ(&src->closed[i]);
	dst->reuses += LOAD_ACQ(&src->reuses);
	dst->new_leases += LOAD_ACQ(&src->new_leases);
	dst->connects += LOAD_ACQ(&src->connects);
	dst->connect_failures += LOAD_ACQ(&src->connect_failures);
	dst->steals += LOAD_ACQ(&src->steals);
	dst->waits += LOAD_ACQ(&src->waits);
	dst->timeouts += LOAD_ACQ(&src->timeouts);
	dst->fail_fasts += LOAD_ACQ(&src->fail_fasts);
	dst->backoffs += LOAD_ACQ(&src->backoffs);
	dst->prewarms += LOAD_ACQ(&src->prewarms);
	dst->ejections += LOAD_ACQ(&src->ejections);
	dst->dns_refreshes += LOAD_ACQ(&src->dns_refreshes);
	dst->dns_failures += LOAD_ACQ(&src->dns_failures);
}

struct stats_acc {
	struct cpool_ep_counters ctr;
	int64_t open, idle, leased, addresses, connecting;
};

static uint64_t
closes_sum(const struct cpool_ep_counters *c)
{
	uint64_t n = 0;

	for (unsigned i = 0; i < CPOOL_CLOSE_REASON_END; i++)
		n += LOAD_ACQ(&c->closed[i]);
	return n;
}

/*
 * Reads one endpoint's counters into @c (zeroed) and returns its open
 * connections, connects - closes, as of one moment: the closes are summed
 * again after the rest and the read is retried while a close came between,
 * so open never counts a close and a connect that straddled the read (it
 * could then pass max_conns_per_endpoint). A very busy endpoint gets the
 * last try.
 */
static int64_t
ep_read(const struct cpool_endpoint *ep, struct cpool_ep_counters *c)
{
	for (int tries = 0;; tries++) {
		memset(c, 0, sizeof(*c));
		counters_add(c, &ep->ctr);
		if (closes_sum(&ep->ctr) == closes_sum(c) || tries == 64)
			return (int64_t)(c->connects - closes_sum(c));
	}
}

/* The set's members and the connects in flight to any of its addresses. */
static unsigned
addresses_read(const struct cpool_endpoint *ep, int64_t *connecting)
{
	struct cpool_aset *set = (struct cpool_aset *)&ep->set;
	struct cds_list_head *pos;
	unsigned n;

	pthread_mutex_lock(&set->lock);
	n = set->n;
	cds_list_for_each(pos, &set->members)
		*connecting += LOAD_RLX(&cds_list_entry(pos, struct cpool_uaddr,
							link)
						->connecting);
	cds_list_for_each(pos, &set->draining)
		*connecting += LOAD_RLX(&cds_list_entry(pos, struct cpool_uaddr,
							link)
						->connecting);
	pthread_mutex_unlock(&set->lock);
	return n;
}

static void
ep_collect(const struct cpool_endpoint *ep, struct stats_acc *a)
{
	struct cpool_ep_counters c;
	unsigned i;

	a->open += ep_read(ep, &c);
	counters_add(&a->ctr, &c);
	for (i = 0; i < ep->pool->nshards; i++) {
		a->ctr.reuses += LOAD_RLX(&ep->idle[i].reuses);
		a->idle += LOAD_RLX(&ep->idle[i].count);
		a->leased += LOAD_RLX(&ep->idle[i].leased);
	}
	a->leased += LOAD_RLX(&ep->leased_adj);
	a->addresses += addresses_read(ep, &a->connecting);
}

static uint32_t
gauge(int64_t v)
{
	return v < 0 ? 0 : v > UINT32_MAX ? UINT32_MAX : (uint32_t)v;
}

static void
acc_publish(const struct stats_acc *a, struct cpool_stats *s)
{
	unsigned i;

	s->size = sizeof(*s);
	s->reuses = a->ctr.reuses;
	s->acquires = s->reuses + a->ctr.new_leases;
	s->connects = a->ctr.connects;
	s->connect_failures = a->ctr.connect_failures;
	s->steals = a->ctr.steals;
	s->waits = a->ctr.waits;
	s->timeouts = a->ctr.timeouts;
	s->fail_fasts = a->ctr.fail_fasts;
	s->backoffs = a->ctr.backoffs;
	s->prewarms = a->ctr.prewarms;
	for (i = 0; i < CPOOL_CLOSE_REASON_COUNT; i++)
		s->closed[i] = a->ctr.closed[i];
	for (i = CPOOL_CLOSE_REASON_COUNT; i < CPOOL_CLOSE_REASON_END; i++)
		s->closed_more[i - CPOOL_CLOSE_REASON_COUNT] = a->ctr.closed[i];
	s->ejections = a->ctr.ejections;
	s->dns_refreshes = a->ctr.dns_refreshes;
	s->dns_failures = a->ctr.dns_failures;
	s->addresses = gauge(a->addresses);
	s->connecting = gauge(a->connecting);
	s->open = gauge(a->open);
	s->idle = gauge(a->idle);
	s->leased = gauge(a->leased);
}

#define CPOOL_STATS_SIZE_V1                                                    \
	(offsetof(struct cpool_stats, leased) + sizeof(uint32_t))

_Static_assert(CPOOL_CLOSE_REASON_END - CPOOL_CLOSE_REASON_COUNT <=
		       CPOOL_CLOSE_MORE_SLOTS,
	       "a close reason past closed_more[]: append another array");

uint64_t
cpool_stats_closed(const struct cpool_stats *s, enum cpool_close_reason r)
{
	size_t off;

	if (!s || (unsigned)r >= CPOOL_CLOSE_REASON_END)
		return 0;
	if ((unsigned)r < CPOOL_CLOSE_REASON_COUNT)
		return s->size >= CPOOL_STATS_SIZE_V1 ? s->closed[r] : 0;
	off = offsetof(struct cpool_stats, closed_more) +
	      sizeof(uint64_t) * (r - CPOOL_CLOSE_REASON_COUNT);
	return s->size >= off + sizeof(uint64_t)
		       ? s->closed_more[r - CPOOL_CLOSE_REASON_COUNT]
		       : 0;
}

/* The state bits of @u. Set lock held. */
static unsigned
addr_state(const struct cpool_uaddr *u, uint64_t now)
{
	unsigned st = 0;

	if (LOAD_RLX(&u->gone))
		st |= CPOOL_ADDR_DRAINING;
	if (u->ejected && now < u->ejected_until_ns)
		st |= CPOOL_ADDR_EJECTED;
	else if (u->fail_streak && now < u->backoff_until_ns)
		st |= CPOOL_ADDR_BACKOFF;
	return st;
}

static void
addr_fill(const struct cpool_endpoint *ep, const struct cpool_uaddr *u,
	  uint64_t now, struct cpool_addr_stats *o)
{
	unsigned open = LOAD_RLX(&u->open);

	memset(o, 0, sizeof(*o));
	snprintf(o->address, sizeof(o->address), "%s", u->text);
	o->state = addr_state(u, now);
	o->open = open;
	o->leased = cpool__uaddr_leased(open, cpool__ep_addr_idle(ep, u));
	o->connecting = LOAD_RLX(&u->connecting);
	o->failures = u->fail_streak;
	o->connects = LOAD_RLX(&u->connects);
	o->connect_failures = LOAD_RLX(&u->connect_failures);
	o->ejections = LOAD_RLX(&u->ejections);
	if (o->state & CPOOL_ADDR_EJECTED)
		o->ejected_ms = (u->ejected_until_ns - now + 999999) / 1000000;
}

#define CPOOL_ADDR_STATS_SIZE_V1                                               \
	(offsetof(struct cpool_addr_stats, ejected_ms) + sizeof(uint64_t))

/*
 * Fills up to @n entries of @out (each @size bytes) for @ep's members,
 * then its draining addresses; returns how many it has.
 */
static unsigned
ep_addresses(const struct cpool_endpoint *ep, unsigned char *out, size_t size,
	     unsigned n)
{
	struct cpool_aset *set = (struct cpool_aset *)&ep->set;
	struct cds_list_head *heads[2] = { &set->members, &set->draining };
	uint64_t now = cpool__now_ns();
	struct cpool_addr_stats one;
	struct cds_list_head *pos;
	unsigned i = 0, h;

	pthread_mutex_lock(&set->lock);
	for (h = 0; h < 2; h++)
		cds_list_for_each(pos, heads[h]) {
			if (i < n) {
				addr_fill(ep,
					  cds_list_entry(pos,
							 struct cpool_uaddr,
							 link),
					  now, &one);
				one.size = size;
				memcpy(out + i * size, &one,
				       size < sizeof(one) ? size : sizeof(one));
			}
			i++;
		}
	pthread_mutex_unlock(&set->lock);
	return i;
}

int
cpool_stats_addresses(struct cpool *pool, const char *address,
		      struct cpool_addr_stats *out, unsigned n,
		      unsigned *count)
{
	struct cpool_endpoint *ep;
	size_t size = 0;

	if (!pool || !address || !count || (!out && n))
		return -EINVAL;
	if (n) {
		size = out->size;
		if (size < CPOOL_ADDR_STATS_SIZE_V1)
			return -EINVAL;
	}
	if (LOAD_RLX(&pool->forked))
		return -ECHILD;
	cpool__rcu_read_lock();
	ep = LOAD_RLX(&pool->state) ? NULL : cpool__ep_lookup(pool, address);
	if (ep)
		cpool__ep_get(ep);
	cpool__rcu_read_unlock();
	if (!ep)
		return -ENOENT;
	*count = ep_addresses(ep, (unsigned char *)out, size, n);
	cpool__ep_put(ep);
	return 0;
}

int
cpool_stats_get(struct cpool *pool, const char *address,
		struct cpool_stats *out)
{
	struct stats_acc a;
	struct cpool_stats s;
	struct cpool_endpoint *ep;
	struct cds_list_head *pos;
	size_t size;

	if (!pool || !out || out->size < CPOOL_STATS_SIZE_V1)
		return -EINVAL;
	if (LOAD_RLX(&pool->forked))
		return -ECHILD;
	memset(&a, 0, sizeof(a));
	if (address) {
		cpool__rcu_read_lock();
		/* After shutdown the table is gone: nothing has that name. */
		ep = LOAD_RLX(&pool->state) ? NULL
					    : cpool__ep_lookup(pool, address);
		if (ep)
			ep_collect(ep, &a);
		cpool__rcu_read_unlock();
		if (!ep)
			return -ENOENT;
	} else {
		pthread_mutex_lock(&pool->ep_lock);
		/* Not _for_each_entry: the head is no (64-byte aligned) entry. */
		cds_list_for_each(pos, &pool->endpoints)
			ep_collect(cds_list_entry(pos, struct cpool_endpoint,
						  all),
				   &a);
		counters_add(&a.ctr, &pool->retired);
		pthread_mutex_unlock(&pool->ep_lock);
	}
	memset(&s, 0, sizeof(s));
	acc_publish(&a, &s);
	size = out->size < sizeof(s) ? out->size : sizeof(s);
	s.size = out->size;
	memcpy(out, &s, size);
	return 0;
}

/*
 * Prometheus text exposition (format 0.0.4). Pool-wide series carry no
 * endpoint label; per-endpoint series carry endpoint="<address>" (removed
 * endpoints are only in the pool-wide ones); closes carry reason="...".
 */
struct fmt_buf {
	char *buf;
	size_t len, off;
	bool full;
};

static void __attribute__((format(printf, 2, 3)))
fmt_put(struct fmt_buf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (b->full)
		return;
	va_start(ap, fmt);
	n = vsnprintf(b->off < b->len ? b->buf + b->off : NULL,
		      b->off < b->len ? b->len - b->off : 0, fmt, ap);
	va_end(ap);
	if (n < 0 || b->off + (size_t)n >= b->len) {
		b->full = true;
		return;
	}
	b->off += (size_t)n;
}

/* A label value with \, " and newline escaped. */
static void
fmt_label(struct fmt_buf *b, const char *v, char *tmp, size_t tmplen)
{
	size_t i = 0;

	for (; *v && i + 2 < tmplen; v++) {
		if (*v == '\\' || *v == '"' || *v == '\n') {
			tmp[i++] = '\\';
			tmp[i++] = *v == '\n' ? 'n' : *v;
		} else {
			tmp[i++] = *v;
		}
	}
	tmp[i] = '\0';
	(void)b;
}

struct fmt_series {
	const char *label; /* "" or "endpoint=\"...\"" */
	struct cpool_stats s;
};

static const struct {
	const char *name, *type, *help;
	size_t off;
	bool gauge32;
} fmt_metrics[] = {
#define C(f, h) { "cpool_" #f "_total", "counter", h, offsetof(struct cpool_stats, f), false }
#define G(f, n, h) { "cpool_" n, "gauge", h, offsetof(struct cpool_stats, f), true }
	C(acquires, "Successful cpool_acquire() calls."),
	C(reuses, "Acquires served from the idle set."),
	C(connects, "Connections opened."),
	C(connect_failures, "Connect or on_connect failures."),
	C(steals, "Idle connections taken from another shard."),
	C(waits, "Acquires that waited at the cap."),
	C(timeouts, "Acquires that returned -ETIMEDOUT."),
	C(fail_fasts, "Acquires refused at once during connect backoff."),
	C(backoffs, "Connect failures that started or extended backoff."),
	C(prewarms, "Connections opened by the workers."),
	C(ejections, "Addresses ejected after consecutive connect failures."),
	C(dns_refreshes, "DNS answers that refreshed a name's set."),
	C(dns_failures, "DNS refreshes that failed (the set was kept)."),
	G(addresses, "addresses", "Addresses in the endpoints' sets."),
	G(connecting, "connecting", "Connects in flight."),
	G(open, "open_connections", "Connections open."),
	G(idle, "idle_connections", "Connections idle in the pool."),
	G(leased, "leased_connections", "Connections leased to callers."),
#undef C
#undef G
};

static uint64_t
metric_value(const struct cpool_stats *s, unsigned m)
{
	const char *p = (const char *)s + fmt_metrics[m].off;
	uint64_t v64;
	uint32_t v32;

	if (fmt_metrics[m].gauge32) {
		memcpy(&v32, p, sizeof(v32));
		return v32;
	}
	memcpy(&v64, p, sizeof(v64));
	return v64;
}

static void
fmt_all(struct fmt_buf *b, const struct fmt_series *ser, unsigned n)
{
	unsigned m, i, r;

	for (m = 0; m < sizeof(fmt_metrics) / sizeof(fmt_metrics[0]); m++) {
		fmt_put(b, "# HELP %s %s\n# TYPE %s %s\n", fmt_metrics[m].name,
			fmt_metrics[m].help, fmt_metrics[m].name,
			fmt_metrics[m].type);
		for (i = 0; i < n; i++)
			fmt_put(b, "%s%s%s%s %llu\n", fmt_metrics[m].name,
				*ser[i].label ? "{" : "", ser[i].label,
				*ser[i].label ? "}" : "",
				(unsigned long long)metric_value(&ser[i].s, m));
	}
	fmt_put(b, "# HELP cpool_closed_total Connections closed, by reason.\n"
		   "# TYPE cpool_closed_total counter\n");
	for (i = 0; i < n; i++)
		for (r = CPOOL_CLOSE_PEER_CLOSED; r < CPOOL_CLOSE_REASON_END;
		     r++)
			fmt_put(b, "cpool_closed_total{%s%sreason=\"%s\"} %llu\n",
				ser[i].label, *ser[i].label ? "," : "",
				cpool_close_reason_name(r),
				(unsigned long long)cpool_stats_closed(
					&ser[i].s, (enum cpool_close_reason)r));
}

/* One address's series: its endpoint's label and its numbers. */
struct fmt_addr {
	const char *label; /* "endpoint=\"...\"" */
	struct cpool_addr_stats s;
};

static const struct {
	const char *name, *type, *help;
	size_t off;
	bool gauge32;
} fmt_addr_metrics[] = {
#define C(f, n, h) { "cpool_address_" n, "counter", h, offsetof(struct cpool_addr_stats, f), false }
#define G(f, n, h) { "cpool_address_" n, "gauge", h, offsetof(struct cpool_addr_stats, f), true }
	G(open, "open_connections", "Connections open to the address."),
	G(leased, "leased_connections", "Connections to the address leased."),
	G(connecting, "connecting", "Connects to the address in flight."),
	G(failures, "consecutive_failures", "Connect failures in a row."),
	G(state, "state", "0 healthy; bits: 1 backoff, 2 ejected, 4 draining."),
	C(connects, "connects_total", "Connections opened to the address."),
	C(connect_failures, "connect_failures_total", "Connects that failed."),
	C(ejections, "ejections_total", "Times the address was ejected."),
#undef C
#undef G
};

static void
fmt_addresses(struct fmt_buf *b, const struct fmt_addr *fa, unsigned n)
{
	const char *p;
	unsigned m, i;
	uint64_t v64;
	uint32_t v32;
	char esc[2 * CPOOL_ADDR_TEXT + 1];

	if (!n)
		return;
	for (m = 0; m < sizeof(fmt_addr_metrics) / sizeof(fmt_addr_metrics[0]);
	     m++) {
		fmt_put(b, "# HELP %s %s\n# TYPE %s %s\n",
			fmt_addr_metrics[m].name, fmt_addr_metrics[m].help,
			fmt_addr_metrics[m].name, fmt_addr_metrics[m].type);
		for (i = 0; i < n; i++) {
			p = (const char *)&fa[i].s + fmt_addr_metrics[m].off;
			if (fmt_addr_metrics[m].gauge32) {
				memcpy(&v32, p, sizeof(v32));
				v64 = v32;
			} else {
				memcpy(&v64, p, sizeof(v64));
			}
			fmt_label(b, fa[i].s.address, esc, sizeof(esc));
			fmt_put(b, "%s{%s,address=\"%s\"} %llu\n",
				fmt_addr_metrics[m].name, fa[i].label, esc,
				(unsigned long long)v64);
		}
	}
}

/*
 * Appends @ep's addresses to *@fa (grown as needed, *@cap entries), each
 * with @label. Returns false on no memory.
 */
static bool
collect_addresses(const struct cpool_endpoint *ep, const char *label,
		  struct fmt_addr **fa, unsigned *n, unsigned *cap)
{
	struct cpool_addr_stats *tmp;
	struct fmt_addr *grown;
	unsigned want, got, i;

	want = ep_addresses(ep, NULL, 0, 0) + 4; /* a few more may come */
	tmp = cpool__alloc(sizeof(*tmp) * want, 0, 0);
	if (!tmp)
		return false;
	got = ep_addresses(ep, (unsigned char *)tmp, sizeof(*tmp), want);
	if (got > want)
		got = want;
	if (*n + got > *cap) {
		unsigned ncap = (*n + got) * 2;

		grown = cpool__alloc(sizeof(*grown) * ncap, 0, 0);
		if (!grown) {
			cpool__free(tmp, sizeof(*tmp) * want);
			return false;
		}
		if (*n)
			memcpy(grown, *fa, sizeof(*grown) * *n);
		cpool__free(*fa, sizeof(**fa) * *cap);
		*fa = grown;
		*cap = ncap;
	}
	for (i = 0; i < got; i++) {
		(*fa)[*n + i].label = label;
		(*fa)[*n + i].s = tmp[i];
	}
	*n += got;
	cpool__free(tmp, sizeof(*tmp) * want);
	return true;
}

int
cpool_stats_format(struct cpool *pool, char *buf, size_t len)
{
	struct fmt_buf b = { .buf = buf, .len = len };
	struct fmt_series *ser;
	struct fmt_addr *fa = NULL;
	unsigned nfa = 0, fcap = 0;
	bool nomem = false;
	struct cpool_endpoint *ep;
	struct stats_acc a;
	char esc[2 * CPOOL_ADDRESS_MAX + 1];
	size_t nser = 1, i = 1, lsize = sizeof(esc) + 16;
	char *labels;
	struct cds_list_head *pos;
	int ret;

	if (!pool || (!buf && len))
		return -EINVAL;
	if (LOAD_RLX(&pool->forked))
		return -ECHILD;
	pthread_mutex_lock(&pool->ep_lock);
	cds_list_for_each(pos, &pool->endpoints)
		nser++;
	ser = cpool__alloc(sizeof(*ser) * nser, 0, 0);
	labels = cpool__alloc(lsize * nser, 0, 0);
	if (!ser || !labels) {
		pthread_mutex_unlock(&pool->ep_lock);
		cpool__free(ser, sizeof(*ser) * nser);
		cpool__free(labels, lsize * nser);
		return -ENOMEM;
	}
	memset(&a, 0, sizeof(a));
	cds_list_for_each(pos, &pool->endpoints) {
		struct stats_acc one;

		ep = cds_list_entry(pos, struct cpool_endpoint, all);
		memset(&one, 0, sizeof(one));
		ep_collect(ep, &one);
		ep_collect(ep, &a);
		if (cpool__admit_closing(&ep->admit))
			continue;
		fmt_label(&b, ep->key, esc, sizeof(esc));
		snprintf(labels + i * lsize, lsize, "endpoint=\"%s\"", esc);
		ser[i].label = labels + i * lsize;
		acc_publish(&one, &ser[i].s);
		if (!nomem)
			nomem = !collect_addresses(ep, ser[i].label, &fa, &nfa,
						   &fcap);
		i++;
	}
	counters_add(&a.ctr, &pool->retired);
	pthread_mutex_unlock(&pool->ep_lock);
	ser[0].label = "";
	acc_publish(&a, &ser[0].s);
	fmt_all(&b, ser, (unsigned)i);
	fmt_addresses(&b, fa, nfa);
	cpool__free(fa, sizeof(*fa) * fcap);
	cpool__free(ser, sizeof(*ser) * nser);
	cpool__free(labels, lsize * nser);
	if (nomem)
		return -ENOMEM;
	if (b.full)
		return -ENOSPC;
	ret = (int)b.off;
	return ret;
}
