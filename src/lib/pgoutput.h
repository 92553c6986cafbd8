/*
 * pgoutput.h: the messages of PostgreSQL's logical replication protocol as
 * the built-in pgoutput plugin writes them (PostgreSQL 15, proto_version
 * '1', no streaming, no two-phase), read from the bytes of one message: the
 * data column of pg_logical_slot_peek_binary_changes.
 *
 * Plain C99, no PostgreSQL headers and no allocation, so that the unit test
 * (test/unit/pgoutput_test.c) links it alone.  Nothing is copied: names,
 * values and message contents are views into the caller's buffer, valid as
 * long as that buffer is.  A message is read whole or refused: the parser
 * never reads past the length it is given, and a truncated or malformed
 * message, an unknown message type or tuple kind, a count past PostgreSQL's
 * limits, or bytes left over after the message all return false with an
 * error naming the field and its byte offset in the message.
 *
 * Format: https://www.postgresql.org/docs/15/protocol-logicalrep-message-formats.html
 * (written by src/backend/replication/logical/proto.c).
 */
#ifndef ECP_PGOUTPUT_H
#define ECP_PGOUTPUT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* MaxTupleAttributeNumber: no tuple or relation has more columns */
#define ECP_PGO_MAX_COLUMNS 1664

/* "FFFFFFFF/FFFFFFFF" and its NUL: room for any LSN's text */
#define ECP_PGO_LSN_BUFSIZE 18

/* A short error and its context fit in this many bytes */
#define ECP_PGO_ERROR_SIZE 256

/* The message types of protocol version 1 (the first byte) */
typedef enum EcpPgoType
{
	ECP_PGO_BEGIN = 'B',
	ECP_PGO_COMMIT = 'C',
	ECP_PGO_ORIGIN = 'O',
	ECP_PGO_RELATION = 'R',
	ECP_PGO_TYPE = 'Y',
	ECP_PGO_INSERT = 'I',
	ECP_PGO_UPDATE = 'U',
	ECP_PGO_DELETE = 'D',
	ECP_PGO_TRUNCATE = 'T',
	ECP_PGO_MESSAGE = 'M'
} EcpPgoType;

/* How a column of a TupleData is sent */
typedef enum EcpPgoValueKind
{
	ECP_PGO_NULL = 'n',
	ECP_PGO_UNCHANGED = 'u',	/* an unchanged TOASTed value: not sent */
	ECP_PGO_TEXT = 't',			/* the type's text output */
	ECP_PGO_BINARY = 'b'		/* the type's send output ('binary' option) */
} EcpPgoValueKind;

/* One column of a tuple: data is NULL for 'n' and 'u'; not NUL-terminated */
typedef struct EcpPgoValue
{
	const unsigned char *data;
	uint32_t	length;
	EcpPgoValueKind kind;
} EcpPgoValue;

typedef struct EcpPgoTuple
{
	int			ncolumns;
	EcpPgoValue columns[ECP_PGO_MAX_COLUMNS];
} EcpPgoTuple;

/* 'B': a transaction's changes follow, up to its Commit */
typedef struct EcpPgoBegin
{
	uint64_t	final_lsn;		/* the commit record's LSN */
	int64_t		commit_time;	/* microseconds since 2000-01-01 UTC */
	uint32_t	xid;
} EcpPgoBegin;

/* 'C' */
typedef struct EcpPgoCommit
{
	uint64_t	commit_lsn;
	uint64_t	end_lsn;		/* the end of the commit record */
	int64_t		commit_time;	/* microseconds since 2000-01-01 UTC */
} EcpPgoCommit;

/* 'O': the transaction came from a replication origin */
typedef struct EcpPgoOrigin
{
	uint64_t	origin_lsn;		/* the commit's LSN on the origin server */
	const char *name;
} EcpPgoOrigin;

/* One column of a Relation message */
typedef struct EcpPgoRelColumn
{
	const char *name;
	uint32_t	type_oid;
	int32_t		type_modifier;
	uint8_t		flags;			/* as sent; bit 1: key */
	bool		key;			/* part of the replica identity */
} EcpPgoRelColumn;

/*
 * 'R': a table's columns, sent before the first change of that table and
 * again after its definition changed.  Changes name the table by relid only.
 */
typedef struct EcpPgoRelation
{
	uint32_t	relid;
	const char *schema;			/* "" for pg_catalog */
	const char *name;
	char		replica_identity;	/* 'd' default, 'n' nothing, 'f' full,
									 * 'i' index */
	int			ncolumns;
	EcpPgoRelColumn columns[ECP_PGO_MAX_COLUMNS];
} EcpPgoRelation;

/* 'Y': a user-defined type that a Relation's column uses */
typedef struct EcpPgoTypeInfo
{
	uint32_t	type_oid;
	const char *schema;			/* "" for pg_catalog */
	const char *name;
} EcpPgoTypeInfo;

/*
 * 'I', 'U', 'D'.  Insert: new_tuple.  Update: new_tuple, and old_tuple when
 * the key changed ('K') or the table's replica identity is full ('O').
 * Delete: old_tuple ('K': the key columns, the others sent as nulls; 'O':
 * the whole old row).
 */
typedef struct EcpPgoChange
{
	uint32_t	relid;
	char		old_kind;		/* 'K', 'O', or '\0': no old tuple */
	bool		has_new;
	EcpPgoTuple old_tuple;
	EcpPgoTuple new_tuple;
} EcpPgoChange;

/* 'T'; options bits: */
#define ECP_PGO_TRUNCATE_CASCADE 1
#define ECP_PGO_TRUNCATE_RESTART_IDENTITY 2

typedef struct EcpPgoTruncate
{
	uint8_t		options;
	int			nrelations;
	const unsigned char *relids;	/* nrelations Int32s in the message:
									 * read them with ecp_pgo_truncate_relid */
} EcpPgoTruncate;

/* 'M': pg_logical_emit_message's (with the 'messages' option) */
typedef struct EcpPgoLogicalMessage
{
	uint8_t		flags;			/* as sent; bit 1: transactional */
	bool		transactional;
	uint64_t	lsn;
	const char *prefix;
	const unsigned char *content;	/* not NUL-terminated */
	uint32_t	content_length;
} EcpPgoLogicalMessage;

/*
 * One parsed message.  About 53 kB (two tuples of ECP_PGO_MAX_COLUMNS
 * columns): allocate one and reuse it for every message, not on the stack
 * of a deep call.
 */
typedef struct EcpPgoMessage
{
	EcpPgoType	type;
	union
	{
		EcpPgoBegin begin;
		EcpPgoCommit commit;
		EcpPgoOrigin origin;
		EcpPgoRelation relation;
		EcpPgoTypeInfo type_info;
		EcpPgoChange change;	/* Insert, Update, Delete */
		EcpPgoTruncate truncate;
		EcpPgoLogicalMessage message;
	}			body;
} EcpPgoMessage;

/*
 * Reads the message of len bytes at data into *out.  True when it is a whole
 * and well-formed message of protocol version 1; otherwise false, with a
 * one-line reason in error (errlen bytes, always NUL-terminated; error may
 * be NULL), and *out holds nothing to use.
 */
extern bool ecp_pgo_parse(const unsigned char *data, size_t len,
						  EcpPgoMessage *out, char *error, size_t errlen);

/* The name of a message type, "Begin" ...; "unknown" for any other value */
extern const char *ecp_pgo_type_name(EcpPgoType type);

/* Relation number i (from 0) of a parsed Truncate: i < nrelations */
extern uint32_t ecp_pgo_truncate_relid(const EcpPgoTruncate *truncate, int i);

/* lsn as pg_lsn prints it, "16/B374D848", into buf; returns buf */
extern char *ecp_pgo_lsn_format(uint64_t lsn, char buf[ECP_PGO_LSN_BUFSIZE]);

/*
 * An LSN as pg_lsn reads it: 1 to 8 hex digits, '/', 1 to 8 hex digits,
 * nothing else.  False (and *lsn untouched) for anything else.
 */
extern bool ecp_pgo_lsn_parse(const char *text, uint64_t *lsn);

/*
 * A pgoutput timestamp (microseconds since 2000-01-01 UTC) in microseconds
 * since 1970-01-01 UTC.  PostgreSQL's infinities stay infinite (INT64_MAX,
 * INT64_MIN), and a value too late to convert gives INT64_MAX.
 */
extern int64_t ecp_pgo_timestamp_to_unix_us(int64_t pg_timestamp);

#endif							/* ECP_PGOUTPUT_H */
