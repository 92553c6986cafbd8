/*
 * error_context.c: ecp's errors without ecp's own CONTEXT lines.
 *
 * A user who calls ecp.start('nope') should read "task "nope" does not
 * exist" and its hint.  PL/pgSQL adds a CONTEXT line for every ecp
 * function the error passed through ("PL/pgSQL function
 * ecp_internal._create_run(...) line 12 at RAISE"), and SPI one for every
 * statement such a function ran ("SQL statement "SELECT ecp_internal._create_run
 * ..."): 5 to 8 lines of ecp's internals under every message in default
 * psql, which say nothing about what to change.  An emit_log_hook drops
 * those lines: the frames of PL/pgSQL functions in schemas ecp and
 * ecp_internal, the
 * statement or expression each of them was running, and the line of
 * ecp's install or upgrade script a CREATE or ALTER EXTENSION failed at.  The frames of the
 * user's own functions (a DO block or a function that calls ecp.start, a
 * transform that fails in ecp.preview) stay, so does everything else.
 *
 * The server log gets the message as the client does (the hook sees one
 * ErrorData for both).  ecp.internal_context = on keeps every line, for
 * whoever debugs ecp itself.
 */
#include "ecp.h"

#include "lib/stringinfo.h"
#include "utils/elog.h"
#include "utils/guc.h"
#include "utils/memutils.h"

static emit_log_hook_type previous_emit_log_hook = NULL;
static bool keep_internal_context = false;

#define ECP_FRAME "PL/pgSQL function ecp."
#define ECP_INTERNAL_FRAME "PL/pgSQL function ecp_internal."
#define ECP_SCRIPT "extension script file \"ecp--"

/* One entry of a CONTEXT: its text in the context string. */
typedef struct ContextEntry
{
	const char *start;
	int			len;
	bool		ecp_frame;		/* a PL/pgSQL frame of a function of schema ecp */
	bool		statement;		/* what a frame ran: "SQL statement", "SQL expression" */
} ContextEntry;

static bool
starts_with(const char *text, const char *prefix)
{
	return strncmp(text, prefix, strlen(prefix)) == 0;
}

/*
 * The next entry from *p.  A statement's text may span lines: it ends at
 * the line that ends with its closing quote.
 */
static void
next_entry(const char **p, ContextEntry *entry)
{
	const char *line = *p;
	const char *end = strchr(line, '\n');

	entry->start = line;
	entry->ecp_frame = starts_with(line, ECP_FRAME) || starts_with(line, ECP_INTERNAL_FRAME) ||
		starts_with(line, ECP_SCRIPT);
	entry->statement = starts_with(line, "SQL statement \"") || starts_with(line, "SQL expression \"");
	while (entry->statement && end != NULL && end > line && end[-1] != '"')
		end = strchr(end + 1, '\n');
	if (end == NULL)
		end = line + strlen(line);
	entry->len = (int) (end - line);
	*p = *end ? end + 1 : end;
}

/* The context without ecp's frames and their statements (NULL: nothing left). */
static char *
without_internal_frames(const char *context)
{
	ContextEntry *entries;
	int			n = 0;
	int			capacity = 8;
	const char *p = context;
	StringInfoData kept;

	entries = palloc(sizeof(ContextEntry) * capacity);
	while (*p)
	{
		if (n == capacity)
		{
			capacity *= 2;
			entries = repalloc(entries, sizeof(ContextEntry) * capacity);
		}
		next_entry(&p, &entries[n++]);
	}
	initStringInfo(&kept);
	for (int i = 0; i < n; i++)
	{
		/* a statement is shown before the frame that ran it */
		bool		internal = entries[i].ecp_frame ||
			(entries[i].statement && i + 1 < n && entries[i + 1].ecp_frame);

		if (internal)
			continue;
		if (kept.len > 0)
			appendStringInfoChar(&kept, '\n');
		appendBinaryStringInfo(&kept, entries[i].start, entries[i].len);
	}
	return kept.len > 0 ? kept.data : NULL;
}

static void
drop_internal_context(ErrorData *edata)
{
	MemoryContext old;
	char	   *context;

	if (previous_emit_log_hook)
		previous_emit_log_hook(edata);
	if (keep_internal_context || edata->context == NULL ||
		(strstr(edata->context, ECP_FRAME) == NULL && strstr(edata->context, ECP_INTERNAL_FRAME) == NULL &&
		 strstr(edata->context, ECP_SCRIPT) == NULL))
		return;
	/* the error's own memory: freed with it */
	old = MemoryContextSwitchTo(ErrorContext);
	context = without_internal_frames(edata->context);
	pfree(edata->context);
	edata->context = context;
	MemoryContextSwitchTo(old);
}

void
ecp_error_context_define_gucs(void)
{
	DefineCustomBoolVariable("ecp.internal_context",
							 "Keep the CONTEXT lines of ecp's own functions in errors and notices.",
							 "Off: an error raised inside ecp's SQL functions shows its message, detail and hint, "
							 "and only the CONTEXT lines of the caller's own code.",
							 &keep_internal_context, false,
							 PGC_USERSET, 0, NULL, NULL, NULL);
}

void
ecp_error_context_install(void)
{
	previous_emit_log_hook = emit_log_hook;
	emit_log_hook = drop_internal_context;
}
