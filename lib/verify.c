/*
 * verify.c - the offline verifier: key by kid from a parsed JWK Set,
 * algorithm pinned to the key, then the registered claims (RFC 7519 s.4.1,
 * RFC 9068 s.4, RFC 8725).
 */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "writ_int.h"

/* Immutable once built, and reference-counted so the verifier's token
 * cache can hand the same claims to many threads without copying them. */
struct writ_claims {
	atomic_int refs;
	json_t *payload;
	writ_alg alg;
	char kid[WRIT_KID_MAX + 1];
};

writ_claims *writ_claims_new(json_t *payload, const writ_jwk *key)
{
	writ_claims *c = calloc(1, sizeof(*c));

	if (c == NULL)
		return NULL;
	atomic_init(&c->refs, 1);
	c->payload = json_incref(payload);
	c->alg = key->alg;
	memcpy(c->kid, key->kid, sizeof(c->kid));
	return c;
}

writ_claims *writ_claims_ref(const writ_claims *c)
{
	writ_claims *m = (writ_claims *)(uintptr_t)c;

	atomic_fetch_add_explicit(&m->refs, 1, memory_order_relaxed);
	return m;
}

const json_t *writ_claims_payload(const writ_claims *c)
{
	return c->payload;
}

/* RFC 7515 s.4.1.9: typ is a media type, compared case-insensitively, and
 * "application/" may be omitted. */
static int typ_matches(const char *got, const char *want)
{
	if (strncasecmp(got, "application/", 12) == 0)
		got += 12;
	return strcasecmp(got, want) == 0;
}

static writ_rc check_typ(const char *typ, const writ_verify_opts *o, writ_err *err)
{
	if (o->typ != NULL) {
		if (typ == NULL || !typ_matches(typ, o->typ))
			return writ_err_set(err, WRIT_ERR_TYP, "\"typ\" must be \"%s\"", o->typ);
		return WRIT_OK;
	}
	/* No typ asked for: a plain JWT. Refusing explicit other types stops
	 * an access token (at+jwt) being replayed as an agent assertion. */
	if (typ != NULL && !typ_matches(typ, "JWT"))
		return writ_err_set(err, WRIT_ERR_TYP, "\"typ\" must be absent or \"JWT\"");
	return WRIT_OK;
}

static writ_rc get_date(const json_t *p, const char *name, int required, int64_t *v, int *present,
                        writ_err *err)
{
	const json_t *j = json_object_get(p, name);

	*present = j != NULL;
	if (j == NULL)
		return required ? writ_err_set(err, WRIT_ERR_CLAIM, "claim \"%s\" is missing", name)
		                : WRIT_OK;
	if (wjson_numeric_date(j, v) != 0)
		return writ_err_set(err, WRIT_ERR_CLAIM,
		                    "claim \"%s\" must be an integer between 0 and 2^53", name);
	return WRIT_OK;
}

static writ_rc check_string(const json_t *p, const char *name, const char *want, writ_rc rc,
                            writ_err *err)
{
	const json_t *j = json_object_get(p, name);

	if (j == NULL && want == NULL)
		return WRIT_OK;
	/* RFC 9068 s.3: aud is one target here; an array is refused rather
	 * than searched, so "aud":["a","victim"] cannot ride along. */
	if (!json_is_string(j))
		return writ_err_set(err, j == NULL ? rc : WRIT_ERR_CLAIM, "claim \"%s\" is %s",
		                    name, j == NULL ? "missing" : "not a string");
	if (want != NULL && strcmp(json_string_value(j), want) != 0)
		return writ_err_set(err, rc, "claim \"%s\" does not match", name);
	return WRIT_OK;
}

writ_rc writ_claims_check(const json_t *p, const writ_verify_opts *o, writ_err *err)
{
	int64_t now = o->now != 0 ? o->now : (int64_t)time(NULL);
	int64_t exp = 0, iat = 0, nbf = 0, lw = o->leeway;
	/* SPEC s.3: the hard cap holds whatever the policy asks for. */
	int64_t cap =
	    o->max_ttl != 0 && o->max_ttl < WRIT_TTL_HARD_CAP ? o->max_ttl : WRIT_TTL_HARD_CAP;
	int have;
	writ_rc rc;

	if (o->leeway > WRIT_LEEWAY_MAX)
		return writ_err_set(err, WRIT_ERR_ARG, "leeway above %d s", WRIT_LEEWAY_MAX);
	if ((rc = get_date(p, "exp", 1, &exp, &have, err)) != WRIT_OK ||
	    (rc = get_date(p, "iat", 1, &iat, &have, err)) != WRIT_OK ||
	    (rc = get_date(p, "nbf", 0, &nbf, &have, err)) != WRIT_OK)
		return rc;
	if (exp <= iat)
		return writ_err_set(err, WRIT_ERR_CLAIM, "\"exp\" is not after \"iat\"");
	if (exp - iat > cap)
		return writ_err_set(err, WRIT_ERR_TTL, "lifetime %lld s is above the cap of %lld s",
		                    (long long)(exp - iat), (long long)cap);
	if (now >= exp + lw)
		return writ_err_set(err, WRIT_ERR_EXPIRED, "expired %lld s ago",
		                    (long long)(now - exp));
	/* Written as nbf - lw, not now + lw: a caller's "now" near INT64_MAX
	 * must not overflow. nbf and iat are in [0, 2^53]. */
	if (have && nbf - lw > now)
		return writ_err_set(err, WRIT_ERR_NOT_YET_VALID, "not valid for another %lld s",
		                    (long long)(nbf - now));
	if (iat - lw > now)
		return writ_err_set(err, WRIT_ERR_NOT_YET_VALID, "issued %lld s in the future",
		                    (long long)(iat - now));
	if ((rc = check_string(p, "iss", o->iss, WRIT_ERR_ISS, err)) != WRIT_OK ||
	    (rc = check_string(p, "aud", o->aud, WRIT_ERR_AUD, err)) != WRIT_OK ||
	    (rc = check_string(p, "sub", NULL, WRIT_ERR_CLAIM, err)) != WRIT_OK ||
	    (rc = check_string(p, "jti", NULL, WRIT_ERR_CLAIM, err)) != WRIT_OK)
		return rc;
	if (o->require_sub) {
		const json_t *s = json_object_get(p, "sub");
		if (!json_is_string(s) || json_string_length(s) == 0)
			return writ_err_set(err, WRIT_ERR_CLAIM, "claim \"sub\" is missing");
	}
	return WRIT_OK;
}

writ_rc writ_verify_jws(const writ_jwk *key, const writ_jws *j, const char *token,
                        const writ_verify_opts *opts, writ_err *err)
{
	static const writ_verify_opts defaults;
	const writ_verify_opts *o = opts != NULL ? opts : &defaults;
	writ_rc rc;

	/* The key decides the algorithm; the header may only agree with it. */
	if (writ_alg_from_name(j->alg_name) != key->alg)
		return writ_err_set(err, WRIT_ERR_ALG, "header \"alg\" is not the key's %s",
		                    writ_alg_name(key->alg));
	if ((rc = check_typ(j->typ, o, err)) != WRIT_OK)
		return rc;
	rc = writ_sig_verify(key, (const unsigned char *)token, j->signing_input_len, j->sig,
	                     j->sig_len, err);
	if (rc != WRIT_OK)
		return rc;
	return writ_claims_check(j->payload, o, err);
}

writ_rc writ_verify(const writ_jwks *set, const char *token, size_t len,
                    const writ_verify_opts *opts, writ_claims **out, writ_err *err)
{
	const writ_jwk *key;
	writ_claims *c;
	writ_jws j;
	writ_rc rc;

	if (out != NULL)
		*out = NULL;
	if (set == NULL)
		return writ_err_set(err, WRIT_ERR_ARG, "no key set");
	rc = writ_jws_parse(token, len, &j, err);
	if (rc != WRIT_OK)
		return rc;
	if (j.kid == NULL) {
		rc = writ_err_set(err, WRIT_ERR_UNKNOWN_KID, "JOSE header has no \"kid\"");
		goto out;
	}
	key = writ_jwks_find(set, j.kid);
	if (key == NULL) {
		rc = writ_err_set(err, WRIT_ERR_UNKNOWN_KID,
		                  "no key with that \"kid\" in the key set");
		goto out;
	}
	rc = writ_verify_jws(key, &j, token, opts, err);
	if (rc != WRIT_OK)
		goto out;
	if (out != NULL) {
		c = writ_claims_new(j.payload, key);
		if (c == NULL) {
			rc = writ_err_set(err, WRIT_ERR_NOMEM, "out of memory");
			goto out;
		}
		*out = c;
	}
out:
	writ_jws_clear(&j);
	return rc;
}

void writ_claims_free(writ_claims *c)
{
	if (c == NULL)
		return;
	/* acq_rel: the last owner must see every other owner's reads done. */
	if (atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) != 1)
		return;
	json_decref(c->payload);
	free(c);
}

char *writ_claims_json(const writ_claims *c)
{
	return wjson_dump(c->payload);
}

const char *writ_claims_string(const writ_claims *c, const char *name)
{
	const json_t *v = json_object_get(c->payload, name);
	return json_is_string(v) ? json_string_value(v) : NULL;
}

writ_rc writ_claims_int(const writ_claims *c, const char *name, int64_t *v)
{
	const json_t *j = json_object_get(c->payload, name);

	if (!json_is_integer(j))
		return WRIT_ERR_CLAIM;
	*v = (int64_t)json_integer_value(j);
	return WRIT_OK;
}

const char *writ_claims_kid(const writ_claims *c)
{
	return c->kid;
}

writ_alg writ_claims_alg(const writ_claims *c)
{
	return c->alg;
}
