/*
 * cmd_key.c - writ key generate | rotate | retire | revoke | purge | list:
 * signing keys inside the HSM and their lifecycle in the store (SPEC s.2).
 */
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "lifecycle.h"
#include "writ_int.h"

static void usage(FILE *f)
{
	fprintf(f,
	        "usage: writ key generate [--alg ALG] [--json]\n"
	        "       writ key rotate [--alg ALG] [--now] [--reason TEXT] [--json]\n"
	        "       writ key retire KID [--reason TEXT]\n"
	        "       writ key revoke KID --reason TEXT\n"
	        "       writ key purge\n"
	        "       writ key list [--json]\n\n"
	        "generate: make a key pair inside the token (non-extractable, sensitive) and\n"
	        "          record it: active if it is the first of its alg, else pending.\n"
	        "rotate:   a new pending key; once an issuer has published it for\n"
	        "          key_pending_secs it signs and the previous key retires (with no\n"
	        "          issuer running it waits for one). --now: sign at once (emergency;\n"
	        "          verifiers with a cached JWKS miss it until their cache expires).\n"
	        "retire:   stop a pending key, or hand an active key's place to the pending one\n"
	        "          once an issuer has published that for key_pending_secs.\n"
	        "revoke:   compromise: withdraw from the JWKS at once and destroy it in the\n"
	        "          HSM; an active key is replaced by a new one immediately.\n"
	        "purge:    destroy the HSM objects of removed and revoked keys (only those).\n"
	        "list:     kid (RFC 7638 thumbprint), alg, state, created, activated, retired,\n"
	        "          removal time.\n"
	        "ALG: ES256 (default from config), ES384, RS256, PS256, EdDSA.\n");
}

/* The HSM and the store, with due transitions applied (and, for commands
 * that change keys, the key lock taken and a reconcile first), so what
 * follows acts on the current state even when no issuer is running. */
typedef struct keyctx {
	p11_ctx *p11;
	store *st;
	store_sk_windows w;
	lifecycle_lock lk; /* held from open to close by commands that change keys */
} keyctx;

static void keyctx_open(keyctx *k, const writ_config *cfg, int changes_keys)
{
	writ_err err = {0};
	writ_rc rc;
	int n = 0;

	k->lk.fd = -1;
	k->p11 = cli_open_hsm(cfg);
	rc = store_open(cfg->state_db, STORE_CREATE, &k->st, &err);
	if (rc != WRIT_OK)
		cli_die_err("store", rc, &err);
	lifecycle_windows(cfg, &k->w);
	/* The whole command under the key lock (lifecycle.h), taken before
	 * any store transaction of its own: another command's reconcile must
	 * not see this one's key half-made, nor this one's see another's. */
	if (changes_keys) {
		rc = lifecycle_lock_take(cfg->state_db, LIFECYCLE_LOCK_WAIT_MS, &k->lk, &err);
		if (rc == WRIT_OK)
			rc = lifecycle_reconcile(k->p11, k->st, cfg, &k->lk, (int64_t)time(NULL),
			                         &n, &err);
	}
	if (rc == WRIT_OK)
		rc = store_sk_advance(k->st, &k->w, (int64_t)time(NULL), NULL, &err);
	if (rc != WRIT_OK)
		cli_die_err("key", rc, &err);
	if (n > 0)
		fprintf(stderr,
		        "writ: reconciled %d key(s) between the HSM and the store (see the "
		        "audit log)\n",
		        n);
}

static void keyctx_close(keyctx *k)
{
	store_close(k->st);
	p11_close(k->p11);
	lifecycle_unlock(&k->lk);
}

static writ_alg parse_alg(const char *s)
{
	writ_alg alg = writ_alg_from_name(s);

	if (alg == WRIT_ALG_NONE)
		cli_die("key: unknown algorithm \"%s\" (ES256, ES384, RS256, PS256, EdDSA)", s);
	return alg;
}

static void print_made(const store_sk *k, int json)
{
	if (json)
		printf("{\"kid\":\"%s\",\"alg\":\"%s\",\"state\":\"%s\",\"activate_after\":%lld}\n",
		       k->kid, writ_alg_name(k->alg), store_sk_state_name(k->state),
		       (long long)k->activate_after);
	else
		printf("%s %s %s\n", k->kid, writ_alg_name(k->alg), store_sk_state_name(k->state));
}

/* generate and rotate: one HSM key, recorded in the given mode. */
static int key_make(int argc, char **argv, const writ_config *cfg, int rotate)
{
	static const struct option opts[] = {{"alg", required_argument, 0, 'a'},
	                                     {"json", no_argument, 0, 'j'},
	                                     {"now", no_argument, 0, 'n'},
	                                     {"reason", required_argument, 0, 'r'},
	                                     {0, 0, 0, 0}};
	store_sk_mode mode = STORE_SK_ROTATE;
	const char *reason = rotate ? "writ key rotate" : "writ key generate";
	writ_alg alg = cfg->signing_alg;
	writ_err err = {0};
	store_sk made;
	keyctx k;
	writ_rc rc;
	int c, json = 0;

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (c == 'a')
			alg = parse_alg(optarg);
		else if (c == 'j')
			json = 1;
		else if (c == 'n' && rotate)
			mode = STORE_SK_NOW;
		else if (c == 'r' && rotate)
			reason = optarg;
		else
			return 2;
	}
	if (optind < argc)
		cli_die("key: unexpected argument \"%s\"", argv[optind]);
	keyctx_open(&k, cfg, 1);
	rc = lifecycle_generate(k.p11, k.st, cfg, &k.lk, alg, mode, reason, &made, &err);
	if (rc != WRIT_OK)
		cli_die_err(rotate ? "key rotate" : "key generate", rc, &err);
	print_made(&made, json);
	keyctx_close(&k);
	return 0;
}

/* --reason and exactly one KID (which may begin with '-'). */
static const char *opt_reason(int argc, char **argv, const char **kid)
{
	static const struct option opts[] = {{"reason", required_argument, 0, 'r'}, {0, 0, 0, 0}};
	char *args[16];
	const char *reason = NULL;
	int c, n = cli_kid_args(argc, argv, args, 16);

	while ((c = getopt_long(n, args, "", opts, NULL)) != -1) {
		if (c != 'r')
			exit(2);
		reason = optarg;
	}
	if (optind != n - 1)
		cli_die("key: give exactly one KID");
	*kid = args[n - 1];
	return reason;
}

static int key_retire(int argc, char **argv, const writ_config *cfg)
{
	const char *kid, *reason = opt_reason(argc, argv, &kid);
	char next[WRIT_KID_MAX + 1];
	writ_err err = {0};
	keyctx k;
	writ_rc rc;

	keyctx_open(&k, cfg, 1);
	rc = store_sk_retire(k.st, kid, &k.w, (int64_t)time(NULL),
	                     reason != NULL ? reason : "writ key retire", next, &err);
	if (rc != WRIT_OK)
		cli_die_err("key retire", rc, &err);
	printf("%s retired%s%s\n", kid, next[0] ? "; now active: " : "", next);
	keyctx_close(&k);
	return 0;
}

/* A replacement for a revoked active key: generated before the revocation
 * is recorded, so the alg is never without a signing key. */
static void make_replacement(p11_ctx *p11, writ_alg alg, store_sk *repl, p11_key *key)
{
	writ_jwk *jwk = NULL;
	writ_err err = {0};
	writ_rc rc;

	rc = p11_key_generate(p11, alg, key, &err);
	if (rc == WRIT_OK)
		rc = writ_jwk_from_pkey(key->pub, alg, &jwk, &err);
	if (rc != WRIT_OK)
		cli_die_err("key revoke: replacement", rc, &err);
	memset(repl, 0, sizeof(*repl));
	snprintf(repl->kid, sizeof(repl->kid), "%s", writ_jwk_kid(jwk));
	repl->alg = alg;
	lifecycle_id_hex(key->id, key->id_len, repl->p11_id);
	writ_jwk_free(jwk);
}

/*
 * Destroy row's HSM objects, found by the CKA_ID the store recorded for it,
 * and record it purged only once a search by that id finds no private key.
 * Not by the keyring: it leaves out a key whose public object is gone or
 * unreadable, whose private key still signs. Only for removed and revoked
 * keys (the caller checks).
 */
static writ_rc purge_one(keyctx *k, const store_sk *row, writ_err *err)
{
	unsigned char id[P11_ID_MAX];
	writ_err derr = {0};
	size_t len = 0;
	int present = 1;
	writ_rc rc;

	if (lifecycle_id_parse(row->p11_id, id, &len) != 0)
		return writ_err_set(
		    err, WRIT_ERR_ARG,
		    "the store records no valid CKA_ID for %s (\"%s\"): cannot find "
		    "it in the HSM",
		    row->kid, row->p11_id);
	/* NOT_FOUND: no writ object under the id any more (purged before, or
	 * deleted by hand); the search below says whether that is all. */
	rc = p11_key_destroy(k->p11, id, len, &derr);
	if (rc != WRIT_OK && rc != WRIT_ERR_NOT_FOUND) {
		if (err != NULL)
			*err = derr;
		return rc;
	}
	rc = p11_key_present(k->p11, id, len, &present, err);
	if (rc == WRIT_OK && present)
		rc = writ_err_set(
		    err, WRIT_ERR_HSM,
		    "a private key with CKA_ID %s is still in the token after its writ "
		    "objects were destroyed (not labelled writ:?)",
		    row->p11_id);
	return rc == WRIT_OK ? store_sk_purged(k->st, row->kid, (int64_t)time(NULL), err) : rc;
}

static int key_revoke(int argc, char **argv, const writ_config *cfg)
{
	const char *kid, *reason = opt_reason(argc, argv, &kid);
	store_sk_state was = STORE_SK_NONE;
	p11_key key = {0};
	writ_err err = {0};
	store_sk cur, repl;
	keyctx k;
	writ_rc rc;
	int made, replaced;

	if (reason == NULL || reason[0] == '\0')
		cli_die("key revoke: --reason is required (it goes to the audit log)");
	keyctx_open(&k, cfg, 1);
	rc = store_sk_get(k.st, kid, &cur, &err);
	if (rc != WRIT_OK)
		cli_die_err("key revoke", rc, &err);
	/* Only a hint: an issuer's tick may activate or retire the key before
	 * the revocation's transaction (the key lock does not stop it), which
	 * reads the state again and says what it found (was). */
	made = cur.state == STORE_SK_ACTIVE;
	if (made)
		make_replacement(k.p11, cur.alg, &repl, &key);
	rc = store_sk_revoke(k.st, kid, reason, made ? &repl : NULL, (int64_t)time(NULL), &was,
	                     &err);
	if (rc == WRIT_ERR_ARG && !made && was == STORE_SK_ACTIVE) {
		/* It became active meanwhile: it needs a replacement after all. */
		made = 1;
		make_replacement(k.p11, cur.alg, &repl, &key);
		rc = store_sk_revoke(k.st, kid, reason, &repl, (int64_t)time(NULL), &was, &err);
	}
	replaced = rc == WRIT_OK && made && was == STORE_SK_ACTIVE;
	/* An unused replacement (the key was not active inside the
	 * revocation's transaction, or that failed) goes, unless recorded. */
	if (made && !replaced && lifecycle_drop_unrecorded(k.p11, k.st, repl.kid, &key) < 0)
		fprintf(stderr, "writ: the unrecorded replacement stays for reconcile\n");
	if (rc != WRIT_OK)
		cli_die_err("key revoke", rc, &err);
	printf("%s revoked%s%s\n", kid, replaced ? "; now active: " : "", replaced ? repl.kid : "");
	/* Compromised: nothing may sign with it again, not even an issuer
	 * whose store is restored from a backup (reconcile adopts what the HSM
	 * holds). Its public key stays in the store for the audit. A key
	 * revoked and purged before has nothing left to destroy. */
	rc = cur.purged_at != 0 ? WRIT_OK : purge_one(&k, &cur, &err);
	/* Revoked in the store, but the key may still be in the HSM: an
	 * incident script must not read that as done. */
	if (rc != WRIT_OK)
		fprintf(stderr,
		        "writ: key revoke: %s revoked but still in the HSM: %s; run 'writ key "
		        "purge'\n",
		        kid, err.msg);
	else
		printf("%s purged from the HSM\n", kid);
	EVP_PKEY_free(key.pub);
	keyctx_close(&k);
	return rc == WRIT_OK ? 0 : 1;
}

static int key_purge(int argc, char **argv, const writ_config *cfg)
{
	writ_err err = {0};
	store_sk *rows = NULL;
	size_t n = 0, i, done = 0;
	keyctx k;
	writ_rc rc;

	(void)argv;
	if (argc > 1)
		cli_die("key purge: no arguments expected");
	keyctx_open(&k, cfg, 1);
	rc = store_sk_list(k.st, &rows, &n, &err);
	for (i = 0; rc == WRIT_OK && i < n; i++) {
		/* Only keys no verifier can need any more (SPEC s.2). */
		if ((rows[i].state != STORE_SK_REMOVED && rows[i].state != STORE_SK_REVOKED) ||
		    rows[i].purged_at != 0)
			continue;
		rc = purge_one(&k, &rows[i], &err);
		if (rc == WRIT_OK)
			printf("%s purged\n", rows[i].kid), done++;
	}
	if (rc != WRIT_OK)
		cli_die_err("key purge", rc, &err);
	if (done == 0)
		printf("nothing to purge\n");
	free(rows);
	keyctx_close(&k);
	return 0;
}

static const char *fmt_time(int64_t t, char *buf, size_t len)
{
	time_t tt = (time_t)t;
	struct tm tm;

	if (t == 0 || gmtime_r(&tt, &tm) == NULL)
		return "-";
	strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
	return buf;
}

static json_t *row_json(const store_sk *r, int in_hsm)
{
	json_t *o = json_pack("{s:s, s:s, s:s, s:I, s:b}", "kid", r->kid, "alg",
	                      writ_alg_name(r->alg), "state", store_sk_state_name(r->state),
	                      "created", (json_int_t)r->created_at, "in_hsm", in_hsm);
	const char *names[] = {"activate_after", "published", "activated", "retired",
	                       "remove_after",   "removed",   "revoked",   "purged"};
	int64_t v[] = {r->activate_after, r->published_at, r->activated_at, r->retired_at,
	               r->remove_after,   r->removed_at,   r->revoked_at,   r->purged_at};
	size_t i;

	for (i = 0; o != NULL && i < sizeof(v) / sizeof(v[0]); i++)
		if (v[i] != 0)
			json_object_set_new(o, names[i], json_integer(v[i]));
	if (o != NULL && r->reason[0] != '\0')
		json_object_set_new(o, "reason", json_string(r->reason));
	if (o != NULL)
		json_object_set_new(o, "actor", json_string(r->actor));
	return o;
}

static void row_print(const store_sk *r, int in_hsm)
{
	char b[5][32];
	int unpublished = r->state == STORE_SK_PENDING && r->published_at == 0;

	printf("%-43s %-5s %-8s %-20s %-20s %-20s %-20s%s%s%s\n", r->kid, writ_alg_name(r->alg),
	       store_sk_state_name(r->state), fmt_time(r->created_at, b[0], 32),
	       fmt_time(r->activated_at, b[1], 32), fmt_time(r->retired_at, b[2], 32),
	       fmt_time(r->state == STORE_SK_RETIRED ? r->remove_after : r->removed_at, b[3], 32),
	       r->revoked_at ? " revoked " : "",
	       r->revoked_at ? fmt_time(r->revoked_at, b[4], 32) : (in_hsm ? "" : " (not in HSM)"),
	       unpublished ? " (no issuer has published it yet)" : "");
}

static int key_list(int argc, char **argv, const writ_config *cfg)
{
	int json = argc > 1 && strcmp(argv[1], "--json") == 0;
	writ_err err = {0};
	keyring *kr = NULL;
	store_sk *rows = NULL;
	json_t *arr = json_array();
	size_t n = 0, i;
	keyctx k;
	writ_rc rc;

	if (argc > 1 + json)
		cli_die("key list: unexpected argument \"%s\"", argv[1 + json]);
	keyctx_open(&k, cfg, 0);
	rc = keyring_load(k.p11, &kr, &err);
	if (rc == WRIT_OK)
		rc = store_sk_list(k.st, &rows, &n, &err);
	if (rc != WRIT_OK)
		cli_die_err("key list", rc, &err);
	if (!json)
		printf("%-43s %-5s %-8s %-20s %-20s %-20s %s\n", "KID", "ALG", "STATE", "CREATED",
		       "ACTIVATED", "RETIRED", "REMOVE-AT/REMOVED");
	for (i = 0; i < n; i++) {
		int in_hsm = keyring_find(kr, rows[i].kid) != NULL;
		if (json)
			json_array_append_new(arr, row_json(&rows[i], in_hsm));
		else
			row_print(&rows[i], in_hsm);
	}
	if (json) {
		char *s = json_dumps(arr, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
		printf("%s\n", s != NULL ? s : "[]");
		free(s);
	}
	json_decref(arr);
	free(rows);
	keyring_free(kr);
	keyctx_close(&k);
	return 0;
}

int key_main(int argc, char **argv)
{
	writ_config cfg;

	if (argc < 2 || cli_wants_help(argc, argv)) {
		usage(argc < 2 ? stderr : stdout);
		return argc < 2 ? 2 : 0;
	}
	cli_load_config(&cfg);
	if (strcmp(argv[1], "generate") == 0)
		return key_make(argc - 1, argv + 1, &cfg, 0);
	if (strcmp(argv[1], "rotate") == 0)
		return key_make(argc - 1, argv + 1, &cfg, 1);
	if (strcmp(argv[1], "retire") == 0)
		return key_retire(argc - 1, argv + 1, &cfg);
	if (strcmp(argv[1], "revoke") == 0)
		return key_revoke(argc - 1, argv + 1, &cfg);
	if (strcmp(argv[1], "purge") == 0)
		return key_purge(argc - 1, argv + 1, &cfg);
	if (strcmp(argv[1], "list") == 0)
		return key_list(argc - 1, argv + 1, &cfg);
	cli_die("key: unknown subcommand \"%s\" (generate, rotate, retire, revoke, purge, list)",
	        argv[1]);
}
