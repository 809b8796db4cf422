/*
 * keys.c - finding writ's keys in the token and exporting public halves
 * as OpenSSL keys.
 *
 * Everything read here comes from the token and is parsed strictly: exact
 * lengths, the DER form we expect and nothing after it.
 */
#include <openssl/core_names.h>
#include <openssl/param_build.h>
#include <stdlib.h>
#include <string.h>

#include "p11_int.h"

#define LABEL_PREFIX "writ:"

CK_RV p11_find(CK_FUNCTION_LIST *f, CK_SESSION_HANDLE s, CK_ATTRIBUTE *tmpl, CK_ULONG n,
               CK_OBJECT_HANDLE *out, CK_ULONG max, CK_ULONG *found, p11_op *op)
{
	CK_ULONG got;
	CK_RV rv, rv2;

	*found = 0;
	rv = f->C_FindObjectsInit(s, tmpl, n);
	if (rv != CKR_OK) {
		p11_fail(op, "C_FindObjectsInit", rv);
		return rv;
	}
	/* A module may hand the matches out a few at a time: only a call
	 * that returns none says there are no more (PKCS#11 v2.40 s.5.10).
	 * One call would give a partial list, and a key left out of it looks
	 * destroyed to whoever reads the list. */
	do {
		got = 0;
		rv = f->C_FindObjects(s, out + *found, max - *found, &got);
		if (rv == CKR_OK && got > max - *found)
			rv = CKR_FUNCTION_FAILED; /* wrote past what it was given */
		if (rv == CKR_OK)
			*found += got;
	} while (rv == CKR_OK && got > 0 && *found < max);
	/* Always end the search, or the session stays busy with it. */
	rv2 = f->C_FindObjectsFinal(s);
	if (rv != CKR_OK)
		p11_fail(op, "C_FindObjects", rv);
	else if (rv2 != CKR_OK)
		p11_fail(op, "C_FindObjectsFinal", rv = rv2);
	return rv;
}

writ_alg p11_label_alg(const unsigned char *label, size_t len)
{
	char name[16];
	const unsigned char *colon;
	size_t plen = strlen(LABEL_PREFIX), nlen;

	if (len <= plen || memcmp(label, LABEL_PREFIX, plen) != 0)
		return WRIT_ALG_NONE;
	colon = memchr(label + plen, ':', len - plen);
	if (colon == NULL)
		return WRIT_ALG_NONE;
	nlen = (size_t)(colon - (label + plen));
	if (nlen == 0 || nlen >= sizeof(name))
		return WRIT_ALG_NONE;
	memcpy(name, label + plen, nlen);
	name[nlen] = '\0';
	return writ_alg_from_name(name);
}

static int cache_get(p11_ctx *ctx, const unsigned char *id, size_t id_len, CK_OBJECT_HANDLE *h,
                     writ_alg *alg)
{
	size_t i;
	int hit = 0;

	pthread_mutex_lock(&ctx->pool_mu);
	for (i = 0; i < P11_CACHE_MAX && !hit; i++) {
		p11_cached *c = &ctx->cache[i];

		if (c->gen == ctx->gen && c->id_len == id_len && memcmp(c->id, id, id_len) == 0) {
			*h = c->h;
			*alg = c->alg;
			hit = 1;
		}
	}
	pthread_mutex_unlock(&ctx->pool_mu);
	return hit;
}

static void cache_put(p11_ctx *ctx, const unsigned char *id, size_t id_len, CK_OBJECT_HANDLE h,
                      writ_alg alg)
{
	p11_cached *c;

	pthread_mutex_lock(&ctx->pool_mu);
	/* Round robin: writ signs with a handful of keys, so any eviction
	 * order does; a miss costs one C_FindObjects. */
	c = &ctx->cache[ctx->cache_next];
	ctx->cache_next = (ctx->cache_next + 1) % P11_CACHE_MAX;
	memcpy(c->id, id, id_len);
	c->id_len = id_len;
	c->h = h;
	c->alg = alg;
	c->gen = ctx->gen;
	pthread_mutex_unlock(&ctx->pool_mu);
}

void p11_cache_drop(p11_ctx *ctx, const unsigned char *id, size_t id_len)
{
	size_t i;

	pthread_mutex_lock(&ctx->pool_mu);
	for (i = 0; i < P11_CACHE_MAX; i++) {
		p11_cached *c = &ctx->cache[i];

		if (c->id_len == id_len && memcmp(c->id, id, id_len) == 0)
			memset(c, 0, sizeof(*c));
	}
	pthread_mutex_unlock(&ctx->pool_mu);
}

static CK_KEY_TYPE alg_key_type(writ_alg alg);

writ_rc p11_find_private(p11_ctx *ctx, CK_SESSION_HANDLE s, const unsigned char *id, size_t id_len,
                         CK_OBJECT_HANDLE *h, writ_alg *alg, p11_op *op, writ_err *err)
{
	CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
	CK_ATTRIBUTE tmpl[] = {
	    {CKA_CLASS, &cls, sizeof(cls)},
	    {CKA_ID, (void *)id, id_len},
	};
	unsigned char label[P11_LABEL_MAX];
	CK_KEY_TYPE type;
	CK_ATTRIBUTE a[] = {{CKA_KEY_TYPE, &type, sizeof(type)}, {CKA_LABEL, label, sizeof(label)}};
	CK_OBJECT_HANDLE found[2];
	CK_ULONG n;
	CK_RV rv;

	if (cache_get(ctx, id, id_len, h, alg))
		return WRIT_OK;
	if (p11_find(ctx->f, s, tmpl, 2, found, 2, &n, op) != CKR_OK)
		return WRIT_ERR_HSM;
	if (n == 0) {
		/* Maybe truly gone, maybe a module that lost its view of the
		 * token's objects: p11_run decides whether to look again. */
		op->key_missing = 1;
		return writ_err_set(err, WRIT_ERR_NOT_FOUND,
		                    "no private key with that id in the token");
	}
	/* Two keys under one id: signing with either could be wrong. */
	if (n > 1)
		return writ_err_set(err, WRIT_ERR_HSM, "several private keys share that id");
	rv = ctx->f->C_GetAttributeValue(s, found[0], a, 2);
	if (rv == CKR_BUFFER_TOO_SMALL)
		a[1].ulValueLen = 0; /* an over-long label is not ours */
	else if (rv != CKR_OK)
		return p11_fail(op, "C_GetAttributeValue", rv);
	/* The algorithm is pinned to the key at creation (SPEC s.2). */
	*alg = p11_label_alg(label, a[1].ulValueLen);
	if (*alg != WRIT_ALG_NONE && alg_key_type(*alg) != type)
		*alg = WRIT_ALG_NONE;
	*h = found[0];
	cache_put(ctx, id, id_len, *h, *alg);
	return WRIT_OK;
}

/* One attribute into buf (cap bytes); *len set. */
static CK_RV attr_get(CK_FUNCTION_LIST *f, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE h,
                      CK_ATTRIBUTE_TYPE t, void *buf, size_t cap, size_t *len)
{
	CK_ATTRIBUTE a = {t, buf, cap};
	CK_RV rv = f->C_GetAttributeValue(s, h, &a, 1);

	*len = rv == CKR_OK ? a.ulValueLen : 0;
	return rv;
}

/* ---- public key export ---- */

/* CKA_EC_POINT: DER OCTET STRING (short form) around 04||X||Y. */
static int ec_point_parse(const unsigned char *p, size_t n, size_t field, const unsigned char **pt,
                          size_t *ptlen)
{
	size_t want = 1 + 2 * field;

	if (n != 2 + want || p[0] != 0x04 || p[1] != want || p[2] != 0x04)
		return -1;
	*pt = p + 2;
	*ptlen = want;
	return 0;
}

/* Ed25519 CKA_EC_POINT: OCTET STRING of 32 bytes, or (some modules) the
 * raw 32 bytes. Exactly one of the two lengths. */
static int ed_point_parse(const unsigned char *p, size_t n, const unsigned char **pt)
{
	if (n == 34 && p[0] == 0x04 && p[1] == 32) {
		*pt = p + 2;
		return 0;
	}
	if (n == 32) {
		*pt = p;
		return 0;
	}
	return -1;
}

static EVP_PKEY *pkey_from_params(const char *type, OSSL_PARAM *params)
{
	EVP_PKEY_CTX *pctx = EVP_PKEY_CTX_new_from_name(NULL, type, NULL);
	EVP_PKEY *pkey = NULL;

	if (pctx == NULL || EVP_PKEY_fromdata_init(pctx) != 1 ||
	    EVP_PKEY_fromdata(pctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) != 1)
		pkey = NULL;
	EVP_PKEY_CTX_free(pctx);
	return pkey;
}

static EVP_PKEY *ec_pkey(writ_alg alg, const unsigned char *pt, size_t ptlen)
{
	const char *group = alg == WRIT_ALG_ES256 ? "prime256v1" : "secp384r1";
	OSSL_PARAM params[3];

	params[0] = OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, (char *)group, 0);
	params[1] = OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, (void *)pt, ptlen);
	params[2] = OSSL_PARAM_construct_end();
	return pkey_from_params("EC", params);
}

static EVP_PKEY *rsa_pkey(const unsigned char *n, size_t nlen, const unsigned char *e, size_t elen)
{
	OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
	BIGNUM *bn = BN_bin2bn(n, (int)nlen, NULL), *be = BN_bin2bn(e, (int)elen, NULL);
	OSSL_PARAM *params = NULL;
	EVP_PKEY *pkey = NULL;

	if (bld == NULL || bn == NULL || be == NULL ||
	    !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn) ||
	    !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, be) ||
	    (params = OSSL_PARAM_BLD_to_param(bld)) == NULL)
		goto out;
	pkey = pkey_from_params("RSA", params);
out:
	OSSL_PARAM_free(params);
	OSSL_PARAM_BLD_free(bld);
	BN_free(bn);
	BN_free(be);
	return pkey;
}

static CK_KEY_TYPE alg_key_type(writ_alg alg)
{
	switch (alg) {
	case WRIT_ALG_ES256:
	case WRIT_ALG_ES384: return CKK_EC;
	case WRIT_ALG_EDDSA: return CKK_EC_EDWARDS;
	default: return CKK_RSA;
	}
}

/* CKA_EC_PARAMS must name alg's curve, in one of the encodings we know. */
static int ec_params_match(writ_alg alg, const unsigned char *p, size_t n)
{
	size_t want_n;
	const unsigned char *want = p11_ec_params(alg, &want_n);

	if (want != NULL && n == want_n && memcmp(p, want, n) == 0)
		return 1;
	return alg == WRIT_ALG_EDDSA && n == sizeof(p11_ed25519_name) &&
	       memcmp(p, p11_ed25519_name, n) == 0;
}

static writ_rc ec_export(CK_FUNCTION_LIST *f, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE h, writ_alg alg,
                         EVP_PKEY **out, p11_op *op, writ_err *err)
{
	unsigned char params[64], point[128];
	const unsigned char *pt;
	size_t plen, ptlen, len;
	CK_RV rv;

	if ((rv = attr_get(f, s, h, CKA_EC_PARAMS, params, sizeof(params), &plen)) != CKR_OK ||
	    (rv = attr_get(f, s, h, CKA_EC_POINT, point, sizeof(point), &len)) != CKR_OK)
		return p11_fail(op, "C_GetAttributeValue", rv);
	if (!ec_params_match(alg, params, plen))
		return writ_err_set(err, WRIT_ERR_ALG, "key's curve is not the one %s needs",
		                    writ_alg_name(alg));
	if (alg == WRIT_ALG_EDDSA) {
		if (ed_point_parse(point, len, &pt) == 0)
			*out = EVP_PKEY_new_raw_public_key_ex(NULL, "ED25519", NULL, pt, 32);
	} else {
		size_t field = alg == WRIT_ALG_ES256 ? 32 : 48;

		if (ec_point_parse(point, len, field, &pt, &ptlen) == 0)
			*out = ec_pkey(alg, pt, ptlen);
	}
	if (*out == NULL)
		return writ_err_ossl(err, WRIT_ERR_MALFORMED,
		                     "token gave a malformed CKA_EC_POINT");
	return WRIT_OK;
}

static writ_rc rsa_export(CK_FUNCTION_LIST *f, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE h,
                          EVP_PKEY **out, p11_op *op, writ_err *err)
{
	unsigned char n[1024], e[16];
	size_t nlen, elen;
	CK_RV rv;

	if ((rv = attr_get(f, s, h, CKA_MODULUS, n, sizeof(n), &nlen)) != CKR_OK ||
	    (rv = attr_get(f, s, h, CKA_PUBLIC_EXPONENT, e, sizeof(e), &elen)) != CKR_OK)
		return p11_fail(op, "C_GetAttributeValue", rv);
	if (nlen == 0 || elen == 0 || (*out = rsa_pkey(n, nlen, e, elen)) == NULL)
		return writ_err_ossl(err, WRIT_ERR_MALFORMED, "token gave a malformed RSA key");
	return WRIT_OK;
}

writ_rc p11_pub_export(CK_FUNCTION_LIST *f, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE h, writ_alg alg,
                       EVP_PKEY **out, p11_op *op, writ_err *err)
{
	CK_KEY_TYPE type;
	size_t len, sig_len;
	writ_rc rc;
	CK_RV rv;

	*out = NULL;
	rv = attr_get(f, s, h, CKA_KEY_TYPE, &type, sizeof(type), &len);
	if (rv != CKR_OK)
		return p11_fail(op, "C_GetAttributeValue", rv);
	if (len != sizeof(type) || type != alg_key_type(alg))
		return writ_err_set(err, WRIT_ERR_ALG, "key type does not fit %s",
		                    writ_alg_name(alg));
	if (type == CKK_RSA)
		rc = rsa_export(f, s, h, out, op, err);
	else
		rc = ec_export(f, s, h, alg, out, op, err);
	/* Same rules as for a JWK: RSA of 2048..8192 bits, the right curve. */
	if (rc == WRIT_OK)
		rc = writ_pkey_check_alg(*out, alg, &sig_len, err);
	if (rc != WRIT_OK) {
		EVP_PKEY_free(*out);
		*out = NULL;
	}
	return rc;
}

/* ---- listing ---- */

typedef struct list_arg {
	p11_key *keys;
	size_t n;
} list_arg;

/* A failure the token may recover from aborts the listing; anything else
 * only means this object is not a (complete) writ key: skip it. */
static writ_rc skip_or_fail(p11_op *op)
{
	if (op->rv != CKR_OK && p11_rv_recoverable(op->rv))
		return WRIT_ERR_HSM;
	op->rv = CKR_OK;
	op->call = NULL;
	return WRIT_OK;
}

static int id_seen(const list_arg *a, const p11_key *k)
{
	size_t i;

	for (i = 0; i < a->n; i++)
		if (a->keys[i].id_len == k->id_len && memcmp(a->keys[i].id, k->id, k->id_len) == 0)
			return 1;
	return 0;
}

/* Fill k from private key h when h is half of a writ key pair; k->pub
 * stays NULL when h is skipped. */
static writ_rc key_load(p11_ctx *ctx, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE h, p11_key *k,
                        p11_op *op)
{
	unsigned char label[P11_LABEL_MAX];
	CK_KEY_TYPE type;
	CK_OBJECT_CLASS cls = CKO_PUBLIC_KEY;
	CK_ATTRIBUTE a[] = {
	    {CKA_ID, k->id, sizeof(k->id)},
	    {CKA_LABEL, label, sizeof(label)},
	    {CKA_KEY_TYPE, &type, sizeof(type)},
	};
	CK_ATTRIBUTE tmpl[] = {{CKA_CLASS, &cls, sizeof(cls)}, {CKA_ID, k->id, 0}};
	CK_OBJECT_HANDLE pub[2];
	CK_ULONG n;
	CK_RV rv;

	rv = ctx->f->C_GetAttributeValue(s, h, a, 3);
	if (rv != CKR_OK) {
		p11_fail(op, "C_GetAttributeValue", rv);
		return skip_or_fail(op);
	}
	k->alg = p11_label_alg(label, a[1].ulValueLen);
	if (k->alg == WRIT_ALG_NONE || a[0].ulValueLen == 0 || type != alg_key_type(k->alg))
		return WRIT_OK;
	k->id_len = a[0].ulValueLen;
	memcpy(k->label, label, a[1].ulValueLen);
	k->label[a[1].ulValueLen] = '\0';
	tmpl[1].ulValueLen = k->id_len;
	if (p11_find(ctx->f, s, tmpl, 2, pub, 2, &n, op) != CKR_OK)
		return skip_or_fail(op);
	if (n != 1)
		return WRIT_OK;
	if (p11_pub_export(ctx->f, s, pub[0], k->alg, &k->pub, op, NULL) != WRIT_OK)
		return skip_or_fail(op);
	return WRIT_OK;
}

static writ_rc list_op(p11_ctx *ctx, CK_SESSION_HANDLE s, void *arg, p11_op *op, writ_err *err)
{
	list_arg *a = arg;
	CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
	CK_ATTRIBUTE tmpl[] = {{CKA_CLASS, &cls, sizeof(cls)}};
	CK_OBJECT_HANDLE *h = NULL;
	CK_ULONG n, i;
	writ_rc rc = WRIT_ERR_HSM;

	/* A retry after recovery starts from scratch. */
	p11_keys_free(a->keys, a->n);
	a->keys = NULL;
	a->n = 0;
	/* One slot more than the cap, to tell "exactly the cap" from "more". */
	h = calloc(P11_KEYS_MAX + 1, sizeof(*h));
	if (h == NULL)
		return writ_err_set(err, WRIT_ERR_NOMEM, "out of memory");
	if (p11_find(ctx->f, s, tmpl, 1, h, P11_KEYS_MAX + 1, &n, op) != CKR_OK)
		goto out;
	/* Refused rather than cut short: a key missing from the list would
	 * be taken for one the HSM no longer holds. */
	if (n > P11_KEYS_MAX) {
		rc = writ_err_set(err, WRIT_ERR_TOO_LARGE,
		                  "the token holds more than %d private keys: writ lists at most "
		                  "that many",
		                  P11_KEYS_MAX);
		goto out;
	}
	a->keys = calloc(n > 0 ? n : 1, sizeof(*a->keys));
	if (a->keys == NULL) {
		rc = writ_err_set(err, WRIT_ERR_NOMEM, "out of memory");
		goto out;
	}
	for (i = 0; i < n; i++) {
		p11_key *k = &a->keys[a->n];

		rc = key_load(ctx, s, h[i], k, op);
		if (rc != WRIT_OK)
			goto out;
		if (k->pub != NULL && !id_seen(a, k))
			a->n++;
		else {
			EVP_PKEY_free(k->pub);
			memset(k, 0, sizeof(*k));
		}
	}
	rc = WRIT_OK;
out:
	free(h);
	return rc;
}

writ_rc p11_keys_list(p11_ctx *ctx, p11_key **keys, size_t *n, writ_err *err)
{
	list_arg a = {NULL, 0};
	writ_rc rc;

	*keys = NULL;
	*n = 0;
	if (ctx == NULL)
		return writ_err_set(err, WRIT_ERR_ARG, "no token context");
	rc = p11_run(ctx, list_op, &a, err);
	if (rc != WRIT_OK) {
		p11_keys_free(a.keys, a.n);
		return rc;
	}
	*keys = a.keys;
	*n = a.n;
	return WRIT_OK;
}

void p11_keys_free(p11_key *keys, size_t n)
{
	size_t i;

	if (keys == NULL)
		return;
	for (i = 0; i < n; i++)
		EVP_PKEY_free(keys[i].pub);
	free(keys);
}

/* ---- presence by id ---- */

static writ_rc present_op(p11_ctx *ctx, CK_SESSION_HANDLE s, void *arg, p11_op *op, writ_err *err)
{
	p11_id_arg *a = arg;
	CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
	CK_ATTRIBUTE tmpl[] = {
	    {CKA_CLASS, &cls, sizeof(cls)},
	    {CKA_ID, (void *)a->id, a->id_len},
	};
	CK_OBJECT_HANDLE h[1];
	CK_ULONG n;

	if (p11_find(ctx->f, s, tmpl, 2, h, 1, &n, op) != CKR_OK)
		return WRIT_ERR_HSM;
	/* NOT_FOUND lets p11_run look again after a fresh start when a
	 * re-initialisation just happened (a view of the token without its
	 * objects must not make a key look gone). */
	return n == 0 ? writ_err_set(err, WRIT_ERR_NOT_FOUND,
	                             "no private key with that id in the token")
	              : WRIT_OK;
}

writ_rc p11_key_present(p11_ctx *ctx, const unsigned char *id, size_t id_len, int *present,
                        writ_err *err)
{
	p11_id_arg a = {id, id_len};
	writ_err e = {0};
	writ_rc rc;

	*present = 1; /* on failure, the safe answer */
	if (ctx == NULL || id == NULL || id_len == 0 || id_len > P11_ID_MAX)
		return writ_err_set(err, WRIT_ERR_ARG, "bad key id");
	rc = p11_run(ctx, present_op, &a, &e);
	if (rc == WRIT_ERR_NOT_FOUND) {
		*present = 0;
		return WRIT_OK;
	}
	if (rc != WRIT_OK && err != NULL)
		*err = e;
	return rc;
}
