/*
 * fuzz_jwks.c - libFuzzer target for the JWK and JWK Set parsers
 * (writ_jwks_parse with and without WRIT_JWKS_KID_IS_THUMBPRINT, and
 * writ_jwk_parse), which read key sets fetched from outside.
 *
 * Beyond "no crash, no leak", it checks what a verifier relies on: a set
 * that parses under the thumbprint flag has kid == thumbprint for every
 * key; a set accepted with the flag is accepted without it; a parsed key
 * written back out with writ_jwk_to_json parses again to the same key.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_util.h"
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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* An exact-size copy: ASan sees any read past the input's end. */
	char *json = malloc(size != 0 ? size : 1);
	writ_jwk *k = NULL;
	writ_err err = {0};
	writ_rc rc;

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
