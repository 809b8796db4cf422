/*
 * mint.c - build and sign a writ access token.
 */
#include "mint.h"

#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "writ_int.h"

/* Reject empty, control-character or non-UTF-8 values before they
 * become claims. */
static int claim_ok(const char *s)
{
	size_t i;

	if (s == NULL || s[0] == '\0' || strlen(s) > MINT_CLAIM_MAX)
		return 0;
	for (i = 0; s[i] != '\0'; i++)
		if ((unsigned char)s[i] < 0x20)
			return 0;
	return writ_utf8_valid(s, i);
}

writ_rc mint_token(p11_ctx *p11, const keyring_entry *key, const mint_req *req, mint_out *out,
                   writ_err *err)
{
	unsigned char rnd[16];
	wjson_w w;
	size_t i, len;
	char *c;
	writ_rc rc;

	memset(out, 0, sizeof(*out));
	if (!claim_ok(req->iss) || !claim_ok(req->sub) || !claim_ok(req->aud) ||
	    !claim_ok(req->scope))
		return writ_err_set(err, WRIT_ERR_ARG,
		                    "iss, sub, aud and scope must be non-empty printable UTF-8 "
		                    "strings");
	if (req->ttl == 0 || req->ttl > WRIT_TTL_HARD_CAP)
		return writ_err_set(err, WRIT_ERR_ARG, "ttl must be 1..%d s", WRIT_TTL_HARD_CAP);
	if (RAND_bytes(rnd, sizeof(rnd)) != 1)
		return writ_err_ossl(err, WRIT_ERR_CRYPTO, "no randomness for jti");
	b64url_encode(rnd, sizeof(rnd), out->jti);
	out->iat = req->now != 0 ? req->now : (int64_t)time(NULL);
	out->exp = out->iat + req->ttl;
	/* Member order follows SPEC s.3's table so tokens read the same way. */
	wjw_init(&w);
	wjw_str(&w, "iss", req->iss);
	wjw_str(&w, "sub", req->sub);
	wjw_str(&w, "client_id", req->sub);
	wjw_str(&w, "aud", req->aud);
	wjw_str(&w, "scope", req->scope);
	wjw_int(&w, "iat", out->iat);
	wjw_int(&w, "nbf", out->iat);
	wjw_int(&w, "exp", out->exp);
	wjw_str(&w, "jti", out->jti);
	if (req->ngroups > 0) {
		wjw_open(&w, "grp", '[');
		for (i = 0; i < req->ngroups; i++)
			wjw_str(&w, NULL, req->groups[i]);
		wjw_close(&w);
	}
	if (req->lim != NULL)
		wjw_raw(&w, "lim", req->lim);
	/* The strings were checked above, the groups at registration and
	 * lim is the policy's own JSON: only memory can fail here. */
	c = wjw_finish(&w, &len);
	if (c == NULL)
		return writ_err_set(err, WRIT_ERR_NOMEM, "cannot write the claims");
	rc = keyring_sign_jws(p11, key, "at+jwt", c, len, &out->token, err);
	free(c);
	return rc;
}
