/*
 * lifecycle.c - key generation, reconciliation and scheduled rotation over
 * the HSM and the store (see lifecycle.h).
 */
#define _XOPEN_SOURCE 700 /* strptime */
#include "lifecycle.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "keyring.h"
#include "writ_int.h"

static int64_t ms_since(const struct timespec *t0)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (int64_t)(t.tv_sec - t0->tv_sec) * 1000 + (t.tv_nsec - t0->tv_nsec) / 1000000;
}

writ_rc lifecycle_lock_take(const char *state_db, int wait_ms, lifecycle_lock *lk, writ_err *err)
{
	struct timespec t0, pause = {0, 2000000L};
	char path[PATH_MAX];
	struct stat sb;
	int fd, n, e;

	lk->fd = -1;
	if (state_db == NULL || state_db[0] == '\0')
		return writ_err_set(err, WRIT_ERR_ARG, "key lock: no state database path");
	n = snprintf(path, sizeof(path), "%s%s", state_db, LIFECYCLE_LOCK_SUFFIX);
	if (n < 0 || (size_t)n >= sizeof(path))
		return writ_err_set(err, WRIT_ERR_CONFIG, "key lock: the path %s%s is too long",
		                    state_db, LIFECYCLE_LOCK_SUFFIX);
	/* O_NOFOLLOW: a symlink planted under the name must not make us
	 * create or lock another file; O_NONBLOCK: nor may a FIFO hang the
	 * open. Only the flock matters, never the (empty) contents. */
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK, 0600);
	if (fd < 0)
		return writ_err_set(err, WRIT_ERR_IO, "key lock %s: %s", path, strerror(errno));
	if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
		close(fd);
		return writ_err_set(err, WRIT_ERR_CONFIG, "key lock %s is not a regular file",
		                    path);
	}
	/* Polled rather than a blocking flock: the wait is bounded, and a
	 * blocking one could only be cut short by a signal, which a
	 * multi-threaded issuer cannot aim at one thread's wait. */
	clock_gettime(CLOCK_MONOTONIC, &t0);
	while (flock(fd, LOCK_EX | LOCK_NB) != 0) {
		e = errno;
		if (e == EINTR)
			continue;
		if (e != EWOULDBLOCK || ms_since(&t0) >= wait_ms) {
			close(fd);
			if (e != EWOULDBLOCK)
				return writ_err_set(err, WRIT_ERR_IO, "key lock %s: flock: %s",
				                    path, strerror(e));
			return writ_err_set(
			    err, WRIT_ERR_UNAVAILABLE,
			    "key lock %s: another writ process (a key command or an "
			    "issuer's key work) held it for all of %d ms; try again",
			    path, wait_ms);
		}
		nanosleep(&pause, NULL);
		if (pause.tv_nsec < 50000000L)
			pause.tv_nsec *= 2;
	}
	lk->fd = fd;
	return WRIT_OK;
}

void lifecycle_unlock(lifecycle_lock *lk)
{
	if (lk == NULL || lk->fd < 0)
		return;
	close(lk->fd);
	lk->fd = -1;
}

static writ_rc need_lock(const lifecycle_lock *held, const char *what, writ_err *err)
{
	if (held == NULL || held->fd < 0)
		return writ_err_set(err, WRIT_ERR_ARG, "%s: the key lock is not held", what);
	return WRIT_OK;
}

void lifecycle_windows(const writ_config *cfg, store_sk_windows *w)
{
	w->pending_secs = cfg->key_pending_secs;
	w->retired_secs = cfg->key_retired_secs;
}

void lifecycle_id_hex(const unsigned char *id, size_t len, char *hex)
{
	static const char digits[] = "0123456789abcdef";
	size_t i;

	for (i = 0; i < len && 2 * i < STORE_P11_ID_HEX_MAX; i++) {
		hex[2 * i] = digits[id[i] >> 4];
		hex[2 * i + 1] = digits[id[i] & 15];
	}
	hex[2 * i] = '\0';
}

int lifecycle_id_parse(const char *hex, unsigned char *id, size_t *len)
{
	size_t n = strlen(hex), i;

	if (n == 0 || n % 2 != 0 || n / 2 > P11_ID_MAX)
		return -1;
	for (i = 0; i < n / 2; i++) {
		unsigned v;
		if (sscanf(hex + 2 * i, "%2x", &v) != 1)
			return -1;
		id[i] = (unsigned char)v;
	}
	*len = n / 2;
	return 0;
}

int lifecycle_drop_unrecorded(p11_ctx *p11, store *st, const char *kid, const p11_key *key)
{
	store_sk row;

	/* Only on the store's word that no row names it: a commit whose
	 * outcome was lost, or a row another process wrote, keeps it. */
	if (store_sk_get(st, kid, &row, NULL) != WRIT_ERR_NOT_FOUND)
		return 0;
	return p11_key_destroy(p11, key->id, key->id_len, NULL) == WRIT_OK ? 1 : -1;
}

writ_rc lifecycle_generate(p11_ctx *p11, store *st, const writ_config *cfg,
                           const lifecycle_lock *held, writ_alg alg, store_sk_mode mode,
                           const char *reason, store_sk *out, writ_err *err)
{
	char hex[STORE_P11_ID_HEX_MAX + 1], kid[WRIT_KID_MAX + 1];
	store_sk_windows w;
	writ_jwk *jwk = NULL;
	const char *crash = getenv(LIFECYCLE_CRASH_ENV);
	p11_key key = {0};
	writ_rc rc;

	if ((rc = need_lock(held, "key generation", err)) != WRIT_OK)
		return rc;
	lifecycle_windows(cfg, &w);
	rc = p11_key_generate(p11, alg, &key, err);
	if (rc != WRIT_OK)
		return rc;
	if (crash != NULL && strcmp(crash, "1") == 0)
		_exit(3);
	rc = writ_jwk_from_pkey(key.pub, alg, &jwk, err);
	if (rc != WRIT_OK)
		goto undo;
	snprintf(kid, sizeof(kid), "%s", writ_jwk_kid(jwk));
	lifecycle_id_hex(key.id, key.id_len, hex);
	rc = store_sk_add(st, kid, alg, hex, mode, &w, (int64_t)time(NULL), reason, NULL, err);
	if (rc == WRIT_OK) {
		/* Recorded: a committed row names this key now, maybe as the
		 * active one, so nothing that fails from here on may destroy it. */
		if (out != NULL)
			rc = store_sk_get(st, kid, out, err);
	} else {
		(void)lifecycle_drop_unrecorded(p11, st, kid, &key);
	}
	goto out;
undo:
	/* No kid, so no row can name it: never published. */
	if (p11_key_destroy(p11, key.id, key.id_len, NULL) != WRIT_OK) {
		/* left in the token: reconcile removes it */
	}
out:
	writ_jwk_free(jwk);
	EVP_PKEY_free(key.pub);
	return rc;
}

/* Creation time from the label "writ:ALG:YYYYmmddTHHMMSSZ"; 0 if unknown
 * (keys whose label we cannot read are treated as old). */
static int64_t label_time(const char *label)
{
	const char *t = strrchr(label, ':');
	struct tm tm = {0};

	if (t == NULL || strptime(t + 1, "%Y%m%dT%H%M%SZ", &tm) == NULL)
		return 0;
	return (int64_t)timegm(&tm);
}

static const store_sk *row_find(const store_sk *rows, size_t n, const char *kid)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (strcmp(rows[i].kid, kid) == 0)
			return &rows[i];
	return NULL;
}

static int alg_tracked(const store_sk *rows, size_t n, writ_alg alg)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (rows[i].alg == alg)
			return 1;
	return 0;
}

static void adoptee(store_sk *k, const keyring_entry *e)
{
	snprintf(k->kid, sizeof(k->kid), "%s", writ_jwk_kid(e->jwk));
	k->alg = writ_jwk_alg(e->jwk);
	lifecycle_id_hex(e->id, e->id_len, k->p11_id);
}

/* Keys from before the store: the newest becomes active, the rest retired,
 * which is how the old issuer treated them. One transaction for them all,
 * so a failure half-way leaves none adopted (reconcile tries again). */
static writ_rc adopt(store *st, const writ_config *cfg, const keyring *kr, writ_alg alg,
                     int64_t now, int *changed, writ_err *err)
{
	const keyring_entry *newest = keyring_newest(kr, alg), *e;
	store_sk_windows w;
	store_sk *keys;
	size_t i, n = 1, adopted = 0;
	writ_rc rc;

	keys = calloc(keyring_count(kr), sizeof(*keys));
	if (keys == NULL)
		return writ_err_set(err, WRIT_ERR_NOMEM, "out of memory");
	adoptee(&keys[0], newest); /* store_sk_adopt makes keys[0] active */
	for (i = 0; (e = keyring_get(kr, i)) != NULL; i++)
		if (e != newest && writ_jwk_alg(e->jwk) == alg)
			adoptee(&keys[n++], e);
	lifecycle_windows(cfg, &w);
	rc = store_sk_adopt(st, alg, keys, n, &w, now,
	                    "adopted: made before the key lifecycle store", &adopted, err);
	free(keys);
	*changed += (int)adopted;
	return rc;
}

/* HSM keys without a row. */
static writ_rc reconcile_hsm(p11_ctx *p11, store *st, const writ_config *cfg, const keyring *kr,
                             const store_sk *rows, size_t n, int64_t now, int *changed, int *again,
                             writ_err *err)
{
	const keyring_entry *e;
	writ_rc rc = WRIT_OK;
	size_t i;

	for (i = 0; rc == WRIT_OK && (e = keyring_get(kr, i)) != NULL; i++) {
		writ_alg alg = writ_jwk_alg(e->jwk);
		const char *kid = writ_jwk_kid(e->jwk);
		if (row_find(rows, n, kid) != NULL)
			continue;
		if (!alg_tracked(rows, n, alg)) {
			/* The rows change: the caller looks again. */
			*again = 1;
			return adopt(st, cfg, kr, alg, now, changed, err);
		}
		if (now - label_time(e->label) < LIFECYCLE_ORPHAN_GRACE)
			continue;
		rc = p11_key_destroy(p11, e->id, e->id_len, err);
		if (rc == WRIT_OK)
			rc = store_sk_audit(st, "key_reconciled", kid, alg,
			                    "HSM key without a store record (crash between "
			                    "generating and recording): never published, destroyed",
			                    err);
		(*changed)++;
	}
	return rc;
}

/* Is row r's key gone from the token? Decided by a search for a private
 * key with the row's CKA_ID, not by absence from the listing kr: the
 * listing leaves out a key whose public half is gone or unreadable, and
 * one made after it was taken, while the private key still signs. */
static writ_rc key_gone(p11_ctx *p11, const keyring *kr, const store_sk *r, int *gone,
                        writ_err *err)
{
	unsigned char id[P11_ID_MAX];
	size_t len = 0;
	int present = 1;
	writ_rc rc;

	*gone = 0;
	if (keyring_find(kr, r->kid) != NULL)
		return WRIT_OK;
	if (lifecycle_id_parse(r->p11_id, id, &len) != 0)
		return WRIT_OK; /* not an id writ wrote: nothing to search by, keep */
	rc = p11_key_present(p11, id, len, &present, err);
	*gone = rc == WRIT_OK && !present;
	return rc;
}

/* Rows whose HSM object is gone. */
static writ_rc reconcile_rows(p11_ctx *p11, store *st, const keyring *kr, const store_sk *rows,
                              size_t n, int64_t now, int *changed, writ_err *err)
{
	writ_rc rc = WRIT_OK;
	size_t i;
	int gone;

	for (i = 0; rc == WRIT_OK && i < n; i++) {
		const store_sk *r = &rows[i];
		if (r->state != STORE_SK_PENDING && r->state != STORE_SK_ACTIVE &&
		    r->state != STORE_SK_RETIRED)
			continue;
		rc = key_gone(p11, kr, r, &gone, err);
		if (rc != WRIT_OK || !gone)
			continue;
		rc = store_sk_missing(st, r->kid, now,
		                      "the HSM no longer holds this key: withdrawn from the JWKS",
		                      err);
		(*changed)++;
	}
	return rc;
}

writ_rc lifecycle_record_jwks(store *st, const keyring *kr, const store_sk *rows, size_t n,
                              writ_err *err)
{
	writ_rc rc = WRIT_OK;
	size_t i;

	for (i = 0; rc == WRIT_OK && i < n; i++) {
		const keyring_entry *e;
		char *json;

		if (rows[i].jwk[0] != '\0' || (e = keyring_find(kr, rows[i].kid)) == NULL)
			continue;
		json = writ_jwk_to_json(e->jwk);
		rc = json != NULL ? store_sk_set_jwk(st, rows[i].kid, json, err)
		                  : writ_err_set(err, WRIT_ERR_NOMEM, "out of memory");
		free(json);
	}
	return rc;
}

writ_rc lifecycle_reconcile(p11_ctx *p11, store *st, const writ_config *cfg,
                            const lifecycle_lock *held, int64_t now, int *changed, writ_err *err)
{
	store_sk *rows = NULL;
	keyring *kr = NULL;
	size_t n = 0;
	writ_rc rc;
	int c = 0, pass, again = 0;

	if (changed != NULL)
		*changed = 0;
	if ((rc = need_lock(held, "reconcile", err)) != WRIT_OK)
		return rc;
	/* Adoption changes the rows, so look again; one pass per alg at most. */
	for (pass = 0; pass < 8; pass++) {
		again = 0;
		/* Rows first, then the token: a key made and recorded between
		 * the two reads is then an HSM key without a row (spared for
		 * LIFECYCLE_ORPHAN_GRACE), not a row without a key (removed). */
		rc = store_sk_list(st, &rows, &n, err);
		if (rc == WRIT_OK)
			rc = keyring_load(p11, &kr, err);
		if (rc == WRIT_OK)
			rc = reconcile_hsm(p11, st, cfg, kr, rows, n, now, &c, &again, err);
		if (rc == WRIT_OK && !again)
			rc = reconcile_rows(p11, st, kr, rows, n, now, &c, err);
		if (rc == WRIT_OK && !again)
			rc = lifecycle_record_jwks(st, kr, rows, n, err);
		keyring_free(kr);
		free(rows);
		kr = NULL, rows = NULL;
		if (rc != WRIT_OK || !again)
			break;
	}
	if (changed != NULL)
		*changed = c;
	return rc;
}

/* Does some alg have an active key old enough and no pending key? */
static int rotation_due(const store_sk *rows, size_t n, int64_t due_age, int64_t now, size_t *at)
{
	size_t i, j;

	for (i = *at; i < n; i++) {
		if (rows[i].state != STORE_SK_ACTIVE || now - rows[i].activated_at < due_age)
			continue;
		for (j = 0; j < n; j++)
			if (rows[j].alg == rows[i].alg && rows[j].state == STORE_SK_PENDING)
				break;
		if (j == n) {
			*at = i;
			return 1;
		}
	}
	return 0;
}

/* A pending key for each alg whose active key is old enough. The store
 * refuses a second pending key (STORE_SK_SCHEDULE), so of several issuers
 * on one schedule only one key survives; the others are destroyed. */
writ_rc lifecycle_rotate_due(p11_ctx *p11, store *st, const writ_config *cfg, int64_t now,
                             int *changed, writ_err *err)
{
	int64_t due_age = (int64_t)cfg->rotation_period - (int64_t)cfg->key_pending_secs;
	lifecycle_lock lk = {-1};
	store_sk *rows = NULL;
	writ_rc rc;
	size_t n = 0, i = 0;

	if (cfg->rotation_period == 0)
		return WRIT_OK;
	/* Looked at without the lock first: this runs every second, and
	 * almost always nothing is due. */
	rc = store_sk_list(st, &rows, &n, err);
	if (rc != WRIT_OK || !rotation_due(rows, n, due_age, now, &i)) {
		free(rows);
		return rc;
	}
	free(rows);
	rows = NULL;
	rc = lifecycle_lock_take(cfg->state_db, LIFECYCLE_ROTATE_LOCK_WAIT_MS, &lk, err);
	/* Read again under the lock: a key another process made meanwhile. */
	if (rc == WRIT_OK)
		rc = store_sk_list(st, &rows, &n, err);
	for (i = 0; rc == WRIT_OK && rotation_due(rows, n, due_age, now, &i); i++) {
		rc = lifecycle_generate(p11, st, cfg, &lk, rows[i].alg, STORE_SK_SCHEDULE,
		                        "scheduled rotation (rotation_period)", NULL, err);
		if (rc == WRIT_ERR_ARG) /* another instance was first */
			rc = WRIT_OK;
		else if (rc == WRIT_OK && changed != NULL)
			(*changed)++;
	}
	lifecycle_unlock(&lk);
	free(rows);
	return rc;
}

writ_rc lifecycle_advance(store *st, const writ_config *cfg, int64_t now, int *changed,
                          writ_err *err)
{
	store_sk_windows w;

	lifecycle_windows(cfg, &w);
	return store_sk_advance(st, &w, now, changed, err);
}
