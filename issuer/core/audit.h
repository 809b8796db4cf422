/*
 * audit.h - writ's audit log (SPEC s.7): one JSON line per decision,
 * hash-chained, with checkpoints signed by the issuer's key.
 *
 * Format (JSON Lines, UTF-8, each line at most AUDIT_LINE_MAX bytes
 * including its '\n'):
 *
 *   {"seq":N,"ts":"2025-01-02T03:04:05.678Z","event":"...",<caller members>,"prev":"<hex>"}
 *
 * seq counts 1, 2, 3, ... with no gap; ts is RFC 3339 UTC with
 * milliseconds; prev is the lowercase hex SHA-256 of the previous line's
 * exact bytes without its '\n' (64 zeros for seq 1, the "log_opened"
 * genesis record). Every checkpoint_every records (and every
 * checkpoint_secs seconds, and on close) the writer appends
 *
 *   {"seq":N,"ts":...,"event":"checkpoint","head":"<hex>","count":N-1,
 *    "kid":"<kid>","alg":"ES256","sig":"<base64url>","prev":"<hex>"}
 *
 * where head = prev = SHA-256 of the line before it and sig is a JWS-form
 * signature (raw r||s for ECDSA) over the ASCII string
 * "writ-audit-checkpoint:<seq>:<head>", made by the caller's signer (the
 * issuer signs in the HSM; this module never sees pkcs11).
 *
 * Members a caller should use so that `writ audit query` finds them:
 * "agent", "groups", "audience", "scope_requested", "scope_granted", "jti",
 * "kid", "attestation" ({"kind","jkt"}), "client", "rule", "policy_hash",
 * "act", "reason". Secrets (PINs, assertions, tokens) never go in a record.
 */
#ifndef WRIT_AUDIT_H
#define WRIT_AUDIT_H

#include <jansson.h>
#include <stdint.h>
#include <sys/types.h>

#include "writ/writ.h"

#define AUDIT_LINE_MAX       (16 * 1024) /* bytes per line, '\n' included */
#define AUDIT_SIG_MAX        1024        /* signature buffer handed to the signer */
#define AUDIT_HASH_HEX       64          /* lowercase hex SHA-256 */
#define AUDIT_TS_LEN         24          /* "YYYY-MM-DDTHH:MM:SS.mmmZ" */
#define AUDIT_CHECKPOINT_CTX "writ-audit-checkpoint:"

/*
 * Sign msg (len bytes) for a checkpoint. On entry *siglen is the capacity
 * of sig (AUDIT_SIG_MAX); on success the callback fills kid (NUL-terminated
 * key id as published in the JWK Set), *alg, sig (JWS form) and *siglen.
 * Called with the log's lock held: it must not call back into the log.
 */
typedef writ_rc (*audit_sign_fn)(void *arg, const unsigned char *msg, size_t len,
                                 char kid[WRIT_KID_MAX + 1], writ_alg *alg, unsigned char *sig,
                                 size_t *siglen, writ_err *err);

typedef struct audit_opts {
	audit_sign_fn sign;        /* NULL: no checkpoints are written */
	void *sign_arg;            /* passed to sign */
	unsigned checkpoint_every; /* records between checkpoints; 0: 1000 */
	unsigned checkpoint_secs;  /* also once this old (checked on append and by
	                              audit_checkpoint); 0: 60 */
	/* Fault injection for tests; NULL means the real system call. */
	int (*sync_fn)(int fd);
	ssize_t (*write_fn)(int fd, const void *buf, size_t n);
	int (*truncate_fn)(int fd, off_t len);
} audit_opts;

typedef struct audit_log audit_log;

/*
 * Open (or create, mode 0600, O_NOFOLLOW) the log at path and take an
 * exclusive flock on it, so two writers cannot fork the chain. A new file
 * gets the genesis record. An existing file continues from its last line,
 * which is found by reading at most 2 * AUDIT_LINE_MAX bytes from its end.
 * A torn last line (no '\n', or not a valid record: a crash mid-write) is
 * truncated away and a "log_recovered" record with "dropped_bytes" is
 * appended. A bad line before the last one is not a crash: audit_open
 * refuses (WRIT_ERR_MALFORMED naming the line) so an operator looks.
 * opts may be NULL (no signer). *out is the caller's (audit_close).
 */
WRIT_MUST_CHECK writ_rc audit_open(const char *path, const audit_opts *opts, audit_log **out,
                                   writ_err *err);

/*
 * Append one record: rec (borrowed, not modified) is a JSON object with a
 * non-empty string "event" and no member named seq, ts, prev or sig; the
 * events checkpoint, log_opened and log_recovered are the log's own.
 * Returns WRIT_OK only once the line is written and fdatasync'd: a token
 * may be handed out after that and not before. Concurrent callers share
 * one fdatasync (group commit). If the write or the sync fails (ENOSPC,
 * EIO) the log truncates back to its last good line, enters the failed
 * state and returns WRIT_ERR_UNAVAILABLE naming the errno; every later
 * append first tries to resume (one cheap write), so freeing space is
 * enough to recover. WRIT_ERR_ARG / WRIT_ERR_TOO_LARGE for a bad record.
 * Thread-safe.
 */
WRIT_MUST_CHECK writ_rc audit_append(audit_log *log, const json_t *rec, writ_err *err);

/* Called once per asynchronous append, from the log's sync thread: rc is
 * WRIT_OK when the line is durable, WRIT_ERR_UNAVAILABLE when its sync
 * failed (the line is gone, as after audit_append's failure). Must not
 * call into the log. */
typedef void (*audit_done_fn)(void *arg, writ_rc rc);

/*
 * audit_append without the wait, and with the record as text (len bytes,
 * compact JSON as wjson_w or wjson_dump write it, "event" its first
 * member; the issuer builds one per request and a tree would cost it
 * three dozen allocations): returns once the line is written (its seq
 * order fixed), and done(arg, ...) says later whether it became durable.
 * What the record accounts for (a token) may leave only after
 * done(arg, WRIT_OK). On an error return the line was not written and
 * done is never called. Thread-safe.
 */
WRIT_MUST_CHECK writ_rc audit_append_async(audit_log *log, const char *rec, size_t len,
                                           audit_done_fn done, void *arg, writ_err *err);

/*
 * Announce a record that is on its way (a request being decided), and
 * withdraw the announcement right before appending it (or when it will
 * not come). While any are announced, the sync thread waits a little for
 * them before it syncs, so concurrent requests share one fdatasync; with
 * none it syncs at once. An announcement never withdrawn costs only that
 * wait. Thread-safe, lock-free.
 */
void audit_expect(audit_log *log);
void audit_expect_done(audit_log *log);

/* Write a checkpoint now if records were appended since the last one and
 * a signer is set (for the issuer's timer), and wait until it is durable.
 * Thread-safe. */
WRIT_MUST_CHECK writ_rc audit_checkpoint(audit_log *log, writ_err *err);

/* In the failed state, try once to resume now (as the next append would:
 * a "log_recovered" record, waited on until durable), so health can come
 * back without traffic; WRIT_OK when the log is (again) usable. For the
 * issuer's timer. Thread-safe. */
WRIT_MUST_CHECK writ_rc audit_try_resume(audit_log *log, writ_err *err);

/* 1 while appends can succeed, 0 in the failed state (for /healthz and
 * 503s). Thread-safe. */
int audit_healthy(audit_log *log);

/* Upper bounds (microseconds) of the fdatasync duration histogram: the
 * disk's latency under the log, which bounds every token's (an operator
 * watches it as etcd's operators watch wal_fsync_duration_seconds). */
#define AUDIT_SYNC_BUCKETS 9
extern const int64_t audit_sync_bounds_us[AUDIT_SYNC_BUCKETS];

typedef struct audit_stats {
	uint64_t appends;                              /* records appended by callers */
	uint64_t syncs;                                /* fdatasync calls */
	uint64_t sync_buckets[AUDIT_SYNC_BUCKETS + 1]; /* syncs by duration (+Inf last) */
	uint64_t sync_ns;                              /* their total duration */
	uint64_t delays;      /* syncs that first waited for announced records */
	uint64_t busy_delays; /* of those, the longer waits of a busy log */
	uint64_t checkpoints; /* checkpoints written */
	uint64_t sign_failures;
	uint64_t failures; /* appends refused for a write/sync error */
	uint64_t last_seq; /* seq of the last line written */
	int healthy;
	char last_error[200]; /* why the log failed last, "" if never */
} audit_stats;

/* A snapshot of the counters. Thread-safe. */
void audit_get_stats(audit_log *log, audit_stats *st);

/* Final checkpoint (if a signer is set and records are unsigned), then
 * close and free. Accepts NULL. Returns the checkpoint's result. Not to be
 * called while other threads still append. */
writ_rc audit_close(audit_log *log, writ_err *err);

/* ---- verification and query (audit_verify.c): audit files are outside
 * input, parsed strictly with bounded lines ---- */

typedef enum audit_problem {
	AUDIT_OK = 0,
	AUDIT_MALFORMED,      /* not a record: bad JSON, too long, bad fields */
	AUDIT_EDITED,         /* a line's hash is not the next line's prev */
	AUDIT_DROPPED,        /* seq gap: records removed */
	AUDIT_REORDERED,      /* seq goes backwards or repeats */
	AUDIT_TRUNCATED,      /* torn last line */
	AUDIT_BAD_CHECKPOINT, /* checkpoint head/count/fields wrong */
	AUDIT_BAD_SIGNATURE,  /* checkpoint signature does not verify */
	AUDIT_UNKNOWN_KID,    /* checkpoint kid not in the JWK Set */
	AUDIT_IO,             /* the file could not be read */
	AUDIT_UNSIGNED_RUN,   /* more records in a row without a checkpoint than the
	                         issuer leaves: checkpoints removed (audit_check_signing) */
	AUDIT_UNSIGNED_STOP,  /* ends with issuer_stopped and no checkpoint after it */
} audit_problem;

/* "edited record" ...; static, never NULL. */
const char *audit_problem_name(audit_problem p);

typedef struct audit_report {
	audit_problem problem; /* the first problem found, AUDIT_OK if none */
	uint64_t line;         /* 1-based line of that problem */
	char detail[256];      /* one line saying what is wrong there */
	uint64_t lines;        /* complete lines read */
	uint64_t records;      /* records, checkpoints included */
	uint64_t checkpoints;
	uint64_t last_seq;
	uint64_t unsigned_tail;         /* records after the last checkpoint (not an error) */
	uint64_t longest_unsigned;      /* the most records in a row without a checkpoint */
	uint64_t longest_unsigned_line; /* line of the last record of that run */
	int stopped_unsigned;           /* the last record is issuer_stopped, no checkpoint
	                                   after it: a clean stop writes one */
	int sigs_checked;               /* 1: checkpoint signatures verified with keys */
	char head[AUDIT_HASH_HEX + 1];  /* hash of the last good line */
} audit_report;

/*
 * Stream the file (or buffer) and check every line: a strict JSON object
 * (no duplicate members), seq from 1 without gap, prev = SHA-256 of the
 * line before, ts well-formed, each checkpoint's head and count, and, if
 * keys is not NULL, its signature with the key named by kid (retired keys
 * must still be in the set). Stops at the first problem. Returns WRIT_OK
 * when the check ran (rep says what it found, problem included), or an
 * error when it could not run (file unreadable: WRIT_ERR_IO). Thread-safe.
 */
WRIT_MUST_CHECK writ_rc audit_verify_file(const char *path, const writ_jwks *keys,
                                          audit_report *rep, writ_err *err);
WRIT_MUST_CHECK writ_rc audit_verify_buf(const char *buf, size_t len, const writ_jwks *keys,
                                         audit_report *rep, writ_err *err);

/*
 * The chain alone cannot show records cut out together with the checkpoints
 * after them (anyone can recompute SHA-256): the checkpoints' spacing can.
 * An issuer signs after every `every` records (checkpoint_every), after a
 * restart that found the log's tail unsigned at its first append, and when
 * it stops cleanly. On a report without a problem, set AUDIT_UNSIGNED_RUN
 * when a run of unsigned records is longer than every plus a small slack
 * (a restart's own records), and AUDIT_UNSIGNED_STOP when the log ends with
 * issuer_stopped unsigned. Either is also what a long HSM outage leaves:
 * the records are then truly unsigned, and the detail says both. Cutting
 * the log back to a checkpoint is not detectable from the file alone.
 */
void audit_check_signing(audit_report *rep, uint64_t every);

typedef struct audit_filter {
	const char *agent;    /* "agent" equals, or NULL */
	const char *jti;      /* "jti" equals, or NULL */
	const char *audience; /* "audience" equals, or NULL */
	const char *event;    /* "event" equals, or NULL */
	int64_t since_ms;     /* ts at or after (ms since the epoch), 0: any */
} audit_filter;

/* Called for each matching record: line (without '\n', not NUL-terminated)
 * and its parsed object, both valid only during the call. Return non-zero
 * to stop. */
typedef int (*audit_query_fn)(void *arg, const char *line, size_t len, const json_t *rec);

/*
 * Stream the file and call fn for each record matching every set field of
 * f (f may be NULL). Does not check the chain (audit_verify_file does);
 * lines that are not records are counted in *skipped (may be NULL) and
 * passed over. WRIT_ERR_IO if the file cannot be read.
 */
WRIT_MUST_CHECK writ_rc audit_query_file(const char *path, const audit_filter *f, audit_query_fn fn,
                                         void *arg, uint64_t *skipped, writ_err *err);

/*
 * Call fn for each record from about since_ms to the end of the file,
 * without reading what comes before: the start is found by bisection on
 * the records' "ts", so the cost follows the records since then, not the
 * log's size. Records are in write order and ts follows the wall clock, so
 * a clock stepped back can put a few records after since_ms before it:
 * callers ask from a margin earlier. Lines that are not records (a torn
 * tail) are passed over. WRIT_ERR_IO if the file cannot be read.
 */
WRIT_MUST_CHECK writ_rc audit_scan_since(const char *path, int64_t since_ms, audit_query_fn fn,
                                         void *arg, writ_err *err);

/* "YYYY-MM-DDTHH:MM:SS.mmmZ" (exactly AUDIT_TS_LEN chars) <-> ms since the
 * epoch. audit_ts_parse returns 0, or -1 for anything else. */
void audit_ts_format(int64_t ms, char out[AUDIT_TS_LEN + 1]);
int audit_ts_parse(const char *s, size_t len, int64_t *ms);

#endif
