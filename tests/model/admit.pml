/*
 * tests/model/admit.pml - a Promela model of cpool's admission protocol at
 * one endpoint's connection cap: slots, waiters, handoff. `make model`
 * (tests/model/model.mk) checks it exhaustively with spin; `make
 * model-bugs` switches on each bug variant (the old protocol, the
 * pseudo-code, a step left out) and requires spin to find it.
 *
 * WHAT IS MODELLED, function by function with the names of the protocol:
 *   reserve()  look(w)  put_idle(L)  offer(L)  give_back_slot()  wait(w)
 *   cancelled(w)  close_endpoint(err)  close(c) = close_conn()
 *   kick() = kick_locked()  chain_kick() (in wait())
 * (pass_conn() is offer_locked(): offer() from `w = head(queue)` on, which
 * cancelled() shares), and the actors that call them:
 *   holder()  owns a lease at the start (slots == MAX, all leased), then
 *             releases it (put_idle to either list) or closes it;
 *   waiter()  a caller that found nothing on its fast path and no slot:
 *             wait(); on SLOT it connects (or the connect fails); then it
 *             releases or closes what it got;
 *   barger()  a caller's fast path: pops its own shard's list with no gate
 *             check, else reserve()s directly, else wait()s; then as above;
 *   closer()  close_endpoint() once (configuration CLOSER);
 *   monitor() the invariants, checked in every reachable state.
 *
 * THE KICK: at most one on the way. `kicked` (under A, ad->kicked) counts
 * the KICKED waiters that have not looked yet; kick() takes the head off
 * the queue, makes it KICKED and does kicked++ (nothing if the queue is
 * empty).
 *   offer()      the head, if any, has waited BARGE_WINDOW and the
 *                connection is a lease: hand it over (dequeue, GRANT_CONN);
 *                otherwise push it, and kick() only if kicked == 0: a
 *                waiter on its way looks at every list anyway.
 *   wait()       a waiter woken KICKED does kicked-- before it looks again.
 *                After every look that popped a connection (CONN), if
 *                kicked == 0, the queue is not empty and some list's count
 *                (read without its lock; exact under A, which P1 checks)
 *                is not 0, it kicks before it leaves (chain_kick(): the
 *                connection left behind gets the kick that the offer()
 *                which pooled it held back).
 *   cancelled()  a KICKED waiter does kicked--, then kick(): passes it on.
 *
 * WHAT IS ABSTRACTED AWAY
 *   - Connections are counted, not named: L[i].n is the number idle in
 *     list i (the protocol never cares which connection it moves), and
 *     GRANT_CONN(c) is the state GRANT_CONN with the connection in flight.
 *   - Time. A waiter's deadline is an event that may fire at any moment
 *     while it sleeps (TIMEOUTS); once fired, `now >= deadline` stays true.
 *     `now - w.since >= BARGE_WINDOW` is a free choice in each offer(), so
 *     `since` is not kept; the choice not to hand over also covers an
 *     offer() from BUSY (a worker's give-back or prewarm), never handed over.
 *   - pthread_cancel: a sleeping waiter may be cancelled (NCANCEL in a
 *     run); it wakes with A held and runs cancelled().
 *   - Condition variables: signal(w) is the write of w.state; a sleeping
 *     waiter wakes once its state is not QUEUED. No spurious wake-ups (the
 *     C loop re-checks the state, so they change nothing); hence the
 *     `while (QUEUED && !timed out) cond_timedwait` loop runs exactly once
 *     per sleep here and is written as one sleep.
 *   - Memory is sequentially consistent (spin interleaves whole steps), as
 *     the seq_cst gate/slot atomics and the locks give the C code for the
 *     orders the protocol relies on.
 *   - What a holder does with its lease, the worker's probing and
 *     prewarming: all are put_idle() or close(), as the holders do.
 *
 * GRAIN OF ATOMICITY (check this against the C code)
 *   Each atomic{}/d_step{} is one step. A step holds at most one access to
 *   data another thread touches without holding the same lock: gate
 *   (written under A, read without it), slots, a list (a list operation
 *   is lock L; op; unlock L, one step, since nothing touches a list
 *   without its lock except chain_kick()'s and OLD_LOOK's count reads, a
 *   step each). Around that access a step may add lock acquisitions
 *   before, lock releases after, and any reads and writes of what only A
 *   protects (the queue, waiter states, kicked, close_err) or of locals:
 *   these commute with every other thread's steps (Lipton's reduction),
 *   so the search loses no behaviour. Thus
 *   offer() is one step (lock A ... one push ... unlock A), and so is
 *   close_endpoint()'s section under A (its one access: gate |= CLOSING).
 *   put_idle()'s fast path is two steps, `lock L; read gate` and `push;
 *   unlock L`, so other threads run between its gate read and its push.
 *   Ghost state (nopen, nleased, nbare, busy, freeing, drained, asleep)
 *   changes inside the step it describes.
 *
 * PROPERTIES (assertions; a violation is an "assertion violated" error)
 *   P1  No stranding (monitor). Never a connection idle in a list while a
 *       waiter is in the queue (asleep), no KICKED waiter is on its way to
 *       look, and no offer()/give_back_slot()/cancelled() holds A (`busy`:
 *       visible only when such a step stalls on a list lock). Never a free
 *       slot (slots < MAX) while a waiter is in the queue, no KICKED
 *       waiter is pending, nobody is `busy`, and no give_back_slot() is
 *       between its slots-- and its end (`freeing`). "A KICKED waiter on
 *       its way" is a waiter whose state is KICKED: asleep, or awake with
 *       A held and looking (it leaves KICKED only in the step that frees
 *       A, by sleeping QUEUED again or leaving). It is stated over the
 *       waiters' states, not over `kicked`: the counter is what is under
 *       test, and a count left at 1 with nobody KICKED would silence every
 *       later offer()'s kick; P1 then sees the stranding (and P3 the count).
 *       And (chain_kick()) when a waiter's unlocked reads of the lists'
 *       counts all saw 0, no connection is idle once it has read them all.
 *   P2  No timeout while something was available: when wait() returns
 *       ETIMEDOUT (A held) every list is empty and every free slot is one
 *       that a give_back_slot() in progress is about to hand out (slots +
 *       freeing >= MAX).
 *   P3  Conservation (monitor): idle + leased (in a hand or in flight) ==
 *       open; open + bare (reserved, not connected) == slots <= MAX; the
 *       queue holds only QUEUED waiters; kicked == the number of KICKED
 *       waiters that have not acted on their wake-up yet (`asleep`), and
 *       kicked <= 1: at most one kick on the way. At the end (every actor
 *       gone): A free, queue empty, kicked 0, nothing leased or bare,
 *       gate's count 0, idle == open == slots. No deadlock: every actor
 *       ends (spin's invalid end states). With TIMEOUTS 0 a waiter leaves
 *       only served, failed by the close or cancelled, so those runs prove
 *       that every other waiter is served. No livelock: model.mk's term
 *       runs (pan -DNP -l, no progress label) find no cycle at all, so
 *       every run ends.
 *   P4  Close: no look(), grant or kick after CLOSING, so a waiter that
 *       registered before close_endpoint() returns close_err or what it
 *       had been granted before; after close_endpoint() has drained the
 *       lists no connection is idle again, and at the end nothing is open
 *       and every slot is back (slots == 0).
 *
 * DEPARTURES FROM THE PSEUDO-CODE (found by this model; the C code must
 * follow the model, and each is a switch that brings the pseudo-code back)
 *   1. look() tries the lists first, then reserve(). With reserve() first
 *      (SLOT_FIRST) spin finds a stranding: holder H1 closes (slots--) and
 *      stops before its gate load; holder H2's offer() pools a connection
 *      and kicks the head waiter W1; W1 looks, reserve() takes the slot H1
 *      freed, W1 leaves with SLOT; H1's give_back_slot() finds the head W2
 *      but no slot; W2 sleeps, the connection idle. A kicked waiter must
 *      take the connection it was kicked for.
 *   2. cancelled()'s GRANT_CONN case does offer()'s CLOSING check too (and
 *      closes the connection once A is free). Without it (NO_CLOSE_CHECK):
 *      W1 is granted a connection; close_endpoint() fails the queue and
 *      drains the lists; W1 is cancelled and its handler, finding no
 *      waiter, pushes the connection to a list of the closed endpoint,
 *      after the drain: open, idle, and never closed.
 *
 * CONFIGURATION (spin -D...; defaults in brackets)
 *   MAX [2] cap (and holders), NL [2] lists (1 or 2), NWAIT [2] waiters,
 *   BARGER [1] bargers, REBARGE [0] (the first holder, once it has released
 *   or closed, acquires again as a barger does), CLOSER [0], TIMEOUTS [1]
 *   (deadlines may pass), NCANCEL [0] cancellations in a run.
 * BUG VARIANTS (`make model-bugs`: spin must report a violation for each)
 *   OLD_KICK    offer() leaves the waiter it kicks in the queue, marks it
 *               `kicked` (wkicked[]), signals it only if it was not kicked
 *               already; a kicked waiter that loses the race sleeps again,
 *               queued. (No counter and no chain kick.)
 *   OLD_LOOK    look() skips a list whose count, read without its lock, is 0.
 *   NO_PASS_ON  cancelled() and a timed-out waiter drop the kick or grant
 *               they were given (a cancelled KICKED waiter does kicked--
 *               but no kick(); a granted connection is pooled, a granted
 *               slot freed, nobody woken; a timed-out kicked waiter leaves
 *               without its last look).
 *   NO_CHAIN    wait() leaves out chain_kick(). Two releases while W1 and W2
 *               sleep: the first offer() pools its connection and kicks W1,
 *               the second pools its own and, W1 being on its way, kicks
 *               nobody; W1 takes one and leaves; W2 sleeps, one idle.
 *   SLOT_FIRST, NO_CLOSE_CHECK   the pseudo-code as written (above).
 *
 * RUN
 *   make model          every configuration of model.mk, exhaustively
 *   make model-bugs     every variant; products and trails in build/model/
 *   by hand: spin -a -DNCANCEL=1 admit.pml && gcc -O2 -DSAFETY -o pan pan.c
 *            && ./pan -m1000000; a trail: spin -t -p -g -DNCANCEL=1 admit.pml
 */

#ifndef MAX
#define MAX 2
#endif
#ifndef NL
#define NL 2
#endif
#ifndef NWAIT
#define NWAIT 2
#endif
#ifndef BARGER
#define BARGER 1
#endif
#ifndef CLOSER
#define CLOSER 0
#endif
#ifndef TIMEOUTS
#define TIMEOUTS 1
#endif
#ifndef NCANCEL
#define NCANCEL 0
#endif

#ifndef REBARGE
#define REBARGE 0
#endif

#define NW       (NWAIT + BARGER + REBARGE) /* waiter records: waiters, bargers */
#define NOWAITER 255
#define CLOSING  128                       /* gate's CLOSING bit */
#define NREG     (gate & (CLOSING - 1))    /* gate's count of registered waiters */
#if NL == 1
#define IDLE     (L[0].n)                  /* connections idle in the lists */
#else
#define IDLE     (L[0].n + L[1].n)
#endif

/* waiter states (w.state; NONE: not waiting) and results of look()/wait() */
mtype = { NONE, QUEUED, KICKED, GRANT_CONN, GRANT_SLOT, FAILED,
	  SLOT, CONN, ETIMEDOUT, ESHUTDOWN, CANCELLED };

/* ---- shared state ---------------------------------------------------- */
byte gate = 0;                 /* registered waiters | CLOSING */
byte slots = MAX;              /* connections reserved or open */
byte A = 0;                    /* the admission lock: 0 or the owner's _pid + 1 */
byte q[NW];                    /* queue: FIFO of waiters, q[0] is the head */
byte qlen = 0;
mtype close_err = NONE;
typedef list { bool lock; byte n };
list L[NL];                    /* idle lists: a spinlock, n connections */
mtype st[NW] = NONE;           /* w.state of each waiter */
byte kicked = 0;               /* ad->kicked: KICKED, not looked yet */
#ifdef OLD_KICK
bool wkicked[NW];              /* the old protocol's w.kicked */
#endif

/* ---- ghost state: what the properties are stated over ----------------- */
byte nopen = MAX;              /* open connections */
byte nleased = MAX;            /* open and not idle: leased, in a hand, in flight */
byte nbare = 0;                /* slots held with no connection */
bool busy = false;             /* offer/give_back_slot/cancelled holds A */
byte freeing = 0;              /* give_back_slot()s between slots-- and the end */
bool drained = false;          /* close_endpoint() has emptied the lists */
bool asleep[NW];               /* slept, wake-up not acted on yet */
byte ncancel = NCANCEL;        /* cancellations left */
hidden byte qi;                /* scratch for the queue operations */

/* ---- mutex A ---------------------------------------------------------- */
inline lock_A()      { atomic { A == 0 -> A = _pid + 1 } }
inline lock_A_busy() { atomic { A == 0 -> A = _pid + 1; busy = true } }
inline unlock_A()    { d_step { assert(A == _pid + 1); A = 0; busy = false } }

/* ---- the queue (only under A) ----------------------------------------- */
inline head(w) {
	if
	:: qlen > 0 -> w = q[0]
	:: else -> w = NOWAITER
	fi
}
inline enqueue_tail(w) { q[qlen] = w; qlen++ }
inline enqueue_head(w) {
	qi = qlen;
	do
	:: qi > 0 -> q[qi] = q[qi - 1]; qi--
	:: else -> break
	od;
	q[0] = w; qlen++
}
inline dequeue(w) {            /* unlink w, which is queued */
	qi = 0;
	do
	:: q[qi] != w -> qi++
	:: else -> break
	od;
	do
	:: qi + 1 < qlen -> q[qi] = q[qi + 1]; qi++
	:: else -> break
	od;
	qlen--; q[qlen] = 0
}

/* ---- a list: lock L; op; unlock L (one step each) ---------------------- */
inline push(li) { atomic { !L[li].lock -> L[li].n++; nleased-- } }
inline pop(li, got) {          /* got = CONN (now the popper's) or NONE */
	atomic {
		!L[li].lock ->
		if
		:: L[li].n > 0 -> L[li].n--; nleased++; got = CONN
		:: else -> got = NONE
		fi
	}
}

/* ---- helper operations ------------------------------------------------ */

/* reserve(): atomically: if slots < MAX { slots++; return true } */
inline reserve(ok) {
	d_step {
		if
		:: slots < MAX -> slots++; nbare++; ok = true
		:: else -> ok = false
		fi
	}
}

/* look(w) [A held]: the lists in order, then a slot (DEPARTURES, 1.) */
inline look_lists(r) {
	i = 0;
	do
#ifndef OLD_LOOK
	:: atomic { i < NL && r == NONE -> pop(i, r); i++ }  /* lock L; c = pop(L); unlock L */
#else
	:: atomic { i < NL && r == NONE && L[i].n == 0 -> i++ }  /* count read unlocked: 0, skip */
	:: atomic { i < NL && r == NONE && L[i].n > 0 -> pop(i, r); i++ }
#endif
	:: else -> i = 0; break
	od
}
inline look(w, r) {
#ifdef SLOT_FIRST
	reserve(ok);
	if
	:: ok -> r = SLOT
	:: else -> look_lists(r)
	fi;
	ok = false
#else
	look_lists(r);
	if
	:: r == NONE ->
		reserve(ok);
		if
		:: ok -> r = SLOT
		:: else -> skip
		fi;
		ok = false
	:: else -> skip
	fi
#endif
}

/*
 * give_back_slot(): a connection closed (conn: its close(c) is this first
 * step too) or a connect failed (!conn).
 */
inline give_back_slot(conn) {
	d_step {                                     /* slots-- (seq_cst) */
		if
		:: conn -> nleased--; nopen--
		:: else -> nbare--
		fi;
		slots--; freeing++
	}
	if
	:: atomic { NREG == 0 -> freeing-- }          /* gate load: nobody registered */
	:: NREG != 0 ->                               /* gate load: a waiter registered */
		atomic {
			lock_A_busy();
			if
			:: !(gate & CLOSING) ->
				head(w);
				if
				:: w != NOWAITER ->
					reserve(ok);
					if
					:: ok ->
						assert(!(gate & CLOSING));  /* P4 */
						dequeue(w); st[w] = GRANT_SLOT  /* signal(w) */
					:: else -> skip
					fi
				:: else -> skip
				fi
			:: else -> skip
			fi;
			w = 0; ok = false;
			unlock_A(); freeing--
		}
	fi
}

/* close(c): the connection in hand closes and gives its slot back */
inline close_conn() { give_back_slot(true) }

/* kick_locked() [A held]: the head waiter, if any, off the queue, KICKED */
inline kick(w) {
	head(w);
	if
	:: w != NOWAITER ->
		assert(!(gate & CLOSING));                     /* P4 */
		dequeue(w); st[w] = KICKED;                    /* signal(w) */
#ifndef OLD_KICK
		kicked++
#else
		skip                                   /* unreachable (cancelled()) */
#endif
	:: else -> skip
	fi;
	w = 0
}

/*
 * offer_locked(): offer() from `w = head(queue)` on: A held, not closing,
 * the connection in hand, li the list it was released to. Leaves A held.
 */
inline pass_conn(li) {
	head(w);
	if
	:: w != NOWAITER ->    /* waited >= BARGE_WINDOW and a lease: hand it over */
		assert(!(gate & CLOSING));                     /* P4 */
		dequeue(w); st[w] = GRANT_CONN                 /* signal(w) */
	:: true ->             /* < BARGE_WINDOW, from BUSY or no waiter: pool it */
		push(li);                          /* lock L; push(L, c); unlock L */
#ifndef OLD_KICK
		if
		:: kicked == 0 -> kick(w)          /* nobody on the way: kick the head */
		:: else -> skip                    /* one is: it looks at every list */
		fi
#else
		if                                             /* OLD_KICK: w stays queued */
		:: w != NOWAITER && !wkicked[w] ->
			assert(!(gate & CLOSING));             /* P4 */
			wkicked[w] = true                      /* signal(w) */
		:: else -> skip                        /* kicked already: wake nobody */
		fi
#endif
	fi;
	w = 0
}

/* offer(L, c) */
inline offer(li) {
	atomic {
		lock_A_busy();
		if
		:: gate & CLOSING -> unlock_A(); ok = true     /* then close(c) */
		:: else -> pass_conn(li); unlock_A()
		fi
	}
	if
	:: ok -> ok = false; close_conn()
	:: else -> skip
	fi
}

/* put_idle(L, c): every path that makes a connection idle */
inline put_idle(li) {
	atomic {
		!L[li].lock -> L[li].lock = true;               /* lock L */
		if
		:: gate == 0 -> ok = true                        /* read gate: fast path */
		:: else -> L[li].lock = false; ok = false        /* unlock L */
		fi
	}
	if
	:: ok -> d_step { L[li].n++; nleased--; L[li].lock = false; ok = false }  /* push; unlock L */
	:: else -> offer(li)
	fi
}

/* ---- wait() and its cancellation -------------------------------------- */

#ifndef OLD_KICK
#define ASLEEP(me) (st[me] == QUEUED)
#else
#define ASLEEP(me) (st[me] == QUEUED && !wkicked[me])
#endif

/* cancelled(w) [A held]: the cleanup handler of a cancelled cond_timedwait */
inline cancelled(me) {
	atomic {
		asleep[me] = false;
		if
		:: st[me] == QUEUED -> dequeue(me)
		:: st[me] == KICKED ->                     /* kicked--; pass the kick on */
#ifndef OLD_KICK
			kicked--;
#endif
#ifndef NO_PASS_ON
			kick(w)                            /* kick_locked(): kicked++ if a waiter */
#else
			skip
#endif
		:: st[me] == GRANT_CONN ->                 /* pass the connection on */
			if                                 /* to this thread's shard */
			:: li = 0
			:: li = NL - 1
			fi;
#if defined(NO_PASS_ON)
			push(li);
#elif defined(NO_CLOSE_CHECK)
			pass_conn(li);
#else
			if                                 /* as offer(): closing? */
			:: gate & CLOSING -> ok = true     /* close(c) once A is free */
			:: else -> pass_conn(li)
			fi;
#endif
			li = 0
		:: st[me] == GRANT_SLOT ->                 /* pass the slot on */
#ifndef NO_PASS_ON
			head(w);
			if
			:: w != NOWAITER -> dequeue(w); st[w] = GRANT_SLOT   /* signal(w2) */
			:: else -> slots--; nbare--
			fi;
#else
			slots--; nbare--;
#endif
			w = 0
		:: st[me] == FAILED -> skip
		fi
	}
	d_step { gate--; st[me] = NONE; unlock_A() }    /* gate--; unlock A */
	if
	:: ok -> ok = false; close_conn()
	:: else -> skip
	fi
}

/*
 * wait()'s chain kick [A held], after a look: if it popped a connection,
 * nobody kicked is on the way and a waiter sleeps, it reads each list's
 * count (any_idle_locked(): without the list's lock, one step each) and
 * kicks the head if one is not 0: a connection left behind gets a waiter
 * on its way. If every count read 0, none is idle now: the counts are
 * exact under A (P1, checked, not assumed: a fast-path push could only
 * land behind a read if its gate read came before a registration).
 */
#define CHAIN_ON (r == CONN && kicked == 0 && qlen > 0)
inline chain_kick(r) {
#if !defined(NO_CHAIN) && !defined(OLD_KICK)
	do
	:: atomic { CHAIN_ON && i < NL && L[i].n == 0 -> i++ }
	:: atomic { CHAIN_ON && i < NL && L[i].n > 0 -> kick(w); i = 0; break }
	:: else ->
		assert(!CHAIN_ON || IDLE == 0);   /* P1: the counts were exact */
		i = 0; break
	od
#else
	skip
#endif
}

/* P2, at wait()'s return with A held */
#define NOTHING_AVAILABLE (IDLE == 0 && slots + freeing >= MAX)

/* wait(w, deadline): r = SLOT, CONN, ETIMEDOUT, ESHUTDOWN or CANCELLED */
inline wait(me, r) {
	atomic {
		lock_A();
		if
		:: gate & CLOSING -> r = close_err; unlock_A()
		:: else ->
			gate++;                           /* seq_cst: registered from here on */
			first = true;                     /* w.since = now */
			assert(!(gate & CLOSING))         /* loop: `if gate & CLOSING` is false: A held */
		fi
	}
	if
	:: r == NONE ->
		do
		:: look(me, r);                           /* P4: !CLOSING, checked under A */
		   chain_kick(r);
		   if
		   :: r != NONE -> break                  /* SLOT: the caller connects; CONN: its own */
		   :: r == NONE && tmo -> r = ETIMEDOUT; break   /* the last look after the timeout */
		   :: else -> skip
		   fi;
		   d_step {
			if
			:: first -> enqueue_tail(me)
			:: else -> enqueue_head(me)       /* a kicked waiter keeps its place */
			fi;
			st[me] = QUEUED; asleep[me] = true;
			assert(A == _pid + 1); A = 0      /* cond_timedwait(): unlock A, sleep */
		   }
		   atomic {
			if                                /* wake up with A held again: */
			:: A == 0 && !ASLEEP(me) -> A = _pid + 1              /* signalled */
			:: TIMEOUTS && A == 0 -> A = _pid + 1; tmo = true     /* deadline */
			:: ncancel > 0 && A == 0 ->                           /* pthread_cancel */
				A = _pid + 1; ncancel--; cnl = true; busy = true
			fi;
#ifdef OLD_KICK
			if                                /* kicked, queued: look, stay queued */
			:: !cnl && st[me] == QUEUED && wkicked[me] ->
				wkicked[me] = false; dequeue(me); st[me] = KICKED
			:: else -> skip
			fi;
#endif
			if
			:: cnl -> skip                    /* cancelled(): its first step */
			:: else ->
				asleep[me] = false;
				if                        /* switch w.state */
				:: st[me] == GRANT_CONN -> r = CONN
				:: st[me] == GRANT_SLOT -> r = SLOT
				:: st[me] == FAILED -> r = close_err
				:: st[me] == KICKED ->
#ifndef OLD_KICK
					kicked--;     /* looks now */
#endif
					first = false;
#ifdef NO_PASS_ON
					if            /* timed out: drops the kick, no last look */
					:: tmo -> r = ETIMEDOUT
					:: else -> skip
					fi;
#endif
					skip
				:: st[me] == QUEUED -> dequeue(me); first = false  /* timed out */
				fi;
				if                        /* loop: if gate & CLOSING */
				:: r == NONE && (gate & CLOSING) -> r = close_err
				:: else -> skip
				fi
			fi
		   }
		   if
		   :: cnl -> cancelled(me); r = CANCELLED; break
		   :: r != NONE -> break
		   :: else -> skip                        /* continue loop: look again */
		   fi
		od;
		if
		:: r != CANCELLED ->
			d_step {
				assert(r != ETIMEDOUT || NOTHING_AVAILABLE);   /* P2 */
				gate--; st[me] = NONE;           /* gate--; unlock A */
#ifdef OLD_KICK
				wkicked[me] = false;
#endif
				unlock_A()
			}
		:: else -> skip
		fi
	:: else -> skip
	fi;
	first = false; tmo = false; cnl = false
}

/* ---- the actors --------------------------------------------------------- */

/* done with a lease: release it to either list (put_idle), or close it */
inline release_or_close() {
	if
	:: li = 0; put_idle(li)
	:: li = NL - 1; put_idle(li)
	:: close_conn()
	fi;
	li = 0
}

/* what a caller does with wait()'s or reserve()'s result */
inline use(r) {
	if
	:: r == CONN -> release_or_close()
	:: r == SLOT ->
		if
		:: d_step { nbare--; nopen++; nleased++ };   /* connected: a lease */
		   release_or_close()
		:: give_back_slot(false)                     /* the connect failed */
		fi
	:: else -> skip                                  /* ETIMEDOUT, close_err, cancelled */
	fi
}

/* a caller's acquire: its fast path, then wait() */
inline acquire(me, r) {
	if                                   /* lock L(own shard); c = pop(L); unlock L */
	:: pop(0, r)
	:: pop(NL - 1, r)
	fi;
	if
	:: r == NONE ->
		reserve(ok);                 /* fast path: a slot of its own */
		if
		:: ok -> r = SLOT
		:: else -> wait(me, r)
		fi;
		ok = false
	:: else -> skip
	fi
}

/* ---- the invariants ----------------------------------------------------- */

#ifdef OLD_KICK
#define KICKED_(k) (st[k] == KICKED || wkicked[k])
#else
#define KICKED_(k) (st[k] == KICKED)
#endif
#define UNLOOKED(k) (st[k] == KICKED && asleep[k])   /* kicked, not woken yet */
#if NW == 1
#define KICK_PENDING (KICKED_(0))
#define NUNLOOKED    (UNLOOKED(0))
#elif NW == 2
#define KICK_PENDING (KICKED_(0) || KICKED_(1))
#define NUNLOOKED    (UNLOOKED(0) + UNLOOKED(1))
#elif NW == 3
#define KICK_PENDING (KICKED_(0) || KICKED_(1) || KICKED_(2))
#define NUNLOOKED    (UNLOOKED(0) + UNLOOKED(1) + UNLOOKED(2))
#else
#define KICK_PENDING (KICKED_(0) || KICKED_(1) || KICKED_(2) || KICKED_(3))
#define NUNLOOKED    (UNLOOKED(0) + UNLOOKED(1) + UNLOOKED(2) + UNLOOKED(3))
#endif

/* P1 */
#define STRANDED_CONN (IDLE > 0 && qlen > 0 && !KICK_PENDING && !busy)
#define STRANDED_SLOT (slots < MAX && qlen > 0 && !KICK_PENDING && !busy && freeing == 0)
/* P3 */
#ifndef OLD_KICK
#define KICKS_COUNTED (kicked == NUNLOOKED && kicked <= 1)   /* <= 1 on the way */
#else
#define KICKS_COUNTED (kicked == 0)
#endif
#define CONSERVED (IDLE + nleased == nopen && nopen + nbare == slots && slots <= MAX && \
		   KICKS_COUNTED && \
		   (qlen < 1 || st[q[0]] == QUEUED) && (qlen < 2 || st[q[1]] == QUEUED) && \
		   (qlen < 3 || st[q[2]] == QUEUED) && (qlen < 4 || st[q[3]] == QUEUED))
/* P4: once drained, never a connection idle again */
#define DRAINED_EMPTY (!drained || IDLE == 0)
/* P3, P4: at the end */
#define FINAL (A == 0 && qlen == 0 && nleased == 0 && nbare == 0 && NREG == 0 && \
	       kicked == 0 && freeing == 0 && !busy && IDLE == nopen && slots == nopen && \
	       (!CLOSER || slots == 0))

active proctype monitor()
{
end:	if
	:: atomic { STRANDED_CONN -> assert(!STRANDED_CONN) }    /* P1 */
	:: atomic { STRANDED_SLOT -> assert(!STRANDED_SLOT) }    /* P1 */
	:: atomic { !CONSERVED -> assert(CONSERVED) }            /* P3 */
	:: atomic { !DRAINED_EMPTY -> assert(DRAINED_EMPTY) }    /* P4 */
	:: atomic { _nr_pr == 1 -> assert(FINAL) }               /* P3, P4 */
	fi
}

active [MAX] proctype holder()
{
	byte li, w, i; bool ok, first, tmo, cnl; mtype r = NONE;
	release_or_close();
#if REBARGE
	if
	:: _pid == 1 ->                      /* the first holder acquires again */
		acquire(NW - 1, r);
		use(r)
	:: else -> skip
	fi
#endif
}

active [NWAIT] proctype waiter()
{
	byte me = _pid - 1 - MAX;           /* its waiter record: 0 .. NWAIT-1 */
	byte li, w, i; bool ok, first, tmo, cnl; mtype r = NONE;
	wait(me, r);
	use(r)
}

active [BARGER] proctype barger()
{
	byte me = _pid - 1 - MAX;           /* the records after the waiters' */
	byte li, w, i; bool ok, first, tmo, cnl; mtype r = NONE;
	acquire(me, r);
	use(r)
}

active [CLOSER] proctype closer()
{
	byte li, w, i, n; bool ok;
	atomic {                              /* close_endpoint(err) */
		lock_A();
		close_err = ESHUTDOWN;
		gate = gate | CLOSING;
		do                            /* for each w in queue: */
		:: qlen > 0 -> qlen--; st[q[qlen]] = FAILED; q[qlen] = 0   /* dequeue(w); signal(w) */
		:: else -> break
		od;
		unlock_A()
	}
	do                                    /* for each list L: */
	:: i < NL ->
		atomic {                      /* lock L; take all; unlock L */
			!L[i].lock -> n = L[i].n; L[i].n = 0; nleased = nleased + n;
			drained = (i == NL - 1)
		}
		do                            /* close each */
		:: n > 0 -> n--; close_conn()
		:: else -> break
		od;
		i++
	:: else -> break
	od
}

