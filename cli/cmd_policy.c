/*
 * cmd_policy.c - writ policy check | explain: the policy file as the
 * issuer reads it (issuer/core/policy.c), so what `check` accepts is what
 * the daemon loads and what `explain` says is what the daemon decides.
 */
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "policy.h"
#include "writ_int.h"

/* explain's exit status when the decision grants nothing: not an error
 * (1) nor a usage mistake (2), so scripts can tell the three apart. */
#define EXIT_NOTHING_GRANTED 3

static void usage(FILE *f)
{
	fprintf(f,
	        "usage: writ policy check [--json] [FILE]\n"
	        "       writ policy explain [--policy FILE] [--json] AGENT AUDIENCE \"ACTIONS\"\n"
	        "       writ policy explain [--policy FILE] [--json] --agent ID [--group G]...\n"
	        "                           --audience AUD --scope \"ACTIONS\"\n\n"
	        "check:   parse FILE strictly, as the issuer does on start and SIGHUP; print\n"
	        "         \"FILE: ok, N rules, sha256 HASH\" or one line naming the rule and\n"
	        "         field at fault (exit 1).\n"
	        "explain: say which rule allows or denies each requested action and why, then\n"
	        "         the granted scope, TTL, lim and rate limits the token would get.\n"
	        "         --group may be repeated (the agent's groups). Exits 0 when something\n"
	        "         is granted, 3 when nothing is (the issuer answers invalid_scope, or\n"
	        "         invalid_target when no allow rule for the agent names the audience).\n\n"
	        "FILE / --policy default to the config's policy (-c CONFIG, policy = ...).\n");
}

static const char *config_policy_path(void)
{
	static writ_config cfg;

	cli_load_config(&cfg);
	return cfg.policy;
}

static policy *load_or_die(const char *path)
{
	writ_err err = {0};
	policy *p = NULL;
	writ_rc rc = policy_load(path, &p, &err);

	/* The message already names the file, the rule and the field. */
	if (rc != WRIT_OK)
		cli_die("%s", err.msg[0] != '\0' ? err.msg : writ_strerror(rc));
	return p;
}

static int policy_check(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"json", no_argument, 0, 'j'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
	const char *path;
	int c, json = 0;
	policy *p;

	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'j': json = 1; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (argc - optind > 1) {
		usage(stderr);
		return 2;
	}
	path = optind < argc ? argv[optind] : config_policy_path();
	p = load_or_die(path);
	if (json) {
		json_t *o = json_pack("{s:s, s:b, s:I, s:s}", "file", path, "ok", 1, "rules",
		                      (json_int_t)policy_rule_count(p), "sha256", policy_hash(p));
		char *s = o != NULL ? wjson_dump(o) : NULL;

		if (s == NULL)
			cli_die("out of memory");
		printf("%s\n", s);
		free(s);
		json_decref(o);
	} else {
		printf("%s: ok, %zu rules, sha256 %s\n", path, policy_rule_count(p),
		       policy_hash(p));
	}
	policy_unref(p);
	return 0;
}

/* Text form: who asked, then the decision line by line. */
static void explain_text(const policy *p, const policy_subject *s, const char *audience,
                         const policy_decision *d)
{
	size_t i;

	printf("policy:   %s (%zu rules, sha256 %s)\n", policy_name(p), policy_rule_count(p),
	       policy_hash(p));
	printf("agent:    %s", s->agent);
	for (i = 0; i < s->ngroups; i++)
		printf("%s%s", i == 0 ? " (groups: " : ", ", s->groups[i]);
	printf("%s\naudience: %s\n", s->ngroups > 0 ? ")" : "", audience);
	policy_decision_explain(d, stdout);
	/* The why: each rule named above, with its description. */
	for (i = 0; i < d->naction; i++) {
		const char *ids[2] = {d->action[i].denied_by, d->action[i].allowed_by};
		size_t k, j;

		for (k = 0; k < 2; k++) {
			const char *desc;

			if (ids[k] == NULL || (desc = policy_rule_description(p, ids[k])) == NULL)
				continue;
			for (j = 0; j < i; j++) /* once per rule */
				if (d->action[j].denied_by == ids[k] ||
				    d->action[j].allowed_by == ids[k])
					break;
			if (j == i && !(k == 1 && ids[0] == ids[1]))
				printf("why %s: %s\n", ids[k], desc);
		}
	}
}

/* JSON form: the decision's own JSON inside a record of the request. */
static void explain_json(const policy *p, const policy_subject *s, const char *audience,
                         const char *scope, const policy_decision *d)
{
	char *dj = policy_decision_json(d), *out = NULL;
	json_t *o = NULL, *dec = NULL, *groups = json_array();
	size_t i;

	if (dj != NULL)
		dec = json_loads(dj, 0, NULL);
	for (i = 0; groups != NULL && i < s->ngroups; i++)
		json_array_append_new(groups, json_string(s->groups[i]));
	if (dec != NULL && groups != NULL)
		o = json_pack("{s:s, s:s, s:s, s:o, s:s, s:s, s:o}", "policy", policy_name(p),
		              "sha256", policy_hash(p), "agent", s->agent, "groups", groups,
		              "audience", audience, "requested", scope, "decision", dec);
	else
		json_decref(groups);
	if (o != NULL)
		out = wjson_dump(o);
	else
		json_decref(dec);
	if (out == NULL)
		cli_die("out of memory");
	printf("%s\n", out);
	free(out);
	free(dj);
	json_decref(o);
}

static int policy_explain(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"policy", required_argument, 0, 'p'}, {"agent", required_argument, 0, 'a'},
	    {"group", required_argument, 0, 'g'},  {"audience", required_argument, 0, 'u'},
	    {"scope", required_argument, 0, 's'},  {"json", no_argument, 0, 'j'},
	    {"help", no_argument, 0, 'h'},         {0, 0, 0, 0}};
	const char *groups[POLICY_MAX_GROUPS];
	const char *path = NULL, *audience = NULL, *scope = NULL;
	policy_subject subj = {NULL, groups, 0};
	policy_decision *d;
	writ_err err = {0};
	int c, json = 0, rcode;
	writ_rc rc;
	policy *p;

	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'p': path = optarg; break;
		case 'a': subj.agent = optarg; break;
		case 'g':
			if (subj.ngroups == POLICY_MAX_GROUPS)
				cli_die("policy explain: more than %d --group", POLICY_MAX_GROUPS);
			groups[subj.ngroups++] = optarg;
			break;
		case 'u': audience = optarg; break;
		case 's': scope = optarg; break;
		case 'j': json = 1; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	/* SPEC s.9 form: AGENT AUDIENCE ACTIONS, for what the flags left out. */
	if (optind < argc && subj.agent == NULL)
		subj.agent = argv[optind++];
	if (optind < argc && audience == NULL)
		audience = argv[optind++];
	if (optind < argc && scope == NULL)
		scope = argv[optind++];
	if (optind < argc)
		cli_die("policy explain: unexpected argument \"%s\"", argv[optind]);
	if (subj.agent == NULL || audience == NULL || scope == NULL) {
		usage(stderr);
		return 2;
	}
	p = load_or_die(path != NULL ? path : config_policy_path());
	d = malloc(sizeof(*d));
	if (d == NULL)
		cli_die("out of memory");
	rc = policy_decide(p, &subj, audience, scope, d, &err);
	if (rc != WRIT_OK)
		cli_die("policy explain: %s", err.msg[0] != '\0' ? err.msg : writ_strerror(rc));
	if (json)
		explain_json(p, &subj, audience, scope, d);
	else
		explain_text(p, &subj, audience, d);
	rcode = d->outcome == POLICY_GRANTED ? 0 : EXIT_NOTHING_GRANTED;
	free(d);
	policy_unref(p);
	return rcode;
}

int policy_main(int argc, char **argv)
{
	if (argc < 2 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
		usage(argc < 2 ? stderr : stdout);
		return argc < 2 ? 2 : 0;
	}
	if (strcmp(argv[1], "check") == 0)
		return policy_check(argc - 1, argv + 1);
	if (strcmp(argv[1], "explain") == 0)
		return policy_explain(argc - 1, argv + 1);
	cli_die("policy: unknown subcommand \"%s\" (check, explain)", argv[1]);
}
