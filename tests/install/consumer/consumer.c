/* consumer.c - a program built out of the tree against an installed takt
 * (tests/install/test_consumer.sh builds it four ways: pkg-config shared
 * and --static, CMake find_package(takt) takt::exec and takt::exec-static).
 *
 * Against the broker of $TAKT_DOMAIN: publishes a sample, takes it back
 * through a subscriber and checks it; publishes another, which an executor
 * task (libtakt-exec) takes. Prints "consumer: ok" and exits 0, else names
 * the step that failed and exits 1.
 */
#include <takt/exec.h>
#include <takt/ipc.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>

#define TOPIC "install/check"

struct sample {
	unsigned n;
	char text[28];
};

static int failed(const char *what, int r)
{
	fprintf(stderr, "consumer: %s: %s\n", what, strerror(-r));
	return 1;
}

static int publish(takt_pub *pub, unsigned n)
{
	struct sample s = {.n = n};

	snprintf(s.text, sizeof(s.text), "sample %u", n);
	return takt_pub_send(pub, &s, sizeof(s)); /* subscribers reached */
}

/* Takes one sample and checks it is sample n. */
static int take(takt_sub *sub, unsigned n)
{
	const struct sample *s;
	struct takt_sample_info info;
	char want[28];
	int r = takt_sub_take(sub, (const void **)&s, &info);

	if (r < 0)
		return r;
	snprintf(want, sizeof(want), "sample %u", n);
	r = info.size == sizeof(*s) && s->n == n && !strcmp(s->text, want) ? 0 : -EBADMSG;
	takt_sub_release(sub, s);
	return r;
}

static int declare(takt_triggers *t, void *sub)
{
	return takt_trigger_subscriber(t, sub);
}

static int execute(takt_ctx *ctx, void *sub)
{
	(void)ctx;
	return take(sub, 2) == 0 ? TAKT_CONTINUE : -EBADMSG;
}

int main(void)
{
	struct takt_exec_summary sum = {0};
	takt_node *node;
	takt_pub *pub;
	takt_sub *sub;
	takt_exec *ex;
	int r;

	if ((r = takt_node_open(&(struct takt_node_opts){.name = "consumer"}, &node)) < 0)
		return failed("takt_node_open", r);
	if ((r = takt_pub_open(node, &(struct takt_pub_opts){.topic = TOPIC, .max_payload = sizeof(struct sample)},
			       &pub)) < 0)
		return failed("takt_pub_open", r);
	if ((r = takt_sub_open(node, &(struct takt_sub_opts){.topic = TOPIC, .queue_depth = 4}, &sub)) < 0)
		return failed("takt_sub_open", r);

	if ((r = publish(pub, 1)) != 1)
		return failed("publish (reaching its subscriber)", r < 0 ? r : -ENOTCONN);
	if ((r = takt_sub_wait(sub, 2000000000)) < 0 || (r = take(sub, 1)) < 0)
		return failed("take", r);

	if ((r = takt_exec_create(&(struct takt_exec_opts){.handle_signals = -1}, &ex)) < 0)
		return failed("takt_exec_create", r);
	if ((r = takt_exec_add(ex, &(struct takt_item){.name = "take", .declare = declare, .execute = execute,
						       .user = sub})) < 0)
		return failed("takt_exec_add", r);
	if ((r = publish(pub, 2)) != 1)
		return failed("publish", r < 0 ? r : -ENOTCONN);
	if ((r = takt_exec_run_until_idle(ex, 2000000000, &sum)) < 0)
		return failed("takt_exec_run_until_idle", r);
	if (sum.dispatches != 1 || sum.errors != 0) {
		fprintf(stderr, "consumer: the executor ran %llu dispatches, %llu errors; expected 1 and 0\n",
			(unsigned long long)sum.dispatches, (unsigned long long)sum.errors);
		return 1;
	}
	takt_exec_destroy(ex);
	takt_sub_close(sub);
	takt_pub_close(pub);
	takt_node_close(node);
	printf("consumer: ok\n");
	return 0;
}
