/*
 * cmd_agent.c - writ agent add | list | show | disable | enable | revoke |
 * key add | key remove: the agents the issuer will accept assertions from,
 * kept in the state store the issuer reads on every request (so a change
 * here applies from the issuer's next request on).
 */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "cli.h"
#include "store.h"
#include "writ_int.h"

#define KEY_FILE_MAX (64 * 1024)

static const char *db_opt; /* --db FILE */

static void usage(FILE *f)
{
	fprintf(f, "usage: writ agent [--db FILE] add ID --key FILE [--alg ALG] [--group G]...\n"
	           "       writ agent [--db FILE] list [--json]\n"
	           "       writ agent [--db FILE] show ID [--json]\n"
	           "       writ agent [--db FILE] disable ID [--reason TEXT]\n"
	           "       writ agent [--db FILE] enable ID\n"
	           "       writ agent [--db FILE] revoke ID [--reason TEXT]\n"
	           "       writ agent [--db FILE] key add ID --key FILE [--alg ALG]\n"
	           "       writ agent [--db FILE] key remove ID KID\n"
	           "       writ agent [--db FILE] group add|remove ID GROUP\n\n"
	           "Agents prove who they are with a JWT signed by their registered key.\n"
	           "ID:   1..128 of A-Z a-z 0-9 . _ : @ -   (groups: the same, 1..64, at most 32)\n"
	           "FILE: the agent's PUBLIC key: PEM (BEGIN PUBLIC KEY) or a public JWK.\n"
	           "ALG:  pinned to the key. Default from the key: EC P-256 ES256, P-384 ES384,\n"
	           "      Ed25519 EdDSA, RSA RS256 (or --alg PS256).\n"
	           "disable is undone by enable; revoke is permanent and the id is never reused.\n"
	           "An agent keeps at least one key: add the new key before removing the old.\n"
	           "Key and group changes apply from the issuer's next request; a revoked\n"
	           "agent's record no longer changes.\n"
	           "--db defaults to $WRIT_HOME/writ.db.\n");
}

static const char *db_path(void)
{
	static char path[1100];

	if (db_opt != NULL)
		return db_opt;
	/* The issuer's database: state_db of the configuration, when there
	 * is one; else writ's own directory. */
	if (cli_config_available()) {
		writ_config cfg;
		cli_load_config(&cfg);
		snprintf(path, sizeof(path), "%s", cfg.state_db);
		return path;
	}
	snprintf(path, sizeof(path), "%s/writ.db", cli_home());
	return path;
}

/* Open the store or die. create: make the file (and $WRIT_HOME) if missing. */
static store *open_store(int create)
{
	writ_err err = {0};
	store *s = NULL;
	writ_rc rc;

	/* Only writ's own directory is made here; a --db elsewhere must have
	 * its directory already. */
	if (create && db_opt == NULL && !cli_config_available() && mkdir(cli_home(), 0700) != 0 &&
	    errno != EEXIST)
		cli_die("%s: %s", cli_home(), strerror(errno));
	rc = store_open(db_path(), create ? STORE_CREATE : 0, &s, &err);
	if (rc == WRIT_ERR_NOT_FOUND)
		cli_die("no state database at %s: register an agent with 'writ agent add', "
		        "or pass --db FILE",
		        db_path());
	if (rc != WRIT_OK)
		cli_die_err("agent", rc, &err);
	return s;
}

static writ_alg default_alg(EVP_PKEY *pk)
{
	char group[32];
	size_t glen = 0;

	if (EVP_PKEY_is_a(pk, "ED25519"))
		return WRIT_ALG_EDDSA;
	if (EVP_PKEY_is_a(pk, "RSA"))
		return WRIT_ALG_RS256;
	if (EVP_PKEY_is_a(pk, "EC") &&
	    EVP_PKEY_get_utf8_string_param(pk, "group", group, sizeof(group), &glen)) {
		if (strcmp(group, "prime256v1") == 0)
			return WRIT_ALG_ES256;
		if (strcmp(group, "secp384r1") == 0)
			return WRIT_ALG_ES384;
	}
	return WRIT_ALG_NONE;
}

static char *jwk_from_pem(const char *buf, size_t len, const char *path, writ_alg alg)
{
	BIO *bio = BIO_new_mem_buf(buf, (int)len);
	EVP_PKEY *pk = bio != NULL ? PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL) : NULL;
	writ_jwk *jwk = NULL;
	writ_err err = {0};
	char *json;

	BIO_free(bio);
	if (pk == NULL)
		cli_die("%s: not a PEM public key (expected -----BEGIN PUBLIC KEY-----)", path);
	if (alg == WRIT_ALG_NONE && (alg = default_alg(pk)) == WRIT_ALG_NONE)
		cli_die("%s: unsupported key type (EC P-256 / P-384, Ed25519 or RSA)", path);
	if (writ_jwk_from_pkey(pk, alg, &jwk, &err) != WRIT_OK)
		cli_die("%s: %s", path, err.msg);
	json = writ_jwk_to_json(jwk);
	writ_jwk_free(jwk);
	EVP_PKEY_free(pk);
	if (json == NULL)
		cli_die("out of memory");
	return json;
}

static const char *jwk_default_alg(const json_t *o)
{
	const char *kty = json_string_value(json_object_get(o, "kty"));
	const char *crv = json_string_value(json_object_get(o, "crv"));

	if (kty != NULL && strcmp(kty, "RSA") == 0)
		return "RS256";
	if (kty != NULL && crv != NULL && strcmp(kty, "EC") == 0 && strcmp(crv, "P-256") == 0)
		return "ES256";
	if (kty != NULL && crv != NULL && strcmp(kty, "EC") == 0 && strcmp(crv, "P-384") == 0)
		return "ES384";
	if (kty != NULL && crv != NULL && strcmp(kty, "OKP") == 0 && strcmp(crv, "Ed25519") == 0)
		return "EdDSA";
	return NULL;
}

/* A JWK file: fill in "alg" when absent (--alg or the key's default); an
 * "alg" that disagrees with --alg is an error, not silently replaced. */
static char *jwk_from_json(char *buf, size_t len, const char *path, writ_alg alg)
{
	writ_err err = {0};
	json_t *o = wjson_parse_object(buf, len, "JWK", &err);
	const char *have, *want;
	char *json;

	if (o == NULL)
		cli_die("%s: %s", path, err.msg);
	if (json_object_get(o, "d") != NULL) {
		OPENSSL_cleanse(buf, len);
		cli_die("%s holds a private key: pass the agent's public key", path);
	}
	have = json_string_value(json_object_get(o, "alg"));
	want = alg != WRIT_ALG_NONE ? writ_alg_name(alg) : NULL;
	if (have != NULL && want != NULL && strcmp(have, want) != 0)
		cli_die("%s: the JWK says \"alg\":\"%s\" but --alg is %s", path, have, want);
	if (have == NULL) {
		if (want == NULL && (want = jwk_default_alg(o)) == NULL)
			cli_die("%s: JWK has no \"alg\" and no default for its kty/crv: pass --alg",
			        path);
		json_object_set_new(o, "alg", json_string(want));
	}
	json = wjson_dump(o);
	json_decref(o);
	if (json == NULL)
		cli_die("out of memory");
	return json;
}

/* Read --key FILE as a public JWK (JSON), whatever its format. */
static char *read_public_key(const char *path, writ_alg alg)
{
	size_t len, i = 0;
	char *buf = cli_read_input(path, KEY_FILE_MAX, &len);
	char *json;

	/* A private key handed over by mistake: refuse it, and wipe our copy
	 * before anything else can happen to it. */
	if (strstr(buf, "PRIVATE KEY-----") != NULL) {
		OPENSSL_cleanse(buf, len);
		free(buf);
		cli_die("%s holds a private key: pass the agent's public key "
		        "(openssl pkey -in KEY -pubout)",
		        path);
	}
	while (i < len && (buf[i] == ' ' || buf[i] == '\t' || buf[i] == '\n' || buf[i] == '\r'))
		i++;
	if (i < len && buf[i] == '{')
		json = jwk_from_json(buf, len, path, alg);
	else
		json = jwk_from_pem(buf, len, path, alg);
	OPENSSL_cleanse(buf, len);
	free(buf);
	return json;
}

static writ_alg parse_alg(const char *s)
{
	writ_alg alg = writ_alg_from_name(s);

	if (alg == WRIT_ALG_NONE)
		cli_die("agent: unknown algorithm \"%s\" (ES256, ES384, RS256, PS256, EdDSA)", s);
	return alg;
}

static void check_id(const char *id)
{
	if (!store_id_valid(id))
		cli_die("agent: invalid agent id \"%.80s\" (1..%d of A-Z a-z 0-9 . _ : @ -)", id,
		        STORE_ID_MAX);
}

/* getopt for a subcommand: argv[0] is the subcommand's name. */
static void opt_reset(void)
{
	optind = 1;
	opterr = 1;
}

static int agent_add(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"key", required_argument, 0, 'k'},   {"alg", required_argument, 0, 'a'},
	    {"group", required_argument, 0, 'g'}, {"db", required_argument, 0, 'd'},
	    {"help", no_argument, 0, 'h'},        {0, 0, 0, 0}};
	const char *groups[STORE_GROUPS_MAX], *key_path = NULL, *id;
	char kid[WRIT_KID_MAX + 1], *jwk;
	writ_alg alg = WRIT_ALG_NONE;
	size_t ngroups = 0;
	writ_err err = {0};
	store *s;
	writ_rc rc;
	int c;

	opt_reset();
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'k': key_path = optarg; break;
		case 'a': alg = parse_alg(optarg); break;
		case 'd': db_opt = optarg; break;
		case 'g':
			if (ngroups == STORE_GROUPS_MAX)
				cli_die("agent add: at most %d groups", STORE_GROUPS_MAX);
			if (!store_group_valid(optarg))
				cli_die("agent add: invalid group name \"%.80s\" (1..%d of "
				        "A-Z a-z 0-9 . _ : @ -)",
				        optarg, STORE_GROUP_MAX);
			groups[ngroups++] = optarg;
			break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (argc - optind != 1 || key_path == NULL)
		cli_die(
		    "agent add: usage: writ agent add ID --key FILE [--alg ALG] [--group G]...");
	id = argv[optind];
	check_id(id);
	jwk = read_public_key(key_path, alg);
	s = open_store(1);
	rc = store_agent_add(s, id, groups, ngroups, jwk, kid, &err);
	free(jwk);
	store_close(s);
	if (rc != WRIT_OK)
		cli_die_err("agent add", rc, &err);
	printf("%s %s\n", id, kid);
	return 0;
}

static json_t *agent_json(const store_agent *a, int full)
{
	json_t *o = json_object(), *groups = json_array(), *keys = json_array();
	size_t i;

	for (i = 0; i < a->ngroups; i++)
		json_array_append_new(groups, json_string(a->groups[i]));
	for (i = 0; i < a->nkeys; i++) {
		const store_key *k = &a->keys[i];
		json_t *ko = json_pack("{s:s, s:s, s:I}", "kid", k->kid, "alg",
		                       writ_alg_name(k->alg), "added_at", (json_int_t)k->added_at);
		if (full && ko != NULL)
			json_object_set_new(ko, "jwk", writ_jwk_to_jansson(k->jwk));
		json_array_append_new(keys, ko);
	}
	json_object_set_new(o, "id", json_string(a->id));
	json_object_set_new(o, "status", json_string(store_status_name(a->status)));
	json_object_set_new(o, "reason",
	                    a->reason[0] != '\0' ? json_string(a->reason) : json_null());
	json_object_set_new(o, "groups", groups);
	json_object_set_new(o, "keys", keys);
	json_object_set_new(o, "created_at", json_integer(a->created_at));
	json_object_set_new(o, "updated_at", json_integer(a->updated_at));
	return o;
}

static void print_json(json_t *v)
{
	char *s = json_dumps(v, JSON_INDENT(2) | JSON_PRESERVE_ORDER);

	if (s == NULL)
		cli_die("out of memory");
	printf("%s\n", s);
	free(s);
}

static const char *iso_time(int64_t t, char buf[32])
{
	time_t tt = (time_t)t;
	struct tm tm;

	if (gmtime_r(&tt, &tm) == NULL || strftime(buf, 32, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		snprintf(buf, 32, "%lld", (long long)t);
	return buf;
}

/* Parse [--json] [--db FILE] and exactly `npos` positional arguments. */
static int simple_opts(int argc, char **argv, int npos, int *json, const char *what)
{
	static const struct option opts[] = {{"json", no_argument, 0, 'j'},
	                                     {"db", required_argument, 0, 'd'},
	                                     {"help", no_argument, 0, 'h'},
	                                     {0, 0, 0, 0}};
	int c;

	opt_reset();
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'j':
			if (json == NULL)
				cli_die("agent %s: no --json output", what);
			*json = 1;
			break;
		case 'd': db_opt = optarg; break;
		case 'h': usage(stdout); exit(0);
		default: usage(stderr); exit(2);
		}
	}
	if (argc - optind != npos)
		cli_die("agent %s: expected %d argument%s (see writ agent --help)", what, npos,
		        npos == 1 ? "" : "s");
	return optind;
}

static int agent_list(int argc, char **argv)
{
	char **ids = NULL, grp[STORE_GROUPS_MAX * (STORE_GROUP_MAX + 1) + 1];
	json_t *arr = json_array();
	writ_err err = {0};
	store_agent a;
	size_t n = 0, i, j;
	int json = 0;
	store *s;
	writ_rc rc;
	struct stat sb;

	simple_opts(argc, argv, 0, &json, "list");
	if (stat(db_path(), &sb) != 0 && errno == ENOENT) {
		/* nothing registered yet: an empty list, not an error */
		if (json)
			printf("[]\n");
		json_decref(arr);
		return 0;
	}
	s = open_store(0);
	rc = store_agent_list(s, &ids, &n, &err);
	if (rc != WRIT_OK)
		cli_die_err("agent list", rc, &err);
	for (i = 0; i < n; i++) {
		rc = store_agent_get(s, ids[i], &a, &err);
		if (rc == WRIT_ERR_NOT_FOUND)
			continue; /* removed since the list was read */
		if (rc != WRIT_OK)
			cli_die_err("agent list", rc, &err);
		if (json) {
			json_array_append_new(arr, agent_json(&a, 0));
		} else {
			size_t off = 0;

			grp[0] = '\0';
			for (j = 0; j < a.ngroups && off < sizeof(grp); j++)
				off += (size_t)snprintf(grp + off, sizeof(grp) - off, "%s%s",
				                        j > 0 ? "," : "", a.groups[j]);
			printf("%-40s %-8s keys=%zu groups=%s\n", a.id, store_status_name(a.status),
			       a.nkeys, grp[0] ? grp : "-");
		}
		store_agent_clear(&a);
	}
	if (json)
		print_json(arr);
	json_decref(arr);
	store_ids_free(ids, n);
	store_close(s);
	return 0;
}

static int agent_show(int argc, char **argv)
{
	int json = 0, pos = simple_opts(argc, argv, 1, &json, "show");
	const char *id = argv[pos];
	writ_err err = {0};
	store_agent a;
	char t[32];
	size_t i;
	store *s;
	writ_rc rc;

	check_id(id);
	s = open_store(0);
	rc = store_agent_get(s, id, &a, &err);
	store_close(s);
	if (rc != WRIT_OK)
		cli_die_err("agent show", rc, &err);
	if (json) {
		json_t *o = agent_json(&a, 1);
		print_json(o);
		json_decref(o);
	} else {
		printf("id:      %s\nstatus:  %s\n", a.id, store_status_name(a.status));
		if (a.reason[0] != '\0')
			printf("reason:  %s\n", a.reason);
		printf("groups: ");
		for (i = 0; i < a.ngroups; i++)
			printf(" %s", a.groups[i]);
		printf("%s\ncreated: %s\n", a.ngroups == 0 ? " -" : "", iso_time(a.created_at, t));
		printf("updated: %s\n", iso_time(a.updated_at, t));
		for (i = 0; i < a.nkeys; i++)
			printf("key:     %s %-5s added %s\n", a.keys[i].kid,
			       writ_alg_name(a.keys[i].alg), iso_time(a.keys[i].added_at, t));
	}
	store_agent_clear(&a);
	return 0;
}

static int agent_status(int argc, char **argv, store_status st)
{
	static const struct option opts[] = {{"reason", required_argument, 0, 'r'},
	                                     {"db", required_argument, 0, 'd'},
	                                     {"help", no_argument, 0, 'h'},
	                                     {0, 0, 0, 0}};
	const char *what = argv[0], *reason = NULL, *id;
	writ_err err = {0};
	int c, changed = 0;
	store *s;
	writ_rc rc;

	opt_reset();
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'r':
			if (st == STORE_ACTIVE)
				cli_die("agent enable: no --reason");
			reason = optarg;
			break;
		case 'd': db_opt = optarg; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (argc - optind != 1)
		cli_die("agent %s: expected one agent id", what);
	id = argv[optind];
	check_id(id);
	s = open_store(0);
	rc = store_agent_set_status(s, id, st, reason, &changed, &err);
	store_close(s);
	if (rc != WRIT_OK)
		cli_die_err(st == STORE_ACTIVE     ? "agent enable"
		            : st == STORE_DISABLED ? "agent disable"
		                                   : "agent revoke",
		            rc, &err);
	printf("%s %s%s\n", id, store_status_name(st), changed ? "" : " (unchanged)");
	return 0;
}

static int agent_key(int argc, char **argv)
{
	static const struct option opts[] = {{"key", required_argument, 0, 'k'},
	                                     {"alg", required_argument, 0, 'a'},
	                                     {"db", required_argument, 0, 'd'},
	                                     {"help", no_argument, 0, 'h'},
	                                     {0, 0, 0, 0}};
	const char *key_path = NULL;
	writ_alg alg = WRIT_ALG_NONE;
	char kid[WRIT_KID_MAX + 1], *jwk, *args[16];
	writ_err err = {0};
	int c, add;
	store *s;
	writ_rc rc;

	if (argc >= 2 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)) {
		usage(stdout);
		return 0;
	}
	if (argc < 2)
		cli_die("agent key: expected add or remove (see writ agent --help)");
	if (strcmp(argv[1], "add") != 0 && strcmp(argv[1], "remove") != 0)
		cli_die("agent key: unknown subcommand \"%s\" (add, remove)", argv[1]);
	add = strcmp(argv[1], "add") == 0;
	argc = cli_kid_args(argc - 1, argv + 1, args, 16); /* a KID may begin with '-' */
	argv = args;
	opt_reset();
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'k': key_path = optarg; break;
		case 'a': alg = parse_alg(optarg); break;
		case 'd': db_opt = optarg; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (add) {
		if (argc - optind != 1 || key_path == NULL)
			cli_die(
			    "agent key add: usage: writ agent key add ID --key FILE [--alg ALG]");
		check_id(argv[optind]);
		jwk = read_public_key(key_path, alg);
		s = open_store(0);
		rc = store_agent_key_add(s, argv[optind], jwk, kid, &err);
		free(jwk);
		store_close(s);
		if (rc != WRIT_OK)
			cli_die_err("agent key add", rc, &err);
		printf("%s %s\n", argv[optind], kid);
		return 0;
	}
	if (argc - optind != 2 || key_path != NULL || alg != WRIT_ALG_NONE)
		cli_die("agent key remove: usage: writ agent key remove ID KID");
	check_id(argv[optind]);
	s = open_store(0);
	rc = store_agent_key_remove(s, argv[optind], argv[optind + 1], &err);
	store_close(s);
	if (rc != WRIT_OK)
		cli_die_err("agent key remove", rc, &err);
	printf("%s removed %s\n", argv[optind], argv[optind + 1]);
	return 0;
}

/* writ agent group add|remove ID GROUP */
static int agent_group(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"db", required_argument, 0, 'd'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
	const char *what;
	writ_err err = {0};
	writ_rc rc;
	store *s;
	int c, add;

	if (argc >= 2 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)) {
		usage(stdout);
		return 0;
	}
	if (argc < 2 || (strcmp(argv[1], "add") != 0 && strcmp(argv[1], "remove") != 0))
		cli_die("agent group: expected add or remove (see writ agent --help)");
	add = strcmp(argv[1], "add") == 0;
	what = add ? "agent group add" : "agent group remove";
	argc--, argv++; /* getopt from the add/remove word */
	opt_reset();
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'd': db_opt = optarg; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (argc - optind != 2)
		cli_die("%s: usage: writ %s ID GROUP", what, what);
	check_id(argv[optind]);
	s = open_store(0);
	rc = store_agent_group(s, argv[optind], argv[optind + 1], add, &err);
	store_close(s);
	if (rc != WRIT_OK)
		cli_die_err(what, rc, &err);
	printf("%s %s group %s\n", argv[optind], add ? "joined" : "left", argv[optind + 1]);
	return 0;
}

int agent_main(int argc, char **argv)
{
	const char *cmd;

	argc--, argv++; /* past "agent" */
	/* writ agent --db FILE SUBCOMMAND ...; --db is also accepted after it */
	while (argc >= 2 && strcmp(argv[0], "--db") == 0) {
		db_opt = argv[1];
		argc -= 2, argv += 2;
	}
	if (argc >= 1 && strncmp(argv[0], "--db=", 5) == 0) {
		db_opt = argv[0] + 5;
		argc--, argv++;
	}
	if (argc < 1 || strcmp(argv[0], "-h") == 0 || strcmp(argv[0], "--help") == 0) {
		usage(argc < 1 ? stderr : stdout);
		return argc < 1 ? 2 : 0;
	}
	if (db_opt != NULL && db_opt[0] == '\0')
		cli_die("agent: --db needs a file name");
	cmd = argv[0];
	if (strcmp(cmd, "add") == 0)
		return agent_add(argc, argv);
	if (strcmp(cmd, "list") == 0)
		return agent_list(argc, argv);
	if (strcmp(cmd, "show") == 0)
		return agent_show(argc, argv);
	if (strcmp(cmd, "disable") == 0)
		return agent_status(argc, argv, STORE_DISABLED);
	if (strcmp(cmd, "enable") == 0)
		return agent_status(argc, argv, STORE_ACTIVE);
	if (strcmp(cmd, "revoke") == 0)
		return agent_status(argc, argv, STORE_REVOKED);
	if (strcmp(cmd, "key") == 0)
		return agent_key(argc, argv);
	if (strcmp(cmd, "group") == 0)
		return agent_group(argc, argv);
	cli_die("agent: unknown subcommand \"%s\" (add, list, show, disable, enable, revoke, "
	        "key, group)",
	        cmd);
}
