/*
 * fuzz_jwks.c - libFuzzer target for the JWK and JWK Set parsers
 * (writ_jwks_parse with and without WRIT_JWKS_KID_IS_THUMBPRINT, and
 * writ_jwk_parse), which read key sets fetched from outside.
 *
 * Beyond "no crash, no leak", it checks what a verifier relies on: a set
 * that parses under the thumbprint flag has kid == thumbprint for every
 * key; a set accepted with the flag is accepted without it; a parsed key
 * written back out with writ_jwk_to_json parses again to the same key.
 * The same input, as a header value, goes to the Cache-Control max-age
 * and Age parsers that set how long a fetched set is kept.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_util.h"
#include "verifier_int.h"
#include "writ_int.h"

/* The key survives a round trip through its own JSON. */
static void round_trip(const writ_jwk *k)
{
	char tp[44], tp2[44], *js = writ_jwk_to_json(k);
	writ_jwk *again = NULL;

	ENSURE(js != NULL);
	ENSURE(writ_jwk_parse(js, strlen(js), &again, NULL) == WRIT_OK);
	ENSURE(writ_jwk_alg(again) == writ_jwk_alg(k));
	ENSURE(strcmp(writ_jwk_kid(again), writ_jwk_kid(k)) == 0);
	ENSURE(writ_jwk_thumbprint(k, tp, sizeof(tp)) == WRIT_OK);
	ENSURE(writ_jwk_thumbprint(again, tp2, sizeof(tp2)) == WRIT_OK);
	ENSURE(strcmp(tp, tp2) == 0);
	writ_jwk_free(again);
	free(js);
}

static writ_rc set_check(const char *json, size_t len, unsigned flags)
{
	writ_jwks *set = NULL;
	writ_err err = {0};
	writ_rc rc = writ_jwks_parse(json, len, flags, &set, &err);
	size_t i;

	check_err(rc, &err);
	if (rc != WRIT_OK) {
		ENSURE(set == NULL);
		return rc;
	}
	ENSURE(writ_jwks_count(set) >= 1 && writ_jwks_count(set) <= WRIT_JWKS_MAX_KEYS);
	for (i = 0; i < writ_jwks_count(set); i++) {
		const writ_jwk *k = writ_jwks_get(set, i);
		const char *kid = writ_jwk_kid(k);
		char tp[44];

		ENSURE(k != NULL && writ_jwks_find(set, kid) == k);
		ENSURE(strlen(kid) >= 1 && strlen(kid) <= WRIT_KID_MAX);
		ENSURE(strpbrk(kid, "/.\\\"") == NULL);
		if (flags & WRIT_JWKS_KID_IS_THUMBPRINT) {
			ENSURE(writ_jwk_thumbprint(k, tp, sizeof(tp)) == WRIT_OK);
			ENSURE(strcmp(tp, kid) == 0);
		}
		round_trip(k);
	}
	ENSURE(writ_jwks_get(set, writ_jwks_count(set)) == NULL);
	writ_jwks_free(set);
	return rc;
}

/* A header value as jwks_fetch hands it over: NUL-terminated, < 256. */
static void header_check(const uint8_t *data, size_t size)
{
	size_t n = size < 255 ? size : 255;
	char *v = malloc(n + 1);
	long ma, age;

	if (v == NULL)
		return;
	memcpy(v, data, n);
	v[n] = '\0';
	ma = jwks_parse_max_age(v);
	age = jwks_parse_age(v);
	ENSURE(ma >= -1 && ma <= JWKS_MAX_AGE_CAP);
	ENSURE(age >= -1 && age <= JWKS_MAX_AGE_CAP);
	free(v);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* An exact-size copy: ASan sees any read past the input's end. */
	char *json = malloc(size != 0 ? size : 1);
	writ_jwk *k = NULL;
	writ_err err = {0};
	writ_rc rc;

	header_check(data, size);
	if (json == NULL)
		return 0;
	memcpy(json, data, size);
	if (set_check(json, size, WRIT_JWKS_KID_IS_THUMBPRINT) == WRIT_OK)
		ENSURE(set_check(json, size, 0) == WRIT_OK); /* the flag only narrows */
	else
		(void)set_check(json, size, 0);
	rc = writ_jwk_parse(json, size, &k, &err);
	check_err(rc, &err);
	if (rc == WRIT_OK) {
		round_trip(k);
		writ_jwk_free(k);
	} else {
		ENSURE(k == NULL);
	}
	free(json);
	return 0;
}
