/*
 * replay.h - the issuer's assertion replay cache (SPEC s.5), in one of two
 * places (config replay_cache):
 *
 *   memory (default): a set in this process (replayset.h), reloaded at
 *     start from the audit log, which holds every used assertion's agent,
 *     jti and exp durably before its response leaves. No disk or thread
 *     hand-off on the request path.
 *   sqlite: the store's replay table, shared by every issuer using the
 *     same database file. Concurrent requests hand their (agent, jti, exp)
 *     to one writer thread, which checks and records a whole batch in one
 *     SQLite transaction: one transaction per request would make every
 *     request queue on SQLite's write lock (and its busy-wait sleeps).
 */
#ifndef WRIT_REPLAY_H
#define WRIT_REPLAY_H

#include <stdint.h>

#include "config.h"
#include "writ/writ.h"

/* Assertions live at most this long (SPEC s.5: exp - iat <= 5 minutes). */
#define ASSERTION_MAX_TTL 300
/* Unexpired entries the memory cache holds before refusing (fail closed):
 * 4 Mi, about 11,000 assertions/s sustained at the longest lifetime. */
#define REPLAY_MEMORY_MAX (4u << 20)

typedef struct replay replay;

/* Open the cache cfg names; for memory, load it from cfg's audit log
 * (which the caller has opened, so a torn tail is already cut). */
WRIT_MUST_CHECK writ_rc replay_start(const writ_config *cfg, replay **out, writ_err *err);
/* Check and record one assertion. WRIT_OK: first use; WRIT_ERR_CLAIM:
 * replayed; WRIT_ERR_UNAVAILABLE: the cache failed (fail closed).
 * Thread-safe. */
WRIT_MUST_CHECK writ_rc replay_check(replay *rp, const char *agent, const char *jti, int64_t exp,
                                     writ_err *err);
/* Entries loaded from the audit log at start (memory mode). */
uint64_t replay_loaded(const replay *rp);
/* Stop (after the batch in hand, for sqlite) and free. */
void replay_stop(replay *rp);

#endif
