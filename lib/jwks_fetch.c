/*
 * jwks_fetch.c - GET the issuer's JWK Set with libcurl: a capped body,
 * short timeouts, http/https only, the ETag and Cache-Control max-age
 * (RFC 9111 s.5.2.2.1) less the response's Age (s.5.1: how long a cache
 * in between has held it) kept for the next request. The caller parses.
 */
#include <curl/curl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "verifier_int.h"

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc;

static void curl_init_once(void)
{
	curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

writ_rc jwks_fetch_init(writ_err *err)
{
	/* curl_global_init is not thread-safe in every libcurl build. */
	pthread_once(&curl_once, curl_init_once);
	if (curl_init_rc != CURLE_OK)
		return writ_err_set(err, WRIT_ERR_CRYPTO, "libcurl: %s",
		                    curl_easy_strerror(curl_init_rc));
	return WRIT_OK;
}

long jwks_parse_max_age(const char *cc_in)
{
	char cc[256];
	const char *p;
	size_t i;
	long v = -1;

	/* Directive names are case-insensitive (RFC 9111 s.5.2). */
	for (i = 0; cc_in[i] != '\0' && i < sizeof(cc) - 1; i++)
		cc[i] = (char)(cc_in[i] >= 'A' && cc_in[i] <= 'Z' ? cc_in[i] + 32 : cc_in[i]);
	cc[i] = '\0';
	if (strstr(cc, "no-store") != NULL || strstr(cc, "no-cache") != NULL)
		return 0;
	for (p = cc; (p = strstr(p, "max-age")) != NULL; p += 7) {
		/* "s-maxage" is for shared caches, and a name must start at a
		 * directive boundary. */
		if (p != cc && p[-1] != ' ' && p[-1] != ',' && p[-1] != '\t')
			continue;
		if (p[7] != '=' || p[8] < '0' || p[8] > '9')
			return -1;
		v = 0;
		for (p += 8; *p >= '0' && *p <= '9'; p++)
			if ((v = v * 10 + (*p - '0')) > JWKS_MAX_AGE_CAP)
				v = JWKS_MAX_AGE_CAP;
		return v;
	}
	return v;
}

long jwks_parse_age(const char *v)
{
	long n = 0;

	/* A list (not allowed, but seen) counts by its first member; a value
	 * that is not a non-negative integer is ignored (RFC 9111 s.5.1). */
	while (*v == ' ' || *v == '\t')
		v++;
	if (*v < '0' || *v > '9')
		return -1;
	for (; *v >= '0' && *v <= '9'; v++)
		if ((n = n * 10 + (*v - '0')) > JWKS_MAX_AGE_CAP)
			n = JWKS_MAX_AGE_CAP;
	while (*v == ' ' || *v == '\t')
		v++;
	return *v == '\0' || *v == ',' ? n : -1;
}

typedef struct sink {
	jwks_response *r;
	size_t cap;
	int too_large;
} sink;

static size_t on_body(char *data, size_t size, size_t n, void *arg)
{
	sink *s = arg;
	size_t len = size * n;
	char *nb;

	/* The cap is checked before growing: a huge or endless body stops
	 * here rather than in memory. Returning less than len aborts. */
	if (len > WRIT_JWKS_MAX_BYTES - s->r->len) {
		s->too_large = 1;
		return 0;
	}
	if (s->r->len + len + 1 > s->cap) {
		size_t cap = s->cap != 0 ? s->cap : 8192;
		while (cap < s->r->len + len + 1)
			cap *= 2;
		if ((nb = realloc(s->r->body, cap)) == NULL)
			return 0;
		s->r->body = nb;
		s->cap = cap;
	}
	memcpy(s->r->body + s->r->len, data, len);
	s->r->len += len;
	s->r->body[s->r->len] = '\0';
	return len;
}

/* Copy the value of "Name: value\r\n" without surrounding blanks. */
static void header_value(const char *v, size_t n, char *out, size_t outlen)
{
	while (n > 0 && (*v == ' ' || *v == '\t'))
		v++, n--;
	while (n > 0 && (v[n - 1] == '\r' || v[n - 1] == '\n' || v[n - 1] == ' '))
		n--;
	if (n >= outlen) {
		out[0] = '\0'; /* too long to echo back: no conditional request */
		return;
	}
	memcpy(out, v, n);
	out[n] = '\0';
}

static size_t on_header(char *data, size_t size, size_t n, void *arg)
{
	jwks_response *r = arg;
	size_t len = size * n;
	char cc[256];
	long ma;

	/* Each response of a redirect chain starts with its status line, and
	 * only the last one's validators and lifetime describe the body: a
	 * redirect's "max-age=31536000" must not become the key set's. */
	if (len > 5 && strncmp(data, "HTTP/", 5) == 0) {
		r->etag[0] = '\0';
		r->max_age = JWKS_MAX_AGE_DEFAULT;
		r->age = JWKS_AGE_NONE;
	} else if (len > 4 && strncasecmp(data, "Age:", 4) == 0 && r->age == JWKS_AGE_NONE) {
		/* Only the first Age field counts, valid or not. */
		header_value(data + 4, len - 4, cc, sizeof(cc));
		r->age = (ma = jwks_parse_age(cc)) >= 0 ? (unsigned)ma : 0;
	} else if (len > 5 && strncasecmp(data, "ETag:", 5) == 0) {
		header_value(data + 5, len - 5, r->etag, sizeof(r->etag));
	} else if (len > 14 && strncasecmp(data, "Cache-Control:", 14) == 0) {
		header_value(data + 14, len - 14, cc, sizeof(cc));
		if ((ma = jwks_parse_max_age(cc)) >= 0)
			r->max_age = (unsigned)ma;
	}
	return len;
}

static writ_rc set_opts(CURL *c, const char *url, const char *ca_file, struct curl_slist *hdrs,
                        sink *s)
{
	int https = strncasecmp(url, "https://", 8) == 0;
	CURLcode e = CURLE_OK;

#define SET(opt, val) (e != CURLE_OK ? e : (e = curl_easy_setopt(c, opt, val)))
	SET(CURLOPT_URL, url);
	/* file://, gopher:// and friends would turn a config typo or a
	 * redirect into a local read or an SSRF. */
	SET(CURLOPT_PROTOCOLS_STR, "http,https");
	/* A redirect over plain http could lead off the loopback host the
	 * URL was allowed for: followed for https only. */
	SET(CURLOPT_REDIR_PROTOCOLS_STR, "https");
	SET(CURLOPT_FOLLOWLOCATION, https ? 1L : 0L);
	/* Plain http is allowed because it stays on this host: never through
	 * a proxy from the environment (http_proxy, ALL_PROXY), which would
	 * carry the keys off it in the clear. https may use one: its tunnel
	 * does not see or change the keys. */
	if (!https)
		SET(CURLOPT_PROXY, "");
	SET(CURLOPT_MAXREDIRS, 3L);
	SET(CURLOPT_CONNECTTIMEOUT, (long)JWKS_CONNECT_TIMEOUT_S);
	SET(CURLOPT_TIMEOUT, (long)JWKS_TIMEOUT_S);
	SET(CURLOPT_NOSIGNAL, 1L); /* verifiers are threaded */
	SET(CURLOPT_MAXFILESIZE, (long)WRIT_JWKS_MAX_BYTES);
	SET(CURLOPT_WRITEFUNCTION, on_body);
	SET(CURLOPT_WRITEDATA, s);
	SET(CURLOPT_HEADERFUNCTION, on_header);
	SET(CURLOPT_HEADERDATA, s->r);
	SET(CURLOPT_HTTPHEADER, hdrs);
	SET(CURLOPT_USERAGENT, "libwrit");
	if (ca_file != NULL)
		SET(CURLOPT_CAINFO, ca_file);
#undef SET
	return e == CURLE_OK ? WRIT_OK : WRIT_ERR_ARG;
}

writ_rc jwks_fetch(const char *url, const char *ca_file, const char *etag, jwks_response *r,
                   writ_err *err)
{
	struct curl_slist *hdrs = NULL, *h;
	char inm[JWKS_ETAG_MAX + 32];
	sink s = {r, 0, 0};
	CURL *c = NULL;
	CURLcode e;
	writ_rc rc;

	memset(r, 0, sizeof(*r));
	r->max_age = JWKS_MAX_AGE_DEFAULT;
	if ((c = curl_easy_init()) == NULL)
		return writ_err_set(err, WRIT_ERR_NOMEM, "libcurl: out of memory");
	r->age = JWKS_AGE_NONE;
	if (etag != NULL && etag[0] != '\0') {
		snprintf(inm, sizeof(inm), "If-None-Match: %s", etag);
		if ((h = curl_slist_append(hdrs, inm)) == NULL) {
			rc = writ_err_set(err, WRIT_ERR_NOMEM, "out of memory");
			goto out;
		}
		hdrs = h;
	}
	if ((rc = set_opts(c, url, ca_file, hdrs, &s)) != WRIT_OK) {
		rc = writ_err_set(err, WRIT_ERR_CONFIG, "JWKS URL refused by libcurl");
		goto out;
	}
	e = curl_easy_perform(c);
	if (s.too_large || e == CURLE_FILESIZE_EXCEEDED) {
		rc = writ_err_set(err, WRIT_ERR_TOO_LARGE, "JWK Set over %d bytes",
		                  WRIT_JWKS_MAX_BYTES);
		goto out;
	}
	if (e != CURLE_OK) {
		rc = writ_err_set(
		    err, e == CURLE_UNSUPPORTED_PROTOCOL ? WRIT_ERR_CONFIG : WRIT_ERR_UNAVAILABLE,
		    "JWKS fetch: %s", curl_easy_strerror(e));
		goto out;
	}
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
	/* What is left of its freshness: a proxy that held it for Age seconds
	 * already spent that much of max-age. */
	if (r->age == JWKS_AGE_NONE)
		r->age = 0;
	r->max_age = r->age >= r->max_age ? 0 : r->max_age - r->age;
	rc = WRIT_OK;
out:
	if (r->age == JWKS_AGE_NONE)
		r->age = 0;
	if (rc != WRIT_OK || r->status != 200) {
		free(r->body);
		r->body = NULL;
		r->len = 0;
	}
	curl_slist_free_all(hdrs);
	curl_easy_cleanup(c);
	return rc;
}
