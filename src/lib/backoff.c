/*
 * backoff.c: the Fibonacci back-off of the task options retry_base_ms and
 * retry_max_ms.  A worker waits it before retrying a batch or a source
 * step (retry.c), the launcher before restarting a part whose worker died
 * or exited early (scheduler.c).  alerts.c's webhook doubles its own,
 * shorter waits instead: a different contract, not a task's option.
 */
#include "backoff.h"

/*
 * The wait before retry number attempt (from 1): 1, 1, 2, 3, 5, 8, ...
 * times base_ms, at most max_ms.  The sequence stops growing once it
 * passes max_ms, so a huge attempt costs no time and cannot overflow.
 */
long
ecp_backoff_ms(int attempt, int base_ms, int max_ms)
{
	long long	a = 1,
				b = 1;

	for (int n = 1; n < attempt && a * base_ms < max_ms; n++)
	{
		long long	next = a + b;

		a = b;
		b = next;
	}
	return (long) (a * base_ms < max_ms ? a * base_ms : max_ms);
}
