/*
 * launcher_options.c: the options the launcher reads from a task's and a
 * consumer's rows, checked here in C.  The pass must survive any row: a
 * bad value is a WARNING naming the row (once per row, option and value,
 * not at every pass) and its default is used.
 */
#include "ecp.h"

#include "executor/spi.h"
#include "utils/hsearch.h"

#include "launcher_pass.h"
#include "option_contract.h"

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
 * A numeric option of a task or consumer (kind), from its jsonb_typeof
 * and its text: the value when it is a number within the option's
 * contract (option_contract.c), else its default with a WARNING naming
 * the row.  No value can abort the pass.
 */
static double
checked_option(const char *kind, const char *name, int64 id, const char *option_name,
			   const char *type, const char *text)
{
	const EcpOption *option = ecp_option_find(kind, option_name);
	double		fallback;
	double		value = 0;

	if (option == NULL || !option->launcher)
		elog(ERROR, "ecp: the launcher does not read the %s option \"%s\"", kind, option_name);
	fallback = ecp_option_default(option);
	if (type == NULL || strcmp(type, "null") == 0)
		return fallback;		/* not set */
	if (strcmp(type, "number") == 0 && ecp_option_number(option, text, &value))
		return value;
	if (first_warning(kind, id, option_name, text ? text : type))
		ereport(WARNING,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("ecp %s \"%s\" (id " INT64_FORMAT ") has an invalid option \"%s\": %s",
						kind, name, id, option_name, shown_value(type, text)),
				 errdetail("The launcher expects %s from %g to %g and uses %g instead.",
						   option->type == ECP_OPTION_INTEGER ? "a whole number" : "a number",
						   option->min, option->max, fallback),
				 errhint("Correct it, e.g. UPDATE ecp.%s SET options = options - '%s' WHERE id = " INT64_FORMAT ";",
						 kind, option_name, id)));
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
										 text_column(tuple, desc, c), text_column(tuple, desc, c + 1));
	c += 2;
	s.retry_base_ms = (int) checked_option("task", task, task_id, "retry_base_ms",
										   text_column(tuple, desc, c), text_column(tuple, desc, c + 1));
	c += 2;
	s.retry_max_ms = (int) checked_option("task", task, task_id, "retry_max_ms",
										  text_column(tuple, desc, c), text_column(tuple, desc, c + 1));
	c += 2;
	s.task_rate = checked_option("task", task, task_id, "rate_limit",
								 text_column(tuple, desc, c), text_column(tuple, desc, c + 1));
	c += 2;
	s.consumer_rate = checked_option("consumer", consumer, consumer_id, "rate_limit",
									 text_column(tuple, desc, c), text_column(tuple, desc, c + 1));
	c += 2;
	s.parallelism = (int) checked_option("task", task, task_id, "parallelism",
										 text_column(tuple, desc, c), text_column(tuple, desc, c + 1));
	return s;
}
