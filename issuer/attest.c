/*
 * attest.c - agent-key attestation (SPEC s.5; RFC 7523 s.3): a JWT the
 * agent signed with its registered key. The order of checks matters: the
 * signature is checked before anything about the agent is revealed, so
 * only the key holder learns that an agent is disabled or revoked.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "issuer.h"
#include "replay.h"
#include "writ_int.h"

#define AGENT_CACHE 32

/* How long a worker trusts the agents' change signal alone. */
#define AGENT_RECHECK_NS (250 * 1000000LL)

/*
 * Parsing an agent's registered keys (point validation, thumbprint) costs
 * about as much as verifying the assertion, so each worker thread keeps
 * the agents it saw, parsed, and throws them all away when the store's
 * agent generation moves (any add, status change or key change, by any
 * process): a revocation still takes effect on the next request.
 *
 * Reading the generation is a SQLite read transaction, whose file locks
 * were ~4% of the issuer's CPU. So it is read only when the store's change
 * signal moved (every writ writer of agents appends to it after its
 * commit: `writ agent revoke` has signalled before it returns), and at
 * least every AGENT_RECHECK_NS anyway, for changes made some other way.
 */
typedef struct agent_cache {
	uint64_t gen;
	uint64_t mark;      /* the signal's size at the last generation read */
	int64_t checked_ns; /* when that read began; 0: read on the next call */
	size_t n, next;
	store_agent a[AGENT_CACHE];
} agent_cache;

static pthread_key_t cache_key;
static replay *replay_cache;

static void cache_free(void *p)
{
	agent_cache *c = p;
	size_t i;

	for (i = 0; i < c->n; i++)
		store_agent_clear(&c->a[i]);
	free(c);
}

writ_rc attest_init(issuer *is, writ_err *err)
{
	writ_rc rc;

	if (pthread_key_create(&cache_key, cache_free) != 0)
		return writ_err_set(err, WRIT_ERR_NOMEM, "out of memory");
	rc = replay_start(&is->cfg, &replay_cache, err);
	if (rc != WRIT_OK)
		return rc;
	if (is->cfg.replay_sqlite)
		fprintf(stderr, "writ-issuer: replay cache: sqlite (%s)\n", is->cfg.state_db);
	else
		fprintf(stderr,
		        "writ-issuer: replay cache: memory, %" PRIu64
		        " unexpired assertions reloaded from the audit log\n",
		        replay_loaded(replay_cache));
	return WRIT_OK;
}

void attest_shutdown(void)
{
	replay_stop(replay_cache);
	replay_cache = NULL;
}

/* The agent `id`, parsed, from this thread's cache or the store. The
 * result is borrowed until the next call on this thread. *moved: the
 * agents changed since this thread last looked. */
static writ_rc agent_lookup(store *st, const char *id, const store_agent **out, int *moved,
                            writ_err *e)
{
	agent_cache *c = pthread_getspecific(cache_key);
	uint64_t gen;
	size_t i, slot;
	int64_t now;
	writ_rc rc;

	if (c == NULL) {
		c = calloc(1, sizeof(*c));
		if (c == NULL || pthread_setspecific(cache_key, c) != 0) {
			free(c);
			return writ_err_set(e, WRIT_ERR_NOMEM, "out of memory");
		}
	}
	/* The signal first, then the generation: a commit between the two
	 * moves the signal again, and the next call reads again. */
	now = writ_mono_ns();
	if (store_agents_signal(st, &c->mark) != 0 || c->checked_ns == 0 ||
	    now - c->checked_ns >= AGENT_RECHECK_NS) {
		if ((rc = store_agents_generation(st, &gen, e)) != WRIT_OK) {
			c->checked_ns = 0;
			return rc;
		}
		c->checked_ns = now;
	} else {
		gen = c->gen;
	}
	*moved = gen != c->gen;
	if (gen != c->gen) {
		for (i = 0; i < c->n; i++)
			store_agent_clear(&c->a[i]);
		c->n = c->next = 0;
		c->gen = gen;
	}
	for (i = 0; i < c->n; i++)
		if (strcmp(c->a[i].id, id) == 0)
			return *out = &c->a[i], WRIT_OK;
	slot = c->n < AGENT_CACHE ? c->n : c->next++ % AGENT_CACHE;
	if (slot < c->n)
		store_agent_clear(&c->a[slot]);
	else
		c->n++;
	rc = store_agent_get(st, id, &c->a[slot], e);
	if (rc != WRIT_OK) {
		/* Keep the array dense: move the last entry into the hole. */
		c->a[slot] = c->a[--c->n];
		memset(&c->a[c->n], 0, sizeof(c->a[c->n]));
		return rc;
	}
	*out = &c->a[slot];
	return WRIT_OK;
}

static int refuse(refusal *why, const char *desc, const char *event, const writ_err *e)
{
	why->status = 400;
	why->error = "invalid_grant";
	why->desc = desc;
	why->event = event;
	snprintf(why->detail, sizeof(why->detail), "%s", e != NULL ? e->msg : desc);
	return -1;
}

static int unavailable(refusal *why, const writ_err *e)
{
	why->status = 503;
	why->error = "temporarily_unavailable";
	why->desc = "the agent registry is unavailable";
	why->event = "token_denied";
	snprintf(why->detail, sizeof(why->detail), "store: %.240s", e->msg);
	return -1;
}

int attest_check(issuer *is, store *st, const char *assertion, attest_result *out, refusal *why)
{
	writ_verify_opts vo = {.aud = is->cfg.issuer,
	                       .leeway = is->cfg.leeway,
	                       .max_ttl = ASSERTION_MAX_TTL,
	                       .require_sub = 1};
	const store_agent *agent = NULL;
	const store_key *key;
	const json_t *v;
	writ_err e = {0};
	writ_jws j;
	writ_rc rc;
	int ret = -1, moved = 0;

	memset(out, 0, sizeof(*out));
	if (writ_jws_parse(assertion, strlen(assertion), &j, &e) != WRIT_OK)
		return refuse(why, "subject_token is not a valid JWT", "token_denied", &e);
	/* The claims are not trusted yet: sub only selects whose key to try. */
	v = json_object_get(j.payload, "sub");
	if (!json_is_string(v) || !store_id_valid(json_string_value(v))) {
		refuse(why, "assertion has no valid sub", "token_denied", NULL);
		goto out;
	}
	rc = agent_lookup(st, json_string_value(v), &agent, &moved, &e);
	/* A CLI change this request is the first to see: its audit records
	 * go into the log before this request's decision does. Bounded: a
	 * mover that holds the outbox longer leaves the order to "at". */
	if (moved)
		issuer_outbox_move(is, 250);
	if (rc == WRIT_ERR_NOT_FOUND) {
		/* Same description as a bad signature: no agent enumeration. */
		refuse(why, "assertion not accepted for this agent", "token_denied", &e);
		goto out;
	}
	if (rc != WRIT_OK) {
		unavailable(why, &e);
		goto out;
	}
	/* A copy without the keys: the cache keeps owning those. */
	out->agent = *agent;
	out->agent.nkeys = 0;
	key = store_agent_key(agent, j.kid);
	if (key == NULL) {
		refuse(why, "assertion not accepted for this agent", "token_denied", NULL);
		snprintf(why->detail, sizeof(why->detail), "no registered key matches the kid");
		goto out;
	}
	vo.iss = out->agent.id; /* RFC 7523 s.3: iss = sub = the agent */
	rc = writ_verify_jws(key->jwk, &j, assertion, &vo, &e);
	if (rc == WRIT_ERR_SIGNATURE || rc == WRIT_ERR_ALG) {
		refuse(why, "assertion not accepted for this agent", "token_denied", &e);
		goto out;
	}
	if (rc != WRIT_OK) {
		refuse(why,
		       rc == WRIT_ERR_EXPIRED         ? "assertion expired"
		       : rc == WRIT_ERR_NOT_YET_VALID ? "assertion not yet valid"
		       : rc == WRIT_ERR_AUD           ? "assertion audience is not this issuer"
		       : rc == WRIT_ERR_TYP           ? "subject_token is not an agent assertion"
		                                      : "assertion claims invalid",
		       "token_denied", &e);
		goto out;
	}
	memcpy(out->key_kid, key->kid, sizeof(out->key_kid));
	v = json_object_get(j.payload, "jti");
	if (!json_is_string(v) || json_string_length(v) == 0 ||
	    json_string_length(v) > STORE_JTI_MAX) {
		refuse(why, "assertion needs a jti", "token_denied", NULL);
		goto out;
	}
	memcpy(out->jti, json_string_value(v), json_string_length(v) + 1);
	out->exp = (int64_t)json_integer_value(json_object_get(j.payload, "exp"));
	if (out->agent.status != STORE_ACTIVE) {
		refuse(why,
		       out->agent.status == STORE_REVOKED ? "agent is revoked"
		                                          : "agent is disabled",
		       "renewal_refused", NULL);
		snprintf(why->detail, sizeof(why->detail), "agent %s",
		         store_status_name(out->agent.status));
		goto out;
	}
	rc = replay_check(replay_cache, out->agent.id, out->jti, out->exp, &e);
	if (rc == WRIT_ERR_CLAIM) {
		refuse(why, "assertion already used", "token_denied", &e);
		goto out;
	}
	if (rc != WRIT_OK) {
		unavailable(why, &e);
		goto out;
	}
	ret = 0;
out:
	writ_jws_clear(&j);
	return ret;
}
