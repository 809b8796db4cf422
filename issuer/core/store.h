/*
 * store.h - writ's state store: agents, their pinned public keys, their
 * status, and the assertion replay cache (SPEC s.5, s.8). SQLite in WAL
 * mode today; the interface names no SQLite type so a PostgreSQL backend
 * can sit behind it later.
 *
 * Concurrency. A `store` is one database connection. Use it from one
 * thread at a time (it is opened SQLITE_OPEN_NOMUTEX); the issuer opens one
 * per worker thread or process. Any number of handles, in any number of
 * threads and processes, may share one file: writes are serialised by
 * SQLite's locks, a writer waits up to STORE_BUSY_TIMEOUT_MS for the lock
 * and then fails with WRIT_ERR_UNAVAILABLE. Do not carry a handle across
 * fork(): open a new one in the child.
 *
 * Visibility. Nothing is cached between calls: every store_agent_get reads
 * the committed rows, so a change made by `writ agent ...` in another
 * process is seen by the issuer's next request (SPEC s.4 "from the next
 * call on — in every issuer instance").
 *
 * Durability. Commits that change agents or keys (add, status, key add /
 * remove) are fsync'ed before the call returns (synchronous=FULL): a
 * revocation survives a power cut. Replay-cache inserts are committed with
 * synchronous=NORMAL: they survive a crash of the process but a power cut
 * may lose the last few, which reopens replay of those assertions until
 * their exp (at most 5 minutes, SPEC s.5) — the price of not fsyncing on
 * every token request.
 *
 * Errors. Functions return WRIT_OK or a writ_rc and fill err (optional)
 * with one line naming the problem. WRIT_ERR_UNAVAILABLE means the
 * database could not be used (locked past the timeout, I/O error,
 * corruption): the issuer must fail closed (503). No function stores or
 * reports secrets: the store holds public keys only.
 */
#ifndef WRIT_STORE_H
#define WRIT_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "writ/writ.h"

typedef struct store store;

/* Caps (refused with WRIT_ERR_ARG / WRIT_ERR_TOO_LARGE beyond them). */
#define STORE_ID_MAX     128  /* agent id: [A-Za-z0-9._:@-]{1,128} */
#define STORE_GROUP_MAX  64   /* group name: same characters, 1..64 */
#define STORE_GROUPS_MAX 32   /* groups per agent */
#define STORE_KEYS_MAX   8    /* keys per agent */
#define STORE_REASON_MAX 256  /* status reason, bytes of UTF-8, no controls */
#define STORE_JTI_MAX    256  /* assertion jti, bytes */
#define STORE_JWK_MAX    8192 /* a public JWK as JSON */

#define STORE_BUSY_TIMEOUT_MS 5000
/* Replay rows are kept until exp + this, so an assertion accepted with
 * any allowed clock leeway is still remembered while it could verify. */
#define STORE_REPLAY_LEEWAY WRIT_LEEWAY_MAX
/* Expired replay rows deleted by each store_replay_check_and_insert. */
#define STORE_REPLAY_PURGE_BATCH 16

/* store_open flags */
#define STORE_CREATE 0x1u /* create the file (mode 0600) if it does not exist */

/*
 * Open (and if needed create or migrate) the database at path. The file
 * must be a regular file (symlinks refused) not writable by group or
 * others; a file that is not a writ store, or whose schema is newer than
 * this build knows, is refused with WRIT_ERR_CONFIG. Without STORE_CREATE
 * a missing file is WRIT_ERR_NOT_FOUND. On success *out is the caller's
 * (store_close); on failure *out is NULL. Thread-safe (for different
 * handles).
 */
WRIT_MUST_CHECK writ_rc store_open(const char *path, unsigned flags, store **out, writ_err *err);
/* Close the connection; NULL is accepted. */
void store_close(store *s);

/* ---- agents ---- */

typedef enum store_status {
	STORE_STATUS_NONE = 0, /* sentinel: never stored */
	STORE_ACTIVE,          /* may obtain tokens */
	STORE_DISABLED,        /* refused until enabled again */
	STORE_REVOKED,         /* refused for ever: terminal */
} store_status;

/* "active" / "disabled" / "revoked"; NULL for anything else. */
const char *store_status_name(store_status st);
/* Exact match; STORE_STATUS_NONE if unknown. */
store_status store_status_from_name(const char *name);

/* Syntax checks used by the store and the CLI: 1 if valid, else 0. */
int store_id_valid(const char *id);
int store_group_valid(const char *grp);

typedef struct store_key {
	char kid[WRIT_KID_MAX + 1]; /* RFC 7638 thumbprint */
	writ_alg alg;               /* pinned at registration */
	int64_t added_at;           /* seconds since the epoch */
	writ_jwk *jwk;              /* owned by the store_agent */
} store_key;

/* One agent as read from the store. Filled by store_agent_get, released
 * with store_agent_clear (which frees the JWKs). */
typedef struct store_agent {
	char id[STORE_ID_MAX + 1];
	store_status status;
	char reason[STORE_REASON_MAX + 1]; /* "" if none */
	int64_t created_at, updated_at;
	size_t ngroups; /* sorted */
	char groups[STORE_GROUPS_MAX][STORE_GROUP_MAX + 1];
	size_t nkeys; /* in order of registration */
	store_key keys[STORE_KEYS_MAX];
} store_agent;

/*
 * Register agent `id`, status active, with groups (may be NULL when
 * ngroups is 0; duplicates refused) and one public key: jwk_json is a
 * public JWK carrying "alg" (writ_jwk_parse rules); if it carries "kid" it
 * must be the RFC 7638 thumbprint. The key's alg is pinned from now on. A
 * key already registered to any agent (revoked ones included) is refused,
 * so one key never speaks for two identities. An id used before (even by
 * a revoked agent) is refused: ids are never reused. If kid is not NULL
 * it receives the key's kid (WRIT_KID_MAX + 1 bytes). Durable on return.
 * Returns WRIT_ERR_ARG (bad id, group, duplicate, existing id or key),
 * WRIT_ERR_JWK, WRIT_ERR_UNAVAILABLE.
 */
WRIT_MUST_CHECK writ_rc store_agent_add(store *s, const char *id, const char *const *groups,
                                        size_t ngroups, const char *jwk_json, char *kid,
                                        writ_err *err);

/*
 * Read agent `id` into *out (cleared first; the caller owns the result and
 * releases it with store_agent_clear). Every key is re-parsed and checked
 * against its stored kid and alg, so a tampered row is refused
 * (WRIT_ERR_UNAVAILABLE) rather than trusted. Returns WRIT_ERR_NOT_FOUND
 * for an unknown (or syntactically invalid) id.
 */
WRIT_MUST_CHECK writ_rc store_agent_get(store *s, const char *id, store_agent *out, writ_err *err);
/* Free the JWKs of a; a is left zeroed. NULL accepted. */
void store_agent_clear(store_agent *a);
/* The key with this kid, or when kid is NULL the only key (NULL if the agent
 * has several). Borrowed from a. */
const store_key *store_agent_key(const store_agent *a, const char *kid);

/*
 * Every agent id, sorted. *ids is a malloc'd array of *n malloc'd strings,
 * the caller's: free with store_ids_free. The list is read in one
 * snapshot.
 */
WRIT_MUST_CHECK writ_rc store_agent_list(store *s, char ***ids, size_t *n, writ_err *err);
void store_ids_free(char **ids, size_t n);

/*
 * Change the status of agent `id` and record reason (NULL or "" for none;
 * UTF-8, no control characters, at most STORE_REASON_MAX bytes). Allowed:
 * active <-> disabled, and any -> revoked. Revoked is terminal: asking a
 * revoked agent for active or disabled is WRIT_ERR_ARG; revoking it again
 * is WRIT_OK and changes nothing (the first reason and time stay). If
 * changed is not NULL it is set to 1 when the row changed, else 0.
 * Durable on return. WRIT_ERR_NOT_FOUND for an unknown agent.
 */
WRIT_MUST_CHECK writ_rc store_agent_set_status(store *s, const char *id, store_status status,
                                               const char *reason, int *changed, writ_err *err);

/*
 * Put agent `id` in group grp (add) or take it out (!add): policy rules
 * that name group:grp apply to it from the issuer's next request. At most
 * STORE_GROUPS_MAX groups (WRIT_ERR_TOO_LARGE); adding a group it is in,
 * or a revoked agent, is WRIT_ERR_ARG; removing a group it is not in, or
 * an unknown agent, is WRIT_ERR_NOT_FOUND. Audited (agent_group_added /
 * agent_group_removed) in the same transaction. Durable on return.
 */
WRIT_MUST_CHECK writ_rc store_agent_group(store *s, const char *id, const char *grp, int add,
                                          writ_err *err);

/*
 * Add a public key to agent `id` (key rotation: add the new key, move the
 * agent to it, remove the old one). Same key rules as store_agent_add; at
 * most STORE_KEYS_MAX keys; a revoked agent's keys are frozen (WRIT_ERR_ARG).
 * kid (optional) receives the new kid. Durable on return.
 */
WRIT_MUST_CHECK writ_rc store_agent_key_add(store *s, const char *id, const char *jwk_json,
                                            char *kid, writ_err *err);
/*
 * Remove key `kid` from agent `id`. The last key of an agent cannot be
 * removed (WRIT_ERR_ARG: add the replacement first, or disable / revoke the
 * agent), and a revoked agent's keys are frozen, so its record keeps the
 * key it was revoked with. WRIT_ERR_NOT_FOUND for an unknown agent or kid.
 * Durable on return.
 */
WRIT_MUST_CHECK writ_rc store_agent_key_remove(store *s, const char *id, const char *kid,
                                               writ_err *err);

/* ---- replay cache (SPEC s.5: refuse a jti seen before while it could still
 * be valid) ---- */

/*
 * Remember (agent, jti) until exp + STORE_REPLAY_LEEWAY. Returns WRIT_OK if
 * the pair was not already remembered (or only by a row already past that
 * time), and WRIT_ERR_CLAIM with "assertion jti already used" if it was:
 * the insert and the conflict check are one statement, so of several
 * issuers racing with the same assertion exactly one gets WRIT_OK. Also
 * deletes up to STORE_REPLAY_PURGE_BATCH expired rows, so the cache holds
 * only rows that can still matter and its cost does not grow with history.
 * jti: 1..STORE_JTI_MAX bytes. now: seconds since the epoch (the caller's
 * clock, for tests). Not fsync'ed (see Durability above).
 */
WRIT_MUST_CHECK writ_rc store_replay_check_and_insert(store *s, const char *agent_id,
                                                      const char *jti, int64_t exp, int64_t now,
                                                      writ_err *err);
/* Let this connection's page cache hold kib KiB: the replay writer keeps
 * the replay table's B-tree (a few hundred thousand live rows under load)
 * in memory instead of re-reading pages through the OS. */
WRIT_MUST_CHECK writ_rc store_cache_size(store *s, unsigned kib, writ_err *err);

/* One entry of a batch: in agent_id, jti, exp; out rc (WRIT_OK: first
 * use; WRIT_ERR_CLAIM: replayed; other: could not be checked). */
typedef struct store_replay_item {
	const char *agent_id, *jti;
	int64_t exp;
	writ_rc rc;
} store_replay_item;

/*
 * store_replay_check_and_insert for n assertions in one transaction (one
 * WAL commit, one write lock): the issuer's group commit for the replay
 * cache, so concurrent requests do not queue one by one on SQLite's write
 * lock. Returns WRIT_OK when the transaction committed (each item's rc
 * says what happened to it), else the failure, with every item's rc set
 * to it.
 */
WRIT_MUST_CHECK writ_rc store_replay_check_batch(store *s, store_replay_item *items, size_t n,
                                                 int64_t now, writ_err *err);

/*
 * Delete every replay row past exp + STORE_REPLAY_LEEWAY at `now`, in
 * batches of short transactions so other writers are not starved. If
 * deleted is not NULL it receives the count. For a periodic sweep; the
 * per-insert purge already keeps the table bounded under steady load.
 */
WRIT_MUST_CHECK writ_rc store_replay_purge(store *s, int64_t now, uint64_t *deleted, writ_err *err);
/* Number of rows in the replay cache (tests, metrics). */
WRIT_MUST_CHECK writ_rc store_replay_count(store *s, uint64_t *n, writ_err *err);

/*
 * A counter bumped (by trigger, in the same transaction) by every change to
 * agents, their groups or their keys. Equal values mean no agent data
 * changed in between: a caller may cache parsed agents keyed on it.
 */
WRIT_MUST_CHECK writ_rc store_agents_generation(store *s, uint64_t *gen, writ_err *err);

/*
 * A cheap hint that the generation may have moved, for the request path:
 * every write transaction through this store that moves the generation
 * appends one byte, after its COMMIT, to a signal file beside the database
 * (its path + ".agents-changed"), and this compares that file's size with
 * *mark: one fstat, no SQLite transaction and its file locks. Returns 1
 * (and stores the size in *mark) when it differs, 0 when it does not, -1
 * when the store has no signal file. A commit made any other way (the
 * sqlite3 shell, a process killed between COMMIT and the append, a signal
 * that could not be written) moves no signal, so a caller that trusts it
 * still reads store_agents_generation every so often.
 */
int store_agents_signal(store *s, uint64_t *mark);
/* The same for the signing keys' generation (store_keys_generation), with
 * the file path + ".keys-changed". */
int store_keys_signal(store *s, uint64_t *mark);

/* ---- audit outbox (store_outbox.c) ----
 * Changes to agents and their keys write their audit record into the
 * store in the same transaction (by trigger); the issuer, which holds the
 * audit log, moves them into the log. Delivery is at least once: a crash
 * between the append and the delete repeats a record, never loses one. */

/* Who makes the changes through this connection, for the records'
 * "actor" (default: "uid:<n>(<name>)" of the process). Copied. */
void store_set_actor(store *s, const char *actor);
/* The oldest pending record: *rec is malloc'd JSON (caller frees), *id its
 * id. WRIT_ERR_NOT_FOUND when there is none. */
WRIT_MUST_CHECK writ_rc store_outbox_next(store *s, int64_t *id, char **rec, writ_err *err);
/* Forget record id once it is in the audit log. */
WRIT_MUST_CHECK writ_rc store_outbox_delete(store *s, int64_t id, writ_err *err);
/* Pending records (tests, metrics). */
WRIT_MUST_CHECK writ_rc store_outbox_count(store *s, uint64_t *n, writ_err *err);
/* Record a token signed outside the issuer (writ mint): a token_minted
 * record with who minted it, drained into the audit log like the rest.
 * Durable on return; the caller hands out the token only after that. */
WRIT_MUST_CHECK writ_rc store_outbox_minted(store *s, const char *sub, const char *aud,
                                            const char *scope, const char *jti, const char *kid,
                                            int64_t exp, writ_err *err);

/* ---- signing key lifecycle (store_keys.c; SPEC s.2) ----
 * pending -> active -> retired -> removed, and revoked from any state.
 * Rows are keyed by kid; exactly one active key per alg (a unique index).
 * Every call that changes a row runs in one BEGIN IMMEDIATE transaction,
 * changes a row only from the state it expects (so concurrent issuers and
 * the CLI cannot double-activate), is durable on return, and writes its
 * audit record (key_generated, key_activated, key_retired, key_removed,
 * key_revoked, key_purged, with kid, alg, reason and actor) into the
 * outbox in the same transaction. Times are seconds since the epoch. */

typedef enum store_sk_state {
	STORE_SK_NONE = 0, /* sentinel: never stored */
	STORE_SK_PENDING,  /* published, not signing yet */
	STORE_SK_ACTIVE,   /* signs; one per alg */
	STORE_SK_RETIRED,  /* published until remove_after, not signing */
	STORE_SK_REMOVED,  /* withdrawn; HSM object may be purged */
	STORE_SK_REVOKED,  /* withdrawn at once (compromise); terminal */
} store_sk_state;

#define STORE_P11_ID_HEX_MAX 64   /* hex CKA_ID */
#define STORE_SK_JWK_MAX     2048 /* public JWK JSON: RSA-4096 is ~800 bytes */

typedef struct store_sk {
	char kid[WRIT_KID_MAX + 1];
	writ_alg alg;
	char p11_id[STORE_P11_ID_HEX_MAX + 1];
	store_sk_state state;
	/* 0 where the event has not happened */
	int64_t created_at, activate_after, activated_at, retired_at, remove_after;
	int64_t removed_at, revoked_at, purged_at;
	int64_t published_at;              /* an issuer first served it while pending */
	char jwk[STORE_SK_JWK_MAX + 1];    /* its public JWK (JSON); "" if not recorded yet */
	char reason[STORE_REASON_MAX + 1]; /* of the last transition; "" if none */
	char actor[128];                   /* who made the last transition */
} store_sk;

/* The windows of SPEC s.2, from the configuration. */
typedef struct store_sk_windows {
	int64_t pending_secs; /* >= JWKS max-age + leeway */
	int64_t retired_secs; /* >= max token TTL + leeway */
} store_sk_windows;

typedef enum store_sk_mode {
	STORE_SK_ROTATE,   /* pending, activate_after = now + pending_secs */
	STORE_SK_SCHEDULE, /* the same, but refused (WRIT_ERR_ARG) when the alg
	                    * already has a pending key: issuers racing on the
	                    * schedule make one key, not one each */
	STORE_SK_NOW,      /* active at once; the active key is retired */
} store_sk_mode;

/* "pending" ... "revoked"; NULL for anything else. */
const char *store_sk_state_name(store_sk_state st);

/*
 * Record a key just generated in the HSM. The first key of its alg (no
 * active key) becomes active at once whatever the mode: no verifier can
 * hold a token of that alg yet. reason may be NULL. *state (optional)
 * receives the state recorded. WRIT_ERR_ARG for a kid already recorded or
 * a bad argument.
 */
WRIT_MUST_CHECK writ_rc store_sk_add(store *s, const char *kid, writ_alg alg, const char *p11_id,
                                     store_sk_mode mode, const store_sk_windows *w, int64_t now,
                                     const char *reason, store_sk_state *state, writ_err *err);
/* Every row, oldest first: *keys is malloc'd (free()), *n entries. */
WRIT_MUST_CHECK writ_rc store_sk_list(store *s, store_sk **keys, size_t *n, writ_err *err);
/* One row; WRIT_ERR_NOT_FOUND if kid is not recorded. */
WRIT_MUST_CHECK writ_rc store_sk_get(store *s, const char *kid, store_sk *out, writ_err *err);
/*
 * Apply the transitions due at now: each pending key an issuer has
 * published (store_sk_hold) whose activate_after has passed becomes
 * active and the alg's active key retires (remove_after = now +
 * retired_secs); each retired key past remove_after is removed.
 * *changed (optional) counts the rows changed. Idempotent; safe to call
 * from every issuer each tick and from the CLI.
 */
WRIT_MUST_CHECK writ_rc store_sk_advance(store *s, const store_sk_windows *w, int64_t now,
                                         int *changed, writ_err *err);
/*
 * An issuer now serves pending key kid in its JWKS. The first call for a
 * key (from any issuer) records published_at = now and holds the key
 * until at least not_before (now + key_pending_secs): a pending key
 * activates only after an issuer published it, and its window counts
 * from then, so a key made while no issuer ran, or while the issuer was
 * busy for seconds (an RSA key generation), is not activated before any
 * cache could have fetched it. With always set, a key another instance
 * published is held too (this issuer's JWKS shows it only now); with
 * always 0 only an unpublished key is (at start: the instance before may
 * have served the others). Never moves activate_after earlier; *changed
 * (optional): 1 if the row changed.
 */
WRIT_MUST_CHECK writ_rc store_sk_hold(store *s, const char *kid, int64_t now, int64_t not_before,
                                      int always, int *changed, writ_err *err);
/* Record kid's public JWK (JSON, at most STORE_SK_JWK_MAX bytes) if none is
 * recorded yet; never replaced. */
WRIT_MUST_CHECK writ_rc store_sk_set_jwk(store *s, const char *kid, const char *jwk_json,
                                         writ_err *err);
/*
 * Retire kid. A pending key is simply withdrawn from the rotation (it
 * never signed). An active key needs a successor: the newest pending key
 * of its alg is activated at once (written to *successor, WRIT_KID_MAX + 1
 * bytes, optional); with none, WRIT_ERR_ARG. Retired: no change.
 * Removed / revoked: WRIT_ERR_ARG. WRIT_ERR_NOT_FOUND for an unknown kid.
 */
WRIT_MUST_CHECK writ_rc store_sk_retire(store *s, const char *kid, const store_sk_windows *w,
                                        int64_t now, const char *reason, char *successor,
                                        writ_err *err);
/*
 * Revoke kid (compromise): withdrawn at once, terminal. If kid is active,
 * repl (the replacement, already generated in the HSM: kid, alg, p11_id)
 * is recorded active in the same transaction, so the alg is never left
 * without a signing key; revoking an active key without repl, or with a
 * repl of another alg, is WRIT_ERR_ARG. reason is required. *was
 * (optional) receives the state kid had inside the transaction
 * (STORE_SK_NONE if unknown): repl was recorded iff the call succeeded and
 * *was is STORE_SK_ACTIVE. A state read before the call is only a hint
 * (an issuer's store_sk_advance may activate or retire kid meanwhile).
 */
WRIT_MUST_CHECK writ_rc store_sk_revoke(store *s, const char *kid, const char *reason,
                                        const store_sk *repl, int64_t now, store_sk_state *was,
                                        writ_err *err);
/*
 * Record keys found in the HSM from before the store existed (reconcile),
 * all of alg, newest first: keys[0] active, the others retired (published
 * until every token they signed has expired), all in one transaction, so
 * a failure leaves none of them recorded. If alg has any row by then,
 * nothing is recorded and *adopted is 0; else *adopted = n. Each key needs
 * kid, alg and p11_id.
 */
WRIT_MUST_CHECK writ_rc store_sk_adopt(store *s, writ_alg alg, const store_sk *keys, size_t n,
                                       const store_sk_windows *w, int64_t now, const char *reason,
                                       size_t *adopted, writ_err *err);
/* Record that kid's HSM objects were destroyed (audit key_purged). Only
 * removed and revoked keys: anything else is WRIT_ERR_ARG. */
WRIT_MUST_CHECK writ_rc store_sk_purged(store *s, const char *kid, int64_t now, writ_err *err);
/* Reconcile: kid's HSM object is gone; a pending, active or retired row
 * becomes removed with reason why, and a key_reconciled record is written
 * in the same transaction. */
WRIT_MUST_CHECK writ_rc store_sk_missing(store *s, const char *kid, int64_t now, const char *why,
                                         writ_err *err);
/* Write an audit record {event, kid, alg, outcome, actor} into the outbox
 * (reconcile outcomes that change no row). */
WRIT_MUST_CHECK writ_rc store_sk_audit(store *s, const char *event, const char *kid, writ_alg alg,
                                       const char *outcome, writ_err *err);
/* A counter bumped by every change to signing_keys (see agents_generation). */
WRIT_MUST_CHECK writ_rc store_keys_generation(store *s, uint64_t *gen, writ_err *err);

#endif
