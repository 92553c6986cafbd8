/*
 * file_util.c: what both sides of the file reader use (file_reader.c for
 * local files and lines, file_http.c for HTTP): failures with their
 * message, copies of a range of a string, whether a path is gzipped.
 * Kept apart so the two sides depend on it and not on each other.
 */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

#include "file_reader_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

EcpFileStatus
ecp_file_fail(char *error, size_t errlen, EcpFileStatus st, const char *fmt,...)
{
	va_list		ap;

	if (error && errlen > 0)
	{
		va_start(ap, fmt);
		vsnprintf(error, errlen, fmt, ap);
		va_end(ap);
	}
	return st;
}

char *
ecp_file_dup_range(const char *s, size_t n)
{
	char	   *copy = malloc(n + 1);

	if (copy)
	{
		memcpy(copy, s, n);
		copy[n] = '\0';
	}
	return copy;
}

int
ecp_file_ends_with_gz(const char *path, size_t n)
{
	return n >= 3 && strncasecmp(path + n - 3, ".gz", 3) == 0;
}
