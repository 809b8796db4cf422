/*
 * test_workq.c - the issuer's worker pool (issuer/workq.h): every job
 * pushed runs exactly once, in push order on a single thread, on several
 * threads at once when there are several, and stopping runs what was
 * already queued rather than dropping it (a dropped job would be a token
 * request whose connection stays suspended for ever).
 */
#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>

#include "testutil.h"
#include "workq.h"

typedef struct job {
	workq_job j;
	int id;
	int *order, *n; /* for the one-thread test, under its single thread */
	atomic_int *ran;
	atomic_int *inside, *most; /* jobs running at once, and the most seen */
	int nap_us;
} job;

static void run(workq_job *wj)
{
	job *jb = (job *)(void *)wj;
	int in;

	if (jb->inside != NULL) {
		in = atomic_fetch_add(jb->inside, 1) + 1;
		for (int m = atomic_load(jb->most);
		     in > m && !atomic_compare_exchange_weak(jb->most, &m, in);)
			;
	}
	if (jb->nap_us > 0)
		usleep((useconds_t)jb->nap_us);
	if (jb->order != NULL)
		jb->order[(*jb->n)++] = jb->id;
	if (jb->inside != NULL)
		atomic_fetch_sub(jb->inside, 1);
	atomic_fetch_add(jb->ran, 1);
}

static void test_one_thread_runs_jobs_in_push_order(void)
{
	enum { N = 200 };
	static job jobs[N];
	int order[N], n = 0;
	atomic_int ran = 0;
	workq *q = NULL;
	writ_err e = {0};

	CHECK_RC(workq_start(1, &q, &e), WRIT_OK);
	REQUIRE(q != NULL);
	for (int i = 0; i < N; i++) {
		jobs[i] = (job){.j.run = run, .id = i, .order = order, .n = &n, .ran = &ran};
		workq_push(q, &jobs[i].j);
	}
	workq_stop(q); /* runs what is queued */
	CHECK(atomic_load(&ran) == N && n == N);
	for (int i = 0; i < n; i++)
		CHECK(order[i] == i);
}

static void test_jobs_run_on_several_threads_at_once(void)
{
	enum { N = 16 };
	static job jobs[N];
	atomic_int ran = 0, inside = 0, most = 0;
	workq *q = NULL;
	writ_err e = {0};

	CHECK_RC(workq_start(4, &q, &e), WRIT_OK);
	REQUIRE(q != NULL);
	for (int i = 0; i < N; i++) {
		jobs[i] = (job){.j.run = run,
		                .id = i,
		                .ran = &ran,
		                .inside = &inside,
		                .most = &most,
		                .nap_us = 20000};
		workq_push(q, &jobs[i].j);
	}
	workq_stop(q);
	CHECK(atomic_load(&ran) == N);
	/* 16 naps of 20 ms on 4 threads: some overlapped (a sleep, not CPU,
	 * so this holds on one core too). */
	CHECK(atomic_load(&most) >= 2);
	CHECK(atomic_load(&most) <= 4);
}

static atomic_int gate;

static void wait_gate(workq_job *wj)
{
	job *jb = (job *)(void *)wj;

	while (!atomic_load(&gate))
		usleep(1000);
	atomic_fetch_add(jb->ran, 1);
}

/* workq_depth (the issuer's writ_token_requests_in_pool) counts what is
 * queued and what is running, and drops as jobs finish. */
static void test_depth_counts_queued_and_running_jobs(void)
{
	static job jobs[3];
	atomic_int ran = 0;
	workq *q = NULL;
	writ_err e = {0};

	atomic_store(&gate, 0);
	CHECK_RC(workq_start(1, &q, &e), WRIT_OK);
	REQUIRE(q != NULL);
	CHECK(workq_depth(q) == 0);
	for (int i = 0; i < 3; i++) {
		jobs[i] = (job){.j.run = wait_gate, .id = i, .ran = &ran};
		workq_push(q, &jobs[i].j);
	}
	CHECK(workq_depth(q) == 3); /* one running (held at the gate), two queued */
	atomic_store(&gate, 1);
	for (int i = 0; i < 5000 && workq_depth(q) != 0; i++)
		usleep(1000);
	CHECK(workq_depth(q) == 0 && atomic_load(&ran) == 3);
	workq_stop(q);
}

static void test_sizes_outside_the_range_are_refused(void)
{
	workq *q = (workq *)1;
	writ_err e = {0};

	CHECK_RC(workq_start(0, &q, &e), WRIT_ERR_ARG);
	CHECK(q == NULL);
	CHECK(strstr(e.msg, "threads") != NULL);
	CHECK_RC(workq_start(WORKQ_MAX + 1, &q, &e), WRIT_ERR_ARG);
	CHECK(workq_default_size() >= 1);
	workq_stop(NULL);
}

int main(void)
{
	RUN(test_one_thread_runs_jobs_in_push_order);
	RUN(test_jobs_run_on_several_threads_at_once);
	RUN(test_depth_counts_queued_and_running_jobs);
	RUN(test_sizes_outside_the_range_are_refused);
	return tu_finish();
}
