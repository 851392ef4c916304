/* sensor.c - publishes an IMU-like sample on "sensor/imu" at 1 kHz.
 *
 *   takt-example-sensor [SECONDS]     (default 3)
 */
#include <takt/ipc.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct imu {
	double t, accel, gyro;
};

int main(int argc, char **argv)
{
	struct takt_pub_opts po = {.topic = "sensor/imu", .type_name = "example.Imu",
				   .max_payload = sizeof(struct imu)};
	double seconds = argc > 1 ? atof(argv[1]) : 3.0;
	struct timespec next;
	takt_node *node;
	takt_pub *pub;
	long n = 0, total = (long)(seconds * 1000);
	int r;

	if ((r = takt_node_open(NULL, &node)) < 0 || (r = takt_pub_open(node, &po, &pub)) < 0) {
		fprintf(stderr, "sensor: %s (is takt-broker running?)\n", strerror(-r));
		return 1;
	}
	clock_gettime(CLOCK_MONOTONIC, &next);
	for (; n < total; n++) {
		struct imu *s;

		next.tv_nsec += 1000000; /* absolute 1 ms grid: no drift */
		if (next.tv_nsec >= 1000000000) {
			next.tv_nsec -= 1000000000;
			next.tv_sec++;
		}
		clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL);
		if (takt_pub_loan(pub, sizeof(*s), (void **)&s) < 0)
			continue;
		s->t = (double)n / 1000.0;
		s->accel = sin(s->t * 6.28) + 0.05 * ((double)rand() / RAND_MAX - 0.5);
		s->gyro = cos(s->t * 6.28);
		takt_pub_publish(pub, s);
	}
	printf("sensor: published %ld samples at 1 kHz\n", n);
	takt_node_close(node);
	return 0;
}
