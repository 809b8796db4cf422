/*
 * limits.c - the "lim" claim enforced at the target (SPEC s.3): a token
 * bucket per (sub, aud), capacity = the per-second rate (at least 1),
 * refilled continuously. The table is bounded: a stripe that is full
 * reuses the slot seen longest ago. Subjects come from signed tokens,
 * so the table only churns if the issuer hands out many identities.
 */
#include <math.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "verifier_int.h"

#define STRIPES 32
#define PROBE   8   /* slots looked at per lookup */
#define KEY_MAX 512 /* sub + NUL + aud */

typedef struct bucket {
	uint64_t hash; /* 0: empty */
	double tokens, last;
	char key[KEY_MAX];
	size_t keylen;
} bucket;

typedef struct lstripe {
	pthread_mutex_t mu;
	bucket *slots;
	size_t n; /* a power of two */
} lstripe;

struct limits {
	uint64_t seed;
	lstripe s[STRIPES];
};

limits *limits_new(size_t entries)
{
	limits *l = calloc(1, sizeof(*l));
	size_t per = 16, i;

	if (l == NULL || RAND_bytes((unsigned char *)&l->seed, sizeof(l->seed)) != 1) {
		free(l);
		return NULL;
	}
	while (per * STRIPES < entries)
		per <<= 1;
	for (i = 0; i < STRIPES; i++) {
		pthread_mutex_init(&l->s[i].mu, NULL);
		l->s[i].n = per;
		if ((l->s[i].slots = calloc(per, sizeof(bucket))) == NULL) {
			limits_free(l);
			return NULL;
		}
	}
	return l;
}

void limits_free(limits *l)
{
	size_t i;

	if (l == NULL)
		return;
	for (i = 0; i < STRIPES; i++) {
		free(l->s[i].slots);
		pthread_mutex_destroy(&l->s[i].mu);
	}
	free(l);
}

/* Rate in requests per second from {"rps": N} and/or {"rpm": N}, the
 * stricter if both. 0: neither is there, nothing for this library to
 * count (other names, e.g. "rows", are the service's to read and enforce).
 * < 0: unusable, refused rather than ignored: a rate the issuer meant
 * must not silently become no limit. */
static double lim_rate(const json_t *lim)
{
	const json_t *rps = json_object_get(lim, "rps"), *rpm = json_object_get(lim, "rpm");
	double r = INFINITY;

	if (!json_is_object(lim))
		return -1;
	if (rps == NULL && rpm == NULL)
		return 0;
	if (rps != NULL) {
		if (!json_is_number(rps) || !(json_number_value(rps) > 0))
			return -1;
		r = json_number_value(rps);
	}
	if (rpm != NULL) {
		if (!json_is_number(rpm) || !(json_number_value(rpm) > 0))
			return -1;
		r = fmin(r, json_number_value(rpm) / 60.0);
	}
	return isfinite(r) ? r : -1;
}

static uint64_t fnv1a(uint64_t h, const char *p, size_t n)
{
	while (n-- > 0)
		h = (h ^ (unsigned char)*p++) * 0x100000001b3ull;
	return h;
}

/* The slot for key in s: its own, else an empty one, else the one touched
 * longest ago among the PROBE candidates (reset for the newcomer). */
static bucket *slot_for(lstripe *s, uint64_t h, const char *key, size_t kl, double cap, double now)
{
	bucket *victim = NULL, *b;
	size_t i;

	for (i = 0; i < PROBE; i++) {
		b = &s->slots[(h + i) & (s->n - 1)];
		if (b->hash == h && b->keylen == kl && memcmp(b->key, key, kl) == 0)
			return b;
		if (victim != NULL && victim->hash == 0)
			continue; /* an empty slot beats any eviction */
		if (victim == NULL || b->hash == 0 || b->last < victim->last)
			victim = b;
	}
	victim->hash = h;
	memcpy(victim->key, key, kl);
	victim->keylen = kl;
	victim->tokens = cap;
	victim->last = now;
	return victim;
}

writ_rc limits_take(limits *l, const char *sub, const char *aud, const json_t *lim, double now,
                    double *retry_after)
{
	double rate = lim_rate(lim), cap;
	size_t sl = strlen(sub), al = strlen(aud), kl = sl + 1 + al;
	char key[KEY_MAX];
	uint64_t h;
	lstripe *s;
	bucket *b;
	writ_rc rc = WRIT_OK;

	*retry_after = 0;
	if (rate == 0)
		return WRIT_OK;
	if (rate < 0 || kl > sizeof(key))
		return WRIT_ERR_CLAIM;
	cap = fmax(1.0, rate);
	memcpy(key, sub, sl + 1);
	memcpy(key + sl + 1, aud, al);
	h = fnv1a(l->seed, key, kl) | 1;
	s = &l->s[(h >> 32) % STRIPES];
	pthread_mutex_lock(&s->mu);
	b = slot_for(s, h, key, kl, cap, now);
	/* A newer token may carry a different limit: the bucket follows it. */
	b->tokens = fmin(cap, b->tokens + (now - b->last) * rate);
	b->last = now;
	if (b->tokens >= 1.0) {
		b->tokens -= 1.0;
	} else {
		*retry_after = (1.0 - b->tokens) / rate;
		rc = WRIT_ERR_RATE_LIMITED;
	}
	pthread_mutex_unlock(&s->mu);
	return rc;
}
