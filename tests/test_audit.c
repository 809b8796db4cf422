/*
 * test_audit.c - the audit log (SPEC s.7): every record durable before the
 * caller goes on, a hash chain and signed checkpoints that `writ audit
 * verify` uses to name an edited, dropped, reordered or truncated record,
 * recovery after a crash or a full disk, and group commit under load.
 */
#include <errno.h>
#include <fcntl.h>
#include <openssl/ec.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "audit.h"
#include "testutil.h"
#include "writ_int.h"

static char dir[64];

/* ---- a signer with an in-process P-256 key, standing in for the HSM ---- */

typedef struct tsigner {
	EVP_PKEY *pkey;
	writ_jwk *jwk;
	int fail;
	int calls;
} tsigner;

static writ_rc tsign(void *arg, const unsigned char *msg, size_t len, char kid[WRIT_KID_MAX + 1],
                     writ_alg *alg, unsigned char *sig, size_t *siglen, writ_err *err)
{
	tsigner *s = arg;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	unsigned char der[80];
	const unsigned char *p = der;
	size_t dlen = sizeof(der);
	ECDSA_SIG *es = NULL;
	writ_rc rc = WRIT_ERR_CRYPTO;

	s->calls++;
	if (s->fail)
		goto out;
	if (ctx == NULL || EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, s->pkey) != 1 ||
	    EVP_DigestSign(ctx, der, &dlen, msg, len) != 1 ||
	    (es = d2i_ECDSA_SIG(NULL, &p, (long)dlen)) == NULL || *siglen < 64 ||
	    BN_bn2binpad(ECDSA_SIG_get0_r(es), sig, 32) != 32 ||
	    BN_bn2binpad(ECDSA_SIG_get0_s(es), sig + 32, 32) != 32)
		goto out;
	*siglen = 64;
	*alg = WRIT_ALG_ES256;
	snprintf(kid, WRIT_KID_MAX + 1, "%s", writ_jwk_kid(s->jwk));
	rc = WRIT_OK;
out:
	ECDSA_SIG_free(es);
	EVP_MD_CTX_free(ctx);
	return rc == WRIT_OK ? rc : writ_err_set(err, rc, "test signer failed");
}

static void tsigner_new(tsigner *s)
{
	memset(s, 0, sizeof(*s));
	s->pkey = EVP_EC_gen("P-256");
	REQUIRE(s->pkey != NULL);
	REQUIRE(writ_jwk_from_pkey(s->pkey, WRIT_ALG_ES256, &s->jwk, NULL) == WRIT_OK);
}

static void tsigner_free(tsigner *s)
{
	writ_jwk_free(s->jwk);
	EVP_PKEY_free(s->pkey);
}

/* The signer's public key as a published JWK Set. */
static writ_jwks *tsigner_jwks(const tsigner *s)
{
	char *j = writ_jwk_to_json(s->jwk), buf[2048];
	writ_jwks *set = NULL;

	REQUIRE(j != NULL);
	snprintf(buf, sizeof(buf), "{\"keys\":[%s]}", j);
	free(j);
	REQUIRE(writ_jwks_parse(buf, strlen(buf), WRIT_JWKS_KID_IS_THUMBPRINT, &set, NULL) ==
	        WRIT_OK);
	return set;
}

/* ---- helpers ---- */

static const char *path_in(const char *name)
{
	static char p[4][160];
	static int i;

	i = (i + 1) % 4;
	snprintf(p[i], sizeof(p[i]), "%s/%s", dir, name);
	return p[i];
}

static writ_rc append_issued(audit_log *log, int n, writ_err *err)
{
	char agent[32], jti[32];
	json_t *r;
	writ_rc rc;

	snprintf(agent, sizeof(agent), "agent-%02d", n % 7);
	snprintf(jti, sizeof(jti), "jti-%06d", n);
	r = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:i}", "event", "issued", "agent", agent,
	              "audience", n % 2 ? "orders-db" : "billing-api", "scope_granted", "db:read",
	              "jti", jti, "rule", "r1", "n", n);
	REQUIRE(r != NULL);
	rc = audit_append(log, r, err);
	json_decref(r);
	return rc;
}

static void write_file(const char *path, const char *buf, size_t len)
{
	FILE *f = fopen(path, "wb");

	REQUIRE(f != NULL);
	REQUIRE(fwrite(buf, 1, len, f) == len);
	REQUIRE(fclose(f) == 0);
	chmod(path, 0600);
}

/* Byte offset where line n (1-based) starts; len = bytes incl. '\n'. */
static size_t line_at(const char *buf, size_t n, size_t *len)
{
	size_t off = 0, i;
	const char *e;

	for (i = 1; i < n; i++)
		off = (size_t)(strchr(buf + off, '\n') - buf) + 1;
	e = strchr(buf + off, '\n');
	*len = (size_t)(e - (buf + off)) + 1;
	return off;
}

static audit_report verify_buf(const char *buf, size_t len, const writ_jwks *keys)
{
	audit_report rep;

	REQUIRE(audit_verify_buf(buf, len, keys, &rep, NULL) == WRIT_OK);
	return rep;
}

/* A log of 1 + 35 records with checkpoints every 10 and on close. */
static void make_log(const char *path, tsigner *s)
{
	audit_opts o = {.sign = tsign, .sign_arg = s, .checkpoint_every = 10};
	audit_log *log = NULL;
	writ_err err = {0};
	int i;

	unlink(path);
	CHECK_RC(audit_open(path, &o, &log, &err), WRIT_OK);
	REQUIRE(log != NULL);
	for (i = 0; i < 35; i++)
		CHECK_RC(append_issued(log, i, &err), WRIT_OK);
	CHECK_RC(audit_close(log, &err), WRIT_OK);
}

/* ---- tests ---- */

static void test_chain_and_checkpoints_verify(void)
{
	tsigner s;
	writ_jwks *keys;
	audit_report rep;
	char *buf;
	size_t len;

	tsigner_new(&s);
	keys = tsigner_jwks(&s);
	make_log(path_in("a.log"), &s);
	buf = tu_read_file(path_in("a.log"), &len);
	CHECK(strncmp(buf, "{\"seq\":1,\"ts\":\"", 15) == 0);
	CHECK(strstr(buf, "\"event\":\"log_opened\"") != NULL);
	CHECK(
	    strstr(
	        strchr(buf, '\n') - 75,
	        "\"prev\":\"0000000000000000000000000000000000000000000000000000000000000000\"}") !=
	    NULL);
	CHECK(buf[len - 1] == '\n');

	CHECK_RC(audit_verify_file(path_in("a.log"), keys, &rep, NULL), WRIT_OK);
	CHECK(rep.problem == AUDIT_OK);
	CHECK(rep.records == 40); /* genesis + 35 + checkpoints at 10, 20, 30 and close */
	CHECK(rep.checkpoints == 4);
	CHECK(rep.last_seq == 40);
	CHECK(rep.unsigned_tail == 0);
	CHECK(rep.sigs_checked == 1);
	CHECK(strlen(rep.head) == 64);

	/* Without keys the chain is still checked; signatures are not. */
	CHECK_RC(audit_verify_file(path_in("a.log"), NULL, &rep, NULL), WRIT_OK);
	CHECK(rep.problem == AUDIT_OK && rep.sigs_checked == 0);
	free(buf);
	writ_jwks_free(keys);
	tsigner_free(&s);
}

static void test_append_refuses_bad_records(void)
{
	audit_log *log = NULL;
	writ_err err = {0};
	json_t *r;
	char *big;

	unlink(path_in("r.log"));
	REQUIRE(audit_open(path_in("r.log"), NULL, &log, &err) == WRIT_OK);
	r = json_pack("{s:s, s:i}", "event", "issued", "seq", 5);
	CHECK_RC(audit_append(log, r, &err), WRIT_ERR_ARG);
	json_decref(r);
	r = json_pack("{s:s, s:s}", "event", "issued", "prev", "x");
	CHECK_RC(audit_append(log, r, &err), WRIT_ERR_ARG);
	json_decref(r);
	r = json_pack("{s:s}", "agent", "a");
	CHECK_RC(audit_append(log, r, &err), WRIT_ERR_ARG);
	json_decref(r);
	r = json_pack("{s:s}", "event", "checkpoint");
	CHECK_RC(audit_append(log, r, &err), WRIT_ERR_ARG);
	json_decref(r);
	big = malloc(AUDIT_LINE_MAX);
	REQUIRE(big != NULL);
	memset(big, 'x', AUDIT_LINE_MAX - 1);
	big[AUDIT_LINE_MAX - 1] = '\0';
	r = json_pack("{s:s, s:s}", "event", "issued", "reason", big);
	CHECK_RC(audit_append(log, r, &err), WRIT_ERR_TOO_LARGE);
	json_decref(r);
	free(big);
	/* A newline inside a value is escaped: one record stays one line. */
	r = json_pack("{s:s, s:s}", "event", "denied", "reason", "a\nb");
	CHECK_RC(audit_append(log, r, &err), WRIT_OK);
	json_decref(r);
	CHECK(audit_healthy(log) == 1);
	CHECK_RC(audit_close(log, &err), WRIT_OK);
	{
		audit_report rep;
		CHECK_RC(audit_verify_file(path_in("r.log"), NULL, &rep, NULL), WRIT_OK);
		CHECK(rep.problem == AUDIT_OK && rep.records == 2);
	}
}

static void test_verify_names_tampering(void)
{
	tsigner s, other;
	writ_jwks *keys, *wrong;
	audit_report rep;
	char *buf, *cp, *p;
	size_t len, off, l5, l6, o6, i;

	tsigner_new(&s);
	tsigner_new(&other);
	keys = tsigner_jwks(&s);
	wrong = tsigner_jwks(&other);
	make_log(path_in("t.log"), &s);
	buf = tu_read_file(path_in("t.log"), &len);
	cp = malloc(len + 1);
	REQUIRE(cp != NULL);

	/* One byte of a middle record changed: agent-04 -> agent-0X. */
	memcpy(cp, buf, len);
	off = line_at(cp, 5, &l5);
	p = strstr(cp + off, "agent-0");
	REQUIRE(p != NULL && p < cp + off + l5);
	p[7] = 'X';
	rep = verify_buf(cp, len, keys);
	CHECK(rep.problem == AUDIT_EDITED);
	CHECK(rep.line == 5);

	/* Line 5 deleted. */
	off = line_at(buf, 5, &l5);
	memcpy(cp, buf, off);
	memcpy(cp + off, buf + off + l5, len - off - l5);
	rep = verify_buf(cp, len - l5, keys);
	CHECK(rep.problem == AUDIT_DROPPED);
	CHECK(rep.line == 5);

	/* Lines 5 and 6 swapped. */
	o6 = line_at(buf, 6, &l6);
	memcpy(cp, buf, len);
	memcpy(cp + off, buf + o6, l6);
	memcpy(cp + off + l6, buf + off, l5);
	rep = verify_buf(cp, len, keys);
	CHECK(rep.problem == AUDIT_REORDERED);
	CHECK(rep.line == 5);

	/* Cut in the middle of the last line. */
	rep = verify_buf(buf, len - 20, keys);
	CHECK(rep.problem == AUDIT_TRUNCATED);
	CHECK(rep.line == 40);

	/* The final checkpoint removed: what remains verifies, with the
	 * records after the last checkpoint reported as unsigned. */
	off = line_at(buf, 40, &l5);
	rep = verify_buf(buf, off, keys);
	CHECK(rep.problem == AUDIT_OK);
	CHECK(rep.unsigned_tail == 6);
	CHECK(rep.checkpoints == 3);

	/* A checkpoint signature changed. */
	memcpy(cp, buf, len);
	off = line_at(cp, 11, &l5);
	REQUIRE(strstr(cp + off, "\"event\":\"checkpoint\"") < cp + off + l5);
	p = strstr(cp + off, "\"sig\":\"") + 7 + 10;
	*p = *p == 'A' ? 'B' : 'A';
	rep = verify_buf(cp, len, keys);
	CHECK(rep.problem == AUDIT_BAD_SIGNATURE);
	CHECK(rep.line == 11);
	/* ... but the chain itself is whole without keys up to that line. */
	rep = verify_buf(cp, len, NULL);
	CHECK(rep.problem == AUDIT_EDITED && rep.line == 11);

	/* Someone else's key set: the checkpoint kid is unknown. */
	rep = verify_buf(buf, len, wrong);
	CHECK(rep.problem == AUDIT_UNKNOWN_KID);
	CHECK(rep.line == 11);

	/* A rewritten chain (all prevs recomputed) still fails at the
	 * checkpoint: simulate by forging a checkpoint with the other key. */
	{
		audit_opts o = {.sign = tsign, .sign_arg = &other, .checkpoint_every = 10};
		audit_log *log = NULL;

		unlink(path_in("forged.log"));
		REQUIRE(audit_open(path_in("forged.log"), &o, &log, NULL) == WRIT_OK);
		for (i = 0; i < 10; i++)
			CHECK_RC(append_issued(log, (int)i, NULL), WRIT_OK);
		CHECK_RC(audit_close(log, NULL), WRIT_OK);
		CHECK_RC(audit_verify_file(path_in("forged.log"), keys, &rep, NULL), WRIT_OK);
		CHECK(rep.problem == AUDIT_UNKNOWN_KID);
	}

	/* Duplicate members are refused: two readers must agree. */
	rep = verify_buf("{\"seq\":1,\"seq\":1}\n{}\n", 21, NULL);
	CHECK(rep.problem == AUDIT_MALFORMED && rep.line == 1);
	/* A log that does not start at seq 1 lost its head. */
	off = line_at(buf, 2, &l5);
	rep = verify_buf(buf + off, len - off, keys);
	CHECK(rep.problem == AUDIT_DROPPED && rep.line == 1);

	free(cp);
	free(buf);
	writ_jwks_free(keys);
	writ_jwks_free(wrong);
	tsigner_free(&s);
	tsigner_free(&other);
}

static void append_raw(const char *path, const char *s, size_t n)
{
	int fd = open(path, O_WRONLY | O_APPEND);

	REQUIRE(fd >= 0);
	REQUIRE(write(fd, s, n) == (ssize_t)n);
	close(fd);
}

static void test_reopen_recovers_torn_tail(void)
{
	tsigner s;
	writ_jwks *keys;
	audit_opts o;
	audit_log *log = NULL;
	audit_report rep;
	audit_stats st;
	writ_err err = {0};
	char *buf, *p;
	size_t len, off, l;
	const char *path = path_in("torn.log");

	tsigner_new(&s);
	keys = tsigner_jwks(&s);
	o = (audit_opts){.sign = tsign, .sign_arg = &s, .checkpoint_every = 10};
	make_log(path, &s);

	/* kill -9 mid-write: an unterminated last line. */
	append_raw(path, "{\"seq\":41,\"ts\":\"2025-", 21);
	CHECK_RC(audit_verify_file(path, keys, &rep, NULL), WRIT_OK);
	CHECK(rep.problem == AUDIT_TRUNCATED && rep.line == 41);
	CHECK_RC(audit_open(path, &o, &log, &err), WRIT_OK);
	REQUIRE(log != NULL);
	CHECK_RC(append_issued(log, 100, &err), WRIT_OK);
	audit_get_stats(log, &st);
	CHECK(st.last_seq == 42); /* 41 = log_recovered, 42 = the new record */
	CHECK_RC(audit_close(log, &err), WRIT_OK);
	buf = tu_read_file(path, &len);
	off = line_at(buf, 41, &l);
	p = strstr(buf + off, "\"event\":\"log_recovered\",\"dropped_bytes\":21,");
	CHECK(p != NULL && p < buf + off + l);
	free(buf);
	CHECK_RC(audit_verify_file(path, keys, &rep, NULL), WRIT_OK);
	CHECK(rep.problem == AUDIT_OK && rep.last_seq == 43 && rep.unsigned_tail == 0);

	/* A crash that left a zero-filled block ending in a newline. */
	append_raw(path, "\0\0\0\0\n", 5);
	CHECK_RC(audit_open(path, &o, &log, &err), WRIT_OK);
	CHECK_RC(audit_close(log, &err), WRIT_OK);
	CHECK_RC(audit_verify_file(path, keys, &rep, NULL), WRIT_OK);
	CHECK(rep.problem == AUDIT_OK && rep.last_seq == 45 && rep.unsigned_tail == 0);

	/* A power loss after the size grew: 200 KiB of zeros, more than the
	 * tail window. Before, the issuer refused to start on it. */
	{
		char *zeros = calloc(1, 200 * 1024);

		REQUIRE(zeros != NULL);
		append_raw(path, zeros, 200 * 1024);
		free(zeros);
		CHECK_RC(audit_open(path, &o, &log, &err), WRIT_OK);
		CHECK_RC(audit_close(log, &err), WRIT_OK);
		CHECK_RC(audit_verify_file(path, keys, &rep, NULL), WRIT_OK);
		CHECK(rep.problem == AUDIT_OK && rep.last_seq == 47);
		buf = tu_read_file(path, &len);
		CHECK(strstr(buf, "\"dropped_bytes\":204800,") != NULL && strlen(buf) == len);
		free(buf);
	}

	/* Line 47 bad could be a torn write; line 46 bad as well is not what a
	 * crash leaves: refuse to open, naming the line. */
	buf = tu_read_file(path, &len);
	off = line_at(buf, 46, &l);
	buf[off] = '[';
	off = line_at(buf, 47, &l);
	buf[off] = '[';
	CHECK(buf[off + l] == '\0');
	write_file(path, buf, len);
	log = NULL;
	CHECK_RC(audit_open(path, &o, &log, &err), WRIT_ERR_MALFORMED);
	CHECK(log == NULL);
	CHECK(strstr(err.msg, "torn.log:46: not a valid record") != NULL);
	free(buf);
	writ_jwks_free(keys);
	tsigner_free(&s);
}

static void test_second_writer_and_symlink_refused(void)
{
	audit_log *a = NULL, *b = NULL;
	writ_err err = {0};

	unlink(path_in("lock.log"));
	REQUIRE(audit_open(path_in("lock.log"), NULL, &a, &err) == WRIT_OK);
	CHECK_RC(audit_open(path_in("lock.log"), NULL, &b, &err), WRIT_ERR_UNAVAILABLE);
	CHECK(strstr(err.msg, "in use by another writer") != NULL);
	CHECK_RC(audit_close(a, &err), WRIT_OK);

	unlink(path_in("link.log"));
	REQUIRE(symlink(path_in("lock.log"), path_in("link.log")) == 0);
	CHECK_RC(audit_open(path_in("link.log"), NULL, &b, &err), WRIT_ERR_IO);
	chmod(path_in("lock.log"), 0622);
	CHECK_RC(audit_open(path_in("lock.log"), NULL, &b, &err), WRIT_ERR_CONFIG);
}

/* ---- group commit ---- */

#define THREADS    8
#define PER_THREAD 500

static audit_log *shared_log;
static int thread_errors;

static void *appender(void *arg)
{
	int t = (int)(intptr_t)arg, i;
	json_t *r;

	for (i = 0; i < PER_THREAD; i++) {
		r = json_pack("{s:s, s:i, s:i}", "event", "issued", "t", t, "i", i);
		if (r == NULL || audit_append(shared_log, r, NULL) != WRIT_OK)
			__atomic_add_fetch(&thread_errors, 1, __ATOMIC_RELAXED);
		json_decref(r);
	}
	return NULL;
}

static int seen_cb(void *arg, const char *line, size_t len, const json_t *rec)
{
	unsigned char *seen = arg;
	json_int_t t = json_integer_value(json_object_get(rec, "t"));
	json_int_t i = json_integer_value(json_object_get(rec, "i"));

	(void)line;
	(void)len;
	if (t >= 0 && t < THREADS && i >= 0 && i < PER_THREAD)
		seen[t * PER_THREAD + i]++;
	return 0;
}

static void test_concurrent_appends_share_fsyncs(void)
{
	tsigner s;
	writ_jwks *keys;
	audit_opts o;
	pthread_t th[THREADS];
	audit_stats st;
	audit_report rep;
	audit_filter f = {.event = "issued"};
	unsigned char *seen = calloc(THREADS * PER_THREAD, 1);
	uint64_t skipped = 1;
	struct timespec t0, t1;
	double secs;
	int i, once = 1;

	REQUIRE(seen != NULL);
	tsigner_new(&s);
	keys = tsigner_jwks(&s);
	o = (audit_opts){.sign = tsign, .sign_arg = &s, .checkpoint_every = 1000};
	unlink(path_in("mt.log"));
	REQUIRE(audit_open(path_in("mt.log"), &o, &shared_log, NULL) == WRIT_OK);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (i = 0; i < THREADS; i++)
		REQUIRE(pthread_create(&th[i], NULL, appender, (void *)(intptr_t)i) == 0);
	for (i = 0; i < THREADS; i++)
		pthread_join(th[i], NULL);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	audit_get_stats(shared_log, &st);
	CHECK(thread_errors == 0);
	CHECK(st.appends == THREADS * PER_THREAD);
	CHECK(st.checkpoints == 4);
	secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	fprintf(stderr,
	        "  group commit: %d threads, %llu appends, %llu fdatasyncs (%.1f appends per "
	        "sync), %.0f durable appends/s\n",
	        THREADS, (unsigned long long)st.appends, (unsigned long long)st.syncs,
	        (double)st.appends / (double)(st.syncs ? st.syncs : 1), (double)st.appends / secs);
	CHECK(st.syncs < st.appends / 2);
	CHECK_RC(audit_close(shared_log, NULL), WRIT_OK);

	CHECK_RC(audit_verify_file(path_in("mt.log"), keys, &rep, NULL), WRIT_OK);
	CHECK(rep.problem == AUDIT_OK);
	CHECK(rep.records == 1 + THREADS * PER_THREAD + 5);
	CHECK_RC(audit_query_file(path_in("mt.log"), &f, seen_cb, seen, &skipped, NULL), WRIT_OK);
	CHECK(skipped == 0);
	for (i = 0; i < THREADS * PER_THREAD; i++)
		once &= seen[i] == 1;
	CHECK(once);
	free(seen);
	writ_jwks_free(keys);
	tsigner_free(&s);
}

/* ---- failures ---- */

static int fail_syncs;
static int fail_writes;

static int flaky_sync(int fd)
{
	if (fail_syncs > 0) {
		fail_syncs--;
		errno = EIO;
		return -1;
	}
	return fdatasync(fd);
}

/* Writes half the line, then reports a full disk. */
static ssize_t flaky_write(int fd, const void *buf, size_t n)
{
	static int half_done;

	if (fail_writes > 0) {
		if (!half_done && n > 1) {
			half_done = 1;
			return write(fd, buf, n / 2);
		}
		half_done = 0;
		fail_writes--;
		errno = ENOSPC;
		return -1;
	}
	return write(fd, buf, n);
}

static int fail_truncates;

static int flaky_truncate(int fd, off_t len)
{
	if (fail_truncates > 0) {
		fail_truncates--;
		errno = EIO;
		return -1;
	}
	return ftruncate(fd, len);
}

/* fdatasync fails and so does cutting the unsynced line away: the log must
 * not resume on top of it (the page cache shows it; after a failed
 * writeback the disk may not have it, and its client got a 503). It stays
 * down until the cut works, then goes on from the last durable line. */
static void test_failed_cut_never_resumes_on_unsynced_bytes(void)
{
	audit_opts o = {.sync_fn = flaky_sync, .truncate_fn = flaky_truncate};
	const char *path = path_in("cut2.log");
	audit_log *log = NULL;
	audit_report rep;
	writ_err err = {0};
	char *buf;
	size_t len;

	unlink(path);
	REQUIRE(audit_open(path, &o, &log, &err) == WRIT_OK);
	CHECK_RC(append_issued(log, 1, &err), WRIT_OK);
	fail_syncs = 1;
	fail_truncates = 2;
	CHECK_RC(append_issued(log, 2, &err), WRIT_ERR_UNAVAILABLE);
	CHECK_RC(append_issued(log, 3, &err), WRIT_ERR_UNAVAILABLE); /* the cut fails again */
	CHECK(strstr(err.msg, "cannot cut the log back") != NULL);
	CHECK_RC(append_issued(log, 4, &err), WRIT_OK);
	CHECK_RC(audit_close(log, &err), WRIT_OK);
	buf = tu_read_file(path, &len);
	CHECK(strstr(buf, "jti-000002") == NULL && strstr(buf, "jti-000003") == NULL &&
	      strstr(buf, "jti-000004") != NULL);
	free(buf);
	CHECK_RC(audit_verify_file(path, NULL, &rep, NULL), WRIT_OK);
	CHECK(rep.problem == AUDIT_OK);
}

static void test_write_and_sync_failures_fail_closed(void)
{
	audit_opts o = {.sync_fn = flaky_sync, .write_fn = flaky_write};
	audit_log *log = NULL;
	audit_report rep;
	audit_stats st;
	writ_err err = {0};
	struct stat sb;
	const char *path = path_in("flaky.log");
	off_t before;
	char *buf;
	size_t len;

	unlink(path);
	REQUIRE(audit_open(path, &o, &log, &err) == WRIT_OK);
	CHECK_RC(append_issued(log, 1, &err), WRIT_OK);
	REQUIRE(stat(path, &sb) == 0);
	before = sb.st_size;

	/* A short write then ENOSPC: no half line stays behind. */
	fail_writes = 1;
	CHECK_RC(append_issued(log, 2, &err), WRIT_ERR_UNAVAILABLE);
	CHECK(strstr(err.msg, "write failed: No space left on device") != NULL);
	CHECK(strstr(err.msg, path) != NULL);
	CHECK(audit_healthy(log) == 0);
	REQUIRE(stat(path, &sb) == 0);
	CHECK(sb.st_size == before);

	/* fdatasync fails: the unsynced line is cut away and refused. */
	fail_syncs = 1;
	CHECK_RC(append_issued(log, 3, &err), WRIT_ERR_UNAVAILABLE);
	CHECK(strstr(err.msg, "fsync failed: Input/output error") != NULL);
	CHECK(audit_healthy(log) == 0);
	REQUIRE(stat(path, &sb) == 0);
	CHECK(sb.st_size == before);

	/* The fault is gone: the next append resumes, no seq skipped. */
	CHECK_RC(append_issued(log, 4, &err), WRIT_OK);
	CHECK(audit_healthy(log) == 1);
	audit_get_stats(log, &st);
	CHECK(st.failures == 2);
	CHECK(st.last_seq == 4); /* genesis, 1, log_recovered, 4 */
	CHECK(strstr(st.last_error, "fsync failed") != NULL);
	CHECK_RC(audit_close(log, &err), WRIT_OK);
	buf = tu_read_file(path, &len);
	CHECK(strstr(buf,
	             "\"event\":\"log_recovered\",\"dropped_bytes\":0,\"reason\":\"audit log ") !=
	      NULL);
	CHECK(strstr(buf, "jti-000002") == NULL && strstr(buf, "jti-000003") == NULL);
	free(buf);
	CHECK_RC(audit_verify_file(path, NULL, &rep, NULL), WRIT_OK);
	CHECK(rep.problem == AUDIT_OK && rep.last_seq == 4);
}

/* A failed fdatasync cuts away what it covered, a checkpoint included: the
 * next append that works signs again, so the unsigned run stays short. */
static void test_checkpoint_cut_by_failed_sync_is_redone(void)
{
	tsigner s;
	audit_opts o;
	audit_log *log = NULL;
	audit_stats st;
	uint64_t before;

	tsigner_new(&s);
	o = (audit_opts){
	    .sign = tsign, .sign_arg = &s, .checkpoint_every = 3, .sync_fn = flaky_sync};
	unlink(path_in("cut.log"));
	REQUIRE(audit_open(path_in("cut.log"), &o, &log, NULL) == WRIT_OK);
	CHECK_RC(append_issued(log, 1, NULL), WRIT_OK);
	fail_syncs = 1; /* the third record and the checkpoint after it */
	CHECK_RC(append_issued(log, 2, NULL), WRIT_ERR_UNAVAILABLE);
	audit_get_stats(log, &st);
	before = st.checkpoints;
	CHECK(before == 1);
	CHECK_RC(append_issued(log, 3, NULL), WRIT_OK);
	audit_get_stats(log, &st);
	CHECK(st.checkpoints == before + 1);
	CHECK_RC(audit_close(log, NULL), WRIT_OK);
	tsigner_free(&s);
}

/* ---- asynchronous appends (the issuer's held responses) ---- */

typedef struct async_seen {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int calls;
	writ_rc rc[8];
} async_seen;

static void async_done(void *arg, writ_rc rc)
{
	async_seen *a = arg;

	pthread_mutex_lock(&a->mu);
	a->rc[a->calls < 8 ? a->calls : 7] = rc;
	a->calls++;
	pthread_cond_signal(&a->cv);
	pthread_mutex_unlock(&a->mu);
}

static void async_wait(async_seen *a, int calls)
{
	pthread_mutex_lock(&a->mu);
	while (a->calls < calls)
		pthread_cond_wait(&a->cv, &a->mu);
	pthread_mutex_unlock(&a->mu);
}

/* audit_append_async takes text, as the issuer writes it. */
static writ_rc append_async(audit_log *log, const json_t *r, audit_done_fn done, void *arg,
                            writ_err *err)
{
	char *text = wjson_dump(r);
	writ_rc rc = audit_append_async(log, text, text != NULL ? strlen(text) : 0, done, arg, err);

	free(text);
	return rc;
}

static json_t *issued_rec(int n)
{
	char jti[32];

	snprintf(jti, sizeof(jti), "jti-%06d", n);
	return json_pack("{s:s, s:s, s:s}", "event", "token_issued", "agent", "agent-a", "jti",
	                 jti);
}

/* The callback says WRIT_OK only for a line on disk; a failed sync says
 * WRIT_ERR_UNAVAILABLE exactly once and the line is gone from the file,
 * as for a blocking append. */
static void test_async_append_reports_durable_or_failed(void)
{
	audit_opts o = {.sync_fn = flaky_sync};
	async_seen a = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, {0}};
	const char *path = path_in("async.log");
	audit_log *log = NULL;
	audit_report rep;
	writ_err err = {0};
	json_t *r;
	char *buf;
	size_t len;

	unlink(path);
	REQUIRE(audit_open(path, &o, &log, &err) == WRIT_OK);
	r = issued_rec(1);
	CHECK_RC(append_async(log, r, async_done, &a, &err), WRIT_OK);
	json_decref(r);
	async_wait(&a, 1);
	CHECK_RC(a.rc[0], WRIT_OK);
	buf = tu_read_file(path, &len);
	CHECK(strstr(buf, "jti-000001") != NULL);
	free(buf);

	fail_syncs = 1;
	r = issued_rec(2);
	CHECK_RC(append_async(log, r, async_done, &a, &err), WRIT_OK);
	json_decref(r);
	async_wait(&a, 2);
	CHECK_RC(a.rc[1], WRIT_ERR_UNAVAILABLE);
	CHECK(audit_healthy(log) == 0);
	buf = tu_read_file(path, &len);
	CHECK(strstr(buf, "jti-000002") == NULL);
	free(buf);

	/* A record that cannot be written is refused at once, no callback. */
	r = json_pack("{s:s}", "event", "checkpoint");
	CHECK_RC(append_async(log, r, async_done, &a, &err), WRIT_ERR_ARG);
	json_decref(r);

	r = issued_rec(3);
	CHECK_RC(append_async(log, r, async_done, &a, &err), WRIT_OK);
	json_decref(r);
	async_wait(&a, 3);
	CHECK_RC(a.rc[2], WRIT_OK);
	CHECK_RC(audit_close(log, &err), WRIT_OK);
	CHECK(a.calls == 3);
	CHECK_RC(audit_verify_file(path, NULL, &rep, NULL), WRIT_OK);
	CHECK(rep.problem == AUDIT_OK);
}

/* audit_append's rules hold for a record given as text (the issuer's
 * audit_append_async), read from the text: a nested reserved name is
 * refused as well, a reserved name inside a string value is not one. */
static void test_async_append_checks_the_text(void)
{
	audit_log *log = NULL;
	writ_err err = {0};
	audit_report rep;
	static const char *const refused[] = {"{\"event\":\"issued\",\"seq\":5}",
	                                      "{\"event\":\"issued\",\"a\":{\"ts\":\"x\"}}",
	                                      "{\"event\":\"issued\",\"a\":[{\"prev\":1}]}",
	                                      "{\"sig\":\"x\",\"event\":\"issued\"}",
	                                      "{\"agent\":\"a\",\"event\":\"issued\"}",
	                                      "{\"event\":\"\"}",
	                                      "{\"event\":1}",
	                                      "{\"event\":\"checkpoint\"}",
	                                      "{\"event\":\"log_opened\",\"a\":1}",
	                                      "{\"event\":\"issued\"}\n",
	                                      "{\"event\":\"iss\nued\"}",
	                                      "[\"event\"]",
	                                      "{\"event\":\"issued\""};
	static const char *const taken[] = {
	    "{\"event\":\"issued\",\"reason\":\"a\\\",\\\"seq\\\":1\"}",
	    "{\"event\":\"checkpoints\",\"tsx\":1}", "{\"event\":\"log_opened_twice\"}"};
	async_seen a = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, {0}};
	size_t i;

	unlink(path_in("t.log"));
	REQUIRE(audit_open(path_in("t.log"), NULL, &log, &err) == WRIT_OK);
	for (i = 0; i < sizeof(refused) / sizeof(refused[0]); i++)
		CHECK_RC(
		    audit_append_async(log, refused[i], strlen(refused[i]), async_done, &a, &err),
		    WRIT_ERR_ARG);
	for (i = 0; i < sizeof(taken) / sizeof(taken[0]); i++) {
		CHECK_RC(audit_append_async(log, taken[i], strlen(taken[i]), async_done, &a, &err),
		         WRIT_OK);
		async_wait(&a, (int)i + 1);
	}
	CHECK_RC(audit_close(log, &err), WRIT_OK);
	CHECK_RC(audit_verify_file(path_in("t.log"), NULL, &rep, NULL), WRIT_OK);
	CHECK(rep.problem == AUDIT_OK && rep.records == 4); /* log_opened and the three */
}

/* Append record n asynchronously, wait until it is durable (the n-th
 * callback, which must say WRIT_OK), and return the log's commit delays. */
static uint64_t durable_then_delays(audit_log *log, async_seen *a, int n)
{
	json_t *r = issued_rec(n);
	audit_stats st;

	CHECK_RC(append_async(log, r, async_done, a, NULL), WRIT_OK);
	json_decref(r);
	async_wait(a, n);
	CHECK_RC(a->rc[n - 1], WRIT_OK);
	audit_get_stats(log, &st);
	return st.delays;
}

/* The commit delay waits only while a record is announced as on its way
 * (a request being decided): a lone line is synced at once, and a line
 * synced while another is announced waits for it (at most the delay). */
static void test_commit_delay_waits_only_for_announced_records(void)
{
	async_seen a = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, {0}};
	const char *path = path_in("delay.log");
	audit_log *log = NULL;
	writ_err err = {0};

	unlink(path);
	REQUIRE(audit_open(path, NULL, &log, &err) == WRIT_OK);
	CHECK(durable_then_delays(log, &a, 1) == 0);
	/* Another request is being decided: this line's sync waits for its
	 * record, which never comes here; the wait is bounded, so the line
	 * still becomes durable. */
	audit_expect(log);
	CHECK(durable_then_delays(log, &a, 2) == 1);
	audit_expect_done(log);
	CHECK(durable_then_delays(log, &a, 3) == 1);
	CHECK_RC(audit_close(log, &err), WRIT_OK);
}

/* A sync gated by the test: the first call waits until released, so the
 * lines appended meanwhile all ride on the next sync. */
static pthread_mutex_t gate_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cv = PTHREAD_COND_INITIALIZER;
static int gate_armed, gate_entered, gate_open;

static int gated_sync(int fd)
{
	pthread_mutex_lock(&gate_mu);
	if (!gate_armed) /* the syncs of audit_open itself */
		gate_open = 1;
	gate_entered++;
	pthread_cond_broadcast(&gate_cv);
	while (!gate_open)
		pthread_cond_wait(&gate_cv, &gate_mu);
	pthread_mutex_unlock(&gate_mu);
	return fdatasync(fd);
}

/* The longer commit delay is for a busy log only: after a sync that
 * covered several lines the next delay may wait longer, and after a sync
 * of one line it is the short one again, so a moderate load keeps its
 * latency. (Which cap was used is read from the counters, not timed.) */
static void test_commit_delay_longer_only_when_busy(void)
{
	async_seen a = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, {0}};
	audit_opts o = {.sync_fn = gated_sync};
	const char *path = path_in("busy.log");
	audit_log *log = NULL;
	audit_stats st;
	json_t *r;
	int i;

	unlink(path);
	REQUIRE(audit_open(path, &o, &log, NULL) == WRIT_OK);
	pthread_mutex_lock(&gate_mu);
	gate_armed = 1;
	gate_open = 0;
	gate_entered = 0;
	pthread_mutex_unlock(&gate_mu);
	/* Line 1's sync blocks in the gate; lines 2-6 queue behind it. */
	for (i = 1; i <= 6; i++) {
		r = issued_rec(i);
		CHECK_RC(append_async(log, r, async_done, &a, NULL), WRIT_OK);
		json_decref(r);
		if (i == 1) {
			pthread_mutex_lock(&gate_mu);
			while (gate_entered == 0)
				pthread_cond_wait(&gate_cv, &gate_mu);
			pthread_mutex_unlock(&gate_mu);
		}
	}
	pthread_mutex_lock(&gate_mu);
	gate_open = 1;
	pthread_cond_broadcast(&gate_cv);
	pthread_mutex_unlock(&gate_mu);
	async_wait(&a, 6); /* two syncs: line 1, then lines 2-6 */
	audit_get_stats(log, &st);
	CHECK(st.syncs == 2 && st.delays == 0);

	audit_expect(log); /* a request being decided, never appended here */
	CHECK(durable_then_delays(log, &a, 7) == 1);
	audit_get_stats(log, &st);
	CHECK(st.busy_delays == 1); /* after a sync of 5 lines */
	CHECK(durable_then_delays(log, &a, 8) == 2);
	audit_get_stats(log, &st);
	CHECK(st.busy_delays == 1); /* after a sync of 1 line: the short cap */
	audit_expect_done(log);
	CHECK_RC(audit_close(log, NULL), WRIT_OK);
}

static void test_signer_failure_keeps_records(void)
{
	tsigner s;
	audit_opts o;
	audit_log *log = NULL;
	audit_stats st;
	audit_report rep;
	writ_jwks *keys;
	int i;

	tsigner_new(&s);
	keys = tsigner_jwks(&s);
	o = (audit_opts){.sign = tsign, .sign_arg = &s, .checkpoint_every = 3};
	unlink(path_in("hsm.log"));
	REQUIRE(audit_open(path_in("hsm.log"), &o, &log, NULL) == WRIT_OK);
	s.fail = 1;
	for (i = 0; i < 5; i++)
		CHECK_RC(append_issued(log, i, NULL), WRIT_OK);
	audit_get_stats(log, &st);
	CHECK(st.checkpoints == 0 && st.sign_failures == 1); /* retried at most once a second */
	s.fail = 0;
	CHECK_RC(audit_checkpoint(log, NULL), WRIT_OK);
	CHECK_RC(audit_close(log, NULL), WRIT_OK);
	CHECK_RC(audit_verify_file(path_in("hsm.log"), keys, &rep, NULL), WRIT_OK);
	CHECK(rep.problem == AUDIT_OK && rep.checkpoints == 1 && rep.unsigned_tail == 0);
	writ_jwks_free(keys);
	tsigner_free(&s);
}

/* buf's records without line `drop` (1-based; 0: none) and without any
 * checkpoint, renumbered and re-chained: what someone who can write the
 * file but not sign can make (SHA-256 needs no key). malloc'd. */
static char *rechain_without(const char *buf, size_t len, size_t drop, size_t *outlen)
{
	char *out = malloc(len + 1), hex[AUDIT_HASH_HEX + 1] = {0};
	unsigned char h[32] = {0};
	size_t off = 0, o = 0, lineno = 0, seq = 0, l, i;

	REQUIRE(out != NULL);
	memset(hex, '0', AUDIT_HASH_HEX);
	while (off < len) {
		const char *e = memchr(buf + off, '\n', len - off);
		json_t *rec = json_loadb(buf + off, (size_t)(e - (buf + off)), 0, NULL);
		const char *ev = json_string_value(json_object_get(rec, "event"));
		char *line;

		REQUIRE(rec != NULL && e != NULL);
		off = (size_t)(e - buf) + 1;
		if (++lineno == drop || (ev != NULL && strcmp(ev, "checkpoint") == 0)) {
			json_decref(rec);
			continue;
		}
		json_object_set_new(rec, "seq", json_integer((json_int_t)++seq));
		json_object_set_new(rec, "prev", json_string(hex));
		line = json_dumps(rec, JSON_COMPACT | JSON_PRESERVE_ORDER);
		REQUIRE(line != NULL);
		l = strlen(line);
		memcpy(out + o, line, l);
		out[o + l] = '\n';
		writ_sha256((unsigned char *)line, l, h);
		for (i = 0; i < 32; i++)
			snprintf(hex + 2 * i, 3, "%02x", h[i]);
		o += l + 1;
		free(line);
		json_decref(rec);
	}
	*outlen = o;
	return out;
}

/* Attack: cut a record out, then remove the checkpoints after it and
 * recompute the chain. The chain verifies; the checkpoints' spacing
 * (audit_check_signing) does not. So does cutting only the final one. */
static void test_stripped_checkpoints_detected(void)
{
	audit_opts o;
	audit_log *log = NULL;
	audit_report rep;
	tsigner s;
	json_t *stop = json_pack("{s:s}", "event", "issuer_stopped");
	char *buf, *forged;
	size_t len, flen, off;
	int i;

	tsigner_new(&s);
	o = (audit_opts){.sign = tsign, .sign_arg = &s, .checkpoint_every = 10};
	unlink(path_in("strip.log"));
	REQUIRE(audit_open(path_in("strip.log"), &o, &log, NULL) == WRIT_OK);
	for (i = 0; i < 35; i++)
		CHECK_RC(append_issued(log, i, NULL), WRIT_OK);
	CHECK_RC(audit_append(log, stop, NULL), WRIT_OK);
	CHECK_RC(audit_close(log, NULL), WRIT_OK);
	buf = tu_read_file(path_in("strip.log"), &len);
	rep = verify_buf(buf, len, NULL);
	audit_check_signing(&rep, 10);
	CHECK(rep.problem == AUDIT_OK && rep.checkpoints == 4);

	forged = rechain_without(buf, len, 6, &flen);
	rep = verify_buf(forged, flen, NULL);
	CHECK(rep.problem == AUDIT_OK); /* the chain alone is fooled */
	audit_check_signing(&rep, 10);
	CHECK(rep.problem == AUDIT_UNSIGNED_RUN && rep.longest_unsigned == 36);
	free(forged);

	/* Only the final checkpoint cut: the clean stop is unsigned. */
	for (off = len - 1; off > 0 && buf[off - 1] != '\n'; off--)
		;
	rep = verify_buf(buf, off, NULL);
	audit_check_signing(&rep, 10);
	CHECK(rep.problem == AUDIT_UNSIGNED_STOP);
	free(buf);
	json_decref(stop);
	tsigner_free(&s);
}

/* A restart that finds the log's tail unsigned (a crash, kill -9) signs
 * at its first append, so the run across the restart stays within
 * checkpoint_every plus the restart's own records. */
static void test_restart_after_unsigned_tail_signs_first(void)
{
	audit_opts o;
	audit_log *log = NULL;
	audit_report rep;
	tsigner s;
	char *buf;
	size_t len;
	int i;

	tsigner_new(&s);
	o = (audit_opts){.sign = tsign, .sign_arg = &s, .checkpoint_every = 100};
	unlink(path_in("crash.log"));
	unlink(path_in("crash2.log"));
	REQUIRE(audit_open(path_in("crash.log"), &o, &log, NULL) == WRIT_OK);
	for (i = 0; i < 98; i++) /* with log_opened, 99 records: none signed yet */
		CHECK_RC(append_issued(log, i, NULL), WRIT_OK);
	/* The file as kill -9 would leave it: durable records, no close. */
	buf = tu_read_file(path_in("crash.log"), &len);
	write_file(path_in("crash2.log"), buf, len);
	free(buf);
	CHECK_RC(audit_close(log, NULL), WRIT_OK);
	REQUIRE(audit_open(path_in("crash2.log"), &o, &log, NULL) == WRIT_OK);
	for (i = 0; i < 99; i++)
		CHECK_RC(append_issued(log, i, NULL), WRIT_OK);
	CHECK_RC(audit_close(log, NULL), WRIT_OK);
	CHECK_RC(audit_verify_file(path_in("crash2.log"), NULL, &rep, NULL), WRIT_OK);
	audit_check_signing(&rep, 100);
	CHECK(rep.problem == AUDIT_OK && rep.longest_unsigned <= 101);
	tsigner_free(&s);
}

/* A quiet issuer still signs its head: a checkpoint once it is old. */
static void test_checkpoint_after_interval(void)
{
	tsigner s;
	audit_opts o;
	audit_log *log = NULL;
	audit_stats st;

	tsigner_new(&s);
	o = (audit_opts){
	    .sign = tsign, .sign_arg = &s, .checkpoint_every = 1000, .checkpoint_secs = 1};
	unlink(path_in("secs.log"));
	REQUIRE(audit_open(path_in("secs.log"), &o, &log, NULL) == WRIT_OK);
	CHECK_RC(append_issued(log, 1, NULL), WRIT_OK);
	audit_get_stats(log, &st);
	CHECK(st.checkpoints == 0);
	usleep(1100 * 1000);
	CHECK_RC(append_issued(log, 2, NULL), WRIT_OK);
	audit_get_stats(log, &st);
	CHECK(st.checkpoints == 1);
	CHECK_RC(audit_close(log, NULL), WRIT_OK);
	tsigner_free(&s);
}

/* A real full disk: a 32 KiB tmpfs (needs root; skipped otherwise). */
static void test_disk_full(void)
{
	char mnt[96], cmd[256], filler[128], logp[128];
	audit_log *log = NULL;
	audit_report rep;
	writ_err err = {0};
	writ_rc rc = WRIT_OK;
	char *buf, big[4096];
	size_t len;
	int i, fd;

	snprintf(mnt, sizeof(mnt), "%s/tiny", dir);
	if (geteuid() != 0 || mkdir(mnt, 0700) != 0 ||
	    mount("tmpfs", mnt, "tmpfs", 0, "size=32k,mode=0700") != 0) {
		fprintf(stderr, "  SKIP test_disk_full: cannot mount a tmpfs (%s)\n",
		        strerror(errno));
		return;
	}
	snprintf(filler, sizeof(filler), "%s/filler", mnt);
	snprintf(logp, sizeof(logp), "%s/audit.log", mnt);
	/* Reserve space we can free later, as an operator would. */
	fd = open(filler, O_WRONLY | O_CREAT, 0600);
	memset(big, 'f', sizeof(big));
	for (i = 0; i < 2 && fd >= 0; i++)
		CHECK(write(fd, big, sizeof(big)) == (ssize_t)sizeof(big));
	if (fd >= 0)
		close(fd);
	CHECK_RC(audit_open(logp, NULL, &log, &err), WRIT_OK);
	for (i = 0; i < 1000 && log != NULL; i++) {
		rc = append_issued(log, i, &err);
		if (rc != WRIT_OK)
			break;
	}
	CHECK_RC(rc, WRIT_ERR_UNAVAILABLE);
	CHECK(strstr(err.msg, "No space left on device") != NULL);
	CHECK(audit_healthy(log) == 0);
	CHECK_RC(append_issued(log, 5000, &err), WRIT_ERR_UNAVAILABLE); /* still full */
	buf = tu_read_file(logp, &len);
	CHECK(len > 0 && buf[len - 1] == '\n');
	free(buf);
	CHECK_RC(audit_verify_file(logp, NULL, &rep, NULL), WRIT_OK);
	CHECK(rep.problem == AUDIT_OK);

	/* Space freed: the log resumes by itself. */
	unlink(filler);
	CHECK_RC(append_issued(log, 6000, &err), WRIT_OK);
	CHECK(audit_healthy(log) == 1);
	CHECK_RC(audit_close(log, &err), WRIT_OK);
	CHECK_RC(audit_verify_file(logp, NULL, &rep, NULL), WRIT_OK);
	CHECK(rep.problem == AUDIT_OK);
	if (umount(mnt) != 0)
		fprintf(stderr, "warning: cannot unmount %s\n", mnt);
	snprintf(cmd, sizeof(cmd), "rmdir '%s'", mnt);
	(void)!system(cmd);
}

/* ---- query ---- */

static int count_cb(void *arg, const char *line, size_t len, const json_t *rec)
{
	(void)line;
	(void)len;
	(void)rec;
	(*(int *)arg)++;
	return 0;
}

static int query_count(const char *path, const audit_filter *f)
{
	int n = 0;

	CHECK_RC(audit_query_file(path, f, count_cb, &n, NULL, NULL), WRIT_OK);
	return n;
}

static void test_query_filters(void)
{
	tsigner s;
	const char *path = path_in("q.log");
	audit_filter f;
	char ts[AUDIT_TS_LEN + 1];
	int64_t ms;

	tsigner_new(&s);
	make_log(path, &s);
	CHECK(query_count(path, NULL) == 40);
	f = (audit_filter){.agent = "agent-03"};
	CHECK(query_count(path, &f) == 5); /* n = 3, 10, 17, 24, 31 */
	f = (audit_filter){.jti = "jti-000017"};
	CHECK(query_count(path, &f) == 1);
	f = (audit_filter){.agent = "agent-03", .audience = "orders-db"};
	CHECK(query_count(path, &f) == 3); /* odd n: 3, 17, 31 */
	f = (audit_filter){.event = "checkpoint"};
	CHECK(query_count(path, &f) == 4);
	f = (audit_filter){.since_ms = (int64_t)(time(NULL) + 3600) * 1000};
	CHECK(query_count(path, &f) == 0);
	f = (audit_filter){.since_ms = (int64_t)(time(NULL) - 3600) * 1000};
	CHECK(query_count(path, &f) == 40);

	audit_ts_format(1735787045678, ts);
	CHECK(strcmp(ts, "2025-01-02T03:04:05.678Z") == 0);
	CHECK(audit_ts_parse(ts, strlen(ts), &ms) == 0 && ms == 1735787045678);
	CHECK(audit_ts_parse("2025-02-29T00:00:00.000Z", 24, &ms) == -1);
	CHECK(audit_ts_parse("2025-01-02T03:04:05Z", 20, &ms) == -1);
	tsigner_free(&s);
}

/* ---- the recent tail ---- */

typedef struct scan_seen {
	int n, before;
	int64_t since, first_seq;
} scan_seen;

static int scan_cb(void *arg, const char *line, size_t len, const json_t *rec)
{
	scan_seen *ss = arg;
	const char *ts = json_string_value(json_object_get(rec, "ts"));
	int64_t ms;

	(void)line;
	(void)len;
	if (ss->n++ == 0)
		ss->first_seq = (int64_t)json_integer_value(json_object_get(rec, "seq"));
	if (ts != NULL && audit_ts_parse(ts, strlen(ts), &ms) == 0 && ms < ss->since)
		ss->before++;
	return 0;
}

/* 100,000 records one second apart: asking for the last 10,000 seconds
 * hands over those records and, of the 90,000 before, only the few in
 * the bisection's last window. A torn tail is passed over. */
static void test_scan_since_reads_only_the_tail(void)
{
	const char *path = path_in("scan.log");
	const int64_t t0 = 1735787045000;
	char ts[AUDIT_TS_LEN + 1], line[256];
	scan_seen ss = {0};
	FILE *f = fopen(path, "w");
	int i;

	REQUIRE(f != NULL);
	for (i = 1; i <= 100000; i++) {
		audit_ts_format(t0 + (int64_t)i * 1000, ts);
		snprintf(line, sizeof(line),
		         "{\"seq\":%d,\"ts\":\"%s\",\"event\":\"token_issued\",\"agent\":"
		         "\"a-%d\",\"prev\":\"%064d\"}\n",
		         i, ts, i % 97, 0);
		fputs(line, f);
	}
	fputs("{\"seq\":100001,\"ts\":\"20", f); /* torn */
	fclose(f);
	ss.since = t0 + 90001 * 1000;
	CHECK_RC(audit_scan_since(path, ss.since, scan_cb, &ss, NULL), WRIT_OK);
	CHECK(ss.n - ss.before == 10000);
	/* the bisection stops within 2 * AUDIT_LINE_MAX: ~220 lines here */
	CHECK(ss.before >= 1 && ss.before < 400);
	CHECK(ss.first_seq > 89600 && ss.first_seq <= 90001);

	/* Before the first record: everything; after the last: nothing new. */
	ss = (scan_seen){.since = t0};
	CHECK_RC(audit_scan_since(path, ss.since, scan_cb, &ss, NULL), WRIT_OK);
	CHECK(ss.n == 100000 && ss.first_seq == 1);
	ss = (scan_seen){.since = t0 + 200000 * 1000};
	CHECK_RC(audit_scan_since(path, ss.since, scan_cb, &ss, NULL), WRIT_OK);
	CHECK(ss.n < 400);
	CHECK_RC(audit_scan_since(path_in("missing.log"), 0, scan_cb, &ss, NULL), WRIT_ERR_IO);
}

int main(void)
{
	char cmd[128];

	snprintf(dir, sizeof(dir), "/tmp/writ-audit-XXXXXX");
	REQUIRE(mkdtemp(dir) != NULL);
	RUN(test_chain_and_checkpoints_verify);
	RUN(test_append_refuses_bad_records);
	RUN(test_async_append_checks_the_text);
	RUN(test_verify_names_tampering);
	RUN(test_reopen_recovers_torn_tail);
	RUN(test_second_writer_and_symlink_refused);
	RUN(test_concurrent_appends_share_fsyncs);
	RUN(test_write_and_sync_failures_fail_closed);
	RUN(test_failed_cut_never_resumes_on_unsynced_bytes);
	RUN(test_checkpoint_cut_by_failed_sync_is_redone);
	RUN(test_async_append_reports_durable_or_failed);
	RUN(test_commit_delay_waits_only_for_announced_records);
	RUN(test_commit_delay_longer_only_when_busy);
	RUN(test_signer_failure_keeps_records);
	RUN(test_checkpoint_after_interval);
	RUN(test_stripped_checkpoints_detected);
	RUN(test_restart_after_unsigned_tail_signs_first);
	RUN(test_disk_full);
	RUN(test_query_filters);
	RUN(test_scan_since_reads_only_the_tail);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	(void)!system(cmd);
	return tu_finish();
}
