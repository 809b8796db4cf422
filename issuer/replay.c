/*
 * replay.c - the replay cache (see replay.h): the memory set with its
 * reload from the audit log, or SQLite behind a group-commit writer.
 */
#include "replay.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "audit.h"
#include "replayset.h"
#include "store.h"
#include "writ_int.h"

#define BATCH_MAX 256

typedef struct waiter {
	store_replay_item item;
	int done;
	char msg[256];
} waiter;

typedef struct replay_batcher {
	pthread_mutex_t mu;
	pthread_cond_t work, done, room;
	waiter *q[BATCH_MAX];
	size_t n;
	int stop;
	pthread_t th;
	store *st;
	char path[1024];
} replay_batcher;

static void run_batch(replay_batcher *rb, waiter **w, size_t n)
{
	store_replay_item items[BATCH_MAX];
	writ_err e = {0};
	size_t i;

	for (i = 0; i < n; i++)
		items[i] = w[i]->item;
	if (rb->st == NULL && (store_open(rb->path, 0, &rb->st, &e) != WRIT_OK ||
	                       store_cache_size(rb->st, 64 * 1024, &e) != WRIT_OK)) {
		store_close(rb->st);
		rb->st = NULL;
	}
	if (rb->st == NULL ||
	    store_replay_check_batch(rb->st, items, n, (int64_t)time(NULL), &e) != WRIT_OK) {
		/* A broken connection is reopened for the next batch. */
		store_close(rb->st);
		rb->st = NULL;
		for (i = 0; i < n; i++)
			items[i].rc = WRIT_ERR_UNAVAILABLE;
	}
	for (i = 0; i < n; i++) {
		w[i]->item.rc = items[i].rc;
		snprintf(w[i]->msg, sizeof(w[i]->msg), "%s",
		         items[i].rc == WRIT_ERR_CLAIM ? "assertion jti already used"
		         : items[i].rc == WRIT_OK      ? ""
		                                       : e.msg);
	}
}

static void *writer_main(void *arg)
{
	replay_batcher *rb = arg;
	waiter *batch[BATCH_MAX];
	size_t n, i;

	pthread_mutex_lock(&rb->mu);
	for (;;) {
		while (rb->n == 0 && !rb->stop)
			pthread_cond_wait(&rb->work, &rb->mu);
		if (rb->n == 0 && rb->stop)
			break;
		n = rb->n;
		memcpy(batch, rb->q, n * sizeof(*batch));
		rb->n = 0;
		pthread_cond_broadcast(&rb->room);
		pthread_mutex_unlock(&rb->mu);
		run_batch(rb, batch, n);
		pthread_mutex_lock(&rb->mu);
		for (i = 0; i < n; i++)
			batch[i]->done = 1;
		pthread_cond_broadcast(&rb->done);
	}
	pthread_mutex_unlock(&rb->mu);
	store_close(rb->st);
	return NULL;
}

static writ_rc batcher_start(const char *path, replay_batcher **out, writ_err *err)
{
	replay_batcher *rb = calloc(1, sizeof(*rb));

	*out = NULL;
	if (rb == NULL)
		return writ_err_set(err, WRIT_ERR_NOMEM, "out of memory");
	snprintf(rb->path, sizeof(rb->path), "%s", path);
	pthread_mutex_init(&rb->mu, NULL);
	pthread_cond_init(&rb->work, NULL);
	pthread_cond_init(&rb->done, NULL);
	pthread_cond_init(&rb->room, NULL);
	if (pthread_create(&rb->th, NULL, writer_main, rb) != 0) {
		free(rb);
		return writ_err_set(err, WRIT_ERR_NOMEM, "cannot start the replay writer");
	}
	*out = rb;
	return WRIT_OK;
}

static writ_rc batcher_check(replay_batcher *rb, const char *agent, const char *jti, int64_t exp,
                             writ_err *err)
{
	waiter w = {.item = {.agent_id = agent, .jti = jti, .exp = exp}};

	pthread_mutex_lock(&rb->mu);
	while (rb->n == BATCH_MAX)
		pthread_cond_wait(&rb->room, &rb->mu);
	rb->q[rb->n++] = &w;
	pthread_cond_signal(&rb->work);
	while (!w.done)
		pthread_cond_wait(&rb->done, &rb->mu);
	pthread_mutex_unlock(&rb->mu);
	if (w.item.rc != WRIT_OK)
		return writ_err_set(err, w.item.rc, "%s", w.msg);
	return WRIT_OK;
}

static void batcher_stop(replay_batcher *rb)
{
	if (rb == NULL)
		return;
	pthread_mutex_lock(&rb->mu);
	rb->stop = 1;
	pthread_cond_signal(&rb->work);
	pthread_mutex_unlock(&rb->mu);
	pthread_join(rb->th, NULL);
	pthread_mutex_destroy(&rb->mu);
	pthread_cond_destroy(&rb->work);
	pthread_cond_destroy(&rb->done);
	pthread_cond_destroy(&rb->room);
	free(rb);
}

/* ---- the facade ---- */

struct replay {
	replayset *mem;     /* replay_cache = memory */
	replay_batcher *db; /* replay_cache = sqlite */
	uint64_t loaded;
};

/* A record of a used assertion: every record written after attestation
 * succeeded names the agent and the assertion's jti (exchange.c), and
 * since this cache exists also its exp. Older records have no exp: then
 * the latest it can have been, the record's time plus the longest
 * lifetime and leeway. */
typedef struct load_ctx {
	replay *rp;
	int64_t now;
	writ_rc rc;
	char msg[sizeof(((writ_err *)0)->msg)];
} load_ctx;

static int load_one(void *arg, const char *line, size_t len, const json_t *rec)
{
	load_ctx *lc = arg;
	const json_t *att = json_object_get(rec, "attestation");
	const char *agent = json_string_value(json_object_get(rec, "agent"));
	const char *jti = json_string_value(json_object_get(att, "jti"));
	const json_t *exp = json_object_get(att, "exp");
	const char *ts = json_string_value(json_object_get(rec, "ts"));
	int64_t until, ms;
	writ_err e = {0};
	writ_rc rc;

	(void)line;
	(void)len;
	if (agent == NULL || jti == NULL)
		return 0;
	if (json_is_integer(exp))
		until = (int64_t)json_integer_value(exp) + WRIT_LEEWAY_MAX;
	else if (ts != NULL && audit_ts_parse(ts, strlen(ts), &ms) == 0)
		until = ms / 1000 + ASSERTION_MAX_TTL + 2 * WRIT_LEEWAY_MAX;
	else
		return 0;
	if (until < lc->now)
		return 0;
	rc = replayset_add(lc->rp->mem, agent, jti, until, lc->now, &e);
	if (rc == WRIT_OK) {
		lc->rp->loaded++;
	} else if (rc != WRIT_ERR_CLAIM && rc != WRIT_ERR_ARG) {
		lc->rc = rc;
		snprintf(lc->msg, sizeof(lc->msg), "%s", e.msg);
		return 1;
	}
	return 0;
}

/* Every assertion that can still be valid was used at most its lifetime
 * plus leeway ago; ten minutes more cover a wall clock stepped back. */
static writ_rc load_from_audit(replay *rp, const char *path, writ_err *err)
{
	load_ctx lc = {.rp = rp, .now = (int64_t)time(NULL), .rc = WRIT_OK};
	int64_t since = lc.now - ASSERTION_MAX_TTL - 2 * WRIT_LEEWAY_MAX - 600;
	writ_rc rc;

	if (access(path, F_OK) != 0 && errno == ENOENT)
		return WRIT_OK; /* no log yet: nothing was ever issued */
	rc = audit_scan_since(path, since * 1000, load_one, &lc, err);
	if (rc == WRIT_OK && lc.rc != WRIT_OK)
		rc = writ_err_set(err, lc.rc, "%s", lc.msg);
	if (rc != WRIT_OK)
		return writ_err_set(err, rc, "replay cache: cannot reload from the audit log: %s",
		                    err != NULL ? err->msg : writ_strerror(rc));
	return WRIT_OK;
}

writ_rc replay_start(const writ_config *cfg, replay **out, writ_err *err)
{
	replay *rp = calloc(1, sizeof(*rp));
	writ_rc rc;

	*out = NULL;
	if (rp == NULL)
		return writ_err_set(err, WRIT_ERR_NOMEM, "out of memory");
	if (cfg->replay_sqlite) {
		rc = batcher_start(cfg->state_db, &rp->db, err);
	} else {
		rc = replayset_new(REPLAY_MEMORY_MAX, &rp->mem, err);
		if (rc == WRIT_OK)
			rc = load_from_audit(rp, cfg->audit_log, err);
	}
	if (rc != WRIT_OK) {
		replay_stop(rp);
		return rc;
	}
	*out = rp;
	return WRIT_OK;
}

writ_rc replay_check(replay *rp, const char *agent, const char *jti, int64_t exp, writ_err *err)
{
	int64_t now = (int64_t)time(NULL);

	if (rp->db != NULL)
		return batcher_check(rp->db, agent, jti, exp, err);
	/* Remembered as long as store_replay would: while the assertion could
	 * pass the time check with the largest leeway allowed. */
	return replayset_add(rp->mem, agent, jti,
	                     exp + WRIT_LEEWAY_MAX < now ? now : exp + WRIT_LEEWAY_MAX, now, err);
}

uint64_t replay_loaded(const replay *rp)
{
	return rp != NULL ? rp->loaded : 0;
}

void replay_stop(replay *rp)
{
	if (rp == NULL)
		return;
	batcher_stop(rp->db);
	replayset_free(rp->mem);
	free(rp);
}
