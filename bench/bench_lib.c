/*
 * bench_lib.c - libwrit's service API (writ_verifier_verify), one thread:
 *   1. verifications/s of tokens never seen before (each token distinct,
 *      so every call is a full verify and a cache insert) divided by
 *      OpenSSL's EVP_PKEY_verify (prepared context) with the same P-256 key in the same run
 *      (target >= 0.9);
 *   2. repeat verifications/s of one cached token, claims handed back
 *      (target >= 1,000,000).
 * Medians of BENCH_REPEATS, interleaved so machine drift hits all alike.
 */
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "bench.h"
#include "writ/verifier.h"
#include "writ_int.h"

#define NTOK 4096

static char *tokens[NTOK];
static size_t lens[NTOK];
static unsigned char der0[128];
static size_t der0_len, input0_len;

/* A distinct signed token (jti differs) for k; keeps token 0's DER
 * signature for the raw OpenSSL loop. */
static void make_token(EVP_PKEY *k, const char *kid, int i)
{
	long now = (long)time(NULL);
	json_t *h = json_pack("{s:s,s:s,s:s}", "alg", "ES256", "typ", "at+jwt", "kid", kid);
	json_t *p =
	    json_pack("{s:s,s:s,s:s,s:s,s:s,s:I,s:I,s:I,s:s,s:i}", "iss", "https://issuer.example",
	              "sub", "agent-1", "client_id", "agent-1", "aud", "orders-db", "scope",
	              "db:read", "iat", (json_int_t)now, "nbf", (json_int_t)now, "exp",
	              (json_int_t)now + 3000, "jti", "AAAAAAAAAAAAAAAAAAAAAA", "n", i);
	size_t n, dl;
	char *in = writ_jws_signing_input(h, p, &n);
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	unsigned char der[128], raw[64];
	const unsigned char *dp = der;
	ECDSA_SIG *es;

	dl = sizeof(der);
	if (in == NULL || EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, k) != 1 ||
	    EVP_DigestSign(ctx, der, &dl, (unsigned char *)in, n) != 1)
		exit(1);
	es = d2i_ECDSA_SIG(NULL, &dp, (long)dl);
	BN_bn2binpad(ECDSA_SIG_get0_r(es), raw, 32);
	BN_bn2binpad(ECDSA_SIG_get0_s(es), raw + 32, 32);
	tokens[i] = malloc(n + 2 + B64URL_LEN(64));
	memcpy(tokens[i], in, n);
	tokens[i][n] = '.';
	lens[i] = n + 1 + b64url_encode(raw, 64, tokens[i] + n + 1);
	if (i == 0) {
		memcpy(der0, der, dl);
		der0_len = dl;
		input0_len = n;
	}
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
			SHA256((unsigned char *)tokens[0], input0_len, md);
			if (p == NULL || EVP_PKEY_verify(p, der0, der0_len, md, 32) != 1)
				exit(1);
			EVP_PKEY_CTX_free(p);
		}
	} while ((t = bench_now() - t0) < secs);
	EVP_PKEY_CTX_free(tmpl);
	return (double)n / t;
}

/* Distinct tokens through a cache far smaller than NTOK: every call
 * misses, verifies in full and inserts (evicting). */
static double run_lib(writ_verifier *v, double secs, size_t *next)
{
	double t0 = bench_now(), t;
	long n = 0;
	writ_claims *c;

	do {
		for (int i = 0; i < 64; i++, n++, *next = (*next + 1) % NTOK) {
			if (writ_verifier_verify(v, tokens[*next], lens[*next], &c, NULL) !=
			    WRIT_OK)
				exit(1);
			writ_claims_free(c);
		}
	} while ((t = bench_now() - t0) < secs);
	return (double)n / t;
}

static double run_cached(writ_verifier *v, double secs)
{
	double t0 = bench_now(), t;
	long n = 0;
	writ_claims *c;

	do {
		for (int i = 0; i < 1024; i++, n++) {
			if (writ_verifier_verify(v, tokens[0], lens[0], &c, NULL) != WRIT_OK)
				exit(1);
			writ_claims_free(c);
		}
	} while ((t = bench_now() - t0) < secs);
	return (double)n / t;
}

static writ_verifier *verifier(const char *set_json, size_t entries)
{
	writ_verifier_cfg cfg = {.issuer = "https://issuer.example",
	                         .audience = "orders-db",
	                         .jwks_bytes = set_json,
	                         .jwks_len = strlen(set_json),
	                         .cache_entries = entries};
	writ_verifier *v = NULL;

	if (writ_verifier_new(&cfg, &v, NULL) != WRIT_OK)
		exit(1);
	return v;
}

int main(void)
{
	double secs = bench_seconds(2.0), raw[BENCH_REPEATS], lib[BENCH_REPEATS];
	double ratio[BENCH_REPEATS], hit[BENCH_REPEATS];
	EVP_PKEY *k = EVP_EC_gen("P-256");
	writ_jwk *jwk = NULL;
	writ_verifier *vmiss, *vhit;
	char *jwk_json, set_json[1024];
	size_t next = 0;

	if (k == NULL || writ_jwk_from_pkey(k, WRIT_ALG_ES256, &jwk, NULL) != WRIT_OK)
		return 1;
	jwk_json = writ_jwk_to_json(jwk);
	snprintf(set_json, sizeof(set_json), "{\"keys\":[%s]}", jwk_json);
	for (int i = 0; i < NTOK; i++)
		make_token(k, writ_jwk_kid(jwk), i);
	vmiss = verifier(set_json, 64);
	vhit = verifier(set_json, 0);
	for (int r = 0; r < BENCH_REPEATS; r++) {
		raw[r] = run_raw(k, secs);
		lib[r] = run_lib(vmiss, secs, &next);
		ratio[r] = lib[r] / raw[r];
		hit[r] = run_cached(vhit, secs);
	}
	printf("libwrit writ_verifier_verify, ES256 (1 thread, median of %d x %.1fs)\n",
	       BENCH_REPEATS, secs);
	printf("  OpenSSL EVP_PKEY_verify         %10.0f /s\n", bench_median(raw, BENCH_REPEATS));
	printf("  library, every token new        %10.0f /s\n", bench_median(lib, BENCH_REPEATS));
	printf("  ratio library / OpenSSL         %10.3f  (target >= 0.9)\n",
	       bench_median(ratio, BENCH_REPEATS));
	printf("  library, cached token           %10.0f /s  (target >= 1000000)\n",
	       bench_median(hit, BENCH_REPEATS));
	writ_verifier_free(vmiss);
	writ_verifier_free(vhit);
	for (int i = 0; i < NTOK; i++)
		free(tokens[i]);
	free(jwk_json);
	writ_jwk_free(jwk);
	EVP_PKEY_free(k);
	return 0;
}
