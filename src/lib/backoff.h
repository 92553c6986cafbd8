/*
 * backoff.h: the one back-off of ecp's retries (a worker's batches and
 * source steps, the launcher's restarts of a part), plain C for the unit
 * tests.
 */
#ifndef ECP_BACKOFF_H
#define ECP_BACKOFF_H

extern long ecp_backoff_ms(int attempt, int base_ms, int max_ms);

#endif							/* ECP_BACKOFF_H */
