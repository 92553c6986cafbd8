/*
 * http_errors.h: error texts of the HTTP client (http_errors.c).
 */
#ifndef ECP_HTTP_ERRORS_H
#define ECP_HTTP_ERRORS_H

#include <curl/curl.h>

#include "http_client.h"

extern void ecp_http_redact(char *error, const char *auth_value, const char *url);
extern const char *ecp_http_curl_code_name(CURLcode rc);

#endif							/* ECP_HTTP_ERRORS_H */
