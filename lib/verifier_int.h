/*
 * verifier_int.h - the parts of libwrit's verifier (verifier.c) kept in
 * their own files: the JWK Set fetcher, the verified-token cache and the
 * per-(sub, aud) token buckets. Not installed.
 */
#ifndef WRIT_VERIFIER_INT_H
#define WRIT_VERIFIER_INT_H

#include <limits.h>
#include <stdint.h>

#include "writ/verifier.h"
#include "writ_int.h"

/* ---- JWK Set over HTTP(S) (jwks_fetch.c) ---- */

#define JWKS_ETAG_MAX          256
#define JWKS_MAX_AGE_CAP       86400 /* longest freshness an issuer can ask for */
#define JWKS_MAX_AGE_DEFAULT   300   /* no usable Cache-Control: max-age */
#define JWKS_CONNECT_TIMEOUT_S 5
#define JWKS_TIMEOUT_S         10
#define JWKS_AGE_NONE          UINT_MAX /* no Age field (yet) */

typedef struct jwks_response {
	long status; /* 200, 304, ... ; 0 if no HTTP answer */
	char *body;  /* 200 only: malloc'd, NUL-terminated; caller frees */
	size_t len;
	char etag[JWKS_ETAG_MAX + 1]; /* "" if none */
	/* Seconds it stays fresh from now: Cache-Control max-age (capped;
	 * default if absent) less the Age header's value. */
	unsigned max_age;
	unsigned age; /* the Age header (first one, first member); 0 if none */
} jwks_response;

/* Process-wide libcurl initialisation; idempotent and thread-safe. */
writ_rc jwks_fetch_init(writ_err *err);
/*
 * GET url (http or https only; redirects followed for https only, and
 * only to https), sending
 * If-None-Match: etag when etag is not empty. The body is capped at
 * WRIT_JWKS_MAX_BYTES. WRIT_OK means an HTTP answer arrived (any status);
 * WRIT_ERR_UNAVAILABLE means none did (DNS, connect, TLS, timeout),
 * WRIT_ERR_TOO_LARGE a body over the cap.
 */
writ_rc jwks_fetch(const char *url, const char *ca_file, const char *etag, jwks_response *r,
                   writ_err *err);
/* Parse the number of max-age=N from a Cache-Control value; -1 if absent.
 * no-store / no-cache count as 0. Exposed for tests. */
long jwks_parse_max_age(const char *cc);
/* The delta-seconds of an Age value (capped at JWKS_MAX_AGE_CAP); -1 if it
 * is not a non-negative integer. Exposed for tests. */
long jwks_parse_age(const char *v);

/* ---- verified-token cache (token_cache.c) ---- */

typedef struct tcache tcache;

/* A cache for at most entries tokens. NULL on allocation failure. */
tcache *tcache_new(size_t entries);
void tcache_free(tcache *tc);
/*
 * Claims of a cached token whose validity window still holds at now
 * (nbf/iat - leeway <= now < exp + leeway, the same as a fresh verify),
 * with a new reference for the caller; NULL otherwise. *hash receives the
 * token's hash, for tcache_put after a miss. Thread-safe.
 */
writ_claims *tcache_get(tcache *tc, const char *token, size_t len, int64_t now, uint64_t *hash);
/* Remember a token verified under key set generation gen (takes a new
 * reference to c); skipped if a newer generation was pruned in since.
 * hash is what tcache_get gave for these bytes. Evicts the stripe's
 * oldest when full. Thread-safe; allocation failure only skips caching. */
void tcache_put(tcache *tc, const char *token, size_t len, uint64_t hash, const writ_claims *c,
                int64_t not_before, int64_t not_after, uint64_t gen);
/* Make gen current and drop every entry whose key is not in set. */
void tcache_prune(tcache *tc, const writ_jwks *set, uint64_t gen);
size_t tcache_count(tcache *tc);

/* ---- token buckets per (sub, aud) (limits.c) ---- */

typedef struct limits limits;

limits *limits_new(size_t entries);
void limits_free(limits *l);
/*
 * Take one token from the bucket of (sub, aud) whose capacity and refill
 * rate come from lim ({"rps": N} and/or {"rpm": N}). now is monotonic
 * seconds. WRIT_OK, WRIT_ERR_RATE_LIMITED with *retry_after, or
 * WRIT_ERR_CLAIM for a "lim" that cannot be enforced. Thread-safe.
 */
writ_rc limits_take(limits *l, const char *sub, const char *aud, const json_t *lim, double now,
                    double *retry_after);

/* ---- verifier internals for tests ---- */

/* Pin the verifier's clock for claims (0: the real clock) and set the
 * leeway exactly (0 included, which writ_verifier_cfg maps to 30). */
void verifier_test_clock(writ_verifier *v, int64_t now, unsigned leeway);

#endif
