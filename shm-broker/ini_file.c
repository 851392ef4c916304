/* ini_file.c - see ini_file.h. */
#include "ini_file.h"

#include <errno.h>
#include <string.h>

int ini_file_parse(const char *path, FILE **fp, ini_reader reader, ini_handler handler, void *user,
		   const unsigned *bad_line, char *err, size_t errlen)
{
	char msg[256];
	int line;

	err[0] = 0;
	*fp = fopen(path, "re");
	if (!*fp) {
		snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
		return -ENOENT;
	}
	line = ini_parse_stream(reader, user, handler, user);
	fclose(*fp);
	*fp = NULL;
	if (line == 0)
		line = (int)*bad_line;
	if (line != 0) {
		snprintf(msg, sizeof(msg), "%s", err[0] ? err : "syntax error");
		snprintf(err, errlen, "%s:%d: %s", path, line, msg);
		return -EINVAL;
	}
	return 0;
}
