/* main.c - takt-broker: command line, start-up and shutdown. */
#include "broker.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#ifdef TAKT_HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: takt-broker [OPTIONS]\n"
		"Lays out a takt domain's shared-memory segments and serves its clients.\n\n"
		"  -c, --config FILE    INI configuration (default: the built-in config)\n"
		"  -d, --domain NAME    domain to serve (default: the config's [domain] name,\n"
		"                       else $TAKT_DOMAIN, else \"default\")\n"
		"  -f, --foreground     stay in the foreground (default: detach once ready)\n"
		"  -v, --verbose        log processes attaching and leaving, and bad messages\n"
		"      --print-config   print the effective configuration and exit\n"
		"  -h, --help           this text\n"
		"  -V, --version        print the version\n\n"
		"The control socket and lock live in $TAKT_RUNTIME_DIR (default:\n"
		"$XDG_RUNTIME_DIR/takt, else /tmp/takt-<uid>). See docs/operations.md.\n");
}

struct args {
	const char *config, *domain;
	int foreground, print_config;
};

static int parse_args(int argc, char **argv, struct args *a, struct broker *b)
{
	static const struct option opts[] = {
		{"config", required_argument, NULL, 'c'}, {"domain", required_argument, NULL, 'd'},
		{"foreground", no_argument, NULL, 'f'},   {"verbose", no_argument, NULL, 'v'},
		{"help", no_argument, NULL, 'h'},         {"version", no_argument, NULL, 'V'},
		{"print-config", no_argument, NULL, 'P'}, {0},
	};
	int c;

	while ((c = getopt_long(argc, argv, "c:d:fvhV", opts, NULL)) != -1) {
		switch (c) {
		case 'c': a->config = optarg; break;
		case 'd': a->domain = optarg; break;
		case 'f': a->foreground = 1; break;
		case 'v': b->verbose = true; break;
		case 'P': a->print_config = 1; break;
		case 'h': usage(stdout); exit(0);
		case 'V': printf("takt-broker %s\n", TAKT_VERSION_STRING); exit(0);
		default: usage(stderr); return -EINVAL;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "takt-broker: unexpected argument '%s'\n", argv[optind]);
		return -EINVAL;
	}
	return 0;
}

static int load_config(struct broker *b, const struct args *a)
{
	char err[512];
	const char *domain;

	config_defaults(&b->cfg);
	if (a->config && config_load(&b->cfg, a->config, err, sizeof(err)) < 0) {
		fprintf(stderr, "takt-broker: bad config: %s\n", err);
		return -EINVAL;
	}
	/* --domain, else the config's [domain] name, else $TAKT_DOMAIN, else "default" */
	domain = a->domain ? a->domain : (b->cfg.domain_set ? NULL : proto_domain_default(NULL));
	if (domain) {
		if (!proto_domain_ok(domain)) {
			fprintf(stderr, "takt-broker: bad domain '%s': 1..47 characters of [A-Za-z0-9_.-], "
				"not starting with '.'\n", domain);
			return -EINVAL;
		}
		snprintf(b->cfg.domain, sizeof(b->cfg.domain), "%s", domain);
	}
	if (config_validate(&b->cfg, err, sizeof(err)) < 0) {
		fprintf(stderr, "takt-broker: bad config: %s\n", err);
		return -EINVAL;
	}
	return 0;
}

/* Detaches; the parent exits once the child reports ready (or failed). */
static int daemonize(int *ret_ready_fd)
{
	int p[2];
	pid_t pid;
	char st = 1;

	if (pipe(p) < 0)
		return -errno;
	pid = fork();
	if (pid < 0)
		return -errno;
	if (pid > 0) {
		close(p[1]);
		if (read(p[0], &st, 1) != 1)
			st = 1;
		exit(st);
	}
	close(p[0]);
	setsid();
	if (chdir("/") < 0) {
		/* stay where we are: nothing relies on the cwd */
	}
	int null = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (null >= 0) {
		dup2(null, STDIN_FILENO); /* stderr stays: start-up errors reach the terminal */
		close(null);
	}
	*ret_ready_fd = p[1];
	return 0;
}

/* Tells a service manager how the broker stands: systemd's Type=notify
 * (READY=1 once clients can connect, STOPPING=1, STATUS=) over
 * $NOTIFY_SOCKET. Nothing without one, or in a build without libsystemd. */
__attribute__((format(printf, 1, 2))) static void notify_service(const char *fmt, ...)
{
#ifdef TAKT_HAVE_SYSTEMD
	char msg[384];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	sd_notify(0, msg); /* no manager listening is not an error of ours */
#else
	(void)fmt;
#endif
}

static int start(struct broker *b)
{
	int r = seg_lock_domain(b);

	if (r < 0)
		return r;
	r = seg_create_all(b);
	if (r < 0)
		return r;
	r = reg_init(b);
	if (r < 0)
		return r;
	r = server_listen(b); /* reads whether a predecessor died (adopt_start) */
	if (r < 0)
		return r;
	/* Ours from now on: a successor adopts this registry only. */
	r = seg_record_registry(b);
	if (r < 0)
		fprintf(stderr, "takt-broker: cannot write %s: %s\n", b->lock_path, strerror(-r));
	return r;
}

int main(int argc, char **argv)
{
	struct broker b = {.lock_fd = -1, .listen_fd = -1, .mgmt_fd = -1, .mgmt_ro_fd = -1};
	struct args a = {0};
	int ready_fd = -1, r;
	uint32_t n_procs = 0;
	bool keep, served = false;
	sigset_t stop;
	char st = 0;

	/* SIGINT and SIGTERM wait for the signalfd (server_listen) from the
	 * start: as pid 1 of a container, a signal with no handler would be
	 * dropped, and one that came during start-up must still stop us. */
	sigemptyset(&stop);
	sigaddset(&stop, SIGINT);
	sigaddset(&stop, SIGTERM);
	sigprocmask(SIG_BLOCK, &stop, NULL);
	if (parse_args(argc, argv, &a, &b) < 0 || load_config(&b, &a) < 0)
		return 2;
	if (a.print_config) {
		config_print(&b.cfg, stdout);
		return 0;
	}
	if (!a.foreground && daemonize(&ready_fd) < 0)
		return 1;
	r = start(&b);
	if (r == 0) {
		printf("takt-broker: domain '%s' ready (pid %d, socket %s)\n", b.cfg.domain, getpid(),
		       b.sock_path);
		fflush(stdout);
		/* After start(): the socket listens, so a unit ordered after ours
		 * finds the domain (tests/install/test_notify.c checks). */
		notify_service("READY=1\nSTATUS=domain '%s' ready, socket %s", b.cfg.domain, b.sock_path);
		if (ready_fd >= 0 && write(ready_fd, &st, 1) == 1)
			close(ready_fd);
		r = server_run(&b);
		served = true;
	}
	/* A stop with processes attached (systemd's restart, say) leaves what
	 * a broker that dies leaves: the socket, and the lock file naming our
	 * registry, so the next broker adopts the domain and the processes
	 * keep it. With none, or [socket] keep_on_stop = false, the domain ends. */
	keep = b.proc_state && b.cfg.keep_on_stop && (n_procs = reg_procs(&b)) > 0;
	if (keep)
		fprintf(stderr,
			"takt-broker: domain '%s': stopping with %u processes attached: the next broker of the domain "
			"takes them back ([socket] keep_on_stop)\n",
			b.cfg.domain, n_procs);
	else if (b.sock_path[0] && b.listen_fd >= 0)
		unlink(b.sock_path);
	if (served && keep)
		notify_service("STOPPING=1\nSTATUS=domain '%s' left to the next broker (%u processes attached)",
			       b.cfg.domain, n_procs);
	else if (served)
		notify_service("STOPPING=1\nSTATUS=domain '%s' ends", b.cfg.domain);
	server_free(&b);
	seg_destroy_all(&b);
	if (keep)
		seg_leave_domain(&b);
	else
		seg_unlock_domain(&b); /* last: nothing of ours is left to remove */
	if (r < 0)
		fprintf(stderr, "takt-broker: stopped: %s\n", strerror(-r));
	return r < 0 ? 1 : 0;
}
