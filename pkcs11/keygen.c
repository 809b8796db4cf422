/*
 * keygen.c - key pairs made inside the token, and their destruction.
 *
 * The private half is created sensitive and never extractable, so the
 * token itself marks it CKA_ALWAYS_SENSITIVE, CKA_NEVER_EXTRACTABLE and
 * CKA_LOCAL: the key has never existed outside it (SPEC s.2).
 */
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "p11_int.h"

#define KEY_ID_LEN 16
#define RSA_BITS   3072

/* DER OIDs for CKA_EC_PARAMS (PKCS#11 v3.0 s.6.3.3, RFC 8410). */
static const unsigned char oid_p256[] = {0x06, 0x08, 0x2a, 0x86, 0x48,
                                         0xce, 0x3d, 0x03, 0x01, 0x07};
static const unsigned char oid_p384[] = {0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22};
static const unsigned char oid_ed25519[] = {0x06, 0x03, 0x2b, 0x65, 0x70};
/* PrintableString "edwards25519": what pkcs11-tool writes (FACTS.md). */
const unsigned char p11_ed25519_name[14] = {0x13, 0x0c, 'e', 'd', 'w', 'a', 'r',
                                            'd',  's',  '2', '5', '5', '1', '9'};

const unsigned char *p11_ec_params(writ_alg alg, size_t *n)
{
	switch (alg) {
	case WRIT_ALG_ES256: *n = sizeof(oid_p256); return oid_p256;
	case WRIT_ALG_ES384: *n = sizeof(oid_p384); return oid_p384;
	case WRIT_ALG_EDDSA: *n = sizeof(oid_ed25519); return oid_ed25519;
	default: *n = 0; return NULL;
	}
}

typedef struct gen_arg {
	writ_alg alg;
	unsigned char id[KEY_ID_LEN];
	char label[P11_LABEL_MAX + 1];
	int tries;
	int unkept; /* the token did not keep the pair as made: try a new one */
	EVP_PKEY *pub;
} gen_arg;

/* Destroy every writ object carrying CKA_ID id; *n counts them. */
static writ_rc destroy_id(p11_ctx *ctx, CK_SESSION_HANDLE s, const unsigned char *id, size_t id_len,
                          size_t *n, p11_op *op)
{
	CK_ATTRIBUTE tmpl[] = {{CKA_ID, (void *)id, id_len}};
	CK_OBJECT_HANDLE h[8];
	unsigned char label[P11_LABEL_MAX];
	CK_ULONG found, i;
	CK_RV rv;

	*n = 0;
	if (p11_find(ctx->f, s, tmpl, 1, h, 8, &found, op) != CKR_OK)
		return WRIT_ERR_HSM;
	for (i = 0; i < found; i++) {
		CK_ATTRIBUTE a = {CKA_LABEL, label, sizeof(label)};

		/* Only our own objects: an id is no proof of ownership. */
		rv = ctx->f->C_GetAttributeValue(s, h[i], &a, 1);
		if (rv != CKR_OK || p11_label_alg(label, a.ulValueLen) == WRIT_ALG_NONE)
			continue;
		rv = ctx->f->C_DestroyObject(s, h[i]);
		if (rv != CKR_OK)
			return p11_fail(op, "C_DestroyObject", rv);
		(*n)++;
	}
	return WRIT_OK;
}

/* The public half's type-specific template entries. */
static size_t pub_params(writ_alg alg, const unsigned char *params, size_t plen, CK_ULONG *bits,
                         CK_ATTRIBUTE *t)
{
	static const unsigned char e65537[] = {0x01, 0x00, 0x01};

	if (alg == WRIT_ALG_RS256 || alg == WRIT_ALG_PS256) {
		t[0] = (CK_ATTRIBUTE){CKA_MODULUS_BITS, bits, sizeof(*bits)};
		t[1] = (CK_ATTRIBUTE){CKA_PUBLIC_EXPONENT, (void *)e65537, sizeof(e65537)};
		return 2;
	}
	t[0] = (CK_ATTRIBUTE){CKA_EC_PARAMS, (void *)params, plen};
	return 1;
}

static CK_RV generate(p11_ctx *ctx, CK_SESSION_HANDLE s, gen_arg *a, const unsigned char *params,
                      size_t plen, CK_OBJECT_HANDLE *pub, CK_OBJECT_HANDLE *priv)
{
	CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
	CK_ULONG bits = RSA_BITS;
	CK_MECHANISM m = {CKM_EC_KEY_PAIR_GEN, NULL, 0};
	size_t llen = strlen(a->label);
	CK_ATTRIBUTE pt[9] = {
	    {CKA_TOKEN, &yes, sizeof(yes)},  {CKA_PRIVATE, &no, sizeof(no)},
	    {CKA_VERIFY, &yes, sizeof(yes)}, {CKA_ENCRYPT, &no, sizeof(no)},
	    {CKA_WRAP, &no, sizeof(no)},     {CKA_ID, a->id, sizeof(a->id)},
	    {CKA_LABEL, a->label, llen},
	};
	CK_ATTRIBUTE kt[] = {
	    {CKA_TOKEN, &yes, sizeof(yes)},     {CKA_PRIVATE, &yes, sizeof(yes)},
	    {CKA_SENSITIVE, &yes, sizeof(yes)}, {CKA_EXTRACTABLE, &no, sizeof(no)},
	    {CKA_SIGN, &yes, sizeof(yes)},      {CKA_DECRYPT, &no, sizeof(no)},
	    {CKA_UNWRAP, &no, sizeof(no)},      {CKA_DERIVE, &no, sizeof(no)},
	    {CKA_ID, a->id, sizeof(a->id)},     {CKA_LABEL, a->label, llen},
	};
	size_t np = 7 + pub_params(a->alg, params, plen, &bits, pt + 7);

	if (a->alg == WRIT_ALG_RS256 || a->alg == WRIT_ALG_PS256)
		m.mechanism = CKM_RSA_PKCS_KEY_PAIR_GEN;
	else if (a->alg == WRIT_ALG_EDDSA)
		m.mechanism = CKM_EC_EDWARDS_KEY_PAIR_GEN;
	return ctx->f->C_GenerateKeyPair(s, &m, pt, np, kt, sizeof(kt) / sizeof(kt[0]), pub, priv);
}

/* Ed25519's CKA_EC_PARAMS: the RFC 8410 OID, or the PrintableString
 * "edwards25519" on modules that only know that form. */
static int ed_params_refused(CK_RV rv)
{
	return rv == CKR_ATTRIBUTE_VALUE_INVALID || rv == CKR_CURVE_NOT_SUPPORTED ||
	       rv == CKR_DOMAIN_PARAMS_INVALID || rv == CKR_TEMPLATE_INCONSISTENT;
}

/*
 * Does the token hold the pair as made? The private key found by its
 * CKA_ID (and, right after generation, the object just made: priv), with
 * the algorithm its label pins (the path every later signature takes),
 * must sign a probe that verifies under the public key read back.
 * SoftHSM2's file store, written while another process reads the token,
 * can lose the attributes of a new object (README, "Key generation under a
 * concurrent reader"); such a key must never be recorded, let alone
 * activated.
 */
static writ_rc gen_proof(p11_ctx *ctx, CK_SESSION_HANDLE s, gen_arg *a, CK_OBJECT_HANDLE priv,
                         p11_op *op, writ_err *err)
{
	static const unsigned char probe[] = "writ: the token keeps this key";
	unsigned char md[48], sig[P11_SIG_MAX];
	const unsigned char *data = probe;
	size_t len = sizeof(probe) - 1, siglen = 0;
	CK_OBJECT_HANDLE h;
	writ_jwk *jwk = NULL;
	writ_alg kalg;
	writ_rc rc;

	rc = p11_find_private(ctx, s, a->id, sizeof(a->id), &h, &kalg, op, err);
	if (rc != WRIT_OK)
		return rc;
	if ((priv != CK_INVALID_HANDLE && h != priv) || kalg != a->alg)
		return writ_err_set(err, WRIT_ERR_HSM,
		                    "the new private key's id or label did not read back");
	if (a->alg == WRIT_ALG_ES256 || a->alg == WRIT_ALG_ES384) {
		len = a->alg == WRIT_ALG_ES256 ? 32 : 48;
		if (len == 32)
			writ_sha256(probe, sizeof(probe) - 1, md);
		else
			writ_sha384(probe, sizeof(probe) - 1, md);
		data = md;
	}
	rc = p11_sign_handle(ctx, s, h, a->alg, data, len, sig, &siglen, op, err);
	if (rc == WRIT_OK)
		rc = writ_jwk_from_pkey(a->pub, a->alg, &jwk, err);
	if (rc == WRIT_OK)
		rc = writ_sig_verify(jwk, probe, sizeof(probe) - 1, sig, siglen, err);
	writ_jwk_free(jwk);
	return rc;
}

static writ_rc gen_op(p11_ctx *ctx, CK_SESSION_HANDLE s, void *arg, p11_op *op, writ_err *err)
{
	gen_arg *a = arg;
	CK_OBJECT_HANDLE pub, priv;
	const unsigned char *params;
	size_t plen, n;
	writ_rc rc;
	CK_RV rv;

	/* A retry after recovery must not leave a twin of a pair that the
	 * first attempt made before the fault. */
	if (a->tries++ > 0 && destroy_id(ctx, s, a->id, sizeof(a->id), &n, op) != WRIT_OK)
		return WRIT_ERR_HSM;
	params = p11_ec_params(a->alg, &plen);
	rv = generate(ctx, s, a, params, plen, &pub, &priv);
	if (a->alg == WRIT_ALG_EDDSA && ed_params_refused(rv))
		rv = generate(ctx, s, a, p11_ed25519_name, sizeof(p11_ed25519_name), &pub, &priv);
	if (rv != CKR_OK)
		return p11_fail(op, "C_GenerateKeyPair", rv);
	rc = p11_pub_export(ctx->f, s, pub, a->alg, &a->pub, op, err);
	if (rc == WRIT_OK)
		rc = gen_proof(ctx, s, a, priv, op, err);
	if (rc == WRIT_OK)
		return WRIT_OK;
	/* Nothing half-made is left behind, by handle: a private key that
	 * lost its CKA_ID can be found by nothing else. Then a new pair is
	 * made (p11_key_generate), not this one re-run: the error is this
	 * key's, not a fault for p11_run to recover from. */
	if (op->rv != CKR_OK)
		p11_err_rv(err, WRIT_ERR_HSM, op->call, op->rv);
	*op = (p11_op){NULL, CKR_OK, 0};
	p11_cache_drop(ctx, a->id, sizeof(a->id));
	(void)ctx->f->C_DestroyObject(s, priv);
	(void)ctx->f->C_DestroyObject(s, pub);
	EVP_PKEY_free(a->pub);
	a->pub = NULL;
	a->unkept = 1;
	return WRIT_ERR_HSM;
}

/* The proof again, in a view of the token read afresh from its store. */
static writ_rc reproof_op(p11_ctx *ctx, CK_SESSION_HANDLE s, void *arg, p11_op *op, writ_err *err)
{
	return gen_proof(ctx, s, arg, CK_INVALID_HANDLE, op, err);
}

static int make_label(writ_alg alg, char *buf, size_t n)
{
	struct tm tm;
	char ts[32];
	time_t now = time(NULL);

	if (gmtime_r(&now, &tm) == NULL || strftime(ts, sizeof(ts), "%Y%m%dT%H%M%SZ", &tm) == 0)
		return -1;
	return snprintf(buf, n, "writ:%s:%s", writ_alg_name(alg), ts) < (int)n ? 0 : -1;
}

static writ_rc destroy_op(p11_ctx *ctx, CK_SESSION_HANDLE s, void *arg, p11_op *op, writ_err *err);

/*
 * The proof, once more, after a re-initialisation of the module. A module
 * may keep its own copy of the objects it wrote: SoftHSM2 2.6.1's file
 * store does, and under a concurrent reader (another process logging in
 * or searching the token) it was measured to leave a new private key on
 * disk without its CKA_ID and label while this process's copy was whole
 * (about 1 in 200 `writ key rotate` beside a running issuer). Only a
 * fresh start shows what the issuer will find. A pair that fails here is
 * destroyed by its CKA_ID; a private half that lost it stays behind,
 * unusable (no id, no label, CKA_PRIVATE): nothing can find it as ours.
 */
static writ_rc proved_afresh(p11_ctx *ctx, gen_arg *a, writ_err *err)
{
	p11_id_arg d = {a->id, sizeof(a->id)};
	writ_rc rc;

	rc = p11_recover(ctx, p11_generation(ctx), 0, err);
	if (rc != WRIT_OK)
		return rc;
	rc = p11_run(ctx, reproof_op, a, err);
	if (rc == WRIT_OK)
		return WRIT_OK;
	(void)p11_run(ctx, destroy_op, &d, NULL);
	EVP_PKEY_free(a->pub);
	a->pub = NULL;
	a->unkept = 1;
	return rc;
}

writ_rc p11_key_generate(p11_ctx *ctx, writ_alg alg, p11_key *out, writ_err *err)
{
	gen_arg a;
	writ_rc rc;
	int attempt;

	memset(out, 0, sizeof(*out));
	if (ctx == NULL || writ_alg_name(alg) == NULL)
		return writ_err_set(err, WRIT_ERR_ARG, "unknown algorithm");
	for (attempt = 1;; attempt++) {
		memset(&a, 0, sizeof(a));
		a.alg = alg;
		if (RAND_bytes(a.id, sizeof(a.id)) != 1)
			return writ_err_ossl(err, WRIT_ERR_CRYPTO, "RAND_bytes");
		if (make_label(alg, a.label, sizeof(a.label)) != 0)
			return writ_err_set(err, WRIT_ERR_ARG, "cannot make the key label");
		rc = p11_run(ctx, gen_op, &a, err);
		if (rc == WRIT_OK)
			rc = proved_afresh(ctx, &a, err);
		if (rc == WRIT_OK || !a.unkept)
			break;
		if (attempt == P11_GEN_ATTEMPTS) {
			char last[sizeof(err->msg)];
			if (err == NULL)
				return WRIT_ERR_HSM;
			snprintf(last, sizeof(last), "%s", err->msg);
			return writ_err_set(err, WRIT_ERR_HSM,
			                    "the token kept none of the %d keys it made; last: %s",
			                    attempt, last);
		}
	}
	if (rc != WRIT_OK) {
		/* Not returned, so never recorded: reconcile removes the key. */
		EVP_PKEY_free(a.pub);
		return rc;
	}
	memcpy(out->id, a.id, sizeof(a.id));
	out->id_len = sizeof(a.id);
	memcpy(out->label, a.label, sizeof(out->label));
	out->alg = alg;
	out->pub = a.pub;
	return WRIT_OK;
}

static writ_rc destroy_op(p11_ctx *ctx, CK_SESSION_HANDLE s, void *arg, p11_op *op, writ_err *err)
{
	p11_id_arg *a = arg;
	size_t n;

	p11_cache_drop(ctx, a->id, a->id_len);
	if (destroy_id(ctx, s, a->id, a->id_len, &n, op) != WRIT_OK)
		return WRIT_ERR_HSM;
	if (n == 0)
		return writ_err_set(err, WRIT_ERR_NOT_FOUND,
		                    "no writ key with that id in the token");
	return WRIT_OK;
}

writ_rc p11_key_destroy(p11_ctx *ctx, const unsigned char *id, size_t id_len, writ_err *err)
{
	p11_id_arg a = {id, id_len};

	if (ctx == NULL || id == NULL || id_len == 0 || id_len > P11_ID_MAX)
		return writ_err_set(err, WRIT_ERR_ARG, "bad key id");
	return p11_run(ctx, destroy_op, &a, err);
}
