/*
 * store_replay.c - the assertion replay cache (SPEC s.5: "refuses a jti
 * seen before while it could still be valid").
 *
 * On the token path every request inserts one row, so the table must not
 * grow with history: each insert also deletes a few rows that can no
 * longer matter, found through the index on exp. Under steady load the
 * table holds the assertions of the last exp-window plus leeway, whatever
 * the number of tokens issued so far.
 */
#include <stdio.h>
#include <string.h>

#include "store_int.h"
#include "writ_int.h"

/* Rows deleted per statement by store_replay_purge: short transactions,
 * so a sweep never holds the write lock long enough to stall requests. */
#define PURGE_SWEEP_BATCH 1000

static writ_rc purge_some(store *s, int64_t cutoff, int limit, int *deleted, writ_err *err)
{
	sqlite3_stmt *st = store_stmt(s, ST_REPLAY_PURGE, err);
	writ_rc rc = WRIT_OK;

	*deleted = 0;
	if (st == NULL)
		return err != NULL ? err->rc : WRIT_ERR_UNAVAILABLE;
	sqlite3_bind_int64(st, 1, cutoff);
	sqlite3_bind_int(st, 2, limit);
	if (sqlite3_step(st) != SQLITE_DONE)
		rc = store_sqlerr(s, err, "purge replay cache");
	else
		*deleted = sqlite3_changes(s->db);
	store_done(st);
	return rc;
}

writ_rc store_replay_check_and_insert(store *s, const char *agent_id, const char *jti, int64_t exp,
                                      int64_t now, writ_err *err)
{
	sqlite3_stmt *st;
	int64_t cutoff;
	writ_rc rc;
	int inserted = 0, purged;
	size_t jlen;

	if (s == NULL || jti == NULL)
		return writ_err_set(err, WRIT_ERR_ARG, "NULL argument");
	if (!store_id_valid(agent_id))
		return writ_err_set(err, WRIT_ERR_ARG, "invalid agent id");
	jlen = strlen(jti);
	if (jlen == 0 || jlen > STORE_JTI_MAX)
		return writ_err_set(err, WRIT_ERR_CLAIM, "assertion jti must be 1..%d bytes",
		                    STORE_JTI_MAX);
	if (now < 0 || exp < 0 || now > INT64_MAX / 2 || exp > INT64_MAX / 2)
		return writ_err_set(err, WRIT_ERR_ARG, "time out of range");
	/* A row is needed while its assertion could still pass the time
	 * check with the largest allowed leeway. */
	cutoff = now - STORE_REPLAY_LEEWAY;

	/* One transaction for purge + insert: one WAL commit per request. */
	if ((rc = store_tx_begin(s, 0, err)) != WRIT_OK)
		return rc;
	if ((rc = purge_some(s, cutoff, STORE_REPLAY_PURGE_BATCH, &purged, err)) != WRIT_OK)
		goto out;
	if ((st = store_stmt(s, ST_REPLAY_UPSERT, err)) == NULL) {
		rc = err != NULL ? err->rc : WRIT_ERR_UNAVAILABLE;
		goto out;
	}
	sqlite3_bind_text(st, 1, agent_id, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, jti, (int)jlen, SQLITE_STATIC);
	sqlite3_bind_int64(st, 3, exp);
	sqlite3_bind_int64(st, 4, cutoff);
	if (sqlite3_step(st) != SQLITE_DONE)
		rc = store_sqlerr(s, err, "insert replay entry");
	else
		inserted = sqlite3_changes(s->db) == 1;
	store_done(st);
out:
	rc = store_tx_end(s, 0, rc, err);
	if (rc == WRIT_OK && !inserted)
		rc = writ_err_set(err, WRIT_ERR_CLAIM, "assertion jti already used");
	return rc;
}

static writ_rc upsert_one(store *s, store_replay_item *it, int64_t cutoff, writ_err *err)
{
	sqlite3_stmt *st;
	size_t jlen = it->jti != NULL ? strlen(it->jti) : 0;
	writ_rc rc = WRIT_OK;

	if (!store_id_valid(it->agent_id) || jlen == 0 || jlen > STORE_JTI_MAX || it->exp < 0 ||
	    it->exp > INT64_MAX / 2) {
		it->rc = WRIT_ERR_CLAIM;
		return WRIT_OK; /* this item is bad, the batch goes on */
	}
	if ((st = store_stmt(s, ST_REPLAY_UPSERT, err)) == NULL)
		return err != NULL ? err->rc : WRIT_ERR_UNAVAILABLE;
	sqlite3_bind_text(st, 1, it->agent_id, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, it->jti, (int)jlen, SQLITE_STATIC);
	sqlite3_bind_int64(st, 3, it->exp);
	sqlite3_bind_int64(st, 4, cutoff);
	if (sqlite3_step(st) != SQLITE_DONE)
		rc = store_sqlerr(s, err, "insert replay entry");
	else
		it->rc = sqlite3_changes(s->db) == 1 ? WRIT_OK : WRIT_ERR_CLAIM;
	store_done(st);
	return rc;
}

writ_rc store_replay_check_batch(store *s, store_replay_item *items, size_t n, int64_t now,
                                 writ_err *err)
{
	int64_t cutoff = now - STORE_REPLAY_LEEWAY;
	writ_rc rc;
	size_t i;
	int purged;

	if (s == NULL || (items == NULL && n > 0) || now < 0 || now > INT64_MAX / 2)
		return writ_err_set(err, WRIT_ERR_ARG, "bad argument");
	for (i = 0; i < n; i++)
		items[i].rc = WRIT_ERR_UNAVAILABLE;
	/* Durable (WAL fsync'd before COMMIT returns): a token may leave as
	 * soon as this returns, and a replay entry lost to a power cut would
	 * let its assertion be used again after the reboot. One fsync covers
	 * the whole batch. */
	if ((rc = store_tx_begin(s, 1, err)) != WRIT_OK)
		return rc;
	/* Purge in proportion to what is inserted, so the table stays bounded
	 * whatever the batch sizes. */
	rc = purge_some(s, cutoff, (int)(STORE_REPLAY_PURGE_BATCH * (n + 1)), &purged, err);
	for (i = 0; rc == WRIT_OK && i < n; i++)
		rc = upsert_one(s, &items[i], cutoff, err);
	rc = store_tx_end(s, 1, rc, err);
	if (rc != WRIT_OK)
		for (i = 0; i < n; i++)
			items[i].rc = rc;
	return rc;
}

writ_rc store_cache_size(store *s, unsigned kib, writ_err *err)
{
	char sql[64];

	snprintf(sql, sizeof(sql), "PRAGMA cache_size = -%u", kib);
	if (sqlite3_exec(s->db, sql, NULL, NULL, NULL) != SQLITE_OK)
		return store_sqlerr(s, err, "cache_size");
	return WRIT_OK;
}

writ_rc store_replay_purge(store *s, int64_t now, uint64_t *deleted, writ_err *err)
{
	uint64_t total = 0;
	writ_rc rc = WRIT_OK;
	int n;

	if (s == NULL)
		return writ_err_set(err, WRIT_ERR_ARG, "NULL store");
	do {
		/* Each statement is its own (autocommit) transaction. */
		rc = purge_some(s, now - STORE_REPLAY_LEEWAY, PURGE_SWEEP_BATCH, &n, err);
		if (rc == WRIT_OK)
			total += (uint64_t)n;
	} while (rc == WRIT_OK && n == PURGE_SWEEP_BATCH);
	if (deleted != NULL)
		*deleted = total;
	return rc;
}

writ_rc store_replay_count(store *s, uint64_t *n, writ_err *err)
{
	sqlite3_stmt *st;
	writ_rc rc = WRIT_OK;

	if (s == NULL || n == NULL)
		return writ_err_set(err, WRIT_ERR_ARG, "NULL argument");
	if ((st = store_stmt(s, ST_REPLAY_COUNT, err)) == NULL)
		return err != NULL ? err->rc : WRIT_ERR_UNAVAILABLE;
	if (sqlite3_step(st) == SQLITE_ROW)
		*n = (uint64_t)sqlite3_column_int64(st, 0);
	else
		rc = store_sqlerr(s, err, "count replay cache");
	store_done(st);
	return rc;
}
