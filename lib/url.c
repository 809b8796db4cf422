/*
 * url.c - which URLs writ sends credentials or trusts keys over: https,
 * or plain http to the loopback host only (see writ_int.h).
 */
#include <arpa/inet.h>
#include <curl/curl.h>
#include <string.h>
#include <strings.h>

#include "writ_int.h"

static int host_is_loopback(const char *host)
{
	struct in_addr a4;

	if (strcasecmp(host, "localhost") == 0 || strcmp(host, "[::1]") == 0)
		return 1;
	return inet_pton(AF_INET, host, &a4) == 1 && (ntohl(a4.s_addr) >> 24) == 127;
}

writ_rc writ_url_check(const char *url, const char *what, int allow_http, writ_err *err)
{
	char *scheme = NULL, *host = NULL;
	CURLU *u = curl_url();
	writ_rc rc = WRIT_OK;

	if (u == NULL)
		return writ_err_set(err, WRIT_ERR_NOMEM, "out of memory");
	if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK) {
		rc = writ_err_set(err, WRIT_ERR_CONFIG, "%s \"%.200s\" is not a valid URL", what,
		                  url);
	} else if (strcmp(scheme, "https") != 0 && strcmp(scheme, "http") != 0) {
		rc = writ_err_set(err, WRIT_ERR_CONFIG, "%s must be http:// or https://", what);
	} else if (strcmp(scheme, "http") == 0 && !allow_http && !host_is_loopback(host)) {
		rc =
		    writ_err_set(err, WRIT_ERR_CONFIG,
		                 "%s \"%.200s\": plain http:// only to a loopback host (127.0.0.1, "
		                 "[::1], localhost); use https://: anyone on the path could read "
		                 "or change what crosses it",
		                 what, url);
	}
	curl_free(scheme);
	curl_free(host);
	curl_url_cleanup(u);
	return rc;
}
