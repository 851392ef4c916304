/* trigger.c - trigger declarations and their registration in epoll.
 *
 * Each trigger fd is dup()ed, so one subscriber or fd can trigger several
 * tasks (epoll keys registrations by file and fd) and the executor owns
 * what it closes. The epoll tags are made by tag_make (executor.h).
 */
#include "executor.h"

#include <errno.h>
#include <stdint.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/timerfd.h>
#include <unistd.h>

static struct trig *trig_slot(takt_triggers *t)
{
	if (!t)
		return NULL;
	if (t->n == TAKT_EXEC_MAX_TRIGGERS) {
		t->err = -ENOSPC;
		return NULL;
	}
	memset(&t->t[t->n], 0, sizeof(t->t[0]));
	t->t[t->n].fd = t->t[t->n].timer_fd = -1;
	return &t->t[t->n++];
}

/* A bad declaration fails the add, even if declare() ignores the return. */
static int trig_refuse(takt_triggers *t, int err)
{
	if (t && t->err == 0)
		t->err = err;
	return err;
}

int takt_trigger_interval(takt_triggers *t, uint64_t period_ns)
{
	if (!t || period_ns == 0 || period_ns > INT64_MAX) /* (deadline sums must not wrap) */
		return trig_refuse(t, -EINVAL);
	if (t->period_ns) {
		t->err = -EINVAL; /* one scan period per task: the add fails */
		return -EINVAL;
	}
	t->period_ns = period_ns;
	return 0;
}

static int arm_sub(void *obj)
{
	return takt_sub_arm(obj);
}

static int arm_server(void *obj)
{
	return takt_server_arm(obj);
}

static int arm_client(void *obj)
{
	return takt_client_arm(obj);
}

/* A trigger on what arms and wakes like a subscriber (its fd, armed before
 * each sleep). */
static int trig_queue(takt_triggers *t, void *obj, int fd, int (*arm)(void *), enum trig_kind kind,
		      uint64_t deadline_ns)
{
	struct trig *tr;

	if (!obj || fd < 0 || (kind == TRIG_DEADLINE && deadline_ns == 0))
		return trig_refuse(t, -EINVAL);
	tr = trig_slot(t);
	if (!tr)
		return -ENOSPC;
	tr->kind = kind;
	tr->arm = arm;
	tr->obj = obj;
	tr->fd = fd; /* dup()ed at registration */
	tr->deadline_ns = deadline_ns;
	return 0;
}

int takt_trigger_subscriber(takt_triggers *t, takt_sub *sub)
{
	return trig_queue(t, sub, sub ? takt_sub_fd(sub) : -1, arm_sub, TRIG_SUB, 0);
}

int takt_trigger_deadline(takt_triggers *t, takt_sub *sub, uint64_t deadline_ns)
{
	return trig_queue(t, sub, sub ? takt_sub_fd(sub) : -1, arm_sub, TRIG_DEADLINE, deadline_ns);
}

int takt_trigger_server(takt_triggers *t, takt_server *srv)
{
	return trig_queue(t, srv, srv ? takt_server_fd(srv) : -1, arm_server, TRIG_SUB, 0);
}

int takt_trigger_client(takt_triggers *t, takt_client *cli)
{
	return trig_queue(t, cli, cli ? takt_client_fd(cli) : -1, arm_client, TRIG_SUB, 0);
}

int takt_trigger_event(takt_triggers *t, takt_event *ev)
{
	struct trig *tr;

	if (!ev || takt_event_fd(ev) < 0)
		return trig_refuse(t, -EINVAL);
	tr = trig_slot(t);
	if (!tr)
		return -ENOSPC;
	tr->kind = TRIG_EVENT;
	tr->fd = takt_event_fd(ev);
	return 0;
}

int takt_trigger_fd(takt_triggers *t, int fd)
{
	struct trig *tr;

	if (fd < 0 || fcntl(fd, F_GETFD) < 0)
		return trig_refuse(t, -EINVAL);
	tr = trig_slot(t);
	if (!tr)
		return -ENOSPC;
	tr->kind = TRIG_FD;
	tr->fd = fd;
	return 0;
}

int takt_let_input(takt_triggers *t, takt_sub *sub)
{
	if (!t || !sub)
		return trig_refuse(t, -EINVAL);
	if (t->let.n_in == TAKT_EXEC_MAX_LET)
		return trig_refuse(t, -ENOSPC);
	t->let.in[t->let.n_in++] = sub;
	return 0;
}

int takt_let_output(takt_triggers *t, takt_pub *pub)
{
	if (!t || !pub)
		return trig_refuse(t, -EINVAL);
	if (t->let.n_out == TAKT_EXEC_MAX_LET)
		return trig_refuse(t, -ENOSPC);
	t->let.out[t->let.n_out++] = pub;
	return 0;
}

uint64_t takt_ctx_now_ns(const takt_ctx *ctx)
{
	return ctx ? ctx->now_ns : 0;
}

uint64_t takt_ctx_scheduled_ns(const takt_ctx *ctx)
{
	return ctx ? ctx->scheduled_ns : 0;
}

int takt_ctx_task(const takt_ctx *ctx)
{
	return ctx ? ctx->task : -EINVAL;
}

int takt_ctx_deadline_missed(const takt_ctx *ctx)
{
	return ctx ? ctx->deadline_missed : 0;
}

static int deadline_arm(struct trig *tr, uint64_t now)
{
	struct itimerspec its = {
		.it_value = {.tv_sec = (time_t)(tr->deadline_ns / 1000000000),
			     .tv_nsec = (long)(tr->deadline_ns % 1000000000)},
	};

	its.it_interval = its.it_value; /* keeps firing every d while no sample comes */
	tr->armed_at_ns = now;
	return timerfd_settime(tr->timer_fd, 0, &its, NULL) < 0 ? -errno : 0;
}

static int trig_add_fd(struct takt_exec *ex, int fd, uint64_t tag)
{
	struct epoll_event ev = {.events = EPOLLIN, .data.u64 = tag};

	return epoll_ctl(ex->epfd, EPOLL_CTL_ADD, fd, &ev) < 0 ? -errno : 0;
}

int trig_register(struct takt_exec *ex, struct task *t)
{
	for (unsigned i = 0; i < t->n_trigs; i++) {
		struct trig *tr = &t->trigs[i];
		int fd = fcntl(tr->fd, F_DUPFD_CLOEXEC, 3), r;

		tr->fd = fd;
		if (fd < 0)
			return -errno;
		r = trig_add_fd(ex, fd, tag_make(ex->n_tasks, i, false));
		if (r == 0 && tr->kind == TRIG_DEADLINE) {
			tr->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
			r = tr->timer_fd < 0 ? -errno : 0; /* armed when a run starts */
			if (r == 0)
				r = trig_add_fd(ex, tr->timer_fd, tag_make(ex->n_tasks, i, true));
		}
		if (r < 0)
			return r;
	}
	return 0;
}

void trig_release(struct takt_exec *ex, struct task *t)
{
	for (unsigned i = 0; i < t->n_trigs; i++) {
		/* Remove before closing: closing our dup does not remove the
		 * registration while the subscriber's own fd keeps the file open. */
		if (t->trigs[i].fd >= 0) {
			epoll_ctl(ex->epfd, EPOLL_CTL_DEL, t->trigs[i].fd, NULL);
			close(t->trigs[i].fd);
		}
		if (t->trigs[i].timer_fd >= 0) {
			epoll_ctl(ex->epfd, EPOLL_CTL_DEL, t->trigs[i].timer_fd, NULL);
			close(t->trigs[i].timer_fd);
		}
		t->trigs[i].fd = t->trigs[i].timer_fd = -1;
	}
	t->n_trigs = 0;
}

bool trig_arm_all(struct takt_exec *ex, void (*mark)(struct takt_exec *, struct task *))
{
	bool ready = false;

	for (uint32_t i = 0; i < ex->n_tasks; i++) {
		struct task *t = ex->tasks[i];

		if (t->in_flight)
			continue; /* A1: its items may be taking from it right now */
		for (unsigned j = 0; j < t->n_trigs; j++) {
			struct trig *tr = &t->trigs[j];

			if ((tr->kind == TRIG_SUB || tr->kind == TRIG_DEADLINE) && tr->arm(tr->obj) == 1) {
				t->sample_woke = true;
				mark(ex, t); /* samples already wait: this phase runs it */
				ready = true;
			}
		}
	}
	return ready;
}

/* Out of epoll altogether (EPOLL_CTL_DEL): a registration modified to no
 * events still reports a hang-up, which would wake us again and again. */
void trig_disable(struct takt_exec *ex, struct task *t, unsigned slot)
{
	if (t->disabled & (1u << slot))
		return;
	if (epoll_ctl(ex->epfd, EPOLL_CTL_DEL, t->trigs[slot].fd, NULL) == 0)
		t->disabled |= 1u << slot;
}

/* Back in epoll, which reports the fd at once if it is still ready. */
void trig_enable_disabled(struct takt_exec *ex, struct task *t)
{
	for (unsigned j = 0; t->disabled && j < t->n_trigs; j++)
		if ((t->disabled & (1u << j)) &&
		    trig_add_fd(ex, t->trigs[j].fd, tag_make((uint32_t)t->id, j, false)) == 0)
			t->disabled &= ~(1u << j);
}

void trig_after_run(struct task *t, uint64_t now_ns)
{
	/* Only a sample restarts the wait: runs for other triggers (an
	 * interval on the same task) must not hide a silent publisher. */
	for (unsigned j = 0; j < t->n_trigs; j++)
		if (t->trigs[j].kind == TRIG_DEADLINE && t->sample_woke)
			deadline_arm(&t->trigs[j], now_ns);
	t->sample_woke = false;
}

void trig_start_deadlines(struct takt_exec *ex, uint64_t now_ns)
{
	for (uint32_t i = 0; i < ex->n_tasks; i++)
		for (unsigned j = 0; j < ex->tasks[i]->n_trigs; j++)
			if (ex->tasks[i]->trigs[j].kind == TRIG_DEADLINE)
				deadline_arm(&ex->tasks[i]->trigs[j], now_ns);
}

/* A task needs a trigger to ever run; a subscriber can trigger one task
 * only (its items take from it, and two tasks could run on two workers at
 * once). Any set of periods may share an executor (timer.c). */
/* Whether sub (a subscriber, a server or a client) is one of o's queues
 * (a trigger's or a LET input). */
static bool task_uses_sub(const struct task *o, const void *sub)
{
	for (unsigned b = 0; b < o->n_trigs; b++)
		if (o->trigs[b].obj == sub)
			return true;
	for (unsigned b = 0; b < o->let_ports.n_in; b++)
		if (o->let_ports.in[b] == sub)
			return true;
	return false;
}

static bool task_uses_pub(const struct task *o, const takt_pub *pub)
{
	for (unsigned b = 0; b < o->let_ports.n_out; b++)
		if (o->let_ports.out[b] == pub)
			return true;
	return false;
}

int trig_validate(struct takt_exec *ex, const struct task *t)
{
	const struct let_ports *lp = &t->let_ports;

	if (t->n_trigs == 0 && t->period_ns == 0)
		return -EINVAL;
	/* LET: periods only, each port once */
	if ((lp->n_in || lp->n_out) && (!t->period_ns || t->n_trigs))
		return -EINVAL;
	for (unsigned a = 0; a < lp->n_in; a++)
		for (unsigned b = 0; b < a; b++)
			if (lp->in[a] == lp->in[b])
				return -EINVAL;
	for (unsigned a = 0; a < lp->n_out; a++)
		for (unsigned b = 0; b < a; b++)
			if (lp->out[a] == lp->out[b])
				return -EINVAL;
	for (uint32_t i = 0; i < ex->n_tasks; i++) {
		const struct task *o = ex->tasks[i];

		for (unsigned a = 0; a < t->n_trigs; a++)
			if (t->trigs[a].obj && task_uses_sub(o, t->trigs[a].obj))
				return -EBUSY;
		for (unsigned a = 0; a < lp->n_in; a++)
			if (task_uses_sub(o, lp->in[a]))
				return -EBUSY;
		for (unsigned a = 0; a < lp->n_out; a++)
			if (task_uses_pub(o, lp->out[a]))
				return -EBUSY;
	}
	return 0;
}
