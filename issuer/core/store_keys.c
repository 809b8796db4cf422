/*
 * store_keys.c - the signing key lifecycle rows (see store.h): who may
 * sign, what is published, and when each state ends.
 */
#include <stdlib.h>
#include <string.h>

#include "store_int.h"
#include "writ_int.h"

#define SK_LIST_MAX 4096 /* rows read by store_sk_list: far beyond any rotation history */

static const char *const sk_names[] = {
    [STORE_SK_PENDING] = "pending", [STORE_SK_ACTIVE] = "active",   [STORE_SK_RETIRED] = "retired",
    [STORE_SK_REMOVED] = "removed", [STORE_SK_REVOKED] = "revoked",
};

const char *store_sk_state_name(store_sk_state st)
{
	if (st <= STORE_SK_NONE || st > STORE_SK_REVOKED)
		return NULL;
	return sk_names[st];
}

static store_sk_state sk_from_name(const char *name)
{
	int i;

	for (i = STORE_SK_PENDING; name != NULL && i <= STORE_SK_REVOKED; i++)
		if (strcmp(name, sk_names[i]) == 0)
			return (store_sk_state)i;
	return STORE_SK_NONE;
}

static void copy_text(char *dst, size_t size, sqlite3_stmt *st, int col)
{
	const char *v = (const char *)sqlite3_column_text(st, col);

	snprintf(dst, size, "%s", v != NULL ? v : "");
}

/* One row of ST_SK_LIST / ST_SK_GET's column list. A row whose state or
 * alg this build does not know is refused rather than guessed at. */
static writ_rc row_read(sqlite3_stmt *st, store_sk *k, writ_err *err)
{
	int64_t *t[] = {&k->created_at,   &k->activate_after, &k->activated_at, &k->retired_at,
	                &k->remove_after, &k->removed_at,     &k->revoked_at,   &k->purged_at};
	size_t i;

	memset(k, 0, sizeof(*k));
	copy_text(k->kid, sizeof(k->kid), st, 0);
	k->alg = writ_alg_from_name((const char *)sqlite3_column_text(st, 1));
	copy_text(k->p11_id, sizeof(k->p11_id), st, 2);
	k->state = sk_from_name((const char *)sqlite3_column_text(st, 3));
	for (i = 0; i < sizeof(t) / sizeof(t[0]); i++)
		*t[i] = sqlite3_column_int64(st, 4 + (int)i);
	copy_text(k->reason, sizeof(k->reason), st, 12);
	copy_text(k->actor, sizeof(k->actor), st, 13);
	k->published_at = sqlite3_column_int64(st, 14);
	copy_text(k->jwk, sizeof(k->jwk), st, 15);
	if (k->state == STORE_SK_NONE || k->alg == WRIT_ALG_NONE)
		return writ_err_set(err, WRIT_ERR_UNAVAILABLE,
		                    "store: signing key %s has an invalid state or alg", k->kid);
	return WRIT_OK;
}

writ_rc store_sk_get(store *s, const char *kid, store_sk *out, writ_err *err)
{
	sqlite3_stmt *st = store_stmt(s, ST_SK_GET, err);
	writ_rc rc;
	int r;

	if (st == NULL)
		return STMT_FAIL(err);
	sqlite3_bind_text(st, 1, kid, -1, SQLITE_STATIC);
	r = sqlite3_step(st);
	if (r == SQLITE_ROW)
		rc = row_read(st, out, err);
	else if (r == SQLITE_DONE)
		rc =
		    writ_err_set(err, WRIT_ERR_NOT_FOUND, "no signing key %.64s in the store", kid);
	else
		rc = store_sqlerr(s, err, "read signing key");
	store_done(st);
	return rc;
}

writ_rc store_sk_list(store *s, store_sk **keys, size_t *n, writ_err *err)
{
	sqlite3_stmt *st = store_stmt(s, ST_SK_LIST, err);
	store_sk *arr = NULL, *tmp;
	size_t cnt = 0, cap = 0;
	writ_rc rc = WRIT_OK;
	int r;

	*keys = NULL;
	*n = 0;
	if (st == NULL)
		return STMT_FAIL(err);
	while (rc == WRIT_OK && (r = sqlite3_step(st)) == SQLITE_ROW) {
		if (cnt == cap) {
			cap = cap ? cap * 2 : 8;
			tmp = cap <= SK_LIST_MAX ? realloc(arr, cap * sizeof(*arr)) : NULL;
			if (tmp == NULL) {
				rc = writ_err_set(err, WRIT_ERR_NOMEM, "out of memory");
				break;
			}
			arr = tmp;
		}
		rc = row_read(st, &arr[cnt], err);
		cnt += rc == WRIT_OK;
	}
	if (rc == WRIT_OK && r != SQLITE_DONE)
		rc = store_sqlerr(s, err, "list signing keys");
	store_done(st);
	if (rc != WRIT_OK) {
		free(arr);
		return rc;
	}
	*keys = arr;
	*n = cnt;
	return WRIT_OK;
}

/* The kid of the first row of a one-column query bound to (a1 text or
 * a1 integer); "" if none. */
static writ_rc query_kid(store *s, store_stmt_id id, const char *a1, int64_t i1, char *kid,
                         writ_err *err)
{
	sqlite3_stmt *st = store_stmt(s, id, err);
	writ_rc rc = WRIT_OK;
	int r;

	kid[0] = '\0';
	if (st == NULL)
		return STMT_FAIL(err);
	if (a1 != NULL)
		sqlite3_bind_text(st, 1, a1, -1, SQLITE_STATIC);
	else
		sqlite3_bind_int64(st, 1, i1);
	r = sqlite3_step(st);
	if (r == SQLITE_ROW)
		copy_text(kid, WRIT_KID_MAX + 1, st, 0);
	else if (r != SQLITE_DONE)
		rc = store_sqlerr(s, err, "read signing keys");
	store_done(st);
	return rc;
}

/* Run an UPDATE bound to kid (?1), t (?2) and the texts/ints that follow;
 * *changed = rows changed. */
static writ_rc update(store *s, store_stmt_id id, const char *kid, int64_t t, int64_t t2,
                      const char *reason, int *changed, writ_err *err)
{
	sqlite3_stmt *st = store_stmt(s, id, err);
	writ_rc rc = WRIT_OK;

	if (st == NULL)
		return STMT_FAIL(err);
	sqlite3_bind_text(st, 1, kid, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, t);
	if (id == ST_SK_RETIRE) {
		sqlite3_bind_int64(st, 3, t2);
		sqlite3_bind_text(st, 4, reason, -1, SQLITE_STATIC);
	} else if (id != ST_SK_PURGED) {
		sqlite3_bind_text(st, 3, reason, -1, SQLITE_STATIC);
	}
	if (sqlite3_step(st) != SQLITE_DONE)
		rc = store_sqlerr(s, err, "update signing key");
	else if (changed != NULL)
		*changed = sqlite3_changes(s->db);
	store_done(st);
	return rc;
}

/* Make kid (pending) the active key of alg, retiring the current one
 * first so the unique index never sees two. Inside a transaction. */
static writ_rc activate(store *s, const char *kid, const char *alg, const store_sk_windows *w,
                        int64_t now, const char *reason, writ_err *err)
{
	char cur[WRIT_KID_MAX + 1], why[WRIT_KID_MAX + 32];
	writ_rc rc;
	int n = 0;

	rc = query_kid(s, ST_SK_ACTIVE, alg, 0, cur, err);
	if (rc == WRIT_OK && cur[0] != '\0') {
		snprintf(why, sizeof(why), "replaced by %s", kid);
		rc = update(s, ST_SK_RETIRE, cur, now, now + w->retired_secs, why, NULL, err);
	}
	if (rc == WRIT_OK)
		rc = update(s, ST_SK_ACTIVATE, kid, now, 0, reason, &n, err);
	if (rc == WRIT_OK && n != 1)
		rc = writ_err_set(err, WRIT_ERR_ARG, "key %s is not pending", kid);
	return rc;
}

static writ_rc count_state(store *s, const char *alg, const char *state, int64_t *n, writ_err *err)
{
	sqlite3_stmt *st = store_stmt(s, ST_SK_COUNT, err);
	writ_rc rc = WRIT_OK;

	if (st == NULL)
		return STMT_FAIL(err);
	sqlite3_bind_text(st, 1, alg, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, state, -1, SQLITE_STATIC);
	if (sqlite3_step(st) == SQLITE_ROW)
		*n = sqlite3_column_int64(st, 0);
	else
		rc = store_sqlerr(s, err, "count signing keys");
	store_done(st);
	return rc;
}

/* INSERT inside the caller's transaction. */
static writ_rc insert(store *s, const char *kid, const char *alg, const char *p11_id,
                      store_sk_state state, int64_t now, int64_t activate_after, const char *reason,
                      writ_err *err)
{
	sqlite3_stmt *st = store_stmt(s, ST_SK_INSERT, err);
	writ_rc rc = WRIT_OK;

	if (st == NULL)
		return STMT_FAIL(err);
	sqlite3_bind_text(st, 1, kid, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, alg, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, p11_id, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 4, store_sk_state_name(state), -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 5, now);
	sqlite3_bind_int64(st, 6, activate_after);
	if (state == STORE_SK_ACTIVE)
		sqlite3_bind_int64(st, 7, now);
	sqlite3_bind_text(st, 8, reason, -1, SQLITE_STATIC);
	if (sqlite3_step(st) != SQLITE_DONE) {
		if ((sqlite3_extended_errcode(s->db) & 0xff) == SQLITE_CONSTRAINT)
			rc = writ_err_set(err, WRIT_ERR_ARG, "signing key %s is already recorded",
			                  kid);
		else
			rc = store_sqlerr(s, err, "record signing key");
	}
	store_done(st);
	return rc;
}

static int args_ok(const char *kid, writ_alg alg, const char *p11_id, const char *reason)
{
	return kid != NULL && kid[0] != '\0' && strlen(kid) <= WRIT_KID_MAX && p11_id != NULL &&
	       strlen(p11_id) <= STORE_P11_ID_HEX_MAX && writ_alg_name(alg) != NULL &&
	       (reason == NULL || strlen(reason) <= STORE_REASON_MAX);
}

/* store_sk_add inside the transaction. */
static writ_rc add_tx(store *s, const char *kid, const char *alg, const char *p11_id,
                      store_sk_mode mode, const store_sk_windows *w, int64_t now,
                      const char *reason, store_sk_state *state, writ_err *err)
{
	int64_t active = 0, pending = 0;
	writ_rc rc;

	rc = count_state(s, alg, "active", &active, err);
	if (rc == WRIT_OK)
		rc = count_state(s, alg, "pending", &pending, err);
	if (rc != WRIT_OK)
		return rc;
	if (mode == STORE_SK_SCHEDULE && pending > 0)
		return writ_err_set(err, WRIT_ERR_ARG, "%s already has a pending key", alg);
	if (active == 0) {
		*state = STORE_SK_ACTIVE;
		return insert(s, kid, alg, p11_id, STORE_SK_ACTIVE, now, now,
		              reason != NULL ? reason : "first key of its algorithm", err);
	}
	*state = STORE_SK_PENDING;
	rc = insert(s, kid, alg, p11_id, STORE_SK_PENDING, now,
	            mode == STORE_SK_NOW ? now : now + w->pending_secs, reason, err);
	if (rc == WRIT_OK && mode == STORE_SK_NOW) {
		*state = STORE_SK_ACTIVE;
		rc = activate(s, kid, alg, w, now, reason, err);
	}
	return rc;
}

writ_rc store_sk_add(store *s, const char *kid, writ_alg alg, const char *p11_id,
                     store_sk_mode mode, const store_sk_windows *w, int64_t now, const char *reason,
                     store_sk_state *state, writ_err *err)
{
	store_sk_state dummy;
	writ_rc rc;

	if (s == NULL || w == NULL || !args_ok(kid, alg, p11_id, reason))
		return writ_err_set(err, WRIT_ERR_ARG, "invalid signing key record");
	rc = store_tx_begin(s, 1, err);
	if (rc != WRIT_OK)
		return rc;
	rc = add_tx(s, kid, writ_alg_name(alg), p11_id, mode, w, now, reason,
	            state != NULL ? state : &dummy, err);
	return store_tx_end(s, 1, rc, err);
}

/* store_sk_adopt inside the transaction. */
static writ_rc adopt_tx(store *s, const char *alg, const store_sk *keys, size_t n,
                        const store_sk_windows *w, int64_t now, const char *reason, size_t *adopted,
                        writ_err *err)
{
	char why[WRIT_KID_MAX + 48];
	int64_t c, rows = 0;
	writ_rc rc = WRIT_OK;
	size_t i;
	int st;

	for (st = STORE_SK_PENDING; rc == WRIT_OK && st <= STORE_SK_REVOKED; st++) {
		c = 0;
		rc = count_state(s, alg, sk_names[st], &c, err);
		rows += c;
	}
	/* Someone recorded keys of alg since the caller looked: those rows
	 * say what the keys are, not an adoption. */
	if (rc != WRIT_OK || rows > 0)
		return rc;
	rc = insert(s, keys[0].kid, alg, keys[0].p11_id, STORE_SK_ACTIVE, now, now, reason, err);
	snprintf(why, sizeof(why), "adopted: older than %s", keys[0].kid);
	/* The others signed before the newest: retired (still published until
	 * every token they signed has expired), as the old issuer treated them. */
	for (i = 1; rc == WRIT_OK && i < n; i++) {
		rc = insert(s, keys[i].kid, alg, keys[i].p11_id, STORE_SK_PENDING, now,
		            now + w->pending_secs, reason, err);
		if (rc == WRIT_OK)
			rc = update(s, ST_SK_RETIRE, keys[i].kid, now, now + w->retired_secs, why,
			            NULL, err);
	}
	if (rc == WRIT_OK)
		*adopted = n;
	return rc;
}

writ_rc store_sk_adopt(store *s, writ_alg alg, const store_sk *keys, size_t n,
                       const store_sk_windows *w, int64_t now, const char *reason, size_t *adopted,
                       writ_err *err)
{
	size_t i;
	writ_rc rc;

	*adopted = 0;
	if (s == NULL || w == NULL || keys == NULL || n == 0)
		return writ_err_set(err, WRIT_ERR_ARG, "store_sk_adopt: bad arguments");
	for (i = 0; i < n; i++)
		if (keys[i].alg != alg || !args_ok(keys[i].kid, alg, keys[i].p11_id, reason))
			return writ_err_set(err, WRIT_ERR_ARG, "invalid signing key record");
	rc = store_tx_begin(s, 1, err);
	if (rc != WRIT_OK)
		return rc;
	rc = adopt_tx(s, writ_alg_name(alg), keys, n, w, now, reason, adopted, err);
	rc = store_tx_end(s, 1, rc, err);
	if (rc != WRIT_OK)
		*adopted = 0;
	return rc;
}

writ_rc store_sk_set_jwk(store *s, const char *kid, const char *jwk_json, writ_err *err)
{
	sqlite3_stmt *st;
	writ_rc rc;

	if (s == NULL || kid == NULL || jwk_json == NULL || jwk_json[0] == '\0' ||
	    strlen(jwk_json) > STORE_SK_JWK_MAX)
		return writ_err_set(err, WRIT_ERR_ARG, "store_sk_set_jwk: bad arguments");
	if ((rc = store_tx_begin(s, 1, err)) != WRIT_OK)
		return rc;
	if ((st = store_stmt(s, ST_SK_SET_JWK, err)) == NULL)
		return store_tx_end(s, 1, STMT_FAIL(err), err);
	sqlite3_bind_text(st, 1, kid, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, jwk_json, -1, SQLITE_STATIC);
	if (sqlite3_step(st) != SQLITE_DONE)
		rc = store_sqlerr(s, err, "record public key");
	store_done(st);
	return store_tx_end(s, 1, rc, err);
}

/* Bounded: each pass changes one row; a store holds few keys. */
#define ADVANCE_MAX 64

writ_rc store_sk_hold(store *s, const char *kid, int64_t now, int64_t not_before, int always,
                      int *changed, writ_err *err)
{
	sqlite3_stmt *st;
	writ_rc rc;

	if (changed != NULL)
		*changed = 0;
	if ((rc = store_tx_begin(s, 1, err)) != WRIT_OK)
		return rc;
	if ((st = store_stmt(s, ST_SK_HOLD, err)) == NULL) {
		rc = STMT_FAIL(err);
	} else {
		sqlite3_bind_text(st, 1, kid, -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 2, not_before);
		sqlite3_bind_int64(st, 3, now);
		sqlite3_bind_int(st, 4, always != 0);
		if (sqlite3_step(st) != SQLITE_DONE)
			rc = store_sqlerr(s, err, "hold pending key");
		else if (changed != NULL)
			*changed = sqlite3_changes(s->db);
		store_done(st);
	}
	return store_tx_end(s, 1, rc, err);
}

writ_rc store_sk_advance(store *s, const store_sk_windows *w, int64_t now, int *changed,
                         writ_err *err)
{
	char kid[WRIT_KID_MAX + 1];
	store_sk k;
	writ_rc rc;
	int i, n = 0, c;

	if (changed != NULL)
		*changed = 0;
	/* The common tick has nothing due: look without taking the write
	 * lock, so idle issuers do not serialise on the store each tick. */
	rc = query_kid(s, ST_SK_DUE_PENDING, NULL, now, kid, err);
	if (rc == WRIT_OK && kid[0] == '\0')
		rc = query_kid(s, ST_SK_DUE_RETIRED, NULL, now, kid, err);
	if (rc != WRIT_OK || kid[0] == '\0')
		return rc;
	rc = store_tx_begin(s, 1, err);
	for (i = 0; rc == WRIT_OK && i < ADVANCE_MAX; i++) {
		rc = query_kid(s, ST_SK_DUE_PENDING, NULL, now, kid, err);
		if (rc != WRIT_OK || kid[0] == '\0')
			break;
		rc = store_sk_get(s, kid, &k, err);
		if (rc == WRIT_OK)
			rc = activate(s, kid, writ_alg_name(k.alg), w, now,
			              "published for key_pending_secs", err);
		n++;
	}
	for (i = 0; rc == WRIT_OK && i < ADVANCE_MAX; i++) {
		rc = query_kid(s, ST_SK_DUE_RETIRED, NULL, now, kid, err);
		if (rc != WRIT_OK || kid[0] == '\0')
			break;
		c = 0;
		rc = update(s, ST_SK_REMOVE, kid, now, 0,
		            "every token it signed has expired (key_retired_secs)", &c, err);
		n += c;
	}
	if (changed != NULL)
		*changed = rc == WRIT_OK ? n : 0;
	return store_tx_end(s, 1, rc, err);
}

static writ_rc retire_tx(store *s, const store_sk *k, const store_sk_windows *w, int64_t now,
                         const char *reason, char *successor, writ_err *err)
{
	const char *alg = writ_alg_name(k->alg);
	char next[WRIT_KID_MAX + 1];
	store_sk n;
	writ_rc rc;

	if (k->state == STORE_SK_RETIRED)
		return WRIT_OK;
	if (k->state != STORE_SK_PENDING && k->state != STORE_SK_ACTIVE)
		return writ_err_set(err, WRIT_ERR_ARG, "key %s is %s already", k->kid,
		                    store_sk_state_name(k->state));
	if (k->state == STORE_SK_PENDING)
		return update(s, ST_SK_RETIRE, k->kid, now, now + w->retired_secs, reason, NULL,
		              err);
	rc = query_kid(s, ST_SK_NEWEST_PENDING, alg, 0, next, err);
	if (rc != WRIT_OK)
		return rc;
	if (next[0] == '\0')
		return writ_err_set(err, WRIT_ERR_ARG,
		                    "key %s is the only active %s key: run 'writ key rotate' first "
		                    "(or 'writ key rotate --now')",
		                    k->kid, alg);
	/* The successor signs from now on: only once it is what the clock
	 * would activate anyway, published by an issuer for its whole window
	 * (else verifiers' cached key sets miss it; rotate --now is the way to
	 * switch at once knowingly). */
	rc = store_sk_get(s, next, &n, err);
	if (rc != WRIT_OK)
		return rc;
	if (n.published_at == 0 || n.activate_after >= now)
		return writ_err_set(
		    err, WRIT_ERR_ARG,
		    "the pending key %s has %s: retire %s once it has, or switch at once with "
		    "'writ key rotate --now'",
		    next,
		    n.published_at == 0 ? "not been published by an issuer yet"
		                        : "not been published for key_pending_secs yet",
		    k->kid);
	if (successor != NULL)
		snprintf(successor, WRIT_KID_MAX + 1, "%s", next);
	return activate(s, next, alg, w, now, reason, err);
}

writ_rc store_sk_retire(store *s, const char *kid, const store_sk_windows *w, int64_t now,
                        const char *reason, char *successor, writ_err *err)
{
	store_sk k;
	writ_rc rc;

	if (successor != NULL)
		successor[0] = '\0';
	rc = store_tx_begin(s, 1, err);
	if (rc != WRIT_OK)
		return rc;
	rc = store_sk_get(s, kid, &k, err);
	if (rc == WRIT_OK)
		rc = retire_tx(s, &k, w, now, reason, successor, err);
	return store_tx_end(s, 1, rc, err);
}

static writ_rc revoke_tx(store *s, const char *kid, const char *reason, const store_sk *repl,
                         int64_t now, store_sk_state *was, writ_err *err)
{
	store_sk k;
	writ_rc rc;
	int n = 0;

	rc = store_sk_get(s, kid, &k, err);
	if (rc != WRIT_OK)
		return rc;
	*was = k.state;
	if (k.state == STORE_SK_REVOKED)
		return rc;
	if (k.state == STORE_SK_ACTIVE && (repl == NULL || repl->alg != k.alg))
		return writ_err_set(err, WRIT_ERR_ARG,
		                    "key %s is active: a replacement key of the same alg is needed",
		                    kid);
	rc = update(s, ST_SK_REVOKE, kid, now, 0, reason, &n, err);
	if (rc == WRIT_OK && k.state == STORE_SK_ACTIVE)
		rc = insert(s, repl->kid, writ_alg_name(repl->alg), repl->p11_id, STORE_SK_ACTIVE,
		            now, now, "replaces revoked key", err);
	return rc;
}

writ_rc store_sk_revoke(store *s, const char *kid, const char *reason, const store_sk *repl,
                        int64_t now, store_sk_state *was, writ_err *err)
{
	store_sk_state dummy;
	writ_rc rc;

	if (was == NULL)
		was = &dummy;
	*was = STORE_SK_NONE;
	if (s == NULL || kid == NULL || reason == NULL || reason[0] == '\0' ||
	    strlen(reason) > STORE_REASON_MAX)
		return writ_err_set(err, WRIT_ERR_ARG, "revoking a key needs a reason");
	if (repl != NULL && !args_ok(repl->kid, repl->alg, repl->p11_id, NULL))
		return writ_err_set(err, WRIT_ERR_ARG, "invalid replacement key");
	rc = store_tx_begin(s, 1, err);
	if (rc == WRIT_OK)
		rc = store_tx_end(s, 1, revoke_tx(s, kid, reason, repl, now, was, err), err);
	return rc;
}

writ_rc store_sk_purged(store *s, const char *kid, int64_t now, writ_err *err)
{
	writ_rc rc;
	int n = 0;

	rc = store_tx_begin(s, 1, err);
	if (rc != WRIT_OK)
		return rc;
	rc = update(s, ST_SK_PURGED, kid, now, 0, NULL, &n, err);
	if (rc == WRIT_OK && n != 1)
		rc = writ_err_set(err, WRIT_ERR_ARG, "key %s is not removed or revoked", kid);
	return store_tx_end(s, 1, rc, err);
}

static writ_rc audit_tx(store *s, const char *event, const char *kid, const char *alg,
                        const char *outcome, writ_err *err)
{
	sqlite3_stmt *st = store_stmt(s, ST_SK_AUDIT, err);
	writ_rc rc = WRIT_OK;

	if (st == NULL)
		return STMT_FAIL(err);
	sqlite3_bind_text(st, 1, event, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, kid, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, alg, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 4, outcome, -1, SQLITE_STATIC);
	if (sqlite3_step(st) != SQLITE_DONE)
		rc = store_sqlerr(s, err, "write audit outbox");
	store_done(st);
	return rc;
}

writ_rc store_sk_missing(store *s, const char *kid, int64_t now, const char *why, writ_err *err)
{
	store_sk k;
	writ_rc rc;
	int n = 0;

	rc = store_tx_begin(s, 1, err);
	if (rc != WRIT_OK)
		return rc;
	rc = store_sk_get(s, kid, &k, err);
	if (rc == WRIT_OK)
		rc = update(s, ST_SK_REMOVE, kid, now, 0, why, &n, err);
	if (rc == WRIT_OK && n == 1)
		rc = audit_tx(s, "key_reconciled", kid, writ_alg_name(k.alg), why, err);
	return store_tx_end(s, 1, rc, err);
}

writ_rc store_sk_audit(store *s, const char *event, const char *kid, writ_alg alg,
                       const char *outcome, writ_err *err)
{
	writ_rc rc = store_tx_begin(s, 1, err);

	if (rc == WRIT_OK)
		rc = store_tx_end(s, 1, audit_tx(s, event, kid, writ_alg_name(alg), outcome, err),
		                  err);
	return rc;
}

writ_rc store_keys_generation(store *s, uint64_t *gen, writ_err *err)
{
	sqlite3_stmt *st = store_stmt(s, ST_SK_GEN, err);
	writ_rc rc = WRIT_OK;

	if (st == NULL)
		return STMT_FAIL(err);
	if (sqlite3_step(st) == SQLITE_ROW)
		*gen = (uint64_t)sqlite3_column_int64(st, 0);
	else
		rc = store_sqlerr(s, err, "read key generation");
	store_done(st);
	return rc;
}
