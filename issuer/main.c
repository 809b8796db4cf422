/*
 * main.c - writ-issuer: load configuration, open the HSM, store, policy
 * and audit log, serve HTTP, and handle signals: SIGHUP reloads the
 * policy (a bad one leaves the old in force), SIGTERM/SIGINT stop
 * accepting, finish requests in flight, flush the audit log and exit 0.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "issuer.h"
#include "lifecycle.h"
#include "writ_int.h"

static void die(const char *what, const writ_err *e)
{
	fprintf(stderr, "writ-issuer: %s: %s\n", what, e->msg[0] ? e->msg : "failed");
	exit(1);
}

static void store_release(void *p)
{
	store_close(p);
}

store *issuer_store(issuer *is, writ_err *err)
{
	store *st = pthread_getspecific(is->store_key);

	if (st == NULL && store_open(is->cfg.state_db, 0, &st, err) == WRIT_OK)
		pthread_setspecific(is->store_key, st);
	return st;
}

writ_rc issuer_audit_sign(void *arg, const unsigned char *msg, size_t len,
                          char kid[WRIT_KID_MAX + 1], writ_alg *alg, unsigned char *sig,
                          size_t *siglen, writ_err *err)
{
	issuer *is = arg;
	keyset *ks = keyset_get(&is->keys);
	const keyring_entry *k;
	writ_rc rc;

	if (ks == NULL || atomic_load(&is->signing_stale)) {
		keyset_put(&is->keys, ks);
		return writ_err_set(err, WRIT_ERR_UNAVAILABLE, "no active signing key");
	}
	k = ks->signing;
	snprintf(kid, WRIT_KID_MAX + 1, "%s", writ_jwk_kid(k->jwk));
	*alg = writ_jwk_alg(k->jwk);
	rc = p11_sign(is->p11, k->id, k->id_len, *alg, msg, len, sig, siglen, err);
	keyset_put(&is->keys, ks);
	return rc;
}

/* Append rec (consumed) durably; on failure say so and return non-OK. */
static writ_rc audit_event(issuer *is, json_t *rec)
{
	writ_err e = {0};
	writ_rc rc = rec != NULL ? audit_append(is->audit, rec, &e) : WRIT_ERR_NOMEM;

	if (rc != WRIT_OK)
		fprintf(stderr, "writ-issuer: audit: %s\n", rec != NULL ? e.msg : "out of memory");
	json_decref(rec);
	return rc;
}

/* The outbox lock: several issuers may share one store (SPEC s.8), and
 * each record must reach one audit log, not some of them twice. The move
 * (read, append, delete) runs under an flock on "<state_db>.outbox.lock";
 * an instance that finds it held leaves the records to the holder. Returns
 * the locked fd, or -1 (held elsewhere, or the file cannot be opened:
 * then the records wait in the store, never lost). */
static int outbox_lock(const issuer *is, int wait_ms)
{
	char path[sizeof(is->cfg.state_db) + 16];
	struct timespec pause = {0, 2000000L};
	int fd, waited = 0;

	if ((size_t)snprintf(path, sizeof(path), "%s.outbox.lock", is->cfg.state_db) >=
	    sizeof(path))
		return -1;
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK, 0600);
	while (fd >= 0 && flock(fd, LOCK_EX | LOCK_NB) != 0) {
		if ((errno != EWOULDBLOCK && errno != EINTR) || waited >= wait_ms) {
			close(fd);
			return -1;
		}
		nanosleep(&pause, NULL);
		waited += 2;
	}
	return fd;
}

/* Move the store's pending audit records (agent and key changes made with
 * the CLI) into the audit log, oldest first. A record is deleted from the
 * outbox only after its append is durable: at least once, never lost. */
static void drain_outbox_wait(issuer *is, int wait_ms)
{
	writ_err e = {0};
	store *st = issuer_store(is, &e);
	char *rec = NULL;
	int64_t id;
	int i, lk = st != NULL ? outbox_lock(is, wait_ms) : -1;

	for (i = 0; lk >= 0 && i < 1000; i++) {
		json_t *j;
		if (store_outbox_next(st, &id, &rec, &e) != WRIT_OK)
			break;
		j = json_loads(rec, JSON_REJECT_DUPLICATES, NULL);
		free(rec);
		if (j == NULL || audit_append(is->audit, j, &e) != WRIT_OK) {
			json_decref(j);
			break;
		}
		json_decref(j);
		if (store_outbox_delete(st, id, &e) != WRIT_OK)
			break;
	}
	if (lk >= 0)
		close(lk); /* releases the flock */
	if (e.rc != WRIT_OK && e.rc != WRIT_ERR_NOT_FOUND)
		fprintf(stderr, "writ-issuer: audit outbox: %s\n", e.msg);
}

/* The tick's move: a mover already at work is left to it. */
static void drain_outbox(issuer *is)
{
	drain_outbox_wait(is, 0);
}

void issuer_outbox_move(issuer *is, int wait_ms)
{
	drain_outbox_wait(is, wait_ms);
}

/* Republish when the store's keys changed (always at start). */
static writ_rc republish(issuer *is, store *st, int at_start, writ_err *e)
{
	uint64_t gen = 0;
	keyset *ks = NULL;
	writ_rc rc = store_keys_generation(st, &gen, e);

	if (rc != WRIT_OK || (!at_start && gen == is->keys_gen))
		return rc;
	if ((rc = keyset_build(is->p11, st, &is->cfg, gen, &ks, e)) != WRIT_OK)
		return rc;
	is->keys_gen = gen;
	keyset_slot_set(&is->keys, ks);
	return WRIT_OK;
}

static int served_before(const issuer *is, const char *kid)
{
	size_t i;

	for (i = 0; i < is->nserved_pending; i++)
		if (strcmp(is->served_pending[i], kid) == 0)
			return 1;
	return 0;
}

/*
 * Every pending key now served is recorded as published (store_sk_hold),
 * and those this process had not served before are held until
 * key_pending_secs from now: the CLI or another instance made them, maybe
 * while this thread was busy for seconds, and the pending window must
 * count from when this issuer's JWKS first showed them. At start a key
 * another issuer already published counts as served (by the instance
 * before); one no issuer published is held. A hold that fails is tried
 * again on the next tick.
 */
static void hold_new_pending(issuer *is, store *st, int at_start)
{
	char(*now_served)[WRIT_KID_MAX + 1];
	keyset *ks = keyset_get(&is->keys);
	size_t i, n = 0;
	writ_err e = {0};

	if (ks == NULL)
		return;
	/* Room for every published key: none may be skipped (or it would
	 * never be recorded as published, so never activate). */
	now_served = calloc(ks->nmetrics + 1, sizeof(*now_served));
	if (now_served == NULL) {
		fprintf(stderr, "writ-issuer: keys: out of memory (tried again next tick)\n");
		keyset_put(&is->keys, ks);
		return;
	}
	for (i = 0; i < ks->nmetrics; i++) {
		const char *kid = ks->metrics[i].kid;

		if (strcmp(ks->states[i], store_sk_state_name(STORE_SK_PENDING)) != 0)
			continue;
		int64_t now = (int64_t)time(NULL);

		if ((at_start || !served_before(is, kid)) &&
		    store_sk_hold(st, kid, now, now + (int64_t)is->cfg.key_pending_secs, !at_start,
		                  NULL, &e) != WRIT_OK) {
			fprintf(stderr, "writ-issuer: keys: %s (tried again next tick)\n", e.msg);
			continue;
		}
		snprintf(now_served[n++], WRIT_KID_MAX + 1, "%s", kid);
	}
	keyset_put(&is->keys, ks);
	free(is->served_pending);
	is->served_pending = now_served;
	is->nserved_pending = n;
}

/*
 * The key set could not be rebuilt: it keeps being published (verifiers
 * need it), but if the store says its signing key is no longer active
 * (revoked, retired by the CLI or another instance), signing stops until
 * a rebuild succeeds. A store that cannot say changes nothing.
 */
static void check_signing_key(issuer *is, store *st)
{
	keyset *ks = keyset_get(&is->keys);
	store_sk row;

	if (ks != NULL && st != NULL &&
	    store_sk_get(st, writ_jwk_kid(ks->signing->jwk), &row, NULL) == WRIT_OK &&
	    row.state != STORE_SK_ACTIVE && !atomic_exchange(&is->signing_stale, 1))
		fprintf(stderr,
		        "writ-issuer: keys: signing key %s is %s in the store: not signing "
		        "until the key set is rebuilt\n",
		        row.kid, store_sk_state_name(row.state));
	keyset_put(&is->keys, ks);
}

/*
 * Publish what the store holds, then apply the key lifecycle transitions
 * that are due (and scheduled rotation), then republish if that changed
 * anything: a rotation by the CLI or by another instance shows up within
 * one tick, and is published (and held) before anything can activate it.
 * On failure the keys in force stay (fail closed only when there are none).
 */
static void keys_tick(issuer *is, int at_start)
{
	writ_err e = {0};
	store *st = issuer_store(is, &e);

	pthread_mutex_lock(&is->keys_mu);
	if (st == NULL || republish(is, st, at_start, &e) != WRIT_OK)
		goto fail;
	hold_new_pending(is, st, at_start);
	if (lifecycle_advance(st, &is->cfg, (int64_t)time(NULL), NULL, &e) != WRIT_OK ||
	    republish(is, st, 0, &e) != WRIT_OK)
		goto fail;
	hold_new_pending(is, st, 0);
	atomic_store(&is->signing_stale, 0);
	pthread_mutex_unlock(&is->keys_mu);
	return;
fail:
	if (at_start)
		die("keys", &e);
	fprintf(stderr, "writ-issuer: keys: %s (the published keys stay)\n", e.msg);
	check_signing_key(is, st);
	pthread_mutex_unlock(&is->keys_mu);
}

void issuer_keys_refresh(issuer *is, store *st)
{
	writ_err e = {0};

	/* Only the rebuild: holds and transitions stay with the tick, which
	 * records a newly served pending key within a tick (its window then
	 * counts from a little later than it was first served: never
	 * shorter). A failure leaves it to the tick too. */
	pthread_mutex_lock(&is->keys_mu);
	if (republish(is, st, 0, &e) == WRIT_OK)
		atomic_store(&is->signing_stale, 0);
	pthread_mutex_unlock(&is->keys_mu);
}

/* At start: make the HSM and the store agree before anything is
 * published (lifecycle.h says what is destroyed, adopted or removed),
 * under the key lock, which is held for this only: the tick and the
 * request path never take it. */
static void keys_open(issuer *is)
{
	lifecycle_lock lk = {-1};
	writ_err e = {0};
	store *st = issuer_store(is, &e);
	int changed = 0;

	if (st == NULL)
		die("store", &e);
	store_set_actor(st, "writ-issuer");
	if (lifecycle_lock_take(is->cfg.state_db, LIFECYCLE_LOCK_WAIT_MS, &lk, &e) != WRIT_OK)
		die("reconcile keys", &e);
	if (lifecycle_reconcile(is->p11, st, &is->cfg, &lk, (int64_t)time(NULL), &changed, &e) !=
	    WRIT_OK)
		die("reconcile keys", &e);
	lifecycle_unlock(&lk);
	if (changed != 0)
		fprintf(stderr,
		        "writ-issuer: reconciled %d key(s) between the HSM and the store "
		        "(see the audit log)\n",
		        changed);
	keys_tick(is, 1);
}

/*
 * Scheduled rotation, checked once a second on a thread of its own: an RSA
 * key takes seconds to generate (more on a loaded machine or a remote HSM),
 * and the key tick on the main thread must go on publishing new keys and
 * activating due ones meanwhile. The key made here reaches the JWKS through
 * the store like one made by the CLI. lifecycle_rotate_due takes the key
 * lock itself when a key is due, so this thread's generate-and-record is
 * never seen half-done by a `writ key` command's reconcile.
 */
static void *keygen_main(void *arg)
{
	issuer *is = arg;
	struct timespec until;
	writ_err e = {0};
	store *st;

	pthread_mutex_lock(&is->keygen_mu);
	while (!is->keygen_stop) {
		pthread_mutex_unlock(&is->keygen_mu);
		st = issuer_store(is, &e);
		if (st == NULL || lifecycle_rotate_due(is->p11, st, &is->cfg, (int64_t)time(NULL),
		                                       NULL, &e) != WRIT_OK)
			fprintf(stderr, "writ-issuer: scheduled rotation: %s (tried again)\n",
			        e.msg);
		pthread_mutex_lock(&is->keygen_mu);
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_sec += 1;
		while (!is->keygen_stop &&
		       pthread_cond_timedwait(&is->keygen_cv, &is->keygen_mu, &until) == 0)
			;
	}
	pthread_mutex_unlock(&is->keygen_mu);
	return NULL;
}

static void keygen_start(issuer *is)
{
	pthread_mutex_init(&is->keygen_mu, NULL);
	pthread_cond_init(&is->keygen_cv, NULL);
	if (is->cfg.rotation_period == 0)
		return;
	if (pthread_create(&is->keygen, NULL, keygen_main, is) != 0) {
		fprintf(stderr, "writ-issuer: cannot start the key generation thread\n");
		exit(1);
	}
	is->keygen_started = 1;
}

/* Waits for a key generation in progress to finish. */
static void keygen_stop(issuer *is)
{
	if (!is->keygen_started)
		return;
	pthread_mutex_lock(&is->keygen_mu);
	is->keygen_stop = 1;
	pthread_cond_signal(&is->keygen_cv);
	pthread_mutex_unlock(&is->keygen_mu);
	pthread_join(is->keygen, NULL);
	is->keygen_started = 0;
}

static void reload_policy(issuer *is)
{
	policy *p = NULL;
	writ_err e = {0};

	if (policy_load(is->cfg.policy, &p, &e) != WRIT_OK) {
		fprintf(stderr, "writ-issuer: policy reload refused, old policy stays: %s\n",
		        e.msg);
		(void)audit_event(is, json_pack("{s:s, s:s, s:s}", "event", "policy_rejected",
		                                "path", is->cfg.policy, "detail", e.msg));
		return;
	}
	/* Audited before it decides anything: decisions name its hash, and a
	 * policy the log cannot show was loaded must not be in force. */
	if (audit_event(is, json_pack("{s:s, s:s, s:s, s:I}", "event", "policy_loaded", "path",
	                              is->cfg.policy, "policy_hash", policy_hash(p), "rules",
	                              (json_int_t)policy_rule_count(p))) != WRIT_OK) {
		fprintf(stderr, "writ-issuer: policy reload refused, old policy stays: its load "
		                "could not be audited\n");
		policy_free(p);
		return;
	}
	policy_slot_set(&is->policy, p);
	fprintf(stderr, "writ-issuer: policy loaded: %s\n", is->cfg.policy);
}

static void open_all(issuer *is)
{
	p11_cfg pc;
	writ_err e = {0};
	audit_opts ao = {.sign = issuer_audit_sign,
	                 .sign_arg = is,
	                 .checkpoint_every = is->cfg.checkpoint_every};
	store *st = NULL;
	policy *p = NULL;
	keyset *ks;

	config_p11(&is->cfg, &pc);
	if (p11_open(&pc, &is->p11, &e) != WRIT_OK)
		die("hsm", &e);
	atomic_store(&is->hsm_ok, 1);
	if (store_open(is->cfg.state_db, STORE_CREATE, &st, &e) != WRIT_OK)
		die("store", &e);
	store_close(st);
	keyset_slot_init(&is->keys);
	if (pthread_key_create(&is->store_key, store_release) != 0) {
		fprintf(stderr, "writ-issuer: out of memory\n");
		exit(1);
	}
	if (policy_load(is->cfg.policy, &p, &e) != WRIT_OK)
		die("policy", &e);
	policy_slot_init(&is->policy);
	policy_slot_set(&is->policy, p);
	is->rl = ratelimit_new(100000);
	if (is->rl == NULL) {
		fprintf(stderr, "writ-issuer: out of memory\n");
		exit(1);
	}
	if (audit_open(is->cfg.audit_log, &ao, &is->audit, &e) != WRIT_OK)
		die("audit", &e);
	if (attest_init(is, &e) != WRIT_OK)
		die("attestation", &e);
	/* After the audit log: reconcile's records go through the outbox. */
	keys_open(is);
	keygen_start(is);
	drain_outbox(is);
	ks = keyset_get(&is->keys);
	/* A full disk at start still lets the JWKS be served; /token then
	 * answers 503 while the log cannot be written. */
	(void)audit_event(is, json_pack("{s:s, s:s, s:s, s:s}", "event", "issuer_started", "issuer",
	                                is->cfg.issuer, "kid", writ_jwk_kid(ks->signing->jwk),
	                                "policy_hash", policy_hash(p)));
	keyset_put(&is->keys, ks);
}

static void usage(FILE *f)
{
	fprintf(f, "usage: writ-issuer [-c CONFIG] [--check-config]\n\n"
	           "Serve POST /token, the JWKS, discovery, /healthz and /metrics (SPEC s.4).\n"
	           "CONFIG defaults to $WRIT_CONFIG, else $WRIT_HOME/writ.conf.\n"
	           "--check-config validates the configuration and the policy, then exits.\n"
	           "Signals: HUP reloads the policy; TERM/INT stop gracefully.\n");
}

static const char *config_path(const char *arg)
{
	static char buf[1100];
	const char *home = getenv("WRIT_HOME"), *h = getenv("HOME");

	if (arg != NULL)
		return arg;
	if (getenv("WRIT_CONFIG") != NULL)
		return getenv("WRIT_CONFIG");
	if (home != NULL && home[0] != '\0')
		snprintf(buf, sizeof(buf), "%s/writ.conf", home);
	else
		snprintf(buf, sizeof(buf), "%s/.local/share/writ/writ.conf", h ? h : ".");
	return buf;
}

static int check_config(issuer *is)
{
	policy *p = NULL;
	writ_err e = {0};

	if (policy_load(is->cfg.policy, &p, &e) != WRIT_OK)
		die("policy", &e);
	printf("%s: ok (listen %s, issuer %s, policy %s with %zu rules)\n", is->cfg.path,
	       is->cfg.listen, is->cfg.issuer, is->cfg.policy, policy_rule_count(p));
	/* config_load has checked the key lifecycle windows (SPEC s.2). */
	printf("keys: %s signs; jwks_max_age %u + leeway %u <= key_pending_secs %u; "
	       "token_ttl_max %u + leeway %u <= key_retired_secs %u; rotation_period %u%s\n",
	       writ_alg_name(is->cfg.signing_alg), is->cfg.jwks_max_age, is->cfg.leeway,
	       is->cfg.key_pending_secs, is->cfg.token_ttl_max, is->cfg.leeway,
	       is->cfg.key_retired_secs, is->cfg.rotation_period,
	       is->cfg.rotation_period == 0 ? " (no scheduled rotation)" : "");
	policy_unref(p);
	return 0;
}

/*
 * /healthz and writ_up follow the HSM and the audit log without traffic (a
 * load balancer that stops sending requests on 503 would otherwise keep
 * the instance out for good). At most once a second: look the signing
 * key's private object up in the token (one search, no signing) and set
 * hsm_ok from the answer, either way; and an audit log failed since the
 * last look tries to resume, as the next append would. Main thread only.
 */
static void health_tick(issuer *is)
{
	static int64_t last_ns;
	static int audit_was_failed;
	int64_t now = writ_mono_ns();
	keyset *ks;
	writ_err e = {0};
	int present = 0, ok;

	if (last_ns != 0 && now - last_ns < 1000000000)
		return;
	last_ns = now;
	ks = keyset_get(&is->keys);
	if (ks != NULL) {
		ok = p11_key_present(is->p11, ks->signing->id, ks->signing->id_len, &present, &e) ==
		         WRIT_OK &&
		     present;
		if (!ok && atomic_exchange(&is->hsm_ok, 0))
			fprintf(stderr, "writ-issuer: hsm: signing key not usable: %s\n",
			        e.msg[0] ? e.msg : "not in the token");
		else if (ok && !atomic_exchange(&is->hsm_ok, 1))
			fprintf(stderr, "writ-issuer: hsm: signing key usable again\n");
	}
	keyset_put(&is->keys, ks);
	if (audit_healthy(is->audit)) {
		audit_was_failed = 0;
		return;
	}
	/* Not on the tick that first sees the failure: a log that failed
	 * stays reported down for about a second at least. */
	if (audit_was_failed && audit_try_resume(is->audit, &e) == WRIT_OK) {
		fprintf(stderr, "writ-issuer: audit log resumed\n");
		audit_was_failed = 0;
		return;
	}
	audit_was_failed = 1;
}

/* Serve until SIGTERM/SIGINT; then drain and write the last record:
 * WRIT_OK when that record is durable. */
static writ_rc serve(issuer *is)
{
	sigset_t set;
	/* A quarter second: a key the CLI or another instance recorded is
	 * published within it, well inside the leeway of the pending window. */
	struct timespec tick = {0, 250 * 1000 * 1000};
	http_server *srv = NULL;
	writ_err e = {0};
	time_t last_cp = time(NULL);
	int sig;

	if (http_start(&is->cfg, routes_handle, is, &srv, &e) != WRIT_OK)
		die("http", &e);
	printf("writ-issuer: listening on %s%s port %u (issuer %s)\n",
	       is->cfg.tls_cert[0] ? "https " : "", is->cfg.listen, http_port(srv), is->cfg.issuer);
	fflush(stdout);
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	for (;;) {
		sig = sigtimedwait(&set, NULL, &tick);
		keys_tick(is, 0);
		health_tick(is);
		drain_outbox(is);
		if (sig == SIGHUP) {
			reload_policy(is);
		} else if (sig == SIGTERM || sig == SIGINT) {
			break;
		} else if (time(NULL) - last_cp >= 60) {
			/* Sign the chain head at least once a minute when busy. */
			last_cp = time(NULL);
			if (audit_checkpoint(is->audit, &e) != WRIT_OK)
				fprintf(stderr, "writ-issuer: audit checkpoint: %s\n", e.msg);
		}
	}
	fprintf(stderr, "writ-issuer: stopping: finishing requests in flight\n");
	http_quiesce(srv);
	if (http_stop(srv) != 0) {
		/* HTTP threads still run and use what main would free next: leave
		 * now. Every response that left has its audit line on disk; the
		 * held ones never leave. */
		fprintf(stderr, "writ-issuer: stopped uncleanly (audit log not syncing)\n");
		_exit(1);
	}
	keygen_stop(is);
	attest_shutdown();
	drain_outbox(is);
	return audit_event(is, json_pack("{s:s}", "event", "issuer_stopped"));
}

/*
 * The process holds the TLS private key, and with an in-process module
 * such as SoftHSM2 the token's keys decrypted while it signs: no core
 * file, and no ptrace or /proc/PID/mem from other processes of its user.
 */
static void harden(void)
{
	const struct rlimit none = {0, 0};

	if (setrlimit(RLIMIT_CORE, &none) != 0 || prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0)
		fprintf(stderr, "writ-issuer: cannot turn off core dumps: %s\n", strerror(errno));
}

int main(int argc, char **argv)
{
	static issuer is;
	const char *cfgarg = NULL;
	writ_err e = {0};
	sigset_t set;
	int i, check = 0, status = 0;

	for (i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--check-config") == 0)
			check = 1;
		else if ((strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "--config") == 0) &&
		         i + 1 < argc)
			cfgarg = argv[++i];
		else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0)
			return usage(stdout), 0;
		else
			return usage(stderr), 2;
	}
	if (config_load(config_path(cfgarg), &is.cfg, &e) != WRIT_OK)
		die("config", &e);
	if (check)
		return check_config(&is);
	harden();
	/* Block the signals before any thread starts, so only sigtimedwait
	 * sees them; SIGPIPE from a vanished client must not kill us. */
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);
	is.started = (int64_t)time(NULL);
	pthread_mutex_init(&is.keys_mu, NULL);
	open_all(&is);
	/* Exit 0 says the audit log was flushed and closed whole: a last
	 * line or final checkpoint that could not be written says otherwise
	 * (every token that left is on disk either way). */
	if (serve(&is) != WRIT_OK)
		status = 1;
	if (audit_close(is.audit, &e) != WRIT_OK) {
		fprintf(stderr, "writ-issuer: audit close: %s\n", e.msg);
		status = 1;
	}
	policy_slot_destroy(&is.policy);
	ratelimit_free(is.rl);
	keyset_slot_destroy(&is.keys);
	free(is.served_pending);
	p11_close(is.p11);
	fprintf(stderr, "writ-issuer: stopped%s\n",
	        status != 0 ? " (the audit log's last record or checkpoint was not written)" : "");
	return status;
}
