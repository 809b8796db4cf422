/*
 * fuzz_audit.c - libFuzzer target for the two parsers of audit files,
 * which an attacker who wants to hide a record has edited: the verifier
 * (audit_verify_buf, with and without the checkpoint key) and the tail
 * scan audit_open does to continue or repair a log.
 *
 * Beyond "no crash, no leak" it checks what an operator relies on:
 *  - a report is consistent (an intact log has as many records as lines,
 *    the last seq equals the record count, a problem has a line number);
 *  - keys only add checks: a log that verifies with keys verifies without;
 *  - a log that verifies, or whose only fault is a torn end, verifies
 *    again after audit_open repaired and continued it.
 *  - the start-up scan of the recent tail (audit_scan_since, which
 *    reloads the replay cache) hands over every record of an intact log
 *    when asked from the beginning, and survives any since.
 * The seeds in fuzz/corpus/audit/ carry checkpoints signed by the key
 * below (its private half was thrown away), so signature checks run.
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "audit.h"
#include "writ_int.h"

#define ENSURE(c)                                                                                  \
	do {                                                                                       \
		if (!(c))                                                                          \
			__builtin_trap();                                                          \
	} while (0)

static const char seed_jwks[] =
    "{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\","
    "\"x\":\"elkCofT2_FhHKFikCULYKv-yGTKamvCHgHJObx5I3rA\","
    "\"y\":\"X84PHxffnSrYHt21ThGMUWrr_SkteC8R_clcum45zoc\","
    "\"kid\":\"dtP80qt9umIdg-qM3M5lBBbf7_a2InVZ20ALnG6iQ4c\",\"alg\":\"ES256\",\"use\":\"sig\"}]}";

static writ_jwks *keys;
static char path[64];

static int no_sync(int fd)
{
	(void)fd;
	return 0;
}

static void check_report(const audit_report *r)
{
	ENSURE((unsigned)r->problem <= AUDIT_IO);
	ENSURE(memchr(r->detail, '\0', sizeof(r->detail)) != NULL);
	ENSURE(strlen(r->head) == AUDIT_HASH_HEX);
	ENSURE(r->checkpoints <= r->records && r->unsigned_tail <= r->records);
	if (r->problem == AUDIT_OK) {
		ENSURE(r->records == r->lines && r->last_seq == r->records && r->line == 0);
	} else {
		ENSURE(r->line >= 1 && r->detail[0] != '\0');
	}
}

/* The input as the scratch file's whole content. */
static void write_scratch(const uint8_t *data, size_t size)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

	ENSURE(fd >= 0);
	ENSURE(size == 0 || write(fd, data, size) == (ssize_t)size);
	close(fd);
}

/* Write data to the scratch file, let audit_open repair/continue it. */
static void open_and_check(const uint8_t *data, size_t size, int repairable)
{
	audit_opts o = {.sync_fn = no_sync};
	audit_log *log = NULL;
	audit_report rep;
	writ_err err = {0};
	writ_rc rc;

	write_scratch(data, size);
	rc = audit_open(path, &o, &log, &err);
	ENSURE((unsigned)rc < WRIT_ERR__COUNT);
	if (rc != WRIT_OK) {
		ENSURE(log == NULL && err.msg[0] != '\0');
		/* A log that verifies is never refused. */
		ENSURE(!repairable);
		return;
	}
	ENSURE(audit_close(log, &err) == WRIT_OK);
	ENSURE(audit_verify_file(path, NULL, &rep, &err) == WRIT_OK);
	check_report(&rep);
	if (repairable)
		ENSURE(rep.problem == AUDIT_OK);
}

static int count_rec(void *arg, const char *line, size_t len, const json_t *rec)
{
	(void)line;
	(void)len;
	ENSURE(json_is_object(rec));
	(*(uint64_t *)arg)++;
	return 0;
}

/* Scan the raw data from three starting times; the number of records
 * handed over from the beginning, or UINT64_MAX if the scan refused. */
static uint64_t scan_counts(const uint8_t *data, size_t size)
{
	static const int64_t since[] = {1735787045000, INT64_MAX, 0};
	uint64_t n = 0;
	writ_err err = {0};
	writ_rc rc = WRIT_OK;
	size_t i;

	write_scratch(data, size);
	for (i = 0; i < sizeof(since) / sizeof(since[0]); i++) {
		n = 0;
		rc = audit_scan_since(path, since[i], count_rec, &n, &err);
		ENSURE(rc == WRIT_OK || rc == WRIT_ERR_MALFORMED);
		ENSURE(rc == WRIT_OK || err.msg[0] != '\0');
	}
	return rc == WRIT_OK ? n : UINT64_MAX;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint64_t scanned;
	audit_report with, without;
	writ_err err = {0};

	if (keys == NULL) {
		ENSURE(writ_jwks_parse(seed_jwks, strlen(seed_jwks), WRIT_JWKS_KID_IS_THUMBPRINT,
		                       &keys, NULL) == WRIT_OK);
		snprintf(path, sizeof(path), "/tmp/writ-fuzz-audit-%ld.log", (long)getpid());
	}
	ENSURE(audit_verify_buf((const char *)data, size, keys, &with, &err) == WRIT_OK);
	ENSURE(audit_verify_buf((const char *)data, size, NULL, &without, &err) == WRIT_OK);
	check_report(&with);
	check_report(&without);
	ENSURE(with.sigs_checked == 1 && without.sigs_checked == 0);
	if (with.problem == AUDIT_OK) {
		ENSURE(without.problem == AUDIT_OK);
		ENSURE(strcmp(with.head, without.head) == 0 && with.records == without.records);
	}
	scanned = scan_counts(data, size);
	if (without.problem == AUDIT_OK)
		ENSURE(scanned == without.records);
	open_and_check(data, size,
	               without.problem == AUDIT_OK || without.problem == AUDIT_TRUNCATED);
	unlink(path);
	return 0;
}
