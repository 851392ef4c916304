/* cli_top.c - `takt top`: a live view of what hurts in a domain.
 *
 * Every interval it reads the registry (mapped read-only) and what the
 * broker reads of pools and queues (POOLS, CONNS), and shows per topic
 * the rate, the drops and how full its fullest queue is, and per process
 * its ports, loans, chunks out and shared memory, whether it is alive;
 * each table sorted by what is hurting first (drops, full queues; pools
 * near their limit). Rates are differences between two reads: a
 * connection's pushed count over the interval. Plain ANSI (clear screen,
 * reverse video for the header); `q` or Ctrl-C ends it. `--once` prints
 * one snapshot (two reads an interval apart) and ends; with --json as
 * one object.
 */
#include "cli.h"

#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

struct top_topic {
	struct cli_topic_row row;
	double rate;           /* samples per second its publishers pushed (the busiest connection of each) */
	uint64_t dropped;      /* in all, on its live connections */
	double drops;          /* per second */
	double fill;           /* the fullest queue: queued / depth, 0..1 */
	uint64_t queued;
};

struct top_proc {
	uint32_t index, pubs, subs, loans, in_flight, chunks;
	int32_t pid;
	uint32_t uid;
	bool alive;
	uint64_t bytes;
	double pool_use;       /* chunks out / chunks its pools could grow to, 0..1 */
	char name[TAKT_PROC_NAME_MAX];
};

/* The previous read of a connection, to difference against. */
static const struct proto_conn_stat *prev_of(const struct cli_stats *prev, const struct proto_conn_stat *cs)
{
	for (uint32_t i = 0; prev && i < prev->n_conns; i++)
		if (prev->conns[i].conn == cs->conn && prev->conns[i].publisher_id == cs->publisher_id &&
		    prev->conns[i].sub == cs->sub)
			return &prev->conns[i];
	return NULL;
}

static double delta(uint64_t now, uint64_t before, double dt)
{
	return now >= before && dt > 0 ? (double)(now - before) / dt : 0;
}

static int topic_cmp(const void *a, const void *b)
{
	const struct top_topic *x = a, *y = b;

	if (x->drops != y->drops)
		return x->drops < y->drops ? 1 : -1;
	if (x->fill != y->fill)
		return x->fill < y->fill ? 1 : -1;
	if (x->rate != y->rate)
		return x->rate < y->rate ? 1 : -1;
	return strcmp(x->row.name, y->row.name);
}

static int proc_cmp(const void *a, const void *b)
{
	const struct top_proc *x = a, *y = b;

	if (x->alive != y->alive)
		return x->alive ? 1 : -1;
	if (x->pool_use != y->pool_use)
		return x->pool_use < y->pool_use ? 1 : -1;
	return x->bytes < y->bytes ? 1 : x->bytes > y->bytes ? -1 : 0;
}

/* Per topic, from this read and the one dt seconds before. */
static uint32_t top_topics(const struct seg_view *v, const struct cli_stats *now, const struct cli_stats *prev,
			   double dt, struct top_topic **ret)
{
	struct cli_topic_row *rows;
	uint32_t n = cli_topic_rows(v, &rows);
	struct top_topic *t = calloc(n ? n : 1, sizeof(*t));

	for (uint32_t i = 0; t && i < n; i++) {
		t[i].row = rows[i];
		for (uint32_t pi = 0; pi < v->lim.publishers; pi++) {
			double busiest = 0;

			if (!cli_in_use(&v->pubs[pi].state) || v->pubs[pi].topic != rows[i].index)
				continue;
			for (uint32_t k = 0; k < now->n_conns; k++) {
				const struct proto_conn_stat *cs = &now->conns[k], *ps;
				double r;

				if (cs->pub != pi)
					continue;
				ps = prev_of(prev, cs);
				r = ps ? delta(cs->pushed, ps->pushed, dt) : 0;
				busiest = r > busiest ? r : busiest;
				t[i].dropped += cs->dropped;
				t[i].drops += ps ? delta(cs->dropped, ps->dropped, dt) : 0;
				t[i].queued += cs->pushed - cs->taken;
				if (cs->depth && (double)(cs->pushed - cs->taken) / cs->depth > t[i].fill)
					t[i].fill = (double)(cs->pushed - cs->taken) / cs->depth;
			}
			t[i].rate += busiest;
		}
	}
	free(rows);
	if (t)
		qsort(t, n, sizeof(*t), topic_cmp);
	*ret = t;
	return t ? n : 0;
}

static bool pid_alive(int32_t pid)
{
	return pid > 0 && (kill(pid, 0) == 0 || errno == EPERM);
}

static uint32_t top_procs(const struct seg_view *v, const struct cli_stats *now, struct top_proc **ret)
{
	struct top_proc *p = calloc(v->lim.processes, sizeof(*p));
	uint32_t n = 0;

	for (uint32_t i = 0; p && i < v->lim.processes; i++) {
		struct top_proc *x = &p[n];
		uint64_t max = 0;

		if (!cli_in_use(&v->procs[i].state))
			continue;
		x->index = i;
		x->uid = v->procs[i].uid;
		cli_proc_name(v, i, x->name, &x->pid);
		x->alive = x->pid == 0 || pid_alive(x->pid); /* pid 0: in a namespace we cannot see (alive to the broker) */
		for (uint32_t k = 0; k < v->lim.publishers; k++) {
			const struct proto_pool_stat *ps;

			if (!cli_in_use(&v->pubs[k].state) || v->pubs[k].proc != i)
				continue;
			x->pubs++;
			ps = cli_pool_of(now, k);
			if (ps) {
				x->loans += ps->loans;
				x->in_flight += ps->in_flight;
				x->chunks += ps->total;
				x->bytes += ps->bytes;
				max += ps->max;
			}
		}
		for (uint32_t k = 0; k < v->lim.subscribers; k++)
			if (cli_in_use(&v->subs[k].state) && v->subs[k].proc == i) {
				x->subs++;
				for (uint32_t c = 0; c < now->n_conns; c++)
					if (now->conns[c].sub == k) {
						x->bytes += now->conns[c].sub_bytes;
						break;
					}
			}
		x->pool_use = max ? (double)x->in_flight / (double)max : 0;
		n++;
	}
	if (p)
		qsort(p, n, sizeof(*p), proc_cmp);
	*ret = p;
	return p ? n : 0;
}

static struct json_object *snapshot_json(const struct cli *c, double dt, const struct top_topic *t, uint32_t nt,
					 const struct top_proc *p, uint32_t np)
{
	struct json_object *o = json_object_new_object(), *ta = json_object_new_array(),
			   *pa = json_object_new_array();

	json_object_object_add(o, "domain", json_object_new_string(c->domain));
	json_object_object_add(o, "interval_s", json_object_new_double(dt));
	for (uint32_t i = 0; i < nt; i++) {
		struct json_object *j = json_object_new_object();

		json_object_object_add(j, "name", json_object_new_string(t[i].row.name));
		json_object_object_add(j, "type", json_object_new_string(t[i].row.type));
		json_object_object_add(j, "publishers", json_object_new_int64(t[i].row.pubs));
		json_object_object_add(j, "subscribers", json_object_new_int64(t[i].row.subs));
		json_object_object_add(j, "rate_hz", json_object_new_double(t[i].rate));
		json_object_object_add(j, "dropped", cli_json_u64(t[i].dropped));
		json_object_object_add(j, "drops_per_s", json_object_new_double(t[i].drops));
		json_object_object_add(j, "queued", cli_json_u64(t[i].queued));
		json_object_object_add(j, "queue_fill_max", json_object_new_double(t[i].fill));
		json_object_array_add(ta, j);
	}
	for (uint32_t i = 0; i < np; i++) {
		struct json_object *j = json_object_new_object();
		const struct passwd *pw = getpwuid(p[i].uid);

		json_object_object_add(j, "index", json_object_new_int64(p[i].index));
		json_object_object_add(j, "pid", json_object_new_int(p[i].pid));
		json_object_object_add(j, "name", json_object_new_string(p[i].name));
		json_object_object_add(j, "user", json_object_new_string(pw ? pw->pw_name : "?"));
		json_object_object_add(j, "alive", json_object_new_boolean(p[i].alive));
		json_object_object_add(j, "publishers", json_object_new_int64(p[i].pubs));
		json_object_object_add(j, "subscribers", json_object_new_int64(p[i].subs));
		json_object_object_add(j, "loans", json_object_new_int64(p[i].loans));
		json_object_object_add(j, "in_flight", json_object_new_int64(p[i].in_flight));
		json_object_object_add(j, "chunks", json_object_new_int64(p[i].chunks));
		json_object_object_add(j, "pool_use", json_object_new_double(p[i].pool_use));
		json_object_object_add(j, "shm_bytes", cli_json_u64(p[i].bytes));
		json_object_array_add(pa, j);
	}
	json_object_object_add(o, "topics", ta);
	json_object_object_add(o, "processes", pa);
	return o;
}

static void snapshot_print(const struct cli *c, double dt, bool tty, const struct top_topic *t, uint32_t nt,
			   const struct top_proc *p, uint32_t np)
{
	time_t now = time(NULL);
	char when[32];

	strftime(when, sizeof(when), "%H:%M:%S", localtime(&now));
	if (tty)
		printf("\033[H\033[2J");
	printf("takt top - domain '%s' - %s - every %.1f s - %u topics, %u processes%s\n\n", c->domain, when, dt, nt,
	       np, tty ? " - q quits" : "");
	printf(tty ? "\033[7m%-32s %10s %10s %10s %8s %6s %5s %5s\033[0m\n" : "%-32s %10s %10s %10s %8s %6s %5s %5s\n",
	       "TOPIC", "RATE/s", "DROPS/s", "DROPPED", "QUEUED", "FILL%", "PUBS", "SUBS");
	for (uint32_t i = 0; i < nt; i++)
		printf("%-32s %10.1f %10.1f %10llu %8llu %6.0f %5u %5u\n", t[i].row.name, t[i].rate, t[i].drops,
		       (unsigned long long)t[i].dropped, (unsigned long long)t[i].queued, t[i].fill * 100, t[i].row.pubs,
		       t[i].row.subs);
	printf(tty ? "\n\033[7m%-5s %7s %-20s %-5s %4s %4s %6s %9s %7s %12s\033[0m\n"
		   : "\n%-5s %7s %-20s %-5s %4s %4s %6s %9s %7s %12s\n",
	       "INDEX", "PID", "NAME", "ALIVE", "PUBS", "SUBS", "LOANS", "IN_FLIGHT", "POOL%", "SHM_BYTES");
	for (uint32_t i = 0; i < np; i++)
		printf("%-5u %7d %-20s %-5s %4u %4u %6u %9u %7.0f %12llu\n", p[i].index, p[i].pid, p[i].name,
		       p[i].alive ? "yes" : "NO", p[i].pubs, p[i].subs, p[i].loans, p[i].in_flight, p[i].pool_use * 100,
		       (unsigned long long)p[i].bytes);
	fflush(stdout);
}

/* Waits dt seconds; false when told to quit (q, a signal). */
static bool top_wait(double dt, bool keys)
{
	struct pollfd pfd = {.fd = STDIN_FILENO, .events = POLLIN};
	int ms = (int)(dt * 1000);

	if (poll(&pfd, keys ? 1 : 0, ms) > 0 && (pfd.revents & POLLIN)) {
		char ch = 0;

		if (read(STDIN_FILENO, &ch, 1) == 1 && (ch == 'q' || ch == 'Q'))
			return false;
	}
	return !cli_stop_signal;
}

int cli_top(struct cli *c, int argc, char **argv)
{
	static const struct option opts[] = {
		{"once", no_argument, NULL, 'o'}, {"interval", required_argument, NULL, 'i'}, {0},
	};
	struct cli_stats s[2] = {{0}};
	struct cli_registry reg;
	struct termios saved;
	bool once = false, tty = isatty(STDOUT_FILENO), keys = false;
	double dt = 1.0;
	int opt, cur = 0, r = 0;

	optind = 1;
	opterr = 0;
	while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (opt == 'o')
			once = true;
		else if (opt == 'i' && cli_parse_double(optarg, &dt) && dt >= 0.05 && dt <= 3600)
			;
		else
			return cli_usage_error(c, "bad option '%s'", argv[optind - 1]);
	}
	if (optind != argc)
		return cli_usage_error(c, "takes no arguments");
	if (cli_registry_open(c, &reg))
		return 1;
	cli_stop_on_signals();
	if (!once && tty && isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &saved) == 0) {
		struct termios raw = saved;

		raw.c_lflag &= ~(tcflag_t)(ICANON | ECHO);
		raw.c_cc[VMIN] = 0;
		raw.c_cc[VTIME] = 0;
		keys = tcsetattr(STDIN_FILENO, TCSANOW, &raw) == 0;
	}
	if (cli_stats_fetch(c, &reg.v, &s[cur])) {
		r = 1;
		goto out;
	}
	while (top_wait(dt, keys)) {
		struct top_topic *t;
		struct top_proc *p;
		uint32_t nt, np;

		cur ^= 1;
		if (cli_stats_fetch(c, &reg.v, &s[cur])) {
			r = 1;
			break;
		}
		nt = top_topics(&reg.v, &s[cur], &s[cur ^ 1], dt, &t);
		np = top_procs(&reg.v, &s[cur], &p);
		if (c->json)
			cli_json_print(snapshot_json(c, dt, t, nt, p, np));
		else
			snapshot_print(c, dt, tty && !once, t, nt, p, np);
		free(t);
		free(p);
		if (once)
			break;
	}
out:
	if (keys)
		tcsetattr(STDIN_FILENO, TCSANOW, &saved);
	cli_stats_free(&s[0]);
	cli_stats_free(&s[1]);
	cli_registry_close(&reg);
	return r;
}
