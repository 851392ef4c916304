/* server.c - serves "demo/upper": answers each request with its text in
 * upper case, written straight into the response's shared memory.
 *
 *   takt-example-server [SECONDS]    (serves for SECONDS, default 30)
 */
#include <takt/ipc.h>

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int main(int argc, char **argv)
{
	struct takt_service_opts so = {.service = "demo/upper", .max_response = 256};
	time_t end = time(NULL) + (argc > 1 ? atoi(argv[1]) : 30);
	unsigned long served = 0;
	takt_node *node;
	takt_server *srv;
	int r;

	if ((r = takt_node_open(NULL, &node)) < 0) {
		fprintf(stderr, "server: cannot reach the broker: %s (is takt-broker running?)\n", strerror(-r));
		return 1;
	}
	if ((r = takt_server_open(node, &so, &srv)) < 0) {
		fprintf(stderr, "server: cannot serve demo/upper: %s\n", strerror(-r));
		takt_node_close(node);
		return 1;
	}
	while (time(NULL) < end) {
		struct takt_request_info req;
		const char *text;
		char *out;

		r = takt_server_take(srv, (const void **)&text, &req); /* zero copy: in the client's memory */
		if (r == -EAGAIN) {
			takt_server_wait(srv, 1000000000); /* sleeps until a request comes (or 1 s) */
			continue;
		}
		if (r < 0)
			break;
		if (req.size <= so.max_response && takt_server_loan(srv, &req, req.size, (void **)&out) == 0) {
			for (uint32_t i = 0; i < req.size; i++)
				out[i] = (char)toupper((unsigned char)text[i]);
			takt_server_respond(srv, &req, out); /* to that client, and it alone */
		}
		takt_server_release(srv, text);
		served++;
	}
	printf("server: served %lu requests\n", served);
	takt_server_close(srv);
	takt_node_close(node);
	return 0;
}
