/*
 * tap.h: the few TAP helpers of the small unit tests (host_match_test.c,
 * hostile_body_test.c).  Each test program prints its own plan at the end;
 * run.sh renumbers and merges the programs into one TAP stream.
 */
#ifndef ECP_UNIT_TAP_H
#define ECP_UNIT_TAP_H

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static int	tap_count = 0;
static int	tap_failed = 0;

static inline int
ok(int cond, const char *fmt,...) __attribute__((format(printf, 2, 3)));

static inline int
ok(int cond, const char *fmt,...)
{
	va_list		ap;

	tap_count++;
	if (!cond)
		tap_failed++;
	printf("%sok %d - ", cond ? "" : "not ", tap_count);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
	return cond;
}

static inline void
diag(const char *fmt,...) __attribute__((format(printf, 1, 2)));

static inline void
diag(const char *fmt,...)
{
	va_list		ap;

	printf("# ");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
}

static inline int
contains(const char *hay, const char *needle)
{
	return hay && needle && strstr(hay, needle) != NULL;
}

/* Print the plan; the exit status of main. */
static inline int
tap_done(void)
{
	printf("1..%d\n", tap_count);
	if (tap_failed)
		printf("# %d of %d tests failed\n", tap_failed, tap_count);
	return tap_failed ? 1 : 0;
}

#endif
