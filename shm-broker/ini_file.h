/* ini_file.h - reading an INI file as takt's programs do (the broker's
 * config.c, takt-gateway's): libinih over a line reader of the caller's
 * (which counts lines and may refuse one), the first error reported as
 * "file:line: reason". */
#ifndef TAKT_INI_FILE_H
#define TAKT_INI_FILE_H

#include <ini.h>
#include <stddef.h>
#include <stdio.h>

/* Opens path into *fp (the reader reads it), parses it with reader and
 * handler (both get user), closes it. 0; -ENOENT it cannot be opened;
 * -EINVAL the first error, as "path:line: reason" in err, its line the one
 * inih stopped at or else *bad_line (a line the reader refused); the reason
 * is what the handler or reader wrote into err, else "syntax error". */
int ini_file_parse(const char *path, FILE **fp, ini_reader reader, ini_handler handler, void *user,
		   const unsigned *bad_line, char *err, size_t errlen);

#endif
