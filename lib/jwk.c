/*
 * jwk.c - public JWKs (RFC 7517/7518/8037) <-> OpenSSL keys, and RFC 7638
 * thumbprints. A key is parsed into an EVP_PKEY once; verification never
 * sees JSON or PEM again (libjwt re-parses PEM on every call: FACTS.md).
 */
#include <openssl/core_names.h>
#include <openssl/sha.h>
#include <stdlib.h>
#include <string.h>

#include "writ_int.h"

/* The public members of a key in canonical base64url form. */
typedef struct jwk_pub {
	const char *kty, *crv; /* static strings */
	char *x, *y, *n, *e;   /* malloc'd, may be NULL */
} jwk_pub;

static void jwk_pub_clear(jwk_pub *p)
{
	free(p->x);
	free(p->y);
	free(p->n);
	free(p->e);
	memset(p, 0, sizeof(*p));
}

static size_t ec_field_len(writ_alg alg)
{
	return alg == WRIT_ALG_ES384 ? 48 : 32;
}

writ_rc writ_pkey_check_alg(EVP_PKEY *pkey, writ_alg alg, size_t *sig_len, writ_err *err)
{
	char group[32];
	size_t glen = 0;
	int bits = EVP_PKEY_get_bits(pkey);

	switch (alg) {
	case WRIT_ALG_ES256:
	case WRIT_ALG_ES384:
		if (!EVP_PKEY_is_a(pkey, "EC") ||
		    !EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, group,
		                                    sizeof(group), &glen))
			return writ_err_set(err, WRIT_ERR_JWK, "%s needs an EC key",
			                    writ_alg_name(alg));
		if (strcmp(group, alg == WRIT_ALG_ES256 ? "prime256v1" : "secp384r1") != 0)
			return writ_err_set(err, WRIT_ERR_JWK, "%s needs curve %s, key is on %s",
			                    writ_alg_name(alg),
			                    alg == WRIT_ALG_ES256 ? "P-256" : "P-384", group);
		*sig_len = 2 * ec_field_len(alg);
		return WRIT_OK;
	case WRIT_ALG_RS256:
	case WRIT_ALG_PS256:
		if (!EVP_PKEY_is_a(pkey, "RSA"))
			return writ_err_set(err, WRIT_ERR_JWK, "%s needs an RSA key",
			                    writ_alg_name(alg));
		/* RFC 7518 s.3.3: 2048 bits or larger. The upper bound caps the
		 * cost an attacker-supplied JWKS can impose. */
		if (bits < 2048 || bits > 8192)
			return writ_err_set(err, WRIT_ERR_JWK,
			                    "RSA key of %d bits (2048..8192 allowed)", bits);
		*sig_len = (size_t)EVP_PKEY_get_size(pkey);
		return WRIT_OK;
	case WRIT_ALG_EDDSA:
		if (!EVP_PKEY_is_a(pkey, "ED25519"))
			return writ_err_set(err, WRIT_ERR_JWK, "EdDSA needs an Ed25519 key");
		*sig_len = 64;
		return WRIT_OK;
	default: return writ_err_set(err, WRIT_ERR_ALG, "unsupported algorithm");
	}
}

static char *bn_b64(const BIGNUM *bn, size_t pad)
{
	unsigned char buf[1024];
	int n = pad ? BN_bn2binpad(bn, buf, (int)pad) : BN_bn2bin(bn, buf);

	if (n < 0 || (size_t)BN_num_bytes(bn) > sizeof(buf))
		return NULL;
	return b64url_encode_alloc(buf, (size_t)n);
}

static char *pkey_bn_b64(EVP_PKEY *pkey, const char *param, size_t pad)
{
	BIGNUM *bn = NULL;
	char *s;

	if (!EVP_PKEY_get_bn_param(pkey, param, &bn))
		return NULL;
	s = BN_num_bytes(bn) <= 1024 ? bn_b64(bn, pad) : NULL;
	BN_free(bn);
	return s;
}

static writ_rc jwk_pub_from_pkey(EVP_PKEY *pkey, writ_alg alg, jwk_pub *p)
{
	unsigned char raw[32];
	size_t rawlen = sizeof(raw);

	memset(p, 0, sizeof(*p));
	switch (alg) {
	case WRIT_ALG_ES256:
	case WRIT_ALG_ES384:
		p->kty = "EC";
		p->crv = alg == WRIT_ALG_ES256 ? "P-256" : "P-384";
		p->x = pkey_bn_b64(pkey, OSSL_PKEY_PARAM_EC_PUB_X, ec_field_len(alg));
		p->y = pkey_bn_b64(pkey, OSSL_PKEY_PARAM_EC_PUB_Y, ec_field_len(alg));
		break;
	case WRIT_ALG_RS256:
	case WRIT_ALG_PS256:
		p->kty = "RSA";
		p->n = pkey_bn_b64(pkey, OSSL_PKEY_PARAM_RSA_N, 0);
		p->e = pkey_bn_b64(pkey, OSSL_PKEY_PARAM_RSA_E, 0);
		break;
	case WRIT_ALG_EDDSA:
		p->kty = "OKP";
		p->crv = "Ed25519";
		if (EVP_PKEY_get_raw_public_key(pkey, raw, &rawlen) && rawlen == 32)
			p->x = b64url_encode_alloc(raw, rawlen);
		break;
	default: return WRIT_ERR_ALG;
	}
	if ((p->kty[0] == 'R' && (p->n == NULL || p->e == NULL)) ||
	    (p->kty[0] != 'R' && p->x == NULL) || (p->kty[0] == 'E' && p->y == NULL)) {
		jwk_pub_clear(p);
		return WRIT_ERR_CRYPTO;
	}
	return WRIT_OK;
}

/* RFC 7638 s.3.2: required members only, lexicographic order, no spaces. */
static json_t *jwk_pub_canonical(const jwk_pub *p)
{
	if (p->n != NULL)
		return json_pack("{s:s, s:s, s:s}", "e", p->e, "kty", p->kty, "n", p->n);
	if (p->y != NULL)
		return json_pack("{s:s, s:s, s:s, s:s}", "crv", p->crv, "kty", p->kty, "x", p->x,
		                 "y", p->y);
	return json_pack("{s:s, s:s, s:s}", "crv", p->crv, "kty", p->kty, "x", p->x);
}

static writ_rc thumbprint(const jwk_pub *p, char out[44])
{
	unsigned char md[SHA256_DIGEST_LENGTH];
	json_t *c = jwk_pub_canonical(p);
	char *s = c != NULL ? wjson_dump(c) : NULL;

	json_decref(c);
	if (s == NULL)
		return WRIT_ERR_NOMEM;
	writ_sha256((const unsigned char *)s, strlen(s), md);
	free(s);
	b64url_encode(md, sizeof(md), out);
	return WRIT_OK;
}

writ_rc writ_jwk_thumbprint(const writ_jwk *jwk, char *buf, size_t buflen)
{
	jwk_pub p;
	writ_rc rc;

	if (jwk == NULL || buf == NULL || buflen < 44)
		return WRIT_ERR_ARG;
	rc = jwk_pub_from_pkey(jwk->pkey, jwk->alg, &p);
	if (rc != WRIT_OK)
		return rc;
	rc = thumbprint(&p, buf);
	jwk_pub_clear(&p);
	return rc;
}

writ_rc writ_jwk_from_pkey(EVP_PKEY *pkey, writ_alg alg, writ_jwk **out, writ_err *err)
{
	writ_jwk *k;
	writ_rc rc;

	*out = NULL;
	k = calloc(1, sizeof(*k));
	if (k == NULL)
		return writ_err_set(err, WRIT_ERR_NOMEM, "out of memory");
	k->alg = alg;
	rc = writ_pkey_check_alg(pkey, alg, &k->sig_len, err);
	if (rc == WRIT_OK && !EVP_PKEY_up_ref(pkey))
		rc = writ_err_ossl(err, WRIT_ERR_CRYPTO, "EVP_PKEY_up_ref");
	if (rc != WRIT_OK) {
		free(k);
		return rc;
	}
	k->pkey = pkey;
	rc = writ_sig_template(k, err);
	if (rc != WRIT_OK) {
		writ_jwk_free(k);
		return rc;
	}
	rc = writ_jwk_thumbprint(k, k->kid, sizeof(k->kid));
	if (rc != WRIT_OK) {
		writ_jwk_free(k);
		return writ_err_set(err, rc, "cannot compute the key thumbprint");
	}
	*out = k;
	return WRIT_OK;
}

void writ_jwk_free(writ_jwk *jwk)
{
	if (jwk == NULL)
		return;
	EVP_PKEY_CTX_free(jwk->vtmpl);
	EVP_PKEY_free(jwk->pkey);
	free(jwk);
}

const char *writ_jwk_kid(const writ_jwk *jwk)
{
	return jwk->kid;
}

writ_alg writ_jwk_alg(const writ_jwk *jwk)
{
	return jwk->alg;
}

json_t *writ_jwk_to_jansson(const writ_jwk *jwk)
{
	jwk_pub p;
	json_t *o;

	if (jwk_pub_from_pkey(jwk->pkey, jwk->alg, &p) != WRIT_OK)
		return NULL;
	o = json_object();
	if (o != NULL) {
		json_object_set_new(o, "kty", json_string(p.kty));
		if (p.crv != NULL)
			json_object_set_new(o, "crv", json_string(p.crv));
		if (p.n != NULL) {
			json_object_set_new(o, "n", json_string(p.n));
			json_object_set_new(o, "e", json_string(p.e));
		} else {
			json_object_set_new(o, "x", json_string(p.x));
			if (p.y != NULL)
				json_object_set_new(o, "y", json_string(p.y));
		}
		json_object_set_new(o, "kid", json_string(jwk->kid));
		json_object_set_new(o, "alg", json_string(writ_alg_name(jwk->alg)));
		json_object_set_new(o, "use", json_string("sig"));
	}
	jwk_pub_clear(&p);
	return o;
}

char *writ_jwk_to_json(const writ_jwk *jwk)
{
	json_t *o = writ_jwk_to_jansson(jwk);
	char *s = o != NULL ? wjson_dump(o) : NULL;

	json_decref(o);
	return s;
}
