/*
 * sign.c - signing bytes with a key in the token, in the JWS form.
 */
#include <openssl/crypto.h>
#include <string.h>

#include "p11_int.h"

typedef struct sign_arg {
	const unsigned char *id;
	size_t id_len;
	writ_alg alg;
	const unsigned char *data; /* message, or its digest for ECDSA */
	size_t data_len;
	unsigned char *sig;
	size_t siglen;
} sign_arg;

/* Exact JWS signature length, or 0 for RSA (that of the modulus). */
static size_t sig_len_of(writ_alg alg)
{
	switch (alg) {
	case WRIT_ALG_ES256:
	case WRIT_ALG_EDDSA: return 64;
	case WRIT_ALG_ES384: return 96;
	default: return 0;
	}
}

writ_rc p11_sign_handle(p11_ctx *ctx, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE h, writ_alg alg,
                        const unsigned char *data, size_t data_len, unsigned char *sig,
                        size_t *siglen, p11_op *op, writ_err *err)
{
	/* RFC 7518 s.3.5: MGF1 with the same hash, salt as long as the hash. */
	CK_RSA_PKCS_PSS_PARAMS pss = {CKM_SHA256, CKG_MGF1_SHA256, 32};
	CK_MECHANISM m = {CKM_ECDSA, NULL, 0};
	CK_ULONG len = P11_SIG_MAX;
	size_t want = sig_len_of(alg);
	CK_RV rv;

	if (alg == WRIT_ALG_RS256) {
		m.mechanism = CKM_SHA256_RSA_PKCS;
	} else if (alg == WRIT_ALG_PS256) {
		m = (CK_MECHANISM){CKM_SHA256_RSA_PKCS_PSS, &pss, sizeof(pss)};
	} else if (alg == WRIT_ALG_EDDSA) {
		m.mechanism = CKM_EDDSA; /* no parameters: pure Ed25519 */
	}
	rv = ctx->f->C_SignInit(s, &m, h);
	if (rv != CKR_OK)
		return p11_fail(op, "C_SignInit", rv);
	/* One call into a buffer big enough for RSA-4096; a token that wants
	 * more is misbehaving (and the session is closed after a failure). */
	rv = ctx->f->C_Sign(s, (CK_BYTE *)data, data_len, sig, &len);
	if (rv != CKR_OK)
		return p11_fail(op, "C_Sign", rv);
	if (len > P11_SIG_MAX || (want != 0 && len != want) || (want == 0 && len < 256))
		return writ_err_set(err, WRIT_ERR_HSM, "token returned a %lu-byte %s signature",
		                    (unsigned long)len, writ_alg_name(alg));
	*siglen = len;
	return WRIT_OK;
}

static writ_rc sign_op(p11_ctx *ctx, CK_SESSION_HANDLE s, void *arg, p11_op *op, writ_err *err)
{
	sign_arg *a = arg;
	CK_OBJECT_HANDLE h;
	writ_alg kalg;
	writ_rc rc;

	rc = p11_find_private(ctx, s, a->id, a->id_len, &h, &kalg, op, err);
	if (rc != WRIT_OK)
		return rc;
	/* One algorithm per key: an RS256 key does not make PS256 signatures. */
	if (kalg == WRIT_ALG_NONE)
		return writ_err_set(err, WRIT_ERR_ALG, "the key has no writ algorithm label");
	if (kalg != a->alg)
		return writ_err_set(err, WRIT_ERR_ALG, "the key is a %s key, not %s",
		                    writ_alg_name(kalg), writ_alg_name(a->alg));
	return p11_sign_handle(ctx, s, h, a->alg, a->data, a->data_len, a->sig, &a->siglen, op,
	                       err);
}

writ_rc p11_sign(p11_ctx *ctx, const unsigned char *id, size_t id_len, writ_alg alg,
                 const unsigned char *msg, size_t msglen, unsigned char *sig, size_t *siglen,
                 writ_err *err)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	sign_arg a = {id, id_len, alg, msg, msglen, sig, 0};
	writ_rc rc;

	if (siglen != NULL)
		*siglen = 0;
	if (ctx == NULL || id == NULL || id_len == 0 || id_len > P11_ID_MAX || sig == NULL ||
	    siglen == NULL || (msg == NULL && msglen > 0) || writ_alg_name(alg) == NULL)
		return writ_err_set(err, WRIT_ERR_ARG, "p11_sign: bad arguments");
	/* SoftHSM has no CKM_ECDSA_SHA256/384 (FACTS.md): hash here. */
	if (alg == WRIT_ALG_ES256 || alg == WRIT_ALG_ES384) {
		mdlen = alg == WRIT_ALG_ES256 ? 32 : 48;
		if (mdlen == 32)
			writ_sha256(msg, msglen, md);
		else
			writ_sha384(msg, msglen, md);
		a.data = md;
		a.data_len = mdlen;
	}
	rc = p11_run(ctx, sign_op, &a, err);
	if (rc != WRIT_OK) {
		/* No partial signature is left behind. */
		OPENSSL_cleanse(sig, P11_SIG_MAX);
		return rc;
	}
	*siglen = a.siglen;
	return WRIT_OK;
}
