/*
 * verifier.h - libwrit's verifier for target services: verify writ access
 * tokens offline against the issuer's published JWK Set, decide whether a
 * token grants an action, and enforce the limits it carries.
 *
 * A target service creates one writ_verifier at start and shares it
 * between all its threads: every function here is thread-safe unless its
 * comment says otherwise. The verifier never calls the issuer per request;
 * it fetches the JWK Set (honouring Cache-Control max-age and ETag) when
 * its copy is stale, and at most once per refetch interval when a token
 * names an unknown kid.
 */
#ifndef WRIT_VERIFIER_H
#define WRIT_VERIFIER_H

#include <stddef.h>
#include <stdint.h>

#include "writ/writ.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct writ_verifier writ_verifier;

/* Where the JWK Set comes from: exactly one of url, file or bytes. */
/* Largest cache_entries a verifier takes: 16 Mi tokens. */
#define WRIT_CACHE_ENTRIES_MAX (16 * 1024 * 1024)

typedef struct writ_verifier_cfg {
	const char *issuer;     /* required: the exact "iss" of accepted tokens */
	const char *audience;   /* required: this service's name, the exact "aud" */
	const char *jwks_url;   /* http(s) URL of the issuer's JWK Set, or */
	const char *jwks_file;  /* a file holding a JWK Set, or */
	const char *jwks_bytes; /* a JWK Set in memory (copied) */
	size_t jwks_len;
	const char *ca_file;  /* optional CA bundle for https */
	unsigned leeway;      /* clock skew, s, <= WRIT_LEEWAY_MAX; 0 means 30 */
	unsigned max_ttl;     /* cap on exp - iat; 0 means WRIT_TTL_HARD_CAP */
	unsigned min_refresh; /* least seconds between two fetches; 0 means 30 */
	unsigned max_stale;   /* issuer unreachable: keep the last good set this
	                         long past its expiry, then fail closed; 0 means 300 */
	size_t cache_entries; /* verified-token cache size (rounded up to a multiple
	                         of 64); 0 means 10000; at most
	                         WRIT_CACHE_ENTRIES_MAX (else WRIT_ERR_ARG) */
	int allow_http;       /* jwks_url over plain http:// to a host that is not
	                         loopback (127.0.0.0/8, [::1], localhost): refused
	                         (WRIT_ERR_CONFIG) unless set, since whoever is on
	                         the path could hand the verifier their own keys.
	                         Set it only where something else encrypts and
	                         authenticates the hop (a service-mesh sidecar). */
} writ_verifier_cfg;

/*
 * Create a verifier. For a URL the first fetch happens here; failing it is
 * an error (WRIT_ERR_UNAVAILABLE), so a service does not start blind.
 * *out is the caller's (writ_verifier_free). Strings in cfg are copied.
 */
WRIT_EXPORT WRIT_MUST_CHECK writ_rc writ_verifier_new(const writ_verifier_cfg *cfg,
                                                      writ_verifier **out, writ_err *err);
/* Free; no other thread may be using v. NULL is fine. */
WRIT_EXPORT void writ_verifier_free(writ_verifier *v);

/*
 * Verify token (len bytes) for this issuer and audience: strict JWS,
 * kid from the key set, algorithm pinned to the key, typ at+jwt, iss, aud,
 * exp/nbf/iat with leeway, lifetime cap. A token verified before and not
 * yet expired is admitted from the cache by a hash lookup. On success *out
 * (if not NULL) receives the claims, owned by the caller (writ_claims_free).
 */
WRIT_EXPORT WRIT_MUST_CHECK writ_rc writ_verifier_verify(writ_verifier *v, const char *token,
                                                         size_t len, writ_claims **out,
                                                         writ_err *err);

/* Does the verified token grant `action` (an exact member of "scope"; an
 * action holding a space is never one)? */
WRIT_EXPORT int writ_claims_has_scope(const writ_claims *c, const char *action);

/*
 * Admit one request under the token's rate limits ("lim": "rps" and/or
 * "rpm", the stricter applies), counted per (sub, aud) with a token
 * bucket. Returns WRIT_OK, or WRIT_ERR_RATE_LIMITED with *retry_after
 * (seconds) when over the limit; WRIT_ERR_CLAIM when "lim" is not an
 * object or its rps/rpm is not a positive number (refused, not ignored).
 * A token without "lim", or whose "lim" names neither rps nor rpm, is
 * admitted: other names (e.g. {"rows": 100}) are the service's to read
 * from the claims and enforce.
 */
WRIT_EXPORT WRIT_MUST_CHECK writ_rc writ_verifier_admit(writ_verifier *v, const writ_claims *c,
                                                        double *retry_after);

/* One decision, for the service's own log: join it with the issuer's audit
 * by jti. Strings are borrowed for the duration of the callback. */
typedef struct writ_decision {
	const char *jti, *sub, *action; /* may be NULL when unknown */
	int allowed;
	writ_rc why; /* WRIT_OK when allowed */
} writ_decision;
typedef void (*writ_decision_fn)(void *arg, const writ_decision *d);

/* Set (or clear, with fn NULL) the decision callback. Not thread-safe:
 * call before sharing the verifier. */
WRIT_EXPORT void writ_verifier_on_decision(writ_verifier *v, writ_decision_fn fn, void *arg);

/*
 * The whole check a service makes per request: verify, then scope for
 * action (WRIT_ERR_SCOPE if not granted), then admit
 * (WRIT_ERR_RATE_LIMITED with *retry_after if over the limit). Reports the decision to the
 * callback. *out as for writ_verifier_verify.
 */
WRIT_EXPORT WRIT_MUST_CHECK writ_rc writ_verifier_check(writ_verifier *v, const char *token,
                                                        size_t len, const char *action,
                                                        writ_claims **out, double *retry_after,
                                                        writ_err *err);

/* Counters, for tests and the service's metrics. */
typedef struct writ_verifier_stats {
	uint64_t fetches;      /* JWK Set requests sent */
	uint64_t not_modified; /* of which answered 304 */
	uint64_t fetch_failures;
	uint64_t cache_hits;    /* tokens admitted from the verified-token cache */
	uint64_t verifications; /* full signature verifications */
	size_t keys;            /* keys in the current set */
} writ_verifier_stats;
WRIT_EXPORT void writ_verifier_get_stats(writ_verifier *v, writ_verifier_stats *st);

#ifdef __cplusplus
}
#endif
#endif /* WRIT_VERIFIER_H */
