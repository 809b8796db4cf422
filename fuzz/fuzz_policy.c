/*
 * fuzz_policy.c - libFuzzer target for the policy parser (policy_parse,
 * an operator's file) and the request scope parser inside policy_decide
 * (an agent's input).
 *
 * Beyond "no crash, no leak", it checks what the issuer relies on: a
 * granted scope only ever holds requested actions, in request order;
 * a denied or unruled action is never in it; an unknown audience grants
 * nothing; a failed decision leaves nothing granted; messages are one line.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_util.h"
#include "policy.h"
#include "writ_int.h"

/* Policy messages are also one line: a newline would split a log entry. */
static void check_policy_err(writ_rc rc, const writ_err *err)
{
	check_err(rc, err);
	if (rc != WRIT_OK)
		ENSURE(strchr(err->msg, '\n') == NULL);
}

/* Is word one of the SP-separated words of list? */
static int has_word(const char *list, const char *word)
{
	size_t n = strlen(word);
	const char *s = list;

	while ((s = strstr(s, word)) != NULL) {
		if ((s == list || s[-1] == ' ') && (s[n] == ' ' || s[n] == '\0'))
			return 1;
		s += n;
	}
	return 0;
}

static policy_decision dec;

static void decide_check(const policy *p, const policy_subject *s, const char *aud,
                         const char *scope)
{
	writ_err err = {0};
	writ_rc rc = policy_decide(p, s, aud, scope, &dec, &err);
	static char want[POLICY_SCOPE_MAX + 1];
	size_t i, granted = 0, wn = 0;
	char *js;

	check_policy_err(rc, &err);
	if (rc != WRIT_OK) {
		ENSURE(dec.outcome == POLICY_NOTHING_GRANTED && dec.scope[0] == '\0');
		ENSURE(dec.naction == 0 && dec.nrate == 0 && dec.nlim == 0);
		return;
	}
	ENSURE(dec.naction >= 1 && dec.naction <= POLICY_MAX_ACTIONS);
	for (i = 0; i < dec.naction; i++) {
		const policy_action *a = &dec.action[i];
		size_t n = strlen(a->name);

		ENSURE(has_word(scope, a->name));
		if (a->verdict == POLICY_ALLOWED) {
			ENSURE(a->allowed_by != NULL && a->denied_by == NULL);
			if (wn > 0)
				want[wn++] = ' ';
			memcpy(want + wn, a->name, n);
			wn += n;
			granted++;
		} else {
			ENSURE(!has_word(dec.scope, a->name));
			ENSURE((a->verdict == POLICY_DENIED) == (a->denied_by != NULL));
		}
	}
	/* exactly the allowed actions, in request order */
	want[wn] = '\0';
	ENSURE(strcmp(want, dec.scope) == 0);
	ENSURE((granted > 0) == (dec.outcome == POLICY_GRANTED));
	ENSURE((dec.rule_id != NULL) == (granted > 0));
	if (dec.outcome == POLICY_AUDIENCE_UNKNOWN)
		ENSURE(granted == 0 && dec.nrate == 0);
	ENSURE(dec.ttl <= POLICY_TTL_MAX && dec.nlim <= POLICY_LIM_MAX);
	js = policy_decision_json(&dec);
	ENSURE(js != NULL);
	free(js);
}

/* A fixed policy for fuzzing request scopes. */
static const char fixed[] =
    "{\"version\":1,\"rules\":["
    "{\"id\":\"a\",\"effect\":\"allow\",\"subjects\":[\"group:analysts\",\"ci-*\"],"
    "\"audiences\":[\"orders-*\"],\"actions\":[\"db:*\",\"x\"],\"ttl\":300,"
    "\"rate\":\"60/min\",\"lim\":{\"rps\":5}},"
    "{\"id\":\"d\",\"effect\":\"deny\",\"subjects\":[\"*\"],\"audiences\":[\"orders-db\"],"
    "\"actions\":[\"db:w*\",\"db:[d]elete\"]}]}";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const groups[] = {"analysts", "db-admins"};
	static const policy_subject subjects[] = {
	    {"demo-agent", groups, 2}, {"ci-build", NULL, 0}, {"group:analysts", NULL, 0}};
	static const char *const auds[] = {"orders-db", "db-migrations", "billing-api"};
	static const char *const scopes[] = {"db:read db:write", "db:read db:read x",
	                                     "migrate:apply db:describe"};
	/* An exact-size copy: ASan sees any read past the input's end. */
	char *buf = malloc(size != 0 ? size : 1), *scope = NULL;
	writ_err err = {0};
	policy *p = NULL;
	writ_rc rc;
	size_t i, j, k;

	if (buf == NULL)
		return 0;
	memcpy(buf, data, size);
	rc = policy_parse(buf, size, "fuzz.json", &p, &err);
	check_policy_err(rc, &err);
	if (rc == WRIT_OK) {
		ENSURE(strlen(policy_hash(p)) == 64);
		ENSURE(policy_rule_count(p) <= POLICY_MAX_RULES);
		for (i = 0; i < sizeof(subjects) / sizeof(subjects[0]); i++)
			for (j = 0; j < sizeof(auds) / sizeof(auds[0]); j++)
				for (k = 0; k < sizeof(scopes) / sizeof(scopes[0]); k++)
					decide_check(p, &subjects[i], auds[j], scopes[k]);
		policy_unref(p);
	} else {
		ENSURE(p == NULL);
	}

	/* The same bytes as a request's scope against a fixed policy. */
	if (size <= POLICY_SCOPE_MAX + 16 && memchr(data, '\0', size) == NULL) {
		scope = malloc(size + 1);
		ENSURE(policy_parse(fixed, sizeof(fixed) - 1, "fixed", &p, NULL) == WRIT_OK);
		if (scope != NULL) {
			memcpy(scope, data, size);
			scope[size] = '\0';
			for (i = 0; i < sizeof(subjects) / sizeof(subjects[0]); i++)
				decide_check(p, &subjects[i], "orders-db", scope);
		}
		policy_unref(p);
		free(scope);
	}
	free(buf);
	return 0;
}
