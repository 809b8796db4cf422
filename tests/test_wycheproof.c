/*
 * test_wycheproof.c - writ's signature check against Project Wycheproof's
 * vectors for the five JWS algorithms writ accepts.
 *
 * Each test group's public key goes through the same door a JWK Set's
 * keys do (writ_jwk_parse, algorithm pinned), and each vector through
 * writ_sig_verify. "valid" must verify, "invalid" must not; "acceptable"
 * may go either way and is counted. A group whose key the parser refuses
 * by policy is counted as skipped. Any mismatch fails the test.
 */
#include <jansson.h>

#include "testutil.h"
#include "writ_int.h"

typedef struct counts {
	size_t tests, pass, fail, acc_yes, acc_no, skipped;
} counts;

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Hex to a malloc'd buffer (at least 1 byte allocated); exits on bad hex. */
static unsigned char *unhex(const char *h, size_t *n)
{
	size_t len = strlen(h), i;
	unsigned char *b = malloc(len / 2 + 1);

	REQUIRE(b != NULL && len % 2 == 0);
	for (i = 0; i < len / 2; i++) {
		int hi = hexval(h[2 * i]), lo = hexval(h[2 * i + 1]);
		if (hi < 0 || lo < 0) {
			fprintf(stderr, "bad hex in test vector: %s\n", h);
			exit(1);
		}
		b[i] = (unsigned char)(hi << 4 | lo);
	}
	*n = len / 2;
	return b;
}

static const char *str_at(const json_t *o, const char *a, const char *b)
{
	const json_t *v = json_object_get(o, a);

	if (b != NULL)
		v = json_object_get(v, b);
	return json_is_string(v) ? json_string_value(v) : NULL;
}

/* base64url of hex, minimal octets when strip is set (RFC 7518 s.6.3.1). */
static char *hex_b64(const char *h, int strip)
{
	size_t n, off = 0;
	unsigned char *b = unhex(h, &n);
	char *s;

	while (strip && off + 1 < n && b[off] == 0)
		off++;
	s = b64url_encode_alloc(b + off, n - off);
	REQUIRE(s != NULL);
	free(b);
	return s;
}

/* Serialise and release a new reference. */
static char *dump_new(json_t *o)
{
	char *s;

	REQUIRE(o != NULL);
	s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
	json_decref(o);
	REQUIRE(s != NULL);
	return s;
}

/* The group's public key as JWK JSON for alg; NULL if the group does not
 * fit what this file is meant to test (then it is skipped). */
static char *group_jwk(const json_t *g, writ_alg alg)
{
	char *out = NULL, *x = NULL, *y = NULL, *n = NULL, *e = NULL;
	const char *sha = str_at(g, "sha", NULL);

	switch (alg) {
	case WRIT_ALG_ES256:
	case WRIT_ALG_ES384: {
		const char *pt = str_at(g, "publicKey", "uncompressed");
		size_t fl = alg == WRIT_ALG_ES256 ? 32 : 48;
		char hx[2 * 48 + 1], hy[2 * 48 + 1];

		if (pt == NULL || strlen(pt) != 2 + 4 * fl || strncmp(pt, "04", 2) != 0 ||
		    sha == NULL || strcmp(sha, alg == WRIT_ALG_ES256 ? "SHA-256" : "SHA-384") != 0)
			return NULL;
		snprintf(hx, sizeof(hx), "%.*s", (int)(2 * fl), pt + 2);
		snprintf(hy, sizeof(hy), "%.*s", (int)(2 * fl), pt + 2 + 2 * fl);
		x = hex_b64(hx, 0);
		y = hex_b64(hy, 0);
		out = dump_new(json_pack("{s:s,s:s,s:s,s:s,s:s}", "kty", "EC", "crv",
		                         alg == WRIT_ALG_ES256 ? "P-256" : "P-384", "alg",
		                         writ_alg_name(alg), "x", x, "y", y));
		break;
	}
	case WRIT_ALG_RS256:
	case WRIT_ALG_PS256: {
		const char *mod = str_at(g, "publicKey", "modulus");
		const char *exp = str_at(g, "publicKey", "publicExponent");

		if (mod == NULL || exp == NULL || sha == NULL || strcmp(sha, "SHA-256") != 0)
			return NULL;
		if (alg == WRIT_ALG_PS256) {
			const char *mgf = str_at(g, "mgf", NULL),
			           *mgfsha = str_at(g, "mgfSha", NULL);
			if (json_integer_value(json_object_get(g, "sLen")) != 32 || mgf == NULL ||
			    strcmp(mgf, "MGF1") != 0 || mgfsha == NULL ||
			    strcmp(mgfsha, "SHA-256") != 0)
				return NULL;
		}
		n = hex_b64(mod, 1);
		e = hex_b64(exp, 1);
		out = dump_new(json_pack("{s:s,s:s,s:s,s:s}", "kty", "RSA", "alg",
		                         writ_alg_name(alg), "n", n, "e", e));
		break;
	}
	case WRIT_ALG_EDDSA: {
		const char *pk = str_at(g, "publicKey", "pk");
		const char *curve = str_at(g, "publicKey", "curve");

		if (pk == NULL || curve == NULL || strcmp(curve, "edwards25519") != 0)
			return NULL;
		x = hex_b64(pk, 0);
		out = dump_new(json_pack("{s:s,s:s,s:s,s:s}", "kty", "OKP", "crv", "Ed25519", "alg",
		                         "EdDSA", "x", x));
		break;
	}
	default: break;
	}
	free(x);
	free(y);
	free(n);
	free(e);
	return out;
}

static void run_file(const char *name, writ_alg alg)
{
	json_error_t je;
	json_t *root = json_load_file(tu_data(name), 0, &je), *groups, *g;
	counts c = {0};
	size_t gi, ti;
	long declared;

	if (root == NULL) {
		fprintf(stderr, "%s: %s (line %d)\n", name, je.text, je.line);
		CHECK(root != NULL);
		return;
	}
	declared = (long)json_integer_value(json_object_get(root, "numberOfTests"));
	groups = json_object_get(root, "testGroups");
	REQUIRE(json_is_array(groups));
	json_array_foreach(groups, gi, g) {
		const json_t *tests = json_object_get(g, "tests"), *t;
		char *jwkjson = group_jwk(g, alg);
		writ_jwk *key = NULL;
		writ_err err = {0};

		REQUIRE(json_is_array(tests));
		if (jwkjson == NULL ||
		    writ_jwk_parse(jwkjson, strlen(jwkjson), &key, &err) != WRIT_OK) {
			if (jwkjson != NULL)
				fprintf(stderr, "%s: group %zu skipped: %s\n", name, gi, err.msg);
			else
				fprintf(stderr, "%s: group %zu skipped: not this algorithm\n", name,
				        gi);
			c.skipped += json_array_size(tests);
			c.tests += json_array_size(tests);
			free(jwkjson);
			continue;
		}
		free(jwkjson);
		json_array_foreach(tests, ti, t) {
			const char *msgh = str_at(t, "msg", NULL), *sigh = str_at(t, "sig", NULL);
			const char *res = str_at(t, "result", NULL);
			unsigned char *msg, *sig;
			size_t ml, sl;
			int ok;

			REQUIRE(msgh != NULL && sigh != NULL && res != NULL);
			msg = unhex(msgh, &ml);
			sig = unhex(sigh, &sl);
			ok = writ_sig_verify(key, msg, ml, sig, sl, NULL) == WRIT_OK;
			c.tests++;
			if (strcmp(res, "acceptable") == 0) {
				if (ok)
					c.acc_yes++;
				else
					c.acc_no++;
			} else if ((strcmp(res, "valid") == 0) == ok) {
				c.pass++;
			} else {
				c.fail++;
				fprintf(stderr, "%s: tcId %lld (%s) expected %s, got %s\n", name,
				        (long long)json_integer_value(json_object_get(t, "tcId")),
				        str_at(t, "comment", NULL) != NULL
				            ? str_at(t, "comment", NULL)
				            : "",
				        res, ok ? "accepted" : "refused");
			}
			free(msg);
			free(sig);
		}
		writ_jwk_free(key);
	}
	fprintf(stderr,
	        "%s: %zu tests: %zu pass, %zu fail, %zu acceptable (%zu accepted, %zu refused), "
	        "%zu skipped\n",
	        name, c.tests, c.pass, c.fail, c.acc_yes + c.acc_no, c.acc_yes, c.acc_no,
	        c.skipped);
	CHECK(c.fail == 0);
	/* Every vector was looked at, and the file was not skipped wholesale. */
	CHECK(declared > 0 && c.tests == (size_t)declared);
	CHECK(c.pass > 0 && c.skipped < c.tests / 2);
	json_decref(root);
}

static void test_wycheproof_ecdsa_p256_sha256_p1363(void)
{
	run_file("wycheproof/ecdsa_secp256r1_sha256_p1363_test.json", WRIT_ALG_ES256);
}

static void test_wycheproof_ecdsa_p384_sha384_p1363(void)
{
	run_file("wycheproof/ecdsa_secp384r1_sha384_p1363_test.json", WRIT_ALG_ES384);
}

static void test_wycheproof_rsa_pkcs1_2048_sha256(void)
{
	run_file("wycheproof/rsa_signature_2048_sha256_test.json", WRIT_ALG_RS256);
}

static void test_wycheproof_rsa_pss_2048_sha256_mgf1_32(void)
{
	run_file("wycheproof/rsa_pss_2048_sha256_mgf1_32_test.json", WRIT_ALG_PS256);
}

static void test_wycheproof_ed25519(void)
{
	run_file("wycheproof/ed25519_test.json", WRIT_ALG_EDDSA);
}

int main(void)
{
	RUN(test_wycheproof_ecdsa_p256_sha256_p1363);
	RUN(test_wycheproof_ecdsa_p384_sha384_p1363);
	RUN(test_wycheproof_rsa_pkcs1_2048_sha256);
	RUN(test_wycheproof_rsa_pss_2048_sha256_mgf1_32);
	RUN(test_wycheproof_ed25519);
	return tu_finish();
}
