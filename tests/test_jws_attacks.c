/*
 * test_jws_attacks.c - the verifier against the attacks RFC 8725 and a
 * decade of JWT CVEs describe, one test per attack, plus the JWK Set
 * parser's refusals.
 *
 * Every token is made here: keys are generated with OpenSSL, published as
 * a JWK Set through writ's own JWK code (kid = RFC 7638 thumbprint), and
 * signing inputs are signed directly, so an attack token differs from a
 * valid one in exactly the property under test. Where the property is in
 * the signed part (header, payload, their encoding) the attack token is
 * re-signed with the real key: only the rule under test can refuse it.
 *
 * Every verifying test runs twice: through the core (writ_verify) and
 * through libwrit's service API (writ_verifier_verify over the same JWK
 * Set, clock pinned to the test's "now"), where each token is checked a
 * second time so the verified-token cache must give the same verdict.
 * Options the service API cannot express (no iss or aud check, a typ
 * other than at+jwt) fall back to the core and are counted.
 */
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/obj_mac.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <stdarg.h>
#include <stdint.h>

#include "testutil.h"
#include "verifier_int.h"
#include "writ_int.h"

#define NOW    1700000000LL
#define ISS    "https://issuer.example"
#define AUD    "svc"
#define SIGBUF 1024
#define TWO53  9007199254740992LL

typedef struct tkey {
	writ_alg alg;
	EVP_PKEY *priv;
	char kid[WRIT_KID_MAX + 1];
	char *jwk; /* public JWK JSON, kid = thumbprint */
} tkey;

enum { K_ES256, K_ES384, K_RS256, K_PS256, K_EDDSA, K_COUNT };
static tkey keys[K_COUNT];
static tkey stranger; /* a valid ES256 key that is not in the set */
static writ_jwks *set;
static char *set_json; /* the same set, as the service API is given it */

/* ---- the two doors: writ_verify, or the verifier library ---- */

static int via_lib;
static size_t lib_calls, lib_fallbacks;
static writ_verifier *lib_v;
static writ_verify_opts lib_o; /* the options lib_v was made for */

static int same_str(const char *a, const char *b)
{
	return a == b || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

/* A verifier for o's checks, reused while they stay the same. */
static writ_rc lib_verifier(const writ_verify_opts *o, writ_err *err)
{
	writ_verifier_cfg cfg = {.issuer = o->iss,
	                         .audience = o->aud,
	                         .jwks_bytes = set_json,
	                         .jwks_len = strlen(set_json),
	                         .leeway = o->leeway,
	                         .max_ttl = o->max_ttl};
	writ_rc rc;

	if (lib_v != NULL && same_str(lib_o.iss, o->iss) && same_str(lib_o.aud, o->aud) &&
	    lib_o.leeway == o->leeway && lib_o.max_ttl == o->max_ttl) {
		verifier_test_clock(lib_v, o->now, o->leeway);
		return WRIT_OK;
	}
	writ_verifier_free(lib_v);
	lib_v = NULL;
	if ((rc = writ_verifier_new(&cfg, &lib_v, err)) != WRIT_OK)
		return rc;
	lib_o = *o;
	verifier_test_clock(lib_v, o->now, o->leeway);
	return WRIT_OK;
}

static writ_rc verify_any(const char *t, size_t n, const writ_verify_opts *o, writ_claims **c,
                          writ_err *err)
{
	writ_claims *again = NULL;
	writ_rc rc, rc2;

	if (!via_lib || o->iss == NULL || o->aud == NULL || o->typ == NULL ||
	    strcmp(o->typ, "at+jwt") != 0) {
		lib_fallbacks += via_lib;
		return writ_verify(set, t, n, o, c, err);
	}
	lib_calls++;
	if ((rc = lib_verifier(o, err)) != WRIT_OK) {
		if (c != NULL)
			*c = NULL;
		return rc;
	}
	rc = writ_verifier_verify(lib_v, t, n, c, err);
	/* Again: a cache hit (or a second refusal) must agree. */
	rc2 = writ_verifier_verify(lib_v, t, n, &again, NULL);
	CHECK(rc2 == rc);
	if (c != NULL && *c != NULL && again != NULL) {
		char *a = writ_claims_json(*c), *b = writ_claims_json(again);
		CHECK(a != NULL && b != NULL && strcmp(a, b) == 0);
		CHECK(strcmp(writ_claims_kid(*c), writ_claims_kid(again)) == 0);
		free(a);
		free(b);
	}
	writ_claims_free(again);
	return rc;
}

/* ---- scratch memory: every helper's result lives until pool_drain ---- */

static void **pool;
static size_t npool, cappool;

static void *keep(void *p)
{
	REQUIRE(p != NULL);
	if (npool == cappool) {
		cappool = cappool != 0 ? 2 * cappool : 256;
		pool = realloc(pool, cappool * sizeof(*pool));
		REQUIRE(pool != NULL);
	}
	pool[npool++] = p;
	return p;
}

static void pool_drain(void)
{
	while (npool > 0)
		free(pool[--npool]);
}

__attribute__((format(printf, 1, 2))) static char *fmt(const char *f, ...)
{
	va_list ap;
	int n;
	char *s;

	va_start(ap, f);
	n = vsnprintf(NULL, 0, f, ap);
	va_end(ap);
	REQUIRE(n >= 0);
	s = keep(malloc((size_t)n + 1));
	va_start(ap, f);
	vsnprintf(s, (size_t)n + 1, f, ap);
	va_end(ap);
	return s;
}

static char *b64(const unsigned char *b, size_t n)
{
	return keep(b64url_encode_alloc(b, n));
}

static char *b64s(const char *s)
{
	return b64((const unsigned char *)s, strlen(s));
}

static const char *num(long long v)
{
	return fmt("%lld", v);
}

/* ---- keys and signing ---- */

static EVP_PKEY *keygen(writ_alg alg, size_t rsa_bits)
{
	switch (alg) {
	case WRIT_ALG_ES256: return EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	case WRIT_ALG_ES384: return EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
	case WRIT_ALG_RS256:
	case WRIT_ALG_PS256: return EVP_PKEY_Q_keygen(NULL, NULL, "RSA", rsa_bits);
	case WRIT_ALG_EDDSA: return EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
	default: return NULL;
	}
}

static void tkey_init(tkey *k, writ_alg alg)
{
	writ_jwk *jwk = NULL;
	writ_err err = {0};

	k->alg = alg;
	k->priv = keygen(alg, 2048);
	REQUIRE(k->priv != NULL);
	REQUIRE(writ_jwk_from_pkey(k->priv, alg, &jwk, &err) == WRIT_OK);
	snprintf(k->kid, sizeof(k->kid), "%s", writ_jwk_kid(jwk));
	k->jwk = writ_jwk_to_json(jwk);
	REQUIRE(k->jwk != NULL);
	writ_jwk_free(jwk);
}

static void tkey_clear(tkey *k)
{
	EVP_PKEY_free(k->priv);
	free(k->jwk);
	memset(k, 0, sizeof(*k));
}

/* ECDSA raw r||s (RFC 7518 s.3.4) <-> DER. half is the field size. */
static size_t ecdsa_raw_from_der(const unsigned char *der, size_t dl, size_t half,
                                 unsigned char *raw)
{
	const unsigned char *p = der;
	ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p, (long)dl);

	REQUIRE(es != NULL);
	REQUIRE(BN_bn2binpad(ECDSA_SIG_get0_r(es), raw, (int)half) == (int)half);
	REQUIRE(BN_bn2binpad(ECDSA_SIG_get0_s(es), raw + half, (int)half) == (int)half);
	ECDSA_SIG_free(es);
	return 2 * half;
}

static size_t ecdsa_der_from_raw(const unsigned char *raw, size_t half, unsigned char *der)
{
	ECDSA_SIG *es = ECDSA_SIG_new();
	BIGNUM *r = BN_bin2bn(raw, (int)half, NULL), *s = BN_bin2bn(raw + half, (int)half, NULL);
	unsigned char *p = der;
	int n;

	REQUIRE(es != NULL && r != NULL && s != NULL && ECDSA_SIG_set0(es, r, s) == 1);
	n = i2d_ECDSA_SIG(es, &p);
	REQUIRE(n > 0);
	ECDSA_SIG_free(es);
	return (size_t)n;
}

/* Sign msg with pk the way alg says (hash, padding); ECDSA output is raw
 * r||s sized to pk's curve, whatever the hash. */
static size_t sign_with(EVP_PKEY *pk, writ_alg alg, const char *msg, size_t len, unsigned char *sig)
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	EVP_PKEY_CTX *pctx = NULL;
	const EVP_MD *md = alg == WRIT_ALG_EDDSA   ? NULL
	                   : alg == WRIT_ALG_ES384 ? EVP_sha384()
	                                           : EVP_sha256();
	unsigned char der[SIGBUF];
	size_t dl = sizeof(der);

	REQUIRE(ctx != NULL);
	REQUIRE(EVP_DigestSignInit(ctx, &pctx, md, NULL, pk) == 1);
	if (alg == WRIT_ALG_PS256) {
		REQUIRE(EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) == 1);
		REQUIRE(EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, EVP_sha256()) == 1);
		REQUIRE(EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, 32) == 1);
	} else if (alg == WRIT_ALG_RS256) {
		REQUIRE(EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) == 1);
	}
	REQUIRE(EVP_DigestSign(ctx, der, &dl, (const unsigned char *)msg, len) == 1);
	EVP_MD_CTX_free(ctx);
	if (EVP_PKEY_is_a(pk, "EC"))
		return ecdsa_raw_from_der(der, dl, (size_t)(EVP_PKEY_get_bits(pk) + 7) / 8, sig);
	memcpy(sig, der, dl);
	return dl;
}

/* ---- tokens ---- */

static char *tok_sig(const char *h64, const char *p64, const unsigned char *sig, size_t n)
{
	return fmt("%s.%s.%s", h64, p64, b64(sig, n));
}

/* A token whose signature covers exactly the segment texts given. */
static char *tok_segs(EVP_PKEY *pk, writ_alg alg, const char *h64, const char *p64)
{
	unsigned char sig[SIGBUF];
	const char *in = fmt("%s.%s", h64, p64);
	size_t n = sign_with(pk, alg, in, strlen(in), sig);

	return tok_sig(h64, p64, sig, n);
}

static char *tok(const tkey *k, const char *hdr, const char *payload)
{
	return tok_segs(k->priv, k->alg, b64s(hdr), b64s(payload));
}

static const char *hdr_typ(const tkey *k, const char *typ)
{
	return fmt("{\"alg\":\"%s\",\"typ\":\"%s\",\"kid\":\"%s\"}", writ_alg_name(k->alg), typ,
	           k->kid);
}

static const char *hdr(const tkey *k)
{
	return hdr_typ(k, "at+jwt");
}

/* A claims set; each argument is a JSON value, or NULL to leave it out. */
static const char *claims(const char *iss, const char *aud, const char *iat, const char *nbf,
                          const char *exp)
{
	const char *s = "{\"sub\":\"agent-1\",\"client_id\":\"agent-1\",\"scope\":\"read\"";

	if (iss != NULL)
		s = fmt("%s,\"iss\":%s", s, iss);
	if (aud != NULL)
		s = fmt("%s,\"aud\":%s", s, aud);
	if (iat != NULL)
		s = fmt("%s,\"iat\":%s", s, iat);
	if (nbf != NULL)
		s = fmt("%s,\"nbf\":%s", s, nbf);
	if (exp != NULL)
		s = fmt("%s,\"exp\":%s", s, exp);
	return fmt("%s,\"jti\":\"Gq0B7mYy1uRjZ3vJm5sQ2w\"}", s);
}

#define QISS "\"" ISS "\""
#define QAUD "\"" AUD "\""

static const char *times(long long iat, long long nbf, long long exp)
{
	return claims(QISS, QAUD, num(iat), num(nbf), num(exp));
}

static const char *std_claims(void)
{
	return times(NOW, NOW, NOW + 300);
}

static writ_verify_opts std_opts(void)
{
	writ_verify_opts o = {.iss = ISS, .aud = AUD, .typ = "at+jwt", .now = NOW};
	return o;
}

/* Verify; on failure the claims pointer must come back NULL and the error
 * detail must name the same code. */
static writ_rc vfy_opts(const char *t, const writ_verify_opts *o)
{
	static char sentinel;
	writ_claims *c = (writ_claims *)(void *)&sentinel;
	writ_err err = {0};
	writ_rc rc = verify_any(t, strlen(t), o, &c, &err);

	if (rc == WRIT_OK) {
		CHECK(c != NULL && c != (writ_claims *)(void *)&sentinel);
		writ_claims_free(c);
	} else {
		CHECK(c == NULL);
		CHECK(err.rc == rc);
		CHECK(err.msg[0] != '\0');
	}
	return rc;
}

static writ_rc vfy(const char *t)
{
	writ_verify_opts o = std_opts();
	return vfy_opts(t, &o);
}

static writ_rc parse_only(const char *t)
{
	writ_jws j;
	writ_rc rc = writ_jws_parse(t, strlen(t), &j, NULL);

	writ_jws_clear(&j);
	return rc;
}

/* ---- JWK helpers ---- */

/* jwk with member set to the JSON text value, or deleted if value is NULL. */
static const char *jwk_with(const char *jwk, const char *member, const char *value)
{
	json_error_t je;
	json_t *o = json_loads(jwk, 0, &je), *v;

	REQUIRE(o != NULL);
	if (value == NULL) {
		json_object_del(o, member);
	} else {
		v = json_loads(value, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
		REQUIRE(v != NULL);
		REQUIRE(json_object_set_new(o, member, v) == 0);
	}
	value = keep(json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER));
	json_decref(o);
	return value;
}

static const char *jwks_of(const char *a, const char *b)
{
	return b != NULL ? fmt("{\"keys\":[%s,%s]}", a, b) : fmt("{\"keys\":[%s]}", a);
}

static writ_rc set_parse(const char *json, unsigned flags)
{
	writ_jwks *s = NULL;
	writ_err err = {0};
	writ_rc rc = writ_jwks_parse(json, strlen(json), flags, &s, &err);

	if (rc == WRIT_OK)
		CHECK(s != NULL && writ_jwks_count(s) > 0);
	else
		CHECK(s == NULL && err.rc == rc);
	writ_jwks_free(s);
	return rc;
}

static writ_rc key_parse(const char *json)
{
	writ_jwk *k = NULL;
	writ_rc rc = writ_jwk_parse(json, strlen(json), &k, NULL);

	CHECK((rc == WRIT_OK) == (k != NULL));
	writ_jwk_free(k);
	return rc;
}

/* b64url member of a JWK JSON, decoded. */
static size_t jwk_member(const char *jwk, const char *member, unsigned char *out)
{
	json_error_t je;
	json_t *o = json_loads(jwk, 0, &je);
	const char *s;
	size_t n = 0;

	REQUIRE(o != NULL && json_is_string(json_object_get(o, member)));
	s = json_string_value(json_object_get(o, member));
	REQUIRE(b64url_decode(s, strlen(s), out, &n) == 0);
	json_decref(o);
	return n;
}

static const char *jwk_member_b64(const char *jwk, const char *member, const unsigned char *v,
                                  size_t n)
{
	return jwk_with(jwk, member, fmt("\"%s\"", b64(v, n)));
}

/* ======================================================================= */

/* RFC 8725 s.2.1 / CVE-2015-9235: "alg":"none" in any spelling. */
static void test_alg_none_any_case(void)
{
	static const char *const spell[] = {"none", "NONE", "nOnE", "None"};
	const tkey *k = &keys[K_ES256];
	size_t i;

	for (i = 0; i < sizeof(spell) / sizeof(spell[0]); i++) {
		const char *h64 = b64s(
		    fmt("{\"alg\":\"%s\",\"typ\":\"at+jwt\",\"kid\":\"%s\"}", spell[i], k->kid));
		const char *bare = b64s(fmt("{\"alg\":\"%s\"}", spell[i]));
		const char *p64 = b64s(std_claims());

		CHECK(vfy(fmt("%s.%s.", h64, p64)) != WRIT_OK);
		CHECK(vfy(fmt("%s.%s.", bare, p64)) != WRIT_OK);
		/* A real ES256 signature does not make "none" acceptable. */
		CHECK_RC(vfy(tok_segs(k->priv, k->alg, h64, p64)), WRIT_ERR_ALG);
		CHECK_RC(vfy(tok_segs(k->priv, k->alg, bare, p64)), WRIT_ERR_ALG);
		CHECK_RC(parse_only(tok_segs(k->priv, k->alg, bare, p64)), WRIT_ERR_ALG);
	}
}

/* HMAC keyed with public bytes the attacker knows (CVE-2016-10555). */
static const char *hmac_token(const char *alg, const tkey *k, const void *key, size_t keylen)
{
	const char *h64 =
	    b64s(fmt("{\"alg\":\"%s\",\"typ\":\"at+jwt\",\"kid\":\"%s\"}", alg, k->kid));
	const char *p64 = b64s(std_claims());
	const char *in = fmt("%s.%s", h64, p64);
	unsigned char mac[EVP_MAX_MD_SIZE];
	unsigned maclen = 0;
	const EVP_MD *md = strcmp(alg, "HS512") == 0 ? EVP_sha512() : EVP_sha256();

	REQUIRE(HMAC(md, key, (int)keylen, (const unsigned char *)in, strlen(in), mac, &maclen) !=
	        NULL);
	return tok_sig(h64, p64, mac, maclen);
}

static void test_hs256_with_public_key_pem(void)
{
	static const int which[] = {K_ES256, K_RS256, K_PS256, K_EDDSA};
	size_t i;

	for (i = 0; i < sizeof(which) / sizeof(which[0]); i++) {
		const tkey *k = &keys[which[i]];
		BIO *b = BIO_new(BIO_s_mem());
		char *pem = NULL;
		long n;

		REQUIRE(b != NULL && PEM_write_bio_PUBKEY(b, k->priv) == 1);
		n = BIO_get_mem_data(b, &pem);
		REQUIRE(n > 0);
		CHECK_RC(vfy(hmac_token("HS256", k, pem, (size_t)n)), WRIT_ERR_ALG);
		CHECK_RC(vfy(hmac_token("HS512", k, pem, (size_t)n)), WRIT_ERR_ALG);
		BIO_free(b);
	}
}

static void test_hs256_with_public_key_jwk(void)
{
	size_t i;

	for (i = 0; i < K_COUNT; i++) {
		const tkey *k = &keys[i];
		const char *s = jwks_of(k->jwk, NULL);

		CHECK_RC(vfy(hmac_token("HS256", k, k->jwk, strlen(k->jwk))), WRIT_ERR_ALG);
		CHECK_RC(vfy(hmac_token("HS256", k, s, strlen(s))), WRIT_ERR_ALG);
	}
}

/* The key pins the algorithm; a header naming another one is refused even
 * when the signature is valid under the named algorithm. */
static void test_alg_other_than_keys(void)
{
	const tkey *es = &keys[K_ES256], *es384 = &keys[K_ES384], *rs = &keys[K_RS256];
	const tkey *ps = &keys[K_PS256], *ed = &keys[K_EDDSA];
	const char *p64 = b64s(std_claims());
#define H(alg, k) b64s(fmt("{\"alg\":\"%s\",\"typ\":\"at+jwt\",\"kid\":\"%s\"}", alg, (k)->kid))

	/* RS256 header on the EC key, signed with an RSA key. */
	CHECK_RC(vfy(tok_segs(rs->priv, WRIT_ALG_RS256, H("RS256", es), p64)), WRIT_ERR_ALG);
	/* ES384 header on the ES256 key: SHA-384 over P-256, and a P-384 sig. */
	CHECK_RC(vfy(tok_segs(es->priv, WRIT_ALG_ES384, H("ES384", es), p64)), WRIT_ERR_ALG);
	CHECK_RC(vfy(tok_segs(es384->priv, WRIT_ALG_ES384, H("ES384", es), p64)), WRIT_ERR_ALG);
	/* ES256 header on the ES384 key: SHA-256 over P-384. */
	CHECK_RC(vfy(tok_segs(es384->priv, WRIT_ALG_ES256, H("ES256", es384), p64)), WRIT_ERR_ALG);
	/* PS256 on the RS256 key, signed by that very key with PSS, and back. */
	CHECK_RC(vfy(tok_segs(rs->priv, WRIT_ALG_PS256, H("PS256", rs), p64)), WRIT_ERR_ALG);
	CHECK_RC(vfy(tok_segs(ps->priv, WRIT_ALG_RS256, H("RS256", ps), p64)), WRIT_ERR_ALG);
	CHECK_RC(vfy(tok_segs(ed->priv, WRIT_ALG_EDDSA, H("EdDSA", es), p64)), WRIT_ERR_ALG);
	CHECK_RC(vfy(tok_segs(es->priv, WRIT_ALG_ES256, H("ES256", ed), p64)), WRIT_ERR_ALG);
	/* Names are case-sensitive (RFC 7515 s.4.1.1). */
	CHECK_RC(vfy(tok_segs(es->priv, WRIT_ALG_ES256, H("es256", es), p64)), WRIT_ERR_ALG);
	CHECK_RC(vfy(tok_segs(es->priv, WRIT_ALG_ES256, H("ES256 ", es), p64)), WRIT_ERR_ALG);
	CHECK_RC(vfy(tok_segs(ed->priv, WRIT_ALG_EDDSA, H("EDDSA", ed), p64)), WRIT_ERR_ALG);
	CHECK_RC(vfy(tok_segs(ed->priv, WRIT_ALG_EDDSA, H("Ed25519", ed), p64)), WRIT_ERR_ALG);
#undef H
	/* alg missing or not a string. */
	CHECK_RC(vfy(tok_segs(es->priv, es->alg,
	                      b64s(fmt("{\"typ\":\"at+jwt\",\"kid\":\"%s\"}", es->kid)), p64)),
	         WRIT_ERR_HEADER);
	CHECK_RC(vfy(tok_segs(es->priv, es->alg,
	                      b64s(fmt("{\"alg\":[\"ES256\"],\"kid\":\"%s\"}", es->kid)), p64)),
	         WRIT_ERR_HEADER);
	/* Control: the right header with the same signer verifies. */
	CHECK_RC(vfy(tok(es, hdr(es), std_claims())), WRIT_OK);
}

static void test_unknown_kid(void)
{
	const tkey *es = &keys[K_ES256];
	const char *p64 = b64s(std_claims());
	char up[WRIT_KID_MAX + 1];
	size_t n = strlen(es->kid);

	/* A well-formed token from a key the set does not hold. */
	CHECK_RC(vfy(tok(&stranger, hdr(&stranger), std_claims())), WRIT_ERR_UNKNOWN_KID);
	/* No kid: writ never tries every key in the set. */
	CHECK_RC(
	    vfy(tok_segs(es->priv, es->alg, b64s("{\"alg\":\"ES256\",\"typ\":\"at+jwt\"}"), p64)),
	    WRIT_ERR_UNKNOWN_KID);
	CHECK_RC(vfy(tok_segs(es->priv, es->alg,
	                      b64s("{\"alg\":\"ES256\",\"typ\":\"at+jwt\",\"kid\":\"\"}"), p64)),
	         WRIT_ERR_UNKNOWN_KID);
	/* Near misses: a prefix, an extension, another case. */
	CHECK_RC(
	    vfy(tok_segs(es->priv, es->alg,
	                 b64s(fmt("{\"alg\":\"ES256\",\"kid\":\"%.*s\"}", (int)(n - 1), es->kid)),
	                 p64)),
	    WRIT_ERR_UNKNOWN_KID);
	CHECK_RC(vfy(tok_segs(es->priv, es->alg,
	                      b64s(fmt("{\"alg\":\"ES256\",\"kid\":\"%sA\"}", es->kid)), p64)),
	         WRIT_ERR_UNKNOWN_KID);
	memcpy(up, es->kid, n + 1);
	for (size_t i = 0; i < n; i++)
		if (up[i] >= 'a' && up[i] <= 'z') {
			up[i] = (char)(up[i] - 'a' + 'A');
			break;
		}
	REQUIRE(strcmp(up, es->kid) != 0);
	CHECK_RC(vfy(tok_segs(es->priv, es->alg, b64s(hdr_typ(es, "at+jwt")), p64)), WRIT_OK);
	CHECK_RC(vfy(tok_segs(es->priv, es->alg,
	                      b64s(fmt("{\"alg\":\"ES256\",\"kid\":\"%s\"}", up)), p64)),
	         WRIT_ERR_UNKNOWN_KID);
	/* kid of the wrong type. */
	CHECK_RC(vfy(tok_segs(es->priv, es->alg, b64s("{\"alg\":\"ES256\",\"kid\":5}"), p64)),
	         WRIT_ERR_HEADER);
}

static void test_kid_path_traversal(void)
{
	static const char *const bad[] = {"../x", "a/b", "..", "/etc/passwd", "a\\\\b"};
	const tkey *es = &keys[K_ES256];
	const char *p64 = b64s(std_claims());
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		CHECK_RC(
		    vfy(tok_segs(es->priv, es->alg,
		                 b64s(fmt("{\"alg\":\"ES256\",\"kid\":\"%s\"}", bad[i])), p64)),
		    WRIT_ERR_UNKNOWN_KID);
	CHECK_RC(vfy(tok_segs(es->priv, es->alg,
	                      b64s(fmt("{\"alg\":\"ES256\",\"kid\":\"../%s\"}", es->kid)), p64)),
	         WRIT_ERR_UNKNOWN_KID);
	/* An embedded NUL must not truncate the kid to a known one. */
	CHECK_RC(vfy(tok_segs(es->priv, es->alg, b64s("{\"alg\":\"ES256\",\"kid\":\"a\\u0000b\"}"),
	                      p64)),
	         WRIT_ERR_MALFORMED);
	CHECK_RC(
	    vfy(tok_segs(es->priv, es->alg,
	                 b64s(fmt("{\"alg\":\"ES256\",\"kid\":\"%s\\u0000../x\"}", es->kid)), p64)),
	    WRIT_ERR_MALFORMED);

	/* In a JWK Set such a kid is refused at parse time, flag or not. */
	{
		static const char *const setbad[] = {
		    "\"../x\"", "\"a/b\"", "\"a\\u0000b\"", "\"..\"",   "\"\"", "\"a b\"",
		    "\"a.b\"",  "5",       "null",          "\"k\\\"\""};
		for (i = 0; i < sizeof(setbad) / sizeof(setbad[0]); i++) {
			const char *j = jwk_with(es->jwk, "kid", setbad[i]);
			CHECK_RC(set_parse(jwks_of(j, NULL), 0), WRIT_ERR_JWK);
			CHECK_RC(set_parse(jwks_of(j, NULL), WRIT_JWKS_KID_IS_THUMBPRINT),
			         WRIT_ERR_JWK);
			CHECK_RC(key_parse(j), WRIT_ERR_JWK);
		}
	}
	{
		char longkid[WRIT_KID_MAX + 2];
		memset(longkid, 'A', sizeof(longkid) - 1);
		longkid[WRIT_KID_MAX + 1] = '\0';
		CHECK_RC(
		    set_parse(jwks_of(jwk_with(es->jwk, "kid", fmt("\"%s\"", longkid)), NULL), 0),
		    WRIT_ERR_JWK);
		longkid[WRIT_KID_MAX] = '\0';
		CHECK_RC(
		    set_parse(jwks_of(jwk_with(es->jwk, "kid", fmt("\"%s\"", longkid)), NULL), 0),
		    WRIT_OK);
	}
}

/* RFC 8725 s.3.10: headers that hand the trust decision to the token. */
static void test_forbidden_headers(void)
{
	const tkey *es = &keys[K_ES256];
	const char *p64 = b64s(std_claims());
	const char *members[] = {
	    "\"jku\":\"https://evil.example/jwks.json\"",
	    "\"x5u\":\"https://evil.example/cert.pem\"",
	    fmt("\"jwk\":%s", es->jwk),
	    "\"x5c\":[\"MIIBszCCAVmgAwIBAgIUSa2w\"]",
	    "\"crit\":[\"exp\"],\"exp\":1",
	    "\"crit\":[]",
	    "\"b64\":false",
	    "\"cty\":\"JWT\"",
	    "\"x5t#S256\":\"AAAA\"",
	};
	size_t i;

	for (i = 0; i < sizeof(members) / sizeof(members[0]); i++) {
		const char *h = fmt("{\"alg\":\"ES256\",\"typ\":\"at+jwt\",\"kid\":\"%s\",%s}",
		                    es->kid, members[i]);
		const char *t = tok_segs(es->priv, es->alg, b64s(h), p64);
		CHECK_RC(vfy(t), WRIT_ERR_HEADER);
		CHECK_RC(parse_only(t), WRIT_ERR_HEADER);
	}
	/* Order must not matter: the forbidden member first. */
	CHECK_RC(vfy(tok_segs(es->priv, es->alg,
	                      b64s(fmt("{\"jku\":\"https://evil.example/\",\"alg\":\"ES256\","
	                               "\"kid\":\"%s\"}",
	                               es->kid)),
	                      p64)),
	         WRIT_ERR_HEADER);
}

/* Valid raw ECDSA signature over the standard token for key k. */
static size_t ecdsa_good(const tkey *k, const char **h64, const char **p64, unsigned char *sig)
{
	const char *in;

	*h64 = b64s(hdr(k));
	*p64 = b64s(std_claims());
	in = fmt("%s.%s", *h64, *p64);
	return sign_with(k->priv, k->alg, in, strlen(in), sig);
}

/* CVE-2022-21449 ("psychic signatures"): r = s = 0 verified everything. */
static void test_ecdsa_r_or_s_zero(void)
{
	static const int which[] = {K_ES256, K_ES384};
	size_t w;

	for (w = 0; w < 2; w++) {
		const tkey *k = &keys[which[w]];
		const char *h64, *p64;
		unsigned char sig[SIGBUF], bad[SIGBUF];
		size_t n = ecdsa_good(k, &h64, &p64, sig), half = n / 2;

		CHECK_RC(vfy(tok_sig(h64, p64, sig, n)), WRIT_OK);
		memcpy(bad, sig, n);
		memset(bad, 0, half);
		CHECK_RC(vfy(tok_sig(h64, p64, bad, n)), WRIT_ERR_SIGNATURE);
		memcpy(bad, sig, n);
		memset(bad + half, 0, half);
		CHECK_RC(vfy(tok_sig(h64, p64, bad, n)), WRIT_ERR_SIGNATURE);
		memset(bad, 0, n);
		CHECK_RC(vfy(tok_sig(h64, p64, bad, n)), WRIT_ERR_SIGNATURE);
	}
}

/* r, s outside [1, n-1]: n itself, n + 1, 2^bits - 1, and r + n (which
 * is r mod n: a verifier that reduces first would accept it). */
static void test_ecdsa_r_or_s_ge_n(void)
{
	static const int which[] = {K_ES256, K_ES384};
	static const int nids[] = {NID_X9_62_prime256v1, NID_secp384r1};
	size_t w;

	for (w = 0; w < 2; w++) {
		const tkey *k = &keys[which[w]];
		EC_GROUP *g = EC_GROUP_new_by_curve_name(nids[w]);
		const char *h64, *p64;
		unsigned char sig[SIGBUF], bad[SIGBUF];
		size_t n = ecdsa_good(k, &h64, &p64, sig), half = n / 2, part, v;
		BIGNUM *order = NULL, *x = BN_new();

		REQUIRE(g != NULL && x != NULL);
		order = BN_dup(EC_GROUP_get0_order(g));
		REQUIRE(order != NULL);
		for (part = 0; part < 2; part++) {
			for (v = 0; v < 4; v++) {
				memcpy(bad, sig, n);
				if (v == 0) {
					REQUIRE(BN_copy(x, order) != NULL);
				} else if (v == 1) {
					REQUIRE(BN_copy(x, order) != NULL && BN_add_word(x, 1));
				} else if (v == 2) {
					memset(bad + part * half, 0xff, half);
					CHECK_RC(vfy(tok_sig(h64, p64, bad, n)),
					         WRIT_ERR_SIGNATURE);
					continue;
				} else {
					/* component + n, when it still fits in half bytes */
					BIGNUM *c = BN_bin2bn(sig + part * half, (int)half, NULL);
					REQUIRE(c != NULL && BN_add(x, c, order));
					BN_free(c);
					if ((size_t)BN_num_bytes(x) > half)
						continue;
				}
				REQUIRE(BN_bn2binpad(x, bad + part * half, (int)half) == (int)half);
				CHECK_RC(vfy(tok_sig(h64, p64, bad, n)), WRIT_ERR_SIGNATURE);
			}
		}
		/* A component that fits below n is still checked: n - 1 is in
		 * range but wrong. */
		memcpy(bad, sig, n);
		REQUIRE(BN_copy(x, order) != NULL && BN_sub_word(x, 1));
		REQUIRE(BN_bn2binpad(x, bad, (int)half) == (int)half);
		CHECK_RC(vfy(tok_sig(h64, p64, bad, n)), WRIT_ERR_SIGNATURE);
		BN_free(x);
		BN_free(order);
		EC_GROUP_free(g);
	}
}

static void test_sig_wrong_length(void)
{
	size_t i;

	for (i = 0; i < K_COUNT; i++) {
		const tkey *k = &keys[i];
		const char *h64 = b64s(hdr(k)), *p64 = b64s(std_claims());
		const char *in = fmt("%s.%s", h64, p64);
		unsigned char sig[SIGBUF], bad[SIGBUF + 1];
		size_t n = sign_with(k->priv, k->alg, in, strlen(in), sig);

		CHECK_RC(vfy(tok_sig(h64, p64, sig, n)), WRIT_OK);
		/* one byte short: the last dropped, the first dropped */
		CHECK_RC(vfy(tok_sig(h64, p64, sig, n - 1)), WRIT_ERR_SIGNATURE);
		CHECK_RC(vfy(tok_sig(h64, p64, sig + 1, n - 1)), WRIT_ERR_SIGNATURE);
		/* one byte long: a zero appended, a zero prepended */
		memcpy(bad, sig, n);
		bad[n] = 0;
		CHECK_RC(vfy(tok_sig(h64, p64, bad, n + 1)), WRIT_ERR_SIGNATURE);
		bad[0] = 0;
		memcpy(bad + 1, sig, n);
		CHECK_RC(vfy(tok_sig(h64, p64, bad, n + 1)), WRIT_ERR_SIGNATURE);
		/* empty signature segment */
		CHECK_RC(vfy(fmt("%s.%s.", h64, p64)), WRIT_ERR_MALFORMED);
		if (k->alg == WRIT_ALG_ES256 || k->alg == WRIT_ALG_ES384) {
			/* the DER form OpenSSL produces is not JWS (RFC 7518 s.3.4) */
			size_t dl = ecdsa_der_from_raw(sig, n / 2, bad);
			CHECK_RC(vfy(tok_sig(h64, p64, bad, dl)), WRIT_ERR_SIGNATURE);
			/* and the other curve's length */
			memset(bad, 0x11, sizeof(bad));
			CHECK_RC(vfy(tok_sig(h64, p64, bad, n == 64 ? 96 : 64)),
			         WRIT_ERR_SIGNATURE);
		}
	}
	/* One byte of signature: 2 base64url characters. */
	{
		const tkey *k = &keys[K_ES256];
		CHECK_RC(vfy(fmt("%s.%s.AA", b64s(hdr(k)), b64s(std_claims()))),
		         WRIT_ERR_SIGNATURE);
	}
}

static int b64val(char c)
{
	static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	const char *p = strchr(a, c);
	REQUIRE(p != NULL && c != '\0');
	return (int)(p - a);
}

static char b64chr(int v)
{
	return "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"[v & 63];
}

/* seg with its last character's unused low bits set (a second spelling
 * of the same bytes). seg's length must not be a multiple of 4. */
static const char *stray_bits(const char *seg, int bits)
{
	char *s = fmt("%s", seg);
	size_t n = strlen(s);

	REQUIRE(n % 4 == 2 || n % 4 == 3);
	s[n - 1] = b64chr(b64val(s[n - 1]) | bits);
	return s;
}

/* JSON text padded with spaces until its length is 3k + mod, so its
 * encoding ends in a partial group (mod 1: 2 chars, mod 2: 3 chars). */
static const char *pad_json(const char *j, size_t mod)
{
	while (strlen(j) % 3 != mod)
		j = fmt("%s ", j);
	return j;
}

/* first occurrence of from in s replaced by to; NULL if none. */
static const char *subst(const char *s, char from, char to)
{
	char *c = fmt("%s", s), *p = strchr(c, from);

	if (p == NULL)
		return NULL;
	*p = to;
	return c;
}

static void test_noncanonical_base64url(void)
{
	const tkey *k = &keys[K_ES256];
	/* "~~~" encodes as "fn5-" and "???" as "Pz8_": the payload's encoding
	 * holds '-' and '_' whatever the alignment. */
	const char *pl =
	    claims(QISS, QAUD, num(NOW), num(NOW), fmt("%lld,\"x\":\"~~~~~~??????\"", NOW + 300));
	size_t m;

	for (m = 1; m <= 2; m++) {
		const char *h64 = b64s(pad_json(hdr(k), m)), *p64 = b64s(pad_json(pl, 3 - m));
		const char *good = tok_segs(k->priv, k->alg, h64, p64), *s;

		/* Control: the canonical spelling, padded JSON and all, verifies. */
		CHECK_RC(vfy(good), WRIT_OK);
		/* Stray trailing bits in the header, then the payload. */
		CHECK_RC(vfy(tok_segs(k->priv, k->alg, stray_bits(h64, 1), p64)),
		         WRIT_ERR_MALFORMED);
		CHECK_RC(vfy(tok_segs(k->priv, k->alg, stray_bits(h64, m == 1 ? 0x0f : 3), p64)),
		         WRIT_ERR_MALFORMED);
		CHECK_RC(vfy(tok_segs(k->priv, k->alg, h64, stray_bits(p64, 1))),
		         WRIT_ERR_MALFORMED);
		CHECK_RC(vfy(tok_segs(k->priv, k->alg, h64, stray_bits(p64, m == 1 ? 3 : 0x0f))),
		         WRIT_ERR_MALFORMED);
		/* '=' padding. */
		CHECK_RC(vfy(tok_segs(k->priv, k->alg, fmt("%s%s", h64, m == 1 ? "==" : "="), p64)),
		         WRIT_ERR_MALFORMED);
		CHECK_RC(vfy(tok_segs(k->priv, k->alg, h64, fmt("%s%s", p64, m == 1 ? "=" : "=="))),
		         WRIT_ERR_MALFORMED);
		/* Standard-alphabet characters. */
		s = subst(p64, '-', '+');
		REQUIRE(s != NULL);
		CHECK_RC(vfy(tok_segs(k->priv, k->alg, h64, s)), WRIT_ERR_MALFORMED);
		s = subst(p64, '_', '/');
		REQUIRE(s != NULL);
		CHECK_RC(vfy(tok_segs(k->priv, k->alg, h64, s)), WRIT_ERR_MALFORMED);
		/* Whitespace inside or around a segment. */
		CHECK_RC(vfy(tok_segs(k->priv, k->alg, fmt(" %s", h64), p64)), WRIT_ERR_MALFORMED);
		CHECK_RC(vfy(tok_segs(k->priv, k->alg, h64, fmt("%s\n", p64))), WRIT_ERR_MALFORMED);
		CHECK_RC(vfy(tok_segs(k->priv, k->alg, h64, fmt("%.8s\t%s", p64, p64 + 8))),
		         WRIT_ERR_MALFORMED);
		CHECK_RC(vfy(fmt("%s\r\n", good)), WRIT_ERR_MALFORMED);
		CHECK_RC(vfy(fmt("%s ", good)), WRIT_ERR_MALFORMED);
		CHECK_RC(vfy(fmt(" %s", good)), WRIT_ERR_MALFORMED);
	}

	/* The signature segment: its bytes stay the same, only the spelling
	 * changes, so nothing but the decoder can refuse these. ES256 gives 64
	 * bytes = 86 characters, a partial last group. Sign until the random
	 * signature's encoding holds both '-' and '_'. */
	{
		const char *h64 = b64s(hdr(k)), *p64 = b64s(std_claims()), *sig64 = NULL, *t;
		int tries;

		for (tries = 0; tries < 200; tries++) {
			t = tok_segs(k->priv, k->alg, h64, p64);
			sig64 = strrchr(t, '.') + 1;
			if (strchr(sig64, '-') != NULL && strchr(sig64, '_') != NULL)
				break;
		}
		REQUIRE(tries < 200);
		CHECK_RC(vfy(fmt("%s.%s.%s", h64, p64, sig64)), WRIT_OK);
		CHECK_RC(vfy(fmt("%s.%s.%s", h64, p64, stray_bits(sig64, 1))), WRIT_ERR_MALFORMED);
		CHECK_RC(vfy(fmt("%s.%s.%s", h64, p64, stray_bits(sig64, 8))), WRIT_ERR_MALFORMED);
		CHECK_RC(vfy(fmt("%s.%s.%s==", h64, p64, sig64)), WRIT_ERR_MALFORMED);
		CHECK_RC(vfy(fmt("%s.%s.%s", h64, p64, subst(sig64, '-', '+'))),
		         WRIT_ERR_MALFORMED);
		CHECK_RC(vfy(fmt("%s.%s.%s", h64, p64, subst(sig64, '_', '/'))),
		         WRIT_ERR_MALFORMED);
		CHECK_RC(vfy(fmt("%s.%s.%.20s %s", h64, p64, sig64, sig64 + 20)),
		         WRIT_ERR_MALFORMED);
	}
}

/* A fourth segment (JWE has five) or a trailing dot. */
static void test_fourth_segment(void)
{
	const tkey *k = &keys[K_ES256];
	const char *t = tok(k, hdr(k), std_claims());
	const char *sig64 = strrchr(t, '.') + 1;

	CHECK_RC(vfy(t), WRIT_OK);
	CHECK_RC(vfy(fmt("%s.", t)), WRIT_ERR_MALFORMED);
	CHECK_RC(vfy(fmt("%s.e30", t)), WRIT_ERR_MALFORMED);
	CHECK_RC(vfy(fmt("%s.%s", t, sig64)), WRIT_ERR_MALFORMED);
	CHECK_RC(vfy(fmt("%s.AAAA.BBBB", t)), WRIT_ERR_MALFORMED);
	CHECK_RC(vfy(fmt("%.*s", (int)(sig64 - 1 - t), t)), WRIT_ERR_MALFORMED);
	CHECK_RC(vfy(".."), WRIT_ERR_MALFORMED);
	CHECK_RC(vfy(""), WRIT_ERR_MALFORMED);
	CHECK_RC(vfy(fmt(".%s", t)), WRIT_ERR_MALFORMED);
}

/* RFC 8725 s.3.6: "last one wins" lets two parsers read one token two ways. */
static void test_duplicate_json_keys(void)
{
	const tkey *k = &keys[K_ES256];
	const char *pl = std_claims();
	const char *hdrs[] = {
	    fmt("{\"alg\":\"ES256\",\"alg\":\"ES256\",\"typ\":\"at+jwt\",\"kid\":\"%s\"}", k->kid),
	    fmt("{\"alg\":\"none\",\"alg\":\"ES256\",\"typ\":\"at+jwt\",\"kid\":\"%s\"}", k->kid),
	    fmt("{\"alg\":\"ES256\",\"typ\":\"at+jwt\",\"kid\":\"x\",\"kid\":\"%s\"}", k->kid),
	    fmt("{\"alg\":\"ES256\",\"typ\":\"JWT\",\"typ\":\"at+jwt\",\"kid\":\"%s\"}", k->kid),
	};
	const char *pls[] = {
	    fmt("{\"aud\":\"victim\",%s", pl + 1),
	    fmt("{\"exp\":%lld,%s", NOW + 3000, pl + 1),
	    fmt("{\"iss\":\"https://evil.example\",%s", pl + 1),
	    fmt("{\"sub\":\"admin\",%s", pl + 1),
	    fmt("{\"cnf\":{\"jkt\":\"a\",\"jkt\":\"b\"},%s", pl + 1),
	    fmt("{\"lim\":[{\"rps\":5,\"rps\":500}],%s", pl + 1),
	};
	size_t i;

	CHECK_RC(vfy(tok(k, hdr(k), pl)), WRIT_OK);
	CHECK_RC(vfy(tok(k, hdr(k), fmt("{\"cnf\":{\"jkt\":\"a\"},%s", pl + 1))), WRIT_OK);
	for (i = 0; i < sizeof(hdrs) / sizeof(hdrs[0]); i++)
		CHECK_RC(vfy(tok(k, hdrs[i], pl)), WRIT_ERR_MALFORMED);
	for (i = 0; i < sizeof(pls) / sizeof(pls[0]); i++)
		CHECK_RC(vfy(tok(k, hdr(k), pls[i])), WRIT_ERR_MALFORMED);
}

/* NumericDate here is an integer in [0, 2^53] (SPEC s.3). */
static void test_time_claims_types(void)
{
	static const char *const bad[] = {"1.5",
	                                  "1e9",
	                                  "1700000000.0",
	                                  "\"1700000000\"",
	                                  "\"123\"",
	                                  "-1",
	                                  "9007199254740993",
	                                  "true",
	                                  "null",
	                                  "[1700000000]",
	                                  "{}",
	                                  "false"};
	const tkey *k = &keys[K_ES256];
	const char *iat = num(NOW), *nbf = num(NOW), *exp = num(NOW + 300);
	writ_verify_opts o = std_opts();
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		CHECK_RC(vfy(tok(k, hdr(k), claims(QISS, QAUD, bad[i], nbf, exp))), WRIT_ERR_CLAIM);
		CHECK_RC(vfy(tok(k, hdr(k), claims(QISS, QAUD, iat, bad[i], exp))), WRIT_ERR_CLAIM);
		CHECK_RC(vfy(tok(k, hdr(k), claims(QISS, QAUD, iat, nbf, bad[i]))), WRIT_ERR_CLAIM);
	}
	/* Beyond int64 or double range: not even parsed. */
	CHECK(vfy(tok(k, hdr(k), claims(QISS, QAUD, iat, nbf, "18446744073709551616"))) != WRIT_OK);
	CHECK(vfy(tok(k, hdr(k), claims(QISS, QAUD, iat, nbf, "1e400"))) != WRIT_OK);
	/* exp and iat required, nbf optional. */
	CHECK_RC(vfy(tok(k, hdr(k), claims(QISS, QAUD, iat, nbf, NULL))), WRIT_ERR_CLAIM);
	CHECK_RC(vfy(tok(k, hdr(k), claims(QISS, QAUD, NULL, nbf, exp))), WRIT_ERR_CLAIM);
	CHECK_RC(vfy(tok(k, hdr(k), claims(QISS, QAUD, iat, NULL, exp))), WRIT_OK);
	/* The 2^53 boundary itself. */
	o.now = TWO53 - 100;
	CHECK_RC(
	    vfy_opts(tok(k, hdr(k), claims(QISS, QAUD, num(TWO53 - 300), NULL, num(TWO53))), &o),
	    WRIT_OK);
	CHECK_RC(
	    vfy_opts(tok(k, hdr(k), claims(QISS, QAUD, num(TWO53 - 299), NULL, num(TWO53 + 1))),
	             &o),
	    WRIT_ERR_CLAIM);
}

static void test_expired(void)
{
	const tkey *k = &keys[K_ES256];
	writ_verify_opts o = std_opts();

	CHECK_RC(vfy(tok(k, hdr(k), times(NOW - 300, NOW - 300, NOW + 1))), WRIT_OK);
	CHECK_RC(vfy(tok(k, hdr(k), times(NOW - 300, NOW - 300, NOW))), WRIT_ERR_EXPIRED);
	CHECK_RC(vfy(tok(k, hdr(k), times(NOW - 301, NOW - 301, NOW - 1))), WRIT_ERR_EXPIRED);
	CHECK_RC(vfy(tok(k, hdr(k), times(NOW - 3600, NOW - 3600, NOW - 3000))), WRIT_ERR_EXPIRED);
	/* Leeway extends exp by exactly that many seconds. */
	o.leeway = 30;
	CHECK_RC(vfy_opts(tok(k, hdr(k), times(NOW - 329, NOW - 329, NOW - 29)), &o), WRIT_OK);
	CHECK_RC(vfy_opts(tok(k, hdr(k), times(NOW - 330, NOW - 330, NOW - 30)), &o),
	         WRIT_ERR_EXPIRED);
}

static void test_not_yet_valid(void)
{
	const tkey *k = &keys[K_ES256];
	writ_verify_opts o = std_opts();

	CHECK_RC(vfy(tok(k, hdr(k), times(NOW, NOW + 1, NOW + 300))), WRIT_ERR_NOT_YET_VALID);
	CHECK_RC(vfy(tok(k, hdr(k), times(NOW + 1, NOW + 1, NOW + 300))), WRIT_ERR_NOT_YET_VALID);
	/* iat in the future without nbf. */
	CHECK_RC(vfy(tok(k, hdr(k), claims(QISS, QAUD, num(NOW + 1), NULL, num(NOW + 300)))),
	         WRIT_ERR_NOT_YET_VALID);
	CHECK_RC(vfy(tok(k, hdr(k), claims(QISS, QAUD, num(NOW + 100), num(NOW), num(NOW + 300)))),
	         WRIT_ERR_NOT_YET_VALID);
	/* Within leeway: accepted; one second beyond: refused. */
	o.leeway = 10;
	CHECK_RC(vfy_opts(tok(k, hdr(k), times(NOW, NOW + 10, NOW + 300)), &o), WRIT_OK);
	CHECK_RC(vfy_opts(tok(k, hdr(k), times(NOW, NOW + 11, NOW + 300)), &o),
	         WRIT_ERR_NOT_YET_VALID);
	CHECK_RC(vfy_opts(tok(k, hdr(k), times(NOW + 10, NOW + 10, NOW + 300)), &o), WRIT_OK);
	CHECK_RC(vfy_opts(tok(k, hdr(k), times(NOW + 11, NOW, NOW + 300)), &o),
	         WRIT_ERR_NOT_YET_VALID);
}

static void test_wrong_aud(void)
{
	static const char *const bad[] = {"\"other\"", "\"SVC\"",  "\"svc \"",
	                                  "\"sv\"",    "\"svc2\"", "\"\""};
	const tkey *k = &keys[K_ES256];
	writ_verify_opts o = std_opts();
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		CHECK_RC(
		    vfy(tok(k, hdr(k), claims(QISS, bad[i], num(NOW), num(NOW), num(NOW + 300)))),
		    WRIT_ERR_AUD);
	/* Missing while required. */
	CHECK_RC(vfy(tok(k, hdr(k), claims(QISS, NULL, num(NOW), num(NOW), num(NOW + 300)))),
	         WRIT_ERR_AUD);
	/* Not required: any string passes, absence too. */
	o.aud = NULL;
	CHECK_RC(
	    vfy_opts(tok(k, hdr(k), claims(QISS, "\"other\"", num(NOW), num(NOW), num(NOW + 300))),
	             &o),
	    WRIT_OK);
	CHECK_RC(
	    vfy_opts(tok(k, hdr(k), claims(QISS, NULL, num(NOW), num(NOW), num(NOW + 300))), &o),
	    WRIT_OK);
}

/* RFC 9068 s.3 allows an array; writ issues one audience and refuses an
 * array rather than searching it. */
static void test_aud_array_refused(void)
{
	static const char *const arrays[] = {"[\"svc\"]", "[\"other\",\"svc\"]", "[]",
	                                     "{\"svc\":true}", "5"};
	const tkey *k = &keys[K_ES256];
	writ_verify_opts o = std_opts();
	size_t i;

	for (i = 0; i < sizeof(arrays) / sizeof(arrays[0]); i++) {
		const char *t =
		    tok(k, hdr(k), claims(QISS, arrays[i], num(NOW), num(NOW), num(NOW + 300)));
		o.aud = AUD;
		CHECK_RC(vfy_opts(t, &o), WRIT_ERR_CLAIM);
		o.aud = NULL;
		CHECK_RC(vfy_opts(t, &o), WRIT_ERR_CLAIM);
	}
}

static void test_wrong_iss(void)
{
	static const char *const bad[] = {"\"https://evil.example\"", "\"https://issuer.example/\"",
	                                  "\"HTTPS://ISSUER.EXAMPLE\"", "\"https://issuer.exampl\"",
	                                  "\"\""};
	const tkey *k = &keys[K_ES256];
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		CHECK_RC(
		    vfy(tok(k, hdr(k), claims(bad[i], QAUD, num(NOW), num(NOW), num(NOW + 300)))),
		    WRIT_ERR_ISS);
	CHECK_RC(vfy(tok(k, hdr(k), claims(NULL, QAUD, num(NOW), num(NOW), num(NOW + 300)))),
	         WRIT_ERR_ISS);
	CHECK_RC(
	    vfy(tok(k, hdr(k), claims("[\"" ISS "\"]", QAUD, num(NOW), num(NOW), num(NOW + 300)))),
	    WRIT_ERR_CLAIM);
}

static void test_ttl_above_cap(void)
{
	const tkey *k = &keys[K_ES256];
	writ_verify_opts o = std_opts();

	/* Default cap: the hard cap of 3600 s. */
	CHECK_RC(vfy(tok(k, hdr(k), times(NOW, NOW, NOW + 3600))), WRIT_OK);
	CHECK_RC(vfy(tok(k, hdr(k), times(NOW, NOW, NOW + 3601))), WRIT_ERR_TTL);
	CHECK_RC(vfy(tok(k, hdr(k), times(NOW, NOW, NOW + 86400 * 365))), WRIT_ERR_TTL);
	/* A policy cap below it. */
	o.max_ttl = 300;
	CHECK_RC(vfy_opts(tok(k, hdr(k), times(NOW, NOW, NOW + 300)), &o), WRIT_OK);
	CHECK_RC(vfy_opts(tok(k, hdr(k), times(NOW, NOW, NOW + 301)), &o), WRIT_ERR_TTL);
	/* A policy cap above the hard cap does not lift it. */
	o.max_ttl = 7200;
	CHECK_RC(vfy_opts(tok(k, hdr(k), times(NOW, NOW, NOW + 3601)), &o), WRIT_ERR_TTL);
	/* exp not after iat. */
	CHECK_RC(vfy(tok(k, hdr(k), times(NOW - 10, NOW - 10, NOW - 10))), WRIT_ERR_CLAIM);
	CHECK_RC(vfy(tok(k, hdr(k), times(NOW, NOW, NOW - 1))), WRIT_ERR_CLAIM);
}

/* RFC 8725 s.3.11 / RFC 9068 s.4: explicit typing stops cross-JWT use. */
static void test_typ(void)
{
	const tkey *k = &keys[K_ES256];
	const char *pl = std_claims();
	const char *none = fmt("{\"alg\":\"ES256\",\"kid\":\"%s\"}", k->kid);
	writ_verify_opts o = std_opts();

	CHECK_RC(vfy(tok(k, hdr_typ(k, "at+jwt"), pl)), WRIT_OK);
	CHECK_RC(vfy(tok(k, hdr_typ(k, "application/at+jwt"), pl)), WRIT_OK);
	CHECK_RC(vfy(tok(k, hdr_typ(k, "AT+JWT"), pl)), WRIT_OK);
	CHECK_RC(vfy(tok(k, hdr_typ(k, "JWT"), pl)), WRIT_ERR_TYP);
	CHECK_RC(vfy(tok(k, hdr_typ(k, "application/jwt"), pl)), WRIT_ERR_TYP);
	CHECK_RC(vfy(tok(k, hdr_typ(k, "at+jwt "), pl)), WRIT_ERR_TYP);
	CHECK_RC(vfy(tok(k, hdr_typ(k, "dpop+jwt"), pl)), WRIT_ERR_TYP);
	CHECK_RC(vfy(tok(k, hdr_typ(k, "application/application/at+jwt"), pl)), WRIT_ERR_TYP);
	CHECK_RC(vfy(tok(k, none, pl)), WRIT_ERR_TYP);
	CHECK_RC(vfy(tok(k, fmt("{\"alg\":\"ES256\",\"typ\":5,\"kid\":\"%s\"}", k->kid), pl)),
	         WRIT_ERR_HEADER);
	/* No typ asked for: a plain JWT only; an access token is refused. */
	o.typ = NULL;
	CHECK_RC(vfy_opts(tok(k, hdr_typ(k, "at+jwt"), pl), &o), WRIT_ERR_TYP);
	CHECK_RC(vfy_opts(tok(k, hdr_typ(k, "application/at+jwt"), pl), &o), WRIT_ERR_TYP);
	CHECK_RC(vfy_opts(tok(k, hdr_typ(k, "JWT"), pl), &o), WRIT_OK);
	CHECK_RC(vfy_opts(tok(k, hdr_typ(k, "application/jwt"), pl), &o), WRIT_OK);
	CHECK_RC(vfy_opts(tok(k, none, pl), &o), WRIT_OK);
}

/* Every one-bit change anywhere in the token is refused. */
static void flip_all(const tkey *k)
{
	const char *t = tok(k, hdr(k), std_claims());
	size_t n = strlen(t), i, accepted = 0, tried = 0;
	char *buf = keep(malloc(n + 1));
	writ_verify_opts o = std_opts();
	int b;

	REQUIRE(vfy(t) == WRIT_OK);
	memcpy(buf, t, n + 1);
	for (i = 0; i < n; i++)
		for (b = 0; b < 8; b++) {
			buf[i] = (char)(buf[i] ^ (1 << b));
			tried++;
			if (verify_any(buf, n, &o, NULL, NULL) == WRIT_OK) {
				accepted++;
				fprintf(stderr, "%s: flip of bit %d at byte %zu accepted\n",
				        writ_alg_name(k->alg), b, i);
			}
			buf[i] = t[i];
		}
	CHECK(tried == 8 * n);
	CHECK(accepted == 0);
	CHECK(memcmp(buf, t, n) == 0 && vfy(buf) == WRIT_OK);
}

static void test_every_single_bit_flip(void)
{
	flip_all(&keys[K_ES256]);
	flip_all(&keys[K_EDDSA]);
}

/* The positive control: each algorithm verifies and its claims come back. */
static void test_valid_tokens_each_alg(void)
{
	size_t i;

	for (i = 0; i < K_COUNT; i++) {
		const tkey *k = &keys[i];
		const char *t = tok(k, hdr(k), std_claims());
		writ_verify_opts o = std_opts();
		writ_claims *c = NULL;
		writ_err err = {0};
		int64_t v = 0;
		char *json;

		CHECK_RC(verify_any(t, strlen(t), &o, &c, &err), WRIT_OK);
		if (c == NULL) {
			fprintf(stderr, "%s: %s\n", writ_alg_name(k->alg), err.msg);
			continue;
		}
		CHECK(writ_claims_alg(c) == k->alg);
		CHECK(strcmp(writ_claims_kid(c), k->kid) == 0);
		CHECK(writ_claims_string(c, "sub") != NULL &&
		      strcmp(writ_claims_string(c, "sub"), "agent-1") == 0);
		CHECK(writ_claims_string(c, "iss") != NULL &&
		      strcmp(writ_claims_string(c, "iss"), ISS) == 0);
		CHECK(writ_claims_string(c, "exp") == NULL);
		CHECK_RC(writ_claims_int(c, "exp", &v), WRIT_OK);
		CHECK(v == NOW + 300);
		CHECK_RC(writ_claims_int(c, "sub", &v), WRIT_ERR_CLAIM);
		CHECK_RC(writ_claims_int(c, "nope", &v), WRIT_ERR_CLAIM);
		json = writ_claims_json(c);
		CHECK(json != NULL && strcmp(json, std_claims()) == 0);
		free(json);
		writ_claims_free(c);
		/* out may be NULL when only the verdict is wanted. */
		CHECK_RC(verify_any(t, strlen(t), &o, NULL, NULL), WRIT_OK);
	}
}

static void test_token_too_large(void)
{
	const tkey *k = &keys[K_ES256];
	const char *h64 = b64s(hdr(k));
	size_t pad, best = 0, len, base = strlen(std_claims()) + strlen(",\"pad\":\"\"");
	const char *pl;

	/* The largest token that fits the cap is accepted, the next refused. */
	for (pad = 0; pad < WRIT_TOKEN_MAX_BYTES; pad++) {
		len = strlen(h64) + 1 + B64URL_LEN(base + pad) + 1 + B64URL_LEN(64);
		if (len > WRIT_TOKEN_MAX_BYTES)
			break;
		best = pad;
	}
	for (pad = best; pad <= best + 1; pad++) {
		char *fill = keep(malloc(pad + 1));
		const char *t;

		memset(fill, 'a', pad);
		fill[pad] = '\0';
		pl = fmt("{\"pad\":\"%s\",%s", fill, std_claims() + 1);
		t = tok(k, hdr(k), pl);
		len = strlen(t);
		if (pad == best) {
			CHECK(len <= WRIT_TOKEN_MAX_BYTES && len > WRIT_TOKEN_MAX_BYTES - 4);
			CHECK_RC(vfy(t), WRIT_OK);
		} else {
			CHECK(len > WRIT_TOKEN_MAX_BYTES);
			CHECK_RC(vfy(t), WRIT_ERR_TOO_LARGE);
		}
	}
	/* Size is judged before anything is decoded. */
	{
		char *big = keep(malloc(WRIT_TOKEN_MAX_BYTES * 4 + 1));
		memset(big, 'A', WRIT_TOKEN_MAX_BYTES * 4);
		big[WRIT_TOKEN_MAX_BYTES * 4] = '\0';
		big[10] = big[20] = '.';
		CHECK_RC(vfy(big), WRIT_ERR_TOO_LARGE);
	}
}

static void test_leeway_above_60_refused(void)
{
	const tkey *k = &keys[K_ES256];
	const char *t = tok(k, hdr(k), times(NOW - 359, NOW - 359, NOW - 59));
	writ_verify_opts o = std_opts();

	CHECK_RC(vfy_opts(t, &o), WRIT_ERR_EXPIRED);
	o.leeway = WRIT_LEEWAY_MAX;
	CHECK_RC(vfy_opts(t, &o), WRIT_OK);
	o.leeway = WRIT_LEEWAY_MAX + 1;
	CHECK_RC(vfy_opts(t, &o), WRIT_ERR_ARG);
	o.leeway = 86400;
	CHECK_RC(vfy_opts(tok(k, hdr(k), std_claims()), &o), WRIT_ERR_ARG);
	o.leeway = (unsigned)-1;
	CHECK_RC(vfy_opts(tok(k, hdr(k), std_claims()), &o), WRIT_ERR_ARG);
}

/* ---- JWK / JWK Set parser ---- */

static void test_jwks_private_member_refused(void)
{
	static const char *const priv[] = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"};
	size_t i, j;

	for (i = 0; i < K_COUNT; i++) {
		const tkey *k = &keys[i];
		CHECK_RC(set_parse(jwks_of(k->jwk, NULL), WRIT_JWKS_KID_IS_THUMBPRINT), WRIT_OK);
		CHECK_RC(key_parse(k->jwk), WRIT_OK);
		for (j = 0; j < sizeof(priv) / sizeof(priv[0]); j++) {
			const char *v = strcmp(priv[j], "oth") == 0 ? "[]" : "\"AQAB\"";
			const char *bad = jwk_with(k->jwk, priv[j], v);
			CHECK_RC(set_parse(jwks_of(bad, NULL), 0), WRIT_ERR_JWK);
			CHECK_RC(set_parse(jwks_of(k->jwk, bad), 0), WRIT_ERR_JWK);
			CHECK_RC(key_parse(bad), WRIT_ERR_JWK);
		}
	}
}

static void test_jwks_missing_alg_refused(void)
{
	const tkey *es = &keys[K_ES256], *rs = &keys[K_RS256];
	static const char *const bad_alg[] = {"\"none\"", "\"HS256\"", "\"es256\"",
	                                      "\"\"",     "5",         "null"};
	size_t i;

	CHECK_RC(set_parse(jwks_of(jwk_with(es->jwk, "alg", NULL), NULL), 0), WRIT_ERR_JWK);
	CHECK_RC(key_parse(jwk_with(es->jwk, "alg", NULL)), WRIT_ERR_JWK);
	CHECK_RC(key_parse(jwk_with(rs->jwk, "alg", NULL)), WRIT_ERR_JWK);
	for (i = 0; i < sizeof(bad_alg) / sizeof(bad_alg[0]); i++)
		CHECK_RC(key_parse(jwk_with(es->jwk, "alg", bad_alg[i])), WRIT_ERR_JWK);
	/* An alg that does not fit the key. */
	CHECK_RC(key_parse(jwk_with(es->jwk, "alg", "\"ES384\"")), WRIT_ERR_JWK);
	CHECK_RC(key_parse(jwk_with(es->jwk, "alg", "\"RS256\"")), WRIT_ERR_JWK);
	CHECK_RC(key_parse(jwk_with(rs->jwk, "alg", "\"ES256\"")), WRIT_ERR_JWK);
	CHECK_RC(key_parse(jwk_with(keys[K_EDDSA].jwk, "alg", "\"ES256\"")), WRIT_ERR_JWK);
	CHECK_RC(key_parse(jwk_with(es->jwk, "kty", NULL)), WRIT_ERR_JWK);
	CHECK_RC(key_parse(jwk_with(es->jwk, "kty", "\"oct\"")), WRIT_ERR_JWK);
	/* use, when present, is "sig". */
	CHECK_RC(key_parse(jwk_with(es->jwk, "use", "\"enc\"")), WRIT_ERR_JWK);
	CHECK_RC(key_parse(jwk_with(es->jwk, "use", "1")), WRIT_ERR_JWK);
	CHECK_RC(key_parse(jwk_with(es->jwk, "use", NULL)), WRIT_OK);
	/* Attack: a key published for another purpose used to verify.
	 * key_ops, when present, is distinct strings including "verify". */
	CHECK_RC(key_parse(jwk_with(es->jwk, "key_ops", "[\"encrypt\"]")), WRIT_ERR_JWK);
	CHECK_RC(key_parse(jwk_with(es->jwk, "key_ops", "[\"sign\"]")), WRIT_ERR_JWK);
	CHECK_RC(key_parse(jwk_with(es->jwk, "key_ops", "[]")), WRIT_ERR_JWK);
	CHECK_RC(key_parse(jwk_with(es->jwk, "key_ops", "\"verify\"")), WRIT_ERR_JWK);
	CHECK_RC(key_parse(jwk_with(es->jwk, "key_ops", "[\"verify\",1]")), WRIT_ERR_JWK);
	CHECK_RC(key_parse(jwk_with(es->jwk, "key_ops", "[\"verify\",\"verify\"]")), WRIT_ERR_JWK);
	CHECK_RC(key_parse(jwk_with(es->jwk, "key_ops", "[\"verify\"]")), WRIT_OK);
	CHECK_RC(key_parse(jwk_with(es->jwk, "key_ops", "[\"sign\",\"verify\"]")), WRIT_OK);
}

static void test_jwks_kid_not_thumbprint_refused(void)
{
	const tkey *es = &keys[K_ES256];
	const char *j = jwk_with(es->jwk, "kid", "\"abc\"");
	const char *other = jwk_with(es->jwk, "kid", fmt("\"%s\"", keys[K_ES384].kid));
	writ_jwks *s = NULL;

	CHECK_RC(set_parse(jwks_of(j, NULL), WRIT_JWKS_KID_IS_THUMBPRINT), WRIT_ERR_JWK);
	CHECK_RC(set_parse(jwks_of(other, NULL), WRIT_JWKS_KID_IS_THUMBPRINT), WRIT_ERR_JWK);
	CHECK_RC(
	    set_parse(jwks_of(jwk_with(es->jwk, "kid", NULL), NULL), WRIT_JWKS_KID_IS_THUMBPRINT),
	    WRIT_ERR_JWK);
	/* Without the flag any well-formed kid names the key. */
	j = jwks_of(j, NULL);
	CHECK_RC(writ_jwks_parse(j, strlen(j), 0, &s, NULL), WRIT_OK);
	CHECK(writ_jwks_find(s, "abc") == writ_jwks_get(s, 0) && writ_jwks_get(s, 0) != NULL);
	CHECK(writ_jwks_find(s, es->kid) == NULL);
	CHECK(writ_jwks_get(s, 1) == NULL);
	writ_jwks_free(s);
}

static void test_jwks_duplicate_kid(void)
{
	const tkey *es = &keys[K_ES256], *es384 = &keys[K_ES384];
	const char *a = jwk_with(es->jwk, "kid", "\"same\"");
	const char *b = jwk_with(es384->jwk, "kid", "\"same\"");

	CHECK_RC(set_parse(jwks_of(a, b), 0), WRIT_ERR_JWK);
	CHECK_RC(set_parse(jwks_of(es->jwk, es->jwk), WRIT_JWKS_KID_IS_THUMBPRINT), WRIT_ERR_JWK);
	CHECK_RC(set_parse(jwks_of(es->jwk, es->jwk), 0), WRIT_ERR_JWK);
	CHECK_RC(set_parse(jwks_of(es->jwk, es384->jwk), WRIT_JWKS_KID_IS_THUMBPRINT), WRIT_OK);
	/* The whole set's JSON with a duplicate member. */
	CHECK_RC(set_parse(fmt("{\"keys\":[%s],\"keys\":[%s]}", es->jwk, es384->jwk), 0),
	         WRIT_ERR_JWK);
	CHECK_RC(set_parse(jwks_of(fmt("{\"kid\":\"x\",%s", a + 1), NULL), 0), WRIT_ERR_JWK);
}

/* Invalid-curve attacks need an off-curve point to reach ECDSA. */
static void test_jwks_ec_point_not_on_curve(void)
{
	static const int which[] = {K_ES256, K_ES384};
	size_t w;

	for (w = 0; w < 2; w++) {
		const tkey *k = &keys[which[w]];
		unsigned char y[64], zero[48] = {0};
		size_t n = jwk_member(k->jwk, "y", y);
		const char *bad;

		y[n - 1] ^= 1;
		bad = jwk_member_b64(k->jwk, "y", y, n);
		CHECK_RC(set_parse(jwks_of(bad, NULL), 0), WRIT_ERR_JWK);
		CHECK_RC(key_parse(bad), WRIT_ERR_JWK);
		bad = jwk_member_b64(jwk_member_b64(k->jwk, "x", zero, n), "y", zero, n);
		CHECK_RC(key_parse(bad), WRIT_ERR_JWK);
	}
}

static void test_jwks_ec_wrong_x_length(void)
{
	const tkey *es = &keys[K_ES256], *es384 = &keys[K_ES384];
	unsigned char x[64], y384[64];
	size_t n = jwk_member(es->jwk, "x", x), n384;

	REQUIRE(n == 32);
	memmove(x + 1, x, n);
	x[0] = 0;
	CHECK_RC(key_parse(jwk_member_b64(es->jwk, "x", x, 33)), WRIT_ERR_JWK);
	CHECK_RC(key_parse(jwk_member_b64(es->jwk, "x", x + 2, 31)), WRIT_ERR_JWK);
	CHECK_RC(key_parse(jwk_member_b64(es->jwk, "x", x, 0)), WRIT_ERR_JWK);
	CHECK_RC(set_parse(jwks_of(jwk_member_b64(es->jwk, "x", x, 33), NULL), 0), WRIT_ERR_JWK);
	/* P-384 coordinates under P-256, and curve names that do not fit. */
	n384 = jwk_member(es384->jwk, "y", y384);
	CHECK_RC(key_parse(jwk_member_b64(es->jwk, "y", y384, n384)), WRIT_ERR_JWK);
	CHECK_RC(key_parse(jwk_with(es->jwk, "crv", "\"P-384\"")), WRIT_ERR_JWK);
	CHECK_RC(key_parse(jwk_with(es384->jwk, "crv", "\"P-256\"")), WRIT_ERR_JWK);
	CHECK_RC(key_parse(jwk_with(es->jwk, "crv", "\"secp256k1\"")), WRIT_ERR_JWK);
	CHECK_RC(key_parse(jwk_with(es->jwk, "crv", NULL)), WRIT_ERR_JWK);
	CHECK_RC(key_parse(jwk_with(es->jwk, "y", NULL)), WRIT_ERR_JWK);
	CHECK_RC(key_parse(jwk_with(keys[K_EDDSA].jwk, "x", "\"AAAA\"")), WRIT_ERR_JWK);
	/* Non-canonical base64url in a coordinate. */
	CHECK_RC(key_parse(jwk_with(es->jwk, "x", fmt("\"%s=\"", b64(x + 1, 32)))), WRIT_ERR_JWK);
}

/* n and e of an RSA key as a JWK, built by hand (writ refuses to). */
static const char *rsa_jwk(EVP_PKEY *pk, const char *alg)
{
	BIGNUM *n = NULL, *e = NULL;
	unsigned char nb[1024], eb[16];
	int nl, el;

	REQUIRE(EVP_PKEY_get_bn_param(pk, OSSL_PKEY_PARAM_RSA_N, &n) == 1);
	REQUIRE(EVP_PKEY_get_bn_param(pk, OSSL_PKEY_PARAM_RSA_E, &e) == 1);
	nl = BN_bn2bin(n, nb);
	el = BN_bn2bin(e, eb);
	BN_free(n);
	BN_free(e);
	return fmt("{\"kty\":\"RSA\",\"alg\":\"%s\",\"n\":\"%s\",\"e\":\"%s\"}", alg,
	           b64(nb, (size_t)nl), b64(eb, (size_t)el));
}

static void test_jwks_rsa_1024_refused(void)
{
	EVP_PKEY *small = keygen(WRIT_ALG_RS256, 1024);
	writ_jwk *k = NULL;
	unsigned char nb[1024];
	size_t nl;

	REQUIRE(small != NULL);
	CHECK_RC(key_parse(rsa_jwk(small, "RS256")), WRIT_ERR_JWK);
	CHECK_RC(key_parse(rsa_jwk(small, "PS256")), WRIT_ERR_JWK);
	CHECK_RC(writ_jwk_from_pkey(small, WRIT_ALG_RS256, &k, NULL), WRIT_ERR_JWK);
	CHECK(k == NULL);
	/* Control: the same construction for a 2048-bit key is accepted. */
	CHECK_RC(key_parse(rsa_jwk(keys[K_RS256].priv, "RS256")), WRIT_OK);
	/* A leading zero byte in n is a second spelling of the same key. */
	nl = jwk_member(keys[K_RS256].jwk, "n", nb + 1);
	nb[0] = 0;
	CHECK_RC(key_parse(jwk_member_b64(keys[K_RS256].jwk, "n", nb, nl + 1)), WRIT_ERR_JWK);
	EVP_PKEY_free(small);
}

static void test_jwks_too_many_keys(void)
{
	const tkey *es = &keys[K_ES256];
	const char *s = "";
	writ_jwks *set64 = NULL;
	int i;

	for (i = 0; i < WRIT_JWKS_MAX_KEYS; i++)
		s = fmt("%s%s%s", s, i ? "," : "", jwk_with(es->jwk, "kid", fmt("\"k%d\"", i)));
	{
		const char *j = fmt("{\"keys\":[%s]}", s);
		CHECK_RC(writ_jwks_parse(j, strlen(j), 0, &set64, NULL), WRIT_OK);
		CHECK(writ_jwks_count(set64) == WRIT_JWKS_MAX_KEYS);
		CHECK(writ_jwks_find(set64, "k63") == writ_jwks_get(set64, 63));
		writ_jwks_free(set64);
	}
	s = fmt("%s,%s", s, jwk_with(es->jwk, "kid", "\"k64\""));
	CHECK_RC(set_parse(fmt("{\"keys\":[%s]}", s), 0), WRIT_ERR_JWK);
	CHECK_RC(set_parse("{\"keys\":[]}", 0), WRIT_ERR_JWK);
	CHECK_RC(set_parse("{\"keys\":{}}", 0), WRIT_ERR_JWK);
	CHECK_RC(set_parse("{}", 0), WRIT_ERR_JWK);
	CHECK_RC(set_parse(fmt("[%s]", es->jwk), 0), WRIT_ERR_JWK);
}

static void test_jwks_trailing_garbage(void)
{
	const char *s = jwks_of(keys[K_ES256].jwk, keys[K_RS256].jwk);
	writ_jwks *out = NULL;
	char *big;

	CHECK_RC(set_parse(s, WRIT_JWKS_KID_IS_THUMBPRINT), WRIT_OK);
	CHECK_RC(set_parse(fmt("%sx", s), 0), WRIT_ERR_JWK);
	CHECK_RC(set_parse(fmt("%s{}", s), 0), WRIT_ERR_JWK);
	CHECK_RC(set_parse(fmt("%s,", s), 0), WRIT_ERR_JWK);
	CHECK_RC(set_parse(fmt("%.*s", (int)strlen(s) - 1, s), 0), WRIT_ERR_JWK);
	CHECK_RC(key_parse(fmt("%s]", keys[K_ES256].jwk)), WRIT_ERR_JWK);
	/* A NUL and more after the JSON, with the length covering them. */
	CHECK_RC(writ_jwks_parse(s, strlen(s) + 1, 0, &out, NULL), WRIT_ERR_JWK);
	CHECK(out == NULL);
	/* Over the size cap. */
	big = keep(malloc(WRIT_JWKS_MAX_BYTES + 2));
	memset(big, ' ', WRIT_JWKS_MAX_BYTES + 1);
	memcpy(big, s, strlen(s));
	big[WRIT_JWKS_MAX_BYTES + 1] = '\0';
	CHECK_RC(writ_jwks_parse(big, WRIT_JWKS_MAX_BYTES + 1, 0, &out, NULL), WRIT_ERR_TOO_LARGE);
	CHECK(out == NULL);
}

/* RFC 7638 s.3.1, byte for byte. */
static void test_rfc7638_thumbprint(void)
{
	static const char n[] =
	    "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc"
	    "_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGj"
	    "QR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-"
	    "bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDK"
	    "gw";
	static const char want[] = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs";
	const char *j = fmt("{\"kty\":\"RSA\",\"n\":\"%s\",\"e\":\"AQAB\",\"alg\":\"RS256\"}", n);
	const char *jk = fmt("{\"kty\":\"RSA\",\"n\":\"%s\",\"e\":\"AQAB\",\"alg\":\"RS256\","
	                     "\"kid\":\"2011-04-29\"}",
	                     n);
	writ_jwk *k = NULL;
	char tp[64];

	CHECK_RC(writ_jwk_parse(j, strlen(j), &k, NULL), WRIT_OK);
	if (k != NULL) {
		CHECK_RC(writ_jwk_thumbprint(k, tp, sizeof(tp)), WRIT_OK);
		CHECK(strcmp(tp, want) == 0);
		CHECK(strcmp(writ_jwk_kid(k), want) == 0);
		CHECK(writ_jwk_alg(k) == WRIT_ALG_RS256);
		CHECK_RC(writ_jwk_thumbprint(k, tp, 43), WRIT_ERR_ARG);
		writ_jwk_free(k);
	}
	k = NULL;
	CHECK_RC(writ_jwk_parse(jk, strlen(jk), &k, NULL), WRIT_OK);
	if (k != NULL) {
		CHECK(strcmp(writ_jwk_kid(k), "2011-04-29") == 0);
		CHECK_RC(writ_jwk_thumbprint(k, tp, sizeof(tp)), WRIT_OK);
		CHECK(strcmp(tp, want) == 0);
		writ_jwk_free(k);
	}
	/* Under the flag the kid must be that thumbprint. */
	CHECK_RC(set_parse(jwks_of(jwk_with(j, "kid", fmt("\"%s\"", want)), NULL),
	                   WRIT_JWKS_KID_IS_THUMBPRINT),
	         WRIT_OK);
	CHECK_RC(set_parse(jwks_of(jk, NULL), WRIT_JWKS_KID_IS_THUMBPRINT), WRIT_ERR_JWK);
	CHECK_RC(set_parse(jwks_of(jk, NULL), 0), WRIT_OK);
}

int main(void)
{
	size_t i;
	const char *js;
	writ_err err = {0};
	static const writ_alg algs[K_COUNT] = {WRIT_ALG_ES256, WRIT_ALG_ES384, WRIT_ALG_RS256,
	                                       WRIT_ALG_PS256, WRIT_ALG_EDDSA};

	for (i = 0; i < K_COUNT; i++)
		tkey_init(&keys[i], algs[i]);
	tkey_init(&stranger, WRIT_ALG_ES256);
	js = fmt("{\"keys\":[%s,%s,%s,%s,%s]}", keys[0].jwk, keys[1].jwk, keys[2].jwk, keys[3].jwk,
	         keys[4].jwk);
	if (writ_jwks_parse(js, strlen(js), WRIT_JWKS_KID_IS_THUMBPRINT, &set, &err) != WRIT_OK) {
		fprintf(stderr, "JWK Set: %s\n", err.msg);
		return 1;
	}
	REQUIRE(writ_jwks_count(set) == K_COUNT);
	set_json = strdup(js);
	REQUIRE(set_json != NULL);
	pool_drain();

#define T(fn)                                                                                      \
	do {                                                                                       \
		RUN(fn);                                                                           \
		pool_drain();                                                                      \
	} while (0)
	for (via_lib = 0; via_lib <= 1; via_lib++) {
		fprintf(stderr, "-- through %s\n",
		        via_lib ? "writ_verifier_verify" : "writ_verify");
		T(test_alg_none_any_case);
		T(test_hs256_with_public_key_pem);
		T(test_hs256_with_public_key_jwk);
		T(test_alg_other_than_keys);
		T(test_unknown_kid);
		T(test_kid_path_traversal);
		T(test_forbidden_headers);
		T(test_ecdsa_r_or_s_zero);
		T(test_ecdsa_r_or_s_ge_n);
		T(test_sig_wrong_length);
		T(test_noncanonical_base64url);
		T(test_fourth_segment);
		T(test_duplicate_json_keys);
		T(test_time_claims_types);
		T(test_expired);
		T(test_not_yet_valid);
		T(test_wrong_aud);
		T(test_aud_array_refused);
		T(test_wrong_iss);
		T(test_ttl_above_cap);
		T(test_typ);
		T(test_every_single_bit_flip);
		T(test_valid_tokens_each_alg);
		T(test_token_too_large);
		T(test_leeway_above_60_refused);
	}
	fprintf(stderr, "library door: %zu verifications, %zu with options only the core has\n",
	        lib_calls, lib_fallbacks);
	CHECK(lib_calls > 1000 && lib_fallbacks < 20);
	via_lib = 0;
	T(test_jwks_private_member_refused);
	T(test_jwks_missing_alg_refused);
	T(test_jwks_kid_not_thumbprint_refused);
	T(test_jwks_duplicate_kid);
	T(test_jwks_ec_point_not_on_curve);
	T(test_jwks_ec_wrong_x_length);
	T(test_jwks_rsa_1024_refused);
	T(test_jwks_too_many_keys);
	T(test_jwks_trailing_garbage);
	T(test_rfc7638_thumbprint);
#undef T

	writ_verifier_free(lib_v);
	free(set_json);
	writ_jwks_free(set);
	for (i = 0; i < K_COUNT; i++)
		tkey_clear(&keys[i]);
	tkey_clear(&stranger);
	free(pool);
	return tu_finish();
}
