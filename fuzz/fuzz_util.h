/*
 * fuzz_util.h - what writ's fuzz targets share: the crash-on-breach
 * invariant macro, the error-contract check every parser promises, and a
 * fixed public JWK Set (one ES256 and one RS256 key; the private halves
 * were thrown away after signing the seed corpora).
 */
#ifndef WRIT_FUZZ_UTIL_H
#define WRIT_FUZZ_UTIL_H

#include <string.h>

#include "writ/writ.h"

/* An invariant the code under test promises its callers; a breach is a crash. */
#define ENSURE(c)                                                                                  \
	do {                                                                                       \
		if (!(c))                                                                          \
			__builtin_trap();                                                          \
	} while (0)

/* A failure carries its code in err and a NUL-terminated message. */
static inline void check_err(writ_rc rc, const writ_err *err)
{
	ENSURE((unsigned)rc < WRIT_ERR__COUNT);
	if (rc != WRIT_OK) {
		ENSURE(err->rc == rc);
		ENSURE(memchr(err->msg, '\0', sizeof(err->msg)) != NULL);
	}
}

static const char fuzz_jwks_json[] =
    "{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"UgP8zdZmeWhnvnoDF_j"
    "la5I6EG9ip5u5gi_vOSJUMSY\",\"y\":\"1NfZp9N9ppcQjZacY6fJ-DPnvWSUccQ3H73PJ"
    "MAt1hA\",\"kid\":\"-UZJPbmwric--mLoVg2YlxlAPK0Dq0CFx3VVwIulwbo\",\"alg\""
    ":\"ES256\",\"use\":\"sig\"},{\"kty\":\"RSA\",\"n\":\"qKC7M16Vc5-iKM9RQNa"
    "KAq-gT58To05SrBOC-BYcdc0gh6cnlruRcNt0xs50MPg_eOIbxjo-kVVkvnWN0CDkdGPM1CE"
    "6P0X0XKKHethSNoTLRrK0K6yYl6O_H8scWjADWQPm7XEpEYLnGyQYmJtT8wqrreI8pDy4nhK"
    "hbVxwlcxiAWbTqP7hcpDidhoqgOBZ2mBKgD31RoKEvaiHForw7ZjUtSIuySRsYOCzq6-CL-s"
    "G9dQdY3HxmWrsdHqbEwvE5_EdG63vd-NyaQ--zIvs4w38p3NTh7N-zOgbC9vkzJ9vuLs_jlx"
    "gTH-npgTMI1tnHkHLF_8nBJIYLOj3L7_-lQ\",\"e\":\"AQAB\",\"kid\":\"MTHLmkUM0"
    "dh-v48-reZnRc8glpAJzCFe4VH1bXniuZk\",\"alg\":\"RS256\",\"use\":\"sig\"}]"
    "}";

#endif
