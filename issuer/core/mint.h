/*
 * mint.h - writ access tokens (SPEC s.3, RFC 9068 profile).
 */
#ifndef WRIT_MINT_H
#define WRIT_MINT_H

#include <jansson.h>
#include <stdint.h>

#include "keyring.h"

#define MINT_JTI_LEN   22   /* 128 bits, base64url, no padding */
#define MINT_CLAIM_MAX 1024 /* bytes of iss, sub, aud and scope */

typedef struct mint_req {
	const char *iss;   /* issuer URL */
	const char *sub;   /* agent id; also client_id */
	const char *aud;   /* exactly one target service */
	const char *scope; /* space-separated actions granted */
	unsigned ttl;      /* seconds, 1..WRIT_TTL_HARD_CAP */
	int64_t now;       /* 0: time(NULL) */
	/* Optional claims after the registered ones: "grp" when ngroups > 0,
	 * and "lim", a JSON object's text (policy_decision_lim_json). */
	const char *const *groups;
	size_t ngroups;
	const char *lim;
} mint_req;

typedef struct mint_out {
	char *token; /* malloc'd compact JWS; caller frees */
	char jti[MINT_JTI_LEN + 1];
	int64_t iat, exp;
} mint_out;

/* Build the claims and sign them in the HSM. On failure out->token is NULL. */
WRIT_MUST_CHECK writ_rc mint_token(p11_ctx *p11, const keyring_entry *key, const mint_req *req,
                                   mint_out *out, writ_err *err);

#endif
