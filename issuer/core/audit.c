/*
 * audit.c - the append side of the audit log (see audit.h): hash chain,
 * signed checkpoints, group commit, and recovery from crashes and full
 * disks.
 *
 * The rule everything here serves (SPEC s.4): no token leaves the issuer
 * unless its audit line is durable. So audit_append returns only after
 * fdatasync, and any doubt about the file (a failed write, a failed sync)
 * turns into WRIT_ERR_UNAVAILABLE, never into a silent gap.
 *
 * Group commit: a caller writes its line under the mutex (so seq order is
 * file order) and queues a waiter. The log's sync thread notes the last
 * written line, drops the lock, fdatasyncs, and on return completes every
 * waiter up to that line: a blocking caller is woken (alone: a broadcast
 * would wake all of them on every sync, most only to sleep again), an
 * asynchronous one gets its callback. Lines written during a sync ride on
 * the next one, so N concurrent appends cost about one fdatasync per disk
 * round trip, not N, and an asynchronous caller (the issuer's HTTP
 * threads) never blocks on the disk at all.
 */
#include "audit.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "writ_int.h"

#define DEFAULT_EVERY 1000
#define DEFAULT_SECS  60
/* Commit delay: while callers have announced records that are on their
 * way (audit_expect: a request being decided), the sync thread waits for
 * them, up to GROUP_MIN lines or a time cap, before it syncs. With
 * nothing announced the line is synced at once, so a lone request never
 * waits.
 *
 * Each fdatasync costs about 150 us of CPU here (an ext4 journal commit
 * and, in a VM, device notifications), so its share per token is that
 * over the batch. The cap is GROUP_WAIT_NS, or GROUP_WAIT_BUSY_NS once
 * the previous sync covered GROUP_BUSY lines or more: a log that busy is
 * near saturation, where its clients wait in line anyway and a bigger
 * batch buys throughput. Measured at full load (bench/issuer.sh setup, 32
 * connections): a 0.5 ms cap gave batches of 5 and 405-436 us of issuer
 * CPU per token; 2 ms gives batches of 11-13 and 366-399 us (no
 * fdatasync at all: about 380 us). At half load a sync covers 1-2 lines,
 * and a request still being decided when another's line is appended is
 * waited for at most 0.5 ms, as before. */
const int64_t audit_sync_bounds_us[AUDIT_SYNC_BUCKETS] = {250,   500,   1000,   2500,   5000,
                                                          10000, 25000, 100000, 1000000};

#define GROUP_MIN          32
#define GROUP_BUSY         4
#define GROUP_WAIT_NS      500000
#define GROUP_WAIT_BUSY_NS 2000000
#define TAIL_WINDOW        (4 * AUDIT_LINE_MAX) /* read from the end at open */
/* {"seq":<20>,"ts":"<24>",  ...  ,"prev":"<64>"}\n */
#define LINE_OVERHEAD (8 + 20 + 7 + AUDIT_TS_LEN + 2 + 9 + AUDIT_HASH_HEX + 3)

enum { W_PENDING, W_DURABLE, W_FAILED };

/* One line waiting to be synced: on a blocking caller's stack (cv), or
 * on the heap for an asynchronous one (done). */
struct waiter {
	uint64_t seq;
	int state;
	pthread_cond_t cv;
	audit_done_fn done;
	void *done_arg;
	struct waiter *next;
};

struct audit_log {
	pthread_mutex_t mu;
	int fd;
	char *path;
	audit_opts o;

	/* The chain as written (page cache), under mu. */
	uint64_t next_seq;
	unsigned char prev[SHA256_DIGEST_LENGTH]; /* hash of the last line */
	off_t good_len;                           /* file ends at a line end here */

	/* The chain as known durable. A failed fdatasync truncates back here:
	 * after one, the kernel may have dropped the dirty pages, and a later
	 * fsync can report success for data that is gone. */
	uint64_t synced_seq;
	off_t synced_len;
	unsigned char synced_prev[SHA256_DIGEST_LENGTH];
	struct waiter *wait_head, *wait_tail;
	size_t npending;
	size_t last_batch;   /* lines the previous sync covered */
	atomic_int expected; /* records announced by audit_expect, not yet appended */
	int delaying;        /* the sync thread is in its commit delay */
	pthread_t syncer;
	pthread_cond_t work; /* the sync thread: lines are waiting */
	int syncer_started, stopping;

	int failed;       /* refuse until a resume succeeds */
	int needs_rescan; /* ftruncate failed too: re-read the tail */
	char fail_msg[200];

	uint64_t since_ckpt; /* records since the last checkpoint */
	int64_t last_ckpt_mono;
	int64_t last_sign_fail_ns; /* CLOCK_MONOTONIC; 0: none */
	audit_stats st;

	char line[AUDIT_LINE_MAX]; /* the line being written, under mu */
};

static const unsigned char zero_hash[SHA256_DIGEST_LENGTH];

static void hex32(const unsigned char h[SHA256_DIGEST_LENGTH], char out[AUDIT_HASH_HEX + 1])
{
	static const char digits[] = "0123456789abcdef";
	size_t i;

	for (i = 0; i < SHA256_DIGEST_LENGTH; i++) {
		out[2 * i] = digits[h[i] >> 4];
		out[2 * i + 1] = digits[h[i] & 15];
	}
	out[AUDIT_HASH_HEX] = '\0';
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t mono_secs(void)
{
	return writ_mono_ns() / 1000000000;
}

void audit_ts_format(int64_t ms, char out[AUDIT_TS_LEN + 1])
{
	time_t secs = (time_t)(ms / 1000);
	char buf[96];
	struct tm tm;

	if (ms < 0 || gmtime_r(&secs, &tm) == NULL || tm.tm_year + 1900 > 9999) {
		snprintf(out, AUDIT_TS_LEN + 1, "%s", "1970-01-01T00:00:00.000Z");
		return;
	}
	/* A roomy buffer keeps -Wformat-truncation quiet; the year is
	 * checked above, so the result is exactly AUDIT_TS_LEN. */
	snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
	         tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ms % 1000));
	memcpy(out, buf, AUDIT_TS_LEN);
	out[AUDIT_TS_LEN] = '\0';
}

static void fail_locked(audit_log *log, const char *what, int e)
{
	char buf[128];

	if (strerror_r(e, buf, sizeof(buf)) != 0)
		snprintf(buf, sizeof(buf), "errno %d", e);
	snprintf(log->fail_msg, sizeof(log->fail_msg), "audit log %s: %s failed: %s", log->path,
	         what, buf);
	log->failed = 1;
}

static ssize_t do_write(audit_log *log, const void *buf, size_t n)
{
	return log->o.write_fn != NULL ? log->o.write_fn(log->fd, buf, n) : write(log->fd, buf, n);
}

/* The whole line or -1 with errno: O_APPEND puts each piece at the end,
 * and only we write this file (flock), so pieces stay contiguous. */
static int write_all(audit_log *log, const char *buf, size_t n)
{
	ssize_t r;

	while (n > 0) {
		r = do_write(log, buf, n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			if (r == 0)
				errno = EIO;
			return -1;
		}
		buf += r;
		n -= (size_t)r;
	}
	return 0;
}

static int sync_fd(const audit_log *log)
{
	return log->o.sync_fn != NULL ? log->o.sync_fn(log->fd) : fdatasync(log->fd);
}

static int truncate_to(const audit_log *log, off_t len)
{
	int r;

	do
		r = log->o.truncate_fn != NULL ? log->o.truncate_fn(log->fd, len)
		                               : ftruncate(log->fd, len);
	while (r != 0 && errno == EINTR);
	return r;
}

/*
 * Format and write one line whose caller members are inner (the JSON of an
 * object without its braces). On failure the file is cut back to the last
 * complete line, so neither a reader nor the next open ever sees half a
 * record, and the seq is not consumed.
 */
static writ_rc write_line_locked(audit_log *log, const char *inner, size_t ilen, writ_err *err)
{
	char ts[AUDIT_TS_LEN + 1], prevhex[AUDIT_HASH_HEX + 1];
	size_t n;
	int h;

	audit_ts_format(now_ms(), ts);
	hex32(log->prev, prevhex);
	h = snprintf(log->line, sizeof(log->line), "{\"seq\":%" PRIu64 ",\"ts\":\"%s\",",
	             log->next_seq, ts);
	if (h < 0 || (size_t)h + ilen + 9 + AUDIT_HASH_HEX + 3 > sizeof(log->line))
		return writ_err_set(err, WRIT_ERR_TOO_LARGE, "audit record over %d bytes",
		                    AUDIT_LINE_MAX);
	n = (size_t)h;
	memcpy(log->line + n, inner, ilen);
	n += ilen;
	memcpy(log->line + n, ",\"prev\":\"", 9);
	n += 9;
	memcpy(log->line + n, prevhex, AUDIT_HASH_HEX);
	n += AUDIT_HASH_HEX;
	memcpy(log->line + n, "\"}\n", 3);
	n += 3;

	if (write_all(log, log->line, n) != 0) {
		int e = errno;

		if (truncate_to(log, log->good_len) != 0)
			log->needs_rescan = 1;
		fail_locked(log, "write", e);
		return writ_err_set(err, WRIT_ERR_UNAVAILABLE, "%s", log->fail_msg);
	}
	writ_sha256((const unsigned char *)log->line, n - 1, log->prev);
	log->good_len += (off_t)n;
	log->st.last_seq = log->next_seq;
	log->next_seq++;
	return WRIT_OK;
}

/*
 * A caller's record as the log takes it: one object on one line whose
 * first member is a non-empty string "event", not one of the log's own
 * events, with none of the log's own member names, short enough. The
 * member check reads the text: in the compact JSON that wjson_dump and
 * wjson_w write, '{"' and ',"' only ever begin a member name (a quote in
 * a string is escaped), so it is exact, and stricter than needed for a
 * nested member (also refused).
 */
static writ_rc check_record(const char *s, size_t len, writ_err *err)
{
	static const char *const reserved[] = {"seq", "ts", "prev", "sig"};
	static const char *const own_events[] = {"checkpoint", "log_opened", "log_recovered"};
	static const char ev[] = "{\"event\":\"";
	size_t i, j, n;

	if (len < 2 || s[0] != '{' || s[len - 1] != '}' || memchr(s, '\n', len) != NULL)
		return writ_err_set(err, WRIT_ERR_ARG,
		                    "audit record is not a one-line JSON object");
	if (len < sizeof(ev) || memcmp(s, ev, sizeof(ev) - 1) != 0 || s[sizeof(ev) - 1] == '"')
		return writ_err_set(err, WRIT_ERR_ARG,
		                    "audit record needs a string \"event\", first");
	/* A caller must not be able to write what looks like the log's own
	 * records: a fake checkpoint would at best confuse a reader. */
	for (i = 0; i < sizeof(own_events) / sizeof(own_events[0]); i++) {
		n = strlen(own_events[i]);
		if (len > sizeof(ev) + n && memcmp(s + sizeof(ev) - 1, own_events[i], n) == 0 &&
		    s[sizeof(ev) - 1 + n] == '"')
			return writ_err_set(err, WRIT_ERR_ARG, "audit event \"%s\" is reserved",
			                    own_events[i]);
	}
	for (i = 0; i + 1 < len; i++) {
		if ((s[i] != '{' && s[i] != ',') || s[i + 1] != '"')
			continue;
		for (j = 0; j < sizeof(reserved) / sizeof(reserved[0]); j++) {
			n = strlen(reserved[j]);
			if (i + n + 3 < len && memcmp(s + i + 2, reserved[j], n) == 0 &&
			    s[i + 2 + n] == '"' && s[i + 3 + n] == ':')
				return writ_err_set(err, WRIT_ERR_ARG,
				                    "audit record member \"%s\" is reserved",
				                    reserved[j]);
		}
	}
	if (len + LINE_OVERHEAD > AUDIT_LINE_MAX)
		return writ_err_set(err, WRIT_ERR_TOO_LARGE, "audit record over %d bytes",
		                    AUDIT_LINE_MAX);
	return WRIT_OK;
}

/* A record tree as text, "event" first so lines read naturally. */
static writ_rc dump_record(const json_t *rec, char **out, size_t *len, writ_err *err)
{
	const json_t *ev = json_object_get(rec, "event");
	json_t *o = NULL, *v;
	const char *k;
	char *s;
	writ_rc rc;

	*out = NULL;
	if (!json_is_object(rec))
		return writ_err_set(err, WRIT_ERR_ARG, "audit record is not a JSON object");
	if (json_string_value(ev) == NULL || json_string_value(ev)[0] == '\0')
		return writ_err_set(err, WRIT_ERR_ARG, "audit record needs a string \"event\"");
	/* Callers usually put "event" first already: then one dump does. */
	s = wjson_dump(rec);
	if (s != NULL && strncmp(s, "{\"event\":", 9) != 0) {
		free(s);
		s = NULL;
		o = json_object();
		if (o == NULL || json_object_set(o, "event", (json_t *)ev) != 0)
			goto nomem;
		json_object_foreach((json_t *)rec, k, v)
			if (strcmp(k, "event") != 0 && json_object_set(o, k, v) != 0)
				goto nomem;
		s = wjson_dump(o);
		json_decref(o);
	}
	if (s == NULL)
		return writ_err_set(err, WRIT_ERR_NOMEM, "cannot serialise the audit record");
	*len = strlen(s);
	if ((rc = check_record(s, *len, err)) != WRIT_OK) {
		free(s);
		return rc;
	}
	*out = s;
	return WRIT_OK;
nomem:
	json_decref(o);
	return writ_err_set(err, WRIT_ERR_NOMEM, "out of memory");
}

/* Write one of the log's own records, built with jansson (so a path or
 * message in it is escaped). */
static writ_rc write_own_locked(audit_log *log, json_t *o, writ_err *err)
{
	char *s;
	writ_rc rc;

	if (o == NULL)
		return writ_err_set(err, WRIT_ERR_NOMEM, "out of memory");
	s = wjson_dump(o);
	json_decref(o);
	if (s == NULL)
		return writ_err_set(err, WRIT_ERR_NOMEM, "out of memory");
	rc = write_line_locked(log, s + 1, strlen(s) - 2, err);
	free(s);
	if (rc == WRIT_OK)
		log->since_ckpt++; /* restarts and recoveries are signed too */
	return rc;
}

/* ---- the tail of an existing file ---- */

static ssize_t pread_all(int fd, char *buf, size_t n, off_t off)
{
	size_t got = 0;
	ssize_t r;

	while (got < n) {
		r = pread(fd, buf + got, n - got, off + (off_t)got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -1;
		if (r == 0)
			break;
		got += (size_t)r;
	}
	return (ssize_t)got;
}

/* memrchr is a GNU extension. */
static const char *last_nl(const char *buf, size_t n)
{
	while (n > 0)
		if (buf[--n] == '\n')
			return buf + n;
	return NULL;
}

/* 1-based line number of the line starting at byte off: error path only. */
static uint64_t line_number_at(int fd, off_t off)
{
	char buf[8192];
	uint64_t n = 1;
	off_t pos = 0;
	ssize_t r, i;

	while (pos < off) {
		r = pread(fd, buf,
		          (size_t)(off - pos < (off_t)sizeof(buf) ? off - pos : (off_t)sizeof(buf)),
		          pos);
		if (r <= 0)
			break;
		for (i = 0; i < r; i++)
			n += buf[i] == '\n';
		pos += r;
	}
	return n;
}

/* A line the writer could have produced: a JSON object with a positive
 * integer seq. Anything else at the very end is a torn write. */
static int line_is_record(const char *p, size_t n, uint64_t *seq, int *checkpoint)
{
	json_t *o = wjson_parse_object(p, n, "record", NULL);
	json_t *s = json_object_get(o, "seq");
	const char *ev = json_string_value(json_object_get(o, "event"));
	int ok = json_is_integer(s) && json_integer_value(s) >= 1;

	if (ok) {
		*seq = (uint64_t)json_integer_value(s);
		*checkpoint = ev != NULL && strcmp(ev, "checkpoint") == 0;
	}
	json_decref(o);
	return ok;
}

/*
 * Find the last complete record from the file's end (never reading the
 * whole file: logs grow for years), set next_seq, prev and good_len, and
 * cut away a torn tail: bytes after the last '\n' (a crash mid-write) and,
 * once, a last terminated line that is not a record (a crash can leave
 * zero-filled blocks). A bad line before that is not what a crash leaves:
 * refuse, naming it, so an operator runs `writ audit verify`.
 */
/* Move *size back over trailing zero bytes, adding them to *dropped. */
static writ_rc skip_zero_tail(audit_log *log, off_t *size, size_t *dropped, writ_err *err)
{
	char buf[8192];
	off_t end = *size;

	while (end > 0) {
		size_t n = end < (off_t)sizeof(buf) ? (size_t)end : sizeof(buf), i;

		if (pread_all(log->fd, buf, n, end - (off_t)n) != (ssize_t)n)
			return writ_err_set(err, WRIT_ERR_IO, "audit log %s: cannot read its end",
			                    log->path);
		for (i = n; i > 0 && buf[i - 1] == '\0'; i--)
			;
		end -= (off_t)(n - i);
		if (i > 0)
			break;
	}
	*dropped += (size_t)(*size - end);
	*size = end;
	return WRIT_OK;
}

static writ_rc scan_tail(audit_log *log, size_t *dropped, writ_err *err)
{
	struct stat st;
	char *buf = NULL;
	const char *nl;
	size_t win, pos, ls;
	off_t off;
	uint64_t seq = 0;
	writ_rc rc = WRIT_OK;
	int tries, last_is_ckpt = 0;

	*dropped = 0;
	if (fstat(log->fd, &st) != 0)
		return writ_err_set(err, WRIT_ERR_IO, "audit log %s: %s", log->path,
		                    strerror(errno));
	log->next_seq = 1;
	memcpy(log->prev, zero_hash, sizeof(zero_hash));
	log->good_len = 0;
	/* Zero-filled blocks at the end (a power loss after the size grew but
	 * before the data landed) are not a line of anything: skip them, to be
	 * cut with the rest of a torn tail, however many there are. */
	rc = skip_zero_tail(log, &st.st_size, dropped, err);
	if (rc != WRIT_OK || st.st_size == 0) {
		if (rc == WRIT_OK && *dropped > 0 &&
		    (truncate_to(log, 0) != 0 || sync_fd(log) != 0))
			rc = writ_err_set(err, WRIT_ERR_IO, "audit log %s: cannot cut its end: %s",
			                  log->path, strerror(errno));
		return rc;
	}
	win = st.st_size < TAIL_WINDOW ? (size_t)st.st_size : TAIL_WINDOW;
	off = st.st_size - (off_t)win;
	buf = malloc(win);
	if (buf == NULL)
		return writ_err_set(err, WRIT_ERR_NOMEM, "out of memory");
	if (pread_all(log->fd, buf, win, off) != (ssize_t)win) {
		rc = writ_err_set(err, WRIT_ERR_IO, "audit log %s: cannot read its end", log->path);
		goto out;
	}
	pos = win;
	if (buf[pos - 1] != '\n') {
		nl = last_nl(buf, pos);
		if (nl == NULL && off != 0) {
			rc = writ_err_set(err, WRIT_ERR_MALFORMED,
			                  "audit log %s: no line end in its last %zu bytes: "
			                  "not a crash, check it with 'writ audit verify'",
			                  log->path, win);
			goto out;
		}
		ls = nl == NULL ? 0 : (size_t)(nl - buf) + 1;
		*dropped += pos - ls;
		pos = ls;
	}
	for (tries = 0; pos > 0; tries++) {
		nl = pos >= 2 ? last_nl(buf, pos - 1) : NULL;
		if (nl == NULL && off != 0) {
			rc = writ_err_set(err, WRIT_ERR_MALFORMED,
			                  "audit log %s: last line is over %d bytes", log->path,
			                  AUDIT_LINE_MAX);
			goto out;
		}
		ls = nl == NULL ? 0 : (size_t)(nl - buf) + 1;
		if (pos - ls <= AUDIT_LINE_MAX &&
		    line_is_record(buf + ls, pos - 1 - ls, &seq, &last_is_ckpt)) {
			writ_sha256((const unsigned char *)buf + ls, pos - 1 - ls, log->prev);
			log->next_seq = seq + 1;
			/* The run before (a crash, kill -9) ended unsigned: sign at
			 * the first append, so no run of unsigned records grows
			 * past checkpoint_every across restarts either. */
			if (!last_is_ckpt)
				log->since_ckpt = log->o.checkpoint_every;
			break;
		}
		if (tries == 1) {
			rc = writ_err_set(err, WRIT_ERR_MALFORMED,
			                  "audit log %s:%" PRIu64 ": not a valid record before "
			                  "the torn end: tampering or corruption, not a crash; "
			                  "check it with 'writ audit verify'",
			                  log->path, line_number_at(log->fd, off + (off_t)ls));
			goto out;
		}
		*dropped += pos - ls;
		pos = ls;
	}
	log->good_len = off + (off_t)pos;
	if (*dropped > 0 && (truncate_to(log, log->good_len) != 0 || sync_fd(log) != 0)) {
		rc = writ_err_set(err, WRIT_ERR_IO, "audit log %s: cannot cut the torn end: %s",
		                  log->path, strerror(errno));
		goto out;
	}
out:
	free(buf);
	return rc;
}

static writ_rc write_recovered_locked(audit_log *log, size_t dropped, const char *reason,
                                      writ_err *err)
{
	json_t *o =
	    json_pack("{s:s, s:I}", "event", "log_recovered", "dropped_bytes", (json_int_t)dropped);

	if (o != NULL && reason != NULL && json_object_set_new(o, "reason", json_string(reason)))
		o = (json_decref(o), NULL);
	return write_own_locked(log, o, err);
}

/*
 * In the failed state, each append tries once to resume: re-read the tail
 * if a truncate also failed, then write a "log_recovered" record saying
 * why the log stopped. If the disk is still full that write fails cheaply
 * and the caller gets 503 again; once space is back the log resumes with
 * no gap in seq.
 */
static writ_rc resume_locked(audit_log *log, writ_err *err)
{
	char why[sizeof(log->fail_msg)];
	size_t dropped = 0;
	writ_rc rc;

	memcpy(why, log->fail_msg, sizeof(why));
	/* The cut after the failure failed too: try it again, and resume only
	 * once the file ends where the log's state does. Bytes past that are
	 * not to be trusted (after a failed writeback the page cache can show
	 * data the disk never got), so the tail is never re-read as good. */
	if (log->needs_rescan) {
		if (truncate_to(log, log->good_len) != 0)
			return writ_err_set(
			    err, WRIT_ERR_UNAVAILABLE,
			    "%s (cannot cut the log back to its last good line: %s)", why,
			    strerror(errno));
		log->needs_rescan = 0;
	}
	rc = write_recovered_locked(log, dropped, why, err);
	if (rc != WRIT_OK)
		return rc;
	log->failed = 0;
	return WRIT_OK;
}

/* ---- checkpoints ---- */

static int kid_ok(const char *kid)
{
	size_t i, n = strnlen(kid, WRIT_KID_MAX + 1);

	if (n == 0 || n > WRIT_KID_MAX)
		return 0;
	for (i = 0; i < n; i++)
		if (strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_",
		           kid[i]) == NULL)
			return 0;
	return 1;
}

static writ_rc checkpoint_locked(audit_log *log, writ_err *err)
{
	char msg[sizeof(AUDIT_CHECKPOINT_CTX) + 24 + AUDIT_HASH_HEX];
	char kid[WRIT_KID_MAX + 1] = "", head[AUDIT_HASH_HEX + 1];
	char inner[B64URL_LEN(AUDIT_SIG_MAX) + WRIT_KID_MAX + AUDIT_HASH_HEX + 128];
	char b64[B64URL_LEN(AUDIT_SIG_MAX) + 1];
	unsigned char sig[AUDIT_SIG_MAX];
	size_t siglen = sizeof(sig);
	writ_alg alg = WRIT_ALG_NONE;
	writ_err se = {0};
	writ_rc rc;
	int n;

	hex32(log->prev, head);
	n = snprintf(msg, sizeof(msg), AUDIT_CHECKPOINT_CTX "%" PRIu64 ":%s", log->next_seq, head);
	rc = log->o.sign(log->o.sign_arg, (const unsigned char *)msg, (size_t)n, kid, &alg, sig,
	                 &siglen, &se);
	kid[WRIT_KID_MAX] = '\0';
	if (rc == WRIT_OK &&
	    (!kid_ok(kid) || writ_alg_name(alg) == NULL || siglen == 0 || siglen > sizeof(sig)))
		rc = writ_err_set(&se, WRIT_ERR_ARG, "signer returned a bad kid, alg or length");
	if (rc != WRIT_OK) {
		log->st.sign_failures++;
		log->last_sign_fail_ns = writ_mono_ns();
		return writ_err_set(err, rc, "audit checkpoint: signing failed: %s",
		                    se.msg[0] ? se.msg : writ_strerror(rc));
	}
	b64url_encode(sig, siglen, b64);
	n = snprintf(inner, sizeof(inner),
	             "\"event\":\"checkpoint\",\"head\":\"%s\",\"count\":%" PRIu64
	             ",\"kid\":\"%s\",\"alg\":\"%s\",\"sig\":\"%s\"",
	             head, log->next_seq - 1, kid, writ_alg_name(alg), b64);
	rc = write_line_locked(log, inner, (size_t)n, err);
	if (rc == WRIT_OK) {
		log->st.checkpoints++;
		log->since_ckpt = 0;
		log->last_ckpt_mono = mono_secs();
	}
	return rc;
}

/* A due checkpoint rides on the sync of the record that made it due. A
 * signer failure (HSM down) does not fail the record, which is written:
 * the chain still holds and the next checkpoint signs over it; retries
 * wait a second so a dead HSM does not slow every append. */
static void maybe_checkpoint_locked(audit_log *log)
{
	int64_t now;

	if (log->o.sign == NULL || log->since_ckpt == 0)
		return;
	now = mono_secs();
	if (log->since_ckpt < log->o.checkpoint_every &&
	    now - log->last_ckpt_mono < (int64_t)log->o.checkpoint_secs)
		return;
	/* A whole second since the last failure, not the next second tick:
	 * whole-second clocks let a retry through a millisecond later. */
	if (log->last_sign_fail_ns != 0 && writ_mono_ns() - log->last_sign_fail_ns < 1000000000)
		return;
	(void)checkpoint_locked(log, NULL);
}

/* ---- group commit ---- */

static void enqueue_locked(audit_log *log, struct waiter *w)
{
	w->seq = log->next_seq - 1;
	w->state = W_PENDING;
	w->next = NULL;
	if (w->done == NULL)
		pthread_cond_init(&w->cv, NULL);
	if (log->wait_tail != NULL)
		log->wait_tail->next = w;
	else
		log->wait_head = w;
	log->wait_tail = w;
	/* Wake the sync thread for the first line, and end a commit delay
	 * once it has gathered enough or every announced line is here. */
	if (++log->npending == 1 || log->npending == GROUP_MIN ||
	    (log->delaying && atomic_load(&log->expected) <= 0))
		pthread_cond_signal(&log->work);
}

/* Complete w: wake a blocking caller, or move an asynchronous one to
 * *done_list for a callback outside the lock. */
static void complete_locked(audit_log *log, struct waiter *w, int state, struct waiter **done_list)
{
	log->npending--;
	w->state = state;
	if (w->done == NULL) {
		pthread_cond_signal(&w->cv);
	} else {
		w->next = *done_list;
		*done_list = w;
	}
}

/* fdatasync failed: nothing after the last good sync can be trusted to be
 * on disk, so cut it away and fail everyone waiting on it. Their seqs are
 * reused by the next records: none of them was acknowledged. */
static void sync_failed_locked(audit_log *log, int e, struct waiter **done_list)
{
	struct waiter *w, *next;

	if (truncate_to(log, log->synced_len) != 0)
		log->needs_rescan = 1;
	log->good_len = log->synced_len;
	log->next_seq = log->synced_seq + 1;
	log->st.last_seq = log->synced_seq;
	memcpy(log->prev, log->synced_prev, sizeof(log->prev));
	/* A checkpoint may have been cut away with the rest: sign again at the
	 * first append that works, so the run of unsigned records stays short
	 * (audit_check_signing). */
	log->since_ckpt = log->o.checkpoint_every;
	for (w = log->wait_head; w != NULL; w = next) {
		next = w->next;
		complete_locked(log, w, W_FAILED, done_list);
	}
	log->wait_head = log->wait_tail = NULL;
	fail_locked(log, "fsync", e);
}

/* One sync of everything written so far; completes the waiters it covers
 * (asynchronous ones into *done_list). */
static void sync_locked(audit_log *log, struct waiter **done_list)
{
	unsigned char tprev[SHA256_DIGEST_LENGTH];
	int64_t t0, t1;
	size_t i;
	uint64_t tseq = log->next_seq - 1;
	off_t tlen = log->good_len;
	struct waiter *w;
	int r, e = 0;

	memcpy(tprev, log->prev, sizeof(tprev));
	pthread_mutex_unlock(&log->mu);
	t0 = writ_mono_ns();
	r = sync_fd(log);
	if (r != 0)
		e = errno;
	t1 = writ_mono_ns();
	pthread_mutex_lock(&log->mu);
	log->st.syncs++;
	log->st.sync_ns += (uint64_t)(t1 - t0);
	for (i = 0; i < AUDIT_SYNC_BUCKETS && (t1 - t0) > audit_sync_bounds_us[i] * 1000; i++)
		;
	log->st.sync_buckets[i]++;
	if (r != 0) {
		log->last_batch = 0;
		sync_failed_locked(log, e != 0 ? e : EIO, done_list);
		return;
	}
	log->synced_seq = tseq;
	log->synced_len = tlen;
	memcpy(log->synced_prev, tprev, sizeof(tprev));
	log->last_batch = 0;
	while ((w = log->wait_head) != NULL && w->seq <= tseq) {
		log->wait_head = w->next;
		complete_locked(log, w, W_DURABLE, done_list);
		log->last_batch++;
	}
	if (log->wait_head == NULL)
		log->wait_tail = NULL;
}

/* While records are announced, give the batch time to grow (see
 * above): longer when the previous sync found the log busy. */
static void commit_delay_locked(audit_log *log)
{
	struct timespec until;
	int64_t t, cap = GROUP_WAIT_NS;

	if (log->npending >= GROUP_MIN || atomic_load(&log->expected) <= 0)
		return;
	log->st.delays++;
	if (log->last_batch >= GROUP_BUSY) {
		log->st.busy_delays++;
		cap = GROUP_WAIT_BUSY_NS;
	}
	t = writ_mono_ns() + cap;
	until.tv_sec = (time_t)(t / 1000000000);
	until.tv_nsec = (long)(t % 1000000000);
	log->delaying = 1;
	while (log->npending < GROUP_MIN && atomic_load(&log->expected) > 0 && !log->stopping &&
	       pthread_cond_timedwait(&log->work, &log->mu, &until) == 0)
		;
	log->delaying = 0;
}

void audit_expect(audit_log *log)
{
	if (log != NULL)
		atomic_fetch_add(&log->expected, 1);
}

void audit_expect_done(audit_log *log)
{
	if (log != NULL)
		atomic_fetch_sub(&log->expected, 1);
}

static void *syncer_main(void *arg)
{
	audit_log *log = arg;
	struct waiter *done_list, *w;

	pthread_mutex_lock(&log->mu);
	for (;;) {
		while (log->wait_head == NULL && !log->stopping)
			pthread_cond_wait(&log->work, &log->mu);
		if (log->wait_head == NULL)
			break; /* stopping, and nothing left to sync */
		commit_delay_locked(log);
		done_list = NULL;
		sync_locked(log, &done_list);
		if (done_list == NULL)
			continue;
		pthread_mutex_unlock(&log->mu);
		while ((w = done_list) != NULL) {
			done_list = w->next;
			w->done(w->done_arg,
			        w->state == W_DURABLE ? WRIT_OK : WRIT_ERR_UNAVAILABLE);
			free(w);
		}
		pthread_mutex_lock(&log->mu);
	}
	pthread_mutex_unlock(&log->mu);
	return NULL;
}

static writ_rc wait_durable_locked(audit_log *log, struct waiter *w, writ_err *err)
{
	while (w->state == W_PENDING)
		pthread_cond_wait(&w->cv, &log->mu);
	pthread_cond_destroy(&w->cv);
	if (w->state == W_FAILED)
		return writ_err_set(err, WRIT_ERR_UNAVAILABLE, "%s", log->fail_msg);
	return WRIT_OK;
}

/* Write rec's line; on success queue w for the sync thread. */
static writ_rc append_locked(audit_log *log, const char *body, size_t blen, struct waiter *w,
                             writ_err *err)
{
	writ_rc rc = WRIT_OK;

	if (log->failed)
		rc = resume_locked(log, err);
	if (rc == WRIT_OK)
		rc = write_line_locked(log, body + 1, blen - 2, err);
	if (rc == WRIT_OK) {
		log->st.appends++;
		log->since_ckpt++;
		enqueue_locked(log, w);
		maybe_checkpoint_locked(log);
	}
	if (rc == WRIT_ERR_UNAVAILABLE)
		log->st.failures++;
	return rc;
}

writ_rc audit_append(audit_log *log, const json_t *rec, writ_err *err)
{
	struct waiter w = {0};
	char *body = NULL;
	size_t blen = 0;
	writ_rc rc;

	if (log == NULL)
		return writ_err_set(err, WRIT_ERR_ARG, "no audit log");
	rc = dump_record(rec, &body, &blen, err);
	if (rc != WRIT_OK)
		return rc;
	pthread_mutex_lock(&log->mu);
	rc = append_locked(log, body, blen, &w, err);
	if (rc == WRIT_OK) {
		rc = wait_durable_locked(log, &w, err);
		if (rc == WRIT_ERR_UNAVAILABLE)
			log->st.failures++;
	}
	pthread_mutex_unlock(&log->mu);
	free(body);
	return rc;
}

writ_rc audit_append_async(audit_log *log, const char *rec, size_t len, audit_done_fn done,
                           void *arg, writ_err *err)
{
	struct waiter *w;
	writ_rc rc;

	if (log == NULL || rec == NULL || done == NULL)
		return writ_err_set(err, WRIT_ERR_ARG, "no audit log, record or callback");
	rc = check_record(rec, len, err);
	if (rc != WRIT_OK)
		return rc;
	w = calloc(1, sizeof(*w));
	if (w == NULL)
		return writ_err_set(err, WRIT_ERR_NOMEM, "out of memory");
	w->done = done;
	w->done_arg = arg;
	pthread_mutex_lock(&log->mu);
	rc = append_locked(log, rec, len, w, err);
	pthread_mutex_unlock(&log->mu);
	if (rc != WRIT_OK)
		free(w); /* not queued: no callback */
	return rc;
}

writ_rc audit_checkpoint(audit_log *log, writ_err *err)
{
	struct waiter w = {0};
	writ_rc rc = WRIT_OK;

	if (log == NULL)
		return writ_err_set(err, WRIT_ERR_ARG, "no audit log");
	pthread_mutex_lock(&log->mu);
	if (log->o.sign == NULL || log->since_ckpt == 0)
		goto out;
	if (log->failed)
		rc = resume_locked(log, err);
	if (rc == WRIT_OK)
		rc = checkpoint_locked(log, err);
	if (rc == WRIT_OK) {
		enqueue_locked(log, &w);
		rc = wait_durable_locked(log, &w, err);
	}
out:
	pthread_mutex_unlock(&log->mu);
	return rc;
}

writ_rc audit_try_resume(audit_log *log, writ_err *err)
{
	struct waiter w = {0};
	writ_rc rc = WRIT_OK;

	if (log == NULL)
		return writ_err_set(err, WRIT_ERR_ARG, "no audit log");
	pthread_mutex_lock(&log->mu);
	if (log->failed) {
		rc = resume_locked(log, err);
		if (rc == WRIT_OK) {
			/* Healthy only once the recovery record is on disk. */
			enqueue_locked(log, &w);
			rc = wait_durable_locked(log, &w, err);
		}
	}
	pthread_mutex_unlock(&log->mu);
	return rc;
}

int audit_healthy(audit_log *log)
{
	int ok;

	if (log == NULL)
		return 0;
	pthread_mutex_lock(&log->mu);
	ok = !log->failed;
	pthread_mutex_unlock(&log->mu);
	return ok;
}

void audit_get_stats(audit_log *log, audit_stats *st)
{
	pthread_mutex_lock(&log->mu);
	*st = log->st;
	st->healthy = !log->failed;
	snprintf(st->last_error, sizeof(st->last_error), "%s", log->fail_msg);
	pthread_mutex_unlock(&log->mu);
}

/* ---- open and close ---- */

/* A new file's directory entry is durable only once the directory is
 * synced; without it a crash could lose the whole log. */
static int sync_parent_dir(const char *path)
{
	char dir[4096];
	const char *slash = strrchr(path, '/');
	int fd, r;

	if (slash == NULL)
		snprintf(dir, sizeof(dir), ".");
	else if (slash == path)
		snprintf(dir, sizeof(dir), "/");
	else
		snprintf(dir, sizeof(dir), "%.*s", (int)(slash - path), path);
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	r = fsync(fd);
	close(fd);
	return r;
}

/* Stop the sync thread once every queued line is synced (and every
 * callback made). */
static void syncer_stop(audit_log *log)
{
	if (!log->syncer_started)
		return;
	pthread_mutex_lock(&log->mu);
	log->stopping = 1;
	pthread_cond_signal(&log->work);
	pthread_mutex_unlock(&log->mu);
	pthread_join(log->syncer, NULL);
	log->syncer_started = 0;
}

static void log_free(audit_log *log)
{
	syncer_stop(log);
	if (log->fd >= 0)
		close(log->fd);
	pthread_cond_destroy(&log->work);
	pthread_mutex_destroy(&log->mu);
	free(log->path);
	free(log);
}

static writ_rc open_fd(audit_log *log, int *created, writ_err *err)
{
	struct stat st;

	/* O_NOFOLLOW: a symlink planted at the log path must not redirect
	 * the audit trail. O_RDWR (not O_WRONLY) so the tail can be read. */
	log->fd = open(log->path, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (log->fd < 0)
		return writ_err_set(err, WRIT_ERR_IO, "audit log %s: %s", log->path,
		                    strerror(errno));
	if (fstat(log->fd, &st) != 0 || !S_ISREG(st.st_mode))
		return writ_err_set(err, WRIT_ERR_IO, "audit log %s: not a regular file",
		                    log->path);
	if (st.st_mode & (S_IWGRP | S_IWOTH))
		return writ_err_set(err, WRIT_ERR_CONFIG,
		                    "audit log %s is writable by group or others (chmod 600 it)",
		                    log->path);
	/* Two writers would each continue the chain from the same line:
	 * a fork that verify reports as tampering. */
	if (flock(log->fd, LOCK_EX | LOCK_NB) != 0)
		return writ_err_set(err, errno == EWOULDBLOCK ? WRIT_ERR_UNAVAILABLE : WRIT_ERR_IO,
		                    "audit log %s: %s", log->path,
		                    errno == EWOULDBLOCK ? "in use by another writer"
		                                         : strerror(errno));
	*created = st.st_size == 0;
	return WRIT_OK;
}

writ_rc audit_open(const char *path, const audit_opts *opts, audit_log **out, writ_err *err)
{
	pthread_condattr_t ca;
	audit_log *log;
	size_t dropped = 0;
	int created = 0;
	writ_rc rc;

	*out = NULL;
	if (path == NULL || path[0] == '\0')
		return writ_err_set(err, WRIT_ERR_ARG, "no audit log path");
	log = calloc(1, sizeof(*log));
	if (log == NULL)
		return writ_err_set(err, WRIT_ERR_NOMEM, "out of memory");
	log->fd = -1;
	atomic_init(&log->expected, 0);
	pthread_mutex_init(&log->mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&log->work, &ca);
	pthread_condattr_destroy(&ca);
	if (opts != NULL)
		log->o = *opts;
	if (log->o.checkpoint_every == 0)
		log->o.checkpoint_every = DEFAULT_EVERY;
	if (log->o.checkpoint_secs == 0)
		log->o.checkpoint_secs = DEFAULT_SECS;
	log->path = strdup(path);
	if (log->path == NULL) {
		rc = writ_err_set(err, WRIT_ERR_NOMEM, "out of memory");
		goto out;
	}
	rc = open_fd(log, &created, err);
	if (rc == WRIT_OK)
		rc = scan_tail(log, &dropped, err);
	if (rc != WRIT_OK)
		goto out;
	log->st.last_seq = log->next_seq - 1;
	log->last_ckpt_mono = mono_secs();
	if (log->good_len == 0)
		rc = write_own_locked(
		    log, json_pack("{s:s, s:i}", "event", "log_opened", "version", 1), err);
	if (rc == WRIT_OK && dropped > 0)
		rc = write_recovered_locked(log, dropped, "torn last line after a crash", err);
	if (rc == WRIT_OK && log->next_seq - 1 > 0 && sync_fd(log) != 0)
		rc = writ_err_set(err, WRIT_ERR_IO, "audit log %s: fsync failed: %s", log->path,
		                  strerror(errno));
	if (rc == WRIT_OK && created && sync_parent_dir(path) != 0)
		rc = writ_err_set(err, WRIT_ERR_IO, "audit log %s: cannot sync its directory: %s",
		                  path, strerror(errno));
	if (rc != WRIT_OK)
		goto out;
	log->synced_seq = log->next_seq - 1;
	log->synced_len = log->good_len;
	memcpy(log->synced_prev, log->prev, sizeof(log->prev));
	if (pthread_create(&log->syncer, NULL, syncer_main, log) != 0) {
		rc = writ_err_set(err, WRIT_ERR_NOMEM, "audit log: cannot start its sync thread");
		goto out;
	}
	log->syncer_started = 1;
	*out = log;
	return WRIT_OK;
out:
	log_free(log);
	return rc;
}

writ_rc audit_close(audit_log *log, writ_err *err)
{
	writ_rc rc;

	if (log == NULL)
		return WRIT_OK;
	rc = audit_checkpoint(log, err);
	log_free(log);
	return rc;
}
