/*
 * bench_verify.c - ES256 verifications/s through writ's verifier (parse,
 * key by kid, pinned alg, signature, claims) divided by OpenSSL's own
 * EVP_DigestVerify over the same signing input with the same key, in the
 * same run. Target: >= 0.85.
 */
#include <openssl/ec.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <string.h>

#include "bench.h"
#include "writ_int.h"

#define NOW 1900000000

static char token[2048];
static size_t token_len, input_len;
static unsigned char der[128];
static size_t der_len;

static EVP_PKEY *make_key(void)
{
	EVP_PKEY *k = EVP_EC_gen("P-256");
	if (k == NULL)
		exit(1);
	return k;
}

/* Sign "<header>.<claims>" with OpenSSL and build the compact token. */
static void make_token(EVP_PKEY *k, const char *kid)
{
	json_t *h = json_pack("{s:s,s:s,s:s}", "alg", "ES256", "typ", "at+jwt", "kid", kid);
	json_t *p =
	    json_pack("{s:s,s:s,s:s,s:s,s:s,s:I,s:I,s:I,s:s}", "iss", "https://issuer.example",
	              "sub", "agent-1", "client_id", "agent-1", "aud", "orders-db", "scope",
	              "db:read", "iat", (json_int_t)NOW, "nbf", (json_int_t)NOW, "exp",
	              (json_int_t)NOW + 300, "jti", "AAAAAAAAAAAAAAAAAAAAAA");
	char *in = writ_jws_signing_input(h, p, &input_len);
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	unsigned char raw[64];
	const BIGNUM *r, *s;
	const unsigned char *dp;
	ECDSA_SIG *es;

	der_len = sizeof(der);
	if (in == NULL || EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, k) != 1 ||
	    EVP_DigestSign(ctx, der, &der_len, (unsigned char *)in, input_len) != 1)
		exit(1);
	dp = der;
	es = d2i_ECDSA_SIG(NULL, &dp, (long)der_len);
	ECDSA_SIG_get0(es, &r, &s);
	BN_bn2binpad(r, raw, 32);
	BN_bn2binpad(s, raw + 32, 32);
	memcpy(token, in, input_len);
	token[input_len] = '.';
	token_len = input_len + 1 + b64url_encode(raw, 64, token + input_len + 1);
	ECDSA_SIG_free(es);
	EVP_MD_CTX_free(ctx);
	free(in);
	json_decref(h);
	json_decref(p);
}

/* The fastest plain-OpenSSL verify we know: a prepared context
 * duplicated per call, a one-shot SHA-256, EVP_PKEY_verify on DER. */
static double run_raw(EVP_PKEY *k, double secs)
{
	EVP_PKEY_CTX *tmpl = EVP_PKEY_CTX_new_from_pkey(NULL, k, NULL);
	double t0, t;
	long n = 0;

	if (tmpl == NULL || EVP_PKEY_verify_init(tmpl) != 1 ||
	    EVP_PKEY_CTX_set_signature_md(tmpl, EVP_sha256()) != 1)
		exit(1);
	t0 = bench_now();
	do {
		for (int i = 0; i < 64; i++, n++) {
			unsigned char md[32];
			EVP_PKEY_CTX *p = EVP_PKEY_CTX_dup(tmpl);
			SHA256((unsigned char *)token, input_len, md);
			if (p == NULL || EVP_PKEY_verify(p, der, der_len, md, 32) != 1)
				exit(1);
			EVP_PKEY_CTX_free(p);
		}
	} while ((t = bench_now() - t0) < secs);
	EVP_PKEY_CTX_free(tmpl);
	return (double)n / t;
}

static double run_writ(const writ_jwks *set, double secs)
{
	writ_verify_opts o = {.iss = "https://issuer.example",
	                      .aud = "orders-db",
	                      .typ = "at+jwt",
	                      .now = NOW + 10,
	                      .leeway = 30};
	double t0 = bench_now(), t;
	long n = 0;

	do {
		for (int i = 0; i < 64; i++, n++)
			if (writ_verify(set, token, token_len, &o, NULL, NULL) != WRIT_OK)
				exit(1);
	} while ((t = bench_now() - t0) < secs);
	return (double)n / t;
}

int main(void)
{
	double secs = bench_seconds(2.0), raw[BENCH_REPEATS], wr[BENCH_REPEATS],
	       ratio[BENCH_REPEATS];
	EVP_PKEY *k = make_key();
	writ_jwk *jwk = NULL;
	writ_jwks *set = NULL;
	char *jwk_json, set_json[1024];

	if (writ_jwk_from_pkey(k, WRIT_ALG_ES256, &jwk, NULL) != WRIT_OK)
		return 1;
	jwk_json = writ_jwk_to_json(jwk);
	snprintf(set_json, sizeof(set_json), "{\"keys\":[%s]}", jwk_json);
	if (writ_jwks_parse(set_json, strlen(set_json), WRIT_JWKS_KID_IS_THUMBPRINT, &set, NULL) !=
	    WRIT_OK)
		return 1;
	make_token(k, writ_jwk_kid(jwk));
	/* Interleave the two so drift on a shared machine hits both alike. */
	for (int r = 0; r < BENCH_REPEATS; r++) {
		raw[r] = run_raw(k, secs);
		wr[r] = run_writ(set, secs);
		ratio[r] = wr[r] / raw[r];
	}
	printf("verify ES256 (1 thread, median of %d x %.1fs)\n", BENCH_REPEATS, secs);
	printf("  OpenSSL EVP_PKEY_verify   %9.0f /s\n", bench_median(raw, BENCH_REPEATS));
	printf("  writ_verify (full checks) %9.0f /s\n", bench_median(wr, BENCH_REPEATS));
	printf("  ratio writ / OpenSSL      %9.3f  (target >= 0.85)\n",
	       bench_median(ratio, BENCH_REPEATS));
	free(jwk_json);
	writ_jwks_free(set);
	writ_jwk_free(jwk);
	EVP_PKEY_free(k);
	return 0;
}
