/*
 * store_int.h - what store.c, store_agent.c and store_replay.c share: the
 * connection struct and its cache of prepared statements. Every SQL
 * statement writ runs against the store is one of the constant strings in
 * store.c's table, with values bound, never spliced in.
 */
#ifndef WRIT_STORE_INT_H
#define WRIT_STORE_INT_H

#include <sqlite3.h>

#include "store.h"

typedef enum store_stmt_id {
	ST_BEGIN,
	ST_BEGIN_READ,
	ST_COMMIT,
	ST_ROLLBACK,
	ST_SYNC_FULL,
	ST_SYNC_NORMAL,
	ST_GEN,
	ST_AGENT_GET,
	ST_AGENT_GROUPS,
	ST_AGENT_KEYS,
	ST_AGENT_IDS,
	ST_AGENT_INSERT,
	ST_GROUP_INSERT,
	ST_GROUP_DELETE,
	ST_GROUP_COUNT,
	ST_KEY_INSERT,
	ST_KEY_OWNER,
	ST_KEY_COUNT,
	ST_KEY_DELETE,
	ST_STATUS_GET,
	ST_STATUS_SET,
	ST_REPLAY_UPSERT,
	ST_REPLAY_PURGE,
	ST_REPLAY_COUNT,
	ST_OUTBOX_NEXT,
	ST_OUTBOX_DELETE,
	ST_OUTBOX_COUNT,
	ST_OUTBOX_MINTED,
	/* signing key lifecycle (store_keys.c) */
	ST_SK_GEN,
	ST_SK_LIST,
	ST_SK_GET,
	ST_SK_INSERT,
	ST_SK_COUNT,
	ST_SK_ACTIVE,
	ST_SK_ACTIVATE,
	ST_SK_RETIRE,
	ST_SK_REMOVE,
	ST_SK_REVOKE,
	ST_SK_PURGED,
	ST_SK_DUE_PENDING,
	ST_SK_DUE_RETIRED,
	ST_SK_NEWEST_PENDING,
	ST_SK_HOLD,
	ST_SK_SET_JWK,
	ST_SK_AUDIT,
	ST__COUNT
} store_stmt_id;

/* The generations that have a change signal file beside the database. */
enum { STORE_SIG_AGENTS, STORE_SIG_KEYS, STORE_SIG__COUNT };

struct store {
	sqlite3 *db;
	sqlite3_stmt *st[ST__COUNT];
	char actor[128]; /* who changes things through this connection */
	/* The change signals (store_agents_signal, store_keys_signal), one
	 * per STORE_SIG_*: descriptor (-1: none), and the generation when the
	 * open write transaction began (tx_gen_ok: it could be read). */
	int sig_fd[STORE_SIG__COUNT];
	int tx_gen_ok[STORE_SIG__COUNT];
	uint64_t tx_gen[STORE_SIG__COUNT];
};

/* Register writ_actor() (the audit outbox triggers call it). SQLite rc. */
int store_actor_register(store *s);

/* The prepared statement id, reset and unbound, ready for binding; NULL on
 * failure (err filled). Borrowed: call store_done after use, which ends
 * its read snapshot. */
sqlite3_stmt *store_stmt(store *s, store_stmt_id id, writ_err *err);
void store_done(sqlite3_stmt *st);

/* Map the connection's last SQLite error to a writ_rc and err message. */
writ_rc store_sqlerr(store *s, writ_err *err, const char *what);

/* Run a statement that returns no rows (BEGIN, PRAGMA ...). */
writ_rc store_exec(store *s, store_stmt_id id, writ_err *err);

/*
 * A write transaction: BEGIN IMMEDIATE takes the write lock at once, so
 * the reads inside it see the state the writes apply to. durable: fsync on
 * commit (synchronous=FULL for this transaction only). store_tx_end
 * commits when rc is WRIT_OK, else rolls back, and returns the final rc.
 */
writ_rc store_tx_begin(store *s, int durable, writ_err *err);
/* The code of a failed store_stmt (which set err, when given). */
#define STMT_FAIL(err) ((err) != NULL ? (err)->rc : WRIT_ERR_UNAVAILABLE)
writ_rc store_tx_end(store *s, int durable, writ_rc rc, writ_err *err);

#endif
