/*
 * test_ratelimit.c - the per agent, per rule token buckets behind a
 * policy rule's "rate": burst of N then one per period/N, refill with
 * time, independent keys, bounded memory, and consistency under threads.
 * Time is passed in, so nothing here sleeps.
 */
#include <pthread.h>

#include "ratelimit.h"
#include "testutil.h"

static int near(double a, double b)
{
	return a - b < 1e-6 && b - a < 1e-6;
}

static void test_n_allowed_then_refused_with_retry_after(void)
{
	ratelimit *rl = ratelimit_new(0);
	double ra = -1;
	int i;

	REQUIRE(rl != NULL);
	for (i = 0; i < 60; i++)
		CHECK(ratelimit_take(rl, "a", "r", 60, 60, 1000.0, &ra) == RATELIMIT_OK);
	CHECK(ra == 0);
	CHECK(ratelimit_take(rl, "a", "r", 60, 60, 1000.0, &ra) == RATELIMIT_LIMITED);
	/* 60/min: the next token comes one second later */
	CHECK(near(ra, 1.0));
	CHECK(ratelimit_take(rl, "a", "r", 60, 60, 1000.5, &ra) == RATELIMIT_LIMITED);
	CHECK(near(ra, 0.5));
	CHECK(ratelimit_take(rl, "a", "r", 60, 60, 1001.0, &ra) == RATELIMIT_OK);
	CHECK(ratelimit_take(rl, "a", "r", 60, 60, 1001.0, &ra) == RATELIMIT_LIMITED);
	ratelimit_free(rl);
}

/* ratelimit_give puts back what a take took (a request refused by another
 * rule's bucket), never above capacity, and only into that key's bucket. */
static void test_give_puts_back_one_token(void)
{
	ratelimit *rl = ratelimit_new(0);
	double ra = -1;

	REQUIRE(rl != NULL);
	CHECK(ratelimit_take(rl, "a", "r", 1, 60, 1000.0, &ra) == RATELIMIT_OK);
	CHECK(ratelimit_take(rl, "a", "r", 1, 60, 1000.0, &ra) == RATELIMIT_LIMITED);
	ratelimit_give(rl, "a", "r");
	CHECK(ratelimit_take(rl, "a", "r", 1, 60, 1000.0, &ra) == RATELIMIT_OK);
	ratelimit_give(rl, "a", "r");
	ratelimit_give(rl, "a", "r"); /* not above capacity (1) */
	CHECK(ratelimit_take(rl, "a", "r", 1, 60, 1000.0, &ra) == RATELIMIT_OK);
	CHECK(ratelimit_take(rl, "a", "r", 1, 60, 1000.0, &ra) == RATELIMIT_LIMITED);
	ratelimit_give(rl, "b", "r"); /* no bucket: nothing happens */
	ratelimit_give(rl, "a", "other");
	ratelimit_give(NULL, "a", "r");
	CHECK(ratelimit_count(rl) == 1);
	CHECK(ratelimit_take(rl, "a", "r", 1, 60, 1000.0, &ra) == RATELIMIT_LIMITED);
	ratelimit_free(rl);
}

static void test_refills_after_time_passes(void)
{
	ratelimit *rl = ratelimit_new(0);
	double ra;
	int i, ok = 0;

	REQUIRE(rl != NULL);
	for (i = 0; i < 10; i++)
		CHECK(ratelimit_take(rl, "a", "r", 10, 3600, 0.0, &ra) == RATELIMIT_OK);
	CHECK(ratelimit_take(rl, "a", "r", 10, 3600, 0.0, &ra) == RATELIMIT_LIMITED);
	CHECK(near(ra, 360.0));
	/* a full period later the bucket is full again, and no fuller */
	for (i = 0; i < 20; i++)
		ok += ratelimit_take(rl, "a", "r", 10, 3600, 7200.0, &ra) == RATELIMIT_OK;
	CHECK(ok == 10);
	/* a clock that steps back does not refill */
	CHECK(ratelimit_take(rl, "a", "r", 10, 3600, 100.0, &ra) == RATELIMIT_LIMITED);
	ratelimit_free(rl);
}

static void test_agents_and_rules_are_independent(void)
{
	ratelimit *rl = ratelimit_new(0);
	double ra;

	REQUIRE(rl != NULL);
	CHECK(ratelimit_take(rl, "a", "r", 1, 60, 0.0, &ra) == RATELIMIT_OK);
	CHECK(ratelimit_take(rl, "a", "r", 1, 60, 0.0, &ra) == RATELIMIT_LIMITED);
	CHECK(ratelimit_take(rl, "b", "r", 1, 60, 0.0, &ra) == RATELIMIT_OK);
	CHECK(ratelimit_take(rl, "a", "s", 1, 60, 0.0, &ra) == RATELIMIT_OK);
	/* ("ab","c") is not ("a","bc") */
	CHECK(ratelimit_take(rl, "ab", "c", 1, 60, 0.0, &ra) == RATELIMIT_OK);
	CHECK(ratelimit_take(rl, "a", "bc", 1, 60, 0.0, &ra) == RATELIMIT_OK);
	CHECK(ratelimit_count(rl) == 5);
	ratelimit_free(rl);
}

static void test_reloaded_rate_caps_the_bucket(void)
{
	ratelimit *rl = ratelimit_new(0);
	double ra;
	int i, ok = 0;

	REQUIRE(rl != NULL);
	CHECK(ratelimit_take(rl, "a", "r", 100, 60, 0.0, &ra) == RATELIMIT_OK);
	/* the rule now says 5/min: 99 saved tokens shrink to 5 */
	for (i = 0; i < 10; i++)
		ok += ratelimit_take(rl, "a", "r", 5, 60, 0.0, &ra) == RATELIMIT_OK;
	CHECK(ok == 5);
	CHECK(near(ra, 12.0));
	ratelimit_free(rl);
}

static void test_invalid_arguments_refused(void)
{
	ratelimit *rl = ratelimit_new(0);
	char big[RATELIMIT_KEY_MAX + 1];
	double ra;

	REQUIRE(rl != NULL);
	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	CHECK(ratelimit_take(rl, "", "r", 1, 1, 0, &ra) == RATELIMIT_INVALID);
	CHECK(ratelimit_take(rl, "a", "", 1, 1, 0, &ra) == RATELIMIT_INVALID);
	CHECK(ratelimit_take(rl, NULL, "r", 1, 1, 0, &ra) == RATELIMIT_INVALID);
	CHECK(ratelimit_take(rl, "a", "r", 0, 1, 0, &ra) == RATELIMIT_INVALID);
	CHECK(ratelimit_take(rl, "a", "r", 1, 0, 0, &ra) == RATELIMIT_INVALID);
	CHECK(ratelimit_take(rl, big, "r", 1, 1, 0, &ra) == RATELIMIT_INVALID);
	CHECK(ratelimit_take(NULL, "a", "r", 1, 1, 0, &ra) == RATELIMIT_INVALID);
	CHECK(ratelimit_count(rl) == 0);
	CHECK(strcmp(ratelimit_result_name(RATELIMIT_LIMITED), "limited") == 0);
	ratelimit_free(rl);
	ratelimit_free(NULL);
}

static void test_full_table_evicts_idle_buckets_or_fails_closed(void)
{
	/* 64 buckets: one per shard, so each new key lands in a full shard
	 * once 64 are used, whichever shard its hash picks. */
	ratelimit *rl = ratelimit_new(64);
	char agent[32];
	double ra;
	int i, full = 0;

	REQUIRE(rl != NULL);
	for (i = 0; i < 2000; i++) {
		snprintf(agent, sizeof(agent), "agent-%d", i);
		full += ratelimit_take(rl, agent, "r", 10, 60, 0.0, &ra) == RATELIMIT_FULL;
	}
	CHECK(ratelimit_count(rl) <= 64);
	/* every bucket is busy (9 of 10 tokens left): new keys are refused */
	CHECK(full >= 2000 - 64);
	snprintf(agent, sizeof(agent), "agent-%d", 5000);
	CHECK(ratelimit_take(rl, agent, "r", 10, 60, 0.0, &ra) == RATELIMIT_FULL);
	/* each busy bucket is full again 6 s later (1 token at 10/min) */
	CHECK(ra >= 1.0 && ra <= 6.0 + 1e-9);
	/* still refused before then, without a rescan */
	CHECK(ratelimit_take(rl, agent, "r", 10, 60, 3.0, &ra) == RATELIMIT_FULL);
	/* after that they are idle, so the new key evicts one and gets in */
	CHECK(ratelimit_take(rl, agent, "r", 10, 60, 6.0, &ra) == RATELIMIT_OK);
	CHECK(ratelimit_count(rl) <= 64);
	ratelimit_free(rl);
}

static void test_eviction_never_forgets_a_limited_agent(void)
{
	ratelimit *rl = ratelimit_new(64);
	char agent[32];
	double ra;
	int i, churned = 0;

	REQUIRE(rl != NULL);
	/* the victim empties its bucket */
	CHECK(ratelimit_take(rl, "victim", "r", 1, 100000, 0.0, &ra) == RATELIMIT_OK);
	/* an attacker churns through fresh ids that go idle at once (1/sec
	 * buckets are full again after a second) */
	for (i = 0; i < 5000; i++) {
		snprintf(agent, sizeof(agent), "churn-%d", i);
		churned +=
		    ratelimit_take(rl, agent, "r", 1, 1, 10.0 + i * 2.0, &ra) == RATELIMIT_OK;
	}
	/* the churn itself is served, idle buckets making room, except in the
	 * victim's shard (one bucket per shard here), which fails closed */
	CHECK(churned > 4500 && churned < 5000);
	/* the victim's bucket is still there, still empty */
	CHECK(ratelimit_take(rl, "victim", "r", 1, 100000, 20000.0, &ra) == RATELIMIT_LIMITED);
	ratelimit_free(rl);
}

#define THREADS 4
#define TRIES   20000

typedef struct hammer {
	ratelimit *rl;
	int id;
	long ok, own_ok;
} hammer;

static void *hammer_run(void *arg)
{
	hammer *h = arg;
	char agent[32];
	double ra;
	int i;

	for (i = 0; i < TRIES; i++) {
		/* time advances 1 ms per try: 20 s in all */
		double now = i * 0.001;

		if (ratelimit_take(h->rl, "shared", "r", 100, 10, now, &ra) == RATELIMIT_OK)
			h->ok++;
		snprintf(agent, sizeof(agent), "own-%d-%d", h->id, i % 50);
		if (ratelimit_take(h->rl, agent, "r", 5, 1, now, &ra) == RATELIMIT_OK)
			h->own_ok++;
	}
	return NULL;
}

static void test_threads_never_exceed_capacity_plus_refill(void)
{
	ratelimit *rl = ratelimit_new(0);
	pthread_t t[THREADS];
	hammer h[THREADS];
	long total = 0;
	int i;

	REQUIRE(rl != NULL);
	for (i = 0; i < THREADS; i++) {
		h[i] = (hammer){rl, i, 0, 0};
		REQUIRE(pthread_create(&t[i], NULL, hammer_run, &h[i]) == 0);
	}
	for (i = 0; i < THREADS; i++) {
		pthread_join(t[i], NULL);
		total += h[i].ok;
	}
	/* 100 up front plus 10/s over the 20 s the latest clock reached */
	CHECK(total <= 100 + 200);
	/* and the limiter did not refuse what it had: at least the burst */
	CHECK(total >= 100);
	CHECK(ratelimit_count(rl) == 1 + THREADS * 50);
	ratelimit_free(rl);
}

static void *hammer_frozen(void *arg)
{
	hammer *h = arg;
	double ra;
	int i;

	for (i = 0; i < TRIES; i++)
		if (ratelimit_take(h->rl, "frozen", "r", 1000, 60, 42.0, &ra) == RATELIMIT_OK)
			h->ok++;
	return NULL;
}

static void test_threads_same_instant_exactly_capacity(void)
{
	ratelimit *rl = ratelimit_new(0);
	pthread_t t[THREADS];
	hammer h[THREADS];
	long total = 0;
	int i;

	REQUIRE(rl != NULL);
	/* time frozen: exactly N tokens exist, however the threads interleave */
	for (i = 0; i < THREADS; i++)
		h[i] = (hammer){rl, i, 0, 0};
	for (i = 0; i < THREADS; i++)
		REQUIRE(pthread_create(&t[i], NULL, hammer_frozen, &h[i]) == 0);
	for (i = 0; i < THREADS; i++) {
		pthread_join(t[i], NULL);
		total += h[i].ok;
	}
	CHECK(total == 1000);
	ratelimit_free(rl);
}

int main(void)
{
	RUN(test_n_allowed_then_refused_with_retry_after);
	RUN(test_give_puts_back_one_token);
	RUN(test_refills_after_time_passes);
	RUN(test_agents_and_rules_are_independent);
	RUN(test_reloaded_rate_caps_the_bucket);
	RUN(test_invalid_arguments_refused);
	RUN(test_full_table_evicts_idle_buckets_or_fails_closed);
	RUN(test_eviction_never_forgets_a_limited_agent);
	RUN(test_threads_never_exceed_capacity_plus_refill);
	RUN(test_threads_same_instant_exactly_capacity);
	return tu_finish();
}
