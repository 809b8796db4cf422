/*
 * replayset.c - the in-memory replay cache (see replayset.h): sharded
 * open-addressing tables of salted digests.
 */
#include "replayset.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "writ_int.h"

#define NSHARD    64 /* power of two: a shard is chosen by digest bits */
#define CAP_FIRST 256
#define SALT_LEN  32

/* An empty slot has k0 == 0; digests force k0's low bit to 1. 16 bytes:
 * 96 digest bits (collisions ~n^2 / 2^97: none at any size this holds)
 * and the second it may be forgotten (uint32: good until 2106). */
typedef struct slot {
	uint64_t k0;
	uint32_t k1;
	uint32_t until;
} slot;

typedef struct shard {
	pthread_mutex_t mu;
	slot *t;
	size_t cap;  /* power of two */
	size_t used; /* non-empty slots, expired ones included */
} shard;

struct replayset {
	shard sh[NSHARD];
	size_t max_per_shard;
	unsigned char salt[SALT_LEN];
};

writ_rc replayset_new(size_t max_live, replayset **out, writ_err *err)
{
	replayset *rs = calloc(1, sizeof(*rs));
	size_t i;

	*out = NULL;
	if (rs == NULL)
		return writ_err_set(err, WRIT_ERR_NOMEM, "out of memory");
	if (RAND_bytes(rs->salt, sizeof(rs->salt)) != 1) {
		free(rs);
		return writ_err_set(err, WRIT_ERR_CRYPTO, "no randomness for the replay cache");
	}
	rs->max_per_shard = max_live / NSHARD + 1;
	for (i = 0; i < NSHARD; i++)
		pthread_mutex_init(&rs->sh[i].mu, NULL);
	*out = rs;
	return WRIT_OK;
}

void replayset_free(replayset *rs)
{
	size_t i;

	if (rs == NULL)
		return;
	for (i = 0; i < NSHARD; i++) {
		free(rs->sh[i].t);
		pthread_mutex_destroy(&rs->sh[i].mu);
	}
	OPENSSL_cleanse(rs->salt, sizeof(rs->salt));
	free(rs);
}

static int digest(const replayset *rs, const char *agent, const char *jti, uint64_t *k0,
                  uint32_t *k1)
{
	/* salt || agent || '\0' || jti: '\0' cannot occur in an agent id, so
	 * the pair is unambiguous. */
	unsigned char buf[SALT_LEN + REPLAYSET_AGENT_MAX + 1 + REPLAYSET_JTI_MAX], md[32];
	size_t al = strlen(agent), jl = strlen(jti);

	if (al > REPLAYSET_AGENT_MAX || jl > REPLAYSET_JTI_MAX)
		return -1;
	memcpy(buf, rs->salt, SALT_LEN);
	memcpy(buf + SALT_LEN, agent, al + 1);
	memcpy(buf + SALT_LEN + al + 1, jti, jl);
	writ_sha256(buf, SALT_LEN + al + 1 + jl, md);
	memcpy(k0, md, sizeof(*k0));
	memcpy(k1, md + 8, sizeof(*k1));
	*k0 |= 1;
	return 0;
}

/* Rebuild sh's table with only the entries still remembered at now, at a
 * size that leaves the new table at most a third full. */
static int rebuild(shard *sh, uint32_t now)
{
	size_t live = 0, cap = CAP_FIRST, i, j;
	slot *t;

	for (i = 0; i < sh->cap; i++)
		live += sh->t[i].k0 != 0 && sh->t[i].until >= now;
	while (cap < 3 * (live + 1))
		cap *= 2;
	t = calloc(cap, sizeof(*t));
	if (t == NULL)
		return -1;
	for (i = 0; i < sh->cap; i++) {
		if (sh->t[i].k0 == 0 || sh->t[i].until < now)
			continue;
		for (j = sh->t[i].k0 >> 8 & (cap - 1); t[j].k0 != 0; j = (j + 1) & (cap - 1))
			;
		t[j] = sh->t[i];
	}
	free(sh->t);
	sh->t = t;
	sh->cap = cap;
	sh->used = live;
	return 0;
}

writ_rc replayset_add(replayset *rs, const char *agent, const char *jti, int64_t until, int64_t now,
                      writ_err *err)
{
	uint64_t k0;
	uint32_t k1, u, n;
	size_t i, reuse = SIZE_MAX;
	shard *sh;
	slot *s;
	writ_rc rc = WRIT_OK;

	if (rs == NULL || agent == NULL || jti == NULL)
		return writ_err_set(err, WRIT_ERR_ARG, "NULL argument");
	if (now < 0 || until < now || until > UINT32_MAX)
		return writ_err_set(err, WRIT_ERR_ARG, "replay cache: time out of range");
	if (digest(rs, agent, jti, &k0, &k1) != 0)
		return writ_err_set(err, WRIT_ERR_ARG, "replay cache: agent id or jti too long");
	u = (uint32_t)until;
	n = (uint32_t)now;
	sh = &rs->sh[k0 >> 1 & (NSHARD - 1)];
	pthread_mutex_lock(&sh->mu);
	/* Rebuild (dropping what expired) when half full, or when at the
	 * limit, where only dropping expired entries can make room. */
	if (((sh->used + 1) * 2 > sh->cap || sh->used >= rs->max_per_shard) &&
	    rebuild(sh, n) != 0) {
		rc = writ_err_set(err, WRIT_ERR_UNAVAILABLE, "replay cache: out of memory");
		goto out;
	}
	/* Linear probing. An expired slot is reused only once the probe has
	 * shown the digest is not further along the chain. */
	for (i = k0 >> 8 & (sh->cap - 1);; i = (i + 1) & (sh->cap - 1)) {
		s = &sh->t[i];
		if (s->k0 == 0)
			break;
		if (s->k0 == k0 && s->k1 == k1) {
			if (s->until >= n) {
				rc =
				    writ_err_set(err, WRIT_ERR_CLAIM, "assertion jti already used");
				goto out;
			}
			s->until = u;
			goto out;
		}
		if (s->until < n && reuse == SIZE_MAX)
			reuse = i;
	}
	if (reuse == SIZE_MAX && sh->used >= rs->max_per_shard) {
		rc = writ_err_set(err, WRIT_ERR_UNAVAILABLE, "replay cache full");
		goto out;
	}
	if (reuse != SIZE_MAX)
		s = &sh->t[reuse];
	else
		sh->used++;
	s->k0 = k0;
	s->k1 = k1;
	s->until = u;
out:
	pthread_mutex_unlock(&sh->mu);
	return rc;
}

size_t replayset_size(replayset *rs)
{
	size_t i, n = 0;

	for (i = 0; i < NSHARD; i++) {
		pthread_mutex_lock(&rs->sh[i].mu);
		n += rs->sh[i].used;
		pthread_mutex_unlock(&rs->sh[i].mu);
	}
	return n;
}
