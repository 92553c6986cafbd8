/*
 * json_compare.h: whether two JSON texts hold the same value, and where
 * they first differ (a verify run compares what ecp would send with an
 * index's _source).  Equality is PostgreSQL jsonb's: object members
 * unordered (of a key given twice the last counts), arrays ordered,
 * strings after unescaping, numbers by exact decimal value (1 == 1.0 ==
 * 10E-1, never through a double), true/false/null only themselves.
 *
 * Plain C99, no PostgreSQL headers (the unit tests build it alone):
 * nothing here ereports, exits or longjmps.
 */
#ifndef ECP_JSON_COMPARE_H
#define ECP_JSON_COMPARE_H

#include <stddef.h>

typedef enum EcpJsonCompare
{
	ECP_JSON_EQUAL = 0,
	ECP_JSON_DIFFERENT = 1,
	ECP_JSON_INVALID = -1		/* either text is not well-formed JSON (why
								 * says which and where); also a text of 4 GiB
								 * or more, or memory running out (why says so) */
} EcpJsonCompare;

typedef enum EcpJsonCompareScope
{
	ECP_COMPARE_WHOLE,			/* the two values are equal */
	ECP_COMPARE_EXPECTED_FIELDS /* both objects; every top-level member of
								 * expected is in actual with an equal value
								 * (actual may have more members): an
								 * op=update task sends partial documents */
} EcpJsonCompareScope;

/*
 * expected: what ecp would send now; actual: the index's _source.  On
 * ECP_JSON_DIFFERENT, why holds a short description of the first
 * difference (at most whylen bytes, NUL-terminated, cut on a UTF-8
 * boundary), e.g.
 *   price: 10.50 in the source, 9.99 in the index
 *   tags[2]: "red" in the source, "blue" in the index
 *   tags: 3 elements in the source, 2 in the index
 *   name: in the source, not in the index
 *   legacy: in the index, not in the source
 *   a.b: an object in the source, a string in the index
 *   (the whole document: an array in the source, an object in the index)
 * Values are the raw JSON text of each side, cut to 40 bytes with "..."
 * when longer; member paths are dotted, a key holding a dot, a bracket, a
 * quote, a backslash or a control character (or an empty one) is written
 * ["k.ey"], array elements [i]; a path of more than about 240 bytes keeps
 * its last steps after "(...)".  The first difference is the first in the
 * source document's order (members of the index only come after).  On
 * ECP_JSON_INVALID why names the side ("the source document" or "the
 * index document"), what is wrong and at which byte.
 *
 * Byte-identical texts are equal after one check that they are JSON,
 * without building anything.  Otherwise memory is 24 bytes per value of
 * each text (48 at most while the array of them grows) plus 8 per object
 * member, freed before returning; the stack holds a frame per level of
 * nesting (512 at most); time is linear but for sorting each object's keys.
 */
extern EcpJsonCompare ecp_json_compare(const char *expected, size_t expected_len,
									   const char *actual, size_t actual_len,
									   EcpJsonCompareScope scope, char *why, size_t whylen);

#endif							/* ECP_JSON_COMPARE_H */
