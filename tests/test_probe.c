/* SPDX-License-Identifier: MIT */
/*
 * cpool_probe() against every loopback scenario of SOCKETS.md (S1-S6, S10a)
 * on 127.0.0.1 and ::1, bad fds, and the seed article's mistake: a stale
 * errno must never change the verdict (SOCKETS.md section 5, D1-D5).
 * Each scenario is built on its own socket pair and the client is made to
 * see the peer's action (poll for POLLIN/POLLRDHUP/POLLHUP, which consumes
 * nothing) before it is probed.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>
#include <linux/sockios.h>

#include "cpool.h"
#include "util/net.h"
#include "util/leakcheck.h"

TestSuite(probe, .timeout = 60, .fini = leak_fini);

enum scenario {
	S1_HEALTHY,
	S2_STRAY_BYTES,
	S3_FIN,
	S4_BYTES_THEN_FIN,
	S5_RST,
	S5B_CLOSE_WITH_UNREAD_REQUEST,
	S5C_BYTES_THEN_RST,
	S6_FIN_THEN_OUR_SEND,
	SCENARIO_COUNT
};

static const char *const scenario_name[SCENARIO_COUNT] = {
	"S1 healthy idle",
	"S2 peer sent bytes",
	"S3 peer FIN",
	"S4 bytes then FIN",
	"S5 linger-0 RST",
	"S5b close with our request unread",
	"S5c bytes then RST",
	"S6 FIN, our send, RST",
};

static const enum cpool_verdict scenario_verdict[SCENARIO_COUNT] = {
	CPOOL_ALIVE,
	CPOOL_UNEXPECTED_DATA,
	CPOOL_PEER_CLOSED,
	CPOOL_UNEXPECTED_DATA,
	CPOOL_PEER_RESET,
	CPOOL_PEER_RESET,
	CPOOL_UNEXPECTED_DATA,
	CPOOL_PEER_RESET,
};

static const char *
family_name(int family)
{
	return family == AF_INET6 ? "::1" : "127.0.0.1";
}

static void
linger0_close(int fd)
{
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };

	cr_assert_eq(setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)), 0,
		     "SO_LINGER: %s", strerror(errno));
	cr_assert_eq(close(fd), 0);
}

/* Waits until the client fd reports @bit, and asserts it did. */
static void
client_sees(int fd, short bit, const char *what)
{
	int rev = wait_fd(fd, bit, WAIT_MS);

	cr_assert(rev > 0 && (rev & bit),
		  "client never saw %s: revents 0x%x want bit 0x%x", what, rev,
		  bit);
}

/*
 * Builds @s on a fresh pair over @family and returns the client fd; the
 * server side is closed, except for S1/S2 where *peer keeps it (else -1).
 */
static int
make_scenario(int family, enum scenario s, int *peer)
{
	int sv[2], err;

	err = tcp_pair(family, sv);
	cr_assert_eq(err, 0, "tcp_pair(%s): %s", family_name(family),
		     strerror(-err));
	*peer = -1;

	switch (s) {
	case S1_HEALTHY:
		*peer = sv[1];
		break;
	case S2_STRAY_BYTES:
		cr_assert_eq(send(sv[1], "hello world", 11, 0), 11);
		client_sees(sv[0], POLLIN, "the stray bytes");
		*peer = sv[1];
		break;
	case S3_FIN:
		cr_assert_eq(close(sv[1]), 0);
		client_sees(sv[0], POLLRDHUP, "the FIN");
		break;
	case S4_BYTES_THEN_FIN:
		cr_assert_eq(send(sv[1], "bye", 3, 0), 3);
		cr_assert_eq(close(sv[1]), 0);
		client_sees(sv[0], POLLRDHUP, "the FIN");
		break;
	case S5_RST:
		linger0_close(sv[1]);
		client_sees(sv[0], POLLHUP, "the RST");
		break;
	case S5B_CLOSE_WITH_UNREAD_REQUEST:
		cr_assert_eq(send(sv[0], "GET", 3, MSG_NOSIGNAL), 3);
		cr_assert(wait_fd(sv[1], POLLIN, WAIT_MS) & POLLIN,
			  "the server never got the request");
		cr_assert_eq(close(sv[1]), 0);
		client_sees(sv[0], POLLHUP, "the RST");
		break;
	case S5C_BYTES_THEN_RST:
		cr_assert_eq(send(sv[1], "bye", 3, 0), 3);
		linger0_close(sv[1]);
		client_sees(sv[0], POLLHUP, "the RST");
		break;
	case S6_FIN_THEN_OUR_SEND:
		cr_assert_eq(close(sv[1]), 0);
		client_sees(sv[0], POLLRDHUP, "the FIN");
		/* send #1 succeeds into the closed peer, which answers RST */
		cr_assert_eq(send(sv[0], "0123456789abcdef", 16, MSG_NOSIGNAL),
			     16, "send #1 after FIN: %s", strerror(errno));
		client_sees(sv[0], POLLHUP, "the RST answering send #1");
		break;
	case SCENARIO_COUNT:
		cr_assert_fail("bad scenario");
	}
	return sv[0];
}

static void
check_scenario(int family, enum scenario s)
{
	int peer, fd = make_scenario(family, s, &peer);
	enum cpool_verdict v = cpool_probe(fd);

	cr_assert_eq(v, scenario_verdict[s], "%s over %s: got %s want %s",
		     scenario_name[s], family_name(family),
		     cpool_verdict_name(v),
		     cpool_verdict_name(scenario_verdict[s]));
	close(fd);
	if (peer != -1)
		close(peer);
}

static void
check_both_families(enum scenario s)
{
	check_scenario(AF_INET, s);
	if (ipv6_loopback_works())
		check_scenario(AF_INET6, s);
	else
		cr_log_warn("::1 unusable here: %s checked on 127.0.0.1 only",
			    scenario_name[s]);
}

Test(probe, reports_a_healthy_idle_socket_as_alive)
{
	check_both_families(S1_HEALTHY);
}

Test(probe, reports_stray_bytes_as_unexpected_data)
{
	check_both_families(S2_STRAY_BYTES);
}

Test(probe, reports_a_peer_fin_as_peer_closed)
{
	check_both_families(S3_FIN);
}

Test(probe, reports_bytes_then_fin_as_unexpected_data)
{
	check_both_families(S4_BYTES_THEN_FIN);
}

Test(probe, reports_a_linger0_rst_as_peer_reset)
{
	check_both_families(S5_RST);
}

Test(probe, reports_a_close_with_our_request_unread_as_peer_reset)
{
	check_both_families(S5B_CLOSE_WITH_UNREAD_REQUEST);
}

Test(probe, reports_bytes_then_rst_as_unexpected_data)
{
	check_both_families(S5C_BYTES_THEN_RST);
}

Test(probe, reports_fin_then_rst_after_our_send_as_peer_reset_via_epipe)
{
	check_both_families(S6_FIN_THEN_OUR_SEND);
}

Test(probe, consumes_no_data_so_a_repeated_probe_gives_the_same_answer)
{
	int peer, fd = make_scenario(AF_INET, S2_STRAY_BYTES, &peer);
	char buf[32];
	int inq = -1;

	for (int i = 0; i < 5; i++) {
		enum cpool_verdict v = cpool_probe(fd);

		cr_assert_eq(v, CPOOL_UNEXPECTED_DATA,
			     "probe #%d: got %s want unexpected_data", i + 1,
			     cpool_verdict_name(v));
	}
	cr_assert_eq(ioctl(fd, SIOCINQ, &inq), 0);
	cr_assert_eq(inq, 11, "SIOCINQ after 5 probes: got %d want 11", inq);
	cr_assert_eq(recv(fd, buf, sizeof(buf), 0), 11);
	cr_assert_eq(memcmp(buf, "hello world", 11), 0);
	/* with the bytes read, the same healthy socket is alive again */
	cr_assert_eq(cpool_probe(fd), CPOOL_ALIVE, "got %s",
		     cpool_verdict_name(cpool_probe(fd)));
	close(fd);
	close(peer);
}

Test(probe, reads_and_so_clears_a_pending_socket_error)
{
	int peer, fd = make_scenario(AF_INET, S6_FIN_THEN_OUR_SEND, &peer);
	enum cpool_verdict v1 = cpool_probe(fd), v2 = cpool_probe(fd);

	cr_assert_eq(v1, CPOOL_PEER_RESET, "first: got %s want peer_reset",
		     cpool_verdict_name(v1));
	/* SO_ERROR's EPIPE was read: what is left looks like a FIN */
	cr_assert_eq(v2, CPOOL_PEER_CLOSED, "second: got %s want peer_closed",
		     cpool_verdict_name(v2));
	close(fd);
}

static void
check_refused_connect(int family)
{
	struct sockaddr_storage ss;
	socklen_t len;
	int port = closed_port(family), fd, rc, rev;
	enum cpool_verdict v;

	cr_assert_gt(port, 0, "closed_port: %s", strerror(-port));
	memset(&ss, 0, sizeof(ss));
	if (family == AF_INET6) {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;

		a->sin6_family = AF_INET6;
		a->sin6_addr = in6addr_loopback;
		a->sin6_port = htons((uint16_t)port);
		len = sizeof(*a);
	} else {
		struct sockaddr_in *a = (struct sockaddr_in *)&ss;

		a->sin_family = AF_INET;
		a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		a->sin_port = htons((uint16_t)port);
		len = sizeof(*a);
	}
	fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	cr_assert_geq(fd, 0);
	rc = connect(fd, (struct sockaddr *)&ss, len);
	cr_assert(rc == -1 && (errno == EINPROGRESS || errno == ECONNREFUSED),
		  "nonblocking connect to a closed port: rc %d errno %s", rc,
		  strerror(errno));
	if (errno == EINPROGRESS) {
		rev = wait_fd(fd, POLLOUT, WAIT_MS);
		cr_assert(rev & POLLOUT, "connect never completed: 0x%x", rev);
	}
	v = cpool_probe(fd);
	cr_assert_eq(v, CPOOL_SOCKET_ERROR,
		     "refused connect over %s: got %s want socket_error",
		     family_name(family), cpool_verdict_name(v));
	close(fd);
}

Test(probe, reports_a_refused_nonblocking_connect_as_socket_error)
{
	check_refused_connect(AF_INET);
	if (ipv6_loopback_works())
		check_refused_connect(AF_INET6);
}

static void
check_bad_fd(int fd, const char *what)
{
	enum cpool_verdict v;

	errno = 0;
	v = cpool_probe(fd);
	cr_assert_eq(v, CPOOL_SOCKET_ERROR, "%s: got %s want socket_error",
		     what, cpool_verdict_name(v));
	cr_assert_eq(errno, 0, "%s: errno changed to %s", what,
		     strerror(errno));
}

Test(probe, reports_fds_that_are_no_connected_socket_as_socket_error)
{
	int p[2], s, l;

	check_bad_fd(-1, "fd -1");
	cr_assert_eq(pipe(p), 0);
	check_bad_fd(p[0], "pipe read end");
	check_bad_fd(p[1], "pipe write end");
	close(p[0]);
	close(p[1]);
	check_bad_fd(p[0], "closed fd");

	s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	cr_assert_geq(s, 0);
	check_bad_fd(s, "unconnected TCP socket");
	close(s);

	l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	cr_assert_geq(l, 0);
	cr_assert_eq(listen(l, 1), 0);
	check_bad_fd(l, "listening socket");
	close(l);
}

Test(probe, classifies_unix_stream_sockets_too)
{
	int sv[2];
	enum cpool_verdict v;

	cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv),
		     0);
	v = cpool_probe(sv[0]);
	cr_assert_eq(v, CPOOL_ALIVE, "idle: got %s", cpool_verdict_name(v));
	cr_assert_eq(send(sv[1], "x", 1, 0), 1);
	v = cpool_probe(sv[0]);
	cr_assert_eq(v, CPOOL_UNEXPECTED_DATA, "byte: got %s",
		     cpool_verdict_name(v));
	cr_assert_eq(recv(sv[0], &(char){ 0 }, 1, 0), 1);
	close(sv[1]);
	v = cpool_probe(sv[0]);
	cr_assert_eq(v, CPOOL_PEER_CLOSED, "closed: got %s",
		     cpool_verdict_name(v));
	close(sv[0]);
}

/*
 * The seed article read errno after calls that had not failed. Whatever
 * errno holds before the probe, the verdict is the same, and errno is
 * left as it was (cpool.h: "errno is preserved").
 */
static const int stale_errnos[] = { 0, EAGAIN, EINPROGRESS, ECONNRESET,
				    EPIPE, ETIMEDOUT, EBADF };

static void
check_stale_errno(int family, enum scenario s)
{
	for (size_t i = 0; i < sizeof(stale_errnos) / sizeof(*stale_errnos);
	     i++) {
		int peer, fd = make_scenario(family, s, &peer), after;
		enum cpool_verdict v;

		errno = stale_errnos[i];
		v = cpool_probe(fd);
		after = errno;
		cr_assert_eq(v, scenario_verdict[s],
			     "%s over %s, errno preset to %s: got %s want %s",
			     scenario_name[s], family_name(family),
			     strerror(stale_errnos[i]), cpool_verdict_name(v),
			     cpool_verdict_name(scenario_verdict[s]));
		cr_assert_eq(after, stale_errnos[i],
			     "%s: errno preset %d (%s) came back %d (%s)",
			     scenario_name[s], stale_errnos[i],
			     strerror(stale_errnos[i]), after,
			     strerror(after));
		close(fd);
		if (peer != -1)
			close(peer);
	}
}

Test(probe, ignores_a_stale_errno_in_every_scenario_and_preserves_it)
{
	bool v6 = ipv6_loopback_works();

	for (int s = 0; s < SCENARIO_COUNT; s++) {
		check_stale_errno(AF_INET, (enum scenario)s);
		if (v6)
			check_stale_errno(AF_INET6, (enum scenario)s);
	}
}

Test(probe, keeps_a_peer_closed_socket_closed_with_errno_preset_to_eagain)
{
	int peer, fd = make_scenario(AF_INET, S3_FIN, &peer);
	enum cpool_verdict v;

	errno = EAGAIN;
	v = cpool_probe(fd);
	cr_assert_eq(v, CPOOL_PEER_CLOSED, "got %s want peer_closed",
		     cpool_verdict_name(v));
	close(fd);
}

Test(probe, keeps_a_healthy_socket_alive_with_errno_preset_to_econnreset)
{
	int peer, fd = make_scenario(AF_INET, S1_HEALTHY, &peer);
	enum cpool_verdict v;

	errno = ECONNRESET;
	v = cpool_probe(fd);
	cr_assert_eq(v, CPOOL_ALIVE, "got %s want alive",
		     cpool_verdict_name(v));
	close(fd);
	close(peer);
}

/* SOCKETS.md D4: the blog's EINPROGRESS was left over by connect(). */
Test(probe, reports_peer_closed_with_einprogress_left_by_a_nonblocking_connect)
{
	struct sockaddr_in sin = { .sin_family = AF_INET };
	socklen_t len = sizeof(sin);
	int l, fd, a, rc, rev;
	enum cpool_verdict v;

	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	cr_assert_geq(l, 0);
	cr_assert_eq(bind(l, (struct sockaddr *)&sin, len), 0);
	cr_assert_eq(listen(l, 1), 0);
	cr_assert_eq(getsockname(l, (struct sockaddr *)&sin, &len), 0);

	fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	cr_assert_geq(fd, 0);
	rc = connect(fd, (struct sockaddr *)&sin, len);
	cr_assert(rc == -1 && errno == EINPROGRESS,
		  "loopback nonblocking connect: rc %d %s", rc,
		  strerror(errno));
	rev = wait_fd(fd, POLLOUT, WAIT_MS);
	cr_assert(rev & POLLOUT, "connect never completed: 0x%x", rev);
	a = accept4(l, NULL, NULL, SOCK_CLOEXEC);
	cr_assert_geq(a, 0);
	close(a);
	client_sees(fd, POLLRDHUP, "the FIN");

	errno = EINPROGRESS; /* what the real flow leaves behind */
	v = cpool_probe(fd);
	cr_assert_eq(v, CPOOL_PEER_CLOSED, "got %s want peer_closed",
		     cpool_verdict_name(v));
	close(fd);
	close(l);
}

/* SOCKETS.md D5: a healthy socket stays alive however often it is probed. */
Test(probe, never_changes_a_healthy_socket)
{
	int sv[2], err = tcp_pair(AF_INET, sv);

	cr_assert_eq(err, 0);
	for (int i = 0; i < 100; i++) {
		enum cpool_verdict v = cpool_probe(sv[0]);

		cr_assert_eq(v, CPOOL_ALIVE, "probe #%d: got %s", i + 1,
			     cpool_verdict_name(v));
	}
	/* and it still carries data both ways */
	cr_assert_eq(send(sv[0], "q", 1, MSG_NOSIGNAL), 1);
	cr_assert_eq(recv(sv[1], &(char){ 0 }, 1, 0), 1);
	cr_assert_eq(send(sv[1], "a", 1, MSG_NOSIGNAL), 1);
	cr_assert_eq(recv(sv[0], &(char){ 0 }, 1, 0), 1);
	close(sv[0]);
	close(sv[1]);
}

Test(probe, names_every_verdict_exactly)
{
	static const struct {
		enum cpool_verdict v;
		const char *name;
	} want[] = {
		{ CPOOL_ALIVE, "alive" },
		{ CPOOL_PEER_CLOSED, "peer_closed" },
		{ CPOOL_PEER_RESET, "peer_reset" },
		{ CPOOL_TIMED_OUT, "timed_out" },
		{ CPOOL_UNEXPECTED_DATA, "unexpected_data" },
		{ CPOOL_SOCKET_ERROR, "socket_error" },
		{ (enum cpool_verdict)(CPOOL_SOCKET_ERROR + 1), "unknown" },
		{ (enum cpool_verdict)1000, "unknown" },
		{ (enum cpool_verdict)-1, "unknown" },
	};

	for (size_t i = 0; i < sizeof(want) / sizeof(*want); i++) {
		const char *got = cpool_verdict_name(want[i].v);

		cr_assert_not_null(got, "verdict %d: NULL", (int)want[i].v);
		cr_assert_str_eq(got, want[i].name,
				 "verdict %d: got \"%s\" want \"%s\"",
				 (int)want[i].v, got, want[i].name);
	}
}

Test(probe, names_every_close_reason_exactly)
{
	static const struct {
		enum cpool_close_reason r;
		const char *name;
	} want[] = {
		{ CPOOL_CLOSE_PEER_CLOSED, "peer_closed" },
		{ CPOOL_CLOSE_PEER_RESET, "peer_reset" },
		{ CPOOL_CLOSE_TIMED_OUT, "timed_out" },
		{ CPOOL_CLOSE_UNEXPECTED_DATA, "unexpected_data" },
		{ CPOOL_CLOSE_SOCKET_ERROR, "socket_error" },
		{ CPOOL_CLOSE_IDLE_TIMEOUT, "idle_timeout" },
		{ CPOOL_CLOSE_LIFETIME, "lifetime" },
		{ CPOOL_CLOSE_MAX_USES, "max_uses" },
		{ CPOOL_CLOSE_BY_CALLER, "by_caller" },
		{ CPOOL_CLOSE_SHUTDOWN, "shutdown" },
		{ CPOOL_CLOSE_DRAINED, "drained" },
		{ CPOOL_CLOSE_REASON_END, "unknown" },
		{ (enum cpool_close_reason)1000, "unknown" },
		{ (enum cpool_close_reason)-1, "unknown" },
	};

	for (size_t i = 0; i < sizeof(want) / sizeof(*want); i++) {
		const char *got = cpool_close_reason_name(want[i].r);

		cr_assert_not_null(got, "reason %d: NULL", (int)want[i].r);
		cr_assert_str_eq(got, want[i].name,
				 "reason %d: got \"%s\" want \"%s\"",
				 (int)want[i].r, got, want[i].name);
	}
}

Test(probe, close_reasons_share_the_verdict_values)
{
	cr_assert_eq((int)CPOOL_CLOSE_PEER_CLOSED, (int)CPOOL_PEER_CLOSED);
	cr_assert_eq((int)CPOOL_CLOSE_PEER_RESET, (int)CPOOL_PEER_RESET);
	cr_assert_eq((int)CPOOL_CLOSE_TIMED_OUT, (int)CPOOL_TIMED_OUT);
	cr_assert_eq((int)CPOOL_CLOSE_UNEXPECTED_DATA,
		     (int)CPOOL_UNEXPECTED_DATA);
	cr_assert_eq((int)CPOOL_CLOSE_SOCKET_ERROR, (int)CPOOL_SOCKET_ERROR);
	cr_assert_eq((int)CPOOL_ALIVE, 0);
}

Test(probe, strerror_gives_the_libc_text_for_negative_and_positive_errnos)
{
	static const int codes[] = { ECONNREFUSED, ETIMEDOUT, ENOENT, EEXIST,
				     EINVAL, ESHUTDOWN, EHOSTUNREACH, EMFILE,
				     ECONNABORTED, EPIPE, ECONNRESET };
	char want[256];

	for (size_t i = 0; i < sizeof(codes) / sizeof(*codes); i++) {
		const char *neg = cpool_strerror(-codes[i]);
		const char *pos = cpool_strerror(codes[i]);

		snprintf(want, sizeof(want), "%s", strerror(codes[i]));
		cr_assert_not_null(neg);
		cr_assert_not_null(pos);
		cr_assert_str_eq(neg, want,
				 "cpool_strerror(-%d): \"%s\" want \"%s\"",
				 codes[i], neg, want);
		cr_assert_str_eq(pos, want,
				 "cpool_strerror(%d): \"%s\" want \"%s\"",
				 codes[i], pos, want);
	}
}

Test(probe, strerror_says_unknown_error_for_codes_it_does_not_know)
{
	static const int codes[] = { -100000, 100000, -4096 - 1 };

	for (size_t i = 0; i < sizeof(codes) / sizeof(*codes); i++) {
		const char *s = cpool_strerror(codes[i]);

		cr_assert_not_null(s);
		cr_assert_str_eq(s, "Unknown error",
				 "cpool_strerror(%d): \"%s\"", codes[i], s);
	}
}
