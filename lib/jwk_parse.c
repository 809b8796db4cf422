/*
 * jwk_parse.c - strict parsing of public JWKs and JWK Sets from outside.
 *
 * Every key carries its own "alg": a verifier that lets the token choose
 * the algorithm is open to algorithm confusion (RFC 8725 s.2.1, the HS256-
 * with-the-public-key attack libjwt 1.10 still accepts: FACTS.md).
 */
#include <openssl/core_names.h>
#include <openssl/param_build.h>
#include <stdlib.h>
#include <string.h>

#include "writ_int.h"

#define JWK_MEMBER_MAX 2048 /* base64url chars: an 8192-bit modulus is 1366 */

struct writ_jwks {
	size_t n;
	writ_jwk **keys;
};

static const char *const private_members[] = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"};

/* Decode member `name` of o: a canonical base64url string whose decoded
 * length is exactly `want` (or 1..max when want == 0). */
static writ_rc member_b64(const json_t *o, const char *name, size_t want, unsigned char *out,
                          size_t max, size_t *outlen, writ_err *err)
{
	const json_t *v = json_object_get(o, name);
	const char *s;
	size_t len;

	if (!json_is_string(v))
		return writ_err_set(err, WRIT_ERR_JWK, "JWK member \"%s\" missing or not a string",
		                    name);
	s = json_string_value(v);
	len = json_string_length(v);
	if (len == 0 || len > JWK_MEMBER_MAX || B64URL_DECODED_MAX(len) > max)
		return writ_err_set(err, WRIT_ERR_JWK, "JWK member \"%s\" has a bad length", name);
	if (b64url_decode(s, len, out, outlen) != 0)
		return writ_err_set(err, WRIT_ERR_JWK,
		                    "JWK member \"%s\" is not canonical base64url", name);
	if (want != 0 && *outlen != want)
		return writ_err_set(err, WRIT_ERR_JWK, "JWK member \"%s\" is %zu bytes, want %zu",
		                    name, *outlen, want);
	return WRIT_OK;
}

/* wjson_parse_object filled err as WRIT_ERR_MALFORMED; these functions
 * return WRIT_ERR_JWK, and err->rc must say the same as the return value. */
static writ_rc jwk_json_error(writ_err *err)
{
	if (err != NULL)
		err->rc = WRIT_ERR_JWK;
	return WRIT_ERR_JWK;
}

static const char *member_str(const json_t *o, const char *name)
{
	const json_t *v = json_object_get(o, name);
	return json_is_string(v) ? json_string_value(v) : NULL;
}

static writ_rc pkey_fromdata(const char *type, int full_check, OSSL_PARAM_BLD *bld, EVP_PKEY **out,
                             writ_err *err)
{
	OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(bld);
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, type, NULL);
	EVP_PKEY_CTX *chk = NULL;
	writ_rc rc = WRIT_ERR_JWK;

	*out = NULL;
	if (params == NULL || ctx == NULL || EVP_PKEY_fromdata_init(ctx) <= 0 ||
	    EVP_PKEY_fromdata(ctx, out, EVP_PKEY_PUBLIC_KEY, params) <= 0) {
		writ_err_ossl(err, WRIT_ERR_JWK, "JWK is not a valid %s public key", type);
		goto out;
	}
	/* An off-curve point must never reach ECDSA verify (invalid-curve
	 * attacks); fromdata alone does not promise the full check. */
	chk = EVP_PKEY_CTX_new_from_pkey(NULL, *out, NULL);
	if (chk == NULL || (full_check ? EVP_PKEY_public_check(chk) : 1) != 1) {
		writ_err_ossl(err, WRIT_ERR_JWK, "JWK %s public key fails validation", type);
		EVP_PKEY_free(*out);
		*out = NULL;
		goto out;
	}
	rc = WRIT_OK;
out:
	EVP_PKEY_CTX_free(chk);
	EVP_PKEY_CTX_free(ctx);
	OSSL_PARAM_free(params);
	return rc;
}

static writ_rc ec_from_jwk(const json_t *o, writ_alg alg, EVP_PKEY **out, writ_err *err)
{
	size_t fl = alg == WRIT_ALG_ES256 ? 32 : 48, xl, yl;
	const char *want_crv = alg == WRIT_ALG_ES256 ? "P-256" : "P-384";
	const char *crv = member_str(o, "crv");
	unsigned char pt[1 + 2 * 48];
	OSSL_PARAM_BLD *bld;
	writ_rc rc;

	if (crv == NULL || strcmp(crv, want_crv) != 0)
		return writ_err_set(err, WRIT_ERR_JWK, "%s key needs \"crv\":\"%s\"",
		                    writ_alg_name(alg), want_crv);
	pt[0] = 0x04; /* uncompressed point */
	rc = member_b64(o, "x", fl, pt + 1, 48, &xl, err);
	if (rc == WRIT_OK)
		rc = member_b64(o, "y", fl, pt + 1 + fl, 48, &yl, err);
	if (rc != WRIT_OK)
		return rc;
	bld = OSSL_PARAM_BLD_new();
	if (bld == NULL ||
	    !OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, want_crv, 0) ||
	    !OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, pt, 1 + 2 * fl))
		rc = writ_err_set(err, WRIT_ERR_NOMEM, "out of memory");
	else
		rc = pkey_fromdata("EC", 1, bld, out, err);
	OSSL_PARAM_BLD_free(bld);
	return rc;
}

/*
 * An RSA public key's checks, all deterministic: n odd and free of prime
 * factors below 1024, e odd and 65537 <= e < 2^64 (SP 800-56B s.6.4.1.1
 * bounds e below 2^256; "e" is read into 8 bytes). OpenSSL's
 * EVP_PKEY_public_check adds SP 800-56B's Miller-Rabin test with random
 * bases, and for a modulus that is not the product of two large primes
 * its verdict changes from one call to the next: fuzz_jwks found a key set
 * accepted and then, written back out and parsed again, refused. A key
 * set must not flip between fetches; and a modulus the publisher chose is
 * the publisher's risk, as any key it publishes is, so the random part
 * adds nothing here. The size (2048..8192 bits) is checked with the alg.
 */
static int rsa_public_ok(const BIGNUM *n, const BIGNUM *e)
{
	static const unsigned short small[] = {
	    3,   5,   7,   11,  13,  17,  19,  23,   29,   31,   37,  41,  43,  47,  53,  59,
	    61,  67,  71,  73,  79,  83,  89,  97,   101,  103,  107, 109, 113, 127, 131, 137,
	    139, 149, 151, 157, 163, 167, 173, 179,  181,  191,  193, 197, 199, 211, 223, 227,
	    229, 233, 239, 241, 251, 257, 263, 269,  271,  277,  281, 283, 293, 307, 311, 313,
	    317, 331, 337, 347, 349, 353, 359, 367,  373,  379,  383, 389, 397, 401, 409, 419,
	    421, 431, 433, 439, 443, 449, 457, 461,  463,  467,  479, 487, 491, 499, 503, 509,
	    521, 523, 541, 547, 557, 563, 569, 571,  577,  587,  593, 599, 601, 607, 613, 617,
	    619, 631, 641, 643, 647, 653, 659, 661,  673,  677,  683, 691, 701, 709, 719, 727,
	    733, 739, 743, 751, 757, 761, 769, 773,  787,  797,  809, 811, 821, 823, 827, 829,
	    839, 853, 857, 859, 863, 877, 881, 883,  887,  907,  911, 919, 929, 937, 941, 947,
	    953, 967, 971, 977, 983, 991, 997, 1009, 1013, 1019, 1021};
	size_t i;

	if (!BN_is_odd(n) || !BN_is_odd(e) || BN_num_bits(e) <= 16 || BN_num_bits(e) > 64)
		return 0;
	for (i = 0; i < sizeof(small) / sizeof(small[0]); i++)
		if (BN_mod_word(n, small[i]) == 0)
			return 0;
	return 1;
}

static writ_rc rsa_from_jwk(const json_t *o, EVP_PKEY **out, writ_err *err)
{
	unsigned char nb[1024], eb[8];
	size_t nl, el;
	BIGNUM *n = NULL, *e = NULL;
	OSSL_PARAM_BLD *bld = NULL;
	writ_rc rc;

	rc = member_b64(o, "n", 0, nb, sizeof(nb), &nl, err);
	if (rc == WRIT_OK)
		rc = member_b64(o, "e", 0, eb, sizeof(eb), &el, err);
	if (rc != WRIT_OK)
		return rc;
	/* RFC 7518 s.6.3.1: minimum number of octets, so one key has one
	 * thumbprint. */
	if (nb[0] == 0 || eb[0] == 0)
		return writ_err_set(err, WRIT_ERR_JWK, "RSA \"n\"/\"e\" has a leading zero byte");
	n = BN_bin2bn(nb, (int)nl, NULL);
	e = BN_bin2bn(eb, (int)el, NULL);
	if (n != NULL && e != NULL && !rsa_public_ok(n, e)) {
		BN_free(n);
		BN_free(e);
		return writ_err_set(
		    err, WRIT_ERR_JWK,
		    "JWK RSA public key fails validation (n must be odd with no small "
		    "factor, e odd and 65537..2^64)");
	}
	bld = OSSL_PARAM_BLD_new();
	if (n == NULL || e == NULL || bld == NULL ||
	    !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, n) ||
	    !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, e))
		rc = writ_err_set(err, WRIT_ERR_NOMEM, "out of memory");
	else
		rc = pkey_fromdata("RSA", 0, bld, out, err);
	OSSL_PARAM_BLD_free(bld);
	BN_free(n);
	BN_free(e);
	return rc;
}

static writ_rc okp_from_jwk(const json_t *o, EVP_PKEY **out, writ_err *err)
{
	const char *crv = member_str(o, "crv");
	unsigned char x[48];
	size_t xl;
	writ_rc rc;

	if (crv == NULL || strcmp(crv, "Ed25519") != 0)
		return writ_err_set(err, WRIT_ERR_JWK, "EdDSA key needs \"crv\":\"Ed25519\"");
	rc = member_b64(o, "x", 32, x, sizeof(x), &xl, err);
	if (rc != WRIT_OK)
		return rc;
	*out = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, x, xl);
	if (*out == NULL)
		return writ_err_ossl(err, WRIT_ERR_JWK, "invalid Ed25519 public key");
	return WRIT_OK;
}

static int kid_ok(const char *kid, size_t len)
{
	size_t i;

	/* kid is used as a lookup key and may end up in file names and logs:
	 * base64url characters only, so "/", "..", NUL and quotes never pass. */
	if (len == 0 || len > WRIT_KID_MAX)
		return 0;
	for (i = 0; i < len; i++) {
		char c = kid[i];
		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		      c == '-' || c == '_'))
			return 0;
	}
	return 1;
}

/* RFC 7517 s.4.3: when "key_ops" is there it says what the key is for:
 * an array of distinct strings, and here it must include "verify" (a key
 * published for "encrypt" or only "sign" is not one to check signatures
 * with). */
static writ_rc key_ops_ok(const json_t *ops, writ_err *err)
{
	size_t i, j;
	int verify = 0;

	if (ops == NULL)
		return WRIT_OK;
	if (!json_is_array(ops) || json_array_size(ops) > 8)
		return writ_err_set(err, WRIT_ERR_JWK,
		                    "JWK \"key_ops\" must be an array of strings");
	for (i = 0; i < json_array_size(ops); i++) {
		const json_t *op = json_array_get(ops, i);

		if (!json_is_string(op))
			return writ_err_set(err, WRIT_ERR_JWK,
			                    "JWK \"key_ops\" must be an array of strings");
		for (j = 0; j < i; j++)
			if (json_equal(op, json_array_get(ops, j)))
				return writ_err_set(err, WRIT_ERR_JWK,
				                    "JWK \"key_ops\" repeats a value");
		verify |= strcmp(json_string_value(op), "verify") == 0;
	}
	if (!verify)
		return writ_err_set(err, WRIT_ERR_JWK,
		                    "JWK \"key_ops\" does not include \"verify\"");
	return WRIT_OK;
}

static writ_rc jwk_from_json(const json_t *o, int need_kid, writ_jwk **out, writ_err *err)
{
	const char *kty = member_str(o, "kty"), *alg_s = member_str(o, "alg");
	const char *use = member_str(o, "use");
	const json_t *kidv = json_object_get(o, "kid");
	EVP_PKEY *pkey = NULL;
	writ_jwk *k = NULL;
	writ_alg alg;
	writ_rc rc;
	size_t i;

	*out = NULL;
	if (!json_is_object(o))
		return writ_err_set(err, WRIT_ERR_JWK, "JWK is not a JSON object");
	for (i = 0; i < sizeof(private_members) / sizeof(private_members[0]); i++)
		if (json_object_get(o, private_members[i]) != NULL)
			return writ_err_set(err, WRIT_ERR_JWK,
			                    "JWK holds private key material (\"%s\")",
			                    private_members[i]);
	if (kty == NULL)
		return writ_err_set(err, WRIT_ERR_JWK, "JWK has no \"kty\"");
	if (alg_s == NULL)
		return writ_err_set(err, WRIT_ERR_JWK,
		                    "JWK has no \"alg\" (writ pins one algorithm to each key)");
	alg = writ_alg_from_name(alg_s);
	if (alg == WRIT_ALG_NONE)
		return writ_err_set(err, WRIT_ERR_JWK,
		                    "JWK \"alg\" is not one of ES256, ES384, RS256, PS256, EdDSA");
	if (json_object_get(o, "use") != NULL && (use == NULL || strcmp(use, "sig") != 0))
		return writ_err_set(err, WRIT_ERR_JWK, "JWK \"use\" is not \"sig\"");
	if ((rc = key_ops_ok(json_object_get(o, "key_ops"), err)) != WRIT_OK)
		return rc;
	if (kidv != NULL &&
	    (!json_is_string(kidv) || !kid_ok(json_string_value(kidv), json_string_length(kidv))))
		return writ_err_set(err, WRIT_ERR_JWK,
		                    "JWK \"kid\" must be 1..%d base64url characters", WRIT_KID_MAX);
	if (need_kid && kidv == NULL)
		return writ_err_set(err, WRIT_ERR_JWK, "JWK in a set has no \"kid\"");

	if (strcmp(kty, "EC") == 0 && (alg == WRIT_ALG_ES256 || alg == WRIT_ALG_ES384))
		rc = ec_from_jwk(o, alg, &pkey, err);
	else if (strcmp(kty, "RSA") == 0 && (alg == WRIT_ALG_RS256 || alg == WRIT_ALG_PS256))
		rc = rsa_from_jwk(o, &pkey, err);
	else if (strcmp(kty, "OKP") == 0 && alg == WRIT_ALG_EDDSA)
		rc = okp_from_jwk(o, &pkey, err);
	else
		rc = writ_err_set(err, WRIT_ERR_JWK, "JWK \"kty\" %s does not fit \"alg\" %s", kty,
		                  alg_s);
	if (rc == WRIT_OK)
		rc = writ_jwk_from_pkey(pkey, alg, &k, err);
	EVP_PKEY_free(pkey);
	if (rc != WRIT_OK)
		return rc;
	if (kidv != NULL)
		memcpy(k->kid, json_string_value(kidv), json_string_length(kidv) + 1);
	*out = k;
	return WRIT_OK;
}

writ_rc writ_jwk_parse(const char *json, size_t len, writ_jwk **out, writ_err *err)
{
	json_t *o;
	writ_rc rc;

	if (out == NULL || json == NULL)
		return writ_err_set(err, WRIT_ERR_ARG, "NULL argument");
	*out = NULL;
	if (len > WRIT_JWKS_MAX_BYTES)
		return writ_err_set(err, WRIT_ERR_TOO_LARGE, "JWK larger than %d bytes",
		                    WRIT_JWKS_MAX_BYTES);
	o = wjson_parse_object(json, len, "JWK", err);
	if (o == NULL)
		return jwk_json_error(err);
	rc = jwk_from_json(o, 0, out, err);
	json_decref(o);
	return rc;
}

void writ_jwks_free(writ_jwks *set)
{
	size_t i;

	if (set == NULL)
		return;
	for (i = 0; i < set->n; i++)
		writ_jwk_free(set->keys[i]);
	free(set->keys);
	free(set);
}

writ_rc writ_jwks_parse(const char *json, size_t len, unsigned flags, writ_jwks **out,
                        writ_err *err)
{
	json_t *o = NULL, *arr;
	writ_jwks *set = NULL;
	writ_rc rc = WRIT_ERR_JWK;
	size_t i, j;

	if (out == NULL || json == NULL)
		return writ_err_set(err, WRIT_ERR_ARG, "NULL argument");
	*out = NULL;
	if (len > WRIT_JWKS_MAX_BYTES)
		return writ_err_set(err, WRIT_ERR_TOO_LARGE, "JWK Set larger than %d bytes",
		                    WRIT_JWKS_MAX_BYTES);
	o = wjson_parse_object(json, len, "JWK Set", err);
	if (o == NULL)
		return jwk_json_error(err);
	arr = json_object_get(o, "keys");
	if (!json_is_array(arr)) {
		writ_err_set(err, WRIT_ERR_JWK, "JWK Set has no \"keys\" array");
		goto out;
	}
	if (json_array_size(arr) == 0 || json_array_size(arr) > WRIT_JWKS_MAX_KEYS) {
		writ_err_set(err, WRIT_ERR_JWK, "JWK Set must hold 1..%d keys", WRIT_JWKS_MAX_KEYS);
		goto out;
	}
	set = calloc(1, sizeof(*set));
	if (set == NULL || (set->keys = calloc(json_array_size(arr), sizeof(*set->keys))) == NULL) {
		rc = writ_err_set(err, WRIT_ERR_NOMEM, "out of memory");
		goto out;
	}
	for (i = 0; i < json_array_size(arr); i++) {
		writ_jwk *k;
		char tp[44];

		rc = jwk_from_json(json_array_get(arr, i), 1, &k, err);
		if (rc != WRIT_OK) {
			if (err != NULL) {
				char m[sizeof(err->msg)];
				memcpy(m, err->msg, sizeof(m));
				snprintf(err->msg, sizeof(err->msg), "keys[%zu]: %.200s", i, m);
			}
			goto out;
		}
		set->keys[set->n++] = k;
		if ((flags & WRIT_JWKS_KID_IS_THUMBPRINT) &&
		    (writ_jwk_thumbprint(k, tp, sizeof(tp)) != WRIT_OK ||
		     strcmp(tp, k->kid) != 0)) {
			rc = writ_err_set(err, WRIT_ERR_JWK,
			                  "keys[%zu]: \"kid\" is not the key's RFC 7638 thumbprint",
			                  i);
			goto out;
		}
		for (j = 0; j < i; j++)
			if (strcmp(set->keys[j]->kid, k->kid) == 0) {
				rc = writ_err_set(err, WRIT_ERR_JWK, "keys[%zu]: duplicate \"kid\"",
				                  i);
				goto out;
			}
	}
	*out = set;
	set = NULL;
	rc = WRIT_OK;
out:
	writ_jwks_free(set);
	json_decref(o);
	return rc;
}

size_t writ_jwks_count(const writ_jwks *set)
{
	return set != NULL ? set->n : 0;
}

const writ_jwk *writ_jwks_get(const writ_jwks *set, size_t i)
{
	return set != NULL && i < set->n ? set->keys[i] : NULL;
}

const writ_jwk *writ_jwks_find(const writ_jwks *set, const char *kid)
{
	size_t i;

	if (set == NULL || kid == NULL)
		return NULL;
	/* At most WRIT_JWKS_MAX_KEYS entries, usually 1-3: a scan beats a hash. */
	for (i = 0; i < set->n; i++)
		if (strcmp(set->keys[i]->kid, kid) == 0)
			return set->keys[i];
	return NULL;
}
