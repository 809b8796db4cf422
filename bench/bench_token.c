/*
 * bench_token.c - see bench_token.h.
 */
#include "bench_token.h"

#include <openssl/ecdsa.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "writ_int.h"

void bench_es256_sign(EVP_PKEY *k, const char *input, size_t n, unsigned char raw[64],
                      unsigned char *der, size_t *der_len)
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	const unsigned char *dp = der;
	ECDSA_SIG *es;

	if (ctx == NULL || EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, k) != 1 ||
	    EVP_DigestSign(ctx, der, der_len, (const unsigned char *)input, n) != 1 ||
	    (es = d2i_ECDSA_SIG(NULL, &dp, (long)*der_len)) == NULL)
		exit(1);
	BN_bn2binpad(ECDSA_SIG_get0_r(es), raw, 32);
	BN_bn2binpad(ECDSA_SIG_get0_s(es), raw + 32, 32);
	ECDSA_SIG_free(es);
	EVP_MD_CTX_free(ctx);
}

void bench_token_make(EVP_PKEY *k, const char *kid, int64_t iat, int64_t ttl, int serial,
                      bench_token *out)
{
	json_t *h = json_pack("{s:s,s:s,s:s}", "alg", "ES256", "typ", "at+jwt", "kid", kid);
	json_t *p =
	    json_pack("{s:s,s:s,s:s,s:s,s:s,s:I,s:I,s:I,s:s,s:i}", "iss", "https://issuer.example",
	              "sub", "agent-1", "client_id", "agent-1", "aud", "orders-db", "scope",
	              "db:read", "iat", (json_int_t)iat, "nbf", (json_int_t)iat, "exp",
	              (json_int_t)(iat + ttl), "jti", "AAAAAAAAAAAAAAAAAAAAAA", "n", serial);
	char *in = h != NULL && p != NULL ? writ_jws_signing_input(h, p, &out->input_len) : NULL;
	unsigned char raw[64];

	if (in == NULL)
		exit(1);
	out->der_len = sizeof(out->der);
	bench_es256_sign(k, in, out->input_len, raw, out->der, &out->der_len);
	out->tok = malloc(out->input_len + 2 + B64URL_LEN(64));
	if (out->tok == NULL)
		exit(1);
	memcpy(out->tok, in, out->input_len);
	out->tok[out->input_len] = '.';
	out->len = out->input_len + 1 + b64url_encode(raw, 64, out->tok + out->input_len + 1);
	free(in);
	json_decref(h);
	json_decref(p);
}

double bench_raw_verify(EVP_PKEY *k, const bench_token *t, double secs)
{
	EVP_PKEY_CTX *tmpl = EVP_PKEY_CTX_new_from_pkey(NULL, k, NULL);
	double t0, el;
	long n = 0;

	if (tmpl == NULL || EVP_PKEY_verify_init(tmpl) != 1 ||
	    EVP_PKEY_CTX_set_signature_md(tmpl, EVP_sha256()) != 1)
		exit(1);
	t0 = bench_now();
	do {
		for (int i = 0; i < 64; i++, n++) {
			unsigned char md[32];
			EVP_PKEY_CTX *p = EVP_PKEY_CTX_dup(tmpl);
			writ_sha256(t->tok, t->input_len, md);
			if (p == NULL || EVP_PKEY_verify(p, t->der, t->der_len, md, 32) != 1)
				exit(1);
			EVP_PKEY_CTX_free(p);
		}
	} while ((el = bench_now() - t0) < secs);
	EVP_PKEY_CTX_free(tmpl);
	return (double)n / el;
}
