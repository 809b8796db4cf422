/*
 * attest.c - agent-key attestation (SPEC s.5; RFC 7523 s.3): a JWT the
 * agent signed with its registered key. The order of checks matters: the
 * signature is checked before anything about the agent is revealed, so
 * only the key holder learns that an agent is disabled or revoked.
 */
#include <string.h>
#include <time.h>

#include "issuer.h"
#include "writ_int.h"

#define ASSERTION_MAX_TTL 300 /* SPEC s.5: exp at most 5 minutes after iat */

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

int attest_check(issuer *is, store *st, const char *assertion, attest_result *out,
		 refusal *why)
{
	writ_verify_opts vo = {.aud = is->cfg.issuer, .leeway = is->cfg.leeway,
			       .max_ttl = ASSERTION_MAX_TTL, .require_sub = 1};
	const store_key *key;
	const json_t *v;
	writ_err e = {0};
	writ_jws j;
	writ_rc rc;
	int ret = -1;

	memset(out, 0, sizeof(*out));
	if (writ_jws_parse(assertion, strlen(assertion), &j, &e) != WRIT_OK)
		return refuse(why, "subject_token is not a valid JWT", "token_denied", &e);
	/* The claims are not trusted yet: sub only selects whose key to try. */
	v = json_object_get(j.payload, "sub");
	if (!json_is_string(v) || !store_id_valid(json_string_value(v))) {
		refuse(why, "assertion has no valid sub", "token_denied", NULL);
		goto out;
	}
	rc = store_agent_get(st, json_string_value(v), &out->agent, &e);
	if (rc == WRIT_ERR_NOT_FOUND) {
		/* Same description as a bad signature: no agent enumeration. */
		refuse(why, "assertion not accepted for this agent", "token_denied", &e);
		goto out;
	}
	if (rc != WRIT_OK) {
		unavailable(why, &e);
		goto out;
	}
	key = store_agent_key(&out->agent, j.kid);
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
		refuse(why, rc == WRIT_ERR_EXPIRED ? "assertion expired"
			    : rc == WRIT_ERR_NOT_YET_VALID ? "assertion not yet valid"
			    : rc == WRIT_ERR_AUD ? "assertion audience is not this issuer"
			    : rc == WRIT_ERR_TYP ? "subject_token is not an agent assertion"
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
		       out->agent.status == STORE_REVOKED ? "agent is revoked" : "agent is disabled",
		       "renewal_refused", NULL);
		snprintf(why->detail, sizeof(why->detail), "agent %s",
			 store_status_name(out->agent.status));
		goto out;
	}
	rc = store_replay_check_and_insert(st, out->agent.id, out->jti, out->exp,
					   (int64_t)time(NULL), &e);
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
