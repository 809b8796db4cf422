/*
 * writ.h - the core of libwrit: error codes, algorithms, JWK sets and the
 * offline verifier for writ access tokens (RFC 9068 profile, SPEC s.3).
 *
 * Nothing from OpenSSL, jansson, libp11 or microhttpd appears here; every
 * handle is opaque. Unless a comment says otherwise a function is safe to
 * call from several threads at once on *different* objects, and read-only
 * functions (find, verify, getters) are safe on the *same* object.
 */
#ifndef WRIT_WRIT_H
#define WRIT_WRIT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define WRIT_MUST_CHECK __attribute__((warn_unused_result))
#define WRIT_EXPORT     __attribute__((visibility("default")))
#else
#define WRIT_MUST_CHECK
#define WRIT_EXPORT
#endif

/* One error type for the whole project. 0 is success. */
typedef enum writ_rc {
	WRIT_OK = 0,
	WRIT_ERR_NOMEM,         /* allocation failed */
	WRIT_ERR_ARG,           /* caller passed an invalid argument */
	WRIT_ERR_TOO_LARGE,     /* input over its size cap */
	WRIT_ERR_MALFORMED,     /* not a compact JWS / bad base64url / bad JSON */
	WRIT_ERR_HEADER,        /* forbidden or unexpected JOSE header */
	WRIT_ERR_ALG,           /* algorithm unsupported or not the key's */
	WRIT_ERR_TYP,           /* wrong "typ" */
	WRIT_ERR_UNKNOWN_KID,   /* no key with that kid */
	WRIT_ERR_SIGNATURE,     /* signature does not verify */
	WRIT_ERR_CLAIM,         /* a claim is missing or of the wrong type */
	WRIT_ERR_EXPIRED,       /* exp is in the past (beyond leeway) */
	WRIT_ERR_NOT_YET_VALID, /* nbf or iat is in the future */
	WRIT_ERR_ISS,           /* issuer does not match */
	WRIT_ERR_AUD,           /* audience does not match */
	WRIT_ERR_TTL,           /* exp - iat above the cap */
	WRIT_ERR_JWK,           /* a JWK or JWK Set is invalid */
	WRIT_ERR_CONFIG,        /* configuration error */
	WRIT_ERR_IO,            /* file or network I/O failed */
	WRIT_ERR_PIN,           /* PIN missing, unreadable or refused */
	WRIT_ERR_HSM,           /* the PKCS#11 token failed */
	WRIT_ERR_NOT_FOUND,     /* a named object does not exist */
	WRIT_ERR_CRYPTO,        /* the crypto library failed */
	WRIT_ERR_UNAVAILABLE,   /* a dependency is down: fail closed */
	WRIT_ERR_SCOPE,         /* valid token, action not granted */
	WRIT_ERR_RATE_LIMITED,  /* over a rate limit: retry later */
	WRIT_ERR__COUNT
} writ_rc;

/* Static English name of rc; never NULL. Thread-safe. */
WRIT_EXPORT const char *writ_strerror(writ_rc rc);

/*
 * Optional detail for a failure: the code, a one-line message naming the
 * problem (never key material, PINs or tokens), and the underlying PKCS#11
 * CK_RV or OpenSSL reason where there is one. Callers own the struct; pass
 * NULL where the detail is not wanted.
 */
typedef struct writ_err {
	writ_rc rc;
	unsigned long lib_code; /* CK_RV or OpenSSL error, 0 if none */
	char msg[256];
} writ_err;

/* Signature algorithms (RFC 7518, RFC 8037). One per key, fixed at creation. */
typedef enum writ_alg {
	WRIT_ALG_NONE = 0, /* never accepted: a sentinel */
	WRIT_ALG_ES256,
	WRIT_ALG_ES384,
	WRIT_ALG_RS256,
	WRIT_ALG_PS256,
	WRIT_ALG_EDDSA,
} writ_alg;

/* "ES256" ... ; NULL for WRIT_ALG_NONE or an out-of-range value. */
WRIT_EXPORT const char *writ_alg_name(writ_alg alg);
/* Exact, case-sensitive match of the JOSE name; WRIT_ALG_NONE if unknown. */
WRIT_EXPORT writ_alg writ_alg_from_name(const char *name);

/* ---- JWK and JWK Set (RFC 7517, RFC 7638) ------------------------------ */

typedef struct writ_jwk writ_jwk;
typedef struct writ_jwks writ_jwks;

/* Caps on outside input. A JWK Set larger than this is refused. */
#define WRIT_JWKS_MAX_BYTES (256 * 1024)
#define WRIT_JWKS_MAX_KEYS  64
#define WRIT_KID_MAX        128

/*
 * Parse one public JWK. The key must carry "kty" and "alg" (the algorithm
 * is pinned to the key), must be a public key ("d" and other private
 * members are refused), and must fit its algorithm (P-256 for ES256, RSA of
 * 2048..8192 bits for RS256/PS256, Ed25519 for EdDSA). "kid" is optional
 * here; when absent the RFC 7638 thumbprint is used. If "use" is present it
 * must be "sig". On success *out is owned by the caller (writ_jwk_free).
 */
WRIT_EXPORT WRIT_MUST_CHECK writ_rc writ_jwk_parse(const char *json, size_t len, writ_jwk **out,
                                                   writ_err *err);
WRIT_EXPORT void writ_jwk_free(writ_jwk *jwk);
/* Borrowed; valid until the key (or its set) is freed. */
WRIT_EXPORT const char *writ_jwk_kid(const writ_jwk *jwk);
WRIT_EXPORT writ_alg writ_jwk_alg(const writ_jwk *jwk);
/* RFC 7638 thumbprint (SHA-256, base64url) into buf of at least 44 bytes. */
WRIT_EXPORT WRIT_MUST_CHECK writ_rc writ_jwk_thumbprint(const writ_jwk *jwk, char *buf,
                                                        size_t buflen);
/* Public JWK as JSON (kty, members, kid, alg, use); caller frees with free(). */
WRIT_EXPORT char *writ_jwk_to_json(const writ_jwk *jwk);

/* Flags for writ_jwks_parse. */
#define WRIT_JWKS_KID_IS_THUMBPRINT 0x1u /* require kid == RFC 7638 thumbprint */

/*
 * Parse a JWK Set {"keys":[...]} once, so verification never re-parses key
 * material. Every key must pass writ_jwk_parse and carry a "kid" made of
 * base64url characters (no "/", "..", NUL); kids must be unique. A set with
 * no usable key is an error. *out is owned by the caller (writ_jwks_free).
 */
WRIT_EXPORT WRIT_MUST_CHECK writ_rc writ_jwks_parse(const char *json, size_t len, unsigned flags,
                                                    writ_jwks **out, writ_err *err);
WRIT_EXPORT void writ_jwks_free(writ_jwks *set);
WRIT_EXPORT size_t writ_jwks_count(const writ_jwks *set);
/* Borrowed; NULL if i is out of range or kid unknown. */
WRIT_EXPORT const writ_jwk *writ_jwks_get(const writ_jwks *set, size_t i);
WRIT_EXPORT const writ_jwk *writ_jwks_find(const writ_jwks *set, const char *kid);

/* ---- Verification -------------------------------------------------------- */

#define WRIT_TOKEN_MAX_BYTES (16 * 1024)
#define WRIT_LEEWAY_MAX      60
#define WRIT_TTL_HARD_CAP    3600

typedef struct writ_verify_opts {
	const char *iss;  /* required exact "iss"; NULL: not checked */
	const char *aud;  /* required exact "aud" (a string); NULL: not checked */
	const char *typ;  /* required "typ" (case-insensitive, "application/"
	                     prefix allowed); NULL: "typ" may be absent or "JWT" */
	int64_t now;      /* seconds since the epoch; 0 means time(NULL) */
	unsigned leeway;  /* clock skew allowed, at most WRIT_LEEWAY_MAX */
	unsigned max_ttl; /* cap on exp - iat; 0 (or anything above it) means
	                     WRIT_TTL_HARD_CAP */
	int require_sub;  /* non-zero: "sub" must be a non-empty string */
} writ_verify_opts;

typedef struct writ_claims writ_claims;

/*
 * Verify a compact JWS token against a JWK Set and check its claims.
 * Strict: exactly three base64url segments in canonical form (no padding,
 * no '+' '/', zero trailing bits); header and payload JSON objects without
 * duplicate members; header limited to alg, kid and typ (jku, x5u, jwk,
 * x5c, crit and every other member are refused); the key is chosen by kid
 * and the header alg must equal the key's pinned alg; ECDSA signatures are
 * exactly 2 * field size with 0 < r, s < n. exp and iat are required,
 * nbf optional; all three must be integers in [0, 2^53].
 *
 * On success *out (if out is not NULL) receives the claims, owned by the
 * caller (writ_claims_free). On failure *out is NULL and err (if given)
 * names the first problem found. Thread-safe for a shared set.
 */
WRIT_EXPORT WRIT_MUST_CHECK writ_rc writ_verify(const writ_jwks *set, const char *token, size_t len,
                                                const writ_verify_opts *opts, writ_claims **out,
                                                writ_err *err);

WRIT_EXPORT void writ_claims_free(writ_claims *c);
/* The verified payload, re-serialised compactly; caller frees with free(). */
WRIT_EXPORT char *writ_claims_json(const writ_claims *c);
/* Borrowed string claim, NULL if absent or not a string. */
WRIT_EXPORT const char *writ_claims_string(const writ_claims *c, const char *name);
/* Integer claim; WRIT_ERR_CLAIM if absent or not an integer. */
WRIT_EXPORT WRIT_MUST_CHECK writ_rc writ_claims_int(const writ_claims *c, const char *name,
                                                    int64_t *v);
/* The kid of the key that verified the token; borrowed from the claims. */
WRIT_EXPORT const char *writ_claims_kid(const writ_claims *c);
WRIT_EXPORT writ_alg writ_claims_alg(const writ_claims *c);

#ifdef __cplusplus
}
#endif
#endif /* WRIT_WRIT_H */
