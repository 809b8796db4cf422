/*
 * store.c - opening the SQLite state store: file checks, connection
 * settings, schema migrations, the prepared-statement cache and the
 * transaction helpers shared by store_agent.c and store_replay.c.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store_int.h"
#include "writ_int.h"

/* PRAGMA application_id: "writ" in ASCII, so `file` and writ itself can
 * tell a writ store from any other SQLite database. */
#define STORE_APP_ID 0x77726974

/*
 * Every statement the store runs. Constant text; values are always bound.
 * The replay statements lean on the index on exp so a purge touches only
 * the rows it deletes.
 */
static const char *const stmt_sql[ST__COUNT] = {
    [ST_BEGIN] = "BEGIN IMMEDIATE",
    [ST_BEGIN_READ] = "BEGIN",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
    [ST_SYNC_FULL] = "PRAGMA synchronous=FULL",
    [ST_SYNC_NORMAL] = "PRAGMA synchronous=NORMAL",
    [ST_GEN] = "SELECT v FROM meta WHERE k='agents_gen'",
    [ST_AGENT_GET] = "SELECT status, status_reason, created_at, updated_at FROM agents "
                     "WHERE id=?1",
    [ST_AGENT_GROUPS] = "SELECT grp FROM agent_groups WHERE agent_id=?1 ORDER BY grp",
    [ST_AGENT_KEYS] = "SELECT kid, alg, jwk, added_at FROM agent_keys WHERE agent_id=?1 "
                      "ORDER BY rowid",
    [ST_AGENT_IDS] = "SELECT id FROM agents ORDER BY id",
    [ST_AGENT_INSERT] = "INSERT INTO agents(id, status, created_at, updated_at, "
                        "status_reason) VALUES(?1, 'active', ?2, ?2, NULL)",
    [ST_GROUP_INSERT] = "INSERT INTO agent_groups(agent_id, grp) VALUES(?1, ?2)",
    [ST_GROUP_DELETE] = "DELETE FROM agent_groups WHERE agent_id=?1 AND grp=?2",
    [ST_GROUP_COUNT] = "SELECT count(*) FROM agent_groups WHERE agent_id=?1",
    [ST_KEY_INSERT] = "INSERT INTO agent_keys(agent_id, kid, alg, jwk, added_at) "
                      "VALUES(?1, ?2, ?3, ?4, ?5)",
    [ST_KEY_OWNER] = "SELECT agent_id FROM agent_keys WHERE kid=?1",
    [ST_KEY_COUNT] = "SELECT count(*) FROM agent_keys WHERE agent_id=?1",
    [ST_KEY_DELETE] = "DELETE FROM agent_keys WHERE agent_id=?1 AND kid=?2",
    [ST_STATUS_GET] = "SELECT status FROM agents WHERE id=?1",
    [ST_STATUS_SET] = "UPDATE agents SET status=?2, status_reason=?3, updated_at=?4 "
                      "WHERE id=?1",
    /* The conflict check and the insert are one statement: under
     * SQLite's write lock exactly one of several racing issuers sees
     * changes() == 1. A row already past its keep-until time is taken
     * over rather than refused. */
    [ST_REPLAY_UPSERT] = "INSERT INTO replay(agent_id, jti, exp) VALUES(?1, ?2, ?3) "
                         "ON CONFLICT(agent_id, jti) DO UPDATE SET exp=excluded.exp "
                         "WHERE replay.exp < ?4",
    [ST_REPLAY_PURGE] = "DELETE FROM replay WHERE (agent_id, jti) IN (SELECT agent_id, jti "
                        "FROM replay WHERE exp < ?1 ORDER BY exp LIMIT ?2)",
    [ST_REPLAY_COUNT] = "SELECT count(*) FROM replay",
    [ST_OUTBOX_NEXT] = "SELECT id, rec FROM audit_outbox ORDER BY id LIMIT 1",
    [ST_OUTBOX_DELETE] = "DELETE FROM audit_outbox WHERE id = ?1",
    [ST_OUTBOX_COUNT] = "SELECT count(*) FROM audit_outbox",
    [ST_OUTBOX_MINTED] = "INSERT INTO audit_outbox(rec) VALUES(writ_event('event', "
                         "'token_minted', 'agent', ?1, 'audience', ?2, 'scope_granted', ?3, "
                         "'jti', ?4, 'kid', ?5, 'exp', ?6, 'actor', writ_actor()))",
    /* Signing keys. Every transition is a conditional UPDATE (WHERE on the
     * old state) run inside BEGIN IMMEDIATE, so two issuers and the CLI
     * racing for the same transition change the row once. */
    [ST_SK_GEN] = "SELECT v FROM meta WHERE k='keys_gen'",
    [ST_SK_LIST] = "SELECT kid, alg, p11_id, state, created_at, activate_after, activated_at, "
                   "retired_at, remove_after, removed_at, revoked_at, purged_at, reason, actor, "
                   "published_at, jwk FROM signing_keys ORDER BY created_at, rowid",
    [ST_SK_GET] = "SELECT kid, alg, p11_id, state, created_at, activate_after, activated_at, "
                  "retired_at, remove_after, removed_at, revoked_at, purged_at, reason, actor, "
                  "published_at, jwk FROM signing_keys WHERE kid=?1",
    [ST_SK_INSERT] = "INSERT INTO signing_keys(kid, alg, p11_id, state, created_at, "
                     "activate_after, activated_at, reason, actor) "
                     "VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, writ_actor())",
    [ST_SK_COUNT] = "SELECT count(*) FROM signing_keys WHERE alg=?1 AND state=?2",
    [ST_SK_ACTIVE] = "SELECT kid FROM signing_keys WHERE alg=?1 AND state='active'",
    [ST_SK_ACTIVATE] = "UPDATE signing_keys SET state='active', activated_at=?2, reason=?3, "
                       "actor=writ_actor() WHERE kid=?1 AND state='pending'",
    [ST_SK_RETIRE] = "UPDATE signing_keys SET state='retired', retired_at=?2, remove_after=?3, "
                     "reason=?4, actor=writ_actor() WHERE kid=?1 "
                     "AND state IN ('pending','active')",
    [ST_SK_REMOVE] = "UPDATE signing_keys SET state='removed', removed_at=?2, reason=?3, "
                     "actor=writ_actor() WHERE kid=?1 "
                     "AND state IN ('pending','active','retired')",
    [ST_SK_REVOKE] = "UPDATE signing_keys SET state='revoked', revoked_at=?2, reason=?3, "
                     "actor=writ_actor() WHERE kid=?1 AND state<>'revoked'",
    [ST_SK_PURGED] = "UPDATE signing_keys SET purged_at=?2, actor=writ_actor() WHERE kid=?1 "
                     "AND state IN ('removed','revoked') AND purged_at IS NULL",
    /* Strictly before now: created_at and the deadlines are whole seconds
     * of a clock read at an unknown fraction, so a key becomes due only
     * once its full window has passed in real time. A key no issuer has
     * published yet is never due, whoever applies the transitions. */
    [ST_SK_DUE_PENDING] = "SELECT kid FROM signing_keys WHERE state='pending' "
                          "AND published_at IS NOT NULL AND activate_after < ?1 "
                          "ORDER BY activate_after, created_at LIMIT 1",
    [ST_SK_HOLD] = "UPDATE signing_keys SET published_at=coalesce(published_at, ?3), "
                   "activate_after=max(coalesce(activate_after, 0), ?2) "
                   "WHERE kid=?1 AND state='pending' AND (published_at IS NULL "
                   "OR (?4 AND coalesce(activate_after, 0) < ?2))",
    [ST_SK_SET_JWK] = "UPDATE signing_keys SET jwk=?2 WHERE kid=?1 AND jwk IS NULL",
    [ST_SK_DUE_RETIRED] = "SELECT kid FROM signing_keys WHERE state='retired' "
                          "AND remove_after < ?1 LIMIT 1",
    [ST_SK_NEWEST_PENDING] = "SELECT kid FROM signing_keys WHERE alg=?1 AND state='pending' "
                             "ORDER BY created_at DESC, rowid DESC LIMIT 1",
    [ST_SK_AUDIT] = "INSERT INTO audit_outbox(rec) VALUES(writ_event('event', ?1, 'kid', ?2, "
                    "'alg', ?3, 'outcome', ?4, 'actor', writ_actor()))",
};

/*
 * Schema migrations: migrations[i] takes user_version i to i + 1. Append,
 * never edit: a deployed database has already run the old text.
 */
static const char *const migrations[] = {
    /* 0 -> 1 */
    "CREATE TABLE agents("
    "  id TEXT PRIMARY KEY NOT NULL,"
    "  status TEXT NOT NULL CHECK(status IN ('active','disabled','revoked')),"
    "  created_at INTEGER NOT NULL,"
    "  updated_at INTEGER NOT NULL,"
    "  status_reason TEXT);"
    "CREATE TABLE agent_groups("
    "  agent_id TEXT NOT NULL REFERENCES agents(id),"
    "  grp TEXT NOT NULL,"
    "  PRIMARY KEY(agent_id, grp)) WITHOUT ROWID;"
    /* kid UNIQUE across agents: one key never speaks for two ids. */
    "CREATE TABLE agent_keys("
    "  agent_id TEXT NOT NULL REFERENCES agents(id),"
    "  kid TEXT NOT NULL UNIQUE,"
    "  alg TEXT NOT NULL CHECK(alg IN ('ES256','ES384','RS256','PS256','EdDSA')),"
    "  jwk TEXT NOT NULL,"
    "  added_at INTEGER NOT NULL,"
    "  PRIMARY KEY(agent_id, kid));"
    "CREATE TABLE replay("
    "  agent_id TEXT NOT NULL,"
    "  jti TEXT NOT NULL,"
    "  exp INTEGER NOT NULL,"
    "  PRIMARY KEY(agent_id, jti)) WITHOUT ROWID;"
    "CREATE INDEX replay_exp ON replay(exp);"
    "CREATE TABLE meta(k TEXT PRIMARY KEY NOT NULL, v INTEGER NOT NULL) WITHOUT ROWID;"
    "INSERT INTO meta(k, v) VALUES('agents_gen', 0);"
    /* Defence in depth behind store_agent_set_status: even a bug or a
     * hand-edit through the sqlite3 shell cannot un-revoke an agent. */
    "CREATE TRIGGER agents_revoked_is_terminal BEFORE UPDATE OF status ON agents"
    "  WHEN OLD.status = 'revoked' AND NEW.status <> 'revoked'"
    "  BEGIN SELECT RAISE(ABORT, 'revoked is terminal'); END;"
    "CREATE TRIGGER agents_gen_ai AFTER INSERT ON agents"
    "  BEGIN UPDATE meta SET v = v + 1 WHERE k = 'agents_gen'; END;"
    "CREATE TRIGGER agents_gen_au AFTER UPDATE ON agents"
    "  BEGIN UPDATE meta SET v = v + 1 WHERE k = 'agents_gen'; END;"
    "CREATE TRIGGER agents_gen_ad AFTER DELETE ON agents"
    "  BEGIN UPDATE meta SET v = v + 1 WHERE k = 'agents_gen'; END;"
    "CREATE TRIGGER groups_gen_ai AFTER INSERT ON agent_groups"
    "  BEGIN UPDATE meta SET v = v + 1 WHERE k = 'agents_gen'; END;"
    "CREATE TRIGGER groups_gen_ad AFTER DELETE ON agent_groups"
    "  BEGIN UPDATE meta SET v = v + 1 WHERE k = 'agents_gen'; END;"
    "CREATE TRIGGER keys_gen_ai AFTER INSERT ON agent_keys"
    "  BEGIN UPDATE meta SET v = v + 1 WHERE k = 'agents_gen'; END;"
    "CREATE TRIGGER keys_gen_au AFTER UPDATE ON agent_keys"
    "  BEGIN UPDATE meta SET v = v + 1 WHERE k = 'agents_gen'; END;"
    "CREATE TRIGGER keys_gen_ad AFTER DELETE ON agent_keys"
    "  BEGIN UPDATE meta SET v = v + 1 WHERE k = 'agents_gen'; END;"
    "PRAGMA application_id = 2003986804;" /* STORE_APP_ID */
    "PRAGMA user_version = 1;",
    /* 1 -> 2: the audit outbox. Every change to agents and their keys
     * writes its audit record in the same transaction as the change (a
     * trigger cannot be skipped by a code path), and the issuer, which
     * owns the audit log, moves the records into it. writ_actor() is the
     * OS user of the connection that made the change; writ_event() builds
     * the JSON (SQLite 3.40's json_object() may not run in triggers with
     * trusted_schema off). */
    "CREATE TABLE audit_outbox("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  rec TEXT NOT NULL);"
    "CREATE TRIGGER outbox_agent_added AFTER INSERT ON agents BEGIN"
    "  INSERT INTO audit_outbox(rec) VALUES(writ_event('event', 'agent_added',"
    "    'agent', NEW.id, 'actor', writ_actor())); END;"
    "CREATE TRIGGER outbox_agent_status AFTER UPDATE OF status ON agents"
    "  WHEN OLD.status <> NEW.status BEGIN"
    "  INSERT INTO audit_outbox(rec) VALUES(writ_event('event', CASE NEW.status"
    "    WHEN 'active' THEN 'agent_enabled' WHEN 'disabled' THEN 'agent_disabled'"
    "    ELSE 'agent_revoked' END, 'agent', NEW.id, 'previous', OLD.status,"
    "    'reason', NEW.status_reason, 'actor', writ_actor())); END;"
    "CREATE TRIGGER outbox_group_added AFTER INSERT ON agent_groups BEGIN"
    "  INSERT INTO audit_outbox(rec) VALUES(writ_event('event', 'agent_group_added',"
    "    'agent', NEW.agent_id, 'group', NEW.grp, 'actor', writ_actor())); END;"
    "CREATE TRIGGER outbox_key_added AFTER INSERT ON agent_keys BEGIN"
    "  INSERT INTO audit_outbox(rec) VALUES(writ_event('event', 'agent_key_added',"
    "    'agent', NEW.agent_id, 'kid', NEW.kid, 'alg', NEW.alg, 'actor', writ_actor()));"
    "  END;"
    "CREATE TRIGGER outbox_key_removed AFTER DELETE ON agent_keys BEGIN"
    "  INSERT INTO audit_outbox(rec) VALUES(writ_event('event', 'agent_key_removed',"
    "    'agent', OLD.agent_id, 'kid', OLD.kid, 'actor', writ_actor())); END;"
    "PRAGMA user_version = 2;",
    /* 2 -> 3: the signing key lifecycle (SPEC s.2), shared by every issuer
     * instance and the CLI. kid is the RFC 7638 thumbprint, p11_id the
     * hex CKA_ID of the pair in the token. The partial unique index makes
     * "exactly one active key per alg" a property of the file, not of the
     * code; the triggers write each transition's audit record in the same
     * transaction and bump keys_gen, which the issuer polls to republish. */
    "CREATE TABLE signing_keys("
    "  kid TEXT PRIMARY KEY NOT NULL,"
    "  alg TEXT NOT NULL CHECK(alg IN ('ES256','ES384','RS256','PS256','EdDSA')),"
    "  p11_id TEXT NOT NULL,"
    "  state TEXT NOT NULL"
    "    CHECK(state IN ('pending','active','retired','removed','revoked')),"
    "  created_at INTEGER NOT NULL,"
    "  activate_after INTEGER,"
    "  activated_at INTEGER,"
    "  retired_at INTEGER,"
    "  remove_after INTEGER,"
    "  removed_at INTEGER,"
    "  revoked_at INTEGER,"
    "  purged_at INTEGER,"
    "  reason TEXT,"
    "  actor TEXT NOT NULL);"
    "CREATE UNIQUE INDEX signing_keys_one_active ON signing_keys(alg)"
    "  WHERE state = 'active';"
    "INSERT INTO meta(k, v) VALUES('keys_gen', 0);"
    /* removed and revoked keys never come back into the JWKS: a removed
     * key may still be revoked (found compromised later), nothing else. */
    "CREATE TRIGGER signing_keys_terminal BEFORE UPDATE OF state ON signing_keys"
    "  WHEN (OLD.state = 'revoked' AND NEW.state <> 'revoked')"
    "    OR (OLD.state = 'removed' AND NEW.state NOT IN ('removed', 'revoked'))"
    "  BEGIN SELECT RAISE(ABORT, 'removed and revoked keys stay withdrawn'); END;"
    "CREATE TRIGGER signing_keys_gen_ai AFTER INSERT ON signing_keys"
    "  BEGIN UPDATE meta SET v = v + 1 WHERE k = 'keys_gen'; END;"
    "CREATE TRIGGER signing_keys_gen_au AFTER UPDATE ON signing_keys"
    "  BEGIN UPDATE meta SET v = v + 1 WHERE k = 'keys_gen'; END;"
    "CREATE TRIGGER outbox_signing_key_generated AFTER INSERT ON signing_keys BEGIN"
    "  INSERT INTO audit_outbox(rec) VALUES(writ_event('event', 'key_generated',"
    "    'kid', NEW.kid, 'alg', NEW.alg, 'state', NEW.state, 'activate_after',"
    "    NEW.activate_after, 'reason', NEW.reason, 'actor', writ_actor()));"
    "  INSERT INTO audit_outbox(rec) SELECT writ_event('event', 'key_activated',"
    "    'kid', NEW.kid, 'alg', NEW.alg, 'reason', NEW.reason, 'actor', writ_actor())"
    "    WHERE NEW.state = 'active'; END;"
    "CREATE TRIGGER outbox_signing_key_state AFTER UPDATE OF state ON signing_keys"
    "  WHEN OLD.state <> NEW.state BEGIN"
    "  INSERT INTO audit_outbox(rec) VALUES(writ_event('event', CASE NEW.state"
    "    WHEN 'active' THEN 'key_activated' WHEN 'retired' THEN 'key_retired'"
    "    WHEN 'removed' THEN 'key_removed' ELSE 'key_revoked' END,"
    "    'kid', NEW.kid, 'alg', NEW.alg, 'previous', OLD.state, 'remove_after',"
    "    CASE NEW.state WHEN 'retired' THEN NEW.remove_after END,"
    "    'reason', NEW.reason, 'actor', writ_actor())); END;"
    "CREATE TRIGGER outbox_signing_key_purged AFTER UPDATE OF purged_at ON signing_keys"
    "  WHEN OLD.purged_at IS NULL AND NEW.purged_at IS NOT NULL BEGIN"
    "  INSERT INTO audit_outbox(rec) VALUES(writ_event('event', 'key_purged',"
    "    'kid', NEW.kid, 'alg', NEW.alg, 'state', NEW.state, 'actor', writ_actor())); END;"
    "PRAGMA user_version = 3;",
    /* 3 -> 4: when an issuer first served a pending key in its JWKS; a
     * pending key activates only once one has (NULL: none yet). Keys
     * pending at the upgrade count as unpublished: the next issuer to
     * serve them starts their window again, the safe direction. */
    "ALTER TABLE signing_keys ADD COLUMN published_at INTEGER;"
    "PRAGMA user_version = 4;",
    /* 4 -> 5: groups change after registration (writ agent group), and a
     * removal is audited like an addition. */
    "CREATE TRIGGER outbox_group_removed AFTER DELETE ON agent_groups BEGIN"
    "  INSERT INTO audit_outbox(rec) VALUES(writ_event('event', 'agent_group_removed',"
    "    'agent', OLD.agent_id, 'group', OLD.grp, 'actor', writ_actor())); END;"
    "PRAGMA user_version = 5;",
    /* 5 -> 6: each signing key's public JWK, kept for good (after the key
     * is removed and its HSM object purged), so `writ audit verify` can
     * still check the checkpoints it signed. */
    "ALTER TABLE signing_keys ADD COLUMN jwk TEXT;"
    "PRAGMA user_version = 6;",
};

#define SCHEMA_VERSION ((int)(sizeof(migrations) / sizeof(migrations[0])))

writ_rc store_sqlerr(store *s, writ_err *err, const char *what)
{
	int ec = sqlite3_extended_errcode(s->db);

	switch (ec & 0xff) {
	case SQLITE_BUSY:
	case SQLITE_LOCKED:
		return writ_err_set(err, WRIT_ERR_UNAVAILABLE,
		                    "store: %s: database locked for more than %d ms", what,
		                    STORE_BUSY_TIMEOUT_MS);
	case SQLITE_NOMEM: return writ_err_set(err, WRIT_ERR_NOMEM, "out of memory");
	default:
		return writ_err_set(err, WRIT_ERR_UNAVAILABLE, "store: %s: %s", what,
		                    sqlite3_errmsg(s->db));
	}
}

sqlite3_stmt *store_stmt(store *s, store_stmt_id id, writ_err *err)
{
	if (s->st[id] == NULL &&
	    sqlite3_prepare_v3(s->db, stmt_sql[id], -1, SQLITE_PREPARE_PERSISTENT, &s->st[id],
	                       NULL) != SQLITE_OK) {
		store_sqlerr(s, err, "prepare");
		s->st[id] = NULL;
		return NULL;
	}
	return s->st[id];
}

void store_done(sqlite3_stmt *st)
{
	if (st == NULL)
		return;
	/* Reset ends the statement's read snapshot: a handle left mid-step
	 * would pin an old view of the agents and stall WAL checkpoints. */
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
}

writ_rc store_exec(store *s, store_stmt_id id, writ_err *err)
{
	sqlite3_stmt *st = store_stmt(s, id, err);
	writ_rc rc = WRIT_OK;
	int r;

	if (st == NULL)
		return err != NULL ? err->rc : WRIT_ERR_UNAVAILABLE;
	while ((r = sqlite3_step(st)) == SQLITE_ROW)
		;
	if (r != SQLITE_DONE)
		rc = store_sqlerr(s, err, stmt_sql[id]);
	store_done(st);
	return rc;
}

static writ_rc sig_generation(store *s, int which, uint64_t *gen)
{
	return which == STORE_SIG_AGENTS ? store_agents_generation(s, gen, NULL)
	                                 : store_keys_generation(s, gen, NULL);
}

writ_rc store_tx_begin(store *s, int durable, writ_err *err)
{
	writ_rc rc;
	int i;

	/* synchronous may not change inside a transaction, so it is set
	 * around it; WAL commits in FULL mode fsync the log before COMMIT
	 * returns. */
	if (durable && (rc = store_exec(s, ST_SYNC_FULL, err)) != WRIT_OK)
		return rc;
	rc = store_exec(s, ST_BEGIN, err);
	if (rc != WRIT_OK && durable)
		(void)store_exec(s, ST_SYNC_NORMAL, NULL);
	for (i = 0; rc == WRIT_OK && i < STORE_SIG__COUNT; i++)
		s->tx_gen_ok[i] = sig_generation(s, i, &s->tx_gen[i]) == WRIT_OK;
	return rc;
}

writ_rc store_tx_end(store *s, int durable, writ_rc rc, writ_err *err)
{
	static const char byte = '\n';
	int moved[STORE_SIG__COUNT] = {0}, i;
	uint64_t gen = 0;

	for (i = 0; rc == WRIT_OK && i < STORE_SIG__COUNT; i++)
		moved[i] = !s->tx_gen_ok[i] || sig_generation(s, i, &gen) != WRIT_OK ||
		           gen != s->tx_gen[i];
	/* After a COMMIT that moved a generation (or may have: it could not
	 * be read), tell the readers of its signal. A failed append only
	 * delays them to their periodic read of the generation. */
	if (rc == WRIT_OK && (rc = store_exec(s, ST_COMMIT, err)) == WRIT_OK)
		for (i = 0; i < STORE_SIG__COUNT; i++)
			if (moved[i] && s->sig_fd[i] >= 0)
				(void)!write(s->sig_fd[i], &byte, 1);
	if (rc != WRIT_OK && !sqlite3_get_autocommit(s->db))
		(void)store_exec(s, ST_ROLLBACK, NULL);
	/* A failure here only leaves the connection slower (FULL): ignore. */
	if (durable)
		(void)store_exec(s, ST_SYNC_NORMAL, NULL);
	return rc;
}

static writ_rc pragma_int(store *s, const char *sql, int64_t *v, writ_err *err)
{
	sqlite3_stmt *st = NULL;
	writ_rc rc = WRIT_OK;

	if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK)
		return store_sqlerr(s, err, sql);
	if (sqlite3_step(st) == SQLITE_ROW)
		*v = sqlite3_column_int64(st, 0);
	else
		rc = store_sqlerr(s, err, sql);
	sqlite3_finalize(st);
	return rc;
}

static writ_rc store_migrate(store *s, const char *path, writ_err *err)
{
	int64_t version = 0, app = 0, objects = 0;
	char *msg = NULL;
	writ_rc rc;
	int v;

	/* Under the write lock, so two processes opening a new file at once
	 * do not both run migration 0. */
	rc = store_tx_begin(s, 1, err);
	if (rc != WRIT_OK)
		return rc;
	rc = pragma_int(s, "PRAGMA user_version", &version, err);
	if (rc == WRIT_OK)
		rc = pragma_int(s, "PRAGMA application_id", &app, err);
	if (rc == WRIT_OK)
		rc = pragma_int(s, "SELECT count(*) FROM sqlite_schema", &objects, err);
	if (rc != WRIT_OK)
		goto out;
	if ((app != 0 && app != STORE_APP_ID) || (app == 0 && (version != 0 || objects != 0))) {
		rc = writ_err_set(err, WRIT_ERR_CONFIG, "%s is not a writ state database", path);
		goto out;
	}
	if (version > SCHEMA_VERSION) {
		rc = writ_err_set(err, WRIT_ERR_CONFIG,
		                  "%s has schema version %lld, newer than this writ (%d): "
		                  "upgrade writ",
		                  path, (long long)version, SCHEMA_VERSION);
		goto out;
	}
	for (v = (int)version; v < SCHEMA_VERSION; v++) {
		if (sqlite3_exec(s->db, migrations[v], NULL, NULL, &msg) != SQLITE_OK) {
			rc = writ_err_set(err, WRIT_ERR_UNAVAILABLE,
			                  "%s: schema migration %d -> %d failed: %s", path, v,
			                  v + 1, msg != NULL ? msg : "?");
			sqlite3_free(msg);
			goto out;
		}
	}
out:
	return store_tx_end(s, 1, rc, err);
}

/* Connection settings; each is per connection, so every open sets them. */
static writ_rc store_configure(store *s, writ_err *err)
{
	sqlite3_stmt *st = NULL;
	const unsigned char *mode;
	writ_rc rc = WRIT_OK;

	sqlite3_extended_result_codes(s->db, 1);
	if (store_actor_register(s) != SQLITE_OK)
		return store_sqlerr(s, err, "writ_actor()");
	/* SQLite's handler sleeps 1, 2, 5 ... 100 ms between tries. Measured
	 * with two processes inserting replay rows flat out on tmpfs, it gave
	 * more total throughput (~21k/s) than a spin-then-10us-backoff handler
	 * (~15k/s); the cost is a millisecond-scale tail on a collision. */
	sqlite3_busy_timeout(s->db, STORE_BUSY_TIMEOUT_MS);
	/* DEFENSIVE: no writable_schema or other ways to corrupt the file
	 * from SQL. TRUSTED_SCHEMA off: a tampered file's triggers or views
	 * cannot call functions with side effects. */
	sqlite3_db_config(s->db, SQLITE_DBCONFIG_DEFENSIVE, 1, NULL);
	sqlite3_db_config(s->db, SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0, NULL);
	if (sqlite3_exec(s->db, "PRAGMA foreign_keys=ON; PRAGMA synchronous=NORMAL", NULL, NULL,
	                 NULL) != SQLITE_OK)
		return store_sqlerr(s, err, "settings");
	/* WAL: readers (every token request) never wait for a writer (the
	 * CLI, replay inserts), and a commit is one append to the log. */
	if (sqlite3_prepare_v2(s->db, "PRAGMA journal_mode=WAL", -1, &st, NULL) != SQLITE_OK)
		return store_sqlerr(s, err, "journal_mode");
	if (sqlite3_step(st) != SQLITE_ROW)
		rc = store_sqlerr(s, err, "journal_mode");
	else if ((mode = sqlite3_column_text(st, 0)) == NULL ||
	         strcmp((const char *)mode, "wal") != 0)
		rc = writ_err_set(err, WRIT_ERR_UNAVAILABLE,
		                  "store: cannot switch to WAL mode (journal_mode is %s)",
		                  mode != NULL ? (const char *)mode : "?");
	sqlite3_finalize(st);
	return rc;
}

/* The file must be ours to trust: a regular file, not a symlink someone
 * could point elsewhere, and not writable by anyone who could forge an
 * agent registration or un-revoke one. */
static writ_rc store_check_file(const char *path, unsigned flags, int *create, writ_err *err)
{
	struct stat sb;

	*create = 0;
	if (lstat(path, &sb) != 0) {
		if (errno == ENOENT && (flags & STORE_CREATE)) {
			*create = 1;
			return WRIT_OK;
		}
		if (errno == ENOENT)
			return writ_err_set(err, WRIT_ERR_NOT_FOUND, "no state database at %s",
			                    path);
		return writ_err_set(err, WRIT_ERR_IO, "%s: %s", path, strerror(errno));
	}
	if (!S_ISREG(sb.st_mode))
		return writ_err_set(err, WRIT_ERR_CONFIG,
		                    "%s is not a regular file (symlinks are refused)", path);
	if (sb.st_mode & (S_IWGRP | S_IWOTH))
		return writ_err_set(err, WRIT_ERR_CONFIG,
		                    "%s is writable by group or others (mode %04o): chmod 600 it",
		                    path, (unsigned)(sb.st_mode & 07777));
	return WRIT_OK;
}

/* The change signal files (store.h), created 0600 beside the database;
 * without one (unwritable directory) its readers fall back to reading the
 * generation on every call. */
static void signal_open(store *s, const char *path)
{
	static const char *const suffix[STORE_SIG__COUNT] = {".agents-changed", ".keys-changed"};
	char p[PATH_MAX];
	struct stat sb;
	int i, n;

	for (i = 0; i < STORE_SIG__COUNT; i++) {
		n = snprintf(p, sizeof(p), "%s%s", path, suffix[i]);
		if (n <= 0 || (size_t)n >= sizeof(p))
			continue;
		/* Non-blocking: a FIFO planted under the name must not hang
		 * the open; anything but a regular file is not used. */
		s->sig_fd[i] = open(
		    p, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK, 0600);
		if (s->sig_fd[i] >= 0 && (fstat(s->sig_fd[i], &sb) != 0 || !S_ISREG(sb.st_mode))) {
			close(s->sig_fd[i]);
			s->sig_fd[i] = -1;
		}
	}
}

writ_rc store_open(const char *path, unsigned flags, store **out, writ_err *err)
{
	store *s = NULL;
	writ_rc rc;
	int create, oflags;

	if (out == NULL)
		return writ_err_set(err, WRIT_ERR_ARG, "NULL argument");
	*out = NULL;
	if (path == NULL || path[0] == '\0')
		return writ_err_set(err, WRIT_ERR_ARG, "no state database path");
	rc = store_check_file(path, flags, &create, err);
	if (rc != WRIT_OK)
		return rc;
	s = calloc(1, sizeof(*s));
	if (s == NULL)
		return writ_err_set(err, WRIT_ERR_NOMEM, "out of memory");
	s->sig_fd[STORE_SIG_AGENTS] = s->sig_fd[STORE_SIG_KEYS] = -1;
	/* NOMUTEX: one thread per handle is the documented contract, so
	 * SQLite's per-connection mutex would be pure overhead. */
	oflags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_NOFOLLOW;
	if (create)
		oflags |= SQLITE_OPEN_CREATE;
	if (sqlite3_open_v2(path, &s->db, oflags, NULL) != SQLITE_OK) {
		rc = writ_err_set(err, s->db != NULL ? WRIT_ERR_IO : WRIT_ERR_NOMEM, "%s: %s", path,
		                  s->db != NULL ? sqlite3_errmsg(s->db) : "out of memory");
		goto out;
	}
	/*
	 * SQLite creates the file at open with 0644 & ~umask. Narrow it
	 * before the first statement: the -wal and -shm files copy the main
	 * file's mode when SQLite creates them. Opening the file ourselves
	 * instead would be worse: closing our descriptor would drop the
	 * POSIX locks of any other connection to it in this process.
	 */
	if (create && chmod(path, 0600) != 0) {
		rc = writ_err_set(err, WRIT_ERR_IO, "chmod %s: %s", path, strerror(errno));
		goto out;
	}
	rc = store_configure(s, err);
	if (rc == WRIT_OK)
		rc = store_migrate(s, path, err);
	if (rc == WRIT_OK)
		signal_open(s, path);
out:
	if (rc != WRIT_OK) {
		store_close(s);
		return rc;
	}
	*out = s;
	return WRIT_OK;
}

void store_close(store *s)
{
	size_t i;

	if (s == NULL)
		return;
	for (i = 0; i < ST__COUNT; i++)
		sqlite3_finalize(s->st[i]);
	for (i = 0; i < STORE_SIG__COUNT; i++)
		if (s->sig_fd[i] >= 0)
			close(s->sig_fd[i]);
	/* close_v2: never fails for busy statements; they are all finalised
	 * anyway. The last connection checkpoints and removes the WAL. */
	sqlite3_close_v2(s->db);
	free(s);
}

writ_rc store_agents_generation(store *s, uint64_t *gen, writ_err *err)
{
	sqlite3_stmt *st;
	writ_rc rc = WRIT_OK;

	if (s == NULL || gen == NULL)
		return writ_err_set(err, WRIT_ERR_ARG, "NULL argument");
	if ((st = store_stmt(s, ST_GEN, err)) == NULL)
		return err != NULL ? err->rc : WRIT_ERR_UNAVAILABLE;
	if (sqlite3_step(st) == SQLITE_ROW)
		*gen = (uint64_t)sqlite3_column_int64(st, 0);
	else
		rc = store_sqlerr(s, err, "read generation");
	store_done(st);
	return rc;
}

static int signal_moved(const store *s, int which, uint64_t *mark)
{
	struct stat sb;

	if (s == NULL || s->sig_fd[which] < 0 || fstat(s->sig_fd[which], &sb) != 0)
		return -1;
	if ((uint64_t)sb.st_size == *mark)
		return 0;
	*mark = (uint64_t)sb.st_size;
	return 1;
}

int store_agents_signal(store *s, uint64_t *mark)
{
	return signal_moved(s, STORE_SIG_AGENTS, mark);
}

int store_keys_signal(store *s, uint64_t *mark)
{
	return signal_moved(s, STORE_SIG_KEYS, mark);
}

/* ---- names and syntax ---- */

static const char *const status_names[] = {
    [STORE_ACTIVE] = "active",
    [STORE_DISABLED] = "disabled",
    [STORE_REVOKED] = "revoked",
};

const char *store_status_name(store_status st)
{
	if (st <= STORE_STATUS_NONE || st > STORE_REVOKED)
		return NULL;
	return status_names[st];
}

store_status store_status_from_name(const char *name)
{
	int i;

	if (name == NULL)
		return STORE_STATUS_NONE;
	for (i = STORE_ACTIVE; i <= STORE_REVOKED; i++)
		if (strcmp(name, status_names[i]) == 0)
			return (store_status)i;
	return STORE_STATUS_NONE;
}

/* Ids end up in tokens ("sub"), policy subjects, audit lines and log
 * output: a small charset keeps them free of quoting, spaces, globs and
 * control characters. */
static int name_valid(const char *s, size_t max)
{
	size_t i;

	if (s == NULL || s[0] == '\0')
		return 0;
	for (i = 0; s[i] != '\0'; i++) {
		unsigned char c = (unsigned char)s[i];
		if (i >= max)
			return 0;
		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == ':' || c == '@' || c == '-'))
			return 0;
	}
	return 1;
}

int store_id_valid(const char *id)
{
	return name_valid(id, STORE_ID_MAX);
}

int store_group_valid(const char *grp)
{
	return name_valid(grp, STORE_GROUP_MAX);
}
