/*
 * test_replayset.c - the in-memory replay cache: a jti is accepted once
 * while it can still be valid, forgotten after, bounded in memory, and
 * exactly one of several racing threads wins it.
 */
#include <pthread.h>
#include <stdio.h>

#include "replayset.h"
#include "testutil.h"

#define NOW 1800000000

static void test_first_use_then_replay(void)
{
	replayset *rs = NULL;

	REQUIRE(replayset_new(1000, &rs, NULL) == WRIT_OK);
	CHECK_RC(replayset_add(rs, "agent-a", "jti-1", NOW + 60, NOW, NULL), WRIT_OK);
	CHECK_RC(replayset_add(rs, "agent-a", "jti-1", NOW + 60, NOW, NULL), WRIT_ERR_CLAIM);
	CHECK_RC(replayset_add(rs, "agent-a", "jti-1", NOW + 60, NOW + 59, NULL), WRIT_ERR_CLAIM);
	/* The pair is the key: another agent's jti-1 is another assertion. */
	CHECK_RC(replayset_add(rs, "agent-b", "jti-1", NOW + 60, NOW, NULL), WRIT_OK);
	CHECK_RC(replayset_add(rs, "agent-a", "jti-2", NOW + 60, NOW, NULL), WRIT_OK);
	/* No ambiguity from concatenation: ("a", "bc") is not ("ab", "c"). */
	CHECK_RC(replayset_add(rs, "a", "bc", NOW + 60, NOW, NULL), WRIT_OK);
	CHECK_RC(replayset_add(rs, "ab", "c", NOW + 60, NOW, NULL), WRIT_OK);
	CHECK(replayset_size(rs) == 5);
	replayset_free(rs);
}

static void test_forgotten_after_until(void)
{
	replayset *rs = NULL;
	writ_err e = {0};

	REQUIRE(replayset_new(1000, &rs, NULL) == WRIT_OK);
	CHECK_RC(replayset_add(rs, "agent-a", "jti-1", NOW + 10, NOW, NULL), WRIT_OK);
	CHECK_RC(replayset_add(rs, "agent-a", "jti-1", NOW + 10, NOW + 10, &e), WRIT_ERR_CLAIM);
	CHECK(strstr(e.msg, "already used") != NULL);
	/* Past `until` the assertion cannot pass the time check any more:
	 * the entry is reused in place, and holds again from then on. */
	CHECK_RC(replayset_add(rs, "agent-a", "jti-1", NOW + 100, NOW + 11, NULL), WRIT_OK);
	CHECK_RC(replayset_add(rs, "agent-a", "jti-1", NOW + 100, NOW + 50, NULL), WRIT_ERR_CLAIM);
	CHECK(replayset_size(rs) == 1);
	replayset_free(rs);
}

static void test_many_entries(void)
{
	replayset *rs = NULL;
	char jti[32];
	int i, ok = 0, claimed = 0;

	REQUIRE(replayset_new(1u << 20, &rs, NULL) == WRIT_OK);
	for (i = 0; i < 200000; i++) {
		snprintf(jti, sizeof(jti), "j%d", i);
		ok += replayset_add(rs, "agent", jti, NOW + 300, NOW, NULL) == WRIT_OK;
	}
	for (i = 0; i < 200000; i += 7) {
		snprintf(jti, sizeof(jti), "j%d", i);
		claimed += replayset_add(rs, "agent", jti, NOW + 300, NOW, NULL) == WRIT_ERR_CLAIM;
	}
	CHECK(ok == 200000);
	CHECK(claimed == (200000 + 6) / 7);
	CHECK(replayset_size(rs) == 200000);
	replayset_free(rs);
}

/* A million assertions at 1,000/s living 10 s each: the set follows the
 * ~10,000 live ones, not the history. */
static void test_bounded_by_live_not_history(void)
{
	replayset *rs = NULL;
	char jti[32];
	size_t max = 0, n;
	int i, ok = 0;

	REQUIRE(replayset_new(1u << 20, &rs, NULL) == WRIT_OK);
	for (i = 0; i < 1000000; i++) {
		int64_t now = NOW + i / 1000;

		snprintf(jti, sizeof(jti), "h%d", i);
		ok += replayset_add(rs, "agent", jti, now + 10, now, NULL) == WRIT_OK;
		if (i % 10000 == 0 && (n = replayset_size(rs)) > max)
			max = n;
	}
	CHECK(ok == 1000000);
	/* live is 11,000; a shard rebuilds at half full, so expired ones
	 * wait at most about as long again. */
	CHECK(max < 40000);
	replayset_free(rs);
}

static void test_full_fails_closed(void)
{
	replayset *rs = NULL;
	char jti[32];
	int i, ok = 0, full = 0, other = 0;
	writ_err e = {0};
	writ_rc rc;

	REQUIRE(replayset_new(6400, &rs, NULL) == WRIT_OK);
	for (i = 0; i < 20000; i++) {
		snprintf(jti, sizeof(jti), "f%d", i);
		rc = replayset_add(rs, "agent", jti, NOW + 300, NOW, &e);
		ok += rc == WRIT_OK;
		full += rc == WRIT_ERR_UNAVAILABLE;
		other += rc != WRIT_OK && rc != WRIT_ERR_UNAVAILABLE;
	}
	CHECK(full > 0);
	CHECK(other == 0);
	CHECK(ok <= 6400 + 64);
	CHECK(strstr(e.msg, "full") != NULL);
	/* Once they expired there is room again. */
	CHECK_RC(replayset_add(rs, "agent", "after", NOW + 700, NOW + 301, NULL), WRIT_OK);
	replayset_free(rs);
}

static void test_limits(void)
{
	replayset *rs = NULL;
	char big[REPLAYSET_JTI_MAX + 2];

	REQUIRE(replayset_new(100, &rs, NULL) == WRIT_OK);
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	CHECK_RC(replayset_add(rs, "agent", big, NOW + 1, NOW, NULL), WRIT_ERR_ARG);
	big[REPLAYSET_JTI_MAX] = '\0';
	CHECK_RC(replayset_add(rs, "agent", big, NOW + 1, NOW, NULL), WRIT_OK);
	CHECK_RC(replayset_add(rs, "agent", "j", NOW - 1, NOW, NULL), WRIT_ERR_ARG);
	CHECK_RC(replayset_add(rs, NULL, "j", NOW + 1, NOW, NULL), WRIT_ERR_ARG);
	replayset_free(rs);
}

/* The same 20,000 assertions presented by four threads at once: each is
 * accepted exactly once. */
#define RACE_N 20000
static replayset *race_rs;

static void *race_main(void *arg)
{
	long *won = arg;
	char jti[32];
	int i;

	for (i = 0; i < RACE_N; i++) {
		snprintf(jti, sizeof(jti), "r%d", i);
		*won += replayset_add(race_rs, "agent", jti, NOW + 60, NOW, NULL) == WRIT_OK;
	}
	return NULL;
}

static void test_racing_threads_one_winner(void)
{
	pthread_t th[4];
	long won[4] = {0};
	int i;

	REQUIRE(replayset_new(1u << 20, &race_rs, NULL) == WRIT_OK);
	for (i = 0; i < 4; i++)
		REQUIRE(pthread_create(&th[i], NULL, race_main, &won[i]) == 0);
	for (i = 0; i < 4; i++)
		pthread_join(th[i], NULL);
	CHECK(won[0] + won[1] + won[2] + won[3] == RACE_N);
	replayset_free(race_rs);
}

int main(void)
{
	RUN(test_first_use_then_replay);
	RUN(test_forgotten_after_until);
	RUN(test_many_entries);
	RUN(test_bounded_by_live_not_history);
	RUN(test_full_fails_closed);
	RUN(test_limits);
	RUN(test_racing_threads_one_winner);
	return tu_finish();
}
