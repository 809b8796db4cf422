/*
 * test_lifecycle.c - the signing key lifecycle rows in the store (SPEC
 * s.2): transitions, their timing, one active key per alg even with two
 * connections racing, terminal states, and an audit record for each.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "store.h"
#include "testutil.h"

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
	CHECK_RC(store_sk_revoke(s, "v2", "compromised", NULL, 1003, NULL), WRIT_ERR_ARG);
	CHECK_RC(store_sk_revoke(s, "v2", "compromised", &repl, 1003, NULL), WRIT_OK);
	CHECK(state_of(s, "v2") == STORE_SK_REVOKED && state_of(s, "v3") == STORE_SK_ACTIVE);
	CHECK_RC(store_sk_revoke(s, "v1", "", NULL, 1003, NULL), WRIT_ERR_ARG); /* reason */
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
	unlink(path);
	snprintf(path, sizeof(path), "%s/writ.db-wal", dir);
	unlink(path);
	snprintf(path, sizeof(path), "%s/writ.db-shm", dir);
	unlink(path);
	rmdir(dir);
	return tu_finish();
}
