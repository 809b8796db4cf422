/*
 * lifecycle.c - key generation, reconciliation and scheduled rotation over
 * the HSM and the store (see lifecycle.h).
 */
#define _XOPEN_SOURCE 700 /* strptime */
#include "lifecycle.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "keyring.h"
#include "writ_int.h"

void lifecycle_windows(const writ_config *cfg, store_sk_windows *w)
{
	w->pending_secs = cfg->key_pending_secs;
	w->retired_secs = cfg->key_retired_secs;
}

void lifecycle_id_hex(const unsigned char *id, size_t len, char *hex)
{
	static const char digits[] = "0123456789abcdef";
	size_t i;

	for (i = 0; i < len && 2 * i < STORE_P11_ID_HEX_MAX; i++) {
		hex[2 * i] = digits[id[i] >> 4];
		hex[2 * i + 1] = digits[id[i] & 15];
	}
	hex[2 * i] = '\0';
}

int lifecycle_id_parse(const char *hex, unsigned char *id, size_t *len)
{
	size_t n = strlen(hex), i;

	if (n == 0 || n % 2 != 0 || n / 2 > P11_ID_MAX)
		return -1;
	for (i = 0; i < n / 2; i++) {
		unsigned v;
		if (sscanf(hex + 2 * i, "%2x", &v) != 1)
			return -1;
		id[i] = (unsigned char)v;
	}
	*len = n / 2;
	return 0;
}

writ_rc lifecycle_generate(p11_ctx *p11, store *st, const writ_config *cfg, writ_alg alg,
                           store_sk_mode mode, const char *reason, store_sk *out, writ_err *err)
{
	char hex[STORE_P11_ID_HEX_MAX + 1], kid[WRIT_KID_MAX + 1];
	store_sk_windows w;
	writ_jwk *jwk = NULL;
	const char *crash = getenv(LIFECYCLE_CRASH_ENV);
	p11_key key = {0};
	writ_rc rc;

	lifecycle_windows(cfg, &w);
	rc = p11_key_generate(p11, alg, &key, err);
	if (rc != WRIT_OK)
		return rc;
	if (crash != NULL && strcmp(crash, "1") == 0)
		_exit(3);
	rc = writ_jwk_from_pkey(key.pub, alg, &jwk, err);
	if (rc != WRIT_OK)
		goto undo;
	snprintf(kid, sizeof(kid), "%s", writ_jwk_kid(jwk));
	lifecycle_id_hex(key.id, key.id_len, hex);
	rc = store_sk_add(st, kid, alg, hex, mode, &w, (int64_t)time(NULL), reason, NULL, err);
	if (rc == WRIT_OK && out != NULL)
		rc = store_sk_get(st, kid, out, err);
	if (rc == WRIT_OK)
		goto out;
undo:
	/* Not recorded, so never published: take it out of the token now
	 * rather than leave it for reconcile (which catches it if this fails). */
	if (p11_key_destroy(p11, key.id, key.id_len, NULL) != WRIT_OK)
		goto out;
out:
	writ_jwk_free(jwk);
	EVP_PKEY_free(key.pub);
	return rc;
}

/* Creation time from the label "writ:ALG:YYYYmmddTHHMMSSZ"; 0 if unknown
 * (keys whose label we cannot read are treated as old). */
static int64_t label_time(const char *label)
{
	const char *t = strrchr(label, ':');
	struct tm tm = {0};

	if (t == NULL || strptime(t + 1, "%Y%m%dT%H%M%SZ", &tm) == NULL)
		return 0;
	return (int64_t)timegm(&tm);
}

static const store_sk *row_find(const store_sk *rows, size_t n, const char *kid)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (strcmp(rows[i].kid, kid) == 0)
			return &rows[i];
	return NULL;
}

static int alg_tracked(const store_sk *rows, size_t n, writ_alg alg)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (rows[i].alg == alg)
			return 1;
	return 0;
}

/* Keys from before the store: the newest becomes active, the rest retired,
 * which is how the old issuer treated them. */
static writ_rc adopt(store *st, const writ_config *cfg, const keyring *kr, writ_alg alg,
                     int64_t now, int *changed, writ_err *err)
{
	const keyring_entry *newest = keyring_newest(kr, alg), *e;
	char hex[STORE_P11_ID_HEX_MAX + 1], why[WRIT_KID_MAX + 48];
	store_sk_windows w;
	writ_rc rc;
	size_t i;

	lifecycle_windows(cfg, &w);
	lifecycle_id_hex(newest->id, newest->id_len, hex);
	rc = store_sk_add(st, writ_jwk_kid(newest->jwk), alg, hex, STORE_SK_NOW, &w, now,
	                  "adopted: made before the key lifecycle store", NULL, err);
	for (i = 0; rc == WRIT_OK && (e = keyring_get(kr, i)) != NULL; i++) {
		if (e == newest || writ_jwk_alg(e->jwk) != alg)
			continue;
		lifecycle_id_hex(e->id, e->id_len, hex);
		rc = store_sk_add(st, writ_jwk_kid(e->jwk), alg, hex, STORE_SK_ROTATE, &w, now,
		                  "adopted: made before the key lifecycle store", NULL, err);
		snprintf(why, sizeof(why), "adopted: older than %s", writ_jwk_kid(newest->jwk));
		if (rc == WRIT_OK)
			rc = store_sk_retire(st, writ_jwk_kid(e->jwk), &w, now, why, NULL, err);
		(*changed)++;
	}
	(*changed)++;
	return rc;
}

/* HSM keys without a row. */
static writ_rc reconcile_hsm(p11_ctx *p11, store *st, const writ_config *cfg, const keyring *kr,
                             const store_sk *rows, size_t n, int64_t now, int *changed, int *again,
                             writ_err *err)
{
	const keyring_entry *e;
	writ_rc rc = WRIT_OK;
	size_t i;

	for (i = 0; rc == WRIT_OK && (e = keyring_get(kr, i)) != NULL; i++) {
		writ_alg alg = writ_jwk_alg(e->jwk);
		const char *kid = writ_jwk_kid(e->jwk);
		if (row_find(rows, n, kid) != NULL)
			continue;
		if (!alg_tracked(rows, n, alg)) {
			/* The rows change: the caller looks again. */
			*again = 1;
			return adopt(st, cfg, kr, alg, now, changed, err);
		}
		if (now - label_time(e->label) < LIFECYCLE_ORPHAN_GRACE)
			continue;
		rc = p11_key_destroy(p11, e->id, e->id_len, err);
		if (rc == WRIT_OK)
			rc = store_sk_audit(st, "key_reconciled", kid, alg,
			                    "HSM key without a store record (crash between "
			                    "generating and recording): never published, destroyed",
			                    err);
		(*changed)++;
	}
	return rc;
}

/* Rows whose HSM object is gone. */
static writ_rc reconcile_rows(store *st, const keyring *kr, const store_sk *rows, size_t n,
                              int64_t now, int *changed, writ_err *err)
{
	writ_rc rc = WRIT_OK;
	size_t i;

	for (i = 0; rc == WRIT_OK && i < n; i++) {
		const store_sk *r = &rows[i];
		if (r->state != STORE_SK_PENDING && r->state != STORE_SK_ACTIVE &&
		    r->state != STORE_SK_RETIRED)
			continue;
		if (keyring_find(kr, r->kid) != NULL)
			continue;
		rc = store_sk_missing(st, r->kid, now,
		                      "the HSM no longer holds this key: withdrawn from the JWKS",
		                      err);
		(*changed)++;
	}
	return rc;
}

writ_rc lifecycle_record_jwks(store *st, const keyring *kr, const store_sk *rows, size_t n,
                              writ_err *err)
{
	writ_rc rc = WRIT_OK;
	size_t i;

	for (i = 0; rc == WRIT_OK && i < n; i++) {
		const keyring_entry *e;
		char *json;

		if (rows[i].jwk[0] != '\0' || (e = keyring_find(kr, rows[i].kid)) == NULL)
			continue;
		json = writ_jwk_to_json(e->jwk);
		rc = json != NULL ? store_sk_set_jwk(st, rows[i].kid, json, err)
		                  : writ_err_set(err, WRIT_ERR_NOMEM, "out of memory");
		free(json);
	}
	return rc;
}

writ_rc lifecycle_reconcile(p11_ctx *p11, store *st, const writ_config *cfg, int64_t now,
                            int *changed, writ_err *err)
{
	store_sk *rows = NULL;
	keyring *kr = NULL;
	size_t n = 0;
	writ_rc rc;
	int c = 0, pass, again = 0;

	/* Adoption changes the rows, so look again; one pass per alg at most. */
	for (pass = 0; pass < 8; pass++) {
		again = 0;
		rc = keyring_load(p11, &kr, err);
		if (rc == WRIT_OK)
			rc = store_sk_list(st, &rows, &n, err);
		if (rc == WRIT_OK)
			rc = reconcile_hsm(p11, st, cfg, kr, rows, n, now, &c, &again, err);
		if (rc == WRIT_OK && !again)
			rc = reconcile_rows(st, kr, rows, n, now, &c, err);
		if (rc == WRIT_OK && !again)
			rc = lifecycle_record_jwks(st, kr, rows, n, err);
		keyring_free(kr);
		free(rows);
		kr = NULL, rows = NULL;
		if (rc != WRIT_OK || !again)
			break;
	}
	if (changed != NULL)
		*changed = c;
	return rc;
}

/* A pending key for each alg whose active key is old enough. The store
 * refuses a second pending key (STORE_SK_SCHEDULE), so of several issuers
 * on one schedule only one key survives; the others are destroyed. */
writ_rc lifecycle_rotate_due(p11_ctx *p11, store *st, const writ_config *cfg, int64_t now,
                             int *changed, writ_err *err)
{
	int64_t due_age = (int64_t)cfg->rotation_period - (int64_t)cfg->key_pending_secs;
	store_sk *rows = NULL;
	writ_rc rc;
	size_t n = 0, i, j;

	if (cfg->rotation_period == 0)
		return WRIT_OK;
	rc = store_sk_list(st, &rows, &n, err);
	for (i = 0; rc == WRIT_OK && i < n; i++) {
		if (rows[i].state != STORE_SK_ACTIVE || now - rows[i].activated_at < due_age)
			continue;
		for (j = 0; j < n; j++)
			if (rows[j].alg == rows[i].alg && rows[j].state == STORE_SK_PENDING)
				break;
		if (j < n)
			continue;
		rc = lifecycle_generate(p11, st, cfg, rows[i].alg, STORE_SK_SCHEDULE,
		                        "scheduled rotation (rotation_period)", NULL, err);
		if (rc == WRIT_ERR_ARG) /* another instance was first */
			rc = WRIT_OK;
		else if (rc == WRIT_OK && changed != NULL)
			(*changed)++;
	}
	free(rows);
	return rc;
}

writ_rc lifecycle_advance(store *st, const writ_config *cfg, int64_t now, int *changed,
                          writ_err *err)
{
	store_sk_windows w;

	lifecycle_windows(cfg, &w);
	return store_sk_advance(st, &w, now, changed, err);
}
