/* dds.c - what takt-gateway's two directions share on the DDS side: the
 * mapping of takt topic names onto DDS topic names, and of a rule onto
 * DDS QoS (docs/gateway.md, "QoS mapping"). */
#include "gateway.h"

#include <dds/dds.h>
#include <errno.h>
#include <string.h>

void gw_dds_name(const char *topic, char *out, size_t size)
{
	size_t n = strlen(GW_DDS_PREFIX);

	snprintf(out, size, "%s", GW_DDS_PREFIX);
	for (const char *s = topic; *s && n + 3 < size; s++) {
		const char *esc = *s == '_' ? "__" : *s == '.' ? "_d" : *s == '-' ? "_h" : NULL;

		if (esc) {
			memcpy(out + n, esc, 2);
			n += 2;
		} else {
			out[n++] = *s;
		}
	}
	out[n] = 0;
}

int gw_takt_name(const char *dds, char *out, size_t size)
{
	size_t n = 0, plen = strlen(GW_DDS_PREFIX);

	if (strncmp(dds, GW_DDS_PREFIX, plen))
		return -EINVAL;
	for (const char *s = dds + plen; *s; s++) {
		char c = *s;

		if (c == '_') {
			c = s[1] == '_' ? '_' : s[1] == 'd' ? '.' : s[1] == 'h' ? '-' : 0;
			if (!c)
				return -EINVAL;
			s++;
		}
		if (n + 1 >= size)
			return -EINVAL;
		out[n++] = c;
	}
	out[n] = 0;
	return n ? 0 : -EINVAL;
}

void *gw_qos(const struct gw_rule *r)
{
	dds_qos_t *q = dds_create_qos();

	/* A reliable writer whose history is full waits up to 10 s for its
	 * readers' acknowledgements before dds_write fails (counted as a
	 * write error and retried while lossless). */
	dds_qset_reliability(q, r->reliable ? DDS_RELIABILITY_RELIABLE : DDS_RELIABILITY_BEST_EFFORT, DDS_SECS(10));
	dds_qset_history(q, r->depth ? DDS_HISTORY_KEEP_LAST : DDS_HISTORY_KEEP_ALL, r->depth ? (int32_t)r->depth : 1);
	if (r->late_joiners) {
		/* takt history <-> transient-local: the writer keeps the last
		 * late_joiners samples for readers that join later */
		dds_qset_durability(q, DDS_DURABILITY_TRANSIENT_LOCAL);
		dds_qset_durability_service(q, 0, DDS_HISTORY_KEEP_LAST, (int32_t)r->late_joiners, DDS_LENGTH_UNLIMITED,
					    DDS_LENGTH_UNLIMITED, DDS_LENGTH_UNLIMITED);
	} else {
		dds_qset_durability(q, DDS_DURABILITY_VOLATILE);
	}
	/* a gateway's reader never takes what its own writers wrote */
	dds_qset_ignorelocal(q, DDS_IGNORELOCAL_PARTICIPANT);
	return q;
}
