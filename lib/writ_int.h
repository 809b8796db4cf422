/*
 * writ_int.h - libwrit internals shared by its own files and by writ's
 * issuer and CLI (which link the static library). Not installed: OpenSSL
 * and jansson types may appear here, never in include/writ/.
 */
#ifndef WRIT_INT_H
#define WRIT_INT_H

#include <jansson.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdint.h>
#include <time.h>

#include "writ/writ.h"

/* ---- errors ---- */

/* Fill err (if not NULL) and return rc. printf-style message. */
writ_rc writ_err_set(writ_err *err, writ_rc rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* As writ_err_set, appending the newest OpenSSL error reason. */
writ_rc writ_err_ossl(writ_err *err, writ_rc rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---- base64url (RFC 4648 s.5, no padding) ---- */

/* Encoded length for n input bytes, excluding the NUL. */
#define B64URL_LEN(n) (((n)*4 + 2) / 3)
/* Maximum decoded length for n encoded characters. */
#define B64URL_DECODED_MAX(n) (((n)*3) / 4)

/* Encode into out (B64URL_LEN(n) + 1 bytes); NUL-terminates; returns length. */
size_t b64url_encode(const unsigned char *in, size_t n, char *out);
/*
 * Strict decode: alphabet A-Z a-z 0-9 - _ only, no padding, no whitespace,
 * length mod 4 != 1, and the unused trailing bits must be zero, so every
 * byte string has exactly one accepted encoding. out must hold
 * B64URL_DECODED_MAX(n) bytes. Returns 0 and sets *outlen, or -1.
 */
int b64url_decode(const char *in, size_t n, unsigned char *out, size_t *outlen);
/* Encode into a malloc'd NUL-terminated string; NULL on allocation failure. */
char *b64url_encode_alloc(const unsigned char *in, size_t n);

/* ---- strict JSON on top of jansson ---- */

/* Parse an object: duplicate members refused, nothing after the value. */
json_t *wjson_parse_object(const char *buf, size_t len, const char *what, writ_err *err);
/* wjson_parse_object's fast path alone: the object, or NULL for "ask
 * jansson" (which may still accept). Exposed for tests and fuzzing. */
json_t *wjson_parse_fast(const char *buf, size_t len);
/* Integer claim as JWT NumericDate: integer (not real), 0 <= v <= 2^53. */
int wjson_numeric_date(const json_t *v, int64_t *out);
/* Compact, key-order-preserving serialisation; caller frees. */
char *wjson_dump(const json_t *v);

/*
 * An object written straight to text, member by member: what
 * wjson_dump(tree) would give for the same members, without the tree.
 *   wjson_w w; wjw_init(&w); wjw_str(&w, "iss", iss); wjw_open(&w, "grp", '[');
 *   wjw_str(&w, NULL, g); wjw_close(&w); s = wjw_finish(&w, &len);
 * Keys are given in objects and NULL in arrays. Errors (a string that is
 * not UTF-8, a key where none belongs, no memory) are kept until
 * wjw_finish, which then returns NULL and frees the buffer; otherwise the
 * NUL-terminated text is the caller's to free.
 */
/* 1 if s (n bytes) is UTF-8 as RFC 3629 has it (what jansson and the
 * writer take), 0 if not. */
int writ_utf8_valid(const char *s, size_t n);
#define WJW_DEPTH 8
typedef struct wjson_w {
	char *p;
	size_t len, cap;
	int err;
	unsigned depth, objects; /* bit d: depth d is an object, not an array */
	unsigned char first[WJW_DEPTH];
} wjson_w;
void wjw_init(wjson_w *w);
void wjw_str(wjson_w *w, const char *key, const char *val);
/* wjw_str for a message that may quote outside input cut at a byte count:
 * bytes that are not UTF-8 are written as U+FFFD instead of failing. */
void wjw_text(wjson_w *w, const char *key, const char *val);
void wjw_int(wjson_w *w, const char *key, int64_t v);
/* A value that is JSON text already (from wjson_dump or wjw_finish). */
void wjw_raw(wjson_w *w, const char *key, const char *json);
void wjw_open(wjson_w *w, const char *key, char kind); /* '{' or '[' */
void wjw_close(wjson_w *w);
char *wjw_finish(wjson_w *w, size_t *len);
void wjw_discard(wjson_w *w);
/* Write v (key NULL in an array) through the writer: for tests and
 * fuzzing, which compare the text with json_dumps'. -1 if v holds what
 * the writer has no call for (reals, true, false, null, NUL in a string,
 * a key that is not UTF-8, nesting past WJW_DEPTH). */
int wjw_tree(wjson_w *w, const char *key, const json_t *v);

/* ---- digests (digest.c): SHA256()/SHA384() without a per-call fetch ---- */

void writ_sha256(const void *in, size_t n, unsigned char out[32]);
void writ_sha384(const void *in, size_t n, unsigned char out[48]);

/* ---- keys ---- */

struct writ_jwk {
	writ_alg alg;
	char kid[WRIT_KID_MAX + 1];
	EVP_PKEY *pkey;
	size_t sig_len; /* exact JWS signature length */
	/* A verify context with the algorithm's digest and padding already
	 * set, duplicated per verification (cheaper than a fresh init); NULL
	 * for EdDSA, which only has a one-shot interface. */
	EVP_PKEY_CTX *vtmpl;
};

/* Build jwk->vtmpl for its alg (sig.c). */
writ_rc writ_sig_template(writ_jwk *jwk, writ_err *err);

/* Wrap a public EVP_PKEY (reference taken, caller keeps its own) as a JWK
 * for alg, checking the key fits the algorithm. kid = thumbprint. */
writ_rc writ_jwk_from_pkey(EVP_PKEY *pkey, writ_alg alg, writ_jwk **out, writ_err *err);
/* The JWK's JSON object (public members, kid, alg, use). New reference. */
json_t *writ_jwk_to_jansson(const writ_jwk *jwk);
/* Check the key fits alg; sets *sig_len. */
writ_rc writ_pkey_check_alg(EVP_PKEY *pkey, writ_alg alg, size_t *sig_len, writ_err *err);

/* Verify a JWS signature (RFC 7518 form: raw r||s for ECDSA) over msg. */
writ_rc writ_sig_verify(const writ_jwk *jwk, const unsigned char *msg, size_t msglen,
                        const unsigned char *sig, size_t siglen, writ_err *err);

/* ---- compact JWS ---- */

/* Parsed, not yet verified, compact JWS. Owns everything it points to. */
typedef struct writ_jws {
	json_t *header;
	json_t *payload;
	const char *alg_name;     /* borrowed from header */
	const char *kid;          /* borrowed from header, may be NULL */
	const char *typ;          /* borrowed from header, may be NULL */
	size_t signing_input_len; /* bytes of "<h>.<p>" at the token's start */
	unsigned char *sig;
	size_t sig_len;
} writ_jws;

/* Strict parse of a compact JWS (structure, base64url, JSON, header
 * members). Does not verify. */
writ_rc writ_jws_parse(const char *token, size_t len, writ_jws *out, writ_err *err);
/* writ_jws_parse for a caller that has parsed and checked this exact
 * header segment (the bytes before the first '.') before: the header is
 * not decoded again, and header, alg_name, kid and typ stay NULL. The rest
 * (three non-empty segments, canonical base64url, the claims object, the
 * signature) is checked as by writ_jws_parse. */
writ_rc writ_jws_parse_body(const char *token, size_t len, writ_jws *out, writ_err *err);
void writ_jws_clear(writ_jws *jws);

/* Verify a parsed JWS with one given key: pinned alg, typ, signature, then
 * claims. token is the string j was parsed from. */
writ_rc writ_verify_jws(const writ_jwk *key, const writ_jws *j, const char *token,
                        const writ_verify_opts *opts, writ_err *err);

/* Claims of a verified token: a new object (one reference) holding a
 * reference to payload, or NULL on allocation failure. */
writ_claims *writ_claims_new(json_t *payload, const writ_jwk *key);
/* Another reference to c (writ_claims_free drops one). Thread-safe. */
writ_claims *writ_claims_ref(const writ_claims *c);
/* The verified payload; borrowed from c. */
const json_t *writ_claims_payload(const writ_claims *c);

/* Check the registered claims of a verified payload against opts. */
writ_rc writ_claims_check(const json_t *payload, const writ_verify_opts *opts, writ_err *err);

/*
 * Build "<b64url(header)>.<b64url(payload)>" for signing. Returns a
 * malloc'd string (caller frees) and its length, or NULL.
 */
char *writ_jws_signing_input(const json_t *header, const json_t *payload, size_t *len);
/* The same over header and payload already written as JSON text. */
char *writ_jws_signing_input_text(const char *header, size_t hl, const char *payload, size_t pl,
                                  size_t *len);

/*
 * url (named `what` in messages) is https://, or http:// to a loopback
 * host (127.0.0.0/8, [::1], localhost), or allow_http is set: plain http
 * elsewhere lets anyone on the path read the credentials sent or swap the
 * keys fetched. Parsed by libcurl's URL parser, the one that fetches it.
 * WRIT_ERR_CONFIG naming the problem otherwise.
 */
writ_rc writ_url_check(const char *url, const char *what, int allow_http, writ_err *err);

/* CLOCK_MONOTONIC in nanoseconds: intervals and deadlines, never dates. */
static inline int64_t writ_mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

#endif
