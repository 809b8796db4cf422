/*
 * sig.c - JWS signature verification (RFC 7518 s.3, RFC 8037 s.3.1) with
 * a key whose algorithm is pinned.
 */
#include <openssl/ecdsa.h>
#include <openssl/err.h>
#include <openssl/rsa.h>
#include <openssl/sha.h>
#include <string.h>

#include "writ_int.h"

/* Group orders, big-endian: r and s must lie in [1, n-1] (SEC 1 s.4.1.4).
 * OpenSSL checks this too; doing it here keeps the rule visible and
 * independent of the provider. */
static const unsigned char p256_n[32] = {
    0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x00, 0x00, 0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
    0xBC, 0xE6, 0xFA, 0xAD, 0xA7, 0x17, 0x9E, 0x84, 0xF3, 0xB9, 0xCA, 0xC2, 0xFC, 0x63, 0x25, 0x51};
static const unsigned char p384_n[48] = {
    0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
    0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xC7, 0x63, 0x4D, 0x81, 0xF4, 0x37, 0x2D, 0xDF,
    0x58, 0x1A, 0x0D, 0xB2, 0x48, 0xB0, 0xA7, 0x7A, 0xEC, 0xEC, 0x19, 0x6A, 0xCC, 0xC5, 0x29, 0x73};

static int scalar_in_range(const unsigned char *v, const unsigned char *n, size_t len)
{
	size_t i;
	unsigned char any = 0;

	for (i = 0; i < len; i++)
		any |= v[i];
	return any != 0 && memcmp(v, n, len) < 0; /* equal-length big-endian */
}

/* One DER INTEGER for an unsigned big-endian scalar: leading zero bytes
 * dropped, one 0x00 added when the top bit is set. Returns bytes written. */
static size_t der_uint(const unsigned char *v, size_t len, unsigned char *out)
{
	size_t skip = 0, n, o = 0;

	while (skip + 1 < len && v[skip] == 0)
		skip++;
	n = len - skip;
	out[o++] = 0x02;
	out[o++] = (unsigned char)(n + (v[skip] >> 7));
	if (v[skip] & 0x80)
		out[o++] = 0x00;
	memcpy(out + o, v + skip, n);
	return o + n;
}

/*
 * r||s -> DER ECDSA-Sig-Value (SEC 1 C.5), which OpenSSL's verify takes.
 * Written by hand into a stack buffer: the encoding is fixed-shape for
 * P-256/P-384 (content <= 2 * (2 + 49) = 102 bytes, so the SEQUENCE length
 * fits one byte or 0x81 + one byte), and BIGNUM round trips cost more
 * than the rest of the JWS parse. out holds at least 108 bytes.
 */
static size_t ecdsa_to_der(const unsigned char *sig, size_t half, unsigned char *out)
{
	unsigned char body[2 * (3 + 48)];
	size_t n = der_uint(sig, half, body), o = 0;

	n += der_uint(sig + half, half, body + n);
	out[o++] = 0x30;
	if (n >= 0x80)
		out[o++] = 0x81;
	out[o++] = (unsigned char)n;
	memcpy(out + o, body, n);
	return o + n;
}

writ_rc writ_sig_template(writ_jwk *jwk, writ_err *err)
{
	const EVP_MD *md = jwk->alg == WRIT_ALG_ES384 ? EVP_sha384() : EVP_sha256();
	EVP_PKEY_CTX *p;

	jwk->vtmpl = NULL;
	if (jwk->alg == WRIT_ALG_EDDSA)
		return WRIT_OK;
	p = EVP_PKEY_CTX_new_from_pkey(NULL, jwk->pkey, NULL);
	if (p == NULL || EVP_PKEY_verify_init(p) != 1 || EVP_PKEY_CTX_set_signature_md(p, md) != 1)
		goto fail;
	/* RFC 7518 s.3.3 and s.3.5: PKCS#1 v1.5, or PSS with MGF1-SHA-256 and
	 * a 32-byte salt (exactly: a verifier that accepts any salt length
	 * accepts signatures writ never makes). */
	if (jwk->alg == WRIT_ALG_RS256 && EVP_PKEY_CTX_set_rsa_padding(p, RSA_PKCS1_PADDING) != 1)
		goto fail;
	if (jwk->alg == WRIT_ALG_PS256 &&
	    (EVP_PKEY_CTX_set_rsa_padding(p, RSA_PKCS1_PSS_PADDING) != 1 ||
	     EVP_PKEY_CTX_set_rsa_mgf1_md(p, EVP_sha256()) != 1 ||
	     EVP_PKEY_CTX_set_rsa_pss_saltlen(p, 32) != 1))
		goto fail;
	jwk->vtmpl = p;
	return WRIT_OK;
fail:
	EVP_PKEY_CTX_free(p);
	return writ_err_ossl(err, WRIT_ERR_CRYPTO, "cannot prepare %s verification",
	                     writ_alg_name(jwk->alg));
}

/* PureEdDSA (RFC 8032) has only a one-shot interface over the message. */
static int verify_eddsa(const writ_jwk *jwk, const unsigned char *msg, size_t msglen,
                        const unsigned char *sig, size_t siglen)
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	int ok = ctx != NULL && EVP_DigestVerifyInit(ctx, NULL, NULL, NULL, jwk->pkey) == 1 &&
	         EVP_DigestVerify(ctx, sig, siglen, msg, msglen) == 1;

	EVP_MD_CTX_free(ctx);
	return ok;
}

writ_rc writ_sig_verify(const writ_jwk *jwk, const unsigned char *msg, size_t msglen,
                        const unsigned char *sig, size_t siglen, writ_err *err)
{
	unsigned char md[SHA384_DIGEST_LENGTH], der[112];
	const unsigned char *vsig = sig;
	size_t vlen = siglen, mdlen = SHA256_DIGEST_LENGTH;
	EVP_PKEY_CTX *p = NULL;
	int ok;

	/* Exact length first: a JWS signature has one valid size per key. */
	if (siglen != jwk->sig_len)
		return writ_err_set(err, WRIT_ERR_SIGNATURE, "signature is %zu bytes, %s needs %zu",
		                    siglen, writ_alg_name(jwk->alg), jwk->sig_len);
	if (jwk->alg == WRIT_ALG_ES256 || jwk->alg == WRIT_ALG_ES384) {
		size_t half = siglen / 2;
		const unsigned char *n = jwk->alg == WRIT_ALG_ES256 ? p256_n : p384_n;
		if (!scalar_in_range(sig, n, half) || !scalar_in_range(sig + half, n, half))
			return writ_err_set(err, WRIT_ERR_SIGNATURE,
			                    "ECDSA r or s is zero or not below the group order");
		vlen = ecdsa_to_der(sig, half, der);
		vsig = der;
	}
	if (jwk->alg == WRIT_ALG_EDDSA) {
		ok = verify_eddsa(jwk, msg, msglen, sig, siglen);
	} else if (jwk->vtmpl == NULL || (p = EVP_PKEY_CTX_dup(jwk->vtmpl)) == NULL) {
		return writ_err_ossl(err, WRIT_ERR_CRYPTO, "cannot start signature verification");
	} else {
		if (jwk->alg == WRIT_ALG_ES384) {
			writ_sha384(msg, msglen, md);
			mdlen = SHA384_DIGEST_LENGTH;
		} else {
			writ_sha256(msg, msglen, md);
		}
		ok = EVP_PKEY_verify(p, vsig, vlen, md, mdlen) == 1;
	}
	ERR_clear_error();
	EVP_PKEY_CTX_free(p);
	if (!ok)
		return writ_err_set(err, WRIT_ERR_SIGNATURE, "signature does not verify");
	return WRIT_OK;
}
