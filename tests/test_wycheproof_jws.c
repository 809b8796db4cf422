/*
 * test_wycheproof_jws.c - Project Wycheproof's json_web_signature_test.json
 * through libwrit's service API.
 *
 * In scope: compact JWS vectors whose group has a public key of an
 * algorithm writ accepts (ES256, ES384, RS256, PS256, EdDSA). Each goes
 * through writ_verifier_verify with a verifier holding that key, and is
 * also split and its signature checked with the key the JWK parser made
 * (writ_sig_verify, the step the verifier runs after its key lookup):
 *   - no vector may be accepted by the verifier: Wycheproof's payloads
 *     ("foo", prose) and kids ("kid-ec-sign") are not writ access tokens,
 *     so even "valid" ones must be refused (counted by reason);
 *   - at the signature step "valid" must verify and "invalid" must not.
 * Out of scope, counted: JWE and JSON-serialisation vectors, symmetric
 * (HS*) groups and algorithms writ does not accept (RS384, PS512, ES512..).
 */
#include <jansson.h>

#include "testutil.h"
#include "verifier_int.h"

typedef struct counts {
	size_t tests, in_scope, not_compact, no_key, alg, refused_ok, sig_ok, sig_bad;
	size_t reasons[WRIT_ERR__COUNT];
} counts;

/* Signature check on the split token with the group's key (any kid). */
static int sig_verifies(const writ_jwk *key, const char *tok)
{
	const char *d1 = strchr(tok, '.'), *d2 = d1 != NULL ? strchr(d1 + 1, '.') : NULL;
	size_t sl, n;
	unsigned char *sig;
	int ok;

	if (d2 == NULL)
		return 0;
	sl = strlen(d2 + 1);
	sig = malloc(B64URL_DECODED_MAX(sl) + 1);
	REQUIRE(sig != NULL);
	ok = b64url_decode(d2 + 1, sl, sig, &n) == 0 &&
	     writ_sig_verify(key, (const unsigned char *)tok, (size_t)(d2 - tok), sig, n, NULL) ==
	         WRIT_OK;
	free(sig);
	return ok;
}

static void run_vector(const json_t *t, const writ_jwk *key, writ_verifier *v, counts *k)
{
	const char *tok = json_string_value(json_object_get(t, "jws"));
	const char *result = json_string_value(json_object_get(t, "result"));
	const char *dot;
	writ_rc rc;
	int want = strcmp(result, "valid") == 0, got;

	if (tok == NULL || (dot = strchr(tok, '.')) == NULL || strchr(dot + 1, '.') == NULL ||
	    strchr(strchr(dot + 1, '.') + 1, '.') != NULL) {
		k->not_compact++; /* JSON serialisation or JWE (five parts) */
		return;
	}
	k->in_scope++;
	rc = writ_verifier_verify(v, tok, strlen(tok), NULL, NULL);
	CHECK(rc != WRIT_OK);
	k->refused_ok += rc != WRIT_OK;
	k->reasons[rc]++;
	if (strcmp(result, "acceptable") == 0)
		return;
	got = sig_verifies(key, tok);
	if (got == want) {
		k->sig_ok++;
	} else {
		k->sig_bad++;
		fprintf(stderr, "tcId %lld (%s): signature %s\n",
		        (long long)json_integer_value(json_object_get(t, "tcId")), result,
		        got ? "verified" : "refused");
	}
}

static void run_group(const json_t *g, counts *k)
{
	const json_t *pub = json_object_get(g, "public"), *tests = json_object_get(g, "tests"), *t;
	char *js = NULL, *set = NULL, tp[64];
	writ_verifier_cfg cfg = {.issuer = "https://issuer.example", .audience = "svc"};
	writ_verifier *v = NULL;
	writ_jwk *key = NULL;
	size_t i;

	k->tests += json_array_size(tests);
	if (pub == NULL) {
		k->no_key += json_array_size(tests); /* symmetric (HS*) group */
		return;
	}
	js = json_dumps(pub, JSON_COMPACT);
	if (writ_jwk_parse(js, strlen(js), &key, NULL) != WRIT_OK) {
		k->alg += json_array_size(tests); /* RS384, PS512, ES512, use enc ... */
		goto out;
	}
	/* The library takes RFC 7638 kids only: publish the key that way. */
	REQUIRE(writ_jwk_thumbprint(key, tp, sizeof(tp)) == WRIT_OK);
	set = malloc(strlen(js) + 128);
	REQUIRE(set != NULL);
	{
		json_t *p = json_deep_copy(pub);
		char *pj;
		json_object_set_new(p, "kid", json_string(tp));
		pj = json_dumps(p, JSON_COMPACT);
		snprintf(set, strlen(js) + 128, "{\"keys\":[%s]}", pj);
		free(pj);
		json_decref(p);
	}
	cfg.jwks_bytes = set;
	cfg.jwks_len = strlen(set);
	REQUIRE(writ_verifier_new(&cfg, &v, NULL) == WRIT_OK);
	json_array_foreach(tests, i, t)
		run_vector(t, key, v, k);
out:
	writ_verifier_free(v);
	writ_jwk_free(key);
	free(set);
	free(js);
}

int main(void)
{
	json_error_t je;
	json_t *doc = json_load_file(tu_data("wycheproof/json_web_signature_test.json"), 0, &je);
	const json_t *g;
	counts k = {0};
	size_t i;

	REQUIRE(doc != NULL);
	json_array_foreach(json_object_get(doc, "testGroups"), i, g)
		run_group(g, &k);
	fprintf(stderr,
	        "%zu vectors: %zu in scope, all refused by the verifier: %s; signature step "
	        "%zu right, %zu wrong\nout of scope: %zu JWE / JSON serialisation, %zu symmetric "
	        "(HS*), %zu algorithm or key use writ does not accept\n",
	        k.tests, k.in_scope, k.refused_ok == k.in_scope ? "yes" : "NO", k.sig_ok, k.sig_bad,
	        k.not_compact, k.no_key, k.alg);
	for (i = 0; i < WRIT_ERR__COUNT; i++)
		if (k.reasons[i] != 0)
			fprintf(stderr, "  refused as %-22s %zu\n", writ_strerror((writ_rc)i),
			        k.reasons[i]);
	CHECK(k.in_scope > 100);
	CHECK(k.sig_bad == 0);
	CHECK(k.tests == k.in_scope + k.not_compact + k.no_key + k.alg);
	json_decref(doc);
	return tu_finish();
}
