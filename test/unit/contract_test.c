/*
 * contract_test.c: the option contract (src/option_contract.c) and the
 * one back-off (src/backoff.c), with no server.
 *
 * The contract: every entry is well formed (a kind, a unique name,
 * default within the bounds, integer bounds that fit an int, a word
 * option's default its first word, the launcher reading only numbers),
 * and ecp_option_number takes each bound and refuses what lies past it.
 * pg_regress (ecp_contract) checks that SQL enforces the same table.
 *
 * The back-off: the same waits as the two copies it replaced (retry.c's
 * and scheduler.c's, kept below as they were), for every attempt up to
 * 100 and a range of bases and caps, and a few waits written out.
 */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backoff.h"
#include "option_contract.h"
#include "tap.h"

/* ---- the back-off */

/* retry.c's ecp_backoff_ms before backoff.c, with the config unfolded */
static long
old_worker_backoff(int attempt, int base_ms, int max_ms)
{
	long		a = 1,
				b = 1;
	long		wait;

	for (int i = 2; i < attempt && a * base_ms < max_ms; i++)
	{
		long		next = a + b;

		a = b;
		b = next;
	}
	wait = (long) (attempt <= 2 ? 1 : b) * base_ms;
	return wait < max_ms ? wait : max_ms;
}

/* scheduler.c's backoff_ms before backoff.c */
static long long
old_launcher_backoff(int attempt, int base_ms, int max_ms)
{
	long long	a = 1,
				b = 1;

	for (int n = 1; n < (attempt > 1 ? attempt : 1) && a * base_ms < max_ms; n++)
	{
		long long	next = a + b;

		a = b;
		b = next;
	}
	return a * base_ms < max_ms ? a * base_ms : max_ms;
}

static void
test_backoff(void)
{
	const int	bases[] = {1, 7, 1000, 65536, 3600000};
	const int	caps[] = {1, 1000, 30000, 3600000};
	const long	written_out[] = {1000, 1000, 2000, 3000, 5000, 8000, 13000, 21000, 30000, 30000};
	int			differ_worker = 0,
				differ_launcher = 0,
				cases = 0;

	for (int b = 0; b < (int) (sizeof(bases) / sizeof(bases[0])); b++)
		for (int c = 0; c < (int) (sizeof(caps) / sizeof(caps[0])); c++)
			for (int attempt = -1; attempt <= 100; attempt++)
			{
				long		wait = ecp_backoff_ms(attempt, bases[b], caps[c]);

				cases++;
				differ_worker += wait != old_worker_backoff(attempt, bases[b], caps[c]);
				differ_launcher += wait != old_launcher_backoff(attempt, bases[b], caps[c]);
			}
	ok(differ_worker == 0, "the worker's waits are retry.c's old ones (%d of %d cases differ)",
	   differ_worker, cases);
	ok(differ_launcher == 0, "the launcher's waits are scheduler.c's old ones (%d of %d cases differ)",
	   differ_launcher, cases);
	for (int attempt = 1; attempt <= 10; attempt++)
		ok(ecp_backoff_ms(attempt, 1000, 30000) == written_out[attempt - 1],
		   "attempt %d, base 1000, cap 30000: %ld ms (want %ld)", attempt,
		   ecp_backoff_ms(attempt, 1000, 30000), written_out[attempt - 1]);
	ok(ecp_backoff_ms(0, 1000, 30000) == 1000, "attempt 0 waits one base");
	ok(ecp_backoff_ms(INT_MAX, 3600000, 3600000) == 3600000,
	   "INT_MAX attempts at the largest base and cap: the cap, no overflow");
	ok(ecp_backoff_ms(INT_MAX, 1, 3600000) == 3600000, "INT_MAX attempts at base 1: the cap");
}

/* ---- the contract */

static int
is_numeric(const EcpOption *o)
{
	return o->type == ECP_OPTION_INTEGER || o->type == ECP_OPTION_NUMBER;
}

/* What is wrong with an entry, or NULL. */
static const char *
entry_problem(const EcpOption *o)
{
	if (strcmp(o->kind, "task") != 0 && strcmp(o->kind, "consumer") != 0)
		return "kind is neither task nor consumer";
	if (ecp_option_find(o->kind, o->name) != o)
		return "its name is not unique within its kind";
	if ((o->words != NULL) != (o->type == ECP_OPTION_WORD))
		return "words without type word, or type word without words";
	if (o->launcher && !is_numeric(o))
		return "the launcher reads only numbers";
	/* no default: ecp decides per task (count_check: when no other task writes the index) */
	if (o->type == ECP_OPTION_BOOLEAN)
		return o->default_json == NULL || strcmp(o->default_json, "true") == 0 || strcmp(o->default_json, "false") == 0
			? NULL : "a boolean's default is true, false or none";
	if (isnan(o->max) || (!isnan(o->min) && o->min > o->max))
		return "no upper bound, or bounds the wrong way round";
	if (o->type == ECP_OPTION_WORD && o->default_json)
	{
		size_t		n = strlen(o->words[0]);

		if (strlen(o->default_json) != n + 2 || strncmp(o->default_json + 1, o->words[0], n) != 0)
			return "a word option's default is not its first word";
	}
	if (is_numeric(o))
	{
		double		value;

		if (isnan(o->min))
			return "a number without a lower bound";
		if (o->type == ECP_OPTION_INTEGER &&
			(o->min != floor(o->min) || o->max != floor(o->max) || o->min < INT_MIN || o->max > INT_MAX))
			return "integer bounds that are not whole or do not fit an int";
		if (o->default_json == NULL)
			return "a number without a default";
		if (!ecp_option_number(o, o->default_json, &value))
			return "its default is outside its bounds";
		if ((o->default_setting != NULL) != (o->type == ECP_OPTION_INTEGER && strncmp(o->default_setting ? o->default_setting : "", "ecp.", 4) == 0))
			return "a default setting that is not an ecp GUC";
	}
	else if (o->default_setting)
		return "a default setting for a non-number";
	return NULL;
}

static int
accepts(const EcpOption *o, double number)
{
	char		text[64];
	double		value = -1;

	snprintf(text, sizeof(text), "%.17g", number);
	return ecp_option_number(o, text, &value) && value == number;
}

static void
test_numeric_bounds(const EcpOption *o)
{
	char		what[96];
	double		value;

	snprintf(what, sizeof(what), "%s option %s [%g, %g]", o->kind, o->name, o->min, o->max);
	ok(accepts(o, o->min) && accepts(o, o->max), "%s: takes both bounds", what);
	ok(!accepts(o, o->min - 1) && !accepts(o, o->max + 1), "%s: refuses min - 1 and max + 1", what);
	if (o->type == ECP_OPTION_INTEGER)
		ok(!accepts(o, o->min + 0.5), "%s: refuses a fraction", what);
	ok(!ecp_option_number(o, "1e400", &value) && !ecp_option_number(o, "nan", &value) &&
	   !ecp_option_number(o, "", &value) && !ecp_option_number(o, "1x", &value) &&
	   !ecp_option_number(o, NULL, &value), "%s: refuses 1e400, nan, \"\", 1x and NULL", what);
}

static void
test_contract(void)
{
	int			tasks = 0,
				consumers = 0;

	ok(ecp_option_count >= 30, "the contract has %d options", ecp_option_count);
	for (int i = 0; i < ecp_option_count; i++)
	{
		const EcpOption *o = &ecp_options[i];
		const char *problem = entry_problem(o);

		ok(problem == NULL, "%s option %s is well formed%s%s", o->kind, o->name,
		   problem ? ": " : "", problem ? problem : "");
		if (is_numeric(o))
			test_numeric_bounds(o);
		tasks += strcmp(o->kind, "task") == 0;
		consumers += strcmp(o->kind, "consumer") == 0;
	}
	ok(tasks > 0 && consumers > 0, "%d task and %d consumer options", tasks, consumers);
	ok(ecp_option_find("task", "nope") == NULL && ecp_option_find("consumer", "batch_size") == NULL,
	   "an unknown name, or a task option asked of a consumer, is not found");
	ok(ecp_option_find("task", "rate_limit") != ecp_option_find("consumer", "rate_limit"),
	   "task and consumer each have their own rate_limit");
	ok(ecp_option_word_of(ecp_option_find("task", "op"), "delete") != NULL &&
	   ecp_option_word_of(ecp_option_find("task", "op"), "upsert") == NULL &&
	   ecp_option_word_of(ecp_option_find("task", "op"), NULL) == NULL,
	   "op takes delete, not upsert or nothing");
	ok(strcmp(ecp_option_find("task", "parallelism")->default_json, "1") == 0 &&
	   ecp_option_find("task", "parallelism")->max == ECP_MAX_PARALLELISM,
	   "parallelism: default 1, at most ECP_MAX_PARALLELISM (%d)", ECP_MAX_PARALLELISM);
}

int
main(void)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	test_backoff();
	test_contract();
	return tap_done();
}
