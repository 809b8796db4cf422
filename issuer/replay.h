/*
 * replay.h - group commit for the assertion replay cache: concurrent
 * requests hand their (agent, jti, exp) to one writer thread, which checks
 * and records a whole batch in one SQLite transaction. One request per
 * write transaction would make every request queue on SQLite's write lock
 * (and its millisecond busy-wait sleeps).
 */
#ifndef WRIT_REPLAY_H
#define WRIT_REPLAY_H

#include <stdint.h>

#include "writ/writ.h"

typedef struct replay_batcher replay_batcher;

/* Start the writer thread on the database at path. */
WRIT_MUST_CHECK writ_rc replay_start(const char *path, replay_batcher **out, writ_err *err);
/* Check and record one assertion; blocks until its batch committed.
 * WRIT_OK: first use; WRIT_ERR_CLAIM: replayed; WRIT_ERR_UNAVAILABLE:
 * the store failed (fail closed). Thread-safe. */
WRIT_MUST_CHECK writ_rc replay_check(replay_batcher *rb, const char *agent, const char *jti,
                                     int64_t exp, writ_err *err);
/* Stop the thread (after it finished the batch in hand) and free. */
void replay_stop(replay_batcher *rb);

#endif
