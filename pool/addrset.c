/* SPDX-License-Identifier: MIT */
/*
 * Address sets: per-address health and the choice of an address.
 *
 * Health follows Envoy's outlier detection, kept small:
 *  - every connect failure that is the address's (not the host's: no fd,
 *    no memory) starts or extends its backoff, 10 ms doubling to 5 s, less
 *    up to 25 % so callers do not come back in lockstep;
 *  - after eject_after_failures of them in a row it is ejected for 1 s
 *    times its ejections in a row, at most 30 s, unless that would eject
 *    more than max_ejection_percent of the set (at least one address of a
 *    set of several may always go);
 *  - when its time is up, one trial connect decides: success clears
 *    everything (the ejection count too), failure backs off (and ejects)
 *    again;
 *  - an address in backoff or ejected gets no new connection, but its idle
 *    ones keep serving (they passed their probe).
 *
 * Balancing is Envoy's least-request with choice_count 2: two random
 * healthy addresses, the one with fewer leased plus connecting
 * connections; a tie goes to the one with fewer open (so a worker's
 * prewarm, which dials while nothing is leased, spreads its idle
 * connections), then to a coin. Leased is open minus idle, and idle is
 * counted in the endpoint's lists (s->idle_of) only when it can matter:
 * a caller dials only when it found no idle connection anywhere, so the
 * walk is usually over empty lists, and nothing is counted on the lease
 * fast paths.
 *
 * Everything here runs on the connect path, under the set's mutex: one
 * lock per new connection next to a connect() is noise.
 */
#include "addrset.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/un.h>

#include "alloc.h"

#define BACKOFF_MIN_NS 10000000ull   /* 10 ms */
#define BACKOFF_MAX_NS 5000000000ull /* 5 s */
#define EJECT_BASE_NS 1000000000ull  /* 1 s */
#define EJECT_MAX_NS 30000000000ull  /* 30 s */

void
cpool__addr_text(const struct sockaddr_storage *ss, socklen_t len, char *buf,
		 size_t size)
{
	char ip[INET6_ADDRSTRLEN];

	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *in = (const void *)ss;

		inet_ntop(AF_INET, &in->sin_addr, ip, sizeof(ip));
		snprintf(buf, size, "%s:%u", ip, ntohs(in->sin_port));
	} else if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const void *)ss;

		inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof(ip));
		snprintf(buf, size, "[%s]:%u", ip, ntohs(in6->sin6_port));
	} else {
		const struct sockaddr_un *un = (const void *)ss;
		size_t n = len > offsetof(struct sockaddr_un, sun_path)
				   ? len - offsetof(struct sockaddr_un,
						    sun_path)
				   : 0;

		if (n && un->sun_path[0] == '\0')
			snprintf(buf, size, "unix:@%.*s", (int)(n - 1),
				 un->sun_path + 1);
		else
			snprintf(buf, size, "unix:%.*s", (int)n, un->sun_path);
	}
}

void
cpool__aset_init(struct cpool_aset *s, const struct cpool_config *cfg,
		 bool named, unsigned *ndraining, struct cpool_ep_counters *ctr)
{
	memset(s, 0, sizeof(*s));
	pthread_mutex_init(&s->lock, NULL);
	CDS_INIT_LIST_HEAD(&s->members);
	CDS_INIT_LIST_HEAD(&s->draining);
	s->named = named;
	s->eject_after = cfg->eject_after_failures;
	s->eject_pct = cfg->max_ejection_percent;
	s->ndraining = ndraining;
	s->ctr = ctr;
}

static void
uaddr_free(struct cpool_uaddr *a)
{
	cpool__free(a, sizeof(*a));
}

void
cpool__aset_destroy(struct cpool_aset *s)
{
	struct cds_list_head *pos, *tmp;

	cds_list_for_each_safe(pos, tmp, &s->members)
		uaddr_free(cds_list_entry(pos, struct cpool_uaddr, link));
	/*
	 * Draining members free themselves with their last connection; only
	 * a fork child's destroy, which frees connections without their
	 * references, leaves any.
	 */
	cds_list_for_each_safe(pos, tmp, &s->draining)
		uaddr_free(cds_list_entry(pos, struct cpool_uaddr, link));
	pthread_mutex_destroy(&s->lock);
}

static bool
same_addr(const struct cpool_uaddr *u, const struct cpool_addr *a)
{
	return u->salen == a->len && memcmp(&u->sa, &a->ss, a->len) == 0;
}

static struct cpool_uaddr *
uaddr_new(struct cpool_aset *s, const struct cpool_addr *a)
{
	struct cpool_uaddr *u = cpool__alloc(sizeof(*u), CPOOL_CACHELINE, 0);

	if (!u)
		return NULL;
	memset(u, 0, sizeof(*u));
	u->set = s;
	u->refs = 1; /* the set's */
	u->family = a->family;
	u->salen = a->len;
	memcpy(&u->sa, &a->ss, a->len);
	cpool__addr_text(&u->sa, u->salen, u->text, sizeof(u->text));
	return u;
}

int
cpool__aset_update(struct cpool_aset *s, const struct cpool_addr *a,
		   unsigned n)
{
	struct cpool_uaddr *fresh[n ? n : 1], *u;
	struct cds_list_head keep, *pos, *tmp;
	unsigned i, left = 0, nf = 0;
	bool found;

	/* Allocate first: a failure changes nothing. */
	pthread_mutex_lock(&s->lock);
	for (i = 0; i < n; i++) {
		found = false;
		for (unsigned j = 0; j < i && !found; j++) /* a duplicate */
			found = a[j].len == a[i].len &&
				!memcmp(&a[j].ss, &a[i].ss, a[i].len);
		cds_list_for_each(pos, &s->members)
			if (same_addr(cds_list_entry(pos, struct cpool_uaddr,
						     link),
				      &a[i]))
				found = true;
		fresh[i] = NULL;
		if (found)
			continue;
		fresh[i] = uaddr_new(s, &a[i]);
		if (!fresh[i]) {
			while (i--)
				if (fresh[i])
					uaddr_free(fresh[i]);
			pthread_mutex_unlock(&s->lock);
			return -ENOMEM;
		}
		nf++;
	}
	/* The new order is the answer's: members that stay, moved. */
	CDS_INIT_LIST_HEAD(&keep);
	for (i = 0; i < n; i++) {
		u = fresh[i];
		if (!u) {
			cds_list_for_each_safe(pos, tmp, &s->members) {
				struct cpool_uaddr *m = cds_list_entry(
					pos, struct cpool_uaddr, link);

				if (same_addr(m, &a[i])) {
					u = m;
					break;
				}
			}
			if (!u)
				continue; /* a duplicate in the answer */
			cds_list_del(&u->link);
		}
		cds_list_add_tail(&u->link, &keep);
	}
	/* What is left in members has gone from the answer. */
	cds_list_for_each_safe(pos, tmp, &s->members) {
		u = cds_list_entry(pos, struct cpool_uaddr, link);
		cds_list_del(&u->link);
		left++;
		if (u->ejected)
			s->nejected--;
		STORE_REL(&u->gone, 1);
		if (LOAD_RLX(&u->open) || LOAD_RLX(&u->connecting) ||
		    LOAD_RLX(&u->refs) > 1) {
			if (LOAD_RLX(&u->open))
				ADD_RLX(s->ndraining, 1);
			cds_list_add_tail(&u->link, &s->draining);
			/* The set's reference goes: connections keep it. */
			if (__atomic_sub_fetch(&u->refs, 1, __ATOMIC_ACQ_REL) ==
			    0) {
				cds_list_del(&u->link);
				uaddr_free(u);
			}
		} else {
			uaddr_free(u);
		}
	}
	cds_list_splice(&keep, &s->members);
	s->n = 0;
	cds_list_for_each(pos, &s->members)
		s->n++;
	if (s->n)
		s->pref_family = cds_list_entry(s->members.next,
						struct cpool_uaddr, link)
					 ->family;
	pthread_mutex_unlock(&s->lock);
	(void)nf;
	return (int)left;
}

/* Whether @u may get a new connection now (trial: only as the trial). */
static bool
healthy(const struct cpool_uaddr *u, uint64_t now, bool *trial)
{
	*trial = false;
	if (!u->fail_streak && !u->ejected)
		return true;
	/* An ejection's time replaces the backoff's. */
	if (u->trial ||
	    now < (u->ejected ? u->ejected_until_ns : u->backoff_until_ns))
		return false;
	*trial = true;
	return true;
}

/* A candidate's load: leased + connecting, and open for a tie. */
struct load {
	unsigned busy;
	unsigned open;
};

static struct load
load(const struct cpool_aset *s, const struct cpool_uaddr *u)
{
	struct load l = { LOAD_RLX(&u->connecting), LOAD_RLX(&u->open) };
	unsigned idle = l.open && s->idle_of ? s->idle_of(s->idle_arg, u) : 0;

	l.busy += cpool__uaddr_leased(l.open, idle);
	return l;
}

/* Whether @b carries less than @a (a coin for a full tie). */
static bool
lighter(struct load b, struct load a)
{
	if (b.busy != a.busy)
		return b.busy < a.busy;
	if (b.open != a.open)
		return b.open < a.open;
	return cpool__random() & 1;
}

/*
 * Power of two choices among the members that pass: @family (0 any,
 * -family every other), and healthy unless @panic.
 */
static struct cpool_uaddr *
choose(struct cpool_aset *s, uint64_t now, int family, bool panic,
       bool *trial)
{
	struct cpool_uaddr *cand[2] = { NULL, NULL }, *u;
	bool tr[2] = { false, false }, t;
	struct cds_list_head *pos;
	unsigned k = 0;

	/* Reservoir sampling of two distinct candidates in one pass. */
	cds_list_for_each(pos, &s->members) {
		u = cds_list_entry(pos, struct cpool_uaddr, link);
		if (family > 0 && u->family != family)
			continue;
		if (family < 0 && u->family == -family)
			continue;
		t = false;
		if (!panic && !healthy(u, now, &t))
			continue;
		k++;
		if (k <= 2) {
			cand[k - 1] = u;
			tr[k - 1] = t;
		} else {
			unsigned r = (unsigned)(cpool__random() % k);

			if (r < 2) {
				cand[r] = u;
				tr[r] = t;
			}
		}
	}
	if (!cand[0])
		return NULL;
	if (cand[1] && lighter(load(s, cand[1]), load(s, cand[0]))) {
		cand[0] = cand[1];
		tr[0] = tr[1];
	}
	*trial = tr[0];
	return cand[0];
}

static void
take(struct cpool_uaddr *u, bool trial)
{
	if (trial)
		u->trial = true;
	ADD_RLX(&u->refs, 1);
	ADD_RLX(&u->connecting, 1);
}

int
cpool__aset_pick(struct cpool_aset *s, bool race, bool count,
		 struct cpool_pick *p)
{
	uint64_t now = cpool__now_ns();
	struct cpool_uaddr *u;
	bool panic = false;
	int fam, err;

	memset(p, 0, sizeof(*p));
	pthread_mutex_lock(&s->lock);
	fam = s->pref_family;
	u = choose(s, now, fam, false, &p->trial[0]);
	if (!u)
		u = choose(s, now, -fam, false, &p->trial[0]);
	if (!u && s->n > 1) {
		/* Nothing healthy: try them all rather than fail them all. */
		panic = true;
		u = choose(s, now, 0, true, &p->trial[0]);
	}
	if (!u) {
		u = s->n ? cds_list_entry(s->members.next, struct cpool_uaddr,
					  link)
			 : NULL;
		err = u && u->last_err ? u->last_err : -ECONNREFUSED;
		pthread_mutex_unlock(&s->lock);
		if (count)
			ADD_RLX(&s->ctr->fail_fasts, 1);
		return err;
	}
	take(u, p->trial[0]);
	p->a[0] = u;
	if (race) {
		u = choose(s, now, -p->a[0]->family, panic, &p->trial[1]);
		if (u) {
			take(u, p->trial[1]);
			p->a[1] = u;
		}
	}
	pthread_mutex_unlock(&s->lock);
	return 0;
}

/* Failures of this host, not of the address: no verdict. */
static bool
local_error(int err)
{
	return err == -EMFILE || err == -ENFILE || err == -ENOMEM ||
	       err == -ENOBUFS || err == -ENOSPC || err == -EAGAIN;
}

/* A connect to @u failed: backoff, and ejection past the threshold. */
static void
failed_locked(struct cpool_aset *s, struct cpool_uaddr *u, int err,
	      uint64_t now)
{
	unsigned streak = ++u->fail_streak, cap;
	uint64_t delay;

	delay = streak >= 10 ? BACKOFF_MAX_NS : BACKOFF_MIN_NS << (streak - 1);
	if (delay > BACKOFF_MAX_NS)
		delay = BACKOFF_MAX_NS;
	delay -= cpool__random() % (delay / 4 + 1);
	u->last_err = err;
	u->backoff_until_ns = now + delay;
	ADD_RLX(&s->ctr->backoffs, 1);
	if (!s->eject_after || streak < s->eject_after || s->n < 2 ||
	    u->gone)
		return;
	if (!u->ejected) {
		cap = s->n * s->eject_pct / 100;
		if (cap < 1)
			cap = 1;
		if (s->nejected + 1 > cap)
			return; /* backoff only: the set must keep serving */
		u->ejected = true;
		s->nejected++;
	} else if (now < u->ejected_until_ns) {
		return; /* tried while out (panic): it stays out, no longer */
	}
	/* Ejected now, or again after its trial failed: longer each time. */
	u->eject_streak++;
	delay = EJECT_BASE_NS * u->eject_streak;
	u->ejected_until_ns = now + (delay > EJECT_MAX_NS ? EJECT_MAX_NS
							  : delay);
	ADD_RLX(&u->ejections, 1);
	ADD_RLX(&s->ctr->ejections, 1);
}

void
cpool__aset_done(struct cpool_aset *s, struct cpool_uaddr *u, int err,
		 bool trial, bool cancelled, bool opened)
{
	pthread_mutex_lock(&s->lock);
	if (!cancelled && !err) {
		ADD_RLX(&u->connects, 1);
		if (u->fail_streak || u->ejected) {
			if (u->ejected && !u->gone)
				s->nejected--;
			u->fail_streak = 0;
			u->ejected = false;
			u->eject_streak = 0;
		}
	} else if (!cancelled) {
		ADD_RLX(&u->connect_failures, 1);
		if (!local_error(err))
			failed_locked(s, u, err, cpool__now_ns());
	}
	if (trial)
		u->trial = false;
	if (opened && ADD_RLX(&u->open, 1) == 1 && u->gone)
		ADD_RLX(s->ndraining, 1); /* gone while it connected */
	ADD_RLX(&u->connecting, -1);
	pthread_mutex_unlock(&s->lock);
	if (!opened) /* else the pick's reference is the connection's */
		cpool__uaddr_put(u);
}

void
cpool__aset_prefer(struct cpool_aset *s, int family)
{
	pthread_mutex_lock(&s->lock);
	s->pref_family = family;
	pthread_mutex_unlock(&s->lock);
}

void
cpool__aset_closed(struct cpool_uaddr *u)
{
	struct cpool_aset *s = u->set;

	/* Under the lock: gone and open change together for ndraining. */
	pthread_mutex_lock(&s->lock);
	if (ADD_RLX(&u->open, -1) == 0 && u->gone)
		ADD_RLX(s->ndraining, -1);
	pthread_mutex_unlock(&s->lock);
}

void
cpool__uaddr_put(struct cpool_uaddr *u)
{
	struct cpool_aset *s = u->set;

	if (__atomic_sub_fetch(&u->refs, 1, __ATOMIC_ACQ_REL))
		return;
	/* Only a gone address loses its last reference: it is draining. */
	pthread_mutex_lock(&s->lock);
	cds_list_del(&u->link);
	pthread_mutex_unlock(&s->lock);
	uaddr_free(u);
}

uint64_t
cpool__aset_ready_ns(struct cpool_aset *s)
{
	uint64_t t = UINT64_MAX, now = cpool__now_ns(), r;
	struct cds_list_head *pos;
	struct cpool_uaddr *u;

	pthread_mutex_lock(&s->lock);
	cds_list_for_each(pos, &s->members) {
		u = cds_list_entry(pos, struct cpool_uaddr, link);
		r = u->ejected ? u->ejected_until_ns : u->backoff_until_ns;
		if (!u->fail_streak && !u->ejected)
			r = 0;
		if (r < t)
			t = r;
	}
	pthread_mutex_unlock(&s->lock);
	return t <= now ? 0 : t;
}
