/*
 * replayset.h - the assertion replay cache in memory (SPEC s.5: a jti is
 * refused while the assertion carrying it could still be valid).
 *
 * The issuer's default replay cache. Its durable record is the audit log:
 * an assertion counts as used once a response was sent for it, and no
 * response leaves before its audit record (which names the agent, the jti
 * and the assertion's exp) is fdatasync'ed. At start the issuer reloads
 * the set from the log's recent records (audit_scan_since), so a replay
 * is refused across restarts and crashes, power loss included. SQLite's
 * replay table (replay_cache = sqlite) remains for several issuers on one
 * host that must share the set.
 *
 * Entries are 96-bit digests of (agent, jti) under a per-process random
 * salt: fixed size, no allocation per entry, and an agent cannot aim jtis
 * at one bucket. Expired entries are reused in place and dropped when a
 * shard's table is rebuilt, so memory follows the live count, never the
 * history.
 */
#ifndef WRIT_REPLAYSET_H
#define WRIT_REPLAYSET_H

#include <stddef.h>
#include <stdint.h>

#include "writ/writ.h"

#define REPLAYSET_AGENT_MAX 128 /* = STORE_ID_MAX */
#define REPLAYSET_JTI_MAX   256 /* = STORE_JTI_MAX */

typedef struct replayset replayset;

/* At most max_live unexpired entries (beyond that, adds fail closed). */
WRIT_MUST_CHECK writ_rc replayset_new(size_t max_live, replayset **out, writ_err *err);
void replayset_free(replayset *rs);

/*
 * Remember (agent, jti) until `until` (seconds since the epoch) if it is
 * not remembered at `now`. WRIT_OK: first use, now recorded; WRIT_ERR_CLAIM:
 * already used; WRIT_ERR_UNAVAILABLE: the set is full (fail closed);
 * WRIT_ERR_ARG: agent or jti over its size cap.
 * Thread-safe.
 */
WRIT_MUST_CHECK writ_rc replayset_add(replayset *rs, const char *agent, const char *jti,
                                      int64_t until, int64_t now, writ_err *err);

/* Entries held, expired ones not yet reclaimed included (tests, metrics). */
size_t replayset_size(replayset *rs);

#endif
