/*
 * form.c - strict x-www-form-urlencoded parsing (see form.h).
 *
 * microhttpd's post processor decodes leniently (a stray '%' passes
 * through) and says nothing of repeated names, so /token bodies are parsed
 * here: small, strict and fuzzed (fuzz/fuzz_form.c).
 */
#include "form.h"

#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>

#include "writ_int.h"

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Decode s[0..n) in place and NUL-terminate; the decoded length or -1. */
static long decode(char *s, size_t n)
{
	size_t i, o = 0;

	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '+') {
			c = ' ';
		} else if (c == '%') {
			int hi, lo;
			if (i + 2 >= n)
				return -1;
			hi = hexval(s[i + 1]);
			lo = hexval(s[i + 2]);
			if (hi < 0 || lo < 0)
				return -1;
			c = (unsigned char)(hi << 4 | lo);
			i += 2;
		}
		/* Decoded control bytes (CR, LF, NUL) would reach logs and the
		 * audit trail; nothing writ accepts needs them. */
		if (c < 0x20 || c >= 0x7f)
			return -1;
		s[o++] = (char)c;
	}
	s[o] = '\0';
	return (long)o;
}

static int name_ok(const char *s, size_t n)
{
	size_t i;

	if (n == 0 || n > 64)
		return 0;
	for (i = 0; i < n; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '_'))
			return 0;
	return 1;
}

writ_rc form_parse(const char *body, size_t len, form *f, writ_err *err)
{
	size_t pos = 0, i;

	memset(f, 0, sizeof(*f));
	if (len > FORM_MAX_BYTES)
		return writ_err_set(err, WRIT_ERR_TOO_LARGE, "request body larger than %d bytes",
		                    FORM_MAX_BYTES);
	if (len == 0)
		return writ_err_set(err, WRIT_ERR_MALFORMED, "empty request body");
	f->buf = malloc(len + 1);
	if (f->buf == NULL)
		return writ_err_set(err, WRIT_ERR_NOMEM, "out of memory");
	f->buflen = len + 1;
	memcpy(f->buf, body, len);
	f->buf[len] = '\0';
	while (pos <= len) {
		char *pair = f->buf + pos, *amp = memchr(pair, '&', len - pos), *eq;
		size_t plen = amp != NULL ? (size_t)(amp - pair) : len - pos;

		pair[plen] = '\0';
		eq = memchr(pair, '=', plen);
		if (eq == NULL || !name_ok(pair, (size_t)(eq - pair)))
			return writ_err_set(err, WRIT_ERR_MALFORMED,
			                    "malformed parameter at byte %zu (want name=value)",
			                    pos);
		*eq = '\0';
		if (decode(eq + 1, plen - (size_t)(eq + 1 - pair)) < 0)
			return writ_err_set(err, WRIT_ERR_MALFORMED,
			                    "parameter \"%s\": bad %%-escape or control character",
			                    pair);
		for (i = 0; i < f->n; i++)
			if (strcmp(f->p[i].name, pair) == 0)
				return writ_err_set(err, WRIT_ERR_MALFORMED,
				                    "parameter \"%s\" repeated", pair);
		if (f->n == FORM_MAX_PARAMS)
			return writ_err_set(err, WRIT_ERR_MALFORMED, "more than %d parameters",
			                    FORM_MAX_PARAMS);
		f->p[f->n].name = pair;
		f->p[f->n].value = eq + 1;
		f->n++;
		pos += plen + 1;
	}
	return WRIT_OK;
}

const char *form_get(const form *f, const char *name)
{
	size_t i;

	for (i = 0; i < f->n; i++)
		if (strcmp(f->p[i].name, name) == 0)
			return f->p[i].value[0] != '\0' ? f->p[i].value : NULL;
	return NULL;
}

void form_clear(form *f)
{
	if (f->buf != NULL) {
		/* The body held the agent's assertion: a bearer credential
		 * until it expires. */
		OPENSSL_cleanse(f->buf, f->buflen);
		free(f->buf);
	}
	memset(f, 0, sizeof(*f));
}
