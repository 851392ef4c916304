/* takt-bench-record - whether `takt record` keeps up, and what it costs.
 *
 * N publisher processes each publish SIZE-byte samples at RATE Hz (an
 * absolute-time schedule, so a late wake-up is caught up, not lost) on
 * topics bench/rec/0.. for SECONDS; `takt record` (the tool built beside
 * this) records them; when the publishers are done the recorder gets
 * SIGINT. Printed: samples published and recorded, drops, the recorder's
 * CPU time (user + system, from wait4) against the wall time, the file's
 * size against the payload bytes. Payloads are pseudo-random bytes, which
 * LZ4 cannot shrink (the worst case for the recorder); --compressible
 * makes three quarters of each zeroes.
 *
 *   takt-bench-record [--rate HZ] [--size BYTES] [--seconds S] [--topics N]
 *                     [--compressible] [-o FILE]
 *
 * Needs a broker for the domain ($TAKT_DOMAIN) whose [limits]
 * queue_depth_max lets the recorder queue a burst (the default 256 holds
 * 256 ms at 1 kHz). Exit status: 0 every sample recorded, 1 some were
 * lost or the run failed, 2 no broker.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <takt/ipc.h>

#ifndef TAKT_TOOL_PATH
#define TAKT_TOOL_PATH "takt"
#endif

struct cfg {
	double rate, seconds;
	size_t size;
	int topics;
	bool compressible;
	const char *file;
};

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void fill(uint8_t *p, size_t n, uint32_t i, bool compressible)
{
	uint32_t s = i * 2654435761u;

	for (size_t k = 0; k < n; k++) {
		s = s * 1103515245u + 12345u;
		p[k] = compressible && k % 4 ? 0 : (uint8_t)(s >> 16);
	}
}

/* A publisher: sample 0 until it reaches the recorder, then the rest on
 * schedule. Writes how many it published to fd. */
static int publisher(const struct cfg *c, int t, int fd)
{
	char topic[32];
	struct takt_pub_opts po = {.topic = topic, .type_name = "bench.Blob", .max_payload = c->size};
	uint64_t n = (uint64_t)(c->rate * c->seconds), period = (uint64_t)(1e9 / c->rate), next = 0;
	takt_node *node;
	takt_pub *p;
	uint64_t i = 0;

	snprintf(topic, sizeof(topic), "bench/rec/%d", t);
	if (takt_node_open(NULL, &node) < 0 || takt_pub_open(node, &po, &p) < 0)
		return 1;
	for (uint64_t t0 = now_ns(); i < n;) {
		void *d;
		int r = takt_pub_loan(p, c->size, &d);

		if (r == -ENOBUFS) {
			usleep(100);
			continue;
		}
		if (r < 0)
			return 1;
		fill(d, c->size, (uint32_t)i, c->compressible);
		r = takt_pub_publish(p, d);
		if (r < 0)
			return 1;
		if (i == 0 && r == 0) {
			if (now_ns() - t0 > 10000000000ull)
				return 1;
			usleep(1000);
			continue;
		}
		if (i == 0)
			next = now_ns();
		i++;
		next += period;
		clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME,
				&(struct timespec){.tv_sec = (time_t)(next / 1000000000ull),
						   .tv_nsec = (long)(next % 1000000000ull)},
				NULL);
	}
	if (write(fd, &i, sizeof(i)) != sizeof(i))
		return 1;
	usleep(200000); /* the recorder takes the last ones while we live */
	takt_node_close(node);
	return 0;
}

static uint64_t json_u64(const char *text, const char *key)
{
	char pat[64];
	const char *p;

	snprintf(pat, sizeof(pat), "\"%s\":", key);
	p = strstr(text, pat);
	return p ? strtoull(p + strlen(pat), NULL, 10) : UINT64_MAX;
}

static int run(const struct cfg *c)
{
	int fds[2], out[2], st;
	pid_t rec, pubs[64];
	uint64_t published = 0, start, wall;
	struct rusage ru;
	struct stat sb;
	char json[8192] = "";
	ssize_t n;

	if (pipe(fds) < 0 || pipe(out) < 0)
		return 1;
	rec = fork();
	if (rec == 0) {
		dup2(out[1], STDOUT_FILENO);
		execl(TAKT_TOOL_PATH, "takt", "record", "--json", "-o", c->file, "bench/rec/*", (char *)NULL);
		_exit(127);
	}
	close(out[1]);
	start = now_ns();
	for (int t = 0; t < c->topics; t++) {
		pubs[t] = fork();
		if (pubs[t] == 0)
			_exit(publisher(c, t, fds[1]));
	}
	for (int t = 0; t < c->topics; t++) {
		uint64_t k;

		if (read(fds[0], &k, sizeof(k)) != sizeof(k)) {
			fprintf(stderr, "takt-bench-record: a publisher failed\n");
			kill(rec, SIGKILL);
			return 1;
		}
		published += k;
	}
	kill(rec, SIGINT);
	n = read(out[0], json, sizeof(json) - 1);
	json[n > 0 ? n : 0] = 0;
	wait4(rec, &st, 0, &ru);
	wall = now_ns() - start;
	for (int t = 0; t < c->topics; t++)
		waitpid(pubs[t], NULL, 0);
	if (!WIFEXITED(st) || WEXITSTATUS(st) || stat(c->file, &sb) < 0) {
		fprintf(stderr, "takt-bench-record: takt record failed (%d)\n", st);
		return WIFEXITED(st) && WEXITSTATUS(st) == 1 ? 2 : 1;
	}
	{
		double cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
			     (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
		uint64_t got = json_u64(json, "samples"), drops = json_u64(json, "drops"), bytes = json_u64(json, "bytes");

		printf("%d x %.0f Hz x %zu B for %.1f s: published %" PRIu64 ", recorded %" PRIu64 ", dropped %" PRIu64
		       "\n  recorder CPU %.3f s in %.2f s (%.1f%% of one core), %.1f MB/s of payload\n"
		       "  file %lld bytes for %" PRIu64 " payload bytes (%.2fx), max RSS %ld KiB\n",
		       c->topics, c->rate, c->size, c->seconds, published, got, drops, cpu, (double)wall / 1e9,
		       100 * cpu / ((double)wall / 1e9), (double)bytes / ((double)wall / 1e9) / 1e6,
		       (long long)sb.st_size, bytes, (double)sb.st_size / (double)bytes, ru.ru_maxrss);
		return got == published && drops == 0 ? 0 : 1;
	}
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{"rate", required_argument, NULL, 'r'},   {"size", required_argument, NULL, 's'},
		{"seconds", required_argument, NULL, 't'}, {"topics", required_argument, NULL, 'n'},
		{"compressible", no_argument, NULL, 'c'}, {"help", no_argument, NULL, 'h'},
		{0},
	};
	struct cfg c = {.rate = 1000, .seconds = 5, .size = 4096, .topics = 1, .file = "/tmp/takt-bench-record.mcap"};
	int o;

	while ((o = getopt_long(argc, argv, "r:s:t:n:co:h", opts, NULL)) != -1) {
		switch (o) {
		case 'r': c.rate = atof(optarg); break;
		case 's': c.size = strtoul(optarg, NULL, 0); break;
		case 't': c.seconds = atof(optarg); break;
		case 'n': c.topics = atoi(optarg); break;
		case 'c': c.compressible = true; break;
		case 'o': c.file = optarg; break;
		default:
			fprintf(o == 'h' ? stdout : stderr, "usage: takt-bench-record [--rate HZ] [--size BYTES] "
							    "[--seconds S] [--topics N] [--compressible] [-o FILE]\n");
			return o == 'h' ? 0 : 1;
		}
	}
	if (c.rate <= 0 || c.seconds <= 0 || !c.size || c.topics < 1 || c.topics > 64) {
		fprintf(stderr, "takt-bench-record: bad arguments\n");
		return 1;
	}
	return run(&c);
}
