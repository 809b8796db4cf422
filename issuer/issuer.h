/*
 * issuer.h - the issuer daemon's shared state and the pieces of the
 * request path (DESIGN.md): form -> attest -> policy -> rate limit ->
 * mint -> audit -> respond. Each step is a plain call with a small struct.
 */
#ifndef WRIT_ISSUER_H
#define WRIT_ISSUER_H

#include <pthread.h>
#include <stdatomic.h>

#include "audit.h"
#include "config.h"
#include "http.h"
#include "keyring.h"
#include "keyset.h"
#include "policy.h"
#include "ratelimit.h"
#include "store.h"

typedef struct issuer {
	writ_config cfg;
	p11_ctx *p11;
	keyset_slot keys; /* signing key, JWKS, discovery: take a reference */
	/* The store no longer lists keys' signing key as active, and the set
	 * could not be rebuilt (HSM trouble): keep publishing, stop signing. */
	atomic_int signing_stale;
	/* Held while the key set is rebuilt from the store: by the tick, and
	 * by a request that sees the keys change (issuer_keys_refresh). */
	pthread_mutex_t keys_mu;
	uint64_t keys_gen; /* store_keys_generation of keys (under keys_mu) */
	/* Pending keys this process has served (main thread only): one that
	 * shows up later is held for the whole pending window (store_sk_hold). */
	char (*served_pending)[WRIT_KID_MAX + 1]; /* nserved_pending of them */
	/* Scheduled rotation's key generation (keygen_main in main.c): a
	 * thread of its own, so the key tick never waits on an RSA key. */
	pthread_t keygen;
	pthread_mutex_t keygen_mu;
	pthread_cond_t keygen_cv;
	int keygen_started, keygen_stop;
	size_t nserved_pending;
	policy_slot policy;
	ratelimit *rl;
	audit_log *audit;
	pthread_key_t store_key; /* one SQLite connection per worker thread */
	atomic_int hsm_ok;
	int64_t started;
} issuer;

/* The calling thread's store connection (opened on first use), or NULL
 * with err set when the database cannot be opened. */
store *issuer_store(issuer *is, writ_err *err);
/* Move the CLI's pending audit records (the store's outbox) into the
 * audit log now, waiting up to wait_ms for another mover (the tick, a
 * request thread, another issuer) to finish first. Called by a request
 * that sees the agents change, so the change's records precede the
 * decision it leads to. Any thread. */
void issuer_outbox_move(issuer *is, int wait_ms);
/* Rebuild the key set now if the store's signing keys changed since it
 * was built (st: the calling thread's connection). Called by a request
 * that sees the keys' change signal move, or whose signing key the HSM no
 * longer holds: a key revoked (and destroyed) by the CLI is replaced
 * before the next token is signed, not at the next tick. Any thread. */
void issuer_keys_refresh(issuer *is, store *st);

/* The outcome of checking an agent's assertion (SPEC s.5). */
typedef struct attest_result {
	store_agent agent;
	char key_kid[WRIT_KID_MAX + 1]; /* thumbprint of the agent key used */
	char jti[STORE_JTI_MAX + 1];
	int64_t exp;
} attest_result;

/* Why an assertion was refused: an OAuth error, a public description that
 * names no key material, and an audit reason. */
typedef struct refusal {
	int status;
	const char *error; /* "invalid_grant", "temporarily_unavailable" */
	const char *desc;  /* for the client */
	const char *event; /* audit event */
	char detail[256];  /* for the audit log only */
} refusal;

/* Start attestation's shared parts (the replay cache writer) before the
 * first request; stop them after the last. */
WRIT_MUST_CHECK writ_rc attest_init(issuer *is, writ_err *err);
void attest_shutdown(void);

/* Verify the assertion; on failure fill *why and return non-zero. out's
 * agent is the caller's to clear (store_agent_clear) in both cases. */
int attest_check(issuer *is, store *st, const char *assertion, attest_result *out, refusal *why);

/* POST /token. */
void exchange_handle(issuer *is, const http_req *req, http_resp *resp);

/* Everything else: discovery, JWKS, health, metrics, 404/405. */
void routes_handle(void *arg, const http_req *req, http_resp *resp);

/* Sign an audit checkpoint with the issuer's signing key (audit_sign_fn). */
writ_rc issuer_audit_sign(void *arg, const unsigned char *msg, size_t len,
                          char kid[WRIT_KID_MAX + 1], writ_alg *alg, unsigned char *sig,
                          size_t *siglen, writ_err *err);

/* Set resp to an RFC 6749 s.5.2 error document. */
void resp_error(http_resp *resp, int status, const char *error, const char *desc);

#endif
