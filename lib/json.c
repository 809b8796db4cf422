/*
 * json.c - the strict corner of jansson that writ uses for outside input.
 *
 * jansson already refuses trailing bytes, NUL inside strings and nesting
 * past its depth cap; JSON_REJECT_DUPLICATES adds the rule RFC 7515 s.5.2
 * and RFC 8725 s.3.6 ask for: a member named twice is an error, not "the
 * last one wins" (which lets two parsers disagree about one token).
 */
#include <string.h>

#include "writ_int.h"

json_t *wjson_parse_object(const char *buf, size_t len, const char *what, writ_err *err)
{
	json_error_t je;
	json_t *v = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &je);

	if (v == NULL) {
		writ_err_set(err, WRIT_ERR_MALFORMED, "%s: invalid JSON at byte %d: %s", what,
		             je.position, je.text);
		return NULL;
	}
	if (!json_is_object(v)) {
		json_decref(v);
		writ_err_set(err, WRIT_ERR_MALFORMED, "%s: not a JSON object", what);
		return NULL;
	}
	return v;
}

int wjson_numeric_date(const json_t *v, int64_t *out)
{
	json_int_t i;

	/* RFC 7519 allows fractional NumericDate; SPEC s.3 says integers, and
	 * a float compared against an int is where two verifiers disagree. */
	if (!json_is_integer(v))
		return -1;
	i = json_integer_value(v);
	if (i < 0 || i > ((json_int_t)1 << 53))
		return -1;
	*out = (int64_t)i;
	return 0;
}

char *wjson_dump(const json_t *v)
{
	return json_dumps(v, JSON_COMPACT | JSON_PRESERVE_ORDER);
}
