/*
 * lifecycle.h - signing key rotation over the HSM and the store, shared by
 * the issuer (every tick, and at start) and `writ key` (SPEC s.2).
 *
 * The HSM holds the key pairs; the store holds each key's state. A key is
 * generated in the HSM first and recorded second, so a crash in between
 * leaves only an HSM object without a row, never a row that names nothing:
 * lifecycle_reconcile cleans up either way. None of these functions is
 * thread-safe on one store handle (store.h); the HSM context may be shared.
 *
 * The key lock. Reconcile compares two reads that no transaction spans,
 * the store's rows and the token's objects, and acts on the difference by
 * destroying keys and marking rows removed. Another process generating
 * and recording a key between those reads (a `writ key rotate`, an
 * issuer's scheduled rotation) made its key look lost, and it was marked
 * removed and then purged; or look like a key from before the store, and
 * it was adopted as active while its maker destroyed it. So every sequence
 * that changes which keys exist or the state they are in over the HSM and
 * the store together runs under one exclusive flock(2) on
 * "<state_db>.keys.lock" (LIFECYCLE_LOCK_SUFFIX; made 0600 beside the
 * database), held for the whole sequence: generating a key and recording
 * it, reconcile, and each `writ key generate/rotate/retire/revoke/purge`
 * from its first reconcile to its last step; in the issuer, the start-up
 * reconcile and each scheduled rotation (lifecycle_rotate_due takes it).
 * Not taken by the issuer's request path, nor for its per-tick store-only
 * transitions (store_sk_advance, store_sk_hold): each is one transaction
 * that creates and destroys nothing in the HSM, so reconcile's reads
 * cannot be torn by them.
 *
 * Order: take the lock before any store transaction, never while one is
 * open. Whoever holds it may wait for SQLite's write lock, but no holder
 * of SQLite's lock waits for this one, so the two cannot deadlock. A flock
 * belongs to its open file description: two takers in one process (two
 * threads) exclude each other too, and one thread must not take it twice.
 * The lock serialises writ processes of one state database only; as a
 * second guard, "the HSM no longer holds a key" is decided by searching
 * the token for the row's CKA_ID, never by absence from a listing.
 */
#ifndef WRIT_LIFECYCLE_H
#define WRIT_LIFECYCLE_H

#include "config.h"
#include "keyring.h"
#include "p11.h"
#include "store.h"

/* An HSM key younger than this (by the time in its label) is never taken
 * for a crash orphan: another process may be between generating and
 * recording it. */
#define LIFECYCLE_ORPHAN_GRACE 10

/*
 * Test hook (documented, harmless): with WRIT_TEST_CRASH_AFTER_KEYGEN=1 in
 * the environment, lifecycle_generate _exit(3)s right after the HSM made
 * the key and before the store records it, to simulate a crash there.
 */
#define LIFECYCLE_CRASH_ENV "WRIT_TEST_CRASH_AFTER_KEYGEN"

/* The key lock (see the top of this file): fd is -1 when not held. */
typedef struct lifecycle_lock {
	int fd;
} lifecycle_lock;

#define LIFECYCLE_LOCK_SUFFIX ".keys.lock"
/* How long a `writ key` command or a starting issuer waits for the lock:
 * longer than any one holder needs (an RSA key generation took 10+ s under
 * ASan on a loaded machine), short enough that a hung holder is reported. */
#define LIFECYCLE_LOCK_WAIT_MS 60000

/*
 * Take the key lock of the state database state_db, waiting up to wait_ms
 * (0: do not wait). A lock file that is not a regular file, or is a
 * symlink, is refused. WRIT_ERR_UNAVAILABLE when another process holds it
 * past the wait. On success lk->fd >= 0; release with lifecycle_unlock.
 */
WRIT_MUST_CHECK writ_rc lifecycle_lock_take(const char *state_db, int wait_ms, lifecycle_lock *lk,
                                            writ_err *err);
/* Release (closing the file releases the flock). Idempotent. */
void lifecycle_unlock(lifecycle_lock *lk);

/* The windows of cfg (config.c has already checked them). */
void lifecycle_windows(const writ_config *cfg, store_sk_windows *w);

/*
 * Generate a key for alg in the HSM and record it (store_sk_add's mode and
 * first-key rule), with the key lock held (held; WRIT_ERR_ARG without).
 * If recording fails and the store has no row for the key, the new HSM
 * objects are destroyed, so nothing is left half-made. Once a row names
 * the key it is never destroyed here: a later failure (reading the row
 * back into out) is only reported. out (optional) receives the row.
 */
WRIT_MUST_CHECK writ_rc lifecycle_generate(p11_ctx *p11, store *st, const writ_config *cfg,
                                           const lifecycle_lock *held, writ_alg alg,
                                           store_sk_mode mode, const char *reason, store_sk *out,
                                           writ_err *err);

/*
 * A key this process made in the HSM (kid, its thumbprint) that turned out
 * not to be needed: destroyed unless the store has a row for kid (then it
 * is recorded, perhaps active, and never destroyed here). Not recorded, it
 * was never published. 1: destroyed; 0: kept, a row names it; -1: the
 * destroy failed (reconcile removes it later).
 */
int lifecycle_drop_unrecorded(p11_ctx *p11, store *st, const char *kid, const p11_key *key);

/* Record in the store the public JWK of every row that has none yet and
 * whose key kr holds (store_sk_set_jwk): kept after the key is purged, for
 * verifying the audit checkpoints it signed. Called by reconcile and by the
 * issuer whenever it republishes. */
WRIT_MUST_CHECK writ_rc lifecycle_record_jwks(store *st, const keyring *kr, const store_sk *rows,
                                              size_t n, writ_err *err);
/*
 * Make the HSM and the store agree, auditing every outcome (key_reconciled),
 * with the key lock held (held; WRIT_ERR_ARG without). The store's rows
 * are read before the token is listed, so a key recorded in between shows
 * up as an HSM key without a row (spared by the grace below), never as a
 * row without a key.
 *  - a writ key in the HSM without a row, for an alg the store already
 *    tracks, older than LIFECYCLE_ORPHAN_GRACE: a crash between generating
 *    and recording. It was never published and never signed: destroyed.
 *  - writ keys of an alg the store has no row for at all: keys made before
 *    the lifecycle store existed. They were published and the newest
 *    signed, so they are adopted, all in one transaction: the newest
 *    active, the others retired.
 *  - a pending, active or retired row whose private key a search of the
 *    token by the row's CKA_ID does not find: removed. (A key merely
 *    absent from the listing, e.g. its public object deleted, is not.)
 * *changed (optional) counts the outcomes.
 */
WRIT_MUST_CHECK writ_rc lifecycle_reconcile(p11_ctx *p11, store *st, const writ_config *cfg,
                                            const lifecycle_lock *held, int64_t now, int *changed,
                                            writ_err *err);

/*
 * The transitions due at now under cfg's windows (store_sk_advance).
 * Scheduled rotation is lifecycle_rotate_due, apart: the issuer runs it on
 * a thread of its own, since an RSA key takes seconds to generate and
 * nothing would be published or activated meanwhile.
 */
WRIT_MUST_CHECK writ_rc lifecycle_advance(store *st, const writ_config *cfg, int64_t now,
                                          int *changed, writ_err *err);
/*
 * When cfg->rotation_period is set: a pending key for every alg whose
 * active key reaches the age rotation_period - key_pending_secs (so it
 * activates at rotation_period), unless the alg has a pending key already.
 * *changed (optional) counts the keys made. Takes the key lock itself, and
 * only when a key is due (it is called every second); the caller must not
 * hold it. Waits for it at most LIFECYCLE_ROTATE_LOCK_WAIT_MS, then fails
 * (WRIT_ERR_UNAVAILABLE) so that the caller tries again later: an issuer
 * stopping must not wait behind a long `writ key` command.
 */
#define LIFECYCLE_ROTATE_LOCK_WAIT_MS 2000
WRIT_MUST_CHECK writ_rc lifecycle_rotate_due(p11_ctx *p11, store *st, const writ_config *cfg,
                                             int64_t now, int *changed, writ_err *err);

/* CKA_ID as lowercase hex (STORE_P11_ID_HEX_MAX + 1 bytes), and back
 * (returns 0 on success). */
void lifecycle_id_hex(const unsigned char *id, size_t len, char *hex);
int lifecycle_id_parse(const char *hex, unsigned char *id, size_t *len);

#endif
