/* alg.c - JOSE algorithm names (RFC 7518 s.3.1, RFC 8037 s.3.1). */
#include <string.h>

#include "writ_int.h"

static const char *const names[] = {
    [WRIT_ALG_ES256] = "ES256", [WRIT_ALG_ES384] = "ES384", [WRIT_ALG_RS256] = "RS256",
    [WRIT_ALG_PS256] = "PS256", [WRIT_ALG_EDDSA] = "EdDSA",
};

const char *writ_alg_name(writ_alg alg)
{
	if (alg <= WRIT_ALG_NONE || (size_t)alg >= sizeof(names) / sizeof(names[0]))
		return NULL;
	return names[alg];
}

writ_alg writ_alg_from_name(const char *name)
{
	size_t i;

	/* Case-sensitive on purpose (RFC 7515 s.4.1.1): "es256" is not ES256,
	 * and "none" in any spelling maps to WRIT_ALG_NONE, which no key has. */
	if (name == NULL)
		return WRIT_ALG_NONE;
	for (i = 1; i < sizeof(names) / sizeof(names[0]); i++)
		if (strcmp(name, names[i]) == 0)
			return (writ_alg)i;
	return WRIT_ALG_NONE;
}
