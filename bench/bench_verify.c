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
#include "bench_token.h"
#include "writ_int.h"

#define NOW 1900000000

static bench_token tok;

static EVP_PKEY *make_key(void)
{
	EVP_PKEY *k = EVP_EC_gen("P-256");
	if (k == NULL)
		exit(1);
	return k;
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
			if (writ_verify(set, tok.tok, tok.len, &o, NULL, NULL) != WRIT_OK)
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
	bench_token_make(k, writ_jwk_kid(jwk), NOW, 300, 0, &tok);
	/* Interleave the two so drift on a shared machine hits both alike. */
	for (int r = 0; r < BENCH_REPEATS; r++) {
		raw[r] = bench_raw_verify(k, &tok, secs);
		wr[r] = run_writ(set, secs);
		ratio[r] = wr[r] / raw[r];
	}
	printf("verify ES256 (1 thread, median of %d x %.1fs)\n", BENCH_REPEATS, secs);
	printf("  OpenSSL EVP_PKEY_verify   %9.0f /s\n", bench_median(raw, BENCH_REPEATS));
	printf("  writ_verify (full checks) %9.0f /s\n", bench_median(wr, BENCH_REPEATS));
	printf("  ratio writ / OpenSSL      %9.3f  (target >= 0.85)\n",
	       bench_median(ratio, BENCH_REPEATS));
	free(jwk_json);
	free(tok.tok);
	writ_jwks_free(set);
	writ_jwk_free(jwk);
	EVP_PKEY_free(k);
	return 0;
}
