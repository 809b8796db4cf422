/*
 * replay.c - the replay cache's group commit (see replay.h).
 */
#include "replay.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "store.h"
#include "writ_int.h"

#define BATCH_MAX 256

typedef struct waiter {
	store_replay_item item;
	int done;
	char msg[256];
} waiter;

struct replay_batcher {
	pthread_mutex_t mu;
	pthread_cond_t work, done, room;
	waiter *q[BATCH_MAX];
	size_t n;
	int stop;
	pthread_t th;
	store *st;
	char path[1024];
};

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

writ_rc replay_start(const char *path, replay_batcher **out, writ_err *err)
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

writ_rc replay_check(replay_batcher *rb, const char *agent, const char *jti, int64_t exp,
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

void replay_stop(replay_batcher *rb)
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
