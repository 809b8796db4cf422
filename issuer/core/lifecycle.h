/*
 * lifecycle.h - signing key rotation over the HSM and the store, shared by
 * the issuer (every tick, and at start) and `writ key` (SPEC s.2).
 *
 * The HSM holds the key pairs; the store holds each key's state. A key is
 * generated in the HSM first and recorded second, so a crash in between
 * leaves only an HSM object without a row, never a row that names nothing:
 * lifecycle_reconcile cleans up either way. None of these functions is
 * thread-safe on one store handle (store.h); the HSM context may be shared.
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

/* The windows of cfg (config.c has already checked them). */
void lifecycle_windows(const writ_config *cfg, store_sk_windows *w);

/*
 * Generate a key for alg in the HSM and record it (store_sk_add's mode and
 * first-key rule). If recording fails the new HSM objects are destroyed,
 * so nothing is left half-made. out (optional) receives the row recorded.
 */
WRIT_MUST_CHECK writ_rc lifecycle_generate(p11_ctx *p11, store *st, const writ_config *cfg,
                                           writ_alg alg, store_sk_mode mode, const char *reason,
                                           store_sk *out, writ_err *err);

/* Record in the store the public JWK of every row that has none yet and
 * whose key kr holds (store_sk_set_jwk): kept after the key is purged, for
 * verifying the audit checkpoints it signed. Called by reconcile and by the
 * issuer whenever it republishes. */
WRIT_MUST_CHECK writ_rc lifecycle_record_jwks(store *st, const keyring *kr, const store_sk *rows,
                                              size_t n, writ_err *err);
/*
 * Make the HSM and the store agree, auditing every outcome (key_reconciled):
 *  - a writ key in the HSM without a row, for an alg the store already
 *    tracks, older than LIFECYCLE_ORPHAN_GRACE: a crash between generating
 *    and recording. It was never published and never signed: destroyed.
 *  - writ keys of an alg the store has no row for at all: keys made before
 *    the lifecycle store existed. They were published and the newest
 *    signed, so they are adopted: the newest active, the others retired.
 *  - a pending, active or retired row whose HSM object is gone: removed.
 * *changed (optional) counts the outcomes.
 */
WRIT_MUST_CHECK writ_rc lifecycle_reconcile(p11_ctx *p11, store *st, const writ_config *cfg,
                                            int64_t now, int *changed, writ_err *err);

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
 * *changed (optional) counts the keys made.
 */
WRIT_MUST_CHECK writ_rc lifecycle_rotate_due(p11_ctx *p11, store *st, const writ_config *cfg,
                                             int64_t now, int *changed, writ_err *err);

/* CKA_ID as lowercase hex (STORE_P11_ID_HEX_MAX + 1 bytes), and back
 * (returns 0 on success). */
void lifecycle_id_hex(const unsigned char *id, size_t len, char *hex);
int lifecycle_id_parse(const char *hex, unsigned char *id, size_t *len);

#endif
