/*
 * keyring.h - the issuer's view of its signing keys: the writ keys in the
 * HSM, each with its public JWK and RFC 7638 kid, and JWS signing by kid.
 *
 * Built from p11_keys_list; rebuilt (not mutated) when keys change, so a
 * keyring may be shared read-only between threads.
 */
#ifndef WRIT_KEYRING_H
#define WRIT_KEYRING_H

#include <jansson.h>

#include "p11.h"
#include "writ/writ.h"

typedef struct keyring_entry {
	writ_jwk *jwk;                /* public key, kid = thumbprint, alg pinned */
	unsigned char id[P11_ID_MAX]; /* CKA_ID in the token */
	size_t id_len;
	char label[P11_LABEL_MAX + 1];
} keyring_entry;

typedef struct keyring keyring;

/* Load every writ key of the token. *out is the caller's (keyring_free). */
WRIT_MUST_CHECK writ_rc keyring_load(p11_ctx *p11, keyring **out, writ_err *err);
void keyring_free(keyring *kr);
size_t keyring_count(const keyring *kr);
/* Borrowed, valid until keyring_free. NULL when out of range / unknown. */
const keyring_entry *keyring_get(const keyring *kr, size_t i);
const keyring_entry *keyring_find(const keyring *kr, const char *kid);
/* The newest key (by creation time in its label) for alg, or NULL. Until
 * the key lifecycle store exists this is the signing key for alg. */
const keyring_entry *keyring_newest(const keyring *kr, writ_alg alg);
/* {"keys":[...]} of every key; caller frees with free(). */
char *keyring_jwks_json(const keyring *kr);

/*
 * Sign a JWS: header {"alg","typ","kid"} and the payload, a JSON object's
 * text (plen bytes), in the HSM with the entry's key. Returns a malloc'd
 * compact JWS in *out.
 */
WRIT_MUST_CHECK writ_rc keyring_sign_jws(p11_ctx *p11, const keyring_entry *key, const char *typ,
                                         const char *payload, size_t plen, char **out,
                                         writ_err *err);

#endif
