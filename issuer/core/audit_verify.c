/*
 * audit_verify.c - reading audit logs: chain verification and queries.
 *
 * An audit file is outside input: whoever wants to hide a record has
 * edited it. So lines are read with a fixed cap (no line grows a buffer),
 * each is a strict JSON object (duplicate members refused: two readers
 * must not see two different records in one line), and the first problem
 * stops the check with its line number and kind.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "audit.h"
#include "writ_int.h"

#define READ_BUF (4 * AUDIT_LINE_MAX)

enum { LR_EOF, LR_LINE, LR_TORN, LR_LONG, LR_IOERR };

/* Lines of a file (read in chunks) or of a buffer, at most AUDIT_LINE_MAX
 * bytes each with the '\n'. */
struct lreader {
	int fd;           /* -1 for a buffer */
	const char *data; /* the buffer, or own */
	char *own;
	size_t start, end;
	int eof;
};

static int lr_next(struct lreader *r, const char **line, size_t *len)
{
	const char *nl;
	size_t avail, scan;
	ssize_t n;

	for (;;) {
		avail = r->end - r->start;
		scan = avail < AUDIT_LINE_MAX ? avail : AUDIT_LINE_MAX;
		nl = memchr(r->data + r->start, '\n', scan);
		if (nl != NULL) {
			*line = r->data + r->start;
			*len = (size_t)(nl - *line);
			r->start += *len + 1;
			return LR_LINE;
		}
		if (avail >= AUDIT_LINE_MAX)
			return LR_LONG;
		if (r->eof) {
			if (avail == 0)
				return LR_EOF;
			*line = r->data + r->start;
			*len = avail;
			r->start = r->end;
			return LR_TORN;
		}
		if (r->start > 0) {
			memmove(r->own, r->own + r->start, avail);
			r->start = 0;
			r->end = avail;
		}
		n = read(r->fd, r->own + r->end, READ_BUF - r->end);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return LR_IOERR;
		if (n == 0)
			r->eof = 1;
		r->end += (size_t)n;
	}
}

static writ_rc lr_open_file(struct lreader *r, const char *path, writ_err *err)
{
	memset(r, 0, sizeof(*r));
	r->fd = open(path, O_RDONLY | O_CLOEXEC);
	if (r->fd < 0)
		return writ_err_set(err, WRIT_ERR_IO, "%s: %s", path, strerror(errno));
	r->own = malloc(READ_BUF);
	if (r->own == NULL) {
		close(r->fd);
		return writ_err_set(err, WRIT_ERR_NOMEM, "out of memory");
	}
	r->data = r->own;
	return WRIT_OK;
}

static void lr_open_buf(struct lreader *r, const char *buf, size_t len)
{
	memset(r, 0, sizeof(*r));
	r->fd = -1;
	r->data = buf;
	r->end = len;
	r->eof = 1;
}

static void lr_close(struct lreader *r)
{
	if (r->fd >= 0)
		close(r->fd);
	free(r->own);
}

/* ---- time ---- */

static int digits(const char *s, size_t n, int *v)
{
	size_t i;

	*v = 0;
	for (i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		*v = *v * 10 + (s[i] - '0');
	}
	return 0;
}

int audit_ts_parse(const char *s, size_t len, int64_t *ms)
{
	static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
	int y, mo, d, h, mi, se, f;
	struct tm tm = {0};
	time_t t;

	/* Exactly the writer's form: one spelling per instant, so ts
	 * compares as a string too. */
	if (len != AUDIT_TS_LEN || s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' ||
	    s[16] != ':' || s[19] != '.' || s[23] != 'Z' || digits(s, 4, &y) ||
	    digits(s + 5, 2, &mo) || digits(s + 8, 2, &d) || digits(s + 11, 2, &h) ||
	    digits(s + 14, 2, &mi) || digits(s + 17, 2, &se) || digits(s + 20, 3, &f))
		return -1;
	if (y < 1970 || mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] || h > 23 || mi > 59 ||
	    se > 59)
		return -1;
	tm.tm_year = y - 1900;
	tm.tm_mon = mo - 1;
	tm.tm_mday = d;
	tm.tm_hour = h;
	tm.tm_min = mi;
	tm.tm_sec = se;
	t = timegm(&tm);
	if (t == (time_t)-1 || tm.tm_mday != d) /* Feb 29 of a non-leap year */
		return -1;
	*ms = (int64_t)t * 1000 + f;
	return 0;
}

/* ---- verification ---- */

const char *audit_problem_name(audit_problem p)
{
	switch (p) {
	case AUDIT_OK: return "ok";
	case AUDIT_MALFORMED: return "malformed record";
	case AUDIT_EDITED: return "edited record";
	case AUDIT_DROPPED: return "dropped records";
	case AUDIT_REORDERED: return "reordered records";
	case AUDIT_TRUNCATED: return "truncated log";
	case AUDIT_BAD_CHECKPOINT: return "bad checkpoint";
	case AUDIT_BAD_SIGNATURE: return "bad checkpoint signature";
	case AUDIT_UNKNOWN_KID: return "unknown checkpoint key";
	case AUDIT_IO: return "read error";
	case AUDIT_UNSIGNED_RUN: return "checkpoints missing";
	case AUDIT_UNSIGNED_STOP: return "final checkpoint missing";
	}
	return "unknown problem";
}

static void problem(audit_report *rep, audit_problem p, uint64_t line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void problem(audit_report *rep, audit_problem p, uint64_t line, const char *fmt, ...)
{
	va_list ap;

	rep->problem = p;
	rep->line = line;
	va_start(ap, fmt);
	vsnprintf(rep->detail, sizeof(rep->detail), fmt, ap);
	va_end(ap);
}

struct vstate {
	struct lreader *r;
	const writ_jwks *keys;
	audit_report *rep;
	uint64_t lineno;
	uint64_t expect; /* next seq */
	unsigned char prev[SHA256_DIGEST_LENGTH];
};

static void hex32(const unsigned char *h, char out[AUDIT_HASH_HEX + 1])
{
	static const char dg[] = "0123456789abcdef";
	size_t i;

	for (i = 0; i < SHA256_DIGEST_LENGTH; i++) {
		out[2 * i] = dg[h[i] >> 4];
		out[2 * i + 1] = dg[h[i] & 15];
	}
	out[AUDIT_HASH_HEX] = '\0';
}

static int is_hash_hex(const char *s)
{
	size_t i;

	if (s == NULL || strlen(s) != AUDIT_HASH_HEX)
		return 0;
	for (i = 0; i < AUDIT_HASH_HEX; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return 0;
	return 1;
}

/* seq of the next line, without checking anything else; 0 if none. */
static uint64_t peek_seq(struct vstate *vs)
{
	const char *line;
	size_t len;
	json_t *o, *s;
	uint64_t seq = 0;

	if (lr_next(vs->r, &line, &len) != LR_LINE)
		return 0;
	o = wjson_parse_object(line, len, "record", NULL);
	s = json_object_get(o, "seq");
	if (json_is_integer(s) && json_integer_value(s) > 0)
		seq = (uint64_t)json_integer_value(s);
	json_decref(o);
	return seq;
}

/* The signature proves the chain up to head came from the issuer: an
 * attacker who rewrites the whole chain cannot forge it. */
static int check_checkpoint(struct vstate *vs, const json_t *o, uint64_t seq, const char *prevhex)
{
	audit_report *rep = vs->rep;
	const char *head = json_string_value(json_object_get(o, "head"));
	const char *kid = json_string_value(json_object_get(o, "kid"));
	const char *alg = json_string_value(json_object_get(o, "alg"));
	const char *sigs = json_string_value(json_object_get(o, "sig"));
	const json_t *count = json_object_get(o, "count");
	unsigned char sig[B64URL_DECODED_MAX(B64URL_LEN(AUDIT_SIG_MAX))];
	char msg[sizeof(AUDIT_CHECKPOINT_CTX) + 24 + AUDIT_HASH_HEX];
	const writ_jwk *jwk;
	size_t siglen, slen;
	writ_err e = {0};
	int n;

	if (head == NULL || kid == NULL || alg == NULL || sigs == NULL || !json_is_integer(count)) {
		problem(rep, AUDIT_BAD_CHECKPOINT, vs->lineno,
		        "checkpoint lacks head, count, kid, alg or sig");
		return -1;
	}
	if (strcmp(head, prevhex) != 0) {
		problem(rep, AUDIT_BAD_CHECKPOINT, vs->lineno,
		        "checkpoint head is not the hash of the line before it");
		return -1;
	}
	if ((uint64_t)json_integer_value(count) != seq - 1) {
		problem(rep, AUDIT_BAD_CHECKPOINT, vs->lineno,
		        "checkpoint count %" JSON_INTEGER_FORMAT " is not seq - 1",
		        json_integer_value(count));
		return -1;
	}
	slen = strlen(sigs);
	if (kid[0] == '\0' || strlen(kid) > WRIT_KID_MAX || slen > B64URL_LEN(AUDIT_SIG_MAX) ||
	    b64url_decode(sigs, slen, sig, &siglen) != 0) {
		problem(rep, AUDIT_BAD_CHECKPOINT, vs->lineno,
		        "checkpoint kid or sig is malformed");
		return -1;
	}
	rep->checkpoints++;
	if (vs->keys == NULL)
		return 0;
	jwk = writ_jwks_find(vs->keys, kid);
	if (jwk == NULL) {
		problem(rep, AUDIT_UNKNOWN_KID, vs->lineno,
		        "checkpoint key %s is not in the JWK Set (it must include retired keys)",
		        kid);
		return -1;
	}
	/* The key's pinned algorithm decides, never the record's "alg". */
	if (strcmp(alg, writ_alg_name(writ_jwk_alg(jwk))) != 0) {
		problem(rep, AUDIT_BAD_SIGNATURE, vs->lineno,
		        "checkpoint alg %.20s is not key %s's", alg, kid);
		return -1;
	}
	n = snprintf(msg, sizeof(msg), AUDIT_CHECKPOINT_CTX "%" PRIu64 ":%s", seq, head);
	if (writ_sig_verify(jwk, (const unsigned char *)msg, (size_t)n, sig, siglen, &e) !=
	    WRIT_OK) {
		problem(rep, AUDIT_BAD_SIGNATURE, vs->lineno, "checkpoint signature by %s: %s", kid,
		        e.msg);
		return -1;
	}
	return 0;
}

/* The order of checks decides which kind a tampering is reported as: seq
 * first (a deleted line shows as a gap, a swap as a step back), then the
 * hash (an edited line shows as the next line's prev not matching). */
static int check_line(struct vstate *vs, const char *line, size_t len)
{
	audit_report *rep = vs->rep;
	char prevhex[AUDIT_HASH_HEX + 1];
	const char *ts, *ev, *prev;
	json_t *o, *s;
	uint64_t seq, next;
	int64_t ms;
	writ_err e = {0};
	int rc = -1;

	o = wjson_parse_object(line, len, "record", &e);
	if (o == NULL) {
		if (lr_next(vs->r, &ts, &len) == LR_EOF)
			problem(rep, AUDIT_TRUNCATED, vs->lineno,
			        "last line is not a whole record (torn write)");
		else
			problem(rep, AUDIT_MALFORMED, vs->lineno, "%s", e.msg);
		return -1;
	}
	s = json_object_get(o, "seq");
	ts = json_string_value(json_object_get(o, "ts"));
	ev = json_string_value(json_object_get(o, "event"));
	prev = json_string_value(json_object_get(o, "prev"));
	if (!json_is_integer(s) || json_integer_value(s) < 1 || ts == NULL ||
	    audit_ts_parse(ts, strlen(ts), &ms) != 0 || ev == NULL || ev[0] == '\0' ||
	    !is_hash_hex(prev)) {
		problem(rep, AUDIT_MALFORMED, vs->lineno,
		        "record needs seq, ts (RFC 3339 UTC, ms), event and prev (hex SHA-256)");
		goto out;
	}
	seq = (uint64_t)json_integer_value(s);
	if (seq < vs->expect) {
		problem(rep, AUDIT_REORDERED, vs->lineno, "seq %" PRIu64 " after seq %" PRIu64, seq,
		        vs->expect - 1);
		goto out;
	}
	if (seq > vs->expect) {
		next = peek_seq(vs);
		if (vs->expect == 1)
			problem(rep, AUDIT_DROPPED, vs->lineno,
			        "log starts at seq %" PRIu64 ": its first records are missing",
			        seq);
		else if (next != 0 && next < seq)
			problem(rep, AUDIT_REORDERED, vs->lineno,
			        "seq %" PRIu64 " comes before seq %" PRIu64, seq, next);
		else
			problem(rep, AUDIT_DROPPED, vs->lineno,
			        "seq jumps from %" PRIu64 " to %" PRIu64 ": %" PRIu64
			        " records missing",
			        vs->expect - 1, seq, seq - vs->expect);
		goto out;
	}
	hex32(vs->prev, prevhex);
	if (strcmp(prev, prevhex) != 0) {
		if (vs->lineno == 1)
			problem(rep, AUDIT_EDITED, 1, "the first record's prev is not 64 zeros");
		else
			problem(rep, AUDIT_EDITED, vs->lineno - 1,
			        "prev hash mismatch: line %" PRIu64
			        " does not hash to line %" PRIu64 "'s prev",
			        vs->lineno - 1, vs->lineno);
		goto out;
	}
	if (strcmp(ev, "checkpoint") == 0) {
		if (check_checkpoint(vs, o, seq, prevhex) != 0)
			goto out;
		rep->unsigned_tail = 0;
	} else if (++rep->unsigned_tail > rep->longest_unsigned) {
		rep->longest_unsigned = rep->unsigned_tail;
		rep->longest_unsigned_line = vs->lineno;
	}
	rep->stopped_unsigned = strcmp(ev, "issuer_stopped") == 0;
	rep->records++;
	rep->last_seq = seq;
	vs->expect = seq + 1;
	writ_sha256((const unsigned char *)line, len, vs->prev);
	rc = 0;
out:
	json_decref(o);
	return rc;
}

static writ_rc verify_lines(struct lreader *r, const writ_jwks *keys, audit_report *rep,
                            writ_err *err)
{
	struct vstate vs = {.r = r, .keys = keys, .rep = rep, .expect = 1};
	const char *line;
	size_t len;
	int k;

	memset(rep, 0, sizeof(*rep));
	rep->sigs_checked = keys != NULL;
	for (;;) {
		k = lr_next(r, &line, &len);
		if (k == LR_EOF)
			break;
		if (k == LR_IOERR)
			return writ_err_set(err, WRIT_ERR_IO,
			                    "read error after line %" PRIu64 ": %s", vs.lineno,
			                    strerror(errno));
		vs.lineno++;
		if (k == LR_LONG) {
			problem(rep, AUDIT_MALFORMED, vs.lineno, "line is over %d bytes",
			        AUDIT_LINE_MAX);
			break;
		}
		if (k == LR_TORN) {
			problem(rep, AUDIT_TRUNCATED, vs.lineno,
			        "torn last line: %zu bytes without a newline", len);
			break;
		}
		rep->lines++;
		if (check_line(&vs, line, len) != 0)
			break;
	}
	hex32(vs.prev, rep->head);
	return WRIT_OK;
}

writ_rc audit_verify_file(const char *path, const writ_jwks *keys, audit_report *rep, writ_err *err)
{
	struct lreader r;
	writ_rc rc;

	memset(rep, 0, sizeof(*rep));
	rc = lr_open_file(&r, path, err);
	if (rc != WRIT_OK)
		return rc;
	rc = verify_lines(&r, keys, rep, err);
	lr_close(&r);
	return rc;
}

writ_rc audit_verify_buf(const char *buf, size_t len, const writ_jwks *keys, audit_report *rep,
                         writ_err *err)
{
	struct lreader r;

	lr_open_buf(&r, buf, len);
	return verify_lines(&r, keys, rep, err);
}

/* ---- query ---- */

static int str_is(const json_t *o, const char *name, const char *want)
{
	const char *v = json_string_value(json_object_get(o, name));

	return v != NULL && strcmp(v, want) == 0;
}

static int matches(const json_t *o, const audit_filter *f)
{
	const char *ts;
	int64_t ms;

	if (f == NULL)
		return 1;
	if ((f->agent != NULL && !str_is(o, "agent", f->agent)) ||
	    (f->jti != NULL && !str_is(o, "jti", f->jti)) ||
	    (f->audience != NULL && !str_is(o, "audience", f->audience)) ||
	    (f->event != NULL && !str_is(o, "event", f->event)))
		return 0;
	if (f->since_ms != 0) {
		ts = json_string_value(json_object_get(o, "ts"));
		if (ts == NULL || audit_ts_parse(ts, strlen(ts), &ms) != 0 || ms < f->since_ms)
			return 0;
	}
	return 1;
}

/* Call fn for each record of r from where it stands that matches f;
 * lines that are not records are counted in *bad. first_line is the
 * number of r's first line, or 0 when unknown (a scan from mid-file). */
static writ_rc stream_records(struct lreader *r, const char *path, uint64_t first_line,
                              const audit_filter *f, audit_query_fn fn, void *arg, uint64_t *bad,
                              writ_err *err)
{
	const char *line;
	size_t len;
	uint64_t lineno = first_line;
	json_t *o;
	int k, stop = 0;

	*bad = 0;
	while (!stop && (k = lr_next(r, &line, &len)) != LR_EOF) {
		if (k == LR_IOERR || k == LR_LONG) {
			const char *why = k == LR_LONG ? "line too long" : strerror(errno);

			if (first_line == 0)
				return writ_err_set(err,
				                    k == LR_LONG ? WRIT_ERR_MALFORMED : WRIT_ERR_IO,
				                    "%s: %s", path, why);
			return writ_err_set(err, k == LR_LONG ? WRIT_ERR_MALFORMED : WRIT_ERR_IO,
			                    "%s:%" PRIu64 ": %s", path, lineno, why);
		}
		lineno++;
		o = k == LR_LINE ? wjson_parse_object(line, len, "record", NULL) : NULL;
		if (o == NULL) {
			(*bad)++;
			continue;
		}
		if (matches(o, f))
			stop = fn(arg, line, len, o);
		json_decref(o);
	}
	return WRIT_OK;
}

writ_rc audit_query_file(const char *path, const audit_filter *f, audit_query_fn fn, void *arg,
                         uint64_t *skipped, writ_err *err)
{
	struct lreader r;
	uint64_t bad;
	writ_rc rc;

	rc = lr_open_file(&r, path, err);
	if (rc != WRIT_OK)
		return rc;
	rc = stream_records(&r, path, 1, f, fn, arg, &bad, err);
	lr_close(&r);
	if (skipped != NULL)
		*skipped = bad;
	return rc;
}

/* ---- the recent tail ---- */

/* The ts of the first whole line starting after byte off (the line at 0
 * if off is 0), and where that line starts. -1 when there is none or it
 * has no readable ts. Records begin {"seq":N,"ts":"..." (audit.c). */
static int first_ts_after(int fd, off_t off, off_t size, int64_t *ms, off_t *start)
{
	char buf[2 * AUDIT_LINE_MAX];
	const char *p, *nl, *ts;
	ssize_t n;
	size_t ls = 0;

	n = pread(fd, buf, sizeof(buf), off);
	if (n <= 0 || off >= size)
		return -1;
	if (off > 0) {
		nl = memchr(buf, '\n', (size_t)n);
		if (nl == NULL)
			return -1;
		ls = (size_t)(nl - buf) + 1;
	}
	nl = memchr(buf + ls, '\n', (size_t)n - ls);
	if (nl == NULL)
		return -1;
	*start = off + (off_t)ls;
	p = buf + ls;
	ts = memchr(p, ',', (size_t)(nl - p));
	if (ts == NULL || (size_t)(nl - ts) < 7 + AUDIT_TS_LEN || memcmp(ts, ",\"ts\":\"", 7) != 0)
		return -1;
	return audit_ts_parse(ts + 7, AUDIT_TS_LEN, ms);
}

writ_rc audit_scan_since(const char *path, int64_t since_ms, audit_query_fn fn, void *arg,
                         writ_err *err)
{
	struct lreader r;
	struct stat st;
	off_t lo = 0, hi, mid, start, from = 0;
	uint64_t bad;
	int64_t ms;
	writ_rc rc;

	rc = lr_open_file(&r, path, err);
	if (rc != WRIT_OK)
		return rc;
	if (fstat(r.fd, &st) != 0) {
		rc = writ_err_set(err, WRIT_ERR_IO, "%s: %s", path, strerror(errno));
		goto out;
	}
	/* Invariant: the record starting at `from` has ts < since_ms (or from
	 * is 0), so every record at or after since_ms starts at or after it. */
	hi = st.st_size;
	while (hi - lo > 2 * AUDIT_LINE_MAX) {
		mid = lo + (hi - lo) / 2;
		if (first_ts_after(r.fd, mid, st.st_size, &ms, &start) != 0 || ms >= since_ms) {
			hi = mid;
		} else {
			lo = mid;
			from = start;
		}
	}
	if (from > 0 && lseek(r.fd, from, SEEK_SET) != from) {
		rc = writ_err_set(err, WRIT_ERR_IO, "%s: %s", path, strerror(errno));
		goto out;
	}
	rc = stream_records(&r, path, from == 0, NULL, fn, arg, &bad, err);
out:
	lr_close(&r);
	return rc;
}

/* A restart writes a record or two of its own (log_opened, a recovery)
 * before the append that signs. */
#define UNSIGNED_SLACK 8

void audit_check_signing(audit_report *rep, uint64_t every)
{
	if (rep == NULL || rep->problem != AUDIT_OK || every == 0)
		return;
	if (rep->longest_unsigned > every + UNSIGNED_SLACK) {
		problem(rep, AUDIT_UNSIGNED_RUN, rep->longest_unsigned_line,
		        "%" PRIu64 " records in a row without a checkpoint, where the issuer "
		        "signs every %" PRIu64 ": checkpoints were removed (or signing failed "
		        "that long)",
		        rep->longest_unsigned, every);
		return;
	}
	if (rep->stopped_unsigned && rep->unsigned_tail > 0)
		problem(rep, AUDIT_UNSIGNED_STOP, rep->lines,
		        "the log ends with issuer_stopped and no checkpoint after it, where a "
		        "clean stop signs one: the end was cut (or signing failed at the stop)");
}
