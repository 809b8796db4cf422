/*
 * test_policy.c - the policy file and its decisions (SPEC s.6): default
 * deny, deny beats allow, only requested actions granted, groups and
 * wildcards, unknown audience vs nothing granted, TTL / lim / rate from the
 * granting rules, strict parsing with messages naming rule and field, and
 * the demo policy in examples/.
 */
#include <pthread.h>
#include <stdint.h>

#include "policy.h"
#include "testutil.h"

/* JSON with ' for " so the cases below stay readable. */
static char *q(const char *s)
{
	char *r = strdup(s), *p;

	REQUIRE(r != NULL);
	for (p = r; *p != '\0'; p++)
		if (*p == '\'')
			*p = '"';
	return r;
}

static policy *load(const char *json)
{
	char *j = q(json);
	writ_err err = {0};
	policy *p = NULL;
	writ_rc rc = policy_parse(j, strlen(j), "t.json", &p, &err);

	if (rc != WRIT_OK)
		fprintf(stderr, "policy_parse: %s\n", err.msg);
	REQUIRE(rc == WRIT_OK && p != NULL);
	free(j);
	return p;
}

/* Parse must fail with rc and a message containing want. */
static void refused(const char *json, writ_rc want, const char *msg)
{
	char *j = q(json);
	writ_err err = {0};
	policy *p = (policy *)1;
	writ_rc rc = policy_parse(j, strlen(j), "t.json", &p, &err);

	CHECK_RC(rc, want);
	CHECK(p == NULL);
	if (strstr(err.msg, msg) == NULL) {
		tu_failures++;
		fprintf(stderr, "message \"%s\" lacks \"%s\"\n", err.msg, msg);
	}
	tu_checks++;
	free(j);
}

static policy_decision dec; /* 18 KiB: keep it off the test's stack frames */

static writ_rc decide(const policy *p, const char *agent, const char *group, const char *audience,
                      const char *scope)
{
	const char *groups[1] = {group};
	policy_subject s = {agent, groups, group != NULL ? 1 : 0};
	writ_err err = {0};

	return policy_decide(p, &s, audience, scope, &dec, &err);
}

static const policy_action *action(const char *name)
{
	size_t i;

	for (i = 0; i < dec.naction; i++)
		if (strcmp(dec.action[i].name, name) == 0)
			return &dec.action[i];
	return NULL;
}

#define ALLOW(id, subj, aud, acts, extra)                                                          \
	"{'id':'" id "','effect':'allow','subjects':[" subj "],'audiences':[" aud                  \
	"],'actions':[" acts "]" extra "}"
#define DENY(id, subj, aud, acts)                                                                  \
	"{'id':'" id "','effect':'deny','subjects':[" subj "],'audiences':[" aud                   \
	"],'actions':[" acts "]}"
#define POL(rules) "{'version':1,'rules':[" rules "]}"

static void test_default_deny(void)
{
	policy *p = load(POL(ALLOW("r", "'a'", "'svc'", "'read'", "")));

	CHECK_RC(decide(p, "a", NULL, "svc", "write"), WRIT_OK);
	CHECK(dec.outcome == POLICY_NOTHING_GRANTED);
	CHECK(strcmp(dec.scope, "") == 0);
	CHECK(dec.action[0].verdict == POLICY_NO_RULE && dec.action[0].allowed_by == NULL);
	CHECK(dec.rule_id == NULL);
	CHECK_RC(decide(p, "b", NULL, "svc", "read"), WRIT_OK);
	CHECK(dec.outcome == POLICY_AUDIENCE_UNKNOWN);
	policy_unref(p);
}

static void test_deny_beats_allow_in_either_order(void)
{
	/* clang-format off */
	policy *a = load(POL(
		ALLOW("al", "'*'", "'svc'", "'db:*'", "") ","
		DENY("de", "'*'", "'svc'", "'db:write'")));
	policy *b = load(POL(
		DENY("de", "'*'", "'svc'", "'db:write'") ","
		ALLOW("al", "'*'", "'svc'", "'db:*'", "")));
	/* clang-format on */
	policy *ps[2] = {a, b};
	int i;

	for (i = 0; i < 2; i++) {
		CHECK_RC(decide(ps[i], "x", NULL, "svc", "db:write db:read"), WRIT_OK);
		CHECK(dec.outcome == POLICY_GRANTED);
		CHECK(strcmp(dec.scope, "db:read") == 0);
		CHECK(dec.action[0].verdict == POLICY_DENIED);
		CHECK(dec.action[0].denied_by != NULL &&
		      strcmp(dec.action[0].denied_by, "de") == 0);
		CHECK(dec.action[0].allowed_by != NULL &&
		      strcmp(dec.action[0].allowed_by, "al") == 0);
		CHECK(dec.action[1].verdict == POLICY_ALLOWED);
		CHECK(strcmp(dec.rule_id, "al") == 0);
		CHECK_RC(decide(ps[i], "x", NULL, "svc", "db:write"), WRIT_OK);
		CHECK(dec.outcome == POLICY_NOTHING_GRANTED);
	}
	policy_unref(a);
	policy_unref(b);
}

static void test_granted_is_subset_of_requested(void)
{
	policy *p = load(POL(ALLOW("all", "'*'", "'*'", "'*'", "")));

	CHECK_RC(decide(p, "x", NULL, "svc", "db:read b db:read a"), WRIT_OK);
	CHECK(strcmp(dec.scope, "db:read b a") == 0);
	CHECK(dec.naction == 3);
	/* A wildcard request is refused, not granted as a literal "db:*" a
	 * target might read as every action. */
	CHECK_RC(decide(p, "x", NULL, "svc", "db:*"), WRIT_ERR_MALFORMED);
	CHECK(dec.outcome == POLICY_NOTHING_GRANTED && dec.scope[0] == '\0');
	CHECK_RC(decide(p, "x", NULL, "svc", "db:rea?"), WRIT_ERR_MALFORMED);
	CHECK_RC(decide(p, "x", NULL, "svc", "db:[rw]"), WRIT_ERR_MALFORMED);
	policy_unref(p);
}

static void test_subject_wildcards_and_groups(void)
{
	/* clang-format off */
	policy *p = load(POL(
		ALLOW("ci", "'ci-*'", "'svc'", "'ci'", "") ","
		ALLOW("grp", "'group:ana*'", "'svc'", "'grp'", "") ","
		ALLOW("one", "'bob'", "'svc'", "'one'", "")));
	/* clang-format on */

	CHECK_RC(decide(p, "ci-build", NULL, "svc", "ci grp one"), WRIT_OK);
	CHECK(strcmp(dec.scope, "ci") == 0);
	CHECK_RC(decide(p, "cix", NULL, "svc", "ci"), WRIT_OK);
	CHECK(dec.outcome == POLICY_AUDIENCE_UNKNOWN);
	CHECK_RC(decide(p, "carol", "analysts", "svc", "ci grp one"), WRIT_OK);
	CHECK(strcmp(dec.scope, "grp") == 0);
	CHECK_RC(decide(p, "bob", "sales", "svc", "ci grp one"), WRIT_OK);
	CHECK(strcmp(dec.scope, "one") == 0);
	/* group patterns look at groups only, never at the agent id */
	CHECK_RC(decide(p, "group:analysts", NULL, "svc", "grp"), WRIT_OK);
	CHECK(dec.outcome == POLICY_AUDIENCE_UNKNOWN);
	/* and a plain pattern never at the groups */
	CHECK_RC(decide(p, "eve", "bob", "svc", "one"), WRIT_OK);
	CHECK(dec.outcome == POLICY_AUDIENCE_UNKNOWN);
	policy_unref(p);
}

static void test_several_groups(void)
{
	policy *p = load(POL(ALLOW("g", "'group:ops'", "'svc'", "'x'", "")));
	const char *groups[3] = {"a", "b", "ops"};
	policy_subject s = {"z", groups, 3};

	CHECK_RC(policy_decide(p, &s, "svc", "x", &dec, NULL), WRIT_OK);
	CHECK(dec.outcome == POLICY_GRANTED);
	s.ngroups = 2;
	CHECK_RC(policy_decide(p, &s, "svc", "x", &dec, NULL), WRIT_OK);
	CHECK(dec.outcome == POLICY_AUDIENCE_UNKNOWN);
	policy_unref(p);
}

/* invalid_target when no allow rule for this agent names the audience,
 * invalid_scope when one does but grants none of the actions: a deny rule
 * or another agent's rule does not make an audience this agent's, and
 * the answer says nothing of other agents' audiences. */
static void test_audience_not_allowed_to_agent_is_invalid_target(void)
{
	/* clang-format off */
	policy *p = load(POL(
		ALLOW("r", "'alice'", "'orders-*'", "'read'", "") ","
		DENY("d", "'*'", "'billing'", "'x'")));
	/* clang-format on */

	CHECK_RC(decide(p, "alice", NULL, "hr-db", "read"), WRIT_OK);
	CHECK(dec.outcome == POLICY_AUDIENCE_UNKNOWN);
	/* named by a rule for someone else: not allowed to bob */
	CHECK_RC(decide(p, "bob", NULL, "orders-db", "read"), WRIT_OK);
	CHECK(dec.outcome == POLICY_AUDIENCE_UNKNOWN);
	/* named by a deny rule only (a "*" block): not allowed either */
	CHECK_RC(decide(p, "alice", NULL, "billing", "read"), WRIT_OK);
	CHECK(dec.outcome == POLICY_AUDIENCE_UNKNOWN);
	/* alice's audience, an action no rule gives her: invalid_scope */
	CHECK_RC(decide(p, "alice", NULL, "orders-db", "write"), WRIT_OK);
	CHECK(dec.outcome == POLICY_NOTHING_GRANTED);
	CHECK_RC(decide(p, "alice", NULL, "orders-db", "read"), WRIT_OK);
	CHECK(dec.outcome == POLICY_GRANTED);
	policy_unref(p);
}

static void test_ttl_is_min_of_granting_rules(void)
{
	/* clang-format off */
	policy *p = load(POL(
		ALLOW("long", "'*'", "'svc'", "'a'", ",'ttl':900") ","
		ALLOW("short", "'*'", "'svc'", "'b'", ",'ttl':60") ","
		ALLOW("none", "'*'", "'svc'", "'c'", "") ","
		ALLOW("denied", "'*'", "'svc'", "'w'", ",'ttl':5") ","
		DENY("d", "'*'", "'svc'", "'w'")));
	/* clang-format on */

	CHECK_RC(decide(p, "x", NULL, "svc", "a b"), WRIT_OK);
	CHECK(dec.ttl == 60 && !dec.ttl_default);
	/* a granting rule without a ttl counts as the configured default: the
	 * issuer takes min(900, default), not 900 */
	CHECK_RC(decide(p, "x", NULL, "svc", "a c"), WRIT_OK);
	CHECK(dec.ttl == 900 && dec.ttl_default);
	CHECK_RC(decide(p, "x", NULL, "svc", "c"), WRIT_OK);
	CHECK(dec.ttl == 0 && dec.ttl_default);
	/* a rule whose only action was denied granted nothing: its ttl is out */
	CHECK_RC(decide(p, "x", NULL, "svc", "a w"), WRIT_OK);
	CHECK(dec.ttl == 900 && !dec.ttl_default);
	CHECK(strcmp(dec.rule_id, "long") == 0);
	policy_unref(p);
}

static void test_lim_merge_and_rates(void)
{
	/* clang-format off */
	policy *p = load(POL(
		ALLOW("r1", "'*'", "'svc'", "'a'",
		      ",'lim':{'rps':5,'rows':100},'rate':'60/min'") ","
		ALLOW("r2", "'*'", "'svc'", "'a','b'",
		      ",'lim':{'rps':2,'conc':3},'rate':'10/sec'") ","
		ALLOW("r3", "'*'", "'svc'", "'c'", ",'lim':{'rows':0}")));
	/* clang-format on */
	char *lim;

	CHECK_RC(decide(p, "x", NULL, "svc", "a"), WRIT_OK);
	REQUIRE(dec.nlim == 3);
	CHECK(strcmp(dec.lim[0].name, "rps") == 0 && dec.lim[0].value == 2);
	CHECK(strcmp(dec.lim[1].name, "rows") == 0 && dec.lim[1].value == 100);
	CHECK(strcmp(dec.lim[2].name, "conc") == 0 && dec.lim[2].value == 3);
	lim = policy_decision_lim_json(&dec);
	CHECK(lim != NULL && strcmp(lim, "{\"rps\":2,\"rows\":100,\"conc\":3}") == 0);
	free(lim);
	REQUIRE(dec.nrate == 2);
	CHECK(strcmp(dec.rate[0].rule_id, "r1") == 0 && dec.rate[0].n == 60 &&
	      dec.rate[0].period_s == 60);
	CHECK(strcmp(dec.rate[1].rule_id, "r2") == 0 && dec.rate[1].n == 10 &&
	      dec.rate[1].period_s == 1);
	CHECK_RC(decide(p, "x", NULL, "svc", "b"), WRIT_OK);
	CHECK(dec.nlim == 2 && dec.nrate == 1);
	CHECK_RC(decide(p, "x", NULL, "svc", "c"), WRIT_OK);
	CHECK(dec.nlim == 1 && dec.lim[0].value == 0 && dec.nrate == 0);
	lim = policy_decision_lim_json(&dec);
	CHECK(lim != NULL && strcmp(lim, "{\"rows\":0}") == 0);
	free(lim);
	CHECK_RC(decide(p, "x", NULL, "svc", "zz"), WRIT_OK);
	CHECK(dec.nlim == 0 && policy_decision_lim_json(&dec) == NULL);
	policy_unref(p);
}

static void test_malformed_scope_is_its_own_error(void)
{
	policy *p = load(POL(ALLOW("r", "'*'", "'*'", "'*'", "")));
	char big[POLICY_MAX_ACTIONS * 4 + 8], *w = big;
	char longact[POLICY_ACTION_MAX + 2];
	static const char *bad[] = {"",     " a",   "a ",          "a  b", "a\tb",
	                            "a\"b", "a\\b", "caf\xc3\xa9", "a\nb"};
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		CHECK_RC(decide(p, "x", NULL, "svc", bad[i]), WRIT_ERR_MALFORMED);
	for (i = 0; i <= POLICY_MAX_ACTIONS; i++)
		w += snprintf(w, 8, "%s%02zx", i == 0 ? "" : " ", i);
	CHECK_RC(decide(p, "x", NULL, "svc", big), WRIT_ERR_MALFORMED);
	*strrchr(big, ' ') = '\0'; /* exactly the cap */
	CHECK_RC(decide(p, "x", NULL, "svc", big), WRIT_OK);
	CHECK(dec.naction == POLICY_MAX_ACTIONS && dec.outcome == POLICY_GRANTED);
	memset(longact, 'a', sizeof(longact) - 1);
	longact[sizeof(longact) - 1] = '\0';
	CHECK_RC(decide(p, "x", NULL, "svc", longact), WRIT_ERR_MALFORMED);
	longact[POLICY_ACTION_MAX] = '\0';
	CHECK_RC(decide(p, "x", NULL, "svc", longact), WRIT_OK);
	/* bad agent or audience is the caller's error, not the request's scope */
	CHECK_RC(decide(p, "", NULL, "svc", "a"), WRIT_ERR_ARG);
	CHECK_RC(decide(p, "x", NULL, "s v", "a"), WRIT_ERR_ARG);
	CHECK_RC(decide(p, "x", "", "svc", "a"), WRIT_ERR_ARG);
	policy_unref(p);
}

static void test_every_parse_error_names_rule_and_field(void)
{
	const writ_rc C = WRIT_ERR_CONFIG;

	refused(POL(ALLOW("x", "'a'", "'b'", "'c'", ",'ttll':5")), C,
	        "t.json: rules[0] (id \"x\"): unknown field \"ttll\"");
	/* clang-format off */
	refused(POL(ALLOW("ok", "'a'", "'b'", "'c'", "") ","
		    ALLOW("x", "'a'", "'b'", "'c'", ",'ttl':0")),
		C, "t.json: rules[1] (id \"x\"): field \"ttl\" must be an integer in 1..3600");
	/* clang-format on */
	refused(POL(ALLOW("x", "'a'", "'b'", "'c'", ",'ttl':3601")), C, "field \"ttl\"");
	refused(POL(ALLOW("x", "'a'", "'b'", "'c'", ",'ttl':'60'")), C, "field \"ttl\"");
	refused(POL(ALLOW("x", "'a'", "'b'", "'c'", ",'ttl':1.5")), C, "field \"ttl\"");
	refused(POL("{'id':'x','effect':'deny','subjects':['a'],'audiences':['b'],'actions':['c'],"
	            "'ttl':5}"),
	        C, "rules[0] (id \"x\"): field \"ttl\" is only allowed on allow rules");
	refused(POL("{'id':'x','effect':'deny','subjects':['a'],'audiences':['b'],'actions':['c'],"
	            "'rate':'1/sec'}"),
	        C, "(id \"x\"): field \"rate\" is only allowed on allow rules");
	refused(POL("{'id':'x','effect':'deny','subjects':['a'],'audiences':['b'],'actions':['c'],"
	            "'lim':{}}"),
	        C, "(id \"x\"): field \"lim\" is only allowed");
	refused(POL("{'id':'x','subjects':['a'],'audiences':['b'],'actions':['c']}"), C,
	        "rules[0] (id \"x\"): missing field \"effect\"");
	refused(
	    POL("{'id':'x','effect':'permit','subjects':['a'],'audiences':['b'],'actions':['c']}"),
	    C, "(id \"x\"): field \"effect\" must be \"allow\" or \"deny\"");
	refused(POL("{'effect':'allow','subjects':['a'],'audiences':['b'],'actions':['c']}"), C,
	        "rules[0]: missing field \"id\"");
	refused(POL(ALLOW("bad id", "'a'", "'b'", "'c'", "")), C, "rules[0]: field \"id\" must be");
	refused(POL(ALLOW("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
	                  "'a'", "'b'", "'c'", "")),
	        C, "rules[0]: field \"id\" must be 1..64");
	refused(POL(ALLOW("x", "'a'", "'b'", "'c'", "") "," ALLOW("x", "'a'", "'b'", "'c'", "")), C,
	        "rules[1] (id \"x\"): duplicate id (also rules[0])");
	refused(POL("{'id':'x','effect':'allow','audiences':['b'],'actions':['c']}"), C,
	        "(id \"x\"): missing field \"subjects\"");
	refused(POL(ALLOW("x", "", "'b'", "'c'", "")), C,
	        "(id \"x\"): field \"subjects\" must be a non-empty array");
	refused(POL(ALLOW("x", "'a'", "''", "'c'", "")), C, "(id \"x\"): audiences[0] must be");
	refused(POL(ALLOW("x", "'a'", "'b'", "'c','d e'", "")), C,
	        "(id \"x\"): actions[1] must be");
	refused(POL(ALLOW("x", "'a'", "'b'", "5", "")), C, "(id \"x\"): actions[0] must be");
	refused(POL(ALLOW("x", "'group:'", "'b'", "'c'", "")), C,
	        "(id \"x\"): subjects[0]: \"group:\" needs a group name");
	refused(POL(ALLOW("x", "'a'", "'b'", "'c'", ",'rate':'60/minute'")), C,
	        "(id \"x\"): field \"rate\" must be");
	refused(POL(ALLOW("x", "'a'", "'b'", "'c'", ",'rate':'0/min'")), C, "field \"rate\"");
	refused(POL(ALLOW("x", "'a'", "'b'", "'c'", ",'rate':'1000001/min'")), C, "field \"rate\"");
	refused(POL(ALLOW("x", "'a'", "'b'", "'c'", ",'rate':'+5/min'")), C, "field \"rate\"");
	refused(POL(ALLOW("x", "'a'", "'b'", "'c'", ",'rate':60")), C, "field \"rate\"");
	refused(POL(ALLOW("x", "'a'", "'b'", "'c'", ",'lim':{'rps':-1}")), C,
	        "(id \"x\"): lim: \"rps\" must be an integer");
	/* A rate of 0 would make the rule's tokens refuse every request at
	 * the target (the verifier library counts rps and rpm). */
	refused(POL(ALLOW("x", "'a'", "'b'", "'c'", ",'lim':{'rps':0}")), C,
	        "(id \"x\"): lim: \"rps\" must be an integer in 1..");
	refused(POL(ALLOW("x", "'a'", "'b'", "'c'", ",'lim':{'rows':5,'rpm':0}")), C,
	        "(id \"x\"): lim: \"rpm\" must be an integer in 1..");
	refused(POL(ALLOW("x", "'a'", "'b'", "'c'", ",'lim':{'r-s':1}")), C,
	        "(id \"x\"): lim: name \"r-s\"");
	refused(POL(ALLOW("x", "'a'", "'b'", "'c'", ",'lim':[1]")), C,
	        "(id \"x\"): field \"lim\" must be an object");
	refused(POL(ALLOW("x", "'a'", "'b'", "'c'", ",'description':'a\\nb'")), C,
	        "(id \"x\"): field \"description\"");
	refused(POL("'not an object'"), C, "rules[0]: not an object");
	refused("{'rules':[]}", C, "t.json: missing field \"version\"");
	refused("{'version':2,'rules':[]}", C, "t.json: unsupported \"version\"");
	refused("{'version':1}", C, "t.json: missing field \"rules\"");
	refused("{'version':1,'rules':{}}", C, "\"rules\" must be an array");
	refused("{'version':1,'rules':[],'rule':[]}", C, "unknown top-level field \"rule\"");
	refused("{'version':1,'rules':[]} x", WRIT_ERR_MALFORMED, "t.json: invalid JSON");
	refused("[]", WRIT_ERR_MALFORMED, "t.json: not a JSON object");
	/* a field name cannot put a newline into the one-line message */
	refused(POL(ALLOW("x", "'a'", "'b'", "'c'", ",'a\\nb':1")), C, "unknown field \"a?b\"");
}

static void test_duplicate_json_keys_refused(void)
{
	refused("{'version':1,'version':1,'rules':[]}", WRIT_ERR_MALFORMED, "duplicate");
	refused(POL("{'id':'x','effect':'deny','effect':'allow','subjects':['a'],"
	            "'audiences':['b'],'actions':['c']}"),
	        WRIT_ERR_MALFORMED, "duplicate");
	refused(POL(ALLOW("x", "'a'", "'b'", "'c'", ",'lim':{'rps':1,'rps':100}")),
	        WRIT_ERR_MALFORMED, "duplicate");
}

/* Append to a growing test buffer; the cases below stay far below cap. */
static char *put(char *w, const char *end, const char *s)
{
	size_t n = strlen(s);

	REQUIRE(w + n < end);
	memcpy(w, s, n + 1);
	return w + n;
}

static void test_caps(void)
{
	size_t cap = POLICY_MAX_BYTES + 64, i;
	char *buf = malloc(cap), *w, *end = buf + cap, one[160];
	writ_err err = {0};
	policy *p = NULL;

	REQUIRE(buf != NULL);
	memset(buf, ' ', cap);
	memcpy(buf, "{\"version\":1,\"rules\":[]}", 24);
	CHECK_RC(policy_parse(buf, POLICY_MAX_BYTES + 1, "big", &p, &err), WRIT_ERR_TOO_LARGE);
	CHECK(p == NULL);
	CHECK_RC(policy_parse(buf, POLICY_MAX_BYTES, "big", &p, &err), WRIT_OK);
	policy_unref(p);

	/* 257 patterns in one list */
	w = put(buf, end,
	        "{\"version\":1,\"rules\":[{\"id\":\"x\",\"effect\":\"allow\","
	        "\"subjects\":[\"a\"],\"audiences\":[\"b\"],\"actions\":[");
	for (i = 0; i <= POLICY_MAX_PATTERNS; i++) {
		snprintf(one, sizeof(one), "%s\"a%zu\"", i == 0 ? "" : ",", i);
		w = put(w, end, one);
	}
	w = put(w, end, "]}]}");
	CHECK_RC(policy_parse(buf, (size_t)(w - buf), "t.json", &p, &err), WRIT_ERR_CONFIG);
	CHECK(strstr(err.msg, "rules[0] (id \"x\"): field \"actions\" has 257 patterns") != NULL);

	/* a 257-byte pattern */
	w = put(buf, end,
	        "{\"version\":1,\"rules\":[{\"id\":\"x\",\"effect\":\"allow\","
	        "\"subjects\":[\"a\"],\"audiences\":[\"");
	for (i = 0; i <= POLICY_PATTERN_MAX; i++)
		w = put(w, end, "b");
	w = put(w, end, "\"],\"actions\":[\"c\"]}]}");
	CHECK_RC(policy_parse(buf, (size_t)(w - buf), "t.json", &p, &err), WRIT_ERR_CONFIG);
	CHECK(strstr(err.msg, "audiences[0] must be") != NULL);

	/* 10,001 rules */
	w = put(buf, end, "{\"version\":1,\"rules\":[");
	for (i = 0; i <= POLICY_MAX_RULES; i++) {
		snprintf(one, sizeof(one),
		         "%s{\"id\":\"r%zu\",\"effect\":\"deny\",\"subjects\":[\"a\"],"
		         "\"audiences\":[\"b\"],\"actions\":[\"c\"]}",
		         i == 0 ? "" : ",", i);
		w = put(w, end, one);
	}
	w = put(w, end, "]}");
	CHECK_RC(policy_parse(buf, (size_t)(w - buf), "t.json", &p, &err), WRIT_ERR_CONFIG);
	CHECK(strstr(err.msg, "10001 rules (at most 10000)") != NULL);
	/* exactly 10,000 load, and ids are checked for duplicates quickly */
	w = strrchr(buf, '{');
	w[-1] = ']';
	w[0] = '}';
	CHECK_RC(policy_parse(buf, (size_t)(w + 1 - buf), "t.json", &p, &err), WRIT_OK);
	CHECK(p != NULL && policy_rule_count(p) == POLICY_MAX_RULES);
	policy_unref(p);

	/* 17 distinct lim names across the policy */
	w = put(buf, end, "{\"version\":1,\"rules\":[");
	for (i = 0; i <= POLICY_LIM_MAX; i++) {
		snprintf(one, sizeof(one),
		         "%s{\"id\":\"r%zu\",\"effect\":\"allow\",\"subjects\":[\"a\"],"
		         "\"audiences\":[\"b\"],\"actions\":[\"c\"],\"lim\":{\"l%zu\":1}}",
		         i == 0 ? "" : ",", i, i);
		w = put(w, end, one);
	}
	w = put(w, end, "]}");
	CHECK_RC(policy_parse(buf, (size_t)(w - buf), "t.json", &p, &err), WRIT_ERR_CONFIG);
	CHECK(strstr(err.msg, "rules[16] (id \"r16\"): lim: \"l16\" would make more than 16") !=
	      NULL);
	free(buf);
}

static void test_too_many_rate_limits_fail_closed(void)
{
	size_t cap = 64 * 1024, i;
	char *buf = malloc(cap), *w, *end = buf + cap, one[200];
	writ_err err = {0};
	policy *p = NULL;

	REQUIRE(buf != NULL);
	w = put(buf, end, "{\"version\":1,\"rules\":[");
	for (i = 0; i <= POLICY_MAX_RATES; i++) {
		snprintf(one, sizeof(one),
		         "%s{\"id\":\"r%zu\",\"effect\":\"allow\",\"subjects\":[\"*\"],"
		         "\"audiences\":[\"svc\"],\"actions\":[\"c\"],\"rate\":\"5/sec\"}",
		         i == 0 ? "" : ",", i);
		w = put(w, end, one);
	}
	w = put(w, end, "]}");
	REQUIRE(policy_parse(buf, (size_t)(w - buf), "t.json", &p, &err) == WRIT_OK);
	CHECK_RC(decide(p, "x", NULL, "svc", "c"), WRIT_ERR_TOO_LARGE);
	CHECK(dec.outcome == POLICY_NOTHING_GRANTED && dec.scope[0] == '\0');
	policy_unref(p);
	free(buf);
}

static void test_example_policy_gives_demo_decisions(void)
{
	const char *analysts[1] = {"analysts"};
	const char *admins[1] = {"db-admins"};
	policy_subject demo = {"demo-agent", analysts, 1};
	policy_subject admin = {"dba-1", admins, 1};
	writ_err err = {0};
	policy *p = NULL;
	const policy_action *a;
	char *json;

	CHECK_RC(policy_load(tu_data("../../examples/policy.json"), &p, &err), WRIT_OK);
	if (p == NULL) {
		fprintf(stderr, "%s\n", err.msg);
		return;
	}
	CHECK(policy_rule_count(p) == 5);
	CHECK_RC(policy_decide(p, &demo, "orders-db", "db:read db:write", &dec, &err), WRIT_OK);
	CHECK(dec.outcome == POLICY_GRANTED);
	CHECK(strcmp(dec.scope, "db:read") == 0);
	a = action("db:read");
	CHECK(a != NULL && a->verdict == POLICY_ALLOWED &&
	      strcmp(a->allowed_by, "analysts-read-orders") == 0);
	a = action("db:write");
	CHECK(a != NULL && a->verdict == POLICY_DENIED &&
	      strcmp(a->denied_by, "block-writes") == 0);
	/* demo-agent's own rule allows "db:*", and still the block wins */
	CHECK(a != NULL && a->allowed_by != NULL &&
	      strcmp(a->allowed_by, "demo-agent-schema") == 0);
	CHECK(strcmp(dec.rule_id, "analysts-read-orders") == 0);
	CHECK(dec.ttl == 300);
	CHECK(dec.nlim == 1 && strcmp(dec.lim[0].name, "rps") == 0 && dec.lim[0].value == 5);
	CHECK(dec.nrate == 1 && dec.rate[0].n == 60 && dec.rate[0].period_s == 60);
	json = policy_decision_json(&dec);
	CHECK(json != NULL && strstr(json, "\"outcome\":\"granted\"") != NULL &&
	      strstr(json, "\"scope\":\"db:read\"") != NULL);
	free(json);

	/* scope by agent: only demo-agent may describe tables */
	CHECK_RC(policy_decide(p, &demo, "orders-db", "db:describe", &dec, &err), WRIT_OK);
	CHECK(dec.outcome == POLICY_GRANTED && dec.ttl == 600 && dec.nrate == 0);
	demo.agent = "analyst-7";
	CHECK_RC(policy_decide(p, &demo, "orders-db", "db:describe", &dec, &err), WRIT_OK);
	CHECK(dec.outcome == POLICY_NOTHING_GRANTED);
	CHECK_RC(policy_decide(p, &demo, "billing-api", "db:read", &dec, &err), WRIT_OK);
	CHECK(dec.outcome == POLICY_AUDIENCE_UNKNOWN);

	/* admins write through the migration service only */
	CHECK_RC(policy_decide(p, &admin, "db-migrations", "migrate:apply", &dec, &err), WRIT_OK);
	CHECK(dec.outcome == POLICY_GRANTED && dec.ttl == 120);
	CHECK_RC(policy_decide(p, &admin, "orders-db", "db:write", &dec, &err), WRIT_OK);
	CHECK(dec.outcome == POLICY_AUDIENCE_UNKNOWN);
	CHECK_RC(policy_decide(p, &demo, "db-migrations", "migrate:apply", &dec, &err), WRIT_OK);
	CHECK(dec.outcome == POLICY_AUDIENCE_UNKNOWN);
	policy_unref(p);
}

static void test_hash_is_sha256_of_the_bytes(void)
{
	const char *doc = "{\"version\":1,\"rules\":[]}";
	const char *doc2 = "{\"version\":1, \"rules\":[]}";
	policy *a = NULL, *b = NULL, *c = NULL;

	CHECK_RC(policy_parse(doc, strlen(doc), "a", &a, NULL), WRIT_OK);
	CHECK_RC(policy_parse(doc, strlen(doc), "b", &b, NULL), WRIT_OK);
	CHECK_RC(policy_parse(doc2, strlen(doc2), "c", &c, NULL), WRIT_OK);
	REQUIRE(a != NULL && b != NULL && c != NULL);
	CHECK(strcmp(policy_hash(a),
	             "6be6bac38f2d35217ca3cd98e36322f9e8fb6638564f5a87ff660589f6302103") == 0);
	CHECK(strcmp(policy_hash(a), policy_hash(b)) == 0);
	CHECK(strcmp(policy_hash(a), policy_hash(c)) != 0);
	CHECK(policy_rule_count(a) == 0);
	policy_unref(a);
	policy_unref(b);
	policy_unref(c);
}

static void test_refcount_and_slot_keep_old_policy_alive(void)
{
	policy *a = load(POL(ALLOW("old", "'*'", "'svc'", "'x'", "")));
	policy *b = load(POL(ALLOW("new", "'*'", "'svc'", "'x'", "")));
	policy *inflight, *now;
	policy_slot slot;

	policy_slot_init(&slot);
	CHECK(policy_slot_get(&slot) == NULL);
	policy_slot_set(&slot, a);
	inflight = policy_slot_get(&slot);
	CHECK(inflight == a);
	policy_slot_set(&slot, b); /* SIGHUP: the request in flight keeps a */
	CHECK_RC(decide(inflight, "z", NULL, "svc", "x"), WRIT_OK);
	CHECK(dec.rule_id != NULL && strcmp(dec.rule_id, "old") == 0);
	policy_unref(inflight);
	now = policy_slot_get(&slot);
	CHECK(now == b);
	CHECK(policy_ref(now) == now);
	policy_unref(now);
	policy_unref(now);
	policy_slot_destroy(&slot);
	policy_free(NULL);
}

typedef struct reader {
	policy_slot *slot;
	long decided;
} reader;

static void *reader_run(void *arg)
{
	static const char *const groups[1] = {"g"};
	policy_subject s = {"agent", groups, 1};
	policy_decision *d = malloc(sizeof(*d));
	reader *r = arg;
	int i;

	if (d == NULL) /* the harness counters are not thread-safe: no REQUIRE here */
		return NULL;
	for (i = 0; i < 2000; i++) {
		policy *p = policy_slot_get(r->slot);

		if (p == NULL)
			continue;
		if (policy_decide(p, &s, "svc", "x y", d, NULL) == WRIT_OK &&
		    d->outcome == POLICY_GRANTED && d->rule_id != NULL)
			r->decided++;
		policy_unref(p);
	}
	free(d);
	return NULL;
}

/* Requests decide while reloads swap the policy under them: every
 * decision completes against a live policy (ASan/TSan builds check it). */
static void test_reload_while_deciding(void)
{
	policy_slot slot;
	pthread_t t[4];
	reader r[4];
	int i;

	policy_slot_init(&slot);
	policy_slot_set(&slot, load(POL(ALLOW("v0", "'group:g'", "'svc'", "'x'", ""))));
	for (i = 0; i < 4; i++) {
		r[i] = (reader){&slot, 0};
		REQUIRE(pthread_create(&t[i], NULL, reader_run, &r[i]) == 0);
	}
	for (i = 0; i < 200; i++)
		policy_slot_set(&slot, load(POL(ALLOW("v1", "'*'", "'svc'", "'x','y'", ""))));
	for (i = 0; i < 4; i++) {
		pthread_join(t[i], NULL);
		CHECK(r[i].decided == 2000);
	}
	policy_slot_destroy(&slot);
}

static void test_load_errors(void)
{
	writ_err err = {0};
	policy *p = (policy *)1;

	CHECK_RC(policy_load("/nonexistent/policy.json", &p, &err), WRIT_ERR_IO);
	CHECK(p == NULL);
	CHECK(strstr(err.msg, "/nonexistent/policy.json") != NULL);
	CHECK_RC(policy_load("/", &p, &err), WRIT_ERR_IO);
}

int main(void)
{
	RUN(test_default_deny);
	RUN(test_deny_beats_allow_in_either_order);
	RUN(test_granted_is_subset_of_requested);
	RUN(test_subject_wildcards_and_groups);
	RUN(test_several_groups);
	RUN(test_audience_not_allowed_to_agent_is_invalid_target);
	RUN(test_ttl_is_min_of_granting_rules);
	RUN(test_lim_merge_and_rates);
	RUN(test_malformed_scope_is_its_own_error);
	RUN(test_every_parse_error_names_rule_and_field);
	RUN(test_duplicate_json_keys_refused);
	RUN(test_caps);
	RUN(test_too_many_rate_limits_fail_closed);
	RUN(test_example_policy_gives_demo_decisions);
	RUN(test_hash_is_sha256_of_the_bytes);
	RUN(test_refcount_and_slot_keep_old_policy_alive);
	RUN(test_reload_while_deciding);
	RUN(test_load_errors);
	return tu_finish();
}
