/*
 * policy_match.c - decisions (see policy.h): the request's scope parsed
 * strictly, every rule matched once, deny before allow; and the decision
 * written out for `writ policy explain` and the audit log.
 */
#include <fnmatch.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy.h"
#include "policy_int.h"
#include "writ_int.h"

static void decision_reset(policy_decision *d)
{
	d->outcome = POLICY_NOTHING_GRANTED;
	d->naction = 0;
	d->scope[0] = '\0';
	d->rule_id = NULL;
	d->ttl = 0;
	d->ttl_default = 0;
	d->nlim = 0;
	d->nrate = 0;
}

/*
 * RFC 6749 s.3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E ), joined by
 * single spaces. On top of that no glob character: the token carries the
 * granted actions to the target verbatim, and a granted "db:*" read as a
 * wildcard by the target would slip past a deny rule for "db:write"
 * (which does not match the literal string "db:*").
 */
static int scope_char(unsigned char c)
{
	return c >= 0x21 && c <= 0x7e && c != '"' && c != '\\' && c != '*' && c != '?' &&
	       c != '[' && c != ']';
}

static writ_rc parse_scope(const char *scope, policy_decision *d, writ_err *err)
{
	const char *s = scope, *e;
	size_t n, i, count = 0;

	if (*s == '\0')
		return writ_err_set(err, WRIT_ERR_MALFORMED, "scope is empty");
	for (;;) {
		for (e = s; *e != '\0' && *e != ' '; e++)
			if (!scope_char((unsigned char)*e))
				return writ_err_set(
				    err, WRIT_ERR_MALFORMED,
				    "scope: action %zu has a character outside "
				    "RFC 6749 scope-token or a glob character (* ? [ ])",
				    count + 1);
		n = (size_t)(e - s);
		if (n == 0)
			return writ_err_set(err, WRIT_ERR_MALFORMED,
			                    "scope: empty action (separate actions by one space)");
		if (n > POLICY_ACTION_MAX)
			return writ_err_set(err, WRIT_ERR_MALFORMED,
			                    "scope: action %zu is longer than %d bytes", count + 1,
			                    POLICY_ACTION_MAX);
		if (++count > POLICY_MAX_ACTIONS)
			return writ_err_set(err, WRIT_ERR_MALFORMED, "scope: more than %d actions",
			                    POLICY_MAX_ACTIONS);
		for (i = 0; i < d->naction; i++)
			if (strncmp(d->action[i].name, s, n) == 0 && d->action[i].name[n] == '\0')
				break;
		if (i == d->naction) {
			policy_action *a = &d->action[d->naction++];

			memcpy(a->name, s, n);
			a->name[n] = '\0';
			a->verdict = POLICY_NO_RULE;
			a->allowed_by = NULL;
			a->denied_by = NULL;
		}
		if (*e == '\0')
			return WRIT_OK;
		s = e + 1;
	}
}

/* Agent ids, groups and audiences reach here from a verified attestation
 * and the request; printable ASCII keeps them comparable to patterns. */
static int valid_name(const char *s, size_t max)
{
	size_t i;

	if (s == NULL || s[0] == '\0')
		return 0;
	for (i = 0; s[i] != '\0'; i++)
		if (i >= max || s[i] <= 0x20 || s[i] >= 0x7f)
			return 0;
	return 1;
}

static int pat_match(const policy_pattern *pt, const char *s)
{
	switch (pt->kind) {
	case POLICY_PAT_ANY: return 1;
	case POLICY_PAT_LITERAL: return strcmp(pt->s, s) == 0;
	default: return fnmatch(pt->s, s, 0) == 0;
	}
}

static int list_match(const policy_pattern *pts, size_t n, const char *s)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (pat_match(&pts[i], s))
			return 1;
	return 0;
}

static int subject_match(const policy_rule *r, const policy_subject *subj)
{
	size_t i, g;

	for (i = 0; i < r->nsubj; i++) {
		const policy_pattern *pt = &r->subj[i];

		/* "group:NAME" tests groups only: an agent whose id happens to be
		 * "group:admins" is not in the admins group. */
		if (!pt->group) {
			if (pat_match(pt, subj->agent))
				return 1;
			continue;
		}
		for (g = 0; g < subj->ngroups; g++)
			if (pat_match(pt, subj->groups[g]))
				return 1;
	}
	return 0;
}

/* Bit i set: the rule's action patterns cover requested action i. */
static uint64_t covered_actions(const policy_rule *r, const policy_decision *d)
{
	uint64_t m = 0;
	size_t i;

	for (i = 0; i < d->naction; i++)
		if (list_match(r->act, r->nact, d->action[i].name))
			m |= (uint64_t)1 << i;
	return m;
}

static writ_rc check_args(const policy *p, const policy_subject *subj, const char *audience,
                          const char *scope, writ_err *err)
{
	size_t g;

	if (p == NULL || subj == NULL || audience == NULL || scope == NULL)
		return writ_err_set(err, WRIT_ERR_ARG, "policy_decide: NULL argument");
	if (!valid_name(subj->agent, POLICY_NAME_MAX))
		return writ_err_set(err, WRIT_ERR_ARG, "policy: invalid agent id");
	if (!valid_name(audience, POLICY_NAME_MAX))
		return writ_err_set(err, WRIT_ERR_ARG, "policy: invalid audience");
	if (subj->ngroups > POLICY_MAX_GROUPS || (subj->ngroups > 0 && subj->groups == NULL))
		return writ_err_set(err, WRIT_ERR_ARG, "policy: more than %d groups",
		                    POLICY_MAX_GROUPS);
	for (g = 0; g < subj->ngroups; g++)
		if (!valid_name(subj->groups[g], POLICY_NAME_MAX))
			return writ_err_set(err, WRIT_ERR_ARG, "policy: invalid group name");
	return WRIT_OK;
}

/* An allow rule that grants: its ttl, lim and rate constrain the token. */
static writ_rc apply_grant(const policy *p, const policy_rule *r, policy_decision *d,
                           unsigned *limv, unsigned *limset, writ_err *err)
{
	unsigned k;

	if (d->rule_id == NULL)
		d->rule_id = r->id;
	/* A rule without a ttl allows the configured default, no more: it
	 * takes part in the minimum like any other (ttl_default). */
	if (r->ttl == 0)
		d->ttl_default = 1;
	else if (d->ttl == 0 || r->ttl < d->ttl)
		d->ttl = r->ttl;
	for (k = 0; k < r->nlim; k++) {
		unsigned idx = r->lim_name[k];

		if (!(*limset & (1u << idx)) || r->lim_value[k] < limv[idx])
			limv[idx] = r->lim_value[k];
		*limset |= 1u << idx;
	}
	if (r->rate_n != 0) {
		/* Fail closed: dropping a rate we cannot carry would lift a limit. */
		if (d->nrate == POLICY_MAX_RATES)
			return writ_err_set(
			    err, WRIT_ERR_TOO_LARGE,
			    "%s: more than %d rate-limited rules grant this request", p->name,
			    POLICY_MAX_RATES);
		d->rate[d->nrate].rule_id = r->id;
		d->rate[d->nrate].n = r->rate_n;
		d->rate[d->nrate].period_s = r->rate_period;
		d->nrate++;
	}
	return WRIT_OK;
}

writ_rc policy_decide(const policy *p, const policy_subject *subj, const char *audience,
                      const char *scope, policy_decision *out, writ_err *err)
{
	unsigned limv[POLICY_LIM_MAX], limset = 0;
	uint64_t allowed = 0, denied = 0, granted, m;
	int known = 0;
	size_t k, i;
	char *w;
	writ_rc rc;

	if (out == NULL)
		return writ_err_set(err, WRIT_ERR_ARG, "policy_decide: out is NULL");
	decision_reset(out);
	rc = check_args(p, subj, audience, scope, err);
	if (rc == WRIT_OK)
		rc = parse_scope(scope, out, err);
	if (rc != WRIT_OK)
		goto fail;
	/* Deny rules come first in p->order, so by the time an allow rule is
	 * reached `denied` is final and we know whether it grants anything. */
	for (k = 0; k < p->nrules; k++) {
		const policy_rule *r = &p->rules[p->order[k]];

		if (!list_match(r->aud, r->naud, audience) || !subject_match(r, subj))
			continue;
		/* The audience is allowed to this agent when an allow rule for
		 * it names the audience; a deny rule (a "*" write block, say)
		 * or another agent's rule does not make it so. */
		if (!r->deny)
			known = 1;
		m = covered_actions(r, out);
		if (m == 0)
			continue;
		for (i = 0; i < out->naction; i++) {
			if (!(m & ((uint64_t)1 << i)))
				continue;
			if (r->deny && out->action[i].denied_by == NULL)
				out->action[i].denied_by = r->id;
			if (!r->deny && out->action[i].allowed_by == NULL)
				out->action[i].allowed_by = r->id;
		}
		if (r->deny) {
			denied |= m;
			continue;
		}
		allowed |= m;
		if ((m & ~denied) != 0) {
			rc = apply_grant(p, r, out, limv, &limset, err);
			if (rc != WRIT_OK)
				goto fail;
		}
	}
	granted = allowed & ~denied;
	w = out->scope;
	for (i = 0; i < out->naction; i++) {
		policy_action *a = &out->action[i];

		if (denied & ((uint64_t)1 << i)) {
			a->verdict = POLICY_DENIED;
		} else if (granted & ((uint64_t)1 << i)) {
			size_t n = strlen(a->name);

			a->verdict = POLICY_ALLOWED;
			/* POLICY_SCOPE_MAX holds every action plus a separator each. */
			if (w != out->scope)
				*w++ = ' ';
			memcpy(w, a->name, n);
			w += n;
		}
	}
	*w = '\0';
	for (i = 0; i < p->nlim_names; i++) {
		if (!(limset & (1u << i)))
			continue;
		out->lim[out->nlim].name = p->lim_names[i];
		out->lim[out->nlim].value = limv[i];
		out->nlim++;
	}
	if (!known)
		out->outcome = POLICY_AUDIENCE_UNKNOWN;
	else
		out->outcome = granted != 0 ? POLICY_GRANTED : POLICY_NOTHING_GRANTED;
	return WRIT_OK;
fail:
	decision_reset(out);
	return rc;
}

const char *policy_outcome_name(policy_outcome o)
{
	switch (o) {
	case POLICY_GRANTED: return "granted";
	case POLICY_AUDIENCE_UNKNOWN: return "audience_unknown";
	default: return "nothing_granted";
	}
}

const char *policy_verdict_name(policy_verdict v)
{
	switch (v) {
	case POLICY_ALLOWED: return "allowed";
	case POLICY_DENIED: return "denied";
	default: return "no_rule";
	}
}

static const char *period_name(unsigned s)
{
	return s == 1 ? "sec" : s == 60 ? "min" : "hour";
}

void policy_decision_explain(const policy_decision *d, FILE *f)
{
	size_t i, width = 0;

	for (i = 0; i < d->naction; i++)
		if (strlen(d->action[i].name) > width)
			width = strlen(d->action[i].name);
	for (i = 0; i < d->naction; i++) {
		const policy_action *a = &d->action[i];

		fprintf(f, "  %-*s  ", (int)width, a->name);
		if (a->verdict == POLICY_DENIED && a->allowed_by != NULL)
			fprintf(f, "denied by rule \"%s\" (allowed by \"%s\", but deny wins)\n",
			        a->denied_by, a->allowed_by);
		else if (a->verdict == POLICY_DENIED)
			fprintf(f, "denied by rule \"%s\"\n", a->denied_by);
		else if (a->verdict == POLICY_ALLOWED)
			fprintf(f, "allowed by rule \"%s\"\n", a->allowed_by);
		else
			fprintf(f, "no rule allows it (default deny)\n");
	}
	fprintf(f, "granted: %s\n", d->scope[0] != '\0' ? d->scope : "(nothing)");
	if (d->outcome == POLICY_AUDIENCE_UNKNOWN)
		fprintf(f, "result: no allow rule for this agent names this audience (the issuer "
		           "answers invalid_target)\n");
	if (d->outcome == POLICY_NOTHING_GRANTED)
		fprintf(f, "result: nothing granted (the issuer answers invalid_scope)\n");
	if (d->outcome != POLICY_GRANTED)
		return;
	fprintf(f, "rule: %s\n", d->rule_id);
	if (d->ttl != 0 && d->ttl_default)
		fprintf(f,
		        "ttl: %u s, or the issuer's default if smaller (a granting rule sets "
		        "none); capped by config\n",
		        d->ttl);
	else if (d->ttl != 0)
		fprintf(f, "ttl: %u s (the issuer also caps it by config)\n", d->ttl);
	else
		fprintf(f, "ttl: not set by policy (the issuer's default applies)\n");
	for (i = 0; i < d->nlim; i++)
		fprintf(f, "%s%s=%u%s", i == 0 ? "lim: " : ", ", d->lim[i].name, d->lim[i].value,
		        i + 1 == d->nlim ? "\n" : "");
	for (i = 0; i < d->nrate; i++)
		fprintf(f, "rate: %u/%s per agent (rule \"%s\")\n", d->rate[i].n,
		        period_name(d->rate[i].period_s), d->rate[i].rule_id);
}

static json_t *lim_object(const policy_decision *d)
{
	json_t *o = json_object();
	size_t i;

	for (i = 0; o != NULL && i < d->nlim; i++)
		if (json_object_set_new(o, d->lim[i].name, json_integer(d->lim[i].value)) != 0) {
			json_decref(o);
			return NULL;
		}
	return o;
}

static json_t *str_or_null(const char *s)
{
	return s != NULL ? json_string(s) : json_null();
}

char *policy_decision_json(const policy_decision *d)
{
	json_t *o = NULL, *acts, *rates, *lim;
	char *s = NULL, rate[32];
	size_t i;
	int bad = 0;

	o = json_object();
	acts = json_array();
	rates = json_array();
	lim = lim_object(d);
	if (o == NULL || acts == NULL || rates == NULL || lim == NULL) {
		json_decref(acts);
		json_decref(rates);
		json_decref(lim);
		goto out;
	}
	bad |= json_object_set_new(o, "outcome", json_string(policy_outcome_name(d->outcome)));
	bad |= json_object_set_new(o, "actions", acts);
	for (i = 0; i < d->naction; i++) {
		const policy_action *a = &d->action[i];

		bad |= json_array_append_new(acts,
		                             json_pack("{s:s, s:s, s:o, s:o}", "action", a->name,
		                                       "verdict", policy_verdict_name(a->verdict),
		                                       "allowed_by", str_or_null(a->allowed_by),
		                                       "denied_by", str_or_null(a->denied_by)));
	}
	bad |= json_object_set_new(o, "scope", json_string(d->scope));
	bad |= json_object_set_new(o, "rule", str_or_null(d->rule_id));
	bad |= json_object_set_new(o, "ttl", json_integer(d->ttl));
	bad |= json_object_set_new(o, "ttl_default", json_boolean(d->ttl_default));
	bad |= json_object_set_new(o, "lim", lim);
	bad |= json_object_set_new(o, "rates", rates);
	for (i = 0; i < d->nrate; i++) {
		snprintf(rate, sizeof(rate), "%u/%s", d->rate[i].n,
		         period_name(d->rate[i].period_s));
		bad |= json_array_append_new(rates, json_pack("{s:s, s:s, s:i, s:i}", "rule",
		                                              d->rate[i].rule_id, "rate", rate, "n",
		                                              (int)d->rate[i].n, "period",
		                                              (int)d->rate[i].period_s));
	}
	if (!bad)
		s = wjson_dump(o);
out:
	json_decref(o);
	return s;
}

char *policy_decision_lim_json(const policy_decision *d)
{
	json_t *o;
	char *s;

	if (d->nlim == 0)
		return NULL;
	o = lim_object(d);
	if (o == NULL)
		return NULL;
	s = wjson_dump(o);
	json_decref(o);
	return s;
}
