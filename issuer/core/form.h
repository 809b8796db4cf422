/*
 * form.h - strict application/x-www-form-urlencoded bodies (the /token
 * request, RFC 6749 s.3.2 and appendix B).
 *
 * One accepted spelling per request: every pair is "name=value"; names are
 * [a-z0-9_]; '%' must start a valid two-hex-digit escape; decoded values
 * are printable ASCII (space allowed, no control bytes, no NUL, nothing
 * >= 0x7f); a parameter named twice is an error (RFC 6749 s.3.1: "MUST
 * NOT be included more than once"). An empty value counts as absent
 * (s.3.1) but still counts for repetition.
 */
#ifndef WRIT_FORM_H
#define WRIT_FORM_H

#include <stddef.h>

#include "writ/writ.h"

#define FORM_MAX_BYTES  (32 * 1024)
#define FORM_MAX_PARAMS 16

typedef struct form {
	size_t n;
	struct {
		const char *name, *value; /* point into buf */
	} p[FORM_MAX_PARAMS];
	char *buf; /* owned */
	size_t buflen;
} form;

/* Parse body into f (caller runs form_clear, also after failure). The
 * error message names the parameter or byte offset at fault. */
WRIT_MUST_CHECK writ_rc form_parse(const char *body, size_t len, form *f, writ_err *err);
/* The value of name, or NULL if absent or empty. Borrowed from f. */
const char *form_get(const form *f, const char *name);
/* Free the buffer; wipes it first, since it held an assertion. */
void form_clear(form *f);

#endif
