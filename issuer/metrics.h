/*
 * metrics.h - the issuer's Prometheus counters (GET /metrics). Lock-free:
 * every update is one relaxed atomic add, so the hot path pays nothing.
 */
#ifndef WRIT_METRICS_H
#define WRIT_METRICS_H

#include <stddef.h>

#include "audit.h"

typedef enum metric_deny {
	DENY_INVALID_REQUEST,
	DENY_UNSUPPORTED_GRANT,
	DENY_INVALID_GRANT,
	DENY_INVALID_SCOPE,
	DENY_INVALID_TARGET,
	DENY_RATE_LIMITED,
	DENY_UNAVAILABLE,
	DENY__COUNT
} metric_deny;

void metrics_issued(void);
void metrics_denied(metric_deny why);
void metrics_hsm_error(void);
void metrics_latency(double seconds);
/* Render the exposition text; key ages come from the caller. Caller frees. */
typedef struct metrics_key {
	const char *kid, *alg;
	const char *state; /* pending, active, retired */
	double age_seconds;
} metrics_key;
/* in_pool: token requests queued or running on the worker pool (http.h). */
char *metrics_render(const metrics_key *keys, size_t nkeys, const audit_stats *au, int hsm_ok,
                     int signing_ok, unsigned in_pool);

#endif
