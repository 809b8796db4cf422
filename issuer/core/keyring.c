/*
 * keyring.c - signing keys as the issuer sees them (see keyring.h).
 */
#include "keyring.h"

#include <stdlib.h>
#include <string.h>

#include "writ_int.h"

struct keyring {
	size_t n;
	keyring_entry *e;
};

void keyring_free(keyring *kr)
{
	size_t i;

	if (kr == NULL)
		return;
	for (i = 0; i < kr->n; i++)
		writ_jwk_free(kr->e[i].jwk);
	free(kr->e);
	free(kr);
}

writ_rc keyring_load(p11_ctx *p11, keyring **out, writ_err *err)
{
	p11_key *keys = NULL;
	keyring *kr = NULL;
	size_t n = 0, i;
	writ_rc rc;

	*out = NULL;
	rc = p11_keys_list(p11, &keys, &n, err);
	if (rc != WRIT_OK)
		return rc;
	kr = calloc(1, sizeof(*kr));
	if (kr == NULL || (n > 0 && (kr->e = calloc(n, sizeof(*kr->e))) == NULL)) {
		rc = writ_err_set(err, WRIT_ERR_NOMEM, "out of memory");
		goto out;
	}
	for (i = 0; i < n; i++) {
		keyring_entry *e = &kr->e[kr->n];
		rc = writ_jwk_from_pkey(keys[i].pub, keys[i].alg, &e->jwk, err);
		if (rc != WRIT_OK)
			goto out;
		memcpy(e->id, keys[i].id, keys[i].id_len);
		e->id_len = keys[i].id_len;
		memcpy(e->label, keys[i].label, sizeof(e->label));
		kr->n++;
	}
	*out = kr;
	kr = NULL;
out:
	keyring_free(kr);
	p11_keys_free(keys, n);
	return rc;
}

size_t keyring_count(const keyring *kr)
{
	return kr->n;
}

const keyring_entry *keyring_get(const keyring *kr, size_t i)
{
	return i < kr->n ? &kr->e[i] : NULL;
}

const keyring_entry *keyring_find(const keyring *kr, const char *kid)
{
	size_t i;

	for (i = 0; i < kr->n; i++)
		if (strcmp(writ_jwk_kid(kr->e[i].jwk), kid) == 0)
			return &kr->e[i];
	return NULL;
}

const keyring_entry *keyring_newest(const keyring *kr, writ_alg alg)
{
	const keyring_entry *best = NULL;
	size_t i;

	/* Labels are "writ:ALG:YYYYmmddTHHMMSSZ": the timestamps sort as text. */
	for (i = 0; i < kr->n; i++)
		if (writ_jwk_alg(kr->e[i].jwk) == alg &&
		    (best == NULL || strcmp(kr->e[i].label, best->label) > 0))
			best = &kr->e[i];
	return best;
}

char *keyring_jwks_json(const keyring *kr)
{
	json_t *set = json_object(), *arr = json_array();
	char *s = NULL;
	size_t i;

	if (set == NULL || arr == NULL)
		goto out;
	for (i = 0; i < kr->n; i++)
		if (json_array_append_new(arr, writ_jwk_to_jansson(kr->e[i].jwk)) != 0)
			goto out;
	if (json_object_set(set, "keys", arr) == 0)
		s = json_dumps(set, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
out:
	json_decref(arr);
	json_decref(set);
	return s;
}

writ_rc keyring_sign_jws(p11_ctx *p11, const keyring_entry *key, const char *typ,
                         const char *payload, size_t plen, char **out, writ_err *err)
{
	writ_alg alg = writ_jwk_alg(key->jwk);
	unsigned char sig[P11_SIG_MAX];
	size_t hlen = 0, inlen = 0, siglen = 0;
	wjson_w w;
	char *hdr, *in, *tok = NULL;
	writ_rc rc;

	*out = NULL;
	wjw_init(&w);
	wjw_str(&w, "alg", writ_alg_name(alg));
	wjw_str(&w, "typ", typ);
	wjw_str(&w, "kid", writ_jwk_kid(key->jwk));
	hdr = wjw_finish(&w, &hlen);
	in = hdr != NULL ? writ_jws_signing_input_text(hdr, hlen, payload, plen, &inlen) : NULL;
	free(hdr);
	if (in == NULL)
		return writ_err_set(err, WRIT_ERR_NOMEM, "out of memory");
	rc = p11_sign(p11, key->id, key->id_len, alg, (const unsigned char *)in, inlen, sig,
	              &siglen, err);
	/* The token is sized once the signature's length is known. */
	if (rc == WRIT_OK && (tok = malloc(inlen + 1 + B64URL_LEN(siglen) + 1)) == NULL)
		rc = writ_err_set(err, WRIT_ERR_NOMEM, "out of memory");
	if (rc == WRIT_OK) {
		memcpy(tok, in, inlen);
		tok[inlen] = '.';
		b64url_encode(sig, siglen, tok + inlen + 1);
		*out = tok;
	}
	free(in);
	return rc;
}
