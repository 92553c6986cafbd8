/*
 * bulk_parse: what src/lib/bulk_response.c's scanner saves over parsing every
 * _bulk response with jansson alone, per response of batch_size items and
 * per 1,000,000 documents (the responses of one run of a million rows).
 *
 *   cc -O2 -I src/lib -o bulk_parse test/bench/bulk_parse.c src/lib/bulk_response.c \
 *       src/lib/bulk_scan.c src/lib/error_summary.c -ljansson
 *   ./bulk_parse [items per response] [repetitions]
 *
 * The response is the shape ecp asks for with filter_path (one status per
 * item, no error), as Elasticsearch answers a page that all went well.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bulk_response.h"

static double
now(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

static char *
response_of(int items, size_t *len)
{
	char	   *body = malloc(64 + (size_t) items * 32);

	*len = (size_t) sprintf(body, "{\"errors\":false,\"items\":[");
	for (int i = 0; i < items; i++)
		*len += (size_t) sprintf(body + *len, "%s{\"index\":{\"status\":201}}", i ? "," : "");
	*len += (size_t) sprintf(body + *len, "]}");
	return body;
}

/* Milliseconds per parse of body, with the scanner or jansson alone. */
static double
ms_per_parse(const char *body, size_t len, int items, int reps, int scanner)
{
	double		start;

	ecp_bulk_use_scanner = scanner;
	start = now();
	for (int r = 0; r < reps; r++)
	{
		EcpBulkResult result;
		char		err[256];

		memset(&result, 0, sizeof(result));
		if (ecp_bulk_parse(body, len, items, NULL, 0, &result, err, sizeof(err)) != 0)
		{
			fprintf(stderr, "parse failed: %s\n", err);
			exit(1);
		}
		ecp_bulk_result_free(&result);
	}
	return (now() - start) / reps * 1000;
}

int
main(int argc, char **argv)
{
	int			items = argc > 1 ? atoi(argv[1]) : 5000;
	int			reps = argc > 2 ? atoi(argv[2]) : 200;
	size_t		len;
	char	   *body = response_of(items, &len);
	double		scanner = ms_per_parse(body, len, items, reps, 1);
	double		jansson = ms_per_parse(body, len, items, reps, 0);
	double		per_million = 1000000.0 / items;

	printf("_bulk response of %d items (%zu bytes), %d parses each:\n", items, len, reps);
	printf("  scanner  %8.3f ms per response  %8.0f ms per 1M documents\n", scanner, scanner * per_million);
	printf("  jansson  %8.3f ms per response  %8.0f ms per 1M documents\n", jansson, jansson * per_million);
	printf("  the scanner saves %.0f ms per 1M documents (jansson takes %.1fx as long)\n",
		   (jansson - scanner) * per_million, jansson / scanner);
	free(body);
	return 0;
}
