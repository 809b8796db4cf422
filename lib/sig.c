/*
 * sig.c - JWS signature verification (RFC 7518 s.3, RFC 8037 s.3.1) with
 * a key whose algorithm is pinned.
 */
#include <openssl/ecdsa.h>
#include <openssl/err.h>
#include <openssl/rsa.h>
#include <string.h>

#include "writ_int.h"

/* Group orders, big-endian: r and s must lie in [1, n-1] (SEC 1 s.4.1.4).
 * OpenSSL checks this too; doing it here keeps the rule visible and
 * independent of the provider. */
static const unsigned char p256_n[32] = {
	0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x00, 0x00, 0x00, 0xFF, 0xFF, 0xFF,
	0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xBC, 0xE6, 0xFA, 0xAD, 0xA7, 0x17,
	0x9E, 0x84, 0xF3, 0xB9, 0xCA, 0xC2, 0xFC, 0x63, 0x25, 0x51};
static const unsigned char p384_n[48] = {
	0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
	0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
	0xC7, 0x63, 0x4D, 0x81, 0xF4, 0x37, 0x2D, 0xDF, 0x58, 0x1A, 0x0D, 0xB2,
	0x48, 0xB0, 0xA7, 0x7A, 0xEC, 0xEC, 0x19, 0x6A, 0xCC, 0xC5, 0x29, 0x73};

static int scalar_in_range(const unsigned char *v, const unsigned char *n, size_t len)
{
	size_t i;
	unsigned char any = 0;

	for (i = 0; i < len; i++)
		any |= v[i];
	return any != 0 && memcmp(v, n, len) < 0; /* equal-length big-endian */
}

/* r||s -> DER ECDSA-Sig-Value, which OpenSSL's verify takes. */
static writ_rc ecdsa_to_der(const unsigned char *sig, size_t half, unsigned char **der,
			    int *derlen)
{
	ECDSA_SIG *es = ECDSA_SIG_new();
	BIGNUM *r = BN_bin2bn(sig, (int)half, NULL);
	BIGNUM *s = BN_bin2bn(sig + half, (int)half, NULL);

	*der = NULL;
	if (es == NULL || r == NULL || s == NULL || !ECDSA_SIG_set0(es, r, s)) {
		BN_free(r);
		BN_free(s);
		ECDSA_SIG_free(es);
		return WRIT_ERR_NOMEM;
	}
	*derlen = i2d_ECDSA_SIG(es, der);
	ECDSA_SIG_free(es);
	return *derlen > 0 ? WRIT_OK : WRIT_ERR_NOMEM;
}

writ_rc writ_sig_verify(const writ_jwk *jwk, const unsigned char *msg, size_t msglen,
			const unsigned char *sig, size_t siglen, writ_err *err)
{
	EVP_MD_CTX *ctx = NULL;
	EVP_PKEY_CTX *pctx = NULL;
	const EVP_MD *md = NULL;
	unsigned char *der = NULL;
	const unsigned char *vsig = sig;
	size_t vlen = siglen;
	writ_rc rc = WRIT_ERR_SIGNATURE;
	int derlen = 0, ok;

	/* Exact length first: a JWS signature has one valid size per key. */
	if (siglen != jwk->sig_len)
		return writ_err_set(err, WRIT_ERR_SIGNATURE, "signature is %zu bytes, %s needs %zu",
				    siglen, writ_alg_name(jwk->alg), jwk->sig_len);
	switch (jwk->alg) {
	case WRIT_ALG_ES256:
	case WRIT_ALG_ES384: {
		size_t half = siglen / 2;
		const unsigned char *n = jwk->alg == WRIT_ALG_ES256 ? p256_n : p384_n;
		if (!scalar_in_range(sig, n, half) || !scalar_in_range(sig + half, n, half))
			return writ_err_set(err, WRIT_ERR_SIGNATURE,
					    "ECDSA r or s is zero or not below the group order");
		if (ecdsa_to_der(sig, half, &der, &derlen) != WRIT_OK)
			return writ_err_set(err, WRIT_ERR_NOMEM, "out of memory");
		vsig = der;
		vlen = (size_t)derlen;
		md = jwk->alg == WRIT_ALG_ES256 ? EVP_sha256() : EVP_sha384();
		break;
	}
	case WRIT_ALG_RS256:
	case WRIT_ALG_PS256:
		md = EVP_sha256();
		break;
	case WRIT_ALG_EDDSA:
		md = NULL; /* PureEdDSA hashes internally */
		break;
	default:
		return writ_err_set(err, WRIT_ERR_ALG, "unsupported algorithm");
	}
	ctx = EVP_MD_CTX_new();
	if (ctx == NULL || EVP_DigestVerifyInit(ctx, &pctx, md, NULL, jwk->pkey) != 1) {
		rc = writ_err_ossl(err, WRIT_ERR_CRYPTO, "cannot start signature verification");
		goto out;
	}
	if (jwk->alg == WRIT_ALG_PS256 &&
	    (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) != 1 ||
	     EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, EVP_sha256()) != 1 ||
	     EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, 32) != 1)) {
		/* RFC 7518 s.3.5: MGF1 with SHA-256 and a 32-byte salt. */
		rc = writ_err_ossl(err, WRIT_ERR_CRYPTO, "cannot set PSS parameters");
		goto out;
	}
	if (jwk->alg == WRIT_ALG_RS256 &&
	    EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) != 1) {
		rc = writ_err_ossl(err, WRIT_ERR_CRYPTO, "cannot set PKCS#1 padding");
		goto out;
	}
	ok = EVP_DigestVerify(ctx, vsig, vlen, msg, msglen);
	ERR_clear_error();
	if (ok == 1)
		rc = WRIT_OK;
	else
		writ_err_set(err, WRIT_ERR_SIGNATURE, "signature does not verify");
out:
	EVP_MD_CTX_free(ctx);
	OPENSSL_free(der);
	return rc;
}
