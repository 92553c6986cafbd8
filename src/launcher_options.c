/*
 * launcher_options.c: the options the launcher reads from a task's and a
 * consumer's rows, checked here in C.  The pass must survive any row: a
 * bad value is a WARNING naming the row (once per row, option and value,
 * not at every pass) and its default is used.
 */
#include "ecp.h"

#include <math.h>

#include "executor/spi.h"
#include "utils/hsearch.h"

#include "launcher_pass.h"

/* Largest rate_limit the launcher takes from a row (documents per second). */
#define MAX_RATE_OPTION 1e9

/* At most this many distinct bad options are remembered as warned about. */
#define MAX_WARNED 10000

#define WARNED_KEY_LEN 160

typedef struct WarnedOption
{
	char		key[WARNED_KEY_LEN];
} WarnedOption;

/* Bad options already warned about, so each is logged once, not every second. */
static HTAB *warned_options = NULL;

/* Log a bad option once per row, option and value, not at every pass. */
static bool
first_warning(const char *kind, int64 id, const char *option, const char *value)
{
	char		key[WARNED_KEY_LEN];
	bool		found;

	if (warned_options == NULL || hash_get_num_entries(warned_options) >= MAX_WARNED)
	{
		HASHCTL		ctl;

		if (warned_options)
			hash_destroy(warned_options);
		memset(&ctl, 0, sizeof(ctl));
		ctl.keysize = WARNED_KEY_LEN;
		ctl.entrysize = sizeof(WarnedOption);
		warned_options = hash_create("ecp bad options", 64, &ctl, HASH_ELEM | HASH_STRINGS);
	}
	snprintf(key, sizeof(key), "%s " INT64_FORMAT " %s %.100s", kind, id, option, value);
	(void) hash_search(warned_options, key, HASH_ENTER, &found);
	return !found;
}

/* How a bad value is shown in a warning: at most 64 bytes, and its JSON type. */
static char *
shown_value(const char *type, const char *text)
{
	if (text == NULL)
		return psprintf("a JSON %s", type);
	return psprintf("\"%.64s%s\" (a JSON %s)", text, strlen(text) > 64 ? "..." : "", type);
}

/*
 * A numeric option of a task or consumer, from its jsonb_typeof and its
 * text: the value when it is a number in [min, max] (and whole when
 * integral), else fallback with a WARNING naming the row.  strtod never
 * errors, so no value can abort the pass (1e400 is simply out of range).
 */
static double
checked_option(const char *kind, const char *name, int64 id, const char *option,
			   const char *type, const char *text, double min, double max,
			   bool integral, double fallback)
{
	double		value = 0;
	char	   *end = NULL;
	bool		valid;

	if (type == NULL || strcmp(type, "null") == 0)
		return fallback;		/* not set */
	valid = strcmp(type, "number") == 0 && text != NULL;
	if (valid)
	{
		value = strtod(text, &end);
		valid = end != text && *end == '\0' && !isnan(value) &&
			value >= min && value <= max && (!integral || value == floor(value));
	}
	if (valid)
		return value;
	if (first_warning(kind, id, option, text ? text : type))
		ereport(WARNING,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("ecp %s \"%s\" (id " INT64_FORMAT ") has an invalid option \"%s\": %s",
						kind, name, id, option, shown_value(type, text)),
				 errdetail("The launcher expects %s from %g to %g and uses %g instead.",
						   integral ? "a whole number" : "a number", min, max, fallback),
				 errhint("Correct it, e.g. UPDATE ecp.%s SET options = options - '%s' WHERE id = " INT64_FORMAT ";",
						 kind, option, id)));
	return fallback;
}

static const char *
text_column(HeapTuple tuple, TupleDesc desc, int column)
{
	return SPI_getvalue(tuple, desc, column);
}

/*
 * The settings of a row of the pass's SQL: the names of the task and the
 * consumer at their columns, then the options' (type, text) pairs from
 * first_option_column (OPTION_COLUMNS, in the order above).
 */
TaskSettings
ecp_launcher_settings(HeapTuple tuple, TupleDesc desc, int task_name_column,
					  int consumer_name_column, int first_option_column,
					  int64 task_id, int64 consumer_id)
{
	TaskSettings s;
	const char *task = text_column(tuple, desc, task_name_column);
	const char *consumer = text_column(tuple, desc, consumer_name_column);
	int			c = first_option_column;

	s.max_retries = (int) checked_option("task", task, task_id, "max_retries",
										 text_column(tuple, desc, c), text_column(tuple, desc, c + 1),
										 0, PG_INT32_MAX, true, ecp_max_retries);
	c += 2;
	s.retry_base_ms = (int) checked_option("task", task, task_id, "retry_base_ms",
										   text_column(tuple, desc, c), text_column(tuple, desc, c + 1),
										   1, PG_INT32_MAX, true, ecp_retry_base_ms);
	c += 2;
	s.retry_max_ms = (int) checked_option("task", task, task_id, "retry_max_ms",
										  text_column(tuple, desc, c), text_column(tuple, desc, c + 1),
										  1, PG_INT32_MAX, true, ecp_retry_max_ms);
	c += 2;
	s.task_rate = checked_option("task", task, task_id, "rate_limit",
								 text_column(tuple, desc, c), text_column(tuple, desc, c + 1),
								 0, MAX_RATE_OPTION, false, 0);
	c += 2;
	s.consumer_rate = checked_option("consumer", consumer, consumer_id, "rate_limit",
									 text_column(tuple, desc, c), text_column(tuple, desc, c + 1),
									 0, MAX_RATE_OPTION, false, 0);
	c += 2;
	s.parallelism = (int) checked_option("task", task, task_id, "parallelism",
										 text_column(tuple, desc, c), text_column(tuple, desc, c + 1),
										 1, MAX_PARALLELISM, true, 1);
	return s;
}
