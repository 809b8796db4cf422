/*
 * exchange.c - POST /token: RFC 8693 token exchange of an agent assertion
 * for a scoped access token. Every path ends in exactly one audit record;
 * a token leaves only after its record is durable (SPEC s.4: fail closed).
 * The response is held (http.h) while the audit log's sync thread makes
 * the record durable, so the HTTP thread serves other requests meanwhile
 * instead of waiting on fdatasync.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "form.h"
#include "issuer.h"
#include "metrics.h"
#include "mint.h"
#include "writ_int.h"

#define GT_EXCHANGE "urn:ietf:params:oauth:grant-type:token-exchange"
#define TT_JWT      "urn:ietf:params:oauth:token-type:jwt"
#define TT_ACCESS   "urn:ietf:params:oauth:token-type:access_token"
/* One target service's name: printable ASCII, no space, no glob. */
#define AUDIENCE_MAX POLICY_NAME_MAX

/* What the request asked for, for audit records. Borrowed strings. */
typedef struct ask {
	void *hold; /* the request's http_release handle */
	int64_t t0; /* monotonic ns: the request read */
	const char *client, *audience, *scope;
	const attest_result *who; /* NULL before attestation succeeded */
	const policy *pol;
	const policy_decision *dec;
	int *announced; /* audit_expect'ed and not yet withdrawn */
} ask;

static metric_deny deny_metric(const char *error, int status)
{
	if (status == 429)
		return DENY_RATE_LIMITED;
	if (status == 503)
		return DENY_UNAVAILABLE;
	if (strcmp(error, "invalid_grant") == 0)
		return DENY_INVALID_GRANT;
	if (strcmp(error, "invalid_scope") == 0)
		return DENY_INVALID_SCOPE;
	if (strcmp(error, "invalid_target") == 0)
		return DENY_INVALID_TARGET;
	if (strcmp(error, "unsupported_grant_type") == 0)
		return DENY_UNSUPPORTED_GRANT;
	return DENY_INVALID_REQUEST;
}

static void groups_member(wjson_w *w, const char *key, const store_agent *a)
{
	size_t i;

	wjw_open(w, key, '[');
	for (i = 0; i < a->ngroups; i++)
		wjw_str(w, NULL, a->groups[i]);
	wjw_close(w);
}

/* A request value into a record: itself when check_request would let it
 * through, else only its length (the value was refused for its size or
 * bytes, and would only make the line too long to write). */
static void set_asked(wjson_w *w, const char *key, const char *v, size_t max)
{
	char k[32];

	if (v == NULL)
		return;
	if (strlen(v) <= max) {
		wjw_text(w, key, v);
		return;
	}
	snprintf(k, sizeof(k), "%s_bytes", key);
	wjw_int(w, k, (int64_t)strlen(v));
}

/* Start a token record (SPEC s.7) with the part common to all of them:
 * the caller adds its members and hands w to finish(). Written as text,
 * not a tree: this runs for every request. */
static void audit_base(wjson_w *w, const char *event, const ask *a)
{
	wjw_init(w);
	wjw_str(w, "event", event);
	if (a->client != NULL)
		wjw_str(w, "client", a->client);
	set_asked(w, "audience", a->audience, AUDIENCE_MAX);
	set_asked(w, "scope_requested", a->scope, MINT_CLAIM_MAX);
	if (a->who != NULL) {
		wjw_str(w, "agent", a->who->agent.id);
		groups_member(w, "groups", &a->who->agent);
		wjw_open(w, "attestation", '{');
		wjw_str(w, "kind", "agent_key");
		wjw_str(w, "jkt", a->who->key_kid);
		wjw_str(w, "jti", a->who->jti);
		wjw_int(w, "exp", a->who->exp);
		wjw_close(w);
	}
	if (a->pol != NULL)
		wjw_str(w, "policy_hash", policy_hash(a->pol));
	if (a->dec != NULL && a->dec->rule_id != NULL)
		wjw_str(w, "rule", a->dec->rule_id);
}

static double since(int64_t t0)
{
	return (double)(writ_mono_ns() - t0) / 1e9;
}

/* A response waiting for its audit record (audit_done_fn). */
typedef struct pending {
	void *hold;
	int64_t t0; /* monotonic ns: the request read */
	int issued;
	metric_deny why;
} pending;

static void audited(void *arg, writ_rc rc)
{
	pending *p = arg;

	if (rc != WRIT_OK)
		metrics_denied(DENY_UNAVAILABLE);
	else if (p->issued)
		metrics_issued();
	else
		metrics_denied(p->why);
	metrics_latency(since(p->t0));
	http_release(p->hold, rc);
	free(p);
}

/* Answer with resp once the record in rec (taken) is durable. If it
 * cannot even be written, answer 503 now: resp's body, which may hold a
 * token, is wiped unsent. */
static void finish(issuer *is, http_resp *resp, const ask *a, wjson_w *rec, int issued,
                   metric_deny why)
{
	pending *p = malloc(sizeof(*p));
	size_t len = 0;
	char *text = wjw_finish(rec, &len);
	writ_err e = {0};

	if (p != NULL)
		*p = (pending){.hold = a->hold, .t0 = a->t0, .issued = issued, .why = why};
	/* This record is no longer on its way: the sync thread should wait
	 * for other requests' records, not for this one. */
	if (*a->announced) {
		*a->announced = 0;
		audit_expect_done(is->audit);
	}
	if (p == NULL || text == NULL ||
	    audit_append_async(is->audit, text, len, audited, p, &e) != WRIT_OK) {
		free(p);
		free(text);
		if (resp->body != NULL)
			OPENSSL_cleanse(resp->body, strlen(resp->body));
		metrics_denied(DENY_UNAVAILABLE);
		metrics_latency(since(a->t0));
		resp_error(resp, 503, "temporarily_unavailable", "the audit log is unavailable");
		return;
	}
	free(text);
	resp->held = 1;
}

/* Refuse, audited. If the refusal cannot be audited the answer is 503. */
static void deny(issuer *is, http_resp *resp, const ask *a, int status, const char *error,
                 const char *desc, const char *event, const char *detail)
{
	wjson_w r;

	audit_base(&r, event != NULL ? event : "token_denied", a);
	wjw_str(&r, "reason", error);
	/* A message may quote outside input cut at a byte count. */
	wjw_text(&r, "detail", detail != NULL ? detail : desc);
	resp_error(resp, status, error, desc);
	finish(is, resp, a, &r, 0, deny_metric(error, status));
}

/* RFC 8693 s.2.1 parameters. Returns 0 or fills the refusal. */
/* A literal service name: a glob character here would let a request
 * like "orders-pro[d]" slip past a deny rule for "orders-prod" while an
 * allow rule's "orders-*" matched it. */
static int audience_ok(const char *s)
{
	size_t i;

	for (i = 0; s[i] != '\0'; i++)
		if (i >= AUDIENCE_MAX || s[i] <= 0x20 || s[i] >= 0x7f ||
		    strchr("*?[]", s[i]) != NULL)
			return 0;
	return i > 0;
}

static int check_request(const form *f, const char **why, const char **error)
{
	const char *gt = form_get(f, "grant_type"), *rtt = form_get(f, "requested_token_type");

	*error = "invalid_request";
	if (gt == NULL)
		return *why = "grant_type is required", -1;
	if (strcmp(gt, GT_EXCHANGE) != 0) {
		*error = "unsupported_grant_type";
		return *why = "only token exchange (RFC 8693) is supported", -1;
	}
	if (form_get(f, "subject_token") == NULL)
		return *why = "subject_token is required", -1;
	if (form_get(f, "subject_token_type") == NULL ||
	    strcmp(form_get(f, "subject_token_type"), TT_JWT) != 0)
		return *why = "subject_token_type must be " TT_JWT, -1;
	if (rtt != NULL && strcmp(rtt, TT_ACCESS) != 0)
		return *why = "requested_token_type must be " TT_ACCESS, -1;
	if (form_get(f, "actor_token") != NULL || form_get(f, "actor_token_type") != NULL)
		return *why = "delegation (actor_token) is not supported by this issuer", -1;
	if (form_get(f, "audience") == NULL)
		return *why = "audience is required (one target service)", -1;
	if (!audience_ok(form_get(f, "audience")))
		return *why = "audience must be one service name: 1..256 printable characters, "
		              "no spaces or glob characters (* ? [ ])",
		       -1;
	if (form_get(f, "resource") != NULL)
		return *why = "use audience, not resource, to name the target", -1;
	if (form_get(f, "scope") == NULL) {
		*error = "invalid_scope";
		return *why = "scope is required", -1;
	}
	if (strlen(form_get(f, "scope")) > MINT_CLAIM_MAX) {
		*error = "invalid_scope";
		return *why = "scope is longer than 1024 bytes", -1;
	}
	return 0;
}

/* Take a token from every rate-limited rule that granted, or from none:
 * 0, or the seconds to wait (a refused request leaves every bucket as it
 * was, so one rule's limit does not drain the others). */
static unsigned take_rate(issuer *is, const char *agent, const policy_decision *d)
{
	struct timespec ts;
	double now, wait = 0, w;
	uint64_t taken = 0;
	size_t i;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	now = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
	for (i = 0; i < d->nrate; i++) {
		w = 0;
		switch (ratelimit_take(is->rl, agent, d->rate[i].rule_id, d->rate[i].n,
		                       d->rate[i].period_s, now, &w)) {
		case RATELIMIT_OK: taken |= (uint64_t)1 << i; continue;
		case RATELIMIT_INVALID: w = 1; break; /* refused, never waved through */
		default: break;
		}
		wait = w > wait ? w : wait;
		if (wait < 1)
			wait = 1;
	}
	if (wait > 0)
		for (i = 0; i < d->nrate; i++)
			if (taken & ((uint64_t)1 << i))
				ratelimit_give(is->rl, agent, d->rate[i].rule_id);
	return wait > 0 ? (unsigned)ceil(wait) : 0;
}

/* Sign and answer with the key set ks, held for the whole call: the token
 * and its audit record name the same kid even if a rotation swaps the set
 * meanwhile. */
static int issue_with(issuer *is, const keyset *ks, http_resp *resp, const ask *a,
                      const policy_decision *d, int may_retry)
{
	/* The smallest of the granting rules' ttls, a rule without one
	 * counting as the configured default; never above the cap. */
	unsigned ttl = d->ttl != 0 && !(d->ttl_default && is->cfg.token_ttl < d->ttl)
	                   ? d->ttl
	                   : is->cfg.token_ttl;
	const char *groups[STORE_GROUPS_MAX];
	mint_req mr = {.iss = is->cfg.issuer,
	               .sub = a->who->agent.id,
	               .aud = a->audience,
	               .scope = d->scope,
	               .groups = groups,
	               .ngroups = a->who->agent.ngroups};
	char *lim = policy_decision_lim_json(d);
	wjson_w rec, body;
	writ_err e = {0};
	mint_out mo;
	writ_rc rc;
	size_t i;

	mr.ttl = ttl < is->cfg.token_ttl_max ? ttl : is->cfg.token_ttl_max;
	for (i = 0; i < mr.ngroups; i++)
		groups[i] = a->who->agent.groups[i];
	mr.lim = lim;
	if (d->nlim > 0 && lim == NULL) {
		/* A token without the limits its rule sets must not leave. */
		deny(is, resp, a, 500, "server_error", "out of memory", NULL,
		     "cannot write the lim claim");
		return 0;
	}
	rc = mint_token(is->p11, ks->signing, &mr, &mo, &e);
	free(lim);
	/* The key left the HSM after this set was taken (`writ key revoke`
	 * destroys it once the store names its replacement): the caller
	 * rebuilds the set and tries once more, nothing sent yet. */
	if (rc == WRIT_ERR_NOT_FOUND && may_retry)
		return 1;
	if (rc != WRIT_OK) {
		/* Only the token's failure counts against it: bad claims are a
		 * bug here, not an outage to report on /healthz. */
		if (rc != WRIT_ERR_ARG) {
			atomic_store(&is->hsm_ok, 0);
			metrics_hsm_error();
		}
		deny(is, resp, a, 503, "temporarily_unavailable", "signing is unavailable", NULL,
		     e.msg);
		return 0;
	}
	atomic_store(&is->hsm_ok, 1);
	audit_base(&rec, "token_issued", a);
	wjw_str(&rec, "scope_granted", d->scope);
	wjw_str(&rec, "jti", mo.jti);
	wjw_str(&rec, "kid", writ_jwk_kid(ks->signing->jwk));
	wjw_int(&rec, "exp", mo.exp);
	wjw_init(&body);
	wjw_str(&body, "access_token", mo.token);
	wjw_str(&body, "issued_token_type", TT_ACCESS);
	wjw_str(&body, "token_type", "Bearer");
	wjw_int(&body, "expires_in", (int64_t)mr.ttl);
	wjw_str(&body, "scope", d->scope);
	OPENSSL_cleanse(mo.token, strlen(mo.token));
	free(mo.token);
	resp->status = 200;
	resp->body = wjw_finish(&body, NULL);
	if (resp->body == NULL) {
		/* The token never leaves: account for the refusal instead. */
		wjw_discard(&rec);
		deny(is, resp, a, 500, "server_error", "out of memory", NULL, NULL);
		return 0;
	}
	/* Durable before the token leaves: a token nobody can account for is
	 * worse than no token. */
	finish(is, resp, a, &rec, 1, DENY_UNAVAILABLE);
	return 0;
}

/*
 * Sign with the key set in force, rebuilt first when the keys' change
 * signal moved: `writ key revoke` of the active key commits (and signals)
 * before it destroys the key, so a request that starts after the commit
 * signs with the replacement, and one already signing when the key goes
 * rebuilds and tries once more. One fstat per request; the tick catches
 * changes made without the signal.
 */
static void issue(issuer *is, http_resp *resp, const ask *a, const policy_decision *d, store *st)
{
	static _Thread_local uint64_t keys_mark;
	keyset *ks;
	int retry;

	if (store_keys_signal(st, &keys_mark) == 1)
		issuer_keys_refresh(is, st);
	ks = keyset_get(&is->keys);
	if (ks == NULL || atomic_load(&is->signing_stale)) {
		deny(is, resp, a, 503, "temporarily_unavailable", "signing is unavailable", NULL,
		     ks == NULL ? "no signing key set"
		                : "the signing key is no longer active and the key set could "
		                  "not be rebuilt");
		keyset_put(&is->keys, ks);
		return;
	}
	retry = issue_with(is, ks, resp, a, d, 1);
	if (retry) {
		keyset_put(&is->keys, ks);
		issuer_keys_refresh(is, st);
		ks = keyset_get(&is->keys);
		if (ks == NULL || atomic_load(&is->signing_stale))
			deny(is, resp, a, 503, "temporarily_unavailable", "signing is unavailable",
			     NULL, "the signing key is gone from the HSM");
		else
			(void)issue_with(is, ks, resp, a, d, 0);
	}
	keyset_put(&is->keys, ks);
}

static void decide(issuer *is, http_resp *resp, ask *a, store *st, const form *f)
{
	attest_result who;
	policy_decision d;
	const char *groups[STORE_GROUPS_MAX];
	policy_subject subj;
	refusal why = {0};
	writ_err e = {0};
	policy *pol = policy_slot_get(&is->policy);
	unsigned wait;
	size_t i;

	a->pol = pol;
	if (attest_check(is, st, form_get(f, "subject_token"), &who, &why) != 0) {
		if (who.agent.id[0] != '\0' && strcmp(why.event, "renewal_refused") == 0)
			a->who = &who; /* a known, verified agent that is refused */
		deny(is, resp, a, why.status, why.error, why.desc, why.event, why.detail);
		goto out;
	}
	a->who = &who;
	for (i = 0; i < who.agent.ngroups; i++)
		groups[i] = who.agent.groups[i];
	subj.agent = who.agent.id;
	subj.groups = groups;
	subj.ngroups = who.agent.ngroups;
	if (pol == NULL || policy_decide(pol, &subj, a->audience, a->scope, &d, &e) != WRIT_OK) {
		deny(is, resp, a, 400, "invalid_scope", "scope is malformed", NULL, e.msg);
		goto out;
	}
	a->dec = &d;
	if (d.outcome == POLICY_AUDIENCE_UNKNOWN) {
		deny(is, resp, a, 400, "invalid_target", "audience unknown or not allowed", NULL,
		     NULL);
		goto out;
	}
	if (d.outcome != POLICY_GRANTED) {
		deny(is, resp, a, 400, "invalid_scope", "policy grants none of the requested scope",
		     NULL, NULL);
		goto out;
	}
	wait = take_rate(is, who.agent.id, &d);
	if (wait != 0) {
		deny(is, resp, a, 429, "rate_limited", "too many token requests", NULL, NULL);
		resp->retry_after = wait;
		goto out;
	}
	issue(is, resp, a, &d, st);
out:
	store_agent_clear(&who.agent);
	policy_unref(pol);
}

void exchange_handle(issuer *is, const http_req *req, http_resp *resp)
{
	int announced = 1;
	ask a = {.hold = req->hold, .client = req->client, .announced = &announced};
	const char *why, *error;
	writ_err e = {0};
	store *st;
	form f;

	/* Every path below ends in one audit record (finish): announce it, so
	 * a sync that starts meanwhile waits for it (group commit). */
	audit_expect(is->audit);
	/* Latency counts from when the whole request was read (http.c). */
	a.t0 = req->t_read_ns != 0 ? req->t_read_ns : writ_mono_ns();
	if (form_parse(req->body != NULL ? req->body : "", req->body_len, &f, &e) != WRIT_OK) {
		deny(is, resp, &a, 400, "invalid_request", e.msg, NULL, NULL);
		goto out;
	}
	a.audience = form_get(&f, "audience");
	a.scope = form_get(&f, "scope");
	if (check_request(&f, &why, &error) != 0) {
		deny(is, resp, &a, 400, error, why, NULL, NULL);
		goto out;
	}
	st = issuer_store(is, &e);
	if (st == NULL) {
		deny(is, resp, &a, 503, "temporarily_unavailable",
		     "the agent registry is unavailable", NULL, e.msg);
		goto out;
	}
	decide(is, resp, &a, st, &f);
out:
	if (announced) /* no path should get here without finish(), but never leave it behind */
		audit_expect_done(is->audit);
	form_clear(&f);
}
