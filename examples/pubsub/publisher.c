/* publisher.c - publishes a small struct on topic "demo/counter" ten times a
 * second. Run takt-broker first, then this and takt-example-sub.
 *
 *   takt-example-pub [COUNT]     (COUNT samples, default 20; 0 = forever)
 */
#include <takt/ipc.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct counter { /* the sample type: both sides agree on it by name */
	unsigned long n;
	char text[32];
};

int main(int argc, char **argv)
{
	struct takt_pub_opts po = {
		.topic = "demo/counter",
		.type_name = "example.Counter",
		.max_payload = sizeof(struct counter),
		.history = 4, /* a subscriber that starts late still sees the last 4 */
	};
	unsigned long count = argc > 1 ? strtoul(argv[1], NULL, 0) : 20;
	struct timespec tick = {.tv_nsec = 100 * 1000 * 1000};
	takt_node *node;
	takt_pub *pub;
	int r;

	r = takt_node_open(NULL, &node); /* domain: $TAKT_DOMAIN or "default" */
	if (r < 0) {
		fprintf(stderr, "publisher: cannot reach the broker: %s (is takt-broker running?)\n", strerror(-r));
		return 1;
	}
	r = takt_pub_open(node, &po, &pub);
	if (r < 0) {
		fprintf(stderr, "publisher: cannot open topic: %s\n", strerror(-r));
		takt_node_close(node);
		return 1;
	}
	for (unsigned long i = 1; count == 0 || i <= count; i++) {
		struct counter *c;

		if (takt_pub_loan(pub, sizeof(*c), (void **)&c) < 0) /* a chunk in shared memory */
			continue;
		c->n = i;                                             /* written in place: no copy */
		snprintf(c->text, sizeof(c->text), "hello #%lu", i);
		r = takt_pub_publish(pub, c);                         /* hands it to every subscriber */
		printf("publisher: sent %-12s to %d subscriber(s)\n", c->text, r);
		fflush(stdout);
		nanosleep(&tick, NULL);
	}
	takt_pub_close(pub);
	takt_node_close(node);
	return 0;
}
