/* SPDX-License-Identifier: MIT */
/*
 * Address sets: the addresses an endpoint dials (one for a numeric address
 * or a unix path, every A and AAAA record of a name), each with its own
 * health (connect backoff, ejection) and load, and the choice of where a
 * new connection goes. No connection or list is touched here: the
 * endpoint layer owns what a set change does to them.
 */
#ifndef CPOOL_ADDRSET_H
#define CPOOL_ADDRSET_H

#include "core.h"

#include <sys/socket.h>

/* Longest text of one address ("[v6]:port"; unix paths are cut). */
#define CPOOL_ADDR_TEXT 64

/*
 * One address. References: the set's while it is a member, one per
 * connection to it (from its socket to the free of its memory), and a
 * picker's from the pick to cpool__aset_done(). The last one frees it.
 */
struct cpool_uaddr {
	struct cds_list_head link; /* set->members or set->draining (lock) */
	struct cpool_aset *set;
	unsigned refs;
	int family;
	socklen_t salen;
	struct sockaddr_storage sa;
	char text[CPOOL_ADDR_TEXT];
	int gone;		 /* left the set: no lease may keep it */
	/* load, atomics */
	unsigned open;		 /* connections with an fd */
	unsigned connecting;	 /* picked, connect in flight */
	/* health, under set->lock */
	unsigned fail_streak;	 /* consecutive connect failures */
	int last_err;
	bool trial;		 /* the one connect that decides recovery */
	bool ejected;
	unsigned eject_streak;	 /* ejections in a row */
	uint64_t backoff_until_ns; /* CLOCK_MONOTONIC */
	uint64_t ejected_until_ns;
	/* counters, atomics */
	uint64_t connects;
	uint64_t connect_failures;
	uint64_t ejections;
};

struct cpool_aset {
	pthread_mutex_t lock;
	struct cds_list_head members;  /* in the resolver's order */
	struct cds_list_head draining; /* gone, with connections still open */
	unsigned n;		 /* members */
	unsigned nejected;	 /* members ejected now */
	int pref_family;	 /* Happy Eyeballs: the first answer's, or
				  * the family that last won a race, until
				  * the next answer */
	bool named;		 /* follows DNS */
	unsigned eject_after;	 /* cfg.eject_after_failures; 0 = never */
	unsigned eject_pct;	 /* cfg.max_ejection_percent */
	unsigned *ndraining;	 /* the endpoint's count of gone addresses
				  * with connections (read on fast paths) */
	struct cpool_ep_counters *ctr; /* the endpoint's */
	/* A member's connections idle in the endpoint's lists now (set by
	 * the endpoint; NULL counts none): balancing's leased = open - idle.
	 * Called under @lock; it may take the lists' spinlocks. */
	unsigned (*idle_of)(void *arg, const struct cpool_uaddr *u);
	void *idle_arg;
};

/* An address as the resolver or the parser gives it. */
struct cpool_addr {
	int family;
	socklen_t len;
	struct sockaddr_storage ss;
};

/*
 * A member's leased connections: its open count less those idle in the
 * lists, counted after it (a close between the two can make idle larger).
 */
static inline unsigned
cpool__uaddr_leased(unsigned open, unsigned idle)
{
	return open > idle ? open - idle : 0;
}

void cpool__aset_init(struct cpool_aset *s, const struct cpool_config *cfg,
		      bool named, unsigned *ndraining,
		      struct cpool_ep_counters *ctr);
/* Frees the members (none may have a connection any more). */
void cpool__aset_destroy(struct cpool_aset *s);

/*
 * Makes the members exactly @a[0..n) (n >= 1), keeping the state of those
 * already there. Those that left go to the draining list (gone set) when
 * they have connections, else are freed. Returns how many left, or -ENOMEM
 * (nothing changed).
 */
int cpool__aset_update(struct cpool_aset *s, const struct cpool_addr *a,
		       unsigned n);

/* Where a new connection goes: the primary and, for a race, the other. */
struct cpool_pick {
	struct cpool_uaddr *a[2]; /* [1]: the other family, or NULL */
	bool trial[2];
};

/*
 * Picks for one new connection: of the healthy members of the preferred
 * family (else any), two at random and the one with fewer open plus
 * connecting connections (@race: also one of the other family, the same
 * way, for Happy Eyeballs). A member in backoff or ejected is not healthy;
 * once its time is up, exactly one pick (a trial) may take it. With no
 * healthy member a set of several picks among all of them (panic); a set
 * of one refuses: returns its last connect error (counted in fail_fasts
 * when @count). Picks are referenced and counted connecting. Returns 0 or
 * the error.
 */
int cpool__aset_pick(struct cpool_aset *s, bool race, bool count,
		     struct cpool_pick *p);

/*
 * The result of the connect to a picked @a: 0, -errno, or @cancelled (it
 * lost a race: no verdict). Feeds its backoff and ejection, drops the
 * pick's reference and its connecting count; with @opened it counts the
 * connection open (its own reference taken). Host-local errors (no fd, no
 * memory) are no verdict either.
 */
void cpool__aset_done(struct cpool_aset *s, struct cpool_uaddr *a, int err,
		      bool trial, bool cancelled, bool opened);

/*
 * A race was won by @family (the preferred one lost or failed): it is
 * tried first until the next answer resets the preference, so that a
 * family whose SYNs vanish costs one happy_eyeballs_ms per answer, not one
 * per connection.
 */
void cpool__aset_prefer(struct cpool_aset *s, int family);

/* A connection to @a closed (its fd): open - 1. */
void cpool__aset_closed(struct cpool_uaddr *a);

/* Drops a reference on @a (a connection's, at its free). */
void cpool__uaddr_put(struct cpool_uaddr *a);

/* When some member may be dialled again (prewarm's retry); 0 = now. */
uint64_t cpool__aset_ready_ns(struct cpool_aset *s);

/* The text of an address: "1.2.3.4:80", "[::1]:80", "unix:/p". */
void cpool__addr_text(const struct sockaddr_storage *ss, socklen_t len,
		      char *buf, size_t size);

#endif /* CPOOL_ADDRSET_H */
