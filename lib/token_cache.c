/*
 * token_cache.c - tokens already verified, admitted again by a lookup
 * until they expire. The lookup key is the token's exact bytes: a keyed
 * 64-bit hash picks the stripe and bucket and the stored token is compared
 * in full, so a hit is byte-for-byte the token whose signature was checked
 * (a collision can only cost a comparison, never admit another token).
 * The hash is not cryptographic but keyed with a random seed per cache,
 * so nobody can aim tokens at one chain; and only signed tokens get in.
 *
 * Striped: one mutex per stripe, so threads checking different tokens
 * rarely meet. Each stripe keeps its entries in insertion order and
 * evicts the oldest when it is full.
 */
#include <openssl/rand.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "verifier_int.h"

#define STRIPES           64
#define BUCKETS_PER_ENTRY 2 /* chains stay short at full load */

typedef struct tentry {
	struct tentry *next;          /* bucket chain */
	struct tentry *older, *newer; /* stripe's insertion order */
	uint64_t hash;
	writ_claims *claims;
	int64_t not_before, not_after; /* nbf/iat - leeway, exp + leeway */
	size_t len;
	char token[]; /* exact bytes that were verified */
} tentry;

typedef struct stripe {
	pthread_mutex_t mu;
	tentry **buckets;
	size_t nbuckets; /* a power of two */
	size_t count, cap;
	tentry *oldest, *newest;
} stripe;

struct tcache {
	/* Key set generation the entries belong to; see tcache_put. */
	atomic_uint_fast64_t gen;
	uint64_t seed[2];
	stripe s[STRIPES];
};

static uint64_t mix(uint64_t a, uint64_t b)
{
	__uint128_t r = (__uint128_t)a * b;
	return (uint64_t)r ^ (uint64_t)(r >> 64);
}

/* A wyhash-style multiply-mix over 8-byte words: ~0.1 ns a byte. */
static uint64_t thash(const uint64_t seed[2], const char *p, size_t n)
{
	uint64_t h = seed[0] ^ n, w;
	size_t i;

	for (i = 0; i + 8 <= n; i += 8) {
		memcpy(&w, p + i, 8);
		h = mix(h ^ w, seed[1] | 1);
	}
	w = 0;
	memcpy(&w, p + i, n - i);
	return mix(h ^ w ^ 0x9e3779b97f4a7c15ull, seed[1] ^ 0xa0761d6478bd642full);
}

tcache *tcache_new(size_t entries)
{
	tcache *tc = calloc(1, sizeof(*tc));
	/* entries spread over the stripes, rounded up: at most STRIPES - 1 over */
	size_t per = entries / STRIPES + (entries % STRIPES != 0), nb = 1, i;

	if (tc == NULL)
		return NULL;
	if (per == 0)
		per = 1;
	if (RAND_bytes((unsigned char *)tc->seed, sizeof(tc->seed)) != 1) {
		free(tc);
		return NULL;
	}
	while (nb < per * BUCKETS_PER_ENTRY)
		nb <<= 1;
	for (i = 0; i < STRIPES; i++) {
		stripe *s = &tc->s[i];
		pthread_mutex_init(&s->mu, NULL);
		s->cap = per;
		s->nbuckets = nb;
		s->buckets = calloc(nb, sizeof(*s->buckets));
		if (s->buckets == NULL) {
			tc->s[i].cap = 0; /* so tcache_free stops here */
			tcache_free(tc);
			return NULL;
		}
	}
	return tc;
}

/* Take e out of its bucket and the stripe's order; the caller frees it
 * (entry_free), outside the stripe lock when it can. */
static void detach(stripe *s, tentry *e)
{
	tentry **pp = &s->buckets[e->hash & (s->nbuckets - 1)];

	while (*pp != e)
		pp = &(*pp)->next;
	*pp = e->next;
	if (e->older != NULL)
		e->older->newer = e->newer;
	else
		s->oldest = e->newer;
	if (e->newer != NULL)
		e->newer->older = e->older;
	else
		s->newest = e->older;
	s->count--;
}

static void entry_free(tentry *e)
{
	if (e != NULL) {
		writ_claims_free(e->claims);
		free(e);
	}
}

static void unlink_entry(stripe *s, tentry *e)
{
	detach(s, e);
	entry_free(e);
}

void tcache_free(tcache *tc)
{
	size_t i;

	if (tc == NULL)
		return;
	for (i = 0; i < STRIPES && tc->s[i].buckets != NULL; i++) {
		stripe *s = &tc->s[i];
		while (s->oldest != NULL)
			unlink_entry(s, s->oldest);
		free(s->buckets);
		pthread_mutex_destroy(&s->mu);
	}
	free(tc);
}

static tentry *find(stripe *s, uint64_t h, const char *token, size_t len)
{
	tentry *e;

	for (e = s->buckets[h & (s->nbuckets - 1)]; e != NULL; e = e->next)
		if (e->hash == h && e->len == len && memcmp(e->token, token, len) == 0)
			return e;
	return NULL;
}

writ_claims *tcache_get(tcache *tc, const char *token, size_t len, int64_t now, uint64_t *hash)
{
	uint64_t h = thash(tc->seed, token, len);
	stripe *s = &tc->s[h >> 58];
	writ_claims *c = NULL;
	tentry *e, *gone = NULL;

	*hash = h;
	pthread_mutex_lock(&s->mu);
	e = find(s, h, token, len);
	if (e != NULL) {
		/* The same window a fresh verify applies: a cached token is
		 * refused the moment it would be refused uncached. */
		if (now >= e->not_after)
			detach(s, gone = e);
		else if (now >= e->not_before)
			c = writ_claims_ref(e->claims);
	}
	pthread_mutex_unlock(&s->mu);
	entry_free(gone);
	return c;
}

void tcache_put(tcache *tc, const char *token, size_t len, uint64_t hash, const writ_claims *c,
                int64_t not_before, int64_t not_after, uint64_t gen)
{
	stripe *s = &tc->s[hash >> 58];
	tentry *e = malloc(sizeof(*e) + len), *gone = NULL, **b;

	if (e == NULL)
		return;
	memcpy(e->token, token, len);
	e->len = len;
	e->hash = hash;
	e->not_before = not_before;
	e->not_after = not_after;
	e->claims = writ_claims_ref(c);
	pthread_mutex_lock(&s->mu);
	/* A token verified under a key set that a refresh has replaced since
	 * might be signed by a key the prune already swept: skip it. The
	 * prune bumps gen before taking each stripe lock, so either it sees
	 * this entry or this sees the new gen. */
	if (atomic_load(&tc->gen) != gen || find(s, hash, token, len) != NULL) {
		pthread_mutex_unlock(&s->mu);
		entry_free(e);
		return;
	}
	/* Bounded: the oldest makes room. Its claims (a whole JSON tree)
	 * are freed after the lock is dropped, not while others wait. */
	if (s->count >= s->cap)
		detach(s, gone = s->oldest);
	b = &s->buckets[hash & (s->nbuckets - 1)];
	e->next = *b;
	*b = e;
	e->older = s->newest;
	e->newer = NULL;
	if (s->newest != NULL)
		s->newest->newer = e;
	else
		s->oldest = e;
	s->newest = e;
	s->count++;
	pthread_mutex_unlock(&s->mu);
	entry_free(gone);
}

void tcache_prune(tcache *tc, const writ_jwks *set, uint64_t gen)
{
	tentry *e, *next;
	size_t i;

	atomic_store(&tc->gen, gen);
	for (i = 0; i < STRIPES; i++) {
		stripe *s = &tc->s[i];
		pthread_mutex_lock(&s->mu);
		for (e = s->oldest; e != NULL; e = next) {
			next = e->newer;
			/* A key that left the set takes its tokens with it: a
			 * revoked key must not live on in the cache. */
			if (writ_jwks_find(set, writ_claims_kid(e->claims)) == NULL)
				unlink_entry(s, e);
		}
		pthread_mutex_unlock(&s->mu);
	}
}

size_t tcache_count(tcache *tc)
{
	size_t i, n = 0;

	for (i = 0; i < STRIPES; i++) {
		pthread_mutex_lock(&tc->s[i].mu);
		n += tc->s[i].count;
		pthread_mutex_unlock(&tc->s[i].mu);
	}
	return n;
}
