/*
 * keyset.h - what the issuer signs with and publishes, as one immutable
 * snapshot: the signing key, the JWK Set (pending, active and retired
 * keys: SPEC s.2) with its ETag, and the discovery document. Rebuilt from
 * the store and the HSM when the key lifecycle changes and swapped in
 * atomically, so a request sees one consistent set for its whole life.
 */
#ifndef WRIT_KEYSET_H
#define WRIT_KEYSET_H

#include <pthread.h>

#include "config.h"
#include "keyring.h"
#include "metrics.h"
#include "store.h"

typedef struct keyset {
	int refs;                     /* under the slot's lock */
	uint64_t gen;                 /* store_keys_generation it was built from */
	keyring *kr;                  /* the HSM's keys when built */
	const keyring_entry *signing; /* the active key of cfg.signing_alg, in kr */
	char *jwks_json;
	char etag[72];
	char *discovery_json;
	/* Every published key (pending, active, retired), in the store's
	 * order: no cap, so none is left out of /metrics or of the pending
	 * keys the issuer records as published (store_sk_hold). */
	size_t nmetrics;
	metrics_key *metrics; /* strings in kr */
	char (*states)[12];
	int64_t *created;
} keyset;

/*
 * Build a keyset: the store's rows (read at generation gen) over the HSM's
 * keys (reloaded, so a key another instance or the CLI made is known).
 * WRIT_ERR_NOT_FOUND when cfg.signing_alg has no active key the HSM holds.
 * *out has one reference, the caller's.
 */
WRIT_MUST_CHECK writ_rc keyset_build(p11_ctx *p11, store *st, const writ_config *cfg, uint64_t gen,
                                     keyset **out, writ_err *err);

typedef struct keyset_slot {
	pthread_mutex_t mu;
	keyset *cur;
} keyset_slot;

void keyset_slot_init(keyset_slot *s);
void keyset_slot_destroy(keyset_slot *s);
/* A reference to the keyset in force (keyset_put it), or NULL. */
keyset *keyset_get(keyset_slot *s);
void keyset_put(keyset_slot *s, keyset *ks);
/* Put ks in force (the caller's reference moves to the slot). */
void keyset_slot_set(keyset_slot *s, keyset *ks);

#endif
