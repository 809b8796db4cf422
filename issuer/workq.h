/*
 * workq.h - a fixed pool of threads running queued jobs in FIFO order.
 *
 * The issuer's HTTP threads each own the connections they accepted, and
 * microhttpd spreads a burst of new connections over them by a race: one
 * thread can hold most of the busy clients while another holds none.
 * Deciding and signing a token request is nearly all of its CPU time,
 * so it runs here instead, on whichever pool thread is free, and an HTTP
 * thread only reads requests and writes responses.
 *
 * Jobs are intrusive (the caller embeds a workq_job in its own state), so
 * a push allocates nothing and cannot fail.
 */
#ifndef WRIT_WORKQ_H
#define WRIT_WORKQ_H

#include "writ/writ.h"

typedef struct workq_job workq_job;
struct workq_job {
	void (*run)(workq_job *job); /* called once, on a pool thread */
	workq_job *next;             /* the queue's */
};

typedef struct workq workq;

/* Start n threads (1..WORKQ_MAX). */
#define WORKQ_MAX 256
WRIT_MUST_CHECK writ_rc workq_start(unsigned n, workq **out, writ_err *err);
/* Queue job; it runs on the first free thread, in the order pushed. */
void workq_push(workq *q, workq_job *job);
/* Jobs queued or running now (for /metrics and tests). */
unsigned workq_depth(workq *q);
/* Run every job already pushed, then join the threads and free q. A job
 * must not be pushed once this has begun. NULL is fine. */
void workq_stop(workq *q);
/* The pool size that suits this machine: its online CPUs, at least 1. */
unsigned workq_default_size(void);

#endif
