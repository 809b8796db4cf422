/*
 * workq.c - a fixed pool of threads over one FIFO (see workq.h).
 */
#include "workq.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "writ_int.h"

struct workq {
	pthread_mutex_t mu;
	pthread_cond_t cv; /* a job was queued, or stopping */
	workq_job *head, *tail;
	atomic_uint depth; /* queued + running: read without the lock */
	int stopping;
	unsigned nthreads;
	pthread_t th[];
};

static void *worker_main(void *arg)
{
	workq *q = arg;
	workq_job *j;

	pthread_mutex_lock(&q->mu);
	for (;;) {
		while (q->head == NULL && !q->stopping)
			pthread_cond_wait(&q->cv, &q->mu);
		j = q->head;
		if (j == NULL)
			break; /* stopping, and the queue is drained */
		q->head = j->next;
		if (q->head == NULL)
			q->tail = NULL;
		pthread_mutex_unlock(&q->mu);
		j->next = NULL;
		j->run(j); /* may free j */
		atomic_fetch_sub(&q->depth, 1);
		pthread_mutex_lock(&q->mu);
	}
	pthread_mutex_unlock(&q->mu);
	return NULL;
}

writ_rc workq_start(unsigned n, workq **out, writ_err *err)
{
	workq *q;
	unsigned i;
	int r;

	*out = NULL;
	if (n == 0 || n > WORKQ_MAX)
		return writ_err_set(err, WRIT_ERR_ARG, "work queue: %u threads (1..%d)", n,
		                    WORKQ_MAX);
	q = calloc(1, sizeof(*q) + n * sizeof(q->th[0]));
	if (q == NULL)
		return writ_err_set(err, WRIT_ERR_NOMEM, "out of memory");
	pthread_mutex_init(&q->mu, NULL);
	pthread_cond_init(&q->cv, NULL);
	for (i = 0; i < n; i++) {
		r = pthread_create(&q->th[i], NULL, worker_main, q);
		if (r != 0) {
			q->nthreads = i;
			workq_stop(q);
			return writ_err_set(err, WRIT_ERR_NOMEM,
			                    "work queue: cannot start thread: %s", strerror(r));
		}
	}
	q->nthreads = n;
	*out = q;
	return WRIT_OK;
}

void workq_push(workq *q, workq_job *job)
{
	job->next = NULL;
	pthread_mutex_lock(&q->mu);
	if (q->tail != NULL)
		q->tail->next = job;
	else
		q->head = job;
	q->tail = job;
	atomic_fetch_add(&q->depth, 1);
	/* One waiter is enough: a busy thread takes the next job itself
	 * before it waits again. */
	pthread_cond_signal(&q->cv);
	pthread_mutex_unlock(&q->mu);
}

unsigned workq_depth(workq *q)
{
	return atomic_load(&q->depth);
}

void workq_stop(workq *q)
{
	unsigned i;

	if (q == NULL)
		return;
	pthread_mutex_lock(&q->mu);
	q->stopping = 1;
	pthread_cond_broadcast(&q->cv);
	pthread_mutex_unlock(&q->mu);
	for (i = 0; i < q->nthreads; i++)
		pthread_join(q->th[i], NULL);
	pthread_cond_destroy(&q->cv);
	pthread_mutex_destroy(&q->mu);
	free(q);
}

unsigned workq_default_size(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);

	if (n < 1)
		return 1;
	return n > WORKQ_MAX ? WORKQ_MAX : (unsigned)n;
}
