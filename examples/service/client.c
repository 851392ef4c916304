/* client.c - asks "demo/upper" to shout its arguments.
 *
 *   takt-example-client [WORD...]    (default: "hello takt")
 */
#include <takt/ipc.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv)
{
	struct takt_service_opts so = {.service = "demo/upper", .max_request = 256};
	takt_node *node;
	takt_client *cli;
	int r;

	if ((r = takt_node_open(NULL, &node)) < 0) {
		fprintf(stderr, "client: cannot reach the broker: %s (is takt-broker running?)\n", strerror(-r));
		return 1;
	}
	if ((r = takt_client_open(node, &so, &cli)) < 0) {
		fprintf(stderr, "client: cannot open demo/upper: %s\n", strerror(-r));
		takt_node_close(node);
		return 1;
	}
	for (int i = 1; i < (argc > 1 ? argc : 2); i++) {
		const char *word = argc > 1 ? argv[i] : "hello takt";
		char answer[256];

		/* loan, copy, send, wait for the response, copy it out: one call */
		r = takt_client_call(cli, word, strlen(word), answer, sizeof(answer), 2000000000);
		if (r < 0) {
			fprintf(stderr, "client: %s: %s\n", word, r == -ENOTCONN ? "no server (start takt-example-server)"
								    : strerror(-r));
			break;
		}
		printf("%s -> %.*s\n", word, r, answer);
	}
	takt_client_close(cli);
	takt_node_close(node);
	return r < 0 ? 1 : 0;
}
