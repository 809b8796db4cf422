/*
 * policy.c - loading the policy file (see policy.h): strict parse, caps,
 * hash for the audit log, reference counting, the issuer's slot.
 */
#include "policy.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "policy_int.h"
#include "writ_int.h"

/* Where a message is about: the file, and the rule when there is one. */
typedef struct where {
	const char *name;
	size_t idx;
	const char *id; /* NULL until the rule's id has been read */
} where;

/*
 * Copy s for a message, at most max bytes, with anything but printable
 * ASCII shown as '?': a field name from the file must not be able to
 * put a newline or a terminal escape into a log line.
 */
static const char *safe(const char *s, char *buf, size_t size, size_t max)
{
	size_t i;

	for (i = 0; s[i] != '\0' && i < max && i + 1 < size; i++)
		buf[i] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
	buf[i] = '\0';
	return buf;
}

static void one_line(char *msg)
{
	for (; *msg != '\0'; msg++)
		if ((unsigned char)*msg < 0x20 || *msg == 0x7f)
			*msg = '?';
}

static writ_rc rule_err(writ_err *err, const where *w, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static writ_rc rule_err(writ_err *err, const where *w, const char *fmt, ...)
{
	char msg[200];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (w->id != NULL)
		return writ_err_set(err, WRIT_ERR_CONFIG, "%s: rules[%zu] (id \"%s\"): %s", w->name,
		                    w->idx, w->id, msg);
	return writ_err_set(err, WRIT_ERR_CONFIG, "%s: rules[%zu]: %s", w->name, w->idx, msg);
}

static int valid_id(const char *s)
{
	size_t i;

	for (i = 0; s[i] != '\0'; i++) {
		unsigned char c = (unsigned char)s[i];

		if (i >= POLICY_ID_MAX)
			return 0;
		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		      c == '_' || c == '.' || c == ':' || c == '-'))
			return 0;
	}
	return i > 0;
}

static int valid_lim_name(const char *s)
{
	size_t i;

	for (i = 0; s[i] != '\0'; i++) {
		unsigned char c = (unsigned char)s[i];

		if (i >= POLICY_LIM_KEY_MAX)
			return 0;
		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		      c == '_'))
			return 0;
	}
	return i > 0;
}

/* Printable ASCII without space: patterns are compared with agent ids,
 * audiences and scope-tokens, none of which may hold a space. */
static int valid_pattern(const char *s, size_t len)
{
	size_t i;

	if (len == 0 || len > POLICY_PATTERN_MAX)
		return 0;
	for (i = 0; i < len; i++)
		if (s[i] <= 0x20 || s[i] >= 0x7f)
			return 0;
	return 1;
}

static writ_rc parse_patterns(const json_t *v, const char *field, int subject, const where *w,
                              policy_pattern **out, size_t *n, writ_err *err)
{
	size_t i, count;

	if (v == NULL)
		return rule_err(err, w, "missing field \"%s\"", field);
	if (!json_is_array(v) || json_array_size(v) == 0)
		return rule_err(err, w, "field \"%s\" must be a non-empty array of strings", field);
	count = json_array_size(v);
	if (count > POLICY_MAX_PATTERNS)
		return rule_err(err, w, "field \"%s\" has %zu patterns (at most %d)", field, count,
		                POLICY_MAX_PATTERNS);
	*out = calloc(count, sizeof(**out));
	if (*out == NULL)
		return writ_err_set(err, WRIT_ERR_NOMEM, "%s: out of memory", w->name);
	for (i = 0; i < count; i++) {
		const json_t *e = json_array_get(v, i);
		policy_pattern *pt = &(*out)[i];
		const char *s;

		if (!json_is_string(e) ||
		    !valid_pattern(json_string_value(e), json_string_length(e)))
			return rule_err(
			    err, w,
			    "%s[%zu] must be a string of 1..%d printable ASCII characters "
			    "without spaces",
			    field, i, POLICY_PATTERN_MAX);
		s = json_string_value(e);
		if (subject && strncmp(s, "group:", 6) == 0) {
			pt->group = 1;
			s += 6;
			if (*s == '\0')
				return rule_err(err, w, "%s[%zu]: \"group:\" needs a group name",
				                field, i);
		}
		pt->s = strdup(s);
		if (pt->s == NULL)
			return writ_err_set(err, WRIT_ERR_NOMEM, "%s: out of memory", w->name);
		*n = i + 1; /* so a later failure frees what was made */
		if (strcmp(s, "*") == 0)
			pt->kind = POLICY_PAT_ANY;
		else if (strpbrk(s, "*?[\\") != NULL)
			pt->kind = POLICY_PAT_GLOB;
		else
			pt->kind = POLICY_PAT_LITERAL;
	}
	return WRIT_OK;
}

static writ_rc parse_rate(const json_t *v, const where *w, policy_rule *r, writ_err *err)
{
	static const struct {
		const char *unit;
		unsigned seconds;
	} units[] = {{"sec", 1}, {"min", 60}, {"hour", 3600}};
	const char *s = json_string_value(v), *slash;
	unsigned long n = 0;
	size_t i, digits;

	if (s == NULL || (slash = strchr(s, '/')) == NULL)
		goto bad;
	digits = (size_t)(slash - s);
	/* Plain decimal only: no sign, no leading zero, no spaces, so "60/min"
	 * has one spelling. */
	if (digits == 0 || digits > 7 || s[0] == '0')
		goto bad;
	for (i = 0; i < digits; i++) {
		if (s[i] < '0' || s[i] > '9')
			goto bad;
		n = n * 10 + (unsigned long)(s[i] - '0');
	}
	if (n > POLICY_RATE_MAX)
		goto bad;
	for (i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		if (strcmp(slash + 1, units[i].unit) == 0) {
			r->rate_n = (unsigned)n;
			r->rate_period = units[i].seconds;
			return WRIT_OK;
		}
	}
bad:
	return rule_err(err, w,
	                "field \"rate\" must be \"N/sec\", \"N/min\" or \"N/hour\" with N in 1..%d",
	                POLICY_RATE_MAX);
}

static writ_rc parse_lim(policy *p, const json_t *v, const where *w, policy_rule *r, writ_err *err)
{
	const char *key;
	json_t *val;
	char sb[48];
	size_t k;

	if (!json_is_object(v))
		return rule_err(err, w, "field \"lim\" must be an object of integers");
	json_object_foreach((json_t *)v, key, val) {
		json_int_t n;

		if (!valid_lim_name(key))
			return rule_err(err, w, "lim: name \"%s\" must be 1..%d of [A-Za-z0-9_]",
			                safe(key, sb, sizeof(sb), 40), POLICY_LIM_KEY_MAX);
		n = json_is_integer(val) ? json_integer_value(val) : -1;
		if (n < 0 || n > POLICY_LIM_VALUE_MAX)
			return rule_err(err, w, "lim: \"%s\" must be an integer in 0..%d", key,
			                POLICY_LIM_VALUE_MAX);
		/* The rates the verifier library counts: 0 would make every
		 * token of the rule useless at the target, never "no limit". */
		if (n == 0 && (strcmp(key, "rps") == 0 || strcmp(key, "rpm") == 0))
			return rule_err(err, w,
			                "lim: \"%s\" must be an integer in 1..%d (a rate of 0 "
			                "would refuse every request at the target)",
			                key, POLICY_LIM_VALUE_MAX);
		for (k = 0; k < p->nlim_names; k++)
			if (strcmp(p->lim_names[k], key) == 0)
				break;
		/* The cap is policy-wide so a decision's fixed lim array always fits
		 * the union of its granting rules' names. */
		if (k == p->nlim_names) {
			if (k == POLICY_LIM_MAX)
				return rule_err(
				    err, w,
				    "lim: \"%s\" would make more than %d distinct lim names "
				    "in the policy",
				    key, POLICY_LIM_MAX);
			snprintf(p->lim_names[k], sizeof(p->lim_names[k]), "%s", key);
			p->nlim_names++;
		}
		r->lim_name[r->nlim] = (unsigned char)k;
		r->lim_value[r->nlim] = (unsigned)n;
		r->nlim++;
	}
	return WRIT_OK;
}

static const char *const rule_fields[] = {"id",  "effect", "subjects", "audiences",  "actions",
                                          "ttl", "rate",   "lim",      "description"};

static writ_rc parse_rule(policy *p, const json_t *o, where *w, policy_rule *r, writ_err *err)
{
	const json_t *id, *effect, *v;
	const char *key;
	json_t *val;
	char sb[48];
	size_t i;
	writ_rc rc;

	if (!json_is_object(o))
		return rule_err(err, w, "not an object");
	id = json_object_get(o, "id");
	if (id == NULL)
		return rule_err(err, w, "missing field \"id\"");
	if (!json_is_string(id) || !valid_id(json_string_value(id)))
		return rule_err(err, w, "field \"id\" must be 1..%d characters of [A-Za-z0-9_.:-]",
		                POLICY_ID_MAX);
	snprintf(r->id, sizeof(r->id), "%s", json_string_value(id));
	w->id = r->id;

	json_object_foreach((json_t *)o, key, val) {
		for (i = 0; i < sizeof(rule_fields) / sizeof(rule_fields[0]); i++)
			if (strcmp(key, rule_fields[i]) == 0)
				break;
		if (i == sizeof(rule_fields) / sizeof(rule_fields[0]))
			return rule_err(err, w, "unknown field \"%s\"",
			                safe(key, sb, sizeof(sb), 40));
	}

	effect = json_object_get(o, "effect");
	if (effect == NULL)
		return rule_err(err, w, "missing field \"effect\"");
	if (json_is_string(effect) && strcmp(json_string_value(effect), "deny") == 0)
		r->deny = 1;
	else if (!json_is_string(effect) || strcmp(json_string_value(effect), "allow") != 0)
		return rule_err(err, w, "field \"effect\" must be \"allow\" or \"deny\"");

	rc = parse_patterns(json_object_get(o, "subjects"), "subjects", 1, w, &r->subj, &r->nsubj,
	                    err);
	if (rc == WRIT_OK)
		rc = parse_patterns(json_object_get(o, "audiences"), "audiences", 0, w, &r->aud,
		                    &r->naud, err);
	if (rc == WRIT_OK)
		rc = parse_patterns(json_object_get(o, "actions"), "actions", 0, w, &r->act,
		                    &r->nact, err);
	if (rc != WRIT_OK)
		return rc;

	/* A deny rule takes actions away; a lifetime, a rate or limits on it
	 * would mean nothing, and a reader might think they do. */
	if ((v = json_object_get(o, "ttl")) != NULL) {
		json_int_t t = json_is_integer(v) ? json_integer_value(v) : 0;

		if (r->deny)
			return rule_err(err, w, "field \"ttl\" is only allowed on allow rules");
		if (t < 1 || t > POLICY_TTL_MAX)
			return rule_err(err, w, "field \"ttl\" must be an integer in 1..%d",
			                POLICY_TTL_MAX);
		r->ttl = (unsigned)t;
	}
	if ((v = json_object_get(o, "rate")) != NULL) {
		if (r->deny)
			return rule_err(err, w, "field \"rate\" is only allowed on allow rules");
		rc = parse_rate(v, w, r, err);
		if (rc != WRIT_OK)
			return rc;
	}
	if ((v = json_object_get(o, "lim")) != NULL) {
		if (r->deny)
			return rule_err(err, w, "field \"lim\" is only allowed on allow rules");
		rc = parse_lim(p, v, w, r, err);
		if (rc != WRIT_OK)
			return rc;
	}
	if ((v = json_object_get(o, "description")) != NULL) {
		const char *d = json_string_value(v);

		/* explain prints it: no control characters to rewrite a terminal */
		if (d == NULL || json_string_length(v) > POLICY_DESCRIPTION_MAX)
			goto bad_description;
		for (i = 0; d[i] != '\0'; i++)
			if ((unsigned char)d[i] < 0x20 || d[i] == 0x7f)
				goto bad_description;
		r->description = strdup(d);
		if (r->description == NULL)
			return writ_err_set(err, WRIT_ERR_NOMEM, "%s: out of memory", w->name);
	}
	return WRIT_OK;
bad_description:
	return rule_err(err, w,
	                "field \"description\" must be a string of at most %d bytes without "
	                "control characters",
	                POLICY_DESCRIPTION_MAX);
}

static void rule_clear(policy_rule *r)
{
	size_t i;

	for (i = 0; i < r->nsubj; i++)
		free(r->subj[i].s);
	for (i = 0; i < r->naud; i++)
		free(r->aud[i].s);
	for (i = 0; i < r->nact; i++)
		free(r->act[i].s);
	free(r->subj);
	free(r->aud);
	free(r->act);
	free(r->description);
}

static void policy_destroy(policy *p)
{
	size_t i;

	if (p == NULL)
		return;
	for (i = 0; i < p->nrules; i++)
		rule_clear(&p->rules[i]);
	free(p->rules);
	free(p->order);
	free(p->name);
	free(p);
}

static writ_rc parse_top(policy *p, const json_t *root, const json_t **rules, writ_err *err)
{
	const json_t *v;
	const char *key;
	json_t *val;
	char sb[48];

	json_object_foreach((json_t *)root, key, val) {
		if (strcmp(key, "version") != 0 && strcmp(key, "rules") != 0 &&
		    strcmp(key, "description") != 0)
			return writ_err_set(err, WRIT_ERR_CONFIG,
			                    "%s: unknown top-level field \"%s\" (version, rules, "
			                    "description)",
			                    p->name, safe(key, sb, sizeof(sb), 40));
	}
	v = json_object_get(root, "version");
	if (v == NULL)
		return writ_err_set(err, WRIT_ERR_CONFIG,
		                    "%s: missing field \"version\" (must be 1)", p->name);
	if (!json_is_integer(v) || json_integer_value(v) != 1)
		return writ_err_set(err, WRIT_ERR_CONFIG,
		                    "%s: unsupported \"version\" (this writ reads version 1)",
		                    p->name);
	v = json_object_get(root, "description");
	if (v != NULL && !json_is_string(v))
		return writ_err_set(err, WRIT_ERR_CONFIG, "%s: \"description\" must be a string",
		                    p->name);
	v = json_object_get(root, "rules");
	if (v == NULL)
		return writ_err_set(err, WRIT_ERR_CONFIG, "%s: missing field \"rules\"", p->name);
	if (!json_is_array(v))
		return writ_err_set(err, WRIT_ERR_CONFIG, "%s: \"rules\" must be an array",
		                    p->name);
	if (json_array_size(v) > POLICY_MAX_RULES)
		return writ_err_set(err, WRIT_ERR_CONFIG, "%s: %zu rules (at most %d)", p->name,
		                    json_array_size(v), POLICY_MAX_RULES);
	*rules = v;
	return WRIT_OK;
}

static writ_rc parse_rules(policy *p, const json_t *rules, writ_err *err)
{
	json_t *ids = NULL;
	size_t i, k = 0, n = json_array_size(rules);
	writ_rc rc = WRIT_ERR_NOMEM;

	p->rules = calloc(n > 0 ? n : 1, sizeof(*p->rules));
	p->order = calloc(n > 0 ? n : 1, sizeof(*p->order));
	/* A hash table of ids seen, so 10,000 rules are checked in linear time. */
	ids = json_object();
	if (p->rules == NULL || p->order == NULL || ids == NULL) {
		writ_err_set(err, rc, "%s: out of memory", p->name);
		goto out;
	}
	for (i = 0; i < n; i++) {
		where w = {p->name, i, NULL};
		const json_t *prev;

		p->nrules = i + 1;
		rc = parse_rule(p, json_array_get(rules, i), &w, &p->rules[i], err);
		if (rc != WRIT_OK)
			goto out;
		prev = json_object_get(ids, p->rules[i].id);
		if (prev != NULL) {
			rc = rule_err(err, &w, "duplicate id (also rules[%lld])",
			              (long long)json_integer_value(prev));
			goto out;
		}
		if (json_object_set_new(ids, p->rules[i].id, json_integer((json_int_t)i)) != 0) {
			rc = writ_err_set(err, WRIT_ERR_NOMEM, "%s: out of memory", p->name);
			goto out;
		}
	}
	for (i = 0; i < n; i++)
		if (p->rules[i].deny)
			p->order[k++] = i;
	for (i = 0; i < n; i++)
		if (!p->rules[i].deny)
			p->order[k++] = i;
	rc = WRIT_OK;
out:
	json_decref(ids);
	return rc;
}

static writ_rc hash_bytes(const char *buf, size_t len, char hex[65], writ_err *err)
{
	unsigned char md[32];
	unsigned int mdlen = 0;
	size_t i;

	if (EVP_Digest(buf, len, md, &mdlen, EVP_sha256(), NULL) != 1 || mdlen != sizeof(md))
		return writ_err_ossl(err, WRIT_ERR_CRYPTO, "policy: SHA-256 failed");
	for (i = 0; i < sizeof(md); i++)
		snprintf(hex + 2 * i, 3, "%02x", md[i]);
	return WRIT_OK;
}

writ_rc policy_parse(const char *buf, size_t len, const char *name, policy **out, writ_err *err)
{
	const json_t *rules = NULL;
	json_t *root = NULL;
	policy *p = NULL;
	writ_rc rc;

	if (out == NULL)
		return writ_err_set(err, WRIT_ERR_ARG, "policy_parse: out is NULL");
	*out = NULL;
	if (buf == NULL && len > 0)
		return writ_err_set(err, WRIT_ERR_ARG, "policy_parse: buf is NULL");
	if (name == NULL)
		name = "policy";
	if (len > POLICY_MAX_BYTES)
		return writ_err_set(err, WRIT_ERR_TOO_LARGE, "%s: larger than %d bytes", name,
		                    POLICY_MAX_BYTES);
	p = calloc(1, sizeof(*p));
	if (p == NULL || (p->name = strdup(name)) == NULL) {
		rc = writ_err_set(err, WRIT_ERR_NOMEM, "%s: out of memory", name);
		goto out;
	}
	atomic_init(&p->refs, 1);
	/* jansson refuses NUL in strings, trailing bytes and deep nesting;
	 * wjson_parse_object adds duplicate members (one policy, one reading). */
	root = wjson_parse_object(buf != NULL ? buf : "", len, name, err);
	if (root == NULL) {
		rc = WRIT_ERR_MALFORMED;
		/* jansson quotes the offending bytes, newlines included; the
		 * message must stay one line for `writ policy check` and logs. */
		if (err != NULL)
			one_line(err->msg);
		goto out;
	}
	rc = parse_top(p, root, &rules, err);
	if (rc == WRIT_OK)
		rc = parse_rules(p, rules, err);
	if (rc == WRIT_OK)
		rc = hash_bytes(buf != NULL ? buf : "", len, p->hash, err);
	if (rc != WRIT_OK)
		goto out;
	*out = p;
	p = NULL;
out:
	json_decref(root);
	policy_destroy(p);
	return rc;
}

writ_rc policy_load(const char *path, policy **out, writ_err *err)
{
	struct stat st;
	char *buf = NULL;
	size_t len = 0;
	ssize_t n;
	int fd = -1;
	writ_rc rc;

	if (out == NULL || path == NULL)
		return writ_err_set(err, WRIT_ERR_ARG, "policy_load: NULL argument");
	*out = NULL;
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0) {
		rc = writ_err_set(err, WRIT_ERR_IO, "%s: %s", path, strerror(errno));
		goto out;
	}
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		rc = writ_err_set(err, WRIT_ERR_IO, "%s: not a regular file", path);
		goto out;
	}
	buf = malloc(POLICY_MAX_BYTES + 1);
	if (buf == NULL) {
		rc = writ_err_set(err, WRIT_ERR_NOMEM, "%s: out of memory", path);
		goto out;
	}
	/* Read one byte past the cap so an oversized file is refused rather
	 * than silently cut to a shorter, different policy. */
	while (len <= POLICY_MAX_BYTES) {
		n = read(fd, buf + len, POLICY_MAX_BYTES + 1 - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			rc = writ_err_set(err, WRIT_ERR_IO, "%s: %s", path, strerror(errno));
			goto out;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	rc = policy_parse(buf, len, path, out, err);
out:
	free(buf);
	if (fd >= 0)
		close(fd);
	return rc;
}

policy *policy_ref(policy *p)
{
	if (p != NULL)
		atomic_fetch_add_explicit(&p->refs, 1, memory_order_relaxed);
	return p;
}

void policy_unref(policy *p)
{
	/* acq_rel: the thread that frees must see every other thread's reads
	 * of the policy as finished. */
	if (p != NULL && atomic_fetch_sub_explicit(&p->refs, 1, memory_order_acq_rel) == 1)
		policy_destroy(p);
}

void policy_free(policy *p)
{
	policy_unref(p);
}

const char *policy_hash(const policy *p)
{
	return p->hash;
}

const char *policy_name(const policy *p)
{
	return p->name;
}

size_t policy_rule_count(const policy *p)
{
	return p->nrules;
}

const char *policy_rule_description(const policy *p, const char *id)
{
	size_t i;

	/* Linear: only explain asks, never the request path. */
	for (i = 0; i < p->nrules; i++)
		if (strcmp(p->rules[i].id, id) == 0)
			return p->rules[i].description;
	return NULL;
}

void policy_slot_init(policy_slot *s)
{
	pthread_mutex_init(&s->mu, NULL);
	s->cur = NULL;
}

void policy_slot_destroy(policy_slot *s)
{
	policy_unref(s->cur);
	s->cur = NULL;
	pthread_mutex_destroy(&s->mu);
}

policy *policy_slot_get(policy_slot *s)
{
	policy *p;

	pthread_mutex_lock(&s->mu);
	p = policy_ref(s->cur);
	pthread_mutex_unlock(&s->mu);
	return p;
}

void policy_slot_set(policy_slot *s, policy *p)
{
	policy *old;

	pthread_mutex_lock(&s->mu);
	old = s->cur;
	s->cur = p;
	pthread_mutex_unlock(&s->mu);
	/* Outside the lock: freeing 10,000 rules should not stall requests. */
	policy_unref(old);
}
