/*
 * fuzz_jws.c - libFuzzer target for the compact JWS parser and the
 * verifier (writ_jws_parse, writ_verify, writ_claims_check).
 *
 * Two modes, chosen by the first byte:
 *  - anything but NUL: the input is a token, as a verifier receives it
 *    from the network (not NUL-terminated, so over-reads show);
 *  - NUL: "header JSON NUL payload JSON NUL signature bytes", encoded
 *    here, so mutations reach the JSON and claim checks instead of dying
 *    in base64url. The payload also goes straight to writ_claims_check,
 *    which a signature would otherwise guard.
 *
 * The key set is fixed: one ES256 and one RS256 public key, kid = RFC 7638
 * thumbprint. Seeds in fuzz/corpus/jws/ were signed with their private
 * halves, which were then thrown away.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_util.h"
#include "writ_int.h"

static writ_jwks *set;

static void verify(const char *tok, size_t len, const writ_verify_opts *o)
{
	writ_claims *c = NULL;
	writ_err err = {0};
	writ_jws j;
	writ_rc rc;

	rc = writ_jws_parse(tok, len, &j, &err);
	check_err(rc, &err);
	if (rc == WRIT_OK) {
		ENSURE(json_is_object(j.header) && json_is_object(j.payload));
		ENSURE(j.alg_name != NULL && j.sig_len > 0 && j.signing_input_len < len);
		writ_jws_clear(&j);
	}
	rc = writ_verify(set, tok, len, o, &c, &err);
	check_err(rc, &err);
	if (rc != WRIT_OK) {
		ENSURE(c == NULL);
		return;
	}
	{
		/* Only a token signed by a key of the set gets here. */
		char *js = writ_claims_json(c);
		int64_t v;
		ENSURE(js != NULL);
		ENSURE(writ_jwks_find(set, writ_claims_kid(c)) != NULL);
		ENSURE(writ_claims_int(c, "exp", &v) == WRIT_OK);
		free(js);
	}
	writ_claims_free(c);
}

static void structured(const uint8_t *d, size_t n)
{
	const uint8_t *h = d, *p, *s, *e = d + n;
	char *hb = NULL, *pb = NULL, *sb = NULL, *tok = NULL;
	writ_verify_opts o = {.iss = "https://issuer.example",
	                      .aud = "svc",
	                      .typ = "at+jwt",
	                      .now = 1700000100,
	                      .leeway = 5,
	                      .max_ttl = 600};
	writ_verify_opts plain = {.now = 1700000100, .require_sub = 1};
	json_t *payload;
	writ_err err = {0};
	size_t tl;

	p = memchr(h, 0, (size_t)(e - h));
	if (p == NULL)
		return;
	p++;
	s = memchr(p, 0, (size_t)(e - p));
	if (s == NULL)
		return;
	s++;
	hb = b64url_encode_alloc(h, (size_t)(p - 1 - h));
	pb = b64url_encode_alloc(p, (size_t)(s - 1 - p));
	sb = b64url_encode_alloc(s, (size_t)(e - s));
	if (hb == NULL || pb == NULL || sb == NULL)
		goto out;
	tl = strlen(hb) + strlen(pb) + strlen(sb) + 2;
	tok = malloc(tl + 1);
	if (tok == NULL)
		goto out;
	snprintf(tok, tl + 1, "%s.%s.%s", hb, pb, sb);
	verify(tok, tl, &o);
	payload = wjson_parse_object((const char *)p, (size_t)(s - 1 - p), "claims", &err);
	if (payload != NULL) {
		check_err(writ_claims_check(payload, &o, &err), &err);
		check_err(writ_claims_check(payload, &plain, &err), &err);
		json_decref(payload);
	}
out:
	free(hb);
	free(pb);
	free(sb);
	free(tok);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	writ_verify_opts o = {
	    .iss = "https://issuer.example", .aud = "svc", .typ = "at+jwt", .now = 1700000100};
	writ_verify_opts plain = {.now = 1700000100, .leeway = 60};
	char *copy;

	if (set == NULL && writ_jwks_parse(fuzz_jwks_json, strlen(fuzz_jwks_json),
	                                   WRIT_JWKS_KID_IS_THUMBPRINT, &set, NULL) != WRIT_OK)
		abort(); /* the fixed set must parse */
	if (size > 0 && data[0] == 0) {
		structured(data + 1, size - 1);
		return 0;
	}
	/* An exact-size copy: ASan sees any read past the token's end. */
	copy = malloc(size != 0 ? size : 1);
	if (copy == NULL)
		return 0;
	memcpy(copy, data, size);
	verify(copy, size, &o);
	verify(copy, size, &plain);
	free(copy);
	return 0;
}
