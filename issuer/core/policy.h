/*
 * policy.h - who may have which token (SPEC s.6): a JSON policy file,
 * loaded once, immutable, shared by every request thread.
 *
 *   {"version": 1, "rules": [{"id": "orders-read", "effect": "allow",
 *     "subjects": ["group:analysts"], "audiences": ["orders-db"],
 *     "actions": ["db:read"], "ttl": 300, "rate": "60/min",
 *     "lim": {"rps": 5}, "description": "..."}]}
 *
 * Semantics. Default deny. A rule matches a request when one of its
 * subject patterns matches the agent ("group:NAME" patterns match when any
 * of the agent's groups matches NAME, any other pattern matches the agent
 * id) and one of its audience patterns matches the audience. When no allow
 * rule matches both, the audience is unknown or not allowed to this agent
 * (invalid_target); when one does but grants nothing, invalid_scope. Patterns are
 * fnmatch(3) globs ('*', '?', '[...]'), case-sensitive, no FNM_PATHNAME.
 * A requested action is granted when a matching allow rule has an action
 * pattern that matches it and no matching deny rule does: deny beats
 * allow whatever the order of the rules. Only requested actions are ever
 * granted; an allow pattern "db:*" never adds an action nobody asked for.
 *
 * Every matching allow rule that covers at least one granted action
 * "grants", and all of them apply, so the result does not depend on the
 * order of rules (only the audit's rule id does): the TTL is the smallest
 * ttl among them (a rule without one counts as the configured default),
 * each lim key the smallest value among them, and every one of them that
 * has a rate must let the request through.
 *
 * Thread safety: a policy never changes after policy_parse returns, so any
 * number of threads may call policy_decide on it at once. Its lifetime is
 * reference counted (atomics): the issuer holds one reference in a
 * policy_slot, each request takes its own, and a SIGHUP reload swaps the
 * slot without disturbing requests still using the old policy.
 */
#ifndef WRIT_POLICY_H
#define WRIT_POLICY_H

#include <pthread.h>
#include <stddef.h>
#include <stdio.h>

#include "writ/writ.h"

/* Caps on the file; a policy over any of them is refused. */
#define POLICY_MAX_BYTES       (1024 * 1024)
#define POLICY_MAX_RULES       10000
#define POLICY_MAX_PATTERNS    256 /* per subjects / audiences / actions list */
#define POLICY_PATTERN_MAX     256 /* bytes per pattern */
#define POLICY_ID_MAX          64  /* rule id: [A-Za-z0-9_.:-]{1,64} */
#define POLICY_DESCRIPTION_MAX 1024
#define POLICY_TTL_MAX         WRIT_TTL_HARD_CAP
#define POLICY_RATE_MAX        1000000 /* N in "N/sec|min|hour" */
#define POLICY_LIM_KEY_MAX     32      /* lim member names: [A-Za-z0-9_]{1,32} */
#define POLICY_LIM_MAX         16      /* distinct lim names in one policy */
#define POLICY_LIM_VALUE_MAX   1000000000

/* Caps on a request's scope (RFC 6749 s.3.3 scope-tokens, SP-separated). */
#define POLICY_MAX_ACTIONS 64
#define POLICY_ACTION_MAX  128
#define POLICY_SCOPE_MAX   (POLICY_MAX_ACTIONS * (POLICY_ACTION_MAX + 1))
/* At most this many rate-limited rules may grant one request. */
#define POLICY_MAX_RATES 64
/* Caps on who asks: agent id, audience and group names, and groups. */
#define POLICY_NAME_MAX   256
#define POLICY_MAX_GROUPS 256

typedef struct policy policy;

/*
 * Parse a policy from buf (len bytes, need not be NUL-terminated). `name`
 * (the file name) starts every message: "policy.json: rules[2] (id \"x\"):
 * unknown field \"ttll\"". Strict: duplicate JSON members, unknown fields,
 * wrong types, values out of range, duplicate rule ids and anything over
 * the caps above are refused with WRIT_ERR_CONFIG (or WRIT_ERR_TOO_LARGE
 * for the byte cap, WRIT_ERR_MALFORMED for invalid JSON, WRIT_ERR_NOMEM).
 * On success *out holds one reference, owned by the caller (policy_unref);
 * on failure *out is NULL. Thread-safe.
 */
WRIT_MUST_CHECK writ_rc policy_parse(const char *buf, size_t len, const char *name, policy **out,
                                     writ_err *err);

/* Read path (regular file, at most POLICY_MAX_BYTES) and policy_parse it.
 * WRIT_ERR_IO if it cannot be read. */
WRIT_MUST_CHECK writ_rc policy_load(const char *path, policy **out, writ_err *err);

/* Take another reference; returns p. NULL is returned unchanged. */
policy *policy_ref(policy *p);
/* Drop a reference; the last one frees the policy. Accepts NULL. */
void policy_unref(policy *p);
/* The same as policy_unref, for the usual _free spelling. */
void policy_free(policy *p);

/* Lowercase hex SHA-256 of the file's bytes (64 chars), for the audit log.
 * Borrowed, valid while the caller holds a reference. */
const char *policy_hash(const policy *p);
/* The name given to policy_parse / the path given to policy_load. */
const char *policy_name(const policy *p);
size_t policy_rule_count(const policy *p);
/* The description of the rule with this id; NULL if it has none or there
 * is no such rule. Borrowed, valid while the caller holds a reference. */
const char *policy_rule_description(const policy *p, const char *id);

/* ---- decisions ------------------------------------------------------- */

/* Who asks. Borrowed by policy_decide for the duration of the call. */
typedef struct policy_subject {
	const char *agent;         /* the agent id (never matched by "group:") */
	const char *const *groups; /* the agent's groups, may be NULL if ngroups is 0 */
	size_t ngroups;
} policy_subject;

typedef enum policy_outcome {
	POLICY_GRANTED = 1,      /* at least one action granted: issue a token */
	POLICY_NOTHING_GRANTED,  /* audience known, nothing granted: invalid_scope */
	POLICY_AUDIENCE_UNKNOWN, /* no allow rule for this agent names it: invalid_target */
} policy_outcome;

typedef enum policy_verdict {
	POLICY_NO_RULE = 0, /* no matching allow rule covers it: default deny */
	POLICY_ALLOWED,
	POLICY_DENIED, /* a matching deny rule covers it, allowed or not */
} policy_verdict;

/* Rule ids below are borrowed from the policy: valid while the caller
 * holds a reference to the policy it decided with. */
typedef struct policy_action {
	char name[POLICY_ACTION_MAX + 1];
	policy_verdict verdict;
	const char *allowed_by; /* first matching allow rule covering it, or NULL */
	const char *denied_by;  /* first matching deny rule covering it, or NULL */
} policy_action;

typedef struct policy_rate {
	const char *rule_id;
	unsigned n;        /* N tokens ... */
	unsigned period_s; /* ... per period_s seconds (1, 60 or 3600) */
} policy_rate;

typedef struct policy_lim {
	const char *name; /* e.g. "rps" */
	unsigned value;
} policy_lim;

/*
 * A decision: fixed-size, so policy_decide allocates nothing. About 19 KiB;
 * fine on a request thread's stack.
 */
typedef struct policy_decision {
	policy_outcome outcome;
	size_t naction; /* requested actions, duplicates collapsed, in order */
	policy_action action[POLICY_MAX_ACTIONS];
	char scope[POLICY_SCOPE_MAX + 1]; /* granted actions, SP-separated, in request order */
	const char *rule_id; /* first granting allow rule in file order (audit), or NULL */
	unsigned ttl;        /* min ttl of the granting rules; 0 if none sets one */
	int ttl_default;     /* a granting rule sets no ttl: the default bounds it too */
	size_t nlim;
	policy_lim lim[POLICY_LIM_MAX]; /* the token's "lim" claim: min per name */
	size_t nrate;
	policy_rate rate[POLICY_MAX_RATES]; /* granting rules with a rate, file order */
} policy_decision;

/*
 * Decide what `subject` may have for `audience` out of `scope` (the
 * request's space-separated actions). On WRIT_OK *out holds the decision,
 * whatever its outcome; the issuer answers POLICY_NOTHING_GRANTED with
 * invalid_scope and POLICY_AUDIENCE_UNKNOWN with invalid_target, and on
 * POLICY_GRANTED uses min(out->ttl if non-zero, the configured default if
 * out->ttl is 0 or out->ttl_default, config cap)
 * and takes a token from every out->rate bucket (ratelimit.h).
 *
 * Returns WRIT_ERR_MALFORMED when scope is not RFC 6749 s.3.3 scope-tokens
 * separated by single spaces, has more than POLICY_MAX_ACTIONS actions, an
 * action over POLICY_ACTION_MAX bytes, or a glob character (* ? [ ]) that
 * a target could read as a wildcard (invalid_scope); WRIT_ERR_ARG when an
 * argument is NULL, the agent id, audience or a group is empty, longer than
 * POLICY_NAME_MAX or not printable ASCII without spaces, or there are more
 * than POLICY_MAX_GROUPS groups; WRIT_ERR_TOO_LARGE when more than POLICY_MAX_RATES rate-limited
 * rules grant (fail closed). On error out->outcome is POLICY_NOTHING_GRANTED
 * and out->scope is empty. Thread-safe; allocates nothing.
 */
WRIT_MUST_CHECK writ_rc policy_decide(const policy *p, const policy_subject *subject,
                                      const char *audience, const char *scope, policy_decision *out,
                                      writ_err *err);

/* "granted", "nothing_granted", "audience_unknown". */
const char *policy_outcome_name(policy_outcome o);
/* "allowed", "denied", "no_rule". */
const char *policy_verdict_name(policy_verdict v);

/* Human-readable account of d, one action per line, then the granted
 * scope, ttl, lim, rates and the deciding rule. */
void policy_decision_explain(const policy_decision *d, FILE *f);

/* The decision as a compact JSON object (outcome, actions with verdict and
 * rules, scope, rule, ttl, lim, rates). Caller frees with free(); NULL if
 * out of memory. */
char *policy_decision_json(const policy_decision *d);

/* The "lim" claim for a token, e.g. {"rps":5}, or NULL when d has no lim.
 * Caller frees with free(). */
char *policy_decision_lim_json(const policy_decision *d);

/* ---- the issuer's current policy ------------------------------------- */

/*
 * A slot holding the policy in force. Reading it and taking a reference
 * happen under one lock, so a concurrent swap can never free the policy
 * between the two (the race a bare atomic pointer plus refcount has).
 */
typedef struct policy_slot {
	pthread_mutex_t mu;
	policy *cur;
} policy_slot;

/* cur starts NULL. policy_slot_destroy drops the slot's reference. */
void policy_slot_init(policy_slot *s);
void policy_slot_destroy(policy_slot *s);
/* A new reference to the policy in force (caller unrefs), or NULL. */
policy *policy_slot_get(policy_slot *s);
/* Put p (the caller's reference is handed over) in force and drop the
 * slot's reference to the old one; requests holding it finish with it. */
void policy_slot_set(policy_slot *s, policy *p);

#endif
