/*
 * keyset.c - building and swapping the issuer's published key snapshot
 * (see keyset.h).
 */
#include "keyset.h"

#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lifecycle.h"
#include "writ_int.h"

#define GT_EXCHANGE "urn:ietf:params:oauth:grant-type:token-exchange"

static void keyset_free(keyset *ks)
{
	if (ks == NULL)
		return;
	keyring_free(ks->kr);
	free(ks->metrics);
	free(ks->states);
	free(ks->created);
	free(ks->jwks_json);
	free(ks->discovery_json);
	free(ks);
}

static char *discovery(const writ_config *cfg, json_t *algs)
{
	json_t *d;
	char *s;

	d = json_pack("{s:s, s:s+, s:s+, s:[s], s:[s], s:O, s:O, s:[s]}", "issuer", cfg->issuer,
	              "token_endpoint", cfg->issuer, "/token", "jwks_uri", cfg->issuer,
	              "/.well-known/jwks.json", "grant_types_supported", GT_EXCHANGE,
	              "token_endpoint_auth_methods_supported", "none",
	              "token_endpoint_auth_signing_alg_values_supported", algs,
	              "id_token_signing_alg_values_supported", algs, "response_types_supported",
	              "token");
	s = d != NULL ? json_dumps(d, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
	json_decref(d);
	return s;
}

/* Add a published row's key to the set, the metrics and (if it signs)
 * the discovery algorithms. */
static int publish_row(keyset *ks, const store_sk *r, const keyring_entry *e, json_t *keys,
                       json_t *algs)
{
	size_t m = ks->nmetrics;

	if (json_array_append_new(keys, writ_jwk_to_jansson(e->jwk)) != 0)
		return -1;
	if (r->state == STORE_SK_ACTIVE &&
	    json_array_append_new(algs, json_string(writ_alg_name(r->alg))) != 0)
		return -1;
	/* The arrays have room for every row (keyset_build). */
	snprintf(ks->states[m], sizeof(ks->states[m]), "%s", store_sk_state_name(r->state));
	ks->metrics[m].kid = writ_jwk_kid(e->jwk);
	ks->metrics[m].alg = writ_alg_name(r->alg);
	ks->created[m] = r->created_at;
	ks->nmetrics++;
	return 0;
}

static writ_rc fill(keyset *ks, const writ_config *cfg, const store_sk *rows, size_t n,
                    writ_err *err)
{
	unsigned char md[SHA256_DIGEST_LENGTH];
	json_t *set = json_object(), *keys = json_array(), *algs = json_array();
	char tag[44];
	writ_rc rc = WRIT_OK;
	size_t i;

	for (i = 0; set != NULL && keys != NULL && algs != NULL && i < n; i++) {
		const keyring_entry *e = keyring_find(ks->kr, rows[i].kid);
		/* Removed and revoked keys are withdrawn (SPEC s.2); a row whose
		 * HSM object is gone cannot be published (reconcile marks it). */
		if (e == NULL || rows[i].state == STORE_SK_REMOVED ||
		    rows[i].state == STORE_SK_REVOKED)
			continue;
		if (publish_row(ks, &rows[i], e, keys, algs) != 0)
			break;
		if (rows[i].state == STORE_SK_ACTIVE && rows[i].alg == cfg->signing_alg)
			ks->signing = e;
	}
	if (set == NULL || json_object_set(set, "keys", keys) != 0 ||
	    (ks->jwks_json = json_dumps(set, JSON_INDENT(2) | JSON_PRESERVE_ORDER)) == NULL ||
	    (ks->discovery_json = discovery(cfg, algs)) == NULL)
		rc = writ_err_set(err, WRIT_ERR_NOMEM, "out of memory");
	else if (ks->signing == NULL)
		rc = writ_err_set(err, WRIT_ERR_NOT_FOUND,
		                  "no active %s key in the store that the HSM holds: run 'writ key "
		                  "generate --alg %s'",
		                  writ_alg_name(cfg->signing_alg), writ_alg_name(cfg->signing_alg));
	json_decref(set);
	json_decref(keys);
	json_decref(algs);
	if (rc != WRIT_OK)
		return rc;
	/* A strong validator (RFC 9110 s.8.8.3) over the exact bytes served. */
	writ_sha256((const unsigned char *)ks->jwks_json, strlen(ks->jwks_json), md);
	b64url_encode(md, 16, tag);
	snprintf(ks->etag, sizeof(ks->etag), "\"%s\"", tag);
	return WRIT_OK;
}

writ_rc keyset_build(p11_ctx *p11, store *st, const writ_config *cfg, uint64_t gen, keyset **out,
                     writ_err *err)
{
	store_sk *rows = NULL;
	keyset *ks;
	size_t n = 0;
	writ_rc rc;

	*out = NULL;
	ks = calloc(1, sizeof(*ks));
	if (ks == NULL)
		return writ_err_set(err, WRIT_ERR_NOMEM, "out of memory");
	ks->refs = 1;
	ks->gen = gen;
	rc = store_sk_list(st, &rows, &n, err);
	if (rc == WRIT_OK) {
		/* One slot per row: a fixed cap hid the newest keys (rows come
		 * oldest first), which then were never recorded as published. */
		ks->metrics = calloc(n + 1, sizeof(*ks->metrics));
		ks->states = calloc(n + 1, sizeof(*ks->states));
		ks->created = calloc(n + 1, sizeof(*ks->created));
		if (ks->metrics == NULL || ks->states == NULL || ks->created == NULL)
			rc = writ_err_set(err, WRIT_ERR_NOMEM, "out of memory");
	}
	if (rc == WRIT_OK)
		rc = keyring_load(p11, &ks->kr, err);
	if (rc == WRIT_OK)
		rc = fill(ks, cfg, rows, n, err);
	/* Keys made since (by this issuer, the CLI or another instance) get
	 * their public JWK recorded for good; that change republishes once. */
	if (rc == WRIT_OK && lifecycle_record_jwks(st, ks->kr, rows, n, err) != WRIT_OK)
		fprintf(stderr, "writ-issuer: keys: %s (recorded next time)\n", err->msg);
	free(rows);
	if (rc != WRIT_OK) {
		keyset_free(ks);
		return rc;
	}
	*out = ks;
	return WRIT_OK;
}

void keyset_slot_init(keyset_slot *s)
{
	pthread_mutex_init(&s->mu, NULL);
	s->cur = NULL;
}

void keyset_slot_destroy(keyset_slot *s)
{
	keyset_put(s, s->cur);
	s->cur = NULL;
	pthread_mutex_destroy(&s->mu);
}

keyset *keyset_get(keyset_slot *s)
{
	keyset *ks;

	/* Read and reference under one lock, so a swap cannot free the set
	 * between the two. */
	pthread_mutex_lock(&s->mu);
	ks = s->cur;
	if (ks != NULL)
		ks->refs++;
	pthread_mutex_unlock(&s->mu);
	return ks;
}

void keyset_put(keyset_slot *s, keyset *ks)
{
	int last;

	if (ks == NULL)
		return;
	pthread_mutex_lock(&s->mu);
	last = --ks->refs == 0;
	pthread_mutex_unlock(&s->mu);
	if (last)
		keyset_free(ks);
}

void keyset_slot_set(keyset_slot *s, keyset *ks)
{
	keyset *old;

	pthread_mutex_lock(&s->mu);
	old = s->cur;
	s->cur = ks;
	pthread_mutex_unlock(&s->mu);
	keyset_put(s, old);
}
