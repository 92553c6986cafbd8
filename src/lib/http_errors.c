/*
 * http_errors.c: what the HTTP client says when a request fails, without
 * the secrets it carried.
 */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

#include "http_errors.h"

#include <string.h>

/* Overwrite every occurrence of secret (NUL-terminated) in s with '*'. */
static void
redact(char *s, const char *secret)
{
	size_t		n = secret ? strlen(secret) : 0;
	char	   *p = s;
	char	   *hit;

	if (n < 3)
		return;					/* too short to tell from ordinary text */
	while ((hit = strstr(p, secret)) != NULL)
	{
		memset(hit, '*', n);
		p = hit + n;
	}
}

/*
 * Remove credentials from error (a NUL-terminated buffer of
 * ECP_HTTP_ERROR_SIZE bytes): the Authorization value auth_value (with and
 * without its scheme) and the user info of url.
 */
void
ecp_http_redact(char *error, const char *auth_value, const char *url)
{
	const char *start;

	if (auth_value)
	{
		const char *space = strchr(auth_value, ' ');

		redact(error, auth_value);
		if (space)
			redact(error, space + 1);	/* the token without its scheme */
	}
	start = url ? strstr(url, "://") : NULL;
	if (start)
	{
		const char *end;
		const char *at;

		start += 3;
		end = start + strcspn(start, "/?#");
		at = memchr(start, '@', (size_t) (end - start));
		if (at && at > start && (size_t) (at - start) < ECP_HTTP_ERROR_SIZE)
		{
			char		userinfo[ECP_HTTP_ERROR_SIZE];
			char	   *colon;

			memcpy(userinfo, start, (size_t) (at - start));
			userinfo[at - start] = '\0';
			redact(error, userinfo);
			colon = strchr(userinfo, ':');
			if (colon)
				redact(error, colon + 1);	/* the password alone */
		}
	}
}

/* The name of a CURLcode worth naming in an error, or NULL. */
const char *
ecp_http_curl_code_name(CURLcode rc)
{
	switch (rc)
	{
		case CURLE_UNSUPPORTED_PROTOCOL:
			return "CURLE_UNSUPPORTED_PROTOCOL";
		case CURLE_URL_MALFORMAT:
			return "CURLE_URL_MALFORMAT";
		case CURLE_COULDNT_RESOLVE_PROXY:
			return "CURLE_COULDNT_RESOLVE_PROXY";
		case CURLE_COULDNT_RESOLVE_HOST:
			return "CURLE_COULDNT_RESOLVE_HOST";
		case CURLE_COULDNT_CONNECT:
			return "CURLE_COULDNT_CONNECT";
		case CURLE_WEIRD_SERVER_REPLY:
			return "CURLE_WEIRD_SERVER_REPLY";
		case CURLE_HTTP2:
			return "CURLE_HTTP2";
		case CURLE_PARTIAL_FILE:
			return "CURLE_PARTIAL_FILE";
		case CURLE_WRITE_ERROR:
			return "CURLE_WRITE_ERROR";
		case CURLE_READ_ERROR:
			return "CURLE_READ_ERROR";
		case CURLE_OUT_OF_MEMORY:
			return "CURLE_OUT_OF_MEMORY";
		case CURLE_OPERATION_TIMEDOUT:
			return "CURLE_OPERATION_TIMEDOUT";
		case CURLE_RANGE_ERROR:
			return "CURLE_RANGE_ERROR";
		case CURLE_SSL_CONNECT_ERROR:
			return "CURLE_SSL_CONNECT_ERROR";
		case CURLE_BAD_FUNCTION_ARGUMENT:
			return "CURLE_BAD_FUNCTION_ARGUMENT";
		case CURLE_ABORTED_BY_CALLBACK:
			return "CURLE_ABORTED_BY_CALLBACK";
		case CURLE_TOO_MANY_REDIRECTS:
			return "CURLE_TOO_MANY_REDIRECTS";
		case CURLE_UNKNOWN_OPTION:
			return "CURLE_UNKNOWN_OPTION";
		case CURLE_GOT_NOTHING:
			return "CURLE_GOT_NOTHING";
		case CURLE_SSL_ENGINE_NOTFOUND:
			return "CURLE_SSL_ENGINE_NOTFOUND";
		case CURLE_SEND_ERROR:
			return "CURLE_SEND_ERROR";
		case CURLE_RECV_ERROR:
			return "CURLE_RECV_ERROR";
		case CURLE_SSL_CERTPROBLEM:
			return "CURLE_SSL_CERTPROBLEM";
		case CURLE_SSL_CIPHER:
			return "CURLE_SSL_CIPHER";
		case CURLE_PEER_FAILED_VERIFICATION:
			return "CURLE_PEER_FAILED_VERIFICATION";
		case CURLE_BAD_CONTENT_ENCODING:
			return "CURLE_BAD_CONTENT_ENCODING";
		case CURLE_FILESIZE_EXCEEDED:
			return "CURLE_FILESIZE_EXCEEDED";
		case CURLE_SEND_FAIL_REWIND:
			return "CURLE_SEND_FAIL_REWIND";
		case CURLE_SSL_CACERT_BADFILE:
			return "CURLE_SSL_CACERT_BADFILE";
		case CURLE_SSL_SHUTDOWN_FAILED:
			return "CURLE_SSL_SHUTDOWN_FAILED";
		case CURLE_AGAIN:
			return "CURLE_AGAIN";
		case CURLE_SSL_CRL_BADFILE:
			return "CURLE_SSL_CRL_BADFILE";
		case CURLE_SSL_ISSUER_ERROR:
			return "CURLE_SSL_ISSUER_ERROR";
		default:
			return NULL;
	}
}
