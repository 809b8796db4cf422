/*
 * test_verifier.c - libwrit's service API (verifier.h) against a JWKS
 * server on 127.0.0.1 (libmicrohttpd in this process, so the test can
 * change the key set, its max-age and whether it answers): refresh under
 * load from 8 threads, a rotated-out key taking its cached tokens with it,
 * scope, the token's limits, the decision callback and the static-file
 * source. tests/test_verifier_issuer.py runs the fetch rules against the real
 * issuer; ci/tsan.sh runs this file under ThreadSanitizer.
 */
#include <microhttpd.h>
#include <openssl/ecdsa.h>
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>
#include <unistd.h>

#include "testutil.h"
#include "verifier_int.h"

#define ISS "https://issuer.example"
#define AUD "orders-db"

/* ---- a JWKS server we control ---- */

static struct {
	pthread_mutex_t mu;
	char *jwks;
	unsigned max_age;
	const char *age;  /* an Age field to send, or NULL */
	int down;         /* answer 503 */
	unsigned version; /* the ETag */
	atomic_int gets, not_modified;
	struct MHD_Daemon *d;
	unsigned short port;
	char url[64];
} srv = {.mu = PTHREAD_MUTEX_INITIALIZER};

static enum MHD_Result on_req(void *cls, struct MHD_Connection *c, const char *url,
                              const char *method, const char *ver, const char *data, size_t *sz,
                              void **state)
{
	char etag[32], cc[64];
	const char *inm = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "If-None-Match");
	struct MHD_Response *r;
	unsigned status = 200;
	enum MHD_Result ret;
	char *body;

	(void)cls, (void)url, (void)method, (void)ver, (void)data, (void)sz, (void)state;
	atomic_fetch_add(&srv.gets, 1);
	pthread_mutex_lock(&srv.mu);
	snprintf(etag, sizeof(etag), "\"v%u\"", srv.version);
	snprintf(cc, sizeof(cc), "public, max-age=%u", srv.max_age);
	body = strdup(srv.down ? "" : srv.jwks);
	if (srv.down)
		status = 503;
	else if (inm != NULL && strcmp(inm, etag) == 0)
		status = 304;
	pthread_mutex_unlock(&srv.mu);
	if (status == 304) {
		atomic_fetch_add(&srv.not_modified, 1);
		body[0] = '\0';
	}
	r = MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_FREE);
	MHD_add_response_header(r, "Cache-Control", cc);
	MHD_add_response_header(r, "ETag", etag);
	if (srv.age != NULL)
		MHD_add_response_header(r, "Age", srv.age);
	ret = MHD_queue_response(c, status, r);
	MHD_destroy_response(r);
	return ret;
}

static void srv_start(void)
{
	const union MHD_DaemonInfo *di;

	srv.d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG, 0, NULL, NULL,
	                         on_req, NULL, MHD_OPTION_CONNECTION_TIMEOUT, 5u, MHD_OPTION_END);
	REQUIRE(srv.d != NULL);
	di = MHD_get_daemon_info(srv.d, MHD_DAEMON_INFO_BIND_PORT);
	srv.port = di->port;
	snprintf(srv.url, sizeof(srv.url), "http://127.0.0.1:%u/jwks.json", srv.port);
}

static void srv_set(const char *jwks, unsigned max_age)
{
	pthread_mutex_lock(&srv.mu);
	free(srv.jwks);
	srv.jwks = strdup(jwks);
	srv.max_age = max_age;
	srv.version++;
	pthread_mutex_unlock(&srv.mu);
}

static void srv_down(int down)
{
	pthread_mutex_lock(&srv.mu);
	srv.down = down;
	pthread_mutex_unlock(&srv.mu);
}

/* ---- keys and tokens ---- */

typedef struct tkey {
	EVP_PKEY *pk;
	char kid[WRIT_KID_MAX + 1];
	char *jwk;
} tkey;

static void tkey_init(tkey *k)
{
	writ_jwk *jwk = NULL;

	k->pk = EVP_EC_gen("P-256");
	REQUIRE(k->pk != NULL && writ_jwk_from_pkey(k->pk, WRIT_ALG_ES256, &jwk, NULL) == WRIT_OK);
	snprintf(k->kid, sizeof(k->kid), "%s", writ_jwk_kid(jwk));
	k->jwk = writ_jwk_to_json(jwk);
	writ_jwk_free(jwk);
}

static char *set_of(const tkey *a, const tkey *b)
{
	char buf[4096];

	if (b != NULL)
		snprintf(buf, sizeof(buf), "{\"keys\":[%s,%s]}", a->jwk, b->jwk);
	else
		snprintf(buf, sizeof(buf), "{\"keys\":[%s]}", a->jwk);
	return strdup(buf);
}

/* REQUIRE without the shared counter: mint runs in worker threads. */
#define MUST(c)                                                                                    \
	do {                                                                                       \
		if (!(c))                                                                          \
			abort();                                                                   \
	} while (0)

/* A writ access token signed by k; extra is more JSON members or "". */
static char *mint(const tkey *k, const char *kid, const char *sub, const char *scope,
                  const char *extra, long ttl)
{
	long now = (long)time(NULL);
	char pl[1024];
	json_t *h = json_pack("{s:s,s:s,s:s}", "alg", "ES256", "typ", "at+jwt", "kid", kid), *p;
	unsigned char der[128], raw[64];
	size_t dl = sizeof(der), n;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	const unsigned char *dp = der;
	ECDSA_SIG *es;
	char *in, *tok;

	snprintf(pl, sizeof(pl),
	         "{\"iss\":\"" ISS "\",\"sub\":\"%s\",\"aud\":\"" AUD "\",\"scope\":\"%s\","
	         "\"iat\":%ld,\"exp\":%ld,\"jti\":\"j-%s-%ld\"%s}",
	         sub, scope, now - 1, now + ttl, sub, random(), extra);
	p = json_loads(pl, 0, NULL);
	MUST(h != NULL && p != NULL);
	in = writ_jws_signing_input(h, p, &n);
	MUST(in != NULL && EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, k->pk) == 1 &&
	     EVP_DigestSign(ctx, der, &dl, (unsigned char *)in, n) == 1);
	es = d2i_ECDSA_SIG(NULL, &dp, (long)dl);
	BN_bn2binpad(ECDSA_SIG_get0_r(es), raw, 32);
	BN_bn2binpad(ECDSA_SIG_get0_s(es), raw + 32, 32);
	tok = malloc(n + 2 + B64URL_LEN(64));
	memcpy(tok, in, n);
	tok[n] = '.';
	b64url_encode(raw, 64, tok + n + 1);
	ECDSA_SIG_free(es);
	EVP_MD_CTX_free(ctx);
	free(in);
	json_decref(h);
	json_decref(p);
	return tok;
}

static tkey k1, k2;

static writ_verifier *url_verifier(unsigned min_refresh, unsigned max_stale)
{
	writ_verifier_cfg cfg = {.issuer = ISS,
	                         .audience = AUD,
	                         .jwks_url = srv.url,
	                         .min_refresh = min_refresh,
	                         .max_stale = max_stale};
	writ_verifier *v = NULL;
	writ_err err = {0};

	if (writ_verifier_new(&cfg, &v, &err) != WRIT_OK)
		fprintf(stderr, "verifier: %s\n", err.msg);
	REQUIRE(v != NULL);
	return v;
}

static writ_rc vrf(writ_verifier *v, const char *t)
{
	return writ_verifier_verify(v, t, strlen(t), NULL, NULL);
}

static void pause_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
	nanosleep(&ts, NULL);
}

/* ======================================================================= */

static void test_fetch_then_cache_hits(void)
{
	char *js = set_of(&k1, NULL), *t = mint(&k1, k1.kid, "a", "db:read", "", 300);
	writ_verifier *v;
	writ_verifier_stats st;
	writ_claims *c = NULL;

	srv_set(js, 60);
	v = url_verifier(1, 2);
	CHECK_RC(writ_verifier_verify(v, t, strlen(t), &c, NULL), WRIT_OK);
	CHECK(c != NULL && strcmp(writ_claims_string(c, "sub"), "a") == 0);
	writ_claims_free(c);
	for (int i = 0; i < 100; i++)
		CHECK_RC(vrf(v, t), WRIT_OK);
	writ_verifier_get_stats(v, &st);
	CHECK(st.fetches == 1 && st.keys == 1);
	CHECK(st.verifications == 1 && st.cache_hits == 100);
	/* max-age 60 has not passed: a known kid never causes a fetch. */
	CHECK(st.fetch_failures == 0);
	writ_verifier_free(v);
	free(js);
	free(t);
}

static void test_unknown_kid_flood_one_fetch(void)
{
	char *js = set_of(&k1, NULL), kid[48], *t;
	writ_verifier *v;
	writ_verifier_stats st;
	size_t bad = 0;

	srv_set(js, 60);
	v = url_verifier(30, 0);
	pause_ms(10);
	for (int i = 0; i < 1000; i++) {
		snprintf(kid, sizeof(kid), "garbage%ld", random());
		t = mint(&k1, kid, "a", "db:read", "", 300);
		bad += vrf(v, t) == WRIT_ERR_UNKNOWN_KID;
		free(t);
	}
	writ_verifier_get_stats(v, &st);
	CHECK(bad == 1000);
	/* The start-up fetch and nothing else: min_refresh (30 s) holds. */
	CHECK(st.fetches == 1);
	writ_verifier_free(v);
	free(js);
}

/* A key rotated in is picked up on first sight of its kid; a key rotated
 * out takes its cached tokens with it at the refresh that removes it. */
static void test_rotation(void)
{
	char *one = set_of(&k1, NULL), *both = set_of(&k1, &k2), *two = set_of(&k2, NULL);
	char *t1 = mint(&k1, k1.kid, "a", "db:read", "", 300);
	char *t2 = mint(&k2, k2.kid, "b", "db:read", "", 300);
	writ_verifier_stats st;
	writ_verifier *v;

	srv_set(one, 60);
	v = url_verifier(1, 0);
	CHECK_RC(vrf(v, t1), WRIT_OK);
	srv_set(both, 60);
	CHECK_RC(vrf(v, t2), WRIT_ERR_UNKNOWN_KID); /* within min_refresh */
	pause_ms(1100);
	CHECK_RC(vrf(v, t2), WRIT_OK); /* the unknown kid triggers one fetch */
	srv_set(two, 1);
	pause_ms(1100);
	CHECK_RC(vrf(v, t1), WRIT_OK); /* still cached: max-age 60 holds */
	writ_verifier_get_stats(v, &st);
	CHECK(st.fetches == 2 && st.keys == 2);
	/* Force the refresh with an unknown kid: k1 leaves the set. */
	{
		char *tx = mint(&k1, "nosuchkid", "a", "db:read", "", 300);
		CHECK_RC(vrf(v, tx), WRIT_ERR_UNKNOWN_KID);
		free(tx);
	}
	CHECK_RC(vrf(v, t1), WRIT_ERR_UNKNOWN_KID);
	/* Nor does the header the old set knew: a new token of k1, its
	 * header byte for byte t1's, is not admitted by a remembered key. */
	{
		char *t1b = mint(&k1, k1.kid, "a2", "db:read", "", 300);
		CHECK(strncmp(t1b, t1, (size_t)(strchr(t1, '.') - t1 + 1)) == 0);
		CHECK_RC(vrf(v, t1b), WRIT_ERR_UNKNOWN_KID);
		free(t1b);
	}
	CHECK_RC(vrf(v, t2), WRIT_OK);
	writ_verifier_get_stats(v, &st);
	CHECK(st.keys == 1);
	writ_verifier_free(v);
	free(one), free(both), free(two), free(t1), free(t2);
}

static void test_issuer_down_then_fail_closed(void)
{
	char *js = set_of(&k1, NULL), *t = mint(&k1, k1.kid, "a", "db:read", "", 300);
	writ_verifier_stats st;
	writ_verifier *v;
	writ_err err = {0};

	srv_set(js, 1);
	v = url_verifier(1, 2);
	CHECK_RC(vrf(v, t), WRIT_OK);
	srv_down(1);
	pause_ms(1500); /* expired, within max_stale: the last good set serves */
	CHECK_RC(vrf(v, t), WRIT_OK);
	pause_ms(2000); /* past expiry + max_stale */
	CHECK_RC(writ_verifier_verify(v, t, strlen(t), NULL, &err), WRIT_ERR_UNAVAILABLE);
	CHECK(err.rc == WRIT_ERR_UNAVAILABLE);
	writ_verifier_get_stats(v, &st);
	CHECK(st.fetch_failures >= 1 && st.fetch_failures <= 3);
	srv_down(0);
	pause_ms(1100);
	CHECK_RC(vrf(v, t), WRIT_OK); /* the issuer is back */
	writ_verifier_free(v);
	free(js);
	free(t);
}

/* ---- many threads verifying while the key set is replaced ---- */

#define THREADS 8

typedef struct worker {
	writ_verifier *v;
	char *cached[4];
	atomic_int *stop;
	size_t ok, errors, full;
} worker;

static void *work(void *arg)
{
	worker *w = arg;
	writ_claims *c;
	size_t i = 0;

	while (!atomic_load(w->stop)) {
		/* Mostly cache hits, and a freshly minted token now and then
		 * so full verifications race the swaps too. */
		char *fresh = i % 16 == 0 ? mint(i % 32 ? &k1 : &k2, i % 32 ? k1.kid : k2.kid, "w",
		                                 "db:read", "", 300)
		                          : NULL;
		const char *t = fresh != NULL ? fresh : w->cached[i % 4];

		c = NULL;
		if (writ_verifier_verify(w->v, t, strlen(t), &c, NULL) == WRIT_OK &&
		    writ_claims_has_scope(c, "db:read"))
			w->ok++;
		else
			w->errors++;
		writ_claims_free(c);
		w->full += fresh != NULL;
		free(fresh);
		i++;
	}
	return NULL;
}

static void test_threads_verify_while_refreshing(void)
{
	char *ab = set_of(&k1, &k2), *ba = set_of(&k2, &k1);
	atomic_int stop = 0;
	worker w[THREADS];
	pthread_t th[THREADS];
	writ_verifier_stats st;
	writ_verifier *v;
	size_t ok = 0, errors = 0, i, j;

	srv_set(ab, 1);
	v = url_verifier(1, 5);
	for (i = 0; i < THREADS; i++) {
		w[i] = (worker){.v = v, .stop = &stop};
		for (j = 0; j < 4; j++)
			w[i].cached[j] = mint(j % 2 ? &k1 : &k2, j % 2 ? k1.kid : k2.kid, "w",
			                      "db:read", "", 300);
		REQUIRE(pthread_create(&th[i], NULL, work, &w[i]) == 0);
	}
	/* New set contents (a new ETag, so a 200 and a swap) every 300 ms;
	 * max-age 1 and min_refresh 1 make the verifier fetch each second. */
	for (i = 0; i < 12; i++) {
		srv_set(i % 2 ? ab : ba, 1);
		pause_ms(300);
	}
	atomic_store(&stop, 1);
	for (i = 0; i < THREADS; i++) {
		pthread_join(th[i], NULL);
		ok += w[i].ok;
		errors += w[i].errors;
		for (j = 0; j < 4; j++)
			free(w[i].cached[j]);
	}
	writ_verifier_get_stats(v, &st);
	fprintf(stderr, "  %zu verifications (%llu full, %llu cached), %zu errors, %llu fetches\n",
	        ok + errors, (unsigned long long)st.verifications,
	        (unsigned long long)st.cache_hits, errors, (unsigned long long)st.fetches);
	CHECK(errors == 0);
	CHECK(ok > 1000);
	CHECK(st.fetches >= 3);
	writ_verifier_free(v);
	free(ab);
	free(ba);
}

/* ---- scope, limits, decisions ---- */

static struct {
	int n, allowed;
	writ_rc last;
	char jti[64];
} seen;

static void on_decision(void *arg, const writ_decision *d)
{
	(void)arg;
	seen.n++;
	seen.allowed += d->allowed;
	seen.last = d->why;
	snprintf(seen.jti, sizeof(seen.jti), "%s", d->jti != NULL ? d->jti : "");
}

static writ_verifier *bytes_verifier(void)
{
	char *js = set_of(&k1, NULL);
	writ_verifier_cfg cfg = {
	    .issuer = ISS, .audience = AUD, .jwks_bytes = js, .jwks_len = strlen(js)};
	writ_verifier *v = NULL;

	REQUIRE(writ_verifier_new(&cfg, &v, NULL) == WRIT_OK);
	free(js);
	return v;
}

static void test_scope_exact_member(void)
{
	writ_verifier *v = bytes_verifier();
	char *t = mint(&k1, k1.kid, "a", "db:read db:write:all", "", 300);
	writ_claims *c = NULL;

	REQUIRE(writ_verifier_verify(v, t, strlen(t), &c, NULL) == WRIT_OK);
	CHECK(writ_claims_has_scope(c, "db:read"));
	CHECK(writ_claims_has_scope(c, "db:write:all"));
	CHECK(!writ_claims_has_scope(c, "db:write"));
	CHECK(!writ_claims_has_scope(c, "db:re"));
	CHECK(!writ_claims_has_scope(c, "read"));
	CHECK(!writ_claims_has_scope(c, ""));
	CHECK(!writ_claims_has_scope(c, NULL));
	/* Two members asked for as one, or one with a blank, are not a member. */
	CHECK(!writ_claims_has_scope(c, "db:read db:write:all"));
	CHECK(!writ_claims_has_scope(c, "db:read "));
	CHECK(!writ_claims_has_scope(c, " db:write:all"));
	writ_claims_free(c);
	writ_verifier_free(v);
	free(t);
}

static void test_check_scope_limits_and_decisions(void)
{
	writ_verifier *v = bytes_verifier();
	char *t = mint(&k1, k1.kid, "lim-agent", "db:read", ",\"lim\":{\"rps\":5}", 300);
	char *bad = mint(&k1, k1.kid, "x", "db:read", ",\"lim\":{\"rps\":\"lots\"}", 300);
	char *zero = mint(&k1, k1.kid, "z", "db:read", ",\"lim\":{\"rps\":0,\"rows\":9}", 300);
	char *rows = mint(&k1, k1.kid, "r", "db:read", ",\"lim\":{\"rows\":100}", 300);
	writ_claims *c = NULL;
	double ra = -1;
	writ_err err = {0};
	int i;

	writ_verifier_on_decision(v, on_decision, NULL);
	for (i = 0; i < 5; i++)
		CHECK_RC(writ_verifier_check(v, t, strlen(t), "db:read", NULL, &ra, NULL), WRIT_OK);
	CHECK_RC(writ_verifier_check(v, t, strlen(t), "db:read", NULL, &ra, &err),
	         WRIT_ERR_RATE_LIMITED);
	CHECK(ra > 0 && ra <= 0.25);
	CHECK(seen.n == 6 && seen.allowed == 5 && seen.last == WRIT_ERR_RATE_LIMITED);
	CHECK(strncmp(seen.jti, "j-lim-agent-", 12) == 0);
	CHECK_RC(writ_verifier_check(v, t, strlen(t), "db:write", NULL, &ra, NULL), WRIT_ERR_SCOPE);
	CHECK(seen.last == WRIT_ERR_SCOPE);
	pause_ms(250); /* 5/s refills one in 200 ms */
	CHECK_RC(writ_verifier_check(v, t, strlen(t), "db:read", NULL, &ra, NULL), WRIT_OK);
	/* A rate that cannot be enforced is refused, not ignored. */
	CHECK_RC(writ_verifier_check(v, bad, strlen(bad), "db:read", NULL, &ra, NULL),
	         WRIT_ERR_CLAIM);
	CHECK_RC(writ_verifier_check(v, zero, strlen(zero), "db:read", NULL, &ra, NULL),
	         WRIT_ERR_CLAIM);
	/* Names other than rps/rpm are the service's: admitted, and there in
	 * the claims for it to enforce (writ policy check accepts them). */
	for (i = 0; i < 20; i++)
		CHECK_RC(writ_verifier_check(v, rows, strlen(rows), "db:read", i == 0 ? &c : NULL,
		                             &ra, NULL),
		         WRIT_OK);
	CHECK(c != NULL && json_integer_value(json_object_get(
	                       json_object_get(writ_claims_payload(c), "lim"), "rows")) == 100);
	writ_claims_free(c);
	CHECK_RC(writ_verifier_check(v, "x.y.z", 5, "db:read", NULL, &ra, NULL),
	         WRIT_ERR_MALFORMED);
	CHECK(seen.last == WRIT_ERR_MALFORMED && seen.jti[0] == '\0');
	writ_verifier_free(v);
	free(t);
	free(bad);
	free(zero);
	free(rows);
}

/* The key set remembers headers of tokens that verified; a later token
 * with the same header bytes must still have its own claims, signature and
 * structure checked in full. */
static void test_known_header_checks_the_rest(void)
{
	writ_verifier *v = bytes_verifier();
	char *t = mint(&k1, k1.kid, "a", "db:read", "", 300);
	char *forged = mint(&k2, k1.kid, "a", "db:read", "", 300); /* k2 signs, names k1 */
	char *aud = mint(&k1, k1.kid, "a", "db:read", ",\"aud\":\"other\"", 300); /* last wins */
	char *old = mint(&k1, k1.kid, "a", "db:read", "", -100);
	char *t2 = mint(&k1, k1.kid, "b", "db:read", "", 300), *bad, *five;
	size_t hl = (size_t)(strchr(t, '.') - t), n = strlen(t2);
	writ_verifier_stats st;
	writ_claims *c = NULL;

	CHECK_RC(vrf(v, t), WRIT_OK); /* the header is now known */
	CHECK(strncmp(forged, t, hl + 1) == 0 && strncmp(aud, t, hl + 1) == 0);
	CHECK_RC(vrf(v, forged), WRIT_ERR_SIGNATURE);
	CHECK_RC(vrf(v, aud), WRIT_ERR_AUD);
	CHECK(vrf(v, old) != WRIT_OK);
	bad = strdup(t2);
	bad[n - 2] = bad[n - 2] == 'A' ? 'B' : 'A'; /* flip signature bits */
	CHECK_RC(vrf(v, bad), WRIT_ERR_SIGNATURE);
	five = malloc(n + 3);
	snprintf(five, n + 3, "%s.x", t2);
	CHECK_RC(vrf(v, five), WRIT_ERR_MALFORMED);
	CHECK_RC(writ_verifier_verify(v, t2, n, &c, NULL), WRIT_OK);
	CHECK(c != NULL && strcmp(writ_claims_string(c, "sub"), "b") == 0);
	CHECK(c != NULL && strcmp(writ_claims_kid(c), k1.kid) == 0);
	writ_verifier_get_stats(v, &st);
	CHECK(st.verifications == 6 && st.cache_hits == 0); /* all but the malformed one */
	writ_claims_free(c);
	writ_verifier_free(v);
	free(t), free(forged), free(aud), free(old), free(t2), free(bad), free(five);
}

/* wjson_parse_object's fast path may only ever agree with jansson: when
 * it builds a tree, jansson (JSON_REJECT_DUPLICATES) accepts the input
 * and builds the same tree, members in the same order. */
static int fast_agrees(const char *in, size_t len)
{
	json_t *f = wjson_parse_fast(in, len),
	       *j = json_loadb(in, len, JSON_REJECT_DUPLICATES, NULL);
	int ok = 1;

	if (f != NULL) {
		char *a = json_dumps(f, JSON_COMPACT | JSON_PRESERVE_ORDER);
		char *b = j != NULL ? json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
		ok = j != NULL && json_equal(f, j) && a != NULL && b != NULL && strcmp(a, b) == 0;
		free(a);
		free(b);
	}
	json_decref(f);
	json_decref(j);
	return ok;
}

/* wjson_dump's output is json_dumps' (compact, in order), byte for byte,
 * for every tree: the fast writer's, or jansson's where it gives up. */
/* Our text a (taken) is what json_dumps writes for v, or both are NULL. */
static int same_as_janssons(const char *who, char *a, const json_t *v)
{
	char *b = json_dumps(v, JSON_COMPACT | JSON_PRESERVE_ORDER);
	int ok = (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);

	if (!ok)
		fprintf(stderr, "  %s: %s\n  json_dumps: %s\n", who, a ? a : "(null)",
		        b ? b : "(null)");
	free(a);
	free(b);
	return ok;
}

static int dump_agrees(const json_t *v)
{
	return same_as_janssons("wjson_dump", wjson_dump(v), v);
}

/* A random tree of depth <= d from characters JSON escaping turns on. */
static json_t *random_tree(int d)
{
	static const char chars[] = "a\"\\/\x01\x1f\x7f\b\f\n\r\t \xc3\xa9~";
	char str[12];
	size_t n = (size_t)random() % sizeof(str), i;
	int kind = d <= 0 ? (int)(random() % 5) + 2 : (int)(random() % 7);
	json_t *v;

	for (i = 0; i < n; i++)
		str[i] = chars[random() % (sizeof(chars) - 1)];
	switch (kind) {
	case 0:
		v = json_object();
		for (i = (size_t)random() % 4; i > 0; i--)
			json_object_setn_new_nocheck(v, str, (size_t)random() % (n + 1),
			                             random_tree(d - 1));
		return v;
	case 1:
		v = json_array();
		for (i = (size_t)random() % 4; i > 0; i--)
			json_array_append_new(v, random_tree(d - 1));
		return v;
	case 2: return json_stringn_nocheck(str, n);
	case 3: return json_integer((json_int_t)random() - (json_int_t)random() * 65536);
	case 4: return random() % 2 ? json_true() : json_false();
	case 5: return json_null();
	default: return json_real((double)random() / 7.0);
	}
}

static void test_json_dump_is_janssons(void)
{
	json_t *o = json_object(), *a = json_array(), *deep = json_array(), *in;
	char all[0x80];
	int i;

	/* Every ASCII character, NUL included, in a value and in a key. */
	for (i = 0; i < 0x80; i++)
		all[i] = (char)i;
	json_object_set_new(o, "all", json_stringn(all, sizeof(all)));
	json_object_setn_new(o, all, sizeof(all), json_true());
	json_object_set_new(o, "min", json_integer(INT64_MIN));
	json_object_set_new(o, "max", json_integer(INT64_MAX));
	json_object_set_new(o, "arr", a);
	json_array_append_new(a, json_object());
	json_array_append_new(a, json_array());
	json_array_append_new(a, json_null());
	json_array_append_new(a, json_false());
	json_array_append_new(a, json_string("path/with/slashes"));
	CHECK(dump_agrees(o));
	/* Where the fast writer gives up: non-ASCII, a real, deep nesting,
	 * and what jansson itself refuses to dump (a bare string). */
	json_object_set_new(o, "e", json_string("\xc3\xa9"));
	CHECK(dump_agrees(o));
	json_object_del(o, "e");
	json_object_set_new(o, "r", json_real(0.1));
	CHECK(dump_agrees(o));
	for (i = 0, in = deep; i < 40; i++) {
		json_t *next = json_array();
		json_array_append_new(in, next);
		in = next;
	}
	CHECK(dump_agrees(deep));
	in = json_string("x");
	CHECK(dump_agrees(in));
	json_decref(in);
	for (i = 0; i < 20000; i++) {
		json_t *t = random_tree(4);
		if (!dump_agrees(t)) {
			CHECK(0);
			json_decref(t);
			break;
		}
		json_decref(t);
	}
	json_decref(o);
	json_decref(deep);
}

/* The writer (wjw_*) writes an object's members as json_dumps does, and
 * fails where it fails (a string that is not UTF-8): 1 if they agree, 0
 * if not, -1 if v holds what the writer does not write (reals, true,
 * false, null, NUL). */
static int writer_agrees(const json_t *v)
{
	wjson_w w;
	const char *k;
	json_t *m;

	wjw_init(&w);
	json_object_foreach((json_t *)v, k, m)
		if (wjw_tree(&w, k, m) != 0) {
			wjw_discard(&w);
			return -1;
		}
	return same_as_janssons("wjw", wjw_finish(&w, NULL), v);
}

static void test_json_writer_is_janssons(void)
{
	/* Valid UTF-8 at each length, and what RFC 3629 rules out: a lone
	 * continuation byte, a cut sequence, overlong forms, a surrogate,
	 * above U+10FFFF. jansson refuses the same strings. */
	static const char *const good[] = {"\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80",
	                                   "a\"\\\x01\xc3\xa9\n", "\xf4\x8f\xbf\xbf"};
	static const char *const bad[] = {"\x80",
	                                  "\xc3",
	                                  "\xc0\xaf",
	                                  "\xe0\x80\xaf",
	                                  "\xed\xa0\x80",
	                                  "\xf4\x90\x80\x80",
	                                  "\xf5\x80\x80\x80",
	                                  "a\xe2\x82"};
	wjson_w w;
	json_t *o;
	size_t i, len;
	char *s;

	for (i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		o = json_pack("{s:s, s:[s, i], s:{s:s}}", good[i], good[i], "a", good[i], 7, "o",
		              "k", good[i]);
		CHECK(o != NULL && writer_agrees(o) == 1);
		json_decref(o);
	}
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		CHECK(json_string(bad[i]) == NULL);
		wjw_init(&w);
		wjw_str(&w, "k", bad[i]);
		CHECK(wjw_finish(&w, NULL) == NULL);
		wjw_init(&w);
		wjw_str(&w, bad[i], "v");
		CHECK(wjw_finish(&w, NULL) == NULL);
	}
	/* Misuse fails instead of writing broken JSON: a key in an array,
	 * none in an object, a close too many, an open never closed. */
	wjw_init(&w);
	wjw_open(&w, "a", '[');
	wjw_str(&w, "k", "v");
	CHECK(wjw_finish(&w, NULL) == NULL);
	wjw_init(&w);
	wjw_str(&w, NULL, "v");
	CHECK(wjw_finish(&w, NULL) == NULL);
	wjw_init(&w);
	wjw_close(&w);
	CHECK(wjw_finish(&w, NULL) == NULL);
	wjw_init(&w);
	wjw_open(&w, "o", '{');
	CHECK(wjw_finish(&w, NULL) == NULL);
	/* Nesting past WJW_DEPTH is refused, not cut short. */
	wjw_init(&w);
	for (i = 0; i < WJW_DEPTH; i++)
		wjw_open(&w, "d", '{');
	for (i = 0; i < WJW_DEPTH; i++)
		wjw_close(&w);
	CHECK(wjw_finish(&w, NULL) == NULL);
	o = json_loads("{\"deep\":[[[[[[[[[[1]]]]]]]]]]}", 0, NULL);
	CHECK(o != NULL && writer_agrees(o) == -1);
	json_decref(o);
	/* Past the first buffer, and the length it reports. */
	wjw_init(&w);
	for (i = 0; i < 300; i++)
		wjw_int(&w, "n", (int64_t)i - 150);
	s = wjw_finish(&w, &len);
	CHECK(s != NULL && len == strlen(s) && s[0] == '{' && s[len - 1] == '}');
	free(s);
	/* Random members: strings with escapes and stray UTF-8 bytes,
	 * integers, nesting; those with reals and the like are skipped. */
	for (i = 0, len = 0; i < 20000; i++) {
		json_t *t = json_pack("{s:o, s:o}", "t", random_tree(4), "u", random_tree(2));
		int r = t != NULL ? writer_agrees(t) : 0;

		json_decref(t);
		if (r == 0) {
			CHECK(0);
			break;
		}
		len += r == 1;
	}
	CHECK(len > 1000); /* enough of them were compared */
}

static void test_json_fast_path_is_janssons(void)
{
	static const char *const fast[] = {
	    "{}",
	    " { } ",
	    "{\"a\":1}",
	    "{\"a\":-0,\"b\":0,\"c\":-12}",
	    "{\"iss\":\"https://x\",\"n\":999999999999999999,\"t\":true,\"f\":false,\"z\":null}",
	    "{\"a\":[],\"b\":[1,\"x\",[{}]],\"c\":{\"d\":{}}}",
	    "\t{\r\n\"\":\"\"\n}\n",
	    "{\"lim\":{\"rps\":5,\"rpm\":60}}",
	    "{\"a\":\"\x7f~\"}"};
	static const char *const slow[] = {
	    "",
	    "[]",
	    "1",
	    "{\"a\":1,}",
	    "{\"a\":1,\"a\":2}",
	    "{\"a\":{\"b\":1,\"b\":1}}",
	    "{\"a\":01}",
	    "{\"a\":1.5}",
	    "{\"a\":1e3}",
	    "{\"a\":1E3}",
	    "{\"a\":-}",
	    "{\"a\":9999999999999999999}",
	    "{\"a\":\"\\u0041\"}",
	    "{\"a\":\"\\n\"}",
	    "{\"a\":\"\xc3\xa9\"}",
	    "{\"a\":\"\x01\"}",
	    "{\"a\":truex}",
	    "{\"a\":tru}",
	    "{\"a\":nul}",
	    "{\"a\":1}x",
	    "{\"a\":1}{}",
	    "{\"a\" 1}",
	    "{a:1}",
	    "{\"a\":[1,]}",
	    "{\"a\":1 2}",
	    "{\"a\":\"x}",
	    "\xef\xbb\xbf{}",

	    "{\"a\":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}"};
	static const char alphabet[] = "{}[]\",:-0123456789.eEtruefalsn \\\x01\xc3"
	                               "a";
	char buf[128];
	size_t i, n;

	for (i = 0; i < sizeof(fast) / sizeof(fast[0]); i++) {
		json_t *f = wjson_parse_fast(fast[i], strlen(fast[i]));
		CHECK(f != NULL);
		json_decref(f);
		CHECK(fast_agrees(fast[i], strlen(fast[i])));
	}
	for (i = 0; i < sizeof(slow) / sizeof(slow[0]); i++) {
		json_t *f = wjson_parse_fast(slow[i], strlen(slow[i]));
		CHECK(f == NULL);
		json_decref(f);
	}
	CHECK(wjson_parse_fast("{\"a\":1}\x00", 8) == NULL);
	/* Mutations of a claims set, from the characters JSON turns on. */
	for (i = 0; i < 50000; i++) {
		const char *seed = fast[i % (sizeof(fast) / sizeof(fast[0]))];
		n = strlen(seed);
		memcpy(buf, seed, n);
		for (int m = (int)(random() % 3) + 1; m > 0; m--) {
			size_t at = (size_t)random() % (n + 1);
			char ch = alphabet[(size_t)random() % (sizeof(alphabet) - 1)];
			if (random() % 2 && n + 1 < sizeof(buf)) { /* insert */
				memmove(buf + at + 1, buf + at, n - at);
				buf[at] = ch;
				n++;
			} else if (at < n) { /* replace */
				buf[at] = ch;
			}
		}
		if (!fast_agrees(buf, n)) {
			CHECK(!"fast path disagrees with jansson");
			fprintf(stderr, "  input: %.*s\n", (int)n, buf);
			break;
		}
	}
}

static void test_rpm_and_bounded_table(void)
{
	writ_verifier *v = bytes_verifier();
	char *t = mint(&k1, k1.kid, "slow", "db:read", ",\"lim\":{\"rpm\":60,\"rps\":100}", 300);
	writ_claims *c = NULL;
	double ra = 0;

	REQUIRE(writ_verifier_verify(v, t, strlen(t), &c, NULL) == WRIT_OK);
	CHECK_RC(writ_verifier_admit(v, c, &ra), WRIT_OK);
	CHECK_RC(writ_verifier_admit(v, c, &ra), WRIT_ERR_RATE_LIMITED); /* rpm is stricter */
	CHECK(ra > 0.5 && ra <= 1.0);
	writ_claims_free(c);
	writ_verifier_free(v);
	free(t);
}

static void test_config_errors(void)
{
	writ_verifier_cfg cfg = {.issuer = ISS, .audience = AUD};
	writ_verifier *v = (writ_verifier *)&cfg;
	writ_err err = {0};

	CHECK_RC(writ_verifier_new(&cfg, &v, &err), WRIT_ERR_ARG); /* no source */
	CHECK(v == NULL);
	cfg.jwks_url = "file:///etc/passwd";
	CHECK_RC(writ_verifier_new(&cfg, &v, &err), WRIT_ERR_CONFIG);
	cfg.jwks_url = "http://127.0.0.1:1/jwks.json"; /* nothing listens */
	CHECK_RC(writ_verifier_new(&cfg, &v, &err), WRIT_ERR_UNAVAILABLE);
	cfg.jwks_url = "not a url";
	CHECK_RC(writ_verifier_new(&cfg, &v, &err), WRIT_ERR_CONFIG);
	CHECK(strstr(err.msg, "not a valid URL") != NULL);
	cfg.jwks_file = "/nonexistent";
	CHECK_RC(writ_verifier_new(&cfg, &v, &err), WRIT_ERR_ARG); /* two sources */
	cfg.jwks_url = NULL;
	CHECK_RC(writ_verifier_new(&cfg, &v, &err), WRIT_ERR_IO);
	cfg.jwks_file = srv.url;
	cfg.jwks_file = NULL;
	cfg.jwks_bytes = "{\"keys\":[]}";
	cfg.jwks_len = 11;
	CHECK_RC(writ_verifier_new(&cfg, &v, &err), WRIT_ERR_JWK);
	cfg.leeway = 61;
	CHECK_RC(writ_verifier_new(&cfg, &v, &err), WRIT_ERR_ARG);
	/* A huge cache size is refused, not looped on (the limiter's sizing
	 * overflowed to 0 and never ended). */
	cfg.leeway = 0;
	cfg.cache_entries = SIZE_MAX;
	CHECK_RC(writ_verifier_new(&cfg, &v, &err), WRIT_ERR_ARG);
	CHECK(strstr(err.msg, "cache_entries") != NULL);
	cfg.cache_entries = 0;
	cfg = (writ_verifier_cfg){.audience = AUD, .jwks_bytes = "{}", .jwks_len = 2};
	CHECK_RC(writ_verifier_new(&cfg, &v, &err), WRIT_ERR_ARG);
	CHECK(v == NULL);
	writ_verifier_free(NULL);
}

/* Attack: JWKS key injection on the path. Over plain http:// to another
 * host, whoever sits between the service and the issuer can serve a JWK
 * Set with their own key and mint tokens the service accepts. Refused at
 * configuration, unless the caller says the hop is protected otherwise;
 * loopback stays allowed (the issuer's development default). */
static void test_jwks_over_plain_http_to_remote_host_refused(void)
{
	static const char *const remote[] = {
	    "http://issuer.example.com/.well-known/jwks.json",
	    "HTTP://ISSUER.EXAMPLE.COM/jwks.json",
	    "http://127.0.0.1.example.com/jwks.json", /* a name, not the address */
	    "http://127.0.0.1@example.com/jwks.json", /* userinfo, not the host */
	    "http://10.0.0.1:8080/jwks.json",
	    "http://[::ffff:127.0.0.1]:1/jwks.json",
	};
	static const char *const loopback[] = {
	    "http://127.0.0.1:1/jwks.json",
	    "http://127.9.8.7:1/jwks.json",
	    "http://[::1]:1/jwks.json",
	    "http://LocalHost:1/jwks.json",
	};
	writ_verifier_cfg cfg = {.issuer = ISS, .audience = AUD};
	writ_verifier *v = NULL;
	writ_err err = {0};
	size_t i;

	for (i = 0; i < sizeof(remote) / sizeof(remote[0]); i++) {
		cfg.jwks_url = remote[i];
		CHECK_RC(writ_verifier_new(&cfg, &v, &err), WRIT_ERR_CONFIG);
		CHECK(v == NULL &&
		      strstr(err.msg, "plain http:// only to a loopback host") != NULL);
	}
	/* Loopback passes the check and gets as far as fetching (nothing
	 * listens on port 1). Remote hosts pass only with allow_http; the
	 * check alone, since tests talk to 127.0.0.1 only. */
	for (i = 0; i < sizeof(loopback) / sizeof(loopback[0]); i++) {
		cfg.jwks_url = loopback[i];
		CHECK_RC(writ_verifier_new(&cfg, &v, &err), WRIT_ERR_UNAVAILABLE);
	}
	for (i = 0; i < sizeof(remote) / sizeof(remote[0]); i++) {
		CHECK_RC(writ_url_check(remote[i], "jwks_url", 0, &err), WRIT_ERR_CONFIG);
		CHECK_RC(writ_url_check(remote[i], "jwks_url", 1, &err), WRIT_OK);
	}
	CHECK_RC(writ_url_check("https://issuer.example.com/jwks.json", "jwks_url", 0, &err),
	         WRIT_OK);
	CHECK_RC(writ_url_check("ftp://issuer.example.com/jwks.json", "jwks_url", 1, &err),
	         WRIT_ERR_CONFIG);
}

static void test_body_cap(void)
{
	size_t n = WRIT_JWKS_MAX_BYTES + 100;
	char *big = malloc(n + 1);
	writ_verifier_cfg cfg = {.issuer = ISS, .audience = AUD, .jwks_url = srv.url};
	writ_verifier *v = NULL;
	writ_err err = {0};

	memset(big, ' ', n);
	big[n] = '\0';
	srv_set(big, 60);
	CHECK_RC(writ_verifier_new(&cfg, &v, &err), WRIT_ERR_UNAVAILABLE);
	CHECK(strstr(err.msg, "over") != NULL);
	free(big);
}

static void test_cache_control_parse(void)
{
	CHECK(jwks_parse_max_age("public, max-age=300") == 300);
	CHECK(jwks_parse_max_age("max-age=7, public") == 7);
	CHECK(jwks_parse_max_age("Public, Max-Age=12") == 12);
	CHECK(jwks_parse_max_age("s-maxage=50") == -1);
	CHECK(jwks_parse_max_age("public, s-max-age=50") == -1);
	CHECK(jwks_parse_max_age("max-age=99999999999") == JWKS_MAX_AGE_CAP);
	CHECK(jwks_parse_max_age("max-age=x") == -1);
	CHECK(jwks_parse_max_age("no-cache, max-age=60") == 0);
	CHECK(jwks_parse_max_age("no-store") == 0);
	CHECK(jwks_parse_max_age("") == -1);
	CHECK(jwks_parse_age("0") == 0);
	CHECK(jwks_parse_age(" 42 ") == 42);
	CHECK(jwks_parse_age("5, 7") == 5);
	CHECK(jwks_parse_age("99999999999999999999") == JWKS_MAX_AGE_CAP);
	CHECK(jwks_parse_age("-1") == -1);
	CHECK(jwks_parse_age("1.5") == -1);
	CHECK(jwks_parse_age("abc") == -1);
	CHECK(jwks_parse_age("") == -1);
}

/* A key set's verdict must not change from one parse to the next. This
 * one's RSA modulus (found by fuzz_jwks) is not a product of two large
 * primes; OpenSSL's public-key check, with its random Miller-Rabin bases,
 * accepted it on some calls and refused it on others. */
static void test_rsa_key_verdict_is_deterministic(void)
{
	size_t len, i;
	char *buf = tu_read_file(tu_data("jwks_rsa_odd_modulus.json"), &len), *bad, *p;
	writ_jwks *set = NULL;
	int ok = 0;

	REQUIRE(buf != NULL);
	for (i = 0; i < 64; i++) {
		writ_rc rc = writ_jwks_parse(buf, len, 0, &set, NULL);
		const writ_jwk *k = rc == WRIT_OK ? writ_jwks_get(set, 1) : NULL;
		char *js = k != NULL ? writ_jwk_to_json(k) : NULL;
		writ_jwk *again = NULL;

		ok += rc == WRIT_OK && js != NULL &&
		      writ_jwk_parse(js, strlen(js), &again, NULL) == WRIT_OK;
		writ_jwk_free(again);
		free(js);
		writ_jwks_free(set);
		set = NULL;
	}
	CHECK(ok == 64);
	/* What the deterministic checks refuse: e = 3, and an even modulus. */
	bad = strdup(buf);
	REQUIRE(bad != NULL && (p = strstr(bad, "\"e\":\"AQAB\"")) != NULL);
	memcpy(p, "\"e\":\"Aw\"  ", 10);
	CHECK(writ_jwks_parse(bad, len, 0, &set, NULL) == WRIT_ERR_JWK && set == NULL);
	memcpy(bad, buf, len);
	REQUIRE((p = strstr(bad, "L7_-lQ\"")) != NULL);
	p[5] = 'A'; /* the modulus' lowest bits: ...01 -> ...00 */
	CHECK(writ_jwks_parse(bad, len, 0, &set, NULL) == WRIT_ERR_JWK && set == NULL);
	free(bad);
	free(buf);
}

/* ---- attacks on the JWKS fetch itself ---- */

static unsigned short redir_port;

/* /old redirects to /jwks.json with a year's max-age and an ETag of its
 * own; /jwks.json answers with neither. */
static enum MHD_Result on_redirect(void *cls, struct MHD_Connection *c, const char *url,
                                   const char *method, const char *ver, const char *data,
                                   size_t *sz, void **state)
{
	static const char body[] = "{\"keys\":[]}";
	struct MHD_Response *r = MHD_create_response_from_buffer(
	    strlen(body), (void *)(uintptr_t)body, MHD_RESPMEM_PERSISTENT);
	unsigned status = 200;
	enum MHD_Result ret;
	char loc[96];

	(void)cls, (void)method, (void)ver, (void)data, (void)sz, (void)state;
	if (strcmp(url, "/old") == 0) {
		snprintf(loc, sizeof(loc), "https://127.0.0.1:%u/jwks.json", redir_port);
		MHD_add_response_header(r, "Location", loc);
		MHD_add_response_header(r, "Cache-Control", "public, max-age=31536000");
		MHD_add_response_header(r, "ETag", "\"redirect\"");
		status = 301;
	} else {
		MHD_add_response_header(r, "Cache-Control", "public");
	}
	ret = MHD_queue_response(c, status, r);
	MHD_destroy_response(r);
	return ret;
}

/* Behind a caching proxy, a key set the proxy has held for Age seconds has
 * that much less freshness left. Ignoring Age, a verifier kept a key set
 * (and so a withdrawn key) up to about twice max-age. */
static void test_jwks_age_spends_freshness(void)
{
	static const struct {
		const char *age;
		unsigned left;
	} cases[] = {{NULL, 300}, {"290", 10},   {"300", 0},
	             {"4000", 0}, {"junk", 300}, {"60, 5", 240}};
	char etag[JWKS_ETAG_MAX + 1];
	jwks_response r;
	writ_err err = {0};
	size_t i;

	REQUIRE(jwks_fetch_init(&err) == WRIT_OK);
	srv_set("{\"keys\":[]}", 300);
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		pthread_mutex_lock(&srv.mu);
		srv.age = cases[i].age;
		pthread_mutex_unlock(&srv.mu);
		CHECK_RC(jwks_fetch(srv.url, NULL, NULL, &r, &err), WRIT_OK);
		CHECK(r.status == 200 && r.max_age == cases[i].left);
		free(r.body);
		snprintf(etag, sizeof(etag), "%s", r.etag);
		/* A 304 revalidation through the proxy counts its Age too. */
		CHECK_RC(jwks_fetch(srv.url, NULL, etag, &r, &err), WRIT_OK);
		CHECK(r.status == 304 && r.max_age == cases[i].left);
		free(r.body);
	}
	pthread_mutex_lock(&srv.mu);
	srv.age = NULL;
	pthread_mutex_unlock(&srv.mu);
}

/* A redirect's caching headers describe the redirect, not the key set:
 * kept, a CDN's "301, max-age=31536000" in front of the JWKS would let a
 * removed key verify for the whole cap (a day) instead of the default. */
static void test_redirect_cache_headers_not_applied_to_jwks(void)
{
	char dir[] = "/tmp/writ-tv-XXXXXX", cert[64], key[64], cmd[512], url[96];
	char *cpem, *kpem;
	struct MHD_Daemon *d;
	jwks_response r = {0};
	writ_err err = {0};
	size_t n;

	REQUIRE(mkdtemp(dir) != NULL);
	snprintf(cert, sizeof(cert), "%s/tls.crt", dir);
	snprintf(key, sizeof(key), "%s/tls.key", dir);
	snprintf(cmd, sizeof(cmd),
	         "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout %s "
	         "-out %s -days 1 -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 "
	         ">/dev/null 2>&1",
	         key, cert);
	REQUIRE(system(cmd) == 0);
	cpem = tu_read_file(cert, &n);
	kpem = tu_read_file(key, &n);
	REQUIRE(cpem != NULL && kpem != NULL);
	d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_TLS, 0, NULL, NULL,
	                     on_redirect, NULL, MHD_OPTION_HTTPS_MEM_CERT, cpem,
	                     MHD_OPTION_HTTPS_MEM_KEY, kpem, MHD_OPTION_CONNECTION_TIMEOUT, 5u,
	                     MHD_OPTION_END);
	REQUIRE(d != NULL);
	redir_port = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT)->port;
	snprintf(url, sizeof(url), "https://127.0.0.1:%u/old", redir_port);
	REQUIRE(jwks_fetch_init(&err) == WRIT_OK);
	CHECK_RC(jwks_fetch(url, cert, NULL, &r, &err), WRIT_OK);
	CHECK(r.status == 200 && r.body != NULL && strcmp(r.body, "{\"keys\":[]}") == 0);
	CHECK(r.max_age == JWKS_MAX_AGE_DEFAULT);
	CHECK(r.etag[0] == '\0');
	free(r.body);
	MHD_stop_daemon(d);
	free(cpem);
	free(kpem);
	unlink(cert);
	unlink(key);
	rmdir(dir);
}

/* Plain http is allowed only to this host; a proxy from the environment
 * would carry the key set off it in the clear, where anyone on the path
 * could answer with keys of their own. The proxy named here refuses
 * connections, so a fetch that used it would fail. */
static void test_jwks_over_plain_http_never_through_env_proxy(void)
{
	jwks_response r = {0};
	writ_err err = {0};

	srv_set("{\"keys\":[]}", 60);
	unsetenv("no_proxy");
	unsetenv("NO_PROXY");
	setenv("http_proxy", "http://127.0.0.1:9", 1);
	setenv("ALL_PROXY", "http://127.0.0.1:9", 1);
	CHECK_RC(jwks_fetch(srv.url, NULL, NULL, &r, &err), WRIT_OK);
	CHECK(r.status == 200);
	free(r.body);
	unsetenv("http_proxy");
	unsetenv("ALL_PROXY");
}

int main(void)
{
	srandom((unsigned)time(NULL));
	tkey_init(&k1);
	tkey_init(&k2);
	srv_start();
	RUN(test_json_writer_is_janssons);
	RUN(test_cache_control_parse);
	RUN(test_jwks_age_spends_freshness);
	RUN(test_config_errors);
	RUN(test_jwks_over_plain_http_to_remote_host_refused);
	RUN(test_fetch_then_cache_hits);
	RUN(test_unknown_kid_flood_one_fetch);
	RUN(test_rotation);
	RUN(test_issuer_down_then_fail_closed);
	RUN(test_threads_verify_while_refreshing);
	RUN(test_scope_exact_member);
	RUN(test_known_header_checks_the_rest);
	RUN(test_json_fast_path_is_janssons);
	RUN(test_json_dump_is_janssons);
	RUN(test_check_scope_limits_and_decisions);
	RUN(test_rpm_and_bounded_table);
	RUN(test_body_cap);
	RUN(test_rsa_key_verdict_is_deterministic);
	RUN(test_redirect_cache_headers_not_applied_to_jwks);
	RUN(test_jwks_over_plain_http_never_through_env_proxy);
	MHD_stop_daemon(srv.d);
	free(srv.jwks);
	EVP_PKEY_free(k1.pk), EVP_PKEY_free(k2.pk);
	free(k1.jwk), free(k2.jwk);
	return tu_finish();
}
