/*
 * p11.h - writ's HSM layer: a PKCS#11 module, one token, its signing keys.
 *
 * This layer knows nothing of JWTs, JSON or HTTP. Its whole interface is:
 * open a token, list keys, generate a key, give the public key, sign bytes
 * with a key, destroy a key. That narrowness is what lets the signer move
 * into its own process later without its callers noticing.
 *
 * Threads: one p11_ctx may be used by many threads at once; each signing
 * call borrows a session from a pool, so threads never share a session.
 * Processes: after fork() the child's first call re-initialises the module
 * and logs in again (PKCS#11 v2.40 s.6.7.7: a child must C_Initialize).
 *
 * Faults: when the token reports a lost object, session, login or device,
 * a call re-initialises the module (C_Finalize + C_Initialize), finds the
 * token by label, logs in and retries once; then it fails with WRIT_ERR_HSM.
 * A sign whose key is not found is treated the same way (SoftHSM2 can come
 * back from a vanished token directory with an empty view of the token
 * until it is re-initialised), but at most once per P11_MISSING_REINIT_SECS
 * per context, so a key that is really gone does not re-initialise the
 * module on every request; it fails with WRIT_ERR_NOT_FOUND.
 * A signature is returned only from a C_Sign that returned CKR_OK.
 */
#ifndef WRIT_P11_H
#define WRIT_P11_H

#include <openssl/evp.h>
#include <stddef.h>

#include "writ/writ.h"

#define P11_ID_MAX       32  /* CKA_ID bytes writ creates (16) and accepts */
#define P11_LABEL_MAX    64  /* CKA_LABEL bytes */
#define P11_SIG_MAX      512 /* RSA-4096 */
#define P11_GEN_ATTEMPTS 3   /* pairs made at most for one p11_key_generate */
#define P11_PIN_MAX      256
/* A sign whose key is not found re-initialises the module at most once
 * per this many seconds per context (see Faults above). */
#define P11_MISSING_REINIT_SECS 5

typedef struct p11_ctx p11_ctx;

typedef struct p11_cfg {
	const char *module;       /* path of the PKCS#11 module (.so) */
	const char *token_label;  /* token to use, found by label (slot ids move) */
	const char *pin_file;     /* PIN file, mode 0600 or stricter, owned by us */
	const char *pin_env;      /* or: name of an environment variable */
	const char *softhsm_conf; /* optional: exported as SOFTHSM2_CONF first */
} p11_cfg;

typedef struct p11_key {
	unsigned char id[P11_ID_MAX]; /* CKA_ID shared by the key pair */
	size_t id_len;
	char label[P11_LABEL_MAX + 1];
	writ_alg alg;  /* from the label's "writ:<ALG>:" prefix and key type */
	EVP_PKEY *pub; /* public key, owned by the p11_key */
} p11_key;

/*
 * Load the module, find the token by label, log in with the PIN from
 * pin_file (re-read at every login) or pin_env (copied once into locked,
 * non-dumpable memory and removed from the environment). A pin_file that
 * group or others can read, or that is not ours, is refused. The PIN is
 * wiped from every temporary buffer after use. A token whose PIN is in its
 * final try or locked is not logged into (SoftHSM has no lockout of its
 * own: FACTS.md). On success *out is the caller's (p11_close).
 */
WRIT_MUST_CHECK writ_rc p11_open(const p11_cfg *cfg, p11_ctx **out, writ_err *err);
/* Log out, close sessions, finalise, wipe the PIN copy. NULL is fine. */
void p11_close(p11_ctx *ctx);

/* Keys in the token with a "writ:" label prefix and both halves present.
 * *keys is an array of *n entries owned by the caller (p11_keys_free).
 * Never a partial list: a token with more than 1024 private keys
 * is WRIT_ERR_TOO_LARGE. */
WRIT_MUST_CHECK writ_rc p11_keys_list(p11_ctx *ctx, p11_key **keys, size_t *n, writ_err *err);
void p11_keys_free(p11_key *keys, size_t n);

/*
 * Generate a key pair inside the token for alg: P-256 (ES256), P-384
 * (ES384), RSA-3072 (RS256, PS256) or Ed25519 (EdDSA, when the token has
 * CKM_EC_EDWARDS_KEY_PAIR_GEN). The private key is CKA_TOKEN, CKA_PRIVATE,
 * CKA_SENSITIVE, not CKA_EXTRACTABLE, CKA_SIGN only. The pair shares a
 * random 16-byte CKA_ID; the label is "writ:<ALG>:<YYYYmmddTHHMMSSZ>".
 * Before it is returned, the private key found by its CKA_ID, with the
 * algorithm its label pins, must sign a probe that verifies under the
 * public key read back: in this view, and again after the module is
 * re-initialised (a module may keep its own copy of what it wrote; the
 * token's other users see what its store kept). A pair that fails is
 * destroyed and a new one made, P11_GEN_ATTEMPTS pairs at most.
 * On success *out is filled (caller frees out->pub via p11_keys_free(out, 1)
 * semantics: EVP_PKEY_free(out->pub)).
 */
WRIT_MUST_CHECK writ_rc p11_key_generate(p11_ctx *ctx, writ_alg alg, p11_key *out, writ_err *err);

/*
 * Sign msg with the private key whose CKA_ID is id, using alg's mechanism:
 * CKM_ECDSA over a local SHA-256/384 digest (SoftHSM has no
 * CKM_ECDSA_SHA256), CKM_SHA256_RSA_PKCS, CKM_SHA256_RSA_PKCS_PSS (MGF1
 * SHA-256, 32-byte salt) or CKM_EDDSA. The output is the JWS form: raw
 * r||s for ECDSA. sig holds P11_SIG_MAX bytes; *siglen is set on success
 * and is 0 on failure (no partial signature is ever left behind).
 * Thread-safe.
 */
WRIT_MUST_CHECK writ_rc p11_sign(p11_ctx *ctx, const unsigned char *id, size_t id_len, writ_alg alg,
                                 const unsigned char *msg, size_t msglen, unsigned char *sig,
                                 size_t *siglen, writ_err *err);

/* Destroy both objects of the key pair with CKA_ID id. */
WRIT_MUST_CHECK writ_rc p11_key_destroy(p11_ctx *ctx, const unsigned char *id, size_t id_len,
                                        writ_err *err);

/*
 * Does the token hold a private key object with CKA_ID id? Searched in
 * the token now (no cached handle). This, not absence from p11_keys_list,
 * is what "the key is gone" means: the list leaves out keys whose public
 * half is missing or unreadable, though their private key may still sign.
 * *present is 1 whenever the answer is not a certain no (on failure too).
 */
WRIT_MUST_CHECK writ_rc p11_key_present(p11_ctx *ctx, const unsigned char *id, size_t id_len,
                                        int *present, writ_err *err);

/* Does the token offer the mechanisms alg needs (generation and signing)? */
int p11_alg_supported(p11_ctx *ctx, writ_alg alg);

/* The raw module function list, for benchmarks and tests that compare
 * writ against bare C_Sign, and a session handle the caller must return
 * with p11_raw_session_put. NULL / -1 on failure. */
const void *p11_raw_functions(p11_ctx *ctx);
long p11_raw_session_get(p11_ctx *ctx);
void p11_raw_session_put(p11_ctx *ctx, long session);
/* The private key object handle for id in that session, or -1. */
long p11_raw_find_private(p11_ctx *ctx, long session, const unsigned char *id, size_t id_len);
/* How many times the module has been initialised for ctx: 1 after
 * p11_open, one more for every re-initialisation (fault recovery, first
 * call after fork). For tests and diagnostics. */
unsigned long p11_generation(p11_ctx *ctx);

/*
 * Development only (writ token init): initialise a fresh token labelled
 * `label` in the first uninitialised slot of the module, with the given SO
 * and user PINs. PINs are not copied or logged; the caller wipes them.
 */
WRIT_MUST_CHECK writ_rc p11_token_init(const char *module, const char *softhsm_conf,
                                       const char *label, const char *so_pin, const char *user_pin,
                                       writ_err *err);

/*
 * Read a PIN from a file: must be a regular file owned by the caller with
 * no group/other permission bits (else WRIT_ERR_PIN naming the mode), at
 * most P11_PIN_MAX bytes, one line (a trailing newline is dropped).
 * buf holds P11_PIN_MAX + 1 bytes; the caller wipes it.
 */
WRIT_MUST_CHECK writ_rc p11_pin_read_file(const char *path, char *buf, size_t *len, writ_err *err);

#endif
