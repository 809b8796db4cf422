/*
 * store_agent.c - agents, their groups and their pinned public keys.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "store_int.h"
#include "writ_int.h"

/* A store_stmt failure has already filled err; return its code. */

static int64_t now_s(void)
{
	return (int64_t)time(NULL);
}

/* Reasons are shown by `writ agent show` and written to the audit log:
 * well-formed UTF-8 without control characters, so nothing a terminal or
 * a JSON-lines reader would interpret. */
static int reason_valid(const char *r)
{
	const unsigned char *p = (const unsigned char *)r;
	size_t len = strlen(r), i, n, k;

	if (len > STORE_REASON_MAX)
		return 0;
	for (i = 0; i < len; i += n) {
		unsigned c = p[i];
		unsigned cp;

		if (c < 0x20 || c == 0x7f)
			return 0;
		if (c < 0x80) {
			n = 1;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf)
			n = 2, cp = c & 0x1f;
		else if (c >= 0xe0 && c <= 0xef)
			n = 3, cp = c & 0x0f;
		else if (c >= 0xf0 && c <= 0xf4)
			n = 4, cp = c & 0x07;
		else
			return 0;
		if (i + n > len)
			return 0;
		for (k = 1; k < n; k++) {
			if ((p[i + k] & 0xc0) != 0x80)
				return 0;
			cp = cp << 6 | (p[i + k] & 0x3f);
		}
		/* overlong, surrogates, beyond U+10FFFF; C1 controls */
		if ((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) || cp > 0x10ffff ||
		    (cp >= 0xd800 && cp <= 0xdfff) || (cp >= 0x80 && cp <= 0x9f))
			return 0;
	}
	return 1;
}

static int kid_valid(const char *kid)
{
	size_t i;

	for (i = 0; kid[i] != '\0'; i++)
		if (i >= WRIT_KID_MAX ||
		    !((kid[i] >= 'A' && kid[i] <= 'Z') || (kid[i] >= 'a' && kid[i] <= 'z') ||
		      (kid[i] >= '0' && kid[i] <= '9') || kid[i] == '-' || kid[i] == '_'))
			return 0;
	return i > 0;
}

/* A public key ready to store: kid (thumbprint), alg and canonical JSON. */
typedef struct new_key {
	char kid[WRIT_KID_MAX + 1];
	writ_alg alg;
	char *json; /* malloc'd, writ_jwk_to_json's form */
} new_key;

/*
 * Check a JWK from outside with the same strict parser the verifier uses,
 * and keep writ's own re-serialisation of it, so the row holds only the
 * public members, "alg" and kid = thumbprint (SPEC s.2).
 */
static writ_rc key_prepare(const char *jwk_json, new_key *k, writ_err *err)
{
	writ_jwk *jwk = NULL;
	char tp[64];
	size_t len;
	writ_rc rc;

	memset(k, 0, sizeof(*k));
	if (jwk_json == NULL)
		return writ_err_set(err, WRIT_ERR_ARG, "no public key given");
	len = strlen(jwk_json);
	if (len > STORE_JWK_MAX)
		return writ_err_set(err, WRIT_ERR_TOO_LARGE, "public JWK larger than %d bytes",
		                    STORE_JWK_MAX);
	rc = writ_jwk_parse(jwk_json, len, &jwk, err);
	if (rc != WRIT_OK)
		return rc;
	rc = writ_jwk_thumbprint(jwk, tp, sizeof(tp));
	if (rc != WRIT_OK) {
		writ_err_set(err, rc, "cannot compute the key thumbprint");
		goto out;
	}
	/* The agent selects its key by kid in the assertion header; a kid
	 * that is not the thumbprint would be silently replaced here and
	 * then never match. Say so now instead. */
	if (strcmp(tp, writ_jwk_kid(jwk)) != 0) {
		rc = writ_err_set(err, WRIT_ERR_JWK,
		                  "JWK \"kid\" is not its RFC 7638 thumbprint %s: remove \"kid\" "
		                  "or set it to that",
		                  tp);
		goto out;
	}
	memcpy(k->kid, tp, strlen(tp) + 1);
	k->alg = writ_jwk_alg(jwk);
	k->json = writ_jwk_to_json(jwk);
	if (k->json == NULL)
		rc = writ_err_set(err, WRIT_ERR_NOMEM, "out of memory");
out:
	writ_jwk_free(jwk);
	return rc;
}

/* Status of agent id inside the current transaction; STORE_STATUS_NONE if
 * there is no such agent. */
static writ_rc status_get(store *s, const char *id, store_status *st_out, writ_err *err)
{
	sqlite3_stmt *st = store_stmt(s, ST_STATUS_GET, err);
	writ_rc rc = WRIT_OK;
	int r;

	*st_out = STORE_STATUS_NONE;
	if (st == NULL)
		return STMT_FAIL(err);
	sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	r = sqlite3_step(st);
	if (r == SQLITE_ROW) {
		*st_out = store_status_from_name((const char *)sqlite3_column_text(st, 0));
		if (*st_out == STORE_STATUS_NONE)
			rc = writ_err_set(err, WRIT_ERR_UNAVAILABLE,
			                  "store: agent \"%s\" has an invalid status", id);
	} else if (r != SQLITE_DONE) {
		rc = store_sqlerr(s, err, "read agent status");
	}
	store_done(st);
	return rc;
}

static writ_rc step_done(store *s, sqlite3_stmt *st, const char *what, writ_err *err)
{
	writ_rc rc = WRIT_OK;

	if (sqlite3_step(st) != SQLITE_DONE)
		rc = store_sqlerr(s, err, what);
	store_done(st);
	return rc;
}

/* Insert key k for id, inside the caller's transaction. */
static writ_rc key_insert(store *s, const char *id, const new_key *k, writ_err *err)
{
	sqlite3_stmt *st = store_stmt(s, ST_KEY_OWNER, err);
	writ_rc rc = WRIT_OK;
	int r;

	if (st == NULL)
		return STMT_FAIL(err);
	sqlite3_bind_text(st, 1, k->kid, -1, SQLITE_STATIC);
	r = sqlite3_step(st);
	if (r == SQLITE_ROW) {
		const char *owner = (const char *)sqlite3_column_text(st, 0);
		if (owner != NULL && strcmp(owner, id) == 0)
			rc = writ_err_set(err, WRIT_ERR_ARG, "agent \"%s\" already has key %s", id,
			                  k->kid);
		else
			rc = writ_err_set(err, WRIT_ERR_ARG,
			                  "key %s is already registered to agent \"%s\" (one key "
			                  "per identity)",
			                  k->kid, owner != NULL ? owner : "?");
	} else if (r != SQLITE_DONE) {
		rc = store_sqlerr(s, err, "look up key");
	}
	store_done(st);
	if (rc != WRIT_OK)
		return rc;
	if ((st = store_stmt(s, ST_KEY_INSERT, err)) == NULL)
		return STMT_FAIL(err);
	sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, k->kid, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 3, writ_alg_name(k->alg), -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 4, k->json, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 5, now_s());
	return step_done(s, st, "insert key", err);
}

static writ_rc check_groups(const char *const *groups, size_t ngroups, writ_err *err)
{
	size_t i, j;

	if (ngroups > STORE_GROUPS_MAX)
		return writ_err_set(err, WRIT_ERR_TOO_LARGE, "%zu groups (at most %d)", ngroups,
		                    STORE_GROUPS_MAX);
	if (ngroups > 0 && groups == NULL)
		return writ_err_set(err, WRIT_ERR_ARG, "NULL groups");
	for (i = 0; i < ngroups; i++) {
		if (!store_group_valid(groups[i]))
			return writ_err_set(err, WRIT_ERR_ARG,
			                    "invalid group name \"%.80s\" (1..%d of "
			                    "A-Z a-z 0-9 . _ : @ -)",
			                    groups[i] != NULL ? groups[i] : "", STORE_GROUP_MAX);
		for (j = 0; j < i; j++)
			if (strcmp(groups[i], groups[j]) == 0)
				return writ_err_set(err, WRIT_ERR_ARG, "group \"%s\" given twice",
				                    groups[i]);
	}
	return WRIT_OK;
}

static writ_rc bad_id(const char *id, writ_err *err)
{
	return writ_err_set(err, WRIT_ERR_ARG,
	                    "invalid agent id \"%.80s\" (1..%d of A-Z a-z 0-9 . _ : @ -)",
	                    id != NULL ? id : "", STORE_ID_MAX);
}

writ_rc store_agent_add(store *s, const char *id, const char *const *groups, size_t ngroups,
                        const char *jwk_json, char *kid, writ_err *err)
{
	store_status cur;
	sqlite3_stmt *st;
	new_key k = {0};
	writ_rc rc;
	size_t i;

	if (s == NULL)
		return writ_err_set(err, WRIT_ERR_ARG, "NULL store");
	if (!store_id_valid(id))
		return bad_id(id, err);
	if ((rc = check_groups(groups, ngroups, err)) != WRIT_OK)
		return rc;
	if ((rc = key_prepare(jwk_json, &k, err)) != WRIT_OK)
		return rc;
	if ((rc = store_tx_begin(s, 1, err)) != WRIT_OK)
		goto out_free;
	if ((rc = status_get(s, id, &cur, err)) != WRIT_OK)
		goto out;
	if (cur == STORE_REVOKED) {
		rc = writ_err_set(err, WRIT_ERR_ARG,
		                  "agent \"%s\" was revoked; agent ids are never reused", id);
		goto out;
	}
	if (cur != STORE_STATUS_NONE) {
		rc = writ_err_set(err, WRIT_ERR_ARG, "agent \"%s\" already exists", id);
		goto out;
	}
	if ((st = store_stmt(s, ST_AGENT_INSERT, err)) == NULL) {
		rc = STMT_FAIL(err);
		goto out;
	}
	sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	sqlite3_bind_int64(st, 2, now_s());
	if ((rc = step_done(s, st, "insert agent", err)) != WRIT_OK)
		goto out;
	for (i = 0; i < ngroups; i++) {
		if ((st = store_stmt(s, ST_GROUP_INSERT, err)) == NULL) {
			rc = STMT_FAIL(err);
			goto out;
		}
		sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 2, groups[i], -1, SQLITE_STATIC);
		if ((rc = step_done(s, st, "insert group", err)) != WRIT_OK)
			goto out;
	}
	rc = key_insert(s, id, &k, err);
out:
	rc = store_tx_end(s, 1, rc, err);
	if (rc == WRIT_OK && kid != NULL)
		memcpy(kid, k.kid, strlen(k.kid) + 1);
out_free:
	free(k.json);
	return rc;
}

void store_agent_clear(store_agent *a)
{
	size_t i;

	if (a == NULL)
		return;
	for (i = 0; i < a->nkeys && i < STORE_KEYS_MAX; i++)
		writ_jwk_free(a->keys[i].jwk);
	memset(a, 0, sizeof(*a));
}

static writ_rc corrupt(const char *id, const char *what, writ_err *err)
{
	return writ_err_set(err, WRIT_ERR_UNAVAILABLE, "store: agent \"%s\": %s", id, what);
}

/* Copy a TEXT column that must fit in buf (size bytes with the NUL). */
static int col_copy(sqlite3_stmt *st, int col, char *buf, size_t size)
{
	const unsigned char *t = sqlite3_column_text(st, col);
	int n = sqlite3_column_bytes(st, col);

	if (t == NULL) {
		buf[0] = '\0';
		return 0;
	}
	if (n < 0 || (size_t)n >= size)
		return -1;
	memcpy(buf, t, (size_t)n + 1);
	return 0;
}

static writ_rc read_groups(store *s, store_agent *a, writ_err *err)
{
	sqlite3_stmt *st = store_stmt(s, ST_AGENT_GROUPS, err);
	writ_rc rc = WRIT_OK;
	int r;

	if (st == NULL)
		return STMT_FAIL(err);
	sqlite3_bind_text(st, 1, a->id, -1, SQLITE_STATIC);
	while ((r = sqlite3_step(st)) == SQLITE_ROW) {
		if (a->ngroups == STORE_GROUPS_MAX ||
		    col_copy(st, 0, a->groups[a->ngroups], sizeof(a->groups[0])) != 0) {
			rc = corrupt(a->id, "group list over its caps", err);
			break;
		}
		a->ngroups++;
	}
	if (rc == WRIT_OK && r != SQLITE_DONE)
		rc = store_sqlerr(s, err, "read groups");
	store_done(st);
	return rc;
}

static writ_rc read_keys(store *s, store_agent *a, writ_err *err)
{
	sqlite3_stmt *st = store_stmt(s, ST_AGENT_KEYS, err);
	writ_rc rc = WRIT_OK;
	int r;

	if (st == NULL)
		return STMT_FAIL(err);
	sqlite3_bind_text(st, 1, a->id, -1, SQLITE_STATIC);
	while ((r = sqlite3_step(st)) == SQLITE_ROW) {
		store_key *k = &a->keys[a->nkeys];
		const char *json = (const char *)sqlite3_column_text(st, 2);
		int jlen = sqlite3_column_bytes(st, 2);
		writ_err perr = {0};

		if (a->nkeys == STORE_KEYS_MAX || col_copy(st, 0, k->kid, sizeof(k->kid)) != 0) {
			rc = corrupt(a->id, "key list over its caps", err);
			break;
		}
		k->alg = writ_alg_from_name((const char *)sqlite3_column_text(st, 1));
		k->added_at = sqlite3_column_int64(st, 3);
		/* The row is re-checked, not trusted: a key whose stored JSON
		 * no longer parses, or parses to another kid or alg than the
		 * row was registered with, is refused rather than used. */
		if (json == NULL || writ_jwk_parse(json, (size_t)jlen, &k->jwk, &perr) != WRIT_OK ||
		    strcmp(writ_jwk_kid(k->jwk), k->kid) != 0 || writ_jwk_alg(k->jwk) != k->alg) {
			writ_jwk_free(k->jwk);
			k->jwk = NULL;
			rc = corrupt(a->id, "a stored key does not match its kid or alg", err);
			break;
		}
		a->nkeys++;
	}
	if (rc == WRIT_OK && r != SQLITE_DONE)
		rc = store_sqlerr(s, err, "read keys");
	store_done(st);
	return rc;
}

writ_rc store_agent_get(store *s, const char *id, store_agent *out, writ_err *err)
{
	sqlite3_stmt *st;
	writ_rc rc;
	int r;

	if (s == NULL || out == NULL)
		return writ_err_set(err, WRIT_ERR_ARG, "NULL argument");
	memset(out, 0, sizeof(*out));
	if (!store_id_valid(id))
		return writ_err_set(err, WRIT_ERR_NOT_FOUND, "no agent \"%.80s\"",
		                    id != NULL ? id : "");
	memcpy(out->id, id, strlen(id) + 1);
	/* One read transaction: row, groups and keys from the same snapshot. */
	if ((rc = store_exec(s, ST_BEGIN_READ, err)) != WRIT_OK)
		return rc;
	if ((st = store_stmt(s, ST_AGENT_GET, err)) == NULL) {
		rc = STMT_FAIL(err);
		goto out;
	}
	sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	r = sqlite3_step(st);
	if (r == SQLITE_DONE) {
		rc = writ_err_set(err, WRIT_ERR_NOT_FOUND, "no agent \"%s\"", id);
	} else if (r != SQLITE_ROW) {
		rc = store_sqlerr(s, err, "read agent");
	} else {
		out->status = store_status_from_name((const char *)sqlite3_column_text(st, 0));
		out->created_at = sqlite3_column_int64(st, 2);
		out->updated_at = sqlite3_column_int64(st, 3);
		if (out->status == STORE_STATUS_NONE ||
		    col_copy(st, 1, out->reason, sizeof(out->reason)) != 0)
			rc = corrupt(id, "invalid status or reason", err);
	}
	store_done(st);
	if (rc == WRIT_OK)
		rc = read_groups(s, out, err);
	if (rc == WRIT_OK)
		rc = read_keys(s, out, err);
out:
	/* COMMIT of a read-only transaction only releases the snapshot. */
	if (store_exec(s, ST_COMMIT, rc == WRIT_OK ? err : NULL) != WRIT_OK && rc == WRIT_OK)
		rc = err != NULL ? err->rc : WRIT_ERR_UNAVAILABLE;
	if (rc != WRIT_OK) {
		if (!sqlite3_get_autocommit(s->db))
			(void)store_exec(s, ST_ROLLBACK, NULL);
		store_agent_clear(out);
	}
	return rc;
}

const store_key *store_agent_key(const store_agent *a, const char *kid)
{
	size_t i;

	if (a == NULL)
		return NULL;
	if (kid == NULL)
		return a->nkeys == 1 ? &a->keys[0] : NULL;
	for (i = 0; i < a->nkeys; i++)
		if (strcmp(a->keys[i].kid, kid) == 0)
			return &a->keys[i];
	return NULL;
}

void store_ids_free(char **ids, size_t n)
{
	size_t i;

	if (ids == NULL)
		return;
	for (i = 0; i < n; i++)
		free(ids[i]);
	free(ids);
}

writ_rc store_agent_list(store *s, char ***ids, size_t *n, writ_err *err)
{
	sqlite3_stmt *st;
	char **v = NULL, **nv;
	size_t cnt = 0, cap = 0;
	writ_rc rc = WRIT_OK;
	int r;

	if (s == NULL || ids == NULL || n == NULL)
		return writ_err_set(err, WRIT_ERR_ARG, "NULL argument");
	*ids = NULL;
	*n = 0;
	if ((st = store_stmt(s, ST_AGENT_IDS, err)) == NULL)
		return STMT_FAIL(err);
	while ((r = sqlite3_step(st)) == SQLITE_ROW) {
		const char *id = (const char *)sqlite3_column_text(st, 0);

		if (cnt == cap) {
			cap = cap == 0 ? 64 : cap * 2;
			nv = realloc(v, cap * sizeof(*v));
			if (nv == NULL) {
				rc = writ_err_set(err, WRIT_ERR_NOMEM, "out of memory");
				break;
			}
			v = nv;
		}
		if ((v[cnt] = strdup(id != NULL ? id : "")) == NULL) {
			rc = writ_err_set(err, WRIT_ERR_NOMEM, "out of memory");
			break;
		}
		cnt++;
	}
	if (rc == WRIT_OK && r != SQLITE_DONE)
		rc = store_sqlerr(s, err, "list agents");
	store_done(st);
	if (rc != WRIT_OK) {
		store_ids_free(v, cnt);
		return rc;
	}
	*ids = v;
	*n = cnt;
	return WRIT_OK;
}

writ_rc store_agent_set_status(store *s, const char *id, store_status status, const char *reason,
                               int *changed, writ_err *err)
{
	store_status cur;
	sqlite3_stmt *st;
	writ_rc rc;

	if (changed != NULL)
		*changed = 0;
	if (s == NULL)
		return writ_err_set(err, WRIT_ERR_ARG, "NULL store");
	if (!store_id_valid(id))
		return bad_id(id, err);
	if (store_status_name(status) == NULL)
		return writ_err_set(err, WRIT_ERR_ARG, "invalid status");
	if (reason != NULL && !reason_valid(reason))
		return writ_err_set(err, WRIT_ERR_ARG,
		                    "reason must be at most %d bytes of UTF-8 without control "
		                    "characters",
		                    STORE_REASON_MAX);
	if ((rc = store_tx_begin(s, 1, err)) != WRIT_OK)
		return rc;
	if ((rc = status_get(s, id, &cur, err)) != WRIT_OK)
		goto out;
	if (cur == STORE_STATUS_NONE) {
		rc = writ_err_set(err, WRIT_ERR_NOT_FOUND, "no agent \"%s\"", id);
		goto out;
	}
	if (cur == STORE_REVOKED && status != STORE_REVOKED) {
		rc = writ_err_set(err, WRIT_ERR_ARG,
		                  "agent \"%s\" is revoked, and revocation is permanent "
		                  "(register the workload under a new id)",
		                  id);
		goto out;
	}
	if (cur == status) /* idempotent: keep the first reason and time */
		goto out;
	if ((st = store_stmt(s, ST_STATUS_SET, err)) == NULL) {
		rc = STMT_FAIL(err);
		goto out;
	}
	sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, store_status_name(status), -1, SQLITE_STATIC);
	if (reason != NULL && reason[0] != '\0')
		sqlite3_bind_text(st, 3, reason, -1, SQLITE_STATIC);
	else
		sqlite3_bind_null(st, 3);
	sqlite3_bind_int64(st, 4, now_s());
	rc = step_done(s, st, "update status", err);
	if (rc == WRIT_OK && changed != NULL)
		*changed = 1;
out:
	rc = store_tx_end(s, 1, rc, err);
	if (rc != WRIT_OK && changed != NULL)
		*changed = 0;
	return rc;
}

/* The agent must exist and not be revoked (its keys are frozen). */
/* Inside the caller's transaction: agent id exists and is not revoked
 * (a revoked agent's record stays as it was revoked). what: "keys", ... */
static writ_rc change_allowed(store *s, const char *id, const char *what, writ_err *err)
{
	store_status cur;
	writ_rc rc = status_get(s, id, &cur, err);

	if (rc != WRIT_OK)
		return rc;
	if (cur == STORE_STATUS_NONE)
		return writ_err_set(err, WRIT_ERR_NOT_FOUND, "no agent \"%s\"", id);
	if (cur == STORE_REVOKED)
		return writ_err_set(err, WRIT_ERR_ARG,
		                    "agent \"%s\" is revoked: its %s can no longer change", id,
		                    what);
	return WRIT_OK;
}

/* count(*) of statement which for agent id. */
static writ_rc count_of(store *s, store_stmt_id which, const char *id, int64_t *n, writ_err *err)
{
	sqlite3_stmt *st = store_stmt(s, which, err);
	writ_rc rc = WRIT_OK;

	if (st == NULL)
		return STMT_FAIL(err);
	sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	if (sqlite3_step(st) == SQLITE_ROW)
		*n = sqlite3_column_int64(st, 0);
	else
		rc = store_sqlerr(s, err, "count");
	store_done(st);
	return rc;
}

/* The group change inside the transaction. */
static writ_rc group_tx(store *s, const char *id, const char *grp, int add, writ_err *err)
{
	sqlite3_stmt *st;
	int64_t n = 0;
	writ_rc rc;

	if ((rc = change_allowed(s, id, "groups", err)) != WRIT_OK)
		return rc;
	if (add && (rc = count_of(s, ST_GROUP_COUNT, id, &n, err)) != WRIT_OK)
		return rc;
	if (add && n >= STORE_GROUPS_MAX)
		return writ_err_set(err, WRIT_ERR_TOO_LARGE,
		                    "agent \"%s\" is in %d groups, the most allowed", id,
		                    STORE_GROUPS_MAX);
	if ((st = store_stmt(s, add ? ST_GROUP_INSERT : ST_GROUP_DELETE, err)) == NULL)
		return STMT_FAIL(err);
	sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, grp, -1, SQLITE_STATIC);
	if (sqlite3_step(st) != SQLITE_DONE) {
		rc = sqlite3_extended_errcode(s->db) == SQLITE_CONSTRAINT_PRIMARYKEY
		         ? writ_err_set(err, WRIT_ERR_ARG,
		                        "agent \"%s\" is already in group \"%s\"", id, grp)
		         : store_sqlerr(s, err, "change group");
	} else if (!add && sqlite3_changes(s->db) == 0) {
		rc = writ_err_set(err, WRIT_ERR_NOT_FOUND, "agent \"%s\" is not in group \"%s\"",
		                  id, grp);
	}
	store_done(st);
	return rc;
}

writ_rc store_agent_group(store *s, const char *id, const char *grp, int add, writ_err *err)
{
	writ_rc rc;

	if (s == NULL)
		return writ_err_set(err, WRIT_ERR_ARG, "NULL store");
	if (!store_id_valid(id))
		return bad_id(id, err);
	if ((rc = check_groups(&grp, 1, err)) != WRIT_OK)
		return rc;
	if ((rc = store_tx_begin(s, 1, err)) != WRIT_OK)
		return rc;
	return store_tx_end(s, 1, group_tx(s, id, grp, add, err), err);
}

writ_rc store_agent_key_add(store *s, const char *id, const char *jwk_json, char *kid,
                            writ_err *err)
{
	new_key k = {0};
	int64_t n = 0;
	writ_rc rc;

	if (s == NULL)
		return writ_err_set(err, WRIT_ERR_ARG, "NULL store");
	if (!store_id_valid(id))
		return bad_id(id, err);
	if ((rc = key_prepare(jwk_json, &k, err)) != WRIT_OK)
		return rc;
	if ((rc = store_tx_begin(s, 1, err)) != WRIT_OK)
		goto out_free;
	if ((rc = change_allowed(s, id, "keys", err)) != WRIT_OK)
		goto out;
	if ((rc = count_of(s, ST_KEY_COUNT, id, &n, err)) != WRIT_OK)
		goto out;
	if (n >= STORE_KEYS_MAX) {
		rc = writ_err_set(err, WRIT_ERR_TOO_LARGE,
		                  "agent \"%s\" has %d keys, the most allowed: remove one first",
		                  id, STORE_KEYS_MAX);
		goto out;
	}
	rc = key_insert(s, id, &k, err);
out:
	rc = store_tx_end(s, 1, rc, err);
	if (rc == WRIT_OK && kid != NULL)
		memcpy(kid, k.kid, strlen(k.kid) + 1);
out_free:
	free(k.json);
	return rc;
}

writ_rc store_agent_key_remove(store *s, const char *id, const char *kid, writ_err *err)
{
	sqlite3_stmt *st;
	int64_t n = 0;
	writ_rc rc;

	if (s == NULL)
		return writ_err_set(err, WRIT_ERR_ARG, "NULL store");
	if (!store_id_valid(id))
		return bad_id(id, err);
	if (kid == NULL || !kid_valid(kid))
		return writ_err_set(err, WRIT_ERR_NOT_FOUND, "agent \"%s\" has no key \"%.80s\"",
		                    id, kid != NULL ? kid : "");
	if ((rc = store_tx_begin(s, 1, err)) != WRIT_OK)
		return rc;
	if ((rc = change_allowed(s, id, "keys", err)) != WRIT_OK)
		goto out;
	if ((rc = count_of(s, ST_KEY_COUNT, id, &n, err)) != WRIT_OK)
		goto out;
	if ((st = store_stmt(s, ST_KEY_DELETE, err)) == NULL) {
		rc = STMT_FAIL(err);
		goto out;
	}
	sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, kid, -1, SQLITE_STATIC);
	if ((rc = step_done(s, st, "delete key", err)) != WRIT_OK)
		goto out;
	if (sqlite3_changes(s->db) == 0) {
		rc = writ_err_set(err, WRIT_ERR_NOT_FOUND, "agent \"%s\" has no key %s", id, kid);
		goto out;
	}
	/* Checked after the delete so "no such key" wins over "last key";
	 * the rollback undoes the delete. An agent without keys could never
	 * attest again: that is what disable and revoke are for. */
	if (n <= 1)
		rc = writ_err_set(err, WRIT_ERR_ARG,
		                  "%s is the last key of agent \"%s\": add its replacement first, "
		                  "or disable or revoke the agent",
		                  kid, id);
out:
	return store_tx_end(s, 1, rc, err);
}
