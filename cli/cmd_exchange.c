/*
 * cmd_exchange.c - writ exchange: call the issuer's POST /token (RFC 8693
 * token exchange) with an agent assertion and print the JSON answer.
 */
#include <curl/curl.h>
#include <getopt.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cli.h"
#include "writ_int.h"

#define RESP_MAX (64 * 1024)

static void usage(FILE *f)
{
	fprintf(f, "usage: writ exchange --issuer URL --assertion FILE|- --audience AUD\n"
	           "                     --scope \"A B\" [--cacert FILE] [--allow-http]\n\n"
	           "POST URL/token with grant_type token-exchange and the assertion as\n"
	           "subject_token; print the JSON response. Exit 0 on 200, 1 otherwise (the\n"
	           "error and its description on stderr). URL is https://, or http:// to a\n"
	           "loopback host; --allow-http lets plain http:// reach another host (only\n"
	           "where something else protects the hop).\n");
}

typedef struct buf {
	char *p;
	size_t n;
} buf;

static size_t on_data(char *d, size_t sz, size_t nm, void *arg)
{
	buf *b = arg;
	size_t n = sz * nm;
	char *np;

	if (b->n + n > RESP_MAX)
		return 0;
	np = realloc(b->p, b->n + n + 1);
	if (np == NULL)
		return 0;
	b->p = np;
	memcpy(b->p + b->n, d, n);
	b->n += n;
	b->p[b->n] = '\0';
	return n;
}

static char *form_field(CURL *c, const char *name, const char *value, int first)
{
	char *enc = curl_easy_escape(c, value, 0), *out;
	size_t n;

	if (enc == NULL)
		cli_die("out of memory");
	n = strlen(name) + strlen(enc) + 3;
	out = malloc(n);
	if (out == NULL)
		cli_die("out of memory");
	snprintf(out, n, "%s%s=%s", first ? "" : "&", name, enc);
	curl_free(enc);
	return out;
}

int exchange_main(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"issuer", required_argument, 0, 'i'},   {"assertion", required_argument, 0, 'a'},
	    {"audience", required_argument, 0, 'u'}, {"scope", required_argument, 0, 's'},
	    {"cacert", required_argument, 0, 'c'},   {"allow-http", no_argument, 0, 'H'},
	    {"help", no_argument, 0, 'h'},           {0, 0, 0, 0}};
	const char *issuer = NULL, *apath = NULL, *aud = NULL, *scope = NULL, *cacert = NULL;
	const char *names[] = {"grant_type", "subject_token", "subject_token_type", "audience",
	                       "scope"};
	const char *vals[5];
	char url[1200], *assertion, *parts[5], *body;
	size_t alen, total = 1, i;
	buf resp = {0};
	long status = 0;
	CURL *c;
	CURLcode cc;
	writ_err err = {0};
	int opt, allow_http = 0;

	while ((opt = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (opt) {
		case 'i': issuer = optarg; break;
		case 'a': apath = optarg; break;
		case 'u': aud = optarg; break;
		case 's': scope = optarg; break;
		case 'c': cacert = optarg; break;
		case 'H': allow_http = 1; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (issuer == NULL || apath == NULL || aud == NULL || scope == NULL || optind != argc) {
		usage(stderr);
		return 2;
	}
	/* The assertion and the token it buys are bearer credentials. */
	if (writ_url_check(issuer, "--issuer", allow_http, &err) != WRIT_OK)
		cli_die("exchange: %s", err.msg);
	assertion = cli_read_input(apath, 16 * 1024, &alen);
	while (alen > 0 && (assertion[alen - 1] == '\n' || assertion[alen - 1] == '\r'))
		assertion[--alen] = '\0';
	snprintf(url, sizeof(url), "%s/token", issuer);
	curl_global_init(CURL_GLOBAL_DEFAULT);
	c = curl_easy_init();
	if (c == NULL)
		cli_die("exchange: cannot start libcurl");
	vals[0] = "urn:ietf:params:oauth:grant-type:token-exchange";
	vals[1] = assertion;
	vals[2] = "urn:ietf:params:oauth:token-type:jwt";
	vals[3] = aud;
	vals[4] = scope;
	for (i = 0; i < 5; i++) {
		parts[i] = form_field(c, names[i], vals[i], i == 0);
		total += strlen(parts[i]);
	}
	body = calloc(1, total);
	if (body == NULL)
		cli_die("out of memory");
	for (i = 0; i < 5; i++) {
		strncat(body, parts[i], total - strlen(body) - 1);
		OPENSSL_cleanse(parts[i], strlen(parts[i]));
		free(parts[i]);
	}
	OPENSSL_cleanse(assertion, alen);
	free(assertion);
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &resp);
	curl_easy_setopt(c, CURLOPT_TIMEOUT, 30L);
	curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
	/* Plain http is allowed to a loopback issuer only: never through a
	 * proxy from the environment, which would see the assertion and the
	 * token in the clear (libwrit's JWKS fetch does the same). */
	if (strncasecmp(url, "https://", 8) != 0)
		curl_easy_setopt(c, CURLOPT_PROXY, "");
	if (cacert != NULL)
		curl_easy_setopt(c, CURLOPT_CAINFO, cacert);
	cc = curl_easy_perform(c);
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	OPENSSL_cleanse(body, strlen(body));
	free(body);
	curl_easy_cleanup(c);
	curl_global_cleanup();
	if (cc != CURLE_OK)
		cli_die("exchange: %s: %s", url, curl_easy_strerror(cc));
	if (status != 200) {
		fprintf(stderr, "writ: exchange: HTTP %ld: %s\n", status,
		        resp.p != NULL ? resp.p : "");
		free(resp.p);
		return 1;
	}
	printf("%s\n", resp.p != NULL ? resp.p : "");
	free(resp.p);
	return 0;
}
