/*
 * json.c - the strict corner of jansson that writ uses for outside input.
 *
 * jansson already refuses trailing bytes, NUL inside strings and nesting
 * past its depth cap; JSON_REJECT_DUPLICATES adds the rule RFC 7515 s.5.2
 * and RFC 8725 s.3.6 ask for: a member named twice is an error, not "the
 * last one wins" (which lets two parsers disagree about one token).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "writ_int.h"

/*
 * A fast path for the plain JSON that tokens and key sets are made of. The
 * verifier parses every token's header and claims, and jansson's lexer
 * (one indirect call and a UTF-8 check per byte) costs as much as a tenth
 * of an ES256 verification; building the same tree directly is five times
 * cheaper. The fast path takes only a subset it can get exactly right:
 * objects, arrays, true/false/null, integers of up to 18 digits and
 * strings of printable ASCII without escapes, at most FAST_DEPTH deep.
 * Anything else (escapes, non-ASCII, reals, long integers, any syntax
 * error) makes it give up, and jansson parses the input from the start:
 * so the accepted inputs, the trees built and the error messages are
 * jansson's, and the fast path only decides how quickly they are reached.
 * tests/test_verifier.c and fuzz/fuzz_verify.c hold it to that.
 */
#define FAST_DEPTH   32
#define FAST_KEY_MAX 255

typedef struct fast {
	const char *p, *end;
	int depth;
} fast;

static void fast_ws(fast *f)
{
	while (f->p < f->end && (*f->p == ' ' || *f->p == '\t' || *f->p == '\n' || *f->p == '\r'))
		f->p++;
}

/* A string at f->p ('"'): *s, *n borrow its bytes from the input. */
static int fast_string(fast *f, const char **s, size_t *n)
{
	const char *q = ++f->p;

	/* 0x20..0x7f except '"' and '\\': valid UTF-8, no NUL, no escape. */
	while (q < f->end && *q != '"' && *q != '\\' && (unsigned char)*q >= 0x20 &&
	       (unsigned char)*q <= 0x7f)
		q++;
	if (q >= f->end || *q != '"')
		return -1;
	*s = f->p;
	*n = (size_t)(q - f->p);
	f->p = q + 1;
	return 0;
}

static json_t *fast_value(fast *f);

static json_t *fast_object(fast *f)
{
	json_t *o = json_object(), *v;
	char key[FAST_KEY_MAX + 1];
	const char *k;
	size_t n;

	f->p++;
	fast_ws(f);
	if (o != NULL && f->p < f->end && *f->p == '}') {
		f->p++;
		return o;
	}
	while (o != NULL) {
		if (f->p >= f->end || *f->p != '"' || fast_string(f, &k, &n) != 0 ||
		    n > FAST_KEY_MAX)
			break;
		memcpy(key, k, n);
		key[n] = '\0';
		fast_ws(f);
		if (f->p >= f->end || *f->p != ':')
			break;
		f->p++;
		/* JSON_REJECT_DUPLICATES: jansson reports the duplicate. */
		if (json_object_get(o, key) != NULL || (v = fast_value(f)) == NULL)
			break;
		if (json_object_set_new_nocheck(o, key, v) != 0)
			break;
		fast_ws(f);
		if (f->p < f->end && *f->p == ',') {
			f->p++;
			fast_ws(f);
			continue;
		}
		if (f->p < f->end && *f->p == '}') {
			f->p++;
			return o;
		}
		break;
	}
	json_decref(o);
	return NULL;
}

static json_t *fast_array(fast *f)
{
	json_t *a = json_array(), *v;

	f->p++;
	fast_ws(f);
	if (a != NULL && f->p < f->end && *f->p == ']') {
		f->p++;
		return a;
	}
	while (a != NULL) {
		if ((v = fast_value(f)) == NULL || json_array_append_new(a, v) != 0)
			break;
		fast_ws(f);
		if (f->p < f->end && *f->p == ',') {
			f->p++;
			continue;
		}
		if (f->p < f->end && *f->p == ']') {
			f->p++;
			return a;
		}
		break;
	}
	json_decref(a);
	return NULL;
}

/* -?(0|[1-9][0-9]*), at most 18 digits (no overflow), and not followed by
 * a fraction or exponent (a real: jansson's strtod decides). */
static json_t *fast_integer(fast *f)
{
	const char *q = f->p;
	int neg = 0, digits = 0;
	json_int_t v = 0;

	if (*q == '-') {
		neg = 1;
		q++;
	}
	if (q < f->end && *q == '0' && q + 1 < f->end && q[1] >= '0' && q[1] <= '9')
		return NULL;
	for (; q < f->end && *q >= '0' && *q <= '9'; q++) {
		if (++digits > 18)
			return NULL;
		v = v * 10 + (*q - '0');
	}
	if (digits == 0 || (q < f->end && (*q == '.' || *q == 'e' || *q == 'E')))
		return NULL;
	f->p = q;
	return json_integer(neg ? -v : v);
}

static int fast_word(fast *f, const char *w, size_t n)
{
	if ((size_t)(f->end - f->p) < n || memcmp(f->p, w, n) != 0)
		return -1;
	f->p += n;
	return 0;
}

static json_t *fast_value(fast *f)
{
	const char *s;
	size_t n;
	json_t *v = NULL;

	fast_ws(f);
	if (f->p >= f->end)
		return NULL;
	switch (*f->p) {
	case '"':
		if (fast_string(f, &s, &n) == 0)
			v = json_stringn_nocheck(s, n);
		break;
	case '{':
	case '[':
		if (++f->depth <= FAST_DEPTH)
			v = *f->p == '{' ? fast_object(f) : fast_array(f);
		f->depth--;
		break;
	case 't': v = fast_word(f, "true", 4) == 0 ? json_true() : NULL; break;
	case 'f': v = fast_word(f, "false", 5) == 0 ? json_false() : NULL; break;
	case 'n': v = fast_word(f, "null", 4) == 0 ? json_null() : NULL; break;
	default:
		if (*f->p == '-' || (*f->p >= '0' && *f->p <= '9'))
			v = fast_integer(f);
	}
	/* A literal must end where a token ends ("truex" is jansson's error). */
	if (v != NULL && f->p < f->end &&
	    ((*f->p >= 'a' && *f->p <= 'z') || (*f->p >= 'A' && *f->p <= 'Z') ||
	     (*f->p >= '0' && *f->p <= '9'))) {
		json_decref(v);
		v = NULL;
	}
	return v;
}

json_t *wjson_parse_fast(const char *buf, size_t len)
{
	fast f = {.p = buf, .end = buf + len};
	json_t *v;

	fast_ws(&f);
	if (f.p >= f.end || *f.p != '{' || (v = fast_value(&f)) == NULL)
		return NULL;
	fast_ws(&f);
	if (f.p != f.end) {
		json_decref(v);
		return NULL;
	}
	return v;
}

json_t *wjson_parse_object(const char *buf, size_t len, const char *what, writ_err *err)
{
	json_error_t je;
	json_t *v = wjson_parse_fast(buf, len);

	if (v != NULL)
		return v;
	v = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &je);
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

/*
 * The same for the other direction: wjson_dump's output is byte for byte
 * what json_dumps(v, JSON_COMPACT | JSON_PRESERVE_ORDER) gives, and only
 * how fast it gets there differs. jansson's dumper makes an indirect call
 * per piece and decodes every character as UTF-8; the trees writ dumps
 * for every token (its header and claims, the audit record, the response)
 * are small and ASCII, and this writes them in one pass, copying runs of
 * plain characters whole. A real, a non-ASCII byte or nesting past
 * FAST_DEPTH hands the whole value to jansson. The differential test in
 * tests/test_verifier.c and fuzz/fuzz_verify.c hold it to that.
 */
typedef struct dbuf {
	char *p;
	size_t len, cap;
} dbuf;

static int dput(dbuf *b, const char *s, size_t n)
{
	if (b->cap - b->len <= n) {
		size_t cap = b->cap * 2 > b->len + n + 1 ? b->cap * 2 : b->len + n + 1;
		char *np = malloc(cap);

		/* Not realloc: what is written may be a token, and the old
		 * buffer is wiped before it goes back to the heap. */
		if (np == NULL)
			return -1;
		memcpy(np, b->p, b->len);
		OPENSSL_cleanse(b->p, b->cap);
		free(b->p);
		b->p = np;
		b->cap = cap;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	return 0;
}

/* One character that JSON escapes, as jansson writes it: '"' and '\\'
 * escaped, control characters as \b \f \n \r \t or \u00XX. */
static int put_escape(dbuf *b, unsigned char c)
{
	static const char hex[] = "0123456789ABCDEF";
	char esc[6] = {'\\', 0};
	size_t el = 2;

	switch (c) {
	case '"': esc[1] = '"'; break;
	case '\\': esc[1] = '\\'; break;
	case '\b': esc[1] = 'b'; break;
	case '\f': esc[1] = 'f'; break;
	case '\n': esc[1] = 'n'; break;
	case '\r': esc[1] = 'r'; break;
	case '\t': esc[1] = 't'; break;
	default:
		memcpy(esc + 1, "u00", 3);
		esc[4] = hex[c >> 4];
		esc[5] = hex[c & 15];
		el = 6;
	}
	return dput(b, esc, el);
}

/* The characters of a JSON string, escaped, from s up to n bytes or the
 * first non-ASCII one (the caller's turn); *done is the bytes taken. -1
 * on no memory. Runs of plain characters are copied whole. */
static int put_ascii(dbuf *b, const char *s, size_t n, size_t *done)
{
	size_t i = 0, run = 0;
	unsigned char c;

	for (;;) {
		for (c = 0; i < n; i++) {
			c = (unsigned char)s[i];
			if (c - 0x20u >= 0x60u || c == '"' || c == '\\')
				break; /* not printable ASCII, or escaped */
		}
		if (dput(b, s + run, i - run) != 0)
			return -1;
		if (i == n || c >= 0x80) {
			*done = i;
			return 0;
		}
		if (put_escape(b, c) != 0)
			return -1;
		run = ++i;
	}
}

/* A JSON string of ASCII; -1 on non-ASCII (jansson's turn) or no memory. */
static int dump_str(dbuf *b, const char *s, size_t n)
{
	size_t done;

	return dput(b, "\"", 1) != 0 || put_ascii(b, s, n, &done) != 0 || done != n ||
	               dput(b, "\"", 1) != 0
	           ? -1
	           : 0;
}

static int dump_value(dbuf *b, const json_t *v, int depth)
{
	char num[32];
	size_t i;
	int n;

	switch (json_typeof(v)) {
	case JSON_OBJECT: {
		const char *k;
		void *it;

		if (depth >= FAST_DEPTH || dput(b, "{", 1) != 0)
			return -1;
		for (it = json_object_iter((json_t *)v), i = 0; it != NULL;
		     it = json_object_iter_next((json_t *)v, it), i++)
			if ((i > 0 && dput(b, ",", 1) != 0) ||
			    (k = json_object_iter_key(it)) == NULL ||
			    dump_str(b, k, json_object_iter_key_len(it)) != 0 ||
			    dput(b, ":", 1) != 0 ||
			    dump_value(b, json_object_iter_value(it), depth + 1) != 0)
				return -1;
		return dput(b, "}", 1);
	}
	case JSON_ARRAY:
		if (depth >= FAST_DEPTH || dput(b, "[", 1) != 0)
			return -1;
		for (i = 0; i < json_array_size(v); i++)
			if ((i > 0 && dput(b, ",", 1) != 0) ||
			    dump_value(b, json_array_get(v, i), depth + 1) != 0)
				return -1;
		return dput(b, "]", 1);
	case JSON_STRING: return dump_str(b, json_string_value(v), json_string_length(v));
	case JSON_INTEGER:
		n = snprintf(num, sizeof(num), "%" JSON_INTEGER_FORMAT, json_integer_value(v));
		return n > 0 && (size_t)n < sizeof(num) ? dput(b, num, (size_t)n) : -1;
	case JSON_TRUE: return dput(b, "true", 4);
	case JSON_FALSE: return dput(b, "false", 5);
	case JSON_NULL: return dput(b, "null", 4);
	default: return -1; /* a real: jansson's formatting */
	}
}

char *wjson_dump(const json_t *v)
{
	dbuf b = {malloc(512), 0, 512};

	/* jansson dumps only an object or array at the top (without
	 * JSON_ENCODE_ANY); anything else is its call, and so is its NULL. */
	if (b.p != NULL && (json_is_object(v) || json_is_array(v)) && dump_value(&b, v, 0) == 0 &&
	    dput(&b, "", 1) == 0)
		return b.p;
	free(b.p);
	return json_dumps(v, JSON_COMPACT | JSON_PRESERVE_ORDER);
}

/*
 * The writer (wjson_w): an object written straight to text, member by
 * member, for what the issuer builds on every request (token claims, the
 * response, the audit record). Building those as jansson trees and
 * dumping them cost ~8% of the issuer's CPU per token (three dozen
 * allocations each); this is one growing buffer. The text is what
 * json_dumps(JSON_COMPACT | JSON_PRESERVE_ORDER) writes for the same
 * members in the same order; tests/test_verifier.c and fuzz/fuzz_verify.c
 * compare the two. A string that is not UTF-8 (jansson refuses those
 * too), an unbalanced close or no memory makes wjw_finish fail.
 */

/* Length of the UTF-8 sequence at s (RFC 3629: no overlong forms, no
 * surrogates, nothing above U+10FFFF), or 0 if it is not one. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
	size_t len, i;
	unsigned cp;

	if (s[0] >= 0xc2 && s[0] <= 0xdf)
		len = 2, cp = s[0] & 0x1fu;
	else if (s[0] >= 0xe0 && s[0] <= 0xef)
		len = 3, cp = s[0] & 0x0fu;
	else if (s[0] >= 0xf0 && s[0] <= 0xf4)
		len = 4, cp = s[0] & 0x07u;
	else
		return 0;
	if (n < len)
		return 0;
	for (i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (s[i] & 0x3fu);
	}
	if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10ffff ||
	    (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return len;
}

int writ_utf8_valid(const char *s, size_t n)
{
	size_t i = 0, l;

	while (i < n) {
		if ((unsigned char)s[i] < 0x80) {
			i++;
			continue;
		}
		if ((l = utf8_seq((const unsigned char *)s + i, n - i)) == 0)
			return 0;
		i += l;
	}
	return 1;
}

/* A JSON string with any UTF-8 in it copied as it is (jansson's default
 * output). A byte that does not begin a UTF-8 sequence is -1, or with
 * lossy U+FFFD. */
static int put_str(dbuf *b, const char *s, size_t n, int lossy)
{
	size_t i = 0, done, l;

	if (dput(b, "\"", 1) != 0)
		return -1;
	for (;;) {
		if (put_ascii(b, s + i, n - i, &done) != 0)
			return -1;
		if ((i += done) == n)
			return dput(b, "\"", 1);
		l = utf8_seq((const unsigned char *)s + i, n - i);
		if ((l == 0 && !lossy) ||
		    (l > 0 ? dput(b, s + i, l) : dput(b, "\xef\xbf\xbd", 3)) != 0)
			return -1;
		i += l > 0 ? l : 1;
	}
}

void wjw_init(wjson_w *w)
{
	memset(w, 0, sizeof(*w));
	/* Room for a token response or an audit record, and small enough
	 * for glibc's per-thread cache (chunks up to 1032 bytes): a larger
	 * request takes the slow path, which may consolidate the heap. */
	w->p = malloc(1000);
	w->cap = w->p != NULL ? 1000 : 0;
	w->err = w->p == NULL;
	if (!w->err) {
		w->p[0] = '{';
		w->len = 1;
	}
	w->first[0] = 1;
	w->objects = 1; /* depth 0 is the object being written */
}

/* The separator and "key": before a value at the current depth. */
static void member(wjson_w *w, const char *key)
{
	dbuf b = {w->p, w->len, w->cap};
	int in_object = (w->objects >> w->depth) & 1u;

	if (w->err)
		return;
	/* A key in an array, or none in an object, is a caller's bug. */
	if ((key != NULL) != in_object || (!w->first[w->depth] && dput(&b, ",", 1) != 0) ||
	    (key != NULL && (put_str(&b, key, strlen(key), 0) != 0 || dput(&b, ":", 1) != 0)))
		w->err = 1;
	w->p = b.p, w->len = b.len, w->cap = b.cap;
	w->first[w->depth] = 0;
}

static void str_member(wjson_w *w, const char *key, const char *val, int lossy)
{
	dbuf b;

	member(w, key);
	b = (dbuf){w->p, w->len, w->cap};
	if (!w->err && (val == NULL || put_str(&b, val, strlen(val), lossy) != 0))
		w->err = 1;
	w->p = b.p, w->len = b.len, w->cap = b.cap;
}

void wjw_str(wjson_w *w, const char *key, const char *val)
{
	str_member(w, key, val, 0);
}

void wjw_text(wjson_w *w, const char *key, const char *val)
{
	str_member(w, key, val, 1);
}

void wjw_int(wjson_w *w, const char *key, int64_t v)
{
	char num[24];
	dbuf b;
	int n = snprintf(num, sizeof(num), "%" PRId64, v);

	member(w, key);
	b = (dbuf){w->p, w->len, w->cap};
	if (!w->err && dput(&b, num, (size_t)n) != 0)
		w->err = 1;
	w->p = b.p, w->len = b.len, w->cap = b.cap;
}

void wjw_raw(wjson_w *w, const char *key, const char *json)
{
	dbuf b;

	member(w, key);
	b = (dbuf){w->p, w->len, w->cap};
	if (!w->err && (json == NULL || dput(&b, json, strlen(json)) != 0))
		w->err = 1;
	w->p = b.p, w->len = b.len, w->cap = b.cap;
}

void wjw_open(wjson_w *w, const char *key, char kind)
{
	dbuf b;

	member(w, key);
	if (w->depth + 1 >= WJW_DEPTH || (kind != '{' && kind != '['))
		w->err = 1;
	if (w->err)
		return;
	b = (dbuf){w->p, w->len, w->cap};
	if (dput(&b, &kind, 1) != 0)
		w->err = 1;
	w->p = b.p, w->len = b.len, w->cap = b.cap;
	w->depth++;
	w->first[w->depth] = 1;
	if (kind == '{')
		w->objects |= 1u << w->depth;
	else
		w->objects &= ~(1u << w->depth);
}

void wjw_close(wjson_w *w)
{
	dbuf b = {w->p, w->len, w->cap};
	char c = (w->objects >> w->depth) & 1u ? '}' : ']';

	if (w->err || w->depth == 0 || dput(&b, &c, 1) != 0)
		w->err = 1;
	else
		w->depth--;
	w->p = b.p, w->len = b.len, w->cap = b.cap;
}

char *wjw_finish(wjson_w *w, size_t *len)
{
	dbuf b = {w->p, w->len, w->cap};
	char *s;

	if (w->err || w->depth != 0 || dput(&b, "}", 1) != 0 || dput(&b, "", 1) != 0) {
		wjw_discard(w);
		return NULL;
	}
	s = b.p;
	if (len != NULL)
		*len = b.len - 1;
	memset(w, 0, sizeof(*w));
	return s;
}

void wjw_discard(wjson_w *w)
{
	if (w->p != NULL)
		OPENSSL_cleanse(w->p, w->cap);
	free(w->p);
	memset(w, 0, sizeof(*w));
}

int wjw_tree(wjson_w *w, const char *key, const json_t *v)
{
	const char *k;
	size_t i;
	void *it;

	if ((json_is_object(v) || json_is_array(v)) && w->depth + 1 >= WJW_DEPTH)
		return -1; /* deeper than the writer goes */
	switch (json_typeof(v)) {
	case JSON_OBJECT:
		wjw_open(w, key, '{');
		for (it = json_object_iter((json_t *)v); it != NULL;
		     it = json_object_iter_next((json_t *)v, it)) {
			json_t *valid;

			/* A key that is not UTF-8 (only jansson's _nocheck calls
			 * make one) jansson dumps cut short: nothing to compare. */
			k = json_object_iter_key(it);
			if (strlen(k) != json_object_iter_key_len(it) ||
			    (valid = json_string(k)) == NULL)
				return -1;
			json_decref(valid);
			if (wjw_tree(w, k, json_object_iter_value(it)) != 0)
				return -1;
		}
		wjw_close(w);
		return 0;
	case JSON_ARRAY:
		wjw_open(w, key, '[');
		for (i = 0; i < json_array_size(v); i++)
			if (wjw_tree(w, NULL, json_array_get(v, i)) != 0)
				return -1;
		wjw_close(w);
		return 0;
	case JSON_STRING:
		if (strlen(json_string_value(v)) != json_string_length(v))
			return -1;
		wjw_str(w, key, json_string_value(v));
		return 0;
	case JSON_INTEGER: wjw_int(w, key, (int64_t)json_integer_value(v)); return 0;
	default: return -1;
	}
}
