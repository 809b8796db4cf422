/*
 * fuzz_verify.c - libFuzzer target for libwrit's service entry point,
 * writ_verifier_verify / writ_verifier_check (verifier.h): token bytes
 * and JWK Set bytes, both from the input.
 *
 * Input: "token" or "token NUL jwks". Without a usable JWK Set the fixed
 * one below is used (one ES256 and one RS256 public key, the same as
 * fuzz_jws, whose seeds were signed with their thrown-away private
 * halves), so mutations of a signed token still reach the claim checks
 * and the verified-token cache. Each token is verified twice (the second
 * is a cache hit when the first succeeded) and the verdicts must agree.
 * The token bytes, and its middle segment decoded, also go to the JSON
 * fast path (lib/json.c), which must never accept what jansson refuses
 * nor build a different tree, and any tree jansson builds from them to
 * the fast writer and the member-by-member writer (wjw_*), which must
 * write what json_dumps writes.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_util.h"
#include "verifier_int.h"

/* wjson_dump writes what json_dumps writes, for any tree jansson builds
 * (escapes, NUL, non-ASCII and reals included). */
static void dump_agrees(const char *in, size_t len)
{
	json_t *j = json_loadb(in, len, JSON_ALLOW_NUL, NULL);
	char *a, *b;

	if (j == NULL)
		return;
	a = wjson_dump(j);
	b = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
	ENSURE((a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0));
	free(a);
	/* The writer (wjw_*), member by member, writes the same text. */
	if (json_is_object(j)) {
		const char *k;
		json_t *m;
		wjson_w w;
		int skip = 0;

		wjw_init(&w);
		json_object_foreach(j, k, m)
			skip |= wjw_tree(&w, k, m) != 0;
		a = wjw_finish(&w, NULL);
		ENSURE(skip || (a == NULL && b == NULL) ||
		       (a != NULL && b != NULL && strcmp(a, b) == 0));
		free(a);
	}
	free(b);
	json_decref(j);
}

static void json_agrees(const char *in, size_t len)
{
	json_t *f = wjson_parse_fast(in, len), *j;
	char *a, *b;

	dump_agrees(in, len);
	if (f == NULL)
		return;
	j = json_loadb(in, len, JSON_REJECT_DUPLICATES, NULL);
	ENSURE(j != NULL && json_equal(f, j));
	a = json_dumps(f, JSON_COMPACT | JSON_PRESERVE_ORDER);
	b = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
	ENSURE(a != NULL && b != NULL && strcmp(a, b) == 0);
	free(a);
	free(b);
	json_decref(f);
	json_decref(j);
}

/* The claims segment of "h.p.s", decoded, when it is canonical base64url. */
static void json_agrees_payload(const char *tok, size_t len)
{
	const char *d1 = memchr(tok, '.', len), *d2;
	unsigned char *buf;
	size_t n, out;

	if (d1 == NULL || (d2 = memchr(d1 + 1, '.', len - (size_t)(d1 + 1 - tok))) == NULL)
		return;
	n = (size_t)(d2 - d1 - 1);
	if ((buf = malloc(B64URL_DECODED_MAX(n) + 1)) == NULL)
		return;
	if (b64url_decode(d1 + 1, n, buf, &out) == 0)
		json_agrees((const char *)buf, out);
	free(buf);
}

static writ_verifier *make(const char *js, size_t len)
{
	writ_verifier_cfg cfg = {.issuer = "https://issuer.example",
	                         .audience = "svc",
	                         .jwks_bytes = js,
	                         .jwks_len = len,
	                         .leeway = 5,
	                         .max_ttl = 600,
	                         .cache_entries = 16};
	writ_verifier *v = NULL;

	if (writ_verifier_new(&cfg, &v, NULL) != WRIT_OK)
		return NULL;
	verifier_test_clock(v, 1700000100, 5);
	return v;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *nul = memchr(data, 0, size);
	size_t tlen = nul != NULL ? (size_t)(nul - data) : size;
	char *tok = malloc(tlen + 1); /* exact size: over-reads show */
	writ_verifier *v = NULL;
	writ_claims *c = NULL, *c2 = NULL;
	writ_rc rc, rc2;
	double ra = -1;

	if (tok == NULL)
		return 0;
	memcpy(tok, data, tlen);
	json_agrees(tok, tlen);
	json_agrees_payload(tok, tlen);
	if (nul != NULL) {
		dump_agrees((const char *)nul + 1, size - tlen - 1);
		v = make((const char *)nul + 1, size - tlen - 1);
	}
	if (v == NULL)
		v = make(fuzz_jwks_json, sizeof(fuzz_jwks_json) - 1);
	ENSURE(v != NULL);
	rc = writ_verifier_verify(v, tok, tlen, &c, NULL);
	ENSURE((rc == WRIT_OK) == (c != NULL));
	rc2 = writ_verifier_verify(v, tok, tlen, &c2, NULL);
	ENSURE(rc2 == rc && (rc2 == WRIT_OK) == (c2 != NULL));
	if (c != NULL) {
		(void)writ_claims_has_scope(c, "read");
		rc = writ_verifier_admit(v, c, &ra);
		ENSURE(ra >= 0);
		ENSURE(rc == WRIT_OK || rc == WRIT_ERR_RATE_LIMITED || rc == WRIT_ERR_CLAIM);
	}
	rc = writ_verifier_check(v, tok, tlen, "read", NULL, &ra, NULL);
	(void)rc;
	writ_claims_free(c);
	writ_claims_free(c2);
	writ_verifier_free(v);
	free(tok);
	return 0;
}
