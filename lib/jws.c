/*
 * jws.c - strict compact JWS serialisation (RFC 7515 s.7.1) for JWTs.
 *
 * One token has one accepted spelling: exactly three non-empty segments,
 * canonical base64url, JSON objects without duplicate members, and a
 * header that names nothing the verifier would have to fetch or obey
 * (RFC 8725 s.3.10: jku, x5u, jwk and x5c move the trust decision to the
 * attacker; crit would oblige us to understand extensions we do not).
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "writ_int.h"

#define HEADER_MAX 1024 /* decoded JOSE header */
#define SIG_MAX    1024 /* decoded signature: RSA-8192 */

/* The only header members writ accepts. */
static int header_member_allowed(const char *k)
{
	return strcmp(k, "alg") == 0 || strcmp(k, "kid") == 0 || strcmp(k, "typ") == 0;
}

/* An attacker-chosen member name may go into an error message only when it
 * is short and plain: no control characters for log injection. */
static const char *printable_name(const char *k)
{
	size_t i;

	for (i = 0; k[i] != '\0'; i++)
		if (i >= 24 || k[i] <= 0x20 || k[i] >= 0x7f || k[i] == '"' || k[i] == '\\')
			return "(unprintable)";
	return k;
}

#define PAYLOAD_STACK 2048 /* a typical token's claims: decoded without malloc */

/* Decode one segment into buf (at least B64URL_DECODED_MAX(n) + 1 bytes
 * when n passes the cap), or into a new malloc'd buffer when buf is NULL
 * or too small (then *out is the caller's to free, else *out == buf). */
static writ_rc seg_decode(const char *s, size_t n, size_t cap, const char *what, unsigned char *buf,
                          size_t bufsz, unsigned char **out, size_t *outlen, writ_err *err)
{
	*out = NULL;
	if (n == 0)
		return writ_err_set(err, WRIT_ERR_MALFORMED, "JWS %s segment is empty", what);
	if (B64URL_DECODED_MAX(n) > cap)
		return writ_err_set(err, WRIT_ERR_TOO_LARGE, "JWS %s is larger than %zu bytes",
		                    what, cap);
	if (buf == NULL || B64URL_DECODED_MAX(n) + 1 > bufsz)
		buf = malloc(B64URL_DECODED_MAX(n) + 1);
	if (buf == NULL)
		return writ_err_set(err, WRIT_ERR_NOMEM, "out of memory");
	*out = buf;
	if (b64url_decode(s, n, buf, outlen) != 0)
		return writ_err_set(err, WRIT_ERR_MALFORMED,
		                    "JWS %s is not canonical base64url (no padding, '+', '/' or "
		                    "stray bits)",
		                    what);
	return WRIT_OK;
}

static writ_rc header_check(writ_jws *j, writ_err *err)
{
	const char *k;
	json_t *v;

	json_object_foreach(j->header, k, v) {
		if (!header_member_allowed(k))
			return writ_err_set(err, WRIT_ERR_HEADER,
			                    "JOSE header \"%s\" refused (only alg, kid, typ)",
			                    printable_name(k));
	}
	v = json_object_get(j->header, "alg");
	if (!json_is_string(v))
		return writ_err_set(err, WRIT_ERR_HEADER, "JOSE header has no string \"alg\"");
	j->alg_name = json_string_value(v);
	if (strcasecmp(j->alg_name, "none") == 0)
		return writ_err_set(err, WRIT_ERR_ALG, "\"alg\":\"none\" refused");
	v = json_object_get(j->header, "kid");
	if (v != NULL) {
		if (!json_is_string(v))
			return writ_err_set(err, WRIT_ERR_HEADER, "JOSE \"kid\" is not a string");
		j->kid = json_string_value(v);
	}
	v = json_object_get(j->header, "typ");
	if (v != NULL) {
		if (!json_is_string(v))
			return writ_err_set(err, WRIT_ERR_HEADER, "JOSE \"typ\" is not a string");
		j->typ = json_string_value(v);
	}
	return WRIT_OK;
}

/* with_header 0: the caller vouches for the header segment (see
 * writ_jws_parse_body); everything else is checked alike. */
static writ_rc parse(const char *token, size_t len, int with_header, writ_jws *j, writ_err *err)
{
	/* Header and claims are only needed until jansson has them: decode
	 * them on the stack (the claims to the heap when unusually large). */
	unsigned char hbuf[HEADER_MAX + 1], pbuf[PAYLOAD_STACK];
	unsigned char *hb = NULL, *pb = NULL;
	const char *d1, *d2;
	size_t hl, pl;
	writ_rc rc;

	memset(j, 0, sizeof(*j));
	if (token == NULL)
		return writ_err_set(err, WRIT_ERR_ARG, "no token");
	if (len > WRIT_TOKEN_MAX_BYTES)
		return writ_err_set(err, WRIT_ERR_TOO_LARGE, "token larger than %d bytes",
		                    WRIT_TOKEN_MAX_BYTES);
	d1 = memchr(token, '.', len);
	d2 = d1 != NULL ? memchr(d1 + 1, '.', len - (size_t)(d1 + 1 - token)) : NULL;
	if (d2 == NULL)
		return writ_err_set(err, WRIT_ERR_MALFORMED,
		                    "not a compact JWS (want header.payload.signature)");
	if (memchr(d2 + 1, '.', len - (size_t)(d2 + 1 - token)) != NULL)
		return writ_err_set(err, WRIT_ERR_MALFORMED,
		                    "compact JWS has more than three segments (JWE or junk)");

	/* The vouched-for header was non-empty when it was parsed. */
	rc = !with_header
	         ? (d1 > token
	                ? WRIT_OK
	                : writ_err_set(err, WRIT_ERR_MALFORMED, "JWS header segment is empty"))
	         : seg_decode(token, (size_t)(d1 - token), HEADER_MAX, "header", hbuf, sizeof(hbuf),
	                      &hb, &hl, err);
	if (rc == WRIT_OK)
		rc = seg_decode(d1 + 1, (size_t)(d2 - d1 - 1), WRIT_TOKEN_MAX_BYTES, "payload",
		                pbuf, sizeof(pbuf), &pb, &pl, err);
	if (rc == WRIT_OK)
		rc = seg_decode(d2 + 1, len - (size_t)(d2 + 1 - token), SIG_MAX, "signature", NULL,
		                0, &j->sig, &j->sig_len, err);
	if (rc == WRIT_OK && with_header) {
		j->header = wjson_parse_object((const char *)hb, hl, "JOSE header", err);
		rc = j->header == NULL ? WRIT_ERR_MALFORMED : header_check(j, err);
	}
	if (rc != WRIT_OK)
		goto out;
	j->payload = wjson_parse_object((const char *)pb, pl, "JWT claims", err);
	if (j->payload == NULL) {
		rc = WRIT_ERR_MALFORMED;
		goto out;
	}
	j->signing_input_len = (size_t)(d2 - token);
out:
	if (hb != hbuf)
		free(hb);
	if (pb != pbuf)
		free(pb);
	if (rc != WRIT_OK)
		writ_jws_clear(j);
	return rc;
}

writ_rc writ_jws_parse(const char *token, size_t len, writ_jws *j, writ_err *err)
{
	return parse(token, len, 1, j, err);
}

writ_rc writ_jws_parse_body(const char *token, size_t len, writ_jws *j, writ_err *err)
{
	return parse(token, len, 0, j, err);
}

void writ_jws_clear(writ_jws *j)
{
	json_decref(j->header);
	json_decref(j->payload);
	free(j->sig);
	memset(j, 0, sizeof(*j));
}

char *writ_jws_signing_input_text(const char *header, size_t hl, const char *payload, size_t pl,
                                  size_t *len)
{
	char *out = malloc(B64URL_LEN(hl) + 1 + B64URL_LEN(pl) + 1);
	size_t o;

	if (out == NULL)
		return NULL;
	o = b64url_encode((const unsigned char *)header, hl, out);
	out[o++] = '.';
	o += b64url_encode((const unsigned char *)payload, pl, out + o);
	*len = o;
	return out;
}

char *writ_jws_signing_input(const json_t *header, const json_t *payload, size_t *len)
{
	char *h = wjson_dump(header), *p = wjson_dump(payload), *out = NULL;

	if (h != NULL && p != NULL)
		out = writ_jws_signing_input_text(h, strlen(h), p, strlen(p), len);
	free(h);
	free(p);
	return out;
}
