/*
 * main.c - writ-issuer: load configuration, open the HSM, store, policy
 * and audit log, serve HTTP, and handle signals: SIGHUP reloads the
 * policy (a bad one leaves the old in force), SIGTERM/SIGINT stop
 * accepting, finish requests in flight, flush the audit log and exit 0.
 */
#include <errno.h>
#include <openssl/sha.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "issuer.h"
#include "writ_int.h"

#define GT_EXCHANGE "urn:ietf:params:oauth:grant-type:token-exchange"

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
	const keyring_entry *k = is->signing;

	snprintf(kid, WRIT_KID_MAX + 1, "%s", writ_jwk_kid(k->jwk));
	*alg = writ_jwk_alg(k->jwk);
	return p11_sign(is->p11, k->id, k->id_len, *alg, msg, len, sig, siglen, err);
}

static void audit_event(issuer *is, json_t *rec)
{
	writ_err e = {0};

	if (rec != NULL && audit_append(is->audit, rec, &e) != WRIT_OK)
		fprintf(stderr, "writ-issuer: audit: %s\n", e.msg);
	json_decref(rec);
}

/* Move the store's pending audit records (agent and key changes made with
 * the CLI) into the audit log, oldest first. A record is deleted from the
 * outbox only after its append is durable: at least once, never lost. */
static void drain_outbox(issuer *is)
{
	writ_err e = {0};
	store *st = issuer_store(is, &e);
	char *rec = NULL;
	int64_t id;
	int i;

	for (i = 0; st != NULL && i < 1000; i++) {
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
	if (e.rc != WRIT_OK && e.rc != WRIT_ERR_NOT_FOUND)
		fprintf(stderr, "writ-issuer: audit outbox: %s\n", e.msg);
}

static void publish(issuer *is)
{
	unsigned char md[SHA256_DIGEST_LENGTH];
	char tag[44];
	json_t *d;
	size_t i, nalg = 0;
	json_t *algs = json_array();

	is->jwks_json = keyring_jwks_json(is->kr);
	if (is->jwks_json == NULL) {
		fprintf(stderr, "writ-issuer: out of memory\n");
		exit(1);
	}
	SHA256((const unsigned char *)is->jwks_json, strlen(is->jwks_json), md);
	b64url_encode(md, 16, tag);
	snprintf(is->jwks_etag, sizeof(is->jwks_etag), "\"%s\"", tag);
	for (i = 0; i < keyring_count(is->kr); i++) {
		const char *a = writ_alg_name(writ_jwk_alg(keyring_get(is->kr, i)->jwk));
		size_t j;
		for (j = 0; j < json_array_size(algs); j++)
			if (strcmp(json_string_value(json_array_get(algs, j)), a) == 0)
				break;
		if (j == json_array_size(algs) && ++nalg)
			json_array_append_new(algs, json_string(a));
	}
	d = json_pack("{s:s, s:s+, s:s+, s:[s], s:[s], s:O, s:O, s:[s]}", "issuer",
		      is->cfg.issuer, "token_endpoint", is->cfg.issuer, "/token", "jwks_uri",
		      is->cfg.issuer, "/.well-known/jwks.json", "grant_types_supported",
		      GT_EXCHANGE, "token_endpoint_auth_methods_supported", "none",
		      "token_endpoint_auth_signing_alg_values_supported", algs,
		      "id_token_signing_alg_values_supported", algs, "response_types_supported",
		      "token");
	is->discovery_json = d != NULL ? json_dumps(d, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
	json_decref(d);
	json_decref(algs);
	if (is->discovery_json == NULL)
		exit(1);
}

static void reload_policy(issuer *is)
{
	policy *p = NULL;
	writ_err e = {0};

	if (policy_load(is->cfg.policy, &p, &e) != WRIT_OK) {
		fprintf(stderr, "writ-issuer: policy reload refused, old policy stays: %s\n", e.msg);
		audit_event(is, json_pack("{s:s, s:s, s:s}", "event", "policy_rejected", "path",
					  is->cfg.policy, "detail", e.msg));
		return;
	}
	audit_event(is, json_pack("{s:s, s:s, s:s, s:I}", "event", "policy_loaded", "path",
				  is->cfg.policy, "policy_hash", policy_hash(p), "rules",
				  (json_int_t)policy_rule_count(p)));
	policy_slot_set(&is->policy, p);
	fprintf(stderr, "writ-issuer: policy loaded: %s\n", is->cfg.policy);
}

static void open_all(issuer *is)
{
	p11_cfg pc;
	writ_err e = {0};
	audit_opts ao = {.sign = issuer_audit_sign, .sign_arg = is,
			 .checkpoint_every = is->cfg.checkpoint_every};
	store *st = NULL;
	policy *p = NULL;

	config_p11(&is->cfg, &pc);
	if (p11_open(&pc, &is->p11, &e) != WRIT_OK)
		die("hsm", &e);
	if (keyring_load(is->p11, &is->kr, &e) != WRIT_OK)
		die("keys", &e);
	is->signing = keyring_newest(is->kr, is->cfg.signing_alg);
	if (is->signing == NULL) {
		fprintf(stderr, "writ-issuer: the token has no %s key: run writ key generate\n",
			writ_alg_name(is->cfg.signing_alg));
		exit(1);
	}
	atomic_store(&is->hsm_ok, 1);
	publish(is);
	if (store_open(is->cfg.state_db, STORE_CREATE, &st, &e) != WRIT_OK)
		die("store", &e);
	store_close(st);
	if (policy_load(is->cfg.policy, &p, &e) != WRIT_OK)
		die("policy", &e);
	policy_slot_init(&is->policy);
	policy_slot_set(&is->policy, p);
	is->rl = ratelimit_new(100000);
	if (is->rl == NULL || pthread_key_create(&is->store_key, store_release) != 0) {
		fprintf(stderr, "writ-issuer: out of memory\n");
		exit(1);
	}
	if (audit_open(is->cfg.audit_log, &ao, &is->audit, &e) != WRIT_OK)
		die("audit", &e);
	audit_event(is, json_pack("{s:s, s:s, s:s, s:s}", "event", "issuer_started", "issuer",
				  is->cfg.issuer, "kid", writ_jwk_kid(is->signing->jwk),
				  "policy_hash", policy_hash(p)));
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
	policy_unref(p);
	return 0;
}

static void serve(issuer *is)
{
	sigset_t set;
	struct timespec tick = {1, 0};
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
	http_stop(srv);
	drain_outbox(is);
	audit_event(is, json_pack("{s:s}", "event", "issuer_stopped"));
}

int main(int argc, char **argv)
{
	static issuer is;
	const char *cfgarg = NULL;
	writ_err e = {0};
	sigset_t set;
	int i, check = 0;

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
	/* Block the signals before any thread starts, so only sigtimedwait
	 * sees them; SIGPIPE from a vanished client must not kill us. */
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);
	is.started = (int64_t)time(NULL);
	open_all(&is);
	serve(&is);
	if (audit_close(is.audit, &e) != WRIT_OK)
		fprintf(stderr, "writ-issuer: audit close: %s\n", e.msg);
	policy_slot_destroy(&is.policy);
	ratelimit_free(is.rl);
	keyring_free(is.kr);
	free(is.jwks_json);
	free(is.discovery_json);
	p11_close(is.p11);
	fprintf(stderr, "writ-issuer: stopped\n");
	return 0;
}
