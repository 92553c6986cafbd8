/*
 * doc_writer.c: a document straight from a page query's columns, the JSON
 * object row_to_json would write of them.
 *
 * row_to_json was the largest single cost of a worker: the executor first
 * forms the row into a composite datum (a copy of every column), then
 * row_to_json takes it apart again and, for every column of every row,
 * looks the column's type up (its category, output function, a cast to
 * json), escapes its name, and calls the output function through fmgr;
 * the result is then copied out of a text datum.  Here a page query's
 * result type is looked at once (a column plan: each key escaped once,
 * with its quotes and colon, and a writer per column), the executor hands
 * over the columns as they are, and each row is written in one pass.
 *
 * The writers for the common built-in types write exactly what row_to_json
 * writes: integers without their output function; text, varchar and
 * char(n) escaped from the datum (their output functions return it as
 * stored, char(n)'s padding included); numeric and float by their output
 * functions, so that NaN and Infinity are quoted and extra_float_digits
 * counts as it does there; dates and timestamps through
 * JsonEncodeDateTime; json as it is; jsonb and uuid as their output
 * functions print them.  Every other type
 * (arrays, composites, domains, enums, types with a cast to json, an
 * FDW's types ...) goes through pg_catalog.to_json itself, which
 * serialises a value exactly as row_to_json does its columns: right by
 * construction, and the owner's code behind those types (output
 * functions, casts) runs where the page runs, in the sandbox.
 *
 * Plans are kept, process-wide, for the last few result types seen (a
 * worker reads many pages of one query, a task of queries a few shapes in
 * turn); a plan is used only for a result type equal to its own, and
 * holds nothing but built-in functions and the column names and types.
 */
#include "sync.h"

#include "catalog/pg_type.h"
#include "common/jsonapi.h"
#include "fmgr.h"
#include "nodes/makefuncs.h"
#include "utils/builtins.h"
#include "utils/date.h"
#include "utils/datetime.h"
#include "utils/fmgroids.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/uuid.h"

/* How many result types keep their plan (a task of queries alternates). */
#define PLANS_KEPT 8

/* A larger scratch document is given back after its row. */
#define BUFFER_KEPT (1024 * 1024)

typedef enum ColumnKind
{
	COLUMN_INT2,
	COLUMN_INT4,
	COLUMN_INT8,
	COLUMN_BOOL,
	COLUMN_TEXT,				/* text, varchar, char(n): the bytes, escaped */
	COLUMN_NUMBER,				/* numeric, float4, float8: output function */
	COLUMN_DATETIME,			/* date, timestamp, timestamptz */
	COLUMN_JSON,
	COLUMN_JSONB,
	COLUMN_UUID,
	COLUMN_TO_JSON				/* anything else: pg_catalog.to_json */
} ColumnKind;

typedef struct ColumnPlan
{
	ColumnKind	kind;
	Oid			type;			/* the column's type (COLUMN_DATETIME's which) */
	char	   *key;			/* {"name": or ,"name": as row_to_json writes it */
	int			key_len;
	PGFunction	output;			/* COLUMN_NUMBER: the type's output function */
	FmgrInfo	to_json;		/* COLUMN_TO_JSON: to_json(anyelement) for this type */
} ColumnPlan;

struct EcpDocWriter
{
	MemoryContext context;		/* the plan's: everything below */
	TupleDesc	desc;			/* the result type it was made for */
	int			first_column;	/* 0-based: the row's first column */
	int			ncolumns;
	ColumnPlan *columns;
	bool		copies_json;	/* a column's text may hold a raw newline */
	MemoryContext scratch;		/* one row's output functions; reset per row */
	StringInfoData buffer;		/* the row's document as it is written */
	uint64		last_used;		/* which plan goes when a new one is needed */
};

/*
 * Process-wide: the plans of the last result types, in their own memory
 * under TopMemoryContext (nothing of a run or a part is in them).
 */
static EcpDocWriter *plans[PLANS_KEPT];
static uint64 plan_uses;

/*
 * Appends n bytes: a document takes many short appends, and the buffer
 * has room for nearly all of them (it grows to the largest document and
 * stays), so the common case is a copy without a call.
 */
static inline void
append_bytes(StringInfo out, const char *data, int n)
{
	if (out->maxlen - out->len > n)
	{
		memcpy(out->data + out->len, data, n);
		out->len += n;
		out->data[out->len] = '\0';
	}
	else
		appendBinaryStringInfo(out, data, n);
}

/* Appends s (len bytes) as a JSON string, escaped as escape_json does. */
static void
append_json_string(StringInfo out, const char *s, int len)
{
	const char *run = s;
	const char *end = s + len;

	appendStringInfoCharMacro(out, '"');
	for (const char *p = s; p < end; p++)
	{
		unsigned char c = (unsigned char) *p;

		if (c >= 0x20 && c != '"' && c != '\\')
			continue;
		append_bytes(out, run, p - run);
		run = p + 1;
		switch (c)
		{
			case '\b':
				append_bytes(out, "\\b", 2);
				break;
			case '\f':
				append_bytes(out, "\\f", 2);
				break;
			case '\n':
				append_bytes(out, "\\n", 2);
				break;
			case '\r':
				append_bytes(out, "\\r", 2);
				break;
			case '\t':
				append_bytes(out, "\\t", 2);
				break;
			case '"':
				append_bytes(out, "\\\"", 2);
				break;
			case '\\':
				append_bytes(out, "\\\\", 2);
				break;
			default:
				appendStringInfo(out, "\\u%04x", (int) c);
		}
	}
	append_bytes(out, run, end - run);
	appendStringInfoCharMacro(out, '"');
}

/* The kind of writer a column's type gets: exact built-in types only. */
static ColumnKind
column_kind(Oid type, PGFunction *output)
{
	*output = NULL;
	switch (type)
	{
		case INT2OID:
			return COLUMN_INT2;
		case INT4OID:
			return COLUMN_INT4;
		case INT8OID:
			return COLUMN_INT8;
		case BOOLOID:
			return COLUMN_BOOL;
		case TEXTOID:
		case VARCHAROID:
		case BPCHAROID:			/* bpcharout prints the stored value, padding too */
			return COLUMN_TEXT;
		case NUMERICOID:
			*output = numeric_out;
			return COLUMN_NUMBER;
		case FLOAT4OID:
			*output = float4out;
			return COLUMN_NUMBER;
		case FLOAT8OID:
			*output = float8out;
			return COLUMN_NUMBER;
		case DATEOID:
		case TIMESTAMPOID:
		case TIMESTAMPTZOID:
			return COLUMN_DATETIME;
		case JSONOID:
			return COLUMN_JSON;
		case JSONBOID:
			return COLUMN_JSONB;
		case UUIDOID:
			return COLUMN_UUID;
		default:
			return COLUMN_TO_JSON;
	}
}

/*
 * to_json(anyelement) called for a column of attr's type: its call
 * expression names the argument's type, which to_json asks for
 * (get_fn_expr_argtype), as a call in SQL would.
 */
static void
plan_to_json(ColumnPlan *column, Form_pg_attribute attr, MemoryContext context)
{
	MemoryContext back_to = MemoryContextSwitchTo(context);
	Const	   *argument = makeNullConst(attr->atttypid, attr->atttypmod, attr->attcollation);

	fmgr_info_cxt(F_TO_JSON, &column->to_json, context);
	column->to_json.fn_expr = (Node *) makeFuncExpr(F_TO_JSON, JSONOID, list_make1(argument),
													InvalidOid, attr->attcollation,
													COERCE_EXPLICIT_CALL);
	MemoryContextSwitchTo(back_to);
}

/* A new plan for desc, whose row starts at first_column (0-based). */
static EcpDocWriter *
plan_writer(TupleDesc desc, int first_column)
{
	MemoryContext context = AllocSetContextCreate(TopMemoryContext, "ecp document writer",
												  ALLOCSET_SMALL_SIZES);
	MemoryContext back_to = MemoryContextSwitchTo(context);
	EcpDocWriter *writer = palloc0(sizeof(EcpDocWriter));

	writer->context = context;
	writer->desc = CreateTupleDescCopy(desc);
	writer->first_column = first_column;
	writer->ncolumns = desc->natts - first_column;
	writer->columns = palloc0(sizeof(ColumnPlan) * Max(writer->ncolumns, 1));
	writer->scratch = AllocSetContextCreate(context, "ecp document writer row", ALLOCSET_DEFAULT_SIZES);
	for (int i = 0; i < writer->ncolumns; i++)
	{
		Form_pg_attribute attr = TupleDescAttr(desc, first_column + i);
		ColumnPlan *column = &writer->columns[i];
		StringInfoData key;

		column->type = attr->atttypid;
		column->kind = column_kind(attr->atttypid, &column->output);
		if (column->kind == COLUMN_TO_JSON)
			plan_to_json(column, attr, context);
		writer->copies_json |= column->kind == COLUMN_JSON || column->kind == COLUMN_TO_JSON;
		initStringInfo(&key);
		appendStringInfoChar(&key, i == 0 ? '{' : ',');
		append_json_string(&key, NameStr(attr->attname), strlen(NameStr(attr->attname)));
		appendStringInfoChar(&key, ':');
		column->key = key.data;
		column->key_len = key.len;
	}
	MemoryContextSwitchTo(back_to);
	return writer;
}

/*
 * The plan for a page query's result type desc, whose first first_column
 * columns are ecp's own (key, id ...) and the rest the row's: a kept one
 * when desc equals its type, else a new one in place of the least
 * recently used.
 */
EcpDocWriter *
ecp_doc_writer_for(TupleDesc desc, int first_column)
{
	int			oldest = 0;

	Assert(first_column >= 0 && first_column <= desc->natts);
	for (int i = 0; i < PLANS_KEPT; i++)
	{
		EcpDocWriter *writer = plans[i];

		if (writer && writer->first_column == first_column && equalTupleDescs(writer->desc, desc))
		{
			writer->last_used = ++plan_uses;
			return writer;
		}
		if (writer == NULL || (plans[oldest] && writer->last_used < plans[oldest]->last_used))
			oldest = i;
	}
	if (plans[oldest])
		MemoryContextDelete(plans[oldest]->context);
	plans[oldest] = NULL;		/* no half-made plan is left if planning fails */
	plans[oldest] = plan_writer(desc, first_column);
	plans[oldest]->last_used = ++plan_uses;
	return plans[oldest];
}

/* A number by its output function: quoted when JSON has no such number. */
static void
write_number(StringInfo out, PGFunction output, Datum value)
{
	char	   *printed = DatumGetCString(DirectFunctionCall1(output, value));
	int			len = strlen(printed);

	if (IsValidJsonNumber(printed, len))
		append_bytes(out, printed, len);
	else
		append_json_string(out, printed, len);
}

static void
write_uuid(StringInfo out, Datum value)
{
	static const char hex[] = "0123456789abcdef";
	const pg_uuid_t *uuid = DatumGetUUIDP(value);
	char		printed[2 + 36];
	int			at = 0;

	printed[at++] = '"';
	for (int i = 0; i < UUID_LEN; i++)
	{
		if (i == 4 || i == 6 || i == 8 || i == 10)
			printed[at++] = '-';
		printed[at++] = hex[uuid->data[i] >> 4];
		printed[at++] = hex[uuid->data[i] & 0x0F];
	}
	printed[at++] = '"';
	append_bytes(out, printed, at);
}

/* One non-NULL value of column, as row_to_json writes it. */
static void
write_value(StringInfo out, ColumnPlan *column, Datum value)
{
	char		printed[Max(MAXDATELEN, 24) + 1];
	int			len;

	switch (column->kind)
	{
		case COLUMN_INT2:
			len = pg_itoa(DatumGetInt16(value), printed);
			append_bytes(out, printed, len);
			break;
		case COLUMN_INT4:
			len = pg_ltoa(DatumGetInt32(value), printed);
			append_bytes(out, printed, len);
			break;
		case COLUMN_INT8:
			len = pg_lltoa(DatumGetInt64(value), printed);
			append_bytes(out, printed, len);
			break;
		case COLUMN_BOOL:
			if (DatumGetBool(value))
				append_bytes(out, "true", 4);
			else
				append_bytes(out, "false", 5);
			break;
		case COLUMN_TEXT:
			{
				text	   *t = DatumGetTextPP(value);

				append_json_string(out, VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t));
				break;
			}
		case COLUMN_NUMBER:
			write_number(out, column->output, value);
			break;
		case COLUMN_DATETIME:
			JsonEncodeDateTime(printed, value, column->type, NULL);
			appendStringInfoCharMacro(out, '"');
			appendStringInfoString(out, printed);
			appendStringInfoCharMacro(out, '"');
			break;
		case COLUMN_JSON:
			{
				text	   *t = DatumGetTextPP(value);

				append_bytes(out, VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t));
				break;
			}
		case COLUMN_JSONB:
			{
				Jsonb	   *jb = DatumGetJsonbP(value);

				JsonbToCString(out, &jb->root, VARSIZE(jb));
				break;
			}
		case COLUMN_UUID:
			write_uuid(out, value);
			break;
		case COLUMN_TO_JSON:
			{
				text	   *t = DatumGetTextPP(FunctionCall1(&column->to_json, value));

				append_bytes(out, VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t));
				break;
			}
	}
}

/*
 * A json value is written as it is stored, and may hold raw newlines
 * between its tokens (to_json and row_to_json copy it too, inside arrays
 * and composites as well); a document is one line of an NDJSON body.
 * Every string is escaped, so a raw newline can only be whitespace
 * between tokens: a space is the same JSON value.
 */
static void
newlines_to_spaces(char *document, int len)
{
	char	   *end = document + len;

	for (char *at = memchr(document, '\n', len); at; at = memchr(at + 1, '\n', end - at - 1))
		*at = ' ';
}

/*
 * The document of one row: values and isnull are the whole result row
 * (of the type writer was planned for; the row's columns from
 * first_column on).  A NUL-terminated copy in context, and its length.
 * Output functions run in the writer's scratch memory, reset per row.
 */
char *
ecp_doc_write(EcpDocWriter *writer, const Datum *values, const bool *isnull,
			  MemoryContext context, int *length)
{
	MemoryContext back_to;
	StringInfo	out = &writer->buffer;
	char	   *document;

	MemoryContextReset(writer->scratch);
	back_to = MemoryContextSwitchTo(writer->scratch);
	if (out->data == NULL || out->maxlen > BUFFER_KEPT)
	{
		MemoryContextSwitchTo(writer->context);
		if (out->data)
			pfree(out->data);
		initStringInfo(out);
		MemoryContextSwitchTo(writer->scratch);
	}
	resetStringInfo(out);
	for (int i = 0; i < writer->ncolumns; i++)
	{
		ColumnPlan *column = &writer->columns[i];
		int			at = writer->first_column + i;

		append_bytes(out, column->key, column->key_len);
		if (isnull[at])
			append_bytes(out, "null", 4);
		else
			write_value(out, column, values[at]);
	}
	if (writer->ncolumns == 0)
		appendStringInfoCharMacro(out, '{');
	appendStringInfoCharMacro(out, '}');
	if (writer->copies_json)
		newlines_to_spaces(out->data, out->len);
	MemoryContextSwitchTo(back_to);
	document = MemoryContextAlloc(context, out->len + 1);
	memcpy(document, out->data, out->len + 1);
	*length = out->len;
	return document;
}
