/* SPDX-License-Identifier: MIT */
/*
 * Balancing in an address set (pool/addrset.h): power of two choices by
 * leased plus connecting connections, where leased is open minus idle in
 * the endpoint's lists (the set asks through its idle_of hook, faked
 * here), a tie going to the member with fewer open, then to a coin.
 */
#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>

#include "addrset.h"
#include "util/leakcheck.h"

#ifndef CPOOL_ALLOC_LIBC
/*
 * The shipped library makes every cpool__ symbol local (see the Makefile),
 * so against it the module under test is compiled in here, over libc's
 * allocator and a small generator (weak: test_dns.c brings the same
 * allocator); sanitizer builds link to the real ones.
 */
#include "../pool/addrset.c"

__attribute__((weak)) void *
cpool__alloc(size_t size, size_t align, unsigned slot)
{
	return calloc(1, size);
}

__attribute__((weak)) void
cpool__free(void *p, size_t size)
{
	free(p);
}

uint64_t
cpool__random(void)
{
	static uint64_t x = 88172645463325252ull;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return x;
}
#endif

TestSuite(addrset, .timeout = 30, .fini = leak_fini);

struct two {
	struct cpool_aset set;
	unsigned ndraining;
	struct cpool_ep_counters ctr;
	struct cpool_uaddr *a, *b;
	unsigned idle_a, idle_b; /* what the endpoint's lists would hold */
	unsigned asked;		 /* idle_of calls */
};

static unsigned
fake_idle(void *arg, const struct cpool_uaddr *u)
{
	struct two *t = arg;

	t->asked++;
	return u == t->a ? t->idle_a : u == t->b ? t->idle_b : 0;
}

static struct cpool_addr
v4(const char *ip, unsigned port)
{
	struct cpool_addr a = { .family = AF_INET,
				.len = sizeof(struct sockaddr_in) };
	struct sockaddr_in *in = (void *)&a.ss;

	in->sin_family = AF_INET;
	in->sin_port = htons((uint16_t)port);
	cr_assert_eq(inet_pton(AF_INET, ip, &in->sin_addr), 1);
	return a;
}

/* A named set of 127.0.0.2:7 and 127.0.0.3:7 with the fake lists. */
static void
two_init(struct two *t)
{
	struct cpool_addr a[2] = { v4("127.0.0.2", 7), v4("127.0.0.3", 7) };
	struct cpool_config cfg;

	memset(t, 0, sizeof(*t));
	cpool_config_init(&cfg);
	cpool__aset_init(&t->set, &cfg, true, &t->ndraining, &t->ctr);
	t->set.idle_of = fake_idle;
	t->set.idle_arg = t;
	cr_assert_eq(cpool__aset_update(&t->set, a, 2), 0);
	t->a = cds_list_entry(t->set.members.next, struct cpool_uaddr, link);
	t->b = cds_list_entry(t->a->link.next, struct cpool_uaddr, link);
	cr_assert_str_eq(t->a->text, "127.0.0.2:7");
	cr_assert_str_eq(t->b->text, "127.0.0.3:7");
}

static void
two_fini(struct two *t)
{
	t->a->open = t->b->open = 0; /* no connection is really there */
	cpool__aset_destroy(&t->set);
}

/* One pick; its connect is then cancelled (no verdict, nothing opened). */
static struct cpool_uaddr *
pick_one(struct two *t, bool done)
{
	struct cpool_pick p;
	int err = cpool__aset_pick(&t->set, false, false, &p);

	cr_assert_eq(err, 0, "pick: %d (%s)", err, strerror(-err));
	cr_assert_null(p.a[1], "one family: no race partner");
	if (done)
		cpool__aset_done(&t->set, p.a[0], 0, p.trial[0], true, false);
	return p.a[0];
}

Test(addrset, a_new_connection_goes_to_the_member_with_fewer_leased)
{
	struct two t;

	two_init(&t);
	/* .2: two open, both idle (none leased); .3: one open, leased. By
	 * open connections .3 carries less; by leased, .2 does. */
	t.a->open = 2;
	t.idle_a = 2;
	t.b->open = 1;
	t.idle_b = 0;
	for (int i = 0; i < 64; i++) {
		struct cpool_uaddr *u = pick_one(&t, true);

		cr_assert_eq(u, t.a, "pick %d went to %s: want 127.0.0.2:7 "
			     "(0 leased against 1)", i, u->text);
	}
	cr_assert_geq(t.asked, 64, "the lists were asked %u times", t.asked);
	cr_assert_eq(t.a->connecting + t.b->connecting, 0);
	two_fini(&t);
}

Test(addrset, connecting_counts_and_a_tie_goes_to_fewer_open)
{
	struct two t;
	struct cpool_uaddr *u;

	two_init(&t);
	/* .2: one open, idle; .3: none. Nothing leased: the tie goes to
	 * the member with fewer open, .3. */
	t.a->open = 1;
	t.idle_a = 1;
	u = pick_one(&t, false);
	cr_assert_eq(u, t.b, "first pick: %s, want 127.0.0.3:7", u->text);
	cr_assert_eq(t.b->connecting, 1);
	/* .3's connect is in flight: it carries one, .2 none. */
	u = pick_one(&t, false);
	cr_assert_eq(u, t.a, "second pick: %s, want 127.0.0.2:7", u->text);
	cpool__aset_done(&t.set, t.b, 0, false, true, false);
	cpool__aset_done(&t.set, t.a, 0, false, true, false);
	cr_assert_eq(t.a->connecting + t.b->connecting, 0);
	two_fini(&t);
}

Test(addrset, a_full_tie_is_a_coin)
{
	struct two t;
	unsigned on_a = 0;

	two_init(&t);
	for (int i = 0; i < 200; i++)
		on_a += pick_one(&t, true) == t.a;
	cr_assert(on_a > 0 && on_a < 200,
		  "200 picks between equal members: %u on 127.0.0.2:7", on_a);
	cr_assert_eq(t.asked, 0, "nothing open: the lists need no walk");
	two_fini(&t);
}
