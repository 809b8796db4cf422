/*
 * store_outbox.c - the audit outbox (see store.h): records written by the
 * schema's triggers with the change they describe, drained by the issuer.
 */
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "audit.h"
#include "store_int.h"
#include "writ_int.h"

static void actor_fn(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
	store *s = sqlite3_user_data(ctx);

	(void)argc, (void)argv;
	sqlite3_result_text(ctx, s->actor, -1, SQLITE_TRANSIENT);
}

/* writ_event(k1, v1, k2, v2, ...): a JSON object of the pairs whose value
 * is not NULL; text values as strings, integers as numbers; then "at", the
 * time of the change. The record reaches the audit log later (the issuer
 * moves it on its tick, or at its next start), and its line's "ts" says
 * when that happened; "at" says when the CLI made the change. */
static void event_fn(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
	json_t *o = json_object();
	char at[AUDIT_TS_LEN + 1];
	struct timespec now;
	char *out;
	int i;

	for (i = 0; o != NULL && i + 1 < argc; i += 2) {
		const char *k = (const char *)sqlite3_value_text(argv[i]);
		if (k == NULL || sqlite3_value_type(argv[i + 1]) == SQLITE_NULL)
			continue;
		if (sqlite3_value_type(argv[i + 1]) == SQLITE_INTEGER)
			json_object_set_new(o, k, json_integer(sqlite3_value_int64(argv[i + 1])));
		else
			json_object_set_new(
			    o, k, json_string((const char *)sqlite3_value_text(argv[i + 1])));
	}
	clock_gettime(CLOCK_REALTIME, &now);
	audit_ts_format((int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000, at);
	if (o != NULL)
		json_object_set_new(o, "at", json_string(at));
	out = o != NULL ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
	json_decref(o);
	if (out == NULL) {
		sqlite3_result_error_nomem(ctx);
		return;
	}
	sqlite3_result_text(ctx, out, -1, free);
}

int store_actor_register(store *s)
{
	/* _r: the issuer's worker threads open their store connections
	 * concurrently, and getpwuid's static result is shared (found by
	 * ThreadSanitizer, ci/tsan.sh). */
	struct passwd pwd, *pw = NULL;
	char buf[4096];

	if (getpwuid_r(geteuid(), &pwd, buf, sizeof(buf), &pw) != 0)
		pw = NULL;
	snprintf(s->actor, sizeof(s->actor), "uid:%u(%.64s)", (unsigned)geteuid(),
	         pw != NULL ? pw->pw_name : "?");
	/* INNOCUOUS: callable from triggers with trusted_schema off; it only
	 * reads its arguments and the clock (not DETERMINISTIC: the clock). */
	if (sqlite3_create_function(s->db, "writ_event", -1, SQLITE_UTF8 | SQLITE_INNOCUOUS, NULL,
	                            event_fn, NULL, NULL) != SQLITE_OK)
		return sqlite3_errcode(s->db);
	return sqlite3_create_function(s->db, "writ_actor", 0, SQLITE_UTF8 | SQLITE_INNOCUOUS, s,
	                               actor_fn, NULL, NULL);
}

void store_set_actor(store *s, const char *actor)
{
	size_t i;

	snprintf(s->actor, sizeof(s->actor), "%s", actor);
	for (i = 0; s->actor[i] != '\0'; i++)
		if ((unsigned char)s->actor[i] < 0x20)
			s->actor[i] = '?';
}

writ_rc store_outbox_next(store *s, int64_t *id, char **rec, writ_err *err)
{
	sqlite3_stmt *st = store_stmt(s, ST_OUTBOX_NEXT, err);
	writ_rc rc = WRIT_OK;
	int r;

	*rec = NULL;
	if (st == NULL)
		return err != NULL ? err->rc : WRIT_ERR_UNAVAILABLE;
	r = sqlite3_step(st);
	if (r == SQLITE_DONE) {
		rc = WRIT_ERR_NOT_FOUND;
	} else if (r != SQLITE_ROW) {
		rc = store_sqlerr(s, err, "read audit outbox");
	} else {
		*id = sqlite3_column_int64(st, 0);
		*rec = strdup((const char *)sqlite3_column_text(st, 1));
		if (*rec == NULL)
			rc = writ_err_set(err, WRIT_ERR_NOMEM, "out of memory");
	}
	store_done(st);
	return rc;
}

writ_rc store_outbox_delete(store *s, int64_t id, writ_err *err)
{
	sqlite3_stmt *st = store_stmt(s, ST_OUTBOX_DELETE, err);
	writ_rc rc = WRIT_OK;

	if (st == NULL)
		return err != NULL ? err->rc : WRIT_ERR_UNAVAILABLE;
	sqlite3_bind_int64(st, 1, id);
	if (sqlite3_step(st) != SQLITE_DONE)
		rc = store_sqlerr(s, err, "delete from audit outbox");
	store_done(st);
	return rc;
}

writ_rc store_outbox_count(store *s, uint64_t *n, writ_err *err)
{
	sqlite3_stmt *st = store_stmt(s, ST_OUTBOX_COUNT, err);
	writ_rc rc = WRIT_OK;

	if (st == NULL)
		return err != NULL ? err->rc : WRIT_ERR_UNAVAILABLE;
	if (sqlite3_step(st) == SQLITE_ROW)
		*n = (uint64_t)sqlite3_column_int64(st, 0);
	else
		rc = store_sqlerr(s, err, "count audit outbox");
	store_done(st);
	return rc;
}

writ_rc store_outbox_minted(store *s, const char *sub, const char *aud, const char *scope,
                            const char *jti, const char *kid, int64_t exp, writ_err *err)
{
	sqlite3_stmt *st;
	writ_rc rc;

	if (s == NULL || sub == NULL || aud == NULL || scope == NULL || jti == NULL || kid == NULL)
		return writ_err_set(err, WRIT_ERR_ARG, "store_outbox_minted: bad arguments");
	if ((rc = store_tx_begin(s, 1, err)) != WRIT_OK)
		return rc;
	if ((st = store_stmt(s, ST_OUTBOX_MINTED, err)) == NULL)
		return store_tx_end(s, 1, STMT_FAIL(err), err);
	sqlite3_bind_text(st, 1, sub, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, aud, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, scope, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 4, jti, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 5, kid, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 6, exp);
	if (sqlite3_step(st) != SQLITE_DONE)
		rc = store_sqlerr(s, err, "record minted token");
	store_done(st);
	return store_tx_end(s, 1, rc, err);
}
