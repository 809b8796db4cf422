/*
 * cmd_audit.c - writ audit verify | query: check the audit log's hash
 * chain and signed checkpoints, and answer "which agent used which
 * credential, where, under which rule" (SPEC s.7). Reads the file only;
 * never needs the HSM or the configuration.
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "audit.h"
#include "cli.h"
#include "store.h"
#include "writ_int.h"

static void usage(FILE *f)
{
	fprintf(f, "usage: writ audit verify FILE [--jwks FILE | --no-signatures]\n"
	           "                              [--checkpoint-every N] [--json]\n"
	           "       writ audit query FILE [--agent ID] [--jti JTI] [--audience AUD]\n"
	           "                             [--event EVENT] [--since TIME] [--json]\n\n"
	           "verify: check every line of the audit log: seq without gaps, each line's\n"
	           "        SHA-256 in the next one's prev, and the signed checkpoints. With\n"
	           "        --jwks (the issuer's JWK Set, retired keys included), or else with\n"
	           "        the public keys the store keeps of every signing key, checkpoint\n"
	           "        signatures are verified too; with neither it refuses, since whoever\n"
	           "        edits the file can recompute a bare chain (--no-signatures checks the\n"
	           "        chain only, and says so). Checkpoints must come at least every N\n"
	           "        records (default: checkpoint_every of the configuration, else 1000)\n"
	           "        and after a clean stop, so removing them is seen too. Exit 0 if\n"
	           "        intact, 1 naming the first edited, dropped, reordered or truncated\n"
	           "        record or the missing checkpoints.\n"
	           "query:  print the records matching every given filter as a table, or the\n"
	           "        raw lines with --json. TIME is UTC RFC 3339 (2025-01-02T03:04:05Z,\n"
	           "        2025-01-02) or relative (-30m, -1h, -7d). Does not check the chain:\n"
	           "        run verify for that.\n");
}

static const char *problem_key(audit_problem p)
{
	static const char *const keys[] = {
	    [AUDIT_OK] = "ok",
	    [AUDIT_MALFORMED] = "malformed",
	    [AUDIT_EDITED] = "edited",
	    [AUDIT_DROPPED] = "dropped",
	    [AUDIT_REORDERED] = "reordered",
	    [AUDIT_TRUNCATED] = "truncated",
	    [AUDIT_BAD_CHECKPOINT] = "bad_checkpoint",
	    [AUDIT_BAD_SIGNATURE] = "bad_signature",
	    [AUDIT_UNKNOWN_KID] = "unknown_kid",
	    [AUDIT_IO] = "io",
	    [AUDIT_UNSIGNED_RUN] = "checkpoints_missing",
	    [AUDIT_UNSIGNED_STOP] = "final_checkpoint_missing",
	};

	return (unsigned)p < sizeof(keys) / sizeof(keys[0]) ? keys[p] : "unknown";
}

static void print_json(json_t *o)
{
	char *s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);

	printf("%s\n", s != NULL ? s : "{}");
	free(s);
	json_decref(o);
}

/*
 * The public keys of every signing key the store has recorded, whatever
 * its state (removed and purged keys signed checkpoints too), as a JWK
 * Set; NULL when no configuration or store is at hand.
 */
/* Revoked signing keys: a checkpoint they signed after their revocation
 * proves nothing (the key was compromised). */
typedef struct revoked_key {
	char kid[WRIT_KID_MAX + 1];
	int64_t at; /* revoked_at, s */
} revoked_key;

typedef struct revoked_set {
	revoked_key *k;
	size_t n;
	audit_report *rep;
} revoked_set;

/* A revocation takes a moment to reach every issuer (and the HSM object
 * is destroyed right after the store records it). */
#define REVOKE_GRACE_S 2

static int late_checkpoint(void *arg, const char *line, size_t len, const json_t *rec)
{
	revoked_set *rs = arg;
	const char *kid = json_string_value(json_object_get(rec, "kid"));
	const char *ts = json_string_value(json_object_get(rec, "ts"));
	int64_t ms;
	size_t i;

	(void)line, (void)len;
	if (kid == NULL || ts == NULL || audit_ts_parse(ts, strlen(ts), &ms) != 0)
		return 0;
	for (i = 0; i < rs->n; i++) {
		if (strcmp(rs->k[i].kid, kid) != 0 || ms <= (rs->k[i].at + REVOKE_GRACE_S) * 1000)
			continue;
		rs->rep->problem = AUDIT_BAD_SIGNATURE;
		rs->rep->line = (uint64_t)json_integer_value(json_object_get(rec, "seq"));
		snprintf(rs->rep->detail, sizeof(rs->rep->detail),
		         "checkpoint signed at %s by key %.43s, revoked before that: whoever held "
		         "the compromised key could have signed it",
		         ts, kid);
		return 1;
	}
	return 0;
}

static writ_jwks *store_jwks(size_t *missing, revoked_set *rs)
{
	writ_config cfg;
	writ_err err = {0};
	store_sk *rows = NULL;
	store *st = NULL;
	writ_jwks *set = NULL;
	json_t *doc, *keys;
	size_t n = 0, i;
	char *json;

	*missing = 0;
	if (!cli_config_available())
		return NULL;
	cli_load_config(&cfg);
	/* With a configuration the store's keys are the ones to check with:
	 * a store that cannot be read is an error, not a log whose
	 * signatures quietly go unchecked. */
	if (store_open(cfg.state_db, 0, &st, &err) != WRIT_OK)
		cli_die(
		    "audit verify: cannot read the signing keys in %s: %s (pass --jwks FILE, or "
		    "--no-signatures to check the hash chain only)",
		    cfg.state_db, err.msg);
	if (store_sk_list(st, &rows, &n, &err) != WRIT_OK)
		cli_die_err("audit verify: signing keys", err.rc, &err);
	store_close(st);
	rs->k = calloc(n + 1, sizeof(*rs->k));
	if (rs->k == NULL)
		cli_die("out of memory");
	for (i = 0; i < n; i++)
		if (rows[i].state == STORE_SK_REVOKED) {
			snprintf(rs->k[rs->n].kid, sizeof(rs->k[0].kid), "%s", rows[i].kid);
			rs->k[rs->n++].at = rows[i].revoked_at;
		}
	keys = json_array();
	doc = json_pack("{s:o}", "keys", keys);
	for (i = 0; doc != NULL && i < n; i++) {
		json_t *k = rows[i].jwk[0] != '\0' ? json_loads(rows[i].jwk, 0, NULL) : NULL;
		if (k == NULL)
			(*missing)++;
		else
			json_array_append_new(keys, k);
	}
	free(rows);
	json = doc != NULL ? json_dumps(doc, JSON_COMPACT) : NULL;
	json_decref(doc);
	if (json == NULL)
		cli_die("out of memory");
	if (writ_jwks_parse(json, strlen(json), WRIT_JWKS_KID_IS_THUMBPRINT, &set, &err) != WRIT_OK)
		cli_die_err("audit verify: the store's signing keys", err.rc, &err);
	free(json);
	return set;
}

static int audit_verify_cmd(int argc, char **argv)
{
	static const struct option opts[] = {{"jwks", required_argument, 0, 'k'},
	                                     {"json", no_argument, 0, 'j'},
	                                     {"checkpoint-every", required_argument, 0, 'e'},
	                                     {"no-signatures", no_argument, 0, 'n'},
	                                     {0, 0, 0, 0}};
	unsigned long every = 0;
	revoked_set rs = {0};
	size_t missing = 0;
	char *end;
	const char *jwks_path = NULL, *path;
	writ_jwks *set = NULL;
	audit_report rep;
	writ_err err = {0};
	char *buf;
	size_t len;
	writ_rc rc;
	int c, json = 0, no_sigs = 0;

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (c == 'k')
			jwks_path = optarg;
		else if (c == 'n')
			no_sigs = 1;
		else if (c == 'j')
			json = 1;
		else if (c == 'e') {
			every = strtoul(optarg, &end, 10);
			if (*end != '\0' || every == 0 || every > 1000000 || optarg[0] == '-')
				cli_die("audit verify: --checkpoint-every must be 1..1000000");
		} else
			return 2;
	}
	if (every == 0 && cli_config_available()) {
		writ_config cfg;
		cli_load_config(&cfg);
		every = cfg.checkpoint_every;
	}
	if (argc - optind != 1) {
		usage(stderr);
		return 2;
	}
	path = argv[optind];
	if (jwks_path != NULL && no_sigs)
		cli_die("audit verify: --jwks and --no-signatures exclude each other");
	if (no_sigs) {
		set = NULL;
	} else if (jwks_path != NULL) {
		buf = cli_read_input(jwks_path, WRIT_JWKS_MAX_BYTES, &len);
		rc = writ_jwks_parse(buf, len, WRIT_JWKS_KID_IS_THUMBPRINT, &set, &err);
		free(buf);
		if (rc != WRIT_OK)
			cli_die_err("audit verify: JWK Set", rc, &err);
	} else {
		set = store_jwks(&missing, &rs);
		/* A hash chain alone proves nothing against whoever can write
		 * the file: they recompute it. Without keys this is no check. */
		if (set == NULL)
			cli_die(
			    "audit verify: no keys to check the checkpoint signatures with: pass "
			    "--jwks FILE or -c CONFIG (the store's keys), or --no-signatures to "
			    "check the hash chain only");
	}
	rc = audit_verify_file(path, set, &rep, &err);
	writ_jwks_free(set);
	if (rc != WRIT_OK)
		cli_die_err("audit verify", rc, &err);
	audit_check_signing(&rep, every != 0 ? every : 1000);
	rs.rep = &rep;
	if (rep.problem == AUDIT_OK && rs.n > 0) {
		audit_filter f = {.event = "checkpoint"};
		rc = audit_query_file(path, &f, late_checkpoint, &rs, NULL, &err);
		if (rc != WRIT_OK)
			cli_die_err("audit verify", rc, &err);
	}
	free(rs.k);
	if (json) {
		json_t *o =
		    json_pack("{s:s, s:b, s:I, s:I, s:I, s:b, s:I, s:s}", "file", path, "ok",
		              rep.problem == AUDIT_OK, "records", (json_int_t)rep.records,
		              "checkpoints", (json_int_t)rep.checkpoints, "last_seq",
		              (json_int_t)rep.last_seq, "signatures_verified", rep.sigs_checked,
		              "unsigned_tail", (json_int_t)rep.unsigned_tail, "head", rep.head);
		if (o != NULL && rep.problem != AUDIT_OK) {
			json_object_set_new(o, "problem", json_string(problem_key(rep.problem)));
			json_object_set_new(o, "line", json_integer((json_int_t)rep.line));
			json_object_set_new(o, "detail", json_string(rep.detail));
		}
		print_json(o);
	} else if (rep.problem != AUDIT_OK) {
		printf("%s:%" PRIu64 ": %s (%s)\n", path, rep.line, audit_problem_name(rep.problem),
		       rep.detail);
	} else {
		printf("%s: ok, %" PRIu64 " records, %" PRIu64 " checkpoints (%s), head %s", path,
		       rep.records, rep.checkpoints,
		       no_sigs             ? "signatures not checked: --no-signatures"
		       : !rep.sigs_checked ? "signatures not checked"
		       : jwks_path != NULL ? "signatures verified"
		                           : "signatures verified with the store's keys",
		       rep.head);
		if (rep.unsigned_tail > 0)
			printf(", %" PRIu64 " records after the last checkpoint (unsigned tail)",
			       rep.unsigned_tail);
		printf("\n");
		if (missing > 0)
			fprintf(
			    stderr,
			    "writ: audit verify: %zu signing key(s) in the store have no public "
			    "key recorded (made before it was kept, and purged since)\n",
			    missing);
	}
	return rep.problem == AUDIT_OK ? 0 : 1;
}

/* --since: absolute UTC time or -N{s,m,h,d} before now; ms since epoch. */
static int64_t parse_since(const char *s)
{
	char buf[AUDIT_TS_LEN + 1];
	size_t n = strlen(s);
	unsigned long long v;
	int64_t ms, unit;
	char *end;

	if (s[0] == '-') {
		v = strtoull(s + 1, &end, 10);
		unit = strcmp(end, "s") == 0   ? 1
		       : strcmp(end, "m") == 0 ? 60
		       : strcmp(end, "h") == 0 ? 3600
		       : strcmp(end, "d") == 0 ? 86400
		                               : 0;
		if (end == s + 1 || unit == 0 ||
		    v > 100ULL * 365 * 86400 / (unsigned long long)unit)
			cli_die("audit query: --since %s: use -N followed by s, m, h or d", s);
		return ((int64_t)time(NULL) - (int64_t)v * unit) * 1000;
	}
	if (n == 10)
		snprintf(buf, sizeof(buf), "%.10sT00:00:00.000Z", s);
	else if (n == 20 && s[19] == 'Z')
		snprintf(buf, sizeof(buf), "%.19s.000Z", s);
	else if (n == AUDIT_TS_LEN)
		snprintf(buf, sizeof(buf), "%s", s);
	else
		buf[0] = '\0';
	if (audit_ts_parse(buf, strlen(buf), &ms) != 0)
		cli_die("audit query: --since %s: not a UTC time like 2025-01-02T03:04:05Z", s);
	return ms;
}

/* Record values come from requests: keep terminal control bytes out.
 * width 0: last column; negative: cut to -width (kids are hashes, a
 * prefix tells them apart; agent ids are never cut). */
static void print_cell(const json_t *rec, const char *name, int width)
{
	const char *v = json_string_value(json_object_get(rec, name));
	char buf[128];
	size_t i;

	if (v == NULL || v[0] == '\0')
		v = "-";
	snprintf(buf, sizeof(buf), "%s", v);
	for (i = 0; buf[i] != '\0'; i++)
		if ((unsigned char)buf[i] < 0x20 || buf[i] == 0x7f)
			buf[i] = '?';
	if (width > 0)
		printf("%-*s ", width, buf);
	else if (width < 0)
		printf("%-*.*s ", -width, -width, buf);
	else
		fputs(buf, stdout);
}

struct qctx {
	int json;
	uint64_t n;
};

static int query_row(void *arg, const char *line, size_t len, const json_t *rec)
{
	struct qctx *q = arg;

	q->n++;
	if (q->json) {
		fwrite(line, 1, len, stdout);
		putchar('\n');
		return 0;
	}
	print_cell(rec, "ts", 24);
	print_cell(rec, "event", 14);
	print_cell(rec, "agent", 20);
	print_cell(rec, "audience", 16);
	print_cell(rec, "scope_granted", 20);
	print_cell(rec, "jti", 22);
	print_cell(rec, "kid", -12);
	print_cell(rec, "rule", 0);
	putchar('\n');
	return 0;
}

static int audit_query_cmd(int argc, char **argv)
{
	static const struct option opts[] = {{"agent", required_argument, 0, 'a'},
	                                     {"jti", required_argument, 0, 't'},
	                                     {"audience", required_argument, 0, 'u'},
	                                     {"event", required_argument, 0, 'e'},
	                                     {"since", required_argument, 0, 's'},
	                                     {"json", no_argument, 0, 'j'},
	                                     {0, 0, 0, 0}};
	audit_filter f = {0};
	struct qctx q = {0};
	uint64_t skipped = 0;
	writ_err err = {0};
	writ_rc rc;
	int c;

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'a': f.agent = optarg; break;
		case 't': f.jti = optarg; break;
		case 'u': f.audience = optarg; break;
		case 'e': f.event = optarg; break;
		case 's': f.since_ms = parse_since(optarg); break;
		case 'j': q.json = 1; break;
		default: return 2;
		}
	}
	if (argc - optind != 1) {
		usage(stderr);
		return 2;
	}
	if (!q.json)
		printf("%-24s %-14s %-20s %-16s %-20s %-22s %-12s %s\n", "TS", "EVENT", "AGENT",
		       "AUDIENCE", "GRANTED", "JTI", "KID", "RULE");
	rc = audit_query_file(argv[optind], &f, query_row, &q, &skipped, &err);
	if (rc != WRIT_OK)
		cli_die_err("audit query", rc, &err);
	if (skipped > 0)
		fprintf(stderr,
		        "writ: audit query: %" PRIu64 " lines are not records; "
		        "run 'writ audit verify %s'\n",
		        skipped, argv[optind]);
	return 0;
}

int audit_main(int argc, char **argv)
{
	if (argc < 2 || cli_wants_help(argc, argv)) {
		usage(argc < 2 ? stderr : stdout);
		return argc < 2 ? 2 : 0;
	}
	if (strcmp(argv[1], "verify") == 0)
		return audit_verify_cmd(argc - 1, argv + 1);
	if (strcmp(argv[1], "query") == 0)
		return audit_query_cmd(argc - 1, argv + 1);
	cli_die("audit: unknown subcommand \"%s\" (verify, query)", argv[1]);
}
