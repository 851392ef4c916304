/* subscriber.c - prints what arrives on topic "demo/counter".
 *
 *   takt-example-sub [COUNT]     (stop after COUNT samples, default 20;
 *                                 gives up after 5 s without a sample)
 */
#include <takt/ipc.h>

#include <stdio.h>
#include <stdlib.h>
#include <errno.h>
#include <string.h>

struct counter {
	unsigned long n;
	char text[32];
};

int main(int argc, char **argv)
{
	struct takt_sub_opts so = {
		.topic = "demo/counter",
		.type_name = "example.Counter",
		.queue_depth = 16,
		.history = 4,
	};
	unsigned long want = argc > 1 ? strtoul(argv[1], NULL, 0) : 20, got = 0;
	takt_node *node;
	takt_sub *sub;
	int r;

	r = takt_node_open(NULL, &node);
	if (r < 0) {
		fprintf(stderr, "subscriber: cannot reach the broker: %s (is takt-broker running?)\n", strerror(-r));
		return 1;
	}
	r = takt_sub_open(node, &so, &sub);
	if (r < 0) {
		fprintf(stderr, "subscriber: cannot open topic: %s\n", strerror(-r));
		takt_node_close(node);
		return 1;
	}
	while (got < want) {
		const struct counter *c;
		struct takt_sample_info info;

		r = takt_sub_wait(sub, 5000000000LL); /* sleeps on an eventfd, no polling */
		if (r == -ETIMEDOUT) {
			fprintf(stderr, "subscriber: nothing for 5 s, giving up\n");
			break;
		}
		while (takt_sub_take(sub, (const void **)&c, &info) == 0) { /* a pointer, no copy */
			printf("subscriber: got %-12s seq %llu from publisher %llx\n", c->text,
			       (unsigned long long)info.seq, (unsigned long long)info.publisher_id);
			fflush(stdout);
			takt_sub_release(sub, c);
			got++;
		}
	}
	printf("subscriber: %lu samples, %llu dropped\n", got, (unsigned long long)takt_sub_dropped(sub));
	takt_sub_close(sub);
	takt_node_close(node);
	return got == want ? 0 : 1;
}
