/*
 * config_check.c: a worker never trusts a row.
 *
 * ecp's SQL functions and triggers validate what they write, but a row may
 * still be odd: written by a superuser, restored from a dump, left by an
 * older version.  So the worker reads every field of its task, consumer,
 * run and part as text and checks it here before using it.  A bad field
 * is an ERROR that names the field and the value; the worker turns it into
 * the run's last_error.  Nothing here dereferences a NULL, casts in SQL
 * (where one bad value would fail the statement), or trusts a number's
 * range.
 */
#include "sync.h"

#include <errno.h>
#include <math.h>

#include "catalog/pg_type.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/memutils.h"

#include "option_contract.h"

/*
 * The message says what is wrong, with what is wanted after a ";": the
 * worker's last_error holds the message alone.
 */
static void
bad_value(const char *what, const char *value, const char *want, const char *hint)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("%s is %s%s%s%s%s", what, value ? "\"" : "", value ? value : "missing",
					value ? "\"" : "", want ? "; it must be " : "", want ? want : ""),
			 errhint("%s", hint)));
}

static void
bad_field(const char *what, const char *value, const char *hint)
{
	bad_value(what, value, NULL, hint);
}

/* A field that must be there. */
const char *
ecp_config_required(const char *value, const char *what, const char *hint)
{
	if (value == NULL || value[0] == '\0')
		bad_field(what, NULL, hint);
	return value;
}

/*
 * The queries of a task (a text[]), in memory: 1 to 4096, none
 * NULL or empty.
 */
char	  **
ecp_config_queries(MemoryContext memory, Datum array, const char *task_name, int *nqueries)
{
	const char *recreate = "Recreate the task with ecp.create_task.";
	Datum	   *elements;
	bool	   *nulls;
	char	  **queries;
	int			n;

	deconstruct_array(DatumGetArrayTypeP(array), TEXTOID, -1, false, TYPALIGN_INT,
					  &elements, &nulls, &n);
	if (n < 1 || n > 4096)
		bad_value(psprintf("the number of queries of task \"%s\"", task_name), psprintf("%d", n),
				  "1 to 4096", recreate);
	queries = MemoryContextAllocZero(memory, sizeof(char *) * n);
	for (int i = 0; i < n; i++)
		queries[i] = (char *) ecp_config_required(nulls[i] ? NULL :
												  MemoryContextStrdup(memory, TextDatumGetCString(elements[i])),
												  psprintf("queries[%d] of task \"%s\"", i + 1, task_name), recreate);
	*nqueries = n;
	return queries;
}

/* An integer option in [min, max]; NULL gives fallback. */
int
ecp_config_int(const char *value, const char *option, int fallback, int min, int max)
{
	char	   *end;
	double		number;

	if (value == NULL)
		return fallback;
	errno = 0;
	number = strtod(value, &end);
	if (errno != 0 || end == value || *end != '\0' || !isfinite(number) ||
		number != floor(number) || number < min || number > max)
		bad_value(psprintf("option \"%s\"", option), value,
				  psprintf("an integer between %d and %d", min, max),
				  "Correct the option with ecp.set_rate or an UPDATE of ecp.task.options, then ecp.resume the run.");
	return (int) number;
}

/* A bigint field written by ecp itself (a key range's bound). */
int64
ecp_config_int64(const char *value, const char *what)
{
	char	   *end;
	long long	number;

	errno = 0;
	number = strtoll(value, &end, 10);
	if (errno != 0 || end == value || *end != '\0')
		bad_value(what, value, "a bigint", "The part was changed by hand; start a new run.");
	return (int64) number;
}

/* A boolean option; NULL gives fallback. */
bool
ecp_config_bool(const char *value, const char *option, bool fallback)
{
	if (value == NULL)
		return fallback;
	if (strcmp(value, "true") == 0)
		return true;
	if (strcmp(value, "false") == 0)
		return false;
	bad_value(psprintf("option \"%s\"", option), value, "true or false",
			  "Correct the option, then ecp.resume the run.");
	return fallback;			/* not reached */
}

/* One of a few words; NULL gives the first. */
const char *
ecp_config_word(const char *value, const char *option, const char *const *words)
{
	StringInfoData list;

	if (value == NULL)
		return words[0];
	for (int i = 0; words[i]; i++)
		if (strcmp(value, words[i]) == 0)
			return words[i];
	initStringInfo(&list);
	for (int i = 0; words[i]; i++)
		appendStringInfo(&list, "%s%s", i ? ", " : "", words[i]);
	bad_value(psprintf("option \"%s\"", option), value, psprintf("one of %s", list.data),
			  "Correct the option, then ecp.resume the run.");
	return NULL;				/* not reached */
}

/*
 * An option of the contract (option_contract.c) of the type the caller
 * reads: a name not there is a bug in ecp, not in the row.
 */
static const EcpOption *
contract_option(const char *kind, const char *name, EcpOptionType type)
{
	const EcpOption *option = ecp_option_find(kind, name);

	if (option == NULL || option->type != type)
		elog(ERROR, "ecp: %s option \"%s\" is not a %s option of the contract",
			 kind, name, ecp_option_type_name(type));
	return option;
}

/* An integer option of a task or consumer (kind) as the contract bounds it. */
int
ecp_option_int(const char *kind, const char *name, const char *value)
{
	const EcpOption *option = contract_option(kind, name, ECP_OPTION_INTEGER);

	return ecp_config_int(value, name, (int) ecp_option_default(option),
						  (int) option->min, (int) option->max);
}

/* A boolean option; NULL gives the contract's default. */
bool
ecp_option_bool(const char *kind, const char *name, const char *value)
{
	const EcpOption *option = contract_option(kind, name, ECP_OPTION_BOOLEAN);

	return ecp_config_bool(value, name, strcmp(option->default_json, "true") == 0);
}

/*
 * A word option; NULL gives the contract's default, its first word (NULL
 * when it has none).
 */
const char *
ecp_option_word(const char *kind, const char *name, const char *value)
{
	const EcpOption *option = contract_option(kind, name, ECP_OPTION_WORD);

	if (value == NULL)
		return option->default_json ? option->words[0] : NULL;
	return ecp_config_word(value, name, option->words);
}

/*
 * Elasticsearch's index name rules; the name also goes into the request
 * path, so nothing that could change the URL gets through.
 */
void
ecp_config_check_index(const char *index)
{
	/* Elasticsearch's own set, plus % (it would be decoded in the path) */
	static const char forbidden[] = "\\/*?\"<>| ,#:%";

	ecp_config_required(index, "the task's index", "Recreate the task with ecp.create_task.");
	if (strlen(index) > 255 || strcmp(index, ".") == 0 || strcmp(index, "..") == 0 ||
		index[0] == '-' || index[0] == '_' || index[0] == '+')
		bad_field("the task's index", index, "Elasticsearch index names are lower case, at most 255 bytes, and do not start with -, _ or +.");
	for (const unsigned char *c = (const unsigned char *) index; *c; c++)
		if (*c < 0x21 || *c == 0x7f || (*c >= 'A' && *c <= 'Z') ||
			(*c < 0x80 && strchr(forbidden, *c)))
			bad_field("the task's index", index, "Elasticsearch index names are lower case and contain none of \\ / * ? \" < > | , # : % or spaces.");
}

/*
 * http(s)://host[:port][/path]: no credentials, query, fragment, spaces
 * or control characters (the consumer's URL prefixes every request).
 */
void
ecp_config_check_url(const char *url)
{
	const char *rest;
	const char *host_end;

	ecp_config_required(url, "the consumer's URL", "Recreate the consumer with ecp.create_consumer.");
	if (strncmp(url, "http://", 7) == 0)
		rest = url + 7;
	else if (strncmp(url, "https://", 8) == 0)
		rest = url + 8;
	else
		bad_field("the consumer's URL scheme", psprintf("%.20s", url), "Use http:// or https://.");
	host_end = rest + strcspn(rest, "/");
	if (host_end == rest)
		bad_field("the consumer's URL host", NULL, "Use http://host:port.");
	for (const unsigned char *c = (const unsigned char *) rest; *c; c++)
		if (*c <= 0x20 || *c == 0x7f || *c == '?' || *c == '#' ||
			(*c == '@' && (const char *) c < host_end))
			bad_field("the consumer's URL", "malformed",
					  "Use http(s)://host:port with an optional path; credentials go into the consumer's options, never into the URL.");
}

/*
 * The task, consumer, run and part must all belong to the run's owner: a
 * worker acts for exactly one role, and a row that points at another
 * role's task or consumer must not borrow it.
 */
void
ecp_config_check_owners(Oid run_owner, Oid task_owner, Oid consumer_owner, Oid part_owner)
{
	if (task_owner != run_owner || consumer_owner != run_owner || part_owner != run_owner)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("the run, its part, task and consumer do not all belong to the same role (owners %u, %u, %u, %u)",
						run_owner, part_owner, task_owner, consumer_owner),
				 errhint("A run acts for one role; create the task with a consumer of the same owner.")));
}

/*
 * The owner must still exist and be allowed to log in: a task runs as its
 * owner, like a session of that role would, so a dropped role, a role that
 * lost LOGIN or is past VALID UNTIL stops running.
 */
void
ecp_config_check_owner_login(Oid owner, const char *name, const char *can_login)
{
	if (name == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("the run's owner (role oid %u) no longer exists", owner),
				 errhint("Run SELECT ecp.drop_owned(%u) to remove what it left, or recreate the task as an existing role.", owner)));
	if (can_login == NULL || strcmp(can_login, "t") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("role \"%s\" owns the run but may not log in (NOLOGIN, or past VALID UNTIL)", name),
				 errhint("Tasks run as their owner: ALTER ROLE %s LOGIN (or a later VALID UNTIL), then ecp.resume the run.",
						 quote_identifier(name))));
}

/* ecp.run.state's words, in EcpRunState's order (NULL-terminated). */
const char *const ecp_run_state_names[] = {
	"pending", "running", "paused", "succeeded", "failed", "cancelled", "gone", NULL
};

/* A run's state from its name; an unknown one is an error. */
EcpRunState
ecp_run_state_of(const char *name)
{
	for (int i = 0; i < ECP_RUN_GONE; i++)
		if (name && strcmp(name, ecp_run_state_names[i]) == 0)
			return (EcpRunState) i;
	bad_value("the run's state", name, "a state of ecp.run", "The run was changed by hand.");
	return ECP_RUN_GONE;		/* not reached */
}
