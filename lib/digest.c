/*
 * digest.c - SHA-256 and SHA-384 one-shots with the algorithm fetched once.
 *
 * OpenSSL 3's SHA256() looks the algorithm up by name in the provider
 * store on every call (EVP_Q_digest), which costs more than hashing a
 * JWS signing input or an audit line. writ hashes several of those per
 * token, so the implementations are fetched once per process and kept;
 * if the fetch fails (no default provider), the one-shots still work
 * through the slow path.
 */
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <pthread.h>

#include "writ_int.h"

static pthread_once_t once = PTHREAD_ONCE_INIT;
static EVP_MD *md256, *md384;

static void fetch(void)
{
	md256 = EVP_MD_fetch(NULL, "SHA2-256", NULL);
	md384 = EVP_MD_fetch(NULL, "SHA2-384", NULL);
}

static void digest(const EVP_MD *md, const char *name, const void *in, size_t n, unsigned char *out)
{
	if (md == NULL || EVP_Digest(in, n, out, NULL, md, NULL) != 1)
		EVP_Q_digest(NULL, name, NULL, in, n, out, NULL);
}

void writ_sha256(const void *in, size_t n, unsigned char out[SHA256_DIGEST_LENGTH])
{
	pthread_once(&once, fetch);
	digest(md256, "SHA256", in, n, out);
}

void writ_sha384(const void *in, size_t n, unsigned char out[SHA384_DIGEST_LENGTH])
{
	pthread_once(&once, fetch);
	digest(md384, "SHA384", in, n, out);
}
