/*
 * option_contract.h: the one table of task and consumer options (name,
 * JSON type, bounds, default, who reads it), plain C so that the unit
 * tests can load it.  The SQL checks read it through
 * ecp_internal._option_contract() (option_values.c), the worker through
 * ecp_option_int/_bool/_word (config_check.c), the launcher through
 * ecp_option_find and ecp_option_number (launcher_options.c): no bound
 * of an option is written anywhere else.
 */
#ifndef ECP_OPTION_CONTRACT_H
#define ECP_OPTION_CONTRACT_H

#include <stdbool.h>

/*
 * The largest parallelism of a task: also how many pending parts of one
 * run the launcher's query reads ahead (scheduler.c), so a constant.
 */
#define ECP_MAX_PARALLELISM 64

typedef enum EcpOptionType
{
	ECP_OPTION_INTEGER,			/* a JSON number, whole, in [min, max] */
	ECP_OPTION_NUMBER,			/* a JSON number in [min, max] */
	ECP_OPTION_BOOLEAN,			/* true or false */
	ECP_OPTION_TEXT,			/* a JSON string of at most max bytes */
	ECP_OPTION_WORD,			/* a JSON string, one of words (at most max bytes) */
	ECP_OPTION_ARRAY,			/* a JSON array of min to max elements */
	ECP_OPTION_OBJECT			/* a JSON object of min to max keys */
} EcpOptionType;

typedef struct EcpOption
{
	const char *kind;			/* "task" or "consumer" */
	const char *name;
	EcpOptionType type;
	double		min;			/* see EcpOptionType; NaN: no lower bound */
	double		max;
	const char *default_json;	/* the default as JSON, NULL: none (unset) */
	const char *default_setting;	/* a GUC that overrides default_json, or NULL */
	const char *const *words;	/* ECP_OPTION_WORD: the allowed words, NULL-ended;
								 * the default, if any, is the first */
	bool		launcher;		/* the launcher reads it too */
} EcpOption;

extern const EcpOption ecp_options[];
extern const int ecp_option_count;

extern const EcpOption *ecp_option_find(const char *kind, const char *name);
extern const char *ecp_option_type_name(EcpOptionType type);
extern bool ecp_option_number(const EcpOption *option, const char *text, double *value);
extern const char *ecp_option_word_of(const EcpOption *option, const char *text);

/* option_values.c (in the backend): the default, or its GUC's value */
extern double ecp_option_default(const EcpOption *option);

#endif							/* ECP_OPTION_CONTRACT_H */
