/*
 * test_store.c - the state store as the CLI and the issuer rely on it: a
 * real SQLite file in a temporary directory, agents with groups and pinned
 * keys, status changes that other connections see at once, revocation
 * that is permanent, and a replay cache that accepts each jti once —
 * across processes — and stays small however many tokens are issued.
 */
#define _GNU_SOURCE
#include <ftw.h>
#include <openssl/evp.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "store.h"
#include "testutil.h"
#include "writ_int.h"

static char dir[64];
static char db[128];

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb, (void)flag, (void)ftw;
	return remove(p);
}

static void rm_rf(const char *p)
{
	nftw(p, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

/* A fresh database path for each test. */
static const char *fresh_db(const char *name)
{
	snprintf(db, sizeof(db), "%s/%s.db", dir, name);
	return db;
}

static store *open_db(const char *path)
{
	writ_err err = {0};
	store *s = NULL;
	writ_rc rc = store_open(path, STORE_CREATE, &s, &err);

	if (rc != WRIT_OK)
		fprintf(stderr, "store_open %s: %s\n", path, err.msg);
	REQUIRE(rc == WRIT_OK && s != NULL);
	return s;
}

/* A public JWK (JSON, malloc'd) of a new key: "EC" P-256 / P-384 or
 * "ED25519", as an agent would register it. */
static char *new_jwk(const char *type, writ_alg alg)
{
	EVP_PKEY *pk =
	    strcmp(type, "ED25519") == 0
	        ? EVP_PKEY_Q_keygen(NULL, NULL, "ED25519")
	        : EVP_PKEY_Q_keygen(NULL, NULL, "EC", alg == WRIT_ALG_ES384 ? "P-384" : "P-256");
	writ_jwk *jwk = NULL;
	char *json;

	REQUIRE(pk != NULL);
	REQUIRE(writ_jwk_from_pkey(pk, alg, &jwk, NULL) == WRIT_OK);
	json = writ_jwk_to_json(jwk);
	REQUIRE(json != NULL);
	writ_jwk_free(jwk);
	EVP_PKEY_free(pk);
	return json;
}

static unsigned file_mode(const char *p)
{
	struct stat sb;

	return stat(p, &sb) == 0 ? (unsigned)(sb.st_mode & 07777) : 0xffff;
}

static void test_open_creates_private_file(void)
{
	char p[160];
	writ_err err = {0};
	store *s = NULL;
	const char *path = fresh_db("mode");

	CHECK_RC(store_open(path, 0, &s, &err), WRIT_ERR_NOT_FOUND);
	CHECK(s == NULL);
	s = open_db(path);
	CHECK(file_mode(path) == 0600);
	char *k = new_jwk("EC", WRIT_ALG_ES256);
	CHECK_RC(store_agent_add(s, "a1", NULL, 0, k, NULL, &err), WRIT_OK);
	free(k);
	/* the WAL and its index copy the main file's mode */
	snprintf(p, sizeof(p), "%s-wal", path);
	CHECK(file_mode(p) == 0600);
	snprintf(p, sizeof(p), "%s-shm", path);
	CHECK(file_mode(p) == 0600);
	store_close(s);

	/* a store anyone may write to could be made to un-revoke an agent */
	chmod(path, 0666);
	s = NULL;
	CHECK_RC(store_open(path, 0, &s, &err), WRIT_ERR_CONFIG);
	CHECK(strstr(err.msg, "writable by group or others") != NULL);
	chmod(path, 0600);

	snprintf(p, sizeof(p), "%s/link.db", dir);
	CHECK(symlink(path, p) == 0);
	CHECK_RC(store_open(p, STORE_CREATE, &s, &err), WRIT_ERR_CONFIG);
	CHECK(strstr(err.msg, "symlink") != NULL);
}

static void test_foreign_or_newer_database_refused(void)
{
	sqlite3 *raw = NULL;
	writ_err err = {0};
	store *s = NULL;
	const char *path = fresh_db("foreign");

	REQUIRE(sqlite3_open(path, &raw) == SQLITE_OK);
	REQUIRE(sqlite3_exec(raw, "CREATE TABLE t(x)", NULL, NULL, NULL) == SQLITE_OK);
	sqlite3_close(raw);
	chmod(path, 0600);
	CHECK_RC(store_open(path, 0, &s, &err), WRIT_ERR_CONFIG);
	CHECK(strstr(err.msg, "not a writ state database") != NULL);

	path = fresh_db("newer");
	store_close(open_db(path));
	REQUIRE(sqlite3_open(path, &raw) == SQLITE_OK);
	REQUIRE(sqlite3_exec(raw, "PRAGMA user_version=99", NULL, NULL, NULL) == SQLITE_OK);
	sqlite3_close(raw);
	CHECK_RC(store_open(path, 0, &s, &err), WRIT_ERR_CONFIG);
	CHECK(strstr(err.msg, "upgrade writ") != NULL);
}

static void test_add_get_list_agents_with_groups_and_keys(void)
{
	store *s = open_db(fresh_db("agents"));
	const char *groups[] = {"ops", "db-readers"};
	char *k1 = new_jwk("EC", WRIT_ALG_ES256), *k2 = new_jwk("ED25519", WRIT_ALG_EDDSA);
	char kid[WRIT_KID_MAX + 1], kid2[WRIT_KID_MAX + 1], tp[64];
	writ_err err = {0};
	store_agent a;
	char **ids = NULL;
	size_t n = 0;

	CHECK_RC(store_agent_add(s, "svc:billing@prod", groups, 2, k1, kid, &err), WRIT_OK);
	CHECK_RC(store_agent_add(s, "agent-2", NULL, 0, k2, kid2, &err), WRIT_OK);

	CHECK_RC(store_agent_get(s, "svc:billing@prod", &a, &err), WRIT_OK);
	CHECK(strcmp(a.id, "svc:billing@prod") == 0);
	CHECK(a.status == STORE_ACTIVE);
	CHECK(a.reason[0] == '\0');
	CHECK(a.created_at > 0 && a.updated_at == a.created_at);
	CHECK(a.ngroups == 2);
	CHECK(strcmp(a.groups[0], "db-readers") == 0 && strcmp(a.groups[1], "ops") == 0);
	REQUIRE(a.nkeys == 1);
	CHECK(a.keys[0].alg == WRIT_ALG_ES256);
	CHECK(writ_jwk_alg(a.keys[0].jwk) == WRIT_ALG_ES256);
	/* kid is the RFC 7638 thumbprint */
	CHECK(writ_jwk_thumbprint(a.keys[0].jwk, tp, sizeof(tp)) == WRIT_OK);
	CHECK(strcmp(a.keys[0].kid, tp) == 0 && strcmp(kid, tp) == 0);
	CHECK(store_agent_key(&a, NULL) == &a.keys[0]);
	CHECK(store_agent_key(&a, kid) == &a.keys[0]);
	CHECK(store_agent_key(&a, kid2) == NULL);
	store_agent_clear(&a);

	CHECK_RC(store_agent_get(s, "agent-2", &a, &err), WRIT_OK);
	CHECK(a.ngroups == 0 && a.nkeys == 1 && a.keys[0].alg == WRIT_ALG_EDDSA);
	CHECK(strcmp(a.keys[0].kid, kid2) == 0);
	store_agent_clear(&a);

	CHECK_RC(store_agent_get(s, "nobody", &a, &err), WRIT_ERR_NOT_FOUND);
	CHECK(strstr(err.msg, "no agent \"nobody\"") != NULL);
	CHECK_RC(store_agent_get(s, "bad id", &a, &err), WRIT_ERR_NOT_FOUND);

	CHECK_RC(store_agent_list(s, &ids, &n, &err), WRIT_OK);
	CHECK(n == 2);
	if (n == 2)
		CHECK(strcmp(ids[0], "agent-2") == 0 && strcmp(ids[1], "svc:billing@prod") == 0);
	store_ids_free(ids, n);

	CHECK_RC(store_agent_add(s, "svc:billing@prod", NULL, 0, k1, NULL, &err), WRIT_ERR_ARG);
	CHECK(strstr(err.msg, "already exists") != NULL);
	free(k1);
	free(k2);
	store_close(s);
}

static void test_invalid_input_refused_with_clear_messages(void)
{
	store *s = open_db(fresh_db("invalid"));
	char *k = new_jwk("EC", WRIT_ALG_ES256);
	char long_id[STORE_ID_MAX + 2], long_grp[STORE_GROUP_MAX + 2];
	const char *bad_ids[] = {"", "a b", "a/b", "a\"b", "caf\xc3\xa9", "a\nb", "*", long_id};
	const char *groups[STORE_GROUPS_MAX + 1];
	const char *dup[] = {"g", "g"};
	writ_err err = {0};
	size_t i;

	memset(long_id, 'a', sizeof(long_id) - 1);
	long_id[sizeof(long_id) - 1] = '\0';
	memset(long_grp, 'g', sizeof(long_grp) - 1);
	long_grp[sizeof(long_grp) - 1] = '\0';
	for (i = 0; i < sizeof(bad_ids) / sizeof(bad_ids[0]); i++) {
		CHECK_RC(store_agent_add(s, bad_ids[i], NULL, 0, k, NULL, &err), WRIT_ERR_ARG);
		CHECK(strstr(err.msg, "invalid agent id") != NULL);
	}
	long_id[STORE_ID_MAX] = '\0'; /* exactly 128 is fine */
	CHECK_RC(store_agent_add(s, long_id, NULL, 0, k, NULL, &err), WRIT_OK);
	free(k);
	k = new_jwk("EC", WRIT_ALG_ES256);

	const char *g1[] = {long_grp};
	CHECK_RC(store_agent_add(s, "g1", g1, 1, k, NULL, &err), WRIT_ERR_ARG);
	CHECK(strstr(err.msg, "invalid group name") != NULL);
	CHECK_RC(store_agent_add(s, "g2", dup, 2, k, NULL, &err), WRIT_ERR_ARG);
	CHECK(strstr(err.msg, "given twice") != NULL);
	for (i = 0; i <= STORE_GROUPS_MAX; i++)
		groups[i] = "x";
	CHECK_RC(store_agent_add(s, "g3", groups, STORE_GROUPS_MAX + 1, k, NULL, &err),
	         WRIT_ERR_TOO_LARGE);

	/* keys: alg required, private keys refused, kid must be the thumbprint */
	CHECK_RC(store_agent_add(s, "k1", NULL, 0, NULL, NULL, &err), WRIT_ERR_ARG);
	CHECK_RC(store_agent_add(s, "k1", NULL, 0,
	                         "{\"kty\":\"OKP\",\"crv\":\"Ed25519\","
	                         "\"x\":\"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo\"}",
	                         NULL, &err),
	         WRIT_ERR_JWK);
	CHECK(strstr(err.msg, "alg") != NULL);
	CHECK_RC(store_agent_add(s, "k1", NULL, 0,
	                         "{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"alg\":\"EdDSA\","
	                         "\"x\":\"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo\","
	                         "\"d\":\"nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A\"}",
	                         NULL, &err),
	         WRIT_ERR_JWK);
	CHECK(strstr(err.msg, "private") != NULL);
	CHECK_RC(
	    store_agent_add(s, "k1", NULL, 0,
	                    "{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"alg\":\"EdDSA\",\"kid\":\"me\","
	                    "\"x\":\"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo\"}",
	                    NULL, &err),
	    WRIT_ERR_JWK);
	CHECK(strstr(err.msg, "thumbprint") != NULL);
	/* RFC 8037 A.2 key with its RFC 8037 A.3 thumbprint as kid: fine */
	CHECK_RC(store_agent_add(s, "k1", NULL, 0,
	                         "{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"alg\":\"EdDSA\","
	                         "\"kid\":\"kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k\","
	                         "\"x\":\"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo\"}",
	                         NULL, &err),
	         WRIT_OK);
	CHECK_RC(store_agent_set_status(s, "k1", STORE_DISABLED, "line\nbreak", NULL, &err),
	         WRIT_ERR_ARG);
	CHECK_RC(store_agent_set_status(s, "k1", STORE_DISABLED, "bad \xff utf-8", NULL, &err),
	         WRIT_ERR_ARG);
	CHECK_RC(store_agent_set_status(s, "k1", STORE_DISABLED, "caf\xc3\xa9 ok", NULL, &err),
	         WRIT_OK);
	free(k);
	store_close(s);
}

static void test_key_rules(void)
{
	store *s = open_db(fresh_db("keys"));
	char *k0 = new_jwk("EC", WRIT_ALG_ES256), *k384 = new_jwk("EC", WRIT_ALG_ES384);
	char kid0[WRIT_KID_MAX + 1], kid[WRIT_KID_MAX + 1], kids[STORE_KEYS_MAX][WRIT_KID_MAX + 1];
	writ_err err = {0};
	store_agent a;
	int i;

	CHECK_RC(store_agent_add(s, "rot", NULL, 0, k0, kid0, &err), WRIT_OK);
	/* one key, one identity */
	CHECK_RC(store_agent_add(s, "other", NULL, 0, k0, NULL, &err), WRIT_ERR_ARG);
	CHECK(strstr(err.msg, "already registered to agent \"rot\"") != NULL);
	CHECK_RC(store_agent_key_add(s, "rot", k0, NULL, &err), WRIT_ERR_ARG);
	CHECK(strstr(err.msg, "already has key") != NULL);

	/* the last key cannot go; unknown kids are named */
	CHECK_RC(store_agent_key_remove(s, "rot", kid0, &err), WRIT_ERR_ARG);
	CHECK(strstr(err.msg, "last key") != NULL);
	CHECK_RC(store_agent_key_remove(s, "rot", "AAAA", &err), WRIT_ERR_NOT_FOUND);
	CHECK_RC(store_agent_key_remove(s, "rot", "../x", &err), WRIT_ERR_NOT_FOUND);
	CHECK_RC(store_agent_key_remove(s, "nobody", kid0, &err), WRIT_ERR_NOT_FOUND);
	CHECK_RC(store_agent_key_add(s, "nobody", k384, NULL, &err), WRIT_ERR_NOT_FOUND);

	/* rotation: add ES384, remove the first; alg stays pinned per key */
	CHECK_RC(store_agent_key_add(s, "rot", k384, kid, &err), WRIT_OK);
	CHECK_RC(store_agent_key_remove(s, "rot", kid0, &err), WRIT_OK);
	CHECK_RC(store_agent_get(s, "rot", &a, &err), WRIT_OK);
	CHECK(a.nkeys == 1 && a.keys[0].alg == WRIT_ALG_ES384 && strcmp(a.keys[0].kid, kid) == 0);
	store_agent_clear(&a);
	/* a removed key may be registered again (to anyone) */
	CHECK_RC(store_agent_add(s, "other", NULL, 0, k0, NULL, &err), WRIT_OK);

	/* at most STORE_KEYS_MAX keys */
	for (i = 1; i < STORE_KEYS_MAX; i++) {
		char *k = new_jwk("ED25519", WRIT_ALG_EDDSA);
		CHECK_RC(store_agent_key_add(s, "rot", k, kids[i], &err), WRIT_OK);
		free(k);
	}
	char *k9 = new_jwk("ED25519", WRIT_ALG_EDDSA);
	CHECK_RC(store_agent_key_add(s, "rot", k9, NULL, &err), WRIT_ERR_TOO_LARGE);
	CHECK_RC(store_agent_get(s, "rot", &a, &err), WRIT_OK);
	CHECK(a.nkeys == STORE_KEYS_MAX);
	/* registration order */
	CHECK(strcmp(a.keys[0].kid, kid) == 0 && strcmp(a.keys[1].kid, kids[1]) == 0);
	CHECK(store_agent_key(&a, NULL) == NULL); /* several keys: kid needed */
	CHECK(store_agent_key(&a, kids[3]) == &a.keys[3]);
	store_agent_clear(&a);
	free(k9);
	free(k0);
	free(k384);
	store_close(s);
}

/* writ agent group add|remove: groups change after registration, each
 * change audited in its transaction; refused changes name the problem and
 * change nothing. */
static void test_group_rules(void)
{
	store *s = open_db(fresh_db("groups"));
	const char *g0[] = {"ops"};
	char *k = new_jwk("EC", WRIT_ALG_ES256), name[16];
	writ_err err = {0};
	uint64_t n0 = 0, n1 = 0;
	store_agent a;
	int i;

	CHECK_RC(store_agent_add(s, "g", g0, 1, k, NULL, &err), WRIT_OK);
	CHECK_RC(store_outbox_count(s, &n0, &err), WRIT_OK);
	CHECK_RC(store_agent_group(s, "g", "dba", 1, &err), WRIT_OK);
	CHECK_RC(store_agent_group(s, "g", "ops", 0, &err), WRIT_OK);
	CHECK_RC(store_agent_get(s, "g", &a, &err), WRIT_OK);
	CHECK(a.ngroups == 1 && strcmp(a.groups[0], "dba") == 0);
	store_agent_clear(&a);
	CHECK_RC(store_outbox_count(s, &n1, &err), WRIT_OK);
	CHECK(n1 == n0 + 2); /* agent_group_added, agent_group_removed */

	CHECK_RC(store_agent_group(s, "g", "dba", 1, &err), WRIT_ERR_ARG);
	CHECK(strstr(err.msg, "already in group \"dba\"") != NULL);
	CHECK_RC(store_agent_group(s, "g", "ops", 0, &err), WRIT_ERR_NOT_FOUND);
	CHECK(strstr(err.msg, "not in group \"ops\"") != NULL);
	CHECK_RC(store_agent_group(s, "nobody", "ops", 1, &err), WRIT_ERR_NOT_FOUND);
	CHECK_RC(store_agent_group(s, "g", "a b", 1, &err), WRIT_ERR_ARG);
	CHECK(strstr(err.msg, "invalid group name") != NULL);
	CHECK_RC(store_agent_group(s, "g", NULL, 1, &err), WRIT_ERR_ARG);
	/* at most STORE_GROUPS_MAX */
	for (i = 1; i < STORE_GROUPS_MAX; i++) {
		snprintf(name, sizeof(name), "g%d", i);
		CHECK_RC(store_agent_group(s, "g", name, 1, &err), WRIT_OK);
	}
	CHECK_RC(store_agent_group(s, "g", "one-more", 1, &err), WRIT_ERR_TOO_LARGE);
	/* a revoked agent's record stays as it was revoked */
	CHECK_RC(store_agent_set_status(s, "g", STORE_REVOKED, NULL, NULL, &err), WRIT_OK);
	CHECK_RC(store_agent_group(s, "g", "dba", 0, &err), WRIT_ERR_ARG);
	CHECK(strstr(err.msg, "revoked") != NULL);
	CHECK_RC(store_agent_get(s, "g", &a, &err), WRIT_OK);
	CHECK(a.ngroups == STORE_GROUPS_MAX);
	store_agent_clear(&a);
	CHECK_RC(store_outbox_count(s, &n0, &err), WRIT_OK);
	CHECK(n0 == n1 + (STORE_GROUPS_MAX - 1) + 1); /* the adds and the revocation */
	free(k);
	store_close(s);
}

static void test_revoked_is_terminal_and_durable(void)
{
	const char *path = fresh_db("status");
	store *s = open_db(path);
	char *k = new_jwk("EC", WRIT_ALG_ES256), *k2 = new_jwk("EC", WRIT_ALG_ES256);
	char kid[WRIT_KID_MAX + 1];
	writ_err err = {0};
	store_agent a;
	sqlite3 *raw = NULL;
	int changed = -1;

	CHECK_RC(store_agent_add(s, "ag", NULL, 0, k, kid, &err), WRIT_OK);
	CHECK_RC(store_agent_set_status(s, "ag", STORE_DISABLED, "investigating", &changed, &err),
	         WRIT_OK);
	CHECK(changed == 1);
	CHECK_RC(store_agent_get(s, "ag", &a, &err), WRIT_OK);
	CHECK(a.status == STORE_DISABLED && strcmp(a.reason, "investigating") == 0);
	store_agent_clear(&a);
	CHECK_RC(store_agent_set_status(s, "ag", STORE_DISABLED, NULL, &changed, &err), WRIT_OK);
	CHECK(changed == 0);
	CHECK_RC(store_agent_set_status(s, "ag", STORE_ACTIVE, NULL, &changed, &err), WRIT_OK);
	CHECK(changed == 1);
	CHECK_RC(store_agent_get(s, "ag", &a, &err), WRIT_OK);
	CHECK(a.status == STORE_ACTIVE && a.reason[0] == '\0');
	store_agent_clear(&a);

	CHECK_RC(store_agent_set_status(s, "ag", STORE_REVOKED, "key leaked", &changed, &err),
	         WRIT_OK);
	CHECK(changed == 1);
	CHECK_RC(store_agent_set_status(s, "ag", STORE_ACTIVE, NULL, NULL, &err), WRIT_ERR_ARG);
	CHECK(strstr(err.msg, "revocation is permanent") != NULL);
	CHECK_RC(store_agent_set_status(s, "ag", STORE_DISABLED, NULL, NULL, &err), WRIT_ERR_ARG);
	CHECK_RC(store_agent_set_status(s, "ag", STORE_REVOKED, "again", &changed, &err), WRIT_OK);
	CHECK(changed == 0);
	CHECK_RC(store_agent_key_add(s, "ag", k2, NULL, &err), WRIT_ERR_ARG);
	CHECK_RC(store_agent_key_remove(s, "ag", kid, &err), WRIT_ERR_ARG);
	CHECK_RC(store_agent_add(s, "ag", NULL, 0, k2, NULL, &err), WRIT_ERR_ARG);
	CHECK(strstr(err.msg, "never reused") != NULL);
	CHECK_RC(store_agent_set_status(s, "nobody", STORE_DISABLED, NULL, NULL, &err),
	         WRIT_ERR_NOT_FOUND);
	store_close(s);

	/* after a reopen: still revoked, first reason kept */
	s = open_db(path);
	CHECK_RC(store_agent_get(s, "ag", &a, &err), WRIT_OK);
	CHECK(a.status == STORE_REVOKED && strcmp(a.reason, "key leaked") == 0);
	CHECK(a.nkeys == 1);
	store_agent_clear(&a);
	store_close(s);

	/* even SQL typed into the sqlite3 shell cannot un-revoke */
	REQUIRE(sqlite3_open(path, &raw) == SQLITE_OK);
	CHECK(sqlite3_exec(raw, "UPDATE agents SET status='active' WHERE id='ag'", NULL, NULL,
	                   NULL) != SQLITE_OK);
	sqlite3_close(raw);
	free(k);
	free(k2);
}

static void test_tampered_key_row_is_refused(void)
{
	const char *path = fresh_db("tamper");
	store *s = open_db(path);
	char *k = new_jwk("EC", WRIT_ALG_ES256);
	writ_err err = {0};
	store_agent a;
	sqlite3 *raw = NULL;

	CHECK_RC(store_agent_add(s, "t", NULL, 0, k, NULL, &err), WRIT_OK);
	REQUIRE(sqlite3_open(path, &raw) == SQLITE_OK);
	/* re-pin the key to another algorithm behind writ's back */
	CHECK(sqlite3_exec(raw, "UPDATE agent_keys SET alg='ES384'", NULL, NULL, NULL) ==
	      SQLITE_OK);
	sqlite3_close(raw);
	CHECK_RC(store_agent_get(s, "t", &a, &err), WRIT_ERR_UNAVAILABLE);
	CHECK(a.nkeys == 0 && a.status == STORE_STATUS_NONE);
	free(k);
	store_close(s);
}

static void test_change_seen_by_other_connection_next_get(void)
{
	const char *path = fresh_db("two");
	store *issuer = open_db(path), *cli = open_db(path);
	char *k = new_jwk("EC", WRIT_ALG_ES256);
	writ_err err = {0};
	uint64_t g1 = 0, g2 = 0, g3 = 0;
	store_agent a;

	CHECK_RC(store_agent_add(cli, "w", NULL, 0, k, NULL, &err), WRIT_OK);
	CHECK_RC(store_agent_get(issuer, "w", &a, &err), WRIT_OK);
	CHECK(a.status == STORE_ACTIVE);
	store_agent_clear(&a);
	CHECK_RC(store_agents_generation(issuer, &g1, &err), WRIT_OK);
	CHECK_RC(store_replay_check_and_insert(issuer, "w", "j", 100, 50, &err), WRIT_OK);
	CHECK_RC(store_agents_generation(issuer, &g2, &err), WRIT_OK);
	CHECK(g1 == g2); /* replay inserts are not agent changes */

	CHECK_RC(store_agent_set_status(cli, "w", STORE_DISABLED, "paused", NULL, &err), WRIT_OK);
	CHECK_RC(store_agent_get(issuer, "w", &a, &err), WRIT_OK);
	CHECK(a.status == STORE_DISABLED);
	store_agent_clear(&a);
	CHECK_RC(store_agents_generation(issuer, &g3, &err), WRIT_OK);
	CHECK(g3 != g2);
	CHECK_RC(store_agent_set_status(cli, "w", STORE_REVOKED, NULL, NULL, &err), WRIT_OK);
	CHECK_RC(store_agent_get(issuer, "w", &a, &err), WRIT_OK);
	CHECK(a.status == STORE_REVOKED);
	store_agent_clear(&a);
	free(k);
	store_close(cli);
	store_close(issuer);
}

/* The request path's cheap test for agent changes (store_agents_signal):
 * it must move after every committed agent change made through the store,
 * from another connection, and stay put for everything else. */
static void test_agents_signal_moves_after_agent_changes_only(void)
{
	const char *path = fresh_db("signal");
	store *issuer = open_db(path), *cli = open_db(path);
	char *k = new_jwk("EC", WRIT_ALG_ES256), *k2 = new_jwk("EC", WRIT_ALG_ES256);
	writ_err err = {0};
	uint64_t mark = UINT64_MAX;
	store_agent a;

	CHECK(store_agents_signal(issuer, &mark) == 1); /* learns the size */
	CHECK(store_agents_signal(issuer, &mark) == 0);
	CHECK_RC(store_agent_add(cli, "w", NULL, 0, k, NULL, &err), WRIT_OK);
	CHECK(store_agents_signal(issuer, &mark) == 1);
	CHECK(store_agents_signal(issuer, &mark) == 0);

	/* Not agent changes: a replay insert, refused changes, a read. */
	CHECK_RC(store_replay_check_and_insert(issuer, "w", "j", 100, 50, &err), WRIT_OK);
	CHECK(store_agent_set_status(cli, "nobody", STORE_DISABLED, "x", NULL, &err) ==
	      WRIT_ERR_NOT_FOUND);
	CHECK(store_agent_add(cli, "w", NULL, 0, k2, NULL, &err) != WRIT_OK); /* exists */
	CHECK_RC(store_agent_get(cli, "w", &a, &err), WRIT_OK);
	store_agent_clear(&a);
	CHECK(store_agents_signal(issuer, &mark) == 0);

	CHECK_RC(store_agent_set_status(cli, "w", STORE_DISABLED, "paused", NULL, &err), WRIT_OK);
	CHECK(store_agents_signal(issuer, &mark) == 1);
	CHECK_RC(store_agent_key_add(cli, "w", k2, NULL, &err), WRIT_OK);
	CHECK(store_agents_signal(issuer, &mark) == 1);
	CHECK_RC(store_agent_group(cli, "w", "dba", 1, &err), WRIT_OK);
	CHECK(store_agents_signal(issuer, &mark) == 1);
	CHECK_RC(store_agent_group(cli, "w", "dba", 1, &err), WRIT_ERR_ARG); /* refused */
	CHECK(store_agents_signal(issuer, &mark) == 0);
	CHECK_RC(store_agent_group(cli, "w", "dba", 0, &err), WRIT_OK);
	CHECK(store_agents_signal(issuer, &mark) == 1);
	CHECK_RC(store_agent_set_status(cli, "w", STORE_REVOKED, NULL, NULL, &err), WRIT_OK);
	CHECK(store_agents_signal(issuer, &mark) == 1);
	CHECK(store_agents_signal(issuer, &mark) == 0);
	CHECK(store_agents_signal(NULL, &mark) == -1);
	free(k);
	free(k2);
	store_close(cli);
	store_close(issuer);
}

/* The request path's cheap test for signing-key changes (store_keys_signal):
 * `writ key revoke` of the active key must move it before the key is
 * destroyed, so the issuer rebuilds its key set before signing again. */
static void test_keys_signal_moves_after_key_changes_only(void)
{
	static const store_sk_windows w = {.pending_secs = 3, .retired_secs = 5};
	const char *path = fresh_db("ksignal");
	store *issuer = open_db(path), *cli = open_db(path);
	char *k = new_jwk("EC", WRIT_ALG_ES256);
	writ_err err = {0};
	uint64_t mark = UINT64_MAX;
	store_sk_state st;
	store_sk repl = {0};
	store_sk_state was;

	CHECK(store_keys_signal(issuer, &mark) == 1); /* learns the size */
	CHECK(store_keys_signal(issuer, &mark) == 0);
	CHECK_RC(store_sk_add(cli, "k1", WRIT_ALG_ES256, "01", STORE_SK_ROTATE, &w, 1000, NULL, &st,
	                      &err),
	         WRIT_OK);
	CHECK(store_keys_signal(issuer, &mark) == 1);
	/* Agent changes move the agents' signal only. */
	CHECK_RC(store_agent_add(cli, "w", NULL, 0, k, NULL, &err), WRIT_OK);
	CHECK(store_keys_signal(issuer, &mark) == 0);
	snprintf(repl.kid, sizeof(repl.kid), "k2");
	repl.alg = WRIT_ALG_ES256;
	snprintf(repl.p11_id, sizeof(repl.p11_id), "02");
	CHECK_RC(store_sk_revoke(cli, "k1", "test", &repl, 1001, &was, &err), WRIT_OK);
	CHECK(store_keys_signal(issuer, &mark) == 1);
	CHECK(store_keys_signal(issuer, &mark) == 0);
	CHECK(store_keys_signal(NULL, &mark) == -1);
	free(k);
	store_close(cli);
	store_close(issuer);
}

/* Attack: a FIFO planted under the signal file's name would swallow the
 * writers' appends (blocking them once the pipe is full) and never change
 * size, so readers would never see a change. It is not used: the store
 * works, and store_agents_signal says "no signal" (read the generation). */
static void test_planted_fifo_signal_does_not_hang_writers(void)
{
	char fifo[600];
	const char *path = fresh_db("fifo");
	char *k = new_jwk("EC", WRIT_ALG_ES256);
	writ_err err = {0};
	uint64_t mark = 0;
	store *s;

	snprintf(fifo, sizeof(fifo), "%s.agents-changed", path);
	REQUIRE(mkfifo(fifo, 0600) == 0);
	s = open_db(path);
	CHECK(store_agents_signal(s, &mark) == -1);
	CHECK_RC(store_agent_add(s, "f", NULL, 0, k, NULL, &err), WRIT_OK);
	CHECK_RC(store_agent_set_status(s, "f", STORE_REVOKED, "x", NULL, &err), WRIT_OK);
	free(k);
	store_close(s);
}

static void test_replay_once_until_expired(void)
{
	store *s = open_db(fresh_db("replay"));
	writ_err err = {0};
	char big[STORE_JTI_MAX + 2];

	CHECK_RC(store_replay_check_and_insert(s, "a", "jti-1", 1000, 900, &err), WRIT_OK);
	CHECK_RC(store_replay_check_and_insert(s, "a", "jti-1", 1000, 901, &err), WRIT_ERR_CLAIM);
	CHECK(strcmp(err.msg, "assertion jti already used") == 0);
	/* the same jti from another agent is another assertion */
	CHECK_RC(store_replay_check_and_insert(s, "b", "jti-1", 1000, 901, &err), WRIT_OK);
	/* still refused while the assertion could pass with leeway */
	CHECK_RC(
	    store_replay_check_and_insert(s, "a", "jti-1", 1000, 1000 + STORE_REPLAY_LEEWAY, &err),
	    WRIT_ERR_CLAIM);
	/* once it can no longer verify, the slot is free again */
	CHECK_RC(store_replay_check_and_insert(s, "a", "jti-1", 2000,
	                                       1000 + STORE_REPLAY_LEEWAY + 1, &err),
	         WRIT_OK);
	CHECK_RC(store_replay_check_and_insert(s, "a", "jti-1", 2000,
	                                       1000 + STORE_REPLAY_LEEWAY + 2, &err),
	         WRIT_ERR_CLAIM);

	CHECK_RC(store_replay_check_and_insert(s, "a", "", 1000, 900, &err), WRIT_ERR_CLAIM);
	memset(big, 'j', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	CHECK_RC(store_replay_check_and_insert(s, "a", big, 1000, 900, &err), WRIT_ERR_CLAIM);
	big[STORE_JTI_MAX] = '\0';
	CHECK_RC(store_replay_check_and_insert(s, "a", big, 1000, 900, &err), WRIT_OK);
	CHECK_RC(store_replay_check_and_insert(s, "a b", "x", 1000, 900, &err), WRIT_ERR_ARG);
	store_close(s);
}

static void test_replay_purge_is_bounded_per_insert(void)
{
	store *s = open_db(fresh_db("purge"));
	writ_err err = {0};
	uint64_t n = 0, del = 0;
	char jti[32];
	int i;

	for (i = 0; i < 1000; i++) {
		snprintf(jti, sizeof(jti), "old-%d", i);
		CHECK_RC(store_replay_check_and_insert(s, "a", jti, 100, 50, &err), WRIT_OK);
	}
	/* one insert long after: it removes one batch, not the backlog */
	CHECK_RC(store_replay_check_and_insert(s, "a", "new", 5000, 4000, &err), WRIT_OK);
	CHECK_RC(store_replay_count(s, &n, &err), WRIT_OK);
	CHECK(n == 1000 - STORE_REPLAY_PURGE_BATCH + 1);
	CHECK_RC(store_replay_purge(s, 4000, &del, &err), WRIT_OK);
	CHECK(del == 1000 - STORE_REPLAY_PURGE_BATCH);
	CHECK_RC(store_replay_count(s, &n, &err), WRIT_OK);
	CHECK(n == 1);
	/* the live entry survives a sweep */
	CHECK_RC(store_replay_check_and_insert(s, "a", "new", 5000, 4001, &err), WRIT_ERR_CLAIM);
	store_close(s);
}

static double mono(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/*
 * The token path's cost must not grow with history. 100,000 assertions,
 * 10 per second of simulated time, each valid for 300 s: the live set is
 * 10 * (300 + leeway) rows, and the table must stay near it.
 */
static void test_replay_table_stays_bounded(void)
{
	store *s = open_db(fresh_db("bounded"));
	const int total = 100000, per_sec = 10, ttl = 300, chunk = 10000;
	const uint64_t live = (uint64_t)per_sec * (ttl + STORE_REPLAY_LEEWAY);
	uint64_t n = 0, max = 0;
	writ_err err = {0};
	double t0 = mono(), second = 0, last = 0;
	char jti[32];
	int i;

	for (i = 0; i < total; i++) {
		int64_t now = 1700000000 + i / per_sec;
		snprintf(jti, sizeof(jti), "jti-%d", i);
		CHECK_RC(store_replay_check_and_insert(s, "bench", jti, now + ttl, now, &err),
		         WRIT_OK);
		if ((i + 1) % 1000 == 0) {
			CHECK_RC(store_replay_count(s, &n, &err), WRIT_OK);
			if (n > max)
				max = n;
		}
		if ((i + 1) % chunk == 0) {
			double t = mono();
			if (i + 1 == 2 * chunk) /* the first chunk fills the live set */
				second = t - t0;
			last = t - t0;
			t0 = t;
		}
	}
	fprintf(stderr,
	        "  replay: %d inserts, max rows %llu (live set %llu); 2nd %d: %.0f/s, "
	        "last %d: %.0f/s\n",
	        total, (unsigned long long)max, (unsigned long long)live, chunk, chunk / second,
	        chunk, chunk / last);
	CHECK(max <= live + per_sec + STORE_REPLAY_PURGE_BATCH);
	/* The row bound above is the real check. Timing on a shared disk is
	 * noisy, so this one is loose: only a collapse fails it. */
	CHECK(last < second * 4);
	store_close(s);
}

/* Two issuer processes see the same 1000 assertions at the same moment:
 * each jti must be accepted exactly once in total. */
static void test_replay_two_processes_accept_each_jti_once(void)
{
	const char *path = fresh_db("race");
	enum { N = 1000, P = 2 };
	int res[P][2], go[2], i, p, ok = 1;
	unsigned char got[P][N];
	pid_t pid[P];

	store_close(open_db(path));
	REQUIRE(pipe(go) == 0);
	for (p = 0; p < P; p++) {
		REQUIRE(pipe(res[p]) == 0);
		pid[p] = fork();
		REQUIRE(pid[p] >= 0);
		if (pid[p] == 0) {
			unsigned char mine[N];
			writ_err err = {0};
			store *s = NULL;
			char c, jti[32];

			close(go[1]);
			if (read(go[0], &c, 1) < 0 || store_open(path, 0, &s, &err) != WRIT_OK)
				_exit(2);
			for (i = 0; i < N; i++) {
				writ_rc rc;
				snprintf(jti, sizeof(jti), "race-%d", i);
				rc = store_replay_check_and_insert(s, "racer", jti, 2000, 1000,
				                                   &err);
				if (rc != WRIT_OK && rc != WRIT_ERR_CLAIM) {
					fprintf(stderr, "child: %s\n", err.msg);
					_exit(3);
				}
				mine[i] = rc == WRIT_OK;
			}
			store_close(s);
			if (write(res[p][1], mine, N) != N)
				_exit(4);
			_exit(0);
		}
		close(res[p][1]);
	}
	close(go[0]);
	close(go[1]); /* EOF releases both children at once */
	for (p = 0; p < P; p++) {
		size_t got_n = 0;
		ssize_t r;
		int st = 0;

		while (got_n < N && (r = read(res[p][0], got[p] + got_n, N - got_n)) > 0)
			got_n += (size_t)r;
		close(res[p][0]);
		REQUIRE(waitpid(pid[p], &st, 0) == pid[p]);
		CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
		REQUIRE(got_n == N);
	}
	int first_wins = 0;
	for (i = 0; i < N; i++) {
		if (got[0][i] + got[1][i] != 1)
			ok = 0;
		first_wins += got[0][i];
	}
	fprintf(stderr, "  race: process 1 accepted %d, process 2 %d\n", first_wins,
	        N - first_wins);
	CHECK(ok);
}

int main(void)
{
	snprintf(dir, sizeof(dir), "/tmp/writ-store-XXXXXX");
	REQUIRE(mkdtemp(dir) != NULL);
	RUN(test_open_creates_private_file);
	RUN(test_foreign_or_newer_database_refused);
	RUN(test_add_get_list_agents_with_groups_and_keys);
	RUN(test_invalid_input_refused_with_clear_messages);
	RUN(test_key_rules);
	RUN(test_group_rules);
	RUN(test_revoked_is_terminal_and_durable);
	RUN(test_tampered_key_row_is_refused);
	RUN(test_change_seen_by_other_connection_next_get);
	RUN(test_agents_signal_moves_after_agent_changes_only);
	RUN(test_keys_signal_moves_after_key_changes_only);
	RUN(test_planted_fifo_signal_does_not_hang_writers);
	RUN(test_replay_once_until_expired);
	RUN(test_replay_purge_is_bounded_per_insert);
	RUN(test_replay_table_stays_bounded);
	RUN(test_replay_two_processes_accept_each_jti_once);
	rm_rf(dir);
	return tu_finish();
}
