/*
 * ratelimit.c - sharded token buckets (see ratelimit.h).
 *
 * Layout: RL_SHARDS shards, each a mutex, a chained hash table of fixed
 * size and a cap of max_buckets / RL_SHARDS entries, so memory never grows
 * past what ratelimit_new was told and one hot shard cannot starve the
 * others of room.
 */
#include "ratelimit.h"

#include <openssl/rand.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define RL_SHARDS 64

typedef struct rl_bucket {
	struct rl_bucket *next;
	uint64_t hash;
	double tokens;
	double last; /* time of the last refill */
	unsigned n, period;
	size_t keylen;
	char key[]; /* agent '\0' rule_id */
} rl_bucket;

typedef struct rl_shard {
	pthread_mutex_t mu;
	rl_bucket **slots;
	size_t nslots; /* power of two */
	size_t count, cap;
	/* After a sweep that found no idle bucket: the soonest time one can be
	 * idle. Until then a full shard refuses new keys without rescanning,
	 * so a flood of new keys costs O(1) each. */
	double sweep_after;
} rl_shard;

struct ratelimit {
	uint64_t seed; /* keyed hash: agent ids are chosen by outsiders */
	rl_shard shard[RL_SHARDS];
};

/* FNV-1a over a random seed. Not a PRF, but chains are bounded by the
 * shard cap, so a collision flood costs at most one shard's scan. */
static uint64_t key_hash(uint64_t seed, const char *key, size_t len)
{
	uint64_t h = 14695981039346656037ULL ^ seed;
	size_t i;

	for (i = 0; i < len; i++) {
		h ^= (unsigned char)key[i];
		h *= 1099511628211ULL;
	}
	return h ^ (h >> 29);
}

ratelimit *ratelimit_new(size_t max_buckets)
{
	ratelimit *rl;
	size_t i, per, nslots;

	if (max_buckets == 0)
		max_buckets = RATELIMIT_DEFAULT_BUCKETS;
	per = (max_buckets + RL_SHARDS - 1) / RL_SHARDS;
	for (nslots = 16; nslots < per; nslots *= 2)
		;
	rl = calloc(1, sizeof(*rl));
	if (rl == NULL)
		return NULL;
	if (RAND_bytes((unsigned char *)&rl->seed, sizeof(rl->seed)) != 1)
		rl->seed = (uint64_t)(uintptr_t)rl; /* still fine: chains are capped */
	for (i = 0; i < RL_SHARDS; i++) {
		rl_shard *s = &rl->shard[i];

		s->slots = calloc(nslots, sizeof(*s->slots));
		if (s->slots == NULL) {
			ratelimit_free(rl);
			return NULL;
		}
		pthread_mutex_init(&s->mu, NULL);
		s->nslots = nslots;
		s->cap = per;
	}
	return rl;
}

void ratelimit_free(ratelimit *rl)
{
	rl_bucket *b, *next;
	size_t i, j;

	if (rl == NULL)
		return;
	for (i = 0; i < RL_SHARDS; i++) {
		rl_shard *s = &rl->shard[i];

		if (s->slots == NULL)
			continue;
		for (j = 0; j < s->nslots; j++)
			for (b = s->slots[j]; b != NULL; b = next) {
				next = b->next;
				free(b);
			}
		free(s->slots);
		pthread_mutex_destroy(&s->mu);
	}
	free(rl);
}

static void refill(rl_bucket *b, double now)
{
	double rate = (double)b->n / b->period;

	if (now > b->last) {
		b->tokens += (now - b->last) * rate;
		if (b->tokens > b->n)
			b->tokens = b->n;
		b->last = now;
	}
}

/* Seconds until b is full again. */
static double time_to_full(const rl_bucket *b)
{
	return (b->n - b->tokens) * b->period / (double)b->n;
}

/*
 * Forget every bucket that has refilled completely by `now`: a new bucket
 * for the same key would start full, so nothing is lost. Returns how many
 * went; when none did, records when the next one will be idle.
 */
static size_t sweep(rl_shard *s, double now)
{
	double soonest = -1;
	size_t j, freed = 0;

	for (j = 0; j < s->nslots; j++) {
		rl_bucket **pp = &s->slots[j];

		while (*pp != NULL) {
			rl_bucket *b = *pp;
			double t;

			refill(b, now);
			if (b->tokens >= b->n) {
				*pp = b->next;
				free(b);
				s->count--;
				freed++;
				continue;
			}
			t = now + time_to_full(b);
			if (soonest < 0 || t < soonest)
				soonest = t;
			pp = &b->next;
		}
	}
	s->sweep_after = freed > 0 ? 0 : soonest;
	return freed;
}

static ratelimit_result take(rl_bucket *b, double now, double *retry_after)
{
	refill(b, now);
	if (b->tokens >= 1.0) {
		b->tokens -= 1.0;
		return RATELIMIT_OK;
	}
	if (retry_after != NULL)
		*retry_after = (1.0 - b->tokens) * b->period / (double)b->n;
	return RATELIMIT_LIMITED;
}

/* The bucket key "agent\0rule" into key (RATELIMIT_KEY_MAX + 2 bytes), its
 * length and hash; -1 for a key ratelimit_take calls invalid. */
static int make_key(const ratelimit *rl, const char *agent, const char *rule_id, char *key,
                    size_t *keylen, uint64_t *h)
{
	size_t alen, rlen;

	if (agent == NULL || rule_id == NULL)
		return -1;
	alen = strlen(agent);
	rlen = strlen(rule_id);
	if (alen == 0 || rlen == 0 || alen + rlen > RATELIMIT_KEY_MAX)
		return -1;
	/* The NUL between the parts keeps ("ab","c") and ("a","bc") apart. */
	memcpy(key, agent, alen + 1);
	memcpy(key + alen + 1, rule_id, rlen);
	*keylen = alen + 1 + rlen;
	*h = key_hash(rl->seed, key, *keylen);
	return 0;
}

static rl_bucket *find_locked(const rl_shard *s, uint64_t h, const char *key, size_t keylen)
{
	rl_bucket *b;

	for (b = s->slots[(h >> 6) & (s->nslots - 1)]; b != NULL; b = b->next)
		if (b->hash == h && b->keylen == keylen && memcmp(b->key, key, keylen) == 0)
			return b;
	return NULL;
}

void ratelimit_give(ratelimit *rl, const char *agent, const char *rule_id)
{
	char key[RATELIMIT_KEY_MAX + 2];
	size_t keylen;
	rl_bucket *b;
	rl_shard *s;
	uint64_t h;

	if (rl == NULL || make_key(rl, agent, rule_id, key, &keylen, &h) != 0)
		return;
	s = &rl->shard[h % RL_SHARDS];
	pthread_mutex_lock(&s->mu);
	if ((b = find_locked(s, h, key, keylen)) != NULL) {
		b->tokens += 1.0;
		if (b->tokens > b->n)
			b->tokens = b->n;
	}
	pthread_mutex_unlock(&s->mu);
}

ratelimit_result ratelimit_take(ratelimit *rl, const char *agent, const char *rule_id,
                                unsigned n_per_period, unsigned period_s, double now,
                                double *retry_after)
{
	char key[RATELIMIT_KEY_MAX + 2];
	size_t keylen;
	ratelimit_result res;
	rl_bucket *b;
	rl_shard *s;
	uint64_t h;

	if (retry_after != NULL)
		*retry_after = 0;
	if (rl == NULL || n_per_period == 0 || period_s == 0 ||
	    make_key(rl, agent, rule_id, key, &keylen, &h) != 0)
		return RATELIMIT_INVALID;
	s = &rl->shard[h % RL_SHARDS];

	pthread_mutex_lock(&s->mu);
	b = find_locked(s, h, key, keylen);
	if (b != NULL) {
		if (b->n != n_per_period || b->period != period_s) {
			/* The policy was reloaded with another rate for this rule:
			 * settle the old rate's refill, then cap to the new size. */
			refill(b, now);
			b->n = n_per_period;
			b->period = period_s;
			if (b->tokens > b->n)
				b->tokens = b->n;
		}
		res = take(b, now, retry_after);
		goto out;
	}
	if (s->count >= s->cap && (now < s->sweep_after || sweep(s, now) == 0)) {
		if (retry_after != NULL) {
			*retry_after = s->sweep_after - now;
			if (*retry_after < 1.0)
				*retry_after = 1.0;
		}
		res = RATELIMIT_FULL;
		goto out;
	}
	b = malloc(sizeof(*b) + keylen);
	if (b == NULL) {
		/* Out of memory is no reason to stop limiting: refuse. */
		if (retry_after != NULL)
			*retry_after = 1.0;
		res = RATELIMIT_FULL;
		goto out;
	}
	b->hash = h;
	b->keylen = keylen;
	memcpy(b->key, key, keylen);
	b->n = n_per_period;
	b->period = period_s;
	b->tokens = n_per_period; /* a new agent may burst N at once */
	b->last = now;
	b->next = s->slots[(h >> 6) & (s->nslots - 1)];
	s->slots[(h >> 6) & (s->nslots - 1)] = b;
	s->count++;
	res = take(b, now, retry_after);
out:
	pthread_mutex_unlock(&s->mu);
	return res;
}

size_t ratelimit_count(ratelimit *rl)
{
	size_t i, n = 0;

	for (i = 0; i < RL_SHARDS; i++) {
		pthread_mutex_lock(&rl->shard[i].mu);
		n += rl->shard[i].count;
		pthread_mutex_unlock(&rl->shard[i].mu);
	}
	return n;
}

const char *ratelimit_result_name(ratelimit_result r)
{
	switch (r) {
	case RATELIMIT_OK: return "ok";
	case RATELIMIT_LIMITED: return "limited";
	case RATELIMIT_FULL: return "full";
	default: return "invalid";
	}
}
