/* err.c - writ_rc names and the optional error detail. */
#include <openssl/err.h>
#include <stdio.h>
#include <string.h>

#include "writ_int.h"

static const char *const rc_names[WRIT_ERR__COUNT] = {
    [WRIT_OK] = "success",
    [WRIT_ERR_NOMEM] = "out of memory",
    [WRIT_ERR_ARG] = "invalid argument",
    [WRIT_ERR_TOO_LARGE] = "input too large",
    [WRIT_ERR_MALFORMED] = "malformed input",
    [WRIT_ERR_HEADER] = "forbidden or invalid JOSE header",
    [WRIT_ERR_ALG] = "algorithm not allowed",
    [WRIT_ERR_TYP] = "wrong token type",
    [WRIT_ERR_UNKNOWN_KID] = "unknown key id",
    [WRIT_ERR_SIGNATURE] = "bad signature",
    [WRIT_ERR_CLAIM] = "invalid claim",
    [WRIT_ERR_EXPIRED] = "token expired",
    [WRIT_ERR_NOT_YET_VALID] = "token not yet valid",
    [WRIT_ERR_ISS] = "wrong issuer",
    [WRIT_ERR_AUD] = "wrong audience",
    [WRIT_ERR_TTL] = "token lifetime above the cap",
    [WRIT_ERR_JWK] = "invalid JWK",
    [WRIT_ERR_CONFIG] = "configuration error",
    [WRIT_ERR_IO] = "I/O error",
    [WRIT_ERR_PIN] = "PIN error",
    [WRIT_ERR_HSM] = "HSM error",
    [WRIT_ERR_NOT_FOUND] = "not found",
    [WRIT_ERR_CRYPTO] = "crypto library error",
    [WRIT_ERR_UNAVAILABLE] = "temporarily unavailable",
    [WRIT_ERR_SCOPE] = "action not granted",
    [WRIT_ERR_RATE_LIMITED] = "rate limited",
};

const char *writ_strerror(writ_rc rc)
{
	if ((unsigned)rc >= WRIT_ERR__COUNT || rc_names[rc] == NULL)
		return "unknown error";
	return rc_names[rc];
}

/* format(printf, 3, 0): lets -Wformat=2 (clang's -Wformat-nonliteral) see fmt
 * is checked at the callers. */
__attribute__((format(printf, 3, 0))) static void err_vset(writ_err *err, writ_rc rc,
                                                           const char *fmt, va_list ap)
{
	err->rc = rc;
	err->lib_code = 0;
	vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
}

writ_rc writ_err_set(writ_err *err, writ_rc rc, const char *fmt, ...)
{
	va_list ap;

	if (err == NULL)
		return rc;
	va_start(ap, fmt);
	err_vset(err, rc, fmt, ap);
	va_end(ap);
	return rc;
}

writ_rc writ_err_ossl(writ_err *err, writ_rc rc, const char *fmt, ...)
{
	unsigned long e = ERR_peek_last_error();
	va_list ap;
	size_t n;

	if (err == NULL) {
		ERR_clear_error();
		return rc;
	}
	va_start(ap, fmt);
	err_vset(err, rc, fmt, ap);
	va_end(ap);
	if (e != 0) {
		const char *reason = ERR_reason_error_string(e);
		n = strlen(err->msg);
		snprintf(err->msg + n, sizeof(err->msg) - n, " (%s)",
		         reason != NULL ? reason : "openssl error");
		err->lib_code = e;
	}
	ERR_clear_error();
	return rc;
}
