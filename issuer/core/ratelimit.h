/*
 * ratelimit.h - per agent, per rule token buckets for a policy rule's
 * "rate" (SPEC s.6: "60/min" is per agent per rule).
 *
 * A bucket holds at most N tokens and refills at N per period, so an idle
 * agent may burst N requests and then gets one every period/N seconds.
 * A request takes one token; an empty bucket refuses with the time until
 * the next token (the issuer's Retry-After, rounded up).
 *
 * Time is passed in (`now`, seconds, any monotonic origin, e.g.
 * CLOCK_MONOTONIC), so the limiter is a pure function of its inputs and is
 * tested without sleeping. Memory is bounded: at most max_buckets buckets.
 * When the table is full a bucket that has refilled completely (its agent
 * has been idle for a period) is forgotten, which changes nothing because
 * a new bucket starts full; if none has, the new key is refused
 * (RATELIMIT_FULL): an attacker who could create keys must not be able to
 * push out the buckets that limit someone else.
 *
 * Thread-safe: the table is split into shards, each with its own mutex,
 * so threads serving different agents rarely wait for each other.
 */
#ifndef WRIT_RATELIMIT_H
#define WRIT_RATELIMIT_H

#include <stddef.h>

#include "writ/writ.h"

#define RATELIMIT_DEFAULT_BUCKETS 100000
#define RATELIMIT_KEY_MAX         320 /* bytes of agent id + rule id */

typedef struct ratelimit ratelimit;

/*
 * What ratelimit_take decided. Not a writ_rc: being limited is an answer,
 * not a failure. RATELIMIT_LIMITED and RATELIMIT_FULL both mean "do not
 * issue": the issuer answers 429 with Retry-After.
 */
typedef enum ratelimit_result {
	RATELIMIT_OK = 0,  /* a token was taken */
	RATELIMIT_LIMITED, /* the bucket is empty; *retry_after > 0 */
	RATELIMIT_FULL,    /* no room for a new bucket: refused, fail closed;
	                      *retry_after is when an idle bucket may free up
	                      (at least 1 s) */
	RATELIMIT_INVALID, /* NULL or empty key, key over RATELIMIT_KEY_MAX,
	                      n_per_period or period_s of 0: refused */
} ratelimit_result;

/* A limiter holding at most max_buckets buckets (0: the default). Caller
 * frees with ratelimit_free. NULL if out of memory. */
ratelimit *ratelimit_new(size_t max_buckets);
/* Accepts NULL. No other thread may be using rl. */
void ratelimit_free(ratelimit *rl);

/*
 * Take one token from the bucket of (agent, rule_id), which holds up to
 * n_per_period tokens and refills n_per_period every period_s seconds. A
 * bucket is created full on first use; if a reloaded policy changed the
 * rule's rate, the bucket takes the new rate and keeps no more than the
 * new capacity. If time goes backwards the bucket just does not refill.
 * On a refusal *retry_after (if not NULL) receives the seconds until a
 * token is available; on RATELIMIT_OK it is set to 0. Thread-safe.
 * agent and rule_id are copied.
 */
WRIT_MUST_CHECK ratelimit_result ratelimit_take(ratelimit *rl, const char *agent,
                                                const char *rule_id, unsigned n_per_period,
                                                unsigned period_s, double now, double *retry_after);

/*
 * Put back the token a ratelimit_take of (agent, rule_id) took, when the
 * request it was for is refused by another rule's bucket: a request takes
 * from all its buckets or from none. Never above the bucket's capacity; a
 * bucket that is gone is left alone. Thread-safe.
 */
void ratelimit_give(ratelimit *rl, const char *agent, const char *rule_id);

/* Buckets currently held (for /metrics and tests). Thread-safe. */
size_t ratelimit_count(ratelimit *rl);

/* "ok", "limited", "full", "invalid". */
const char *ratelimit_result_name(ratelimit_result r);

#endif
