/*
 * option_contract.c: every option of a task and of a consumer, once.
 *
 * Read by the SQL checks (ecp_internal._option_contract(), option_values.c), by
 * the worker (config_check.c) and by the launcher (launcher_options.c);
 * README's option tables say the same, and pg_regress checks that SQL
 * refuses what lies past each bound.  Plain C: the unit tests load it.
 */
#include "option_contract.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* The most bytes of a string option (a JSON string, as its text). */
#define TEXT_BYTES 8192

#define NONE NAN

#define INTEGER(kind, name, min, max, dflt, launcher) \
	{kind, name, ECP_OPTION_INTEGER, min, max, #dflt, NULL, NULL, launcher}
#define SETTING(kind, name, min, max, dflt, guc) \
	{kind, name, ECP_OPTION_INTEGER, min, max, #dflt, guc, NULL, true}
#define TEXT(kind, name, dflt) \
	{kind, name, ECP_OPTION_TEXT, NONE, TEXT_BYTES, dflt, NULL, NULL, false}
#define BOOLEAN(kind, name, dflt) \
	{kind, name, ECP_OPTION_BOOLEAN, NONE, NONE, #dflt, NULL, NULL, false}
#define WORD(kind, name, words) \
	{kind, name, ECP_OPTION_WORD, NONE, TEXT_BYTES, NULL, NULL, words, false}
#define WORD_DEFAULT(kind, name, words, dflt) \
	{kind, name, ECP_OPTION_WORD, NONE, TEXT_BYTES, "\"" dflt "\"", NULL, words, false}

static const char *const op_words[] = {"index", "create", "update", "delete", NULL};
static const char *const paging_words[] = {"auto", "keyset", "window", "cursor", NULL};
static const char *const format_words[] = {"ids", "ndjson", NULL};
static const char *const mode_words[] = {"direct", "alias_swap", NULL};

/*
 * rate_limit: documents per second, 0 (the default) is unlimited.  format
 * has no default of its own: a task with a file gets ndjson without a
 * query and ids with one, written into its options.
 */
const EcpOption ecp_options[] = {
	/* task: what is read, and how */
	TEXT("task", "id_column", NULL),
	TEXT("task", "key_column", NULL),
	INTEGER("task", "batch_size", 1, 100000, 5000, false),
	INTEGER("task", "batch_bytes", 1024, 104857600, 5242880, false),
	WORD_DEFAULT("task", "op", op_words, "index"),
	BOOLEAN("task", "exact_total", false),
	SETTING("task", "max_retries", 0, 1000, 10, "ecp.max_retries"),
	SETTING("task", "retry_base_ms", 1, 3600000, 1000, "ecp.retry_base_ms"),
	SETTING("task", "retry_max_ms", 1, 3600000, 30000, "ecp.retry_max_ms"),
	{"task", "rate_limit", ECP_OPTION_NUMBER, 0, 1e9, "0", NULL, NULL, true},
	WORD_DEFAULT("task", "paging", paging_words, "auto"),
	INTEGER("task", "parallelism", 1, ECP_MAX_PARALLELISM, 1, true),
	BOOLEAN("task", "delete_missing", false),
	/* task: the query of queries that holds an id (shard_of.c), for id runs */
	TEXT("task", "shard_of", NULL),
	/* task: incremental runs (since.c): rows from the watermark less the overlap */
	TEXT("task", "since_column", NULL),
	INTEGER("task", "since_overlap", 0, 2147483647, 60, false),
	/* task: a file source */
	WORD("task", "format", format_words),
	TEXT("task", "id_field", "\"id\""),
	INTEGER("task", "max_line_bytes", 1024, 268435456, 10485760, false),
	/* task: how documents are written */
	TEXT("task", "tag", NULL),
	TEXT("task", "transform", NULL),
	TEXT("task", "routing_column", NULL),
	TEXT("task", "version_column", NULL),
	TEXT("task", "pipeline", NULL),
	BOOLEAN("task", "refresh", false),
	/* task: the count check after a full run; absent: when no other task writes the index */
	{"task", "count_check", ECP_OPTION_BOOLEAN, NONE, NONE, NULL, NULL, NULL, false},
	/* task: migrations and windows */
	WORD_DEFAULT("task", "mode", mode_words, "direct"),
	{"task", "settings", ECP_OPTION_OBJECT, 0, 1000, NULL, NULL, NULL, false},
	{"task", "mappings", ECP_OPTION_OBJECT, 0, 1000, NULL, NULL, NULL, false},
	BOOLEAN("task", "keep_old", true),
	TEXT("task", "window", NULL),
	/* task: following changes (ecp.follow): table -> column or {column, ids} */
	{"task", "follow_tables", ECP_OPTION_OBJECT, 1, 64, NULL, NULL, NULL, false},
	/* consumer */
	TEXT("consumer", "username", NULL),
	TEXT("consumer", "password", NULL),
	TEXT("consumer", "api_key", NULL),
	TEXT("consumer", "ca_file", NULL),
	BOOLEAN("consumer", "insecure", false),
	BOOLEAN("consumer", "gzip", false),
	INTEGER("consumer", "connect_timeout_ms", 1, 600000, 5000, false),
	INTEGER("consumer", "request_timeout_ms", 1, 3600000, 60000, false),
	{"consumer", "rate_limit", ECP_OPTION_NUMBER, 0, 1e9, "0", NULL, NULL, true},
	{"consumer", "nodes", ECP_OPTION_ARRAY, 1, 32, NULL, NULL, NULL, false},
	{"consumer", "routes", ECP_OPTION_OBJECT, 1, 64, NULL, NULL, NULL, false},
	TEXT("consumer", "tag_header", "\"X-Ecp-Tag\""),
};

const int	ecp_option_count = sizeof(ecp_options) / sizeof(ecp_options[0]);

/* The option of a kind ("task", "consumer") by its name; NULL: none. */
const EcpOption *
ecp_option_find(const char *kind, const char *name)
{
	for (int i = 0; i < ecp_option_count; i++)
		if (strcmp(ecp_options[i].kind, kind) == 0 && strcmp(ecp_options[i].name, name) == 0)
			return &ecp_options[i];
	return NULL;
}

/* The type's name as ecp_internal._option_contract() shows it. */
const char *
ecp_option_type_name(EcpOptionType type)
{
	switch (type)
	{
		case ECP_OPTION_INTEGER:
			return "integer";
		case ECP_OPTION_NUMBER:
			return "number";
		case ECP_OPTION_BOOLEAN:
			return "boolean";
		case ECP_OPTION_TEXT:
			return "text";
		case ECP_OPTION_WORD:
			return "word";
		case ECP_OPTION_ARRAY:
			return "array";
		case ECP_OPTION_OBJECT:
			return "object";
	}
	return "unknown";
}

/*
 * A numeric option's value from its text: true when it is a finite number
 * in [min, max] (and whole for an integer).  strtod never fails, so no
 * text can abort the caller (1e400 is simply out of range).
 */
bool
ecp_option_number(const EcpOption *option, const char *text, double *value)
{
	char	   *end;
	double		number;

	if (text == NULL || (option->type != ECP_OPTION_INTEGER && option->type != ECP_OPTION_NUMBER))
		return false;
	errno = 0;
	number = strtod(text, &end);
	if (errno != 0 || end == text || *end != '\0' || !isfinite(number) ||
		number < option->min || number > option->max ||
		(option->type == ECP_OPTION_INTEGER && number != floor(number)))
		return false;
	*value = number;
	return true;
}

/* The word of a word option that text is, or NULL. */
const char *
ecp_option_word_of(const EcpOption *option, const char *text)
{
	if (text == NULL || option->words == NULL)
		return NULL;
	for (int i = 0; option->words[i]; i++)
		if (strcmp(text, option->words[i]) == 0)
			return option->words[i];
	return NULL;
}
