/*
 * bench_token.h - what the verification benchmarks share: a writ access
 * token signed with an in-process P-256 key, and the plain-OpenSSL verify
 * loop that is their baseline.
 */
#ifndef WRIT_BENCH_TOKEN_H
#define WRIT_BENCH_TOKEN_H

#include <openssl/evp.h>
#include <stddef.h>
#include <stdint.h>

typedef struct bench_token {
	char *tok; /* malloc'd compact JWS */
	size_t len, input_len;
	unsigned char der[128]; /* the signature as DER, for the baseline */
	size_t der_len;
} bench_token;

/* ES256-sign input (n bytes) with k: raw r||s into raw[64], DER into der
 * (*der_len in: capacity, out: length). Exits on failure. */
void bench_es256_sign(EVP_PKEY *k, const char *input, size_t n, unsigned char raw[64],
                      unsigned char *der, size_t *der_len);
/* A writ access token (iss https://issuer.example, aud orders-db, typ
 * at+jwt) issued at iat for ttl seconds; `serial` makes it distinct. */
void bench_token_make(EVP_PKEY *k, const char *kid, int64_t iat, int64_t ttl, int serial,
                      bench_token *out);
/* Verifications/s of t with the fastest plain-OpenSSL path we know: a
 * prepared context duplicated per call, SHA-256, EVP_PKEY_verify. */
double bench_raw_verify(EVP_PKEY *k, const bench_token *t, double secs);

#endif
