/*
 * verifier.c - libwrit's verifier for target services (verifier.h): the
 * strict core (verify.c) plus a JWK Set that refreshes itself, a cache of
 * verified tokens, scope checks and the token's rate limits.
 *
 * The key set sits behind a reference-counted pointer: a verifying thread
 * holds the mutex only to take a reference, so a refresh (fetched and
 * parsed with no lock held, one fetcher at a time) swaps in the new set
 * without waiting for verifications, and the old set is freed by its
 * last user.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "verifier_int.h"

/*
 * A JOSE header already seen in a verified token: the exact base64url
 * header segment, and the key of this set it selected. Every token an
 * issuer signs with one key carries the same header, and decoding and
 * checking it again (base64url, JSON, allowed members, kid lookup, alg
 * pinned to the key, typ) always gives the same answer for the same bytes
 * and the same set. So the set remembers it; a token whose header segment
 * matches byte for byte skips to its claims and signature, which are
 * checked in full as always. Only headers of tokens that verified get in
 * (nobody can fill the slots without the issuer's signature), and the
 * entries live and die with their set.
 */
#define HDR_SLOTS 8

typedef struct hdr_entry {
	const writ_jwk *key; /* in the set that holds this entry */
	size_t len;
	char seg[]; /* the header segment, exactly */
} hdr_entry;

typedef struct keyset {
	atomic_int refs;
	uint64_t gen;
	writ_jwks *set;
	/* Filled in order, lock-free: a slot goes from NULL to an entry
	 * once, and the entry does not change until the set is freed. */
	_Atomic(hdr_entry *) hdr[HDR_SLOTS];
} keyset;

struct writ_verifier {
	char *issuer, *audience, *url, *ca_file;
	writ_verify_opts vo; /* iss, aud, typ, leeway, max_ttl, require_sub */
	int64_t test_now;
	int64_t min_refresh_ms, max_stale_ms;

	pthread_mutex_t ks_mu; /* guards ks (the pointer, not the set) */
	keyset *ks;

	pthread_mutex_t fetch_mu; /* one fetcher; guards etag */
	char etag[JWKS_ETAG_MAX + 1];
	atomic_int_fast64_t fresh_until_ms, last_attempt_ms; /* monotonic */

	tcache *cache;
	limits *lim;
	writ_decision_fn on_decision;
	void *on_decision_arg;

	atomic_uint_fast64_t n_fetches, n_not_modified, n_fetch_failures, n_hits, n_verifs;
};

static int64_t mono_ms(void)
{
	return writ_mono_ns() / 1000000;
}

static int64_t claims_now(const writ_verifier *v)
{
	return v->test_now != 0 ? v->test_now : (int64_t)time(NULL);
}

/* ---- the current key set ---- */

static keyset *ks_acquire(writ_verifier *v)
{
	keyset *ks;

	pthread_mutex_lock(&v->ks_mu);
	ks = v->ks;
	atomic_fetch_add_explicit(&ks->refs, 1, memory_order_relaxed);
	pthread_mutex_unlock(&v->ks_mu);
	return ks;
}

static void ks_release(keyset *ks)
{
	if (ks != NULL && atomic_fetch_sub_explicit(&ks->refs, 1, memory_order_acq_rel) == 1) {
		for (int i = 0; i < HDR_SLOTS; i++)
			free(atomic_load_explicit(&ks->hdr[i], memory_order_relaxed));
		writ_jwks_free(ks->set);
		free(ks);
	}
}

/* The key a known header segment selects, or NULL. */
static const writ_jwk *hdr_find(keyset *ks, const char *seg, size_t len)
{
	hdr_entry *e;

	for (int i = 0; i < HDR_SLOTS; i++) {
		if ((e = atomic_load_explicit(&ks->hdr[i], memory_order_acquire)) == NULL)
			break;
		if (e->len == len && memcmp(e->seg, seg, len) == 0)
			return e->key;
	}
	return NULL;
}

/* Remember that seg, in a token that verified, selected key; best effort
 * (full or out of memory: the header is parsed each time). */
static void hdr_add(keyset *ks, const char *seg, size_t len, const writ_jwk *key)
{
	hdr_entry *e, *cur;

	for (int i = 0; i < HDR_SLOTS; i++) {
		cur = atomic_load_explicit(&ks->hdr[i], memory_order_acquire);
		if (cur != NULL) {
			if (cur->len == len && memcmp(cur->seg, seg, len) == 0)
				return;
			continue;
		}
		if ((e = malloc(sizeof(*e) + len)) == NULL)
			return;
		e->key = key;
		e->len = len;
		memcpy(e->seg, seg, len);
		/* Lost the slot to another thread: look at what it put there. */
		if (atomic_compare_exchange_strong_explicit(
		        &ks->hdr[i], &cur, e, memory_order_acq_rel, memory_order_acquire))
			return;
		free(e);
		if (cur->len == len && memcmp(cur->seg, seg, len) == 0)
			return;
	}
}

/* Make set current (taking it) and fresh for max_age seconds. */
static writ_rc ks_install(writ_verifier *v, writ_jwks *set, unsigned max_age)
{
	keyset *ks = calloc(1, sizeof(*ks)), *old;

	if (ks == NULL) {
		writ_jwks_free(set);
		return WRIT_ERR_NOMEM;
	}
	atomic_init(&ks->refs, 1);
	ks->set = set;
	pthread_mutex_lock(&v->ks_mu);
	old = v->ks;
	ks->gen = old != NULL ? old->gen + 1 : 1;
	v->ks = ks;
	pthread_mutex_unlock(&v->ks_mu);
	ks_release(old);
	/* Tokens signed by a key that has left the set go with it. */
	tcache_prune(v->cache, set, ks->gen);
	atomic_store(&v->fresh_until_ms, mono_ms() + (int64_t)max_age * 1000);
	return WRIT_OK;
}

/* ---- fetching ---- */

/* One fetch, under fetch_mu. 200: parse and install; 304: the set we have
 * is still the issuer's, fresh for another max-age. */
static writ_rc fetch_locked(writ_verifier *v, writ_err *err)
{
	jwks_response r;
	writ_jwks *set = NULL;
	writ_rc rc;

	atomic_store(&v->last_attempt_ms, mono_ms());
	atomic_fetch_add(&v->n_fetches, 1);
	rc = jwks_fetch(v->url, v->ca_file, v->ks != NULL ? v->etag : NULL, &r, err);
	if (rc == WRIT_OK && r.status == 304 && v->ks != NULL) {
		atomic_fetch_add(&v->n_not_modified, 1);
		atomic_store(&v->fresh_until_ms, mono_ms() + (int64_t)r.max_age * 1000);
	} else if (rc == WRIT_OK && r.status == 200) {
		rc = writ_jwks_parse(r.body, r.len, WRIT_JWKS_KID_IS_THUMBPRINT, &set, err);
		if (rc == WRIT_OK && (rc = ks_install(v, set, r.max_age)) == WRIT_OK)
			snprintf(v->etag, sizeof(v->etag), "%s", r.etag);
	} else if (rc == WRIT_OK) {
		rc = writ_err_set(err, WRIT_ERR_UNAVAILABLE, "JWKS fetch: HTTP status %ld",
		                  r.status);
	}
	free(r.body);
	if (rc != WRIT_OK)
		atomic_fetch_add(&v->n_fetch_failures, 1);
	return rc;
}

/*
 * Fetch unless another thread is already fetching (its result serves us
 * too) or the last attempt was less than min_refresh ago: neither a flood
 * of unknown kids nor an unreachable issuer turns into a flood of fetches.
 */
static void refresh(writ_verifier *v)
{
	if (v->url == NULL || mono_ms() - atomic_load(&v->last_attempt_ms) < v->min_refresh_ms ||
	    pthread_mutex_trylock(&v->fetch_mu) != 0)
		return;
	/* Re-check under the lock: a fetch may have just finished. */
	if (mono_ms() - atomic_load(&v->last_attempt_ms) >= v->min_refresh_ms)
		(void)fetch_locked(v, NULL);
	pthread_mutex_unlock(&v->fetch_mu);
}

/* Refresh a stale set; past expiry + max_stale without a good answer from
 * the issuer the verifier fails closed. */
static writ_rc keys_usable(writ_verifier *v, writ_err *err)
{
	int64_t now;

	if (v->url == NULL)
		return WRIT_OK;
	now = mono_ms();
	if (now < atomic_load_explicit(&v->fresh_until_ms, memory_order_relaxed))
		return WRIT_OK;
	refresh(v);
	if (mono_ms() >= atomic_load(&v->fresh_until_ms) + v->max_stale_ms)
		return writ_err_set(err, WRIT_ERR_UNAVAILABLE,
		                    "JWK Set expired and the issuer is unreachable");
	return WRIT_OK;
}

/* ---- verification ---- */

/* The window a fresh verify accepts, for the cache to apply later. */
static void window(const writ_verifier *v, const json_t *p, int64_t *nb, int64_t *na)
{
	int64_t exp = 0, iat = 0, nbf = 0;

	/* Present and well-formed: writ_claims_check has passed. */
	(void)wjson_numeric_date(json_object_get(p, "exp"), &exp);
	(void)wjson_numeric_date(json_object_get(p, "iat"), &iat);
	if (json_object_get(p, "nbf") != NULL)
		(void)wjson_numeric_date(json_object_get(p, "nbf"), &nbf);
	*nb = (nbf > iat ? nbf : iat) - v->vo.leeway;
	*na = exp + v->vo.leeway;
}

/* Key by kid, refetching at most once per min_refresh when it is unknown
 * (a key the issuer has just rotated in). *ksp holds a reference on entry
 * and on return (perhaps to a newer set), which the caller releases. */
static const writ_jwk *find_key(writ_verifier *v, const char *kid, keyset **ksp)
{
	const writ_jwk *key = writ_jwks_find((*ksp)->set, kid);

	if (key == NULL && v->url != NULL) {
		ks_release(*ksp);
		refresh(v);
		*ksp = ks_acquire(v);
		key = writ_jwks_find((*ksp)->set, kid);
	}
	return key;
}

static writ_rc verify_full(writ_verifier *v, const char *token, size_t len, uint64_t hash,
                           int64_t now, writ_claims **out, writ_err *err)
{
	writ_verify_opts o = v->vo;
	const char *dot = memchr(token, '.', len);
	size_t hlen = dot != NULL ? (size_t)(dot - token) : len;
	keyset *ks = ks_acquire(v);
	const writ_jwk *key = hlen > 0 ? hdr_find(ks, token, hlen) : NULL;
	int known = key != NULL;
	int64_t nb, na;
	writ_jws j;
	writ_rc rc;

	o.now = now;
	if (known) {
		/* Header, kid, alg and typ as when this segment was first
		 * checked; the claims and the signature are this token's. */
		if ((rc = writ_jws_parse_body(token, len, &j, err)) != WRIT_OK)
			goto out;
		atomic_fetch_add_explicit(&v->n_verifs, 1, memory_order_relaxed);
		rc = writ_sig_verify(key, (const unsigned char *)token, j.signing_input_len, j.sig,
		                     j.sig_len, err);
		if (rc != WRIT_OK || (rc = writ_claims_check(j.payload, &o, err)) != WRIT_OK)
			goto out;
	} else {
		if ((rc = writ_jws_parse(token, len, &j, err)) != WRIT_OK)
			goto out;
		if (j.kid == NULL) {
			rc = writ_err_set(err, WRIT_ERR_UNKNOWN_KID, "JOSE header has no \"kid\"");
			goto out;
		}
		if ((key = find_key(v, j.kid, &ks)) == NULL) {
			rc = writ_err_set(err, WRIT_ERR_UNKNOWN_KID,
			                  "no key with that \"kid\" in the key set");
			goto out;
		}
		atomic_fetch_add_explicit(&v->n_verifs, 1, memory_order_relaxed);
		if ((rc = writ_verify_jws(key, &j, token, &o, err)) != WRIT_OK)
			goto out;
		hdr_add(ks, token, hlen, key);
	}
	if ((*out = writ_claims_new(j.payload, key)) == NULL) {
		rc = writ_err_set(err, WRIT_ERR_NOMEM, "out of memory");
		goto out;
	}
	window(v, j.payload, &nb, &na);
	tcache_put(v->cache, token, len, hash, *out, nb, na, ks->gen);
out:
	ks_release(ks);
	writ_jws_clear(&j);
	return rc;
}

writ_rc writ_verifier_verify(writ_verifier *v, const char *token, size_t len, writ_claims **out,
                             writ_err *err)
{
	writ_claims *c = NULL;
	uint64_t hash;
	int64_t now;
	writ_rc rc;

	if (out != NULL)
		*out = NULL;
	if (v == NULL || token == NULL)
		return writ_err_set(err, WRIT_ERR_ARG, "no verifier or no token");
	if (len > WRIT_TOKEN_MAX_BYTES)
		return writ_err_set(err, WRIT_ERR_TOO_LARGE, "token over %d bytes",
		                    WRIT_TOKEN_MAX_BYTES);
	if ((rc = keys_usable(v, err)) != WRIT_OK)
		return rc;
	now = claims_now(v);
	if ((c = tcache_get(v->cache, token, len, now, &hash)) != NULL) {
		atomic_fetch_add_explicit(&v->n_hits, 1, memory_order_relaxed);
	} else if ((rc = verify_full(v, token, len, hash, now, &c, err)) != WRIT_OK) {
		return rc;
	}
	if (out != NULL)
		*out = c;
	else
		writ_claims_free(c);
	return WRIT_OK;
}

int writ_claims_has_scope(const writ_claims *c, const char *action)
{
	const char *s, *p;
	size_t n;

	/* One member only: "db:read db:write" is two, and must not match
	 * a scope that holds both as if it were one. */
	if (c == NULL || action == NULL || (n = strlen(action)) == 0 ||
	    strchr(action, ' ') != NULL || (s = writ_claims_string(c, "scope")) == NULL)
		return 0;
	/* RFC 6749 s.3.3: space-delimited; an exact member, so "db:read"
	 * does not grant "db:re" or "db:read:all". */
	for (p = s; (p = strstr(p, action)) != NULL; p++)
		if ((p == s || p[-1] == ' ') && (p[n] == ' ' || p[n] == '\0'))
			return 1;
	return 0;
}

writ_rc writ_verifier_admit(writ_verifier *v, const writ_claims *c, double *retry_after)
{
	const json_t *lim;
	const char *sub;
	double ra = 0;
	writ_rc rc;

	if (v == NULL || c == NULL)
		return WRIT_ERR_ARG;
	lim = json_object_get(writ_claims_payload(c), "lim");
	sub = writ_claims_string(c, "sub");
	if (lim == NULL)
		rc = WRIT_OK;
	else if (sub == NULL)
		rc = WRIT_ERR_CLAIM; /* nobody to count against: fail closed */
	else
		rc = limits_take(v->lim, sub, v->audience, lim, (double)mono_ms() / 1000.0, &ra);
	if (retry_after != NULL)
		*retry_after = ra;
	return rc;
}

void writ_verifier_on_decision(writ_verifier *v, writ_decision_fn fn, void *arg)
{
	v->on_decision = fn;
	v->on_decision_arg = arg;
}

writ_rc writ_verifier_check(writ_verifier *v, const char *token, size_t len, const char *action,
                            writ_claims **out, double *retry_after, writ_err *err)
{
	writ_decision d = {.action = action};
	writ_claims *c = NULL;
	double ra = 0;
	writ_rc rc;

	if (out != NULL)
		*out = NULL;
	rc = writ_verifier_verify(v, token, len, &c, err);
	if (rc == WRIT_OK && !writ_claims_has_scope(c, action))
		rc = writ_err_set(err, WRIT_ERR_SCOPE, "scope does not grant \"%s\"",
		                  action != NULL ? action : "");
	if (rc == WRIT_OK && (rc = writ_verifier_admit(v, c, &ra)) != WRIT_OK)
		writ_err_set(err, rc,
		             rc == WRIT_ERR_RATE_LIMITED ? "over the token's limit"
		                                         : "\"lim\" cannot be enforced");
	if (retry_after != NULL)
		*retry_after = ra;
	if (v != NULL && v->on_decision != NULL) {
		/* Only a verified token's claims are worth logging. */
		d.jti = c != NULL ? writ_claims_string(c, "jti") : NULL;
		d.sub = c != NULL ? writ_claims_string(c, "sub") : NULL;
		d.allowed = rc == WRIT_OK;
		d.why = rc;
		v->on_decision(v->on_decision_arg, &d);
	}
	if (rc == WRIT_OK && out != NULL)
		*out = c;
	else
		writ_claims_free(c);
	return rc;
}

void writ_verifier_get_stats(writ_verifier *v, writ_verifier_stats *st)
{
	keyset *ks = ks_acquire(v);

	st->fetches = atomic_load(&v->n_fetches);
	st->not_modified = atomic_load(&v->n_not_modified);
	st->fetch_failures = atomic_load(&v->n_fetch_failures);
	st->cache_hits = atomic_load(&v->n_hits);
	st->verifications = atomic_load(&v->n_verifs);
	st->keys = writ_jwks_count(ks->set);
	ks_release(ks);
}

void verifier_test_clock(writ_verifier *v, int64_t now, unsigned leeway)
{
	v->test_now = now;
	v->vo.leeway = leeway;
}

/* ---- life cycle ---- */

static writ_rc check_cfg(const writ_verifier_cfg *cfg, writ_err *err)
{
	int sources;

	if (cfg == NULL || cfg->issuer == NULL || cfg->issuer[0] == '\0' || cfg->audience == NULL ||
	    cfg->audience[0] == '\0')
		return writ_err_set(err, WRIT_ERR_ARG, "verifier needs an issuer and an audience");
	sources = (cfg->jwks_url != NULL) + (cfg->jwks_file != NULL) + (cfg->jwks_bytes != NULL);
	if (sources != 1)
		return writ_err_set(err, WRIT_ERR_ARG,
		                    "give exactly one of jwks_url, jwks_file, jwks_bytes");
	if (cfg->leeway > WRIT_LEEWAY_MAX)
		return writ_err_set(err, WRIT_ERR_ARG, "leeway above %d s", WRIT_LEEWAY_MAX);
	/* Also keeps the caches' size arithmetic far from overflow (a size
	 * near SIZE_MAX made the rate limiter's sizing loop never end). */
	if (cfg->cache_entries > WRIT_CACHE_ENTRIES_MAX)
		return writ_err_set(err, WRIT_ERR_ARG, "cache_entries above %d",
		                    WRIT_CACHE_ENTRIES_MAX);
	if (cfg->jwks_url != NULL)
		return writ_url_check(cfg->jwks_url, "jwks_url", cfg->allow_http, err);
	return WRIT_OK;
}

/* The first key set, from bytes, a file or the URL. */
static writ_rc load_first(writ_verifier *v, const writ_verifier_cfg *cfg, writ_err *err)
{
	writ_jwks *set = NULL;
	char *buf = NULL;
	size_t n = 0;
	FILE *f;
	writ_rc rc;

	if (cfg->jwks_url != NULL) {
		if ((rc = jwks_fetch_init(err)) != WRIT_OK)
			return rc;
		pthread_mutex_lock(&v->fetch_mu);
		rc = fetch_locked(v, err);
		pthread_mutex_unlock(&v->fetch_mu);
		/* A service must not start blind: any failure is "unavailable",
		 * with the cause kept in the message. */
		if (rc != WRIT_OK && err != NULL) {
			char why[sizeof(err->msg)];
			snprintf(why, sizeof(why), "%s", err->msg);
			writ_err_set(err, WRIT_ERR_UNAVAILABLE, "%s", why);
		}
		return rc != WRIT_OK ? WRIT_ERR_UNAVAILABLE : WRIT_OK;
	}
	if (cfg->jwks_file != NULL) {
		if ((f = fopen(cfg->jwks_file, "rb")) == NULL)
			return writ_err_set(err, WRIT_ERR_IO, "%s: cannot open", cfg->jwks_file);
		buf = malloc(WRIT_JWKS_MAX_BYTES + 1);
		if (buf != NULL)
			n = fread(buf, 1, WRIT_JWKS_MAX_BYTES + 1, f);
		fclose(f);
		if (buf == NULL)
			return writ_err_set(err, WRIT_ERR_NOMEM, "out of memory");
	}
	rc = writ_jwks_parse(buf != NULL ? buf : cfg->jwks_bytes, buf != NULL ? n : cfg->jwks_len,
	                     WRIT_JWKS_KID_IS_THUMBPRINT, &set, err);
	free(buf);
	if (rc == WRIT_OK)
		rc = ks_install(v, set, 0);
	return rc;
}

static char *dup_or_null(const char *s, int *fail)
{
	char *d;

	if (s == NULL)
		return NULL;
	if ((d = strdup(s)) == NULL)
		*fail = 1;
	return d;
}

writ_rc writ_verifier_new(const writ_verifier_cfg *cfg, writ_verifier **out, writ_err *err)
{
	writ_verifier *v = NULL;
	int fail = 0;
	writ_rc rc;

	if (out == NULL)
		return writ_err_set(err, WRIT_ERR_ARG, "no output pointer");
	*out = NULL;
	if ((rc = check_cfg(cfg, err)) != WRIT_OK)
		return rc;
	if ((v = calloc(1, sizeof(*v))) == NULL)
		return writ_err_set(err, WRIT_ERR_NOMEM, "out of memory");
	pthread_mutex_init(&v->ks_mu, NULL);
	pthread_mutex_init(&v->fetch_mu, NULL);
	v->issuer = dup_or_null(cfg->issuer, &fail);
	v->audience = dup_or_null(cfg->audience, &fail);
	v->url = dup_or_null(cfg->jwks_url, &fail);
	v->ca_file = dup_or_null(cfg->ca_file, &fail);
	v->cache = tcache_new(cfg->cache_entries != 0 ? cfg->cache_entries : 10000);
	v->lim = limits_new(cfg->cache_entries != 0 ? cfg->cache_entries : 10000);
	if (fail || v->cache == NULL || v->lim == NULL) {
		rc = writ_err_set(err, WRIT_ERR_NOMEM, "out of memory");
		goto out;
	}
	v->vo = (writ_verify_opts){.iss = v->issuer,
	                           .aud = v->audience,
	                           .typ = "at+jwt",
	                           .leeway = cfg->leeway != 0 ? cfg->leeway : 30,
	                           .max_ttl = cfg->max_ttl,
	                           .require_sub = 1};
	v->min_refresh_ms = (int64_t)(cfg->min_refresh != 0 ? cfg->min_refresh : 30) * 1000;
	v->max_stale_ms = (int64_t)(cfg->max_stale != 0 ? cfg->max_stale : 300) * 1000;
	/* So the first refresh is never held back by min_refresh. */
	atomic_init(&v->last_attempt_ms, INT64_MIN / 2);
	atomic_init(&v->fresh_until_ms, INT64_MAX / 2);
	rc = load_first(v, cfg, err);
out:
	if (rc != WRIT_OK) {
		writ_verifier_free(v);
		return rc;
	}
	*out = v;
	return WRIT_OK;
}

void writ_verifier_free(writ_verifier *v)
{
	if (v == NULL)
		return;
	ks_release(v->ks);
	tcache_free(v->cache);
	limits_free(v->lim);
	pthread_mutex_destroy(&v->ks_mu);
	pthread_mutex_destroy(&v->fetch_mu);
	free(v->issuer);
	free(v->audience);
	free(v->url);
	free(v->ca_file);
	free(v);
}
