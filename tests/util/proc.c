/* SPDX-License-Identifier: MIT */
#include "proc.h"
#include "net.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int
tcp_count_local_state(const int *ports, size_t n, unsigned state)
{
	static const char *const files[] = { "/proc/net/tcp",
					     "/proc/net/tcp6" };
	char line[512];
	int hits = 0;

	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		FILE *f = fopen(files[i], "re");

		if (!f)
			continue; /* no IPv6 here */
		/* header: "  sl  local_address rem_address   st ..." */
		if (!fgets(line, sizeof(line), f)) {
			fclose(f);
			continue;
		}
		while (fgets(line, sizeof(line), f)) {
			unsigned lport, st;

			if (sscanf(line,
				   " %*d: %*[0-9A-Fa-f]:%x %*[0-9A-Fa-f]:%*x %x",
				   &lport, &st) != 2 || st != state)
				continue;
			for (size_t k = 0; k < n; k++)
				if ((int)lport == ports[k]) {
					hits++;
					break;
				}
		}
		fclose(f);
	}
	return hits;
}

long
nofile_raise(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == -1)
		return -errno;
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) == -1)
			return -errno;
	}
	return (long)rl.rlim_cur;
}

/* ---- calls with a deadline ------------------------------------------- */

struct deadline_call {
	void (*fn)(void *);
	void *arg;
	int done; /* eventfd: posted when fn returned */
};

static void *
deadline_main(void *p)
{
	struct deadline_call *d = p;

	d->fn(d->arg);
	sig_post(d->done);
	return NULL;
}

int
call_with_deadline(void (*fn)(void *), void *arg, int timeout_ms)
{
	struct deadline_call *d = malloc(sizeof(*d));
	pthread_t t;

	if (!d)
		return -ENOMEM;
	d->fn = fn;
	d->arg = arg;
	d->done = sig_new();
	if (d->done < 0 || pthread_create(&t, NULL, deadline_main, d)) {
		if (d->done >= 0)
			close(d->done);
		free(d);
		return -EAGAIN;
	}
	if (sig_wait(d->done, timeout_ms) == 0) {
		pthread_join(t, NULL);
		close(d->done);
		free(d);
		return 0;
	}
	/* Still running: it keeps @d (leaked on purpose) and its eventfd. */
	pthread_detach(t);
	return -ETIMEDOUT;
}

int
join_with_deadline(pthread_t t, int timeout_ms)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts); /* pthread_timedjoin_np's clock */
	ts.tv_sec += timeout_ms / 1000;
	ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	if (pthread_timedjoin_np(t, NULL, &ts) == 0)
		return 0;
	pthread_detach(t);
	return -ETIMEDOUT;
}

/* ---- threads asleep ---------------------------------------------------- */

/*
 * State letter and voluntary + involuntary context switches of @tid, or
 * false if they cannot be read.
 */
static bool
thread_sample(pid_t tid, char *state, unsigned long long *switches)
{
	char path[64], line[256];
	unsigned long long v = 0, nv = 0;
	int got = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/self/task/%d/status", (int)tid);
	f = fopen(path, "re");
	if (!f)
		return false;
	*state = '?';
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "State: %c", state) == 1)
			got++;
		else if (sscanf(line, "voluntary_ctxt_switches: %llu", &v) == 1)
			got++;
		else if (sscanf(line, "nonvoluntary_ctxt_switches: %llu",
				&nv) == 1)
			got++;
	}
	fclose(f);
	*switches = v + nv;
	return got == 3;
}

int
wait_thread_parked(pid_t tid, int quiet_ms, int timeout_ms)
{
	int64_t deadline = now_ms() + timeout_ms, since = -1;
	unsigned long long sw0 = 0, sw;
	char st;

	for (;;) {
		if (thread_sample(tid, &st, &sw) && st == 'S') {
			if (since < 0 || sw != sw0) {
				since = now_ms();
				sw0 = sw;
			} else if (now_ms() - since >= quiet_ms) {
				return 0;
			}
		} else {
			since = -1;
		}
		if (now_ms() > deadline)
			return -ETIMEDOUT;
		pause_ms(1);
	}
}

/* ---- children with a deadline ---------------------------------------- */

int
child_start(struct child *ch, child_fn *fn, void *arg)
{
	int p[2];

	memset(ch, 0, sizeof(*ch));
	ch->pid = -1;
	ch->rfd = -1;
	if (pipe2(p, O_CLOEXEC) == -1)
		return -errno;
	fflush(NULL); /* nothing buffered is written twice */
	ch->t0 = now_ms();
	ch->pid = fork();
	if (ch->pid == -1) {
		int err = -errno;

		close(p[0]);
		close(p[1]);
		return err;
	}
	if (ch->pid == 0) {
		close(p[0]);
		_exit(fn(arg, p[1]));
	}
	close(p[1]);
	ch->rfd = p[0];
	return 0;
}

/* Drains what the child wrote; the pipe is at EOF once it is gone. */
static void
child_collect(struct child *ch)
{
	size_t off = strlen(ch->said);
	ssize_t n;

	fcntl(ch->rfd, F_SETFL, O_NONBLOCK);
	while (off < sizeof(ch->said) - 1) {
		n = read(ch->rfd, ch->said + off, sizeof(ch->said) - 1 - off);
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		off += (size_t)n;
	}
	ch->said[off] = '\0';
	close(ch->rfd);
	ch->rfd = -1;
}

int
child_wait(struct child *ch, int timeout_ms)
{
	int64_t deadline = ch->t0 + timeout_ms;
	int pidfd = (int)syscall(SYS_pidfd_open, ch->pid, 0);
	pid_t r;

	for (;;) {
		r = waitpid(ch->pid, &ch->status, WNOHANG);
		if (r == ch->pid)
			break;
		if (r == -1 && errno != EINTR) {
			ch->status = -1;
			break;
		}
		if (now_ms() >= deadline) {
			kill(ch->pid, SIGKILL);
			while (waitpid(ch->pid, &ch->status, 0) == -1 &&
			       errno == EINTR)
				;
			ch->timed_out = true;
			break;
		}
		if (pidfd >= 0) {
			/* Readable once the child has exited. */
			int64_t left = deadline - now_ms();

			wait_fd(pidfd, POLLIN, left > 0 ? (int)left : 0);
		} else {
			pause_ms(1); /* no pidfd: poll its state */
		}
	}
	ch->ms = now_ms() - ch->t0;
	if (pidfd >= 0)
		close(pidfd);
	child_collect(ch);
	return ch->timed_out ? -ETIMEDOUT : 0;
}

bool
child_ok(const struct child *ch)
{
	return !ch->timed_out && ch->status != -1 && WIFEXITED(ch->status) &&
	       WEXITSTATUS(ch->status) == 0;
}

const char *
child_how(const struct child *ch)
{
	static char buf[128];

	if (ch->timed_out)
		snprintf(buf, sizeof(buf), "hung: killed after %lld ms",
			 (long long)ch->ms);
	else if (ch->status == -1)
		snprintf(buf, sizeof(buf), "lost (waitpid failed)");
	else if (WIFEXITED(ch->status))
		snprintf(buf, sizeof(buf), "exit %d after %lld ms",
			 WEXITSTATUS(ch->status), (long long)ch->ms);
	else if (WIFSIGNALED(ch->status))
		snprintf(buf, sizeof(buf),
			 "killed by signal %d (%s) after %lld ms",
			 WTERMSIG(ch->status), strsignal(WTERMSIG(ch->status)),
			 (long long)ch->ms);
	else
		snprintf(buf, sizeof(buf), "status 0x%x", ch->status);
	return buf;
}

void
child_say(int wfd, const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf) - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n > sizeof(buf) - 2)
		n = (int)sizeof(buf) - 2;
	buf[n++] = '\n';
	while (write(wfd, buf, (size_t)n) == -1 && errno == EINTR)
		;
}
