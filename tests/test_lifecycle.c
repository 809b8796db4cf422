/*
 * test_lifecycle.c - the signing key lifecycle rows in the store (SPEC
 * s.2): transitions, their timing, one active key per alg even with two
 * connections racing, terminal states, and an audit record for each; and,
 * against a real SoftHSM2 token, reconcile and key generation over the HSM
 * and the store (lifecycle.h): the key lock, "gone" meaning gone from the
 * token, all-or-nothing adoption, and complete key listings.
 *
 * Built a second time as a PKCS#11 module (WRIT_TEST_P11_SHIM, see
 * tests/CMakeLists.txt): a shim over SoftHSM2 whose C_FindObjects hands out
 * one object per call, or never says "no more", as some modules do and
 * SoftHSM2 does not. That part is at the end of the file.
 */
#ifndef WRIT_TEST_P11_SHIM
#include <errno.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "lifecycle.h"
#include "store.h"
#include "testutil.h"

#include <p11-kit/pkcs11.h>

static char path[256];
static const store_sk_windows W = {.pending_secs = 3, .retired_secs = 5};

static store *open_db(void)
{
	writ_err err = {0};
	store *s = NULL;

	REQUIRE(store_open(path, STORE_CREATE, &s, &err) == WRIT_OK);
	return s;
}

static store_sk_state state_of(store *s, const char *kid)
{
	store_sk k;

	return store_sk_get(s, kid, &k, NULL) == WRIT_OK ? k.state : STORE_SK_NONE;
}

static uint64_t outbox(store *s)
{
	uint64_t n = 0;

	CHECK_RC(store_outbox_count(s, &n, NULL), WRIT_OK);
	return n;
}

static void test_first_key_active_then_rotation_by_the_clock(void)
{
	store *s = open_db();
	store_sk_state st;
	int changed = 0;

	CHECK_RC(
	    store_sk_add(s, "k1", WRIT_ALG_ES256, "01", STORE_SK_ROTATE, &W, 1000, NULL, &st, NULL),
	    WRIT_OK);
	CHECK(st == STORE_SK_ACTIVE); /* bootstrap: no verifier can hold a token yet */
	CHECK_RC(
	    store_sk_add(s, "k2", WRIT_ALG_ES256, "02", STORE_SK_ROTATE, &W, 1010, NULL, &st, NULL),
	    WRIT_OK);
	CHECK(st == STORE_SK_PENDING);
	/* An issuer serves it right away: the window stays as recorded. */
	CHECK_RC(store_sk_hold(s, "k2", 1010, 1013, 0, &changed, NULL), WRIT_OK);
	/* Not before the whole pending window has passed. */
	CHECK_RC(store_sk_advance(s, &W, 1013, &changed, NULL), WRIT_OK);
	CHECK(changed == 0 && state_of(s, "k2") == STORE_SK_PENDING);
	CHECK_RC(store_sk_advance(s, &W, 1014, &changed, NULL), WRIT_OK);
	CHECK(changed == 1 && state_of(s, "k2") == STORE_SK_ACTIVE &&
	      state_of(s, "k1") == STORE_SK_RETIRED);
	CHECK_RC(store_sk_advance(s, &W, 1019, &changed, NULL), WRIT_OK);
	CHECK(state_of(s, "k1") == STORE_SK_RETIRED);
	CHECK_RC(store_sk_advance(s, &W, 1020, &changed, NULL), WRIT_OK);
	CHECK(changed == 1 && state_of(s, "k1") == STORE_SK_REMOVED);
	/* generated x2, activated x2, retired, removed */
	CHECK(outbox(s) == 6);
	store_close(s);
}

static void test_racing_connections_activate_once(void)
{
	store *a = open_db(), *b = open_db();
	store_sk_state st;
	int ca = 0, cb = 0;

	CHECK_RC(
	    store_sk_add(a, "r1", WRIT_ALG_ES384, "11", STORE_SK_ROTATE, &W, 1000, NULL, &st, NULL),
	    WRIT_OK);
	CHECK_RC(store_sk_add(a, "r2", WRIT_ALG_ES384, "12", STORE_SK_SCHEDULE, &W, 1000, NULL, &st,
	                      NULL),
	         WRIT_OK);
	/* A second scheduled key for the same alg is refused: one per schedule. */
	CHECK_RC(store_sk_add(b, "r3", WRIT_ALG_ES384, "13", STORE_SK_SCHEDULE, &W, 1000, NULL, &st,
	                      NULL),
	         WRIT_ERR_ARG);
	CHECK_RC(store_sk_hold(a, "r2", 1000, 1003, 0, NULL, NULL), WRIT_OK);
	CHECK_RC(store_sk_advance(a, &W, 1004, &ca, NULL), WRIT_OK);
	CHECK_RC(store_sk_advance(b, &W, 1004, &cb, NULL), WRIT_OK);
	CHECK(ca + cb == 1 && state_of(b, "r2") == STORE_SK_ACTIVE);
	store_close(a);
	store_close(b);
}

static void test_retire_revoke_purge_rules(void)
{
	store *s = open_db();
	store_sk repl = {.kid = "v3", .alg = WRIT_ALG_PS256, .p11_id = "23"};
	char next[WRIT_KID_MAX + 1];

	CHECK_RC(store_sk_add(s, "v1", WRIT_ALG_PS256, "21", STORE_SK_ROTATE, &W, 1000, NULL, NULL,
	                      NULL),
	         WRIT_OK);
	/* The only active key cannot be retired. */
	CHECK_RC(store_sk_retire(s, "v1", &W, 1001, NULL, next, NULL), WRIT_ERR_ARG);
	CHECK_RC(store_sk_add(s, "v2", WRIT_ALG_PS256, "22", STORE_SK_ROTATE, &W, 1001, NULL, NULL,
	                      NULL),
	         WRIT_OK);
	/* Attack: handing the active key's place to a pending key no issuer
	 * has published (or not for its whole window) would sign with a kid
	 * verifiers' cached key sets lack. */
	CHECK_RC(store_sk_retire(s, "v1", &W, 1002, "test", next, NULL), WRIT_ERR_ARG);
	CHECK(state_of(s, "v1") == STORE_SK_ACTIVE && state_of(s, "v2") == STORE_SK_PENDING);
	CHECK_RC(store_sk_hold(s, "v2", 1002, 1005, 0, NULL, NULL), WRIT_OK);
	CHECK_RC(store_sk_retire(s, "v1", &W, 1004, "test", next, NULL), WRIT_ERR_ARG);
	CHECK_RC(store_sk_retire(s, "v1", &W, 1006, "test", next, NULL), WRIT_OK);
	CHECK(strcmp(next, "v2") == 0 && state_of(s, "v2") == STORE_SK_ACTIVE);
	/* Revoking the active key needs a replacement, recorded active with it. */
	CHECK_RC(store_sk_revoke(s, "v2", "compromised", NULL, 1003, NULL, NULL), WRIT_ERR_ARG);
	CHECK_RC(store_sk_revoke(s, "v2", "compromised", &repl, 1003, NULL, NULL), WRIT_OK);
	CHECK(state_of(s, "v2") == STORE_SK_REVOKED && state_of(s, "v3") == STORE_SK_ACTIVE);
	CHECK_RC(store_sk_revoke(s, "v1", "", NULL, 1003, NULL, NULL), WRIT_ERR_ARG); /* reason */
	/* Only removed or revoked keys are purged. */
	CHECK_RC(store_sk_purged(s, "v1", 1004, NULL), WRIT_ERR_ARG);
	CHECK_RC(store_sk_purged(s, "v2", 1004, NULL), WRIT_OK);
	CHECK_RC(store_sk_purged(s, "v2", 1004, NULL), WRIT_ERR_ARG);
	/* Revoked is terminal: not even the missing-object reconcile moves it. */
	CHECK_RC(store_sk_missing(s, "v2", 1005, "gone", NULL), WRIT_OK);
	CHECK(state_of(s, "v2") == STORE_SK_REVOKED);
	CHECK_RC(store_sk_missing(s, "v3", 1005, "gone", NULL), WRIT_OK);
	CHECK(state_of(s, "v3") == STORE_SK_REMOVED);
	store_close(s);
}

/* store_sk_hold: the pending window of a key an issuer served late counts
 * from then. It only ever moves activate_after later, only for a pending
 * key, and once a key is published only when asked to (always). */
static void test_hold_moves_a_pending_key_later_only(void)
{
	store *s = open_db();
	store_sk_state st;
	store_sk k;
	int changed = -1;

	CHECK_RC(
	    store_sk_add(s, "h1", WRIT_ALG_RS256, "31", STORE_SK_ROTATE, &W, 2000, NULL, &st, NULL),
	    WRIT_OK);
	CHECK(st == STORE_SK_ACTIVE);
	CHECK_RC(
	    store_sk_add(s, "h2", WRIT_ALG_RS256, "32", STORE_SK_ROTATE, &W, 2010, NULL, &st, NULL),
	    WRIT_OK);
	CHECK(st == STORE_SK_PENDING);
	/* Served first at 2012: due after 2015, not 2013. */
	CHECK_RC(store_sk_hold(s, "h2", 2012, 2015, 0, &changed, NULL), WRIT_OK);
	CHECK(changed == 1);
	CHECK_RC(store_sk_get(s, "h2", &k, NULL), WRIT_OK);
	CHECK(k.activate_after == 2015 && k.published_at == 2012);
	/* Never earlier, and the first publication stays recorded. */
	CHECK_RC(store_sk_hold(s, "h2", 2011, 2014, 1, &changed, NULL), WRIT_OK);
	CHECK(changed == 0);
	/* Published already: an issuer starting up does not hold it again. */
	CHECK_RC(store_sk_hold(s, "h2", 2013, 2016, 0, &changed, NULL), WRIT_OK);
	CHECK(changed == 0);
	CHECK_RC(store_sk_get(s, "h2", &k, NULL), WRIT_OK);
	CHECK(k.activate_after == 2015 && k.published_at == 2012);
	CHECK_RC(store_sk_advance(s, &W, 2015, &changed, NULL), WRIT_OK);
	CHECK(state_of(s, "h2") == STORE_SK_PENDING);
	CHECK_RC(store_sk_advance(s, &W, 2016, &changed, NULL), WRIT_OK);
	CHECK(state_of(s, "h2") == STORE_SK_ACTIVE && state_of(s, "h1") == STORE_SK_RETIRED);
	/* Only pending keys: the active one is not touched. */
	CHECK_RC(store_sk_hold(s, "h2", 2900, 3000, 1, &changed, NULL), WRIT_OK);
	CHECK(changed == 0 && state_of(s, "h2") == STORE_SK_ACTIVE);
	/* The public JWK is recorded once and kept: never replaced. */
	CHECK_RC(store_sk_set_jwk(s, "h2", "{\"kty\":\"one\"}", NULL), WRIT_OK);
	CHECK_RC(store_sk_set_jwk(s, "h2", "{\"kty\":\"two\"}", NULL), WRIT_OK);
	CHECK_RC(store_sk_get(s, "h2", &k, NULL), WRIT_OK);
	CHECK(strcmp(k.jwk, "{\"kty\":\"one\"}") == 0);
	CHECK_RC(store_sk_set_jwk(s, "h2", "", NULL), WRIT_ERR_ARG);
	store_close(s);
}

/* A key rotated in while no issuer runs: `writ key` commands apply due
 * transitions too, and without the publication gate they activated it
 * once its window had passed, so the first issuer to start signed with
 * a key no verifier's cached JWKS had. It waits for an issuer now, and
 * its window counts from that issuer's first serve. */
static void test_key_rotated_with_no_issuer_waits_for_one_to_publish_it(void)
{
	store *s = open_db();
	store_sk k;
	int changed = -1;

	CHECK_RC(store_sk_add(s, "u1", WRIT_ALG_EDDSA, "41", STORE_SK_ROTATE, &W, 3000, NULL, NULL,
	                      NULL),
	         WRIT_OK);
	CHECK_RC(store_sk_add(s, "u2", WRIT_ALG_EDDSA, "42", STORE_SK_ROTATE, &W, 3001, NULL, NULL,
	                      NULL),
	         WRIT_OK);
	/* Hours later, still pending, whoever applies the transitions (the
	 * file is shared with the tests above: only these rows are looked at). */
	CHECK_RC(store_sk_advance(s, &W, 3001 + 7200, NULL, NULL), WRIT_OK);
	CHECK(state_of(s, "u2") == STORE_SK_PENDING && state_of(s, "u1") == STORE_SK_ACTIVE);
	CHECK_RC(store_sk_get(s, "u2", &k, NULL), WRIT_OK);
	CHECK(k.published_at == 0);
	/* An issuer starts and serves it (at start, always = 0 holds an
	 * unpublished key): a full window from then. */
	CHECK_RC(store_sk_hold(s, "u2", 10300, 10303, 0, &changed, NULL), WRIT_OK);
	CHECK(changed == 1);
	CHECK_RC(store_sk_advance(s, &W, 10303, NULL, NULL), WRIT_OK);
	CHECK(state_of(s, "u2") == STORE_SK_PENDING);
	CHECK_RC(store_sk_advance(s, &W, 10304, NULL, NULL), WRIT_OK);
	CHECK(state_of(s, "u2") == STORE_SK_ACTIVE && state_of(s, "u1") == STORE_SK_RETIRED);
	store_close(s);
}

/* The revocation's own transaction says what state it found the key in,
 * and records the replacement only if that was active: the CLI's earlier
 * read is a hint (an issuer's tick may activate or retire the key in
 * between), and must not decide whether the replacement signs. */
static void test_revoke_reports_the_state_it_found(void)
{
	char own[300];
	writ_err err = {0};
	store *s = NULL;
	store_sk repl = {.kid = "w3", .alg = WRIT_ALG_ES384, .p11_id = "53"};
	store_sk_state was = STORE_SK_NONE;

	/* A file of its own: every alg has an active key in the shared one. */
	snprintf(own, sizeof(own), "%s-revoke", path);
	REQUIRE(store_open(own, STORE_CREATE, &s, &err) == WRIT_OK);
	CHECK_RC(store_sk_add(s, "w1", WRIT_ALG_ES384, "51", STORE_SK_ROTATE, &W, 4000, NULL, NULL,
	                      NULL),
	         WRIT_OK);
	CHECK_RC(store_sk_add(s, "w2", WRIT_ALG_ES384, "52", STORE_SK_ROTATE, &W, 4001, NULL, NULL,
	                      NULL),
	         WRIT_OK);
	/* The caller thought w2 active and made a replacement: w2 is pending,
	 * so it is revoked and the replacement is not recorded. */
	CHECK_RC(store_sk_revoke(s, "w2", "compromised", &repl, 4002, &was, NULL), WRIT_OK);
	CHECK(was == STORE_SK_PENDING && state_of(s, "w2") == STORE_SK_REVOKED);
	CHECK(state_of(s, "w3") == STORE_SK_NONE && state_of(s, "w1") == STORE_SK_ACTIVE);
	/* The caller thought w1 not active: refused, and told it is active. */
	CHECK_RC(store_sk_revoke(s, "w1", "compromised", NULL, 4003, &was, NULL), WRIT_ERR_ARG);
	CHECK(was == STORE_SK_ACTIVE && state_of(s, "w1") == STORE_SK_ACTIVE);
	CHECK_RC(store_sk_revoke(s, "w1", "compromised", &repl, 4003, &was, NULL), WRIT_OK);
	CHECK(was == STORE_SK_ACTIVE && state_of(s, "w3") == STORE_SK_ACTIVE);
	CHECK_RC(store_sk_revoke(s, "nope", "compromised", NULL, 4004, &was, NULL),
	         WRIT_ERR_NOT_FOUND);
	CHECK(was == STORE_SK_NONE);
	store_close(s);
}

/* ---- over a real token ---- */

/* A token and a state database of its own: reconcile acts on every writ
 * key of the token, so tests must not see each other's keys. */
typedef struct hsm {
	tu_token tok;
	char db[400];
	writ_config cfg;
	p11_ctx *p11;
	store *st;
	lifecycle_lock lk;
} hsm;

static p11_ctx *hsm_ctx(hsm *h, const char *module)
{
	p11_cfg pc = {module, h->tok.label, h->tok.pin_file, NULL, h->tok.conf};
	writ_err err = {0};
	p11_ctx *ctx = NULL;

	if (p11_open(&pc, &ctx, &err) != WRIT_OK)
		fprintf(stderr, "p11_open: %s\n", err.msg);
	REQUIRE(ctx != NULL);
	return ctx;
}

/* 0 ready, 77 no SoftHSM2 (the caller skips). The key lock is held. */
static int hsm_open(hsm *h)
{
	writ_err err = {0};
	int rc;

	memset(h, 0, sizeof(*h));
	h->lk.fd = -1;
	rc = tu_token_new(&h->tok);
	if (rc != 0) {
		REQUIRE(rc == 77);
		return 77;
	}
	snprintf(h->db, sizeof(h->db), "%s/writ.db", h->tok.dir);
	config_defaults(&h->cfg);
	snprintf(h->cfg.state_db, sizeof(h->cfg.state_db), "%s", h->db);
	h->cfg.key_pending_secs = 3;
	h->cfg.key_retired_secs = 5;
	h->p11 = hsm_ctx(h, h->tok.module);
	REQUIRE(store_open(h->db, STORE_CREATE, &h->st, &err) == WRIT_OK);
	REQUIRE(lifecycle_lock_take(h->db, 0, &h->lk, &err) == WRIT_OK);
	return 0;
}

static void hsm_close(hsm *h)
{
	lifecycle_unlock(&h->lk);
	store_close(h->st);
	p11_close(h->p11);
	tu_token_destroy(&h->tok);
}

/* Run SQL on the database behind the store's back (test faults). */
static void sql(const hsm *h, const char *q)
{
	sqlite3 *db = NULL;
	char *msg = NULL;

	REQUIRE(sqlite3_open(h->db, &db) == SQLITE_OK);
	if (sqlite3_exec(db, q, NULL, NULL, &msg) != SQLITE_OK)
		fprintf(stderr, "sql: %s: %s\n", q, msg != NULL ? msg : "?");
	REQUIRE(msg == NULL);
	sqlite3_close(db);
}

static int present(hsm *h, const char *p11_id)
{
	unsigned char id[P11_ID_MAX];
	size_t len = 0;
	int yes = -1;

	REQUIRE(lifecycle_id_parse(p11_id, id, &len) == 0);
	CHECK_RC(p11_key_present(h->p11, id, len, &yes, NULL), WRIT_OK);
	return yes;
}

/* Delete one object of a key pair with the raw module, as an operator
 * with pkcs11-tool would. */
static void delete_object(hsm *h, CK_OBJECT_CLASS cls, const char *p11_id)
{
	CK_FUNCTION_LIST *f = (CK_FUNCTION_LIST *)p11_raw_functions(h->p11);
	long s = p11_raw_session_get(h->p11);
	unsigned char id[P11_ID_MAX];
	size_t len = 0;
	CK_ATTRIBUTE t[] = {{CKA_CLASS, &cls, sizeof(cls)}, {CKA_ID, id, 0}};
	CK_OBJECT_HANDLE obj;
	CK_ULONG n = 0;

	REQUIRE(f != NULL && s >= 0 && lifecycle_id_parse(p11_id, id, &len) == 0);
	t[1].ulValueLen = len;
	REQUIRE(f->C_FindObjectsInit((CK_SESSION_HANDLE)s, t, 2) == CKR_OK);
	REQUIRE(f->C_FindObjects((CK_SESSION_HANDLE)s, &obj, 1, &n) == CKR_OK);
	REQUIRE(f->C_FindObjectsFinal((CK_SESSION_HANDLE)s) == CKR_OK);
	REQUIRE(n == 1 && f->C_DestroyObject((CK_SESSION_HANDLE)s, obj) == CKR_OK);
	p11_raw_session_put(h->p11, s);
}

static store_sk_state hsm_state(hsm *h, const char *kid)
{
	return state_of(h->st, kid);
}

/* Reconcile once read the token's key list and took every row whose key
 * was not on it for a key the HSM no longer holds: removed, then purged.
 * A key made and recorded by another process after the list was read was
 * one (the concurrent rotate/purge race; test_cli.sh runs it for real),
 * and so is a key whose public object is gone while its private key is
 * still there. Gone now means: no private key under the row's CKA_ID. */
static void test_reconcile_keeps_a_key_whose_public_half_is_gone(void)
{
	store_sk k1, k2;
	writ_err err = {0};
	hsm h;
	int changed = -1;

	if (hsm_open(&h) == 77)
		return;
	CHECK_RC(lifecycle_generate(h.p11, h.st, &h.cfg, &h.lk, WRIT_ALG_ES256, STORE_SK_ROTATE,
	                            NULL, &k1, &err),
	         WRIT_OK);
	CHECK_RC(lifecycle_generate(h.p11, h.st, &h.cfg, &h.lk, WRIT_ALG_ES256, STORE_SK_ROTATE,
	                            NULL, &k2, &err),
	         WRIT_OK);
	REQUIRE(k1.state == STORE_SK_ACTIVE && k2.state == STORE_SK_PENDING);
	delete_object(&h, CKO_PUBLIC_KEY, k2.p11_id);
	CHECK_RC(lifecycle_reconcile(h.p11, h.st, &h.cfg, &h.lk, time(NULL), &changed, &err),
	         WRIT_OK);
	CHECK(changed == 0 && hsm_state(&h, k2.kid) == STORE_SK_PENDING);
	/* Once the private key is gone too, it is. */
	delete_object(&h, CKO_PRIVATE_KEY, k2.p11_id);
	CHECK(present(&h, k2.p11_id) == 0);
	CHECK_RC(lifecycle_reconcile(h.p11, h.st, &h.cfg, &h.lk, time(NULL), &changed, &err),
	         WRIT_OK);
	CHECK(changed == 1 && hsm_state(&h, k2.kid) == STORE_SK_REMOVED);
	CHECK(hsm_state(&h, k1.kid) == STORE_SK_ACTIVE && present(&h, k1.p11_id) == 1);
	hsm_close(&h);
}

static int64_t ms_now(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* The key lock excludes every other holder, in this process or another,
 * for as long as it is held; a wait for it is bounded; reconcile and key
 * generation refuse to run without it; a symlink under its name is not
 * followed. */
static void test_key_lock_excludes_other_holders(void)
{
	char lockpath[600], target[600], db2[500];
	lifecycle_lock other = {-1};
	writ_err err = {0};
	struct stat sb;
	int64_t t0;
	pid_t pid;
	int status = -1;
	hsm h;

	if (hsm_open(&h) == 77)
		return;
	snprintf(lockpath, sizeof(lockpath), "%s%s", h.db, LIFECYCLE_LOCK_SUFFIX);
	CHECK(lstat(lockpath, &sb) == 0 && S_ISREG(sb.st_mode) && (sb.st_mode & 0777) == 0600);
	CHECK_RC(lifecycle_lock_take(h.db, 0, &other, &err), WRIT_ERR_UNAVAILABLE);
	CHECK(other.fd == -1 && strstr(err.msg, "keys.lock") != NULL);
	t0 = ms_now();
	CHECK_RC(lifecycle_lock_take(h.db, 150, &other, NULL), WRIT_ERR_UNAVAILABLE);
	CHECK(ms_now() - t0 >= 150);
	pid = fork();
	REQUIRE(pid >= 0);
	if (pid == 0) {
		lifecycle_lock c = {-1};
		_exit(lifecycle_lock_take(h.db, 100, &c, NULL) == WRIT_ERR_UNAVAILABLE ? 0 : 1);
	}
	REQUIRE(waitpid(pid, &status, 0) == pid);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	CHECK_RC(lifecycle_reconcile(h.p11, h.st, &h.cfg, NULL, time(NULL), NULL, NULL),
	         WRIT_ERR_ARG);
	CHECK_RC(lifecycle_generate(h.p11, h.st, &h.cfg, &other, WRIT_ALG_ES256, STORE_SK_ROTATE,
	                            NULL, NULL, NULL),
	         WRIT_ERR_ARG);
	lifecycle_unlock(&h.lk);
	CHECK_RC(lifecycle_lock_take(h.db, 0, &other, &err), WRIT_OK);
	lifecycle_unlock(&other);
	CHECK(other.fd == -1);
	snprintf(db2, sizeof(db2), "%s/other.db", h.tok.dir);
	snprintf(target, sizeof(target), "%s/elsewhere", h.tok.dir);
	snprintf(lockpath, sizeof(lockpath), "%s%s", db2, LIFECYCLE_LOCK_SUFFIX);
	REQUIRE(symlink(target, lockpath) == 0);
	CHECK_RC(lifecycle_lock_take(db2, 0, &other, NULL), WRIT_ERR_IO);
	CHECK(lstat(target, &sb) != 0 && errno == ENOENT);
	hsm_close(&h);
}

/* Once store_sk_add has committed, the row names the key (maybe as the
 * active one): a failure after that must not destroy it. The fault is a
 * trigger that renames the row as it is inserted, so reading it back by
 * kid fails after the commit. */
static void test_generate_keeps_a_recorded_key_when_reading_it_back_fails(void)
{
	store_sk out, *rows = NULL;
	writ_err err = {0};
	size_t n = 0;
	hsm h;

	if (hsm_open(&h) == 77)
		return;
	sql(&h, "CREATE TRIGGER test_rename AFTER INSERT ON signing_keys "
	        "WHEN NEW.reason = 'test: read back fails' BEGIN "
	        "UPDATE signing_keys SET kid = 'renamed-' || NEW.kid WHERE kid = NEW.kid; END");
	CHECK_RC(lifecycle_generate(h.p11, h.st, &h.cfg, &h.lk, WRIT_ALG_ES256, STORE_SK_ROTATE,
	                            "test: read back fails", &out, &err),
	         WRIT_ERR_NOT_FOUND);
	CHECK_RC(store_sk_list(h.st, &rows, &n, NULL), WRIT_OK);
	REQUIRE(n == 1);
	CHECK(strncmp(rows[0].kid, "renamed-", 8) == 0 && rows[0].state == STORE_SK_ACTIVE);
	CHECK(present(&h, rows[0].p11_id) == 1);
	free(rows);
	hsm_close(&h);
}

/* Keys from before the store are adopted in one transaction per alg: a
 * failure half-way (here a trigger refusing the second row) leaves none
 * of them recorded, not an active key without its older siblings. */
static void test_adopt_records_all_keys_of_an_alg_or_none(void)
{
	store_sk *rows = NULL;
	writ_err err = {0};
	size_t n = 0, i, active = 0, retired = 0;
	p11_key k;
	hsm h;
	int changed = -1;

	if (hsm_open(&h) == 77)
		return;
	for (i = 0; i < 3; i++) {
		REQUIRE(p11_key_generate(h.p11, WRIT_ALG_ES384, &k, &err) == WRIT_OK);
		EVP_PKEY_free(k.pub);
	}
	sql(&h, "CREATE TRIGGER test_refuse BEFORE INSERT ON signing_keys "
	        "WHEN (SELECT count(*) FROM signing_keys WHERE alg = NEW.alg) >= 1 BEGIN "
	        "SELECT RAISE(ABORT, 'test: refused'); END");
	CHECK(lifecycle_reconcile(h.p11, h.st, &h.cfg, &h.lk, time(NULL), &changed, &err) !=
	      WRIT_OK);
	CHECK_RC(store_sk_list(h.st, &rows, &n, NULL), WRIT_OK);
	CHECK(n == 0);
	free(rows);
	sql(&h, "DROP TRIGGER test_refuse");
	CHECK_RC(lifecycle_reconcile(h.p11, h.st, &h.cfg, &h.lk, time(NULL), &changed, &err),
	         WRIT_OK);
	CHECK(changed == 3);
	CHECK_RC(store_sk_list(h.st, &rows, &n, NULL), WRIT_OK);
	for (i = 0; i < n; i++) {
		active += rows[i].state == STORE_SK_ACTIVE;
		retired += rows[i].state == STORE_SK_RETIRED;
	}
	CHECK(n == 3 && active == 1 && retired == 2);
	free(rows);
	hsm_close(&h);
}

/* A module may hand out search results a few at a time (PKCS#11 only
 * promises that a call returning none means no more). One C_FindObjects
 * call listed a partial keyring, and reconcile took the keys left out for
 * keys the HSM no longer holds. A module that never says "no more" gets
 * an error at the cap, never a cut list. Needs the shim (tests/CMakeLists
 * builds this file as one and names it in WRIT_P11_SHIM). */
/* The shim's path (tests/CMakeLists names it in WRIT_P11_SHIM); NULL,
 * said as a skip, without it. */
static const char *shim_path(void)
{
	const char *shim = getenv("WRIT_P11_SHIM");

	if (shim == NULL)
		fprintf(stderr, "SKIP: no WRIT_P11_SHIM\n");
	return shim;
}

/* h's context replaced by one through the shim over the same token: one
 * context per module in a process, and the shim's is SoftHSM2. */
static p11_ctx *shim_ctx(hsm *h, const char *shim)
{
	p11_close(h->p11);
	h->p11 = NULL;
	setenv("WRIT_SHIM_REAL", h->tok.module, 1);
	return hsm_ctx(h, shim);
}

static void test_key_list_is_complete_when_the_module_answers_in_batches(void)
{
	const char *shim = shim_path();
	p11_key *keys = NULL, k;
	writ_err err = {0};
	p11_ctx *ctx;
	size_t n = 0, i;
	hsm h;

	if (shim == NULL || hsm_open(&h) == 77)
		return;
	for (i = 0; i < 3; i++) {
		REQUIRE(p11_key_generate(h.p11, WRIT_ALG_ES256, &k, &err) == WRIT_OK);
		EVP_PKEY_free(k.pub);
	}
	setenv("WRIT_SHIM_FIND", "one", 1);
	ctx = shim_ctx(&h, shim);
	CHECK_RC(p11_keys_list(ctx, &keys, &n, &err), WRIT_OK);
	CHECK(n == 3);
	p11_keys_free(keys, n);
	setenv("WRIT_SHIM_FIND", "endless", 1);
	CHECK_RC(p11_keys_list(ctx, &keys, &n, &err), WRIT_ERR_TOO_LARGE);
	CHECK(keys == NULL && n == 0 && strstr(err.msg, "more than 1024") != NULL);
	unsetenv("WRIT_SHIM_FIND");
	p11_close(ctx);
	hsm_close(&h);
}

/* A token that does not keep the key it made. SoftHSM2 2.6.1's file store,
 * written while another process read the token (the issuer, a second
 * `writ` command), kept a new private key without its CKA_ID and label:
 * the next `writ key rotate` found the key gone and withdrew it, and a key
 * like it left pending would have been activated and signed nothing. Now
 * a new key must sign, found by its CKA_ID, both in the maker's view and
 * after a fresh start of the module; one that does not is destroyed and
 * another made. Real SoftHSM2 under a shim that plays the lost key. */
static void test_new_key_the_token_did_not_keep_is_replaced(void)
{
	static const char *const modes[] = {"now", "stored"};
	static const unsigned char msg[] = "m";
	const char *shim = shim_path();
	unsigned char sig[P11_SIG_MAX];
	p11_key *keys = NULL, k;
	writ_err err = {0};
	size_t n = 0, siglen = 0, i;
	p11_ctx *ctx;
	hsm h;

	if (shim == NULL || hsm_open(&h) == 77)
		return;
	ctx = shim_ctx(&h, shim);
	for (i = 0; i < 2; i++) {
		setenv("WRIT_SHIM_LOSE", modes[i], 1);
		setenv("WRIT_SHIM_LOSE_COUNT", "1", 1);
		setenv("WRIT_SHIM_LOST", "0", 1);
		CHECK_RC(p11_key_generate(ctx, WRIT_ALG_ES256, &k, &err), WRIT_OK);
		CHECK(strcmp(getenv("WRIT_SHIM_LOST"), "1") == 0);
		CHECK_RC(p11_sign(ctx, k.id, k.id_len, WRIT_ALG_ES256, msg, 1, sig, &siglen, &err),
		         WRIT_OK);
		EVP_PKEY_free(k.pub);
		/* Of the lost pair nothing is left: the one key is the kept one. */
		CHECK_RC(p11_keys_list(ctx, &keys, &n, &err), WRIT_OK);
		CHECK(n == i + 1);
		p11_keys_free(keys, n);
		/* A token that keeps nothing: an error that says so, no key. */
		setenv("WRIT_SHIM_LOSE_COUNT", "3", 1);
		setenv("WRIT_SHIM_LOST", "0", 1);
		CHECK_RC(p11_key_generate(ctx, WRIT_ALG_ES256, &k, &err), WRIT_ERR_HSM);
		CHECK(strcmp(getenv("WRIT_SHIM_LOST"), "3") == 0 &&
		      strstr(err.msg, "kept none of the 3 keys") != NULL);
		CHECK_RC(p11_keys_list(ctx, &keys, &n, &err), WRIT_OK);
		CHECK(n == i + 1);
		p11_keys_free(keys, n);
	}
	unsetenv("WRIT_SHIM_LOSE");
	p11_close(ctx);
	hsm_close(&h);
}

int main(void)
{
	char dir[] = "/tmp/writ-lifecycle-XXXXXX";

	REQUIRE(mkdtemp(dir) != NULL);
	snprintf(path, sizeof(path), "%s/writ.db", dir);
	RUN(test_first_key_active_then_rotation_by_the_clock);
	RUN(test_racing_connections_activate_once);
	RUN(test_retire_revoke_purge_rules);
	RUN(test_hold_moves_a_pending_key_later_only);
	RUN(test_key_rotated_with_no_issuer_waits_for_one_to_publish_it);
	RUN(test_revoke_reports_the_state_it_found);
	RUN(test_reconcile_keeps_a_key_whose_public_half_is_gone);
	RUN(test_key_lock_excludes_other_holders);
	RUN(test_generate_keeps_a_recorded_key_when_reading_it_back_fails);
	RUN(test_adopt_records_all_keys_of_an_alg_or_none);
	RUN(test_key_list_is_complete_when_the_module_answers_in_batches);
	RUN(test_new_key_the_token_did_not_keep_is_replaced);
	/* The databases, their -wal, -shm and signal files. */
	snprintf(path, sizeof(path), "rm -rf '%s'", dir);
	if (system(path) != 0)
		fprintf(stderr, "warning: could not remove %s\n", dir);
	return tu_finish();
}

#else /* WRIT_TEST_P11_SHIM: the PKCS#11 module */

#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <p11-kit/pkcs11.h>

/* The real module's functions, and ours: a copy of its list with
 * C_FindObjects, C_GenerateKeyPair, C_Finalize and C_Sign replaced. The real
 * module is $WRIT_SHIM_REAL. */
static CK_FUNCTION_LIST *real;
static CK_FUNCTION_LIST shim;
static CK_OBJECT_HANDLE last;
/* $WRIT_SHIM_LOSE: the token loses the private half of the next
 * $WRIT_SHIM_LOSE_COUNT pairs it makes: "now", at once (the maker's own
 * view shows the loss); "stored", only once the module is re-initialised
 * (the maker's view stays whole, as SoftHSM2's did under a concurrent
 * reader: a fresh start shows what was really kept). $WRIT_SHIM_LOST
 * counts the pairs lost so far (the test process reads it). */
static CK_SESSION_HANDLE lose_s;
static CK_OBJECT_HANDLE lose_h;

static CK_RV shim_generate(CK_SESSION_HANDLE s, CK_MECHANISM_PTR m, CK_ATTRIBUTE_PTR pt,
                           CK_ULONG np, CK_ATTRIBUTE_PTR kt, CK_ULONG nk, CK_OBJECT_HANDLE_PTR pub,
                           CK_OBJECT_HANDLE_PTR priv)
{
	const char *mode = getenv("WRIT_SHIM_LOSE"), *count = getenv("WRIT_SHIM_LOSE_COUNT");
	const char *done = getenv("WRIT_SHIM_LOST");
	long lost = done != NULL ? strtol(done, NULL, 10) : 0;
	CK_RV rv = real->C_GenerateKeyPair(s, m, pt, np, kt, nk, pub, priv);
	char buf[24];

	if (rv != CKR_OK || mode == NULL || lost >= (count != NULL ? strtol(count, NULL, 10) : 1))
		return rv;
	snprintf(buf, sizeof(buf), "%ld", lost + 1);
	setenv("WRIT_SHIM_LOST", buf, 1);
	if (strcmp(mode, "now") == 0)
		(void)real->C_DestroyObject(s, *priv);
	else
		lose_s = s, lose_h = *priv;
	return rv;
}

static CK_RV shim_finalize(CK_VOID_PTR reserved)
{
	if (lose_h != 0)
		(void)real->C_DestroyObject(lose_s, lose_h);
	lose_h = 0;
	return real->C_Finalize(reserved);
}

/* $WRIT_SHIM_FIND: unset, the real answer; "one", at most one object per
 * call; "endless", the same, and the last object again where the real
 * module says there are no more (a module that never ends a search). */
static CK_RV shim_find(CK_SESSION_HANDLE s, CK_OBJECT_HANDLE_PTR out, CK_ULONG max, CK_ULONG_PTR n)
{
	const char *mode = getenv("WRIT_SHIM_FIND");
	CK_RV rv;

	if (mode == NULL || max == 0)
		return real->C_FindObjects(s, out, max, n);
	rv = real->C_FindObjects(s, out, 1, n);
	if (rv == CKR_OK && *n == 1)
		last = out[0];
	else if (rv == CKR_OK && strcmp(mode, "endless") == 0 && last != 0) {
		out[0] = last;
		*n = 1;
	}
	return rv;
}

/* $WRIT_SHIM_SIGN_DELAY_MS: every C_Sign takes that much longer (a slow
 * or remote HSM), for tests of what the issuer does meanwhile. */
static CK_RV shim_sign(CK_SESSION_HANDLE s, CK_BYTE_PTR data, CK_ULONG len, CK_BYTE_PTR sig,
                       CK_ULONG_PTR siglen)
{
	const char *ms = getenv("WRIT_SHIM_SIGN_DELAY_MS");
	long d = ms != NULL ? strtol(ms, NULL, 10) : 0;
	struct timespec ts = {d / 1000, (d % 1000) * 1000000};

	if (d > 0 && sig != NULL) /* not for the length query */
		while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
			;
	return real->C_Sign(s, data, len, sig, siglen);
}

__attribute__((visibility("default"))) CK_RV C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR out)
{
	const char *path = getenv("WRIT_SHIM_REAL");
	CK_C_GetFunctionList get;
	void *dl;

	if (real == NULL) {
		dl = path != NULL ? dlopen(path, RTLD_NOW | RTLD_LOCAL) : NULL;
		if (dl == NULL)
			return CKR_GENERAL_ERROR;
		*(void **)&get = dlsym(dl, "C_GetFunctionList");
		if (get == NULL || get(&real) != CKR_OK)
			return CKR_GENERAL_ERROR;
		shim = *real;
		shim.C_FindObjects = shim_find;
		shim.C_GenerateKeyPair = shim_generate;
		shim.C_Finalize = shim_finalize;
		shim.C_Sign = shim_sign;
	}
	*out = &shim;
	return CKR_OK;
}

#endif
