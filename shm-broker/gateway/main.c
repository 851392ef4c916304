/* main.c - takt-gateway: bridges the topics its configuration names
 * between a takt domain and Eclipse Cyclone DDS (docs/gateway.md).
 *
 *   takt-gateway --config FILE [--domain D]     run
 *   takt-gateway --check-config FILE            check FILE and exit
 *   takt-gateway --stats [--json] [--name N] [--domain D]
 */
#include "gateway.h"

#include <dds/dds.h>
#include <dds/version.h>
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

static void usage(FILE *f)
{
	fprintf(f, "Usage: takt-gateway --config FILE [--domain D]\n"
		   "  or:  takt-gateway --check-config FILE\n"
		   "  or:  takt-gateway --stats [--json] [--name NAME] [--domain D]\n"
		   "Bridges the takt topics FILE names to and from Eclipse Cyclone DDS.\n\n"
		   "  -c, --config FILE        the gateway's INI configuration (docs/gateway.md)\n"
		   "      --check-config FILE  check FILE (errors as file:line: reason) and exit\n"
		   "  -d, --domain D           the takt domain (default: [gateway] domain, $TAKT_DOMAIN, default)\n"
		   "  -s, --stats              print the counters of the gateways running in the domain\n"
		   "  -n, --name NAME          with --stats: only that gateway\n"
		   "  -j, --json               with --stats: JSON\n"
		   "  -h, --help               this text\n"
		   "  -V, --version            the version\n\n"
		   "Exit status: 0 ok (stopped by SIGINT or SIGTERM), 1 failed, 2 usage or configuration error.\n");
}

/* Cyclone's configuration: [dds] config as given, else one that binds it
 * to [dds] interface, else Cyclone's own default ($CYCLONEDDS_URI). */
static int dds_open(struct gw *g)
{
	const struct gw_config *c = &g->cfg;
	char xml[1024];
	const char *conf = NULL;
	dds_entity_t d = 0;

	if (c->dds_config[0]) {
		conf = c->dds_config;
	} else if (c->dds_interface[0]) {
		snprintf(xml, sizeof(xml),
			 "<CycloneDDS><Domain id=\"any\"><General><Interfaces><NetworkInterface name=\"%s\"/>"
			 "</Interfaces><AllowMulticast>true</AllowMulticast></General></Domain></CycloneDDS>",
			 c->dds_interface);
		conf = xml;
	}
	if (conf)
		d = dds_create_domain(c->dds_domain, conf);
	if (d < 0) {
		fprintf(stderr, "takt-gateway: DDS domain %u: %s\n", c->dds_domain, dds_strretcode(d));
		return -EIO;
	}
	/* writes are packed until the outbound thread's drain flushes them
	 * (out.c): one packet for a burst, at once for a lone sample (Cyclone
	 * 0.10 sets it for every writer of the process) */
	dds_write_set_batch(true);
	g->participant = dds_create_participant(c->dds_domain, NULL, NULL);
	g->stop_guard = g->participant < 0 ? g->participant : dds_create_guardcondition(g->participant);
	if (g->stop_guard < 0) {
		fprintf(stderr, "takt-gateway: DDS participant in domain %u: %s\n", c->dds_domain,
			dds_strretcode(g->stop_guard));
		return -EIO;
	}
	return 0;
}

/* The counters, published as JSON on _gateway/NAME (stats.c). */
static void stats_publish(struct gw *g, takt_pub *p)
{
	char *s = gw_stats_json(g);

	if (s && p)
		takt_pub_send(p, s, strlen(s));
	free(s);
}

static int run(struct gw *g, const char *domain)
{
	char stats_topic[TAKT_TOPIC_NAME_MAX];
	struct timespec every = {.tv_sec = g->cfg.stats_ms / 1000, .tv_nsec = (long)(g->cfg.stats_ms % 1000) * 1000000};
	pthread_t out, in;
	takt_pub *stats = NULL;
	sigset_t sigs;
	int rc, sig = 0;

	/* blocked before any thread exists (the node's agent, Cyclone's, ours
	 * inherit it): SIGINT and SIGTERM come to sigtimedwait below */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	rc = takt_node_open(&(struct takt_node_opts){.domain = domain, .name = g->cfg.name}, &g->node);
	if (rc < 0) {
		fprintf(stderr, "takt-gateway: no broker runs for domain '%s' (%s); start one with takt-broker\n",
			domain ? domain : "(default)", strerror(-rc));
		return 1;
	}
	snprintf(stats_topic, sizeof(stats_topic), GW_STATS_PREFIX "%s", g->cfg.name);
	rc = takt_pub_open(g->node, &(struct takt_pub_opts){.topic = stats_topic, .type_name = GW_STATS_TYPE,
							    .max_payload = 64 << 10, .history = 1}, &stats);
	if (rc < 0)
		fprintf(stderr, "takt-gateway: cannot publish the counters on '%s': %s\n", stats_topic, strerror(-rc));
	g->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (g->stop_fd < 0 || gw_seen_open(g, domain ? domain : getenv("TAKT_DOMAIN") && *getenv("TAKT_DOMAIN")
					       ? getenv("TAKT_DOMAIN") : "default") < 0 || dds_open(g) < 0)
		return 1;
	if (pthread_create(&out, NULL, gw_out_thread, g) || pthread_create(&in, NULL, gw_in_thread, g)) {
		fprintf(stderr, "takt-gateway: cannot start its threads\n");
		return 1;
	}
	fprintf(stderr, "takt-gateway: '%s' bridging %u rules between takt domain '%s' and DDS domain %u\n",
		g->cfg.name, g->cfg.n_rules, domain ? domain : "(default)", g->cfg.dds_domain);
	while (sig <= 0) {
		stats_publish(g, stats);
		sig = sigtimedwait(&sigs, NULL, &every);
	}
	atomic_store(&g->stop, true);
	eventfd_write(g->stop_fd, 1);
	dds_set_guardcondition(g->stop_guard, true);
	pthread_join(out, NULL);
	pthread_join(in, NULL);
	stats_publish(g, stats);
	takt_node_close(g->node);
	dds_delete(g->participant);
	dds_delete(DDS_CYCLONEDDS_HANDLE);
	close(g->stop_fd);
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{"config", required_argument, NULL, 'c'}, {"check-config", required_argument, NULL, 'C'},
		{"domain", required_argument, NULL, 'd'}, {"stats", no_argument, NULL, 's'},
		{"name", required_argument, NULL, 'n'},   {"json", no_argument, NULL, 'j'},
		{"help", no_argument, NULL, 'h'},         {"version", no_argument, NULL, 'V'},
		{0},
	};
	const char *config = NULL, *domain = NULL, *name = NULL;
	bool stats = false, json = false, check = false;
	static struct gw g;
	char err[512];
	int o;

	while ((o = getopt_long(argc, argv, "c:d:sn:jhV", opts, NULL)) != -1) {
		switch (o) {
		case 'C': check = true; /* fall through */
		case 'c': config = optarg; break;
		case 'd': domain = optarg; break;
		case 's': stats = true; break;
		case 'n': name = optarg; break;
		case 'j': json = true; break;
		case 'h': usage(stdout); return 0;
		case 'V': printf("takt-gateway %s (Cyclone DDS %s)\n", TAKT_VERSION_STRING, DDS_VERSION); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind < argc || (!stats && !config)) {
		usage(stderr);
		return 2;
	}
	if (stats)
		return gw_stats_print(domain, name, json);
	if (gw_config_load(&g.cfg, config, err, sizeof(err)) < 0) {
		fprintf(stderr, "takt-gateway: %s\n", err);
		return 2;
	}
	if (check) {
		printf("%s: ok, %u rules\n", config, g.cfg.n_rules);
		return 0;
	}
	return run(&g, domain ? domain : g.cfg.domain[0] ? g.cfg.domain : NULL);
}
