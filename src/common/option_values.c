/*
 * option_values.c: the option contract (option_contract.c) in the
 * backend: an option's default, which a GUC may override, and the table
 * as SQL sees it, ecp_internal._option_contract(), which ecp's option checks read.
 */
#include "ecp.h"

#include <math.h>

#include "catalog/pg_type.h"
#include "fmgr.h"
#include "funcapi.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/guc.h"
#include "utils/jsonb.h"

#include "option_contract.h"

PG_FUNCTION_INFO_V1(ecp_option_contract);

/*
 * The default of a numeric option: its GUC's value when it names one
 * (ecp.max_retries, ...), else the table's; 0 when it has none.
 */
double
ecp_option_default(const EcpOption *option)
{
	const char *text = option->default_json;

	if (option->default_setting)
	{
		const char *setting = GetConfigOption(option->default_setting, true, false);

		if (setting)
			text = setting;
	}
	return text ? strtod(text, NULL) : 0;
}

/* A bound as numeric; NULL when there is none. */
static Datum
bound_datum(double bound, bool *isnull)
{
	*isnull = isnan(bound);
	return *isnull ? (Datum) 0 : DirectFunctionCall1(float8_numeric, Float8GetDatum(bound));
}

static Datum
words_datum(const char *const *words, bool *isnull)
{
	Datum		items[16];
	int			n = 0;

	*isnull = words == NULL;
	if (*isnull)
		return (Datum) 0;
	for (; words[n] && n < (int) lengthof(items); n++)
		items[n] = CStringGetTextDatum(words[n]);
	return PointerGetDatum(construct_array(items, n, TEXTOID, -1, false, TYPALIGN_INT));
}

/*
 * ecp_internal._option_contract(): one row per option (kind, name, type, min, max,
 * default_value, default_setting, words, launcher).
 */
Datum
ecp_option_contract(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;

	InitMaterializedSRF(fcinfo, 0);
	for (int i = 0; i < ecp_option_count; i++)
	{
		const EcpOption *o = &ecp_options[i];
		Datum		values[9];
		bool		nulls[9] = {false};

		values[0] = CStringGetTextDatum(o->kind);
		values[1] = CStringGetTextDatum(o->name);
		values[2] = CStringGetTextDatum(ecp_option_type_name(o->type));
		values[3] = bound_datum(o->min, &nulls[3]);
		values[4] = bound_datum(o->max, &nulls[4]);
		nulls[5] = o->default_json == NULL;
		values[5] = nulls[5] ? (Datum) 0 : DirectFunctionCall1(jsonb_in, CStringGetDatum(o->default_json));
		nulls[6] = o->default_setting == NULL;
		values[6] = nulls[6] ? (Datum) 0 : CStringGetTextDatum(o->default_setting);
		values[7] = words_datum(o->words, &nulls[7]);
		values[8] = BoolGetDatum(o->launcher);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}
